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

use std::io;
use std::time::Duration;

use jaring_proto::chat::event::{Ended, Event, encode_event};
use jaring_proto::chat::reply;
use jaring_proto::chat::{ChatSession, LiveLine, Request};
use jaring_runtime::driver::write_out;
use jaring_runtime::{Conn, End};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::time::Instant;
use tracing::{debug, error, info};

use crate::realm::{LiveSession, Realm, wire_group_message};
use crate::store::Store;

/// How often a live session stores its member's read cursor (it is always stored when the session
/// ends). After a server crash, `inboxgroup` may return again what was pushed in this window; each
/// message's `seq` tells a client it has seen it.
pub const DEFAULT_CURSOR_FLUSH: Duration = Duration::from_secs(2);

/// Most bytes of events gathered into one write; more waiting go in the next write.
pub const DEFAULT_LIVE_BATCH: usize = 256 * 1024;

/// Least time between two writes of one live session: events arriving sooner wait and go out in
/// the next batch. A busy group then costs each member at most 1/this writes a second (a write is
/// a system call and the peer's wake-up, the main cost of fan-out), and a quiet group costs no
/// delay at all, because a write long after the last one goes out at once.
pub const DEFAULT_LIVE_FLUSH: Duration = Duration::from_millis(10);

/// Most lines of a live session stored in one commit; more that arrived together go in the next.
pub const DEFAULT_LIVE_LINES: usize = 1024;

/// Most reads of what a closed live session's socket still holds (its lines are posted); a
/// socket's receive buffer is a few MiB at most, so this only bounds a peer that keeps sending.
const DRAIN_READS: usize = 64;

/// How often a blocked write looks at how far its session has fallen behind.
const LAG_CHECK: Duration = Duration::from_millis(20);

