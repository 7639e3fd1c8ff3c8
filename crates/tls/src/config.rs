//! rustls configurations for the services (time, echo, chat client port) and their clients.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::client::danger::{ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use crate::identity::certs_from_pem;
use crate::{Identity, TlsError, provider};

/// How many TLS sessions a server remembers for stateful resumption (TLS 1.2 session ids,
/// and TLS 1.3 clients that do not take tickets).
const SESSION_CACHE: usize = 1024;

/// Points `slot` (a configuration's `key_log`) at `$SSLKEYLOGFILE`, only when that variable is
/// set: it lets Wireshark decrypt a capture, so it must never be on by accident.
pub(crate) fn log_keys(slot: &mut Arc<dyn rustls::KeyLog>) {
    if std::env::var_os("SSLKEYLOGFILE").is_some() {
        *slot = Arc::new(rustls::KeyLogFile::new());
    }
}

/// Maps a rustls error from building a configuration to [`TlsError::Config`] about `context`.
pub(crate) fn config_err(context: &'static str) -> impl Fn(rustls::Error) -> TlsError {
    move |source| TlsError::Config { context, source }
}

/// The handshake-signature methods that `ServerCertVerifier` and `ClientCertVerifier` declare
/// alike, for a verifier whose field `$provider` is an `Arc<CryptoProvider>`: they verify with
/// that provider's algorithms, whatever the verifier thinks of the certificate itself.
macro_rules! handshake_signatures {
    ($provider:tt) => {
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &rustls_pki_types::CertificateDer<'_>,
            dss: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(
                message,
                cert,
                dss,
                &self.$provider.signature_verification_algorithms,
            )
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &rustls_pki_types::CertificateDer<'_>,
            dss: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(
                message,
                cert,
                dss,
                &self.$provider.signature_verification_algorithms,
            )
        }

        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.$provider
                .signature_verification_algorithms
                .supported_schemes()
        }
    };
}
pub(crate) use handshake_signatures;

/// A server configuration for the services: TLS 1.2 and 1.3, no client authentication,
/// session resumption by stateless tickets and by a session cache, key log to
/// `$SSLKEYLOGFILE` when set.
pub fn server_config(id: &Identity) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(config_err("protocol versions"))?
        .with_no_client_auth()
        .with_single_cert(id.chain().to_vec(), id.key().clone_key())
        .map_err(config_err("server certificate"))?;
    // Tickets serve rustls and TLS 1.3 clients; the cache serves clients that resume by
    // session id (TLS 1.2, `openssl s_client -reconnect`).
    config.ticketer = rustls::crypto::ring::Ticketer::new().map_err(config_err("ticketer"))?;
    config.session_storage = rustls::server::ServerSessionMemoryCache::new(SESSION_CACHE);
    log_keys(&mut config.key_log);
    Ok(Arc::new(config))
}

/// What a client trusts to verify a server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trust {
    /// The operating system's root certificates.
    System,
    /// Only the certificates in this PEM file (the lab CA, typically).
    CaFile(PathBuf),
    /// Any certificate (handshake signatures are still checked): for labs, never for
    /// anything that matters.
    Insecure,
}

/// A client configuration for the services.
///
/// [`Trust::System`] fails when the system has no root certificates, saying to pass `--ca`.
/// Resumption uses rustls' in-memory session store; key log to `$SSLKEYLOGFILE` when set.
pub fn client_config(trust: &Trust) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(config_err("protocol versions"))?;
    let mut config = match trust {
        Trust::System => builder
            .with_root_certificates(system_roots()?)
            .with_no_client_auth(),
        Trust::CaFile(path) => builder
            .with_root_certificates(roots_from_file(path)?)
            .with_no_client_auth(),
        Trust::Insecure => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider())))
            .with_no_client_auth(),
    };
    log_keys(&mut config.key_log);
    Ok(Arc::new(config))
}

fn system_roots() -> Result<RootCertStore, TlsError> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let detail = found
            .errors
            .iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("; ");
        return Err(TlsError::NoSystemRoots {
            detail: if detail.is_empty() {
                String::new()
            } else {
                format!(" ({detail})")
            },
        });
    }
    Ok(roots)
}

/// The certificates of a PEM file as roots.
fn roots_from_file(path: &std::path::Path) -> Result<RootCertStore, TlsError> {
    let pem = std::fs::read(path).map_err(|source| TlsError::ReadCa {
        path: path.to_path_buf(),
        source,
    })?;
    let certs = certs_from_pem(
        &pem,
        &path.display().to_string(),
        "pass the CA certificate with --ca",
    )?;
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots.add(cert).map_err(|e| TlsError::BadCertificate {
            origin: path.display().to_string(),
            detail: e.to_string(),
        })?;
    }
    Ok(roots)
}

/// The name a client checks the server's certificate against: an IP literal (IPv6 with or
/// without `[]`) or a DNS name.
pub fn server_name(host: &str) -> Result<ServerName<'static>, TlsError> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    ServerName::try_from(bare.to_owned()).map_err(|_| TlsError::BadServerName {
        host: host.to_owned(),
    })
}

/// Accepts any server certificate, but still checks that the server holds the key of the
/// certificate it sent (handshake signatures), so the session keys are at least bound to it.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    handshake_signatures!(0);
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

    use std::time::{Duration, SystemTime};

    use rustls::NamedGroup;

    use super::*;
    use crate::pki::Authority;

    /// Moves TLS bytes between the two ends in memory until neither has more to say.
    fn pump(client: &mut rustls::ClientConnection, server: &mut rustls::ServerConnection) {
        for _ in 0..16 {
            let mut wire = Vec::new();
            while client.wants_write() {
                client.write_tls(&mut wire).unwrap();
            }
            if !wire.is_empty() {
                server.read_tls(&mut wire.as_slice()).unwrap();
                server.process_new_packets().unwrap();
            }
            let mut back = Vec::new();
            while server.wants_write() {
                server.write_tls(&mut back).unwrap();
            }
            if !back.is_empty() {
                client.read_tls(&mut back.as_slice()).unwrap();
                client.process_new_packets().unwrap();
            }
            if wire.is_empty() && back.is_empty() {
                return;
            }
        }
    }

    #[test]
    fn our_clients_and_servers_agree_on_x25519_not_the_slow_p384() {
        let ca = Authority::create("kx test CA").unwrap();
        let now = SystemTime::now();
        let leaf = ca
            .issue(
                &["localhost".into()],
                now - Duration::from_secs(60),
                now + Duration::from_secs(3600),
            )
            .unwrap();
        let id = Identity::from_pem(&leaf.cert_pem, &leaf.key_pem).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.cert_der().clone()).unwrap();
        let client_config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut client = rustls::ClientConnection::new(
            Arc::new(client_config),
            server_name("localhost").unwrap(),
        )
        .unwrap();
        let mut server = rustls::ServerConnection::new(server_config(&id).unwrap()).unwrap();
        pump(&mut client, &mut server);
        assert!(!client.is_handshaking() && !server.is_handshaking());
        let group = server.negotiated_key_exchange_group().unwrap().name();
        assert_eq!(group, NamedGroup::X25519);
    }
}
