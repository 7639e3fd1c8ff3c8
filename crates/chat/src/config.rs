//! The realm's configuration file (TOML), its defaults, and the commented default that
//! `jaring chat config` prints.
//!
//! Precedence: defaults < file < command-line flags (`--bind`, `--port`, limits). Every field is
//! optional in the file; unknown fields are refused, so a typo cannot silently keep a default.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::limiter::{DEFAULT_FAILURES_PER_ADDRESS, DEFAULT_FAILURES_PER_USER, DEFAULT_WINDOW};
use crate::password::{DEFAULT_HASH_CONCURRENCY, PasswordCost};
use crate::realm::{
    DEFAULT_HISTORY_MAX, DEFAULT_INBOX_MAX_BYTES, DEFAULT_INBOX_MAX_MESSAGES, RealmOptions,
};
use crate::token::{DEFAULT_TOKEN_IDLE, DEFAULT_TOKENS_PER_USER};

/// Most write operations the SQLite store commits in one transaction. A larger batch amortises the fsync over more
/// messages; this one keeps a commit well under a few milliseconds of work.
pub const DEFAULT_MAX_BATCH: usize = 4096;

/// How hard SQLite works to make a commit durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Synchronous {
    /// fsync on every commit: a commit survives power loss (the default).
    #[default]
    Full,
    /// fsync only at WAL checkpoints: a commit survives a crash of the process, not of the machine.
    Normal,
}

/// Default realm name, as in the labs.
pub const DEFAULT_REALM: &str = "realm1";

/// Default data directory, relative to where the server starts.
pub const DEFAULT_DATA_DIR: &str = "jaring-chat";

/// A realm configuration file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RealmConfig {
    /// `[realm]`
    #[serde(default)]
    pub realm: RealmSection,
    /// `[listen]`
    #[serde(default)]
    pub listen: ListenSection,
    /// `[limits]`
    #[serde(default)]
    pub limits: LimitsSection,
    /// `[auth]`
    #[serde(default)]
    pub auth: AuthSection,
    /// `[passwords]`
    #[serde(default)]
    pub passwords: PasswordsSection,
    /// `[storage]`
    #[serde(default)]
    pub storage: StorageSection,
    /// `[tls]`
    #[serde(default)]
    pub tls: TlsSection,
    /// `[federation]`
    #[serde(default)]
    pub federation: FederationSection,
    /// `[[peer]]`: the realms this one links to.
    #[serde(default)]
    pub peer: Vec<PeerSection>,
    /// `[admin]`: the admin socket.
    #[serde(default)]
    pub admin: AdminSection,
    /// `[web]`: the web port (the chat page and its WebSocket).
    #[serde(default)]
    pub web: WebSection,
}

/// `[web]`: the web port, where browsers get the chat page and its WebSocket (`/ws`). Off unless
/// a port is set (here or with `--web-port`). It binds the client port's address and takes TLS
/// when `[tls]` has a certificate.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebSection {
    /// Port (0: any free port; unset: no web port).
    pub port: Option<u16>,
    /// Origins besides the page's own that may open the WebSocket, e.g.
    /// `"https://chat.example.org"` (a browser names the page's site in `Origin`; another site's
    /// page is refused, so it cannot use a visitor's session).
    #[serde(default)]
    pub allowed_origins: Vec<String>,
}

/// `[admin]`: the Unix socket through which the realm's operator (the user it runs as, or
/// root) manages users while it runs (`jaring chat user …`, `jaring bench chat`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSection {
    /// The socket's path (default `admin.sock` in the data directory); relative to the config
    /// file.
    pub socket: Option<PathBuf>,
    /// Listen on it (default true).
    pub enabled: Option<bool>,
}

/// `[tls]`: the realm's certificate and key. With them the client port takes TLS (beside
/// plaintext unless `only`), and the realm's links can run over mutual TLS.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// Certificate chain, PEM, leaf first; relative to the config file.
    pub cert: Option<PathBuf>,
    /// The certificate's private key, PEM; relative to the config file.
    pub key: Option<PathBuf>,
    /// Refuse plaintext clients on the client port (default false: both, told apart by the first
    /// byte).
    pub only: Option<bool>,
    /// Seconds a client's TLS handshake may take (default 10).
    pub handshake_timeout_secs: Option<u64>,
}

