//! `jaring chat serve|config|user|client`.

use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use jaring_chat::admin::{AdminClient, AdminInfo, AdminListener, AdminSocketError};
use jaring_chat::config::{Backend, DEFAULT_CONFIG, RealmConfig};
use jaring_chat::federation::{Federation, FederationError};
use jaring_chat::password::{PasswordCost, hash_blocking};
use jaring_chat::realm::{DEMO_PASSWORD, DEMO_USERS, RealmOptions};
use jaring_chat::storage::{MemoryStore, Storage, StoreError, UserAdmin, UserRecord};
use jaring_chat::{ChatServer, Realm, SystemClock};
use jaring_chat_postgres::{PostgresOptions, PostgresStore};
use jaring_chat_sqlite::SqliteStore;
use jaring_proto::chat::admin::{AdminRequest, AdminUser, PurgeCounts};
use jaring_runtime::config::{DEFAULT_GRACE, DEFAULT_HANDSHAKE_TIMEOUT};
use jaring_runtime::{CancellationToken, Limits, ListenConfig, Model, Server, ServerConfig};
use jaring_web::lab::{Board, ServiceSource};

use crate::cli::{
    ChatCommand, ChatTlsCommand, ClientArgs, ColorChoice, FingerprintArgs, RealmLocation,
    ServeArgs, UserCommand, seconds,
};
use crate::cmd::{bind_failure, client_tls, load_tls, tls_listen, tls_mode};
use crate::{CmdResult, Failure, signal};

impl RealmLocation {
    fn load(&self) -> Result<RealmConfig, Failure> {
        let mut config = match &self.config {
            Some(path) => RealmConfig::load(path).map_err(|e| Failure::Usage(e.into()))?,
            None => RealmConfig::default(),
        };
        if let Some(dir) = &self.data_dir {
            config.realm.data_dir = Some(dir.clone());
        }
        Ok(config)
    }
}

/// Runs a `jaring chat` subcommand.
pub async fn run(command: ChatCommand, color: ColorChoice) -> CmdResult {
    match command {
        ChatCommand::Serve(args) => serve(args).await,
        ChatCommand::Config => {
            std::io::stdout().write_all(DEFAULT_CONFIG.as_bytes())?;
            Ok(())
        }
        ChatCommand::User(cmd) => user(cmd).await,
        ChatCommand::Client(args) => client(args, color).await,
        ChatCommand::Tls(ChatTlsCommand::Fingerprint(args)) => tls_fingerprint(&args),
    }
}

/// `jaring chat client`: exit status 1 if a command failed, 2 if a line was a usage error.
async fn client(args: ClientArgs, color: ColorChoice) -> CmdResult {
    use jaring_chat::client::{ClientOptions, DEFAULT_PORT, Outcome, parse_server};
    let (host, port) = match (&args.server, &args.host) {
        (Some(server), _) => {
            let (host, port) = parse_server(server).ok_or_else(|| {
                Failure::Usage(anyhow!(
                    "--server {server}: not HOST or HOST:PORT (e.g. 127.0.0.1:8889, [::1]:8889)"
                ))
            })?;
            match (port, args.port) {
                (Some(a), Some(b)) if a != b => {
                    return Err(Failure::Usage(anyhow!(
                        "--server {server} says port {a} and --port says {b}: give one"
                    )));
                }
                (a, b) => (host, a.or(b)),
            }
        }
        (None, Some(host)) => (host.clone(), args.port),
        (None, None) => ("127.0.0.1".to_owned(), args.port),
    };
    let color = match color {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => {
            std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
                && std::io::stdout().is_terminal()
        }
    };
    let opts = ClientOptions {
        host,
        port: port.unwrap_or(DEFAULT_PORT),
        json: args.json,
        color,
        timeout: seconds("timeout", args.timeout)?,
        tls: client_tls(&args.tls)?,
        linger: seconds("linger", args.linger)?,
    };
    match jaring_chat::client::run(opts).await? {
        Outcome::Success => Ok(()),
        Outcome::Failed(n) => Err(Failure::Runtime(anyhow!(
            "{n} command{} failed (see above)",
            if n == 1 { "" } else { "s" }
        ))),
        Outcome::Usage(n) => Err(Failure::Usage(anyhow!(
            "{n} line{} could not be run as typed (see the usage above)",
            if n == 1 { "" } else { "s" }
        ))),
    }
}

