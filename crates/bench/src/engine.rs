//! Runs workloads on N connections for a bounded time and reports what happened.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use jaring_runtime::ClientStream;
use serde::Serialize;
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// Highest latency the histograms hold, in microseconds; anything slower is clamped to it.
pub const MAX_LATENCY_US: u64 = 60_000_000;

/// How long after the deadline workers get to finish the request in hand before they are aborted.
const FINISH_GRACE: Duration = Duration::from_secs(1);

/// Workers publish their counts in batches so the counters are not a contended cache line; small
/// batches, or the `--interval` samples of many slow workers jump by a batch each (64 made a
/// steady 65k msgs/s chat run plot as 51-77k).
const PUBLISH_EVERY: u64 = 8;

/// What to run, for how long, on how many connections.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Concurrent connections (one worker each).
    pub connections: usize,
    /// How long to generate load.
    pub duration: Duration,
    /// Show a live progress line (only sensible at a terminal).
    pub progress: bool,
    /// Ends the run before `duration` when triggered (Ctrl-C).
    pub stop: Stop,
    /// Take an [`IntervalSample`] this often, and print it as a line on stderr.
    pub interval: Option<Duration>,
    /// Requests per second in all, spread evenly over the connections: each connection starts
    /// its requests on a fixed schedule and each is timed from when it was due, so a server that
    /// stalls is charged for the requests that waited behind the stall (no coordinated omission,
    /// as wrk2 does it). `None`: each connection sends its next request as soon as it can.
    pub rate: Option<f64>,
    /// Speak TLS on every connection; the report then counts full and resumed handshakes.
    pub tls: Option<crate::net::Tls>,
}

/// A connection's schedule at a fixed rate.
#[derive(Debug, Clone, Copy)]
struct Pace {
    next: Instant,
    period: Duration,
}

/// What one interval of a run did (counts reach the shared counters in batches, so an interval
/// may show a few requests that belong to the one before).
#[derive(Debug, Clone, Serialize)]
pub struct IntervalSample {
    /// Seconds from the start of the run to the end of this interval.
    pub end_s: f64,
    /// Successful requests in this interval.
    pub requests: u64,
    /// Failed requests in this interval.
    pub errors: u64,
    /// Successful requests per second over this interval.
    pub requests_per_s: f64,
}

/// Ends a run early: once triggered, every worker's [`Worker::done`] is true and [`Clock::until`]
/// stops waiting, and the report covers the time until then. Clones share one switch.
#[derive(Debug, Clone, Default)]
pub struct Stop(Arc<StopState>);

#[derive(Debug, Default)]
struct StopState {
    set: AtomicBool,
    notify: tokio::sync::Notify,
}

impl Stop {
    /// A switch not yet triggered.
    pub fn new() -> Self {
        Self::default()
    }

    /// Ends the run (idempotent).
    pub fn trigger(&self) {
        self.0.set.store(true, Ordering::SeqCst);
        self.0.notify.notify_waiters();
    }

    /// Whether [`Stop::trigger`] was called.
    pub fn is_set(&self) -> bool {
        self.0.set.load(Ordering::SeqCst)
    }

    /// Returns once triggered.
    pub async fn wait(&self) {
        loop {
            let notified = self.0.notify.notified();
            tokio::pin!(notified);
            // Registered before the check, so a trigger in between is not missed.
            notified.as_mut().enable();
            if self.is_set() {
                return;
            }
            notified.await;
        }
    }
}

/// When a worker's run ends: its deadline, or an early [`Stop`]. Cheap to clone, so the halves
/// of a workload can each hold one.
#[derive(Debug, Clone)]
pub struct Clock {
    deadline: Instant,
    stop: Stop,
}

impl Clock {
    /// Whether the run is over.
    pub fn over(&self) -> bool {
        self.stop.is_set() || Instant::now() >= self.deadline
    }

    /// `f`'s output, or `None` if the run ended first.
    pub async fn until<F: Future>(&self, f: F) -> Option<F::Output> {
        tokio::select! {
            out = f => Some(out),
            () = tokio::time::sleep_until(self.deadline) => None,
            () = self.stop.wait() => None,
        }
    }