impl TlsSection {
    /// The certificate and key files, when both are set; one without the other is an error.
    pub fn files(&self) -> Result<Option<(PathBuf, PathBuf)>, ConfigError> {
        match (&self.cert, &self.key) {
            (Some(c), Some(k)) => Ok(Some((c.clone(), k.clone()))),
            (None, None) => Ok(None),
            _ => Err(ConfigError::Invalid(
                "[tls] needs both cert and key (PEM files), or neither".into(),
            )),
        }
    }
}

/// `[federation]`: where peer realms connect (never the client port).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FederationSection {
    /// Bind address (default: the client listener's).
    pub bind: Option<IpAddr>,
    /// Port (default 9889).
    pub port: Option<u16>,
    /// Seconds a connecting peer has to finish the handshake (default 10).
    pub handshake_timeout_secs: Option<u64>,
    /// Handshakes at once from addresses that are not a peer's (default 64).
    pub max_handshakes: Option<usize>,
    /// Handshakes at once from one address (default 8).
    pub max_handshakes_per_address: Option<usize>,
    /// Seconds without a whole frame before a link is dropped (default 45).
    pub link_idle_secs: Option<u64>,
}

/// `[[peer]]`: one peer realm.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerSection {
    /// The peer's realm name.
    pub name: String,
    /// Its server-to-server address, `host:port`.
    pub address: String,
    /// The secret both realms of the pair share (at least 16 bytes).
    pub secret: Option<String>,
    /// A file holding that secret (trailing newline ignored); relative to the config file.
    pub secret_file: Option<PathBuf>,
    /// The peer's key pin, `sha256:…` (what `jaring chat tls fingerprint` prints on the peer).
    /// With it (and `[tls]` here) the link to and from this peer is mutual TLS 1.3 only.
    pub fingerprint: Option<String>,
    /// A CA certificate file (PEM); when set, the peer's certificate must also chain to it.
    /// Relative to the config file; needs `fingerprint`.
    pub ca: Option<PathBuf>,
}

/// `[realm]`: who this realm is and where it keeps its data.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RealmSection {
    /// Realm name (default `realm1`).
    pub name: Option<String>,
    /// Data directory (default `./jaring-chat`); relative paths are relative to the config file.
    pub data_dir: Option<PathBuf>,
}

/// `[listen]`: where clients connect.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenSection {
    /// Bind address (default 0.0.0.0).
    pub bind: Option<IpAddr>,
    /// Port (default 8889).
    pub port: Option<u16>,
}

/// `[limits]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSection {
    /// Longest request line in bytes (default 65536).
    pub max_line: Option<usize>,
    /// Concurrent connections (default 10000).
    pub max_connections: Option<usize>,
    /// Concurrent connections from one client address (default: a quarter of max_connections, at least 256).
    pub max_connections_per_address: Option<usize>,
    /// Seconds a silent connection stays open (default 300).
    pub idle_timeout_secs: Option<u64>,
    /// Seconds a request line may take from its first byte to its end (default 30).
    pub line_timeout_secs: Option<u64>,
    /// Seconds an unused token stays valid (default 3600).
    pub token_idle_secs: Option<u64>,
    /// Live tokens per user (default 64).
    pub tokens_per_user: Option<usize>,
    /// Messages per inbox reply (default 1000).
    pub inbox_max_messages: Option<usize>,
    /// Message bytes per inbox reply (default 1 MiB).
    pub inbox_max_bytes: Option<usize>,
    /// Messages per history reply (default 1000).
    pub history_max: Option<usize>,
    /// Bytes per reply, as sent (default 1 MiB).
    pub max_reply_bytes: Option<usize>,
    /// Events a live group session may fall behind before it is ended (default 4096).
    pub live_queue: Option<usize>,
    /// Largest group whose joins and leaves are pushed as events (default 100).
    pub presence_max_members: Option<usize>,
    /// Least milliseconds between two writes of a live session in a group of more than 100 live
    /// sessions (default 10); smaller groups write each event at once.
    pub live_flush_ms: Option<u64>,
    /// Groups one user may create (default 100).
    pub groups_per_user: Option<usize>,
}

