//! Federation: realms linked by authenticated server-to-server links, so `user@realm` works
//! across them with nothing lost.
//!
//! `docs/federation.md` specifies the link protocol byte for byte and the delivery guarantees; the
//! frames and the HMAC challenge–response live, sans-IO, in [`jaring_proto::federation`].
//!
//! - Each realm listens for its peers on its own server-to-server port, never on the client port,
//!   so no client connection can speak the link protocol.
//! - One persistent link per peer pair: the realm whose name sorts first dials, the other accepts.
//!   The dialer redials with jittered exponential backoff ([`DEFAULT_BACKOFF_MIN`] to
//!   [`DEFAULT_BACKOFF_MAX`]) whenever the link drops.
//! - A message to `user@peer` is committed to the sender's outbox before `send` answers OK (the
//!   crate-private `store` module); the link sends the outbox in commit order; the peer commits it
//!   to the inbox (or finds it is a retry it already has) and only then acknowledges; only then
//!   does it leave the outbox. A reconnect resends everything not yet acknowledged, in order.
//! - Groups across realms: a group lives on its home realm, which orders it; a realm whose users
//!   join `group@home` keeps a replica fed by the home over the link (once per realm, not per
//!   member), each message under the home's `seq`, acknowledged only once committed; its users'
//!   posts travel through the same outbox. `docs/federation.md#groups-across-realms`.
//!
//! # Layout
//! - this module: [`FederationConfig`], [`Federation`] (the running links of one realm) and
//!   [`Remote`], what the realm asks of it.
//! - [`link`]: the connection driver (handshake, dialer, acceptor, one link's tasks: writer,
//!   outbox pump, group feed, reader).
//! - [`LinkRealm`]: what a link asks of its realm; the storage it needs is
//!   [`crate::storage::FederationStore`], implemented by each backend.

pub mod link;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use jaring_proto::chat::realms::PeerEntry;
use jaring_proto::federation::Frame;
use jaring_proto::federation::auth::MIN_SECRET_LEN;
use jaring_runtime::CancellationToken;
use tokio::sync::{Notify, mpsc, oneshot};

use crate::groups::{FeedEvent, Hub};
use crate::storage::{
    JoinOutcome, MessageKind, NewGroupMessage, NewMessage, Storage, StoreError, StoreResult,
    StoredMessage,
};

pub use crate::remote::{BoxFuture, Lookup, Remote, RemoteJoin, RemoteMember};

/// The server-to-server port a realm listens on by default (its client port is 8889).
pub const DEFAULT_FEDERATION_PORT: u16 = 9889;

/// Messages sent on a link and not yet acknowledged, at most. When reached, the link waits for
/// acknowledgements before sending more (memory and the peer's work stay bounded).
pub const DEFAULT_WINDOW: usize = 8192;

/// Message text bytes sent on a link and not yet acknowledged, at most (the other bound besides
/// [`DEFAULT_WINDOW`], so large messages cannot pin much memory); then the link waits for
/// acknowledgements.
pub const DEFAULT_WINDOW_BYTES: usize = 16 * 1024 * 1024;

/// First redial delay after a link fails; it doubles per failure, with ±50 % jitter.
pub const DEFAULT_BACKOFF_MIN: Duration = Duration::from_millis(100);

/// Longest redial delay. Short, so a returning peer catches up within seconds.
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Time a connecting peer has to complete the whole handshake, counted from the moment its
/// connection is accepted (so a peer sending a byte a second cannot stretch it); then it is told
/// `handshake timed out` and dropped.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections from addresses that are not a configured peer's, still in their handshake, at
/// once; more such connections are closed at once (a flood of unauthenticated connections costs
/// nothing else). Connections from a configured peer's address never count here, so a flood from
/// elsewhere cannot keep a peer from linking.
pub const DEFAULT_MAX_HANDSHAKES: usize = 64;

/// Connections from one source address still in their handshake at once; more from that address
/// are closed at once. A realm dials once per link and redials only after the link dropped, so a
/// peer needs one; this leaves room for several realms on one host. An established link does not
/// count (there is at most one per peer).
pub const DEFAULT_MAX_HANDSHAKES_PER_ADDRESS: usize = 8;

