//! The classic lab client's exact bytes, load with 1,000 clients, and persistence across restarts.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::sync::Arc;

use common::*;
use jaring_chat::SystemClock;
use jaring_runtime::Model;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// What the classic client does: sendall the line, then recv(64) until the text ends in \r\n\r\n;
/// the reply's bytes. Like the classic client, it decodes each 64-byte piece on its own, so a
/// multi-byte character cut by a read boundary fails here as it fails there.
async fn classic_call_raw(stream: &mut tokio::net::TcpStream, line: &str) -> Vec<u8> {
    stream.write_all(line.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    while !got.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(TIMEOUT, stream.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "server closed mid-reply");
        assert!(
            std::str::from_utf8(&buf[..n]).is_ok(),
            "a 64-byte read is not text on its own: {:?}",
            &buf[..n]
        );
        got.extend_from_slice(&buf[..n]);
    }
    got
}

async fn classic_call(stream: &mut tokio::net::TcpStream, line: &str) -> serde_json::Value {
    let got = classic_call_raw(stream, line).await;
    // Exactly one reply per request: nothing after the end.
    serde_json::from_slice(&got[..got.len() - 4]).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn classic_client_byte_sequences() {
    let (_dir, r) = realm_with(&["messi", "henderson"], options(), |c| {
        c.model = Model::Threads
    })
    .await;
    let mut a = tokio::net::TcpStream::connect(r.addr).await.unwrap();
    let auth = classic_call(&mut a, "auth messi messipw \r\n").await;
    let t = auth["tokenid"].as_str().unwrap().to_owned();
    // The classic client builds " w1 w2" and adds a trailing space.
    let sent = classic_call(
        &mut a,
        &format!("send {t} henderson  hello gimana kabarnya son \r\n"),
    )
    .await;
    assert_eq!(sent["status"], "OK");
    assert_eq!(sent["message"], "Message Sent");
    let mut b = tokio::net::TcpStream::connect(r.addr).await.unwrap();
    let tb = classic_call(&mut b, "auth henderson hendersonpw \r\n").await["tokenid"]
        .as_str()
        .unwrap()
        .to_owned();
    let inbox = classic_call(&mut b, &format!("inbox {tb} \r\n")).await;
    assert_eq!(
        inbox["messages"]["messi"][0]["msg"],
        " hello gimana kabarnya son"
    );
    // A request split across segments, and two in one segment.
    b.write_all(b"inb").await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let again = classic_call(&mut b, &format!("ox {tb} \r\n")).await;
    assert_eq!(again["messages"], serde_json::json!({}));
    b.write_all(format!("users {tb}\r\nusers {tb}\r\n").as_bytes())
        .await
        .unwrap();
    let mut framer = jaring_proto::chat::ReplyFramer::new(1 << 20);
    let mut replies = 0;
    let mut buf = [0u8; 64];
    while replies < 2 {
        let n = tokio::time::timeout(TIMEOUT, b.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        framer.handle_input(&buf[..n]);
        while let Some(v) = framer.poll_reply().unwrap() {
            assert_eq!(v["status"], "OK");
            replies += 1;
        }
    }
    drop((a, b));
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_clients_each_message_exactly_once() {
    const CLIENTS: usize = 1000;
    const USERS: usize = 50;
    const PER_CLIENT: usize = 3;
    let dir = tempfile::tempdir().unwrap();
    let names: Vec<String> = (0..USERS).map(|i| format!("u{i}")).collect();
    add_users(
        dir.path(),
        &names.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let r = start(
        dir.path(),
        options(),
        Arc::new(SystemClock::default()),
        Model::Async,
    )
    .await;
    let addr = r.addr;
    // All authenticate first, holding their connections open at once.
    let mut clients = Vec::new();
    for i in 0..CLIENTS {
        clients.push(tokio::spawn(async move {
            let mut c = Client::connect(addr).await;
            let user = format!("u{}", i % USERS);
            let t = c.auth(&user, &format!("{user}pw")).await;
            (i, c, t)
        }));
    }
    let mut authed = Vec::new();
    for c in clients {
        authed.push(c.await.unwrap());
    }
    let mut tasks = Vec::new();
    for (i, mut c, t) in authed {
        tasks.push(tokio::spawn(async move {
            for k in 0..PER_CLIENT {
                let to = format!("u{}", (i + k + 1) % USERS);
                let r = c.call(&format!("send {t} {to} m-{i}-{k}")).await;
                assert_eq!(r["status"], "OK", "{r}");
            }
            (i, c, t)
        }));
    }
    let mut done = Vec::new();
    for t in tasks {
        done.push(t.await.unwrap());
    }
    // Every user reads its inbox from every one of its connections, concurrently.
    let mut readers = Vec::new();
    for (i, mut c, t) in done {
        readers.push(tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                let r = c.call(&format!("inbox {t}")).await;
                let b = bodies(&r);
                if b.is_empty() && r.get("more").is_none() {
                    break;
                }
                got.extend(b.into_iter().map(|(_, m)| (format!("u{}", i % USERS), m)));
            }
            got
        }));
    }
    let mut seen: HashMap<String, usize> = HashMap::new();
    for r in readers {
        for (user, msg) in r.await.unwrap() {
            *seen.entry(format!("{user}:{msg}")).or_default() += 1;
        }
    }
    // One more pass per user, after every reader finished, must find nothing left.
    let mut c = Client::connect(addr).await;
    for u in 0..USERS {
        let t = c.auth(&format!("u{u}"), &format!("u{u}pw")).await;
        assert!(bodies(&c.call(&format!("inbox {t}")).await).is_empty());
    }
    assert_eq!(seen.len(), CLIENTS * PER_CLIENT);
    for i in 0..CLIENTS {
        for k in 0..PER_CLIENT {
            let key = format!("u{}:m-{i}-{k}", (i + k + 1) % USERS);
            assert_eq!(seen.get(&key), Some(&1), "{key}");
        }
    }
    drop(c);
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_and_tokens_survive_a_clean_restart() {
    let (dir, r) = realm_with(&["messi", "henderson"], options(), |c| {
        c.model = Model::Async
    })
    .await;
    let mut a = Client::connect(r.addr).await;
    let ta = a.auth("messi", "messipw").await;
    for i in 0..5 {
        assert!(ok(&a
            .call(&format!("send {ta} henderson before-{i}"))
            .await));
    }
    drop(a);
    r.stop().await;

    let r = start(
        dir.path(),
        options(),
        Arc::new(SystemClock::default()),
        Model::Async,
    )
    .await;
    let mut b = Client::connect(r.addr).await;
    // The token issued before the restart still works.
    assert!(ok(&b.call(&format!("history {ta} henderson")).await));
    let tb = b.auth("henderson", "hendersonpw").await;
    let got: Vec<String> = bodies(&b.call(&format!("inbox {tb}")).await)
        .into_iter()
        .map(|(_, m)| m)
        .collect();
    assert_eq!(
        got,
        (0..5).map(|i| format!("before-{i}")).collect::<Vec<_>>()
    );
    // The next request shows the client has that reply: its messages are delivered.
    assert!(ok(&b.call(&format!("users {tb}")).await));
    drop(b);
    r.stop().await;

    let r = start(
        dir.path(),
        options(),
        Arc::new(SystemClock::default()),
        Model::Async,
    )
    .await;
    let mut b = Client::connect(r.addr).await;
    let tb = b.auth("henderson", "hendersonpw").await;
    assert!(
        bodies(&b.call(&format!("inbox {tb}")).await).is_empty(),
        "delivered stays delivered"
    );
    let h = b.call(&format!("history {tb} messi")).await;
    assert_eq!(
        h["messages"].as_array().unwrap().len(),
        5,
        "history keeps what was read"
    );
    drop(b);
    r.stop().await;
}

/// Non-ASCII text is stored and read back unchanged, but every reply carrying it is pure ASCII
/// (escaped as Python's json.dumps does), so the classic client's 64-byte reads never cut a
/// character.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_ascii_text_comes_back_as_ascii_json() {
    let (_dir, r) = realm_with(&["messi", "henderson"], options(), |c| {
        c.model = Model::Async
    })
    .await;
    // Enough multi-byte characters that a raw reply would cut one at some 64-byte boundary.
    let text = "caf\u{e9} \u{65e5}\u{672c}\u{8a9e} \u{1f600} ".repeat(8);
    let text = text.trim_end();
    let mut a = tokio::net::TcpStream::connect(r.addr).await.unwrap();
    let ta = classic_call(&mut a, "auth messi messipw \r\n").await["tokenid"]
        .as_str()
        .unwrap()
        .to_owned();
    let sent = classic_call(&mut a, &format!("send {ta} henderson {text}\r\n")).await;
    assert_eq!(sent["status"], "OK", "{sent}");
    let mut b = tokio::net::TcpStream::connect(r.addr).await.unwrap();
    let tb = classic_call(&mut b, "auth henderson hendersonpw \r\n").await["tokenid"]
        .as_str()
        .unwrap()
        .to_owned();
    for line in [
        format!("inbox {tb} \r\n"),
        format!("history {tb} messi\r\n"),
    ] {
        let raw = classic_call_raw(&mut b, &line).await;
        assert!(raw.is_ascii(), "{}", String::from_utf8_lossy(&raw));
        assert!(
            raw.windows(12).any(|w| w == br"\ud83d\ude00"),
            "escaped as a surrogate pair"
        );
        let v: serde_json::Value = serde_json::from_slice(&raw[..raw.len() - 4]).unwrap();
        let msg = if line.starts_with("inbox") {
            &v["messages"]["messi"][0]["msg"]
        } else {
            &v["messages"][0]["msg"]
        };
        assert_eq!(msg.as_str(), Some(text), "the text itself is unchanged");
    }
    drop((a, b));
    r.stop().await;
}

/// The classic two-realm client's group mode, read as that client reads: `recv(1024)` until one
/// read is exactly `exit`. Returns every read before it, and checks `exit` came alone.
struct ClassicGroupReader {
    reads: Vec<Vec<u8>>,
}

impl ClassicGroupReader {
    /// Reads until the text read so far contains `needle` (bounded: at most 10,000 reads).
    async fn until(&mut self, stream: &mut tokio::net::TcpStream, needle: &str) {
        for _ in 0..10_000 {
            if self.text().contains(needle) {
                return;
            }
            let got = recv_raw(stream, 1024).await;
            assert!(!got.is_empty(), "server closed; so far: {}", self.text());
            assert_ne!(got, b"exit", "exit before {needle:?}");
            self.reads.push(got);
        }
        panic!("no {needle:?} in {}", self.text());
    }

    /// Reads until a read is exactly `exit`, as the client's receive thread does.
    async fn until_exit(&mut self, stream: &mut tokio::net::TcpStream) {
        for _ in 0..10_000 {
            let got = recv_raw(stream, 1024).await;
            assert!(!got.is_empty(), "server closed before exit");
            if got == b"exit" {
                return;
            }
            assert!(
                !got.ends_with(b"exit") && !got.starts_with(b"exit"),
                "exit shared a read: {:?}",
                String::from_utf8_lossy(&got)
            );
            self.reads.push(got);
        }
        panic!("no exit");
    }

    fn text(&self) -> String {
        String::from_utf8(self.reads.concat()).unwrap()
    }
}

/// The seed's two-realm client in group mode, byte for byte: `group TOKEN NAME origin \r\n`, then
/// what the user types with no line end, then a bare `exit`. Its posts reach jaring's members in
/// the group's one order and its history; theirs reach it as raw `<user>: <text>`; `exit` comes
/// back alone, then the lab's final reply.
async fn classic_group_mode(model: Model) {
    let (_dir, r) = realm_with(&["messi", "henderson"], options(), |c| c.model = model).await;
    let mut h = Client::connect(r.addr).await;
    let th = h.auth("henderson", "hendersonpw").await;
    assert_eq!(
        h.call(&format!("group {th} football")).await["status"],
        "OK"
    );

    let mut m = tokio::net::TcpStream::connect(r.addr).await.unwrap();
    let tm = classic_call(&mut m, "auth messi messipw \r\n").await["tokenid"]
        .as_str()
        .unwrap()
        .to_owned();
    m.write_all(format!("group {tm} football origin \r\n").as_bytes())
        .await
        .unwrap();
    let mut reader = ClassicGroupReader { reads: Vec::new() };
    reader.until(&mut m, "messi telah bergabung").await;
    let join = h.reply().await.unwrap();
    assert_eq!(
        (join["event"].as_str(), join["user"].as_str()),
        (Some("join"), Some("messi"))
    );

    // What the user types: each sendall is one post, the client sends no line end.
    let quiet = std::time::Duration::from_millis(300);
    for text in ["hello from the lab", "second  one "] {
        m.write_all(text.as_bytes()).await.unwrap();
        tokio::time::sleep(quiet).await;
    }
    // A stream that never pauses is cut into posts of at most max_line bytes.
    let max = jaring_proto::chat::DEFAULT_MAX_LINE;
    let flood = vec![b'x'; 2 * max + 100];
    m.write_all(&flood).await.unwrap();
    let mut events = Vec::new();
    let mut flooded = 0;
    while flooded < flood.len() {
        let v = h.reply().await.unwrap();
        if v["event"] == "message" {
            let msg = v["msg"].as_str().unwrap().to_owned();
            if events.len() >= 2 {
                flooded += msg.len();
            }
            events.push((
                v["seq"].as_i64().unwrap(),
                v["from"].as_str().unwrap().to_owned(),
                msg,
            ));
        }
    }
    assert_eq!(
        events[..2],
        [
            (1, "messi".into(), "hello from the lab".into()),
            (2, "messi".into(), "second  one".into()),
        ]
    );
    // The flood comes out whole, in posts of at most max_line bytes: 64 KiB each while the bytes
    // keep coming (a machine too busy to send them in one go can make a pause, and so a shorter
    // post, anywhere; the chunker's unit tests pin the exact cuts).
    let posts = &events[2..];
    assert!(posts.len() >= 3, "{} posts", posts.len());
    assert!(
        posts
            .iter()
            .all(|(_, from, m)| from == "messi" && m.len() <= max && m.bytes().all(|b| b == b'x'))
    );
    assert_eq!(flooded, flood.len());
    assert!(
        posts.iter().map(|p| p.0).eq(3..3 + posts.len() as i64),
        "in order, no gaps"
    );
    reader.until(&mut m, "messi: hello from the lab").await;
    reader.until(&mut m, "messi: second  one").await;

    // The other direction: a jaring member's post, raw.
    h.send_raw(b"hi messi\r\n").await;
    reader.until(&mut m, "henderson: hi messi").await;

    // Someone leaving the group.
    h.send_raw(b"exit\r\n").await;
    loop {
        let v = h.reply().await.unwrap();
        if v.get("status").is_some() {
            assert_eq!(v["status"], "OK", "{v}");
            break;
        }
    }
    assert_eq!(
        h.call(&format!("leave {th} football")).await["status"],
        "OK"
    );
    reader.until(&mut m, "henderson meninggalkan group").await;

    // exit: `exit` alone in its own read, then the lab's reply as json.dumps wrote it.
    m.write_all(b"exit").await.unwrap();
    reader.until_exit(&mut m).await;
    let mut last = Vec::new();
    while !last.ends_with(b"\r\n\r\n") {
        let got = recv_raw(&mut m, 64).await;
        assert!(!got.is_empty(), "server closed before the final reply");
        last.extend_from_slice(&got);
    }
    assert_eq!(
        String::from_utf8(last).unwrap(),
        "{\"status\": \"OK\", \"message\": \"Telah keluar dari grup football\"}\r\n\r\n"
    );
    let text = reader.text();
    assert_eq!(
        text.matches("messi: ").count(),
        events.len(),
        "each post once: {}",
        &text[..200]
    );

    // The connection is in command mode again, and the group's history keeps the posts.
    let hist = classic_call(&mut m, &format!("history {tm} football 3\r\n")).await;
    let bodies: Vec<&str> = hist["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["msg"].as_str().unwrap())
        .collect();
    assert_eq!(bodies[2], "hi messi");
    let hist = classic_call(&mut m, &format!("history {tm} football 6\r\n")).await;
    assert_eq!(hist["messages"][0]["msg"], "hello from the lab");
    drop((h, m));
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn classic_group_mode_async() {
    classic_group_mode(Model::Async).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn classic_group_mode_threads() {
    classic_group_mode(Model::Threads).await;
}

/// The classic client's replies byte for byte (only the token, ids and times vary), and what it
/// meets after the idle timeout: a closed connection, never a stale frame it would take for the
/// reply to the command it sends next.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn classic_replies_byte_for_byte_and_a_silent_idle_close() {
    let (_dir, r) = realm_with(&["messi", "henderson"], options(), |c| {
        c.limits.idle_timeout = std::time::Duration::from_secs(1);
    })
    .await;
    let text = |b: Vec<u8>| String::from_utf8(b).unwrap();
    let mut a = tokio::net::TcpStream::connect(r.addr).await.unwrap();
    let auth = text(classic_call_raw(&mut a, "auth messi messipw \r\n").await);
    let t = &auth[r#"{"status":"OK","tokenid":""#.len()..][..64];
    assert_eq!(
        auth,
        format!(r#"{{"status":"OK","tokenid":"{t}","unread":{{}},"unread_groups":{{}}}}"#)
            + "\r\n\r\n"
    );
    let sent = text(classic_call_raw(&mut a, &format!("send {t} henderson  hi son \r\n")).await);
    let id = &sent[r#"{"status":"OK","message":"Message Sent","id":""#.len()..][..36];
    assert_eq!(
        sent,
        format!(r#"{{"status":"OK","message":"Message Sent","id":"{id}"}}"#) + "\r\n\r\n"
    );
    let mut b = tokio::net::TcpStream::connect(r.addr).await.unwrap();
    let auth = text(classic_call_raw(&mut b, "auth henderson hendersonpw \r\n").await);
    assert!(auth.contains(r#""unread":{"messi":1}"#), "{auth}");
    let tb = &auth[r#"{"status":"OK","tokenid":""#.len()..][..64];
    let inbox = text(classic_call_raw(&mut b, &format!("inbox {tb} \r\n")).await);
    let v: serde_json::Value = serde_json::from_str(&inbox[..inbox.len() - 4]).unwrap();
    let m = &v["messages"]["messi"][0];
    assert_eq!(
        inbox,
        format!(
            r#"{{"status":"OK","messages":{{"messi":[{{"msg_from":"MESSI","msg_to":"HENDERSON","msg":" hi son","id":"{id}","from":"messi","to":"henderson","sent_at":{},"seq":{}}}]}}}}"#,
            m["sent_at"], m["seq"]
        ) + "\r\n\r\n"
    );
    // Quiet past the idle timeout: the server closes without writing anything.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let _ = a.write_all(format!("inbox {t} \r\n").as_bytes()).await;
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(TIMEOUT, a.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(
        n,
        0,
        "a stray frame: {:?}",
        String::from_utf8_lossy(&buf[..n])
    );
    drop(b);
    r.stop().await;
}
