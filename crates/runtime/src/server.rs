//! [`Server`]: binds the listener, admits connections under the limit, runs each under the chosen
//! model, and shuts down gracefully.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv6Addr, Shutdown, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::config::{ConfigError, Model, ServerConfig, TlsListen, TlsMode};
use crate::driver::{Conn, End, Wait, Watch, linger_async, write_out};
use crate::service::{Busy, ConnInfo, Handler};
use crate::transport::{TLS_HANDSHAKE_RECORD, TlsTransport};

/// Stack for a connection thread under [`Model::Threads`]: the blocking driver needs little, and
/// hundreds of threads at the default 2 MiB each would be wasteful address space.
const THREAD_STACK: usize = 256 * 1024;

/// The first pause after a failed `accept` (e.g. out of file descriptors); it doubles up to a second.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(5);

/// Why a server could not start listening; each message says what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// The configuration cannot work.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The address is taken.
    #[error(
        "{addr} is already in use: another server listens there, or a client socket holds the port \
         (see the README on reserving ports); stop it or choose another --port"
    )]
    InUse {
        /// The address we tried.
        addr: SocketAddr,
    },
    /// Not allowed to bind there.
    #[error(
        "not allowed to bind {addr}: ports below 1024 need root or CAP_NET_BIND_SERVICE; choose another --port"
    )]
    Denied {
        /// The address we tried.
        addr: SocketAddr,
    },
    /// The address does not belong to this machine.
    #[error(
        "cannot bind {addr}: the address is not on this machine; use 0.0.0.0, :: or a local address"
    )]
    NotLocal {
        /// The address we tried.
        addr: SocketAddr,
    },
    /// Anything else the system refused.
    #[error("cannot listen on {addr}")]
    Other {
        /// The address we tried.
        addr: SocketAddr,
        /// What the system said.
        source: io::Error,
    },
}

/// Counters a running server keeps; cheap to read at any time, e.g. from tests, `/metrics` and
/// the lab's dashboard. Connections are counted by the runtime; requests, errors and bytes by
/// the connection loops (the drivers here count what their sessions report, a service with a
/// loop of its own counts through [`crate::Conn::stats`]).
#[derive(Debug, Default)]
pub struct Stats {
    accepted: AtomicU64,
    refused: AtomicU64,
    closed: AtomicU64,
    /// Per-request counters, spread over cache lines by connection so that connections on
    /// different cores do not fight over one line on every request.
    shards: [Shard; STATS_SHARDS],
}

/// Shards of [`Stats`]' per-request counters.
const STATS_SHARDS: usize = 16;

/// One shard of the per-request counters; a connection counts into the shard of its id.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct Shard {
    requests: AtomicU64,
    errors: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    /// Sum of the requests' service times, in µs (from the read that completed them to the
    /// write of their reply).
    service_us: AtomicU64,
}

impl Shard {
    /// `n` requests answered, the last after `service` (from the read that completed it).
    pub fn answered(&self, n: u64, service: Duration) {
        self.requests.fetch_add(n, Ordering::Relaxed);
        let us = u64::try_from(service.as_micros()).unwrap_or(u64::MAX);
        self.service_us
            .fetch_add(us.saturating_mul(n), Ordering::Relaxed);
    }

    /// `n` requests refused or failed.
    pub fn failed(&self, n: u64) {
        self.errors.fetch_add(n, Ordering::Relaxed);
    }

    /// Bytes moved: `read` from the client, `written` to it.
    pub fn moved(&self, read: u64, written: u64) {
        if read > 0 {
            self.bytes_in.fetch_add(read, Ordering::Relaxed);
        }
        if written > 0 {
            self.bytes_out.fetch_add(written, Ordering::Relaxed);
        }
    }
}

/// A copy of [`Stats`] at one instant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct StatsSnapshot {
    /// Connections admitted so far.
    pub accepted: u64,
    /// Connections refused at a limit.
    pub refused: u64,
    /// Connections open now.
    pub open: u64,
    /// Requests answered (time: replies; chat: commands; echo: chunks echoed).
    pub requests: u64,
    /// Requests refused as malformed or failed.
    pub errors: u64,
    /// Bytes read from clients.
    pub bytes_in: u64,
    /// Bytes written to clients.
    pub bytes_out: u64,
    /// Sum of the requests' service times, µs.
    pub service_us: u64,
}

