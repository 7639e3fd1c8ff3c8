//! `jaring chat serve|config|user|client`.

use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use jaring_chat::config::{DEFAULT_CONFIG, RealmConfig};
use jaring_chat::federation::{Federation, FederationError};
use jaring_chat::password::{PasswordCost, hash_blocking};
use jaring_chat::realm::{DEMO_PASSWORD, DEMO_USERS};
use jaring_chat::store::UserRecord;
use jaring_chat::{ChatServer, Realm, SqliteStore, SystemClock, sqlite};
use jaring_runtime::config::DEFAULT_GRACE;
use jaring_runtime::{CancellationToken, Limits, ListenConfig, Model, Server, ServerConfig};

use crate::cli::{ChatCommand, ModelArg, RealmLocation, ServeArgs, UserCommand, seconds};
use crate::cmd::bind_failure;
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
pub async fn run(command: ChatCommand) -> CmdResult {
    match command {
        ChatCommand::Serve(args) => serve(args).await,
        ChatCommand::Config => {
            std::io::stdout().write_all(DEFAULT_CONFIG.as_bytes())?;
            Ok(())
        }
        ChatCommand::User(cmd) => tokio::task::spawn_blocking(move || user(cmd))
            .await
            .map_err(|e| anyhow!("user command failed: {e}"))?,
        ChatCommand::Client(args) => {
            let opts = jaring_chat::client::ClientOptions {
                server: args.server,
                json: args.json,
                timeout: seconds("timeout", args.timeout)?,
            };
            tokio::task::spawn_blocking(move || {
                jaring_chat::client::run(&opts, &mut std::io::stdout().lock())
            })
            .await
            .map_err(|e| anyhow!("client failed: {e}"))??;
            Ok(())
        }
    }
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
    let dir = config.data_dir();
    seconds("grace", args.grace)?;
    let (sync, max_batch) = config.storage();
    let store = {
        let dir = dir.clone();
        let cost = options.password_cost;
        // The storage errors name the file and what to do; this says which realm (the lab runs two).
        let realm = options.name.clone();
        tokio::task::spawn_blocking(move || -> anyhow::Result<SqliteStore> {
            let store = SqliteStore::open(&dir, sync, max_batch)
                .with_context(|| format!("cannot start realm {realm}"))?;
            if let Some(users) = seed {
                let conn = sqlite::open(&dir, sync)
                    .with_context(|| format!("cannot start realm {realm}"))?;
                if sqlite::list_users(&conn)?.is_empty() {
                    for (name, display, password) in users {
                        sqlite::add_user(
                            &conn,
                            &UserRecord {
                                name: (*name).into(),
                                display_name: (*display).into(),
                                password_hash: hash_blocking(password, cost)?,
                            },
                        )?;
                    }
                }
            }
            Ok(store)
        })
        .await
        .map_err(|e| anyhow!("storage start-up failed: {e}"))??
    };
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
    let bind = args
        .bind
        .or(config.listen.bind)
        .unwrap_or(jaring_runtime::config::DEFAULT_BIND);
    let server_config = ServerConfig {
        listen: ListenConfig {
            bind,
            port: args
                .port
                .or(config.listen.port)
                .unwrap_or(jaring_chat::DEFAULT_PORT),
            backlog: args.backlog,
        },
        model: match args.model {
            ModelArg::Async => Model::Async,
            ModelArg::Threads => Model::Threads,
            ModelArg::Iterative => Model::Iterative,
        },
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
        },
        grace: Duration::try_from_secs_f64(args.grace).unwrap_or(DEFAULT_GRACE),
    };
    let server = Server::bind(server_config).await.map_err(bind_failure)?;
    let client_addr = server.local_addr();
    let mut federation_addr = None;
    if let Some(mut fed) = config
        .federation(bind)
        .map_err(|e| Failure::Usage(e.into()))?
    {
        if let Some(port) = args.federation_port {
            fed.listen.set_port(port);
        }
        let fed = Federation::start(&realm, fed, shutdown.clone())
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
        data_dir = %dir.display(),
        federation = %federation_addr.map_or_else(|| "off".to_owned(), |a| a.to_string()),
        "chat realm ready: try `jaring chat client --server 127.0.0.1:{}`",
        client_addr.port()
    );
    let name = realm.name().to_owned();
    let handler = Arc::new(ChatServer::new(realm, max_line));
    let task = tokio::spawn(async move {
        let sweeper = {
            let handler = Arc::clone(&handler);
            let shutdown = shutdown.clone();
            tokio::spawn(async move { handler.sweep_tokens(shutdown).await })
        };
        server.serve(Arc::clone(&handler), shutdown).await;
        let _ = sweeper.await;
    });
    Ok(StartedRealm {
        name,
        client_addr,
        federation_addr,
        task,
    })
}

async fn serve(args: ServeArgs) -> CmdResult {
    let demo = args.location.config.is_none();
    let config = args.location.load()?;
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

fn user(cmd: UserCommand) -> CmdResult {
    let location = match &cmd {
        UserCommand::Add { location, .. }
        | UserCommand::Passwd { location, .. }
        | UserCommand::Del { location, .. }
        | UserCommand::List { location, .. } => location.clone(),
    };
    let config = location.load()?;
    let dir = config.data_dir();
    // Holding the lock for the whole command keeps a server from starting under us.
    let _lock = sqlite::lock_dir(&dir)?;
    let mut conn = sqlite::open(&dir, config.storage().0)?;
    match cmd {
        UserCommand::Add {
            name, display_name, ..
        } => {
            if !jaring_proto::chat::address::is_valid_name(&name) {
                return Err(Failure::Usage(anyhow!(
                    "invalid user name {name:?}: use 1 to 32 letters, digits, '_', '-' or '.'"
                )));
            }
            let password = read_password(&name)?;
            let hash = hash_blocking(&password, cost(&config)?)?;
            sqlite::add_user(
                &conn,
                &UserRecord {
                    display_name: display_name.unwrap_or_else(|| name.clone()),
                    name: name.clone(),
                    password_hash: hash,
                },
            )?;
            eprintln!("added {name} to {}", dir.display());
        }
        UserCommand::Passwd { name, .. } => {
            let password = read_password(&name)?;
            let hash = hash_blocking(&password, cost(&config)?)?;
            sqlite::set_password(&mut conn, &name, &hash)?;
            eprintln!("changed the password of {name}; their sessions ended");
        }
        UserCommand::Del { name, .. } => {
            sqlite::delete_user(&mut conn, &name)?;
            eprintln!("deleted {name}");
        }
        UserCommand::List { json, .. } => {
            let users = sqlite::list_users(&conn)?;
            let mut out = std::io::stdout().lock();
            if json {
                let list: Vec<_> = users
                    .iter()
                    .map(|u| serde_json::json!({"name": u.name, "display_name": u.display_name}))
                    .collect();
                writeln!(out, "{}", serde_json::Value::Array(list))?;
            } else {
                for u in users {
                    writeln!(out, "{:<32} {}", u.name, u.display_name)?;
                }
            }
        }
    }
    Ok(())
}
