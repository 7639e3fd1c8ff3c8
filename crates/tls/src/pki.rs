//! The lab's own certificate authority: creates a CA, issues leaves, keeps the files.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, PublicKeyData,
};
use rustls::RootCertStore;
use rustls::server::ParsedCertificate;
use rustls_pki_types::{CertificateDer, DnsName, ServerName, UnixTime};
use time::OffsetDateTime;

use crate::identity::certs_from_pem;
use crate::{Fingerprint, Identity, TlsError, fingerprint_of, provider};

const DAY: Duration = Duration::from_secs(24 * 3600);
/// Back-dating by an hour tolerates clocks a little behind ours.
const SKEW: Duration = Duration::from_secs(3600);
/// A leaf is reused only when valid for this much longer.
const LEAF_MARGIN: Duration = Duration::from_secs(30 * 24 * 3600);
/// A CA is reused only when it outlives a leaf issued now.
const CA_MARGIN: Duration = Duration::from_secs(366 * 24 * 3600);

/// A certificate authority (ECDSA P-256) that issues leaves.
pub struct Authority {
    cert_pem: String,
    key_pem: String,
    cert_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

// By hand, so that the private key never reaches a log line.
impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority")
            .field("issuer", &self.issuer)
            .field("key_pem", &"[secret key elided]")
            .finish_non_exhaustive()
    }
}

fn issue_err(what: &str) -> impl FnOnce(rcgen::Error) -> TlsError + '_ {
    move |source| TlsError::Issue {
        what: what.to_owned(),
        source,
    }
}

fn to_offset(t: SystemTime) -> OffsetDateTime {
    let secs = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    };
    // Out of range only for dates beyond ±9999 years, which no caller asks for; clamp anyway.
    OffsetDateTime::from_unix_timestamp(secs).unwrap_or(if secs < 0 {
        OffsetDateTime::UNIX_EPOCH
    } else {
        rcgen::date_time_ymd(9999, 12, 31)
    })
}

