//! The CHAT group workload: M members in one group, each in a live session, S of them sending at
//! a fixed total rate. Every member checks that it received every message exactly once and in
//! each sender's order, and measures how long each took from its send to its arrival.
//!
//! The same generator speaks IRC, so a classic chat server (ngIRCd) can be driven with the same
//! members, senders and rate: NICK/USER/JOIN one channel, PRIVMSG to it. (An IRC server does not
//! echo a message to its sender, so there a message is due to M − 1 members, here to all M.)
//!
//! Messages carry their sender, their number and the instant they were written, so nothing is
//! looked up per message; the reader scans frames by hand rather than parsing JSON, because at
//! hundreds of thousands of events a second the load generator shares the machine's cores with
//! the server it measures.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;
use jaring_runtime::ClientStream;
use serde::Serialize;
use tokio::io::{
    AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, ReadHalf, WriteHalf,
};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::net::Tls;

/// Members unless told otherwise.
pub const DEFAULT_MEMBERS: usize = 1000;
/// Senders (the first members) unless told otherwise.
pub const DEFAULT_SENDERS: usize = 10;
/// Messages per second, all senders together: with 1,000 members, 250 messages a second are
/// 250,000 deliveries a second.
pub const DEFAULT_RATE: u32 = 250;
/// Message text length.
pub const DEFAULT_SIZE: usize = 64;
/// Connections set up at once.
pub const SETUP_CONCURRENCY: usize = 64;
/// After the senders stop, members wait at most this long for what is still due.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Times a member tries to connect and join before the run gives up.
const SETUP_ATTEMPTS: u32 = 4;
/// How long to wait for one setup reply.
const SETUP_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest frame a member accepts.
const MAX_FRAME: usize = 1 << 20;

/// Which protocol the server speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// A jaring realm: `auth`, `group`, then live lines and events.
    Jaring,
    /// An IRC server: NICK/USER, JOIN, PRIVMSG.
    Irc,
}

/// What to run.
#[derive(Debug, Clone)]
pub struct GroupOptions {
    /// The protocol.
    pub protocol: Protocol,
    /// Members (connections), logged in as PREFIX0, PREFIX1, …
    pub members: usize,
    /// The first this many members also send.
    pub senders: usize,
    /// Messages per second, all senders together.
    pub rate: u32,
    /// How long the senders send.
    pub duration: Duration,
    /// Message text length in bytes (at least what the sender, number and time need).
    pub size: usize,
    /// The group (or IRC channel, without `#`); a fresh name per run keeps runs apart.
    pub group: String,
    /// User name prefix (jaring users must exist; IRC nicks need not).
    pub user_prefix: String,
    /// The users' password (jaring).
    pub password: String,
    /// Speak TLS (jaring only: an IRC server is driven in plaintext).
    pub tls: Option<Tls>,
}

impl GroupOptions {
    /// The defaults for `protocol`, with a group name unique to this run.
    pub fn new(protocol: Protocol) -> Self {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Self {
            protocol,
            members: DEFAULT_MEMBERS,
            senders: DEFAULT_SENDERS,
            rate: DEFAULT_RATE,
            duration: Duration::from_secs(10),
            size: DEFAULT_SIZE,
            group: format!("bench{secs}"),
            user_prefix: "u".into(),
            password: "surabaya".into(),
            tls: None,
        }
    }
}

/// What the run measured; `lost` and `duplicated` must be 0.
#[derive(Debug, Clone, Serialize)]
pub struct GroupReport {
    /// The protocol spoken.
    pub protocol: Protocol,
    /// The server.
    pub target: String,
    /// Members in the group.
    pub members: usize,
    /// Of which sending.
    pub senders: usize,
    /// Messages per second asked for.
    pub rate: u32,
    /// Seconds the senders sent.
    pub duration_s: f64,
    /// Seconds logging in and joining took.
    pub setup_s: f64,
    /// Messages sent.
    pub sent: u64,
    /// Deliveries due: each message to each member that should receive it.
    pub expected: u64,
    /// Deliveries received (each counted once).
    pub delivered: u64,
    /// Deliveries per second, from the first send to the last delivery.
    pub deliveries_per_s: f64,
    /// Deliveries due that never came.
    pub lost: u64,
    /// Deliveries that came a second time.
    pub duplicated: u64,
    /// Deliveries that came before an earlier message of the same sender.
    pub out_of_order: u64,
    /// Members whose live session the server ended (or whose connection failed).
    pub members_cut: u64,
    /// Send → receive latency, microseconds.
    pub latency_p50_us: u64,
    /// 90th percentile.
    pub latency_p90_us: u64,
    /// 99th percentile.
    pub latency_p99_us: u64,
    /// Worst.
    pub latency_max_us: u64,
}

