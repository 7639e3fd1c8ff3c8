//! The command line: every subcommand, its flags, and their defaults.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use jaring_runtime::config::{
    DEFAULT_BACKLOG, DEFAULT_BIND, DEFAULT_GRACE, DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_IDLE_TIMEOUT,
    DEFAULT_LINE_TIMEOUT, DEFAULT_MAX_CONNECTIONS,
};
use jaring_runtime::{Limits, ListenConfig, Model, ServerConfig};

use crate::Failure;

/// jaring: the classic network-programming lab services (time, echo, chat) as real, fast, hardened
/// servers and clients, with a load generator to measure them.
#[derive(Debug, Parser)]
#[command(
    name = "jaring",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    /// Options every subcommand takes.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Options that apply to every subcommand.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Log line format on stderr; RUST_LOG sets the filter (default: info).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "JARING_LOG_FORMAT")]
    pub log_format: LogFormat,
    /// When to colour output: auto colours a terminal unless NO_COLOR is set.
    #[arg(long, global = true, value_enum, default_value_t = ColorChoice::Auto)]
    pub color: ColorChoice,
}

/// Log line formats.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    /// Readable lines for people.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// When to use colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorChoice {
    /// At a terminal, unless NO_COLOR is set.
    Auto,
    /// Always.
    Always,
    /// Never.
    Never,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// TIME service: `TIME` → `JAM hh:mm:ss` (server and client).
    #[command(subcommand)]
    Time(TimeCommand),
    /// ECHO service: every byte back, in order (server, and a client for messages, lines, files).
    #[command(subcommand)]
    Echo(EchoCommand),
    /// Socket facts: getaddrinfo results, default timeout and options (the lab's socket_info).
    #[command(
        after_help = "Examples:\n  jaring info\n  jaring info example.com 443\n  jaring info ::1 7 --json"
    )]
    Info(InfoArgs),
    /// Chat realm: auth, private messages, a durable inbox (server, config, users, client).
    #[command(subcommand)]
    Chat(ChatCommand),
    /// Load generator: measure a running jaring server (or any server speaking the protocol).
    Bench(BenchArgs),
    /// The whole lab in one process: time, echo, and two linked chat realms.
    #[command(
        after_help = "Examples:\n  jaring lab\n  jaring lab --dir /tmp/lab --bind 127.0.0.1\n  \
        jaring lab --ephemeral   (every port chosen by the system; the table shows which)\n  \
        SSLKEYLOGFILE=keys.log jaring lab   (Wireshark can then decrypt the lab's TLS)\n  \
        sudo jaring lab --hosts --capture lab.pcapng   (three hosts, as in the reports)\n  \
        sudo jaring lab exec mesin-2 -- jaring time client --host mesin-1\n  \
        jaring lab --model iterative --backlog 1   (the second client waits in the backlog)"
    )]
    Lab(LabCli),
    /// TLS files: a small CA and server certificates for trying TLS (what `jaring lab` makes).
    #[command(subcommand)]
    Tls(TlsCommand),
    /// Print shell completions.
    #[command(after_help = "Example:\n  jaring completions bash > /etc/bash_completion.d/jaring")]
    Completions {
        /// The shell to complete for.
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff), or write one page per subcommand into a directory.
    #[command(after_help = "Examples:\n  jaring man | man -l -\n  \
        jaring man --dir /usr/local/share/man/man1   (jaring.1, jaring-chat-serve.1, …)")]
    Man {
        /// Write jaring.1 and a page for every subcommand here instead.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

/// `jaring tls …`
#[derive(Debug, Subcommand)]
pub enum TlsCommand {
    /// Make (or reuse) a CA and one server certificate per NAME in a directory: ca.pem, NAME.pem,
    /// NAME-key.pem (keys 0600). Certificates that are still good are kept.
    #[command(after_help = "Examples:\n  jaring tls init\n  \
        jaring time serve --tls-cert jaring-tls/server.pem --tls-key jaring-tls/server-key.pem\n  \
        jaring time client --tls --ca jaring-tls/ca.pem\n  \
        jaring tls init --dir /etc/jaring/tls --san mesin-1 --san 172.16.16.101 realm1 realm2")]
    Init {
        /// Where to keep the files.
        #[arg(long, default_value = "./jaring-tls")]
        dir: PathBuf,
        /// A name or address the certificates must also be valid for (besides localhost,
        /// 127.0.0.1, ::1 and this machine's host name); repeatable.
        #[arg(long, value_name = "NAME")]
        san: Vec<String>,
        /// One certificate per name [default: server].
        names: Vec<String>,
        /// Print what was made as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print a certificate's key fingerprint (`sha256:…` of its public key), as realm links pin
    /// it.
    #[command(after_help = "Example:\n  jaring tls fingerprint jaring-lab/tls/realm1.pem")]
    Fingerprint {
        /// A PEM certificate file (the first certificate is used).
        cert: PathBuf,
    },
}

/// `jaring time …`
#[derive(Debug, Subcommand)]
pub enum TimeCommand {
    /// Serve the TIME protocol.
    #[command(
        after_help = "Examples:\n  jaring time serve\n  jaring time serve --port 45000 --tz Asia/Jakarta --model threads\n  \
        printf 'TIME\\r\\nQUIT\\r\\n' | nc 127.0.0.1 45000"
    )]
    Serve(TimeServeArgs),
    /// Ask a TIME server for the time.
    #[command(
        after_help = "Examples:\n  jaring time client\n  jaring time client --host 127.0.0.1 --port 45000 --count 5 --interval 1"
    )]
    Client(TimeClientArgs),
}

