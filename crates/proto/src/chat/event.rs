//! Events a live group session or a watching connection is pushed, framed so a client can always
//! tell them from replies.
//!
//! An event is one JSON object with an `"event"` field (and never a `"status"` field), followed by
//! `\r\n\r\n`, exactly like a reply: the same [`crate::chat::ReplyFramer`] splits both, and the
//! first key tells them apart. While a connection is in a live session the server sends events
//! until the session ends, then exactly one reply (the OK for `exit`), or, when the server ends the
//! session itself, an [`Event::End`] saying why, after which the connection is in command mode.

use serde::{Deserialize, Serialize};

use crate::chat::REPLY_END;

/// One group message as events, `inboxgroup` and group `history` carry it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupMessage {
    /// The group's address.
    pub group: String,
    /// The group's order: 1 for its first message, then 2, 3, … with no gaps. Every member sees
    /// the messages in this order.
    pub seq: i64,
    /// The message id (a UUID v7), unique across realms.
    pub id: String,
    /// The sender's address.
    pub from: String,
    /// The sender's display name (the lab's meaning).
    pub msg_from: String,
    /// The text.
    pub msg: String,
    /// When the group's realm committed it, in milliseconds since the Unix epoch.
    pub sent_at: i64,
}

/// A member of a group, in `join` and `leave` events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberChange {
    /// The group's address.
    pub group: String,
    /// The member's address.
    pub user: String,
    /// The member's display name.
    pub display_name: String,
}

/// Why the server ended a live session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ended {
    /// The group's address.
    pub group: String,
    /// Why, for people; the connection is back in command mode (unless the server also closes it,
    /// which it says here).
    pub reason: String,
}

/// Why the server stopped pushing to a watching connection, or is about to close it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notice {
    /// Why, for people.
    pub reason: String,
}

/// A pushed event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "lowercase")]
pub enum Event {
    /// A message to the group, pushed once committed.
    Message(GroupMessage),
    /// A user became a member.
    Join(MemberChange),
    /// A member left the group.
    Leave(MemberChange),
    /// The server ended this live session; the connection is in command mode again.
    End(Ended),
    /// A private message to the watching user (`watch`).
    Private(crate::chat::reply::Message),
    /// The server stopped pushing to this connection (`watch`); it stays open.
    #[serde(rename = "watch_end")]
    WatchEnd(Notice),
    /// The server is about to close this connection.
    Closing(Notice),
}

/// Appends `event` and the frame end; pure ASCII, like replies (see [`crate::chat::ascii`]).
pub fn encode_event(event: &Event, out: &mut Vec<u8>) {
    // Serialising plain structs of strings and numbers into a Vec cannot fail.
    let _ = crate::chat::ascii::to_ascii_writer(event, out);
    out.extend_from_slice(REPLY_END);
}

/// Whether a framed JSON object is an event rather than a reply.
pub fn is_event(value: &serde_json::Value) -> bool {
    value.get("event").is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_tagged_objects_ending_like_replies() {
        let mut out = Vec::new();
        encode_event(
            &Event::Message(GroupMessage {
                group: "football".into(),
                seq: 7,
                id: "0196f0a2-5c1e-7b3a-9f00-3c2d1e0f4a5b".into(),
                from: "messi".into(),
                msg_from: "Lionel Messi".into(),
                msg: "goal\r\n".into(),
                sent_at: 1,
            }),
            &mut out,
        );
        let text = String::from_utf8(out.clone()).expect("utf8");
        assert_eq!(
            text,
            "{\"event\":\"message\",\"group\":\"football\",\"seq\":7,\
             \"id\":\"0196f0a2-5c1e-7b3a-9f00-3c2d1e0f4a5b\",\"from\":\"messi\",\
             \"msg_from\":\"Lionel Messi\",\"msg\":\"goal\\r\\n\",\"sent_at\":1}\r\n\r\n"
        );
        let v: serde_json::Value = serde_json::from_slice(&out[..out.len() - 4]).expect("json");
        assert!(is_event(&v));
        let back: Event = serde_json::from_value(v).expect("event");
        assert!(matches!(back, Event::Message(m) if m.seq == 7));
        out.clear();
        encode_event(
            &Event::End(Ended {
                group: "g".into(),
                reason: "r".into(),
            }),
            &mut out,
        );
        assert_eq!(
            out,
            b"{\"event\":\"end\",\"group\":\"g\",\"reason\":\"r\"}\r\n\r\n"
        );
    }
}