    /// Returns once the run is stopped early (never, if it is not).
    pub async fn stopped(&self) {
        self.stop.wait().await;
    }
}

/// Shared counters, read by the progress line while the workers run.
#[derive(Debug, Default)]
pub struct Counters {
    requests: AtomicU64,
    errors: AtomicU64,
}

/// One worker's view: its own histogram and counts, published to the shared counters in batches.
#[derive(Debug)]
pub struct Worker {
    histogram: Histogram<u32>,
    requests: u64,
    errors: u64,
    unpublished: u64,
    error_kinds: Vec<(String, u64)>,
    shared: Arc<Counters>,
    clock: Clock,
    pace: Option<Pace>,
    handshakes: Handshakes,
}

impl Worker {
    fn new(shared: Arc<Counters>, clock: Clock, pace: Option<Pace>) -> Self {
        Self {
            // Three significant figures from 1 µs to a minute.
            histogram: Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)
                .unwrap_or_else(|_| unreachable!("the bounds are valid constants")),
            requests: 0,
            errors: 0,
            unpublished: 0,
            error_kinds: Vec::new(),
            shared,
            clock,
            pace,
            handshakes: Handshakes::default(),
        }
    }

    /// Counts the TLS handshake of a connection just opened (nothing for plaintext).
    pub fn opened(&mut self, stream: &jaring_runtime::ClientStream) {
        if let jaring_runtime::ClientStream::Tls(_) = stream {
            self.handshakes.add(stream.resumed());
        }
    }

    /// When the next request starts, for timing it: now, or at a fixed rate the instant it is
    /// due, after waiting for it if it is not due yet (a request already late starts at once and
    /// is timed from when it was due). `None` if the run ended while waiting.
    pub async fn start_request(&mut self) -> Option<Instant> {
        let Some(pace) = &mut self.pace else {
            return Some(Instant::now());
        };
        let due = pace.next;
        pace.next += pace.period;
        if Instant::now() < due {
            self.clock.until(tokio::time::sleep_until(due)).await?;
        }
        Some(due)
    }

    /// Whether the run is over (its deadline passed, or it was stopped early).
    pub fn done(&self) -> bool {
        self.clock.over()
    }

    /// When the run ends, for waits that must not outlast it.
    pub fn clock(&self) -> Clock {
        self.clock.clone()
    }

    /// Records one successful request that took `latency`.
    pub fn record(&mut self, latency: Duration) {
        let us = (latency.as_micros() as u64).clamp(1, MAX_LATENCY_US);
        let _ = self.histogram.record(us);
        self.requests += 1;
        self.unpublished += 1;
        if self.unpublished == PUBLISH_EVERY {
            self.shared
                .requests
                .fetch_add(PUBLISH_EVERY, Ordering::Relaxed);
            self.unpublished = 0;
        }
    }

    /// [`net::connect`](crate::net::connect) for this worker: on failure the error is recorded,
    /// the worker pauses and `None` is returned (the caller tries again while the run lasts).
    pub(crate) async fn connect(&mut self, target: SocketAddr) -> Option<TcpStream> {
        match crate::net::connect(target).await {
            Ok(s) => Some(s),
            Err(kind) => {
                self.error_pause(kind).await;
                None
            }
        }
    }

    /// [`net::open`](crate::net::open) for this worker: the connection's handshake is counted;
    /// on failure the error is recorded, the worker pauses and `None` is returned.
    pub(crate) async fn open(
        &mut self,
        target: SocketAddr,
        tls: Option<&crate::net::Tls>,
    ) -> Option<ClientStream> {
        match crate::net::open(target, tls).await {
            Ok(s) => {
                self.opened(&s);
                Some(s)
            }
            Err(kind) => {
                self.error_pause(kind).await;
                None
            }
        }
    }

    /// Records one failed request (as [`Worker::error`]), then pauses
    /// [`ERROR_PAUSE`](crate::net::ERROR_PAUSE) so that a dead server does not turn the
    /// generator into a spin.
    pub(crate) async fn error_pause(&mut self, kind: impl Into<String>) {
        self.error(kind);
        tokio::time::sleep(crate::net::ERROR_PAUSE).await;
    }

    /// Records one failed request and what went wrong.
    pub fn error(&mut self, kind: impl Into<String>) {
        let kind = kind.into();
        self.errors += 1;
        self.shared.errors.fetch_add(1, Ordering::Relaxed);
        match self.error_kinds.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, n)) => *n += 1,
            None => self.error_kinds.push((kind, 1)),
        }
    }
}

