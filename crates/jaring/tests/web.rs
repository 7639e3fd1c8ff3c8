//! `jaring chat serve --web-port` and the lab's web port, against the binary: the log line names
//! the port, the WebSocket reaches the realm (over TLS too), and the lab serves both realms on one
//! port, across the link.
#![allow(clippy::unwrap_used)]

mod support;

use jaring_web::client::{self, Upgrade};
use support::web::{call, ws};
use support::{PATIENCE, ServerProcess, TestPki};

#[tokio::test]
async fn chat_serve_web_port_logs_its_url_and_serves_the_realm() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server =
        ServerProcess::realm_web(&["--storage", "memory", "--data-dir", data.to_str().unwrap()]);
    let web = server.federation_port.unwrap();
    assert_ne!(web, server.port);
    let mut c = ws(web, "/ws").await;
    let reply = call(&mut c, "auth messi surabaya").await;
    assert_eq!(reply["status"], "OK", "{reply}");
}

#[tokio::test]
async fn chat_serve_web_port_takes_wss_with_the_realm_certificate() {
    let pki = TestPki::create();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (cert, key) = (pki.cert(), pki.key());
    let server = ServerProcess::realm_web(&[
        "--storage",
        "memory",
        "--data-dir",
        data.to_str().unwrap(),
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
        "--tls-only",
    ]);
    let web = server.federation_port.unwrap();
    let config = jaring_tls::client_config(&jaring_tls::Trust::CaFile(pki.ca().into())).unwrap();
    let tls = jaring_runtime::ClientTls { config };
    let stream = jaring_runtime::connect("localhost", web, PATIENCE, Some(&tls))
        .await
        .unwrap();
    let host = format!("localhost:{web}");
    let mut c = client::open(
        stream,
        &Upgrade {
            path: "/ws",
            host: &host,
            origin: None,
        },
    )
    .await
    .unwrap();
    let reply = call(&mut c, "auth messi surabaya").await;
    assert_eq!(reply["status"], "OK", "{reply}");
}