/// Refused connections (limits, failed handshakes) are logged at most once per this interval,
/// with how many were refused since: a flood of them cannot flood the log.
pub const DEFAULT_REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// How long `send` and name resolution wait for a peer to say whether a user exists; past it the
/// peer counts as unreachable (the message is queued, and bounces later if the user is unknown).
pub const DEFAULT_LOOKUP_TIMEOUT: Duration = Duration::from_secs(3);

/// How long a peer's "this user exists" answer is reused before asking again.
pub const LOOKUP_CACHE_TTL: Duration = Duration::from_secs(60);

/// A link with nothing to say sends a ping this often (more often when the link's idle limit is
/// under three of these: a third of it).
pub const PING_EVERY: Duration = Duration::from_secs(15);

/// A link on which no whole frame arrived for this long (three pings missed) is dropped and
/// redialled. Only whole frames count: a peer trickling the bytes of a frame it never finishes
/// is cut like a silent one.
pub const DEFAULT_LINK_IDLE: Duration = Duration::from_secs(45);

/// The sender name of bounce notices, `postmaster@<peer>`.
pub const POSTMASTER: &str = "postmaster";

/// One peer realm as configured.
#[derive(Clone)]
pub struct PeerConfig {
    /// The peer's realm name.
    pub name: String,
    /// Its server-to-server address (`host:port`).
    pub address: String,
    /// The secret this pair of realms shares (at least 16 bytes); both configs hold the same one.
    pub secret: Vec<u8>,
    /// `Some`: the link to and from this peer is mutual TLS with its key pinned, never
    /// plaintext (needs [`FederationConfig::identity`]). `None`: plaintext, as before TLS.
    pub tls: Option<PeerTls>,
}

/// How a peer's link is secured when it runs over TLS.
#[derive(Debug, Clone)]
pub struct PeerTls {
    /// The peer's key (SPKI) fingerprint: its certificate must carry this key.
    pub pin: jaring_tls::Fingerprint,
    /// When set, the peer's certificate must also chain to one of these CA certificates.
    pub ca: Option<Vec<rustls::pki_types::CertificateDer<'static>>>,
}

impl std::fmt::Debug for PeerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret, not even in a debug log.
        f.debug_struct("PeerConfig")
            .field("name", &self.name)
            .field("address", &self.address)
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

/// A realm's federation settings.
#[derive(Debug, Clone)]
pub struct FederationConfig {
    /// Where to listen for peers.
    pub listen: SocketAddr,
    /// The peers.
    pub peers: Vec<PeerConfig>,
    /// See [`DEFAULT_WINDOW`].
    pub window: usize,
    /// See [`DEFAULT_BACKOFF_MIN`].
    pub backoff_min: Duration,
    /// See [`DEFAULT_BACKOFF_MAX`].
    pub backoff_max: Duration,
    /// See [`DEFAULT_HANDSHAKE_TIMEOUT`].
    pub handshake_timeout: Duration,
    /// See [`DEFAULT_MAX_HANDSHAKES`].
    pub max_handshakes: usize,
    /// See [`DEFAULT_MAX_HANDSHAKES_PER_ADDRESS`].
    pub max_handshakes_per_address: usize,
    /// See [`DEFAULT_LINK_IDLE`].
    pub link_idle: Duration,
    /// See [`DEFAULT_LOOKUP_TIMEOUT`].
    pub lookup_timeout: Duration,
    /// This realm's certificate and key, presented on TLS links; required when any peer has
    /// [`PeerConfig::tls`].
    pub identity: Option<jaring_tls::Identity>,
}

impl FederationConfig {
    /// Defaults for listening on `listen` with `peers`.
    pub fn new(listen: SocketAddr, peers: Vec<PeerConfig>) -> Self {
        Self {
            listen,
            peers,
            window: DEFAULT_WINDOW,
            backoff_min: DEFAULT_BACKOFF_MIN,
            backoff_max: DEFAULT_BACKOFF_MAX,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            max_handshakes: DEFAULT_MAX_HANDSHAKES,
            max_handshakes_per_address: DEFAULT_MAX_HANDSHAKES_PER_ADDRESS,
            link_idle: DEFAULT_LINK_IDLE,
            lookup_timeout: DEFAULT_LOOKUP_TIMEOUT,
            identity: None,
        }
    }
}

