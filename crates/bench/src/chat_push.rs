//! The CHAT push workload (`--push`): W watching connections, each a bench user that logged in
//! and sent `watch`, and S sender connections sending private messages to watched users picked at
//! random, at a fixed total rate, for a bounded time (and at most a given count). Every watcher
//! acknowledges as jaring's client does (every 100 ms and every 256 events, see
//! `docs/chat-protocol.md`, "Pushed events"), counts what it was pushed by message id, and times
//! each message from the instant its sender started writing the `send` to the instant the watcher
//! read the `private` event: the text carries the sender's clock (one process, one monotonic
//! clock), so nothing is looked up per message.
//!
//! A message is **lost** if its sender got OK (it is committed) and no watcher was pushed it
//! before the run ended (the senders' time plus a drain window); **duplicated** if a message id
//! was pushed a second time. Both must be 0. Messages from earlier runs (not yet acknowledged,
//! e.g. a run that was stopped) are told apart by a run tag in the text, not counted, and
//! acknowledged, so the next run starts clean.
//!
//! With the server's pid, the report also says the server's memory before the bench connected,
//! once every watcher watches (before any message: W opted-in idle connections), and at the end.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use jaring_runtime::ClientStream;
use serde::Serialize;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::engine::{self, Latency, ProcSample};
use crate::net::Tls;

/// Watching connections unless told otherwise.
pub const DEFAULT_WATCHERS: usize = 100;
/// Private messages a second, all senders together, unless told otherwise: low load.
pub const DEFAULT_RATE: f64 = 100.0;
/// A watcher acknowledges at least this often while events arrive (as jaring's client does).
pub const ACK_INTERVAL: Duration = Duration::from_millis(100);
/// … and after this many events, whichever comes first.
pub const ACK_EVENTS: u64 = 256;
/// After the senders stop, watchers wait at most this long for what is still due to them.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections set up at once.
pub const SETUP_CONCURRENCY: usize = 64;
/// Times a connection tries to log in (and watch) before the run gives up.
const SETUP_ATTEMPTS: u32 = 4;
/// How long to wait for one reply (setup, a send's OK, the last ack's OK).
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest frame accepted: an event or reply is far smaller.
const MAX_FRAME: usize = 1 << 20;
/// Read buffer per connection: ten thousand watchers hold one each, and an event is a few
/// hundred bytes.
const READ_CHUNK: usize = 4096;
/// After the run, a watcher waits this long for the OK of its last `ack`.
const LAST_ACK_TIMEOUT: Duration = Duration::from_secs(5);

/// What to run.
#[derive(Debug, Clone)]
pub struct PushOptions {
    /// Watching connections: users `{user_prefix}{senders}` … `{user_prefix}{senders+watchers-1}`.
    pub watchers: usize,
    /// Sending connections: users `{user_prefix}0` … `{user_prefix}{senders-1}`.
    pub senders: usize,
    /// Messages a second, all senders together.
    pub rate: f64,
    /// How long the senders send.
    pub duration: Duration,
    /// At most this many messages in all (the run also ends at `duration`).
    pub messages: Option<u64>,
    /// Message text length in bytes (at least what the tag, sender, number and time need).
    pub size: usize,
    /// Bench users are this prefix and a number.
    pub user_prefix: String,
    /// Every bench user's password.
    pub password: String,
    /// Speak TLS on every connection.
    pub tls: Option<Tls>,
    /// The server's process id, for its memory and CPU time (from `/proc`).
    pub server_pid: Option<u32>,
}

impl Default for PushOptions {
    fn default() -> Self {
        Self {
            watchers: DEFAULT_WATCHERS,
            senders: crate::chat_group::DEFAULT_SENDERS,
            rate: DEFAULT_RATE,
            duration: Duration::from_secs(10),
            messages: None,
            size: crate::chat::DEFAULT_SIZE,
            user_prefix: crate::chat::DEFAULT_USER_PREFIX.to_owned(),
            password: crate::chat::DEFAULT_PASSWORD.to_owned(),
            tls: None,
            server_pid: None,
        }
    }
}

