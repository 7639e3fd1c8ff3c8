//! TLS for jaring (being built).
