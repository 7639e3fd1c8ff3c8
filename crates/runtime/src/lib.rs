//! The server runtime every jaring service shares.
//!
//! A service supplies a [`Service`]: a factory of sans-IO [`Session`]s that turn the bytes a peer sent
//! into the bytes to send back. The runtime owns everything around that: binding the listener with the
//! lab's options, admitting connections under a limit and a share per client address (refusing the
//! excess with a reason), running each session under the chosen [`Model`], enforcing the idle and
//! line timeouts, and shutting down gracefully. Because
//! the session never sees a socket, the same protocol code runs unchanged under all three models.
//!
//! # Layout
//! - [`config`]: listener options and limits, each with a documented `DEFAULT_*`.
//! - [`service`]: the [`Service`], [`Session`] and [`Handler`] traits a protocol implements, and
//!   what a connection loop is given ([`Conn`]) and ends with ([`End`]).
//! - [`server`]: [`Server`], which binds, accepts, admits and drives connections, and its [`Stats`].
//! - [`dial`](mod@dial): how every client connects (resolve, try each address, name host and port
//!   on failure).
//! - [`transport`]: the seam every connection loop runs over ([`Transport`]): plain TCP and TLS
//!   ([`TlsTransport`]).
//! - [`driver`]: the two loops that move bytes between a socket and a session, async and blocking,
//!   through which every [`Service`] is a [`Handler`], and the clocks a connection loop watches
//!   ([`Watch`], [`LineDeadline`]).

#![forbid(unsafe_code)]

pub mod config;
pub mod dial;
pub mod driver;
pub mod server;
pub mod service;
pub mod transport;

pub use config::{Limits, ListenConfig, Model, ServerConfig, TlsListen, TlsMode};
pub use dial::{ClientStream, ClientTls, DialError, connect, dial, handshake};
pub use driver::{Conn, End, LineDeadline, Wait, Watch};
pub use jaring_proto::Flow;
pub use server::{
    BindError, IPV6_PREFIX_BITS, Server, Shard, Stats, StatsSnapshot, address_key, bind_std,
};
pub use service::{Busy, ConnInfo, Handler, Service, Session};
pub use tokio_util::sync::CancellationToken;
pub use transport::{TlsTransport, Transport};
