//! The link driver: the handshake on both ends, the dialer's redial loop, the acceptor, and the
//! tasks of one established link (writer, outbox pump, group feed, reader).

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jaring_proto::chat::address::is_valid_name;
use jaring_proto::federation::auth::{
    CHANNEL_LABEL, CHANNEL_LEN, NONCE_LEN, Role, Transcript, hex, is_nonce,
};
use jaring_proto::federation::{
    DEFAULT_MAX_FRAME, Frame, LinkFramer, MAX_MEMBER_LIST_BYTES, VERSION, fit_members,
};
use jaring_runtime::CancellationToken;
use jaring_runtime::transport::TLS_HANDSHAKE_RECORD;
use rand::{Rng as _, RngExt as _};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, mpsc};
use tracing::{debug, info, warn};

use super::{Federation, GroupReply, LinkHandle, LinkRealm, LinkState, POSTMASTER, Peer, lock};
use crate::storage::{
    GroupCursor, MessageKind, NewGroupMessage, NewMessage, Outgoing, Settled, Storage,
    StoredGroupMessage, StoredMessage,
};

/// Bytes read from a link at once: one read's messages are committed together.
const READ_BUFFER: usize = 256 * 1024;

/// Frames waiting for the link's writer; when full, producers wait.
const WRITE_QUEUE: usize = 16 * 1024;

/// Outbox messages read from storage at once.
const OUTBOX_BATCH: usize = 1024;

/// Most bytes of message text read from storage at once for a group feed (the first message
/// whatever its size), so a group of large posts is fed in bounded batches.
const OUTBOX_BATCH_BYTES: usize = 1024 * 1024;

/// The shortest ping interval, whatever the configured idle limit (a tiny one would only burn
/// writes).
const MIN_PING_EVERY: Duration = Duration::from_millis(50);

/// The server name a dialer sends when the peer's address has no usable host name. Links check
/// the peer's pinned key, never a name, so this only fills the handshake's SNI field.
const LINK_SERVER_NAME: &str = "jaring-link";

/// What a link runs over: a TCP stream, or TLS over one.
trait LinkStream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> LinkStream for T {}

/// A connection speaking frames: bounded decoding, frames queued in order.
struct FrameConn<T> {
    stream: T,
    framer: LinkFramer,
    frames: VecDeque<Frame>,
    buf: Vec<u8>,
}

impl<T: LinkStream> FrameConn<T> {
    fn new(stream: T) -> Self {
        Self {
            stream,
            framer: LinkFramer::new(DEFAULT_MAX_FRAME),
            frames: VecDeque::new(),
            buf: vec![0; READ_BUFFER],
        }
    }

    async fn send(&mut self, frame: &Frame) -> Result<(), String> {
        let mut out = Vec::new();
        frame.encode(&mut out);
        self.stream
            .write_all(&out)
            .await
            .map_err(|e| format!("write failed: {e}"))?;
        // TLS holds written bytes until flushed; for TCP this does nothing.
        self.stream
            .flush()
            .await
            .map_err(|e| format!("write failed: {e}"))
    }

    /// The next frame; an error for a closed connection or a malformed frame.
    async fn next(&mut self) -> Result<Frame, String> {
        loop {
            if let Some(f) = self.frames.pop_front() {
                return Ok(f);
            }
            let n = self
                .stream
                .read(&mut self.buf)
                .await
                .map_err(|e| format!("read failed: {e}"))?;
            if n == 0 {
                return Err("the peer closed the connection".into());
            }
            let mut got = Vec::new();
            let r = self.framer.feed(&self.buf[..n], &mut got);
            self.frames.extend(got);
            if let Err(e) = r {
                return Err(format!("protocol error: {e}"));
            }
        }
    }

    async fn refuse(&mut self, reason: &str) {
        let _ = self
            .send(&Frame::Refused {
                reason: reason.into(),
            })
            .await;
        let _ = self.stream.shutdown().await;
    }
}

fn nonce() -> String {
    let mut bytes = [0u8; NONCE_LEN];
    rand::rng().fill_bytes(&mut bytes);
    hex(&bytes)
}

/// How long a refusal may take to write before the connection is dropped anyway (a peer that
/// does not read cannot hold its slot with it).
const REFUSAL_WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// Who is in a handshake on the server-to-server port: per source address, and from addresses
/// that are not a configured peer's ("strangers"), which share one pool so that they can never
/// take the room of a configured peer.
struct Admission {
    max_strangers: usize,
    max_per_address: usize,
    /// The configured peers' addresses, as resolved from their `address` settings.
    peers: HashSet<IpAddr>,
    per_address: HashMap<IpAddr, usize>,
    strangers: usize,
}

impl Admission {
    fn new(max_strangers: usize, max_per_address: usize) -> Self {
        Self {
            max_strangers,
            max_per_address: max_per_address.max(1),
            peers: HashSet::new(),
            per_address: HashMap::new(),
            strangers: 0,
        }
    }

    /// Takes a handshake slot for a connection from `ip`: the key its address counts under and
    /// whether it is a stranger's, or why not. A stranger counts by the runtime's
    /// [`jaring_runtime::address_key`] (an IPv6 /64, as for client ports), so one IPv6 host cannot
    /// take the strangers' pool with many addresses; a configured peer by its exact address, so
    /// its neighbours cannot take its room.
    fn admit(&mut self, ip: IpAddr) -> Result<(IpAddr, bool), &'static str> {
        let stranger = !self.peers.contains(&ip);
        let key = if stranger {
            jaring_runtime::address_key(ip)
        } else {
            ip
        };
        let n = self.per_address.get(&key).copied().unwrap_or(0);
        if n >= self.max_per_address {
            return Err("too many handshakes from this address at once");
        }
        if stranger {
            if self.strangers >= self.max_strangers {
                return Err("too many handshakes at once");
            }
            self.strangers += 1;
        }
        self.per_address.insert(key, n + 1);
        Ok((key, stranger))
    }

    fn release(&mut self, key: IpAddr, stranger: bool) {
        if stranger {
            self.strangers = self.strangers.saturating_sub(1);
        }
        if let Some(n) = self.per_address.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                self.per_address.remove(&key);
            }
        }
    }
}

/// A connection's handshake slot, given back when dropped.
struct Slot {
    admission: Arc<Mutex<Admission>>,
    /// The key its address counts under.
    key: IpAddr,
    stranger: bool,
}

impl Drop for Slot {
    fn drop(&mut self) {
        lock(&self.admission).release(self.key, self.stranger);
    }
}

