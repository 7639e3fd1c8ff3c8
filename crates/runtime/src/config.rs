//! Listener options and limits shared by every server, each with a documented default.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

/// Default bind address: every IPv4 interface, as the labs' servers bind `0.0.0.0`.
pub const DEFAULT_BIND: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);

/// Default listen backlog: connections the kernel queues before `accept`. The labs use 1 or 5 to show
/// the queue filling; a server under load wants more (Linux caps it at `net.core.somaxconn`).
pub const DEFAULT_BACKLOG: u32 = 1024;

/// Default cap on concurrent connections. The connection past it is accepted, told the server is
/// busy, and closed at once. Kept below the 20,000 open files a process may hold here, with room for
/// listeners, storage and the peer links of later services.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;

/// Default idle timeout: a connection with no bytes from its peer, or that accepts none of ours, for
/// this long is told why and closed, so a forgotten `telnet` cannot hold a slot for ever.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// Default deadline for finishing a request line, counted from its first byte: a peer that
/// starts a line and does not end it within this long (a slowloris sending a byte a second, or a
/// forgotten half-typed `telnet` line) is told why and closed, whatever its idle timeout. Long
/// enough for a person typing a command by hand in `telnet`'s character mode.
pub const DEFAULT_LINE_TIMEOUT: Duration = Duration::from_secs(30);

/// The default cap on connections from one client address is `max_connections /
/// DEFAULT_PER_ADDRESS_DIVISOR`, but never below [`DEFAULT_PER_ADDRESS_FLOOR`]. The connection
/// past it is told why and closed, so one host cannot hold every slot; a quarter still lets one
/// machine run a large load test (2,500 connections at the default limit). IPv6 addresses count
/// by their /64, the block one host is usually given.
pub const DEFAULT_PER_ADDRESS_DIVISOR: usize = 4;

/// The least default cap per client address (or `max_connections`, if smaller): a small server
/// (a lab demo with `--max-connections 5`, its clients all on one machine) is limited by its
/// connection limit alone.
pub const DEFAULT_PER_ADDRESS_FLOOR: usize = 256;

/// Default grace period at shutdown: how long connections get to finish replies in flight after the
/// listener closes, before the server stops waiting for them and exits anyway.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(5);

/// Default deadline for a TLS handshake, counted from the client's first byte: a client that
/// starts one and does not finish it within this long (a stalled or hostile peer, a ClientHello
/// sent a byte at a time) is closed, so half-open handshakes cannot hold connection slots.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How a server runs its connections. The same [`crate::Session`] code runs under each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Model {
    /// One tokio task per connection on a small pool of threads: the default, and the fast one.
    #[default]
    Async,
    /// One OS thread per connection with blocking reads and writes, as the classic labs do.
    Threads,
    /// One connection at a time: the next client waits in the listen backlog until the current one
    /// leaves, which is what the labs demonstrate with an iterative server.
    Iterative,
}

impl Model {
    /// The name used on the command line and in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Async => "async",
            Self::Threads => "threads",
            Self::Iterative => "iterative",
        }
    }
}

impl fmt::Display for Model {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The text was not one of `async`, `threads`, `iterative`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("unknown server model {0:?}: use async, threads or iterative")]
pub struct UnknownModel(String);

impl FromStr for Model {
    type Err = UnknownModel;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "async" => Ok(Self::Async),
            "threads" => Ok(Self::Threads),
            "iterative" => Ok(Self::Iterative),
            other => Err(UnknownModel(other.to_owned())),
        }
    }
}

/// Where and how to listen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenConfig {
    /// Address to bind; IPv6 addresses work, and `::` also accepts IPv4 where the system allows.
    pub bind: IpAddr,
    /// Port to bind; 0 asks the kernel for a free one (what tests use).
    pub port: u16,
    /// The `listen(2)` backlog.
    pub backlog: u32,
}

impl ListenConfig {
    /// Listen on every IPv4 interface at `port` with the default backlog.
    pub fn on_port(port: u16) -> Self {
        Self {
            bind: DEFAULT_BIND,
            port,
            backlog: DEFAULT_BACKLOG,
        }
    }

    /// The socket address this configuration binds.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.bind, self.port)
    }
}

/// Resource limits that keep one peer, or many, from costing the server more than they should.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Concurrent connections admitted; the excess is refused with a reason.
    pub max_connections: usize,
    /// How long a connection may stay silent (or refuse our bytes) before it is closed.
    pub idle_timeout: Duration,
    /// Longest request line a line protocol accepts, in bytes; passed to the session.
    pub max_line: usize,
    /// Concurrent connections from one client address (an IPv6 /64); `None`: a quarter of
    /// `max_connections`, at least 256 (see [`DEFAULT_PER_ADDRESS_DIVISOR`]).
    pub max_per_address: Option<usize>,
    /// How long a request line may take from its first byte to its end.
    pub line_timeout: Duration,
    /// How long a TLS handshake may take from the client's first byte.
    pub handshake_timeout: Duration,
}

