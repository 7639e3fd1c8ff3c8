//! The async core: one task owns the connection and everything the client knows (token, cursors,
//! where plain lines go), takes typed lines from the input thread, frames from the connection's
//! reader task, and a 100 ms tick for acks, pings, reply timeouts and reconnects.

use std::collections::{BTreeMap, VecDeque};
use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;

use jaring_proto::chat::{ReplyFramer, is_event};
use jaring_runtime::ClientStream;
use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _, ReadHalf, WriteHalf};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::command::{self, HELP, Kind, Parsed, Request, Target};
use super::display::{Style, unread_summary};
use super::input::{Done, Input, Printer, Shared, lock};
use super::{
    ClientError, ClientOptions, DEFAULT_ACK_EVENTS, DEFAULT_ACK_EVERY, DEFAULT_BACKOFF_MAX,
    DEFAULT_BACKOFF_MIN, DEFAULT_MAX_QUEUED, DEFAULT_PIPED_GIVE_UP, MAX_CURSORS_PER_LINE,
    MAX_FRAME, Outcome,
};

/// The reason a `watch_end` gives when another connection took the stream: not to be fought.
const MOVED: &str = "another connection";

/// How often the core looks at its timers.
const TICK: Duration = Duration::from_millis(50);

/// How long after a `watch_end` (other than a take-over) the client watches again.
const REWATCH_AFTER: Duration = Duration::from_millis(500);

/// Most pages a listing follows, so a realm that keeps saying "more" cannot keep us forever.
const MAX_PAGES: u32 = 1000;

/// What the reader task hands the core.
#[derive(Debug)]
enum Frame {
    /// A reply or an event.
    Value(Value),
    /// The connection ended, and why.
    Closed(String),
}

/// The last `seq` shown of each stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Cursors {
    private: Option<u64>,
    groups: BTreeMap<String, u64>,
}

impl Cursors {
    /// Cursor words (`SEQ`, `GROUP:SEQ`) for what moved past `since`.
    fn words_since(&self, since: &Self) -> Vec<String> {
        let mut words = Vec::new();
        if let Some(p) = self.private
            && since.private.is_none_or(|s| p > s)
        {
            words.push(p.to_string());
        }
        for (g, &seq) in &self.groups {
            if since.groups.get(g).is_none_or(|&s| seq > s) {
                words.push(format!("{g}:{seq}"));
            }
        }
        words
    }
}

/// A request the connection has not answered yet, and what its reply is for.
#[derive(Debug)]
struct Pending {
    what: What,
    sent: Instant,
}

#[derive(Debug)]
enum What {
    /// A command the user typed.
    User {
        req: Request,
        done: Done,
        /// A plain line of a conversation: its OK is not worth a line.
        quiet: bool,
        /// A listing being followed page by page, with what it has so far.
        pages: Option<(Value, u32)>,
    },
    /// After a reconnect: is the token still good (and which realm is this)?
    Probe,
    /// After a reconnect with a dead token: the login again.
    Relogin,
    /// After a login: the realm's name, for the prompt.
    Realm,
    /// `watch`; `done` is the typed line's, when a login led to it.
    Watch { done: Done },
    /// The `exit` that follows a join, so the connection stays in command mode.
    JoinExit,
    /// `ack`, `ping`, names for completion: nothing to show.
    Quiet,
}

impl What {
    /// Whether the next typed line must wait for this reply (commands run one at a time).
    fn blocks(&self) -> bool {
        !matches!(self, Self::Quiet)
    }
}

/// The connection.
struct Conn {
    write: WriteHalf<ClientStream>,
    reader: tokio::task::JoinHandle<()>,
    pending: VecDeque<Pending>,
    last_write: Instant,
    last_frame: Instant,
    /// Whether the login/watch after connecting is done, so typed lines may go.
    ready: bool,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// Where output goes: above the prompt at a terminal, else stdout (stderr for notices).
struct Out {
    printer: Option<Printer>,
    style: Style,
    json: bool,
}

impl Out {
    fn line(&mut self, text: &str) {
        match &mut self.printer {
            Some(p) => drop(p.print(format!("{text}\n"))),
            None => drop(writeln!(std::io::stdout().lock(), "{text}")),
        }
    }

    /// A notice about the client itself (connection state): at a terminal above the prompt,
    /// piped on stderr so stdout holds only replies and messages.
    fn notice(&mut self, text: &str) {
        match &mut self.printer {
            Some(p) => drop(p.print(format!("{}\n", self.style.dim(&format!("-- {text}"))))),
            None => drop(writeln!(std::io::stderr().lock(), "-- {text}")),
        }
    }

    /// A mistake the client itself found (a usage error, no login): with `--json` on stderr,
    /// so stdout holds only the realm's JSON.
    fn error(&mut self, text: &str) {
        if self.json && self.printer.is_none() {
            drop(writeln!(std::io::stderr().lock(), "{text}"));
        } else {
            self.line(text);
        }
    }

