//! A certificate chain with its private key, and SPKI fingerprints.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};

use crate::{TlsError, provider};

/// What to say when a certificate PEM holds no certificate.
const CERT_HINT: &str = "pass the certificate (leaf first, then intermediates) with --tls-cert";

/// A certificate chain (leaf first) and the private key of the leaf: what a server (or a link
/// client) presents.
#[derive(Debug)]
pub struct Identity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    /// Computed once when loading, so that reading it cannot fail.
    fingerprint: Fingerprint,
}

impl Clone for Identity {
    fn clone(&self) -> Self {
        Self {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
            fingerprint: self.fingerprint,
        }
    }
}

impl Identity {
    /// Reads a PEM certificate chain (leaf first) and a PEM private key (PKCS#8, SEC1 or PKCS#1),
    /// and checks that the key belongs to the leaf.
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let cert_pem = std::fs::read(cert).map_err(|source| TlsError::ReadCert {
            path: cert.to_path_buf(),
            source,
        })?;
        let key_pem = std::fs::read(key).map_err(|source| TlsError::ReadKey {
            path: key.to_path_buf(),
            source,
        })?;
        Self::build(
            &cert_pem,
            &key_pem,
            &cert.display().to_string(),
            &key.display().to_string(),
        )
    }

    /// Like [`Identity::from_pem_files`], from PEM text.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, TlsError> {
        Self::build(
            cert_pem.as_bytes(),
            key_pem.as_bytes(),
            "the certificate PEM text",
            "the key PEM text",
        )
    }

    fn build(
        cert_pem: &[u8],
        key_pem: &[u8],
        cert_origin: &str,
        key_origin: &str,
    ) -> Result<Self, TlsError> {
        let chain = certs_from_pem(cert_pem, cert_origin, CERT_HINT)?;
        let key = match PrivateKeyDer::from_pem_slice(key_pem) {
            Ok(key) => key,
            Err(rustls_pki_types::pem::Error::NoItemsFound) => {
                return Err(TlsError::NoKey {
                    origin: key_origin.to_owned(),
                });
            }
            Err(e) => {
                return Err(TlsError::BadPem {
                    origin: key_origin.to_owned(),
                    detail: e.to_string(),
                });
            }
        };
        let signing_key = provider()
            .key_provider
            .load_private_key(key.clone_key())
            .map_err(|e| TlsError::UnsupportedKey {
                origin: key_origin.to_owned(),
                detail: e.to_string(),
            })?;
        // keys_match compares the leaf's SPKI with the key's public half; `Unknown` (the key
        // cannot tell its public half) is let through, since then there is nothing to compare.
        match CertifiedKey::new(chain.clone(), signing_key).keys_match() {
            Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
            Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
                return Err(TlsError::KeyMismatch {
                    cert: cert_origin.to_owned(),
                    key: key_origin.to_owned(),
                });
            }
            Err(e) => {
                return Err(TlsError::BadCertificate {
                    origin: cert_origin.to_owned(),
                    detail: e.to_string(),
                });
            }
        }
        let fingerprint = fingerprint_of(&chain[0]).map_err(|e| match e {
            TlsError::BadCertificate { detail, .. } => TlsError::BadCertificate {
                origin: cert_origin.to_owned(),
                detail,
            },
            other => other,
        })?;
        Ok(Self {
            chain,
            key,
            fingerprint,
        })
    }

    /// The SPKI fingerprint of the leaf: what peers pin.
    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    /// The leaf certificate.
    pub fn leaf(&self) -> &CertificateDer<'static> {
        // Invariant: `build` refuses a PEM with no certificate, so the chain is never empty.
        &self.chain[0]
    }

    /// The whole chain, leaf first.
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.chain
    }

    /// The private key of the leaf.
    pub fn key(&self) -> &PrivateKeyDer<'static> {
        &self.key
    }
}

/// All certificates in PEM text, in order; an error when there is none.
pub(crate) fn certs_from_pem(
    pem: &[u8],
    origin: &str,
    hint: &'static str,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let chain = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::BadPem {
            origin: origin.to_owned(),
            detail: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            origin: origin.to_owned(),
            hint,
        });
    }
    Ok(chain)
}

/// The SHA-256 of a certificate's SubjectPublicKeyInfo DER.
///
/// Pinning the key rather than the whole certificate lets a peer renew its certificate (same
/// key, new validity period) without every other side editing its pin. Displays and parses as
/// `sha256:` followed by 64 lowercase hex digits; parsing also accepts uppercase and
/// `:`-separated pairs (`sha256:AB:CD:…`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Fingerprint(pub [u8; 32]);

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("sha256:")?;
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl FromStr for Fingerprint {
    type Err = TlsError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |reason| TlsError::BadFingerprint {
            input: s.to_owned(),
            reason,
        };
        let trimmed = s.trim();
        let hex = match trimmed.get(..7) {
            Some(p) if p.eq_ignore_ascii_case("sha256:") => &trimmed[7..],
            _ => return Err(bad("it does not start with `sha256:`")),
        };
        let digits: String = if hex.contains(':') {
            // Separated form: every group must be exactly one byte, as openssl prints them.
            let groups: Vec<&str> = hex.split(':').collect();
            if groups.iter().any(|g| g.len() != 2) {
                return Err(bad("`:`-separated digits must come in pairs"));
            }
            groups.concat()
        } else {
            hex.to_owned()
        };
        if !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad("it has a character that is not a hex digit"));
        }
        if digits.len() != 64 {
            return Err(bad("a SHA-256 has 64 hex digits"));
        }
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            // Cannot fail: all digits were checked to be ASCII hex above.
            *byte = u8::from_str_radix(&digits[2 * i..2 * i + 2], 16)
                .map_err(|_| bad("it has a character that is not a hex digit"))?;
        }
        Ok(Self(out))
    }
}

/// The SPKI fingerprint of a DER certificate.
pub fn fingerprint_of(cert: &CertificateDer<'_>) -> Result<Fingerprint, TlsError> {
    let (_, parsed) =
        x509_parser::parse_x509_certificate(cert).map_err(|e| TlsError::BadCertificate {
            origin: "a DER certificate".to_owned(),
            detail: e.to_string(),
        })?;
    Ok(Fingerprint(Sha256::digest(parsed.public_key().raw).into()))
}

/// The SPKI fingerprint of the first certificate in a PEM file.
pub fn fingerprint_of_pem_file(path: &Path) -> Result<Fingerprint, TlsError> {
    let pem = std::fs::read(path).map_err(|source| TlsError::ReadCert {
        path: path.to_path_buf(),
        source,
    })?;
    let origin = path.display().to_string();
    let certs = certs_from_pem(&pem, &origin, CERT_HINT)?;
    fingerprint_of(&certs[0]).map_err(|e| match e {
        TlsError::BadCertificate { detail, .. } => TlsError::BadCertificate { origin, detail },
        other => other,
    })
}
