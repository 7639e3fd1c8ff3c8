//! [`ChatSession`]: the per-connection state machine of the chat protocol, sans-IO.
//!
//! The server feeds it the bytes it read ([`ChatSession::handle_input`]) and takes requests out
//! ([`ChatSession::poll_request`]) one at a time, in order; executing them (which needs storage and
//! may wait) is the server's job, and so is writing each reply before the next request's, so replies
//! stay in request order. Splitting parsing from execution is what lets the same core run under the
//! async and the thread-per-connection models.

use std::collections::VecDeque;
use std::ops::ControlFlow;

use crate::chat::command::{Command, ParseError, parse_command};
use crate::chat::reply::encode_error;
use crate::line::{LineFramer, TooLong};

/// What ends a live group session when the client sends it as a whole line.
pub const EXIT: &str = "exit";

/// One request taken from the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// A well-formed command to execute.
    Command(Command),
    /// A line that is not a valid request: answer with an ERROR and go on.
    Invalid(ParseError),
    /// A line over the length cap: answer with an ERROR, then close the connection.
    TooLong(TooLong),
    /// A line sent during a live group session (see [`ChatSession::enter_live`]).
    Live(LiveLine),
}

/// A line of a live group session: every line is a message, except `exit`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LiveLine {
    /// A message to the group: the line, trailing spaces stripped.
    Message(String),
    /// `exit`: end the live session (the membership stays).
    Exit,
    /// An empty line: nothing to send; it only shows the client is alive.
    Empty,
    /// The line was not valid UTF-8.
    NotUtf8,
    /// The line held a NUL byte (see [`ParseError::Nul`]).
    Nul,
}

/// The protocol state of one chat connection.
#[derive(Debug)]
pub struct ChatSession {
    framer: LineFramer,
    /// Raw lines, parsed only when taken: whether a line is a command or a live message depends
    /// on the requests before it, which the server executes in between.
    pending: VecDeque<Result<Vec<u8>, TooLong>>,
    closed: bool,
    live: bool,
}

impl ChatSession {
    /// A session that refuses lines longer than `max_line` bytes.
    pub fn new(max_line: usize) -> Self {
        Self {
            framer: LineFramer::new(max_line),
            pending: VecDeque::new(),
            closed: false,
            live: false,
        }
    }

    /// Takes bytes from the peer and queues every complete request in them.
    ///
    /// At most one read buffer's worth of requests is queued at a time, because the caller drains
    /// them before reading again; after a line that is too long nothing more is queued.
    pub fn handle_input(&mut self, input: &[u8]) {
        if self.closed {
            return;
        }
        let pending = &mut self.pending;
        let closed = &mut self.closed;
        self.framer.feed(input, |line| match line {
            Ok(line) => {
                pending.push_back(Ok(line.to_vec()));
                ControlFlow::Continue(())
            }
            Err(too_long) => {
                pending.push_back(Err(too_long));
                *closed = true;
                ControlFlow::Break(())
            }
        });
    }

    /// The next request to execute, if a complete one has arrived.
    pub fn poll_request(&mut self) -> Option<Request> {
        let line = match self.pending.pop_front()? {
            Ok(line) => line,
            Err(too_long) => return Some(Request::TooLong(too_long)),
        };
        if self.live {
            return Some(Request::Live(parse_live(&line)));
        }
        Some(match parse_command(&line) {
            Ok(cmd) => Request::Command(cmd),
            Err(e) => Request::Invalid(e),
        })
    }

    /// Whether a complete request waits to be taken with [`ChatSession::poll_request`].
    pub fn has_request(&self) -> bool {
        !self.pending.is_empty()
    }

    /// The server accepted `group`: from the next line on, lines are live messages.
    pub fn enter_live(&mut self) {
        self.live = true;
    }

    /// The live session ended (`exit`, or the server ended it): lines are commands again.
    pub fn leave_live(&mut self) {
        self.live = false;
    }

    /// Takes every byte received and not yet taken as a request (the complete lines queued, each
    /// with its LF, then the unfinished line), for a mode that reads raw chunks rather than lines.
    /// A queued over-long line stays queued, with what follows it: the connection is closing.
    pub fn take_buffered(&mut self) -> Vec<u8> {
        let mut bytes = Vec::new();
        while let Some(Ok(line)) = self.pending.front() {
            bytes.extend_from_slice(line);
            bytes.push(b'\n');
            self.pending.pop_front();
        }
        if self.pending.is_empty() {
            bytes.extend_from_slice(&self.framer.take_partial());
        }
        bytes
    }

    /// The longest line accepted, in bytes.
    pub fn max_line(&self) -> usize {
        self.framer.max_len()
    }

    /// Whether lines are live group messages now.
    pub fn is_live(&self) -> bool {
        self.live
    }

    /// Whether the stream is over: after a too-long line no request follows.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Appends the ERROR for an over-long line.
    pub fn encode_too_long(too_long: TooLong, out: &mut Vec<u8>) {
        encode_error(
            format_args!("{too_long} (the limit); closing the connection"),
            out,
        );
    }

    /// Whether part of a request line has arrived and not its end.
    pub fn partial(&self) -> bool {
        !self.closed && self.framer.pending() > 0
    }

    /// A request line was not finished within `limit_secs` of its first byte: tell the peer
    /// why it is being closed.
    pub fn handle_slow_request(&mut self, limit_secs: u64, out: &mut Vec<u8>) {
        self.closed = true;
        encode_error(
            format_args!("request line not finished within {limit_secs} s; closing the connection"),
            out,
        );
    }