    fn json(&mut self, v: &Value) {
        self.line(&v.to_string());
    }
}

/// The client's state.
pub(crate) struct Core {
    opts: ClientOptions,
    interactive: bool,
    out: Out,
    shared: Arc<Shared>,
    frames_tx: mpsc::Sender<(u64, Frame)>,
    frames_rx: mpsc::Receiver<(u64, Frame)>,
    conn: Option<Conn>,
    generation: u64,
    user: Option<String>,
    password: Option<String>,
    token: Option<String>,
    realm: Option<String>,
    cursors: Cursors,
    acked: Cursors,
    events_since_ack: usize,
    last_ack: Instant,
    watching: bool,
    /// Another connection of this user took the stream: do not take it back by ourselves.
    watch_moved: bool,
    rewatch_at: Option<Instant>,
    ping_every: Option<Duration>,
    target: Option<Target>,
    waiting: VecDeque<(String, Done)>,
    /// Set at a drop, cleared once the new connection is ready ("Reconnected").
    reconnecting: bool,
    attempts: u32,
    next_attempt: Option<Instant>,
    offline_since: Option<Instant>,
    eof: bool,
    quit: bool,
    linger_until: Option<Instant>,
    failures: u32,
    usage_errors: u32,
}

impl Core {
    pub(crate) fn new(
        opts: ClientOptions,
        interactive: bool,
        printer: Option<Printer>,
        shared: Arc<Shared>,
    ) -> Self {
        let (frames_tx, frames_rx) = mpsc::channel(1024);
        let style = Style { color: opts.color };
        let json = opts.json;
        Self {
            opts,
            interactive,
            out: Out {
                printer,
                style,
                json,
            },
            shared,
            frames_tx,
            frames_rx,
            conn: None,
            generation: 0,
            user: None,
            password: None,
            token: None,
            realm: None,
            cursors: Cursors::default(),
            acked: Cursors::default(),
            events_since_ack: 0,
            last_ack: Instant::now(),
            watching: false,
            watch_moved: false,
            rewatch_at: None,
            ping_every: None,
            target: None,
            waiting: VecDeque::new(),
            reconnecting: false,
            attempts: 0,
            next_attempt: None,
            offline_since: None,
            eof: false,
            quit: false,
            linger_until: None,
            failures: 0,
            usage_errors: 0,
        }
    }

    fn server(&self) -> String {
        if self.opts.host.contains(':') {
            format!("[{}]:{}", self.opts.host, self.opts.port)
        } else {
            format!("{}:{}", self.opts.host, self.opts.port)
        }
    }

    /// Runs until the user quits or the input ends.
    pub(crate) async fn run(
        mut self,
        mut input: mpsc::Receiver<Input>,
    ) -> Result<Outcome, ClientError> {
        let stream = jaring_runtime::connect(
            &self.opts.host,
            self.opts.port,
            self.opts.timeout,
            self.opts.tls.as_ref(),
        )
        .await?;
        if self.interactive {
            let over = stream
                .tls_summary()
                .map_or_else(String::new, |t| format!(" over TLS ({t})"));
            let server = self.server();
            self.out.notice(&format!(
                "connected to {server}{over}; type help for commands (auth USER to log in)"
            ));
        }
        self.attach(stream);
        self.ready();
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            self.run_waiting().await;
            if self.done_yet() {
                break;
            }
            if let Some(since) = self.offline_since
                && !self.interactive
                && since.elapsed() > DEFAULT_PIPED_GIVE_UP
            {
                return Err(ClientError::GaveUp(
                    self.server(),
                    DEFAULT_PIPED_GIVE_UP.as_secs(),
                ));
            }
            let wants_input =
                !self.quit && !self.eof && (self.interactive || self.waiting.is_empty());
            tokio::select! {
                Some((generation, frame)) = self.frames_rx.recv() => {
                    if generation == self.generation {
                        self.on_frame(frame).await;
                    }
                }
                line = input.recv(), if wants_input => match line {
                    Some(Input::Line(line, done)) => self.accept(line, done),
                    Some(Input::Eof) | None => {
                        if self.interactive {
                            self.quit = true;
                        } else {
                            self.eof = true;
                        }
                    }
                },
                _ = tick.tick() => self.on_tick().await,
            }
        }
        self.goodbye().await;
        Ok(if self.usage_errors > 0 {
            Outcome::Usage(self.usage_errors)
        } else if self.failures > 0 {
            Outcome::Failed(self.failures)
        } else {
            Outcome::Success
        })
    }

    /// Takes a new connection: starts its reader.
    fn attach(&mut self, stream: ClientStream) {
        self.generation += 1;
        let (read, write) = tokio::io::split(stream);
        let reader = tokio::spawn(read_frames(read, self.generation, self.frames_tx.clone()));
        let now = Instant::now();
        self.conn = Some(Conn {
            write,
            reader,
            pending: VecDeque::new(),
            last_write: now,
            last_frame: now,
            ready: false,
        });
        self.offline_since = None;
    }

