//! The loops that move bytes between a socket and a [`Session`]: one async, one blocking.
//!
//! Services built on [`Session`] get these for free through [`crate::Handler`]; a service with its own
//! connection loop (a zero-copy echo, a chat session that awaits storage) can still call them, or
//! follow the same rules with [`Conn`].
//!
//! Both follow the same rules so that a protocol behaves identically under every model:
//! read at most one buffer, hand it to the session, write everything it produced before reading
//! again (backpressure: a peer that does not read stops being read), close on the session's word,
//! on EOF, on the idle timeout or at shutdown, telling the session which so it can say why.
//! A close we start is a *lingering* close: we send FIN after our last bytes and read what the peer
//! still sends for a moment, because closing with unread input makes the kernel send RST, which can
//! destroy our final reply before the peer reads it.

use std::future::Future;
use std::io::{self, Read as _, Write as _};
use std::net::Shutdown;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use jaring_proto::Flow;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::WaitForCancellationFutureOwned;

use crate::service::{Busy, Handler, Service, Session};
pub use crate::service::{Conn, End};
use crate::transport::Transport;

/// How long a lingering close waits for the peer's FIN, and how much of its input it will discard.
const LINGER_TIME: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 256 * 1024;

/// Output past this size is released after it is flushed, so one burst does not pin memory.
const KEEP_OUT_CAPACITY: usize = 64 * 1024;

/// What became of a wait under a [`Watch`].
#[derive(Debug)]
pub enum Wait<T> {
    /// The awaited operation finished first.
    Ready(T),
    /// The connection was idle for its whole idle timeout.
    Idle,
    /// A request line was started and not finished within the line timeout (see
    /// [`Watch::partial`]).
    Slow,
    /// The server is shutting down.
    Shutdown,
}

/// The two clocks every connection loop must watch besides its socket: its idle timeout and the
/// server's shutdown. Any loop (the drivers here, or a service's own) wraps each wait in [`run`]
/// and calls [`touch`] on progress.
///
/// The idle timer is armed once and re-armed only when it fires early, because re-arming it on
/// every read would cost a timer-wheel update per request on the hot path.
///
/// [`run`]: Watch::run
/// [`touch`]: Watch::touch
#[derive(Debug)]
pub struct Watch {
    idle: Duration,
    last_active: Instant,
    line_timeout: Duration,
    /// When the unfinished request line must be done by, while there is one.
    line_deadline: Option<Instant>,
    timer: Pin<Box<Sleep>>,
    cancelled: Pin<Box<WaitForCancellationFutureOwned>>,
}

impl Watch {
    /// Starts watching for `conn`; the connection counts as active from now.
    pub fn new(conn: &Conn) -> Self {
        Self {
            idle: conn.idle_timeout,
            last_active: Instant::now(),
            line_timeout: conn.line_timeout,
            line_deadline: None,
            timer: Box::pin(tokio::time::sleep(conn.idle_timeout)),
            cancelled: Box::pin(conn.shutdown.clone().cancelled_owned()),
        }
    }

    /// Marks progress: the idle timeout counts from now.
    pub fn touch(&mut self) {
        self.last_active = Instant::now();
    }

    /// Says whether the peer has sent part of a request line and not its end. The line timeout
    /// counts from the first call that says so, however slowly the rest trickles in, until a
    /// call says the line is done.
    pub fn partial(&mut self, partial: bool) {
        match (partial, self.line_deadline) {
            (true, None) => {
                let deadline = Instant::now() + self.line_timeout;
                self.line_deadline = Some(deadline);
                if deadline < self.timer.deadline() {
                    self.timer.as_mut().reset(deadline);
                }
            }
            (false, Some(_)) => self.line_deadline = None,
            _ => {}
        }
    }

    /// Awaits `operation`, unless the server shuts down or the connection stays idle first.
    /// Shutdown wins a tie, so a peer that keeps the socket busy cannot delay it.
    pub async fn run<F: Future>(&mut self, operation: F) -> Wait<F::Output> {
        tokio::pin!(operation);
        loop {
            tokio::select! {
                biased;
                () = &mut self.cancelled => return Wait::Shutdown,
                output = &mut operation => return Wait::Ready(output),
                () = &mut self.timer => {
                    let now = Instant::now();
                    if self.line_deadline.is_some_and(|d| now >= d) {
                        return Wait::Slow;
                    }
                    let deadline = self.last_active + self.idle;
                    if now >= deadline {
                        return Wait::Idle;
                    }
                    let next = self.line_deadline.map_or(deadline, |d| d.min(deadline));
                    self.timer.as_mut().reset(next);
                }
            }
        }
    }
}

