//! A certificate authority for tests: one leaf for the loopback names, the rustls settings a
//! server and a client need, and the same as PEM files for tools started as processes (`jaring`,
//! Python's `ssl`, `openssl s_client`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use jaring_tls::pki::{Authority, Leaf};
use jaring_tls::{Identity, Trust};

/// The names the test leaf is valid for.
pub const LOOPBACK_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// A test CA, a leaf it issued for [`LOOPBACK_NAMES`], and their PEM files in a temporary
/// directory (removed on drop).
pub struct TestPki {
    /// The CA.
    pub authority: Authority,
    /// The leaf (valid from an hour ago for a day).
    pub leaf: Leaf,
    /// The leaf as a TLS identity.
    pub identity: Identity,
    dir: tempfile::TempDir,
}

impl std::fmt::Debug for TestPki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestPki")
            .field("dir", &self.dir.path())
            .finish_non_exhaustive()
    }
}

impl TestPki {
    /// A new CA and leaf, written as `ca.pem`, `leaf.pem` and `leaf-key.pem`.
    pub fn new() -> Self {
        // A name of its own: a second TestPki's CA is then a stranger to a client of the first,
        // not a namesake whose signature merely fails.
        static MADE: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = MADE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("jaring test CA {} {n}", std::process::id());
        let authority = Authority::create(&name).expect("create a test CA");
        let leaf = Self::issue_with(&authority, Duration::from_secs(24 * 3600));
        let identity = Identity::from_pem(&leaf.cert_pem, &leaf.key_pem).expect("test leaf");
        let dir = tempfile::tempdir().expect("temporary directory for the test CA");
        for (name, pem) in [
            ("ca.pem", authority.cert_pem()),
            ("leaf.pem", leaf.cert_pem.clone()),
            ("leaf-key.pem", leaf.key_pem.clone()),
        ] {
            std::fs::write(dir.path().join(name), pem).expect("write a test PEM file");
        }
        Self {
            authority,
            leaf,
            identity,
            dir,
        }
    }

    /// A leaf of `authority` for the loopback names, valid from an hour ago for `valid`.
    pub fn issue_with(authority: &Authority, valid: Duration) -> Leaf {
        let now = SystemTime::now();
        let names: Vec<String> = LOOPBACK_NAMES.iter().map(|n| (*n).to_owned()).collect();
        authority
            .issue(&names, now - Duration::from_secs(3600), now + valid)
            .expect("issue a test leaf")
    }

    /// Where the PEM files are.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The CA certificate's file.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// The leaf certificate's file.
    pub fn cert_file(&self) -> PathBuf {
        self.dir.path().join("leaf.pem")
    }

    /// The leaf key's file.
    pub fn key_file(&self) -> PathBuf {
        self.dir.path().join("leaf-key.pem")
    }

    /// Server settings presenting the leaf.
    pub fn server_config(&self) -> Arc<jaring_tls::rustls::ServerConfig> {
        jaring_tls::server_config(&self.identity).expect("test server config")
    }

    /// Client settings trusting only this CA.
    pub fn client_config(&self) -> Arc<jaring_tls::rustls::ClientConfig> {
        jaring_tls::client_config(&Trust::CaFile(self.ca_file())).expect("test client config")
    }
}

impl Default for TestPki {
    fn default() -> Self {
        Self::new()
    }
}
