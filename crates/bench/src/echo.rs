//! ECHO workloads: `stream` (each connection sends without pause while reading the echo back: the
//! throughput of one or many streams) and `round-trip` (send a message, wait for all of it to come
//! back, repeat: round trips per second and their latency). Both speak TLS when the options
//! say so (echo serves TLS on a port of its own); plaintext keeps its zero-copy paths.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use jaring_runtime::ClientStream;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::engine::{self, Clock, LoadOptions, Report, Throughput, Worker};
use crate::net::{REQUEST_TIMEOUT, Tls, io_kind};

/// Bytes per write in `stream` mode unless `--size` says otherwise: large writes, few syscalls.
pub const DEFAULT_STREAM_SIZE: usize = 128 * 1024;

/// Message size in `round-trip` mode unless `--size` says otherwise: the 1 KiB of the targets.
pub const DEFAULT_ROUND_TRIP_SIZE: usize = 1024;

/// Largest `--size`: each connection holds two buffers of it.
pub const MAX_SIZE: usize = 16 * 1024 * 1024;

/// Which ECHO workload to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Send continuously and read the echo concurrently; a "request" is `size` bytes echoed.
    Stream,
    /// Send `size` bytes, read them all back, repeat.
    RoundTrip,
}

impl Mode {
    /// The mode's name on the command line and in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stream => "stream",
            Self::RoundTrip => "round-trip",
        }
    }

    /// The size used when none is given.
    pub fn default_size(self) -> usize {
        match self {
            Self::Stream => DEFAULT_STREAM_SIZE,
            Self::RoundTrip => DEFAULT_ROUND_TRIP_SIZE,
        }
    }
}

/// Runs the ECHO workload against `target` with messages (or writes) of `size` bytes, and reports
/// the bytes echoed in [`Report::throughput`].
pub async fn run(target: SocketAddr, mode: Mode, size: usize, opts: &LoadOptions) -> Report {
    let size = size.clamp(1, MAX_SIZE);
    let echoed = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&echoed);
    let mut report = engine::run(
        "echo",
        mode.as_str(),
        &target.to_string(),
        opts,
        move |_, worker| {
            let echoed = Arc::clone(&counter);
            let tls = opts.tls.clone();
            async move {
                let (worker, bytes) = match (mode, tls) {
                    (Mode::Stream, None) => stream(target, size, worker).await,
                    (Mode::Stream, Some(tls)) => stream_tls(target, &tls, size, worker).await,
                    (Mode::RoundTrip, tls) => round_trips(target, tls.as_ref(), size, worker).await,
                };
                echoed.fetch_add(bytes, Ordering::Relaxed);
                worker
            }
        },
    )
    .await;
    report.throughput = Some(Throughput::new(
        echoed.load(Ordering::Relaxed),
        report.duration_s,
    ));
    report
}

async fn stream(target: SocketAddr, size: usize, mut w: Worker) -> (Worker, u64) {
    let clock = w.clock();
    let block = vec![0x5au8; size];
    let mut sink = Sink::new();
    let mut echoed = 0u64;
    while !w.done() {
        let Some(stream) = w.connect(target).await else {
            continue;
        };
        // Both directions work on a shared `&TcpStream` through readiness, so one task drives both.
        // Each checks the clock itself: `timeout_at` only fires while its future waits, and a
        // busy stream never waits, so the loops ran on past the deadline (and the worker was
        // aborted a second later with its count lost: one 50-stream run in three reported 1-6
        // Gbit/s instead of 30).
        let send = async {
            let mut source = Source::new(&block);
            loop {
                if clock.over() {
                    return Ok(());
                }
                match clock.until(stream.writable()).await {
                    None => return Ok(()),
                    Some(Err(e)) => return Err(io_kind("write", &e)),
                    Some(Ok(())) => {}
                }
                match source.send(&stream) {
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(e) => return Err(io_kind("write", &e)),
                }
                // Let the receiving half run after every write. Else, while the socket stays
                // writable, this loop writes until tokio's budget runs out (128 writes, 16 MiB)
                // before the echo is read once: against a server that echoes as fast as it
                // reads, the echo piled up past our receive buffer, the kernel dropped it, and
                // the stream sat out retransmission timeouts (a third of one-stream runs fell to
                // 7-12 Gbit/s, RcvPruned in the hundreds).
                tokio::task::yield_now().await;
            }
        };
        let mut echo = PlainEcho {
            sink: &mut sink,
            stream: &stream,
        };
        let receive = receive(&mut echo, size, &clock, &mut w, &mut echoed);
        let (sent, received) = tokio::join!(send, receive);
        if let Err(kind) = received.and(sent) {
            w.error_pause(kind).await;
        }
    }
    (w, echoed)
}