impl Stats {
    /// Connections admitted so far.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    /// Connections refused because the server was at its connection limit.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Admitted connections that have ended.
    pub fn closed(&self) -> u64 {
        self.closed.load(Ordering::Relaxed)
    }

    /// Connections open right now.
    pub fn active(&self) -> u64 {
        self.accepted().saturating_sub(self.closed())
    }

    /// The counters connection `id` counts into.
    pub fn shard(&self, id: u64) -> &Shard {
        &self.shards[(id % STATS_SHARDS as u64) as usize]
    }

    /// Every counter, read now.
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            accepted: self.accepted(),
            refused: self.refused(),
            open: self.active(),
            requests: self.sum(|s| &s.requests),
            errors: self.sum(|s| &s.errors),
            bytes_in: self.sum(|s| &s.bytes_in),
            bytes_out: self.sum(|s| &s.bytes_out),
            service_us: self.sum(|s| &s.service_us),
        }
    }

    fn sum(&self, field: impl Fn(&Shard) -> &AtomicU64) -> u64 {
        self.shards
            .iter()
            .map(|s| field(s).load(Ordering::Relaxed))
            .fold(0, u64::wrapping_add)
    }
}

/// A bound, not yet serving, server.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    local_addr: SocketAddr,
    config: ServerConfig,
    stats: Arc<Stats>,
}

impl Server {
    /// Validates `config` and binds its address with SO_REUSEADDR and the configured backlog.
    ///
    /// Must be called within a tokio runtime.
    pub async fn bind(config: ServerConfig) -> Result<Self, BindError> {
        config.validate()?;
        let addr = config.listen.addr();
        let listener = bind_std(addr, config.listen.backlog)?;
        Self::from_std(listener, config)
    }

    /// Takes a listener bound earlier with [`bind_std`] (perhaps in another network namespace
    /// than the runtime's threads: `jaring lab --hosts` serves its web page on the machine's
    /// loopback while every other server runs inside mesin-1). `config`'s address is ignored.
    ///
    /// Must be called within a tokio runtime.
    pub fn from_std(
        listener: std::net::TcpListener,
        config: ServerConfig,
    ) -> Result<Self, BindError> {
        config.validate()?;
        let addr = config.listen.addr();
        let local_addr = listener
            .local_addr()
            .map_err(|source| BindError::Other { addr, source })?;
        let listener =
            TcpListener::from_std(listener).map_err(|source| BindError::Other { addr, source })?;
        Ok(Self {
            listener,
            local_addr,
            config,
            stats: Arc::default(),
        })
    }

    /// The address actually bound (with the real port when the config asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The server's counters.
    pub fn stats(&self) -> Arc<Stats> {
        Arc::clone(&self.stats)
    }

    /// Serves `service` (any [`crate::Service`], or a custom [`Handler`]) until `shutdown` is
    /// cancelled, then stops accepting (new connections are refused by the kernel), lets open
    /// connections finish within the grace period, and returns.
    pub async fn serve<S: Handler>(self, service: Arc<S>, shutdown: CancellationToken) {
        let Self {
            listener,
            local_addr,
            config,
            stats,
        } = self;
        info!(
            service = service.name(),
            addr = %local_addr,
            model = %config.model,
            max_connections = config.limits.max_connections,
            max_per_address = config.limits.per_address(),
            idle_timeout_s = config.limits.idle_timeout.as_secs(),
            line_timeout_s = config.limits.line_timeout.as_secs(),
            tls = match config.tls.as_ref().map(|t| t.mode) {
                None => "off",
                Some(TlsMode::Both) => "tls and plaintext",
                Some(TlsMode::Only) => "tls only",
            },
            "listening"
        );
        let mut acceptor = Acceptor {
            permits: Arc::new(Semaphore::new(config.limits.max_connections)),
            per_address: Arc::default(),
            tracker: TaskTracker::new(),
            threads: Arc::default(),
            next_id: 0,
            refusals: RefusalLog::default(),
            service,
            config,
            stats,
            shutdown,
        };
        acceptor.run(&listener, local_addr).await;
        drop(listener);
        acceptor.drain().await;
    }
}