/// Where a realm seeded with demo users (the demo realm, the lab's realms) listens unless told:
/// loopback, since their passwords are published.
pub const DEFAULT_DEMO_BIND: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

/// `jaring chat tls fingerprint`: the key fingerprint of the realm's certificate.
fn tls_fingerprint(args: &FingerprintArgs) -> CmdResult {
    let cert = match (&args.cert, &args.config) {
        (Some(cert), _) => cert.clone(),
        (None, Some(path)) => {
            let config = RealmConfig::load(path).map_err(|e| Failure::Usage(e.into()))?;
            match config.tls.files().map_err(|e| Failure::Usage(e.into()))? {
                Some((cert, _)) => cert,
                None => {
                    return Err(Failure::Usage(anyhow!(
                        "{} has no [tls] cert and key: add them (the realm's certificate, PEM) \
                         or pass the certificate with --cert",
                        path.display()
                    )));
                }
            }
        }
        (None, None) => {
            return Err(Failure::Usage(anyhow!(
                "pass --config REALM.toml or --cert CERT.pem"
            )));
        }
    };
    let pin = jaring_tls::fingerprint_of_pem_file(&cert).map_err(|e| Failure::Usage(e.into()))?;
    println!("{pin}");
    Ok(())
}

/// Users to create in an empty realm: name, display name, password.
pub type Seed = &'static [(&'static str, &'static str, &'static str)];

/// A realm started by [`start_realm`].
pub struct StartedRealm {
    /// The realm's name.
    pub name: String,
    /// Where clients connect.
    pub client_addr: std::net::SocketAddr,
    /// Where peers connect, when federation is configured.
    pub federation_addr: Option<std::net::SocketAddr>,
    /// The realm's chat as a web port serves it (the lab serves both realms on one).
    pub web: jaring_web::WebRealm,
    /// The realm's line limit: a web port's WebSocket messages are capped at it.
    pub max_line: usize,
    /// The client port's counters and the realm itself, for a dashboard.
    pub board: (
        Arc<jaring_runtime::Stats>,
        Arc<dyn jaring_web::lab::RealmSource>,
    ),
    /// Ends when the realm has stopped (after `shutdown`).
    pub task: tokio::task::JoinHandle<()>,
}

/// Opens a realm's storage (seeding `seed` users into an empty one), binds its client port and its
/// federation port, and serves until `shutdown`. Shared by `jaring chat serve` and `jaring lab`.
pub async fn start_realm(
    config: &RealmConfig,
    args: &ServeArgs,
    seed: Option<Seed>,
    shutdown: CancellationToken,
) -> Result<StartedRealm, Failure> {
    let options = config.options().map_err(|e| Failure::Usage(e.into()))?;
    seconds("grace", args.grace)?;
    // The storage errors say what failed and what to do; this says which realm (the lab runs two).
    let context = format!("cannot start realm {}", options.name);
    match config.backend() {
        Backend::Sqlite => {
            let store = open_sqlite(config).await.context(context)?;
            run_realm(store, options, config, args, seed, shutdown).await
        }
        Backend::Postgres => {
            let url = postgres_url(config)?;
            let store = open_postgres(config, &url).await.context(context)?;
            run_realm(store, options, config, args, seed, shutdown).await
        }
        Backend::Memory => {
            run_realm(MemoryStore::new(), options, config, args, seed, shutdown).await
        }
    }
}

/// Opens the SQLite store in the configured data directory (off the async workers: it checks the
/// file).
async fn open_sqlite(config: &RealmConfig) -> anyhow::Result<SqliteStore> {
    let dir = config.data_dir();
    let (sync, max_batch) = config.storage();
    let store = tokio::task::spawn_blocking(move || SqliteStore::open(&dir, sync, max_batch))
        .await
        .map_err(|e| anyhow!("storage start-up failed: {e}"))??;
    Ok(store)
}

/// The configured PostgreSQL URL; its absence is a usage error.
fn postgres_url(config: &RealmConfig) -> Result<String, Failure> {
    config.postgres_url().map_err(|e| Failure::Usage(e.into()))
}