    /// Whether the client is finished: quit, or the input ended, everything ran, and the linger
    /// is over.
    fn done_yet(&mut self) -> bool {
        let idle = self.waiting.is_empty() && !self.busy();
        if self.quit && (idle || self.conn.is_none()) {
            return true;
        }
        if self.eof && idle {
            if self.conn.is_none() {
                return true;
            }
            let until = *self
                .linger_until
                .get_or_insert_with(|| Instant::now() + self.opts.linger);
            return Instant::now() >= until;
        }
        false
    }

    /// Whether a reply the next typed line must wait for is outstanding.
    fn busy(&self) -> bool {
        self.conn
            .as_ref()
            .is_some_and(|c| !c.ready || c.pending.iter().any(|p| p.what.blocks()))
    }

    fn accept(&mut self, line: String, done: Done) {
        if self.conn.as_ref().is_none_or(|c| !c.ready) && self.interactive {
            if self.waiting.len() >= DEFAULT_MAX_QUEUED {
                self.out.notice(&format!(
                    "not connected, and {DEFAULT_MAX_QUEUED} lines already wait: this one is NOT \
                     sent; type it again once reconnected"
                ));
                self.failures += 1;
                return;
            }
            let local = !matches!(
                command::parse(&line, self.target.as_ref()),
                Parsed::Request(_) | Parsed::Watch
            );
            if self.conn.is_none() && !local {
                self.out
                    .notice("not connected: this line will be sent once reconnected");
            }
            // The prompt comes back at once; the line waits.
            drop(done);
            self.waiting.push_back((line, None));
            return;
        }
        self.waiting.push_back((line, done));
    }

    /// Runs waiting lines, one at a time, while the connection is ready for them; lines the
    /// client answers itself (help, quit, /query, a usage error) run even while it is down.
    async fn run_waiting(&mut self) {
        while !self.quit && !self.busy() {
            let ready = self.conn.as_ref().is_some_and(|c| c.ready);
            let Some((line, _)) = self.waiting.front() else {
                return;
            };
            let local = !matches!(
                command::parse(line, self.target.as_ref()),
                Parsed::Request(_) | Parsed::Watch
            );
            if !(ready || local) {
                return;
            }
            if let Some((line, done)) = self.waiting.pop_front() {
                self.execute(&line, done).await;
            }
        }
    }

    async fn execute(&mut self, line: &str, done: Done) {
        match command::parse(line, self.target.as_ref()) {
            Parsed::Empty => {}
            Parsed::Help => {
                for l in HELP.lines() {
                    self.out.line(l);
                }
            }
            Parsed::Quit => self.quit = true,
            Parsed::Query(to) => {
                self.target = to.map(Target::User);
                match &self.target {
                    Some(t) => {
                        let to = t.name().to_owned();
                        self.out.notice(&format!(
                            "talking to {to}: plain lines go to them (exit or /query alone to stop)"
                        ));
                    }
                    None => self.out.notice("plain lines are commands again"),
                }
                self.update_prompt();
            }
            Parsed::EndTarget => {
                if let Some(t) = self.target.take() {
                    let name = t.name().to_owned();
                    self.out.notice(&format!(
                        "stopped talking to {name}; plain lines are commands again"
                    ));
                }
                self.update_prompt();
            }
            Parsed::Watch => match self.token.clone() {
                Some(token) => {
                    self.watch_moved = false;
                    self.send_watch(&token, done).await;
                }
                None => self.not_logged_in(),
            },
            Parsed::Usage(usage) => {
                self.usage_errors += 1;
                self.out.error(&format!("error: {usage}"));
            }
            Parsed::NeedPassword(user) => {
                // A terminal asks before the line gets here; a script must give it.
                self.usage_errors += 1;
                self.out.error(&format!(
                    "error: usage: auth {user} PASSWORD (only a terminal can ask for the password)"
                ));
            }
            Parsed::Request(req) => {
                let token = match (req.kind, &self.token) {
                    (Kind::Auth, _) => String::new(),
                    (_, Some(t)) => t.clone(),
                    (_, None) => return self.not_logged_in(),
                };
                if req.kind == Kind::Logout {
                    // Never log back in by ourselves after the user logged out, even if the
                    // reply is lost to a drop.
                    self.password = None;
                }
                let quiet = self.target.is_some() && !line.trim_start().starts_with('/');
                let paged = !self.opts.json
                    && matches!(
                        req.kind,
                        Kind::Users | Kind::Groups | Kind::Members | Kind::History
                    );
                let join = req.kind == Kind::Join;
                let wire = req.line(&token);
                let what = What::User {
                    req,
                    done,
                    quiet,
                    pages: paged.then_some((Value::Null, 0)),
                };
                if join {
                    // Joining makes the connection live on the group; `exit` right behind it
                    // (in the same write, so nothing can come between) returns it to commands,
                    // the membership kept. The group's messages then come by `watch`.
                    self.send_all(vec![(wire, what), ("exit".to_owned(), What::JoinExit)])
                        .await;
                } else {
                    self.send(wire, what).await;
                }
            }
        }
    }

