//! CHAT workloads against a realm (or any server speaking the lab chat protocol):
//!
//! - `send`: N sender connections, each logged in as its own user, send private messages back to
//!   back, each waiting for its OK (a realm answers OK only after the commit, so the rate is of
//!   durable messages). R receiver connections poll `inbox` for them, and every message carries
//!   the instant it was sent, so the report also says how long messages took from `send` to
//!   `inbox`, and whether every acknowledged message arrived exactly once.
//! - `idle`: N connections, each logged in as its own user, held open for the duration: with the
//!   server's pid, the report says how much memory the server needs per connection.
//!
//! Logging in (connect, `auth`) happens before the clock starts, so neither password hashing nor
//! the server's login limits are part of what is measured.

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use jaring_proto::chat::ReplyFramer;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::engine::{
    self, Delivery, Handshakes, Latency, LoadOptions, ProcSample, Report, ServerUsage, Worker,
};
use crate::net::Tls;

/// Message text length unless `--size` says otherwise: a short chat line.
pub const DEFAULT_SIZE: usize = 64;

/// Longest `--size`: the request line (command, token, recipient, text) stays under a realm's
/// default 64 KiB line limit.
pub const MAX_SIZE: usize = 60 * 1024;

/// The bench users are this prefix followed by a number (`u0`, `u1`, …), as the Python lab
/// server's EXTRA_USERS option creates them.
pub const DEFAULT_USER_PREFIX: &str = "u";

/// The bench users' password (the lab's).
pub const DEFAULT_PASSWORD: &str = "surabaya";

/// Connections logged in at once while setting up; enough to be quick, few enough that a server
/// with a small listen backlog keeps up.
pub const SETUP_CONCURRENCY: usize = 64;

/// How long a worker waits for a connect or a reply before counting an error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// After an ERROR reply, a sender pauses this long so a refusing server does not become a spin.
const ERROR_PAUSE: Duration = Duration::from_millis(10);

/// After an empty inbox a receiver waits this long before asking again, so idle polling does not
/// eat the server's CPU; a non-empty inbox is asked again at once.
pub const POLL_PAUSE: Duration = Duration::from_millis(1);

/// After the senders stop, receivers keep polling at most this long for acknowledged messages.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Most sends a sender keeps in flight with `--pipeline`.
pub const MAX_PIPELINE: usize = 1024;

/// Idle connections are released this long (at most a quarter of the run) before the end.
const RELEASE_EARLY: Duration = Duration::from_millis(500);

/// Largest reply a bench connection accepts (a realm caps an inbox reply at 1 MiB of text).
const MAX_REPLY: usize = 16 * 1024 * 1024;

/// Which CHAT workload to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Senders send private messages back to back; receivers poll their inboxes.
    Send,
    /// Logged-in connections held open, doing nothing.
    Idle,
}

impl Mode {
    /// The mode's name in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Send => "send",
            Self::Idle => "idle",
        }
    }
}

/// What a CHAT run needs besides the engine's options.
#[derive(Debug, Clone)]
pub struct ChatOptions {
    /// The workload.
    pub mode: Mode,
    /// Message text length in bytes (at least the few bytes that identify and time a message).
    pub size: usize,
    /// Receiver connections in `send` mode; sender `i` writes to receiver `i % receivers`.
    pub receivers: usize,
    /// Bench users are `{user_prefix}{n}`: senders first, then receivers.
    pub user_prefix: String,
    /// Every bench user's password.
    pub password: String,
    /// The server's process id, for its CPU time and memory (read from `/proc`).
    pub server_pid: Option<u32>,
    /// Across a federation link: receivers log in to this other realm (its client address and
    /// name), and senders write to `{user}@{realm}` on their own realm.
    pub peer: Option<(SocketAddr, String)>,
    /// Only send: no receiver logs in or reads (to build a backlog while the peer realm is down).
    pub senders_only: bool,
    /// Sends each sender keeps in flight (1: wait for each OK before the next send).
    pub pipeline: usize,
    /// Speak TLS on every connection (the realm serves it on its client port).
    pub tls: Option<Tls>,
    /// Over the web port's WebSocket instead of the chat port (send and idle modes).
    pub ws: Option<crate::net::WsTarget>,
}