/// `[auth]`: failed-login limits.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSection {
    /// Failures per client address (an IPv6 client: its /64) per window (default 20).
    pub failures_per_address: Option<u32>,
    /// Failures per user per window (default 5).
    pub failures_per_user: Option<u32>,
    /// The window in seconds (default 60).
    pub window_secs: Option<u64>,
}

/// `[passwords]`: Argon2id cost of new hashes.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PasswordsSection {
    /// KiB per hash (default 19456).
    pub memory_kib: Option<u32>,
    /// Passes (default 2).
    pub iterations: Option<u32>,
    /// Lanes (default 1).
    pub parallelism: Option<u32>,
    /// Hashes computed at once (default 2).
    pub concurrency: Option<usize>,
}

/// Which store keeps a realm's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// SQLite in the data directory: embedded, nothing to install (the default).
    #[default]
    Sqlite,
    /// A PostgreSQL database (`url` or `url_file`).
    Postgres,
    /// Memory only: everything is lost when the server stops (demos and tests).
    Memory,
}

/// `[storage]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageSection {
    /// `sqlite` (default), `postgres` or `memory`.
    pub backend: Option<Backend>,
    /// PostgreSQL: `postgresql://user@host:port/database` (a password in it is better kept in
    /// `url_file`).
    pub url: Option<String>,
    /// PostgreSQL: a file holding the URL (one line), relative to the config file.
    pub url_file: Option<PathBuf>,
    /// SQLite: `full` (default) or `normal`.
    pub synchronous: Option<Synchronous>,
    /// Writes per transaction at most (default 4096).
    pub max_batch: Option<usize>,
}