/// Listener options, limits and model: the same for every server.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Server options")]
pub struct ServerArgs {
    /// Address to listen on (IPv4 or IPv6, e.g. 127.0.0.1 or ::).
    #[arg(long, default_value_t = DEFAULT_BIND)]
    pub bind: IpAddr,
    /// Listen backlog: connections the kernel queues before accept (the labs use 1 or 5).
    #[arg(long, default_value_t = DEFAULT_BACKLOG)]
    pub backlog: u32,
    /// How connections run: async tasks, a thread per connection, or one client at a time.
    #[arg(long, value_enum, default_value_t = ModelArg::Async)]
    pub model: ModelArg,
    /// Concurrent connections; the excess is told the server is busy and closed.
    #[arg(long, default_value_t = DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// Concurrent connections from one client address (an IPv6 /64); the excess is told why
    /// and closed [default: a quarter of --max-connections, at least 256].
    #[arg(long, value_name = "N")]
    pub max_connections_per_address: Option<usize>,
    /// Seconds a connection may stay idle before it is closed.
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_IDLE_TIMEOUT.as_secs())]
    pub idle_timeout: u64,
    /// Seconds a request line may take from its first byte to its end (slow senders are closed).
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_LINE_TIMEOUT.as_secs())]
    pub line_timeout: u64,
    /// Seconds to let open connections finish at shutdown (SIGINT/SIGTERM).
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_GRACE.as_secs_f64())]
    pub grace: f64,
}

/// Server models on the command line.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ModelArg {
    /// One async task per connection (default; the fast one).
    Async,
    /// One OS thread per connection, as the classic labs.
    Threads,
    /// One client at a time; others wait in the backlog.
    Iterative,
}

impl From<ModelArg> for Model {
    fn from(model: ModelArg) -> Self {
        match model {
            ModelArg::Async => Model::Async,
            ModelArg::Threads => Model::Threads,
            ModelArg::Iterative => Model::Iterative,
        }
    }
}

/// The time zone `--tz` names (an IANA name), or this machine's without one; an unknown name is
/// a usage error that says what a valid one looks like.
pub fn time_zone(name: Option<&str>) -> Result<jiff::tz::TimeZone, Failure> {
    match name {
        Some(name) => jiff::tz::TimeZone::get(name).map_err(|e| {
            Failure::Usage(anyhow::anyhow!(
                "unknown time zone {name:?} ({e}); use an IANA name such as Asia/Jakarta or UTC"
            ))
        }),
        None => Ok(jiff::tz::TimeZone::system()),
    }
}

impl ServerArgs {
    /// The runtime configuration these flags describe; a `--grace` that is not a duration is a
    /// usage error.
    pub fn config(&self, port: u16, max_line: usize) -> Result<ServerConfig, Failure> {
        Ok(ServerConfig {
            listen: ListenConfig {
                bind: self.bind,
                port,
                backlog: self.backlog,
            },
            model: self.model.into(),
            limits: Limits {
                max_connections: self.max_connections,
                idle_timeout: Duration::from_secs(self.idle_timeout),
                max_line,
                max_per_address: self.max_connections_per_address,
                line_timeout: Duration::from_secs(self.line_timeout),
                handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            },
            grace: seconds("grace", self.grace)?,
            tls: None,
        })
    }
}

/// A server's TLS: its certificate and key, and whether plaintext is still accepted.
#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "TLS")]
pub struct TlsServerArgs {
    /// Certificate chain (PEM, leaf first): serve TLS with it. Without it, no TLS.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM: PKCS#8, SEC1 or PKCS#1).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Seconds a TLS handshake may take from the client's first byte [default: 10, or the
    /// config's].
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    pub handshake_timeout: Option<u64>,
}

impl TlsServerArgs {
    /// The handshake timeout in force: the flag's, else `config`'s, else the default.
    pub fn handshake_timeout(&self, config: Option<u64>) -> Duration {
        self.handshake_timeout
            .or(config)
            .map_or(DEFAULT_HANDSHAKE_TIMEOUT, Duration::from_secs)
    }
}

/// A client's TLS: on or off, and whom to trust.
#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "TLS")]
pub struct TlsClientArgs {
    /// Speak TLS to the server (verifying its certificate against the system's CAs, or --ca).
    #[arg(long)]
    pub tls: bool,
    /// Trust only the CA certificate(s) in this PEM file (`jaring lab` writes tls/ca.pem).
    #[arg(long, value_name = "FILE", conflicts_with = "insecure")]
    pub ca: Option<PathBuf>,
    /// Do not verify the server's certificate at all (anyone on the path can then read and change
    /// everything): for a quick look at a server whose CA you do not have.
    #[arg(long)]
    pub insecure: bool,
}

/// TLS on a port that can also take plaintext (time, chat).
#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "TLS")]
pub struct SharedTlsArgs {
    /// Certificate, key and handshake timeout.
    #[command(flatten)]
    pub tls: TlsServerArgs,
    /// Refuse plaintext: a client that does not start a TLS handshake is told so in one line
    /// and closed. Without it the port takes TLS and plaintext (told apart by the first byte).
    #[arg(long, requires = "tls_cert")]
    pub tls_only: bool,
}