/// Stream mode's receiving half, on either transport: counts the echo as it arrives, one
/// "request" per `size` bytes (its latency how long the block took), until the run ends or
/// the connection fails; adds the bytes echoed within the run to `echoed`. Generic, so each
/// transport gets a loop of its own.
async fn receive(
    echo: &mut impl Echo,
    size: usize,
    clock: &Clock,
    w: &mut Worker,
    echoed: &mut u64,
) -> Result<(), String> {
    let mut since_block = 0;
    let mut t0 = Instant::now();
    loop {
        let read = tokio::time::timeout(REQUEST_TIMEOUT, echo.take());
        let n = match clock.until(read).await {
            None => return Ok(()),
            Some(Err(_)) => return Err("echo timeout".to_owned()),
            Some(Ok(Ok(0))) => return Err("closed by server".to_owned()),
            Some(Ok(Ok(n))) => n,
            Some(Ok(Err(e))) => return Err(io_kind("read", &e)),
        };
        if clock.over() {
            // Only what came back within the run counts.
            return Ok(());
        }
        *echoed += n as u64;
        since_block += n;
        while since_block >= size {
            since_block -= size;
            w.record(t0.elapsed());
            t0 = Instant::now();
        }
    }
}

/// Where stream mode reads the echo from.
trait Echo {
    /// Waits for echo bytes and takes them; returns how many (0 at EOF).
    fn take(&mut self) -> impl Future<Output = io::Result<usize>> + Send;
}

/// Plaintext: the socket, through the [`Sink`] (the bytes never enter the process on Linux).
struct PlainEcho<'a> {
    sink: &'a mut Sink,
    stream: &'a TcpStream,
}

impl Echo for PlainEcho<'_> {
    fn take(&mut self) -> impl Future<Output = io::Result<usize>> + Send {
        self.sink.take(self.stream)
    }
}

/// TLS: the session's read half, into a buffer (the record layer needs the bytes).
struct TlsEcho<'a, R> {
    reader: R,
    buf: &'a mut [u8],
}

impl<R: AsyncRead + Unpin + Send> Echo for TlsEcho<'_, R> {
    fn take(&mut self) -> impl Future<Output = io::Result<usize>> + Send {
        self.reader.read(self.buf)
    }
}

/// What stream mode sends: the same block of bytes over and over. On Linux they never pass through
/// the process either: the block sits once in a pipe, `tee(2)` hands its pages to a second pipe
/// without copying them, and `splice(2)` gives those to the socket. Writing it from a buffer cost
/// the generator's core a copy of every byte (40% of its time in `_copy_from_iter`), and with a
/// server fast enough that core was the limit of the measurement, not the server. Where pipes
/// are not to be had (not Linux, a `--size` above the system's pipe size limit, the per-user
/// pipe budget spent) the block is written from memory.
struct Source<'a> {
    block: &'a [u8],
    /// Where the next write starts in `block` (copy path).
    at: usize,
    #[cfg(target_os = "linux")]
    tee: Option<tee::Tee>,
}

impl<'a> Source<'a> {
    fn new(block: &'a [u8]) -> Self {
        Self {
            block,
            at: 0,
            #[cfg(target_os = "linux")]
            tee: tee::Tee::new(block).ok(),
        }
    }