impl ChatOptions {
    /// Default options for `mode`.
    pub fn new(mode: Mode) -> Self {
        Self {
            mode,
            size: DEFAULT_SIZE,
            receivers: 0,
            user_prefix: DEFAULT_USER_PREFIX.to_owned(),
            password: DEFAULT_PASSWORD.to_owned(),
            server_pid: None,
            peer: None,
            senders_only: false,
            pipeline: 1,
            tls: None,
            ws: None,
        }
    }

    /// Receivers for `senders` senders when none were asked for: one per ten senders.
    pub fn receivers_for(&self, senders: usize) -> usize {
        if self.receivers > 0 {
            self.receivers
        } else {
            senders.div_ceil(10).max(1)
        }
    }
}

/// Why a run could not start.
#[derive(Debug, thiserror::Error)]
pub enum ChatBenchError {
    /// A bench connection could not log in.
    #[error(
        "cannot log in as {user} on the realm at {at}: {reason}; create the bench users there first (a realm on this machine gets them made by the bench itself, unless --no-setup; `bench/chat/run.sh` shows how) or pass --user-prefix and --password"
    )]
    Login {
        /// The user.
        user: String,
        /// The realm's address.
        at: SocketAddr,
        /// What went wrong.
        reason: String,
    },
    /// The server's process could not be read.
    #[error("cannot read /proc/{0}: is --server-pid the server's process id on this machine?")]
    ServerPid(u32, #[source] std::io::Error),
}

/// One logged-in connection with its reply framer.
struct Client {
    stream: crate::net::BenchStream,
    framer: ReplyFramer,
    buf: Vec<u8>,
    line: Vec<u8>,
    token: String,
    /// Idle mode: how long the connection's check took, or why it failed.
    checked: Result<Duration, String>,
}

impl Client {
    async fn login(
        target: SocketAddr,
        tls: Option<&Tls>,
        ws: Option<&crate::net::WsTarget>,
        user: &str,
        password: &str,
    ) -> Result<Self, String> {
        let stream = crate::net::BenchStream::open(target, tls, ws).await?;
        let mut client = Self {
            stream,
            framer: ReplyFramer::new(MAX_REPLY),
            buf: vec![0; 64 * 1024],
            line: Vec::new(),
            token: String::new(),
            checked: Err("not checked".to_owned()),
        };
        client
            .line
            .extend_from_slice(format!("auth {user} {password}\r\n").as_bytes());
        let reply = client.call().await?;
        match reply.get("tokenid").and_then(|t| t.as_str()) {
            Some(t) if ok(&reply) => client.token = t.to_owned(),
            _ => return Err(error_text(&reply)),
        }
        // The idle mode holds thousands of these: give the setup buffer back.
        client.buf = vec![0; 4096];
        Ok(client)
    }

    /// Sends `self.line` and waits for one reply.
    async fn call(&mut self) -> Result<serde_json::Value, String> {
        self.flush().await?;
        self.reply().await
    }

    /// Sends `self.line` (whatever requests it holds).
    async fn flush(&mut self) -> Result<(), String> {
        let sent = async {
            self.stream.write_all(&self.line).await?;
            // TLS holds the last record until flushed; on TCP this returns at once.
            self.stream.flush().await
        };
        sent.await.map_err(|e| format!("write: {}", e.kind()))?;
        self.line.clear();
        Ok(())
    }

    /// Waits for the next reply.
    async fn reply(&mut self) -> Result<serde_json::Value, String> {
        self.reply_with(|bytes| serde_json::from_slice(bytes).map_err(|e| e.to_string()))
            .await?
    }

    /// Waits for the next reply and hands its bytes to `read`: the hot loops read the few
    /// fields they need in place ([`Reply`]); building a [`serde_json::Value`] tree for every
    /// reply was a tenth of the generator's samples in a profile (allocations, map inserts).
    async fn reply_with<T>(&mut self, mut read: impl FnMut(&[u8]) -> T) -> Result<T, String> {
        loop {
            match self.framer.poll_reply_with(&mut read) {
                Ok(Some(v)) => return Ok(v),
                Ok(None) => {}
                Err(e) => return Err(e.to_string()),
            }
            let read = tokio::time::timeout(REQUEST_TIMEOUT, self.stream.read(&mut self.buf));
            match read.await {
                Err(_) => return Err("reply timeout".to_owned()),
                Ok(Ok(0)) => return Err("closed by server".to_owned()),
                Ok(Ok(n)) => self.framer.handle_input(&self.buf[..n]),
                Ok(Err(e)) => return Err(format!("read: {}", e.kind())),
            }
        }
    }
}

