//! Echo over TLS on real TCP: a shutdown in the middle of a stream gives back exactly what the
//! server took, once, in order.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

use std::sync::Arc;
use std::time::Duration;

use jaring_echo::{EchoConfig, EchoServer};
use jaring_runtime::{CancellationToken, ClientTls, Server, ServerConfig, TlsListen, TlsMode};
use jaring_testkit::tls::TestPki;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const PATIENCE: Duration = Duration::from_secs(20);

/// Byte `i` of the stream: a big-endian counter, so a repeated or missing piece shows.
fn pattern(from: usize, len: usize) -> Vec<u8> {
    (from..from + len)
        .map(|i| ((i / 4) as u32).to_be_bytes()[i % 4])
        .collect()
}

#[tokio::test]
async fn a_shutdown_mid_stream_echoes_what_was_taken_once_and_in_order() {
    let pki = TestPki::new();
    let mut config = ServerConfig::on_port(0);
    config.listen.bind = "127.0.0.1".parse().unwrap();
    config.grace = Duration::from_secs(3);
    config.tls = Some(TlsListen {
        config: pki.server_config(),
        mode: TlsMode::Only,
    });
    let server = Server::bind(config).await.unwrap();
    let port = server.local_addr().port();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(server.serve(
        Arc::new(EchoServer::new(EchoConfig::default())),
        shutdown.clone(),
    ));
    let tls = ClientTls {
        config: pki.client_config(),
    };
    let stream = jaring_runtime::connect("localhost", port, PATIENCE, Some(&tls))
        .await
        .unwrap();
    let (mut rd, mut wr) = tokio::io::split(stream);
    // The client sends without reading: the server's writes back block, so the shutdown comes
    // while it is in the middle of giving a read's bytes back.
    let writer = tokio::spawn(async move {
        let mut sent = 0;
        while sent < 64 << 20 {
            let chunk = pattern(sent, 64 * 1024);
            if wr.write_all(&chunk).await.is_err() || wr.flush().await.is_err() {
                break;
            }
            sent += chunk.len();
        }
        sent
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    shutdown.cancel();
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match tokio::time::timeout(PATIENCE, rd.read(&mut buf)).await {
            Err(_) => panic!("the server kept the connection past its grace period"),
            Ok(Ok(0) | Err(_)) => break,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
    let sent = writer.await.unwrap();
    assert!(!got.is_empty(), "something was echoed");
    assert!(got.len() <= sent);
    assert!(
        got == pattern(0, got.len()),
        "the echo is not the stream's first {} bytes, once, in order",
        got.len()
    );
    tokio::time::timeout(PATIENCE, task).await.unwrap().unwrap();
}