    /// Sends what the socket takes now, without waiting; `WouldBlock` when it takes nothing.
    fn send(&mut self, stream: &TcpStream) -> io::Result<usize> {
        #[cfg(target_os = "linux")]
        if let Some(tee) = &mut self.tee {
            return tee.send(stream);
        }
        let n = stream.try_write(&self.block[self.at..])?;
        self.at = (self.at + n) % self.block.len();
        Ok(n)
    }
}

#[cfg(target_os = "linux")]
mod tee {
    //! The zero-copy source: `source` holds the block for the life of the connection; `staging`
    //! holds page references to it until the socket has taken them.

    use std::io;
    use std::os::fd::OwnedFd;

    use rustix::pipe::{PipeFlags, SpliceFlags, fcntl_setpipe_size, pipe_with, splice, tee};
    use tokio::io::Interest;
    use tokio::net::TcpStream;

    pub(super) struct Tee {
        source: OwnedFd,
        /// Kept open: a pipe with no writer would read as ended.
        _source_writer: OwnedFd,
        staging: OwnedFd,
        staging_writer: OwnedFd,
        /// Bytes in `staging`, not yet taken by the socket.
        staged: usize,
        len: usize,
    }

    impl Tee {
        pub(super) fn new(block: &[u8]) -> io::Result<Self> {
            let flags = PipeFlags::CLOEXEC | PipeFlags::NONBLOCK;
            let (source, source_writer) = pipe_with(flags)?;
            let (staging, staging_writer) = pipe_with(flags)?;
            for end in [&source_writer, &staging_writer] {
                if fcntl_setpipe_size(end, block.len())? < block.len() {
                    return Err(io::ErrorKind::OutOfMemory.into());
                }
            }
            let mut at = 0;
            while at < block.len() {
                at += rustix::io::write(&source_writer, &block[at..])?;
            }
            Ok(Self {
                source,
                _source_writer: source_writer,
                staging,
                staging_writer,
                staged: 0,
                len: block.len(),
            })
        }

        pub(super) fn send(&mut self, stream: &TcpStream) -> io::Result<usize> {
            if self.staged == 0 {
                // Both pipes are sized for the block and `staging` is empty: this copies page
                // references to the whole block, never the bytes.
                self.staged = tee(
                    &self.source,
                    &self.staging_writer,
                    self.len,
                    SpliceFlags::NONBLOCK,
                )?;
            }
            let (staging, staged) = (&self.staging, self.staged);
            // Only the socket can say EAGAIN here (`staging` holds bytes), so it may clear
            // tokio's write readiness.
            let n = stream.try_io(Interest::WRITABLE, || {
                splice(
                    staging,
                    None,
                    stream,
                    None,
                    staged,
                    SpliceFlags::MOVE | SpliceFlags::NONBLOCK,
                )
                .map_err(io::Error::from)
            })?;
            self.staged -= n;
            Ok(n)
        }
    }
}

/// Where stream mode puts the echo: the generator counts it and throws it away. On Linux it never
/// enters the process: `recv` with `MSG_TRUNC` makes TCP drop the bytes instead of copying them
/// (tcp(7)), so the generator's core spends its time on TCP rather than on copying bytes nobody
/// reads; elsewhere it is read into a buffer.
struct Sink {
    /// The length handed to `recv`. With `MSG_TRUNC` the kernel never writes it, so the zeroed
    /// allocation stays untouched pages and costs no memory per connection.
    buf: Vec<u8>,
}

/// Bytes the sink takes from the socket at a time.
const SINK_CHUNK: usize = 1024 * 1024;

impl Sink {
    fn new() -> Self {
        Self {
            buf: vec![0; SINK_CHUNK],
        }
    }

