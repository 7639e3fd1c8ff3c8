//! The TIME protocol: `TIME` → `JAM hh:mm:ss`, `QUIT` ends the session.
//!
//! The full specification, with example exchanges, is `docs/time-protocol.md`; this module is its
//! executable form. In short: a request is one line; a line that begins with `TIME` asks for the time
//! and is answered `JAM hh:mm:ss\r\n` (24-hour clock); `QUIT` (trailing spaces allowed) ends the
//! session; an empty line (or one of only spaces) is ignored without a reply; anything else is
//! answered with a line starting `ERR ` and the session goes on, except a line past the length
//! cap, which is answered and then closed because the stream cannot be resynchronised.
//!
//! [`TimeSession`] is the per-connection state machine; the clock is passed in through [`Clock`] so the
//! core stays free of system time and is testable with a fixed one.

use std::fmt::{self, Write as _};
use std::ops::ControlFlow;

use crate::Flow;
use crate::line::LineFramer;

/// Default cap on a request line, in bytes: `TIME` and any note a client adds fit many times over.
pub const DEFAULT_MAX_LINE: usize = 1024;

/// The exact length of a `JAM hh:mm:ss\r\n` reply.
pub const REPLY_LEN: usize = 14;

/// A wall-clock time of day on a 24-hour clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hms {
    /// Hour, 0–23.
    pub hour: u8,
    /// Minute, 0–59.
    pub minute: u8,
    /// Second, 0–59 (60 is accepted in replies, for a leap second).
    pub second: u8,
}

impl Hms {
    /// The time of day `seconds` after midnight (taken modulo one day).
    pub fn from_seconds_of_day(seconds: u32) -> Self {
        let s = seconds % 86_400;
        Self {
            hour: (s / 3600) as u8,
            minute: (s / 60 % 60) as u8,
            second: (s % 60) as u8,
        }
    }

    /// Appends the wire reply `JAM hh:mm:ss\r\n` for this time.
    pub fn encode_reply(self, out: &mut Vec<u8>) {
        let two = |n: u8| [b'0' + n / 10, b'0' + n % 10];
        let [h1, h2] = two(self.hour);
        let [m1, m2] = two(self.minute);
        let [s1, s2] = two(self.second);
        out.extend_from_slice(&[
            b'J', b'A', b'M', b' ', h1, h2, b':', m1, m2, b':', s1, s2, b'\r', b'\n',
        ]);
    }
}

impl fmt::Display for Hms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}:{:02}:{:02}", self.hour, self.minute, self.second)
    }
}

/// Where a session gets the time of day from; the server implements it over the system clock and a
/// time zone, tests over a fixed value.
pub trait Clock {
    /// The current time of day.
    fn now(&mut self) -> Hms;
}

impl Clock for Hms {
    fn now(&mut self) -> Hms {
        *self
    }
}

/// A request line, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// Any line that begins with `TIME`: answer with the time.
    Time,
    /// `QUIT`: end the session.
    Quit,
    /// An empty line, or one of only spaces: ignored, with no reply. Student clients send
    /// `TIME\r\n\r\n`; an `ERR` for the blank line would be read as part of the time.
    Blank,
}

/// Why a request line was refused; the `Display` text is what follows `ERR ` on the wire.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// The line was not valid UTF-8.
    #[error("request is not valid UTF-8; send TIME or QUIT")]
    NotUtf8,
    /// A line that is neither a TIME nor a QUIT request. Holds a short, escaped excerpt of it.
    #[error("unknown request \"{0}\"; send TIME or QUIT (upper case)")]
    Unknown(String),
}

/// Longest excerpt of an unknown request echoed back in the error, in characters.
const EXCERPT_CHARS: usize = 32;

/// Parses one request line (without its line ending).
pub fn parse_request(line: &[u8]) -> Result<Request, RequestError> {
    // Fast path first: this is what every well-behaved client sends.
    if line.starts_with(b"TIME") {
        return Ok(Request::Time);
    }
    let text = std::str::from_utf8(line).map_err(|_| RequestError::NotUtf8)?;
    let trimmed = text.trim_end_matches(' ');
    match trimmed {
        "" => Ok(Request::Blank),
        "QUIT" => Ok(Request::Quit),
        other => {
            let mut excerpt = String::new();
            for c in other.chars().take(EXCERPT_CHARS) {
                // Escaping keeps control bytes a hostile peer sent from reaching the other side raw.
                let _ = write!(excerpt, "{}", c.escape_debug());
            }
            if other.chars().count() > EXCERPT_CHARS {
                excerpt.push('…');
            }
            Err(RequestError::Unknown(excerpt))
        }
    }
}

