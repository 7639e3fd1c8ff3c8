//! [`ChatServer`]: the realm on the shared runtime, with its own connection loop.
//!
//! The runtime's sans-IO drivers cannot serve chat, because a reply may have to wait for storage
//! (a `send` is answered only after its commit) and because an `inbox` reply's messages count as
//! delivered only once the client sends its next request. So this [`Handler`] runs its own loop,
//! keeping the runtime's rules: read at most one buffer, answer every request in it, in order,
//! write everything before reading again, close on the idle timeout and at shutdown after saying
//! why. Under `--model threads` each connection's thread drives the same [`Realm`] and blocks on its
//! futures through a runtime handle (a connection thread is not an async worker, so blocking there
//! is what the model means).

use std::io::{Read as _, Write as _};
use std::net::Shutdown;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use jaring_proto::chat::event::{Event, Notice, encode_event};
use jaring_proto::chat::send::Send;
use jaring_proto::chat::{ChatSession, Command, Request, encode_error};
use jaring_runtime::driver::{linger_async, write_out};
use jaring_runtime::transport::readable;
use jaring_runtime::{Conn, End, Handler, LineDeadline, Transport};
use tokio::net::TcpStream;
use tokio::runtime::Handle;
use tokio::time::Instant;

use crate::live::{self, LiveEnd};
use crate::realm::{ConnState, Delivery, Outcome, Realm};
use crate::storage::Store;
use crate::watch::Watch;

/// How often expired tokens are swept from memory and storage.
pub const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// Reply buffer capacity a connection keeps between requests; after a larger reply (an inbox can
/// be 1 MiB) the buffer is given back, so a connection that once fetched a big inbox does not
/// hold that memory while it idles.
pub const KEEP_REPLY_BUFFER: usize = 64 * 1024;

/// Bytes of replies a connection may have waiting to be written: past this, the replies are
/// written (waiting for the peer to read them, up to the idle timeout) before the next request
/// is taken. With every reply capped in bytes (see [`crate::realm::DEFAULT_MAX_REPLY_BYTES`]), a
/// client that pipelines requests and never reads holds at most this plus one reply in memory.
pub const DEFAULT_REPLY_BUDGET: usize = 64 * 1024;

/// Most consecutive `send`s of one connection committed together. A client that pipelines its
/// sends (writes several before reading the replies) then pays one commit wait for all of them,
/// not one each; the replies still go out in order.
pub const MAX_PIPELINED_SENDS: usize = 256;

/// `first` and the `send`s right behind it in the session's input (up to
/// [`MAX_PIPELINED_SENDS`]); the request that ended the run, if any, goes to `held`, to be handled
/// next.
fn gather_sends(first: Send, session: &mut ChatSession, held: &mut Option<Request>) -> Vec<Send> {
    let mut sends = vec![first];
    while sends.len() < MAX_PIPELINED_SENDS {
        match session.poll_request() {
            Some(Request::Command(Command::Send(s))) => sends.push(s),
            other => {
                *held = other;
                break;
            }
        }
    }
    sends
}

/// The read buffer, allocated if the connection gave it back while idle.
fn read_buffer(buf: &mut Vec<u8>, size: usize) -> &mut [u8] {
    if buf.is_empty() {
        *buf = vec![0; size.max(1)];
    }
    buf
}

/// The chat realm as a runtime [`Handler`].
pub struct ChatServer<S> {
    realm: Arc<Realm<S>>,
    max_line: usize,
    handle: Handle,
}

impl<S> std::fmt::Debug for ChatServer<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatServer")
            .field("max_line", &self.max_line)
            .finish_non_exhaustive()
    }
}

impl<S: Store> ChatServer<S> {
    /// Serves `realm`, refusing request lines over `max_line` bytes. Must be called within a tokio
    /// runtime: its handle is what connection threads block on.
    pub fn new(realm: Arc<Realm<S>>, max_line: usize) -> Self {
        Self {
            realm,
            max_line,
            handle: Handle::current(),
        }
    }

    /// The realm served.
    pub fn realm(&self) -> &Arc<Realm<S>> {
        &self.realm
    }

