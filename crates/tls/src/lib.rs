//! TLS for jaring: certificates and keys from PEM, rustls configurations for the services and
//! their clients, pinned mutual TLS for realm-to-realm links, and the lab's own certificate
//! authority.
//!
//! Everything is built on rustls with the *ring* provider ([`provider`]); configurations are
//! always built with `builder_with_provider`, never with the process-wide default provider
//! (none is installed, and `builder()` panics without one).
//!
//! # Layout
//!
//! - `error`: [`TlsError`], the one error type; each message says what to do.
//! - `identity`: [`Identity`] (a certificate chain and its key, from PEM) and [`Fingerprint`]
//!   (SHA-256 of a certificate's SubjectPublicKeyInfo, what links pin).
//! - `config`: [`server_config`] and [`client_config`] for the time, echo and chat services
//!   (TLS 1.2 and 1.3, session resumption, `$SSLKEYLOGFILE`), [`Trust`], [`server_name`].
//! - `link`: [`link_server_config`] and [`link_client_config`] for realm-to-realm links
//!   (mutual TLS 1.3, pinned keys), and [`link_refusal`] to tell why a link was refused.
//! - [`pki`]: the lab CA ([`pki::Authority`]) and [`pki::ensure_lab`], which keeps a directory
//!   of CA and leaf files up to date.
//!
//! The design and its pitfalls are written up in `docs/design/tls.md`.

use std::sync::{Arc, OnceLock};

mod config;
mod error;
mod identity;
mod link;
pub mod pki;

pub use config::{Trust, client_config, server_config, server_name};
pub use error::TlsError;
pub use identity::{Fingerprint, Identity, fingerprint_of, fingerprint_of_pem_file};
pub use link::{LinkRefusal, LinkTrust, link_client_config, link_refusal, link_server_config};
/// The rustls this crate builds its settings with (so users name the same types).
pub use rustls;

/// The crypto provider every configuration here is built with: rustls' *ring* provider,
/// created once.
#[allow(deprecated)]
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    // rustls 0.23.48 deprecates the ring provider (no post-quantum key exchange) to steer
    // users to aws-lc-rs; this workspace keeps ring on purpose (aws-lc-rs costs ~75 s of cold
    // build), so the deprecation is acknowledged here, in one place.
    static PROVIDER: OnceLock<Arc<rustls::crypto::CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| {
            use rustls::crypto::ring::kx_group;
            // ring's default order puts P-384 first, which ring computes with generic bignum
            // code: measured here, a full handshake cost the server 1,167 µs of CPU with P-384
            // and 340 µs with X25519 (what OpenSSL and Python offer first). Our clients offer
            // X25519 first too; P-256 and P-384 stay for peers that want them.
            Arc::new(rustls::crypto::CryptoProvider {
                kx_groups: vec![kx_group::X25519, kx_group::SECP256R1, kx_group::SECP384R1],
                ..rustls::crypto::ring::default_provider()
            })
        })
        .clone()
}