/// Why the run could not start.
#[derive(Debug, thiserror::Error)]
pub enum GroupBenchError {
    /// A member could not connect or join.
    #[error("member {member} could not join: {reason}")]
    Setup {
        /// Which member.
        member: usize,
        /// What happened.
        reason: String,
    },
    /// The realm refused a member's login: the bench users are missing or their password is
    /// another.
    #[error(
        "cannot log in as {user}: {reason}; create the bench users first (a realm on this machine gets them made by the bench itself, unless --no-setup; `bench/chat/run_group.sh` shows how) or pass --user-prefix and --password"
    )]
    Login {
        /// The user.
        user: String,
        /// What the realm said.
        reason: String,
    },
    /// The options do not make sense.
    #[error("{0}")]
    Options(String),
}

/// What one member saw.
struct MemberStats {
    /// Per sender: the highest message number seen (−1 before the first).
    last: Vec<i64>,
    distinct: u64,
    duplicated: u64,
    out_of_order: u64,
    cut: bool,
    latency: Histogram<u64>,
    last_arrival: Option<Instant>,
}

/// Shared between senders and members.
struct Shared {
    epoch: Instant,
    sent: Vec<AtomicU64>,
    /// Senders still in their sending loop.
    senders_left: AtomicU64,
    senders_done: AtomicBool,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 2)
        .unwrap_or_else(|_| unreachable!("the bounds are valid constants"))
}

