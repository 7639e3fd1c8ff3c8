//! The federation link protocol: how two realms talk over their server-to-server port.
//!
//! `docs/federation.md` specifies it byte for byte; this module is its executable form, shared by
//! the link driver (`jaring_chat::federation`) and the tests. Nothing here touches a socket.
//!
//! A frame is one JSON object on one line, ending in LF; the `"t"` field names its kind. JSON keeps
//! every user-supplied text (names are validated, message bodies are escaped strings) inside a field,
//! so nothing a user types can ever be read as a frame, and the client port never parses frames at
//! all: it speaks [`crate::chat`] only.
//!
//! # Layout
//! - [`Frame`]: every frame, with [`Frame::encode`] and [`LinkFramer`], the bounded decoder.
//! - [`auth`]: the HMAC-SHA256 challenge–response both ends run before any other frame.

pub mod auth;

use serde::{Deserialize, Serialize};

use crate::line::LineFramer;

/// The protocol version both ends must speak (the `v` of `hello` and `challenge`).
pub const VERSION: u32 = 1;

/// Longest frame accepted, in bytes (512 KiB): a message body is at most one 64 KiB client line,
/// and JSON escaping can make control characters six times longer. A longer frame ends the link.
pub const DEFAULT_MAX_FRAME: usize = 512 * 1024;

/// One frame of the link protocol.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "lowercase", deny_unknown_fields)]
pub enum Frame {
    /// Dialer → listener, first: who I am, whom I expect, my nonce.
    Hello {
        /// Protocol version ([`VERSION`]).
        v: u32,
        /// The dialer's realm name.
        realm: String,
        /// The realm the dialer expects to reach.
        to: String,
        /// 32 random bytes, lowercase hex.
        nonce: String,
    },
    /// Listener → dialer: my name, my nonce, and proof that I hold our shared secret.
    Challenge {
        /// Protocol version ([`VERSION`]).
        v: u32,
        /// The listener's realm name.
        realm: String,
        /// 32 random bytes, lowercase hex.
        nonce: String,
        /// The listener's proof ([`auth::Role::Listener`]), lowercase hex.
        mac: String,
    },
    /// Dialer → listener: proof that the dialer holds the secret too.
    Auth {
        /// The dialer's proof ([`auth::Role::Dialer`]), lowercase hex.
        mac: String,
    },
    /// Listener → dialer: the link is up; any frame below may follow, both ways.
    Ready,
    /// Either side, before closing: why the link is refused. Carries no secret.
    Refused {
        /// Human-readable reason.
        reason: String,
    },
    /// A private message for a user of the receiving realm.
    Msg {
        /// The message id (UUID v7) the sender's realm chose: the de-duplication key.
        id: String,
        /// Sender's user name on the sending realm (without `@realm`).
        from: String,
        /// Recipient's user name on the receiving realm (without `@realm`).
        to: String,
        /// The text.
        body: String,
        /// Milliseconds since the Unix epoch, when the sender's realm accepted it.
        sent_at: i64,
    },
    /// The message `id` is committed in the receiver's inbox (or was already): drop it from the outbox.
    Ack {
        /// The message id.
        id: String,
    },
    /// The message `id` cannot be delivered (no such user): drop it and tell its sender.
    Bounce {
        /// The message id.
        id: String,
        /// Why, for the sender.
        reason: String,
    },
    /// Does user `user` exist on your realm?
    Lookup {
        /// Query number, echoed in the answer.
        q: u64,
        /// The user name.
        user: String,
    },
    /// The answer to [`Frame::Lookup`].
    Found {
        /// The query number.
        q: u64,
        /// The display name, or null when there is no such user.
        display: Option<String>,
    },
    /// Keep-alive; answered by [`Frame::Pong`].
    Ping,
    /// The answer to [`Frame::Ping`].
    Pong,
}

impl Frame {
    /// Appends the frame as one line, LF included.
    pub fn encode(&self, out: &mut Vec<u8>) {
        // Serialising a plain enum of strings and integers into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, self);
        out.push(b'\n');
    }