/// The config file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Unreadable.
    #[error("cannot read {0}")]
    Read(PathBuf, #[source] std::io::Error),
    /// Not valid TOML for this schema.
    #[error("{0} is not a valid realm configuration (see `jaring chat config`)")]
    Parse(PathBuf, #[source] Box<toml::de::Error>),
    /// A valid-looking value that cannot work.
    #[error("{0}")]
    Invalid(String),
    /// A certificate, key or pin for the links cannot be used.
    #[error(transparent)]
    Tls(#[from] jaring_tls::TlsError),
}

impl RealmConfig {
    /// Reads and parses a file; relative data directories become relative to the file.
    pub fn load(path: &std::path::Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read(path.into(), e))?;
        let mut config: Self =
            toml::from_str(&text).map_err(|e| ConfigError::Parse(path.into(), Box::new(e)))?;
        if let Some(dir) = &config.realm.data_dir
            && dir.is_relative()
            && let Some(parent) = path.parent()
        {
            config.realm.data_dir = Some(parent.join(dir));
        }
        if let Some(f) = &config.storage.url_file
            && f.is_relative()
            && let Some(parent) = path.parent()
        {
            config.storage.url_file = Some(parent.join(f));
        }
        for f in [&mut config.tls.cert, &mut config.tls.key]
            .into_iter()
            .flatten()
        {
            if f.is_relative()
                && let Some(parent) = path.parent()
            {
                *f = parent.join(&*f);
            }
        }
        if let Some(f) = &mut config.admin.socket
            && f.is_relative()
            && let Some(parent) = path.parent()
        {
            *f = parent.join(&*f);
        }
        for p in &mut config.peer {
            for f in [&mut p.secret_file, &mut p.ca].into_iter().flatten() {
                if f.is_relative()
                    && let Some(parent) = path.parent()
                {
                    *f = parent.join(&*f);
                }
            }
        }
        Ok(config)
    }

    /// Where the admin socket listens: `[admin] socket`, or `admin.sock` in the data directory;
    /// `None` when `[admin] enabled = false`, or for a memory realm without a socket set (it
    /// then listens in a private temporary directory, found by `jaring bench` through /proc).
    pub fn admin_socket(&self) -> Option<PathBuf> {
        if self.admin.enabled == Some(false) {
            return None;
        }
        if let Some(s) = &self.admin.socket {
            return Some(s.clone());
        }
        match self.backend() {
            Backend::Memory => None,
            Backend::Sqlite | Backend::Postgres => Some(
                self.data_dir()
                    .join(jaring_proto::chat::admin::ADMIN_SOCKET_FILE),
            ),
        }
    }

    /// Whether the admin socket listens at all.
    pub fn admin_enabled(&self) -> bool {
        self.admin.enabled != Some(false)
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.realm
            .data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR))
    }

    /// The realm options this file describes.
    pub fn options(&self) -> Result<RealmOptions, ConfigError> {
        let d = RealmOptions::default();
        let name = self
            .realm
            .name
            .clone()
            .unwrap_or_else(|| DEFAULT_REALM.into());
        if !jaring_proto::chat::address::is_valid_name(&name) {
            return Err(ConfigError::Invalid(format!(
                "realm name {name:?} is not valid: use 1 to 32 letters, digits, '_', '-' or '.'"
            )));
        }
        let secs = |v: Option<u64>, default: Duration| v.map_or(default, Duration::from_secs);
        let l = &self.limits;
        let p = &self.passwords;
        let cost = PasswordCost {
            memory_kib: p.memory_kib.unwrap_or(d.password_cost.memory_kib),
            iterations: p.iterations.unwrap_or(d.password_cost.iterations),
            parallelism: p.parallelism.unwrap_or(d.password_cost.parallelism),
        };
        Ok(RealmOptions {
            name,
            token_idle: secs(l.token_idle_secs, DEFAULT_TOKEN_IDLE),
            tokens_per_user: l.tokens_per_user.unwrap_or(DEFAULT_TOKENS_PER_USER),
            auth_limits: crate::limiter::LimitConfig {
                per_address: self
                    .auth
                    .failures_per_address
                    .unwrap_or(DEFAULT_FAILURES_PER_ADDRESS),
                per_user: self
                    .auth
                    .failures_per_user
                    .unwrap_or(DEFAULT_FAILURES_PER_USER),
                window: secs(self.auth.window_secs, DEFAULT_WINDOW),
                ..d.auth_limits
            },
            password_cost: cost,
            hash_concurrency: p.concurrency.unwrap_or(DEFAULT_HASH_CONCURRENCY),
            inbox_max_messages: l.inbox_max_messages.unwrap_or(DEFAULT_INBOX_MAX_MESSAGES),
            inbox_max_bytes: l.inbox_max_bytes.unwrap_or(DEFAULT_INBOX_MAX_BYTES),
            history_max: l.history_max.unwrap_or(DEFAULT_HISTORY_MAX),
            max_reply_bytes: l.max_reply_bytes.unwrap_or(d.max_reply_bytes).max(1),
            live_queue: l.live_queue.unwrap_or(d.live_queue),
            presence_max_members: l.presence_max_members.unwrap_or(d.presence_max_members),
            live_flush: l.live_flush_ms.map_or(d.live_flush, Duration::from_millis),
            groups_per_user: l.groups_per_user.unwrap_or(d.groups_per_user),
        })
    }

    /// The federation settings, or `None` when no peer is configured. `default_bind` is used when
    /// `[federation]` names no bind address.
    pub fn federation(
        &self,
        default_bind: IpAddr,
    ) -> Result<Option<crate::federation::FederationConfig>, ConfigError> {
        if self.peer.is_empty() {
            return Ok(None);
        }
        let mut peers = Vec::new();
        // Our certificate, loaded once and only when some link needs it.
        let mut identity: Option<jaring_tls::Identity> = None;
        for p in &self.peer {
            let secret = match (&p.secret, &p.secret_file) {
                (Some(s), None) => s.clone().into_bytes(),
                (None, Some(f)) => std::fs::read_to_string(f)
                    .map_err(|e| ConfigError::Read(f.clone(), e))?
                    .trim_end_matches(['\r', '\n'])
                    .as_bytes()
                    .to_vec(),
                _ => {
                    return Err(ConfigError::Invalid(format!(
                        "peer {}: give exactly one of secret or secret_file",
                        p.name
                    )));
                }
            };
            let tls = match (&p.fingerprint, &p.ca) {
                (None, None) => None,
                (None, Some(_)) => {
                    return Err(ConfigError::Invalid(format!(
                        "peer {}: `ca` needs `fingerprint` too (the peer's key pin, printed by                          `jaring chat tls fingerprint` on the peer); a link is either pinned TLS                          or plaintext",
                        p.name
                    )));
                }
                (Some(pin), ca) => {
                    let pin: jaring_tls::Fingerprint = pin.parse()?;
                    if identity.is_none() {
                        let Some((cert, key)) = self.tls.files()? else {
                            return Err(ConfigError::Invalid(format!(
                                "peer {} has a fingerprint, so its link runs over mutual TLS, but                                  this realm has no certificate: set [tls] cert and key (PEM                                  files), or remove the fingerprint to link in plaintext",
                                p.name
                            )));
                        };
                        identity = Some(jaring_tls::Identity::from_pem_files(&cert, &key)?);
                    }
                    let ca = match ca {
                        Some(f) => Some(read_ca(f)?),
                        None => None,
                    };
                    Some(crate::federation::PeerTls { pin, ca })
                }
            };
            peers.push(crate::federation::PeerConfig {
                name: p.name.clone(),
                address: p.address.clone(),
                secret,
                tls,
            });
        }
        let listen = std::net::SocketAddr::new(
            self.federation.bind.unwrap_or(default_bind),
            self.federation
                .port
                .unwrap_or(crate::federation::DEFAULT_FEDERATION_PORT),
        );
        let f = &self.federation;
        let mut config = crate::federation::FederationConfig::new(listen, peers);
        config.identity = identity;
        if let Some(secs) = f.handshake_timeout_secs {
            config.handshake_timeout = Duration::from_secs(secs.max(1));
        }
        if let Some(secs) = f.link_idle_secs {
            config.link_idle = Duration::from_secs(secs.max(1));
        }
        config.max_handshakes = f.max_handshakes.unwrap_or(config.max_handshakes);
        config.max_handshakes_per_address = f
            .max_handshakes_per_address
            .unwrap_or(config.max_handshakes_per_address);
        Ok(Some(config))
    }

    /// The storage backend.
    pub fn backend(&self) -> Backend {
        self.storage.backend.unwrap_or_default()
    }

    /// The PostgreSQL URL: `url`, or the first line of `url_file`.
    pub fn postgres_url(&self) -> Result<String, ConfigError> {
        match (&self.storage.url, &self.storage.url_file) {
            (Some(_), Some(_)) => Err(ConfigError::Invalid(
                "[storage] has both url and url_file: keep one".into(),
            )),
            (Some(url), None) => Ok(url.clone()),
            (None, Some(f)) => {
                let text = std::fs::read_to_string(f).map_err(|e| ConfigError::Read(f.clone(), e))?;
                let url = text.lines().next().unwrap_or("").trim().to_owned();
                if url.is_empty() {
                    return Err(ConfigError::Invalid(format!(
                        "{} is empty: put the PostgreSQL URL (postgresql://user@host:port/db) on its first line",
                        f.display()
                    )));
                }
                Ok(url)
            }
            (None, None) => Err(ConfigError::Invalid(
                "[storage] backend = \"postgres\" needs url = \"postgresql://user@host:port/db\" (or url_file)"
                    .into(),
            )),
        }
    }

    /// SQLite storage settings.
    pub fn storage(&self) -> (Synchronous, usize) {
        (
            self.storage.synchronous.unwrap_or_default(),
            self.storage.max_batch.unwrap_or(DEFAULT_MAX_BATCH),
        )
    }
}