/// Connects to the configured PostgreSQL database (its schema brought up to date, its lock taken).
async fn open_postgres(config: &RealmConfig, url: &str) -> anyhow::Result<PostgresStore> {
    let options = PostgresOptions {
        max_batch: config.storage().1,
        ..PostgresOptions::default()
    };
    Ok(PostgresStore::open_with(url, options).await?)
}

/// The backend's name as the admin socket's `hello` says it.
fn backend_name(config: &RealmConfig) -> &'static str {
    match config.backend() {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
        Backend::Memory => "memory",
    }
}

/// Where a realm's data is, for its log line.
fn storage_label(config: &RealmConfig) -> String {
    match config.backend() {
        Backend::Sqlite => config.data_dir().display().to_string(),
        Backend::Postgres => "postgresql".to_owned(),
        Backend::Memory => "memory (nothing survives a restart)".to_owned(),
    }
}

/// Seeds `seed` users into an empty realm, opens the realm on `store`, binds its ports and serves
/// until `shutdown`.
async fn run_realm<S: Storage>(
    store: S,
    options: RealmOptions,
    config: &RealmConfig,
    args: &ServeArgs,
    seed: Option<Seed>,
    shutdown: CancellationToken,
) -> Result<StartedRealm, Failure> {
    if let Some(users) = seed
        && store.list_users().await.map_err(store_failure)?.is_empty()
    {
        for (name, display, password) in users {
            let cost = options.password_cost;
            let password_hash = tokio::task::spawn_blocking(move || hash_blocking(password, cost))
                .await
                .map_err(|e| anyhow!("password hashing failed: {e}"))??;
            store
                .add_user(UserRecord {
                    bench: false,
                    name: (*name).into(),
                    display_name: (*display).into(),
                    password_hash,
                })
                .await
                .map_err(store_failure)?;
        }
    }
    let fed_store = store.clone();
    let realm = Arc::new(
        Realm::open(options, store, Arc::new(SystemClock::default()))
            .await
            .context("cannot open the realm")?,
    );
    let max_line = args
        .max_line
        .or(config.limits.max_line)
        .unwrap_or(jaring_proto::chat::DEFAULT_MAX_LINE);
    let defaults = Limits::default();
    // A realm seeded with the published demo users stays on loopback unless asked otherwise.
    let bind = args
        .bind
        .or(config.listen.bind)
        .unwrap_or(if seed.is_some() {
            DEFAULT_DEMO_BIND
        } else {
            jaring_runtime::config::DEFAULT_BIND
        });
    let server_config = ServerConfig {
        listen: ListenConfig {
            bind,
            port: args
                .port
                .or(config.listen.port)
                .unwrap_or(jaring_chat::DEFAULT_PORT),
            backlog: args.backlog,
        },
        model: args.model.into(),
        limits: Limits {
            max_connections: args
                .max_connections
                .or(config.limits.max_connections)
                .unwrap_or(defaults.max_connections),
            idle_timeout: args
                .idle_timeout
                .or(config.limits.idle_timeout_secs)
                .map_or(defaults.idle_timeout, Duration::from_secs),
            max_line,
            max_per_address: args
                .max_connections_per_address
                .or(config.limits.max_connections_per_address),
            line_timeout: args
                .line_timeout
                .or(config.limits.line_timeout_secs)
                .map_or(defaults.line_timeout, Duration::from_secs),
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
        },
        grace: Duration::try_from_secs_f64(args.grace).unwrap_or(DEFAULT_GRACE),
        tls: None,
    };
    let mut server_config = server_config;
    let only = args.tls.tls_only || config.tls.only.unwrap_or(false);
    server_config.tls = match tls_listen(&args.tls.tls, tls_mode(only))? {
        Some(tls) => Some(tls),
        None => match config.tls.files().map_err(|e| Failure::Usage(e.into()))? {
            Some((cert, key)) => Some(load_tls(&cert, &key, tls_mode(only))?),
            None => None,
        },
    };
    server_config.limits.handshake_timeout = args
        .tls
        .tls
        .handshake_timeout(config.tls.handshake_timeout_secs.map(|s| s.max(1)));
    let tls_mode_in_force = server_config.tls.as_ref().map(|t| t.mode);
    // The web port: the client port's address, limits and TLS, on its own port; always the
    // async model (a WebSocket waits on the peer and on pushed events at once).
    let web_config = args.web_port.or(config.web.port).map(|port| {
        let mut c = server_config.clone();
        c.listen.port = port;
        c.model = Model::Async;
        c
    });
    let server = Server::bind(server_config).await.map_err(bind_failure)?;
    let client_addr = server.local_addr();
    if seed.is_some() && !bind.is_loopback() && !args.private_network {
        tracing::warn!(
            realm = realm.name(),
            addr = %client_addr,
            "this realm's demo users have public passwords and it listens beyond loopback: \
             anyone who can reach port {} can log in as them (bind 127.0.0.1, the default, \
             to keep it to this machine)",
            client_addr.port()
        );
    }
    let mut federation_addr = None;
    if let Some(mut fed) = config
        .federation(bind)
        .map_err(|e| Failure::Usage(e.into()))?
    {
        if let Some(port) = args.federation_port {
            fed.listen.set_port(port);
        }
        let fed = Federation::start(&realm, fed_store, fed, shutdown.clone())
            .await
            .map_err(|e| match e {
                FederationError::Config(_) => Failure::Usage(e.into()),
                FederationError::Bind(..) | FederationError::Store(_) => Failure::Runtime(e.into()),
            })?;
        federation_addr = Some(fed.local_addr());
    }
    tracing::info!(
        realm = realm.name(),
        users = realm.user_count(),
        storage = %storage_label(config),
        federation = %federation_addr.map_or_else(|| "off".to_owned(), |a| a.to_string()),
        tls = match tls_mode_in_force {
            None => "off",
            Some(jaring_runtime::TlsMode::Both) => "tls and plaintext on the client port",
            Some(jaring_runtime::TlsMode::Only) => "tls only",
        },
        "chat realm ready: try `jaring chat client --server 127.0.0.1:{}`{}",
        client_addr.port(),
        if tls_mode_in_force.is_some() { " --tls --ca CA.pem" } else { "" }
    );
    let admin = if config.admin_enabled() {
        match AdminListener::bind(config.admin_socket().as_deref()).await {
            Ok(listener) => {
                tracing::info!(
                    realm = realm.name(),
                    path = %listener.path().display(),
                    "admin socket ready: `jaring chat user …` and `jaring bench chat` manage users here"
                );
                let info = AdminInfo {
                    client_port: client_addr.port(),
                    federation_port: federation_addr.map(|a| a.port()),
                    backend: backend_name(config).to_owned(),
                };
                Some(tokio::spawn(listener.serve(
                    Arc::clone(&realm),
                    info,
                    shutdown.clone(),
                )))
            }
            // The realm serves without it: users are then managed with the realm stopped.
            Err(e) => {
                tracing::warn!(realm = realm.name(), error = %e, "no admin socket");
                None
            }
        }
    } else {
        None
    };
    let name = realm.name().to_owned();
    let board = (
        server.stats(),
        Arc::clone(&realm) as Arc<dyn jaring_web::lab::RealmSource>,
    );
    let handler = Arc::new(ChatServer::new(realm, max_line));
    let web = jaring_web::WebRealm {
        name: name.clone(),
        endpoint: Arc::clone(&handler) as Arc<dyn jaring_web::ChatEndpoint>,
    };
    let web_task = match web_config {
        Some(c) => {
            let mut lab = Board::new();
            lab.service(ServiceSource {
                name: format!("chat {name}"),
                addr: client_addr.to_string(),
                stats: Arc::clone(&board.0),
                bytes: None,
            });
            lab.realm(Arc::clone(&board.1));
            let (_, task) = serve_web(
                c,
                vec![web.clone()],
                config.web.allowed_origins.clone(),
                max_line,
                lab,
                None,
                shutdown.clone(),
            )
            .await?;
            Some(task)
        }
        None => None,
    };
    let task = tokio::spawn(async move {
        let sweeper = {
            let handler = Arc::clone(&handler);
            let shutdown = shutdown.clone();
            tokio::spawn(async move { handler.sweep_tokens(shutdown).await })
        };
        server.serve(Arc::clone(&handler), shutdown).await;
        let _ = sweeper.await;
        if let Some(web) = web_task {
            let _ = web.await;
        }
        if let Some(admin) = admin {
            let _ = admin.await;
        }
    });
    Ok(StartedRealm {
        name,
        client_addr,
        federation_addr,
        web,
        max_line,
        board,
        task,
    })
}

