//! What a protocol implements to be served by the runtime.
//!
//! Two levels: most protocols implement [`Service`] (a factory of sans-IO [`Session`]s) and get every
//! model, limit and timeout from the runtime's drivers. A protocol that needs its own connection loop
//! (zero-copy forwarding, or awaiting storage before it replies) implements [`Handler`] directly and
//! keeps the same admission, limits and shutdown.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use jaring_proto::Flow;

use crate::transport::Transport;
use tokio_util::sync::CancellationToken;

/// Read buffer per connection unless a service asks for another size: big enough to take a burst of
/// pipelined requests in one read, small enough that ten thousand idle connections stay cheap.
pub const DEFAULT_READ_BUFFER: usize = 4096;

/// Why a connection is refused at admission; its `Display` is the sentence to tell the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Busy {
    /// The server holds its `max_connections` already.
    Full {
        /// The limit.
        limit: usize,
    },
    /// The peer's address (its /64, for IPv6) holds its share of connections already.
    Address {
        /// The limit per address.
        limit: usize,
    },
    /// The port takes TLS only and the client spoke plaintext.
    TlsRequired,
}

impl std::fmt::Display for Busy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Full { limit } => {
                write!(f, "server busy: {limit} connections open; try again later")
            }
            Self::Address { limit } => write!(
                f,
                "too many connections from your address ({limit} open); close some and try again"
            ),
            Self::TlsRequired => f.write_str(
                "this port takes TLS only; connect with TLS (jaring's clients: --tls --ca FILE)",
            ),
        }
    }
}

/// Facts about a connection that a session may want (for its replies or its logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnInfo {
    /// Process-unique connection id; every log line about the connection carries it.
    pub id: u64,
    /// The peer's address.
    pub peer: SocketAddr,
    /// Our end of the connection.
    pub local: SocketAddr,
}

/// What ended a connection.
#[derive(Debug)]
pub enum End {
    /// The session asked to close.
    Closed,
    /// The peer closed its side.
    Eof,
    /// The peer was silent too long.
    Idle,
    /// The server is shutting down.
    Shutdown,
    /// The peer started a request line and did not finish it within the line timeout.
    SlowRequest,
    /// The socket failed (reset, broken pipe, a write that timed out).
    Error(io::Error),
}

/// An admitted connection's facts and the rules it runs under.
#[derive(Debug, Clone)]
pub struct Conn {
    /// Who and where.
    pub info: ConnInfo,
    /// Bytes to read at a time.
    pub read_buffer: usize,
    /// Close the connection after this long without input (or without the peer taking our output).
    pub idle_timeout: Duration,
    /// Close the connection when a request line is not finished this long after its first byte.
    pub line_timeout: Duration,
    /// At shutdown, how long final writes may take.
    pub grace: Duration,
    /// Cancelled when the server shuts down; a connection loop must watch it.
    pub shutdown: CancellationToken,
    /// The server's counters: a loop of its own counts its requests, errors and bytes in
    /// [`Conn::counters`].
    pub stats: Arc<crate::Stats>,
}

impl Conn {
    /// Where this connection counts its requests, errors and bytes.
    pub fn counters(&self) -> &crate::Shard {
        self.stats.shard(self.info.id)
    }
}

/// The per-connection, sans-IO state of a protocol: bytes in, bytes out.
///
/// Every method appends what must be sent to `out`; the driver writes it, in order, before reading
/// more, which is what bounds a connection's memory: a peer that does not read our replies stops
/// being read from.
pub trait Session: Send + 'static {
    /// The peer sent `input`. Returning [`Flow::Close`] flushes `out` and closes the connection.
    fn handle_input(&mut self, input: &[u8], out: &mut Vec<u8>) -> Flow;

    /// The peer closed its sending side.
    fn handle_eof(&mut self, _out: &mut Vec<u8>) {}

    /// The peer was silent for `idle`; the connection closes after this.
    fn handle_idle_timeout(&mut self, _idle: Duration, _out: &mut Vec<u8>) {}

    /// Whether part of a request has arrived and not its end: the runtime then closes the
    /// connection if the request is not complete within the line timeout.
    fn partial(&self) -> bool {
        false
    }

    /// Requests answered so far on this connection (the drivers add what each input adds to the
    /// server's counters); 0 for a protocol without requests.
    fn answered(&self) -> u64 {
        0
    }

    /// Requests refused as malformed so far on this connection.
    fn refused(&self) -> u64 {
        0
    }

    /// A request was started and not finished within `limit`; the connection closes after this.
    fn handle_slow_request(&mut self, _limit: Duration, _out: &mut Vec<u8>) {}

    /// The server is shutting down; the connection closes after this.
    fn handle_shutdown(&mut self, _out: &mut Vec<u8>) {}
}

/// A protocol the runtime can serve: a factory of sessions plus the few choices that differ per
/// protocol.
pub trait Service: Send + Sync + 'static {
    /// The session type, one per connection.
    type Session: Session;

    /// A short name for logs (`time`, `echo`, …).
    fn name(&self) -> &'static str;

    /// Starts a session for a newly admitted connection.
    fn session(&self, conn: &ConnInfo) -> Self::Session;

    /// What to send a connection refused at admission (`why`), before closing it. `None` closes
    /// without a word (right for protocols where any bytes would be taken as data).
    fn busy_reply(&self, _why: Busy) -> Option<Vec<u8>> {
        None
    }

    /// Bytes read from the socket at a time.
    fn read_buffer_size(&self) -> usize {
        DEFAULT_READ_BUFFER
    }
}

/// What the server hands each admitted connection to. Every [`Service`] is a `Handler` through the
/// runtime's drivers; implement it directly only for a connection loop of your own.
///
/// Either method must end the connection when `conn.shutdown` is cancelled (within `conn.grace`) and
/// after `conn.idle_timeout` without progress, and must bound its memory whatever the peer does.
pub trait Handler: Send + Sync + 'static {
    /// A short name for logs (`time`, `echo`, …).
    fn name(&self) -> &'static str;

    /// What to send a connection refused at the connection limit, before closing it.
    fn busy_reply(&self, why: Busy) -> Option<Vec<u8>>;

    /// Bytes a connection reads at a time.
    fn read_buffer_size(&self) -> usize;

    /// Serves one connection on the async runtime ([`crate::Model::Async`] and
    /// [`crate::Model::Iterative`]).
    /// Plain TCP and TLS connections both come here, each loop compiled for its transport.
    fn serve_async<T: Transport>(
        self: Arc<Self>,
        stream: T,
        conn: Conn,
    ) -> impl Future<Output = End> + Send;

    /// Serves one connection on its own OS thread with blocking I/O ([`crate::Model::Threads`]).
    /// At shutdown the server shuts down the socket's read side, so a blocked read returns 0.
    fn serve_blocking(self: Arc<Self>, stream: std::net::TcpStream, conn: Conn) -> End;
}