    fn not_logged_in(&mut self) {
        self.failures += 1;
        self.out
            .error("error: not logged in; auth USER PASSWORD first (or auth USER)");
    }

    /// Sends one request.
    async fn send(&mut self, line: String, what: What) {
        self.send_all(vec![(line, what)]).await;
    }

    /// Sends requests in one write; on failure the connection is dropped (and reconnected).
    async fn send_all(&mut self, requests: Vec<(String, What)>) {
        let Some(conn) = &mut self.conn else {
            return;
        };
        let mut bytes = Vec::new();
        let now = Instant::now();
        for (line, what) in requests {
            bytes.extend_from_slice(line.as_bytes());
            bytes.extend_from_slice(b"\r\n");
            conn.pending.push_back(Pending { what, sent: now });
        }
        let write = async {
            conn.write.write_all(&bytes).await?;
            // TLS holds what was written until flushed.
            conn.write.flush().await
        };
        match tokio::time::timeout(self.opts.timeout, write).await {
            Ok(Ok(())) => conn.last_write = Instant::now(),
            Ok(Err(e)) => self.dropped(&e.to_string()),
            Err(_) => self.dropped(&format!(
                "the server took nothing for {} s",
                self.opts.timeout.as_secs_f64()
            )),
        }
    }

    /// `watch` with the cursors the client has, so the stream resumes right after them.
    async fn send_watch(&mut self, token: &str, done: Done) {
        let words = self.cursors.words_since(&Cursors::default());
        if words.len() <= MAX_CURSORS_PER_LINE {
            self.acked = self.cursors.clone();
            self.send(
                format!("watch {token}{}", join_words(&words)),
                What::Watch { done },
            )
            .await;
            return;
        }
        // Too many for one line: acknowledge them all first (a cursor moves the server's read
        // position as `ack` does), then watch from the server's positions.
        let mut requests: Vec<(String, What)> = words
            .chunks(MAX_CURSORS_PER_LINE)
            .map(|c| (format!("ack {token}{}", join_words(c)), What::Quiet))
            .collect();
        requests.push((format!("watch {token}"), What::Watch { done }));
        self.acked = self.cursors.clone();
        self.send_all(requests).await;
    }

    /// Acknowledges what was shown since the last ack (`ping` when nothing moved, which still
    /// tells the realm the last inbox reply arrived).
    async fn send_ack(&mut self, or_ping: bool) {
        let Some(token) = self.token.clone() else {
            return;
        };
        let words = self.cursors.words_since(&self.acked);
        self.last_ack = Instant::now();
        self.events_since_ack = 0;
        if words.is_empty() {
            if or_ping {
                self.send(format!("ping {token}"), What::Quiet).await;
            }
            return;
        }
        self.acked = self.cursors.clone();
        let requests = words
            .chunks(MAX_CURSORS_PER_LINE)
            .map(|c| (format!("ack {token}{}", join_words(c)), What::Quiet))
            .collect();
        self.send_all(requests).await;
    }

    async fn on_tick(&mut self) {
        let now = Instant::now();
        if self.conn.is_none() {
            if self.next_attempt.is_some_and(|at| now >= at) {
                self.reconnect().await;
            }
            return;
        }
        let timeout = self.opts.timeout;
        if let Some(conn) = &self.conn
            && let Some(front) = conn.pending.front()
            && now.duration_since(front.sent.max(conn.last_frame)) > timeout
        {
            return self.dropped(&format!("no reply within {} s", timeout.as_secs_f64()));
        }
        if self.conn.as_ref().is_some_and(|c| c.ready) {
            if self.cursors != self.acked && now.duration_since(self.last_ack) >= DEFAULT_ACK_EVERY
            {
                self.send_ack(false).await;
            }
            if let Some(at) = self.rewatch_at
                && now >= at
            {
                self.rewatch_at = None;
                if let Some(token) = self.token.clone()
                    && !self.watch_moved
                {
                    self.send_watch(&token, None).await;
                }
            }
            // Also when not watching (another client took the stream): the realm closes a
            // quiet connection, and reconnecting every idle timeout would only be noise.
            if let (Some(every), Some(token), Some(conn)) =
                (self.ping_every, self.token.clone(), &self.conn)
                && now.duration_since(conn.last_write) >= every
            {
                self.send(format!("ping {token}"), What::Quiet).await;
            }
        }
    }