/// The certificates of a peer's `ca` file (PEM).
fn read_ca(
    path: &std::path::Path,
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, ConfigError> {
    use rustls::pki_types::pem::PemObject as _;
    let bad = |detail: String| {
        ConfigError::Invalid(format!(
            "cannot use the CA file {} of a [[peer]] entry: {detail}; set `ca` to a PEM file \
             of the CA certificate(s) that issue the peer's certificate",
            path.display()
        ))
    };
    let pem = std::fs::read(path).map_err(|e| ConfigError::Read(path.to_path_buf(), e))?;
    let certs = rustls::pki_types::CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(e.to_string()))?;
    if certs.is_empty() {
        return Err(bad("it holds no `BEGIN CERTIFICATE` block".into()));
    }
    Ok(certs)
}

/// The commented default configuration.
pub const DEFAULT_CONFIG: &str = r#"# jaring chat realm configuration.
# Every setting is optional; the values shown are the defaults.
# Command-line flags (--bind, --port, --max-connections, --idle-timeout, ...) override this file.

[realm]
# The realm's name: users elsewhere will address ours as name@realm1.
name = "realm1"
# Where the database (chat.db, SQLite in WAL mode) lives; relative to this file.
data_dir = "jaring-chat"

[listen]
bind = "0.0.0.0"
port = 8889

