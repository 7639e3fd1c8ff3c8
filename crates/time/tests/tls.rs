//! The TIME server with TLS over real TCP on port 0: TLS and plaintext on one port under every
//! model, `--tls-only`, and hostile handshakes (byte by byte, truncated, garbage, never finished,
//! thousands at once) that must cost nothing and harm no one else.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

mod common;

use std::io::{Read as _, Write as _};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::{PATIENCE, Running, config, start_with};
use jaring_proto::time::parse_reply;
use jaring_runtime::{ClientTls, Model, ServerConfig, TlsListen, TlsMode, connect};
use jaring_testkit::tls::TestPki;
use jaring_tls::rustls;
use jiff::tz::TimeZone;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpStream;

async fn start(pki: &TestPki, mode: TlsMode, tune: impl FnOnce(&mut ServerConfig)) -> Running {
    let mut config = config(Model::Async);
    config.grace = Duration::from_secs(2);
    config.tls = Some(TlsListen {
        config: pki.server_config(),
        mode,
    });
    tune(&mut config);
    start_with(config, TimeZone::UTC).await
}

fn client_tls(pki: &TestPki) -> ClientTls {
    ClientTls {
        config: pki.client_config(),
    }
}

/// `TIME` over TLS (verifying the certificate for `host`), `n` times on one connection.
async fn time_over_tls(pki: &TestPki, host: &str, addr: SocketAddr, n: usize) {
    let tls = client_tls(pki);
    let stream = connect(host, addr.port(), PATIENCE, Some(&tls))
        .await
        .unwrap();
    assert!(stream.tls_summary().is_some());
    let mut stream = BufReader::new(stream);
    for _ in 0..n {
        stream.get_mut().write_all(b"TIME\r\n").await.unwrap();
        stream.get_mut().flush().await.unwrap();
        let mut line = String::new();
        tokio::time::timeout(PATIENCE, stream.read_line(&mut line))
            .await
            .unwrap()
            .unwrap();
        parse_reply(line.trim_end().as_bytes()).unwrap();
    }
}

/// `TIME` in plaintext, as the classic client sends it.
async fn time_plain(addr: SocketAddr) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"TIME\r\nQUIT\r\n").await.unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(PATIENCE, s.read_to_end(&mut got))
        .await
        .unwrap()
        .unwrap();
    got
}

#[tokio::test]
async fn one_port_serves_tls_and_plaintext_clients_at_once_under_every_model() {
    let pki = TestPki::new();
    for model in [Model::Async, Model::Threads, Model::Iterative] {
        let r = start(&pki, TlsMode::Both, |c| c.model = model).await;
        if model == Model::Iterative {
            // One client at a time: in turn.
            time_over_tls(&pki, "localhost", r.addr, 3).await;
            let plain = time_plain(r.addr).await;
            assert!(plain.starts_with(b"JAM "), "{model}: {plain:?}");
        } else {
            let (a, b, plain) = tokio::join!(
                time_over_tls(&pki, "localhost", r.addr, 20),
                time_over_tls(&pki, "127.0.0.1", r.addr, 20),
                time_plain(r.addr)
            );
            let ((), ()) = (a, b);
            assert!(plain.starts_with(b"JAM "), "{model}: {plain:?}");
        }
        r.stop().await;
    }
}

#[tokio::test]
async fn a_tls_only_port_tells_a_plaintext_client_in_one_line_and_serves_tls() {
    let pki = TestPki::new();
    let r = start(&pki, TlsMode::Only, |_| {}).await;
    let got = time_plain(r.addr).await;
    let text = String::from_utf8(got).unwrap();
    assert_eq!(text.lines().count(), 1, "{text:?}");
    assert!(text.starts_with("ERR "), "{text:?}");
    assert!(text.contains("TLS only"), "{text:?}");
    time_over_tls(&pki, "localhost", r.addr, 2).await;
    r.stop().await;
}

#[tokio::test]
async fn a_wrong_certificate_is_refused_by_the_client_and_the_server_carries_on() {
    let pki = TestPki::new();
    let other = TestPki::new();
    let r = start(&pki, TlsMode::Both, |_| {}).await;
    let tls = client_tls(&other);
    let err = connect("localhost", r.addr.port(), PATIENCE, Some(&tls))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("TLS handshake failed"), "{err}");
    time_over_tls(&pki, "localhost", r.addr, 1).await;
    r.stop().await;
}

/// A client hello as rustls would send it, and the connection that sent it.
fn client_hello(pki: &TestPki) -> (rustls::ClientConnection, Vec<u8>) {
    let name = jaring_tls::server_name("localhost").unwrap();
    let mut conn = rustls::ClientConnection::new(pki.client_config(), name).unwrap();
    let mut hello = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut hello).unwrap();
    }
    (conn, hello)
}