    /// The connection ended (`reason`): say so, settle what it had not answered, and plan the
    /// reconnect.
    fn dropped(&mut self, reason: &str) {
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        self.generation += 1;
        self.watching = false;
        let pending = std::mem::take(&mut conn.pending);
        drop(conn);
        let leaving = self.quit || (self.eof && self.waiting.is_empty());
        let mut again = Vec::new();
        for p in pending {
            let What::User { req, done, .. } = p.what else {
                continue;
            };
            if req.kind.repeatable() {
                // Asked again once reconnected; asking twice does no harm.
                again.push((req, done));
            } else {
                self.failures += 1;
                self.out.error(&format!(
                    "error: the connection dropped before the reply to `{req}`: it may or may \
                     not have been done"
                ));
            }
        }
        for (req, done) in again.into_iter().rev() {
            let line = match req.kind {
                Kind::Auth => format!("auth {}", req.args),
                _ => format!("/{} {}", slash_word(req.kind), req.args),
            };
            self.waiting.push_front((line, done));
        }
        if leaving && self.waiting.is_empty() {
            return;
        }
        self.reconnecting = true;
        self.offline_since.get_or_insert_with(Instant::now);
        self.out.notice(&format!("Disconnected: {reason}"));
        self.schedule();
    }

    /// Plans the next connection attempt, with backoff and jitter.
    fn schedule(&mut self) {
        let base = DEFAULT_BACKOFF_MIN.as_secs_f64() * 2f64.powi(self.attempts.min(16) as i32);
        let capped = base.min(DEFAULT_BACKOFF_MAX.as_secs_f64());
        // Jitter, so clients dropped together do not all come back at the same instant.
        let delay = Duration::from_secs_f64(capped * rand::random_range(0.5..=1.0));
        self.attempts += 1;
        self.next_attempt = Some(Instant::now() + delay);
        self.out
            .notice(&format!("reconnecting in {}…", seconds(delay)));
        self.update_prompt();
    }

    async fn reconnect(&mut self) {
        self.next_attempt = None;
        let connected = jaring_runtime::connect(
            &self.opts.host,
            self.opts.port,
            self.opts.timeout,
            self.opts.tls.as_ref(),
        )
        .await;
        match connected {
            Ok(stream) => {
                self.attach(stream);
                match self.token.clone() {
                    Some(token) => self.send(format!("realms {token}"), What::Probe).await,
                    None => self.ready(),
                }
            }
            Err(e) => {
                self.out.notice(&format!("cannot reconnect: {e}"));
                self.schedule();
            }
        }
    }

    /// The connection is set up: typed lines may go.
    fn ready(&mut self) {
        if let Some(conn) = &mut self.conn {
            conn.ready = true;
        }
        if self.reconnecting {
            self.reconnecting = false;
            self.attempts = 0;
            let server = self.server();
            self.out.notice(&format!("Reconnected to {server}"));
        }
        self.update_prompt();
    }

    fn update_prompt(&self) {
        let who = match (&self.user, &self.realm) {
            (Some(u), Some(r)) if self.token.is_some() => format!("{u}@{r}"),
            (Some(u), None) if self.token.is_some() => u.clone(),
            _ => "chat".to_owned(),
        };
        let place = self
            .target
            .as_ref()
            .map_or_else(String::new, |t| format!(" [{}]", t.name()));
        // The connection's state is not in the prompt: rustyline draws a prompt once per line,
        // so a state in it would be stale by the time it changed (notices say it instead).
        *lock(&self.shared.prompt) = format!("{who}{place}> ");
        *lock(&self.shared.in_conversation) = self.target.is_some();
    }

    async fn on_frame(&mut self, frame: Frame) {
        let v = match frame {
            Frame::Closed(reason) => return self.dropped(&reason),
            Frame::Value(v) => v,
        };
        if let Some(conn) = &mut self.conn {
            conn.last_frame = Instant::now();
        }
        if is_event(&v) {
            return self.on_event(v).await;
        }
        let Some(pending) = self.conn.as_mut().and_then(|c| c.pending.pop_front()) else {
            // A reply to nothing: the server broke the protocol; start afresh.
            return self.dropped("a reply to no request");
        };
        self.on_reply(pending.what, v).await;
    }

    async fn on_event(&mut self, v: Value) {
        let seq = v["seq"].as_u64();
        match v["event"].as_str().unwrap_or_default() {
            "private" => {
                if let Some(seq) = seq {
                    if self.cursors.private.is_some_and(|c| seq <= c) {
                        return;
                    }
                    self.cursors.private = Some(seq);
                }
                lock(&self.shared.names).user(v["from"].as_str().unwrap_or_default());
                self.show_message(&v);
            }
            "message" => {
                let group = v["group"].as_str().unwrap_or_default().to_owned();
                if let Some(seq) = seq.filter(|&s| s > 0) {
                    if self.cursors.groups.get(&group).is_some_and(|&c| seq <= c) {
                        return;
                    }
                    self.cursors.groups.insert(group.clone(), seq);
                }
                {
                    let mut names = lock(&self.shared.names);
                    names.group(&group);
                    names.user(v["from"].as_str().unwrap_or_default());
                }
                self.show_message(&v);
            }
            "watch_end" => {
                self.watching = false;
                let reason = v["reason"].as_str().unwrap_or_default().to_owned();
                self.show_event(&v);
                if reason.contains(MOVED) {
                    self.watch_moved = true;
                    self.out.notice(
                        "your messages now go to your other client; /watch takes them back",
                    );
                } else if self.token.is_some() {
                    self.rewatch_at = Some(Instant::now() + REWATCH_AFTER);
                }
                return;
            }
            _ => {
                self.show_event(&v);
                return;
            }
        }
        self.events_since_ack += 1;
        if self.events_since_ack >= DEFAULT_ACK_EVENTS {
            self.send_ack(false).await;
        }
    }