    /// Sweeps expired tokens every [`SWEEP_EVERY`] until `shutdown` is cancelled.
    pub async fn sweep_tokens(&self, shutdown: jaring_runtime::CancellationToken) {
        let mut tick = tokio::time::interval(SWEEP_EVERY);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = tick.tick() => self.realm.sweep().await,
            }
        }
    }
}

impl<S: Store> ChatServer<S> {
    /// The client sent another request after an `inbox` or `inboxgroup` reply: it has that reply
    /// (a classic client reads a whole reply before its next command), so its messages are
    /// delivered now. Until then they were only written to a socket, which a reset can still
    /// discard; a connection that ends first drops the delivery, and they are handed out again.
    async fn acknowledge(&self, unconfirmed: &mut Option<Delivery>) {
        if let Some(delivery) = unconfirmed.take() {
            self.realm.confirm(delivery).await;
        }
    }

    /// Runs a live group session on a connection thread: the session needs to wait on the socket
    /// and the group at once, so it runs as the async loop, on a non-blocking duplicate of the
    /// socket, driven from this thread; the socket is blocking again afterwards.
    fn live_blocking(
        &self,
        l: crate::realm::LiveSession,
        stream: &std::net::TcpStream,
        session: &mut ChatSession,
        buf: &mut [u8],
        out: &mut Vec<u8>,
        conn: &Conn,
    ) -> LiveEnd {
        let dup = match stream.try_clone().and_then(|d| {
            d.set_nonblocking(true)?;
            Ok(d)
        }) {
            Ok(d) => d,
            Err(e) => return LiveEnd::Closed(End::Error(e)),
        };
        let end = self.handle.block_on(async {
            let mut s = match TcpStream::from_std(dup) {
                Ok(s) => s,
                Err(e) => return LiveEnd::Closed(End::Error(e)),
            };
            let end = live::run(&self.realm, l, &mut s, session, buf, out, conn, &mut None).await;
            if matches!(end, LiveEnd::Exit | LiveEnd::Ended | LiveEnd::TooLong)
                && let Err(e) = write_out(&mut s, out, conn.grace.min(conn.idle_timeout)).await
            {
                return LiveEnd::Closed(End::Error(e));
            }
            end
        });
        // The flag is shared with the duplicate, which is gone now.
        if let Err(e) = stream.set_nonblocking(false) {
            return LiveEnd::Closed(End::Error(e));
        }
        end
    }