/// Appends the error line `ERR <message>\r\n`.
pub fn encode_error(message: impl fmt::Display, out: &mut Vec<u8>) {
    let mut line = String::with_capacity(64);
    let _ = write!(line, "ERR {message}\r\n");
    out.extend_from_slice(line.as_bytes());
}

/// The state of one TIME connection: a line framer and whether the session is over.
#[derive(Debug)]
pub struct TimeSession {
    framer: LineFramer,
    done: bool,
    answered: u64,
    refused: u64,
}

impl TimeSession {
    /// A new session that refuses request lines longer than `max_line` bytes.
    pub fn new(max_line: usize) -> Self {
        Self {
            framer: LineFramer::new(max_line),
            done: false,
            answered: 0,
            refused: 0,
        }
    }

    /// Handles bytes from the peer, appending every reply to `out`, in request order.
    ///
    /// Returns [`Flow::Close`] after `QUIT` or an over-long line; input after that point is ignored.
    pub fn handle_input(
        &mut self,
        input: &[u8],
        clock: &mut impl Clock,
        out: &mut Vec<u8>,
    ) -> Flow {
        if self.done {
            return Flow::Close;
        }
        let done = &mut self.done;
        let (answered, refused) = (&mut self.answered, &mut self.refused);
        self.framer.feed(input, |line| {
            match line.map(parse_request) {
                Ok(Ok(Request::Time)) => {
                    clock.now().encode_reply(out);
                    *answered += 1;
                }
                Ok(Ok(Request::Blank)) => {}
                Ok(Ok(Request::Quit)) => {
                    *done = true;
                    return ControlFlow::Break(());
                }
                Ok(Err(bad)) => {
                    encode_error(bad, out);
                    *refused += 1;
                }
                Err(too_long) => {
                    encode_error(format_args!("{too_long}; closing"), out);
                    *refused += 1;
                    *done = true;
                    return ControlFlow::Break(());
                }
            }
            ControlFlow::Continue(())
        });
        if self.done {
            Flow::Close
        } else {
            Flow::Continue
        }
    }

    /// The peer closed its side. An unfinished last line (no line ending) is not a request and is
    /// dropped; there is nothing to send.
    pub fn handle_eof(&mut self) {
        self.done = true;
    }

    /// Whether part of a request line has arrived and not its end.
    pub fn partial(&self) -> bool {
        !self.done && self.framer.pending() > 0
    }

    /// A request line was not finished within `limit_secs` of its first byte; tells the peer why
    /// it is being closed.
    pub fn handle_slow_request(&mut self, limit_secs: u64, out: &mut Vec<u8>) {
        self.done = true;
        encode_error(
            format_args!("request line not finished within {limit_secs} s; closing"),
            out,
        );
    }

    /// The connection was idle for `idle_secs`; tells the peer why it is being closed.
    pub fn handle_idle_timeout(&mut self, idle_secs: u64, out: &mut Vec<u8>) {
        self.done = true;
        encode_error(format_args!("idle for {idle_secs} s; closing"), out);
    }

    /// The server is shutting down; tells the peer so before the connection closes.
    pub fn handle_shutdown(&mut self, out: &mut Vec<u8>) {
        self.done = true;
        encode_error("server shutting down; closing", out);
    }

    /// `TIME` requests answered so far.
    pub fn answered(&self) -> u64 {
        self.answered
    }

    /// Requests refused so far (unknown, not UTF-8, too long).
    pub fn refused(&self) -> u64 {
        self.refused
    }

    /// Whether the session has ended (QUIT, EOF, an over-long line, a timeout or shutdown).
    pub fn is_done(&self) -> bool {
        self.done
    }
}

/// Why a reply line from a server was not a valid TIME reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    /// The server answered with an `ERR` line; holds its message.
    #[error("server said: {0}")]
    Server(String),
    /// The line is neither `JAM hh:mm:ss` nor `ERR …`; holds an escaped excerpt.
    #[error("malformed reply \"{0}\": expected JAM hh:mm:ss")]
    Malformed(String),
}