/// Runs one connection on the async runtime until it ends.
pub async fn drive_async<T: Transport, S: Session>(
    mut stream: T,
    mut session: S,
    ctx: &Conn,
) -> End {
    let mut buf = vec![0u8; ctx.read_buffer];
    let mut out = Vec::new();
    let idle = ctx.idle_timeout;
    let mut watch = Watch::new(ctx);

    let end = loop {
        let n = match watch.run(stream.read(&mut buf)).await {
            Wait::Shutdown => break End::Shutdown,
            Wait::Idle => break End::Idle,
            Wait::Slow => break End::SlowRequest,
            Wait::Ready(Ok(0)) => break End::Eof,
            Wait::Ready(Ok(n)) => n,
            Wait::Ready(Err(e)) => break End::Error(e),
        };
        watch.touch();
        let read_at = Instant::now();
        let counted = (session.answered(), session.refused());
        let flow = session.handle_input(&buf[..n], &mut out);
        watch.partial(session.partial());
        let wrote = out.len();
        if let Err(e) = write_out(&mut stream, &mut out, idle).await {
            break End::Error(e);
        }
        count(ctx, &session, counted, n, wrote, read_at);
        if flow == Flow::Close {
            break End::Closed;
        }
    };

    match &end {
        End::Eof => session.handle_eof(&mut out),
        End::Idle => session.handle_idle_timeout(idle, &mut out),
        End::SlowRequest => session.handle_slow_request(ctx.line_timeout, &mut out),
        End::Shutdown => {
            // Requests that already arrived get their replies: that is what "finish what is in
            // flight" means to a client that pipelined a few before we stopped.
            if let Poll::Ready(Ok(n)) = stream.read_now(&mut buf)
                && n > 0
                && session.handle_input(&buf[..n], &mut out) == Flow::Close
            {
                let _ = write_out(&mut stream, &mut out, ctx.grace).await;
                linger_async(&mut stream, &mut buf).await;
                return end;
            }
            session.handle_shutdown(&mut out);
        }
        End::Closed | End::Error(_) => {}
    }
    if !matches!(end, End::Error(_)) {
        let _ = write_out(&mut stream, &mut out, ctx.grace.min(idle)).await;
        if matches!(end, End::Eof) {
            let _ = stream.shutdown().await;
        } else {
            linger_async(&mut stream, &mut buf).await;
        }
    }
    end
}

/// Adds what one input did to the server's counters: the requests the session answered and
/// refused since `before`, the bytes read and written, and the service time since `read_at`.
fn count<S: Session>(
    ctx: &Conn,
    session: &S,
    before: (u64, u64),
    read: usize,
    written: usize,
    read_at: Instant,
) {
    let answered = session.answered().saturating_sub(before.0);
    if answered > 0 {
        ctx.counters().answered(answered, read_at.elapsed());
    }
    let refused = session.refused().saturating_sub(before.1);
    if refused > 0 {
        ctx.counters().failed(refused);
    }
    ctx.counters().moved(read as u64, written as u64);
}

/// Writes all of `out` within `limit` (and sends it on: a TLS transport's records are flushed),
/// then empties it.
pub async fn write_out<T: Transport>(
    stream: &mut T,
    out: &mut Vec<u8>,
    limit: Duration,
) -> io::Result<()> {
    if out.is_empty() {
        return Ok(());
    }
    // Nearly always the socket takes the whole reply at once; only a full send buffer pays for a timer.
    let written = stream.write_now(out)?;
    if written < out.len() || stream.holds_output() {
        let rest = async {
            stream.write_all(&out[written..]).await?;
            stream.flush().await
        };
        match tokio::time::timeout(limit, rest).await {
            Ok(result) => result?,
            Err(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "peer stopped reading",
                ));
            }
        }
    }
    out.clear();
    if out.capacity() > KEEP_OUT_CAPACITY {
        out.shrink_to(KEEP_OUT_CAPACITY);
    }
    Ok(())
}

/// Sends FIN, then reads and discards what the peer still sends, for at most a second.
pub async fn linger_async<T: Transport>(stream: &mut T, buf: &mut [u8]) {
    if stream.shutdown().await.is_err() {
        return;
    }
    let _ = tokio::time::timeout(LINGER_TIME, async {
        let mut discarded = 0;
        while discarded < LINGER_BYTES {
            match stream.read(buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => discarded += n,
            }
        }
    })
    .await;
}

