//! `jaring lab`: the classic lab in one process. The time server, the echo server on both of the
//! lab's ports, and two chat realms linked by federation, with the lab's users, all data under one
//! directory. Ctrl-C stops everything gracefully.

use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context as _, anyhow};
use jaring_chat::config::RealmConfig;
use jaring_echo::{EchoConfig, EchoServer};
use jaring_runtime::{CancellationToken, Server, ServerConfig};
use jaring_time::TimeService;
use jiff::tz::TimeZone;

use crate::cli::{LabArgs, ModelArg, RealmLocation, ServeArgs};
use crate::cmd::bind_failure;
use crate::cmd::chat::{Seed, start_realm};
use crate::{CmdResult, Failure, signal};

/// The file, under `--dir`, holding the secret the two realms share (created on first start).
pub const SECRET_FILE: &str = "federation.secret";

/// realm1's users, as in the labs.
const REALM1_USERS: Seed = &[
    ("messi", "Lionel Messi", "surabaya"),
    ("henderson", "Jordan Henderson", "surabaya"),
    ("lineker", "Gary Lineker", "surabaya"),
];

/// realm2's users, as in the labs.
const REALM2_USERS: Seed = &[
    ("james", "James", "medan"),
    ("jantuar", "Jantuar", "moskow"),
    ("taeno", "Taeno", "tokyo"),
];