#[tokio::test]
async fn a_client_hello_sent_byte_by_byte_still_completes() {
    let pki = Arc::new(TestPki::new());
    let r = start(&pki, TlsMode::Both, |_| {}).await;
    let addr = r.addr;
    let p = Arc::clone(&pki);
    let reply = tokio::task::spawn_blocking(move || {
        let (conn, hello) = client_hello(&p);
        let mut sock = std::net::TcpStream::connect(addr).unwrap();
        sock.set_nodelay(true).unwrap();
        sock.set_read_timeout(Some(PATIENCE)).unwrap();
        for b in &hello {
            sock.write_all(std::slice::from_ref(b)).unwrap();
            std::thread::sleep(Duration::from_millis(1));
        }
        let mut tls = rustls::StreamOwned::new(conn, sock);
        tls.write_all(b"TIME\r\n").unwrap();
        let mut buf = [0u8; 64];
        let n = tls.read(&mut buf).unwrap();
        buf[..n].to_vec()
    })
    .await
    .unwrap();
    assert!(reply.starts_with(b"JAM "), "{reply:?}");
    r.stop().await;
}

/// Connects, sends `bytes`, and returns how the server ended it: the bytes it sent before its
/// close, within `limit`.
async fn send_and_wait_close(addr: SocketAddr, bytes: &[u8], limit: Duration) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => panic!("the server kept the connection open past {limit:?}"),
            Ok(Ok(0) | Err(_)) => return got,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test]
async fn truncated_and_garbage_handshakes_are_closed_and_others_are_served() {
    let pki = TestPki::new();
    let r = start(&pki, TlsMode::Both, |c| {
        c.limits.handshake_timeout = Duration::from_secs(2);
    })
    .await;
    let (_, hello) = client_hello(&pki);
    // Garbage after the handshake byte: the record header is nonsense; closed at once (an alert
    // at most).
    let got = send_and_wait_close(r.addr, &[0x16, 0xff, 0xff, 0xff, 0xff, 0, 1, 2], PATIENCE).await;
    assert!(!got.starts_with(b"JAM"), "{got:?}");
    // Half a client hello, then silence: closed by the handshake timeout.
    let half = &hello[..hello.len() / 2];
    send_and_wait_close(r.addr, half, PATIENCE).await;
    // Just the first byte: the same.
    send_and_wait_close(r.addr, &[0x16], PATIENCE).await;
    // A client hello with the rest of the connection garbage.
    let mut bad = hello.clone();
    bad.extend_from_slice(&[0x17; 300]);
    send_and_wait_close(r.addr, &bad, PATIENCE).await;
    time_over_tls(&pki, "localhost", r.addr, 1).await;
    assert!(time_plain(r.addr).await.starts_with(b"JAM "));
    // Every hostile connection was closed and counted; nothing is left open but what we hold.
    let closed_in_time = tokio::time::timeout(PATIENCE, async {
        while r.stats.active() > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(closed_in_time.is_ok(), "{} still open", r.stats.active());
    r.stop().await;
}

#[tokio::test]
async fn thousands_of_stalled_handshakes_are_bounded_by_the_connection_limit() {
    let pki = TestPki::new();
    let limit = 200;
    let r = start(&pki, TlsMode::Both, |c| {
        c.limits.max_connections = limit;
        c.limits.max_per_address = Some(limit);
        c.limits.handshake_timeout = Duration::from_secs(3);
    })
    .await;
    let (_, hello) = client_hello(&pki);
    // 1,500 clients each send half a hello and stall. Opened in waves so the listen backlog
    // does not decide the outcome.
    let mut held = Vec::new();
    for _ in 0..15 {
        let wave: Vec<_> = (0..100)
            .map(|_| {
                let half = hello[..hello.len() / 2].to_vec();
                let addr = r.addr;
                tokio::spawn(async move {
                    let mut s = TcpStream::connect(addr).await.ok()?;
                    s.write_all(&half).await.ok()?;
                    Some(s)
                })
            })
            .collect();
        for t in wave {
            if let Some(s) = t.await.unwrap() {
                held.push(s);
            }
        }
    }
    assert!(
        r.stats.refused() > 0,
        "past {limit} connections the server refuses"
    );
    assert!(r.stats.active() <= limit as u64, "{}", r.stats.active());
    // The stalled ones time out; then a genuine client is served.
    let served = tokio::time::timeout(PATIENCE, async {
        loop {
            let tls = client_tls(&pki);
            if let Ok(mut s) = connect("localhost", r.addr.port(), PATIENCE, Some(&tls)).await {
                s.write_all(b"TIME\r\n").await.unwrap();
                s.flush().await.unwrap();
                let mut buf = [0u8; 64];
                if let Ok(n) = s.read(&mut buf).await
                    && buf[..n].starts_with(b"JAM ")
                {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    assert!(
        served.is_ok(),
        "a genuine client is served once the stalled handshakes time out"
    );
    drop(held);
    r.stop().await;
}