/// `jaring time serve`
#[derive(Debug, Args)]
pub struct TimeServeArgs {
    /// Port to listen on.
    #[arg(long, short, default_value_t = jaring_time::DEFAULT_PORT)]
    pub port: u16,
    /// IANA time zone to answer in (e.g. Asia/Jakarta); default: this machine's local time.
    #[arg(long, value_name = "ZONE")]
    pub tz: Option<String>,
    /// Longest request line accepted, in bytes; a longer one is answered ERR and closed.
    #[arg(long, value_name = "BYTES", default_value_t = jaring_proto::time::DEFAULT_MAX_LINE)]
    pub max_line: usize,
    /// Listener options, limits and model.
    #[command(flatten)]
    pub server: ServerArgs,
    /// TLS beside plaintext on the same port.
    #[command(flatten)]
    pub tls: SharedTlsArgs,
}

/// `jaring time client`
#[derive(Debug, Args)]
pub struct TimeClientArgs {
    /// Server host name or address.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Server port.
    #[arg(long, short, default_value_t = jaring_time::DEFAULT_PORT)]
    pub port: u16,
    /// How many times to ask (at least once).
    #[arg(long, short = 'n', default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    pub count: u64,
    /// Seconds between requests.
    #[arg(long, value_name = "SECS", default_value_t = 1.0)]
    pub interval: f64,
    /// Seconds to wait for the connection and for each reply.
    #[arg(long, value_name = "SECS", default_value_t = 5.0)]
    pub timeout: f64,
    /// TLS to the server.
    #[command(flatten)]
    pub tls: TlsClientArgs,
}

/// `jaring bench …`
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// What to load.
    #[command(subcommand)]
    pub workload: BenchWorkload,
}

/// Workloads the load generator knows.
#[derive(Debug, Subcommand)]
pub enum BenchWorkload {
    /// TIME round trips (persistent) or a connection per request (churn).
    #[command(
        after_help = "Examples:\n  jaring bench time --connections 50 --duration 10\n  \
        jaring bench time --mode churn --connections 20 --json\n  \
        jaring bench time --mode churn --tls --ca tls/ca.pem"
    )]
    Time(BenchTimeArgs),
    /// ECHO throughput (stream) or round trips per second (round-trip).
    #[command(
        after_help = "Examples:\n  jaring bench echo --connections 1 --duration 10\n  \
        jaring bench echo --connections 50 --size 131072\n  \
        jaring bench echo --mode round-trip --size 1024 --connections 1 --json\n  \
        jaring bench echo --tls --ca tls/ca.pem --port 10443"
    )]
    Echo(BenchEchoArgs),
    /// CHAT: durable private messages per second with send→inbox latency, or idle logged-in
    /// connections (--idle) and the server's memory.
    #[command(after_help = "Examples:\n  \
        jaring bench chat --connections 100 --duration 10\n  \
        jaring bench chat --connections 100 --json\n  \
        jaring bench chat --idle --connections 10000 --duration 5 --server-pid 1234\n  \
        jaring bench chat --group --members 1000 --senders 10 --rate 250 --duration 10\n  \
        jaring bench chat --group --protocol irc --port 6667 --members 1000 --rate 250\n  \
        jaring bench chat --push --watchers 100 --senders 4 --rate 100 --duration 10\n\
        Bench users are u0, u1, …: senders first, then receivers (or watchers). Against a realm\n\
        on this machine (`jaring lab`, `jaring chat serve`) the bench makes them through the\n\
        realm's admin socket and removes them, and everything they wrote, when it ends\n\
        (--keep-bench-users keeps them; --no-setup uses the users that exist). Elsewhere they must\n\
        exist (password surabaya, or --password). bench/chat/run_group.sh runs the group workload\n\
        against jaring and ngIRCd side by side; bench/chat/push.sh the push workload.")]
    Chat(BenchChatArgs),
}

/// Options every workload shares.
#[derive(Debug, Clone, Args)]
pub struct LoadArgs {
    /// Server host name or address.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Concurrent connections.
    #[arg(long, short, default_value_t = 50)]
    pub connections: usize,
    /// Seconds of load.
    #[arg(long, short, value_name = "SECS", default_value_t = 10.0)]
    pub duration: f64,
    /// Print the report as JSON on stdout (a stable schema for scripts).
    #[arg(long)]
    pub json: bool,
    /// Print a line on stderr every SECS seconds while running (requests/s, requests, errors);
    /// the samples are also in `--json` (`intervals`).
    #[arg(long, short, value_name = "SECS")]
    pub interval: Option<f64>,
    /// Write the interval samples to FILE as CSV (one row per interval; by default a tenth of
    /// the run, at most a second).
    #[arg(long, value_name = "FILE")]
    pub csv: Option<PathBuf>,
    /// Write the latency histogram to FILE as an HdrHistogram interval log (for HdrHistogram's
    /// own tools, e.g. its online log plotter).
    #[arg(long, value_name = "FILE")]
    pub hdr_out: Option<PathBuf>,
    /// Send N requests a second in all, spread over the connections, each timed from when it
    /// was due (corrected for coordinated omission, as wrk2); without it each connection sends
    /// as fast as its replies come. Not for echo streams, chat --idle or --pipeline; with chat
    /// --group, the group's messages a second (default 250).
    #[arg(long, short = 'R', value_name = "N")]
    pub rate: Option<f64>,
    /// Draw requests/s over the run and the latency distribution into FILE.svg.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
    /// TLS on every connection (the report then counts full and resumed handshakes).
    #[command(flatten)]
    pub tls: TlsClientArgs,
    /// With TLS: never resume a session, so every handshake is a full one (compare with the
    /// default, where the connections share one session cache and resume).
    #[arg(long, help_heading = "TLS")]
    pub no_resume: bool,
}

