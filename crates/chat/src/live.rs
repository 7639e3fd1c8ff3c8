//! The connection loop of a live group session, shared by every server model.
//!
//! After the `group` OK the connection carries two streams at once: the member's lines, each one a
//! message to the group, and the group's events. The loop first replays from storage what the
//! member missed (everything after their read cursor), then forwards the group's ring, skipping
//! what the replay already carried, so every message reaches the member exactly once and in the
//! group's order. Whatever events are waiting are written in one batch. A member whose socket does
//! not drain falls behind the ring; when it is [`crate::groups::DEFAULT_LIVE_QUEUE`] events behind,
//! its live session ends with an `end` event saying why, queued after what it was already given (the
//! connection is closed if even that cannot be written within the idle timeout).
//!
//! The classic two-realm client's group mode (`group TOKEN NAME origin`) runs the same loop with
//! the same guarantees, speaking raw text instead ([`jaring_proto::chat::classic`]): its posts are
//! chunks ended by a quiet pause, events are written as `<user>: <text>` and the like, and the
//! session ends with a raw `exit` and the lab's final reply.

use std::io;
use std::task::Poll;
use std::time::Duration;

use jaring_proto::chat::classic::{self, ClassicChunker};
use jaring_proto::chat::event::{Ended, Event, encode_event};
use jaring_proto::chat::reply::{self, Status};
use jaring_proto::chat::{ChatSession, LiveLine, REPLY_END, Request};
use jaring_runtime::driver::write_out;
use jaring_runtime::{Conn, End, Transport};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::time::Instant;
use tracing::{debug, error, info};

use crate::groups::{DEFAULT_EAGER_MAX_LIVE, Pushed};
use crate::realm::{LiveSession, Realm, wire_group_message};
use crate::storage::Store;
use crate::storage::StoredGroupMessage;
use crate::watch::Watch;

/// How often a live session stores its member's read cursor (it is always stored when the session
/// ends). After a server crash, `inboxgroup` may return again what was pushed in this window; each
/// message's `seq` tells a client it has seen it.
pub const DEFAULT_CURSOR_FLUSH: Duration = Duration::from_secs(2);

/// Most bytes of events gathered into one write; more waiting go in the next write.
pub const DEFAULT_LIVE_BATCH: usize = 256 * 1024;

pub use crate::groups::DEFAULT_LIVE_FLUSH;

/// Most lines of a live session stored in one commit; more that arrived together go in the next.
pub const DEFAULT_LIVE_LINES: usize = 1024;

/// How long a classic client must send nothing before what it sent counts as one post. That client
/// sends each typed message with no line end, so a pause is the only end a message has; one that
/// arrives in pieces further apart than this is posted in pieces (a piece is at most `max_line`
/// bytes however the client sends).
pub const DEFAULT_CLASSIC_QUIET: Duration = Duration::from_millis(50);

/// Pause before and after the raw `exit` that ends a classic client's group mode: that client stops
/// printing only on a read that is exactly `exit`, so `exit` must not share a read with the text
/// before it or the reply after it.
pub const DEFAULT_CLASSIC_PAUSE: Duration = Duration::from_millis(100);

/// Most reads of what a closed live session's socket still holds (its lines are posted); a
/// socket's receive buffer is a few MiB at most, so this only bounds a peer that keeps sending.
const DRAIN_READS: usize = 64;

/// How often a live session looks again at how many live sessions its group has.
const SIZE_CHECK: Duration = Duration::from_secs(1);

/// How often a blocked write looks at how far its session has fallen behind.
const LAG_CHECK: Duration = Duration::from_millis(20);

/// A live session's lines being committed.
type Commit<'a> = std::pin::Pin<
    Box<
        dyn std::future::Future<
                Output = Result<
                    Vec<crate::storage::StoredGroupMessage>,
                    crate::storage::StoreError,
                >,
            > + Send
            + 'a,
    >,
>;

/// How a live session ended.
#[derive(Debug)]
pub enum LiveEnd {
    /// The client sent `exit`; the final OK was written. The connection is in command mode.
    Exit,
    /// The server ended the session with an `end` event. The connection is in command mode.
    Ended,
    /// A line was too long: its ERROR is in `out`; close the connection after writing it.
    TooLong,
    /// The connection is over.
    Closed(End),
}

