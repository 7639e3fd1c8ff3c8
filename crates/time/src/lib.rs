//! The TIME service: `TIME` → `JAM hh:mm:ss`, on port 45000 by default.
//!
//! The protocol itself lives, sans-IO, in [`jaring_proto::time`]; this crate connects it to the world:
//! a [`TimeService`] the shared runtime serves under any model, a [`ZonedClock`] that reads the system
//! clock in the configured time zone, and the [`client`].
//!
//! # Layout
//! - [`server`]: [`TimeService`] and [`ZonedClock`].
//! - [`client`]: `jaring time client`: connect, ask N times, QUIT, with errors that name host and port.

#![forbid(unsafe_code)]

pub mod client;
pub mod server;

pub use server::{DEFAULT_PORT, TimeService, ZonedClock};