/// `jaring bench time`
#[derive(Debug, Args)]
pub struct BenchTimeArgs {
    /// Server port.
    #[arg(long, short, default_value_t = jaring_time::DEFAULT_PORT)]
    pub port: u16,
    /// persistent: N connections doing round trips; churn: connect, TIME, QUIT, close per request.
    #[arg(long, value_enum, default_value_t = TimeMode::Persistent)]
    pub mode: TimeMode,
    /// Shared load options.
    #[command(flatten)]
    pub load: LoadArgs,
}

/// TIME load modes.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum TimeMode {
    /// Keep N connections doing TIME round trips.
    Persistent,
    /// Open a connection per request, as the labs' client does.
    Churn,
}

/// `jaring echo …`
#[derive(Debug, Subcommand)]
pub enum EchoCommand {
    /// Serve ECHO: every byte back, zero-copy on Linux, in bounded memory per connection.
    #[command(
        after_help = "Examples:\n  jaring echo serve\n  jaring echo serve --port 32444 --model threads\n  \
        echo hello | nc -q1 127.0.0.1 10000"
    )]
    Serve(EchoServeArgs),
    /// Send a message, lines, or a whole file to an ECHO server and check what comes back.
    #[command(
        after_help = "Examples:\n  jaring echo client hello\n  jaring echo client --chunk 16 -v 'a message longer than sixteen bytes'\n  \
        jaring echo client --file big.iso\n  tar c dir | jaring echo client --file -\n  \
        jaring echo client --interactive\n  jaring echo client --repeat 5 --interval 1 ping\n  \
        jaring echo client --tls --ca tls/ca.pem --file big.iso"
    )]
    Client(EchoClientArgs),
}

/// `jaring echo serve`
#[derive(Debug, Args)]
pub struct EchoServeArgs {
    /// Port to listen on (the labs also use 32444 for file echo).
    #[arg(long, short, default_value_t = jaring_echo::DEFAULT_PORT)]
    pub port: u16,
    /// Most bytes one streaming connection holds (its pipe or buffer); also its memory bound.
    #[arg(long, value_name = "BYTES", default_value_t = jaring_echo::server::DEFAULT_STREAM_BUFFER)]
    pub buffer: usize,
    /// Copy streams through a buffer of the server's instead of moving them with splice(2)
    /// through a kernel pipe (splice is the default on Linux; BENCHMARKS.md compares the two).
    #[arg(long)]
    pub copy: bool,
    /// Splice streams (the default on Linux; kept so older scripts still run).
    #[arg(long, hide = true, conflicts_with = "copy")]
    pub splice: bool,
    /// Listener options, limits and model.
    #[command(flatten)]
    pub server: ServerArgs,
    /// TLS, on a port of its own (echo is binary-safe: a plaintext stream may start with any
    /// byte, so one port cannot take both).
    #[command(flatten)]
    pub tls: TlsServerArgs,
    /// Port of the TLS listener (with --tls-cert).
    #[arg(long, value_name = "PORT", default_value_t = jaring_echo::DEFAULT_TLS_PORT,
          help_heading = "TLS")]
    pub tls_port: u16,
}

/// `jaring echo client`
#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("what").required(true).args(["message", "file", "interactive"]))]
pub struct EchoClientArgs {
    /// Server host name or address.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Server port [default: 10000, or 10443 (echo's TLS port) with TLS].
    #[arg(long, short)]
    pub port: Option<u16>,
    /// The message to send (no newline is added).
    pub message: Option<String>,
    /// Read the echo at most N bytes at a time (the labs read 16).
    #[arg(long, value_name = "N", default_value_t = jaring_echo::client::DEFAULT_CHUNK,
          value_parser = |s: &str| bytes_in(s, jaring_echo::client::MAX_CHUNK))]
    pub chunk: usize,
    /// Show each chunk as it arrives (on stderr).
    #[arg(long, short)]
    pub verbose: bool,
    /// Stream this file (`-` for stdin) and verify the echo byte for byte.
    #[arg(long, value_name = "PATH")]
    pub file: Option<String>,
    /// Send each line typed (or piped) and print its echo, until EOF or `exit`.
    #[arg(long, short)]
    pub interactive: bool,
    /// Send MESSAGE this many times on one connection, printing a timestamp with each echo.
    #[arg(long, value_name = "N", requires = "message")]
    pub repeat: Option<u64>,
    /// Seconds between repeats.
    #[arg(long, value_name = "SECS", default_value_t = 1.0, requires = "repeat")]
    pub interval: f64,
    /// Seconds to wait for the connection, and for the echo to make progress.
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    pub timeout: f64,
    /// TLS to the server (echo serves it on its --tls-port).
    #[command(flatten)]
    pub tls: TlsClientArgs,
}

/// `jaring info`
#[derive(Debug, Args)]
pub struct InfoArgs {
    /// Host name or address to look up.
    #[arg(default_value = jaring_info::DEFAULT_HOST)]
    pub host: String,
    /// Port number or service name to look up.
    #[arg(default_value = jaring_info::DEFAULT_PORT)]
    pub port: String,
    /// Timeout to set on a fresh socket, to show it taking effect.
    #[arg(long, value_name = "SECS", default_value_t = jaring_info::DEFAULT_SET_TIMEOUT.as_secs_f64())]
    pub timeout: f64,
    /// Print JSON on stdout (a stable schema for scripts).
    #[arg(long)]
    pub json: bool,
}

