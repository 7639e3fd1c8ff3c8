//! The chat protocol of a realm: requests are lines, replies are JSON objects ending in `\r\n\r\n`.
//!
//! The full specification, byte for byte and with example exchanges, is `docs/chat-protocol.md`;
//! this module is its executable form, shared by the server, the client and the load generator.
//!
//! A request is one line of UTF-8 ending in CR LF (a bare LF is accepted too): a command word, then
//! parameters separated by spaces; trailing spaces are ignored (the classic lab client sends
//! `auth messi surabaya \r\n`). Every request gets exactly one reply, in request order: a JSON object
//! with `"status": "OK"` or `"status": "ERROR"` (an ERROR carries a human-readable `"message"`),
//! followed by `\r\n\r\n`, which is how the classic client finds the end of a reply.
//!
//! # Layout
//! - [`address`]: user (and later group) addresses, `name` or `name@realm`.
//! - [`command`]: [`Command`], the parsed request, with one module per command:
//!   [`auth`], [`send`], [`inbox`], [`logout`], [`users`], [`history`], [`realms`]. Each parses its parameters
//!   and encodes itself, so the client and the server cannot disagree on the syntax.
//! - Groups: [`group`] (join, and turn the connection into a live session; [`classic`] is the
//!   classic two-realm client's raw-text group mode), [`sendgroup`],
//!   [`inboxgroup`], [`groups`], [`members`], [`leave`]; their replies in [`group_reply`]; the
//!   events a live session pushes, and their framing, in [`event`].
//! - [`reply`]: the reply objects, their encoder and a bounded reply framer for clients; every reply
//!   and event is pure ASCII JSON, written through [`ascii::AsciiFormatter`].
//! - Pushed events that survive reconnects: [`watch`] (`watch`, `ack`, `ping` and their cursors);
//!   the events themselves in [`event`].
//! - [`admin`]: the realm's admin socket (user administration of a running realm; not the
//!   chat port).
//! - [`session`]: [`ChatSession`], the per-connection state machine: bytes in, requests out.

pub mod address;
pub mod admin;
pub mod ascii;
pub mod auth;
pub mod classic;
pub mod command;
pub mod event;
pub mod group;
pub mod group_reply;
pub mod groups;
pub mod history;
pub mod inbox;
pub mod inboxgroup;
pub mod leave;
pub mod logout;
pub mod members;
pub mod realms;
pub mod reply;
pub mod send;
pub mod sendgroup;
pub mod session;
pub mod users;
pub mod watch;

pub use address::{Address, AddressError};
pub use command::{Command, ParseError, parse_command};
pub use event::{Event, GroupMessage, encode_event, is_event};
pub use reply::{ReplyFramer, encode_error};
pub use session::{ChatSession, LiveLine, Request};

/// Default cap on a request line, in bytes (64 KiB): room for a long message, not for a flood. A
/// longer line is answered with an ERROR and the connection is closed, because the rest of it
/// cannot be told apart from the next request.
pub const DEFAULT_MAX_LINE: usize = 64 * 1024;

/// What ends every reply on the wire.
pub const REPLY_END: &[u8] = b"\r\n\r\n";

/// Splits off the next space-separated parameter, skipping runs of spaces; returns it and the rest.
pub(crate) fn next_param(s: &str) -> Option<(&str, &str)> {
    let s = s.trim_start_matches(' ');
    if s.is_empty() {
        return None;
    }
    Some(match s.find(' ') {
        Some(i) => (&s[..i], &s[i + 1..]),
        None => (s, ""),
    })
}