/// Why a batch could not be written.
enum WriteFail {
    /// The session fell a ring behind while the socket would not take more; `out` holds what is
    /// still unwritten (whole events, possibly the tail of one).
    Lagging,
    Io(io::Error),
}

/// Writes `out`, giving up when the session has fallen `cap` events behind or nothing could be
/// written for `idle`.
async fn write_watching<T: Transport>(
    stream: &mut T,
    out: &mut Vec<u8>,
    live: &LiveSession,
    cap: usize,
    idle: Duration,
) -> Result<(), WriteFail> {
    // Usually the socket takes the whole batch at once: no timer for that.
    let mut pos = stream.write_now(out).map_err(WriteFail::Io)?;
    let mut stalled_since = Instant::now();
    while pos < out.len() || stream.holds_output() {
        if pos == out.len() {
            // All taken, some not yet sent (TLS records): send them within the idle timeout.
            match tokio::time::timeout(idle, stream.flush()).await {
                Ok(Ok(())) => break,
                Ok(Err(e)) => return Err(WriteFail::Io(e)),
                Err(_) => return Err(WriteFail::Io(io::ErrorKind::TimedOut.into())),
            }
        }
        tokio::select! {
            n = stream.write(&out[pos..]) => match n {
                Ok(0) => return Err(WriteFail::Io(io::ErrorKind::WriteZero.into())),
                Ok(n) => {
                    pos += n;
                    stalled_since = Instant::now();
                }
                Err(e) => return Err(WriteFail::Io(e)),
            },
            () = tokio::time::sleep(LAG_CHECK) => {
                if live.subscription.events.len() >= cap {
                    out.drain(..pos);
                    return Err(WriteFail::Lagging);
                }
                if stalled_since.elapsed() >= idle {
                    return Err(WriteFail::Io(io::ErrorKind::TimedOut.into()));
                }
            }
        }
    }
    out.clear();
    Ok(())
}

/// Where a live session's lines come from.
enum Input<'a> {
    /// Lines, framed by the connection's session.
    Lines(&'a mut ChatSession),
    /// The classic client's chunks, each one post.
    Chunks(ClassicChunker),
}

impl Input<'_> {
    fn feed(&mut self, bytes: &[u8]) {
        match self {
            Self::Lines(s) => s.handle_input(bytes),
            Self::Chunks(c) => c.feed(bytes),
        }
    }

    fn poll(&mut self) -> Option<Request> {
        match self {
            Self::Lines(s) => s.poll_request(),
            Self::Chunks(c) => c.poll().map(Request::Live),
        }
    }

    /// Whether a classic chunk waits for its quiet pause.
    fn chunk_open(&self) -> bool {
        matches!(self, Self::Chunks(c) if c.has_partial())
    }

    /// The classic client paused, or will send no more: its chunk is complete. (A line without
    /// its end is not a line: it stays, to be dropped or read as a command.)
    fn end_chunk(&mut self) {
        if let Self::Chunks(c) = self {
            c.end_chunk();
        }
    }

    /// Takes into `lines` the complete messages still held (a bad one, or `exit`, ends what
    /// counts).
    fn take_messages(&mut self, lines: &mut Vec<String>) {
        loop {
            match self.poll() {
                Some(Request::Live(LiveLine::Message(text))) => lines.push(text),
                Some(Request::Live(LiveLine::Empty) | Request::Command(_)) => {}
                _ => break,
            }
        }
    }
}

/// Appends a pushed event as the session speaks: the framed JSON as pushed, or the classic text.
fn push_event(classic: bool, p: &Pushed, out: &mut Vec<u8>) {
    if !classic {
        out.extend_from_slice(&p.bytes);
        return;
    }
    let json = p.bytes.strip_suffix(REPLY_END).unwrap_or(&p.bytes);
    // The hub encoded it from an Event, so it parses back; a classic session is rare enough that
    // parsing it again costs nothing that matters, and keeps the shared ring at one encoding.
    if let Ok(event) = serde_json::from_slice::<Event>(json) {
        classic::render_event(&event, out);
    }
}

