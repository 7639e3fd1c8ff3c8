//! Replies: one JSON object per request, then `\r\n\r\n`.
//!
//! Every reply has `"status"`: `"OK"` or `"ERROR"`; an ERROR has a `"message"` for people. The
//! fields of the lab's replies keep their names and meaning (`tokenid`, `messages`, `msg_from`,
//! `msg_to`, `msg`); jaring adds fields (a message id, addresses, a timestamp) that old clients
//! ignore.

use serde::{Deserialize, Serialize};

use crate::chat::REPLY_END;

/// `"OK"` or `"ERROR"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Status {
    /// The request did what it asked.
    #[serde(rename = "OK")]
    Ok,
    /// It did not; `message` says why.
    #[serde(rename = "ERROR")]
    Error,
}

/// A reply with only a status and a message: every ERROR, and the OK of `send` and `logout`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plain {
    /// OK or ERROR.
    pub status: Status,
    /// What happened, for people.
    pub message: String,
}

/// The OK of `auth`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthOk {
    /// Always OK.
    pub status: Status,
    /// The session token every other command takes.
    pub tokenid: String,
    /// Private messages not yet delivered, by sender address (an addition: the classic client
    /// ignores it).
    #[serde(default)]
    pub unread: std::collections::BTreeMap<String, u64>,
    /// True when more were waiting than were counted.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unread_more: bool,
    /// For each group the user is a member of with messages after their read cursor, how many.
    #[serde(default)]
    pub unread_groups: std::collections::BTreeMap<String, u64>,
}

/// The OK of `watch`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchOk {
    /// Always OK.
    pub status: Status,
    /// `Watching`.
    pub message: String,
    /// Whose messages are pushed.
    pub user: String,
    /// Seconds of silence from the client after which the server closes the connection: send
    /// `ping` well within it.
    pub idle_timeout: u64,
    /// Private messages pushed beyond the last acknowledged one, at most.
    pub private_window: u64,
}

/// The OK of `send`: the lab's fields plus the id the message was stored under.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sent {
    /// Always OK.
    pub status: Status,
    /// `Message Sent`, as in the lab.
    pub message: String,
    /// The message's id (a UUID v7).
    pub id: String,
}

/// One message as the inbox and history replies carry it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// The sender's display name (the lab's meaning).
    pub msg_from: String,
    /// The recipient's display name (the lab's meaning).
    pub msg_to: String,
    /// The text.
    pub msg: String,
    /// The message id (a UUID v7, time-ordered).
    pub id: String,
    /// The sender's address (`name`, or `name@realm` for another realm).
    pub from: String,
    /// The recipient's address.
    pub to: String,
    /// When the realm committed it, in milliseconds since the Unix epoch.
    pub sent_at: i64,
    /// The realm's commit order: it increases from message to message to one recipient (the
    /// cursor of `inbox TOKEN SINCE`, `watch` and `ack`).
    #[serde(default)]
    pub seq: i64,
}

/// The OK of `inbox`: messages grouped by sender address, each group oldest first.
///
/// Serialised by hand so the senders keep the order of their first message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct InboxOk {
    /// `(sender, messages)` pairs.
    pub messages: Vec<(String, Vec<Message>)>,
    /// True when more undelivered messages wait than one reply carries: ask again.
    pub more: bool,
}

/// One user in the reply to `users`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserEntry {
    /// Login name.
    pub name: String,
    /// Display name.
    pub display_name: String,
    /// Whether the user has a connection open that used one of their tokens.
    pub online: bool,
}

/// The OK of `users`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsersOk {
    /// Always OK.
    pub status: Status,
    /// Every user of the realm, by name.
    pub users: Vec<UserEntry>,
    /// True when the reply was cut short by its size cap: more wait (absent when false).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub more: bool,
    /// With `more`: the cursor to send as the command's last word for the next page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// The OK of `history`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryOk {
    /// Always OK.
    pub status: Status,
    /// The peer the conversation is with.
    pub peer: String,
    /// Messages both ways, oldest first.
    pub messages: Vec<Message>,
    /// True when the reply was cut short by its size cap: more wait (absent when false).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub more: bool,
    /// With `more`: the cursor to send as the command's last word for the next page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

impl Serialize for InboxOk {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap as _;

        struct Groups<'a>(&'a [(String, Vec<Message>)]);
        impl Serialize for Groups<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut map = s.serialize_map(Some(self.0.len()))?;
                for (sender, msgs) in self.0 {
                    map.serialize_entry(sender, msgs)?;
                }
                map.end()
            }
        }

        let mut map = s.serialize_map(Some(if self.more { 3 } else { 2 }))?;
        map.serialize_entry("status", &Status::Ok)?;
        map.serialize_entry("messages", &Groups(&self.messages))?;
        if self.more {
            map.serialize_entry("more", &true)?;
        }
        map.end()
    }
}