    fn show_message(&mut self, v: &Value) {
        if self.out.json {
            return self.out.json(v);
        }
        let text = self.out.style.message(v);
        self.out.line(&text);
    }

    fn show_event(&mut self, v: &Value) {
        if self.out.json {
            return self.out.json(v);
        }
        match self.out.style.event(v) {
            Some(text) => self.out.line(&text),
            None if v["event"] == "watch_end" => {
                let reason = v["reason"].as_str().unwrap_or_default().to_owned();
                self.out
                    .notice(&format!("the realm stopped pushing: {reason}"));
            }
            None => {}
        }
    }

    async fn on_reply(&mut self, what: What, v: Value) {
        let ok = v["status"] == "OK";
        match what {
            What::User {
                req,
                done,
                quiet,
                pages,
            } => self.on_user_reply(req, done, quiet, pages, v).await,
            What::Probe => {
                if ok {
                    self.realm = v["realm"].as_str().map(str::to_owned);
                    self.after_login(None).await;
                } else if let (Some(user), Some(password)) =
                    (self.user.clone(), self.password.clone())
                {
                    self.send(format!("auth {user} {password}"), What::Relogin)
                        .await;
                } else {
                    let why = v["message"].as_str().unwrap_or_default().to_owned();
                    self.token = None;
                    self.out.notice(&format!(
                        "your session ended ({why}); log in again: auth USER"
                    ));
                    self.ready();
                }
            }
            What::Relogin => {
                if let Some(token) = v["tokenid"].as_str().filter(|_| ok) {
                    self.token = Some(token.to_owned());
                    self.send(format!("realms {token}"), What::Realm).await;
                    self.after_login(None).await;
                } else {
                    let why = v["message"].as_str().unwrap_or_default().to_owned();
                    let user = self.user.clone().unwrap_or_default();
                    self.token = None;
                    self.password = None;
                    self.failures += 1;
                    self.out.notice(&format!(
                        "cannot log in again as {user} ({why}); log in with: auth USER"
                    ));
                    self.ready();
                }
            }
            What::Realm => {
                if ok {
                    self.realm = v["realm"].as_str().map(str::to_owned);
                }
                self.update_prompt();
            }
            What::Watch { done } => {
                if self.out.json {
                    self.out.json(&v);
                }
                if ok {
                    self.watching = true;
                    self.ping_every = v["idle_timeout"]
                        .as_f64()
                        .filter(|s| *s > 0.0)
                        .map(|s| Duration::from_secs_f64(s / 3.0));
                } else {
                    let why = v["message"].as_str().unwrap_or_default().to_owned();
                    self.out.notice(&format!(
                        "messages are not pushed to this client ({why}); inbox shows them"
                    ));
                }
                drop(done);
                if self.conn.as_ref().is_some_and(|c| !c.ready) {
                    self.ready();
                }
            }
            What::JoinExit | What::Quiet => {
                // Names for completion ride on quiet `users`/`groups` replies.
                self.learn_names(&v);
            }
        }
    }

    /// After a login (or a token found still good after a reconnect): watch, unless the user
    /// gave the stream to another client.
    async fn after_login(&mut self, done: Done) {
        match self.token.clone() {
            Some(token) if !self.watch_moved => self.send_watch(&token, done).await,
            _ => {
                drop(done);
                self.ready();
            }
        }
    }