/// Appends a stored message as the session speaks.
fn push_stored(classic: bool, m: &StoredGroupMessage, out: &mut Vec<u8>) {
    let event = Event::Message(wire_group_message(m));
    if classic {
        classic::render_event(&event, out);
    } else {
        encode_event(&event, out);
    }
}

/// Ends a classic client's group mode: `out` (what is due) if anything, a pause, `exit` alone, a
/// pause, then the lab's final reply.
async fn classic_goodbye<T: Transport>(
    stream: &mut T,
    out: &mut Vec<u8>,
    status: Status,
    message: String,
    idle: Duration,
) -> io::Result<()> {
    if !out.is_empty() {
        write_out(stream, out, idle).await?;
    }
    tokio::time::sleep(DEFAULT_CLASSIC_PAUSE).await;
    out.extend_from_slice(classic::EXIT_ACK);
    write_out(stream, out, idle).await?;
    tokio::time::sleep(DEFAULT_CLASSIC_PAUSE).await;
    classic::encode_final(status, message, out);
    write_out(stream, out, idle).await
}

/// Takes into `lines` the complete live lines of a closed session: those its session has parsed
/// and those still in the socket. A write can fail (the member hung up) while lines sent before
/// that wait unread: the kernel acknowledged them, so they count as received.
fn take_unread<T: Transport>(
    stream: &mut T,
    input: &mut Input<'_>,
    buf: &mut [u8],
    lines: &mut Vec<String>,
) {
    for _ in 0..DRAIN_READS {
        match stream.read_now(buf) {
            Poll::Ready(Ok(n)) if n > 0 => input.feed(&buf[..n]),
            _ => break,
        }
    }
    input.end_chunk();
    input.take_messages(lines);
}

/// Posts the lines a live session still held when it ended, in order.
async fn post_last_lines<S: Store>(
    realm: &Realm<S>,
    group: &str,
    user: &str,
    mut lines: Vec<String>,
) {
    while !lines.is_empty() {
        let rest = lines.split_off(lines.len().min(DEFAULT_LIVE_LINES));
        let batch = std::mem::replace(&mut lines, rest);
        if let Err(e) = realm.post_group_messages(group, user, batch).await {
            error!(error = %e, %group, %user, "cannot store a live session's last lines");
            return;
        }
    }
}

/// Runs the live session until it ends. `out` holds the `group` OK (for a classic session, the
/// joiner's `<user> telah bergabung`), written first. A watching connection's other streams
/// (private messages, other groups) keep being pushed during the session.
#[allow(clippy::too_many_arguments)]
pub async fn run<S: Store, T: Transport>(
    realm: &Realm<S>,
    mut live: LiveSession,
    stream: &mut T,
    session: &mut ChatSession,
    buf: &mut [u8],
    out: &mut Vec<u8>,
    conn: &Conn,
    watch: &mut Option<Watch>,
) -> LiveEnd {
    let group = live.group.clone();
    if let Some(w) = watch.as_mut() {
        w.enter_live(&group);
    }
    let mut pushed = live.subscription.read_seq;
    session.enter_live();
    let mut input = if live.classic {
        // Whatever arrived behind the `group` line is the start of the classic client's chunks.
        let mut chunker = ClassicChunker::new(session.max_line());
        chunker.feed(&session.take_buffered());
        Input::Chunks(chunker)
    } else {
        Input::Lines(&mut *session)
    };
    let end = drive(
        realm,
        &mut live,
        stream,
        &mut input,
        buf,
        out,
        conn,
        watch,
        &mut pushed,
    )
    .await;
    drop(input);
    session.leave_live();
    if let Some(w) = watch.as_mut() {
        w.leave_live(&group, pushed);
    }
    end
}

