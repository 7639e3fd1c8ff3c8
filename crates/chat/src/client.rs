//! `jaring chat client`.