/// Why federation could not start.
#[derive(Debug, thiserror::Error)]
pub enum FederationError {
    /// A peer entry cannot work.
    #[error("{0}")]
    Config(String),
    /// The server-to-server port could not be bound.
    #[error(
        "cannot listen for peers on {0}; is another realm using that port? (set [federation] port)"
    )]
    Bind(SocketAddr, #[source] std::io::Error),
    /// The federation's tables could not be prepared.
    #[error(
        "cannot prepare the federation's tables in the realm's database; check the data directory"
    )]
    Store(#[source] crate::storage::StoreError),
}

/// Builds a TLS peer's client configuration and chain check.
fn peer_link_tls(
    config: &FederationConfig,
    peer: &PeerConfig,
    tls: &PeerTls,
) -> Result<PeerLinkTls, FederationError> {
    let Some(id) = &config.identity else {
        return Err(FederationError::Config(format!(
            "peer {} has a fingerprint, so its link runs over mutual TLS, but this realm has no \
             certificate: set [tls] cert and key, or remove the fingerprint to link in plaintext",
            peer.name
        )));
    };
    let bad = |e: &dyn std::fmt::Display| {
        FederationError::Config(format!("cannot set up TLS for peer {}: {e}", peer.name))
    };
    let client = jaring_tls::link_client_config(
        id,
        jaring_tls::LinkTrust {
            pins: vec![tls.pin],
            ca: tls.ca.clone(),
        },
    )
    .map_err(|e| bad(&e))?;
    let chain = match &tls.ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in ca {
                roots.add(cert.clone()).map_err(|e| bad(&e))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                jaring_tls::provider(),
            )
            .build()
            .map_err(|e| bad(&e))?;
            Some(verifier)
        }
        None => None,
    };
    Ok(PeerLinkTls { client, chain })
}

/// The answer to a group query ([`Frame::Gjoin`], [`Frame::Gleave`]).
#[derive(Debug, Clone, Default)]
struct GroupReply {
    error: Option<String>,
    read_seq: i64,
    created: bool,
    new_member: bool,
    /// For [`Frame::Gmembers`]: (address here, display name, live on the home realm).
    members: Vec<RemoteMember>,
    /// For [`Frame::Gmembers`]: the home had more members than one frame carries.
    more: bool,
}

/// The link state of one peer, for `realms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LinkState {
    Connecting,
    Up,
    Backoff,
    Waiting,
}

impl LinkState {
    fn as_str(self) -> &'static str {
        match self {
            Self::Connecting => "connecting",
            Self::Up => "up",
            Self::Backoff => "backoff",
            Self::Waiting => "waiting",
        }
    }
}

/// The live link to a peer, as the rest of the realm reaches it.
#[derive(Clone)]
struct LinkHandle {
    id: u64,
    frames: mpsc::Sender<Frame>,
    lookups: Arc<Mutex<HashMap<u64, oneshot::Sender<Option<String>>>>>,
    queries: Arc<Mutex<HashMap<u64, oneshot::Sender<GroupReply>>>>,
    cancel: CancellationToken,
}

struct PeerStatus {
    state: LinkState,
    last_error: Option<String>,
}

/// A TLS peer's link settings, built once at start.
struct PeerLinkTls {
    /// For dialling it: our certificate, its pin (and CA).
    client: Arc<rustls::ClientConfig>,
    /// For accepting it: the chain check against its `ca`, when set (the shared server
    /// configuration checks only the pins, since each peer may name another CA).
    chain: Option<Arc<dyn rustls::server::danger::ClientCertVerifier>>,
}

/// The listener's TLS settings: one server configuration for every TLS peer.
struct ListenTls {
    /// Requires a client certificate whose key is one of the TLS peers' pins.
    server: Arc<rustls::ServerConfig>,
    /// Which peer each pin names (exactly one: pins are unique).
    by_pin: HashMap<jaring_tls::Fingerprint, String>,
}