impl Limits {
    /// The connection cap per client address in force.
    pub fn per_address(&self) -> usize {
        self.max_per_address.unwrap_or_else(|| {
            (self.max_connections / DEFAULT_PER_ADDRESS_DIVISOR)
                .max(DEFAULT_PER_ADDRESS_FLOOR.min(self.max_connections))
        })
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_line: jaring_proto::time::DEFAULT_MAX_LINE,
            max_per_address: None,
            line_timeout: DEFAULT_LINE_TIMEOUT,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
        }
    }
}

/// Everything a [`crate::Server`] needs besides its service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// Where to listen.
    pub listen: ListenConfig,
    /// How connections run.
    pub model: Model,
    /// Resource limits.
    pub limits: Limits,
    /// How long shutdown waits for connections to finish.
    pub grace: Duration,
    /// TLS on this listener, if any.
    pub tls: Option<TlsListen>,
}

/// Whether a listener also accepts plaintext when it has TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// TLS and plaintext on the same port, told apart by the client's first byte (see
    /// [`crate::transport::TLS_HANDSHAKE_RECORD`]): for client-speaks-first protocols whose
    /// requests never start with that byte (time, chat).
    Both,
    /// TLS only: a client whose first byte is not a TLS handshake is told so (where the protocol
    /// has a way to say it) and closed.
    Only,
}

/// A listener's TLS: the certificate and settings, and whether plaintext is accepted too.
#[derive(Debug, Clone)]
pub struct TlsListen {
    /// The rustls server settings (certificate chain, key, resumption, key log).
    pub config: std::sync::Arc<rustls::ServerConfig>,
    /// Plaintext too, or TLS only.
    pub mode: TlsMode,
}

impl PartialEq for TlsListen {
    fn eq(&self, other: &Self) -> bool {
        std::sync::Arc::ptr_eq(&self.config, &other.config) && self.mode == other.mode
    }
}

impl Eq for TlsListen {}

impl ServerConfig {
    /// Defaults everywhere, listening on `port`.
    pub fn on_port(port: u16) -> Self {
        Self {
            listen: ListenConfig::on_port(port),
            model: Model::default(),
            limits: Limits::default(),
            grace: DEFAULT_GRACE,
            tls: None,
        }
    }

    /// Checks the values that would otherwise fail later, at a worse time, with a worse message.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.limits.max_connections == 0 {
            return Err(ConfigError("max connections must be at least 1"));
        }
        if self.limits.idle_timeout.is_zero() {
            return Err(ConfigError("idle timeout must be longer than 0 seconds"));
        }
        if self.limits.max_per_address == Some(0) {
            return Err(ConfigError(
                "max connections per address must be at least 1",
            ));
        }
        if self.limits.handshake_timeout.is_zero() {
            return Err(ConfigError(
                "TLS handshake timeout must be longer than 0 seconds",
            ));
        }
        if self.limits.line_timeout.is_zero() {
            return Err(ConfigError("line timeout must be longer than 0 seconds"));
        }
        if self.limits.max_line == 0 {
            return Err(ConfigError("max line length must be at least 1 byte"));
        }
        if self.listen.backlog == 0 {
            return Err(ConfigError("backlog must be at least 1"));
        }
        Ok(())
    }
}

/// A configuration value that cannot work; the message says which and what to use instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid server configuration: {0}")]
pub struct ConfigError(&'static str);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn models_parse_and_print() {
        for m in [Model::Async, Model::Threads, Model::Iterative] {
            assert_eq!(m.as_str().parse::<Model>().ok(), Some(m));
        }
        assert!("forking".parse::<Model>().is_err());
    }

    #[test]
    fn the_default_share_per_address_is_a_quarter_but_never_starves_a_small_server() {
        let share = |max_connections| {
            Limits {
                max_connections,
                ..Limits::default()
            }
            .per_address()
        };
        assert_eq!(share(10_000), 2_500);
        assert_eq!(share(500), 256);
        assert_eq!(share(5), 5);
        let set = Limits {
            max_per_address: Some(3),
            ..Limits::default()
        };
        assert_eq!(set.per_address(), 3);
    }

    #[test]
    fn zero_limits_are_refused() {
        let mut c = ServerConfig::on_port(0);
        assert!(c.validate().is_ok());
        c.limits.idle_timeout = Duration::ZERO;
        assert!(c.validate().is_err());
    }
}