/// A live session's lines being committed.
type Commit<'a> = std::pin::Pin<
    Box<
        dyn std::future::Future<
                Output = Result<
                    Vec<crate::group_store::StoredGroupMessage>,
                    crate::store::StoreError,
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
async fn write_watching(
    stream: &mut TcpStream,
    out: &mut Vec<u8>,
    live: &LiveSession,
    cap: usize,
    idle: Duration,
) -> Result<(), WriteFail> {
    // Usually the socket takes the whole batch at once: no timer for that.
    let mut pos = match stream.try_write(out) {
        Ok(n) => n,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
        Err(e) => return Err(WriteFail::Io(e)),
    };
    let mut stalled_since = Instant::now();
    while pos < out.len() {
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

/// Takes into `lines` the complete live lines of a closed session: those its session has parsed
/// and those still in the socket. A write can fail (the member hung up) while lines sent before
/// that wait unread: the kernel acknowledged them, so they count as received.
fn take_unread(
    stream: &TcpStream,
    session: &mut ChatSession,
    buf: &mut [u8],
    lines: &mut Vec<String>,
) {
    for _ in 0..DRAIN_READS {
        match stream.try_read(buf) {
            Ok(n) if n > 0 => session.handle_input(&buf[..n]),
            _ => break,
        }
    }
    // A bad line (or `exit`) ends what counts.
    loop {
        match session.poll_request() {
            Some(Request::Live(LiveLine::Message(text))) => lines.push(text),
            Some(Request::Live(LiveLine::Empty) | Request::Command(_)) => {}
            _ => break,
        }
    }
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

/// Runs the live session until it ends. `out` holds the `group` OK, written first.
pub async fn run<S: Store>(
    realm: &Realm<S>,
    mut live: LiveSession,
    stream: &mut TcpStream,
    session: &mut ChatSession,
    buf: &mut [u8],
    out: &mut Vec<u8>,
    conn: &Conn,
) -> LiveEnd {
    session.enter_live();
    let end = drive(realm, &mut live, stream, session, buf, out, conn).await;
    session.leave_live();
    end
}

/// Leaves the group's ring, appends the `end` event and writes what `out` holds. A member that
/// fell behind may not be reading at all: having left the ring it costs only `out`, so the write
/// may take until the idle timeout before the connection is given up.
async fn end_with(
    stream: &mut TcpStream,
    live: &mut LiveSession,
    out: &mut Vec<u8>,
    reason: String,
    conn: &Conn,
) -> LiveEnd {
    live.close();
    let group = live.group.clone();
    encode_event(&Event::End(Ended { group, reason }), out);
    match write_out(stream, out, conn.idle_timeout).await {
        Ok(()) => LiveEnd::Ended,
        Err(e) => LiveEnd::Closed(End::Error(e)),
    }
}

#[allow(clippy::too_many_lines)]
async fn drive<S: Store>(
    realm: &Realm<S>,
    live: &mut LiveSession,
    stream: &mut TcpStream,
    session: &mut ChatSession,
    buf: &mut [u8],
    out: &mut Vec<u8>,
    conn: &Conn,
) -> LiveEnd {
    let group = live.group.clone();
    let user = live.user.clone();
    let cap = realm.hub().live_queue();
    let idle = conn.idle_timeout;
    let slow = format!(
        "you fell {cap} events behind the group, so your live session has ended; \
         catch up with: inboxgroup TOKEN {group}"
    );
    if let Err(e) = write_out(stream, out, idle).await {
        return LiveEnd::Closed(End::Error(e));
    }

    // What the member missed before this session: from storage, a page at a time.
    let mut cursor = live.subscription.read_seq;
    let page = realm.options().inbox_max_messages.max(1);
    loop {
        let msgs = match realm.store().group_messages(&group, cursor, page).await {
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
        let mut upto = cursor;
        for m in &msgs {
            encode_event(&Event::Message(wire_group_message(m)), out);
            upto = m.seq;
        }
        match write_watching(stream, out, live, cap, idle).await {
            Ok(()) => cursor = upto,
            Err(WriteFail::Lagging) => {
                let end = end_with(stream, live, out, slow, conn).await;
                if matches!(end, LiveEnd::Ended) {
                    cursor = upto;
                }
                realm.advance_cursor(&group, &user, cursor, true).await;
                return end;
            }
            Err(WriteFail::Io(e)) => {
                // The member hung up while being given what they missed; lines they sent before
                // that are still theirs to post.
                let mut lines = Vec::new();
                take_unread(stream, session, buf, &mut lines);
                post_last_lines(realm, &group, &user, lines).await;
                realm.advance_cursor(&group, &user, cursor, true).await;
                return LiveEnd::Closed(End::Error(e));
            }
        }
        if msgs.len() < page {
            break;
        }
    }
    realm.advance_cursor(&group, &user, cursor, true).await;
    let mut stored_cursor = cursor;
    let mut last_flush = Instant::now();
    let mut idle_deadline = Instant::now() + idle;
    let flush = realm.options().live_flush;
    let mut last_write = Instant::now() - flush;
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
            match session.poll_request() {
                None => break,
                Some(Request::Live(LiveLine::Message(text))) => lines.push(text),
                Some(Request::Live(LiveLine::Exit)) => exiting = true,
                // Empty lines only keep the connection alive; while live, every line is a live
                // line, never a command.
                Some(
                    Request::Live(LiveLine::Empty) | Request::Command(_) | Request::Invalid(_),
                ) => {}
                Some(Request::Live(LiveLine::NotUtf8)) => {
                    encode_event(
                        &Event::End(Ended {
                            group: group.clone(),
                            reason: "a line was not valid UTF-8 and was not sent; your live \
                                     session has ended"
                                .into(),
                        }),
                        out,
                    );
                    break 'live LiveEnd::Ended;
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
            let mut upto = cursor;
            while out.len() < DEFAULT_LIVE_BATCH {
                match live.subscription.events.try_recv() {
                    Ok(p) if p.seq == 0 || p.seq > upto => {
                        out.extend_from_slice(&p.bytes);
                        upto = upto.max(p.seq);
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
            live.close();
            match write_out(stream, out, idle).await {
                Ok(()) => cursor = upto,
                Err(e) => break 'live LiveEnd::Closed(End::Error(e)),
            }
            // Over before the final OK, so the member may go live again (on any connection) as
            // soon as they read it; the next session starts after what this one handed out.
            if cursor > stored_cursor {
                realm.advance_cursor(&group, &user, cursor, true).await;
                stored_cursor = cursor;
            }
            live.end();
            reply::encode_ok(&format!("Left the live session of group {group}"), out);
            if let Err(e) = write_out(stream, out, idle).await {
                break 'live LiveEnd::Closed(End::Error(e));
            }
            break 'live LiveEnd::Exit;
        }
        if last_flush.elapsed() >= DEFAULT_CURSOR_FLUSH && cursor > stored_cursor {
            realm.advance_cursor(&group, &user, cursor, true).await;
            stored_cursor = cursor;
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
                    encode_event(
                        &Event::End(Ended {
                            group: group.clone(),
                            reason: "the server could not store your messages, so they were \
                                     not sent; your live session has ended, try again later"
                                .into(),
                        }),
                        out,
                    );
                    break LiveEnd::Ended;
                }
            }
            read = stream.read(buf), if reading => match read {
                Ok(0) => break LiveEnd::Closed(End::Eof),
                Ok(n) => {
                    session.handle_input(&buf[..n]);
                    idle_deadline = Instant::now() + idle;
                }
                Err(e) => break LiveEnd::Closed(End::Error(e)),
            },
            event = live.subscription.events.recv() => {
                // Batch what else arrives within the flush interval into the same write.
                tokio::time::sleep_until(last_write + flush).await;
                let mut upto = cursor;
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
                        out.extend_from_slice(&p.bytes);
                        if p.left.as_deref() == Some(user.as_str()) {
                            left = true;
                            break;
                        }
                    } else if p.seq > upto {
                        out.extend_from_slice(&p.bytes);
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
                        cursor = upto;
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
                        cursor = upto;
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
            take_unread(stream, session, buf, &mut lines);
        }
        if keep_lines {
            post_last_lines(realm, &group, &user, lines).await;
        }
    }
    if cursor > stored_cursor {
        realm.advance_cursor(&group, &user, cursor, true).await;
    }
    debug!(%group, %user, ?end, "live session over");
    end
}
