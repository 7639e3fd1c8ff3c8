//! The jaring chat realm: users with Argon2id passwords, session tokens, private messages with a
//! durable inbox, on the shared runtime under every server model; plus the offline user tools and
//! the interactive client.
//!
//! The protocol itself lives, sans-IO, in [`jaring_proto::chat`]; `docs/chat-protocol.md` specifies
//! it byte for byte.
//!
//! # Layout
//! - [`realm`]: [`Realm`], what a realm knows and does: auth, tokens, presence, send, inbox,
//!   history; independent of sockets.
//! - [`server`]: [`ChatServer`], the runtime [`jaring_runtime::Handler`] that drives a realm per
//!   connection, async or on a thread.
//! - [`storage`]: the storage port, every trait a backend implements ([`Store`] and the rest);
//!   the adapters live in their own crates (`jaring-chat-sqlite`, the embedded default).
//! - [`password`]: Argon2id hashing off the async workers; [`token`]: session tokens;
//!   [`limiter`]: failed-login limits; [`clock`]: injected time.
//! - [`groups`]: [`groups::Hub`], the groups in memory and their live fan-out; [`live`]: the
//!   connection loop of a live group session.
//! - [`watch`]: [`watch::Watch`], a watching connection's pushed events (`watch`, `ack`).
//! - [`remote`]: [`remote::Remote`], what the realm asks of its links to other realms.
//! - [`federation`]: authenticated links to peer realms, the durable outbox, `user@realm`, and
//!   groups across realms (`group@realm`, replicas fed by the group's home realm).
//! - [`config`]: the realm's TOML configuration and its commented default.
//! - [`client`]: `jaring chat client`, the interactive client.
//! - [`admin`]: the admin socket: user administration of a running realm by its operator.

#![forbid(unsafe_code)]

pub mod admin;
pub mod client;
pub mod clock;
pub mod config;
pub mod federation;
pub mod groups;
pub mod limiter;
pub mod live;
pub mod password;
pub mod realm;
pub mod remote;
pub mod server;
pub mod storage;
pub mod token;
pub mod watch;

pub use clock::{Clock, ManualClock, SystemClock};
pub use realm::{Realm, RealmOptions};
pub use server::ChatServer;
pub use storage::Store;

/// The port the labs' chat server listens on.
pub const DEFAULT_PORT: u16 = 8889;