/// TLS handshakes of a run: how many resumed an earlier session (one round trip and no
/// certificate check) and how many were full.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Handshakes {
    /// Full handshakes.
    pub full: u64,
    /// Abbreviated handshakes that resumed a session.
    pub resumed: u64,
}

impl Handshakes {
    /// Counts one handshake.
    pub fn add(&mut self, resumed: bool) {
        if resumed {
            self.resumed += 1;
        } else {
            self.full += 1;
        }
    }

    /// Adds `other`'s counts.
    pub fn merge(&mut self, other: Self) {
        self.full += other.full;
        self.resumed += other.resumed;
    }
}

/// Latency percentiles, in microseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    /// Median.
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// Slowest request.
    pub max_us: u64,
    /// Mean.
    pub mean_us: f64,
    /// The whole distribution: how many took at most each bound of a 1-2-5 series, from the
    /// first bound with a count to the last (each bucket counts from the previous bound).
    pub buckets: Vec<Bucket>,
}

/// One bucket of a latency distribution.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Bucket {
    /// Upper bound, in microseconds (inclusive).
    pub le_us: u64,
    /// Requests above the previous bucket's bound and at most this one.
    pub count: u64,
}

/// The outcome of a run; its JSON form is a stable schema for scripts.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// What ran, e.g. `time`.
    pub workload: String,
    /// The workload's mode, e.g. `persistent`.
    pub mode: String,
    /// The server, as `host:port`.
    pub target: String,
    /// Concurrent connections.
    pub connections: usize,
    /// Seconds of load actually generated.
    pub duration_s: f64,
    /// Whether the run was stopped before its duration (Ctrl-C): the figures cover
    /// `duration_s`.
    pub interrupted: bool,
    /// The TLS handshakes, when the run spoke TLS; absent from the JSON otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<Handshakes>,
    /// The fixed rate asked for (`--rate`), requests per second; absent when there was none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_per_s: Option<f64>,
    /// Successful requests.
    pub requests: u64,
    /// Failed requests.
    pub errors: u64,
    /// Successful requests per second.
    pub requests_per_s: f64,
    /// Latency of successful requests.
    pub latency: Latency,
    /// Failures by kind, most frequent first.
    pub error_kinds: Vec<ErrorCount>,
    /// Worker threads of the load generator.
    pub generator_threads: usize,
    /// Bytes moved, for workloads that measure throughput (echo); absent from the JSON otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub throughput: Option<Throughput>,
    /// Messages seen arriving at their recipients, for workloads that check delivery (chat);
    /// absent from the JSON otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivery: Option<Delivery>,
    /// The server process's CPU time and memory over the run, when its pid was given; absent from
    /// the JSON otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server: Option<ServerUsage>,
    /// One sample per `--interval`, when asked for; absent from the JSON otherwise.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub intervals: Vec<IntervalSample>,
    /// Every successful request's latency, in microseconds (see [`Report::write_hdr_log`]).
    #[serde(skip)]
    pub histogram: Histogram<u64>,
    /// When the load started.
    #[serde(skip)]
    pub started: std::time::SystemTime,
}

impl Report {
    /// Writes [`Report::histogram`] as an HdrHistogram interval log (one interval: the run),
    /// which HdrHistogram's own tools read (`HistogramLogProcessor`, the online log plotter).
    pub fn write_hdr_log(&self, out: &mut impl std::io::Write) -> std::io::Result<()> {
        use hdrhistogram::serialization::V2DeflateSerializer;
        use hdrhistogram::serialization::interval_log::IntervalLogWriterBuilder;
        let mut serializer = V2DeflateSerializer::new();
        let mut log = IntervalLogWriterBuilder::new()
            .add_comment(&format!(
                "jaring bench {} ({}) against {}: latency of successful requests in microseconds",
                self.workload, self.mode, self.target
            ))
            .with_start_time(self.started)
            .with_base_time(self.started)
            .begin_log_with(out, &mut serializer)?;
        let tag = hdrhistogram::serialization::interval_log::Tag::new("requests");
        log.write_histogram(
            &self.histogram,
            Duration::ZERO,
            Duration::from_secs_f64(self.duration_s),
            tag,
        )
        .map_err(|e| std::io::Error::other(format!("{e:?}")))
    }

