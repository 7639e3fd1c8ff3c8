//! The crate's one error type.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong while loading certificates and keys, issuing them or building
/// TLS configurations. Each message names the file or value involved and says what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A certificate file could not be read.
    #[error("cannot read certificate file {}: {source}; pass a PEM file with --tls-cert", path.display())]
    ReadCert {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A private key file could not be read.
    #[error("cannot read private key file {}: {source}; pass a PEM file with --tls-key", path.display())]
    ReadKey {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A CA certificate file could not be read.
    #[error("cannot read CA file {}: {source}; pass a PEM file of the CA certificate(s) with --ca", path.display())]
    ReadCa {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The PEM text holds no certificate.
    #[error(
        "no certificate in {origin}: expected a `-----BEGIN CERTIFICATE-----` PEM block; {hint}"
    )]
    NoCertificate {
        /// The file (or "the certificate PEM text").
        origin: String,
        /// What to pass instead.
        hint: &'static str,
    },
    /// The PEM text is malformed.
    #[error(
        "cannot parse PEM in {origin}: {detail}; check that the file is PEM text and not DER or truncated"
    )]
    BadPem {
        /// The file (or "the … PEM text").
        origin: String,
        /// The parser's complaint.
        detail: String,
    },
    /// The PEM text holds no private key.
    #[error(
        "no private key in {origin}: expected a `PRIVATE KEY`, `EC PRIVATE KEY` or `RSA PRIVATE KEY` PEM block; pass the key with --tls-key"
    )]
    NoKey {
        /// The file (or "the key PEM text").
        origin: String,
    },
    /// The private key is of a kind or curve the crypto provider cannot sign with.
    #[error(
        "cannot use the private key in {origin}: {detail}; use an ECDSA P-256/P-384, Ed25519 or RSA (2048+ bit) key"
    )]
    UnsupportedKey {
        /// The file (or "the key PEM text").
        origin: String,
        /// The provider's complaint.
        detail: String,
    },
    /// The private key is not the one the certificate was issued for.
    #[error(
        "the private key in {key} does not match the certificate in {cert}: pass the key that was generated together with this certificate"
    )]
    KeyMismatch {
        /// Where the certificate came from.
        cert: String,
        /// Where the key came from.
        key: String,
    },
    /// A certificate's DER could not be parsed.
    #[error("cannot parse certificate in {origin}: {detail}; pass a valid X.509 certificate")]
    BadCertificate {
        /// Where the certificate came from.
        origin: String,
        /// The parser's complaint.
        detail: String,
    },
    /// A key fingerprint string is malformed.
    #[error(
        "`{input}` is not a key fingerprint ({reason}): expected `sha256:` and 64 hex digits, as printed by `jaring chat tls fingerprint`"
    )]
    BadFingerprint {
        /// What was given.
        input: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The system certificate store holds no usable root.
    #[error(
        "no trusted root certificates found in the system store{detail}; pass the server's CA certificate with --ca"
    )]
    NoSystemRoots {
        /// The loader's complaints, if any (starting with ": ").
        detail: String,
    },
    /// A host is neither an IP literal nor a DNS name.
    #[error(
        "`{host}` is neither an IP address nor a valid DNS name: pass a host name such as example.org or an address such as 192.0.2.1 or [2001:db8::1]"
    )]
    BadServerName {
        /// What was given.
        host: String,
    },
    /// A link was configured without any pinned fingerprint.
    #[error(
        "a realm link needs at least one pinned key fingerprint: set `fingerprint` in the peer's [[peer]] entry"
    )]
    NoPins,
    /// rustls refused to build a configuration.
    #[error("cannot build the TLS configuration ({context}): {source}")]
    Config {
        /// What was being built.
        context: &'static str,
        /// rustls' reason.
        source: rustls::Error,
    },
    /// rcgen could not create a key or certificate.
    #[error("cannot create {what}: {source}")]
    Issue {
        /// What was being created.
        what: String,
        /// rcgen's reason.
        source: rcgen::Error,
    },
    /// A name given for a certificate is neither a DNS name nor an IP literal.
    #[error(
        "`{name}` cannot be a certificate name: use DNS names (example.org) or IP addresses (192.0.2.1)"
    )]
    BadSan {
        /// What was given.
        name: String,
    },
    /// A certificate was asked for with no names at all.
    #[error("a certificate needs at least one name (DNS name or IP address)")]
    NoSans,
    /// The lab's certificate authority cannot be used.
    #[error("the CA in {} cannot issue certificates: {reason}; remove it (and its key) to have a new one created", path.display())]
    BadAuthority {
        /// The CA certificate file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A lab file or directory could not be written.
    #[error("cannot write {}: {source}; check that the directory exists and is writable", path.display())]
    Write {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
}
