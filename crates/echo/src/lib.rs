//! The ECHO service: every byte back, in order, in bounded memory, on port 10000 by default.
//!
//! Echo has no framing, so there is no sans-IO protocol crate to speak of: the whole protocol is
//! "write back what you read, then close after the peer does" (see `docs/echo-protocol.md`). What
//! matters is how the bytes move, which is why [`EchoServer`] implements the runtime's
//! [`jaring_runtime::Handler`] itself rather than a line-oriented `Session`: a stream moves through
//! a kernel pipe with `splice(2)` on Linux, never entering the process (or, with `--copy` and
//! elsewhere, one bounded buffer that is read and written concurrently); `--model threads` copies
//! through a buffer per thread.
//!
//! # Layout
//! - [`server`]: [`EchoServer`], its connection loop, [`EchoConfig`] and [`EchoStats`].
//! - [`pump`]: where a connection's bytes wait between read and write: a buffer or a pipe.
//! - [`client`]: `jaring echo client`: one message, repeats, interactive lines, verified file echo.

#![forbid(unsafe_code)]

pub mod client;
pub mod pump;
pub mod server;

pub use server::{
    DEFAULT_PORT, DEFAULT_TLS_PORT, EchoConfig, EchoServer, EchoStats, FILE_ECHO_PORT,
};
