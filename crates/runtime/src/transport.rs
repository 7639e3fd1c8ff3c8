//! The transport seam: what a connection loop reads from and writes to.
//!
//! A service's connection loop is written once, over [`Transport`], and runs unchanged on plain
//! TCP ([`tokio::net::TcpStream`]) and on TLS ([`TlsTransport`]); a later transport (a WebSocket
//! gateway) implements the same trait. The methods beyond [`AsyncRead`] and [`AsyncWrite`] are the
//! ones the fast paths need: wait for input without holding a buffer, read or write what goes
//! *now* without a waker, and say whether written bytes are still held back (TLS records not yet
//! on the wire). Plain TCP implements them with single syscalls, so the seam costs the plaintext
//! path nothing (each loop is monomorphised per transport).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A byte stream a connection loop runs on. See the [module docs](self).
pub trait Transport: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// Ready when a read would not wait: input is there, the peer closed, or the stream failed.
    /// Holds no buffer while it waits (an idle connection then costs no read buffer).
    fn poll_read_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;

    /// Reads what is there now into `buf`, without waiting: `Pending` when nothing is.
    fn read_now(&mut self, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        let mut buf = ReadBuf::new(buf);
        // A no-op waker: on `Pending` the caller waits with `poll_read_ready`, which registers
        // its own.
        let mut cx = Context::from_waker(Waker::noop());
        Pin::new(self)
            .poll_read(&mut cx, &mut buf)
            .map_ok(|()| buf.filled().len())
    }

    /// Writes as much of `buf` as goes without waiting and sends it on; `Ok(0)` when nothing
    /// went. What a transport accepted but could not send yet is announced by
    /// [`Transport::holds_output`].
    fn write_now(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut cx = Context::from_waker(Waker::noop());
        let n = match Pin::new(&mut *self).poll_write(&mut cx, buf) {
            Poll::Ready(Ok(n)) => n,
            Poll::Ready(Err(e)) => return Err(e),
            Poll::Pending => 0,
        };
        match Pin::new(self).poll_flush(&mut cx) {
            Poll::Ready(Err(e)) => Err(e),
            _ => Ok(n),
        }
    }

    /// Whether bytes written are held back, waiting for a flush (TLS records the socket did not
    /// take yet). Plain TCP never holds any.
    fn holds_output(&self) -> bool {
        false
    }

    /// The TCP connection underneath.
    fn tcp(&self) -> &TcpStream;

    /// The plain TCP stream, when this is one (for loops with a zero-copy path, e.g. echo's
    /// `splice`); otherwise the transport back.
    fn into_tcp(self) -> Result<TcpStream, Self>
    where
        Self: Sized,
    {
        Err(self)
    }

    /// `"tcp"`, `"tls"`, …: for logs.
    fn kind(&self) -> &'static str;
}

impl Transport for TcpStream {
    fn poll_read_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        TcpStream::poll_read_ready(self, cx)
    }

    fn write_now(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.try_write(buf) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
            other => other,
        }
    }

    fn tcp(&self) -> &TcpStream {
        self
    }

    fn into_tcp(self) -> Result<TcpStream, Self> {
        Ok(self)
    }

    fn kind(&self) -> &'static str {
        "tcp"
    }
}

/// Waits until a read on `stream` would not wait (see [`Transport::poll_read_ready`]).
pub async fn readable<T: Transport>(stream: &mut T) -> io::Result<()> {
    std::future::poll_fn(|cx| stream.poll_read_ready(cx)).await
}

/// A server-side TLS connection over TCP, after its handshake.
///
/// A peer that closes its TCP side without TLS's `close_notify` reads as EOF here, as it would on
/// plain TCP: the line protocols served over it frame their own messages, so a truncation cannot
/// pass an unfinished request off as a finished one.
#[derive(Debug)]
// Boxed: the TLS state is over a kilobyte, and the futures that hold a transport stay small.
pub struct TlsTransport(Box<tokio_rustls::server::TlsStream<TcpStream>>);

impl TlsTransport {
    /// Wraps a finished server handshake.
    pub fn new(stream: tokio_rustls::server::TlsStream<TcpStream>) -> Self {
        Self(Box::new(stream))
    }

    /// The TLS session (protocol version, cipher suite, keying material exporter, …).
    pub fn session(&self) -> &rustls::ServerConnection {
        self.0.get_ref().1
    }
}

impl AsyncRead for TlsTransport {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match Pin::new(&mut *self.0).poll_read(cx, buf) {
            Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => Poll::Ready(Ok(())),
            other => other,
        }
    }
}

impl AsyncWrite for TlsTransport {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_shutdown(cx)
    }
}

impl Transport for TlsTransport {
    fn poll_read_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let (tcp, session) = self.0.get_mut();
        // Plaintext rustls already decrypted (a read smaller than a record leaves the rest
        // there), or a close it already saw, will not make the socket readable again.
        match session.process_new_packets() {
            Ok(state) if state.plaintext_bytes_to_read() > 0 || state.peer_has_closed() => {
                return Poll::Ready(Ok(()));
            }
            Ok(_) => {}
            // The read reports it.
            Err(_) => return Poll::Ready(Ok(())),
        }
        tcp.poll_read_ready(cx)
    }

    fn holds_output(&self) -> bool {
        self.0.get_ref().1.wants_write()
    }

    fn tcp(&self) -> &TcpStream {
        self.0.get_ref().0
    }

    fn kind(&self) -> &'static str {
        "tls"
    }
}

/// The first byte of every TLS connection: a handshake record's content type. No request of the
/// line protocols served on a shared port (time, chat) starts with it, so a server can tell the
/// two apart by the first byte a client sends.
pub const TLS_HANDSHAKE_RECORD: u8 = 0x16;
