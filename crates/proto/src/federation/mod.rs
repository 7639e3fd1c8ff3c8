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

/// A member of a group, as [`Frame::Gmemberlist`] lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupMember {
    /// The member's address as the home realm names it (`messi`, `james@realm2`).
    pub name: String,
    /// The display name the home realm knows.
    pub display: String,
    /// Whether the member has a live session open on the home realm.
    pub live: bool,
}

/// Most bytes of members one [`Frame::Gmemberlist`] carries: half a frame, so that the frame
/// stays well under [`DEFAULT_MAX_FRAME`] whatever the group's size (a frame over it would end
/// the link, and asking `members` of a big group must not cost everyone the link).
pub const MAX_MEMBER_LIST_BYTES: usize = DEFAULT_MAX_FRAME / 2;

/// Keeps the members of `members` whose encoding fits in `budget` bytes, in order; returns
/// whether any were cut.
pub fn fit_members(members: &mut Vec<GroupMember>, budget: usize) -> bool {
    let mut used = 0;
    let fits = members
        .iter()
        .take_while(|m| {
            // The comma between two entries counts too.
            used += serde_json::to_string(m).map_or(usize::MAX / 2, |j| j.len()) + 1;
            used <= budget
        })
        .count();
    let cut = fits < members.len();
    members.truncate(fits);
    cut
}

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
    /// Is there a group `group` homed on your realm? Answered by [`Frame::Gfound`].
    Glookup {
        /// Query number, echoed in the answer.
        q: u64,
        /// The group's name.
        group: String,
    },
    /// The answer to [`Frame::Glookup`].
    Gfound {
        /// The query number.
        q: u64,
        /// Whether the group exists (homed on the answering realm).
        exists: bool,
    },
    /// Member realm → home realm: who is in `group`? Answered by [`Frame::Gmemberlist`].
    Gmembers {
        /// Query number, echoed in the answer.
        q: u64,
        /// The group's name on the home realm.
        group: String,
    },
    /// The answer to [`Frame::Gmembers`].
    Gmemberlist {
        /// The query number.
        q: u64,
        /// Why not (no such group), or null.
        error: Option<String>,
        /// The members, by name: as many as fit in [`MAX_MEMBER_LIST_BYTES`].
        members: Vec<GroupMember>,
        /// More members than fit (the list was cut; absent when `false`).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        more: bool,
    },
    /// Member realm → home realm: make `user@<sender realm>` a member of `group` (created if it
    /// does not exist). Answered by [`Frame::Greply`] with the same `q`.
    Gjoin {
        /// Query number, echoed in the answer.
        q: u64,
        /// The group's name on the receiving (home) realm.
        group: String,
        /// The user's name on the sending realm (without `@realm`).
        user: String,
    },
    /// Member realm → home realm: end the membership of `user@<sender realm>` in `group`.
    /// Answered by [`Frame::Greply`].
    Gleave {
        /// Query number, echoed in the answer.
        q: u64,
        /// The group's name on the home realm.
        group: String,
        /// The user's name on the sending realm.
        user: String,
    },
    /// The answer to [`Frame::Gjoin`] or [`Frame::Gleave`].
    Greply {
        /// The query number.
        q: u64,
        /// Why it was refused, or null when it was done (and committed).
        error: Option<String>,
        /// For a join: the member's read cursor on the home realm (the group's latest `seq` for a
        /// new member); 0 for a leave.
        read_seq: i64,
        /// The join created the group.
        created: bool,
        /// The join made the user a member (false: they were one already).
        new_member: bool,
    },
    /// Member realm → home realm: a message from `from@<sender realm>` to `group`, taken from the
    /// sender's outbox. Answered by [`Frame::Ack`] once committed in the group, or
    /// [`Frame::Bounce`] (no such group, not a member).
    Gpost {
        /// The message id (UUID v7) the member realm chose: the de-duplication key.
        id: String,
        /// The group's name on the home realm.
        group: String,
        /// The sender's user name on the sending realm.
        from: String,
        /// The text.
        body: String,
        /// Milliseconds since the Unix epoch, when the member realm accepted it.
        sent_at: i64,
    },
    /// Home realm → member realm: message `seq` of `group`, for the member realm's replica of it
    /// (`group@<sender realm>`). Sent in `seq` order; answered by [`Frame::Gack`].
    Gmsg {
        /// The group's name on the home realm.
        group: String,
        /// The message's place in the group's order (assigned by the home realm).
        seq: i64,
        /// The message id.
        id: String,
        /// The sender's address as the home realm names it (`messi`, `james@realm2`).
        from: String,
        /// The sender's display name as the home realm knows it.
        display: String,
        /// The text.
        body: String,
        /// Milliseconds since the Unix epoch.
        sent_at: i64,
    },
    /// Home realm → member realm: `user` joined (`leave` false) or left `group`, for the member
    /// realm's live sessions on its replica. Best effort, like presence on one realm: not stored,
    /// not acknowledged, not resent.
    Gpresence {
        /// The group's name on the home realm.
        group: String,
        /// The member's address as the home realm names it.
        user: String,
        /// The member's display name.
        display: String,
        /// A leave (else a join).
        leave: bool,
    },
    /// Member realm → home realm: every message of `group` up to `seq` is committed in the
    /// replica (cumulative).
    Gack {
        /// The group's name on the home realm.
        group: String,
        /// The highest `seq` committed.
        seq: i64,
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
            Self::Glookup { .. } => "glookup",
            Self::Gfound { .. } => "gfound",
            Self::Gmembers { .. } => "gmembers",
            Self::Gmemberlist { .. } => "gmemberlist",
            Self::Gjoin { .. } => "gjoin",
            Self::Gleave { .. } => "gleave",
            Self::Greply { .. } => "greply",
            Self::Gpost { .. } => "gpost",
            Self::Gmsg { .. } => "gmsg",
            Self::Gack { .. } => "gack",
            Self::Gpresence { .. } => "gpresence",
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
    fn a_member_list_is_cut_to_its_byte_budget() {
        let member = |i: usize| GroupMember {
            name: format!("user{i:04}@realm2"),
            display: format!("User {i}"),
            live: i.is_multiple_of(2),
        };
        let mut all: Vec<GroupMember> = (0..100).map(member).collect();
        // The longest entry ("live":false); ten of them are a budget ten entries fit in.
        let one = serde_json::to_string(&all[1]).map_or(0, |j| j.len()) + 1;
        let mut list = all.clone();
        assert!(fit_members(&mut list, one * 10));
        assert_eq!(list, all[..10]);
        let mut frame = Vec::new();
        Frame::Gmemberlist {
            q: 1,
            error: None,
            members: list,
            more: true,
        }
        .encode(&mut frame);
        assert!(
            frame.ends_with(b",\"more\":true}\n"),
            "{}",
            String::from_utf8_lossy(&frame)
        );
        assert!(!fit_members(&mut all, usize::MAX / 4), "everything fits");
        assert_eq!(all.len(), 100);
    }

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
    fn group_frames_are_byte_exact() {
        let cases = [
            (
                Frame::Glookup {
                    q: 2,
                    group: "football".into(),
                },
                r#"{"t":"glookup","q":2,"group":"football"}"#,
            ),
            (
                Frame::Gfound { q: 2, exists: true },
                r#"{"t":"gfound","q":2,"exists":true}"#,
            ),
            (
                Frame::Gmembers {
                    q: 6,
                    group: "football".into(),
                },
                r#"{"t":"gmembers","q":6,"group":"football"}"#,
            ),
            (
                Frame::Gmemberlist {
                    q: 6,
                    error: None,
                    members: vec![GroupMember {
                        name: "james@realm2".into(),
                        display: "James".into(),
                        live: false,
                    }],
                    more: false,
                },
                r#"{"t":"gmemberlist","q":6,"error":null,"members":[{"name":"james@realm2","display":"James","live":false}]}"#,
            ),
            (
                Frame::Gjoin {
                    q: 3,
                    group: "football".into(),
                    user: "james".into(),
                },
                r#"{"t":"gjoin","q":3,"group":"football","user":"james"}"#,
            ),
            (
                Frame::Gleave {
                    q: 4,
                    group: "football".into(),
                    user: "james".into(),
                },
                r#"{"t":"gleave","q":4,"group":"football","user":"james"}"#,
            ),
            (
                Frame::Greply {
                    q: 3,
                    error: None,
                    read_seq: 7,
                    created: false,
                    new_member: true,
                },
                r#"{"t":"greply","q":3,"error":null,"read_seq":7,"created":false,"new_member":true}"#,
            ),
            (
                Frame::Gpost {
                    id: "0190c7a2-0000-7000-8000-000000000001".into(),
                    group: "football".into(),
                    from: "james".into(),
                    body: "hi".into(),
                    sent_at: 5,
                },
                r#"{"t":"gpost","id":"0190c7a2-0000-7000-8000-000000000001","group":"football","from":"james","body":"hi","sent_at":5}"#,
            ),
            (
                Frame::Gmsg {
                    group: "football".into(),
                    seq: 8,
                    id: "0190c7a2-0000-7000-8000-000000000001".into(),
                    from: "james@realm2".into(),
                    display: "james@realm2".into(),
                    body: "hi".into(),
                    sent_at: 5,
                },
                r#"{"t":"gmsg","group":"football","seq":8,"id":"0190c7a2-0000-7000-8000-000000000001","from":"james@realm2","display":"james@realm2","body":"hi","sent_at":5}"#,
            ),
            (
                Frame::Gpresence {
                    group: "football".into(),
                    user: "messi".into(),
                    display: "Lionel Messi".into(),
                    leave: false,
                },
                r#"{"t":"gpresence","group":"football","user":"messi","display":"Lionel Messi","leave":false}"#,
            ),
            (
                Frame::Gack {
                    group: "football".into(),
                    seq: 8,
                },
                r#"{"t":"gack","group":"football","seq":8}"#,
            ),
        ];
        for (frame, text) in cases {
            let mut out = Vec::new();
            frame.encode(&mut out);
            assert_eq!(
                std::str::from_utf8(&out).expect("utf-8"),
                format!("{text}\n")
            );
            let mut frames = Vec::new();
            LinkFramer::new(DEFAULT_MAX_FRAME)
                .feed(&out, &mut frames)
                .expect("valid");
            assert_eq!(frames, vec![frame]);
        }
        // A refusal carries its reason; a missing field is malformed.
        let mut frames = Vec::new();
        LinkFramer::new(DEFAULT_MAX_FRAME)
            .feed(
                b"{\"t\":\"greply\",\"q\":1,\"error\":\"no\",\"read_seq\":0,\"created\":false,\"new_member\":false}\n",
                &mut frames,
            )
            .expect("valid");
        assert!(matches!(&frames[0], Frame::Greply { error: Some(e), .. } if e == "no"));
        assert!(
            LinkFramer::new(DEFAULT_MAX_FRAME)
                .feed(b"{\"t\":\"gack\",\"group\":\"g\"}\n", &mut frames)
                .is_err()
        );
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
        fn group_frames_round_trip(
            group in "[A-Za-z0-9][A-Za-z0-9_.-]{0,31}",
            from in "\\PC{0,40}",
            body in proptest::prelude::any::<String>(),
            seq in proptest::prelude::any::<i64>(),
            q in proptest::prelude::any::<u64>(),
            leave in proptest::prelude::any::<bool>(),
        ) {
            let frames = [
                Frame::Gmsg {
                    group: group.clone(),
                    seq,
                    id: "0190c7a2-0000-7000-8000-000000000001".into(),
                    from: from.clone(),
                    display: body.clone(),
                    body: body.clone(),
                    sent_at: seq,
                },
                Frame::Gpost {
                    id: from.clone(),
                    group: group.clone(),
                    from: from.clone(),
                    body: body.clone(),
                    sent_at: seq,
                },
                Frame::Greply {
                    q,
                    error: Some(body.clone()),
                    read_seq: seq,
                    created: leave,
                    new_member: !leave,
                },
                Frame::Gpresence { group, user: from, display: body, leave },
            ];
            let mut out = Vec::new();
            for f in &frames {
                f.encode(&mut out);
            }
            // One frame per line, whatever the text holds.
            proptest::prop_assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), frames.len());
            let mut got = Vec::new();
            LinkFramer::new(DEFAULT_MAX_FRAME).feed(&out, &mut got).expect("valid");
            proptest::prop_assert_eq!(got, frames.to_vec());
        }

        #[test]
        fn never_panics(input in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            let mut frames = Vec::new();
            let _ = LinkFramer::new(256).feed(&input, &mut frames);
        }
    }
}