    async fn on_user_reply(
        &mut self,
        req: Request,
        done: Done,
        quiet: bool,
        pages: Option<(Value, u32)>,
        mut v: Value,
    ) {
        let ok = v["status"] == "OK";
        if !ok {
            self.failures += 1;
        }
        self.learn_names(&v);
        // A listing in pages: ask for the next one and show them all as one reply.
        if let Some((had, count)) = pages
            && ok
        {
            let merged = merge_page(req.kind, had, v);
            if let Some(next) = next_page(&req, &merged)
                && count < MAX_PAGES
                && let Some(token) = self.token.clone()
            {
                let line = format!("{} {token} {next}", req.kind.word());
                let what = What::User {
                    req,
                    done,
                    quiet,
                    pages: Some((merged, count + 1)),
                };
                return self.send(line, what).await;
            }
            v = merged;
        }
        match (req.kind, ok) {
            (Kind::Auth, true) => {
                let user = req.args.split(' ').next().unwrap_or_default().to_owned();
                let password = req.args.split_once(' ').map(|(_, p)| p.to_owned());
                if self.user.as_deref() != Some(user.as_str()) {
                    // Another user: nothing of the last one's carries over.
                    self.cursors = Cursors::default();
                    self.acked = Cursors::default();
                    self.target = None;
                    self.watch_moved = false;
                }
                self.user = Some(user);
                self.password = password;
                self.token = v["tokenid"].as_str().map(str::to_owned);
                self.show_reply(req.kind, &v);
                if let Some(token) = self.token.clone() {
                    self.send_all(vec![
                        (format!("realms {token}"), What::Realm),
                        (format!("users {token}"), What::Quiet),
                        (format!("groups {token}"), What::Quiet),
                    ])
                    .await;
                }
                return self.after_login(done).await;
            }
            (Kind::Logout, true) => {
                self.token = None;
                self.watching = false;
                self.target = None;
            }
            (Kind::Join, true) => {
                let group = v["group"].as_str().unwrap_or(&req.args).to_owned();
                lock(&self.shared.names).group(&group);
                self.target = Some(Target::Group(group.clone()));
                if !self.out.json {
                    self.out.notice(&format!(
                        "lines you type now go to {group} (exit stops; /part leaves the group)"
                    ));
                }
            }
            (Kind::Leave, true) => {
                if self.target == Some(Target::Group(req.args.clone())) {
                    self.target = None;
                }
                self.cursors.groups.remove(&req.args);
                self.acked.groups.remove(&req.args);
            }
            (Kind::Realms, true) => self.realm = v["realm"].as_str().map(str::to_owned),
            (Kind::Inbox, true) => {
                // What was pushed and shown already is not shown again (the text, not the JSON,
                // which stays the realm's reply); what the inbox shows, the watch then drops.
                let shown = self.cursors.private;
                if !self.out.json
                    && let Some(by_sender) = v["messages"].as_object_mut()
                {
                    for list in by_sender.values_mut() {
                        if let Some(list) = list.as_array_mut() {
                            list.retain(|m| !is_at_or_below(m, shown));
                        }
                    }
                }
                let most = v["messages"]
                    .as_object()
                    .into_iter()
                    .flat_map(|m| m.values())
                    .flat_map(|l| l.as_array().into_iter().flatten())
                    .filter_map(|m| m["seq"].as_u64())
                    .max();
                if let Some(most) = most {
                    self.cursors.private = Some(shown.map_or(most, |c| c.max(most)));
                }
            }
            (Kind::InboxGroup, true) => {
                let group = v["group"].as_str().unwrap_or(&req.args).to_owned();
                let shown = self.cursors.groups.get(&group).copied();
                if !self.out.json
                    && let Some(list) = v["messages"].as_array_mut()
                {
                    list.retain(|m| !is_at_or_below(m, shown));
                }
                let most = v["messages"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|m| m["seq"].as_u64())
                    .max();
                if let Some(most) = most {
                    let c = self.cursors.groups.entry(group).or_insert(most);
                    *c = (*c).max(most);
                }
            }
            _ => {}
        }
        if !(quiet && ok) {
            self.show_reply(req.kind, &v);
        }
        self.update_prompt();
        drop(done);
    }

    fn show_reply(&mut self, kind: Kind, v: &Value) {
        if self.out.json {
            return self.out.json(v);
        }
        if kind == Kind::Auth && v["status"] == "OK" {
            let user = self.user.clone().unwrap_or_default();
            let unread = unread_summary(v)
                .map_or_else(|| "nothing unread".to_owned(), |u| format!("unread: {u}"));
            self.out.line(&format!("logged in as {user}; {unread}"));
            return;
        }
        for line in self.out.style.reply(kind, v) {
            self.out.line(&line);
        }
    }

    fn learn_names(&self, v: &Value) {
        let mut names = lock(&self.shared.names);
        for u in v["users"].as_array().into_iter().flatten() {
            names.user(u["name"].as_str().unwrap_or_default());
        }
        for g in v["groups"].as_array().into_iter().flatten() {
            names.group(g["name"].as_str().unwrap_or_default());
        }
        for m in v["members"].as_array().into_iter().flatten() {
            names.user(m["name"].as_str().unwrap_or_default());
        }
    }