    /// The frame's kind, as it appears in `"t"`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Hello { .. } => "hello",
            Self::Challenge { .. } => "challenge",
            Self::Auth { .. } => "auth",
            Self::Ready => "ready",
            Self::Refused { .. } => "refused",
            Self::Msg { .. } => "msg",
            Self::Ack { .. } => "ack",
            Self::Bounce { .. } => "bounce",
            Self::Lookup { .. } => "lookup",
            Self::Found { .. } => "found",
            Self::Ping => "ping",
            Self::Pong => "pong",
        }
    }
}

/// Why the bytes from a peer are not a valid frame stream. Either way the link is closed.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// A frame passed [`DEFAULT_MAX_FRAME`] (or the configured cap).
    #[error("frame longer than {0} bytes")]
    TooLong(usize),
    /// A line that is not a frame of this protocol.
    #[error("malformed frame")]
    Malformed(#[source] serde_json::Error),
}

/// Splits the byte stream of a link into frames, holding at most the configured cap per frame.
#[derive(Debug)]
pub struct LinkFramer {
    lines: LineFramer,
}

impl LinkFramer {
    /// A framer accepting frames of up to `max_frame` bytes.
    pub fn new(max_frame: usize) -> Self {
        Self {
            lines: LineFramer::new(max_frame),
        }
    }

    /// Decodes every complete frame in `input` into `frames`, in order. After an error the link is
    /// unusable: close it.
    pub fn feed(&mut self, input: &[u8], frames: &mut Vec<Frame>) -> Result<(), FrameError> {
        let mut error = None;
        self.lines.feed(input, |line| {
            let parsed = match line {
                Err(t) => Err(FrameError::TooLong(t.max)),
                Ok(l) => serde_json::from_slice(l).map_err(FrameError::Malformed),
            };
            match parsed {
                Ok(f) => {
                    frames.push(f);
                    std::ops::ControlFlow::Continue(())
                }
                Err(e) => {
                    error = Some(e);
                    std::ops::ControlFlow::Break(())
                }
            }
        });
        error.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_byte_for_byte() {
        let f = Frame::Msg {
            id: "0190c7a2-0000-7000-8000-000000000001".into(),
            from: "messi".into(),
            to: "james".into(),
            body: "hi\r\n{\"t\":\"ack\"}".into(),
            sent_at: 1,
        };
        let mut out = Vec::new();
        f.encode(&mut out);
        assert_eq!(
            out,
            b"{\"t\":\"msg\",\"id\":\"0190c7a2-0000-7000-8000-000000000001\",\"from\":\"messi\",\
\"to\":\"james\",\"body\":\"hi\\r\\n{\\\"t\\\":\\\"ack\\\"}\",\"sent_at\":1}\n"
        );
        let mut framer = LinkFramer::new(DEFAULT_MAX_FRAME);
        let mut frames = Vec::new();
        // Split anywhere: the body's own braces and CR LF never end or start a frame.
        let (a, b) = out.split_at(17);
        framer.feed(a, &mut frames).expect("valid");
        framer.feed(b, &mut frames).expect("valid");
        assert_eq!(frames, vec![f]);
        let mut ready = Vec::new();
        Frame::Ready.encode(&mut ready);
        assert_eq!(ready, b"{\"t\":\"ready\"}\n");
    }

    #[test]
    fn refuses_garbage_and_oversize() {
        let mut frames = Vec::new();
        assert!(
            LinkFramer::new(64)
                .feed(b"auth messi surabaya\r\n", &mut frames)
                .is_err()
        );
        assert!(
            LinkFramer::new(64)
                .feed(b"{\"t\":\"ack\",\"id\":\"x\",\"extra\":1}\n", &mut frames)
                .is_err()
        );
        assert!(
            LinkFramer::new(8)
                .feed(b"{\"t\":\"ready\"}\n", &mut frames)
                .is_err()
        );
        assert!(frames.is_empty());
    }

    proptest::proptest! {
        #[test]
        fn never_panics(input in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            let mut frames = Vec::new();
            let _ = LinkFramer::new(256).feed(&input, &mut frames);
        }
    }
}