/// Leaves the group's ring, appends the `end` event and writes what `out` holds. A member that
/// fell behind may not be reading at all: having left the ring it costs only `out`, so the write
/// may take until the idle timeout before the connection is given up.
/// A classic session ends the lab's way instead: `exit`, then an ERROR saying why.
async fn end_with<T: Transport>(
    stream: &mut T,
    live: &mut LiveSession,
    out: &mut Vec<u8>,
    reason: String,
    conn: &Conn,
) -> LiveEnd {
    live.close();
    let written = if live.classic {
        classic_goodbye(stream, out, Status::Error, reason, conn.idle_timeout).await
    } else {
        let group = live.group.clone();
        encode_event(&Event::End(Ended { group, reason }), out);
        write_out(stream, out, conn.idle_timeout).await
    };
    match written {
        Ok(()) => LiveEnd::Ended,
        Err(e) => LiveEnd::Closed(End::Error(e)),
    }
}

#[allow(clippy::too_many_lines, clippy::too_many_arguments)]
async fn drive<S: Store, T: Transport>(
    realm: &Realm<S>,
    live: &mut LiveSession,
    stream: &mut T,
    input: &mut Input<'_>,
    buf: &mut [u8],
    out: &mut Vec<u8>,
    conn: &Conn,
    watch: &mut Option<Watch>,
    pushed: &mut i64,
) -> LiveEnd {
    let group = live.group.clone();
    let classic = live.classic;
    let user = live.user.clone();
    let cap = realm.hub().live_queue();
    let idle = conn.idle_timeout;
    let slow = format!(
        "you fell {cap} events behind the group, so your live session has ended; \
         catch up with: inboxgroup TOKEN {group}"
    );
    // A classic client prints each read as it comes: its join line goes out with what it missed,
    // in one write, rather than run into it.
    if !classic && let Err(e) = write_out(stream, out, idle).await {
        return LiveEnd::Closed(End::Error(e));
    }

    // What the member missed before this session: from storage, a page at a time.
    let cursor = pushed;
    *cursor = live.subscription.read_seq;
    let page = realm.options().inbox_max_messages.max(1);
    loop {
        let msgs = match realm
            .store()
            .group_messages(&group, *cursor, page, realm.options().inbox_max_bytes)
            .await
        {
            Ok(m) => m,
            Err(e) => {
                error!(error = %e, "cannot read a group's missed messages");
                return end_with(
                    stream,
                    live,
                    out,
                    "the server could not read the group's messages; try again later".into(),
                    conn,
                )
                .await;
            }
        };
        let mut upto = *cursor;
        for m in &msgs.messages {
            push_stored(classic, m, out);
            upto = m.seq;
        }
        match write_watching(stream, out, live, cap, idle).await {
            Ok(()) => *cursor = upto,
            Err(WriteFail::Lagging) => {
                let end = end_with(stream, live, out, slow, conn).await;
                if matches!(end, LiveEnd::Ended) {
                    *cursor = upto;
                }
                realm.advance_cursor(&group, &user, *cursor, true).await;
                return end;
            }
            Err(WriteFail::Io(e)) => {
                // The member hung up while being given what they missed; lines they sent before
                // that are still theirs to post.
                let mut lines = Vec::new();
                take_unread(stream, input, buf, &mut lines);
                post_last_lines(realm, &group, &user, lines).await;
                realm.advance_cursor(&group, &user, *cursor, true).await;
                return LiveEnd::Closed(End::Error(e));
            }
        }
        // A page short of its count is the last, unless its bytes cut it short.
        if msgs.messages.len() < page && !msgs.cut {
            break;
        }
    }
    realm.advance_cursor(&group, &user, *cursor, true).await;
    let mut stored_cursor = *cursor;
    let mut last_flush = Instant::now();
    let mut idle_deadline = Instant::now() + idle;
    let flush = realm.options().live_flush;
    let mut last_write = Instant::now()
        .checked_sub(flush)
        .unwrap_or_else(Instant::now);
    // Looked at on the first event, not at the start: members joining one after another would
    // otherwise each see the group as it was before the others came.
    let mut eager = false;
    let mut size_checked: Option<Instant> = None;
    let mut quiet_at = Instant::now() + DEFAULT_CLASSIC_QUIET;
    let cancelled = conn.shutdown.cancelled();
    tokio::pin!(cancelled);

    // Lines wait here while the previous ones commit; they then go in one commit together. The
    // session keeps pushing events and reading lines meanwhile, so a sender is never held to one
    // line per disk sync.
    let mut lines: Vec<String> = Vec::new();
    let mut commit: Option<Commit<'_>> = None;
    let mut exiting = false;
    // Whether lines still waiting when the session ends are posted: not after the store failed
    // (the member was told they were not sent) or after the member left the group.
    let mut keep_lines = true;
    let end = 'live: loop {
        while lines.len() < DEFAULT_LIVE_LINES && !exiting {
            match input.poll() {
                None => break,
                Some(Request::Live(LiveLine::Message(text))) => lines.push(text),
                Some(Request::Live(LiveLine::Exit)) => exiting = true,
                // Empty lines only keep the connection alive; while live, every line is a live
                // line, never a command.
                Some(
                    Request::Live(LiveLine::Empty) | Request::Command(_) | Request::Invalid(_),
                ) => {}
                Some(Request::Live(bad @ (LiveLine::NotUtf8 | LiveLine::Nul))) => {
                    let what = if classic { "a message" } else { "a line" };
                    let why = if bad == LiveLine::Nul {
                        "held a NUL byte (0x00)"
                    } else {
                        "was not valid UTF-8"
                    };
                    let reason =
                        format!("{what} {why} and was not sent; your live session has ended");
                    break 'live end_with(stream, live, out, reason, conn).await;
                }
                Some(Request::TooLong(t)) => {
                    ChatSession::encode_too_long(t, out);
                    break 'live LiveEnd::TooLong;
                }
            }
        }
        if commit.is_none() && !lines.is_empty() {
            let batch = std::mem::take(&mut lines);
            commit = Some(Box::pin(realm.post_group_messages(&group, &user, batch)));
        }
        if exiting && commit.is_none() && lines.is_empty() {
            // Events already in the ring (the member's own last lines among them) are given
            // before the final OK rather than left for inboxgroup.
            let mut upto = *cursor;
            while out.len() < DEFAULT_LIVE_BATCH {
                match live.subscription.events.try_recv() {
                    Ok(p) if p.seq == 0 || p.seq > upto => {
                        push_event(classic, &p, out);
                        upto = upto.max(p.seq);
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
            live.close();
            if !out.is_empty() {
                match write_out(stream, out, idle).await {
                    Ok(()) => *cursor = upto,
                    Err(e) => break 'live LiveEnd::Closed(End::Error(e)),
                }
            }
            // Over before the final OK, so the member may go live again (on any connection) as
            // soon as they read it; the next session starts after what this one handed out.
            if *cursor > stored_cursor {
                realm.advance_cursor(&group, &user, *cursor, true).await;
                stored_cursor = *cursor;
            }
            live.end();
            let written = if classic {
                classic_goodbye(stream, out, Status::Ok, classic::left_message(&group), idle).await
            } else {
                reply::encode_ok(&format!("Left the live session of group {group}"), out);
                write_out(stream, out, idle).await
            };
            if let Err(e) = written {
                break 'live LiveEnd::Closed(End::Error(e));
            }
            break 'live LiveEnd::Exit;
        }
        if last_flush.elapsed() >= DEFAULT_CURSOR_FLUSH && *cursor > stored_cursor {
            realm.advance_cursor(&group, &user, *cursor, true).await;
            stored_cursor = *cursor;
            last_flush = Instant::now();
        }
        let reading = lines.len() < DEFAULT_LIVE_LINES && !exiting;
        // Unbiased: a busy group always has events ready and a busy sender always has lines;
        // neither may starve the other.
        tokio::select! {
            () = &mut cancelled => break LiveEnd::Closed(End::Shutdown),
            done = async { commit.as_mut()?.await.ok() }, if commit.is_some() => {
                commit = None;
                if done.is_none() {
                    keep_lines = false;
                    let reason = "the server could not store your messages, so they were not \
                                  sent; your live session has ended, try again later";
                    break end_with(stream, live, out, reason.into(), conn).await;
                }
            }
            read = stream.read(buf), if reading => match read {
                Ok(0) => break LiveEnd::Closed(End::Eof),
                Ok(n) => {
                    input.feed(&buf[..n]);
                    idle_deadline = Instant::now() + idle;
                    quiet_at = Instant::now() + DEFAULT_CLASSIC_QUIET;
                }
                Err(e) => break LiveEnd::Closed(End::Error(e)),
            },
            event = live.subscription.events.recv() => {
                // A large group batches what else arrives within the flush interval into the
                // same write; a small one writes at once (see `DEFAULT_EAGER_MAX_LIVE`). The size
                // is looked at once a second, not on every event: the hub is shared.
                if size_checked.is_none_or(|at| at.elapsed() >= SIZE_CHECK) {
                    eager = realm.hub().live_sessions(&group) <= DEFAULT_EAGER_MAX_LIVE;
                    size_checked = Some(Instant::now());
                }
                if !eager {
                    tokio::time::sleep_until(last_write + flush).await;
                }
                let mut upto = *cursor;
                let mut lagged = false;
                let mut left = false;
                let mut next = match event {
                    Ok(p) => Some(p),
                    Err(RecvError::Lagged(_)) => {
                        lagged = true;
                        None
                    }
                    Err(RecvError::Closed) => None,
                };
                while let Some(p) = next.take() {
                    if p.seq == 0 {
                        push_event(classic, &p, out);
                        if p.left.as_deref() == Some(user.as_str()) {
                            left = true;
                            break;
                        }
                    } else if p.seq > upto {
                        push_event(classic, &p, out);
                        upto = p.seq;
                    }
                    if out.len() >= DEFAULT_LIVE_BATCH {
                        break;
                    }
                    match live.subscription.events.try_recv() {
                        Ok(p) => next = Some(p),
                        Err(TryRecvError::Lagged(_)) => lagged = true,
                        Err(_) => {}
                    }
                }
                match write_watching(stream, out, live, cap, idle).await {
                    Ok(()) => {
                        // The hub hears of it with the periodic store (one lock less per write).
                        *cursor = upto;
                        last_write = Instant::now();
                        idle_deadline = last_write + idle;
                    }
                    Err(WriteFail::Lagging) => lagged = true,
                    Err(WriteFail::Io(e)) => break LiveEnd::Closed(End::Error(e)),
                }
                if lagged {
                    info!(%group, %user, "live session fell behind; ending it");
                    let end = end_with(stream, live, out, slow.clone(), conn).await;
                    if matches!(end, LiveEnd::Ended) {
                        // What was still unwritten got through with the `end` event.
                        *cursor = upto;
                    }
                    break end;
                }
                if left {
                    keep_lines = false;
                    break end_with(
                        stream,
                        live,
                        out,
                        "you left the group (on another connection)".into(),
                        conn,
                    )
                    .await;
                }
            }
            // A watching connection's private messages and other groups, between batches.
            () = crate::watch::due(watch) => {
                crate::watch::push_due(realm, watch, out).await;
                if let Err(e) = write_out(stream, out, idle).await {
                    break LiveEnd::Closed(End::Error(e));
                }
            }
            // The classic client paused: what it sent is one post.
            () = tokio::time::sleep_until(quiet_at), if input.chunk_open() => input.end_chunk(),
            () = tokio::time::sleep_until(idle_deadline) => break LiveEnd::Closed(End::Idle),
        }
    };
    if keep_lines {
        // Received is sent: a member who hangs up (or is cut loose, or the server stops) right
        // after typing still has every complete line the server read from them posted, in order.
        if let Some(c) = commit.take() {
            keep_lines = c.await.is_ok();
        }
        // Lines after an `exit` were commands.
        if matches!(end, LiveEnd::Closed(_)) && !exiting {
            take_unread(stream, input, buf, &mut lines);
        } else if classic && !exiting {
            // The server ended a classic session: the chunks it received are posts all the same.
            input.end_chunk();
            input.take_messages(&mut lines);
        }
        if keep_lines {
            post_last_lines(realm, &group, &user, lines).await;
        }
    }
    if *cursor > stored_cursor {
        realm.advance_cursor(&group, &user, *cursor, true).await;
    }
    debug!(%group, %user, ?end, "live session over");
    end
}
