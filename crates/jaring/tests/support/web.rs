//! The one WebSocket test client of the binary's tests: `jaring_web::client`, with helpers.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use jaring_web::client::{self, Upgrade};
use tokio::net::TcpStream;

use super::PATIENCE;

/// Sends `line` as one message and parses the next message (its reply).
pub async fn call<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    ws: &mut tokio_tungstenite::WebSocketStream<S>,
    line: &str,
) -> serde_json::Value {
    client::send(ws, line).await.unwrap();
    let text = tokio::time::timeout(PATIENCE, client::recv(ws))
        .await
        .unwrap()
        .unwrap()
        .expect("a reply");
    serde_json::from_str(&text).unwrap()
}

/// A WebSocket to `path` on 127.0.0.1:`port`, with the page's own Origin.
pub async fn ws(port: u16, path: &str) -> tokio_tungstenite::WebSocketStream<TcpStream> {
    let stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let host = format!("127.0.0.1:{port}");
    let origin = format!("http://{host}");
    client::open(
        stream,
        &Upgrade {
            path,
            host: &host,
            origin: Some(&origin),
        },
    )
    .await
    .unwrap()
}

/// The lab's web port serves both realms; messi (realm1) writes to james (realm2) over WebSockets.
pub async fn lab_across_realms(port: u16) {
    let mut r1 = ws(port, "/ws/realm1").await;
    let mut r2 = ws(port, "/ws/realm2").await;
    let t1 = call(&mut r1, "auth messi surabaya").await["tokenid"]
        .as_str()
        .unwrap()
        .to_owned();
    let t2 = call(&mut r2, "auth james medan").await["tokenid"]
        .as_str()
        .unwrap()
        .to_owned();
    let sent = call(
        &mut r1,
        &format!("send {t1} james@realm2 hello over the web"),
    )
    .await;
    assert_eq!(sent["status"], "OK", "{sent}");
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let inbox = call(&mut r2, &format!("inbox {t2}")).await;
        if inbox.to_string().contains("hello over the web") {
            assert!(inbox["messages"]["messi@realm1"].is_array(), "{inbox}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never arrived: {inbox}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
