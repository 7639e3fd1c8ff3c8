//! The web port over real sockets: the chat over WebSocket gives the TCP port's JSON, frames
//! are refused rather than split, Origin is checked, the page's routes answer, TLS works.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use std::time::Duration;

use jaring_web::client;
use jaring_web::gateway::CSP;
use support::{Web, http_get, ws_open};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_send_inbox_over_ws_are_byte_identical_to_tcp() {
    let web = Web::start(&["ann", "bob"], |_| {}).await;
    let mut tcp = support::Tcp::connect(web.chat).await;
    let mut ws = ws_open(&web, "/ws", None).await.unwrap();
    // The same command on both: the token differs, so compare replies that carry none.
    for line in ["auth ann wrong", "auth nobody x", "hello"] {
        let a = tcp.call(line).await;
        let b = support::call(&mut ws, line).await;
        assert_eq!(a, b, "{line}");
    }
    let t_tcp = support::token(&tcp.call("auth ann annpw").await);
    let t_ws = support::token(&support::call(&mut ws, "auth bob bobpw").await);
    let sent = support::call(&mut ws, &format!("send {t_ws} ann hi  from ws")).await;
    assert!(
        sent.starts_with(r#"{"status":"OK","message":"Message Sent""#),
        "{sent}"
    );
    let _ = tcp.call(&format!("send {t_tcp} bob back from tcp")).await;
    // bob's inbox over WS, unacknowledged; the WS goes away, so the same messages are handed
    // out again on TCP: the same JSON, byte for byte.
    let inbox_ws = support::call(&mut ws, &format!("inbox {t_ws}")).await;
    assert!(inbox_ws.contains("back from tcp"), "{inbox_ws}");
    drop(ws);
    let mut tcp_bob = support::Tcp::connect(web.chat).await;
    let t_bob = support::token(&tcp_bob.call("auth bob bobpw").await);
    let inbox_tcp = tokio::time::timeout(support::TIMEOUT, async {
        loop {
            let r = tcp_bob.call(&format!("inbox {t_bob}")).await;
            if r.contains("back from tcp") {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap();
    assert_eq!(inbox_ws, inbox_tcp);
    web.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pushed_event_is_its_own_message() {
    let web = Web::start(&["ann", "bob"], |_| {}).await;
    let mut ws = ws_open(&web, "/ws", None).await.unwrap();
    let t = support::token(&support::call(&mut ws, "auth bob bobpw").await);
    let watching = support::call(&mut ws, &format!("watch {t}")).await;
    assert!(watching.contains(r#""message":"Watching""#), "{watching}");
    let mut tcp = support::Tcp::connect(web.chat).await;
    let ta = support::token(&tcp.call("auth ann annpw").await);
    let _ = tcp.call(&format!("send {ta} bob one")).await;
    let _ = tcp.call(&format!("send {ta} bob two")).await;
    for text in ["one", "two"] {
        let event = support::recv(&mut ws).await.unwrap();
        let v: serde_json::Value = serde_json::from_str(&event).unwrap();
        assert_eq!(v["event"], "private", "{event}");
        assert_eq!(v["msg"], text, "{event}");
    }
    web.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_with_a_line_break_is_refused_not_run_as_two_commands() {
    let web = Web::start(&["ann", "bob"], |_| {}).await;
    let mut ws = ws_open(&web, "/ws", None).await.unwrap();
    let t = support::token(&support::call(&mut ws, "auth ann annpw").await);
    for sep in ["\r\n", "\n", "\r"] {
        let smuggled = format!("users {t}{sep}send {t} bob smuggled");
        let reply = support::call(&mut ws, &smuggled).await;
        let v: serde_json::Value = serde_json::from_str(&reply).unwrap();
        assert_eq!(v["status"], "ERROR", "{reply}");
        assert!(reply.contains("CR or LF"), "{reply}");
    }
    let reply = support::call_message(&mut ws, Message::binary(b"users x".to_vec())).await;
    assert!(reply.contains("binary"), "{reply}");
    // The connection goes on, in order, and bob got nothing.
    let reply = support::call(&mut ws, "auth bob bobpw").await;
    let tb = support::token(&reply);
    let inbox = support::call(&mut ws, &format!("inbox {tb}")).await;
    assert_eq!(inbox, r#"{"status":"OK","messages":{}}"#);
    web.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_messages_are_answered_in_order_around_a_refusal() {
    let web = Web::start(&["ann"], |_| {}).await;
    let mut ws = ws_open(&web, "/ws", None).await.unwrap();
    client::send_lines(&mut ws, &["hello", "bad\nline", "auth ann wrong"])
        .await
        .unwrap();
    let a = support::recv(&mut ws).await.unwrap();
    let b = support::recv(&mut ws).await.unwrap();
    let c = support::recv(&mut ws).await.unwrap();
    assert!(a.contains("unknown command") || a.contains("ERROR"), "{a}");
    assert!(b.contains("CR or LF"), "{b}");
    assert!(c.contains("wrong user name or password"), "{c}");
    web.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_must_be_absent_same_site_or_allowed() {
    let web = Web::start(&["ann"], |o| {
        o.allowed_origins = vec!["https://chat.example".into()];
    })
    .await;
    let host = web.web.to_string();
    let same_http = format!("http://{host}");
    let same_https = format!("https://{host}");
    for origin in [
        None,
        Some(same_http.as_str()),
        Some(same_https.as_str()),
        Some("https://chat.example"),
    ] {
        let mut ws = ws_open(&web, "/ws", origin)
            .await
            .unwrap_or_else(|e| panic!("{origin:?}: {e}"));
        assert!(support::call(&mut ws, "hello").await.contains("ERROR"));
    }
    for origin in [
        "https://evil.example",
        "http://127.0.0.1:1",
        "null",
        "http://evil.example/",
    ] {
        match ws_open(&web, "/ws", Some(origin)).await {
            Err(client::ClientError::Refused { status_line, .. }) => {
                assert!(
                    status_line.starts_with("HTTP/1.1 403"),
                    "{origin}: {status_line}"
                );
            }
            other => panic!("{origin}: {other:?}"),
        }
    }
    web.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_message_is_refused_and_others_go_on() {
    let web = Web::start(&["ann"], |o| o.max_line = 1024).await;
    let mut other = ws_open(&web, "/ws", None).await.unwrap();
    let mut big = ws_open(&web, "/ws", None).await.unwrap();
    client::send(&mut big, &"x".repeat(4096)).await.unwrap();
    let reply = support::recv(&mut big).await.unwrap();
    assert!(reply.contains("longer than 1024 bytes"), "{reply}");
    // Then the server closes (1009).
    let end = tokio::time::timeout(support::TIMEOUT, async {
        loop {
            match client::next(&mut big).await {
                Ok(Some(Message::Close(f))) => return f.map(|f| u16::from(f.code)),
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => return None,
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(end, Some(1009));
    let reply = support::call(&mut other, "auth ann annpw").await;
    assert!(reply.contains(r#""status":"OK""#), "{reply}");
    // A message of exactly the limit is a line.
    let reply = support::call(&mut other, &"y".repeat(1024)).await;
    assert!(reply.contains("unknown command"), "{reply}");
    web.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_routes_answer_with_their_headers() {
    let web = Web::start(&["ann"], |_| {}).await;
    let page = http_get(
        web.web,
        "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(page.starts_with("HTTP/1.1 200 OK\r\n"), "{page}");
    let (head, body) = page.split_once("\r\n\r\n").unwrap();
    let head_lc = head.to_ascii_lowercase();
    // The stylesheet is inlined, and the CSP allows exactly it, by its hash: no
    // 'unsafe-inline', the rest of the policy as strict as every other response's.
    let style = body
        .split_once("<style>")
        .and_then(|(_, rest)| rest.split_once("</style>"))
        .map(|(css, _)| css)
        .expect("the page's stylesheet, inline");
    assert_eq!(style, jaring_web::assets::APP_CSS);
    assert_eq!(body.matches("<style").count(), 1, "{body}");
    let hash = {
        use base64::Engine as _;
        use sha2::Digest as _;
        base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(style))
    };
    let csp = CSP.replace(
        "style-src 'self'",
        &format!("style-src 'self' 'sha256-{hash}'"),
    );
    assert!(
        head.contains(&format!("Content-Security-Policy: {csp}\r\n")),
        "{head}"
    );
    assert!(!head.contains("unsafe-inline"), "{head}");
    assert!(
        head_lc.contains("x-content-type-options: nosniff"),
        "{head}"
    );
    assert!(head_lc.contains("cache-control: no-store"), "{head}");
    assert!(head_lc.contains("content-type: text/html"), "{head}");
    assert!(
        head_lc.contains(&format!("content-length: {}", body.len())),
        "{head}"
    );
    // No inline script: every <script> has a src and no body.
    let lc = body.to_ascii_lowercase();
    for (i, _) in lc.match_indices("<script") {
        let tag_end = i + lc[i..].find('>').unwrap();
        assert!(lc[i..tag_end].contains("src="), "inline script in {body}");
        assert!(
            lc[tag_end + 1..].starts_with("</script>"),
            "script body in {body}"
        );
    }
    let realms = http_get(
        web.web,
        "GET /realms HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(realms.starts_with("HTTP/1.1 200"), "{realms}");
    assert!(realms.ends_with(r#"{"realms":["realm1"]}"#), "{realms}");
    for (req, status) in [
        (
            "GET /nothing HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            "404",
        ),
        (
            "GET /ws/nowhere HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            "404",
        ),
        ("POST / HTTP/1.1\r\nHost: x\r\n\r\n", "405"),
        ("GET / HTTP/2.0\r\n\r\n", "505"),
        ("GET /\r\n\r\n", "400"),
        ("GET /ws HTTP/1.1\r\nHost: x\r\n\r\n", "426"),
        (
            "GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
            "400",
        ),
        (
            "GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            "400",
        ),
    ] {
        let r = http_get(web.web, req).await;
        assert!(r.starts_with(&format!("HTTP/1.1 {status}")), "{req:?}: {r}");
    }
    // Keep-alive: two requests on one connection.
    let two = http_get(
        web.web,
        "GET /app.css HTTP/1.1\r\nHost: x\r\n\r\nGET /app.js HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(two.matches("HTTP/1.1 200 OK").count(), 2, "{two}");
    assert!(
        two.contains("text/css") && two.contains("text/javascript"),
        "{two}"
    );
    web.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_idle_timeout_closes_a_quiet_websocket() {
    let web = Web::start_with(
        &["ann"],
        |_| {},
        |c| c.limits.idle_timeout = Duration::from_secs(1),
    )
    .await;
    let mut ws = ws_open(&web, "/ws", None).await.unwrap();
    let mut watching = ws_open(&web, "/ws", None).await.unwrap();
    let t = support::token(&support::call(&mut watching, "auth ann annpw").await);
    let ok = support::call(&mut watching, &format!("watch {t}")).await;
    assert!(ok.contains("Watching"), "{ok}");
    let started = tokio::time::Instant::now();
    let end = tokio::time::timeout(support::TIMEOUT, support::recv(&mut ws))
        .await
        .unwrap();
    assert_eq!(
        end, None,
        "a command-mode connection is closed without a word"
    );
    assert!(started.elapsed() >= Duration::from_millis(900));
    // A watching one is told why, in a message of its own, then closed.
    let closing = support::recv(&mut watching).await.unwrap();
    assert!(closing.starts_with(r#"{"event":"closing""#), "{closing}");
    assert_eq!(support::recv(&mut watching).await, None);
    web.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_with_the_realm_certificate() {
    let pki = jaring_testkit::tls::TestPki::new();
    let config = pki.server_config();
    let web = Web::start_with(
        &["ann"],
        |_| {},
        move |c| {
            c.tls = Some(jaring_runtime::TlsListen {
                config,
                mode: jaring_runtime::TlsMode::Only,
            });
        },
    )
    .await;
    let tls = jaring_runtime::ClientTls {
        config: pki.client_config(),
    };
    let stream = jaring_runtime::connect("localhost", web.web.port(), support::TIMEOUT, Some(&tls))
        .await
        .unwrap();
    let host = format!("localhost:{}", web.web.port());
    let origin = format!("https://{host}");
    let mut ws = client::open(
        stream,
        &client::Upgrade {
            path: "/ws/realm1",
            host: &host,
            origin: Some(&origin),
        },
    )
    .await
    .unwrap();
    let reply = support::call(&mut ws, "auth ann annpw").await;
    assert!(reply.contains(r#""status":"OK""#), "{reply}");
    web.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_answers_no_ping_is_dropped_and_a_live_one_stays() {
    let web = Web::start(&["ann"], |o| {
        o.ping_every = Duration::from_millis(200);
        o.pong_timeout = Duration::from_millis(300);
    })
    .await;
    // Dead: completes the handshake, then never reads or answers.
    let mut dead = tokio::net::TcpStream::connect(web.web).await.unwrap();
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    dead.write_all(
        b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .await
    .unwrap();
    // Live: reads all the while (tungstenite answers pings as it reads).
    let mut live = ws_open(&web, "/ws", None).await.unwrap();
    let quiet = tokio::time::timeout(Duration::from_millis(1500), client::recv(&mut live)).await;
    assert!(quiet.is_err(), "the live peer was closed: {quiet:?}");
    // The dead one saw the 101 and a ping, then the end.
    let mut seen = Vec::new();
    let ended = tokio::time::timeout(support::TIMEOUT, async {
        let mut chunk = [0u8; 1024];
        loop {
            match dead.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => seen.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the dead peer is still connected");
    let head_end = seen.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert!(seen.starts_with(b"HTTP/1.1 101"));
    assert_eq!(
        seen.get(head_end),
        Some(&0x89),
        "a ping frame after the 101"
    );
    let reply = support::call(&mut live, "auth ann annpw").await;
    assert!(reply.contains(r#""status":"OK""#), "{reply}");
    web.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_port_has_the_runtimes_connection_limit() {
    let web = Web::start_with(&["ann"], |_| {}, |c| c.limits.max_connections = 1).await;
    let mut first = ws_open(&web, "/ws", None).await.unwrap();
    let refused = http_get(web.web, "GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    assert!(refused.contains("server busy"), "{refused}");
    assert!(support::call(&mut first, "hello").await.contains("ERROR"));
    web.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_sends_are_all_answered_in_order() {
    let web = Web::start(&["ann", "bob"], |_| {}).await;
    let mut ws = ws_open(&web, "/ws", None).await.unwrap();
    let t = support::token(&support::call(&mut ws, "auth ann annpw").await);
    let lines: Vec<String> = (0..200).map(|i| format!("send {t} bob m{i}")).collect();
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    client::send_lines(&mut ws, &refs).await.unwrap();
    for i in 0..200 {
        let r = support::recv(&mut ws).await.unwrap();
        assert!(
            r.starts_with(r#"{"status":"OK","message":"Message Sent""#),
            "{i}: {r}"
        );
    }
    let tb = support::token(&support::call(&mut ws, "auth bob bobpw").await);
    let inbox = support::call(&mut ws, &format!("inbox {tb}")).await;
    let v: serde_json::Value = serde_json::from_str(&inbox).unwrap();
    let texts: Vec<&str> = v["messages"]["ann"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["msg"].as_str().unwrap())
        .collect();
    let want: Vec<String> = (0..200).map(|i| format!("m{i}")).collect();
    assert_eq!(texts, want);
    web.stop().await;
}
