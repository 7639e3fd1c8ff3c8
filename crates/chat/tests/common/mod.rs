//! Shared test harness: a realm on 127.0.0.1:0 with cheap password hashing, and a raw client.
#![allow(dead_code, clippy::unwrap_used)]

pub mod federation;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use jaring_chat::password::{PasswordCost, hash_blocking};
use jaring_chat::storage::{UserAdmin as _, UserRecord};
use jaring_chat::{ChatServer, Clock, Realm, RealmOptions};
use jaring_chat_sqlite::{DEFAULT_MAX_BATCH, SqliteStore, Synchronous};
use jaring_proto::chat::ReplyFramer;
use jaring_runtime::{CancellationToken, ClientStream, ClientTls, Model, Server, ServerConfig};
use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

pub const TIMEOUT: Duration = Duration::from_secs(30);

/// Adds users `names` (password = name + "pw", display = upper-cased name) with the cheap test cost.
/// Callable from sync and async tests alike: the store is opened, used and closed on a thread of
/// its own, before the realm opens the directory.
pub fn add_users(dir: &Path, names: &[&str]) {
    let users: Vec<UserRecord> = names
        .iter()
        .map(|n| UserRecord {
            name: (*n).to_owned(),
            display_name: n.to_uppercase(),
            password_hash: hash_blocking(&format!("{n}pw"), PasswordCost::INSECURE_TEST).unwrap(),
            bench: false,
        })
        .collect();
    with_store(dir, move |store| async move {
        for u in users {
            store.add_user(u).await.unwrap();
        }
    });
}

/// Opens the SQLite store in `dir` and runs `f` with it on a runtime of its own (on another
/// thread, so it also works inside a test's runtime); the store is closed when `f` is done.
pub fn with_store<T, F, Fut>(dir: &Path, f: F) -> T
where
    T: Send + 'static,
    F: FnOnce(SqliteStore) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T>,
{
    let dir = dir.to_owned();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let store = SqliteStore::open(&dir, Synchronous::Full, DEFAULT_MAX_BATCH).unwrap();
            f(store).await
        })
    })
    .join()
    .unwrap()
}

pub struct Running {
    pub addr: SocketAddr,
    pub shutdown: CancellationToken,
    pub task: JoinHandle<()>,
    pub realm: Arc<Realm<SqliteStore>>,
}

impl Running {
    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(TIMEOUT, self.task)
            .await
            .unwrap()
            .unwrap();
    }
}

pub fn options() -> RealmOptions {
    RealmOptions {
        password_cost: PasswordCost::INSECURE_TEST,
        ..RealmOptions::default()
    }
}

pub async fn start(
    dir: &Path,
    options: RealmOptions,
    clock: Arc<dyn Clock>,
    model: Model,
) -> Running {
    start_with(dir, options, clock, |c| c.model = model).await
}

/// [`start`], with the server configuration changed by `tune` (limits, model).
pub async fn start_with(
    dir: &Path,
    options: RealmOptions,
    clock: Arc<dyn Clock>,
    tune: impl FnOnce(&mut ServerConfig),
) -> Running {
    let store = SqliteStore::open(dir, Synchronous::Full, DEFAULT_MAX_BATCH).unwrap();
    let realm = Arc::new(Realm::open(options, store, clock).await.unwrap());
    let mut config = ServerConfig::on_port(0);
    config.listen.bind = "127.0.0.1".parse().unwrap();
    config.limits.max_line = jaring_proto::chat::DEFAULT_MAX_LINE;
    config.grace = Duration::from_secs(2);
    tune(&mut config);
    let server = Server::bind(config).await.unwrap();
    let addr = server.local_addr();
    let handler = Arc::new(ChatServer::new(
        Arc::clone(&realm),
        jaring_proto::chat::DEFAULT_MAX_LINE,
    ));
    let shutdown = CancellationToken::new();
    let token = shutdown.clone();
    let task = tokio::spawn(async move { server.serve(handler, token).await });
    Running {
        addr,
        shutdown,
        task,
        realm,
    }
}