fn ok(reply: &serde_json::Value) -> bool {
    reply.get("status").and_then(|s| s.as_str()) == Some("OK")
}

fn error_text(reply: &serde_json::Value) -> String {
    reply
        .get("message")
        .and_then(|m| m.as_str())
        .map_or_else(|| "unexpected reply".to_owned(), str::to_owned)
}

/// What the send and receive loops read of a reply, borrowed from its bytes where JSON allows
/// (a string without escapes): its status, an ERROR's text, and an inbox's message texts. Every
/// other field is skipped.
#[derive(serde::Deserialize)]
struct Reply<'a> {
    #[serde(borrow)]
    status: Cow<'a, str>,
    #[serde(borrow, default)]
    message: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    messages: Option<Texts<'a>>,
}

impl<'a> Reply<'a> {
    /// The reply in `bytes`, or what is wrong with it.
    fn parse(bytes: &'a [u8]) -> Result<Self, String> {
        serde_json::from_slice(bytes).map_err(|e| format!("reply is not JSON: {e}"))
    }

    fn ok(&self) -> bool {
        self.status == "OK"
    }

    /// An ERROR's text.
    fn error_text(&self) -> String {
        self.message
            .as_deref()
            .map_or_else(|| "unexpected reply".to_owned(), str::to_owned)
    }
}

/// The `msg` of every message in an inbox reply's `messages` (an object of lists by sender; the
/// senders are told apart by the text itself, see [`message_text`]).
#[derive(Default)]
struct Texts<'a>(Vec<Cow<'a, str>>);

impl<'de: 'a, 'a> serde::Deserialize<'de> for Texts<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Visitor<'a> {
            type Value = Texts<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object of message lists")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Texts<'a>, A::Error> {
                let mut texts = Vec::new();
                while let Some((_, list)) =
                    map.next_entry::<serde::de::IgnoredAny, Vec<Text<'a>>>()?
                {
                    texts.extend(list.into_iter().map(|t| t.msg));
                }
                Ok(Texts(texts))
            }
        }
        d.deserialize_map(Visitor(std::marker::PhantomData))
    }
}

/// One inbox message, of which only the text is read.
#[derive(serde::Deserialize)]
struct Text<'a> {
    #[serde(borrow)]
    msg: Cow<'a, str>,
}

/// Logs in `count` connections as users `first..first + count`, at most [`SETUP_CONCURRENCY`]
/// at a time.
async fn login_all(
    target: SocketAddr,
    opts: &ChatOptions,
    first: usize,
    count: usize,
) -> Result<Vec<Client>, ChatBenchError> {
    let mut clients: Vec<Option<Client>> = (0..count).map(|_| None).collect();
    if count == 0 {
        return Ok(Vec::new());
    }
    // The first user alone: if the bench users are missing, one failed login says so, where
    // hundreds at once would also lock this address out of the realm for a minute.
    let user = format!("{}{first}", opts.user_prefix);
    match Client::login(
        target,
        opts.tls.as_ref(),
        opts.ws.as_ref(),
        &user,
        &opts.password,
    )
    .await
    {
        Ok(c) => clients[0] = Some(c),
        Err(reason) => {
            return Err(ChatBenchError::Login {
                user,
                at: target,
                reason,
            });
        }
    }
    let permits = Arc::new(Semaphore::new(SETUP_CONCURRENCY));
    let mut set = JoinSet::new();
    for n in first + 1..first + count {
        let user = format!("{}{n}", opts.user_prefix);
        let password = opts.password.clone();
        let permits = Arc::clone(&permits);
        let tls = opts.tls.clone();
        let ws = opts.ws.clone();
        set.spawn(async move {
            let _permit = permits.acquire_owned().await;
            let r = Client::login(target, tls.as_ref(), ws.as_ref(), &user, &password).await;
            (n, user, r)
        });
    }
    while let Some(joined) = set.join_next().await {
        let Ok((n, user, r)) = joined else { continue };
        match r {
            Ok(c) => clients[n - first] = Some(c),
            Err(reason) => {
                set.abort_all();
                return Err(ChatBenchError::Login {
                    user,
                    at: target,
                    reason,
                });
            }
        }
    }
    Ok(clients.into_iter().flatten().collect())
}