[limits]
# A request line longer than this is answered with an ERROR and the connection is closed.
max_line = 65536
# Connections past this are told the server is busy and closed.
max_connections = 10000
# Connections from one client address (an IPv6 /64) past this are told why and closed
# (default: a quarter of max_connections, at least 256).
# max_connections_per_address = 2500
# A connection silent this long is told why and closed.
idle_timeout_secs = 300
# A request line not finished this long after its first byte is refused and the connection
# closed (a slowloris sending a byte a second holds no slot for long).
line_timeout_secs = 30
# A token unused this long expires; the user must auth again.
token_idle_secs = 3600
# Logging in once more than this ends the user's oldest token.
tokens_per_user = 64
# One inbox reply carries at most this many messages / bytes of text; it says "more": true.
inbox_max_messages = 1000
inbox_max_bytes = 1048576
# history TOKEN PEER N returns at most this many messages.
history_max = 1000
# No reply is longer than this many bytes: history, users, groups and members replies that
# would be say "more": true and give a "next" cursor for the rest; inbox replies say "more".
max_reply_bytes = 1048576
# A live group session this many events behind its group is ended with a reason (the member
# catches up with inboxgroup); this bounds the memory a slow member can cost.
live_queue = 4096
# In groups with more members than this, joins and leaves are not pushed (n joins would cost n²).
presence_max_members = 100
# In a group with more than 100 live sessions, a session writes at most once per this many ms
# (events in between share the write); smaller groups write each event at once.
live_flush_ms = 10
# One user may create at most this many groups (groups are never deleted); past it, `group` or
# `sendgroup` to a new name is refused with an ERROR, and joining existing groups still works.
groups_per_user = 100

[auth]
# Failed logins allowed per window, per client address and per user name; then a wait.
# An IPv6 client counts as its /64 network; an IPv4-mapped address as its IPv4 address.
failures_per_address = 20
failures_per_user = 5
window_secs = 60

[passwords]
# Argon2id cost of new password hashes (OWASP minimum: 19 MiB, 2 passes). A hash made at another
# cost is made again at this one when its user next logs in.
memory_kib = 19456
iterations = 2
parallelism = 1
# Hashes computed at once; more logins wait their turn.
concurrency = 2

[storage]
# Where the realm's users, messages and groups live:
#   "sqlite"   in data_dir, embedded, nothing to install (the default);
#   "postgres" a PostgreSQL database: set url (or url_file, a file holding it, relative to this
#              file), e.g. url = "postgresql://jaring@127.0.0.1:5432/jaring"; one realm server
#              per database at a time;
#   "memory"   nothing survives a restart (demos, tests).
backend = "sqlite"
# SQLite: full: a committed message survives power loss; normal: survives a crash of the server only.
synchronous = "full"
# Most writes committed together in one transaction (group commit).
max_batch = 4096