/// Runs the workload against `target`.
pub async fn run(target: SocketAddr, opts: &GroupOptions) -> Result<GroupReport, GroupBenchError> {
    if opts.members == 0 || opts.senders == 0 || opts.senders > opts.members || opts.rate == 0 {
        return Err(GroupBenchError::Options(
            "need at least one member, 1..=members senders and a rate above 0".into(),
        ));
    }
    if opts.tls.is_some() && opts.protocol == Protocol::Irc {
        return Err(GroupBenchError::Options(
            "TLS is for jaring realms; drive an IRC server in plaintext (without --tls)".into(),
        ));
    }
    let setup_start = Instant::now();
    // The first member alone: if the users are missing, one failed login says so, where a
    // thousand at once would also lock this address out of the realm for a minute.
    let probe = tokio::time::timeout(SETUP_TIMEOUT * 4, join(target, 0, opts));
    let first = match probe
        .await
        .unwrap_or_else(|_| Err(Joining::Failed("timed out".into())))
    {
        Ok(c) => c,
        Err(Joining::Refused(reason)) => {
            return Err(GroupBenchError::Login {
                user: format!("{}0", opts.user_prefix),
                reason,
            });
        }
        Err(Joining::Failed(reason)) => return Err(GroupBenchError::Setup { member: 0, reason }),
    };
    let limit = Arc::new(Semaphore::new(SETUP_CONCURRENCY));
    let mut joins = JoinSet::new();
    for i in 1..opts.members {
        let (limit, opts) = (Arc::clone(&limit), opts.clone());
        joins.spawn(async move {
            let _permit = limit.acquire_owned().await;
            // A server busy accepting a thousand connections may refuse one: try again.
            let mut r = Err(Joining::Failed(String::new()));
            for attempt in 0..SETUP_ATTEMPTS {
                if attempt > 0 {
                    tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
                }
                r = tokio::time::timeout(SETUP_TIMEOUT * 4, join(target, i, &opts))
                    .await
                    .unwrap_or_else(|_| Err(Joining::Failed("timed out".into())));
                // A refusal is the realm's answer, not a hiccup: asking again only fails again.
                if !matches!(r, Err(Joining::Failed(_))) {
                    break;
                }
            }
            (i, r)
        });
    }
    let mut conns: Vec<Option<Joined>> = (0..opts.members).map(|_| None).collect();
    conns[0] = Some(first);
    while let Some(done) = joins.join_next().await {
        let Ok((i, r)) = done else { continue };
        match r {
            Ok(c) => conns[i] = Some(c),
            Err(Joining::Refused(reason)) => {
                return Err(GroupBenchError::Login {
                    user: format!("{}{i}", opts.user_prefix),
                    reason,
                });
            }
            Err(Joining::Failed(reason)) => {
                return Err(GroupBenchError::Setup { member: i, reason });
            }
        }
    }
    let setup_s = setup_start.elapsed().as_secs_f64();
    // Let the joins' own traffic settle before the clock starts.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let shared = Arc::new(Shared {
        epoch: Instant::now(),
        sent: (0..opts.senders).map(|_| AtomicU64::new(0)).collect(),
        senders_left: AtomicU64::new(opts.senders as u64),
        senders_done: AtomicBool::new(false),
    });
    let mut members = JoinSet::new();
    let mut senders = JoinSet::new();
    let start = Instant::now();
    let end = start + opts.duration;
    let mut spawner = Spawner {
        members: &mut members,
        senders: &mut senders,
        start,
        end,
        shared: &shared,
        opts,
    };
    for (i, c) in conns.into_iter().enumerate() {
        let Some(joined) = c else {
            continue;
        };
        // Each loop is compiled once per transport, so plaintext runs on the socket's halves.
        match joined {
            Joined::Tcp(read, write, leftover) => spawner.spawn(i, read, write, leftover),
            Joined::Tls(read, write, leftover) => spawner.spawn(i, read, write, leftover),
        }
    }
    tokio::time::sleep_until(end).await;
    // A sender held back by the server may still be in its last write: what members wait for is
    // only known once every sender has stopped (members that stopped waiting earlier would count
    // later messages as lost).
    while shared.senders_left.load(Ordering::SeqCst) > 0 && end.elapsed() < DRAIN_TIMEOUT {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    shared.senders_done.store(true, Ordering::SeqCst);
    let mut stats = Vec::new();
    let drain = tokio::time::timeout(DRAIN_TIMEOUT + Duration::from_secs(1), async {
        while let Some(r) = members.join_next().await {
            if let Ok(s) = r {
                stats.push(s);
            }
        }
    })
    .await;
    if drain.is_err() {
        members.abort_all();
    }
    senders.abort_all();

    let sent_by: Vec<u64> = shared
        .sent
        .iter()
        .map(|s| s.load(Ordering::SeqCst))
        .collect();
    let sent: u64 = sent_by.iter().sum();
    let self_echo = opts.protocol == Protocol::Jaring;
    let due_to = |m: usize| -> u64 {
        sent_by
            .iter()
            .enumerate()
            .filter(|&(s, _)| self_echo || s != m)
            .map(|(_, n)| n)
            .sum()
    };
    let expected: u64 = (0..opts.members).map(due_to).sum();
    let mut latency = histogram();
    let mut report = GroupReport {
        protocol: opts.protocol,
        target: target.to_string(),
        members: opts.members,
        senders: opts.senders,
        rate: opts.rate,
        duration_s: opts.duration.as_secs_f64(),
        setup_s,
        sent,
        expected,
        delivered: 0,
        deliveries_per_s: 0.0,
        lost: 0,
        duplicated: 0,
        out_of_order: 0,
        members_cut: (opts.members - stats.len()) as u64,
        latency_p50_us: 0,
        latency_p90_us: 0,
        latency_p99_us: 0,
        latency_max_us: 0,
    };
    let mut last_arrival = start;
    for (m, s) in &stats {
        report.delivered += s.distinct;
        report.duplicated += s.duplicated;
        report.out_of_order += s.out_of_order;
        report.members_cut += u64::from(s.cut);
        let _ = latency.add(&s.latency);
        if let Some(t) = s.last_arrival {
            last_arrival = last_arrival.max(t);
        }
        let _ = m;
    }
    report.lost = expected.saturating_sub(report.delivered);
    let span = last_arrival.duration_since(start).as_secs_f64().max(1e-3);
    report.deliveries_per_s = report.delivered as f64 / span;
    if !latency.is_empty() {
        report.latency_p50_us = latency.value_at_quantile(0.50);
        report.latency_p90_us = latency.value_at_quantile(0.90);
        report.latency_p99_us = latency.value_at_quantile(0.99);
        report.latency_max_us = latency.max();
    }
    Ok(report)
}

/// Why a member could not join.
enum Joining {
    /// The realm refused the login; its reason.
    Refused(String),
    /// Anything else (the connection, a timeout, the join itself).
    Failed(String),
}