/// Runs a CHAT workload against `target`.
pub async fn run(
    target: SocketAddr,
    opts: &ChatOptions,
    load: &LoadOptions,
) -> Result<Report, ChatBenchError> {
    let rss_before = match opts.server_pid {
        Some(pid) => Some(ProcSample::read(pid).map_err(|e| ChatBenchError::ServerPid(pid, e))?),
        None => None,
    };
    match opts.mode {
        Mode::Send => send(target, opts, load).await,
        Mode::Idle => idle(target, opts, load, rss_before).await,
    }
}

/// How fast a realm's federation outbox drained, from [`drain`].
#[derive(Debug, Clone, serde::Serialize)]
pub struct DrainReport {
    /// The realm watched, `host:port`.
    pub target: String,
    /// Messages waiting in its outboxes when watching began.
    pub backlog: u64,
    /// Messages still waiting at the end (0 unless it timed out).
    pub left: u64,
    /// Seconds from the first drop of the outbox to empty (or to the timeout).
    pub seconds: f64,
    /// Messages delivered per second while draining.
    pub msgs_per_s: f64,
}

/// Watches `target`'s federation outboxes (via `realms`, logged in as the first bench user) until
/// they are empty or `timeout` passes, and says how fast they drained. Start it, then bring the
/// peer back. `stop` ends the watch early, reporting what drained until then.
pub async fn drain(
    target: SocketAddr,
    opts: &ChatOptions,
    timeout: Duration,
    stop: &crate::engine::Stop,
) -> Result<DrainReport, ChatBenchError> {
    let user = format!("{}0", opts.user_prefix);
    let mut c = Client::login(target, opts.tls.as_ref(), None, &user, &opts.password)
        .await
        .map_err(|reason| ChatBenchError::Login {
            user: user.clone(),
            at: target,
            reason,
        })?;
    let backlog = outbox(&mut c).await.unwrap_or(0);
    let deadline = Instant::now() + timeout;
    let mut started = None;
    let mut left = backlog;
    let mut polled = Instant::now();
    while left > 0 && Instant::now() < deadline && !stop.is_set() {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let before = polled;
        polled = Instant::now();
        let Some(now) = outbox(&mut c).await else {
            continue;
        };
        // Draining began at some point since the previous poll: count from that poll, so the
        // rate is never overstated.
        if now < left && started.is_none() {
            started = Some(before);
        }
        left = now.min(backlog);
    }
    let seconds = started.map_or(0.0, |s| s.elapsed().as_secs_f64());
    Ok(DrainReport {
        target: target.to_string(),
        backlog,
        left,
        seconds,
        msgs_per_s: (backlog - left) as f64 / seconds.max(1e-9),
    })
}

/// Messages waiting in every federation outbox of the client's realm, or `None` if it did not say.
async fn outbox(c: &mut Client) -> Option<u64> {
    c.line
        .extend_from_slice(format!("realms {}\r\n", c.token).as_bytes());
    let r = c.call().await.ok()?;
    Some(
        r["peers"]
            .as_array()?
            .iter()
            .filter_map(|p| p["outbox"].as_u64())
            .sum(),
    )
}

/// Shared slots the engine's workers take their logged-in connection from.
type Slots = Arc<Vec<Mutex<Option<Client>>>>;

fn slots(clients: Vec<Client>) -> Slots {
    Arc::new(clients.into_iter().map(|c| Mutex::new(Some(c))).collect())
}

fn take(slots: &Slots, i: usize) -> Option<Client> {
    slots
        .get(i)?
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take()
}

