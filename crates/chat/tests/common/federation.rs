//! Shared harness for the federation tests (plaintext and TLS links): realms with a federation
//! on 127.0.0.1:0, waits on link state, inbox reads, a TCP relay the test can cut.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jaring_chat::federation::{Federation, FederationConfig, PeerConfig};
use jaring_chat::{RealmOptions, SystemClock};
use jaring_chat_sqlite::SqliteStore;
use jaring_proto::federation::{DEFAULT_MAX_FRAME, Frame, LinkFramer};
use jaring_runtime::Model;
use tokio::io::{AsyncRead, AsyncReadExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use super::{Client, Running, TIMEOUT, add_users, bodies, login, ok, options, start};

/// The link secret every test realm shares with its peers.
pub const SECRET: &[u8] = b"a test secret of 32 bytes, ok...";

/// A running realm with its federation.
pub struct Node {
    _dir: tempfile::TempDir,
    pub running: Running,
    pub fed: Arc<Federation<SqliteStore>>,
}

impl Node {
    /// The client port.
    pub fn addr(&self) -> SocketAddr {
        self.running.addr
    }

    /// The link (server-to-server) port.
    pub fn link(&self) -> SocketAddr {
        self.fed.local_addr()
    }

    pub async fn stop(self) {
        self.running.stop().await;
    }
}

/// A plaintext peer `name` at `address`, sharing `secret`.
pub fn peer(name: &str, address: SocketAddr, secret: &[u8]) -> PeerConfig {
    PeerConfig {
        name: name.into(),
        address: address.to_string(),
        secret: secret.to_vec(),
        tls: None,
    }
}

/// An address nobody listens on, for peers that are only dialled by the other side.
pub fn nowhere() -> SocketAddr {
    "127.0.0.1:9".parse().unwrap()
}

/// Starts realm `name` with `users` (password = name + "pw"), linked to `peers`, with the
/// federation settings `tweak` makes (after the test defaults: redial within 500 ms).
pub async fn node_config(
    name: &str,
    users: &[&str],
    peers: Vec<PeerConfig>,
    tweak: impl FnOnce(&mut FederationConfig),
) -> Node {
    let dir = tempfile::tempdir().unwrap();
    add_users(dir.path(), users);
    let options = RealmOptions {
        name: name.into(),
        ..options()
    };
    let running = start(
        dir.path(),
        options,
        Arc::new(SystemClock::default()),
        Model::Async,
    )
    .await;
    let mut config = FederationConfig::new("127.0.0.1:0".parse().unwrap(), peers);
    config.backoff_max = Duration::from_millis(500);
    config.lookup_timeout = Duration::from_secs(10);
    tweak(&mut config);
    let fed = Federation::start(
        &running.realm,
        running.realm.store().clone(),
        config,
        running.shutdown.clone(),
    )
    .await
    .unwrap();
    Node {
        _dir: dir,
        running,
        fed,
    }
}

pub async fn wait_up(fed: &Federation<SqliteStore>, peer: &str) {
    tokio::time::timeout(TIMEOUT, async {
        while !fed.is_up(peer) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("link up in time");
}

/// Reads the inbox until `n` messages arrived (failing on more), returning (sender, body).
pub async fn collect(c: &mut Client, token: &str, n: usize) -> Vec<(String, String)> {
    let mut got = Vec::new();
    tokio::time::timeout(TIMEOUT, async {
        while got.len() < n {
            let r = c.call(&format!("inbox {token}")).await;
            assert!(ok(&r), "{r}");
            let b = bodies(&r);
            if b.is_empty() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            got.extend(b);
        }
    })
    .await
    .unwrap_or_else(|_| panic!("only {} of {n} messages arrived", got.len()));
    assert_eq!(got.len(), n, "more messages than sent: {got:?}");
    got
}

/// The first frames the realm at the other end of `s` answers with (at least one); fails if it
/// closes first.
pub async fn first_frames<S: AsyncRead + Unpin>(s: &mut S) -> Vec<Frame> {
    let mut framer = LinkFramer::new(DEFAULT_MAX_FRAME);
    let mut frames = Vec::new();
    let mut buf = [0u8; 4096];
    while frames.is_empty() {
        let n = s.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed before answering");
        framer.feed(&buf[..n], &mut frames).unwrap();
    }
    frames
}

/// A TCP relay whose connections the test can cut at will, and whose target can be set later
/// (until then it closes every connection: the peer looks down). TLS runs end to end through it.
pub struct Relay {
    pub addr: SocketAddr,
    pub target: Arc<Mutex<Option<SocketAddr>>>,
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
    pub accepts: JoinHandle<()>,
}

impl Relay {
    pub async fn start(target: Option<SocketAddr>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let conns: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let list = Arc::clone(&conns);
        let target = Arc::new(Mutex::new(target));
        let to = Arc::clone(&target);
        let accepts = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let Some(target) = *to.lock().unwrap() else {
                    continue;
                };
                let Ok(mut outbound) = TcpStream::connect(target).await else {
                    continue;
                };
                list.lock().unwrap().push(tokio::spawn(async move {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }));
            }
        });
        Self {
            addr,
            target,
            conns,
            accepts,
        }
    }

    /// Closes every relayed connection under the link.
    pub fn cut(&self) {
        for c in self.conns.lock().unwrap().drain(..) {
            c.abort();
        }
    }
}

/// Sends 1500 messages from messi@realm1 (on `r1`, linked through `relay`) to james@realm2 (on
/// `r2`) in batches, cutting the link in the middle of each batch and after it; checks that
/// james gets every message once, in order.
pub async fn transfer_through_cuts(r1: &Node, r2: &Node, relay: &Relay) {
    let (mut messi, tm) = login(r1.addr(), "messi").await;
    const N: usize = 1500;
    let mut batch = Vec::new();
    for i in 0..N {
        batch.extend_from_slice(format!("send {tm} james@realm2 m{i:05}\r\n").as_bytes());
        if (i + 1) % 300 == 0 {
            messi.send_raw(&batch).await;
            batch.clear();
            for k in 0..300 {
                if k == 150 {
                    relay.cut();
                }
                let r = messi.reply().await.unwrap();
                assert!(ok(&r), "{r}");
            }
            // Cut the link under whatever is in flight, several times.
            relay.cut();
        }
    }
    let (mut james, tj) = login(r2.addr(), "james").await;
    let got = collect(&mut james, &tj, N).await;
    let expected: Vec<(String, String)> = (0..N)
        .map(|i| ("messi@realm1".to_owned(), format!("m{i:05}")))
        .collect();
    assert_eq!(got, expected, "every message once, in order");
}