/// Binds `addr` as [`Server::bind`] would (SO_REUSEADDR, `backlog`, non-blocking), outside any
/// runtime, for [`Server::from_std`].
pub fn bind_std(addr: SocketAddr, backlog: u32) -> Result<std::net::TcpListener, BindError> {
    listen_socket(addr, backlog)
        .map(Into::into)
        .map_err(|source| match source.kind() {
            io::ErrorKind::AddrInUse => BindError::InUse { addr },
            io::ErrorKind::PermissionDenied => BindError::Denied { addr },
            io::ErrorKind::AddrNotAvailable => BindError::NotLocal { addr },
            _ => BindError::Other { addr, source },
        })
}

fn listen_socket(addr: SocketAddr, backlog: u32) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    // Lets a restarted server bind while old connections of the last one sit in TIME_WAIT.
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() && addr.ip().is_unspecified() {
        // `::` should reach IPv4 clients too, whatever the system default; not fatal where unsupported.
        let _ = socket.set_only_v6(false);
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(i32::try_from(backlog).unwrap_or(i32::MAX))?;
    Ok(socket)
}

/// How much of an IPv6 address names one client: its /64, the block one host, home or phone is
/// usually given (counting /128s would let one client take 2^64 shares of any per-address limit).
pub const IPV6_PREFIX_BITS: u32 = 64;

/// The key a per-client limit counts `addr` under: an IPv4 address as it is, an IPv4-mapped IPv6
/// address (what a dual-stack listener reports) as its IPv4 address, any other IPv6 address as
/// its /[`IPV6_PREFIX_BITS`] network. The runtime's connection cap per address and the chat
/// realm's login limiter both count by it.
pub fn address_key(addr: IpAddr) -> IpAddr {
    match addr.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => {
            let mask = u128::MAX << (128 - IPV6_PREFIX_BITS);
            IpAddr::V6(Ipv6Addr::from_bits(v6.to_bits() & mask))
        }
    }
}

/// Connections open per client address (see [`address_key`]).
#[derive(Debug, Default)]
struct PerAddress(Mutex<HashMap<IpAddr, usize>>);

impl PerAddress {
    /// Counts a connection from `ip` if it has fewer than `limit`; the slot is given back when
    /// the returned guard is dropped.
    fn admit(self: &Arc<Self>, ip: IpAddr, limit: usize) -> Option<AddressSlot> {
        let key = address_key(ip);
        let mut map = lock(&self.0);
        let n = map.entry(key).or_default();
        if *n >= limit {
            return None;
        }
        *n += 1;
        Some(AddressSlot {
            map: Arc::clone(self),
            key,
        })
    }
}

/// One connection's place in its address's count.
struct AddressSlot {
    map: Arc<PerAddress>,
    key: IpAddr,
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut map = lock(&self.map.0);
        if let Some(n) = map.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.key);
            }
        }
    }
}

/// The accept loop and everything it owns.
struct Acceptor<S> {
    permits: Arc<Semaphore>,
    per_address: Arc<PerAddress>,
    tracker: TaskTracker,
    /// Connection threads' sockets, so shutdown can wake their blocked reads.
    threads: Arc<Mutex<HashMap<u64, std::net::TcpStream>>>,
    next_id: u64,
    refusals: RefusalLog,
    service: Arc<S>,
    config: ServerConfig,
    stats: Arc<Stats>,
    shutdown: CancellationToken,
}