/// Binds a web port serving `realms` (the first is `/ws`'s) with `config`'s address, limits and
/// TLS (or on `bound`, a listener bound earlier), logs where, and serves it until `shutdown`: its
/// address (with the real port) and the task that ends when it has stopped.
pub async fn serve_web(
    config: ServerConfig,
    realms: Vec<jaring_web::WebRealm>,
    allowed_origins: Vec<String>,
    max_line: usize,
    mut board: Board,
    bound: Option<std::net::TcpListener>,
    shutdown: CancellationToken,
) -> Result<(std::net::SocketAddr, tokio::task::JoinHandle<()>), Failure> {
    let tls_only = config
        .tls
        .as_ref()
        .is_some_and(|t| t.mode == jaring_runtime::TlsMode::Only);
    let server = match bound {
        Some(listener) => Server::from_std(listener, config),
        None => Server::bind(config).await,
    }
    .map_err(bind_failure)?;
    let addr = server.local_addr();
    let names: Vec<String> = realms.iter().map(|r| r.name.clone()).collect();
    board.service(ServiceSource {
        name: "web".into(),
        addr: addr.to_string(),
        stats: server.stats(),
        bytes: None,
    });
    let mut options = jaring_web::WebOptions::new(realms, max_line);
    options.allowed_origins = allowed_origins;
    options.board = board;
    let web = Arc::new(jaring_web::WebServer::new(options));
    let scheme = if tls_only { "https" } else { "http" };
    let shown = if addr.ip().is_unspecified() {
        std::net::SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), addr.port())
    } else {
        addr
    };
    tracing::info!(
        realm = %names.join(","),
        port = addr.port(),
        "web ready: {scheme}://{shown}/"
    );
    let task = tokio::spawn(async move { server.serve(web, shutdown).await });
    Ok((addr, task))
}