    /// The connection was idle for `idle_secs`: tell the peer why it is being closed.
    pub fn handle_idle_timeout(&mut self, idle_secs: u64, out: &mut Vec<u8>) {
        self.closed = true;
        encode_error(
            format_args!("idle for {idle_secs} s; closing the connection"),
            out,
        );
    }

    /// The server is shutting down: tell the peer.
    pub fn handle_shutdown(&mut self, out: &mut Vec<u8>) {
        self.closed = true;
        encode_error("server shutting down; closing the connection", out);
    }
}

/// Parses one line (or, in the classic group mode, one chunk) of a live session.
pub fn parse_live(line: &[u8]) -> LiveLine {
    let Ok(text) = std::str::from_utf8(line) else {
        return LiveLine::NotUtf8;
    };
    if text.contains('\0') {
        return LiveLine::Nul;
    }
    let text = text.trim_end_matches([' ', '\t']);
    if text.trim_start().is_empty() {
        LiveLine::Empty
    } else if text.trim_start().eq_ignore_ascii_case(EXIT) {
        LiveLine::Exit
    } else {
        LiveLine::Message(text.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn drain(s: &mut ChatSession) -> Vec<Request> {
        std::iter::from_fn(|| s.poll_request()).collect()
    }

    #[test]
    fn pipelined_and_split_requests_come_out_in_order() {
        let mut s = ChatSession::new(1024);
        s.handle_input(b"auth messi surabaya \r\ninbox t");
        s.handle_input(b"ok \r\nbogus\r\n");
        let got = drain(&mut s);
        assert_eq!(got.len(), 3);
        assert!(matches!(&got[0], Request::Command(Command::Auth(a)) if a.user == "messi"));
        assert!(matches!(&got[1], Request::Command(Command::Inbox(i)) if i.token == "tok"));
        assert!(matches!(&got[2], Request::Invalid(ParseError::Unknown(_))));
    }

    #[test]
    fn a_long_line_ends_the_stream_after_earlier_requests() {
        let mut s = ChatSession::new(16);
        let mut input = b"users t\r\n".to_vec();
        input.extend_from_slice(&[b'x'; 40]);
        input.extend_from_slice(b"\r\nusers t\r\n");
        s.handle_input(&input);
        let got = drain(&mut s);
        assert_eq!(got.len(), 2);
        assert!(matches!(got[1], Request::TooLong(_)));
        assert!(s.is_closed());
        s.handle_input(b"users t\r\n");
        assert!(s.poll_request().is_none());
    }

    #[test]
    fn lines_after_a_group_join_are_messages_until_exit() {
        let mut s = ChatSession::new(1024);
        s.handle_input(b"group t football\r\nhello  all \r\n\r\nEXIT\r\nusers t\r\n");
        assert!(matches!(
            s.poll_request(),
            Some(Request::Command(Command::Group(_)))
        ));
        s.enter_live();
        assert_eq!(
            s.poll_request(),
            Some(Request::Live(LiveLine::Message("hello  all".into())))
        );
        assert_eq!(s.poll_request(), Some(Request::Live(LiveLine::Empty)));
        assert_eq!(s.poll_request(), Some(Request::Live(LiveLine::Exit)));
        s.leave_live();
        assert!(matches!(
            s.poll_request(),
            Some(Request::Command(Command::Users(_)))
        ));
    }

    #[test]
    fn a_live_line_with_a_nul_byte_is_refused() {
        assert_eq!(parse_live(b"half\0half"), LiveLine::Nul);
        assert_eq!(parse_live(b"\xff"), LiveLine::NotUtf8);
        assert_eq!(parse_live(b"fine"), LiveLine::Message("fine".into()));
    }

    #[test]
    fn bytes_behind_a_classic_group_line_can_be_taken_raw() {
        let mut s = ChatSession::new(1024);
        s.handle_input(b"group t football origin \r\nhello\r\nhalf a mess");
        assert!(matches!(
            s.poll_request(),
            Some(Request::Command(Command::Group(g))) if g.is_classic()
        ));
        assert_eq!(s.take_buffered(), b"hello\nhalf a mess");
        assert!(s.take_buffered().is_empty());
        s.handle_input(b"users t\r\n");
        assert!(matches!(
            s.poll_request(),
            Some(Request::Command(Command::Users(_)))
        ));
    }

    proptest! {
        /// However the stream is cut into reads, the same requests come out.
        #[test]
        fn any_split_gives_the_same_requests(cuts in proptest::collection::vec(0usize..80, 0..6)) {
            let wire = b"auth messi surabaya \r\nsend tok henderson  hi there \r\nhistory tok lineker 5\r\nnope\r\n";
            let mut whole = ChatSession::new(1024);
            whole.handle_input(wire);
            let expected = drain(&mut whole);
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(wire.len())).collect();
            cuts.sort_unstable();
            let mut s = ChatSession::new(1024);
            let mut start = 0;
            let mut got = Vec::new();
            for c in cuts.into_iter().chain([wire.len()]) {
                s.handle_input(&wire[start..c]);
                got.extend(drain(&mut s));
                start = c;
            }
            prop_assert_eq!(got, expected);
        }

        /// Arbitrary bytes never panic, and queue at most one request per line ending.
        #[test]
        fn arbitrary_bytes_are_safe(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut s = ChatSession::new(64);
            s.handle_input(&data);
            let n = drain(&mut s).len();
            prop_assert!(n <= data.iter().filter(|&&b| b == b'\n').count() + 1);
        }
    }
}