/// One configured peer and its link.
pub(crate) struct Peer {
    config: PeerConfig,
    /// `Some` for a peer whose link is TLS only.
    tls: Option<PeerLinkTls>,
    /// Whether we dial (our name sorts first) or wait for the peer to.
    dials: bool,
    status: Mutex<PeerStatus>,
    link: Mutex<Option<LinkHandle>>,
    /// Signalled when the outbox for this peer has new messages.
    work: Notify,
    /// Signalled when a group with members on this peer has new messages or a new such member.
    feed_work: Notify,
    known: Mutex<HashMap<String, (String, Instant)>>,
    next_query: AtomicU64,
    /// Replicas (`group@peer`) with a join under way, and how many: the home may feed a new
    /// member's replica before its membership is committed here, and only such a replica may be
    /// created by a message.
    joining: Mutex<HashMap<String, usize>>,
}

/// A join under way to a replica, registered with its peer until dropped.
struct Joining<'a> {
    peer: &'a Peer,
    replica: String,
}

impl<'a> Joining<'a> {
    fn new(peer: &'a Peer, replica: String) -> Self {
        *lock(&peer.joining).entry(replica.clone()).or_default() += 1;
        Self { peer, replica }
    }
}

impl Drop for Joining<'_> {
    fn drop(&mut self) {
        let mut joining = lock(&self.peer.joining);
        if let Some(n) = joining.get_mut(&self.replica) {
            *n -= 1;
            if *n == 0 {
                joining.remove(&self.replica);
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section is a few field or map updates that leave the value consistent.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Peer {
    fn set_state(&self, state: LinkState, error: Option<String>) {
        let mut s = lock(&self.status);
        s.state = state;
        if error.is_some() {
            s.last_error = error;
        }
    }

    fn link(&self) -> Option<LinkHandle> {
        lock(&self.link).clone()
    }

    /// Records why a connection claiming to be this peer was refused, for `realms`; a link that
    /// is up keeps its state (a refused impostor does not take the real link down).
    fn note_refusal(&self, reason: &str) {
        if lock(&self.link).is_none() {
            lock(&self.status).last_error = Some(reason.to_owned());
        }
    }

    /// The replicas with a join under way.
    fn joining(&self) -> std::collections::HashSet<String> {
        lock(&self.joining).keys().cloned().collect()
    }

    async fn lookup(&self, user: &str, timeout: Duration) -> Lookup {
        if let Some((display, at)) = lock(&self.known).get(user)
            && at.elapsed() < LOOKUP_CACHE_TTL
        {
            return Lookup::Found(display.clone());
        }
        let answer = self
            .ask(
                |q| Frame::Lookup {
                    q,
                    user: user.to_owned(),
                },
                timeout,
            )
            .await;
        match answer {
            Some(Some(display)) => {
                lock(&self.known).insert(user.to_owned(), (display.clone(), Instant::now()));
                Lookup::Found(display)
            }
            Some(None) => {
                lock(&self.known).remove(user);
                Lookup::Missing
            }
            None => Lookup::Unreachable,
        }
    }

    /// Sends the query `make(q)` (a lookup) and waits for its answer: `None` when the link is down
    /// or nothing came in time.
    async fn ask(
        &self,
        make: impl FnOnce(u64) -> Frame,
        timeout: Duration,
    ) -> Option<Option<String>> {
        let link = self.link()?;
        self.round_trip(&link.frames, &link.lookups, make, timeout)
            .await
    }

    /// Sends `make(q)` for a fresh query number `q`, registered in `pending` where the link's
    /// reader puts the answer, and waits for it: `None` if the link is gone or nothing came in
    /// `timeout`.
    async fn round_trip<T>(
        &self,
        frames: &mpsc::Sender<Frame>,
        pending: &Mutex<HashMap<u64, oneshot::Sender<T>>>,
        make: impl FnOnce(u64) -> Frame,
        timeout: Duration,
    ) -> Option<T> {
        let q = self.next_query.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        lock(pending).insert(q, tx);
        let answer = if frames.send(make(q)).await.is_ok() {
            tokio::time::timeout(timeout, rx)
                .await
                .ok()
                .and_then(Result::ok)
        } else {
            None
        };
        lock(pending).remove(&q);
        answer
    }

    /// Whether the peer homes a group `group` (never cached: groups come and go).
    async fn group_lookup(&self, group: &str, timeout: Duration) -> Lookup {
        let answer = self
            .ask(
                |q| Frame::Glookup {
                    q,
                    group: group.to_owned(),
                },
                timeout,
            )
            .await;
        match answer {
            Some(Some(name)) => Lookup::Found(name),
            Some(None) => Lookup::Missing,
            None => Lookup::Unreachable,
        }
    }

    /// Sends the group query `make(q)` and waits for its answer.
    async fn ask_group(
        &self,
        make: impl FnOnce(u64) -> Frame,
        timeout: Duration,
    ) -> Result<GroupReply, String> {
        let name = &self.config.name;
        let unreachable = || format!("realm {name} is unreachable now; try again later");
        let Some(link) = self.link() else {
            return Err(unreachable());
        };
        let answer = self
            .round_trip(&link.frames, &link.queries, make, timeout)
            .await;
        match answer {
            Some(GroupReply { error: Some(e), .. }) => Err(e),
            Some(r) => Ok(r),
            None => Err(unreachable()),
        }
    }
}

/// What a link asks of its realm: its groups, its users' names, and the group operations a peer
/// may request. [`crate::Realm`] implements it; a test may implement it with a fake.
pub trait LinkRealm: Send + Sync + 'static {
    /// The realm's name.
    fn name(&self) -> &str;
    /// The realm's groups in memory and their live fan-out.
    fn hub(&self) -> &Arc<Hub>;
    /// A local user's display name (`None`: no such user).
    fn display_name(&self, user: &str) -> Option<String>;
    /// The members of the local group `group` as a peer is told them (`None`: no such group).
    fn members_for_peer(&self, group: &str) -> Option<Vec<jaring_proto::federation::GroupMember>>;
    /// Makes `member` (`user@peer`) a member of the local group `group`, creating it; the error
    /// says why not.
    fn join_for_peer<'a>(
        &'a self,
        group: &'a str,
        member: &'a str,
    ) -> BoxFuture<'a, Result<JoinOutcome, String>>;
    /// Ends `member`'s (`user@peer`) membership of the local group `group` (done already is
    /// fine: a retried leave whose answer was lost); the error says why not.
    fn leave_for_peer<'a>(
        &'a self,
        group: &'a str,
        member: &'a str,
    ) -> BoxFuture<'a, Result<(), String>>;
    /// Commits posts a peer's users made to local groups and publishes them in the groups' order.
    fn post_relayed(&self, posts: Vec<NewGroupMessage>) -> BoxFuture<'_, Result<(), StoreError>>;
    /// Gives the realm the federation to ask about other realms.
    fn set_remote(&self, remote: Arc<dyn Remote>);
}

