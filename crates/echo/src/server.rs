//! The echo server: a [`Handler`] with its own connection loop, reading and writing concurrently
//! through one bounded buffer, or (opt-in) moving bytes without passing through user space.
//!
//! Every connection starts on a small buffer: an idle or chatty connection costs
//! [`DEFAULT_SMALL_BUFFER`] bytes and no extra descriptors. A read that fills the buffer marks the
//! connection as a stream; once its buffer has drained it moves to a buffer of
//! [`EchoConfig::stream_buffer`] bytes, or, with [`EchoConfig::zero_copy`], to a kernel pipe and
//! `splice(2)` (Linux). Either way a connection holds at most one buffer (or pipe) of data, and
//! reads only while there is room in it: a peer that sends without reading fills its buffer, then
//! the kernel's, and then its own writes block. Nothing grows with the size of the stream.

use std::io::{self, Read as _, Write as _};
use std::net::Shutdown;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use jaring_runtime::driver::{linger_async, linger_blocking};
use jaring_runtime::{Conn, End, Handler, Transport, Wait, Watch};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tracing::debug;

use crate::pump::{Drain, Fill, Pump};

/// The port the labs' echo server listens on.
pub const DEFAULT_PORT: u16 = 10000;

/// The port of echo's TLS listener (`--tls-port`), beside the plaintext one.
pub const DEFAULT_TLS_PORT: u16 = 10443;

/// The port the labs use for file echo (`jaring lab` listens on both).
pub const FILE_ECHO_PORT: u16 = 32444;

/// Buffer every connection starts with. Ten thousand idle connections cost 160 MiB at this size;
/// a read that fills it moves the connection to the stream buffer.
pub const DEFAULT_SMALL_BUFFER: usize = 16 * 1024;

/// Most a streaming connection holds: its pipe (splice path) or buffer (copy path). When it is
/// full the connection stops reading until the peer takes some of its echo, so this is also the
/// per-connection memory bound. Large enough that one stream moves in few, large system calls.
pub const DEFAULT_STREAM_BUFFER: usize = 1024 * 1024;

/// Most a TLS echo connection holds: a read that fills its small buffer grows it to this.
pub const TLS_STREAM_BUFFER: usize = 64 * 1024;

/// Buffer of a connection served by its own thread (`--model threads`), which copies.
pub const THREAD_BUFFER: usize = 64 * 1024;

/// How the echo server moves bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EchoConfig {
    /// Bytes a streaming connection may hold (see [`DEFAULT_STREAM_BUFFER`]).
    pub stream_buffer: usize,
    /// Use `splice(2)` through a pipe for streams where the system has it (Linux). On by
    /// default because measurement says so: over loopback on Linux 6.18 it moved one stream
    /// 1.30x and 50 streams 1.14x faster than the copy loop with server and load generator on
    /// a core each, on about half the server CPU per byte (bench/results/2026-11-22-0633-echo.md;
    /// `bench/echo/run.sh` keeps measuring both). Small round trips never use it: only a
    /// connection that fills its small buffer is moved to the stream path.
    pub zero_copy: bool,
}

impl Default for EchoConfig {
    fn default() -> Self {
        Self {
            stream_buffer: DEFAULT_STREAM_BUFFER,
            zero_copy: true,
        }
    }
}

/// Counters the echo server keeps; tests and operators read them while it runs.
#[derive(Debug, Default)]
pub struct EchoStats {
    held: AtomicU64,
    peak_held: AtomicU64,
    echoed: AtomicU64,
    spliced: AtomicU64,
    copy_fallbacks: AtomicU64,
}

impl EchoStats {
    /// Bytes read from peers and not yet written back, over all connections, right now.
    pub fn held(&self) -> u64 {
        self.held.load(Ordering::Relaxed)
    }

    /// The most one connection has held at once since the server started.
    pub fn peak_held_per_connection(&self) -> u64 {
        self.peak_held.load(Ordering::Relaxed)
    }

    /// Bytes echoed back so far.
    pub fn echoed(&self) -> u64 {
        self.echoed.load(Ordering::Relaxed)
    }

    /// Connections that moved to the zero-copy path.
    pub fn spliced_connections(&self) -> u64 {
        self.spliced.load(Ordering::Relaxed)
    }