    /// Counts one more failure of `kind` (for failures seen outside the workers, e.g. receivers).
    pub fn add_error(&mut self, kind: String) {
        self.errors += 1;
        match self.error_kinds.iter_mut().find(|k| k.kind == kind) {
            Some(k) => k.count += 1,
            None => self.error_kinds.push(ErrorCount { kind, count: 1 }),
        }
    }
}

impl Latency {
    /// The percentiles of `h` (all zero when it is empty).
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self {
                p50_us: 0,
                p90_us: 0,
                p99_us: 0,
                p999_us: 0,
                max_us: 0,
                mean_us: 0.0,
                buckets: Vec::new(),
            };
        }
        Self {
            p50_us: h.value_at_quantile(0.50),
            p90_us: h.value_at_quantile(0.90),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
            mean_us: h.mean(),
            buckets: buckets(h),
        }
    }
}

/// `h` in buckets bounded by 1, 2, 5, 10, 20, 50 … µs, from the first non-empty to the last.
fn buckets(h: &Histogram<u64>) -> Vec<Bucket> {
    // Each of the histogram's own buckets goes whole into the series' bucket of its lowest
    // value, so every request is counted once.
    let mut counts = std::collections::BTreeMap::<u64, u64>::new();
    for v in h.iter_recorded() {
        let value = h.lowest_equivalent(v.value_iterated_to());
        *counts.entry(series_bound(value)).or_default() += v.count_at_value();
    }
    let (Some(&first), Some(&last)) = (counts.keys().next(), counts.keys().next_back()) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut le = first;
    loop {
        out.push(Bucket {
            le_us: le,
            count: counts.get(&le).copied().unwrap_or(0),
        });
        if le >= last {
            return out;
        }
        le = series_bound(le + 1);
    }
}

/// The least of 1, 2, 5, 10, 20, 50 … that is at least `v`.
fn series_bound(v: u64) -> u64 {
    let mut decade = 1u64;
    loop {
        for step in [1, 2, 5] {
            let bound = decade.saturating_mul(step);
            if bound >= v {
                return bound;
            }
        }
        decade = decade.saturating_mul(10);
    }
}

/// An empty latency histogram: three significant figures from 1 µs to [`MAX_LATENCY_US`].
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)
        .unwrap_or_else(|_| unreachable!("the bounds are valid constants"))
}

/// What happened to the messages a workload sent (chat: sent by one connection, read from an
/// inbox by another).
#[derive(Debug, Clone, Serialize)]
pub struct Delivery {
    /// Connections reading the messages.
    pub receivers: usize,
    /// Messages the server acknowledged.
    pub acknowledged: u64,
    /// Distinct messages that arrived (may exceed `acknowledged` by messages whose OK came after
    /// the end of the run).
    pub delivered: u64,
    /// Acknowledged messages that never arrived before the receivers gave up.
    pub missing: u64,
    /// Messages that arrived a second time.
    pub duplicates: u64,
    /// Messages that arrived before an earlier one from the same sender.
    pub out_of_order: u64,
    /// From the instant the sender started writing the request to the instant the reply carrying
    /// the message was read by its receiver.
    pub latency: Latency,
}

/// One reading of a process's counters from `/proc/<pid>`.
#[derive(Debug, Clone, Copy)]
pub struct ProcSample {
    /// User + system CPU time in clock ticks.
    pub ticks: u64,
    /// Resident memory in KiB (`VmRSS`).
    pub rss_kib: u64,
    /// Peak resident memory in KiB (`VmHWM`).
    pub peak_kib: u64,
}