/// `jaring bench echo`
#[derive(Debug, Args)]
pub struct BenchEchoArgs {
    /// Server port.
    #[arg(long, short, default_value_t = jaring_echo::DEFAULT_PORT)]
    pub port: u16,
    /// stream: send continuously, measure bytes/s; round-trip: send SIZE bytes, await the echo, repeat.
    #[arg(long, value_enum, default_value_t = EchoMode::Stream)]
    pub mode: EchoMode,
    /// Bytes per write (stream, default 131072) or per message (round-trip, default 1024).
    #[arg(long, short, value_name = "BYTES",
          value_parser = |s: &str| bytes_in(s, jaring_bench::echo::MAX_SIZE))]
    pub size: Option<usize>,
    /// Shared load options.
    #[command(flatten)]
    pub load: LoadArgs,
}

/// `jaring bench chat`
#[derive(Debug, Args)]
pub struct BenchChatArgs {
    /// Server port.
    #[arg(long, short, default_value_t = jaring_chat::DEFAULT_PORT)]
    pub port: u16,
    /// Hold --connections logged-in connections idle for --duration instead of sending, and
    /// report the server's memory (with --server-pid).
    #[arg(long)]
    pub idle: bool,
    /// Message text length in bytes.
    #[arg(long, short, value_name = "BYTES", default_value_t = jaring_bench::chat::DEFAULT_SIZE,
          value_parser = |s: &str| bytes_in(s, jaring_bench::chat::MAX_SIZE))]
    pub size: usize,
    /// Connections polling `inbox` for the messages [default: one per ten senders].
    #[arg(long, value_name = "N")]
    pub receivers: Option<usize>,
    /// Bench users are PREFIX0, PREFIX1, …: senders first, then receivers.
    #[arg(long, value_name = "PREFIX", default_value = jaring_bench::chat::DEFAULT_USER_PREFIX)]
    pub user_prefix: String,
    /// Every bench user's password [default: a random one when the bench makes its users,
    /// else `surabaya`, what the bench scripts give them].
    #[arg(long)]
    pub password: Option<String>,
    /// Over the web port's WebSocket (--port is then the web port, e.g. the lab's 8080): the same
    /// commands, one message each (send and idle workloads).
    #[arg(long)]
    pub ws: bool,
    /// With --ws: the WebSocket's path (`/ws/realm2` picks a realm of the lab's web port).
    #[arg(long, value_name = "PATH", default_value = "/ws", requires = "ws")]
    pub ws_path: String,
    /// Use the users that exist: never make bench users through the realm's admin socket.
    #[arg(long)]
    pub no_setup: bool,
    /// Keep the bench users the run made, and their messages (`jaring chat user purge-bench`
    /// removes them later).
    #[arg(long)]
    pub keep_bench_users: bool,
    /// The server's process id: report its CPU time per message and its memory (from /proc)
    /// [default: the process listening on --port, when the target is on loopback].
    #[arg(long, value_name = "PID")]
    pub server_pid: Option<u32>,
    /// Group workload: --members live in one group, --senders of them send --rate messages a
    /// second in all; deliveries per second, send→receive latency, lost and duplicated deliveries
    /// (--connections is not used).
    #[arg(long)]
    pub group: bool,
    /// Group workload: members in the group (users PREFIX0 … must exist on a realm).
    #[arg(long, value_name = "N", default_value_t = jaring_bench::chat_group::DEFAULT_MEMBERS)]
    pub members: usize,
    /// Group workload: the first N members also send. Push workload: sending connections (users
    /// PREFIX0 …, the watchers follow them).
    #[arg(long, value_name = "N", default_value_t = jaring_bench::chat_group::DEFAULT_SENDERS)]
    pub senders: usize,
    /// Push workload: --watchers connections each log in and `watch`; --senders connections send
    /// private messages to watchers picked at random, --rate a second in all (default 100);
    /// send→pushed latency, messages lost and duplicated (exit 1 if any), and with the server's
    /// pid its memory with every watcher opted in (--connections is not used).
    #[arg(long, conflicts_with_all = ["group", "idle", "drain", "cross_realm"])]
    pub push: bool,
    /// Push workload: watching connections (users PREFIX{senders} …).
    #[arg(long, value_name = "N", default_value_t = jaring_bench::chat_push::DEFAULT_WATCHERS)]
    pub watchers: usize,
    /// Push workload: send at most N messages in all (the run also ends at --duration).
    #[arg(long, value_name = "N")]
    pub messages: Option<u64>,
    /// Group workload: speak the jaring protocol, or IRC (to drive ngIRCd the same way).
    #[arg(long, value_enum, default_value_t = GroupProtocol::Jaring)]
    pub protocol: GroupProtocol,
    /// Group workload: the group (IRC: channel without '#') [default: a fresh name per run].
    #[arg(long, value_name = "NAME")]
    pub group_name: Option<String>,
    /// Across a federation link: senders on the realm at --port write to receivers on the realm
    /// at --peer-port (as user@--peer-realm); the rate is of messages durable on both realms.
    #[arg(long)]
    pub cross_realm: bool,
    /// The receivers' realm port, with --cross-realm.
    #[arg(long, value_name = "PORT", default_value_t = 8899)]
    pub peer_port: u16,
    /// The receivers' realm name, with --cross-realm.
    #[arg(long, value_name = "REALM", default_value = "realm2")]
    pub peer_realm: String,
    /// Watch the federation outboxes of the realm at --port until they are empty (at most
    /// --duration seconds) and report how fast they drained: start it, then bring the peer back.
    #[arg(long)]
    pub drain: bool,
    /// Only send (no receivers log in): builds a federation backlog while the peer is down.
    #[arg(long)]
    pub senders_only: bool,
    /// Sends each sender keeps in flight: 1 waits for each OK before the next send; more write
    /// the next sends before the replies come (still one OK per message, in order).
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u16).range(1..=jaring_bench::chat::MAX_PIPELINE as i64))]
    pub pipeline: u16,
    /// Shared load options.
    #[command(flatten)]
    pub load: LoadArgs,
}