    /// Spliced connections that later fell back to copying, because the kernel would not splice
    /// their data into an empty pipe. Should stay at zero: each one streams at copy speed.
    pub fn copy_fallbacks(&self) -> u64 {
        self.copy_fallbacks.load(Ordering::Relaxed)
    }

    fn took(&self, n: usize, now_held: usize) {
        self.held.fetch_add(n as u64, Ordering::Relaxed);
        self.peak_held.fetch_max(now_held as u64, Ordering::Relaxed);
    }

    fn gave(&self, n: usize) {
        self.held.fetch_sub(n as u64, Ordering::Relaxed);
        self.echoed.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// The echo service, served by [`jaring_runtime::Server`] under any model.
#[derive(Debug, Default)]
pub struct EchoServer {
    config: EchoConfig,
    stats: Arc<EchoStats>,
}

impl EchoServer {
    /// An echo server moving bytes as `config` says.
    pub fn new(config: EchoConfig) -> Self {
        Self {
            config,
            stats: Arc::default(),
        }
    }

    /// The server's counters.
    pub fn stats(&self) -> Arc<EchoStats> {
        Arc::clone(&self.stats)
    }
}

impl Handler for EchoServer {
    fn name(&self) -> &'static str {
        "echo"
    }

    fn busy_reply(&self, _why: jaring_runtime::Busy) -> Option<Vec<u8>> {
        // Any bytes we sent would be taken for the echo of what the client sends.
        None
    }

    fn read_buffer_size(&self) -> usize {
        DEFAULT_SMALL_BUFFER
    }

    async fn serve_async<T: Transport>(self: Arc<Self>, stream: T, conn: Conn) -> End {
        match stream.into_tcp() {
            Ok(tcp) => self.serve_tcp(tcp, conn).await,
            Err(mut other) => {
                let end = serve_stream(&mut other, &conn, &self.stats).await;
                finish(&mut other, &end).await;
                end
            }
        }
    }

    fn serve_blocking(self: Arc<Self>, stream: std::net::TcpStream, conn: Conn) -> End {
        serve_blocking(stream, &conn, &self.stats)
    }
}

impl EchoServer {
    /// Plain TCP: the pump, with its `splice` path.
    async fn serve_tcp(&self, mut stream: TcpStream, conn: Conn) -> End {
        let mut conn_loop = ConnLoop {
            pump: Pump::buffer(conn.read_buffer.max(1)),
            streaming: false,
            upgraded: false,
            config: &self.config,
            stats: &self.stats,
        };
        let end = conn_loop.run(&stream, &conn).await;
        // Whatever it still held is gone with the connection.
        self.stats
            .held
            .fetch_sub(conn_loop.pump.pending() as u64, Ordering::Relaxed);
        finish(&mut stream, &end).await;
        end
    }
}

/// Closes a connection as its end asks: our FIN after a half-close (everything came back), a
/// lingering close when we end it.
async fn finish<T: Transport>(stream: &mut T, end: &End) {
    match end {
        End::Eof => {
            let _ = tokio::io::AsyncWriteExt::shutdown(stream).await;
        }
        End::Idle | End::SlowRequest | End::Shutdown | End::Closed => {
            let mut scratch = [0u8; 4096];
            linger_async(stream, &mut scratch).await;
        }
        End::Error(_) => {}
    }
}

/// Echo over a transport other than plain TCP (TLS): read what is there, write it all back, and
/// again. One buffer bounds the connection as on the TCP path, and backpressure is the same: a
/// peer that does not read its echo stops being read from. It grows to [`TLS_STREAM_BUFFER`]
/// once a read fills it, so a stream moves a few TLS records per call.
async fn serve_stream<T: Transport>(stream: &mut T, conn: &Conn, stats: &EchoStats) -> End {
    let mut watch = Watch::new(conn);
    let mut buf = vec![0u8; DEFAULT_SMALL_BUFFER];
    loop {
        let n = match watch.run(stream.read(&mut buf)).await {
            Wait::Ready(Ok(0)) => return End::Eof,
            Wait::Ready(Ok(n)) => n,
            Wait::Ready(Err(e)) => return End::Error(e),
            Wait::Idle => return End::Idle,
            Wait::Slow => return End::SlowRequest,
            Wait::Shutdown => return End::Shutdown,
        };
        stats.took(n, n);
        watch.touch();
        // Written piece by piece so that a shutdown in the middle knows what is still owed: a
        // write either took its bytes or did not, so nothing is sent twice.
        let mut pos = 0;
        let mut stopping = None;
        while pos < n || stream.holds_output() {
            let step = async {
                if pos < n {
                    stream.write(&buf[pos..n]).await
                } else {
                    stream.flush().await.map(|()| 0)
                }
            };
            let wrote = match stopping {
                Some(deadline) => match tokio::time::timeout_at(deadline, step).await {
                    Ok(result) => result,
                    Err(_) => return End::Shutdown,
                },
                None => match watch.run(step).await {
                    Wait::Ready(result) => result,
                    Wait::Idle => return End::Idle,
                    Wait::Slow => return End::SlowRequest,
                    Wait::Shutdown => {
                        // What we took is given back within the grace period.
                        let grace = conn.grace.min(conn.idle_timeout);
                        stopping = Some(tokio::time::Instant::now() + grace);
                        continue;
                    }
                },
            };
            match wrote {
                Ok(0) if pos < n => return End::Error(io::ErrorKind::WriteZero.into()),
                Ok(k) => pos += k,
                Err(e) => return End::Error(e),
            }
        }
        if stopping.is_some() {
            stats.gave(n);
            return End::Shutdown;
        }
        stats.gave(n);
        watch.touch();
        if n == buf.len() && buf.len() < TLS_STREAM_BUFFER {
            buf.resize(TLS_STREAM_BUFFER, 0);
        }
    }
}

/// One async connection's state.
struct ConnLoop<'a> {
    pump: Pump,
    /// A read filled the small buffer: this peer streams, and deserves the big path.
    streaming: bool,
    upgraded: bool,
    config: &'a EchoConfig,
    stats: &'a EchoStats,
}