/// The text of message `seq` from sender `sender`, sent `sent_us` after the run's epoch, padded
/// with `x` to `size` bytes: no spaces, so servers that re-join words (the lab's) keep it intact.
fn message_text(sender: usize, seq: u64, sent_us: u64, size: usize) -> String {
    let mut s = format!("{sender}.{seq}.{sent_us}.");
    while s.len() < size {
        s.push('x');
    }
    s
}

/// Sender, sequence number and send instant from a message text.
fn parse_text(text: &str) -> Option<(usize, u64, u64)> {
    let mut parts = text.trim_start_matches(' ').splitn(4, '.');
    let sender = parts.next()?.parse().ok()?;
    let seq = parts.next()?.parse().ok()?;
    let sent_us = parts.next()?.parse().ok()?;
    Some((sender, seq, sent_us))
}

/// What one receiver saw.
#[derive(Default)]
struct Received {
    latencies: Vec<u64>,
    duplicates: u64,
    /// Messages seen before an earlier one from the same sender (should never happen).
    out_of_order: u64,
    errors: Vec<String>,
}

/// For each sender, how many of its messages were acknowledged (its sequence numbers run from 0).
type Acked = Arc<Vec<AtomicU64>>;

async fn send(
    target: SocketAddr,
    opts: &ChatOptions,
    load: &LoadOptions,
) -> Result<Report, ChatBenchError> {
    let senders = load.connections;
    let receivers = opts.receivers_for(senders);
    let (receiver_target, suffix) = match &opts.peer {
        Some((addr, realm)) => (*addr, format!("@{realm}")),
        None => (target, String::new()),
    };
    let sender_clients = login_all(target, opts, 0, senders).await?;
    let receiver_clients = if opts.senders_only {
        Vec::new()
    } else {
        login_all(receiver_target, opts, senders, receivers).await?
    };
    let handshakes = opts
        .tls
        .as_ref()
        .map(|_| handshakes_of(sender_clients.iter().chain(&receiver_clients)));
    let receiver_names: Arc<Vec<String>> = Arc::new(
        (senders..senders + receivers)
            .map(|n| format!("{}{n}{suffix}", opts.user_prefix))
            .collect(),
    );
    let mode = if opts.peer.is_some() {
        "cross-realm"
    } else {
        Mode::Send.as_str()
    };
    let acked: Acked = Arc::new((0..senders).map(|_| AtomicU64::new(0)).collect());
    let epoch = std::time::Instant::now();
    let (senders_done, senders_done_rx) = watch::channel(false);
    let mut receiving = JoinSet::new();
    for (r, client) in receiver_clients.into_iter().enumerate() {
        let mine: Vec<usize> = (r..senders).step_by(receivers).collect();
        receiving.spawn(receive(
            client,
            mine,
            Arc::clone(&acked),
            epoch,
            senders_done_rx.clone(),
        ));
    }

    let usage_start = sample(opts.server_pid);
    let slots = slots(sender_clients);
    let size = opts.size;
    let pipeline = opts.pipeline;
    let mut report = engine::run("chat", mode, &target.to_string(), load, {
        let acked = Arc::clone(&acked);
        move |i, worker| {
            let client = take(&slots, i);
            let to = receiver_names[i % receivers].clone();
            let acked = Arc::clone(&acked);
            async move {
                match client {
                    Some(c) => send_loop(c, i, &to, size, pipeline, epoch, &acked, worker).await,
                    None => worker,
                }
            }
        }
    })
    .await;
    let usage_end = sample(opts.server_pid);
    let _ = senders_done.send(true);

    let mut merged = engine::histogram();
    let (mut delivered, mut duplicates, mut out_of_order) = (0, 0, 0);
    let mut receive_errors: Vec<String> = Vec::new();
    while let Some(joined) = receiving.join_next().await {
        let Ok(r) = joined else { continue };
        delivered += r.latencies.len() as u64;
        for us in r.latencies {
            let _ = merged.record(us.clamp(1, engine::MAX_LATENCY_US));
        }
        duplicates += r.duplicates;
        out_of_order += r.out_of_order;
        receive_errors.extend(r.errors);
    }
    let acknowledged: u64 = acked.iter().map(|a| a.load(Ordering::Relaxed)).sum();
    report.delivery = (!opts.senders_only).then(|| Delivery {
        receivers,
        acknowledged,
        delivered,
        missing: acknowledged.saturating_sub(delivered),
        duplicates,
        out_of_order,
        latency: Latency::of(&merged),
    });
    for kind in receive_errors {
        report.add_error(format!("inbox: {kind}"));
    }
    report.tls = handshakes;
    report.server = usage(
        opts.server_pid,
        usage_start,
        usage_end,
        report.requests,
        None,
    );
    Ok(report)
}