impl BenchChatArgs {
    /// The bench users' password: `--password`, or the one the bench scripts give them.
    pub fn password(&self) -> &str {
        self.password
            .as_deref()
            .unwrap_or(jaring_bench::chat::DEFAULT_PASSWORD)
    }
}

/// The protocol of `jaring bench chat --group`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum GroupProtocol {
    /// A jaring realm.
    Jaring,
    /// An IRC server (ngIRCd).
    Irc,
}

/// ECHO load modes.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum EchoMode {
    /// Throughput: each connection sends without pause and reads the echo concurrently.
    Stream,
    /// Round trips: send a message, wait for all of it to come back, repeat.
    RoundTrip,
}

/// A byte count from 1 to `max`.
fn bytes_in(s: &str, max: usize) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(format!("expected a number of bytes from 1 to {max}")),
    }
}

/// A duration in seconds from the command line, refused if negative, infinite or absurd.
pub fn seconds(flag: &str, secs: f64) -> Result<std::time::Duration, Failure> {
    std::time::Duration::try_from_secs_f64(secs).map_err(|_| {
        Failure::Usage(anyhow::anyhow!(
            "--{flag} must be a number of seconds, 0 or more (got {secs})"
        ))
    })
}

/// `jaring chat …`
#[derive(Debug, Subcommand)]
pub enum ChatCommand {
    /// Serve a chat realm (without --config: a demo realm with the lab's users).
    #[command(after_help = "Examples:\n  jaring chat serve\n  \
        jaring chat config > realm.toml && jaring chat serve --config realm.toml --port 8889\n  \
        printf 'auth messi surabaya \\r\\n' | nc 127.0.0.1 8889")]
    Serve(ServeArgs),
    /// Print a commented default realm configuration.
    #[command(after_help = "Example:\n  jaring chat config > realm.toml")]
    Config,
    /// Manage users: of a running realm through its admin socket (docs/chat-admin.md), or of a
    /// stopped one in its storage.
    #[command(subcommand)]
    User(UserCommand),
    /// Interactive client: messages pushed as they arrive, reconnects by itself (scriptable when
    /// stdin is piped: exit status 1 if a command failed, 2 on a usage error).
    #[command(
        after_help = "Examples:\n  jaring chat client              # then: auth messi, /query henderson, hi\n  \
        jaring chat client --server realm.example.org --tls\n  \
        printf 'auth messi surabaya\\nsend henderson hello\\n' | jaring chat client --server 127.0.0.1:8889\n  \
        echo 'auth henderson surabaya' | jaring chat client --json --linger 5   # messages pushed within 5 s"
    )]
    Client(ClientArgs),
    /// The realm's link certificate: print the key fingerprint its peers pin.
    #[command(subcommand)]
    Tls(ChatTlsCommand),
}

/// Where the realm's data is: a config file, or a data directory.
#[derive(Debug, Clone, Args)]
pub struct RealmLocation {
    /// Realm configuration file (see `jaring chat config`).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Data directory (overrides the config file's).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

/// `jaring chat serve`
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Config file and data directory.
    #[command(flatten)]
    pub location: RealmLocation,
    /// Port to listen on [default: 8889, or the config's].
    #[arg(long, short)]
    pub port: Option<u16>,
    /// Address to listen on [default: the config's, or 0.0.0.0; without --config (the demo
    /// realm, whose passwords are public) 127.0.0.1].
    #[arg(long)]
    pub bind: Option<IpAddr>,
    /// Listen backlog.
    #[arg(long, default_value_t = DEFAULT_BACKLOG)]
    pub backlog: u32,
    /// How connections run.
    #[arg(long, value_enum, default_value_t = ModelArg::Async)]
    pub model: ModelArg,
    /// Concurrent connections [default: 10000, or the config's].
    #[arg(long)]
    pub max_connections: Option<usize>,
    /// Concurrent connections from one client address (an IPv6 /64) [default: a quarter of
    /// --max-connections, at least 256, or the config's].
    #[arg(long, value_name = "N")]
    pub max_connections_per_address: Option<usize>,
    /// Seconds a silent connection stays open [default: 300, or the config's].
    #[arg(long, value_name = "SECS")]
    pub idle_timeout: Option<u64>,
    /// Seconds a request line may take from its first byte to its end [default: 30, or the
    /// config's].
    #[arg(long, value_name = "SECS")]
    pub line_timeout: Option<u64>,
    /// Longest request line in bytes [default: 65536, or the config's].
    #[arg(long, value_name = "BYTES")]
    pub max_line: Option<usize>,
    /// Seconds to let connections finish at shutdown.
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_GRACE.as_secs_f64())]
    pub grace: f64,
    /// Server-to-server port for peer realms [default: 9889, or the config's]; used only when the
    /// config lists peers.
    #[arg(long, value_name = "PORT")]
    pub federation_port: Option<u16>,
    /// Where the realm keeps its data [default: sqlite, or the config's `[storage] backend`];
    /// `memory` keeps nothing across a restart (demos).
    #[arg(long, value_enum, value_name = "BACKEND")]
    pub storage: Option<StorageArg>,
    /// Serve the chat page and its WebSocket (`/ws`) on this port [default: the config's `[web]
    /// port`, else none]; 0 lets the system choose. Same bind address and TLS as the client port.
    #[arg(long, value_name = "PORT")]
    pub web_port: Option<u16>,
    /// TLS on the client port [default: the config's `[tls]`].
    #[command(flatten)]
    pub tls: SharedTlsArgs,
    /// Set by `jaring lab --hosts`: the realm listens on a network private to this machine, so
    /// its demo users' public passwords need no warning.
    #[arg(skip)]
    pub private_network: bool,
}