# TLS (docs/chat-protocol.md, "TLS"): with a certificate and key, the client port takes TLS
# beside plaintext (a client's first byte tells which); paths are relative to this file.
# The same certificate is what this realm presents on its links to peers that pin its key
# (see [[peer]] fingerprint below).
[tls]
# cert = "tls/realm1.pem"
# key = "tls/realm1-key.pem"
# Refuse plaintext clients (each is told in one line that the port takes TLS only).
only = false
# A client's TLS handshake must finish within this many seconds of its first byte.
handshake_timeout_secs = 10

# The admin socket (docs/chat-admin.md): `jaring chat user …` and `jaring bench chat` manage users
# through it while the realm runs. Only the user the realm runs as (and root) may use it.
[admin]
# socket = "jaring-chat/admin.sock"   # default: admin.sock in the data directory
enabled = true

# The web port (docs/chat-protocol.md, "WebSocket"): the chat page at http://HOST:PORT/ and its
# WebSocket at /ws. Off unless a port is set (or --web-port); it listens on [listen] bind and
# takes TLS beside plaintext when [tls] has a certificate.
[web]
# port = 8080
# Pages of other sites that may open the WebSocket (the page's own site always may).
allowed_origins = []

# Federation (docs/federation.md): other realms this one exchanges messages with, as user@realm.
# Peers connect to this port, never to the client port; both realms of a pair list each other
# with the same secret (generate one with `openssl rand -hex 32`).
[federation]
port = 9889
# A connecting peer must finish the handshake within this many seconds of connecting.
handshake_timeout_secs = 10
# Connections still in their handshake: at most this many from addresses that are not a
# configured peer's (peers' addresses have room of their own), and at most this many from any one
# address; more are closed at once (refusals are logged at most once per 10 s).
max_handshakes = 64
max_handshakes_per_address = 8
# A link on which no whole frame arrived for this long is dropped (and redialled).
link_idle_secs = 45