/// The server's CPU time and memory over a run, from `/proc/<pid>` (Linux).
#[derive(Debug, Clone, Serialize)]
pub struct ServerUsage {
    /// The server's process id.
    pub pid: u32,
    /// CPU seconds (user + system) the server used during the run.
    pub cpu_s: f64,
    /// The same per successful request, in microseconds: the cost of one request, much less
    /// sensitive to other load on the machine than requests per second.
    pub cpu_us_per_request: f64,
    /// Resident memory at the end of the run, in KiB.
    pub rss_kib: u64,
    /// Peak resident memory of the process so far, in KiB.
    pub rss_peak_kib: u64,
    /// Resident memory before the bench connected, in KiB (idle mode).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rss_before_kib: Option<u64>,
    /// `(rss - rss_before) / connections`, in bytes (idle mode).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rss_per_connection_bytes: Option<u64>,
}

/// The process listening on TCP `port` on this machine, from `/proc/net/tcp{,6}` and the
/// sockets in `/proc/<pid>/fd` (Linux; `None` elsewhere, or when it belongs to a user whose
/// processes this one cannot look into). Under `jaring lab` that is the lab: every service's
/// CPU time together.
pub fn pid_listening_on(port: u16) -> Option<u32> {
    let mut inodes = std::collections::HashSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // local_address is ADDR:PORT in hex, st 0A is LISTEN, inode is the tenth field.
            let listening = f.get(3) == Some(&"0A");
            let on_port = f
                .get(1)
                .and_then(|a| a.rsplit_once(':'))
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
                == Some(port);
            if listening
                && on_port
                && let Some(inode) = f.get(9)
            {
                inodes.insert(format!("socket:[{inode}]"));
            }
        }
    }
    if inodes.is_empty() {
        return None;
    }
    let own = std::process::id();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == own {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(target) = std::fs::read_link(fd.path())
                && target.to_str().is_some_and(|t| inodes.contains(t))
            {
                return Some(pid);
            }
        }
    }
    None
}

/// Clock ticks per second of `/proc/<pid>/stat` times; 100 on every Linux this runs on (it is a
/// kernel ABI constant, `USER_HZ`).
const USER_HZ: f64 = 100.0;

impl ProcSample {
    /// Reads `/proc/<pid>/stat` and `/proc/<pid>/status`.
    pub fn read(pid: u32) -> std::io::Result<Self> {
        let bad =
            || std::io::Error::new(std::io::ErrorKind::InvalidData, "unexpected /proc format");
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        // The command name may contain spaces and parentheses: fields start after the last ')'.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .ok_or_else(bad)?
            .1
            .split_whitespace()
            .collect();
        // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
        let tick = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
        let ticks = tick(11).zip(tick(12)).map(|(u, s)| u + s).ok_or_else(bad)?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let kib = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .unwrap_or(0)
        };
        Ok(Self {
            ticks,
            rss_kib: kib("VmRSS:"),
            peak_kib: kib("VmHWM:"),
        })
    }
}

impl ServerUsage {
    /// The usage between two samples, for `requests` successful requests; `before` is a sample
    /// taken before the bench connected, to tell the memory its connections cost.
    pub fn between(
        pid: u32,
        start: &ProcSample,
        end: &ProcSample,
        requests: u64,
        before: Option<&ProcSample>,
    ) -> Self {
        let cpu_s = end.ticks.saturating_sub(start.ticks) as f64 / USER_HZ;
        Self {
            pid,
            cpu_s,
            cpu_us_per_request: if requests == 0 {
                0.0
            } else {
                cpu_s * 1e6 / requests as f64
            },
            rss_kib: end.rss_kib,
            rss_peak_kib: end.peak_kib,
            rss_before_kib: before.map(|b| b.rss_kib),
            rss_per_connection_bytes: before
                .filter(|_| requests > 0)
                .map(|b| end.rss_kib.saturating_sub(b.rss_kib) * 1024 / requests),
        }
    }
}

/// Bytes a throughput workload moved.
#[derive(Debug, Clone, Serialize)]
pub struct Throughput {
    /// Bytes that made the whole trip (for echo: sent and received back) before the deadline.
    pub bytes: u64,
    /// Bytes per second.
    pub bytes_per_s: f64,
    /// The same in gigabits per second, as iperf3 reports.
    pub gbit_per_s: f64,
}

