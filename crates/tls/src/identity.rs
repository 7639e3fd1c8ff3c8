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
        // Non-empty: certs_from_pem refuses PEM without a certificate.
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
    // Non-empty: certs_from_pem refuses PEM without a certificate.
    fingerprint_of(&certs[0]).map_err(|e| match e {
        TlsError::BadCertificate { detail, .. } => TlsError::BadCertificate { origin, detail },
        other => other,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::Authority;
    use std::time::{Duration, SystemTime};

    fn scratch(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "jaring-tls-unit-{}-{name}-{}",
            std::process::id(),
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn leaf(ca: &Authority) -> crate::pki::Leaf {
        let now = SystemTime::now();
        ca.issue(
            &["localhost".to_owned()],
            now - Duration::from_secs(60),
            now + Duration::from_secs(3600),
        )
        .unwrap()
    }

    #[test]
    fn fingerprint_round_trips_and_accepts_variants() {
        let fp = Fingerprint(std::array::from_fn(|i| (i * 7 + 3) as u8));
        let text = fp.to_string();
        assert!(text.starts_with("sha256:"));
        assert_eq!(text.len(), 7 + 64);
        assert_eq!(text, text.to_lowercase());
        assert_eq!(text.parse::<Fingerprint>().unwrap(), fp);
        assert_eq!(text.to_uppercase().parse::<Fingerprint>().unwrap(), fp);
        let pairs: Vec<String> = fp.0.iter().map(|b| format!("{b:02X}")).collect();
        let separated = format!("sha256:{}", pairs.join(":"));
        assert_eq!(separated.parse::<Fingerprint>().unwrap(), fp);
    }

    #[test]
    fn fingerprint_rejects_malformed() {
        let good = Fingerprint([0xab; 32]).to_string();
        let hex = &good[7..];
        let cases = [
            (hex.to_owned(), "does not start with `sha256:`"),
            (format!("sha1:{hex}"), "does not start with `sha256:`"),
            (format!("sha256:{}", &hex[..62]), "64 hex digits"),
            (format!("sha256:{hex}00"), "64 hex digits"),
            (format!("sha256:{}zz", &hex[..62]), "not a hex digit"),
            (format!("sha256:a:{}", &hex[1..]), "pairs"),
            ("".to_owned(), "does not start"),
        ];
        for (input, why) in cases {
            let err = input.parse::<Fingerprint>().unwrap_err();
            let msg = err.to_string();
            assert!(msg.contains(why), "{input:?}: {msg}");
            assert!(msg.contains("jaring chat tls fingerprint"), "{msg}");
        }
    }

    #[test]
    fn identity_loads_and_fingerprints_the_leaf() {
        let ca = Authority::create("unit CA").unwrap();
        let leaf = leaf(&ca);
        let dir = scratch("load");
        let (cert, key) = (dir.join("a.pem"), dir.join("a-key.pem"));
        std::fs::write(&cert, &leaf.cert_pem).unwrap();
        std::fs::write(&key, &leaf.key_pem).unwrap();
        let id = Identity::from_pem_files(&cert, &key).unwrap();
        assert_eq!(id.fingerprint(), fingerprint_of(id.leaf()).unwrap());
        assert_eq!(fingerprint_of_pem_file(&cert).unwrap(), id.fingerprint());
        assert_ne!(
            fingerprint_of(ca.cert_der()).unwrap(),
            id.fingerprint(),
            "the CA and the leaf have different keys"
        );
        let clone = id.clone();
        assert_eq!(clone.fingerprint(), id.fingerprint());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn identity_errors_say_what_is_wrong() {
        let ca = Authority::create("unit CA").unwrap();
        let (a, b) = (leaf(&ca), leaf(&ca));
        let dir = scratch("errors");
        let (cert, key, other_key, empty) = (
            dir.join("a.pem"),
            dir.join("a-key.pem"),
            dir.join("b-key.pem"),
            dir.join("empty.pem"),
        );
        std::fs::write(&cert, &a.cert_pem).unwrap();
        std::fs::write(&key, &a.key_pem).unwrap();
        std::fs::write(&other_key, &b.key_pem).unwrap();
        std::fs::write(&empty, "not pem at all\n").unwrap();

        let missing = dir.join("missing.pem");
        let err = Identity::from_pem_files(&missing, &key).unwrap_err();
        assert!(matches!(err, TlsError::ReadCert { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains("cannot read certificate file") && msg.contains("missing.pem"));
        assert!(msg.contains("--tls-cert"), "{msg}");

        let err = Identity::from_pem_files(&cert, &missing).unwrap_err();
        assert!(matches!(err, TlsError::ReadKey { .. }), "{err:?}");
        assert!(err.to_string().contains("--tls-key"));

        let err = Identity::from_pem_files(&empty, &key).unwrap_err();
        assert!(matches!(err, TlsError::NoCertificate { .. }), "{err:?}");
        assert!(err.to_string().contains("no certificate in"));
        assert!(err.to_string().contains("empty.pem"));

        // A certificate file holds no key.
        let err = Identity::from_pem_files(&cert, &cert).unwrap_err();
        assert!(matches!(err, TlsError::NoKey { .. }), "{err:?}");
        assert!(err.to_string().contains("no private key in"));

        let err = Identity::from_pem_files(&cert, &other_key).unwrap_err();
        assert!(matches!(err, TlsError::KeyMismatch { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains("does not match the certificate"), "{msg}");
        assert!(msg.contains("b-key.pem") && msg.contains("a.pem"), "{msg}");

        let err = Identity::from_pem(&a.cert_pem, &b.key_pem).unwrap_err();
        assert!(matches!(err, TlsError::KeyMismatch { .. }), "{err:?}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