/// A realm with `users` in a fresh directory (kept alive by the returned guard), its server
/// configuration changed by `tune`.
pub async fn realm_with(
    users: &[&str],
    options: RealmOptions,
    tune: impl FnOnce(&mut ServerConfig),
) -> (tempfile::TempDir, Running) {
    let dir = tempfile::tempdir().unwrap();
    add_users(dir.path(), users);
    let r = start_with(
        dir.path(),
        options,
        Arc::new(jaring_chat::SystemClock::default()),
        tune,
    )
    .await;
    (dir, r)
}

/// A client logged in as `user` (password: the name + "pw", as [`add_users`] makes them).
pub async fn login(addr: SocketAddr, user: &str) -> (Client, String) {
    let mut c = Client::connect(addr).await;
    let t = c.auth(user, &format!("{user}pw")).await;
    (c, t)
}

pub struct Client {
    /// Plaintext or TLS.
    pub stream: ClientStream,
    framer: ReplyFramer,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Self {
        let stream = tokio::time::timeout(TIMEOUT, TcpStream::connect(addr))
            .await
            .unwrap()
            .unwrap();
        Self::from_stream(stream)
    }

    /// A client speaking TLS to `addr`, verifying its certificate for `localhost`.
    pub async fn connect_tls(addr: SocketAddr, tls: &ClientTls) -> Self {
        let stream = jaring_runtime::connect("localhost", addr.port(), TIMEOUT, Some(tls))
            .await
            .unwrap();
        Self {
            stream,
            framer: ReplyFramer::new(64 << 20),
        }
    }

    /// A client on a stream connected some other way (a small receive buffer, say).
    pub fn from_stream(stream: TcpStream) -> Self {
        Self {
            stream: ClientStream::Tcp(stream),
            framer: ReplyFramer::new(64 << 20),
        }
    }

    /// The TCP connection underneath.
    pub fn tcp(&self) -> &TcpStream {
        self.stream.tcp()
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
        // TLS holds the record until flushed.
        self.stream.flush().await.unwrap();
    }

    /// The next reply, or None if the server closed first.
    pub async fn reply(&mut self) -> Option<Value> {
        let raw = self.reply_bytes().await?;
        Some(serde_json::from_slice(&raw).unwrap())
    }

    /// The next reply's bytes as sent (its JSON, without the `\r\n\r\n`), or None if the
    /// server closed first.
    pub async fn reply_bytes(&mut self) -> Option<Vec<u8>> {
        let mut buf = [0u8; 4096];
        loop {
            if let Some(raw) = self.framer.poll_reply_with(<[u8]>::to_vec).unwrap() {
                return Some(raw);
            }
            let n = tokio::time::timeout(TIMEOUT, self.stream.read(&mut buf))
                .await
                .expect("reply in time")
                .ok()?;
            if n == 0 {
                return None;
            }
            self.framer.handle_input(&buf[..n]);
        }
    }

    pub async fn call(&mut self, line: &str) -> Value {
        self.send_raw(format!("{line}\r\n").as_bytes()).await;
        self.reply().await.expect("a reply")
    }

    pub async fn auth(&mut self, user: &str, password: &str) -> String {
        let r = self.call(&format!("auth {user} {password}")).await;
        assert_eq!(r["status"], "OK", "{r}");
        r["tokenid"].as_str().unwrap().to_owned()
    }
}

pub fn ok(v: &Value) -> bool {
    v["status"] == "OK"
}

pub fn error(v: &Value) -> &str {
    assert_eq!(v["status"], "ERROR", "{v}");
    v["message"].as_str().unwrap()
}

/// Every message body in an inbox reply, in order per sender.
pub fn bodies(v: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (sender, list) in v["messages"].as_object().unwrap() {
        for m in list.as_array().unwrap() {
            out.push((sender.clone(), m["msg"].as_str().unwrap().to_owned()));
        }
    }
    out
}

/// One read of at most `max` bytes, as a client calling `recv(max)` gets it; empty when the
/// server closed.
pub async fn recv_raw(stream: &mut TcpStream, max: usize) -> Vec<u8> {
    let mut buf = vec![0u8; max];
    let n = tokio::time::timeout(TIMEOUT, stream.read(&mut buf))
        .await
        .expect("data in time")
        .unwrap();
    buf.truncate(n);
    buf
}
