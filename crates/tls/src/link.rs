//! Realm-to-realm links: mutual TLS 1.3 where each side pins the other's key.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{AlertDescription, CertificateError, DistinguishedName, OtherError, RootCertStore};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use sha2::{Digest, Sha256};

use crate::config::{config_err, handshake_signatures, log_keys};
use crate::{Fingerprint, Identity, TlsError, provider};

/// What a link accepts from its peer.
#[derive(Debug, Clone, Default)]
pub struct LinkTrust {
    /// The peer's certificate must have one of these SPKI fingerprints.
    pub pins: Vec<Fingerprint>,
    /// When set, the peer's chain must also verify to one of these roots.
    pub ca: Option<Vec<CertificateDer<'static>>>,
}

/// The server side of a link: requires a client certificate and accepts it iff its key is
/// pinned, it is valid now and (when `ca` is set) it chains to `ca`. TLS 1.3 only; no
/// resumption, so every connection checks the pin afresh.
pub fn link_server_config(
    id: &Identity,
    trust: LinkTrust,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let verifier = PinVerifier::new(trust, true)?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(config_err("link protocol versions"))?
        .with_client_cert_verifier(Arc::new(verifier))
        .with_single_cert(id.chain().to_vec(), id.key().clone_key())
        .map_err(config_err("link certificate"))?;
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    log_keys(&mut config.key_log);
    Ok(Arc::new(config))
}

/// The client side of a link: presents `id` and accepts the server's certificate under the
/// same rules as [`link_server_config`]. No host name check: the pin names the peer.
pub fn link_client_config(
    id: &Identity,
    trust: LinkTrust,
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let verifier = PinVerifier::new(trust, false)?;
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(config_err("link protocol versions"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_auth_cert(id.chain().to_vec(), id.key().clone_key())
        .map_err(config_err("link certificate"))?;
    config.resumption = rustls::client::Resumption::disabled();
    log_keys(&mut config.key_log);
    Ok(Arc::new(config))
}

/// The rejection a [`PinVerifier`] reports when the key is not pinned; carried inside
/// `CertificateError::Other` so that [`link_refusal`] can get the fingerprint back.
#[derive(Debug)]
struct PinMismatch {
    got: Fingerprint,
}

impl fmt::Display for PinMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the peer's key {} is not pinned", self.got)
    }
}

impl std::error::Error for PinMismatch {}

/// Both sides' certificate check: pin, validity period, optional chain to `ca`.
#[derive(Debug)]
struct PinVerifier {
    pins: Vec<Fingerprint>,
    /// The chain check, when `ca` is set.
    chain: Option<Chain>,
    provider: Arc<CryptoProvider>,
}

/// How a [`PinVerifier`] checks the chain to `ca`: for a server certificate against the roots,
/// for a client certificate by webpki's client verifier (client-auth key usage).
#[derive(Debug)]
enum Chain {
    Server(Arc<RootCertStore>),
    Client(Arc<dyn ClientCertVerifier>),
}

impl PinVerifier {
    fn new(trust: LinkTrust, verifies_clients: bool) -> Result<Self, TlsError> {
        if trust.pins.is_empty() {
            return Err(TlsError::NoPins);
        }
        let provider = provider();
        let mut chain = None;
        if let Some(ca) = trust.ca {
            let mut roots = RootCertStore::empty();
            for cert in ca {
                roots.add(cert).map_err(|e| TlsError::BadCertificate {
                    origin: "the link's CA certificates".to_owned(),
                    detail: e.to_string(),
                })?;
            }
            let roots = Arc::new(roots);
            chain = Some(if verifies_clients {
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    roots,
                    provider.clone(),
                )
                .build()
                .map_err(|e| TlsError::Config {
                    context: "link CA",
                    source: rustls::Error::General(e.to_string()),
                })?;
                Chain::Client(verifier)
            } else {
                Chain::Server(roots)
            });
        }
        Ok(Self {
            pins: trust.pins,
            chain,
            provider,
        })
    }

    /// The whole check of the peer's certificate, either side: the pin and the validity period
    /// by hand, then the chain, if any, by webpki.
    fn verify(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<(), rustls::Error> {
        self.check(end_entity, now)?;
        match &self.chain {
            None => {}
            Some(Chain::Server(roots)) => {
                let parsed = rustls::server::ParsedCertificate::try_from(end_entity)?;
                rustls::client::verify_server_cert_signed_by_trust_anchor(
                    &parsed,
                    roots,
                    intermediates,
                    now,
                    self.provider.signature_verification_algorithms.all,
                )?;
            }
            Some(Chain::Client(verifier)) => {
                verifier.verify_client_cert(end_entity, intermediates, now)?;
            }
        }
        Ok(())
    }

    /// The pin and the validity period, checked by hand (the chain, if any, by webpki after).
    fn check(&self, end_entity: &CertificateDer<'_>, now: UnixTime) -> Result<(), rustls::Error> {
        let (_, cert) = x509_parser::parse_x509_certificate(end_entity)
            .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
        let got = Fingerprint(Sha256::digest(cert.public_key().raw).into());
        if !self.pins.contains(&got) {
            return Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                OtherError(Arc::new(PinMismatch { got })),
            )));
        }
        let validity = cert.validity();
        let as_unix = |t: i64| UnixTime::since_unix_epoch(Duration::from_secs(t.max(0) as u64));
        let now_secs = now.as_secs() as i64;
        if validity.not_before.timestamp() > now_secs {
            return Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidYetContext {
                    time: now,
                    not_before: as_unix(validity.not_before.timestamp()),
                },
            ));
        }
        if validity.not_after.timestamp() < now_secs {
            return Err(rustls::Error::InvalidCertificate(
                CertificateError::ExpiredContext {
                    time: now,
                    not_after: as_unix(validity.not_after.timestamp()),
                },
            ));
        }
        Ok(())
    }
}