#[allow(clippy::too_many_arguments)]
async fn send_loop(
    mut c: Client,
    i: usize,
    to: &str,
    size: usize,
    pipeline: usize,
    epoch: std::time::Instant,
    acked: &Acked,
    mut w: Worker,
) -> Worker {
    let mut seq = 0u64;
    // When each send in flight was written, oldest first; replies come in the same order.
    let mut in_flight = std::collections::VecDeque::with_capacity(pipeline);
    loop {
        while !w.done() && in_flight.len() < pipeline.max(1) {
            let Some(t0) = w.start_request().await else {
                break;
            };
            // From when it was due, as its send latency is (the same instant without --rate).
            let sent_us = t0.into_std().saturating_duration_since(epoch).as_micros() as u64;
            let text = message_text(i, seq + in_flight.len() as u64, sent_us, size);
            c.line
                .extend_from_slice(format!("send {} {to} {text}\r\n", c.token).as_bytes());
            in_flight.push_back(t0);
        }
        if !c.line.is_empty()
            && let Err(kind) = c.flush().await
        {
            w.error(format!("send: {kind}"));
            break;
        }
        let Some(t0) = in_flight.pop_front() else {
            break;
        };
        let reply = c
            .reply_with(|bytes| {
                let reply = Reply::parse(bytes)?;
                Ok(if reply.ok() {
                    None
                } else {
                    Some(reply.error_text())
                })
            })
            .await
            .and_then(|parsed| parsed);
        match reply {
            Ok(None) => {
                w.record(t0.elapsed());
                seq += 1;
                acked[i].store(seq, Ordering::Relaxed);
            }
            Ok(Some(error)) if in_flight.is_empty() => {
                // Not stored: the next message reuses the sequence number.
                w.error(format!("send: {error}"));
                tokio::time::sleep(ERROR_PAUSE).await;
            }
            Ok(Some(error)) => {
                // The sends behind it already carry later sequence numbers: stop rather than
                // leave a gap the receivers would count as lost.
                w.error(format!("send: {error}"));
                break;
            }
            Err(kind) => {
                // The connection is unusable and logging in again is not what is measured.
                w.error(format!("send: {kind}"));
                break;
            }
        }
    }
    w
}

async fn receive(
    mut c: Client,
    mine: Vec<usize>,
    acked: Acked,
    epoch: std::time::Instant,
    mut senders_done: watch::Receiver<bool>,
) -> Received {
    let mut got = Received::default();
    // The next sequence number expected from each of this receiver's senders.
    let mut next: HashMap<usize, u64> = mine.iter().map(|&s| (s, 0)).collect();
    let mut drain_deadline = None;
    loop {
        c.line
            .extend_from_slice(format!("inbox {}\r\n", c.token).as_bytes());
        if let Err(kind) = c.flush().await {
            got.errors.push(kind);
            break;
        }
        let mut count = 0;
        let read = c.reply_with(|bytes| {
            let reply = Reply::parse(bytes)?;
            if !reply.ok() {
                return Err(reply.error_text());
            }
            let now_us = epoch.elapsed().as_micros() as u64;
            for text in reply.messages.unwrap_or_default().0 {
                let Some((sender, seq, sent_us)) = parse_text(&text) else {
                    continue;
                };
                let Some(expected) = next.get_mut(&sender) else {
                    continue;
                };
                count += 1;
                if seq < *expected {
                    got.duplicates += 1;
                    continue;
                }
                if seq > *expected {
                    got.out_of_order += 1;
                }
                *expected = seq + 1;
                got.latencies.push(now_us.saturating_sub(sent_us));
            }
            Ok(())
        });
        if let Err(e) = read.await.and_then(|r| r) {
            got.errors.push(e);
            break;
        }
        if *senders_done.borrow() {
            let deadline = *drain_deadline.get_or_insert_with(|| Instant::now() + DRAIN_TIMEOUT);
            let complete = mine
                .iter()
                .all(|s| next[s] >= acked[*s].load(Ordering::Relaxed));
            if complete || Instant::now() >= deadline {
                acknowledge(&mut c, &mut got).await;
                break;
            }
        }
        if count == 0 {
            tokio::select! {
                () = tokio::time::sleep(POLL_PAUSE) => {}
                _ = senders_done.changed() => {}
            }
        }
    }
    got
}