/// The server's memory and CPU over a push run (Linux `/proc`).
#[derive(Debug, Clone, Serialize)]
pub struct PushServer {
    /// The server's process id.
    pub pid: u32,
    /// Resident memory before the bench connected, KiB.
    pub rss_before_kib: u64,
    /// Resident memory once every watcher watched, before the first message, KiB.
    pub rss_watching_kib: u64,
    /// `(rss_watching - rss_before) / watchers`, bytes.
    pub rss_per_watcher_bytes: u64,
    /// Resident memory at the end, KiB.
    pub rss_end_kib: u64,
    /// Peak resident memory of the process so far, KiB.
    pub rss_peak_kib: u64,
    /// CPU seconds (user + system) while the senders sent and the watchers drained.
    pub cpu_s: f64,
    /// The same per message sent, microseconds.
    pub cpu_us_per_message: f64,
}

/// What the run measured; `lost` and `duplicated` must be 0.
#[derive(Debug, Clone, Serialize)]
pub struct PushReport {
    /// The workload, `push`.
    pub mode: String,
    /// The server.
    pub target: String,
    /// Watching connections.
    pub watchers: usize,
    /// Sending connections.
    pub senders: usize,
    /// Messages a second asked for.
    pub rate_per_s: f64,
    /// The count asked for, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub messages_asked: Option<u64>,
    /// Seconds the senders were given.
    pub duration_s: f64,
    /// Seconds from the first send to the last sender's end.
    pub sending_s: f64,
    /// Seconds logging in and watching took.
    pub setup_s: f64,
    /// Messages the realm acknowledged with OK (committed).
    pub sent: u64,
    /// Sends that got an ERROR or no reply.
    pub send_errors: u64,
    /// Messages of this run pushed to a watcher (each counted once).
    pub pushed: u64,
    /// Sent with OK, never pushed within the run and its drain window.
    pub lost: u64,
    /// Pushes of a message id already pushed.
    pub duplicated: u64,
    /// Messages pushed before an earlier one of the same sender to the same watcher.
    pub out_of_order: u64,
    /// Events of earlier runs (not acknowledged then): ignored, and acknowledged now.
    pub stale: u64,
    /// Watchers whose watch ended or connection failed before the end (`watch_end`,
    /// `closing`, a reset), with the first reason.
    pub watches_ended: u64,
    /// The first such reason, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub watch_end_reason: Option<String>,
    /// Acks (and pings) answered with an ERROR or not at all.
    pub ack_errors: u64,
    /// Send → pushed latency of every message pushed, microseconds.
    pub latency: Latency,
    /// Send → the sender reading its OK (the realm answers once the message is committed, and
    /// pushes it from then on), microseconds: the part of `latency` that is the commit.
    pub send_ok: Latency,
    /// The server's memory and CPU, when its pid was given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server: Option<PushServer>,
}

impl PushReport {
    /// Whether every message sent with OK was pushed exactly once, in order.
    pub fn exact(&self) -> bool {
        self.lost == 0 && self.duplicated == 0 && self.out_of_order == 0
    }
}

/// Why the run could not start.
#[derive(Debug, thiserror::Error)]
pub enum PushBenchError {
    /// A bench user could not log in: the users are missing or their password is another.
    #[error(
        "cannot log in as {user}: {reason}; create the bench users first (a realm on this machine gets them made by the bench itself, unless --no-setup; `bench/chat/push.sh` shows how: senders are PREFIX0.., watchers follow) or pass --user-prefix and --password"
    )]
    Login {
        /// The user.
        user: String,
        /// What the realm said.
        reason: String,
    },
    /// A connection could not be set up.
    #[error("{user} could not connect or watch: {reason}")]
    Setup {
        /// The user.
        user: String,
        /// What happened.
        reason: String,
    },
    /// The server's process could not be read.
    #[error("cannot read /proc/{0}: is --server-pid the server's process id on this machine?")]
    ServerPid(u32, #[source] std::io::Error),
    /// The options do not make sense.
    #[error("{0}")]
    Options(String),
}