impl ConnLoop<'_> {
    /// Moves bytes until EOF (after echoing everything), shutdown (after flushing within the
    /// grace period), the idle timeout or an error.
    async fn run(&mut self, stream: &TcpStream, conn: &Conn) -> End {
        // Idle timeout and shutdown, shared with every connection loop of the runtime.
        let mut watch = Watch::new(conn);
        let mut eof = false;
        // At shutdown: stop reading, and give what we hold back until this instant.
        let mut stopping: Option<Instant> = None;
        // Set when the socket said "not now"; tokio has then cleared its readiness, so waiting
        // for readiness is correct. Never wait on a direction that has not said so, or we spin.
        let mut read_blocked = false;
        let mut write_blocked = false;

        loop {
            let mut progressed = false;
            if !eof && stopping.is_none() && !read_blocked && self.pump.has_room() {
                match self.pump.fill(stream) {
                    Ok(Fill::Got(n)) => {
                        progressed = true;
                        self.stats.took(n, self.pump.pending());
                        if n >= self.pump.capacity() {
                            self.streaming = true;
                        }
                    }
                    Ok(Fill::Eof) => eof = true,
                    Ok(Fill::Blocked) => read_blocked = true,
                    Ok(Fill::Full) => {}
                    Ok(Fill::Stuck) => {
                        debug!(conn = conn.info.id, "splice takes no data; copying instead");
                        self.stats.copy_fallbacks.fetch_add(1, Ordering::Relaxed);
                        self.pump =
                            Pump::buffer(self.config.stream_buffer.max(DEFAULT_SMALL_BUFFER));
                        progressed = true;
                    }
                    Err(e) => return End::Error(e),
                }
            }
            if self.pump.pending() > 0 && !write_blocked {
                match self.pump.drain(stream) {
                    Ok(Drain::Sent(n)) => {
                        progressed = true;
                        self.stats.gave(n);
                    }
                    Ok(Drain::Blocked) => write_blocked = true,
                    Err(e) => return End::Error(e),
                }
            }
            if self.pump.pending() == 0 {
                if eof {
                    return End::Eof;
                }
                if stopping.is_some() {
                    return End::Shutdown;
                }
                if self.streaming && !self.upgraded {
                    self.upgrade(conn);
                }
            }
            if progressed {
                watch.touch();
                // A stream that never blocks must still let other connections run.
                tokio::task::coop::consume_budget().await;
                continue;
            }

            let want_read = read_blocked && !eof && stopping.is_none() && self.pump.has_room();
            let ready = ready(stream, want_read, write_blocked);
            let ready = match stopping {
                None => match watch.run(ready).await {
                    Wait::Ready(ready) => ready,
                    Wait::Idle => return End::Idle,
                    // Echo has no requests to finish: it never marks a line partial.
                    Wait::Slow => return End::SlowRequest,
                    Wait::Shutdown => {
                        stopping = Some(Instant::now() + conn.grace.min(conn.idle_timeout));
                        continue;
                    }
                },
                Some(deadline) => match tokio::time::timeout_at(deadline, ready).await {
                    Ok(ready) => ready,
                    Err(_) => {
                        debug!(
                            conn = conn.info.id,
                            unsent = self.pump.pending(),
                            "grace period over"
                        );
                        return End::Shutdown;
                    }
                },
            };
            match ready {
                Ok(Ready::Read) => read_blocked = false,
                Ok(Ready::Write) => write_blocked = false,
                Err(e) => return End::Error(e),
            }
        }
    }

    /// Moves a streaming connection to its big path; called only when its buffer is empty.
    fn upgrade(&mut self, conn: &Conn) {
        self.upgraded = true;
        let size = self.config.stream_buffer.max(DEFAULT_SMALL_BUFFER);
        if self.config.zero_copy {
            match Pump::pipe(size) {
                Ok(pump) => {
                    debug!(
                        conn = conn.info.id,
                        pipe = pump.capacity(),
                        "streaming with splice"
                    );
                    self.pump = pump;
                    self.stats.spliced.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                Err(e) => {
                    debug!(conn = conn.info.id, error = %e, "no pipe for splice; copying instead");
                }
            }
        }
        self.pump = Pump::buffer(size);
    }
}