impl Authority {
    /// A new CA: CA:TRUE with path length 0, key usage keyCertSign and cRLSign, a subject key
    /// identifier, valid from an hour ago for ten years.
    pub fn create(common_name: &str) -> Result<Self, TlsError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(issue_err("a CA key"))?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, common_name);
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let now = SystemTime::now();
        params.not_before = to_offset(now - SKEW);
        params.not_after = to_offset(now + 3653 * DAY);
        let cert = params
            .self_signed(&key)
            .map_err(issue_err("the CA certificate"))?;
        let key_pem = key.serialize_pem();
        Ok(Self {
            cert_pem: cert.pem(),
            key_pem,
            cert_der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        })
    }

    /// Loads a CA certificate and its key (PKCS#8 PEM), checking that the key is the
    /// certificate's and that the certificate is a CA.
    pub fn load(cert_pem_path: &Path, key_pem_path: &Path) -> Result<Self, TlsError> {
        let cert_pem = fs::read_to_string(cert_pem_path).map_err(|source| TlsError::ReadCa {
            path: cert_pem_path.to_path_buf(),
            source,
        })?;
        let key_pem = fs::read_to_string(key_pem_path).map_err(|source| TlsError::ReadKey {
            path: key_pem_path.to_path_buf(),
            source,
        })?;
        let bad = |reason: String| TlsError::BadAuthority {
            path: cert_pem_path.to_path_buf(),
            reason,
        };
        let certs = certs_from_pem(
            cert_pem.as_bytes(),
            &cert_pem_path.display().to_string(),
            "pass the CA certificate",
        )?;
        // Non-empty: certs_from_pem refuses PEM without a certificate.
        let cert_der = certs[0].clone();
        let key = KeyPair::from_pem(&key_pem).map_err(|e| {
            bad(format!(
                "its key {} cannot be used: {e}",
                key_pem_path.display()
            ))
        })?;
        let (_, parsed) = x509_parser::parse_x509_certificate(&cert_der)
            .map_err(|e| bad(format!("it does not parse: {e}")))?;
        if parsed.public_key().raw != key.subject_public_key_info().as_slice() {
            return Err(TlsError::KeyMismatch {
                cert: cert_pem_path.display().to_string(),
                key: key_pem_path.display().to_string(),
            });
        }
        if !parsed.is_ca() {
            return Err(bad("it is not a CA certificate (no CA:TRUE)".to_owned()));
        }
        let issuer = Issuer::from_ca_cert_der(&cert_der, key)
            .map_err(|e| bad(format!("rcgen cannot use it: {e}")))?;
        Ok(Self {
            cert_pem,
            key_pem,
            cert_der,
            issuer,
        })
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> String {
        self.cert_pem.clone()
    }

    /// The CA's private key, PKCS#8 PEM.
    pub fn key_pem(&self) -> String {
        self.key_pem.clone()
    }

    /// The CA certificate, DER.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// A leaf (ECDSA P-256) for `sans` (DNS names or IP literals; the first is also the common
    /// name) with an authority key identifier, a subject key identifier, key usage
    /// digitalSignature, extended key usage serverAuth and clientAuth, valid
    /// `not_before..not_after`.
    pub fn issue(
        &self,
        sans: &[String],
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Result<Leaf, TlsError> {
        let first = sans.first().ok_or(TlsError::NoSans)?;
        for san in sans {
            if san.parse::<std::net::IpAddr>().is_err() && DnsName::try_from(san.as_str()).is_err()
            {
                return Err(TlsError::BadSan { name: san.clone() });
            }
        }
        let key =
            KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(issue_err("a leaf key"))?;
        let mut params = CertificateParams::new(sans.to_vec()).map_err(issue_err("a leaf"))?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, first.as_str());
        params.distinguished_name = dn;
        // ExplicitNoCa (not NoCa) makes rcgen write basicConstraints CA:FALSE and the SKI.
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        // OpenSSL's strict mode (Python 3.13's default) rejects leaves without an AKI.
        params.use_authority_key_identifier_extension = true;
        params.not_before = to_offset(not_before);
        params.not_after = to_offset(not_after);
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(issue_err("a leaf certificate"))?;
        Ok(Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// A leaf certificate and its key, PEM.
#[derive(Clone)]
pub struct Leaf {
    /// The leaf only: the CA is the trust anchor, which clients get with `--ca`.
    pub cert_pem: String,
    /// Its private key, PKCS#8.
    pub key_pem: String,
}

// By hand, so that the private key never reaches a log line.
impl std::fmt::Debug for Leaf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leaf")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"[secret key elided]")
            .finish()
    }
}

/// The names a lab certificate is for: `localhost`, `127.0.0.1`, `::1`, this machine's host
/// name (when it is a valid DNS name), then `extra`, without duplicates.
pub fn default_sans(extra: &[String]) -> Vec<String> {
    let mut names: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
    if let Some(host) = host_name() {
        names.push(host);
    }
    names.extend(extra.iter().cloned());
    let mut out: Vec<String> = Vec::with_capacity(names.len());
    for name in names {
        if !out.iter().any(|n| n.eq_ignore_ascii_case(&name)) {
            out.push(name);
        }
    }
    out
}

/// The kernel's host name, when it makes a valid DNS name.
fn host_name() -> Option<String> {
    let raw = fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = raw.trim();
    (!name.is_empty() && DnsName::try_from(name).is_ok()).then(|| name.to_owned())
}

/// The lab's TLS files, as [`ensure_lab`] left them.
#[derive(Debug, Clone)]
pub struct LabTls {
    /// The directory.
    pub dir: PathBuf,
    /// The CA certificate (`ca.pem`): what clients pass with `--ca`.
    pub ca: PathBuf,
    /// One per name asked for, in that order.
    pub leaves: Vec<LabLeaf>,
    /// Whether anything was (re)issued and written this time.
    pub created: bool,
}

/// One leaf of the lab.
#[derive(Debug, Clone)]
pub struct LabLeaf {
    /// The name it was asked for (`NAME.pem`, `NAME-key.pem`).
    pub name: String,
    /// The certificate file.
    pub cert: PathBuf,
    /// The private key file.
    pub key: PathBuf,
    /// Its SPKI fingerprint.
    pub fingerprint: Fingerprint,
}

/// Makes sure `dir` (created 0700) holds the lab's CA (`ca.pem`, `ca-key.pem`) and, for each
/// name in `leaves`, `NAME.pem` and `NAME-key.pem` (keys 0600).
///
/// Reuses the CA when it loads and outlives a new leaf; reuses a leaf when its key matches,
/// it was issued by the CA, is valid for 30 more days and covers every name in `sans`.
/// Otherwise (re)issues: leaves valid from an hour ago for 365 days, for `sans` (or
/// [`default_sans`]`(&[])` when `sans` is empty).
pub fn ensure_lab(dir: &Path, leaves: &[&str], sans: &[String]) -> Result<LabTls, TlsError> {
    let sans: Vec<String> = if sans.is_empty() {
        default_sans(&[])
    } else {
        sans.to_vec()
    };
    create_private_dir(dir)?;
    let ca_path = dir.join("ca.pem");
    let ca_key_path = dir.join("ca-key.pem");
    let mut created = false;
    let now = SystemTime::now();

    let ca = match Authority::load(&ca_path, &ca_key_path) {
        Ok(ca) if valid_until(ca.cert_der(), now + CA_MARGIN) => ca,
        old => {
            if let Err(e) = &old {
                tracing::debug!("creating a new lab CA: {e}");
            }
            let ca = Authority::create(&format!(
                "jaring lab CA ({})",
                host_name().as_deref().unwrap_or("localhost")
            ))?;
            write_file(&ca_key_path, ca.key_pem.as_bytes(), true)?;
            write_file(&ca_path, ca.cert_pem.as_bytes(), false)?;
            created = true;
            ca
        }
    };

    let mut roots = RootCertStore::empty();
    roots
        .add(ca.cert_der().clone())
        .map_err(|e| TlsError::BadAuthority {
            path: ca_path.clone(),
            reason: e.to_string(),
        })?;

    let mut out = Vec::with_capacity(leaves.len());
    for name in leaves {
        let cert = dir.join(format!("{name}.pem"));
        let key = dir.join(format!("{name}-key.pem"));
        let reusable = Identity::from_pem_files(&cert, &key)
            .ok()
            .filter(|id| leaf_fits(id.leaf(), &roots, &sans, now));
        let fingerprint = match reusable {
            Some(id) => id.fingerprint(),
            None => {
                let leaf = ca.issue(&sans, now - SKEW, now + 365 * DAY)?;
                write_file(&key, leaf.key_pem.as_bytes(), true)?;
                write_file(&cert, leaf.cert_pem.as_bytes(), false)?;
                created = true;
                Identity::from_pem(&leaf.cert_pem, &leaf.key_pem)?.fingerprint()
            }
        };
        out.push(LabLeaf {
            name: (*name).to_owned(),
            cert,
            key,
            fingerprint,
        });
    }
    Ok(LabTls {
        dir: dir.to_path_buf(),
        ca: ca_path,
        leaves: out,
        created,
    })
}

fn unix(t: SystemTime) -> UnixTime {
    UnixTime::since_unix_epoch(t.duration_since(UNIX_EPOCH).unwrap_or_default())
}

/// Whether a certificate is valid now and still at `until`.
fn valid_until(cert: &CertificateDer<'_>, until: SystemTime) -> bool {
    let Ok((_, parsed)) = x509_parser::parse_x509_certificate(cert) else {
        return false;
    };
    let v = parsed.validity();
    let now = unix(SystemTime::now()).as_secs() as i64;
    v.not_before.timestamp() <= now && v.not_after.timestamp() >= unix(until).as_secs() as i64
}

/// Whether a leaf chains to the lab CA now and 30 days from now, and names every SAN.
fn leaf_fits(
    leaf: &CertificateDer<'_>,
    roots: &RootCertStore,
    sans: &[String],
    now: SystemTime,
) -> bool {
    let Ok(parsed) = ParsedCertificate::try_from(leaf) else {
        return false;
    };
    let algs = provider().signature_verification_algorithms.all;
    let chains = [now, now + LEAF_MARGIN].iter().all(|t| {
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &parsed,
            roots,
            &[],
            unix(*t),
            algs,
        )
        .is_ok()
    });
    chains
        && sans.iter().all(|san| {
            ServerName::try_from(san.as_str())
                .is_ok_and(|name| rustls::client::verify_server_name(&parsed, &name).is_ok())
        })
        && fingerprint_of(leaf).is_ok()
}

