//! The echo server and client over real TCP on 127.0.0.1, port 0, under every model.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use jaring_echo::client::{self, ClientError, Target};
use jaring_echo::{EchoConfig, EchoServer, EchoStats};
use jaring_runtime::{CancellationToken, Model, Server, ServerConfig};
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWriteExt as _, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Generous limit for anything that should take milliseconds, for a loaded 2-core machine.
const PATIENCE: Duration = Duration::from_secs(30);

struct Running {
    addr: SocketAddr,
    stats: Arc<EchoStats>,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

impl Running {
    fn target(&self) -> Target {
        Target {
            host: "127.0.0.1".into(),
            port: self.addr.port(),
            timeout: PATIENCE,
            tls: None,
        }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(PATIENCE, self.task)
            .await
            .expect("server stops within the grace period")
            .expect("server task");
    }
}

async fn start(model: Model, echo: EchoConfig, idle: Duration) -> Running {
    let mut config = ServerConfig::on_port(0);
    config.listen.bind = IpAddr::V4(Ipv4Addr::LOCALHOST);
    config.model = model;
    config.limits.idle_timeout = idle;
    config.grace = Duration::from_secs(2);
    let server = Server::bind(config).await.expect("bind");
    let addr = server.local_addr();
    let echo = Arc::new(EchoServer::new(echo));
    let stats = echo.stats();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(server.serve(echo, shutdown.clone()));
    Running {
        addr,
        stats,
        shutdown,
        task,
    }
}

async fn start_default() -> Running {
    start(Model::Async, EchoConfig::default(), Duration::from_secs(60)).await
}

/// A stream of `len` pseudo-random bytes that hashes what it hands out. It cycles a random pool
/// whose length is prime, so no buffer size of the server lines up with its period.
struct Noise {
    pool: Arc<Vec<u8>>,
    at: usize,
    left: u64,
    hash: Sha256,
}

const POOL: usize = 1_048_573;

fn pool() -> Arc<Vec<u8>> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut pool = Vec::with_capacity(POOL + 8);
    while pool.len() < POOL {
        // xorshift64*: good enough to make every byte position distinct in practice.
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        pool.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    pool.truncate(POOL);
    Arc::new(pool)
}

impl Noise {
    fn new(len: u64) -> Self {
        Self {
            pool: pool(),
            at: 0,
            left: len,
            hash: Sha256::new(),
        }
    }