    /// The async connection loop, from wherever the connection stands: a new connection, or one
    /// a connection thread hands over when it starts watching (its session may hold requests
    /// already read; `out` may hold replies not yet written).
    #[allow(clippy::too_many_lines)]
    async fn run_async<T: Transport>(
        &self,
        stream: &mut T,
        conn: &Conn,
        mut session: ChatSession,
        mut state: ConnState,
        mut out: Vec<u8>,
        mut watch: Option<Watch>,
    ) -> End {
        // Allocated only while there is something to read: an idle connection holds no read
        // buffer (10,000 idle connections would otherwise hold 40 MiB of them).
        let mut buf = Vec::new();
        let idle = conn.idle_timeout;
        let mut last_active = Instant::now();
        let idle_timer = tokio::time::sleep(idle);
        tokio::pin!(idle_timer);
        let cancelled = conn.shutdown.cancelled();
        tokio::pin!(cancelled);
        // The last inbox reply's messages, delivered once the client sends its next request.
        let mut unconfirmed = None;
        // While a request line is unfinished: when it must be finished by.
        let mut line_deadline: Option<Instant> = None;
        // The connection was in a JSON live session when it ended: it takes events.
        let mut live_json = false;
        if !out.is_empty()
            && let Err(e) = write_out(stream, &mut out, idle).await
        {
            return End::Error(e);
        }

        let end = 'conn: loop {
            if !session.has_request() {
                let ready = tokio::select! {
                    biased;
                    () = &mut cancelled => break End::Shutdown,
                    ready = readable(stream) => ready,
                    () = crate::watch::due(&mut watch) => {
                        crate::watch::push_due(&self.realm, &mut watch, &mut out).await;
                        if let Err(e) = write_out(stream, &mut out, idle).await {
                            break End::Error(e);
                        }
                        continue;
                    }
                    () = &mut idle_timer => {
                        let now = Instant::now();
                        if line_deadline.is_some_and(|d| now >= d) {
                            break End::SlowRequest;
                        }
                        let deadline = last_active + idle;
                        if now >= deadline {
                            break End::Idle;
                        }
                        idle_timer
                            .as_mut()
                            .reset(line_deadline.map_or(deadline, |d| d.min(deadline)));
                        continue;
                    }
                };
                if let Err(e) = ready {
                    break End::Error(e);
                }
                // Through `poll_read` rather than `try_read`: when a read leaves room in the buffer
                // the socket is drained, and `poll_read` then clears its readiness, so the next
                // wait does not begin with a `recv` that can only say "nothing yet" (one syscall
                // per request, not two, with one request in flight).
                let n = match stream.read_now(read_buffer(&mut buf, conn.read_buffer)) {
                    Poll::Ready(Ok(0)) => break End::Eof,
                    Poll::Ready(Ok(n)) => n,
                    Poll::Ready(Err(e)) => break End::Error(e),
                    Poll::Pending => {
                        // Nothing to read after all: the connection is idle.
                        buf = Vec::new();
                        continue;
                    }
                };
                last_active = Instant::now();
                conn.counters().moved(n as u64, 0);
                session.handle_input(&buf[..n]);
                // A line started and not finished must be finished by its deadline, however
                // slowly its bytes trickle in (each of which keeps the idle timer happy).
                match (session.partial(), line_deadline) {
                    (true, None) => {
                        let deadline = last_active + conn.line_timeout;
                        line_deadline = Some(deadline);
                        if deadline < idle_timer.deadline() {
                            idle_timer.as_mut().reset(deadline);
                        }
                    }
                    (false, Some(_)) => line_deadline = None,
                    _ => {}
                }
                if n < buf.len() {
                    // The read drained the socket (see `read_now`): until it is readable again
                    // the connection is idle, and an idle connection holds no read buffer.
                    buf = Vec::new();
                }
            }
            let mut held = None;
            let (mut answered, mut refused) = (0, 0);
            while let Some(request) = held.take().or_else(|| session.poll_request()) {
                self.acknowledge(&mut unconfirmed).await;
                match request {
                    Request::Command(Command::Send(first)) => {
                        let sends = gather_sends(first, &mut session, &mut held);
                        answered += sends.len() as u64;
                        self.realm.send_many(&mut state, sends, &mut out).await;
                    }
                    Request::Command(cmd) => {
                        answered += 1;
                        match self.realm.execute(&mut state, cmd, &mut out).await {
                            Outcome::Replied => {}
                            Outcome::Deliver(delivery) => unconfirmed = Some(delivery),
                            Outcome::Watch(start) => {
                                // A watch again on this connection starts over from its cursors.
                                // The old watch goes first: its handle leaves the hub.
                                drop(watch.take());
                                watch = Some(Watch::new(Arc::clone(self.realm.hub()), start));
                                crate::watch::push_due(&self.realm, &mut watch, &mut out).await;
                            }
                            Outcome::Live(l) => {
                                let classic = l.classic;
                                let end = live::run(
                                    &self.realm,
                                    l,
                                    stream,
                                    &mut session,
                                    read_buffer(&mut buf, conn.read_buffer),
                                    &mut out,
                                    conn,
                                    &mut watch,
                                )
                                .await;
                                match end {
                                    LiveEnd::Exit | LiveEnd::Ended => {}
                                    LiveEnd::TooLong => {
                                        let _ =
                                            write_out(stream, &mut out, conn.grace.min(idle)).await;
                                        linger_async(stream, &mut buf).await;
                                        self.realm.disconnect(&mut state);
                                        return End::Closed;
                                    }
                                    LiveEnd::Closed(end) => {
                                        live_json = !classic;
                                        break 'conn end;
                                    }
                                }
                                last_active = Instant::now();
                            }
                        }
                    }
                    Request::Invalid(e) => {
                        refused += 1;
                        encode_error(e, &mut out);
                    }
                    Request::TooLong(t) => {
                        conn.counters().failed(1);
                        ChatSession::encode_too_long(t, &mut out);
                        let _ = write_out(stream, &mut out, conn.grace.min(idle)).await;
                        linger_async(stream, read_buffer(&mut buf, conn.read_buffer)).await;
                        self.realm.disconnect(&mut state);
                        return End::Closed;
                    }
                    // Live lines are taken by the live session's own loop.
                    Request::Live(_) => {}
                }
                if out.len() >= DEFAULT_REPLY_BUDGET
                    && let Err(e) = write_out(stream, &mut out, idle).await
                {
                    break 'conn End::Error(e);
                }
            }
            let wrote = out.len() as u64;
            if let Err(e) = write_out(stream, &mut out, idle).await {
                break End::Error(e);
            }
            count(conn, answered, refused, wrote, last_active);
            if out.capacity() > KEEP_REPLY_BUFFER {
                out = Vec::new();
            }
        };
        self.realm.disconnect(&mut state);
        let events = watch.is_some() || live_json;
        drop(watch);
        if farewell(&mut session, &end, events, conn, &mut out) {
            let _ = write_out(stream, &mut out, conn.grace.min(idle)).await;
            linger_async(stream, read_buffer(&mut buf, conn.read_buffer)).await;
        }
        end
    }

    /// A connection thread's connection starts watching: the rest of it runs as the async loop
    /// (it must wait on the socket and the pushed events at once), on a non-blocking duplicate
    /// of the socket, driven from this thread.
    fn watch_blocking(
        &self,
        stream: &std::net::TcpStream,
        conn: &Conn,
        session: ChatSession,
        state: ConnState,
        out: Vec<u8>,
        watch: Watch,
    ) -> End {
        let dup = match stream.try_clone().and_then(|d| {
            d.set_nonblocking(true)?;
            Ok(d)
        }) {
            Ok(d) => d,
            Err(e) => return End::Error(e),
        };
        self.handle.block_on(async {
            let mut s = match TcpStream::from_std(dup) {
                Ok(s) => s,
                Err(e) => return End::Error(e),
            };
            self.run_async(&mut s, conn, session, state, out, Some(watch))
                .await
        })
    }
}

