//! Sans-IO protocol cores for every jaring service.
//!
//! Nothing in this crate touches a socket, a clock or a thread: each core takes the bytes a peer sent
//! (and, where it needs one, the current time through a trait the caller implements) and appends the
//! bytes to send back. That is what lets the same code run under every server model of
//! `jaring-runtime`, and lets tests and fuzzers drive it without a network.
//!
//! # Layout
//! - [`chat`]: the chat realm's client protocol (lines in, JSON replies out), its commands and session.
//! - [`federation`]: the server-to-server link between realms (JSON frames, HMAC authentication).
//! - [`http`]: the web port's bounded HTTP/1.1 request-head parser and the WebSocket accept key.
//! - [`line`](mod@line): the bounded line framer every line protocol shares (CR LF or LF, a hard
//!   length cap).
//! - [`time`]: the TIME protocol (`TIME` → `JAM hh:mm:ss`), its session state machine and reply parser.
//! - [`Flow`]: what a session tells its driver after each input.

#![forbid(unsafe_code)]

pub mod chat;
pub mod dns;
pub mod federation;
pub mod http;
pub mod line;
pub mod time;

/// What the driver of a session must do after handing it input.
///
/// The session has already appended any reply bytes to the output buffer; `Close` means "write those
/// out, then close the connection".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Keep reading from the peer.
    Continue,
    /// Flush what was written, then close the connection.
    Close,
}