    fn sha256(&self) -> String {
        self.hash
            .clone()
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

impl AsyncRead for Noise {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let n = (buf.remaining() as u64)
            .min(this.left)
            .min((POOL - this.at) as u64) as usize;
        let piece = &this.pool[this.at..this.at + n];
        buf.put_slice(piece);
        this.hash.update(piece);
        this.left -= n as u64;
        this.at = (this.at + n) % POOL;
        Poll::Ready(Ok(()))
    }
}

async fn file_echo(target: &Target, len: u64) {
    let mut noise = Noise::new(len);
    let report = client::file(target, &mut noise, "noise", Some(len), false)
        .await
        .unwrap_or_else(|e| panic!("file echo of {len} bytes: {e}"));
    assert_eq!(report.bytes, len);
    assert_eq!(report.sha256, noise.sha256(), "hash of {len} bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_echo_is_verified_at_every_size() {
    for zero_copy in [false, true] {
        let config = EchoConfig {
            zero_copy,
            ..EchoConfig::default()
        };
        let server = start(Model::Async, config.clone(), Duration::from_secs(60)).await;
        for len in [0, 1, 1 << 20, 256 << 20] {
            file_echo(&server.target(), len).await;
        }
        // A 256 MiB stream went through one connection, which moved to zero copy if asked to
        // (where the system has it) and stayed there, and never held more than its buffer or
        // pipe.
        assert_eq!(
            server.stats.spliced_connections() > 0,
            zero_copy && cfg!(target_os = "linux")
        );
        assert_eq!(server.stats.copy_fallbacks(), 0);
        assert!(server.stats.peak_held_per_connection() <= config.stream_buffer as u64);
        assert!(server.stats.echoed() > (256 << 20) + (1 << 20));
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_echo_works_under_every_model() {
    let copying = EchoConfig {
        zero_copy: false,
        ..EchoConfig::default()
    };
    for (model, config) in [
        (Model::Async, copying),
        (Model::Threads, EchoConfig::default()),
        (Model::Iterative, EchoConfig::default()),
    ] {
        let server = start(model, config.clone(), Duration::from_secs(60)).await;
        for len in [0, 1, 3 << 20] {
            file_echo(&server.target(), len).await;
        }
        // Threads copies in its blocking loop whatever it is asked; iterative runs the async path,
        // so it splices by default, as async does unless told to copy.
        let splices = model == Model::Iterative && cfg!(target_os = "linux");
        assert_eq!(
            server.stats.spliced_connections() > 0,
            splices,
            "{model} with {config:?}"
        );
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_is_not_read_from() {
    for zero_copy in [false, true] {
        let config = EchoConfig {
            zero_copy,
            ..EchoConfig::default()
        };
        hog_is_bounded(config).await;
    }
}

async fn hog_is_bounded(config: EchoConfig) {
    let server = start(Model::Async, config.clone(), Duration::from_secs(60)).await;

    // Send 512 MiB and read nothing. The writes must stall long before the end.
    let mut hog = TcpStream::connect(server.addr).await.expect("connect");
    let block = vec![7u8; 1 << 20];
    let mut written = 0u64;
    let stalled = loop {
        match tokio::time::timeout(Duration::from_secs(2), hog.write_all(&block)).await {
            Ok(Ok(())) => written += block.len() as u64,
            Ok(Err(e)) => panic!("write failed: {e}"),
            Err(_) => break true,
        }
        if written >= 512 << 20 {
            break false;
        }
    };
    assert!(
        stalled,
        "{config:?}: the server kept reading from a peer that does not read"
    );
    // What is in flight sits in kernel socket buffers (a few MiB each way) and in the server's
    // one pipe or buffer, nowhere else.
    assert!(written < 128 << 20, "{written} bytes were accepted");
    let held = server.stats.held();
    assert!(
        held <= config.stream_buffer as u64,
        "{config:?}: server holds {held} bytes for one connection"
    );

    // Others are still served meanwhile.
    let mut out = Vec::new();
    client::message(
        &server.target(),
        b"still here",
        16,
        false,
        &mut out,
        &mut io::sink(),
    )
    .await
    .expect("a second client is served");
    assert_eq!(out, b"still here\n");

    drop(hog);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_returns_to_zero_when_a_hog_leaves() {
    let server = start_default().await;
    let mut hog = TcpStream::connect(server.addr).await.expect("connect");
    let block = vec![1u8; 1 << 20];
    while tokio::time::timeout(Duration::from_secs(2), hog.write_all(&block))
        .await
        .is_ok()
    {}
    assert!(server.stats.held() > 0, "the server holds the hog's bytes");
    drop(hog);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while server.stats.held() != 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "held stays {}",
            server.stats.held()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_close_gets_everything_back_then_eof() {
    for model in [Model::Async, Model::Threads] {
        let server = start(model, EchoConfig::default(), Duration::from_secs(60)).await;
        let mut stream = TcpStream::connect(server.addr).await.expect("connect");
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let (mut rd, mut wr) = stream.split();
        let send = async {
            wr.write_all(&data).await.expect("write");
            wr.shutdown().await.expect("half-close");
        };
        let mut back = Vec::new();
        let recv = async {
            tokio::time::timeout(PATIENCE, rd.read_to_end(&mut back))
                .await
                .expect("EOF arrives after the echo")
                .expect("read");
        };
        tokio::join!(send, recv);
        assert!(back == data, "{model}: echo differs");
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed() {
    let server = start(Model::Async, EchoConfig::default(), Duration::from_secs(1)).await;
    let mut stream = TcpStream::connect(server.addr).await.expect("connect");
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(PATIENCE, stream.read(&mut buf))
        .await
        .expect("closed by the idle timeout")
        .expect("read");
    assert_eq!(n, 0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_open_connections_within_grace() {
    for model in [Model::Async, Model::Threads] {
        let server = start(model, EchoConfig::default(), Duration::from_secs(60)).await;
        let mut stream = TcpStream::connect(server.addr).await.expect("connect");
        stream.write_all(b"ping").await.expect("write");
        let mut buf = [0u8; 4];
        stream.read_exact(&mut buf).await.expect("echo");
        let started = std::time::Instant::now();
        server.stop().await;
        assert!(started.elapsed() < PATIENCE);
        let n = tokio::time::timeout(PATIENCE, stream.read(&mut buf))
            .await
            .expect("closed at shutdown")
            .unwrap_or(0);
        assert_eq!(n, 0, "{model}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_arrives_in_chunks_of_at_most_chunk_bytes() {
    let server = start_default().await;
    let message = b"the quick brown fox jumps over the lazy dog";
    let (mut out, mut log) = (Vec::new(), Vec::new());
    client::message(&server.target(), message, 16, true, &mut out, &mut log)
        .await
        .expect("echo");
    assert_eq!(out, [&message[..], b"\n"].concat());
    let log = String::from_utf8(log).expect("utf-8");
    let chunks: Vec<&str> = log.lines().collect();
    assert!(chunks.len() >= 3, "{log}");
    assert!(chunks[0].starts_with("chunk 1: 16 bytes: "), "{log}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeat_prints_a_timestamp_per_echo() {
    let server = start_default().await;
    let mut out = Vec::new();
    client::repeat(
        &server.target(),
        b"hi",
        3,
        Duration::from_millis(10),
        &mut out,
    )
    .await
    .expect("repeat");
    let out = String::from_utf8(out).expect("utf-8");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    for line in lines {
        // [hh:mm:ss.mmm] hi
        assert_eq!(line.len(), "[00:00:00.000] hi".len(), "{line}");
        assert!(line.starts_with('[') && line.ends_with("] hi"), "{line}");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interactive_sends_lines_until_exit() {
    let server = start_default().await;
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    for line in ["hello", "", "world", "exit", "not sent"] {
        tx.send(line.to_owned().into()).await.expect("queue");
    }
    drop(tx);
    let mut out = Vec::new();
    client::interactive(&server.target(), rx, &mut out)
        .await
        .expect("interactive");
    assert_eq!(String::from_utf8(out).expect("utf-8"), "hello\n\nworld\n");
    server.stop().await;
}

#[tokio::test]
async fn a_refused_connection_names_the_server() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    drop(listener);
    let target = Target {
        host: "127.0.0.1".into(),
        port,
        timeout: PATIENCE,
        tls: None,
    };
    let err = client::message(&target, b"x", 16, false, &mut io::sink(), &mut io::sink())
        .await
        .expect_err("nothing listens there");
    assert!(matches!(err, ClientError::Dial(_)), "{err:?}");
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );
}

/// A broken echo server: echoes the first `good` bytes faithfully, then either flips one byte or
/// closes.
async fn broken_server(good: usize, flip: bool) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.expect("accept");
        let mut buf = vec![0u8; 64 * 1024];
        let mut seen = 0usize;
        loop {
            let n = match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let chunk = &mut buf[..n];
            if seen + n > good {
                if !flip {
                    // Close as a real server would: FIN after the good bytes, then drain. Dropping
                    // the socket with unread input would send RST, which may destroy bytes the
                    // client has not read yet and make the offset it reports a matter of timing.
                    let _ = stream.write_all(&chunk[..good - seen]).await;
                    let _ = stream.shutdown().await;
                    while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
                    return;
                }
                if seen <= good {
                    chunk[good - seen] ^= 0xff;
                }
            }
            seen += n;
            if stream.write_all(chunk).await.is_err() {
                return;
            }
        }
    });
    addr
}

/// Echoes 1 MiB of noise through a broken server and returns the client's complaint.
async fn echo_through_broken(good: usize, flip: bool) -> ClientError {
    let addr = broken_server(good, flip).await;
    let target = Target {
        host: "127.0.0.1".into(),
        port: addr.port(),
        timeout: PATIENCE,
        tls: None,
    };
    client::file(&target, Noise::new(1 << 20), "noise", None, false)
        .await
        .expect_err("the echo was broken")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_echo_names_the_offset() {
    let err = echo_through_broken(100_000, true).await;
    assert!(
        matches!(
            err,
            ClientError::Mismatch {
                offset: 100_000,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("byte offset 100000"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_early_close_names_the_offset() {
    let err = echo_through_broken(70_000, false).await;
    match &err {
        ClientError::Closed { offset, .. } => assert_eq!(*offset, 70_000, "{err}"),
        other => panic!("unexpected {other:?}"),
    }
}