/// A logged-in connection and the bytes read past its last reply.
struct Conn {
    stream: ClientStream,
    buf: Vec<u8>,
    token: String,
}

/// Why a setup step failed.
enum Failed {
    /// The realm refused the login.
    Refused(String),
    /// Anything else (worth another try).
    Other(String),
}

impl From<String> for Failed {
    fn from(s: String) -> Self {
        Self::Other(s)
    }
}

/// What the watcher reads of a frame; every other field is skipped.
#[derive(serde::Deserialize)]
struct Frame<'a> {
    #[serde(borrow, default)]
    event: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    status: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    message: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    msg: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    id: Option<Cow<'a, str>>,
    #[serde(default)]
    seq: Option<i64>,
    #[serde(borrow, default)]
    reason: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    tokenid: Option<Cow<'a, str>>,
    #[serde(default)]
    idle_timeout: Option<u64>,
}

fn parse(frame: &[u8]) -> Result<Frame<'_>, String> {
    serde_json::from_slice(frame).map_err(|e| {
        format!(
            "not a JSON frame ({e}): {}",
            String::from_utf8_lossy(&frame[..frame.len().min(200)])
        )
    })
}

impl Conn {
    /// Connects and logs in as `user`.
    async fn login(
        target: SocketAddr,
        tls: Option<&Tls>,
        user: &str,
        password: &str,
    ) -> Result<Self, Failed> {
        let stream = crate::net::open(target, tls).await?;
        let mut c = Self {
            stream,
            buf: Vec::with_capacity(READ_CHUNK),
            token: String::new(),
        };
        c.write(format!("auth {user} {password}\r\n").as_bytes())
            .await?;
        let frame = c.next_frame(REPLY_TIMEOUT).await?;
        let reply = parse(&frame)?;
        match reply.tokenid {
            Some(t) if reply.status.as_deref() == Some("OK") => c.token = t.into_owned(),
            _ => {
                return Err(Failed::Refused(reply.message.map_or_else(
                    || "no token in the reply".to_owned(),
                    Cow::into_owned,
                )));
            }
        }
        Ok(c)
    }

    /// Writes `bytes` and flushes them (TLS holds the last record until then).
    async fn write(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.stream
            .write_all(bytes)
            .await
            .map_err(|e| crate::net::io_kind("write", &e))?;
        self.stream
            .flush()
            .await
            .map_err(|e| crate::net::io_kind("write", &e))
    }

    /// The next complete frame, if `buf` holds one (taken out of it).
    fn take_frame(&mut self) -> Option<Vec<u8>> {
        let i = find(&self.buf, b"\r\n\r\n")?;
        let frame = self.buf[..i].to_vec();
        self.buf.drain(..i + 4);
        Some(frame)
    }

    /// Reads once into `buf`; `Ok(false)` when the server closed the connection.
    async fn read_more(&mut self) -> Result<bool, String> {
        let mut chunk = [0u8; READ_CHUNK];
        let n = self
            .stream
            .read(&mut chunk)
            .await
            .map_err(|e| crate::net::io_kind("read", &e))?;
        if self.buf.len() + n > MAX_FRAME {
            return Err("a frame longer than 1 MiB".into());
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n > 0)
    }