/// Storage backends on the command line.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum StorageArg {
    /// SQLite in the data directory (embedded; nothing to install).
    Sqlite,
    /// PostgreSQL at the config's `[storage] url` or `url_file`.
    Postgres,
    /// Memory only: lost when the server stops.
    Memory,
}

impl From<StorageArg> for jaring_chat::config::Backend {
    fn from(arg: StorageArg) -> Self {
        match arg {
            StorageArg::Sqlite => Self::Sqlite,
            StorageArg::Postgres => Self::Postgres,
            StorageArg::Memory => Self::Memory,
        }
    }
}

/// `jaring chat user …`
#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Add a user; the password is asked twice without echo at a terminal, or read from stdin
    /// (one line) when piped.
    #[command(
        after_help = "Example:\n  echo 'medan' | jaring chat user add james --display-name 'James' --config realm.toml"
    )]
    Add {
        /// Login name.
        name: String,
        /// Display name [default: the login name].
        #[arg(long)]
        display_name: Option<String>,
        /// Where the realm's data is.
        #[command(flatten)]
        location: RealmLocation,
    },
    /// Change a user's password (asked as for `add`) and end their sessions.
    #[command(after_help = "Example:\n  echo 'newpass' | jaring chat user passwd messi")]
    Passwd {
        /// Login name.
        name: String,
        /// Where the realm's data is.
        #[command(flatten)]
        location: RealmLocation,
    },
    /// Delete a user and their sessions (their messages stay in others' history).
    #[command(after_help = "Example:\n  jaring chat user del lineker")]
    Del {
        /// Login name.
        name: String,
        /// Where the realm's data is.
        #[command(flatten)]
        location: RealmLocation,
    },
    /// List users.
    #[command(after_help = "Example:\n  jaring chat user list --json")]
    List {
        /// Where the realm's data is.
        #[command(flatten)]
        location: RealmLocation,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Delete every bench user (made by `jaring bench chat`) and everything they wrote: their
    /// private messages, their group messages, and the groups only they were in.
    #[command(
        after_help = "Example:\n  jaring chat user purge-bench --config jaring-lab/realm1.toml"
    )]
    PurgeBench {
        /// Where the realm's data is.
        #[command(flatten)]
        location: RealmLocation,
    },
}

/// `jaring chat client`
#[derive(Debug, Args)]
pub struct ClientArgs {
    /// The realm, as HOST or HOST:PORT (`[::1]:8889` for IPv6 with a port) [default:
    /// 127.0.0.1:8889].
    #[arg(long, value_name = "HOST[:PORT]", conflicts_with = "host")]
    pub server: Option<String>,
    /// The realm's host name or address (as --server HOST).
    #[arg(long)]
    pub host: Option<String>,
    /// The realm's client port [default: 8889, or the port in --server].
    #[arg(long, short)]
    pub port: Option<u16>,
    /// Print every reply and pushed message as one JSON object per line (the client's own
    /// acks and pings excepted).
    #[arg(long)]
    pub json: bool,
    /// Seconds to wait for the connection, and for a reply before the connection counts as
    /// dead (and is made again).
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    pub timeout: f64,
    /// Piped input: after its end, keep showing pushed messages for SECS seconds, then exit.
    #[arg(long, value_name = "SECS", default_value_t = 0.0)]
    pub linger: f64,
    /// TLS to the realm (a realm serves it on its client port with `[tls]` in its config).
    #[command(flatten)]
    pub tls: TlsClientArgs,
}

/// `jaring lab`
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct LabCli {
    /// The lab's hosts (network namespaces), or a command on one of them.
    #[command(subcommand)]
    pub command: Option<LabCommand>,
    /// Run the lab.
    #[command(flatten)]
    pub args: LabArgs,
}

/// `jaring lab net|exec`
#[derive(Debug, Subcommand)]
pub enum LabCommand {
    /// The lab's three hosts without the servers: up, down, status.
    #[command(subcommand)]
    Net(LabNetCommand),
    /// Print the tour's steps (docs/tour.md): every lab experiment as commands to paste.
    Tour {
        /// The whole tour (Markdown): each step's expected output and what the capture shows.
        #[arg(long)]
        full: bool,
    },
    /// Run a command on one of the lab's hosts (mesin-1, mesin-2, mesin-3).
    #[command(
        after_help = "Examples:\n  jaring lab exec mesin-2 -- jaring time client --host mesin-1\n  \
        jaring lab exec mesin-3 -- python3 client.py\n  jaring lab exec mesin-2 -- nc mesin-1 10000"
    )]
    Exec(LabExecArgs),
}

/// `jaring lab net …`
#[derive(Debug, Subcommand)]
pub enum LabNetCommand {
    /// Make the three hosts (172.16.16.101-103 on a private bridge); they stay until `net down`.
    Up {
        /// Record every packet crossing the bridge (and mesin-1's loopback) until `net down`.
        #[arg(long, value_name = "FILE")]
        capture: Option<PathBuf>,
    },
    /// Remove the hosts and everything running on them.
    Down,
    /// Show whether the hosts are up, and who made them.
    Status,
}