    /// Waits for echo bytes and discards what arrived; returns how many (0 at EOF).
    #[cfg(target_os = "linux")]
    async fn take(&mut self, stream: &TcpStream) -> io::Result<usize> {
        use rustix::net::{RecvFlags, recv};
        use tokio::io::Interest;
        let flags = RecvFlags::TRUNC | RecvFlags::DONTWAIT;
        loop {
            stream.readable().await?;
            match stream.try_io(Interest::READABLE, || {
                recv(stream, &mut self.buf[..], flags)
                    .map(|(_, len)| len)
                    .map_err(io::Error::from)
            }) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                other => return other,
            }
        }
    }

    #[cfg(not(target_os = "linux"))]
    async fn take(&mut self, stream: &TcpStream) -> io::Result<usize> {
        loop {
            stream.readable().await?;
            match stream.try_read(&mut self.buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                other => return other,
            }
        }
    }
}

/// Stream mode over TLS: the record layer needs the bytes in the process (no splice, no
/// `MSG_TRUNC`), so both directions go through the TLS session, split in two halves that share
/// it; each half checks the clock itself, as on the plaintext path.
async fn stream_tls(target: SocketAddr, tls: &Tls, size: usize, mut w: Worker) -> (Worker, u64) {
    let clock = w.clock();
    let block = vec![0x5au8; size];
    let mut sink = vec![0u8; SINK_CHUNK];
    let mut echoed = 0u64;
    while !w.done() {
        let Some(stream) = w.open(target, Some(tls)).await else {
            continue;
        };
        let (reader, mut writer) = tokio::io::split(stream);
        let send = async {
            loop {
                if clock.over() {
                    return Ok(());
                }
                let write = async {
                    writer.write_all(&block).await?;
                    writer.flush().await
                };
                match clock.until(write).await {
                    None | Some(Ok(())) => {}
                    Some(Err(e)) => return Err(io_kind("write", &e)),
                }
                // Let the receiving half run between blocks (see the plaintext path).
                tokio::task::yield_now().await;
            }
        };
        let mut echo = TlsEcho {
            reader,
            buf: &mut sink,
        };
        let receive = receive(&mut echo, size, &clock, &mut w, &mut echoed);
        let (sent, received) = tokio::join!(send, receive);
        if let Err(kind) = received.and(sent) {
            w.error_pause(kind).await;
        }
    }
    (w, echoed)
}

async fn round_trips(
    target: SocketAddr,
    tls: Option<&Tls>,
    size: usize,
    mut w: Worker,
) -> (Worker, u64) {
    let message: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    let mut buf = vec![0u8; size];
    let mut echoed = 0u64;
    while !w.done() {
        let Some(stream) = w.open(target, tls).await else {
            continue;
        };
        // Compiled once per transport, so plaintext runs on the socket itself.
        echoed += match stream {
            ClientStream::Tcp(mut s) => round_trip_loop(&mut s, &message, &mut buf, &mut w).await,
            mut tls => round_trip_loop(&mut tls, &message, &mut buf, &mut w).await,
        };
    }
    (w, echoed)
}

/// Round trips on one connection until the run ends or one fails; returns the bytes echoed.
async fn round_trip_loop<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    message: &[u8],
    buf: &mut [u8],
    w: &mut Worker,
) -> u64 {
    let mut echoed = 0;
    while !w.done() {
        let Some(t0) = w.start_request().await else {
            break;
        };
        match round_trip(stream, message, buf).await {
            Ok(()) => {
                w.record(t0.elapsed());
                echoed += message.len() as u64;
            }
            Err(kind) => {
                w.error_pause(kind).await;
                break;
            }
        }
    }
    echoed
}

async fn round_trip<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    message: &[u8],
    buf: &mut [u8],
) -> Result<(), String> {
    let sent = async {
        stream.write_all(message).await?;
        // TLS holds the last record until flushed; on TCP this returns at once.
        stream.flush().await
    };
    sent.await.map_err(|e| io_kind("write", &e))?;
    match tokio::time::timeout(REQUEST_TIMEOUT, stream.read_exact(buf)).await {
        Ok(Ok(_)) if buf == message => Ok(()),
        Ok(Ok(_)) => Err("echo differs".to_owned()),
        Ok(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => {
            Err("closed by server".to_owned())
        }
        Ok(Err(e)) => Err(io_kind("read", &e)),
        Err(_) => Err("echo timeout".to_owned()),
    }
}