/// Runs one connection on the calling OS thread, with blocking reads and writes, until it ends.
///
/// The idle timeout is the socket's receive (and send) timeout. Shutdown wakes a blocked read by
/// shutting down the socket's read side from outside, which makes the read return 0.
pub fn drive_blocking<S: Session>(
    mut stream: std::net::TcpStream,
    mut session: S,
    ctx: &Conn,
) -> End {
    let idle = ctx.idle_timeout;
    if let Err(e) = stream
        .set_read_timeout(Some(idle))
        .and_then(|()| stream.set_write_timeout(Some(idle)))
    {
        return End::Error(e);
    }
    let mut buf = vec![0u8; ctx.read_buffer];
    let mut out = Vec::new();
    let mut line = LineDeadline::default();
    let end = loop {
        let n = match line.read(&mut stream, &mut buf, ctx) {
            Ok(n) => n,
            Err(end) => break end,
        };
        let read_at = std::time::Instant::now();
        let counted = (session.answered(), session.refused());
        let flow = session.handle_input(&buf[..n], &mut out);
        if let Err(end) = line.partial(session.partial(), &stream, ctx) {
            break end;
        }
        if let Err(e) = stream.write_all(&out) {
            break End::Error(e);
        }
        count(ctx, &session, counted, n, out.len(), read_at.into());
        out.clear();
        if flow == Flow::Close {
            break End::Closed;
        }
    };
    match &end {
        End::Eof => session.handle_eof(&mut out),
        End::Idle => session.handle_idle_timeout(idle, &mut out),
        End::SlowRequest => session.handle_slow_request(ctx.line_timeout, &mut out),
        End::Shutdown => session.handle_shutdown(&mut out),
        End::Closed | End::Error(_) => {}
    }
    if !matches!(end, End::Error(_)) {
        let _ = stream.set_write_timeout(Some(ctx.grace.min(idle)));
        let _ = stream.write_all(&out);
        if matches!(end, End::Eof) {
            let _ = stream.shutdown(Shutdown::Write);
        } else {
            linger_blocking(&mut stream, &mut buf);
        }
    }
    end
}

/// The line timeout of a blocking connection loop, as [`Watch::partial`] keeps it for an async
/// one: while a request line is unfinished, reads wait no longer than its deadline.
#[derive(Debug, Default)]
pub struct LineDeadline(Option<std::time::Instant>);

impl LineDeadline {
    /// [`read_blocking`], ending with [`End::SlowRequest`] once an unfinished line's deadline
    /// passes.
    pub fn read(
        &self,
        stream: &mut std::net::TcpStream,
        buf: &mut [u8],
        conn: &Conn,
    ) -> Result<usize, End> {
        let Some(deadline) = self.0 else {
            return read_blocking(stream, buf, conn);
        };
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err(End::SlowRequest);
        }
        stream
            .set_read_timeout(Some(left.min(conn.idle_timeout)))
            .map_err(End::Error)?;
        match read_blocking(stream, buf, conn) {
            Err(End::Idle) if std::time::Instant::now() >= deadline => Err(End::SlowRequest),
            other => other,
        }
    }

    /// After input: whether the session holds an unfinished request line now.
    pub fn partial(
        &mut self,
        partial: bool,
        stream: &std::net::TcpStream,
        conn: &Conn,
    ) -> Result<(), End> {
        match (partial, self.0) {
            (true, None) => self.0 = Some(std::time::Instant::now() + conn.line_timeout),
            (false, Some(_)) => {
                self.0 = None;
                stream
                    .set_read_timeout(Some(conn.idle_timeout))
                    .map_err(End::Error)?;
            }
            _ => {}
        }
        Ok(())
    }
}

/// One blocking read for a connection thread, with the runtime's rules: `Ok(n)` is input; a read
/// of 0 is EOF, or shutdown when the server is stopping (it shuts the read side to wake us); the
/// socket's receive timeout (set to the idle timeout) is idleness; EINTR is retried.
pub fn read_blocking(
    stream: &mut std::net::TcpStream,
    buf: &mut [u8],
    conn: &Conn,
) -> Result<usize, End> {
    loop {
        if conn.shutdown.is_cancelled() {
            return Err(End::Shutdown);
        }
        return match stream.read(buf) {
            Ok(0) if conn.shutdown.is_cancelled() => Err(End::Shutdown),
            Ok(0) => Err(End::Eof),
            Ok(n) => Ok(n),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Err(End::Idle)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => Err(End::Error(e)),
        };
    }
}

/// The blocking twin of [`linger_async`]: sends FIN, then reads and discards what the peer still
/// sends, for at most a second.
pub fn linger_blocking(stream: &mut std::net::TcpStream, buf: &mut [u8]) {
    if stream.shutdown(Shutdown::Write).is_err() {
        return;
    }
    let _ = stream.set_read_timeout(Some(LINGER_TIME));
    let started = std::time::Instant::now();
    let mut discarded = 0;
    while discarded < LINGER_BYTES && started.elapsed() < LINGER_TIME {
        match stream.read(buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => discarded += n,
        }
    }
}

impl<S: Service> Handler for S {
    fn name(&self) -> &'static str {
        Service::name(self)
    }

    fn busy_reply(&self, why: Busy) -> Option<Vec<u8>> {
        Service::busy_reply(self, why)
    }

    fn read_buffer_size(&self) -> usize {
        Service::read_buffer_size(self)
    }

    async fn serve_async<T: Transport>(self: Arc<Self>, stream: T, conn: Conn) -> End {
        let session = self.session(&conn.info);
        drive_async(stream, session, &conn).await
    }

    fn serve_blocking(self: Arc<Self>, stream: std::net::TcpStream, conn: Conn) -> End {
        let session = self.session(&conn.info);
        drive_blocking(stream, session, &conn)
    }
}