    /// The next frame within `timeout`.
    async fn next_frame(&mut self, timeout: Duration) -> Result<Vec<u8>, String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(f) = self.take_frame() {
                return Ok(f);
            }
            match tokio::time::timeout_at(deadline, self.read_more()).await {
                Err(_) => return Err("no reply in time".into()),
                Ok(Ok(true)) => {}
                Ok(Ok(false)) => return Err("the server closed the connection".into()),
                Ok(Err(e)) => return Err(e),
            }
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A watcher once its `watch` was answered: events read before the reply, and the idle timeout.
struct Watching {
    conn: Conn,
    early: Vec<Vec<u8>>,
    idle_timeout: Duration,
}

/// Logs in as `user` and watches.
async fn start_watching(
    target: SocketAddr,
    user: &str,
    opts: &PushOptions,
) -> Result<Watching, Failed> {
    let mut conn = Conn::login(target, opts.tls.as_ref(), user, &opts.password).await?;
    conn.write(format!("watch {}\r\n", conn.token).as_bytes())
        .await?;
    let mut early = Vec::new();
    loop {
        let frame = conn.next_frame(REPLY_TIMEOUT).await?;
        let f = parse(&frame)?;
        if f.event.is_some() {
            early.push(frame);
            continue;
        }
        if f.message.as_deref() != Some("Watching") {
            return Err(Failed::Other(format!(
                "watch refused: {}",
                f.message.as_deref().unwrap_or("?")
            )));
        }
        let idle = f.idle_timeout.unwrap_or(300).max(1);
        return Ok(Watching {
            conn,
            early,
            idle_timeout: Duration::from_secs(idle),
        });
    }
}

/// Tries `step` up to [`SETUP_ATTEMPTS`] times (a refusal is final).
async fn with_retries<T, F, Fut>(step: F) -> Result<T, Failed>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, Failed>>,
{
    let mut last = Failed::Other(String::new());
    for attempt in 0..SETUP_ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
        }
        match tokio::time::timeout(REPLY_TIMEOUT * 2, step()).await {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(Failed::Refused(r))) => return Err(Failed::Refused(r)),
            Ok(Err(f)) => last = f,
            Err(_) => last = Failed::Other("timed out".into()),
        }
    }
    Err(last)
}

fn setup_error(user: String, f: Failed) -> PushBenchError {
    match f {
        Failed::Refused(reason) => PushBenchError::Login { user, reason },
        Failed::Other(reason) => PushBenchError::Setup { user, reason },
    }
}

/// The bench text: `TAG.SENDER.N.NANOS.` padded with `x`: no spaces, no escapes in JSON.
fn message_text(tag: &str, sender: usize, n: u64, nanos: u64, size: usize) -> String {
    let mut s = format!("{tag}.{sender}.{n}.{nanos}.");
    while s.len() < size {
        s.push('x');
    }
    s
}

/// Tag, sender, number and send instant (ns) from a bench text.
fn parse_text(text: &str) -> Option<(&str, usize, u64, u64)> {
    let mut p = text.splitn(5, '.');
    let tag = p.next()?;
    let sender = p.next()?.parse().ok()?;
    let n = p.next()?.parse().ok()?;
    let nanos = p.next()?.parse().ok()?;
    Some((tag, sender, n, nanos))
}

/// A tag unique to this run, so messages of earlier runs are told apart.
fn run_tag() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    format!("p{:x}", nanos ^ (u64::from(std::process::id()) << 40))
}

/// A small xorshift generator: picks recipients, no dependency needed for that.
struct Pick(u64);

