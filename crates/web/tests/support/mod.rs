//! The web tests' harness: a realm with its chat port and its web port on 127.0.0.1:0, a TCP
//! chat client, and the one WebSocket client (`jaring_web::client`) with test helpers.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use jaring_chat::password::{PasswordCost, hash_blocking};
use jaring_chat::storage::{UserAdmin as _, UserRecord};
use jaring_chat::{ChatServer, Realm, RealmOptions, SystemClock};
use jaring_chat_sqlite::{DEFAULT_MAX_BATCH, SqliteStore, Synchronous};
use jaring_runtime::{CancellationToken, Server, ServerConfig};
use jaring_web::client::{self, ClientError, Upgrade};
use jaring_web::{WebOptions, WebRealm, WebServer};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

pub const TIMEOUT: Duration = Duration::from_secs(30);

/// A running realm: `chat` is its TCP port, `web` its web port.
pub struct Web {
    pub chat: SocketAddr,
    pub web: SocketAddr,
    shutdown: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Web {
    /// A realm `realm1` with `users` (password: name + "pw"), its web options changed by `tune`.
    pub async fn start(users: &[&str], tune: impl FnOnce(&mut WebOptions)) -> Self {
        Self::start_with(users, tune, |_| {}).await
    }

    /// [`Web::start`], the web port's server configuration changed by `server`.
    pub async fn start_with(
        users: &[&str],
        tune: impl FnOnce(&mut WebOptions),
        server: impl FnOnce(&mut ServerConfig),
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path(), Synchronous::Full, DEFAULT_MAX_BATCH).unwrap();
        for n in users {
            let hash = hash_blocking(&format!("{n}pw"), PasswordCost::INSECURE_TEST).unwrap();
            store
                .add_user(UserRecord {
                    name: (*n).to_owned(),
                    display_name: n.to_uppercase(),
                    password_hash: hash,
                    bench: false,
                })
                .await
                .unwrap();
        }
        let options = RealmOptions {
            password_cost: PasswordCost::INSECURE_TEST,
            ..RealmOptions::default()
        };
        let realm = Arc::new(
            Realm::open(options, store, Arc::new(SystemClock::default()))
                .await
                .unwrap(),
        );
        let max_line = jaring_proto::chat::DEFAULT_MAX_LINE;
        let mut web_options = WebOptions::new(Vec::new(), max_line);
        tune(&mut web_options);
        let chat = Arc::new(ChatServer::new(Arc::clone(&realm), web_options.max_line));
        web_options.realms.insert(
            0,
            WebRealm {
                name: realm.name().to_owned(),
                endpoint: chat.clone(),
            },
        );
        let loopback = |port| {
            let mut c = ServerConfig::on_port(port);
            c.listen.bind = "127.0.0.1".parse().unwrap();
            c.grace = Duration::from_secs(2);
            c
        };
        let shutdown = CancellationToken::new();
        let chat_server = Server::bind(loopback(0)).await.unwrap();
        let mut web_config = loopback(0);
        server(&mut web_config);
        let web_server = Server::bind(web_config).await.unwrap();
        let (chat_addr, web_addr) = (chat_server.local_addr(), web_server.local_addr());
        let web = Arc::new(WebServer::new(web_options));
        let tasks = vec![
            tokio::spawn(chat_server.serve(chat, shutdown.clone())),
            tokio::spawn(web_server.serve(web, shutdown.clone())),
        ];
        Self {
            chat: chat_addr,
            web: web_addr,
            shutdown,
            tasks,
            _dir: dir,
        }
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        for t in self.tasks {
            tokio::time::timeout(TIMEOUT, t).await.unwrap().unwrap();
        }
    }
}

/// A WebSocket to `path` on the web port, with `origin` (as a browser would send it).
pub async fn ws_open(
    web: &Web,
    path: &str,
    origin: Option<&str>,
) -> Result<WebSocketStream<TcpStream>, ClientError> {
    let stream = TcpStream::connect(web.web).await?;
    let host = web.web.to_string();
    tokio::time::timeout(
        TIMEOUT,
        client::open(
            stream,
            &Upgrade {
                path,
                host: &host,
                origin,
            },
        ),
    )
    .await
    .expect("handshake in time")
}

/// The next text message, or `None` when the server closed.
pub async fn recv<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    ws: &mut WebSocketStream<S>,
) -> Option<String> {
    tokio::time::timeout(TIMEOUT, client::recv(ws))
        .await
        .expect("a message in time")
        .unwrap()
}

/// Sends `line` and returns the next message.
pub async fn call<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    ws: &mut WebSocketStream<S>,
    line: &str,
) -> String {
    client::send(ws, line).await.unwrap();
    recv(ws).await.expect("a reply")
}

/// Sends `msg` and returns the next message.
pub async fn call_message(ws: &mut WebSocketStream<TcpStream>, msg: Message) -> String {
    client::send_message(ws, msg).await.unwrap();
    recv(ws).await.expect("a reply")
}

/// The token of an `auth` reply.
pub fn token(reply: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(reply).unwrap();
    v["tokenid"].as_str().expect(reply).to_owned()
}

/// A chat client on the TCP port: replies as the JSON text, without CR LF CR LF.
pub struct Tcp {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Tcp {
    pub async fn connect(addr: SocketAddr) -> Self {
        Self {
            stream: TcpStream::connect(addr).await.unwrap(),
            buf: Vec::new(),
        }
    }

    pub async fn call(&mut self, line: &str) -> String {
        self.stream
            .write_all(format!("{line}\r\n").as_bytes())
            .await
            .unwrap();
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let reply = String::from_utf8(self.buf[..i].to_vec()).unwrap();
                self.buf.drain(..i + 4);
                return reply;
            }
            let n = tokio::time::timeout(TIMEOUT, self.stream.read(&mut chunk))
                .await
                .unwrap()
                .unwrap();
            assert!(n > 0, "the server closed");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// Sends `request` raw to `addr` and reads until the server closes.
pub async fn http_get(addr: SocketAddr, request: &str) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(TIMEOUT, s.read_to_end(&mut out))
        .await
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}