async fn serve(args: ServeArgs) -> CmdResult {
    let demo = args.location.config.is_none();
    let mut config = args.location.load()?;
    if let Some(storage) = args.storage {
        config.storage.backend = Some(storage.into());
    }
    // The flags' certificate is the realm's certificate: its links present it too.
    if let (Some(cert), Some(key)) = (&args.tls.tls.tls_cert, &args.tls.tls.tls_key) {
        config.tls.cert = Some(cert.clone());
        config.tls.key = Some(key.clone());
    }
    if demo {
        tracing::info!(
            data_dir = %config.data_dir().display(),
            "demo realm {}: users {} (password {DEMO_PASSWORD}); pass --config FILE for a real one",
            config.realm.name.as_deref().unwrap_or(jaring_chat::config::DEFAULT_REALM),
            DEMO_USERS.map(|(n, _)| n).join(", "),
        );
    }
    let shutdown = CancellationToken::new();
    signal::spawn(shutdown.clone());
    let started = start_realm(&config, &args, demo.then_some(DEMO_SEED), shutdown).await?;
    let _ = started.task.await;
    Ok(())
}

/// The demo realm's users: the lab's, all with the lab's password.
const DEMO_SEED: Seed = &[
    ("messi", "Lionel Messi", DEMO_PASSWORD),
    ("henderson", "Jordan Henderson", DEMO_PASSWORD),
    ("lineker", "Gary Lineker", DEMO_PASSWORD),
];

/// Reads a new password: at a terminal twice, without echo (the two must match); from a pipe,
/// one line.
fn read_password(name: &str) -> Result<String, Failure> {
    let password = if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password(format!("password for {name}: "))?;
        let again = rpassword::prompt_password(format!("password for {name} again: "))?;
        if first != again {
            return Err(Failure::Usage(anyhow!(
                "the two passwords differ; nothing was changed, run the command again"
            )));
        }
        first
    } else {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        line.trim_end_matches(['\r', '\n']).to_owned()
    };
    if password.is_empty() || password.contains(' ') {
        return Err(Failure::Usage(anyhow!(
            "the password must be one word without spaces (the protocol separates parameters by spaces)"
        )));
    }
    Ok(password)
}