# [[peer]]
# name = "realm2"
# address = "127.0.0.1:9899"
# secret_file = "realm1-realm2.secret"
# The peer's key pin (run `jaring chat tls fingerprint --config realm2.toml` on the peer). With
# it, and [tls] cert/key here, the link to and from realm2 is mutual TLS 1.3 and never plaintext:
# each realm checks the other's key against its pin, and a plaintext connection from (or a dial
# answered without TLS by) realm2 is refused. Without it the link is plaintext (a warning is
# logged at start). A fingerprint without [tls] here is a configuration error.
# fingerprint = "sha256:…"
# Optionally, a CA certificate (PEM, relative to this file) that realm2's certificate must also
# chain to, besides matching the pin.
# ca = "lab-ca.pem"
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_printed_default_parses_to_the_defaults() {
        let c: RealmConfig = toml::from_str(DEFAULT_CONFIG).expect("valid");
        let o = c.options().expect("valid");
        let d = RealmOptions::default();
        assert_eq!(o.name, d.name);
        assert_eq!(o.token_idle, d.token_idle);
        assert_eq!(o.password_cost, d.password_cost);
        assert_eq!(o.auth_limits, d.auth_limits);
        assert_eq!(o.groups_per_user, d.groups_per_user);
        assert_eq!(c.listen.port, Some(crate::DEFAULT_PORT));
        assert_eq!(
            c.limits.max_line,
            Some(jaring_proto::chat::DEFAULT_MAX_LINE)
        );
        assert_eq!(c.storage(), (Synchronous::Full, DEFAULT_MAX_BATCH));
        assert_eq!(c.web.port, None);
        assert!(c.web.allowed_origins.is_empty());
    }

    #[test]
    fn the_printed_federation_settings_are_the_defaults() {
        let mut c: RealmConfig = toml::from_str(DEFAULT_CONFIG).expect("valid");
        c.peer.push(PeerSection {
            name: "realm2".into(),
            address: "127.0.0.1:9899".into(),
            secret: Some("a secret of sixteen bytes".into()),
            secret_file: None,
            fingerprint: None,
            ca: None,
        });
        let any = IpAddr::from([127, 0, 0, 1]);
        let f = c.federation(any).expect("valid").expect("a peer");
        let d = crate::federation::FederationConfig::new(f.listen, Vec::new());
        assert_eq!(f.handshake_timeout, d.handshake_timeout);
        assert_eq!(f.max_handshakes, d.max_handshakes);
        assert_eq!(f.max_handshakes_per_address, d.max_handshakes_per_address);
        assert_eq!(f.link_idle, d.link_idle);
    }

    /// A config file in `dir` with `[tls]` (when `tls`) and one peer with `peer_extra` lines.
    fn load_with(dir: &std::path::Path, tls: bool, peer_extra: &str) -> RealmConfig {
        let mut text = String::new();
        if tls {
            text.push_str("[tls]\ncert = \"tls/me.pem\"\nkey = \"tls/me-key.pem\"\n");
        }
        text.push_str(&format!(
            "[[peer]]\nname = \"realm2\"\naddress = \"127.0.0.1:9899\"\n\
             secret = \"a secret of sixteen bytes\"\n{peer_extra}"
        ));
        let path = dir.join("realm.toml");
        std::fs::write(&path, text).unwrap();
        RealmConfig::load(&path).unwrap()
    }

    #[test]
    fn a_fingerprint_makes_the_link_tls_and_needs_tls_here() {
        let dir = tempfile::tempdir().unwrap();
        let any = IpAddr::from([127, 0, 0, 1]);
        let ca = jaring_tls::pki::Authority::create("test CA").unwrap();
        let now = std::time::SystemTime::now();
        let year = Duration::from_secs(365 * 24 * 3600);
        let leaf = ca
            .issue(&["127.0.0.1".to_owned()], now - year / 365, now + year)
            .unwrap();
        std::fs::create_dir(dir.path().join("tls")).unwrap();
        std::fs::write(dir.path().join("tls/me.pem"), &leaf.cert_pem).unwrap();
        std::fs::write(dir.path().join("tls/me-key.pem"), &leaf.key_pem).unwrap();
        std::fs::write(dir.path().join("tls/ca.pem"), ca.cert_pem()).unwrap();
        let pin = jaring_tls::fingerprint_of_pem_file(&dir.path().join("tls/me.pem")).unwrap();

        // Without a fingerprint: plaintext, as before.
        let f = load_with(dir.path(), false, "")
            .federation(any)
            .unwrap()
            .unwrap();
        assert!(f.peers[0].tls.is_none() && f.identity.is_none());

        // With one (and a CA, relative to the file): TLS, our identity loaded.
        let extra = format!("fingerprint = \"{pin}\"\nca = \"tls/ca.pem\"\n");
        let f = load_with(dir.path(), true, &extra)
            .federation(any)
            .unwrap()
            .unwrap();
        let tls = f.peers[0].tls.as_ref().expect("a TLS link");
        assert_eq!(tls.pin, pin);
        assert_eq!(tls.ca.as_ref().map(Vec::len), Some(1));
        assert_eq!(f.identity.as_ref().map(|i| i.fingerprint()), Some(pin));

        // A fingerprint without [tls] here cannot work.
        let extra = format!("fingerprint = \"{pin}\"\n");
        let e = load_with(dir.path(), false, &extra)
            .federation(any)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("has a fingerprint") && e.contains("[tls]"),
            "{e}"
        );
        // Nor a malformed one, nor a CA without a pin.
        let e = load_with(dir.path(), true, "fingerprint = \"sha256:abc\"\n")
            .federation(any)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a key fingerprint"), "{e}");
        let e = load_with(dir.path(), true, "ca = \"tls/ca.pem\"\n")
            .federation(any)
            .unwrap_err()
            .to_string();
        assert!(e.contains("`ca` needs `fingerprint`"), "{e}");
    }

    #[test]
    fn typos_are_refused() {
        assert!(toml::from_str::<RealmConfig>("[limits]\nmax_lines = 3\n").is_err());
        let bad: RealmConfig = toml::from_str("[realm]\nname = \"a b\"\n").expect("toml");
        assert!(bad.options().is_err());
    }
}
