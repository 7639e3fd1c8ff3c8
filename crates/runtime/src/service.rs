//! What a protocol implements to be served by the runtime.

use std::net::SocketAddr;
use std::time::Duration;

use jaring_proto::Flow;

/// Read buffer per connection unless a service asks for another size: big enough to take a burst of
/// pipelined requests in one read, small enough that ten thousand idle connections stay cheap.
pub const DEFAULT_READ_BUFFER: usize = 4096;

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

    /// What to send a connection refused because `limit` connections are open, before closing it.
    /// `None` closes without a word (right for protocols where any bytes would be taken as data).
    fn busy_reply(&self, _limit: usize) -> Option<Vec<u8>> {
        None
    }

    /// Bytes read from the socket at a time.
    fn read_buffer_size(&self) -> usize {
        DEFAULT_READ_BUFFER
    }
}