/// `jaring lab exec`
#[derive(Debug, Args)]
pub struct LabExecArgs {
    /// The host: mesin-1, mesin-2 or mesin-3.
    pub host: String,
    /// The command and its arguments (after `--`).
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<std::ffi::OsString>,
}

/// `jaring lab` (running it)
#[derive(Debug, Args)]
pub struct LabArgs {
    /// Where everything is kept: realm configs, databases, the federation secret, the TLS CA and
    /// certificates (DIR/tls).
    #[arg(long, default_value = "./jaring-lab")]
    pub dir: PathBuf,
    /// Address every server listens on [default: time and echo on 0.0.0.0, the realms on
    /// 127.0.0.1: their demo users' passwords are public, so a realm on any other address warns].
    #[arg(long, value_name = "ADDR")]
    pub bind: Option<IpAddr>,
    /// Time server port.
    #[arg(long, default_value_t = jaring_time::DEFAULT_PORT)]
    pub time_port: u16,
    /// Echo server port.
    #[arg(long, default_value_t = jaring_echo::DEFAULT_PORT)]
    pub echo_port: u16,
    /// Echo server port for files.
    #[arg(long, default_value_t = jaring_echo::FILE_ECHO_PORT)]
    pub file_echo_port: u16,
    /// Echo over TLS (a port of its own: echo is binary-safe, so its plaintext ports cannot
    /// tell a TLS handshake from data).
    #[arg(long, value_name = "PORT", default_value_t = jaring_echo::DEFAULT_TLS_PORT)]
    pub echo_tls_port: u16,
    /// realm1's client port.
    #[arg(long, default_value_t = 8889)]
    pub realm1_port: u16,
    /// realm2's client port.
    #[arg(long, default_value_t = 8899)]
    pub realm2_port: u16,
    /// realm1's server-to-server port.
    #[arg(long, default_value_t = 9889)]
    pub realm1_federation_port: u16,
    /// realm2's server-to-server port.
    #[arg(long, default_value_t = 9899)]
    pub realm2_federation_port: u16,
    /// Let the system choose every port (for tests and for machines where the lab's are taken).
    #[arg(long)]
    pub ephemeral: bool,
    /// No TLS anywhere. Without it the lab keeps a CA and certificates in DIR/tls (made on
    /// first start), time and the realms take TLS beside plaintext, echo on --echo-tls-port.
    #[arg(long)]
    pub no_tls: bool,
    /// The chat page and its WebSocket, for both realms (`/ws/realm1`, `/ws/realm2`).
    #[arg(long, value_name = "PORT", default_value_t = jaring_web::DEFAULT_PORT)]
    pub web_port: u16,
    /// No web port.
    #[arg(long)]
    pub no_web: bool,
    /// Three hosts on this machine, as in the reports: network namespaces mesin-1, mesin-2,
    /// mesin-3 (172.16.16.101-103) on a private bridge; every server runs on mesin-1; clients
    /// run with `jaring lab exec mesin-2 -- ...`. Needs root. Removed when the lab stops.
    #[arg(long)]
    pub hosts: bool,
    /// With --hosts: record every packet crossing the bridge, and mesin-1's loopback (the
    /// realms' link), into FILE (pcapng with dumpcap; pcap with only tcpdump).
    #[arg(long, value_name = "FILE", requires = "hosts")]
    pub capture: Option<PathBuf>,
    /// How the time and echo servers run connections: iterative makes the second client wait.
    #[arg(long, value_enum, default_value_t = ModelArg::Async)]
    pub model: ModelArg,
    /// Listen backlog of every server (the reports use 1 or 5).
    #[arg(long, default_value_t = DEFAULT_BACKLOG)]
    pub backlog: u32,
    /// IANA time zone the time server answers in (e.g. Asia/Jakarta) [default: this machine's].
    #[arg(long, value_name = "ZONE")]
    pub tz: Option<String>,
    /// Seconds a silent connection stays open [default: time and echo 300, the realms 3600:
    /// students leave clients idle].
    #[arg(long, value_name = "SECS")]
    pub idle_timeout: Option<u64>,
    /// With --hosts: the web port, bound on this machine's loopback before the lab enters
    /// mesin-1, so a browser here reaches the page and the dashboard.
    #[arg(skip)]
    pub web_listener: Option<std::net::TcpListener>,
    /// Log every server's info lines too (by default the lab logs warnings only, so its table
    /// stays readable; RUST_LOG overrides both).
    #[arg(long, short)]
    pub verbose: bool,
}

#[cfg(test)]
mod tests {
    /// Every subcommand's flags are unique and well formed (clap checks this only when a
    /// subcommand is used, so a clash would otherwise surface as a panic at a user's prompt).
    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory as _;
        super::Cli::command().debug_assert();
    }
}

/// `jaring chat tls …`
#[derive(Debug, Subcommand)]
pub enum ChatTlsCommand {
    /// Print the SPKI fingerprint (`sha256:…`) of the realm's certificate: what each peer
    /// writes as `fingerprint` in its `[[peer]]` entry for this realm.
    #[command(
        after_help = "Examples:\n  jaring chat tls fingerprint --config realm1.toml\n  \
        jaring chat tls fingerprint --cert tls/realm1.pem"
    )]
    Fingerprint(FingerprintArgs),
}

/// `jaring chat tls fingerprint`
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct FingerprintArgs {
    /// Realm configuration file: its `[tls]` cert.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// A certificate file (PEM; the first certificate counts).
    #[arg(long, value_name = "FILE")]
    pub cert: Option<PathBuf>,
}