fn cost(config: &RealmConfig) -> Result<PasswordCost, Failure> {
    Ok(config
        .options()
        .map_err(|e| Failure::Usage(e.into()))?
        .password_cost)
}

/// A store error as the CLI shows it: with what to do where the error is the user's to fix.
fn store_failure(e: StoreError) -> Failure {
    match &e {
        StoreError::UserExists(_) => {
            Failure::Usage(anyhow::Error::new(e).context(
                "use `jaring chat user passwd` to change the password of an existing user",
            ))
        }
        StoreError::NoSuchUser(_) => Failure::Usage(
            anyhow::Error::new(e).context("`jaring chat user list` shows who exists"),
        ),
        _ => Failure::Runtime(e.into()),
    }
}

async fn user(cmd: UserCommand) -> CmdResult {
    let location = match &cmd {
        UserCommand::Add { location, .. }
        | UserCommand::Passwd { location, .. }
        | UserCommand::Del { location, .. }
        | UserCommand::List { location, .. }
        | UserCommand::PurgeBench { location } => location.clone(),
    };
    let config = location.load()?;
    // A running realm is changed through its admin socket, so it sees the change at once.
    if let Some(path) = config.admin_socket() {
        match AdminClient::connect(&path).await {
            Ok(client) => return user_online(client, cmd).await,
            Err(AdminSocketError::Connect { source, .. })
                if source.kind() == std::io::ErrorKind::PermissionDenied =>
            {
                return Err(Failure::Usage(anyhow!(
                    "the realm using {} runs as another user, and only that user (or root) may                      manage its users: run this as that user",
                    path.display()
                )));
            }
            // Not running (or an older realm without the socket): change the storage directly.
            Err(_) => {}
        }
    }
    // Opening the store locks it (SQLite: the data directory; PostgreSQL: the database), so no
    // server starts under the command and none runs during it.
    match config.backend() {
        Backend::Sqlite => {
            let store = open_sqlite(&config).await?;
            let result = user_on(&store, &config, cmd).await;
            store.close().await;
            result
        }
        Backend::Postgres => {
            let store = open_postgres(&config, &postgres_url(&config)?).await?;
            let result = user_on(&store, &config, cmd).await;
            store.close().await;
            result
        }
        Backend::Memory => Err(Failure::Usage(anyhow!(
            "this realm's storage is memory: its users are the demo users, made anew at every start; \
             set [storage] backend to sqlite or postgres to manage users"
        ))),
    }
}

async fn user_on<S: UserAdmin>(store: &S, config: &RealmConfig, cmd: UserCommand) -> CmdResult {
    let place = storage_label(config);
    match cmd {
        UserCommand::Add {
            name, display_name, ..
        } => {
            if !jaring_proto::chat::address::is_valid_name(&name) {
                return Err(Failure::Usage(anyhow!(
                    "invalid user name {name:?}: use 1 to 32 letters, digits, '_', '-' or '.'"
                )));
            }
            let hash = new_hash(&name, cost(config)?).await?;
            store
                .add_user(UserRecord {
                    display_name: display_name.unwrap_or_else(|| name.clone()),
                    name: name.clone(),
                    password_hash: hash,
                    bench: false,
                })
                .await
                .map_err(store_failure)?;
            eprintln!("added {name} to {place}");
        }
        UserCommand::Passwd { name, .. } => {
            let hash = new_hash(&name, cost(config)?).await?;
            store
                .set_password(&name, &hash)
                .await
                .map_err(store_failure)?;
            eprintln!("changed the password of {name}; their sessions ended");
        }
        UserCommand::Del { name, .. } => {
            store.delete_user(&name).await.map_err(store_failure)?;
            eprintln!("deleted {name}");
        }
        UserCommand::List { json, .. } => {
            let users = store.list_users().await.map_err(store_failure)?;
            let users: Vec<_> = users
                .into_iter()
                .map(|u| AdminUser {
                    name: u.name,
                    display_name: u.display_name,
                    bench: u.bench,
                    online: false,
                })
                .collect();
            print_users(&users, json, false)?;
        }
        UserCommand::PurgeBench { .. } => {
            let purged = store.purge_bench_users().await.map_err(store_failure)?;
            print_purged(&PurgeCounts {
                users: purged.users.len() as u64,
                private_messages: purged.private_messages,
                group_messages: purged.group_messages,
                groups: purged.groups,
            });
        }
    }
    Ok(())
}