impl<S: Handler> Acceptor<S> {
    async fn run(&mut self, listener: &TcpListener, local: SocketAddr) {
        let mut backoff = ACCEPT_BACKOFF;
        loop {
            let accepted = tokio::select! {
                biased;
                () = self.shutdown.cancelled() => return,
                accepted = listener.accept() => accepted,
            };
            let (stream, peer) = match accepted {
                Ok(pair) => {
                    backoff = ACCEPT_BACKOFF;
                    pair
                }
                Err(e) => {
                    // Out of descriptors or memory: pause rather than spin, and keep serving.
                    warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "accept failed");
                    tokio::select! {
                        () = self.shutdown.cancelled() => return,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            };
            self.next_id += 1;
            let info = ConnInfo {
                id: self.next_id,
                peer,
                local,
            };
            self.admit(stream, info).await;
        }
    }

    async fn admit(&mut self, stream: TcpStream, info: ConnInfo) {
        let conn = Conn {
            info,
            read_buffer: self.service.read_buffer_size(),
            idle_timeout: self.config.limits.idle_timeout,
            line_timeout: self.config.limits.line_timeout,
            grace: self.config.grace,
            shutdown: self.shutdown.clone(),
            stats: Arc::clone(&self.stats),
        };
        // Small request/reply lines must not wait for Nagle's algorithm.
        let _ = stream.set_nodelay(true);
        if self.config.model == Model::Iterative {
            // Served right here: nothing else is accepted until this client leaves.
            self.stats.accepted.fetch_add(1, Ordering::Relaxed);
            debug!(conn = info.id, peer = %info.peer, "connection opened");
            let service = Arc::clone(&self.service);
            let end = match &self.config.tls {
                None => service.serve_async(stream, conn).await,
                Some(tls) => {
                    let timeout = self.config.limits.handshake_timeout;
                    match accept_tls(stream, tls, timeout, &conn, &*service).await {
                        Accepted::Plain(stream) => service.serve_async(stream, conn).await,
                        Accepted::Tls(stream) => service.serve_async(stream, conn).await,
                        Accepted::Over(end) => end,
                    }
                }
            };
            self.finish(&info, &end);
            return;
        }
        let Ok(permit) = Arc::clone(&self.permits).try_acquire_owned() else {
            let limit = self.config.limits.max_connections;
            self.refuse(stream, info, Busy::Full { limit });
            return;
        };
        let per_address = self.config.limits.per_address();
        let Some(slot) = self.per_address.admit(info.peer.ip(), per_address) else {
            drop(permit);
            self.refuse(stream, info, Busy::Address { limit: per_address });
            return;
        };
        let permit = (permit, slot);
        self.stats.accepted.fetch_add(1, Ordering::Relaxed);
        debug!(conn = info.id, peer = %info.peer, "connection opened");
        let runner = Runner {
            service: Arc::clone(&self.service),
            stats: Arc::clone(&self.stats),
            threads: Arc::clone(&self.threads),
            tracker: self.tracker.clone(),
        };
        let threads = self.config.model == Model::Threads;
        match &self.config.tls {
            None if threads => runner.thread(stream, conn, permit),
            None => {
                self.tracker.spawn(async move {
                    let end = Arc::clone(&runner.service).serve_async(stream, conn).await;
                    runner.done(&info, &end, permit);
                });
            }
            Some(tls) => {
                let tls = tls.clone();
                let timeout = self.config.limits.handshake_timeout;
                self.tracker.spawn(async move {
                    let service = Arc::clone(&runner.service);
                    let end = match accept_tls(stream, &tls, timeout, &conn, &*service).await {
                        Accepted::Plain(stream) if threads => {
                            return runner.thread(stream, conn, permit);
                        }
                        Accepted::Plain(stream) => service.serve_async(stream, conn).await,
                        Accepted::Tls(stream) if threads => {
                            return runner.tls_thread(stream, conn, permit);
                        }
                        Accepted::Tls(stream) => service.serve_async(stream, conn).await,
                        Accepted::Over(end) => end,
                    };
                    runner.done(&info, &end, permit);
                });
            }
        }
    }

    /// Tells an over-limit client why, without spending a task or a buffer on it.
    fn refuse(&mut self, stream: TcpStream, info: ConnInfo, why: Busy) {
        self.stats.refused.fetch_add(1, Ordering::Relaxed);
        if let Some(reply) = self.service.busy_reply(why) {
            // A fresh socket's send buffer is empty, so one short line always fits without waiting.
            let _ = stream.try_write(&reply);
        }
        if let Ok(std_stream) = stream.into_std() {
            let _ = std_stream.shutdown(Shutdown::Write);
        }
        self.refusals.note(&info, why);
    }

    fn finish(&self, info: &ConnInfo, end: &End) {
        log_end(info, end);
        self.stats.closed.fetch_add(1, Ordering::Relaxed);
    }

    /// After the listener is closed: tell every connection, then wait for them within the grace period.
    async fn drain(self) {
        self.tracker.close();
        let open = self.stats.active();
        if open > 0 {
            info!(
                open,
                grace_ms = self.config.grace.as_millis() as u64,
                "shutting down; letting open connections finish"
            );
        }
        for stream in lock(&self.threads).values() {
            let _ = stream.shutdown(Shutdown::Read);
        }
        if tokio::time::timeout(self.config.grace, self.tracker.wait())
            .await
            .is_err()
        {
            warn!(
                still_open = self.stats.active(),
                "grace period over; closing the remaining connections"
            );
        }
        info!(service = self.service.name(), "stopped");
    }
}

/// A connection's admission: its connection-limit permit and its place in its address's count,
/// given back when the connection ends.
type Permit = (tokio::sync::OwnedSemaphorePermit, AddressSlot);

/// What runs an admitted connection, cloned into the task that finishes its TLS handshake.
struct Runner<S> {
    service: Arc<S>,
    stats: Arc<Stats>,
    threads: Arc<Mutex<HashMap<u64, std::net::TcpStream>>>,
    tracker: TaskTracker,
}

impl<S: Handler> Runner<S> {
    fn done(&self, info: &ConnInfo, end: &End, permit: Permit) {
        log_end(info, end);
        self.stats.closed.fetch_add(1, Ordering::Relaxed);
        drop(permit);
    }