/// The federation of one realm: its peers, their links, its server-to-server listener.
pub struct Federation<S> {
    name: String,
    realm: Weak<dyn LinkRealm>,
    store: S,
    peers: BTreeMap<String, Arc<Peer>>,
    config: FederationConfig,
    /// `None` when no peer links over TLS.
    tls: Option<ListenTls>,
    local_addr: SocketAddr,
    next_link: AtomicU64,
}

impl<S> std::fmt::Debug for Federation<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Federation")
            .field("realm", &self.name)
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl<S: Storage> Federation<S> {
    /// Tells `realm`'s link that its outbox has new rows to send.
    fn wake_link(&self, realm: &str) {
        if let Some(p) = self.peers.get(realm) {
            p.work.notify_one();
        }
    }

    /// Checks `config`, binds the server-to-server port, connects `realm` (stored in `store`) to
    /// it and starts the links. Everything stops when `shutdown` is cancelled.
    pub async fn start<R: LinkRealm>(
        realm: &Arc<R>,
        store: S,
        config: FederationConfig,
        shutdown: CancellationToken,
    ) -> Result<Arc<Self>, FederationError> {
        let name = realm.name().to_owned();
        let mut peers = BTreeMap::new();
        let mut by_pin = HashMap::new();
        for p in &config.peers {
            if !jaring_proto::chat::address::is_valid_name(&p.name) || p.name == name {
                return Err(FederationError::Config(format!(
                    "peer name {:?} is not valid: use another realm's name (letters, digits, '_', '-', '.')",
                    p.name
                )));
            }
            if p.secret.len() < MIN_SECRET_LEN {
                return Err(FederationError::Config(format!(
                    "the secret for peer {} is shorter than {MIN_SECRET_LEN} bytes; generate one with \
                     `openssl rand -hex 32` and give both realms the same",
                    p.name
                )));
            }
            let tls = match &p.tls {
                Some(t) => Some(peer_link_tls(&config, p, t)?),
                None => {
                    tracing::warn!(
                        peer = %p.name,
                        "the link with realm {} is unencrypted (plaintext): give both realms [tls] \
                         and each other's key fingerprint (`fingerprint` in the [[peer]] entry; \
                         `jaring chat tls fingerprint` prints it)",
                        p.name
                    );
                    None
                }
            };
            if let Some(t) = &p.tls
                && let Some(other) = by_pin.insert(t.pin, p.name.clone())
            {
                return Err(FederationError::Config(format!(
                    "peers {other} and {} have the same fingerprint {}: each realm needs a key of \
                     its own; check the fingerprint entries",
                    p.name, t.pin
                )));
            }
            let dials = name < p.name;
            let peer = Peer {
                config: p.clone(),
                tls,
                dials,
                status: Mutex::new(PeerStatus {
                    state: if dials {
                        LinkState::Connecting
                    } else {
                        LinkState::Waiting
                    },
                    last_error: None,
                }),
                link: Mutex::new(None),
                work: Notify::new(),
                feed_work: Notify::new(),
                known: Mutex::default(),
                next_query: AtomicU64::new(1),
                joining: Mutex::default(),
            };
            if peers.insert(p.name.clone(), Arc::new(peer)).is_some() {
                return Err(FederationError::Config(format!(
                    "peer {} is listed twice",
                    p.name
                )));
            }
        }
        let tls = match (&config.identity, by_pin.is_empty()) {
            (Some(id), false) => {
                let trust = jaring_tls::LinkTrust {
                    pins: by_pin.keys().copied().collect(),
                    ca: None,
                };
                let server = jaring_tls::link_server_config(id, trust).map_err(|e| {
                    FederationError::Config(format!("cannot set up TLS for the links: {e}"))
                })?;
                Some(ListenTls { server, by_pin })
            }
            _ => None,
        };
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|e| FederationError::Bind(config.listen, e))?;
        let local_addr = listener
            .local_addr()
            .map_err(|e| FederationError::Bind(config.listen, e))?;
        let fed = Arc::new(Self {
            name,
            realm: {
                let realm: Arc<dyn LinkRealm> = Arc::clone(realm) as Arc<dyn LinkRealm>;
                Arc::downgrade(&realm)
            },
            store,
            peers,
            config,
            tls,
            local_addr,
            next_link: AtomicU64::new(1),
        });
        realm.set_remote(Arc::clone(&fed) as Arc<dyn Remote>);
        let peers = fed.peers.clone();
        realm.hub().set_feed(Box::new(move |realm, event| {
            let Some(p) = peers.get(realm) else {
                return;
            };
            match event {
                FeedEvent::Message => p.feed_work.notify_one(),
                FeedEvent::Presence(change, leave) => {
                    // Best effort, never waiting: a full queue or a link down drops it.
                    if let Some(link) = p.link() {
                        let _ = link.frames.try_send(Frame::Gpresence {
                            group: change.group.clone(),
                            user: change.user.clone(),
                            display: change.display_name.clone(),
                            leave: *leave,
                        });
                    }
                }
            }
        }));
        tokio::spawn(link::accept_loop(
            Arc::clone(&fed),
            listener,
            shutdown.clone(),
        ));
        for peer in fed.peers.values().filter(|p| p.dials) {
            tokio::spawn(link::dial_loop(
                Arc::clone(&fed),
                Arc::clone(peer),
                shutdown.clone(),
            ));
        }
        tracing::info!(
            realm = %fed.name,
            listen = %local_addr,
            peers = %fed.peers.keys().cloned().collect::<Vec<_>>().join(", "),
            "federation listening for peers"
        );
        Ok(fed)
    }

    /// Where the server-to-server listener is bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The realm's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the link to `peer` is up.
    pub fn is_up(&self, peer: &str) -> bool {
        self.peers
            .get(peer)
            .is_some_and(|p| lock(&p.status).state == LinkState::Up)
    }
}