impl From<String> for Joining {
    fn from(reason: String) -> Self {
        Self::Failed(reason)
    }
}

/// What a refusing reply says (its `message`), or the reply itself.
fn refusal(reply: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(reply)
        .ok()
        .and_then(|v| v["message"].as_str().map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(reply).trim().to_owned())
}

/// A member's connection once joined: its halves, and any bytes read past the join.
enum Joined {
    /// Plaintext: the socket's own halves.
    Tcp(OwnedReadHalf, OwnedWriteHalf, Vec<u8>),
    /// TLS: halves that share the session.
    Tls(ReadHalf<ClientStream>, WriteHalf<ClientStream>, Vec<u8>),
}

/// Where the members' loops run, and what they share: reading from the start, sending from
/// `start` until `end`.
struct Spawner<'a> {
    members: &'a mut JoinSet<(usize, MemberStats)>,
    senders: &'a mut JoinSet<()>,
    start: Instant,
    end: Instant,
    shared: &'a Arc<Shared>,
    opts: &'a GroupOptions,
}

impl Spawner<'_> {
    /// Starts member `i`'s loops on the halves of its connection (`leftover`: what was read
    /// past the join): [`member`] on the reading half, [`sender`] on the writing one.
    fn spawn<R, W>(&mut self, i: usize, read: R, write: W, leftover: Vec<u8>)
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let (shared, opts) = (self.shared, self.opts);
        self.members
            .spawn(member(read, leftover, i, Arc::clone(shared), opts.clone()));
        self.senders.spawn(sender(
            write,
            i,
            self.start,
            self.end,
            Arc::clone(shared),
            opts.clone(),
        ));
    }
}

/// Connects member `i` and joins the group.
async fn join(target: SocketAddr, i: usize, opts: &GroupOptions) -> Result<Joined, Joining> {
    let tcp = TcpStream::connect(target)
        .await
        .map_err(|e| e.to_string())?;
    let _ = tcp.set_nodelay(true);
    let mut stream = match &opts.tls {
        None => ClientStream::Tcp(tcp),
        Some(tls) => crate::net::handshake(tcp, tls, SETUP_TIMEOUT)
            .await
            .map_err(|e| format!("TLS handshake: {e}"))?,
    };
    let user = format!("{}{i}", opts.user_prefix);
    let mut buf = Vec::new();
    match opts.protocol {
        Protocol::Jaring => {
            let auth = format!("auth {user} {}\r\n", opts.password);
            send(&mut stream, auth.as_bytes()).await?;
            let reply = read_until(&mut stream, &mut buf, b"\r\n\r\n").await?;
            let Some(token) = field(&reply, b"\"tokenid\":\"") else {
                return Err(Joining::Refused(refusal(&reply)));
            };
            let join = format!(
                "group {} {}\r\n",
                String::from_utf8_lossy(token),
                opts.group
            );
            send(&mut stream, join.as_bytes()).await?;
            let reply = read_until(&mut stream, &mut buf, b"\r\n\r\n").await?;
            if !reply.windows(11).any(|w| w == b"\"status\":\"O") {
                return Err(Joining::Failed(format!(
                    "group refused: {}",
                    refusal(&reply)
                )));
            }
        }
        Protocol::Irc => {
            let hello = format!("NICK {user}\r\nUSER {user} 0 * :{user}\r\n");
            send(&mut stream, hello.as_bytes()).await?;
            loop {
                let line = read_until(&mut stream, &mut buf, b"\r\n").await?;
                if irc_code(&line) == Some(b"001") {
                    break;
                }
                if irc_code(&line).is_some_and(|c| c[0] == b'4') || line.starts_with(b"ERROR") {
                    return Err(Joining::Failed(String::from_utf8_lossy(&line).into_owned()));
                }
            }
            let join = format!("JOIN #{}\r\n", opts.group);
            send(&mut stream, join.as_bytes()).await?;
            loop {
                let line = read_until(&mut stream, &mut buf, b"\r\n").await?;
                if irc_code(&line) == Some(b"366") {
                    break;
                }
                if irc_code(&line).is_some_and(|c| c[0] == b'4') || line.starts_with(b"ERROR") {
                    return Err(Joining::Failed(String::from_utf8_lossy(&line).into_owned()));
                }
            }
        }
    }
    Ok(match stream {
        ClientStream::Tcp(s) => {
            let (r, w) = s.into_split();
            Joined::Tcp(r, w, buf)
        }
        tls @ ClientStream::Tls(_) => {
            let (r, w) = tokio::io::split(tls);
            Joined::Tls(r, w, buf)
        }
    })
}