/// Sends one more request, with no effect of its own, so the realm counts the last inbox reply
/// as delivered (it does once the connection sends its next request); otherwise the next run
/// with the same users would be handed those messages again.
async fn acknowledge(c: &mut Client, got: &mut Received) {
    c.line
        .extend_from_slice(format!("realms {}\r\n", c.token).as_bytes());
    if let Err(kind) = c.flush().await {
        got.errors.push(kind);
        return;
    }
    if let Err(e) = c.reply_with(|_| ()).await {
        got.errors.push(e);
    }
}

async fn idle(
    target: SocketAddr,
    opts: &ChatOptions,
    load: &LoadOptions,
    rss_before: Option<ProcSample>,
) -> Result<Report, ChatBenchError> {
    let mut clients = login_all(target, opts, 0, load.connections).await?;
    let handshakes = opts.tls.as_ref().map(|_| handshakes_of(&clients));
    check_all(&mut clients).await;
    let slots = slots(clients);
    // Every connection is logged in and has answered by now: memory is read halfway through.
    let halfway = Instant::now() + load.duration / 2;
    let sampler = opts.server_pid.map(|pid| {
        tokio::spawn(async move {
            tokio::time::sleep_until(halfway).await;
            ProcSample::read(pid).ok()
        })
    });
    // Connections are let go a little before the engine's deadline: thousands of workers all
    // finishing at once on a busy generator could otherwise miss the engine's grace period.
    let release = Instant::now() + load.duration - (load.duration / 4).min(RELEASE_EARLY);
    let usage_start = sample(opts.server_pid);
    let mut report = engine::run(
        "chat",
        Mode::Idle.as_str(),
        &target.to_string(),
        load,
        move |i, worker| {
            let client = take(&slots, i);
            async move {
                match client {
                    Some(c) => hold(c, release, worker).await,
                    None => worker,
                }
            }
        },
    )
    .await;
    let mut usage_end = match sampler {
        Some(s) => s.await.ok().flatten(),
        None => None,
    };
    if let (Some(end), Some(last)) = (&mut usage_end, sample(opts.server_pid)) {
        // CPU over the whole hold; memory from halfway, while every connection was open.
        end.ticks = last.ticks;
    }
    report.server = usage(
        opts.server_pid,
        usage_start,
        usage_end,
        report.requests,
        rss_before,
    );
    report.tls = handshakes;
    Ok(report)
}

/// Proves each connection is logged in with one `inbox` (before the clock starts, so a slow
/// server has all the time it needs), keeping how long it took.
async fn check_all(clients: &mut Vec<Client>) {
    let permits = Arc::new(Semaphore::new(SETUP_CONCURRENCY));
    let mut set = JoinSet::new();
    for mut c in clients.drain(..) {
        let permits = Arc::clone(&permits);
        set.spawn(async move {
            let _permit = permits.acquire_owned().await;
            c.line
                .extend_from_slice(format!("inbox {}\r\n", c.token).as_bytes());
            let t0 = Instant::now();
            c.checked = match c.call().await {
                Ok(reply) if ok(&reply) => Ok(t0.elapsed()),
                Ok(reply) => Err(format!("inbox: {}", error_text(&reply))),
                Err(kind) => Err(format!("inbox: {kind}")),
            };
            c
        });
    }
    while let Some(joined) = set.join_next().await {
        if let Ok(c) = joined {
            clients.push(c);
        }
    }
}