/// Parses one reply line (without its line ending) as a server sends it.
pub fn parse_reply(line: &[u8]) -> Result<Hms, ReplyError> {
    let malformed = || {
        let text = String::from_utf8_lossy(line);
        let excerpt: String = text
            .chars()
            .take(EXCERPT_CHARS)
            .flat_map(char::escape_debug)
            .collect();
        ReplyError::Malformed(excerpt)
    };
    if let Some(message) = line.strip_prefix(b"ERR ") {
        return Err(ReplyError::Server(
            String::from_utf8_lossy(message).into_owned(),
        ));
    }
    let digits = line.strip_prefix(b"JAM ").ok_or_else(malformed)?;
    let &[h1, h2, b':', m1, m2, b':', s1, s2] = digits else {
        return Err(malformed());
    };
    let two = |a: u8, b: u8| {
        (a.is_ascii_digit() && b.is_ascii_digit()).then(|| (a - b'0') * 10 + (b - b'0'))
    };
    match (two(h1, h2), two(m1, m2), two(s1, s2)) {
        (Some(hour @ 0..=23), Some(minute @ 0..=59), Some(second @ 0..=60)) => Ok(Hms {
            hour,
            minute,
            second,
        }),
        _ => Err(malformed()),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const NOON: Hms = Hms {
        hour: 12,
        minute: 34,
        second: 5,
    };

    fn run(session: &mut TimeSession, chunks: &[&[u8]]) -> (Vec<u8>, Flow) {
        let mut out = Vec::new();
        let mut flow = Flow::Continue;
        for chunk in chunks {
            flow = session.handle_input(chunk, &mut NOON.clone(), &mut out);
        }
        (out, flow)
    }

    fn text(bytes: &[u8]) -> &str {
        std::str::from_utf8(bytes).expect("replies are UTF-8")
    }

    #[test]
    fn time_and_time_with_a_note_are_both_requests() {
        let mut s = TimeSession::new(DEFAULT_MAX_LINE);
        let (out, flow) = run(&mut s, &[b"TIME\r\nTIME now\r\nTIME   \r\n"]);
        assert_eq!(text(&out), "JAM 12:34:05\r\n".repeat(3));
        assert_eq!(flow, Flow::Continue);
    }

    #[test]
    fn quit_closes_and_ignores_what_follows() {
        let mut s = TimeSession::new(DEFAULT_MAX_LINE);
        let (out, flow) = run(&mut s, &[b"TIME\r\nQUIT  \r\nTIME\r\n"]);
        assert_eq!(text(&out), "JAM 12:34:05\r\n");
        assert_eq!(flow, Flow::Close);
        assert!(s.is_done());
    }

    #[test]
    fn bad_lines_get_err_and_the_session_goes_on() {
        let mut s = TimeSession::new(DEFAULT_MAX_LINE);
        let (out, flow) = run(&mut s, &[b"time\r\n\xff\xfe\r\nHELLO\x1b[31m\r\nTIME\r\n"]);
        assert_eq!(
            text(&out),
            "ERR unknown request \"time\"; send TIME or QUIT (upper case)\r\n\
             ERR request is not valid UTF-8; send TIME or QUIT\r\n\
             ERR unknown request \"HELLO\\u{1b}[31m\"; send TIME or QUIT (upper case)\r\n\
             JAM 12:34:05\r\n"
        );
        assert_eq!(flow, Flow::Continue);
    }

    #[test]
    fn blank_lines_are_ignored_without_a_reply() {
        let mut s = TimeSession::new(DEFAULT_MAX_LINE);
        // What a student client sends: the blank line must not add a line to the reply.
        let (out, flow) = run(&mut s, &[b"TIME\r\n\r\n", b"\n   \r\nTIME\n"]);
        assert_eq!(text(&out), "JAM 12:34:05\r\n".repeat(2));
        assert_eq!(flow, Flow::Continue);
        assert_eq!(parse_request(b""), Ok(Request::Blank));
        assert_eq!(parse_request(b"  "), Ok(Request::Blank));
    }

    #[test]
    fn an_over_long_line_is_answered_then_closed() {
        let mut s = TimeSession::new(8);
        let (out, flow) = run(&mut s, &[b"TIME\r\n", b"TIMETIMETIME"]);
        assert_eq!(
            text(&out),
            "JAM 12:34:05\r\nERR line longer than 8 bytes; closing\r\n"
        );
        assert_eq!(flow, Flow::Close);
    }

    #[test]
    fn a_long_unknown_request_is_excerpted() {
        let err = parse_request(&[b'x'; 100]).unwrap_err();
        assert_eq!(err, RequestError::Unknown(format!("{}…", "x".repeat(32))));
    }

    #[test]
    fn idle_and_shutdown_tell_the_peer() {
        let mut s = TimeSession::new(8);
        let mut out = Vec::new();
        s.handle_idle_timeout(30, &mut out);
        s.handle_shutdown(&mut out);
        assert_eq!(
            text(&out),
            "ERR idle for 30 s; closing\r\nERR server shutting down; closing\r\n"
        );
    }

    #[test]
    fn replies_round_trip() {
        let mut out = Vec::new();
        Hms {
            hour: 0,
            minute: 0,
            second: 0,
        }
        .encode_reply(&mut out);
        Hms {
            hour: 23,
            minute: 59,
            second: 59,
        }
        .encode_reply(&mut out);
        assert_eq!(out.len(), 2 * REPLY_LEN);
        assert_eq!(
            parse_reply(&out[..12]),
            Ok(Hms {
                hour: 0,
                minute: 0,
                second: 0
            })
        );
        assert_eq!(
            parse_reply(&out[14..26]),
            Ok(Hms {
                hour: 23,
                minute: 59,
                second: 59
            })
        );
    }

    #[test]
    fn malformed_replies_are_named() {
        for bad in [
            &b"JAM 24:00:00"[..],
            b"JAM 1:2:3",
            b"HELLO",
            b"JAM 12:34:5x",
            b"",
        ] {
            assert!(
                matches!(parse_reply(bad), Err(ReplyError::Malformed(_))),
                "{bad:?}"
            );
        }
        assert_eq!(
            parse_reply(b"ERR nope"),
            Err(ReplyError::Server("nope".into()))
        );
    }

    #[test]
    fn seconds_of_day_wrap() {
        assert_eq!(Hms::from_seconds_of_day(86_399).to_string(), "23:59:59");
        assert_eq!(
            Hms::from_seconds_of_day(86_400 + 61).to_string(),
            "00:01:01"
        );
    }

    fn request_stream() -> impl Strategy<Value = Vec<u8>> {
        let line = prop_oneof![
            Just(b"TIME\r\n".to_vec()),
            Just(b"TIME now\r\n".to_vec()),
            Just(b"TIME\n".to_vec()),
            Just(b"\r\n".to_vec()),
            Just(b"QUIT\r\n".to_vec()),
            proptest::collection::vec(any::<u8>(), 0..40),
        ];
        proptest::collection::vec(line, 0..40).prop_map(|lines| lines.concat())
    }

    proptest! {
        /// TCP may split a stream anywhere: the replies must not depend on where.
        #[test]
        fn any_split_gives_the_same_replies(stream in request_stream(), cuts in proptest::collection::vec(any::<usize>(), 0..12)) {
            let mut whole = TimeSession::new(64);
            let (expected, expected_flow) = run(&mut whole, &[&stream]);

            let mut points: Vec<usize> = cuts.into_iter().map(|c| c % (stream.len() + 1)).collect();
            points.sort_unstable();
            let mut chunks = Vec::new();
            let mut start = 0;
            for p in points {
                chunks.push(&stream[start..p]);
                start = p;
            }
            chunks.push(&stream[start..]);
            let mut split = TimeSession::new(64);
            let (got, flow) = run(&mut split, &chunks);
            prop_assert_eq!(got, expected);
            prop_assert_eq!(flow, expected_flow);
        }

        /// Whatever a peer sends, every reply is a complete JAM or ERR line.
        #[test]
        fn every_reply_is_a_whole_line(stream in proptest::collection::vec(any::<u8>(), 0..2000)) {
            let mut s = TimeSession::new(64);
            let (out, _) = run(&mut s, &[&stream]);
            for line in out.split_inclusive(|&b| b == b'\n') {
                prop_assert!(line.ends_with(b"\r\n"));
                prop_assert!(line.starts_with(b"JAM ") || line.starts_with(b"ERR "));
            }
        }
    }
}