/// Which direction became ready.
enum Ready {
    Read,
    Write,
}

/// Waits until the socket is readable (if `read`) or writable (if `write`), whichever comes first.
async fn ready(stream: &TcpStream, read: bool, write: bool) -> io::Result<Ready> {
    tokio::select! {
        biased;
        w = stream.writable(), if write => w.map(|()| Ready::Write),
        r = stream.readable(), if read => r.map(|()| Ready::Read),
        // Nothing to wait for cannot happen (every pass that makes no progress blocks a
        // direction), but if it did, trying again beats waiting for ever.
        () = std::future::ready(()), if !read && !write => Ok(Ready::Read),
    }
}

/// The `--model threads` loop: blocking reads and writes through one buffer.
///
/// The idle timeout is the socket's receive and send timeout, so a peer that neither sends nor
/// reads is dropped after it; at shutdown the server shuts our read side, the read returns 0, and
/// what was read is written back before the FIN.
fn serve_blocking(mut stream: std::net::TcpStream, conn: &Conn, stats: &EchoStats) -> End {
    let idle = conn.idle_timeout;
    if let Err(e) = stream
        .set_read_timeout(Some(idle))
        .and_then(|()| stream.set_write_timeout(Some(idle)))
    {
        return End::Error(e);
    }
    let mut buf = vec![0u8; THREAD_BUFFER];
    let end = loop {
        let n = match stream.read(&mut buf) {
            Ok(0) if conn.shutdown.is_cancelled() => break End::Shutdown,
            Ok(0) => break End::Eof,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                break End::Idle;
            }
            Err(e) => break End::Error(e),
        };
        stats.took(n, n);
        let written = stream.write_all(&buf[..n]);
        stats.gave(n);
        if let Err(e) = written {
            break End::Error(e);
        }
    };
    match end {
        End::Eof => {
            let _ = stream.shutdown(Shutdown::Write);
        }
        End::Error(_) => {}
        _ => {
            // FIN, then drain briefly, so unread input does not turn our close into a reset.
            linger_blocking(&mut stream, &mut buf);
        }
    }
    end
}