impl Pick {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// Shared by senders and watchers.
struct Shared {
    epoch: std::time::Instant,
    tag: String,
    /// Per watcher: messages to it the realm acknowledged.
    due: Vec<AtomicU64>,
}

/// What one sender did.
struct SenderStats {
    /// `(sender, n)` of every message acknowledged with OK.
    ok: Vec<(usize, u64)>,
    /// Send → OK of each, microseconds.
    ok_us: Vec<u64>,
    errors: u64,
    last_end: Instant,
}

/// What one watcher saw.
#[derive(Default)]
struct WatcherStats {
    /// Message ids pushed (of this run).
    ids: HashSet<String>,
    /// `(sender, n)` of every message of this run pushed.
    keys: Vec<(usize, u64)>,
    latencies_us: Vec<u64>,
    duplicated: u64,
    out_of_order: u64,
    stale: u64,
    ended: Option<String>,
    ack_errors: u64,
}

/// Runs the workload against `target`.
pub async fn run(target: SocketAddr, opts: &PushOptions) -> Result<PushReport, PushBenchError> {
    if opts.watchers == 0 || opts.senders == 0 || !(opts.rate.is_finite() && opts.rate > 0.0) {
        return Err(PushBenchError::Options(
            "need at least one watcher, one sender and a rate above 0".into(),
        ));
    }
    let rss_before = match opts.server_pid {
        Some(pid) => Some(ProcSample::read(pid).map_err(|e| PushBenchError::ServerPid(pid, e))?),
        None => None,
    };
    let setup_start = Instant::now();
    let user = |i: usize| format!("{}{i}", opts.user_prefix);
    // The first sender alone: if the users are missing, one failed login says so, where
    // thousands at once would also lock this address out of the realm for a minute.
    let mut senders = Vec::with_capacity(opts.senders);
    for s in 0..opts.senders {
        let name = user(s);
        let c = with_retries(|| Conn::login(target, opts.tls.as_ref(), &name, &opts.password))
            .await
            .map_err(|f| setup_error(name.clone(), f))?;
        senders.push(c);
    }
    let mut watching: Vec<Option<Watching>> = (0..opts.watchers).map(|_| None).collect();
    let limit = Arc::new(Semaphore::new(SETUP_CONCURRENCY));
    let mut set = JoinSet::new();
    for w in 0..opts.watchers {
        let (limit, opts) = (Arc::clone(&limit), opts.clone());
        set.spawn(async move {
            let _permit = limit.acquire_owned().await;
            let name = format!("{}{}", opts.user_prefix, opts.senders + w);
            let r = with_retries(|| start_watching(target, &name, &opts)).await;
            (w, name, r)
        });
    }
    while let Some(done) = set.join_next().await {
        let Ok((w, name, r)) = done else { continue };
        match r {
            Ok(c) => watching[w] = Some(c),
            Err(f) => {
                set.abort_all();
                return Err(setup_error(name, f));
            }
        }
    }
    let setup_s = setup_start.elapsed().as_secs_f64();
    // Let the setup's own traffic settle before memory is read and the clock starts.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_watching = opts.server_pid.and_then(|p| ProcSample::read(p).ok());

    let shared = Arc::new(Shared {
        epoch: std::time::Instant::now(),
        tag: run_tag(),
        due: (0..opts.watchers).map(|_| AtomicU64::new(0)).collect(),
    });
    let (done_tx, done_rx) = watch::channel(false);
    let mut watchers = JoinSet::new();
    for (w, c) in watching.into_iter().enumerate() {
        let Some(c) = c else { continue };
        watchers.spawn(watcher(c, w, Arc::clone(&shared), done_rx.clone()));
    }
    let cpu_start = opts.server_pid.and_then(|p| ProcSample::read(p).ok());
    let start = Instant::now() + Duration::from_millis(20);
    let end = start + opts.duration;
    let mut sending = JoinSet::new();
    for (s, c) in senders.into_iter().enumerate() {
        let share = opts
            .messages
            .map(|m| m / opts.senders as u64 + u64::from((s as u64) < m % opts.senders as u64));
        sending.spawn(sender(
            c,
            s,
            share,
            start,
            end,
            Arc::clone(&shared),
            opts.clone(),
        ));
    }
    let mut ok: HashSet<(usize, u64)> = HashSet::new();
    let mut send_errors = 0;
    let mut last_end = start;
    let mut send_ok = engine::histogram();
    while let Some(done) = sending.join_next().await {
        let Ok(s) = done else { continue };
        ok.extend(s.ok);
        for us in s.ok_us {
            let _ = send_ok.record(us.clamp(1, engine::MAX_LATENCY_US));
        }
        send_errors += s.errors;
        last_end = last_end.max(s.last_end);
    }
    let _ = done_tx.send(true);

    let mut ids: HashSet<String> = HashSet::new();
    let mut pushed_keys: HashSet<(usize, u64)> = HashSet::new();
    let mut latency = engine::histogram();
    let mut report = PushReport {
        mode: "push".into(),
        target: target.to_string(),
        watchers: opts.watchers,
        senders: opts.senders,
        rate_per_s: opts.rate,
        messages_asked: opts.messages,
        duration_s: opts.duration.as_secs_f64(),
        sending_s: last_end.saturating_duration_since(start).as_secs_f64(),
        setup_s,
        sent: ok.len() as u64,
        send_errors,
        pushed: 0,
        lost: 0,
        duplicated: 0,
        out_of_order: 0,
        stale: 0,
        watches_ended: 0,
        watch_end_reason: None,
        ack_errors: 0,
        latency: Latency::of(&latency),
        send_ok: Latency::of(&send_ok),
        server: None,
    };
    while let Some(done) = watchers.join_next().await {
        let Ok(st) = done else {
            report.watches_ended += 1;
            continue;
        };
        for id in st.ids {
            // A message is due to one watcher: the same id at two is a duplicate too.
            if !ids.insert(id) {
                report.duplicated += 1;
            }
        }
        pushed_keys.extend(st.keys);
        for us in st.latencies_us {
            let _ = latency.record(us.clamp(1, engine::MAX_LATENCY_US));
        }
        report.duplicated += st.duplicated;
        report.out_of_order += st.out_of_order;
        report.stale += st.stale;
        report.ack_errors += st.ack_errors;
        if let Some(reason) = st.ended {
            report.watches_ended += 1;
            report.watch_end_reason.get_or_insert(reason);
        }
    }
    report.pushed = ids.len() as u64;
    report.lost = ok.iter().filter(|k| !pushed_keys.contains(k)).count() as u64;
    report.latency = Latency::of(&latency);
    if let (Some(pid), Some(before), Some(watching), Some(cpu_start)) =
        (opts.server_pid, rss_before, rss_watching, cpu_start)
        && let Ok(end) = ProcSample::read(pid)
    {
        let cpu_s = end.ticks.saturating_sub(cpu_start.ticks) as f64 / 100.0;
        report.server = Some(PushServer {
            pid,
            rss_before_kib: before.rss_kib,
            rss_watching_kib: watching.rss_kib,
            rss_per_watcher_bytes: watching.rss_kib.saturating_sub(before.rss_kib) * 1024
                / opts.watchers as u64,
            rss_end_kib: end.rss_kib,
            rss_peak_kib: end.peak_kib,
            cpu_s,
            cpu_us_per_message: cpu_s * 1e6 / report.sent.max(1) as f64,
        });
    }
    Ok(report)
}

/// One sender: `rate / senders` messages a second, each to a watcher picked at random, each
/// waiting for its OK (so the realm commits a sender's messages in their order), until `end` or
/// `share` messages. A sender behind its schedule sends at once; it never sends after `end`.
async fn sender(
    mut c: Conn,
    s: usize,
    share: Option<u64>,
    start: Instant,
    end: Instant,
    shared: Arc<Shared>,
    opts: PushOptions,
) -> SenderStats {
    let every = Duration::from_secs_f64(opts.senders as f64 / opts.rate);
    let mut next = start + every.mul_f64(s as f64 / opts.senders as f64);
    let mut pick = Pick::new(s as u64 + 1);
    let mut st = SenderStats {
        ok: Vec::new(),
        ok_us: Vec::new(),
        errors: 0,
        last_end: start,
    };
    let mut n: u64 = 0;
    while next < end && share.is_none_or(|m| n < m) {
        tokio::time::sleep_until(next).await;
        if Instant::now() >= end {
            break;
        }
        next += every;
        let w = pick.below(opts.watchers);
        let to = format!("{}{}", opts.user_prefix, opts.senders + w);
        let nanos = shared.epoch.elapsed().as_nanos() as u64;
        let text = message_text(&shared.tag, s, n, nanos, opts.size);
        let line = format!("send {} {to} {text}\r\n", c.token);
        n += 1;
        let reply = async {
            c.write(line.as_bytes()).await?;
            let frame = c.next_frame(REPLY_TIMEOUT).await?;
            let f = parse(&frame)?;
            Ok::<bool, String>(f.status.as_deref() == Some("OK"))
        };
        match reply.await {
            Ok(true) => {
                shared.due[w].fetch_add(1, Ordering::SeqCst);
                st.ok.push((s, n - 1));
                let now = shared.epoch.elapsed().as_nanos() as u64;
                st.ok_us.push(now.saturating_sub(nanos) / 1000);
            }
            Ok(false) => st.errors += 1,
            Err(_) => {
                // The connection is unusable; logging in again is not what is measured.
                st.errors += 1;
                break;
            }
        }
    }
    st.last_end = Instant::now();
    st
}

/// One watcher: reads events, acknowledges them as jaring's client does, pings within the idle
/// timeout, and after the senders stop waits (at most [`DRAIN_TIMEOUT`]) for what is due to it.
async fn watcher(
    w: Watching,
    i: usize,
    shared: Arc<Shared>,
    mut done: watch::Receiver<bool>,
) -> WatcherStats {
    let Watching {
        mut conn,
        early,
        idle_timeout,
    } = w;
    let mut st = WatcherStats::default();
    let mut last_of: HashMap<usize, u64> = HashMap::new();
    // Highest private seq read, and acknowledged.
    let (mut seq, mut acked) = (0i64, 0i64);
    let mut unacked = 0u64;
    let mut first_unacked: Option<Instant> = None;
    // Requests (ack, ping) whose reply has not come yet.
    let mut outstanding = 0u64;
    let mut drain_deadline: Option<Instant> = None;
    let mut next_ping = Instant::now() + idle_timeout / 3;
    let mut frames: std::collections::VecDeque<Vec<u8>> = early.into();
    loop {
        while let Some(frame) = frames.pop_front().or_else(|| conn.take_frame()) {
            let f = match parse(&frame) {
                Ok(f) => f,
                Err(e) => {
                    st.ended.get_or_insert(e);
                    return st;
                }
            };
            match f.event.as_deref() {
                Some("private") => {
                    let now = shared.epoch.elapsed().as_nanos() as u64;
                    seq = seq.max(f.seq.unwrap_or(0));
                    unacked += 1;
                    first_unacked.get_or_insert_with(Instant::now);
                    let text = f.msg.as_deref().unwrap_or("");
                    match parse_text(text) {
                        Some((tag, s, n, sent)) if tag == shared.tag => {
                            let id = f.id.as_deref().unwrap_or("").to_owned();
                            if !st.ids.insert(id) {
                                st.duplicated += 1;
                                continue;
                            }
                            let last = last_of.entry(s).or_insert(n);
                            if n < *last {
                                st.out_of_order += 1;
                            }
                            *last = (*last).max(n);
                            st.keys.push((s, n));
                            st.latencies_us.push(now.saturating_sub(sent) / 1000);
                        }
                        _ => st.stale += 1,
                    }
                }
                Some("watch_end" | "closing") => {
                    let reason = f.reason.as_deref().unwrap_or("?").to_owned();
                    st.ended.get_or_insert(reason);
                    return st;
                }
                // Group messages (the bench users may be members of groups): not measured.
                Some(_) => {}
                None => {
                    outstanding = outstanding.saturating_sub(1);
                    if f.status.as_deref() != Some("OK") {
                        st.ack_errors += 1;
                    }
                }
            }
        }
        let due = shared.due[i].load(Ordering::SeqCst);
        let finished = drain_deadline.is_some()
            && (st.keys.len() as u64 >= due || drain_deadline.is_some_and(|d| Instant::now() >= d));
        let ack_due = unacked >= ACK_EVENTS
            || first_unacked.is_some_and(|t| t.elapsed() >= ACK_INTERVAL)
            || (finished && seq > acked);
        if ack_due {
            if seq > acked {
                if let Err(e) = conn
                    .write(format!("ack {} {seq}\r\n", conn.token).as_bytes())
                    .await
                {
                    st.ended.get_or_insert(e);
                    return st;
                }
                acked = seq;
                outstanding += 1;
                next_ping = Instant::now() + idle_timeout / 3;
            }
            unacked = 0;
            first_unacked = None;
        }
        if finished {
            // The last ack's OK, so the next run finds nothing of this one unacknowledged.
            let deadline = Instant::now() + LAST_ACK_TIMEOUT;
            while outstanding > 0 {
                match conn
                    .next_frame(deadline.saturating_duration_since(Instant::now()))
                    .await
                {
                    Ok(frame) => {
                        if let Ok(f) = parse(&frame)
                            && f.event.is_none()
                        {
                            outstanding -= 1;
                            if f.status.as_deref() != Some("OK") {
                                st.ack_errors += 1;
                            }
                        }
                    }
                    Err(_) => {
                        st.ack_errors += outstanding;
                        break;
                    }
                }
            }
            return st;
        }
        let ack_at = first_unacked.map(|t| t + ACK_INTERVAL);
        tokio::select! {
            r = conn.read_more() => match r {
                Ok(true) => {}
                Ok(false) => {
                    st.ended.get_or_insert_with(|| "the server closed the connection".into());
                    return st;
                }
                Err(e) => {
                    st.ended.get_or_insert(e);
                    return st;
                }
            },
            () = tokio::time::sleep_until(ack_at.unwrap_or(next_ping)), if ack_at.is_some() => {}
            () = tokio::time::sleep_until(next_ping) => {
                if let Err(e) = conn.write(format!("ping {}\r\n", conn.token).as_bytes()).await {
                    st.ended.get_or_insert(e);
                    return st;
                }
                outstanding += 1;
                next_ping = Instant::now() + idle_timeout / 3;
            }
            r = done.changed(), if drain_deadline.is_none() => {
                // A closed channel means the run is over just the same.
                let _ = r;
                drain_deadline = Some(Instant::now() + DRAIN_TIMEOUT);
            }
            () = tokio::time::sleep_until(drain_deadline.unwrap_or(next_ping)), if drain_deadline.is_some() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_round_trip_and_carry_the_run_tag() {
        let t = message_text("p1f", 3, 17, 123_456_789, 64);
        assert_eq!(t.len(), 64);
        assert!(!t.contains(' '));
        assert_eq!(parse_text(&t), Some(("p1f", 3, 17, 123_456_789)));
        assert_eq!(parse_text("hello"), None);
        // A short size still identifies the message.
        assert_eq!(
            parse_text(&message_text("a", 1, 2, 3, 1)),
            Some(("a", 1, 2, 3))
        );
        assert_ne!(run_tag(), "");
    }

    #[test]
    fn frames_are_read_with_the_fields_the_watcher_needs() {
        let e = br#"{"event":"private","msg_from":"A","msg_to":"B","msg":"p1.0.3.99.xx","id":"0196","from":"a","to":"b","sent_at":1,"seq":41}"#;
        let f = parse(e).unwrap();
        assert_eq!(f.event.as_deref(), Some("private"));
        assert_eq!(f.seq, Some(41));
        assert_eq!(f.id.as_deref(), Some("0196"));
        assert_eq!(f.msg.as_deref(), Some("p1.0.3.99.xx"));
        let ok = br#"{"status":"OK","message":"Watching","user":"u1","idle_timeout":300,"private_window":1000}"#;
        let f = parse(ok).unwrap();
        assert!(f.event.is_none());
        assert_eq!(f.idle_timeout, Some(300));
        assert!(parse(b"nope").is_err());
    }

    #[test]
    fn picks_stay_in_range_and_spread() {
        let mut p = Pick::new(1);
        let mut seen = [0u32; 10];
        for _ in 0..10_000 {
            seen[p.below(10)] += 1;
        }
        assert!(seen.iter().all(|&n| n > 800), "{seen:?}");
    }
}