/// Appends what a connection is told as the server closes it; whether to write it and linger.
/// A connection that takes events (watching, or in a JSON live session) gets a `closing` event;
/// one in command mode that idled gets nothing, because the classic client would read a notice
/// as the reply to the command it sends next.
fn farewell(
    session: &mut ChatSession,
    end: &End,
    events: bool,
    conn: &Conn,
    out: &mut Vec<u8>,
) -> bool {
    let closing = |reason: String, out: &mut Vec<u8>| {
        encode_event(&Event::Closing(Notice { reason }), out);
    };
    match end {
        End::Idle if events => closing(
            format!(
                "idle for {} s; closing the connection",
                conn.idle_timeout.as_secs()
            ),
            out,
        ),
        End::Idle => {}
        End::Shutdown if events => {
            closing("server shutting down; closing the connection".into(), out);
        }
        End::Shutdown => session.handle_shutdown(out),
        End::SlowRequest => session.handle_slow_request(conn.line_timeout.as_secs(), out),
        _ => return false,
    }
    true
}

impl<S: Store> Handler for ChatServer<S> {
    fn name(&self) -> &'static str {
        "chat"
    }

    fn busy_reply(&self, why: jaring_runtime::Busy) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        encode_error(why, &mut out);
        Some(out)
    }

    fn read_buffer_size(&self) -> usize {
        jaring_runtime::service::DEFAULT_READ_BUFFER
    }

    async fn serve_async<T: Transport>(self: Arc<Self>, mut stream: T, conn: Conn) -> End {
        let session = ChatSession::new(self.max_line);
        let state = ConnState::new(conn.info.peer.ip(), conn.idle_timeout);
        self.run_async(&mut stream, &conn, session, state, Vec::new(), None)
            .await
    }

    fn serve_blocking(self: Arc<Self>, mut stream: std::net::TcpStream, conn: Conn) -> End {
        let idle = conn.idle_timeout;
        if let Err(e) = stream
            .set_read_timeout(Some(idle))
            .and_then(|()| stream.set_write_timeout(Some(idle)))
        {
            return End::Error(e);
        }
        let mut session = ChatSession::new(self.max_line);
        let mut state = ConnState::new(conn.info.peer.ip(), conn.idle_timeout);
        let mut buf = vec![0u8; conn.read_buffer];
        let mut out = Vec::new();
        let mut unconfirmed = None;
        let mut line = LineDeadline::default();
        let end = 'conn: loop {
            let n = match line.read(&mut stream, &mut buf, &conn) {
                Ok(n) => n,
                Err(end) => break end,
            };
            session.handle_input(&buf[..n]);
            if let Err(end) = line.partial(session.partial(), &stream, &conn) {
                break end;
            }
            let mut held = None;
            let (mut answered, mut refused) = (0, 0);
            let read_at = Instant::now();
            conn.counters().moved(n as u64, 0);
            while let Some(request) = held.take().or_else(|| session.poll_request()) {
                self.handle.block_on(self.acknowledge(&mut unconfirmed));
                match request {
                    Request::Command(Command::Send(first)) => {
                        let sends = gather_sends(first, &mut session, &mut held);
                        answered += sends.len() as u64;
                        self.handle
                            .block_on(self.realm.send_many(&mut state, sends, &mut out));
                    }
                    Request::Command(cmd) => {
                        answered += 1;
                        let outcome = self
                            .handle
                            .block_on(self.realm.execute(&mut state, cmd, &mut out));
                        match outcome {
                            Outcome::Replied => {}
                            Outcome::Deliver(delivery) => unconfirmed = Some(delivery),
                            Outcome::Watch(start) => {
                                let w = Watch::new(Arc::clone(self.realm.hub()), start);
                                return self.watch_blocking(&stream, &conn, session, state, out, w);
                            }
                            Outcome::Live(l) => {
                                match self.live_blocking(
                                    l,
                                    &stream,
                                    &mut session,
                                    &mut buf,
                                    &mut out,
                                    &conn,
                                ) {
                                    LiveEnd::Exit | LiveEnd::Ended => {}
                                    LiveEnd::TooLong => break 'conn End::Closed,
                                    LiveEnd::Closed(end) => break 'conn end,
                                }
                            }
                        }
                    }
                    Request::Invalid(e) => {
                        refused += 1;
                        encode_error(e, &mut out);
                    }
                    Request::TooLong(t) => {
                        conn.counters().failed(1);
                        ChatSession::encode_too_long(t, &mut out);
                        break 'conn End::Closed;
                    }
                    Request::Live(_) => {}
                }
                if out.len() >= DEFAULT_REPLY_BUDGET {
                    if let Err(e) = stream.write_all(&out) {
                        break 'conn End::Error(e);
                    }
                    out.clear();
                }
            }
            if let Err(e) = stream.write_all(&out) {
                break End::Error(e);
            }
            count(&conn, answered, refused, out.len() as u64, read_at);
            out.clear();
        };
        self.realm.disconnect(&mut state);
        let said = farewell(&mut session, &end, false, &conn, &mut out);
        if said || matches!(end, End::Closed) {
            let _ = stream.set_write_timeout(Some(conn.grace.min(idle)));
            let _ = stream.write_all(&out);
            if stream.shutdown(Shutdown::Write).is_ok() {
                // Read what the peer still sends for a moment, so our last reply is not reset away.
                let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
                let mut discarded = 0;
                while discarded < 256 * 1024 {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => discarded += n,
                    }
                }
            }
        } else if matches!(end, End::Eof) {
            let _ = stream.shutdown(Shutdown::Write);
        }
        end
    }
}

/// Adds one batch of requests to the server's counters: commands `answered` (each send counts),
/// malformed lines `refused`, reply bytes `wrote`, and the service time since `read_at`.
fn count(conn: &Conn, answered: u64, refused: u64, wrote: u64, read_at: Instant) {
    if answered > 0 {
        conn.counters().answered(answered, read_at.elapsed());
    }
    if refused > 0 {
        conn.counters().failed(refused);
    }
    conn.counters().moved(0, wrote);
}
