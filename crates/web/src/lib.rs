//! The web port of a jaring realm (issue #18): the chat page, and the chat over WebSocket.
//!
//! The WebSocket is a transport, not a second chat: [`WsTransport`] implements
//! [`jaring_runtime::Transport`], and the realm's own connection loop ([`jaring_chat::ChatServer`])
//! runs on it unchanged, so a browser gets the same commands, the same JSON and the same session
//! code as the TCP port; only the framing differs (one text message per command line, one per
//! reply or pushed event). The web port itself is a runtime [`jaring_runtime::Handler`]
//! ([`WebServer`]), so it has the chat port's connection limits, timeouts and TLS.
//!
//! # Layout
//! - [`gateway`]: [`WebServer`], routes, the `Origin` check, the handshake; [`ChatEndpoint`], what
//!   a realm offers the web port.
//! - [`ws`]: [`WsTransport`], the framing at each edge, and liveness pings.
//! - [`client`]: a WebSocket client of the web port (tests, benches).
//! - [`lab`]: [`lab::Board`], what the lab's dashboard (`/lab`, `/lab/stats`) and `/metrics` show.
//! - [`assets`]: the page and the dashboard, embedded in the binary.

#![forbid(unsafe_code)]

pub mod assets;
pub mod client;
pub mod gateway;
pub mod lab;
pub mod ws;

pub use gateway::{AnyTransport, CSP, ChatEndpoint, WebOptions, WebRealm, WebServer};
pub use ws::WsTransport;

/// The port `jaring lab` serves the page on.
pub const DEFAULT_PORT: u16 = 8080;
