//! Test helpers shared by jaring's crates; a dev-dependency only, never shipped.
//!
//! Everything here may panic with a clear message: a broken fixture should fail the test that
//! uses it, loudly, rather than return errors every test would have to unwrap.
//!
//! # Layout
//! - [`pg`]: a throwaway PostgreSQL 15 cluster on a free loopback port ([`pg::PgCluster`]).
//! - [`tls`]: a test CA and a leaf for `localhost`/`127.0.0.1`/`::1`, in memory and as PEM
//!   files ([`tls::TestPki`]).

#![forbid(unsafe_code)]

pub mod pg;
pub mod tls;