    /// At the end: acknowledge what was shown (or ping, which tells the realm the last inbox
    /// reply arrived) and wait for the replies, so the next run does not see it again.
    async fn goodbye(&mut self) {
        if !self.waiting.is_empty() {
            let n = self.waiting.len();
            self.out.notice(&format!(
                "{n} typed line{} NOT sent: the connection is down",
                if n == 1 { " was" } else { "s were" }
            ));
            self.failures += 1;
        }
        for _ in 0..3 {
            if self.token.is_none() || self.conn.as_ref().is_none_or(|c| !c.ready) {
                return;
            }
            self.send_ack(true).await;
            let deadline = Instant::now() + self.opts.timeout;
            while self.conn.as_ref().is_some_and(|c| !c.pending.is_empty()) {
                match tokio::time::timeout_at(deadline, self.frames_rx.recv()).await {
                    Ok(Some((generation, frame))) if generation == self.generation => {
                        // No reconnecting now: a drop just ends the wait.
                        self.quit = true;
                        self.on_frame(frame).await;
                    }
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => return,
                }
            }
            if self.cursors == self.acked {
                return;
            }
        }
    }
}

/// Whether message `m`'s `seq` is at or below `cursor` (already shown).
fn is_at_or_below(m: &Value, cursor: Option<u64>) -> bool {
    matches!((m["seq"].as_u64(), cursor), (Some(seq), Some(c)) if seq <= c)
}

/// The `/`-word that repeats a request of `kind`.
fn slash_word(kind: Kind) -> &'static str {
    match kind {
        Kind::Join => "join",
        other => other.word(),
    }
}

fn join_words(words: &[String]) -> String {
    words.iter().map(|w| format!(" {w}")).collect()
}

/// `0.4 s`, `2 s`, `30 s`.
fn seconds(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 9.95 {
        format!("{s:.1} s").replace(".0 s", " s")
    } else {
        format!("{s:.0} s")
    }
}

/// The key of a listing's items.
fn list_key(kind: Kind) -> &'static str {
    match kind {
        Kind::Users => "users",
        Kind::Groups => "groups",
        Kind::Members => "members",
        _ => "messages",
    }
}

/// `had` (the pages so far, `Null` at first) with `page` added: history pages hold older
/// messages, so they go in front; other listings go on at the end.
fn merge_page(kind: Kind, had: Value, mut page: Value) -> Value {
    if had.is_null() {
        return page;
    }
    let key = list_key(kind);
    let mut items = page[key].as_array().cloned().unwrap_or_default();
    let before = had[key].as_array().cloned().unwrap_or_default();
    if kind == Kind::History {
        items.extend(before);
    } else {
        let mut all = before;
        all.append(&mut items);
        items = all;
    }
    page[key] = Value::Array(items);
    page
}

/// The arguments that ask for the page after `v`, if it says more wait and the user wants them.
fn next_page(req: &Request, v: &Value) -> Option<String> {
    let next = v["next"].as_str().filter(|_| v["more"] == true)?;
    let words: Vec<&str> = req.args.split_whitespace().collect();
    let got = v[list_key(req.kind)].as_array().map_or(0, Vec::len);
    Some(match req.kind {
        Kind::History => {
            let wanted: usize = words
                .get(1)
                .and_then(|n| n.parse().ok())
                .unwrap_or(jaring_proto::chat::history::DEFAULT_COUNT as usize);
            if got >= wanted || got == 0 {
                return None;
            }
            format!("{} {} {next}", words.first()?, wanted - got)
        }
        Kind::Members => format!("{} {next}", words.first()?),
        _ => next.to_owned(),
    })
}

/// Reads the connection and hands each frame to the core until it ends.
async fn read_frames(
    mut read: ReadHalf<ClientStream>,
    generation: u64,
    tx: mpsc::Sender<(u64, Frame)>,
) {
    let mut framer = ReplyFramer::new(MAX_FRAME);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        loop {
            match framer.poll_reply() {
                Ok(Some(v)) => {
                    if tx.send((generation, Frame::Value(v))).await.is_err() {
                        return;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    let _ = tx
                        .send((
                            generation,
                            Frame::Closed(format!("bad frame from the server: {e}")),
                        ))
                        .await;
                    return;
                }
            }
        }
        let reason = match read.read(&mut buf).await {
            Ok(0) => "the server closed the connection".to_owned(),
            Ok(n) => {
                framer.handle_input(&buf[..n]);
                continue;
            }
            Err(e) => e.to_string(),
        };
        let _ = tx.send((generation, Frame::Closed(reason))).await;
        return;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_name_only_what_moved() {
        let mut c = Cursors::default();
        assert!(c.words_since(&Cursors::default()).is_empty());
        c.private = Some(41);
        c.groups.insert("football".into(), 8);
        c.groups.insert("chess@realm2".into(), 3);
        assert_eq!(
            c.words_since(&Cursors::default()),
            ["41", "chess@realm2:3", "football:8"]
        );
        let acked = c.clone();
        c.groups.insert("football".into(), 9);
        assert_eq!(c.words_since(&acked), ["football:9"]);
    }

    #[test]
    fn delays_read_as_people_say_them() {
        assert_eq!(seconds(Duration::from_millis(400)), "0.4 s");
        assert_eq!(seconds(Duration::from_secs(2)), "2 s");
        assert_eq!(seconds(Duration::from_secs(30)), "30 s");
    }
}