/// One idle connection: holds still until the end; it counts as a request (with the latency of
/// its check) if it answered its check and the server kept it open to the end.
async fn hold(mut c: Client, release: Instant, mut w: Worker) -> Worker {
    let checked = match std::mem::replace(&mut c.checked, Err(String::new())) {
        Ok(latency) => latency,
        Err(kind) => {
            w.error(kind);
            return w;
        }
    };
    let mut byte = [0u8; 1];
    let clock = w.clock();
    // Held until `release`, or until the run is stopped early: either way the connection lasted.
    let held = tokio::select! {
        r = tokio::time::timeout_at(release, c.stream.read(&mut byte)) => r.ok(),
        () = clock.stopped() => None,
    };
    match held {
        None => w.record(checked),
        Some(Ok(0)) => w.error("closed by server while idle"),
        Some(Ok(_)) => w.error("unexpected data while idle"),
        Some(Err(e)) => w.error(format!("read while idle: {}", e.kind())),
    }
    w
}

/// The TLS handshakes of the connections logged in before the run (chat connects them all
/// then).
fn handshakes_of<'a>(clients: impl IntoIterator<Item = &'a Client>) -> Handshakes {
    let mut h = Handshakes::default();
    for c in clients {
        h.add(c.stream.resumed());
    }
    h
}

fn sample(pid: Option<u32>) -> Option<ProcSample> {
    ProcSample::read(pid?).ok()
}

fn usage(
    pid: Option<u32>,
    start: Option<ProcSample>,
    end: Option<ProcSample>,
    requests: u64,
    before: Option<ProcSample>,
) -> Option<ServerUsage> {
    Some(ServerUsage::between(
        pid?,
        &start?,
        &end?,
        requests,
        before.as_ref(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_text_round_trips_and_has_no_spaces() {
        let t = message_text(12, 34, 56_789, 64);
        assert_eq!(t.len(), 64);
        assert!(!t.contains(' '));
        assert_eq!(parse_text(&t), Some((12, 34, 56_789)));
        // The lab server re-joins words with a leading space.
        assert_eq!(parse_text(&format!(" {t}")), Some((12, 34, 56_789)));
        assert_eq!(parse_text("hello"), None);
    }

    #[test]
    fn replies_are_read_in_place() {
        let sent = br#"{"status":"OK","message":"Message Sent","id":"0199"}"#;
        let r = Reply::parse(sent).unwrap();
        assert!(r.ok());
        let refused = br#"{"status": "ERROR", "message": "Token Tidak Ditemukan"}"#;
        assert_eq!(
            Reply::parse(refused).unwrap().error_text(),
            "Token Tidak Ditemukan"
        );
        // Two senders' lists, a text with an escape (owned) and one without (borrowed), and
        // the fields a realm adds, skipped.
        let inbox = br#"{"status": "OK", "messages": {"u1": [{"msg_from": "U 1", "msg_to": "u9",
            "msg": "1.0.5.xx", "id": "a", "sent_at": 3}], "u2": [{"msg": "2.0.6.x"},
            {"msg": "2.1.7.x"}]}, "more": false}"#;
        let texts = Reply::parse(inbox).unwrap().messages.unwrap().0;
        assert_eq!(texts, ["1.0.5.xx", "2.0.6.x", "2.1.7.x"]);
        assert!(matches!(texts[1], Cow::Borrowed(_)));
        let empty = br#"{"status": "OK", "messages": {}}"#;
        assert!(Reply::parse(empty).unwrap().messages.unwrap().0.is_empty());
        assert!(Reply::parse(b"{\"status\": 1}").is_err());
    }

    #[test]
    fn a_short_size_still_identifies_the_message() {
        let t = message_text(1, 2, 3, 1);
        assert_eq!(parse_text(&t), Some((1, 2, 3)));
    }

    #[test]
    fn receivers_default_to_one_per_ten_senders() {
        let o = ChatOptions::new(Mode::Send);
        assert_eq!(o.receivers_for(1), 1);
        assert_eq!(o.receivers_for(100), 10);
        assert_eq!(o.receivers_for(101), 11);
        let o = ChatOptions {
            receivers: 3,
            ..ChatOptions::new(Mode::Send)
        };
        assert_eq!(o.receivers_for(100), 3);
    }
}