/// Writes `bytes` and flushes them (TLS holds the last record until then).
async fn send(stream: &mut ClientStream, bytes: &[u8]) -> Result<(), String> {
    stream.write_all(bytes).await.map_err(|e| e.to_string())?;
    stream.flush().await.map_err(|e| e.to_string())
}

/// The numeric reply code of an IRC line (`:server 001 nick …`).
fn irc_code(line: &[u8]) -> Option<&[u8]> {
    let mut parts = line.split(|&b| b == b' ');
    let first = parts.next()?;
    let code = if first.starts_with(b":") {
        parts.next()?
    } else {
        first
    };
    (code.len() == 3 && code.iter().all(u8::is_ascii_digit)).then_some(code)
}

/// Reads until `end`; returns the frame (without `end`), leaving what follows in `buf`.
async fn read_until(
    stream: &mut ClientStream,
    buf: &mut Vec<u8>,
    end: &[u8],
) -> Result<Vec<u8>, String> {
    let mut chunk = [0u8; 16 * 1024];
    loop {
        if let Some(i) = find(buf, end) {
            let frame = buf[..i].to_vec();
            buf.drain(..i + end.len());
            return Ok(frame);
        }
        if buf.len() > MAX_FRAME {
            return Err("frame too long".into());
        }
        let n = tokio::time::timeout(SETUP_TIMEOUT, stream.read(&mut chunk))
            .await
            .map_err(|_| "no reply in time".to_owned())?
            .map_err(|e| e.to_string())?;
        if n == 0 {
            return Err(format!(
                "the server closed the connection: {}",
                String::from_utf8_lossy(buf)
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    let first = needle[0];
    let mut from = 0;
    while let Some(p) = hay[from..].iter().position(|&b| b == first) {
        let i = from + p;
        if hay[i..].starts_with(needle) {
            return Some(i);
        }
        if hay.len() - i < needle.len() {
            return None;
        }
        from = i + 1;
    }
    None
}

/// The string value after `key` (up to the next `"`).
fn field<'a>(frame: &'a [u8], key: &[u8]) -> Option<&'a [u8]> {
    let start = find(frame, key)? + key.len();
    let len = frame[start..].iter().position(|&b| b == b'"')?;
    Some(&frame[start..start + len])
}

/// The bench text: `sender:number:micros:` then padding.
fn parse_text(text: &[u8]) -> Option<(usize, i64, u64)> {
    let mut it = text.split(|&b| b == b':');
    let num = |p: Option<&[u8]>| std::str::from_utf8(p?).ok()?.parse::<u64>().ok();
    let s = num(it.next())? as usize;
    let n = num(it.next())? as i64;
    let t = num(it.next())?;
    Some((s, n, t))
}

async fn sender<W: AsyncWrite + Unpin>(
    mut write: W,
    s: usize,
    start: Instant,
    end: Instant,
    shared: Arc<Shared>,
    opts: GroupOptions,
) {
    if s >= opts.senders {
        // Not a sender: the write half is kept open so the member stays connected.
        let _keep = write;
        std::future::pending::<()>().await;
        return;
    }
    // Each sender sends rate/senders messages a second, at evenly spread instants, staggered.
    let every = Duration::from_secs_f64(opts.senders as f64 / f64::from(opts.rate));
    let mut next = start + every.mul_f64(s as f64 / opts.senders as f64);
    let mut n: u64 = 0;
    let mut line = Vec::with_capacity(opts.size + 64);
    // A sender behind its schedule (the server pushing back) skips what it could not send in
    // time rather than sending after the end.
    while next < end && Instant::now() < end {
        tokio::time::sleep_until(next).await;
        line.clear();
        if opts.protocol == Protocol::Irc {
            line.extend_from_slice(format!("PRIVMSG #{} :", opts.group).as_bytes());
        }
        let at = shared.epoch.elapsed().as_micros() as u64;
        let head = format!("{s}:{n}:{at}:");
        line.extend_from_slice(head.as_bytes());
        line.resize(line.len() + opts.size.saturating_sub(head.len()), b'x');
        line.extend_from_slice(b"\r\n");
        if write.write_all(&line).await.is_err() || write.flush().await.is_err() {
            break;
        }
        n += 1;
        shared.sent[s].store(n, Ordering::SeqCst);
        next += every;
    }
    shared.senders_left.fetch_sub(1, Ordering::SeqCst);
    // Dropping the write half would shut the connection down under this member's reader.
    let _keep = write;
    std::future::pending::<()>().await;
}

async fn member<R: AsyncRead + Unpin>(
    mut read: R,
    mut buf: Vec<u8>,
    m: usize,
    shared: Arc<Shared>,
    opts: GroupOptions,
) -> (usize, MemberStats) {
    let mut st = MemberStats {
        last: vec![-1; opts.senders],
        distinct: 0,
        duplicated: 0,
        out_of_order: 0,
        cut: false,
        latency: histogram(),
        last_arrival: None,
    };
    let irc = opts.protocol == Protocol::Irc;
    let end: &[u8] = if irc { b"\r\n" } else { b"\r\n\r\n" };
    let mut chunk = vec![0u8; 64 * 1024];
    let mut drain_deadline: Option<Instant> = None;
    loop {
        // Handle every complete frame in the buffer.
        let mut consumed = 0;
        while let Some(i) = find(&buf[consumed..], end) {
            let frame = &buf[consumed..consumed + i];
            consumed += i + end.len();
            let text = if irc {
                // `:nick!user@host PRIVMSG #chan :text`
                find(frame, b" PRIVMSG ").and_then(|p| {
                    let rest = &frame[p..];
                    find(rest, b" :").map(|q| &rest[q + 2..])
                })
            } else if frame.starts_with(b"{\"event\":\"message\"") {
                field(frame, b"\"msg\":\"")
            } else {
                if frame.starts_with(b"{\"event\":\"end\"") || frame.starts_with(b"{\"status\"") {
                    st.cut = true;
                }
                None
            };
            let Some((s, n, at)) = text.and_then(parse_text) else {
                continue;
            };
            let Some(last) = st.last.get_mut(s) else {
                continue;
            };
            let now = shared.epoch.elapsed().as_micros() as u64;
            if n <= *last {
                st.duplicated += 1;
                continue;
            }
            if n != *last + 1 {
                st.out_of_order += 1;
            }
            *last = n;
            st.distinct += 1;
            let _ = st.latency.record(now.saturating_sub(at).max(1));
            st.last_arrival = Some(Instant::now());
        }
        buf.drain(..consumed);
        if st.cut {
            return (m, st);
        }
        if shared.senders_done.load(Ordering::SeqCst) {
            let due: u64 = shared
                .sent
                .iter()
                .enumerate()
                .filter(|&(s, _)| !irc || s != m)
                .map(|(_, n)| n.load(Ordering::SeqCst))
                .sum();
            if st.distinct >= due {
                return (m, st);
            }
            let deadline = *drain_deadline.get_or_insert_with(|| Instant::now() + DRAIN_TIMEOUT);
            if Instant::now() >= deadline {
                return (m, st);
            }
        }
        let read_once = tokio::time::timeout(Duration::from_millis(100), read.read(&mut chunk));
        match read_once.await {
            Ok(Ok(0) | Err(_)) => {
                st.cut = true;
                return (m, st);
            }
            Ok(Ok(n)) => {
                if buf.len() + n > MAX_FRAME * 4 {
                    st.cut = true;
                    return (m, st);
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_and_fields_are_found_by_hand() {
        let frame =
            br#"{"event":"message","group":"g","seq":3,"msg":"2:17:12345:xxxx","sent_at":1}"#;
        assert_eq!(field(frame, b"\"msg\":\""), Some(&b"2:17:12345:xxxx"[..]));
        assert_eq!(parse_text(b"2:17:12345:xxxx"), Some((2, 17, 12345)));
        assert_eq!(parse_text(b"nope"), None);
        assert_eq!(find(b"ab\r\n\r\ncd", b"\r\n\r\n"), Some(2));
        assert_eq!(find(b"ab\r\n\r", b"\r\n\r\n"), None);
        assert_eq!(irc_code(b":irc.example 001 u0 :Welcome"), Some(&b"001"[..]));
        assert_eq!(irc_code(b":u1!u1@h PRIVMSG #g :1:2:3:"), None);
    }
}