/// At most one log line per interval, counting what it left out.
struct LogLimit {
    interval: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl LogLimit {
    fn new(interval: Duration) -> Self {
        Self {
            interval,
            last: None,
            suppressed: 0,
        }
    }

    /// Whether to log now: `Some(n)` with the `n` events left out since the last line.
    fn allow(&mut self) -> Option<u64> {
        self.allow_at(Instant::now())
    }

    fn allow_at(&mut self, now: Instant) -> Option<u64> {
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < self.interval)
        {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

/// Logs a refused connection, at most once per [`super::DEFAULT_REFUSAL_LOG_INTERVAL`].
fn log_refusal(limit: &Mutex<LogLimit>, addr: SocketAddr, reason: &str) {
    if let Some(left_out) = lock(limit).allow() {
        warn!(%addr, %reason, refused_since_last_report = left_out, "refused a peer connection");
    }
}

/// Resolves the configured peers' addresses (where they listen, which is where they dial from
/// on any ordinary network), so that their connections keep room of their own.
async fn resolve_peers<S: Storage>(fed: Arc<Federation<S>>, admission: Arc<Mutex<Admission>>) {
    for p in fed.peers.values() {
        let address = p.config.address.as_str();
        if address.parse::<SocketAddr>().is_ok() {
            continue; // Taken before the first accept.
        }
        match tokio::time::timeout(fed.config.lookup_timeout, tokio::net::lookup_host(address))
            .await
        {
            Ok(Ok(addrs)) => {
                let mut a = lock(&admission);
                a.peers.extend(addrs.map(|s| s.ip().to_canonical()));
            }
            Ok(Err(e)) => {
                warn!(peer = %p.config.name, %address, error = %e, "cannot resolve a peer's address; its connections share the strangers' handshake slots");
            }
            Err(_) => {
                warn!(peer = %p.config.name, %address, "resolving a peer's address timed out; its connections share the strangers' handshake slots");
            }
        }
    }
}

/// Accepts peers on the server-to-server port until `shutdown`.
pub(crate) async fn accept_loop<S: Storage>(
    fed: Arc<Federation<S>>,
    listener: TcpListener,
    shutdown: CancellationToken,
) {
    let admission = Arc::new(Mutex::new(Admission::new(
        fed.config.max_handshakes,
        fed.config.max_handshakes_per_address,
    )));
    let refusals = Arc::new(Mutex::new(LogLimit::new(
        super::DEFAULT_REFUSAL_LOG_INTERVAL,
    )));
    // Addresses given as IP:port count at once; names are resolved meanwhile.
    lock(&admission).peers.extend(
        fed.peers
            .values()
            .filter_map(|p| p.config.address.parse::<SocketAddr>().ok())
            .map(|a| a.ip().to_canonical()),
    );
    tokio::spawn(resolve_peers(Arc::clone(&fed), Arc::clone(&admission)));
    loop {
        let (stream, addr) = tokio::select! {
            () = shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    warn!(error = %e, "accepting a peer connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let ip = addr.ip().to_canonical();
        let admitted = lock(&admission).admit(ip);
        let slot = match admitted {
            Ok((key, stranger)) => Slot {
                admission: Arc::clone(&admission),
                key,
                stranger,
            },
            Err(reason) => {
                // Closed at once, without a word: answering would cost the flood's sender nothing
                // and us a write each.
                log_refusal(&refusals, addr, reason);
                continue;
            }
        };
        let fed = Arc::clone(&fed);
        let shutdown = shutdown.clone();
        let refusals = Arc::clone(&refusals);
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            // The deadline covers the whole handshake from the accept (the TLS handshake too):
            // however slowly the bytes come, the slot is free again by then.
            let deadline = tokio::time::Instant::now() + fed.config.handshake_timeout;
            tokio::select! {
                () = shutdown.cancelled() => {}
                () = serve_incoming(&fed, stream, addr, slot, deadline, &refusals, &shutdown) => {}
            }
        });
    }
}

/// Tells a TLS connection from a plaintext one by its first byte, runs the TLS handshake (when
/// TLS) and the link handshake, then the link.
async fn serve_incoming<S: Storage>(
    fed: &Arc<Federation<S>>,
    stream: TcpStream,
    addr: SocketAddr,
    slot: Slot,
    deadline: tokio::time::Instant,
    refusals: &Mutex<LogLimit>,
    shutdown: &CancellationToken,
) {
    let mut first = [0u8; 1];
    match tokio::time::timeout_at(deadline, stream.peek(&mut first)).await {
        Ok(Ok(1..)) => {}
        Ok(Ok(0) | Err(_)) => return,
        Err(_) => {
            log_refusal(refusals, addr, "handshake timed out");
            return;
        }
    }
    if first[0] != TLS_HANDSHAKE_RECORD {
        let conn = FrameConn::new(stream);
        return finish_accept(fed, conn, None, addr, slot, deadline, refusals, shutdown).await;
    }
    let Some(tls) = &fed.tls else {
        // Nothing to say in plaintext that a TLS client could read: close.
        log_refusal(
            refusals,
            addr,
            "a peer opened TLS, but no link of this realm runs over TLS: give this realm [tls] \
             cert and key and the peer's `fingerprint` in its [[peer]] entry, or remove this \
             realm's fingerprint from the peer's config to link in plaintext",
        );
        return;
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::clone(&tls.server));
    let stream = match tokio::time::timeout_at(deadline, acceptor.accept(stream)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            log_refusal(refusals, addr, &tls_failure(&e));
            return;
        }
        Err(_) => {
            log_refusal(refusals, addr, "TLS handshake timed out");
            return;
        }
    };
    let session = stream.get_ref().1;
    let checked = presented_peer(fed, tls, session).and_then(|peer| {
        let channel = channel_binding(session).map_err(|e| (Some(Arc::clone(&peer)), e))?;
        Ok((peer, channel))
    });
    let mut conn = FrameConn::new(stream);
    match checked {
        Ok((peer, channel)) => {
            finish_accept(
                fed,
                conn,
                Some((peer, channel)),
                addr,
                slot,
                deadline,
                refusals,
                shutdown,
            )
            .await;
        }
        Err((peer, reason)) => {
            drop(slot);
            if let Some(peer) = peer {
                peer.note_refusal(&reason);
            }
            log_refusal(refusals, addr, &reason);
            let _ = tokio::time::timeout(REFUSAL_WRITE_TIMEOUT, conn.refuse(&reason)).await;
        }
    }
}

/// The peer whose pinned key the TLS client presented, after the chain check of its `ca`; or
/// why not (with the peer, when known).
fn presented_peer<S>(
    fed: &Federation<S>,
    tls: &super::ListenTls,
    session: &rustls::ServerConnection,
) -> Result<Arc<Peer>, (Option<Arc<Peer>>, String)> {
    let refused = |why: String| (None, format!("TLS link refused: {why}"));
    let Some((leaf, intermediates)) = session.peer_certificates().and_then(|c| c.split_first())
    else {
        return Err(refused(jaring_tls::LinkRefusal::NoCertificate.to_string()));
    };
    let pin = jaring_tls::fingerprint_of(leaf).map_err(|e| refused(e.to_string()))?;
    // The verifier accepted only pinned keys, and each pin names one peer.
    let Some(peer) = tls.by_pin.get(&pin).and_then(|n| fed.peers.get(n)) else {
        return Err(refused(
            jaring_tls::LinkRefusal::WrongPin { got: pin }.to_string(),
        ));
    };
    if let Some(chain) = peer.tls.as_ref().and_then(|t| t.chain.as_ref())
        && let Err(e) =
            chain.verify_client_cert(leaf, intermediates, rustls::pki_types::UnixTime::now())
    {
        let reason = format!(
            "TLS link from realm {} refused: {}",
            peer.config.name,
            jaring_tls::link_refusal(&e)
        );
        return Err((Some(Arc::clone(peer)), reason));
    }
    Ok(Arc::clone(peer))
}

/// The channel binding of a TLS link: keying material both ends export (RFC 5705).
fn channel_binding<E>(session: &rustls::ConnectionCommon<E>) -> Result<[u8; CHANNEL_LEN], String> {
    session
        .export_keying_material([0u8; CHANNEL_LEN], CHANNEL_LABEL, None)
        .map_err(|e| format!("cannot bind the link to its TLS channel: {e}"))
}

/// Why a TLS handshake failed, in one line that says what to do.
fn tls_failure(e: &std::io::Error) -> String {
    let rustls_error = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    match rustls_error {
        Some(rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. }) => {
            "the peer did not answer with TLS: give that realm [tls] cert and key and this \
             realm's `fingerprint` in its [[peer]] entry (its link must be TLS, since this \
             realm pins its key)"
                .to_owned()
        }
        Some(r) => format!("TLS link refused: {}", jaring_tls::link_refusal(r)),
        // A listener without TLS closes on a ClientHello it never reads: a reset, not an EOF.
        None if matches!(
            e.kind(),
            std::io::ErrorKind::UnexpectedEof
                | std::io::ErrorKind::ConnectionReset
                | std::io::ErrorKind::ConnectionAborted
                | std::io::ErrorKind::BrokenPipe
        ) =>
        {
            "the peer closed the connection during the TLS handshake: check that it has [tls] \
             and this realm's `fingerprint` in its [[peer]] entry"
                .to_owned()
        }
        None => format!("TLS handshake failed: {e}"),
    }
}

/// The link handshake of an accepted connection (the TLS one, when TLS, is done: `tls` names the
/// peer whose key was presented and the channel binding), then the link or a refusal.
#[allow(clippy::too_many_arguments)]
async fn finish_accept<S: Storage, T: LinkStream>(
    fed: &Arc<Federation<S>>,
    mut conn: FrameConn<T>,
    tls: Option<(Arc<Peer>, [u8; CHANNEL_LEN])>,
    addr: SocketAddr,
    slot: Slot,
    deadline: tokio::time::Instant,
    refusals: &Mutex<LogLimit>,
    shutdown: &CancellationToken,
) {
    let accepted =
        match tokio::time::timeout_at(deadline, accept(fed, &mut conn, tls.as_ref())).await {
            Ok(r) => r,
            Err(_) => Err("handshake timed out".to_owned()),
        };
    drop(slot);
    match accepted {
        Ok(peer) => {
            run_link(fed, &peer, conn, shutdown).await;
        }
        Err(reason) => {
            log_refusal(refusals, addr, &reason);
            let _ = tokio::time::timeout(REFUSAL_WRITE_TIMEOUT, conn.refuse(&reason)).await;
        }
    }
}

/// The listener's half of the handshake; returns the authenticated peer. `tls`: the peer whose
/// pinned key the TLS client presented, and the channel binding.
async fn accept<S: Storage, T: LinkStream>(
    fed: &Federation<S>,
    conn: &mut FrameConn<T>,
    tls: Option<&(Arc<Peer>, [u8; CHANNEL_LEN])>,
) -> Result<Arc<Peer>, String> {
    let Frame::Hello {
        v,
        realm,
        to,
        nonce: dialer_nonce,
    } = conn.next().await?
    else {
        return Err("expected hello".into());
    };
    if v != VERSION {
        return Err(format!(
            "protocol version {v} is not supported (this realm speaks {VERSION})"
        ));
    }
    if to != fed.name {
        return Err(format!("this is realm {}, not {to}", fed.name));
    }
    let Some(peer) = fed.peers.get(&realm).cloned() else {
        return Err(format!("{realm:?} is not a peer of realm {}", fed.name));
    };
    match tls {
        Some((presented, _)) if !Arc::ptr_eq(presented, &peer) => {
            let reason = format!(
                "a peer holding the key pinned for realm {} claimed to be realm {realm}: \
                 refused (each realm links only under its own name and key)",
                presented.config.name
            );
            presented.note_refusal(&reason);
            return Err(reason);
        }
        None if peer.tls.is_some() => {
            let reason = format!(
                "realm {realm} connected in plaintext, but its link must be mutual TLS (this \
                 realm pins its key): give realm {realm} [tls] cert and key and this realm's \
                 `fingerprint` in its [[peer]] entry"
            );
            peer.note_refusal(&reason);
            return Err(reason);
        }
        _ => {}
    }
    if !is_nonce(&dialer_nonce) {
        return Err("malformed nonce".into());
    }
    let listener_nonce = nonce();
    let transcript = Transcript {
        dialer: &realm,
        listener: &fed.name,
        dialer_nonce: &dialer_nonce,
        listener_nonce: &listener_nonce,
        channel: tls.map(|(_, channel)| &channel[..]),
    };
    let secret = &peer.config.secret;
    conn.send(&Frame::Challenge {
        v: VERSION,
        realm: fed.name.clone(),
        nonce: listener_nonce.clone(),
        mac: transcript.proof(secret, Role::Listener),
    })
    .await?;
    let Frame::Auth { mac } = conn.next().await? else {
        return Err(format!("{realm}: expected auth"));
    };
    if !transcript.verify(secret, Role::Dialer, &mac) {
        let reason = if tls.is_some() {
            format!(
                "realm {realm} failed authentication over TLS: the secrets differ, or something \
                 between the realms terminates TLS (the channel binding does not match): check \
                 the secret, and that the peer connects directly"
            )
        } else {
            format!(
                "a peer claiming to be {realm} failed authentication (wrong secret, or not {realm})"
            )
        };
        peer.note_refusal(&reason);
        return Err(reason);
    }
    conn.send(&Frame::Ready).await?;
    Ok(peer)
}

/// A dialled link, over TCP or TLS.
enum Dialled {
    Plain(FrameConn<TcpStream>),
    /// Boxed: a TLS session is large, and the enum moves around.
    Tls(FrameConn<Box<tokio_rustls::client::TlsStream<TcpStream>>>),
}

/// Connects to `peer` (over TLS when its key is pinned) and runs the dialer's half of the
/// handshake.
async fn dial<S: Storage>(fed: &Federation<S>, peer: &Peer) -> Result<Dialled, String> {
    let address = &peer.config.address;
    let stream = TcpStream::connect(address.as_str())
        .await
        .map_err(|e| format!("cannot connect to {address}: {e}"))?;
    let _ = stream.set_nodelay(true);
    let Some(tls) = &peer.tls else {
        let mut conn = FrameConn::new(stream);
        dial_handshake(fed, peer, &mut conn, None).await?;
        return Ok(Dialled::Plain(conn));
    };
    let host = address
        .rsplit_once(':')
        .map_or(address.as_str(), |(host, _)| host);
    let name = jaring_tls::server_name(host)
        .or_else(|_| jaring_tls::server_name(LINK_SERVER_NAME))
        .map_err(|e| e.to_string())?;
    let connector = tokio_rustls::TlsConnector::from(Arc::clone(&tls.client));
    let stream = connector
        .connect(name, stream)
        .await
        .map_err(|e| format!("{address}: {}", tls_failure(&e)))?;
    let channel = channel_binding(stream.get_ref().1)?;
    let mut conn = FrameConn::new(Box::new(stream));
    dial_handshake(fed, peer, &mut conn, Some(&channel)).await?;
    Ok(Dialled::Tls(conn))
}

/// The dialer's half of the link handshake; `channel` is the TLS channel binding, when TLS.
async fn dial_handshake<S: Storage, T: LinkStream>(
    fed: &Federation<S>,
    peer: &Peer,
    conn: &mut FrameConn<T>,
    channel: Option<&[u8]>,
) -> Result<(), String> {
    let address = &peer.config.address;
    let dialer_nonce = nonce();
    conn.send(&Frame::Hello {
        v: VERSION,
        realm: fed.name.clone(),
        to: peer.config.name.clone(),
        nonce: dialer_nonce.clone(),
    })
    .await?;
    let (realm, listener_nonce, mac) = match conn.next().await? {
        Frame::Challenge {
            v: VERSION,
            realm,
            nonce,
            mac,
        } => (realm, nonce, mac),
        Frame::Refused { reason } => return Err(format!("refused by {address}: {reason}")),
        other => return Err(format!("expected challenge, got {}", other.kind())),
    };
    if realm != peer.config.name {
        let reason = format!(
            "{address} claims to be realm {realm}, expected {}",
            peer.config.name
        );
        conn.refuse(&reason).await;
        return Err(reason);
    }
    let transcript = Transcript {
        dialer: &fed.name,
        listener: &realm,
        dialer_nonce: &dialer_nonce,
        listener_nonce: &listener_nonce,
        channel,
    };
    let secret = &peer.config.secret;
    if !is_nonce(&listener_nonce) || !transcript.verify(secret, Role::Listener, &mac) {
        let reason = if channel.is_some() {
            format!(
                "{address} failed authentication as {realm} over TLS: the secrets differ, or \
                 something between the realms terminates TLS (the channel binding does not \
                 match): check the secret, and that this realm connects to {realm} directly"
            )
        } else {
            format!("{address} failed authentication as {realm} (wrong secret?)")
        };
        conn.refuse(&reason).await;
        return Err(reason);
    }
    conn.send(&Frame::Auth {
        mac: transcript.proof(secret, Role::Dialer),
    })
    .await?;
    match conn.next().await? {
        Frame::Ready => Ok(()),
        Frame::Refused { reason } => Err(format!("refused by {address}: {reason}")),
        other => Err(format!("expected ready, got {}", other.kind())),
    }
}

/// Keeps the link to `peer` up until `shutdown`, redialling with jittered exponential backoff.
pub(crate) async fn dial_loop<S: Storage>(
    fed: Arc<Federation<S>>,
    peer: Arc<Peer>,
    shutdown: CancellationToken,
) {
    let mut failures: u32 = 0;
    while !shutdown.is_cancelled() {
        peer.set_state(LinkState::Connecting, None);
        let timeout = fed.config.handshake_timeout;
        let dialled = tokio::select! {
            () = shutdown.cancelled() => return,
            r = tokio::time::timeout(timeout, dial(&fed, &peer)) => r.unwrap_or_else(|_| Err("handshake timed out".into())),
        };
        match dialled {
            Ok(conn) => {
                // A link the peer broke (a protocol error, a refused frame) counts as a failure:
                // a peer that breaks every link is redialled ever more slowly, not in a loop.
                let broken = match conn {
                    Dialled::Plain(conn) => run_link(&fed, &peer, conn, &shutdown).await,
                    Dialled::Tls(conn) => run_link(&fed, &peer, conn, &shutdown).await,
                };
                failures = if broken {
                    failures.saturating_add(1)
                } else {
                    0
                };
            }
            Err(reason) => {
                failures = failures.saturating_add(1);
                if failures <= 3 || failures.is_multiple_of(20) {
                    warn!(peer = %peer.config.name, %reason, failures, "cannot link to peer; will retry");
                }
                peer.set_state(LinkState::Backoff, Some(reason));
            }
        }
        let delay = backoff(fed.config.backoff_min, fed.config.backoff_max, failures);
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
    }
}

/// `min · 2^failures`, capped at `max`, times a random factor in [0.5, 1.5).
fn backoff(min: Duration, max: Duration, failures: u32) -> Duration {
    let base = min.saturating_mul(1 << failures.min(16)).min(max);
    base.mul_f64(rand::rng().random_range(0.5..1.5))
}

/// Messages sent and not yet acknowledged, by id, and their text bytes.
#[derive(Default)]
struct Inflight {
    sent: HashMap<uuid::Uuid, StoredMessage>,
    bytes: usize,
}

impl Inflight {
    fn remove(&mut self, id: &uuid::Uuid) -> Option<StoredMessage> {
        let m = self.sent.remove(id)?;
        self.bytes -= m.message.body.len();
        Some(m)
    }
}

/// Runs an authenticated link until it fails or `shutdown`; then records why it ended. Returns
/// whether the peer broke it (a malformed or refused frame) rather than it ending or going silent.
async fn run_link<S: Storage, T: LinkStream>(
    fed: &Arc<Federation<S>>,
    peer: &Arc<Peer>,
    conn: FrameConn<T>,
    shutdown: &CancellationToken,
) -> bool {
    let FrameConn {
        stream,
        mut framer,
        frames: early,
        mut buf,
    } = conn;
    // One split for TCP and TLS alike (a TLS session cannot be split into owned halves).
    let (mut rd, wr) = tokio::io::split(stream);
    let (tx, rx) = mpsc::channel(WRITE_QUEUE);
    let cancel = shutdown.child_token();
    let id = fed
        .next_link
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let handle = LinkHandle {
        id,
        frames: tx.clone(),
        lookups: Arc::default(),
        queries: Arc::default(),
        cancel: cancel.clone(),
    };
    if let Some(old) = lock(&peer.link).replace(handle.clone()) {
        // A peer that redialled replaces a link that is half-dead from our side.
        old.cancel.cancel();
    }
    peer.set_state(LinkState::Up, None);
    info!(peer = %peer.config.name, tls = peer.tls.is_some(), "link up");

    let inflight = Arc::new(Mutex::new(Inflight::default()));
    let room = Arc::new(Notify::new());
    let feeds: Arc<Mutex<Feeds>> = Arc::default();
    let feed_room = Arc::new(Notify::new());
    let feeder = tokio::spawn(feed(
        Arc::clone(fed),
        Arc::clone(peer),
        tx.clone(),
        Arc::clone(&feeds),
        Arc::clone(&feed_room),
        cancel.clone(),
    ));
    let ctx = LinkCtx {
        inflight: Arc::clone(&inflight),
        room: Arc::clone(&room),
        feeds,
        feed_room,
    };
    let writer = tokio::spawn(write_loop(wr, rx, cancel.clone()));
    let pump = tokio::spawn(pump(
        Arc::clone(fed),
        Arc::clone(peer),
        tx.clone(),
        Arc::clone(&inflight),
        Arc::clone(&room),
        cancel.clone(),
    ));

    let mut pending: Vec<Frame> = early.into_iter().collect();
    let idle = fed.config.link_idle;
    let mut ping = tokio::time::interval(super::PING_EVERY.min(idle / 3).max(MIN_PING_EVERY));
    ping.tick().await;
    // When the last whole frame arrived: bytes of a frame never finished do not count.
    let mut last_heard = tokio::time::Instant::now();
    let mut broken = false;
    let reason = loop {
        if !pending.is_empty() {
            if let Err(e) =
                handle_frames(fed, peer, &handle, &ctx, std::mem::take(&mut pending)).await
            {
                broken = true;
                break e;
            }
            continue;
        }
        tokio::select! {
            () = cancel.cancelled() => break if shutdown.is_cancelled() { "shutting down".into() } else { "link replaced or writer failed".into() },
            _ = ping.tick() => {
                if last_heard.elapsed() > idle {
                    break format!("no whole frame from the peer for {}s", idle.as_secs_f32());
                }
                if tx.send(Frame::Ping).await.is_err() {
                    break "link writer stopped".into();
                }
            }
            r = rd.read(&mut buf) => match r {
                Ok(0) => break "the peer closed the link".into(),
                Ok(n) => {
                    if let Err(e) = framer.feed(&buf[..n], &mut pending) {
                        broken = true;
                        break format!("protocol error from the peer: {e}");
                    }
                    if !pending.is_empty() {
                        last_heard = tokio::time::Instant::now();
                    }
                }
                Err(e) => break format!("read failed: {e}"),
            },
        }
    };
    cancel.cancel();
    {
        let mut current = lock(&peer.link);
        // A link that was replaced leaves the state to its successor.
        if current.as_ref().is_some_and(|h| h.id == id) {
            *current = None;
            let next = if peer.dials {
                LinkState::Backoff
            } else {
                LinkState::Waiting
            };
            peer.set_state(next, Some(reason.clone()));
        }
    }
    // Waiting lookups hear "unreachable" now rather than at their timeout.
    lock(&handle.lookups).clear();
    lock(&handle.queries).clear();
    let _ = pump.await;
    let _ = feeder.await;
    let _ = writer.await;
    info!(peer = %peer.config.name, %reason, "link down");
    broken
}

async fn write_loop<W: AsyncWrite + Unpin>(
    mut wr: W,
    mut rx: mpsc::Receiver<Frame>,
    cancel: CancellationToken,
) {
    let mut out = Vec::with_capacity(64 * 1024);
    loop {
        let first = tokio::select! {
            () = cancel.cancelled() => break,
            f = rx.recv() => match f { Some(f) => f, None => break },
        };
        first.encode(&mut out);
        while out.len() < 256 * 1024 {
            match rx.try_recv() {
                Ok(f) => f.encode(&mut out),
                Err(_) => break,
            }
        }
        let written = tokio::select! {
            () = cancel.cancelled() => break,
            // TLS holds written bytes until flushed; for TCP the flush does nothing.
            r = async { wr.write_all(&out).await?; wr.flush().await } => r,
        };
        out.clear();
        if let Err(e) = written {
            debug!(error = %e, "link write failed");
            break;
        }
    }
    cancel.cancel();
    let _ = wr.shutdown().await;
}

/// Sends the outbox to the peer in commit order, at most `window` unacknowledged.
async fn pump<S: Storage>(
    fed: Arc<Federation<S>>,
    peer: Arc<Peer>,
    tx: mpsc::Sender<Frame>,
    inflight: Arc<Mutex<Inflight>>,
    room: Arc<Notify>,
    cancel: CancellationToken,
) {
    let window = fed.config.window.max(1);
    let name = peer.config.name.clone();
    // Everything still in the outbox goes again, from the start: the peer drops what it has.
    let mut after = 0;
    loop {
        let free = {
            let f = lock(&inflight);
            if f.bytes >= super::DEFAULT_WINDOW_BYTES {
                0
            } else {
                window.saturating_sub(f.sent.len())
            }
        };
        if free == 0 {
            tokio::select! {
                () = cancel.cancelled() => return,
                () = room.notified() => continue,
            }
        }
        let batch = tokio::select! {
            () = cancel.cancelled() => return,
            r = fed.store.outbox_after(&name, after, free.min(OUTBOX_BATCH)) => r,
        };
        let batch = match batch {
            Ok(b) => b,
            Err(e) => {
                warn!(error = %e, peer = %name, "cannot read the outbox; retrying");
                tokio::select! {
                    () = cancel.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        if batch.is_empty() {
            tokio::select! {
                () = cancel.cancelled() => return,
                () = peer.work.notified() => continue,
            }
        }
        for Outgoing { stored: m, kind } in batch {
            after = m.seq;
            let to = m
                .message
                .recipient
                .split_once('@')
                .map_or(m.message.recipient.as_str(), |(n, _)| n)
                .to_owned();
            let frame = if kind == MessageKind::GroupPost {
                Frame::Gpost {
                    id: m.message.id.to_string(),
                    group: to,
                    from: m.message.sender.clone(),
                    body: m.message.body.clone(),
                    sent_at: m.message.sent_at,
                }
            } else {
                Frame::Msg {
                    id: m.message.id.to_string(),
                    from: m.message.sender.clone(),
                    to,
                    body: m.message.body.clone(),
                    sent_at: m.message.sent_at,
                }
            };
            {
                let mut f = lock(&inflight);
                f.bytes += m.message.body.len();
                f.sent.insert(m.message.id, m);
            }
            if tx.send(frame).await.is_err() {
                return;
            }
        }
    }
}

/// Where the group feeds to the peer stand on this link.
#[derive(Default)]
struct Feeds {
    groups: HashMap<String, FeedCursor>,
    /// Messages sent and not yet acknowledged over all groups, and their text bytes.
    unacked: usize,
    bytes: usize,
}

/// One group's feed on this link.
#[derive(Default)]
struct FeedCursor {
    sent: i64,
    acked: i64,
    /// (seq, text bytes) of what was sent and not acknowledged, in order.
    inflight: VecDeque<(i64, usize)>,
}

impl Feeds {
    /// Starts feeding `group` after `acked` (what the peer has), unless it is fed already.
    fn start(&mut self, group: String, acked: i64) {
        self.groups.entry(group).or_insert_with(|| FeedCursor {
            sent: acked,
            acked,
            inflight: VecDeque::new(),
        });
    }

    /// Message `seq` of `group` went out.
    fn sent(&mut self, group: &str, seq: i64, bytes: usize) {
        if let Some(c) = self.groups.get_mut(group) {
            c.sent = c.sent.max(seq);
            c.inflight.push_back((seq, bytes));
            self.unacked += 1;
            self.bytes += bytes;
        }
    }

    /// The peer has `group` up to `seq`; returns the cursor to store (never past what was sent),
    /// or `None` for a group this link does not feed.
    fn ack(&mut self, group: &str, seq: i64) -> Option<i64> {
        let c = self.groups.get_mut(group)?;
        c.acked = c.acked.max(seq.min(c.sent));
        while let Some(&(s, b)) = c.inflight.front()
            && s <= c.acked
        {
            c.inflight.pop_front();
            self.unacked -= 1;
            self.bytes -= b;
        }
        Some(c.acked)
    }
}

/// What the frame handler shares with the link's senders.
struct LinkCtx {
    inflight: Arc<Mutex<Inflight>>,
    room: Arc<Notify>,
    feeds: Arc<Mutex<Feeds>>,
    feed_room: Arc<Notify>,
}

/// Feeds the peer every message of each group homed here that has members on the peer, in `seq`
/// order from where the peer acknowledged (its durable cursor), at most `window` unacknowledged.
async fn feed<S: Storage>(
    fed: Arc<Federation<S>>,
    peer: Arc<Peer>,
    tx: mpsc::Sender<Frame>,
    feeds: Arc<Mutex<Feeds>>,
    room: Arc<Notify>,
    cancel: CancellationToken,
) {
    let Some(hub) = fed.realm.upgrade().map(|r| Arc::clone(r.hub())) else {
        return;
    };
    let name = peer.config.name.clone();
    let window = fed.config.window.max(1);
    // Everything not acknowledged goes again: the peer ignores what it has.
    let mut fresh = true;
    loop {
        if fresh {
            // On a new link, and when a group gets its first member on the peer: the durable
            // cursors say where each feed starts (a group's cursor is committed before the
            // membership that makes it fed, so every group listed before this read has one).
            let before = hub.fed_to(&name);
            let cursors = tokio::select! {
                () = cancel.cancelled() => return,
                r = fed.store.feeds(&name) => r,
            };
            match cursors {
                Ok(c) => {
                    let mut f = lock(&feeds);
                    for c in c {
                        f.start(c.group, c.seq);
                    }
                    for (g, last) in before {
                        f.start(g, last);
                    }
                }
                Err(e) => {
                    warn!(error = %e, peer = %name, "cannot read the group feeds; retrying");
                    tokio::select! {
                        () = cancel.cancelled() => return,
                        () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    }
                }
            }
            fresh = false;
        }
        let mut sent = false;
        for (group, last) in hub.fed_to(&name) {
            let (from, free) = {
                let f = lock(&feeds);
                let free = if f.bytes >= super::DEFAULT_WINDOW_BYTES {
                    0
                } else {
                    window.saturating_sub(f.unacked)
                };
                (f.groups.get(&group).map(|c| c.sent), free)
            };
            if free == 0 {
                break;
            }
            let Some(from) = from else {
                fresh = true;
                continue;
            };
            if last <= from {
                continue;
            }
            let msgs = tokio::select! {
                () = cancel.cancelled() => return,
                r = fed.store.group_messages(&group, from, free.min(OUTBOX_BATCH), OUTBOX_BATCH_BYTES) => r,
            };
            let msgs = match msgs {
                Ok(m) => m.messages,
                Err(e) => {
                    warn!(error = %e, peer = %name, %group, "cannot read a group to feed");
                    break;
                }
            };
            if msgs.is_empty() {
                continue;
            }
            {
                let mut f = lock(&feeds);
                for m in &msgs {
                    f.sent(&group, m.seq, m.message.body.len());
                }
            }
            for m in msgs {
                let g = m.message;
                let frame = Frame::Gmsg {
                    group: g.group,
                    seq: m.seq,
                    id: g.id.to_string(),
                    from: g.sender,
                    display: g.sender_display,
                    body: g.body,
                    sent_at: g.sent_at,
                };
                if tx.send(frame).await.is_err() {
                    return;
                }
            }
            sent = true;
        }
        if !sent && !fresh {
            tokio::select! {
                () = cancel.cancelled() => return,
                () = peer.feed_work.notified() => {}
                () = room.notified() => {}
            }
        }
    }
}

/// An address the home realm `home` gave (its own users bare, ours as `user@<this realm>`) and
/// its display name, as this realm names them.
fn as_named_here<S: Storage>(
    fed: &Federation<S>,
    realm: &dyn LinkRealm,
    home: &str,
    addr: jaring_proto::chat::Address,
    display: String,
) -> (String, String) {
    match addr.realm.as_deref() {
        None => (format!("{}@{home}", addr.name), display),
        Some(r) if r == fed.name => {
            let d = realm
                .display_name(&addr.name)
                .unwrap_or_else(|| addr.name.clone());
            (addr.name, d)
        }
        Some(_) => (addr.to_string(), display),
    }
}

/// `text` as every backend can store it: a NUL byte (which PostgreSQL cannot store, and which
/// this realm's clients cannot send) from a peer becomes U+FFFD, so that one such message can
/// neither be lost nor stall the link behind it.
fn storable(text: String) -> String {
    if text.contains('\0') {
        text.replace('\0', "\u{fffd}")
    } else {
        text
    }
}

fn greply(q: u64, answer: Result<super::RemoteJoin, String>) -> Frame {
    match answer {
        Ok(j) => Frame::Greply {
            q,
            error: None,
            read_seq: j.read_seq,
            created: j.created,
            new_member: j.new_member,
        },
        Err(e) => Frame::Greply {
            q,
            error: Some(e),
            read_seq: 0,
            created: false,
            new_member: false,
        },
    }
}

/// A peer's user joins a group homed here: the feed's cursor is committed first (from the group's
/// latest `seq`), then the membership, so the feed never misses what the member is owed.
async fn join_for_peer<S: Storage>(
    fed: &Federation<S>,
    realm: &dyn LinkRealm,
    peer: &str,
    group: &str,
    user: &str,
) -> Result<super::RemoteJoin, String> {
    let from = realm.hub().last_seq(group).unwrap_or(0);
    if let Err(e) = fed.store.open_feed(peer, group, from).await {
        warn!(error = %e, "cannot store a group feed");
        return Err("the home realm could not store this; try again later".into());
    }
    realm
        .join_for_peer(group, &format!("{user}@{peer}"))
        .await
        .map(|o| super::RemoteJoin {
            created: o.created,
            new_member: o.new_member,
            read_seq: o.read_seq,
        })
}

pub(crate) fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Handles the frames of one read: lookups are answered at once; incoming messages are committed
/// together and only then acknowledged; acknowledgements settle the outbox together.
async fn handle_frames<S: Storage>(
    fed: &Federation<S>,
    peer: &Peer,
    link: &LinkHandle,
    ctx: &LinkCtx,
    frames: Vec<Frame>,
) -> Result<(), String> {
    let Some(realm) = fed.realm.upgrade() else {
        return Err("the realm is stopping".into());
    };
    let (inflight, room) = (&*ctx.inflight, &*ctx.room);
    let pname = &peer.config.name;
    let mut incoming = Vec::new();
    let mut replies = Vec::new();
    let mut settled = Vec::new();
    let mut posts: Vec<NewGroupMessage> = Vec::new();
    let mut replica: Vec<StoredGroupMessage> = Vec::new();
    // The peer's acknowledgements of our feeds.
    let mut feed_acks: Vec<GroupCursor> = Vec::new();
    // Why the link must end once what came before is committed and answered.
    let mut refused = None;
    for f in frames {
        match f {
            Frame::Msg {
                id,
                from,
                to,
                body,
                sent_at,
            } => {
                let Ok(uid) = uuid::Uuid::parse_str(&id) else {
                    return Err(format!("message id {id:?} is not a UUID"));
                };
                if !is_valid_name(&from) || !is_valid_name(&to) {
                    return Err("message with an invalid user name".into());
                }
                match realm.display_name(&to) {
                    Some(display) => {
                        let sender = format!("{from}@{pname}");
                        incoming.push(NewMessage {
                            id: uid,
                            sender_display: sender.clone(),
                            sender,
                            recipient: to,
                            recipient_display: display,
                            body: storable(body),
                            sent_at,
                        });
                        replies.push(Frame::Ack { id });
                    }
                    None => replies.push(Frame::Bounce {
                        id,
                        reason: format!("no user {to} on realm {}", fed.name),
                    }),
                }
            }
            Frame::Ack { id } | Frame::Bounce { id, .. } if uuid::Uuid::parse_str(&id).is_err() => {
                return Err(format!("acknowledgement of a malformed id {id:?}"));
            }
            Frame::Ack { id } => {
                if let Ok(uid) = uuid::Uuid::parse_str(&id)
                    && let Some(m) = lock(inflight).remove(&uid)
                {
                    settled.push(Settled {
                        seq: m.seq,
                        id: uid,
                        bounce: None,
                    });
                }
            }
            Frame::Bounce { id, reason } => {
                if let Ok(uid) = uuid::Uuid::parse_str(&id)
                    && let Some(m) = lock(inflight).remove(&uid)
                {
                    let to = &m.message.recipient;
                    warn!(peer = %pname, %to, %reason, "message bounced");
                    let postmaster = format!("{POSTMASTER}@{pname}");
                    let bounce = NewMessage {
                        id: uuid::Uuid::now_v7(),
                        sender_display: postmaster.clone(),
                        sender: postmaster,
                        recipient: m.message.sender.clone(),
                        recipient_display: m.message.sender_display.clone(),
                        body: format!(
                            "undeliverable to {to}: {reason}. Your message: {}",
                            m.message.body
                        ),
                        sent_at: unix_ms(),
                    };
                    settled.push(Settled {
                        seq: m.seq,
                        id: uid,
                        bounce: Some(bounce),
                    });
                }
            }
            Frame::Lookup { q, user } => {
                let display = if is_valid_name(&user) {
                    realm.display_name(&user)
                } else {
                    None
                };
                replies.push(Frame::Found { q, display });
            }
            Frame::Found { q, display } => {
                if let Some(waiter) = lock(&link.lookups).remove(&q) {
                    let _ = waiter.send(display);
                }
            }
            Frame::Glookup { q, group } => {
                let exists = is_valid_name(&group) && realm.hub().exists(&group);
                replies.push(Frame::Gfound { q, exists });
            }
            Frame::Gfound { q, exists } => {
                if let Some(waiter) = lock(&link.lookups).remove(&q) {
                    let _ = waiter.send(exists.then(String::new));
                }
            }
            Frame::Gmembers { q, group } => {
                let list = is_valid_name(&group)
                    .then(|| realm.members_for_peer(&group))
                    .flatten();
                replies.push(match list {
                    Some(mut members) => {
                        let more = fit_members(&mut members, MAX_MEMBER_LIST_BYTES);
                        Frame::Gmemberlist {
                            q,
                            error: None,
                            members,
                            more,
                        }
                    }
                    None => Frame::Gmemberlist {
                        q,
                        error: Some(format!("no group {group:?} on realm {}", fed.name)),
                        members: Vec::new(),
                        more: false,
                    },
                });
            }
            Frame::Gmemberlist {
                q,
                error,
                members,
                more,
            } => {
                let mut named = Vec::with_capacity(members.len());
                for m in members {
                    let Ok(addr) = jaring_proto::chat::Address::parse(&m.name) else {
                        return Err("member list with an invalid name".into());
                    };
                    let (name, display) = as_named_here(fed, &*realm, pname, addr, m.display);
                    named.push((name, display, m.live));
                }
                if let Some(waiter) = lock(&link.queries).remove(&q) {
                    let _ = waiter.send(GroupReply {
                        error,
                        members: named,
                        more,
                        ..GroupReply::default()
                    });
                }
            }
            Frame::Gjoin { q, group, user } => {
                let answer = if is_valid_name(&group) && is_valid_name(&user) {
                    join_for_peer(fed, &*realm, pname, &group, &user).await
                } else {
                    return Err("gjoin with an invalid name".into());
                };
                replies.push(greply(q, answer));
            }
            Frame::Gleave { q, group, user } => {
                if !is_valid_name(&group) || !is_valid_name(&user) {
                    return Err("gleave with an invalid name".into());
                }
                let answer = realm
                    .leave_for_peer(&group, &format!("{user}@{pname}"))
                    .await
                    .map(|()| super::RemoteJoin {
                        created: false,
                        new_member: false,
                        read_seq: 0,
                    });
                replies.push(greply(q, answer));
            }
            Frame::Greply {
                q,
                error,
                read_seq,
                created,
                new_member,
            } => {
                if let Some(waiter) = lock(&link.queries).remove(&q) {
                    let _ = waiter.send(GroupReply {
                        error,
                        read_seq,
                        created,
                        new_member,
                        ..GroupReply::default()
                    });
                }
            }
            Frame::Gpost {
                id,
                group,
                from,
                body,
                sent_at,
            } => {
                let Ok(uid) = uuid::Uuid::parse_str(&id) else {
                    return Err(format!("group post id {id:?} is not a UUID"));
                };
                if !is_valid_name(&group) || !is_valid_name(&from) {
                    return Err("group post with an invalid name".into());
                }
                // The sender is a user of the link's realm, whatever the frame says.
                let sender = format!("{from}@{pname}");
                if !realm.hub().exists(&group) {
                    replies.push(Frame::Bounce {
                        id,
                        reason: format!("no group {group} on realm {}", fed.name),
                    });
                } else if realm.hub().membership(&group, &sender).is_none() {
                    replies.push(Frame::Bounce {
                        id,
                        reason: format!("{sender} is not a member of {group}@{}", fed.name),
                    });
                } else {
                    posts.push(NewGroupMessage {
                        id: uid,
                        group,
                        sender_display: sender.clone(),
                        sender,
                        body: storable(body),
                        sent_at,
                    });
                    replies.push(Frame::Ack { id });
                }
            }
            Frame::Gmsg {
                group,
                seq,
                id,
                from,
                display,
                body,
                sent_at,
            } => {
                let Ok(uid) = uuid::Uuid::parse_str(&id) else {
                    return Err(format!("group message id {id:?} is not a UUID"));
                };
                let Ok(sender) = jaring_proto::chat::Address::parse(&from) else {
                    return Err("group message with an invalid sender".into());
                };
                if !is_valid_name(&group) || seq < 1 {
                    return Err("group message with an invalid group or seq".into());
                }
                // Only into the replica of the link's realm's group; what else the home may say
                // (gap-free, our users' posts only as they sent them) is checked as it is stored.
                let (sender, sender_display) =
                    as_named_here(fed, &*realm, pname, sender, storable(display));
                replica.push(StoredGroupMessage {
                    seq,
                    message: NewGroupMessage {
                        id: uid,
                        group: format!("{group}@{pname}"),
                        sender,
                        sender_display,
                        body: storable(body),
                        sent_at,
                    },
                });
            }
            Frame::Gpresence {
                group,
                user,
                display,
                leave,
            } => {
                let Ok(addr) = jaring_proto::chat::Address::parse(&user) else {
                    return Err("presence with an invalid user".into());
                };
                if !is_valid_name(&group) {
                    return Err("presence with an invalid group".into());
                }
                let (user, display_name) = as_named_here(fed, &*realm, pname, addr, display);
                // Our own users' joins and leaves were pushed here when they happened.
                if user.contains('@') {
                    realm.hub().publish_presence(
                        jaring_proto::chat::event::MemberChange {
                            group: format!("{group}@{pname}"),
                            user,
                            display_name,
                        },
                        leave,
                    );
                }
            }
            Frame::Gack { group, seq } => {
                // Never past what this link sent: the cursor only moves over what the peer had.
                let acked = lock(&ctx.feeds).ack(&group, seq);
                if let Some(acked) = acked {
                    feed_acks.push(GroupCursor { group, seq: acked });
                }
            }
            Frame::Ping => replies.push(Frame::Pong),
            Frame::Pong => {}
            other => {
                return Err(format!(
                    "unexpected {} frame on an established link",
                    other.kind()
                ));
            }
        }
    }
    if !incoming.is_empty() {
        let recipients: HashSet<String> = incoming.iter().map(|m| m.recipient.clone()).collect();
        // Acknowledge only what is committed; on failure the peer resends after the reconnect.
        fed.store
            .receive(incoming)
            .await
            .map_err(|e| format!("cannot store incoming messages: {e}"))?;
        // Committed: watching recipients are pushed them now, like local messages.
        for user in &recipients {
            realm.hub().wake_private(user);
        }
    }
    if !posts.is_empty() {
        realm
            .post_relayed(posts)
            .await
            .map_err(|e| format!("cannot store incoming group messages: {e}"))?;
    }
    if !replica.is_empty() {
        let hub = Arc::clone(realm.hub());
        let outcome = fed
            .store
            .store_replica(
                pname,
                replica,
                peer.joining(),
                Box::new(move |m| hub.publish_message(m)),
            )
            .await
            .map_err(|e| format!("cannot store a group's messages: {e}"))?;
        // Committed: acknowledge, cumulatively per group, as the home names it.
        let suffix = format!("@{pname}");
        replies.extend(outcome.acks.into_iter().filter_map(
            |GroupCursor {
                 group: replica,
                 seq,
             }| {
                replica.strip_suffix(&suffix).map(|group| Frame::Gack {
                    group: group.to_owned(),
                    seq,
                })
            },
        ));
        if !outcome.ignored.is_empty() {
            debug!(peer = %pname, groups = ?outcome.ignored, "ignored messages of groups with no replica here");
        }
        if let Some(reason) = outcome.refused {
            warn!(peer = %pname, %reason, "refused a group message; the link ends and the home resends from what was acknowledged");
            refused = Some(format!("refused a group message: {reason}"));
        }
    }
    if !feed_acks.is_empty() {
        fed.store
            .ack_feeds(pname, feed_acks)
            .await
            .map_err(|e| format!("cannot store a group feed's cursor: {e}"))?;
        ctx.feed_room.notify_one();
    }
    for r in replies {
        link.frames
            .send(r)
            .await
            .map_err(|_| "link writer stopped".to_owned())?;
    }
    if !settled.is_empty() {
        let bounced: HashSet<String> = settled
            .iter()
            .filter_map(|s| s.bounce.as_ref().map(|b| b.recipient.clone()))
            .collect();
        fed.store
            .settle(pname, settled)
            .await
            .map_err(|e| format!("cannot settle the outbox: {e}"))?;
        room.notify_one();
        // A bounce notice is a private message to the sender: pushed like any other.
        for user in &bounced {
            realm.hub().wake_private(user);
        }
    }
    refused.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshake_slots_per_address_and_strangers_leave_room_for_peers() {
        let peer: IpAddr = "10.0.0.2".parse().unwrap();
        let mut a = Admission::new(3, 2);
        a.peers.insert(peer);
        let ip = |n: u8| IpAddr::from([10, 0, 1, n]);
        let stranger = |n: u8| Ok((ip(n), true));
        assert_eq!(a.admit(ip(1)), stranger(1));
        assert_eq!(a.admit(ip(1)), stranger(1));
        assert!(a.admit(ip(1)).is_err(), "two per address");
        assert_eq!(a.admit(ip(2)), stranger(2));
        assert!(a.admit(ip(3)).is_err(), "three strangers in all");
        assert_eq!(
            a.admit(peer),
            Ok((peer, false)),
            "a peer's address has room of its own"
        );
        assert_eq!(a.admit(peer), Ok((peer, false)));
        assert!(a.admit(peer).is_err(), "but not more than any address");
        a.release(ip(1), true);
        assert_eq!(
            a.admit(ip(3)),
            stranger(3),
            "a slot given back is free again"
        );
        a.release(peer, false);
        a.release(peer, false);
        assert!(
            !a.per_address.contains_key(&peer),
            "no entry for an address with none"
        );
    }

    #[test]
    fn an_ipv6_stranger_counts_by_its_64() {
        let mut a = Admission::new(64, 2);
        let host = |n: u16| IpAddr::from([0x2001, 0xdb8, 0, 7, 0, 0, 0, n]);
        let net: IpAddr = "2001:db8:0:7::".parse().unwrap();
        assert_eq!(a.admit(host(1)), Ok((net, true)));
        assert_eq!(a.admit(host(2)), Ok((net, true)));
        assert!(
            a.admit(host(3)).is_err(),
            "a third address of the same /64 is the same client"
        );
        assert!(
            a.admit(IpAddr::from([0x2001, 0xdb8, 0, 8, 0, 0, 0, 1]))
                .is_ok()
        );
    }

    #[test]
    fn refusals_are_logged_once_per_interval_with_a_count() {
        let mut l = LogLimit::new(Duration::from_secs(10));
        let t = Instant::now();
        assert_eq!(l.allow_at(t), Some(0));
        assert_eq!(l.allow_at(t + Duration::from_secs(1)), None);
        assert_eq!(l.allow_at(t + Duration::from_secs(9)), None);
        assert_eq!(l.allow_at(t + Duration::from_secs(10)), Some(2));
        assert_eq!(l.allow_at(t + Duration::from_secs(11)), None);
    }

    #[test]
    fn feed_window_counts_what_was_sent_and_not_acknowledged() {
        let mut f = Feeds::default();
        f.start("g".into(), 10);
        f.start("g".into(), 3);
        f.sent("g", 11, 100);
        f.sent("g", 12, 50);
        f.sent("other", 1, 7);
        assert_eq!((f.unacked, f.bytes), (2, 150), "only fed groups count");
        assert_eq!(f.ack("g", 99), Some(12), "never past what was sent");
        assert_eq!((f.unacked, f.bytes), (0, 0));
        f.sent("g", 13, 5);
        assert_eq!(f.ack("g", 11), Some(12), "never back");
        assert_eq!((f.unacked, f.bytes), (1, 5));
        assert_eq!(f.ack("nope", 1), None);
    }
}