impl ServerCertVerifier for PinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.verify(end_entity, intermediates, now)?;
        Ok(ServerCertVerified::assertion())
    }

    // Links are TLS 1.3 only, so TLS 1.2 signatures are not reached; verifying them anyway is
    // the safe answer.
    handshake_signatures!(provider);
}

impl ClientCertVerifier for PinVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // No hints: the pin, not a CA, names the expected certificate.
        &[]
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.verify(end_entity, intermediates, now)?;
        Ok(ClientCertVerified::assertion())
    }

    handshake_signatures!(provider);
}

/// Why a link handshake was refused, told apart so that the log line can say which and what
/// to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkRefusal {
    /// The peer's key is not among the pins.
    WrongPin {
        /// The peer's actual key fingerprint.
        got: Fingerprint,
    },
    /// The certificate does not chain to the configured CA (or the peer says ours does not).
    UnknownCa,
    /// A certificate's validity period has ended (or the peer says ours has, or is not yet
    /// valid: the alert does not tell those apart).
    Expired,
    /// The peer's certificate is not valid yet.
    NotYetValid,
    /// The client presented no certificate.
    NoCertificate,
    /// Anything else, described.
    Other(String),
}

impl fmt::Display for LinkRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::WrongPin { got } => write!(
                f,
                "the peer's key {got} is not the pinned one: check `fingerprint` in its [[peer]] \
                 entry (the peer prints its own with `jaring chat tls fingerprint`)"
            ),
            Self::UnknownCa => f.write_str(
                "the certificate was not issued by the CA the checking side trusts: give the \
                 realm a certificate from that CA, or fix the `ca` setting of the link",
            ),
            Self::Expired => f.write_str(
                "a link certificate is outside its validity period (expired): renew it on the \
                 realm that presents it, and check that both machines' clocks are right",
            ),
            Self::NotYetValid => f.write_str(
                "the peer's certificate is not valid yet: check that both machines' clocks are \
                 right, or wait until its start date",
            ),
            Self::NoCertificate => f.write_str(
                "the connecting realm presented no certificate: configure the link's \
                 certificate and key on that side",
            ),
            Self::Other(why) => write!(f, "the link handshake failed: {why}"),
        }
    }
}

/// Classifies a rustls error from either side of a link handshake: the local verifier's
/// rejection, or the alert the peer sent back.
pub fn link_refusal(err: &rustls::Error) -> LinkRefusal {
    use rustls::Error as E;
    match err {
        E::InvalidCertificate(cert_err) => match cert_err {
            CertificateError::Other(OtherError(inner)) => {
                match inner.downcast_ref::<PinMismatch>() {
                    Some(m) => LinkRefusal::WrongPin { got: m.got },
                    None => LinkRefusal::Other(inner.to_string()),
                }
            }
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                LinkRefusal::Expired
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                LinkRefusal::NotYetValid
            }
            CertificateError::UnknownIssuer => LinkRefusal::UnknownCa,
            other => LinkRefusal::Other(format!("the peer's certificate is unusable: {other}")),
        },
        E::NoCertificatesPresented => LinkRefusal::NoCertificate,
        E::AlertReceived(alert) => match alert {
            AlertDescription::CertificateRequired => LinkRefusal::NoCertificate,
            AlertDescription::CertificateExpired => LinkRefusal::Expired,
            AlertDescription::UnknownCA => LinkRefusal::UnknownCa,
            // What rustls (and most stacks) send for a rejection of their own making, such as
            // a pin mismatch; we cannot know our fingerprint from here.
            AlertDescription::CertificateUnknown | AlertDescription::BadCertificate => {
                LinkRefusal::Other(format!(
                    "the peer refused our certificate ({alert:?}): most likely it does not pin \
                     our key; give its operator our fingerprint (`jaring chat tls fingerprint`) \
                     for its [[peer]] entry"
                ))
            }
            other => LinkRefusal::Other(format!("the peer sent the alert {other:?}")),
        },
        other => LinkRefusal::Other(other.to_string()),
    }
}