impl Throughput {
    /// `bytes` moved in `seconds`.
    pub fn new(bytes: u64, seconds: f64) -> Self {
        let bytes_per_s = bytes as f64 / seconds.max(1e-9);
        Self {
            bytes,
            bytes_per_s,
            gbit_per_s: bytes_per_s * 8.0 / 1e9,
        }
    }
}

/// How many failures of one kind.
#[derive(Debug, Clone, Serialize)]
pub struct ErrorCount {
    /// What went wrong.
    pub kind: String,
    /// How often.
    pub count: u64,
}

/// Runs `workload` on `opts.connections` workers until `opts.duration` has passed, and reports.
///
/// `workload(i, worker)` must return once `worker.done()`; if it has not returned a second after the
/// deadline it is aborted and its in-flight request is not counted either way.
pub async fn run<F, Fut>(
    workload_name: &str,
    mode: &str,
    target: &str,
    opts: &LoadOptions,
    workload: F,
) -> Report
where
    F: Fn(usize, Worker) -> Fut,
    Fut: Future<Output = Worker> + Send + 'static,
{
    let shared = Arc::new(Counters::default());
    let started = std::time::SystemTime::now();
    let start = Instant::now();
    let deadline = start + opts.duration;
    let mut set = JoinSet::new();
    let clock = Clock {
        deadline,
        stop: opts.stop.clone(),
    };
    // Each connection's share of the rate; their schedules are staggered over one period.
    let period = opts
        .rate
        .filter(|r| *r > 0.0)
        .map(|r| Duration::from_secs_f64(opts.connections as f64 / r));
    for i in 0..opts.connections {
        let pace = period.map(|period| Pace {
            next: start + period.mul_f64(i as f64 / opts.connections as f64),
            period,
        });
        let worker = Worker::new(Arc::clone(&shared), clock.clone(), pace);
        set.spawn(workload(i, worker));
    }

    let progress = opts.progress.then(|| progress_bar(opts.duration));
    let mut merged = histogram();
    let (mut requests, mut errors) = (0, 0);
    let mut kinds: Vec<ErrorCount> = Vec::new();
    let mut handshakes = Handshakes::default();
    let hard_stop = tokio::time::sleep_until(deadline + FINISH_GRACE);
    tokio::pin!(hard_stop);
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let mut stopped = false;
    // When the run was stopped early, if it was.
    let mut interrupted: Option<Instant> = None;
    let mut stop_seen = false;
    let mut every = opts.interval.filter(|d| !d.is_zero()).map(|d| {
        let mut every = tokio::time::interval_at(start + d, d);
        // A late tick is taken late, not made up for by a burst of near-empty samples.
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        every
    });
    let mut intervals: Vec<IntervalSample> = Vec::new();
    let mut last = (start, 0u64, 0u64);
    loop {
        tokio::select! {
            joined = set.join_next() => {
                let Some(joined) = joined else { break };
                let Ok(worker) = joined else { continue };
                for v in worker.histogram.iter_recorded() {
                    let _ = merged.record_n(v.value_iterated_to(), u64::from(v.count_at_value()));
                }
                requests += worker.requests;
                errors += worker.errors;
                handshakes.merge(worker.handshakes);
                for (kind, count) in worker.error_kinds {
                    match kinds.iter_mut().find(|k| k.kind == kind) {
                        Some(k) => k.count += count,
                        None => kinds.push(ErrorCount { kind, count }),
                    }
                }
            }
            () = &mut hard_stop, if !stopped => {
                // Workers still running are cut off; those that finished but were not merged yet
                // (merging thousands of histograms takes a while) still count.
                set.abort_all();
                stopped = true;
            }
            () = opts.stop.wait(), if !stop_seen && !stopped => {
                stop_seen = true;
                // A stop after the deadline ends nothing early: the run was whole.
                let now = Instant::now();
                if now < deadline {
                    interrupted = Some(now);
                    hard_stop.as_mut().reset(now + FINISH_GRACE);
                }
            }
            _ = next_tick(&mut every), if every.is_some() && !stopped && interrupted.is_none() => {
                let now = Instant::now();
                if now <= deadline + Duration::from_millis(50) {
                    let sample = interval_sample(&shared, start, now, &mut last);
                    let line = interval_line(&sample);
                    match &progress {
                        Some(bar) => bar.println(line),
                        None => eprintln!("{line}"),
                    }
                    intervals.push(sample);
                }
            }
            _ = tick.tick(), if progress.is_some() => {
                if let Some(bar) = &progress {
                    update_progress(bar, &shared, start);
                }
            }
        }
    }
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }
    let duration = interrupted
        .map_or(opts.duration, |at| at - start)
        .as_secs_f64();
    kinds.sort_by_key(|k| std::cmp::Reverse(k.count));
    Report {
        workload: workload_name.to_owned(),
        mode: mode.to_owned(),
        target: target.to_owned(),
        connections: opts.connections,
        duration_s: duration,
        interrupted: interrupted.is_some(),
        tls: opts.tls.as_ref().map(|_| handshakes),
        rate_per_s: period.and(opts.rate),
        requests,
        errors,
        requests_per_s: requests as f64 / duration.max(1e-6),
        latency: Latency::of(&merged),
        histogram: merged,
        started,
        error_kinds: kinds,
        generator_threads: tokio::runtime::Handle::current().metrics().num_workers(),
        throughput: None,
        delivery: None,
        server: None,
        intervals,
    }
}