/// `jaring chat user …` on a running realm, through its admin socket.
async fn user_online(mut client: AdminClient, cmd: UserCommand) -> CmdResult {
    let call = |e: AdminSocketError| Failure::Runtime(e.into());
    let place = client.path().display().to_string();
    match cmd {
        UserCommand::Add {
            name, display_name, ..
        } => {
            let password = ask_password(&name).await?;
            client
                .call(&AdminRequest::AddUser {
                    name: name.clone(),
                    display_name,
                    password,
                })
                .await
                .map_err(call)?;
            eprintln!("added {name} to the running realm (through {place})");
        }
        UserCommand::Passwd { name, .. } => {
            let password = ask_password(&name).await?;
            client
                .call(&AdminRequest::SetPassword {
                    name: name.clone(),
                    password,
                })
                .await
                .map_err(call)?;
            eprintln!("changed the password of {name}; their sessions ended");
        }
        UserCommand::Del { name, .. } => {
            client
                .call(&AdminRequest::DeleteUser { name: name.clone() })
                .await
                .map_err(call)?;
            eprintln!("deleted {name}; their sessions ended");
        }
        UserCommand::List { json, .. } => {
            let reply = client
                .call(&AdminRequest::ListUsers {})
                .await
                .map_err(call)?;
            print_users(&reply.users.unwrap_or_default(), json, true)?;
        }
        UserCommand::PurgeBench { .. } => {
            let reply = client
                .call(&AdminRequest::PurgeBench {})
                .await
                .map_err(call)?;
            print_purged(&reply.purged.unwrap_or_default());
        }
    }
    Ok(())
}

/// The user list: a table, or JSON (with `online` when the realm is running).
fn print_users(users: &[AdminUser], json: bool, running: bool) -> CmdResult {
    let mut out = std::io::stdout().lock();
    if json {
        let list: Vec<_> = users
            .iter()
            .map(|u| {
                let mut v = serde_json::json!({
                    "name": u.name,
                    "display_name": u.display_name,
                    "bench": u.bench,
                });
                if running {
                    v["online"] = serde_json::Value::Bool(u.online);
                }
                v
            })
            .collect();
        writeln!(out, "{}", serde_json::Value::Array(list))?;
    } else {
        for u in users {
            let mut notes = Vec::new();
            if u.bench {
                notes.push("bench user");
            }
            if u.online {
                notes.push("online");
            }
            let notes = if notes.is_empty() {
                String::new()
            } else {
                format!("  ({})", notes.join(", "))
            };
            writeln!(out, "{:<32} {}{notes}", u.name, u.display_name)?;
        }
    }
    Ok(())
}

fn print_purged(p: &PurgeCounts) {
    eprintln!(
        "removed {} bench users, {} private and {} group messages, and {} groups only they were in",
        p.users,
        p.private_messages,
        p.group_messages,
        p.groups.len()
    );
}

/// Reads `name`'s new password (off the async workers: it waits on the terminal).
async fn ask_password(name: &str) -> Result<String, Failure> {
    let name = name.to_owned();
    tokio::task::spawn_blocking(move || read_password(&name))
        .await
        .map_err(|e| anyhow!("password entry failed: {e}"))?
}

/// Reads `name`'s new password (off the async workers: it waits on the terminal) and hashes it.
async fn new_hash(name: &str, cost: PasswordCost) -> Result<String, Failure> {
    let name = name.to_owned();
    tokio::task::spawn_blocking(move || -> Result<String, Failure> {
        let password = read_password(&name)?;
        Ok(hash_blocking(&password, cost)?)
    })
    .await
    .map_err(|e| anyhow!("password entry failed: {e}"))?
}