impl<S: Storage> Remote for Federation<S> {
    fn peer_names(&self) -> Vec<String> {
        self.peers.keys().cloned().collect()
    }

    fn lookup<'a>(&'a self, realm: &'a str, user: &'a str) -> BoxFuture<'a, Lookup> {
        Box::pin(async move {
            match self.peers.get(realm) {
                Some(p) => p.lookup(user, self.config.lookup_timeout).await,
                None => Lookup::NotPeer,
            }
        })
    }

    fn enqueue(
        &self,
        realm: &str,
        messages: Vec<NewMessage>,
    ) -> BoxFuture<'_, StoreResult<Vec<StoredMessage>>> {
        let realm = realm.to_owned();
        Box::pin(async move {
            let stored = self
                .store
                .enqueue(&realm, MessageKind::Private, messages)
                .await?;
            self.wake_link(&realm);
            Ok(stored)
        })
    }

    fn group_lookup<'a>(&'a self, realm: &'a str, group: &'a str) -> BoxFuture<'a, Lookup> {
        Box::pin(async move {
            match self.peers.get(realm) {
                Some(p) => p.group_lookup(group, self.config.lookup_timeout).await,
                None => Lookup::NotPeer,
            }
        })
    }

    fn group_join<'a>(
        &'a self,
        realm: &'a str,
        group: &'a str,
        user: &'a str,
    ) -> BoxFuture<'a, Result<RemoteJoin, String>> {
        Box::pin(async move {
            let Some(peer) = self.peers.get(realm) else {
                return Err(format!("no link to realm {realm:?}"));
            };
            let replica = format!("{group}@{realm}");
            // Until the membership is committed here, the replica may take the feed's first
            // messages (the home feeds once its own membership is committed).
            let _joining = Joining::new(peer, replica.clone());
            let r = peer
                .ask_group(
                    |q| Frame::Gjoin {
                        q,
                        group: group.to_owned(),
                        user: user.to_owned(),
                    },
                    self.config.lookup_timeout,
                )
                .await?;
            let local = self
                .store
                .join_replica(&replica, realm, user, r.read_seq)
                .await
                .map_err(|e| {
                    tracing::error!(error = %e, "cannot store a replica membership");
                    "the server could not store this; try again later".to_owned()
                })?;
            Ok(RemoteJoin {
                created: r.created,
                new_member: r.new_member || local,
                read_seq: r.read_seq,
            })
        })
    }

    fn group_leave<'a>(
        &'a self,
        realm: &'a str,
        group: &'a str,
        user: &'a str,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let Some(peer) = self.peers.get(realm) else {
                return Err(format!("no link to realm {realm:?}"));
            };
            peer.ask_group(
                |q| Frame::Gleave {
                    q,
                    group: group.to_owned(),
                    user: user.to_owned(),
                },
                self.config.lookup_timeout,
            )
            .await
            .map(drop)
        })
    }

    fn group_members<'a>(
        &'a self,
        realm: &'a str,
        group: &'a str,
    ) -> BoxFuture<'a, Result<(Vec<RemoteMember>, bool), String>> {
        Box::pin(async move {
            let Some(peer) = self.peers.get(realm) else {
                return Err(format!("no link to realm {realm:?}"));
            };
            peer.ask_group(
                |q| Frame::Gmembers {
                    q,
                    group: group.to_owned(),
                },
                self.config.lookup_timeout,
            )
            .await
            .map(|r| (r.members, r.more))
        })
    }

    fn group_post(
        &self,
        realm: &str,
        messages: Vec<NewMessage>,
    ) -> BoxFuture<'_, StoreResult<Vec<StoredMessage>>> {
        let realm = realm.to_owned();
        Box::pin(async move {
            let stored = self
                .store
                .enqueue(&realm, MessageKind::GroupPost, messages)
                .await?;
            self.wake_link(&realm);
            Ok(stored)
        })
    }

    fn status(&self) -> BoxFuture<'_, Vec<PeerEntry>> {
        Box::pin(async move {
            let counts = self.store.outbox_counts().await.unwrap_or_default();
            self.peers
                .values()
                .map(|p| {
                    let s = lock(&p.status);
                    PeerEntry {
                        realm: p.config.name.clone(),
                        address: p.config.address.clone(),
                        state: s.state.as_str().into(),
                        outbox: counts.get(&p.config.name).copied().unwrap_or(0),
                        last_error: s.last_error.clone(),
                    }
                })
                .collect()
        })
    }
}