async fn next_tick(every: &mut Option<tokio::time::Interval>) {
    match every {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// The counters' growth since `last` (when, requests, errors), which it then moves to `now`.
fn interval_sample(
    shared: &Counters,
    start: Instant,
    now: Instant,
    last: &mut (Instant, u64, u64),
) -> IntervalSample {
    let requests = shared.requests.load(Ordering::Relaxed);
    let errors = shared.errors.load(Ordering::Relaxed);
    let secs = (now - last.0).as_secs_f64().max(1e-6);
    let sample = IntervalSample {
        end_s: (now - start).as_secs_f64(),
        requests: requests.saturating_sub(last.1),
        errors: errors.saturating_sub(last.2),
        requests_per_s: requests.saturating_sub(last.1) as f64 / secs,
    };
    *last = (now, requests, errors);
    sample
}

fn interval_line(s: &IntervalSample) -> String {
    format!(
        "{:>7.1} s  {:>12} requests/s  {:>10} requests  {:>6} errors",
        s.end_s,
        crate::units::rate(s.requests_per_s),
        crate::units::count(s.requests),
        crate::units::count(s.errors)
    )
}

fn progress_bar(duration: Duration) -> ProgressBar {
    let bar = ProgressBar::new(duration.as_millis() as u64);
    let style = ProgressStyle::with_template("{bar:30.cyan/blue} {elapsed:>3}/{duration} {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar
}

fn update_progress(bar: &ProgressBar, shared: &Counters, start: Instant) {
    let elapsed = start.elapsed();
    let requests = shared.requests.load(Ordering::Relaxed);
    let errors = shared.errors.load(Ordering::Relaxed);
    let rate = requests as f64 / elapsed.as_secs_f64().max(1e-3);
    bar.set_position(elapsed.as_millis() as u64);
    bar.set_message(format!("{requests} requests, {rate:.0}/s, {errors} errors"));
}

#[cfg(test)]
mod tests {
    #[test]
    fn buckets_count_every_request_once_in_a_1_2_5_series() {
        let mut h = super::histogram();
        for (v, n) in [
            (1, 3),
            (2, 1),
            (7, 2),
            (10, 1),
            (11, 1),
            (4_999, 1),
            (5_000, 4),
            (123_456, 2),
        ] {
            h.record_n(v, n).unwrap();
        }
        let b = super::buckets(&h);
        assert_eq!(b.iter().map(|b| b.count).sum::<u64>(), h.len());
        let bounds: Vec<u64> = b.iter().map(|b| b.le_us).collect();
        assert_eq!(
            bounds,
            [
                1, 2, 5, 10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 20_000, 50_000,
                100_000, 200_000
            ]
        );
        let count = |le: u64| b.iter().find(|b| b.le_us == le).unwrap().count;
        assert_eq!(
            (count(1), count(2), count(5), count(10), count(20)),
            (3, 1, 0, 3, 1)
        );
        assert_eq!((count(5_000), count(10_000), count(200_000)), (5, 0, 2));
        assert!(super::buckets(&super::histogram()).is_empty());
    }
}
