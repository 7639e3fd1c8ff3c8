//! The TIME client against real servers, good and bad.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

use std::sync::Arc;
use std::time::Duration;

use jaring_runtime::{CancellationToken, Server, ServerConfig};
use jaring_time::TimeService;
use jaring_time::client::{self, ClientError, ClientOptions};
use jiff::tz::TimeZone;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

fn opts(port: u16, count: u64) -> ClientOptions {
    ClientOptions {
        host: "127.0.0.1".into(),
        port,
        count,
        interval: Duration::ZERO,
        timeout: Duration::from_secs(10),
        tls: None,
    }
}

/// A fake server that answers every connection with `reply` and then waits for the client to go.
async fn fake_server(reply: &'static [u8]) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 64];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(reply).await;
                let _ = s.read(&mut buf).await;
            });
        }
    });
    port
}

#[tokio::test]
async fn asks_n_times_prints_each_reply_and_quits() {
    let mut config = ServerConfig::on_port(0);
    config.listen.bind = "127.0.0.1".parse().unwrap();
    let server = Server::bind(config).await.unwrap();
    let port = server.local_addr().port();
    let stats = server.stats();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(server.serve(
        Arc::new(TimeService::new(TimeZone::UTC, 1024)),
        shutdown.clone(),
    ));

    let mut out = Vec::new();
    let mut o = opts(port, 3);
    o.interval = Duration::from_millis(20);
    let times = client::run(&o, &mut out).await.expect("client succeeds");
    assert_eq!(times.len(), 3);
    let text = String::from_utf8(out).unwrap();
    assert_eq!(text.lines().count(), 3);
    assert!(
        text.lines().all(|l| l.starts_with("JAM ") && l.len() == 12),
        "{text:?}"
    );
    // The client sent QUIT, so the server ended the session rather than timing it out.
    tokio::time::timeout(Duration::from_secs(10), async {
        while stats.closed() < 1 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("session closed after QUIT");
    shutdown.cancel();
    task.await.unwrap();
}

#[tokio::test]
async fn a_refused_connection_names_host_and_port() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let err = client::run(&opts(port, 1), &mut Vec::new())
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Dial(_)), "{err:?}");
    assert_eq!(err.to_string(), format!("127.0.0.1:{port}: cannot connect"));
}

#[tokio::test]
async fn a_malformed_reply_is_an_error_that_quotes_it() {
    let port = fake_server(b"HELLO THERE\r\n").await;
    let err = client::run(&opts(port, 1), &mut Vec::new())
        .await
        .unwrap_err();
    let ClientError::Reply { source, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(
        source.to_string(),
        "malformed reply \"HELLO THERE\": expected JAM hh:mm:ss"
    );
}

#[tokio::test]
async fn a_reply_without_a_line_end_is_malformed() {
    let port = fake_server(b"JAM 12:00:00").await;
    let mut o = opts(port, 1);
    o.timeout = Duration::from_millis(500);
    let err = client::run(&o, &mut Vec::new()).await.unwrap_err();
    assert!(
        matches!(err, ClientError::Reply { .. } | ClientError::Timeout { .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn an_err_reply_is_reported_as_the_server_said_it() {
    let port = fake_server(b"ERR server busy: 1 connections open; try again later\r\n").await;
    let err = client::run(&opts(port, 1), &mut Vec::new())
        .await
        .unwrap_err();
    let ClientError::Reply { source, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(
        source.to_string(),
        "server said: server busy: 1 connections open; try again later"
    );
}

#[tokio::test]
async fn a_silent_server_times_out() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let _hold = tokio::spawn(async move {
        let (s, _) = listener.accept().await.unwrap();
        tokio::time::sleep(Duration::from_secs(30)).await;
        drop(s);
    });
    let mut o = opts(port, 1);
    o.timeout = Duration::from_millis(300);
    let err = client::run(&o, &mut Vec::new()).await.unwrap_err();
    assert!(matches!(err, ClientError::Timeout { .. }), "{err:?}");
}

#[tokio::test]
async fn a_server_that_closes_early_is_reported() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let (s, _) = listener.accept().await.unwrap();
        drop(s);
    });
    let err = client::run(&opts(port, 1), &mut Vec::new())
        .await
        .unwrap_err();
    assert!(
        matches!(err, ClientError::Closed { .. } | ClientError::Io { .. }),
        "{err:?}"
    );
}