/// Appends the largest reply `make(k)` with `k` of `n` items (at least one) whose encoding fits
/// in `cap` bytes; returns `k`. The caller keeps `n` near the cap (by the items' raw sizes), so
/// this encodes once, and searches only when escaping made the reply larger than the cap.
pub fn encode_fitting<T: Serialize>(
    n: usize,
    cap: usize,
    mut make: impl FnMut(usize) -> T,
    out: &mut Vec<u8>,
) -> usize {
    let start = out.len();
    encode(&make(n), out);
    if n <= 1 || out.len() - start <= cap {
        return n;
    }
    // The largest k that fits: `lo` fits (or is the one item every reply carries), `hi` not.
    let (mut lo, mut hi) = (1, n);
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        out.truncate(start);
        encode(&make(mid), out);
        if out.len() - start <= cap {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    out.truncate(start);
    encode(&make(lo), out);
    lo
}

/// Appends `value` as one JSON object and the reply end.
///
/// Pure ASCII, non-ASCII escaped as Python's `json.dumps` does (see [`crate::chat::ascii`]).
pub fn encode<T: Serialize>(value: &T, out: &mut Vec<u8>) {
    // Serialising plain structs of strings and numbers into a Vec cannot fail.
    let _ = crate::chat::ascii::to_ascii_writer(value, out);
    out.extend_from_slice(REPLY_END);
}

/// Appends an ERROR reply saying `message`.
pub fn encode_error(message: impl std::fmt::Display, out: &mut Vec<u8>) {
    encode(
        &Plain {
            status: Status::Error,
            message: message.to_string(),
        },
        out,
    );
}

/// Appends a plain OK reply saying `message`.
pub fn encode_ok(message: &str, out: &mut Vec<u8>) {
    encode(
        &Plain {
            status: Status::Ok,
            message: message.to_owned(),
        },
        out,
    );
}

/// A reply was not JSON, or longer than the framer's cap.
#[derive(Debug, thiserror::Error)]
pub enum ReplyError {
    /// The reply grew past the cap without its `\r\n\r\n`.
    #[error("reply longer than {0} bytes without its end")]
    TooLong(usize),
    /// The reply was not a JSON object.
    #[error("reply is not JSON")]
    Json(#[from] serde_json::Error),
}

/// Splits a stream of replies at `\r\n\r\n`, holding at most `max` bytes of an unfinished one.
#[derive(Debug)]
pub struct ReplyFramer {
    buf: Vec<u8>,
    max: usize,
}

impl ReplyFramer {
    /// A framer that refuses replies longer than `max` bytes.
    pub fn new(max: usize) -> Self {
        Self {
            buf: Vec::new(),
            max,
        }
    }

    /// Feeds bytes read from the server.
    pub fn handle_input(&mut self, input: &[u8]) {
        self.buf.extend_from_slice(input);
    }

    /// The next complete reply, parsed as a JSON value; `Ok(None)` means more bytes are needed.
    pub fn poll_reply(&mut self) -> Result<Option<serde_json::Value>, ReplyError> {
        self.poll_reply_with(|bytes| serde_json::from_slice(bytes))?
            .transpose()
            .map_err(ReplyError::from)
    }

    /// The next complete reply's bytes (its JSON, without the `\r\n\r\n`), handed to `read`
    /// before they are dropped: for a caller that reads a few fields in place rather than
    /// building a [`serde_json::Value`]. `Ok(None)` means more bytes are needed.
    pub fn poll_reply_with<T>(
        &mut self,
        read: impl FnOnce(&[u8]) -> T,
    ) -> Result<Option<T>, ReplyError> {
        let Some(end) = memchr::memmem::find(&self.buf, REPLY_END) else {
            if self.buf.len() > self.max {
                return Err(ReplyError::TooLong(self.max));
            }
            return Ok(None);
        };
        let value = read(&self.buf[..end]);
        self.buf.drain(..end + REPLY_END.len());
        Ok(Some(value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_reply_is_json_then_crlfcrlf() {
        let mut out = Vec::new();
        encode_error("nope", &mut out);
        assert_eq!(out, b"{\"status\":\"ERROR\",\"message\":\"nope\"}\r\n\r\n");
    }

    #[test]
    fn inbox_keeps_sender_order_and_lab_fields() {
        let m = Message {
            msg_from: "Lionel Messi".into(),
            msg_to: "Jordan Henderson".into(),
            msg: "hi".into(),
            id: "x".into(),
            from: "messi".into(),
            to: "henderson".into(),
            sent_at: 1,
            seq: 7,
        };
        let inbox = InboxOk {
            messages: vec![("zed".into(), vec![]), ("messi".into(), vec![m])],
            more: false,
        };
        let mut out = Vec::new();
        encode(&inbox, &mut out);
        let text = String::from_utf8(out).expect("utf8");
        assert!(text.starts_with(
            "{\"status\":\"OK\",\"messages\":{\"zed\":[],\"messi\":[{\"msg_from\":\"Lionel Messi\""
        ));
        assert!(text.ends_with("}\r\n\r\n"));
    }

    #[test]
    fn framer_splits_replies_in_any_chunking() {
        let mut wire = Vec::new();
        encode_ok("a", &mut wire);
        encode_error("b", &mut wire);
        for chunk in [1, 3, 64, wire.len()] {
            let mut f = ReplyFramer::new(1024);
            let mut got = Vec::new();
            for piece in wire.chunks(chunk) {
                f.handle_input(piece);
                while let Some(v) = f.poll_reply().expect("valid") {
                    got.push(v["message"].as_str().unwrap_or_default().to_owned());
                }
            }
            assert_eq!(got, ["a", "b"]);
        }
        let mut f = ReplyFramer::new(4);
        f.handle_input(b"{\"status\"");
        assert!(f.poll_reply().is_err());
    }
}