fn create_private_dir(dir: &Path) -> Result<(), TlsError> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(|source| TlsError::Write {
        path: dir.to_path_buf(),
        source,
    })
}

/// Writes through a temporary file and a rename, so that a crash never leaves half a file;
/// private files are created 0600 from the start (never readable by others, even briefly).
fn write_file(path: &Path, contents: &[u8], private: bool) -> Result<(), TlsError> {
    let err = |source| TlsError::Write {
        path: path.to_path_buf(),
        source,
    };
    let tmp = path.with_extension("pem.tmp");
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, if private { 0o600 } else { 0o644 });
    #[cfg(not(unix))]
    let _ = private;
    let _ = fs::remove_file(&tmp);
    let mut file = options.open(&tmp).map_err(err)?;
    file.write_all(contents).map_err(err)?;
    file.sync_all().map_err(err)?;
    fs::rename(&tmp, path).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!(
            "jaring-tls-pki-{}-{name}-{}",
            std::process::id(),
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ))
    }

    #[test]
    fn ensure_lab_reuses_then_reissues_when_names_grow() {
        let dir = scratch("lab").join("tls");
        let sans = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
        let first = ensure_lab(&dir, &["server", "peer"], &sans).unwrap();
        assert!(first.created);
        assert_eq!(first.leaves.len(), 2);
        assert_ne!(first.leaves[0].fingerprint, first.leaves[1].fingerprint);
        for leaf in &first.leaves {
            assert_eq!(fingerprint_of_pem_file_ok(&leaf.cert), leaf.fingerprint);
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&dir), 0o700);
            assert_eq!(mode(&dir.join("ca-key.pem")), 0o600);
            assert_eq!(mode(&first.leaves[0].key), 0o600);
        }
        let ca_pem = fs::read_to_string(&first.ca).unwrap();

        let second = ensure_lab(&dir, &["server", "peer"], &sans).unwrap();
        assert!(!second.created);
        let fps = |l: &LabTls| l.leaves.iter().map(|l| l.fingerprint).collect::<Vec<_>>();
        assert_eq!(fps(&first), fps(&second));

        let mut more = sans.clone();
        more.push("realm.example".to_owned());
        let third = ensure_lab(&dir, &["server", "peer"], &more).unwrap();
        assert!(third.created);
        for (old, new) in first.leaves.iter().zip(&third.leaves) {
            assert_ne!(old.fingerprint, new.fingerprint, "{} reissued", new.name);
        }
        assert_eq!(
            fs::read_to_string(&third.ca).unwrap(),
            ca_pem,
            "same CA kept"
        );

        // The reissued leaf names the new SAN and chains to the CA.
        let id = Identity::from_pem_files(&third.leaves[0].cert, &third.leaves[0].key).unwrap();
        let mut roots = RootCertStore::empty();
        roots
            .add(
                Authority::load(&third.ca, &dir.join("ca-key.pem"))
                    .unwrap()
                    .cert_der()
                    .clone(),
            )
            .unwrap();
        assert!(leaf_fits(id.leaf(), &roots, &more, SystemTime::now()));

        // A smaller set of names is still covered: no reissue.
        let fourth = ensure_lab(&dir, &["server", "peer"], &sans).unwrap();
        assert!(!fourth.created);
        fs::remove_dir_all(dir.parent().unwrap()).unwrap();
    }

    #[test]
    fn ensure_lab_reissues_a_leaf_whose_key_was_replaced() {
        let dir = scratch("swap");
        let sans = vec!["localhost".to_owned()];
        let first = ensure_lab(&dir, &["a", "b"], &sans).unwrap();
        fs::copy(&first.leaves[1].key, &first.leaves[0].key).unwrap();
        let second = ensure_lab(&dir, &["a", "b"], &sans).unwrap();
        assert!(second.created);
        assert_ne!(first.leaves[0].fingerprint, second.leaves[0].fingerprint);
        assert_eq!(first.leaves[1].fingerprint, second.leaves[1].fingerprint);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn debug_output_hides_private_keys() {
        let ca = Authority::create("unit CA").unwrap();
        let now = SystemTime::now();
        let leaf = ca.issue(&["localhost".to_owned()], now, now + DAY).unwrap();
        for text in [format!("{ca:?}"), format!("{leaf:?}")] {
            assert!(!text.contains("PRIVATE KEY"), "{text}");
            assert!(text.contains("[secret key elided]"), "{text}");
        }
    }

    #[test]
    fn default_sans_starts_with_loopback_and_dedups() {
        let sans = default_sans(&["localhost".to_owned(), "realm.example".to_owned()]);
        assert_eq!(&sans[..3], ["localhost", "127.0.0.1", "::1"]);
        assert_eq!(sans.iter().filter(|s| *s == "localhost").count(), 1);
        assert_eq!(sans.last().map(String::as_str), Some("realm.example"));
    }

    #[test]
    fn issue_rejects_bad_names() {
        let ca = Authority::create("unit CA").unwrap();
        let now = SystemTime::now();
        let err = ca.issue(&[], now, now + DAY).unwrap_err();
        assert!(matches!(err, TlsError::NoSans));
        let err = ca
            .issue(&["not a name!".to_owned()], now, now + DAY)
            .unwrap_err();
        assert!(matches!(err, TlsError::BadSan { .. }), "{err:?}");
    }

    fn fingerprint_of_pem_file_ok(path: &Path) -> Fingerprint {
        crate::fingerprint_of_pem_file(path).unwrap()
    }
}