/// Reads the shared secret, creating a random one on first start.
fn secret(dir: &Path) -> anyhow::Result<()> {
    let path = dir.join(SECRET_FILE);
    if path.exists() {
        return Ok(());
    }
    let mut bytes = [0u8; 32];
    rand::Rng::fill_bytes(&mut rand::rng(), &mut bytes);
    let hex = jaring_proto::federation::auth::hex(&bytes);
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts
        .open(&path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    writeln!(f, "{hex}")?;
    Ok(())
}

/// Writes the realm's config file (so it can also run alone) and loads it back.
fn realm_config(
    dir: &Path,
    name: &str,
    bind: IpAddr,
    port: u16,
    federation_port: u16,
    peer: &str,
    peer_address: SocketAddr,
) -> Result<RealmConfig, Failure> {
    let text = format!(
        "# Written by `jaring lab`; run this realm alone with:\n\
         #   jaring chat serve --config {file}\n\
         [realm]\nname = \"{name}\"\ndata_dir = \"{name}\"\n\n\
         [listen]\nbind = \"{bind}\"\nport = {port}\n\n\
         [federation]\nport = {federation_port}\n\n\
         [[peer]]\nname = \"{peer}\"\naddress = \"{peer_address}\"\nsecret_file = \"{SECRET_FILE}\"\n",
        file = dir.join(format!("{name}.toml")).display(),
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    RealmConfig::load(&path).map_err(|e| Failure::Usage(e.into()))
}

fn serve_args(port: u16, federation_port: u16, bind: IpAddr) -> ServeArgs {
    ServeArgs {
        location: RealmLocation {
            config: None,
            data_dir: None,
        },
        port: Some(port),
        bind: Some(bind),
        backlog: jaring_runtime::config::DEFAULT_BACKLOG,
        model: ModelArg::Async,
        max_connections: None,
        max_connections_per_address: None,
        idle_timeout: None,
        line_timeout: None,
        max_line: None,
        grace: jaring_runtime::config::DEFAULT_GRACE.as_secs_f64(),
        federation_port: Some(federation_port),
        storage: None,
        tls: crate::cli::SharedTlsArgs::default(),
    }
}

fn loopback(bind: IpAddr, port: u16) -> SocketAddr {
    let ip = if bind.is_unspecified() {
        IpAddr::from([127, 0, 0, 1])
    } else {
        bind
    };
    SocketAddr::new(ip, port)
}

/// Runs `jaring lab`.
pub async fn run(args: LabArgs) -> CmdResult {
    let z = |p: u16| if args.ephemeral { 0 } else { p };
    let dir = args.dir.clone();
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    secret(&dir)?;
    let shutdown = CancellationToken::new();
    signal::spawn(shutdown.clone());
    let mut tasks = Vec::new();
    let mut table: Vec<(String, SocketAddr, String)> = Vec::new();

    let bind_server = |port: u16| {
        let mut c = ServerConfig::on_port(port);
        c.listen.bind = args.bind;
        c
    };
    let time = Server::bind(bind_server(z(args.time_port)))
        .await
        .map_err(bind_failure)?;
    let time_addr = loopback(args.bind, time.local_addr().port());
    table.push((
        "time".into(),
        time_addr,
        format!("jaring time client --port {}", time_addr.port()),
    ));
    let service = Arc::new(TimeService::new(
        TimeZone::system(),
        jaring_runtime::Limits::default().max_line,
    ));
    let token = shutdown.clone();
    tasks.push(tokio::spawn(
        async move { time.serve(service, token).await },
    ));

    for (label, port) in [
        ("echo", args.echo_port),
        ("echo (files)", args.file_echo_port),
    ] {
        let echo = Server::bind(bind_server(z(port)))
            .await
            .map_err(bind_failure)?;
        let addr = loopback(args.bind, echo.local_addr().port());
        table.push((
            label.into(),
            addr,
            format!("jaring echo client --port {} hello", addr.port()),
        ));
        let token = shutdown.clone();
        let server = Arc::new(EchoServer::new(EchoConfig::default()));
        tasks.push(tokio::spawn(async move { echo.serve(server, token).await }));
    }

    // realm2 first: with ephemeral ports, realm1 (the dialer: its name sorts first) must learn
    // where realm2 listens for peers.
    let r2 = realm_config(
        &dir,
        "realm2",
        args.bind,
        z(args.realm2_port),
        z(args.realm2_federation_port),
        "realm1",
        loopback(args.bind, args.realm1_federation_port),
    )?;
    let realm2 = start_realm(
        &r2,
        &serve_args(
            z(args.realm2_port),
            z(args.realm2_federation_port),
            args.bind,
        ),
        Some(REALM2_USERS),
        shutdown.clone(),
    )
    .await?;
    let r2_fed = realm2
        .federation_addr
        .ok_or_else(|| anyhow!("realm2 started without federation"))?;
    let r1 = realm_config(
        &dir,
        "realm1",
        args.bind,
        z(args.realm1_port),
        z(args.realm1_federation_port),
        "realm2",
        loopback(args.bind, r2_fed.port()),
    )?;
    let realm1 = start_realm(
        &r1,
        &serve_args(
            z(args.realm1_port),
            z(args.realm1_federation_port),
            args.bind,
        ),
        Some(REALM1_USERS),
        shutdown.clone(),
    )
    .await?;
    for (realm, users) in [(&realm1, REALM1_USERS), (&realm2, REALM2_USERS)] {
        let addr = loopback(args.bind, realm.client_addr.port());
        let (user, _, password) = users[0];
        table.push((
            format!("chat {}", realm.name),
            addr,
            format!(
                "jaring chat client --server {addr}   then: auth {user} {password}   ({})",
                users
                    .iter()
                    .map(|(u, _, p)| format!("{u}/{p}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
        if let Some(f) = realm.federation_addr {
            table.push((
                format!("link {}", realm.name),
                loopback(args.bind, f.port()),
                "server-to-server only (HMAC-authenticated peers)".into(),
            ));
        }
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "jaring lab: data in {}", dir.display())?;
    for (what, addr, how) in &table {
        writeln!(out, "  {what:<14} {addr:<22} {how}")?;
    }
    writeln!(
        out,
        "  across realms: send james@realm2 hi (from realm1), send messi@realm1 hi (from realm2),\n\
         \x20                group football@realm1 (from realm2: a group of realm1, live on both)\n\
         Ctrl-C stops everything."
    )?;
    out.flush()?;
    drop(out);
    tasks.push(realm1.task);
    tasks.push(realm2.task);
    for t in tasks {
        let _ = t.await;
    }
    Ok(())
}