    /// Runs a plaintext connection on an OS thread of its own, with blocking I/O.
    fn thread(self, stream: TcpStream, conn: Conn, permit: Permit) {
        let info = conn.info;
        let std_stream = match stream.into_std().and_then(|s| {
            s.set_nonblocking(false)?;
            Ok(s)
        }) {
            Ok(s) => s,
            Err(e) => {
                warn!(conn = info.id, peer = %info.peer, error = %e, "cannot hand connection to a thread");
                self.stats.closed.fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        if let Ok(clone) = std_stream.try_clone() {
            lock(&self.threads).insert(info.id, clone);
        }
        let token = self.tracker.token();
        let threads = Arc::clone(&self.threads);
        let stats = Arc::clone(&self.stats);
        let spawned = std::thread::Builder::new()
            .name(format!("conn-{}", info.id))
            .stack_size(THREAD_STACK)
            .spawn(move || {
                let end = Arc::clone(&self.service).serve_blocking(std_stream, conn);
                lock(&self.threads).remove(&info.id);
                self.done(&info, &end, permit);
                drop(token);
            });
        if let Err(e) = spawned {
            // The closure (and with it the socket, permit and token) is dropped on failure.
            warn!(conn = info.id, peer = %info.peer, error = %e, "cannot start a connection thread");
            lock(&threads).remove(&info.id);
            stats.closed.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Runs a TLS connection on an OS thread of its own. The TLS state machine lives in the async
    /// stream, so the thread drives the service's loop over it with `block_on`: still one thread
    /// per connection, blocked on that connection alone; shutdown reaches it through its `Conn`.
    fn tls_thread(self, stream: TlsTransport, conn: Conn, permit: Permit) {
        let info = conn.info;
        let token = self.tracker.token();
        let handle = tokio::runtime::Handle::current();
        let stats = Arc::clone(&self.stats);
        let spawned = std::thread::Builder::new()
            .name(format!("conn-{}", info.id))
            // The async loop's futures live on this stack.
            .stack_size(THREAD_STACK * 4)
            .spawn(move || {
                let end = handle.block_on(Arc::clone(&self.service).serve_async(stream, conn));
                self.done(&info, &end, permit);
                drop(token);
            });
        if let Err(e) = spawned {
            warn!(conn = info.id, peer = %info.peer, error = %e, "cannot start a connection thread");
            stats.closed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// How a connection on a TLS listener turned out.
enum Accepted {
    /// Plaintext, on a listener that takes both.
    Plain(TcpStream),
    /// A finished TLS handshake.
    Tls(TlsTransport),
    /// Over before it was served: refused, silent until the idle timeout, a failed handshake.
    Over(End),
}

/// Tells TLS from plaintext by the client's first byte (without consuming it), then finishes the
/// TLS handshake within `handshake_timeout`. Waiting for that first byte is bounded by the idle
/// timeout and ends at shutdown; it holds no buffer.
async fn accept_tls<S: Handler>(
    stream: TcpStream,
    tls: &TlsListen,
    handshake_timeout: Duration,
    conn: &Conn,
    service: &S,
) -> Accepted {
    let mut watch = Watch::new(conn);
    let mut first = [0u8; 1];
    let peeked = match watch.run(stream.peek(&mut first)).await {
        Wait::Ready(Ok(n)) => n,
        Wait::Ready(Err(e)) => return Accepted::Over(End::Error(e)),
        Wait::Idle | Wait::Slow => return Accepted::Over(End::Idle),
        Wait::Shutdown => return Accepted::Over(End::Shutdown),
    };
    if peeked == 0 || first[0] != TLS_HANDSHAKE_RECORD {
        if tls.mode == TlsMode::Both {
            return Accepted::Plain(stream);
        }
        if peeked == 0 {
            return Accepted::Over(End::Eof);
        }
        let mut stream = stream;
        let mut out = service.busy_reply(Busy::TlsRequired).unwrap_or_default();
        let _ = write_out(&mut stream, &mut out, conn.grace).await;
        linger_async(&mut stream, &mut [0u8; 1024]).await;
        debug!(conn = conn.info.id, peer = %conn.info.peer, "plaintext on a TLS-only port; refused");
        return Accepted::Over(End::Closed);
    }
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::clone(&tls.config));
    let handshake = tokio::time::timeout(handshake_timeout, acceptor.accept(stream));
    match watch.run(handshake).await {
        Wait::Ready(Ok(Ok(stream))) => Accepted::Tls(TlsTransport::new(stream)),
        Wait::Ready(Ok(Err(e))) => {
            debug!(conn = conn.info.id, peer = %conn.info.peer, error = %e, "TLS handshake failed");
            Accepted::Over(End::Error(e))
        }
        Wait::Ready(Err(_)) => Accepted::Over(End::Error(io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "TLS handshake not finished within {} s",
                handshake_timeout.as_secs()
            ),
        ))),
        Wait::Idle | Wait::Slow => Accepted::Over(End::Idle),
        Wait::Shutdown => Accepted::Over(End::Shutdown),
    }
}

fn log_end(info: &ConnInfo, end: &End) {
    match end {
        End::Error(e) => debug!(conn = info.id, peer = %info.peer, error = %e, "connection failed"),
        End::Idle => debug!(conn = info.id, peer = %info.peer, "connection closed: idle timeout"),
        other => debug!(conn = info.id, peer = %info.peer, reason = ?other, "connection closed"),
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The map stays consistent whatever panicked while holding it: every operation is one call.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Logs refusals at most once a second, so a flood of connections cannot flood the log too.
#[derive(Default)]
struct RefusalLog {
    last: Option<tokio::time::Instant>,
    unlogged: u64,
}

impl RefusalLog {
    fn note(&mut self, info: &ConnInfo, why: Busy) {
        self.unlogged += 1;
        let now = tokio::time::Instant::now();
        if self
            .last
            .is_some_and(|last| now - last < Duration::from_secs(1))
        {
            return;
        }
        warn!(
            conn = info.id,
            peer = %info.peer,
            reason = %why,
            refused = self.unlogged,
            "connection limit reached; refusing connections"
        );
        self.last = Some(now);
        self.unlogged = 0;
    }
}
