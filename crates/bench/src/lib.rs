//! The jaring load generator.
//!
//! A workload is a loop one connection runs until a deadline; the [`engine`] runs N of them at once,
//! each timing its own requests into an HDR histogram (no shared lock on the hot path), merges the
//! histograms when the time is up and reports throughput, errors and latency percentiles. Everything is
//! bounded: the run ends at its deadline, a grace second later every worker still running is aborted,
//! and nothing is left behind.
//!
//! # Layout
//! - [`engine`]: runs workers, counts, shows live progress, builds the [`Report`].
//! - [`chat`]: the CHAT workloads, `send` (durable messages, send→inbox latency) and `idle`
//!   (logged-in connections held, for the server's memory).
//! - [`chat_group`]: the CHAT group workload (`--group`): members in one group, senders at a fixed
//!   rate, deliveries per second, send→receive latency, lost and duplicated deliveries; speaks the
//!   jaring protocol or IRC (to compare with ngIRCd).
//! - [`chat_push`]: the CHAT push workload (`--push`): connections that `watch`, senders of private
//!   messages to them at a fixed rate, send→pushed latency, lost and duplicated messages, and the
//!   server's memory with every watcher opted in.
//! - [`echo`]: the ECHO workloads, `stream` (throughput) and `round-trip`.
//! - [`time`]: the TIME workloads, `persistent` and `churn`.
//! - [`net`]: connecting the same way everywhere, in plaintext or TLS ([`net::Tls`]: one
//!   session cache for a run's connections, so they resume).
//!
//! Every workload speaks TLS when its options carry a [`net::Tls`]; plaintext keeps its own
//! paths (the loops are generic over the stream, or, for echo streams, zero-copy on the socket).

#![forbid(unsafe_code)]

pub mod chat;
pub mod chat_group;
pub mod chat_push;
pub mod echo;
pub mod engine;
pub mod net;
pub mod plot;
pub mod time;
pub mod units;

pub use engine::{LoadOptions, Report, Throughput};
