//! `jaring lab`: the classic lab in one process. The time server, the echo server on both of the
//! lab's ports, and two chat realms linked by federation, with the lab's users, all data under one
//! directory. Ctrl-C stops everything gracefully.
//!
//! Unless `--no-tls`, the lab keeps its own CA and certificates in `DIR/tls` (made on first
//! start, reused after): time and the realms' client ports take TLS beside plaintext, echo
//! serves TLS on a port of its own.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, anyhow};
use jaring_chat::config::RealmConfig;
use jaring_echo::{EchoConfig, EchoServer};
use jaring_runtime::{CancellationToken, Server, ServerConfig, TlsListen, TlsMode};
use jaring_time::TimeService;
use jaring_tls::pki::{LabLeaf, LabTls};

use crate::cli::{
    LabArgs, LabCli, LabCommand, LabExecArgs, LabNetCommand, ModelArg, RealmLocation, ServeArgs,
};
use crate::cmd::chat::{DEFAULT_DEMO_BIND, Seed, serve_web, start_realm};
use crate::cmd::{bind_failure, load_tls};
use crate::{CmdResult, Failure, signal};
use jaring_web::lab::{Board, ServiceSource};

pub mod dns;
pub mod net;

use net::{LabNet, Made, Owner};

/// The realms' idle timeout in the lab: students leave a client idle for long stretches.
pub const LAB_REALM_IDLE_TIMEOUT_SECS: u64 = 3600;

/// `jaring lab` and its subcommands, on the main thread before any async runtime exists: the
/// lab's hosts are made, and mesin-1 entered, by the thread that then starts the runtime (its
/// workers are born in mesin-1). `serve` runs the lab itself.
pub fn dispatch(cli: LabCli, serve: impl FnOnce(LabArgs) -> CmdResult) -> CmdResult {
    match cli.command {
        Some(LabCommand::Net(command)) => net_command(command),
        Some(LabCommand::Exec(args)) => exec(args),
        Some(LabCommand::Tour { full }) => {
            let text = if full {
                TOUR.to_owned()
            } else {
                tour_steps(TOUR)
            };
            std::io::stdout().lock().write_all(text.as_bytes())?;
            Ok(())
        }
        None if cli.args.hosts => with_hosts(cli.args, serve),
        None => serve(cli.args),
    }
}

/// The tour, as tested by `tests/tour.rs`: what `jaring lab tour` prints stays true with it.
const TOUR: &str = include_str!("../../../../../docs/tour.md");

/// The tour's steps: each numbered section's title and the commands of its runnable blocks,
/// without their expected output.
fn tour_steps(tour: &str) -> String {
    let mut out = String::from(
        "The tour (the whole of it, with the output to expect: jaring lab tour --full).\n\
         Terminal 1 runs the lab; every other command runs in terminal 2, as root.\n",
    );
    let mut in_step = false;
    let mut in_console = false;
    for line in tour.lines() {
        if let Some(title) = line.strip_prefix("## ") {
            in_step =
                title.starts_with(|c: char| c.is_ascii_digit()) || title == "Before you start";
            if in_step {
                let _ = write!(out, "\n{title}\n");
            }
        } else if line.starts_with("```console") {
            in_console = true;
        } else if line.starts_with("```") {
            in_console = false;
        } else if in_step
            && in_console
            && let Some(command) = line.strip_prefix("$ ")
        {
            if command.contains("jaring lab --hosts") {
                let _ = writeln!(
                    out,
                    "  $ {command}   (terminal 1; Ctrl-C a running lab first)"
                );
            } else {
                let _ = writeln!(out, "  $ {command}");
            }
        }
    }
    out
}

fn lab_net() -> Result<LabNet, Failure> {
    LabNet::from_env().map_err(Failure::Usage)
}

fn net_command(command: LabNetCommand) -> CmdResult {
    let net = lab_net()?;
    let mut out = std::io::stdout().lock();
    match command {
        LabNetCommand::Up { capture } => {
            if let Some(file) = &capture {
                check_capture_file(file)?;
            }
            match net.up(&Owner::NetUp)? {
                Made::Reused => {
                    writeln!(out, "the lab's hosts are already up")?;
                    if capture.is_some() {
                        return Err(Failure::Usage(anyhow!(
                            "no capture started: the hosts were up already; `jaring lab net \
                             down`, then `jaring lab net up --capture FILE`"
                        )));
                    }
                }
                Made::Fresh => {
                    if let Some(file) = &capture
                        && let Err(e) = net.capture_detached(file)
                    {
                        let _ = net.remove();
                        return Err(e.into());
                    }
                    writeln!(out, "the lab's hosts are up:")?;
                    for (host, address) in net::HOSTS {
                        writeln!(
                            out,
                            "  {:<8} {address:<15} namespace {}",
                            host,
                            net.namespace(host)
                        )?;
                    }
                    if let Some(file) = &capture {
                        writeln!(
                            out,
                            "capturing into {} until `jaring lab net down`",
                            file.display()
                        )?;
                    }
                    writeln!(
                        out,
                        "run: jaring lab exec mesin-1 -- jaring time serve   (and clients on mesin-2, mesin-3)\n\
                         remove: jaring lab net down"
                    )?;
                }
            }
        }
        LabNetCommand::Down => {
            net.check_ours()?;
            let (removed, written) = net.remove()?;
            if removed.is_empty() {
                writeln!(out, "the lab's hosts were not up")?;
            } else {
                writeln!(out, "removed {}", removed.join(", "))?;
            }
            for f in written {
                give_to_sudo_user(&f);
                writeln!(out, "capture written: {}", f.display())?;
            }
        }
        LabNetCommand::Status => {
            if net.is_up()? {
                let by = match net.owner() {
                    Some(Owner::NetUp) => "made by `jaring lab net up`".to_owned(),
                    Some(Owner::Lab(pid)) => format!("made by `jaring lab --hosts` (pid {pid})"),
                    None => "made by something else".to_owned(),
                };
                writeln!(out, "up ({by})")?;
                for (host, address) in net::HOSTS {
                    let ns = net.namespace(host);
                    let pids = net::namespace_pids(&ns);
                    writeln!(out, "  {host:<8} {address:<15} {} process(es)", pids.len())?;
                }
            } else {
                writeln!(out, "down")?;
            }
        }
    }
    Ok(())
}

fn exec(args: LabExecArgs) -> CmdResult {
    let net = lab_net()?;
    LabNet::address(&args.host).map_err(Failure::Usage)?;
    let status = net.exec(&args.host, &args.command)?;
    match status.code() {
        Some(0) => Ok(()),
        // The command's own exit code is exec's: scripts can tell.
        Some(code) => std::process::exit(code),
        None => Err(Failure::Runtime(anyhow!(
            "{:?} ended by a signal ({status})",
            args.command
        ))),
    }
}

/// Under `sudo`, gives `file` to the user who ran it, so Wireshark opens the capture without
/// root. Best effort: the file stays root's if that fails.
pub fn give_to_sudo_user(file: &Path) {
    let id = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u32>().ok());
    if let (Some(uid), Some(gid)) = (id("SUDO_UID"), id("SUDO_GID")) {
        let _ = std::os::unix::fs::chown(file, Some(uid), Some(gid));
    }
}

/// Refuses a capture file that cannot be written before anything is made.
fn check_capture_file(file: &Path) -> Result<(), Failure> {
    let parent = match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    if !parent.is_dir() {
        return Err(Failure::Usage(anyhow!(
            "cannot write the capture {}: {} is not a directory",
            file.display(),
            parent.display()
        )));
    }
    Ok(())
}

/// `jaring lab --hosts`: makes the hosts (or takes those `net up` made), starts the capture,
/// runs the lab inside mesin-1, and removes what it made when the lab stops.
fn with_hosts(args: LabArgs, serve: impl FnOnce(LabArgs) -> CmdResult) -> CmdResult {
    let net = lab_net()?;
    net::check_privileges()?;
    if let Some(file) = &args.capture {
        check_capture_file(file)?;
    }
    // The web page stays on this machine's loopback (where the teacher's browser is, and only
    // there: the demo passwords are public), bound here, before this thread enters mesin-1.
    let mut args = args;
    if !args.no_web {
        let port = if args.ephemeral { 0 } else { args.web_port };
        let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port);
        args.web_listener = Some(
            jaring_runtime::bind_std(addr, args.backlog).map_err(port_taken("web", "web-port"))?,
        );
    }
    let made = net.up(&Owner::Lab(std::process::id()))?;
    let capture = match &args.capture {
        Some(file) => match net.capture(file) {
            Ok(c) => Some(c),
            Err(e) => {
                if made == Made::Fresh {
                    let _ = net.remove();
                }
                return Err(e.into());
            }
        },
        None => None,
    };
    let result = net
        .enter(net::SERVER_HOST)
        .map_err(Failure::from)
        .and_then(|()| serve(args));
    let mut notes = Vec::new();
    if let Some(capture) = capture {
        match capture.finish() {
            Ok(files) => {
                for f in &files {
                    give_to_sudo_user(f);
                    notes.push(format!("capture written: {}", f.display()));
                }
            }
            Err(e) => notes.push(format!("the capture could not be finished: {e:#}")),
        }
    }
    if made == Made::Fresh {
        match net.remove() {
            Ok(_) => notes.push("the lab's hosts are removed".into()),
            Err(e) => notes.push(format!(
                "the lab's hosts could not all be removed ({e:#}): run `jaring lab net down`"
            )),
        }
    }
    for note in notes {
        eprintln!("jaring lab: {note}");
    }
    result
}

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

/// The directory, under `--dir`, holding the lab's CA and certificates.
pub const TLS_DIR: &str = "tls";

/// The lab's certificates: one for time and echo, one per realm.
const LEAVES: [&str; 3] = ["services", "realm1", "realm2"];

/// Writes the realm's config file (so it can also run alone) and loads it back. With `tls`, the
/// realm's client port takes TLS with its own lab certificate.
#[allow(clippy::too_many_arguments)] // one call per realm, every argument a different setting
fn realm_config(
    dir: &Path,
    name: &str,
    bind: IpAddr,
    port: u16,
    federation_port: u16,
    peer: &str,
    peer_address: SocketAddr,
    tls: Option<&LabTls>,
) -> Result<RealmConfig, Failure> {
    let tls_section = match tls {
        // Relative to the config file, so the directory can move.
        Some(_) => format!(
            "[tls]\ncert = \"{TLS_DIR}/{name}.pem\"\nkey = \"{TLS_DIR}/{name}-key.pem\"\n\n"
        ),
        None => String::new(),
    };
    let peer_tls = match tls {
        Some(t) => Some(leaf(t, peer)?),
        None => None,
    };
    let text = format!(
        "# Written by `jaring lab`; run this realm alone with:\n\
         #   jaring chat serve --config {file}\n\
         # and manage its users, also while it runs: jaring chat user list --config {file}\n\
         [realm]\nname = \"{name}\"\ndata_dir = \"{name}\"\n\n\
         [listen]\nbind = \"{bind}\"\nport = {port}\n\n\
         {tls_section}\
         [federation]\nport = {federation_port}\n\n\
         {peer_entry}",
        file = dir.join(format!("{name}.toml")).display(),
        peer_entry = peer_entry(peer, peer_address, peer_tls),
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    RealmConfig::load(&path).map_err(|e| Failure::Usage(e.into()))
}

/// The `[[peer]]` entry of a lab realm's config: the one place the lab says how a realm reaches
/// its peer. With TLS the link is mutual TLS pinned to the peer's lab certificate (and chained to
/// the lab CA), never plaintext.
fn peer_entry(peer: &str, address: SocketAddr, peer_tls: Option<&LabLeaf>) -> String {
    let mut entry = format!(
        "[[peer]]\nname = \"{peer}\"\naddress = \"{address}\"\nsecret_file = \"{SECRET_FILE}\"\n"
    );
    if let Some(leaf) = peer_tls {
        entry.push_str(&format!(
            "# The link runs over mutual TLS pinned to {peer}'s key (jaring chat tls fingerprint).\n\
             fingerprint = \"{}\"\nca = \"{TLS_DIR}/ca.pem\"\n",
            leaf.fingerprint
        ));
    }
    entry
}

/// The lab certificate named `name`.
fn leaf<'a>(tls: &'a LabTls, name: &str) -> anyhow::Result<&'a LabLeaf> {
    // ensure_lab returns one leaf per name asked for; a miss is a bug here, not the user's.
    tls.leaves
        .iter()
        .find(|l| l.name == name)
        .ok_or_else(|| anyhow!("the lab has no certificate {name:?} (a bug: please report it)"))
}

/// A TLS listener with the lab certificate `name`, when the lab runs TLS.
fn listen_with(
    tls: Option<&LabTls>,
    name: &str,
    mode: TlsMode,
) -> Result<Option<TlsListen>, Failure> {
    match tls {
        Some(t) => {
            let l = leaf(t, name)?;
            load_tls(&l.cert, &l.key, mode).map(Some)
        }
        None => Ok(None),
    }
}

/// Creates (first start) or checks and reuses the lab's CA and certificates in `DIR/tls`, for
/// the names [`jaring_tls::pki::default_sans`] gives plus what `binds` add. Off the async
/// workers: it reads and writes files and may generate keys.
async fn ensure_tls(
    dir: &Path,
    binds: [IpAddr; 2],
    names: Vec<String>,
) -> anyhow::Result<(LabTls, Vec<String>)> {
    let tls_dir = dir.join(TLS_DIR);
    let shown = tls_dir.clone();
    tokio::task::spawn_blocking(move || {
        let mut extra = names;
        extra.extend(extra_names(&binds));
        let sans = jaring_tls::pki::default_sans(&extra);
        let lab = jaring_tls::pki::ensure_lab(&tls_dir, &LEAVES, &sans)?;
        Ok::<_, jaring_tls::TlsError>((lab, sans))
    })
    .await
    .map_err(|e| anyhow!("the lab's TLS set-up failed: {e}"))?
    .with_context(|| {
        format!(
            "cannot set up the lab's TLS in {}: remove that directory to start afresh, or pass --no-tls",
            shown.display()
        )
    })
}

/// The names the lab's certificates need beyond the defaults: an explicit bind address, and
/// for a wildcard bind, this machine's addresses (so clients elsewhere can verify by address).
fn extra_names(binds: &[IpAddr]) -> Vec<String> {
    let mut out: Vec<IpAddr> = binds
        .iter()
        .copied()
        .filter(|b| !b.is_unspecified() && !b.is_loopback())
        .collect();
    if binds.iter().any(IpAddr::is_unspecified) {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        out.extend(ipv4_addresses(&read("/proc/net/fib_trie")));
        out.extend(ipv6_addresses(&read("/proc/net/if_inet6")));
    }
    let mut names: Vec<String> = Vec::new();
    for ip in out {
        let name = ip.to_string();
        if !names.contains(&name) {
            names.push(name);
        }
    }
    names
}

/// This machine's own IPv4 addresses but loopback, from `/proc/net/fib_trie` (each local
/// address is the `|-- A.B.C.D` line before a `/32 host LOCAL` line).
fn ipv4_addresses(fib_trie: &str) -> Vec<IpAddr> {
    let mut out = Vec::new();
    let mut last: Option<Ipv4Addr> = None;
    for line in fib_trie.lines() {
        let line = line.trim();
        if let Some(addr) = line.strip_prefix("|-- ") {
            last = addr.parse().ok();
        } else if line.starts_with("/32 host LOCAL")
            && let Some(ip) = last.take()
            && !ip.is_loopback()
            && !out.contains(&IpAddr::V4(ip))
        {
            out.push(IpAddr::V4(ip));
        }
    }
    out
}

/// This machine's global, permanent IPv6 addresses, from `/proc/net/if_inet6` (address in 32
/// hex digits, index, prefix length, scope, flags, name). Link-local ones need a zone and
/// temporary ones change, so neither goes into a certificate.
fn ipv6_addresses(if_inet6: &str) -> Vec<IpAddr> {
    /// `IFA_F_TEMPORARY`: a privacy address that rotates.
    const TEMPORARY: u8 = 0x01;
    let mut out = Vec::new();
    for line in if_inet6.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let [hex, _, _, scope, flags, ..] = f[..] else {
            continue;
        };
        let (Ok(bits), Ok(scope), Ok(flags)) = (
            u128::from_str_radix(hex, 16),
            u8::from_str_radix(scope, 16),
            u8::from_str_radix(flags, 16),
        ) else {
            continue;
        };
        let ip = Ipv6Addr::from(bits);
        if hex.len() == 32 && scope == 0 && flags & TEMPORARY == 0 && !ip.is_loopback() {
            out.push(IpAddr::V6(ip));
        }
    }
    out
}

fn serve_args(port: u16, federation_port: u16, bind: IpAddr, args: &LabArgs) -> ServeArgs {
    ServeArgs {
        location: RealmLocation {
            config: None,
            data_dir: None,
        },
        port: Some(port),
        bind: Some(bind),
        backlog: args.backlog,
        // A realm stays async whatever --model says: one client at a time would stall the
        // link and every live group.
        model: ModelArg::Async,
        max_connections: None,
        max_connections_per_address: None,
        idle_timeout: Some(args.idle_timeout.unwrap_or(LAB_REALM_IDLE_TIMEOUT_SECS)),
        line_timeout: None,
        max_line: None,
        grace: jaring_runtime::config::DEFAULT_GRACE.as_secs_f64(),
        federation_port: Some(federation_port),
        storage: None,
        // The lab serves one web port for both realms itself.
        web_port: None,
        tls: crate::cli::SharedTlsArgs::default(),
        // On the lab's own hosts the network is private to this machine: no warning.
        private_network: args.hosts,
    }
}

/// Where a client reaches a server bound to `bind`: for a wildcard, `here` (loopback, or
/// mesin-1's address on the lab's hosts).
fn reach(here: IpAddr, bind: IpAddr, port: u16) -> SocketAddr {
    let ip = if bind.is_unspecified() { here } else { bind };
    SocketAddr::new(ip, port)
}

/// One line of the lab's start-up table: what, where, how to connect.
struct Row {
    what: String,
    addr: SocketAddr,
    how: String,
}

/// How a client on this machine (or, on the lab's hosts, on mesin-2) names a server: the
/// lab's host name there, and only the flags that differ from the client's defaults.
struct Clients {
    hosts: bool,
}

impl Clients {
    /// `--host mesin-1` on the lab's hosts; `--port N` where N is not the client's default.
    fn target(&self, port: u16, default_port: u16) -> String {
        let mut flags = Vec::new();
        if self.hosts {
            flags.push(format!("--host {}", net::SERVER_HOST));
        }
        if port != default_port {
            flags.push(format!("--port {port}"));
        }
        flags.join(" ")
    }

    /// `--server mesin-1:8889` or `--server 127.0.0.1:8889`.
    fn server(&self, addr: SocketAddr) -> String {
        if self.hosts {
            format!("--server {}:{}", net::SERVER_HOST, addr.port())
        } else {
            format!("--server {addr}")
        }
    }
}

/// The lock file, under `--dir`, that a running lab holds (its pid inside).
const LOCK_FILE: &str = "lab.pid";

/// Holds `DIR/lab.pid` locked for as long as the lab runs; a second lab on the same directory
/// is refused with the first one's pid. The lock goes with the process, crash or not.
fn claim(dir: &Path) -> Result<std::fs::File, Failure> {
    use std::io::{Read as _, Seek as _};
    let path = dir.join(LOCK_FILE);
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => {
            file.set_len(0)?;
            file.rewind()?;
            writeln!(file, "{}", std::process::id())?;
            Ok(file)
        }
        Err(rustix::io::Errno::WOULDBLOCK) => {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            Err(Failure::Usage(anyhow!(
                "a lab is already running on {dir} (pid {pid}): stop it (Ctrl-C in its terminal, \
                 or kill {pid}), or start this one with another --dir",
                dir = dir.display(),
                pid = pid.trim()
            )
            .context("jaring lab")))
        }
        Err(e) => Err(anyhow::Error::new(e)
            .context(format!("cannot lock {}", path.display()))
            .into()),
    }
}

/// Runs `jaring lab`: a start that fails leaves no half-made directory behind.
pub async fn run(args: LabArgs) -> CmdResult {
    let dir = args.dir.clone();
    let fresh = !dir.exists();
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let lock = match claim(&dir) {
        Ok(lock) => lock,
        Err(e) => {
            if fresh {
                let _ = std::fs::remove_dir_all(&dir);
            }
            return Err(e);
        }
    };
    let mut args = args;
    let tasks = match start(&mut args).await {
        Ok(tasks) => tasks,
        Err(e) => {
            if fresh {
                let _ = std::fs::remove_dir_all(&dir);
            }
            return Err(e);
        }
    };
    for t in tasks {
        let _ = t.await;
    }
    drop(lock);
    let _ = std::fs::remove_file(dir.join(LOCK_FILE));
    Ok(())
}

/// A port conflict, with the lab's own flag for that port and `--ephemeral`.
fn port_taken(what: &str, flag: &str) -> impl FnOnce(jaring_runtime::BindError) -> Failure {
    let (what, flag) = (what.to_owned(), flag.to_owned());
    move |e| match e {
        jaring_runtime::BindError::InUse { addr } => Failure::Runtime(anyhow!(
            "the {what} port {addr} is taken (another lab, or another server on this machine): \
             choose another with --{flag} N, or --ephemeral to let the system pick every port"
        )),
        other => bind_failure(other),
    }
}

/// Starts every server of the lab and prints its banner; returns what to wait for.
async fn start(args: &mut LabArgs) -> Result<Vec<tokio::task::JoinHandle<()>>, Failure> {
    let z = |p: u16| if args.ephemeral { 0 } else { p };
    let dir = args.dir.clone();
    secret(&dir)?;
    // Time and echo have no passwords: everywhere, as in the labs. The realms' demo passwords are
    // public: loopback unless --bind says otherwise (start_realm then warns). On the lab's hosts
    // every server listens on all of mesin-1's addresses: that network is private to this machine.
    let services_bind = args.bind.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    let realm_bind = args.bind.unwrap_or(if args.hosts {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    } else {
        DEFAULT_DEMO_BIND
    });
    let here = if args.hosts {
        IpAddr::V4(LabNet::address(net::SERVER_HOST)?)
    } else {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    };
    let clients = Clients { hosts: args.hosts };
    let tz = crate::cli::time_zone(args.tz.as_deref())?;
    let tls = if args.no_tls {
        None
    } else {
        // On the lab's hosts the servers are also `mesin-1` and `mesin-1.lab` to a client.
        let names = if args.hosts {
            vec![
                net::SERVER_HOST.to_owned(),
                format!("{}.{}", net::SERVER_HOST, dns::ZONE),
            ]
        } else {
            Vec::new()
        };
        Some(ensure_tls(&dir, [services_bind, realm_bind], names).await?)
    };
    let lab_tls = tls.as_ref().map(|(t, _)| t);
    let ca = dir.join(TLS_DIR).join("ca.pem");
    let ca = ca.display();
    let shutdown = CancellationToken::new();
    signal::spawn(shutdown.clone());
    let mut tasks = Vec::new();
    let mut table: Vec<Row> = Vec::new();

    let bind_server = |port: u16| {
        let mut c = ServerConfig::on_port(port);
        c.listen.bind = services_bind;
        c.listen.backlog = args.backlog;
        c.model = args.model.into();
        if let Some(secs) = args.idle_timeout {
            c.limits.idle_timeout = std::time::Duration::from_secs(secs);
        }
        c
    };
    let mut time_config = bind_server(z(args.time_port));
    time_config.tls = listen_with(lab_tls, "services", TlsMode::Both)?;
    let time = Server::bind(time_config)
        .await
        .map_err(port_taken("time", "time-port"))?;
    let time_addr = reach(here, services_bind, time.local_addr().port());
    table.push(Row {
        what: "time".into(),
        addr: time_addr,
        how: format!(
            "jaring time client {}",
            clients.target(time_addr.port(), jaring_time::DEFAULT_PORT)
        ),
    });
    // What the web port's dashboard shows: every service of the lab.
    let mut board = Board::new();
    board.service(ServiceSource {
        name: "time".into(),
        addr: time_addr.to_string(),
        stats: time.stats(),
        bytes: None,
    });
    let service = Arc::new(TimeService::new(
        tz,
        jaring_runtime::Limits::default().max_line,
    ));
    let token = shutdown.clone();
    tasks.push(tokio::spawn(
        async move { time.serve(service, token).await },
    ));

    let mut echoes = vec![
        ("echo", args.echo_port, None, "echo-port", " hello"),
        (
            "echo (files)",
            args.file_echo_port,
            None,
            "file-echo-port",
            " --file FILE",
        ),
    ];
    // Echo is binary-safe (a plaintext stream may start with 0x16), so TLS has a port of its own.
    if let Some(tls) = listen_with(lab_tls, "services", TlsMode::Only)? {
        echoes.push((
            "echo (tls)",
            args.echo_tls_port,
            Some(tls),
            "echo-tls-port",
            " hello",
        ));
    }
    for (label, port, tls, flag, example) in echoes {
        let mut config = bind_server(z(port));
        let over_tls = tls.is_some();
        config.tls = tls;
        let echo = Server::bind(config)
            .await
            .map_err(port_taken(label, flag))?;
        let addr = reach(here, services_bind, echo.local_addr().port());
        let target = clients.target(addr.port(), jaring_echo::DEFAULT_PORT);
        table.push(Row {
            what: label.into(),
            addr,
            how: if over_tls {
                format!("jaring echo client {target} --tls --ca {ca}{example}")
            } else {
                format!("jaring echo client {target}{example}")
            }
            .replace("  ", " "),
        });
        let token = shutdown.clone();
        let server = Arc::new(EchoServer::new(EchoConfig::default()));
        let echoed = server.stats();
        board.service(ServiceSource {
            name: label.into(),
            addr: addr.to_string(),
            stats: echo.stats(),
            bytes: Some(Arc::new(move || echoed.echoed())),
        });
        tasks.push(tokio::spawn(async move { echo.serve(server, token).await }));
    }

    // On the lab's hosts, mesin-1 also answers DNS for the lab's names (`mesin-2.lab`), so a
    // lookup there goes over the wire as in the reports.
    if args.hosts {
        let socket = dns::bind()
            .await
            .with_context(|| format!("cannot bind the lab's DNS port {}", dns::PORT))?;
        let addr = reach(here, IpAddr::V4(Ipv4Addr::UNSPECIFIED), dns::PORT);
        table.push(Row {
            what: "dns".into(),
            addr,
            how: format!(
                "jaring info mesin-1.{} 45000   (the lab's names: mesin-1.{0} .. mesin-3.{0})",
                dns::ZONE
            ),
        });
        tasks.push(tokio::spawn(dns::serve(socket, shutdown.clone())));
    }

    // A realm that cannot bind says which of the lab's flags move it.
    let realm_failed = |name: &str| {
        let name = name.to_owned();
        move |f: Failure| match f {
            Failure::Runtime(e) if format!("{e:#}").contains("already in use") => {
                Failure::Runtime(e.context(format!(
                    "{name}'s port is taken: choose others with --{name}-port N and \
                     --{name}-federation-port N, or --ephemeral to let the system pick every port"
                )))
            }
            other => other,
        }
    };
    // realm2 first: with ephemeral ports, realm1 (the dialer: its name sorts first) must learn
    // where realm2 listens for peers.
    let r2 = realm_config(
        &dir,
        "realm2",
        realm_bind,
        z(args.realm2_port),
        z(args.realm2_federation_port),
        "realm1",
        reach(here, realm_bind, args.realm1_federation_port),
        lab_tls,
    )?;
    let realm2 = start_realm(
        &r2,
        &serve_args(
            z(args.realm2_port),
            z(args.realm2_federation_port),
            realm_bind,
            args,
        ),
        Some(REALM2_USERS),
        shutdown.clone(),
    )
    .await
    .map_err(realm_failed("realm2"))?;
    let r2_fed = realm2
        .federation_addr
        .ok_or_else(|| anyhow!("realm2 started without federation"))?;
    let r1 = realm_config(
        &dir,
        "realm1",
        realm_bind,
        z(args.realm1_port),
        z(args.realm1_federation_port),
        "realm2",
        reach(here, realm_bind, r2_fed.port()),
        lab_tls,
    )?;
    let realm1 = start_realm(
        &r1,
        &serve_args(
            z(args.realm1_port),
            z(args.realm1_federation_port),
            realm_bind,
            args,
        ),
        Some(REALM1_USERS),
        shutdown.clone(),
    )
    .await
    .map_err(realm_failed("realm1"))?;
    for realm in [&realm1, &realm2] {
        let addr = reach(here, realm_bind, realm.client_addr.port());
        table.push(Row {
            what: format!("chat {}", realm.name),
            addr,
            how: format!("jaring chat client {}", clients.server(addr)),
        });
    }
    for realm in [&realm1, &realm2] {
        if let Some(f) = realm.federation_addr {
            table.push(Row {
                what: format!("link {}", realm.name),
                addr: reach(here, realm_bind, f.port()),
                how: "realm to realm only (HMAC-authenticated peers)".into(),
            });
        }
    }
    // One web port for both realms: the page picks one at login (`/ws/realm1`, `/ws/realm2`).
    // Like the realms' ports: loopback unless --bind, since the demo passwords are public.
    if !args.no_web {
        let mut c = ServerConfig::on_port(z(args.web_port));
        c.listen.bind = realm_bind;
        c.listen.backlog = args.backlog;
        c.tls = listen_with(lab_tls, "realm1", TlsMode::Both)?;
        for realm in [&realm1, &realm2] {
            board.service(ServiceSource {
                name: format!("chat {}", realm.name),
                addr: reach(here, realm_bind, realm.client_addr.port()).to_string(),
                stats: Arc::clone(&realm.board.0),
                bytes: None,
            });
            board.realm(Arc::clone(&realm.board.1));
        }
        let (addr, task) = serve_web(
            c,
            vec![realm1.web.clone(), realm2.web.clone()],
            Vec::new(),
            realm1.max_line.min(realm2.max_line),
            std::mem::take(&mut board),
            args.web_listener.take(),
            shutdown.clone(),
        )
        .await
        .map_err(|f| match f {
            Failure::Runtime(e) if format!("{e:#}").contains("already in use") => {
                Failure::Runtime(e.context(
                    "the web port is taken: choose another with --web-port N, --no-web, or \
                     --ephemeral to let the system pick every port",
                ))
            }
            other => other,
        })?;
        // With --hosts the web port is on this machine's loopback, not on mesin-1.
        let addr = if args.hosts {
            addr
        } else {
            reach(here, realm_bind, addr.port())
        };
        table.push(Row {
            what: "web".into(),
            addr,
            how: format!(
                "http://{addr}/ the chat (both realms), http://{addr}/lab the dashboard{}",
                if args.hosts { " (on this machine)" } else { "" }
            ),
        });
        tasks.push(task);
    }

    let mut out = String::new();
    let width = table
        .iter()
        .map(|r| r.addr.to_string().len())
        .max()
        .unwrap_or(0);
    let _ = writeln!(
        out,
        "jaring lab: data in {}; logs: warnings only (-v for more)",
        dir.display()
    );
    if args.hosts {
        let _ = writeln!(
            out,
            "hosts: mesin-1 172.16.16.101 (every server), mesin-2 .102, mesin-3 .103; run a client \
             on one with\n  jaring lab exec mesin-2 -- COMMAND   (e.g. the commands below)"
        );
    }
    for Row { what, addr, how } in &table {
        let _ = writeln!(out, "  {what:<13} {:<width$}  {how}", addr.to_string());
    }
    let users = |seed: Seed| {
        seed.iter()
            .map(|(u, _, p)| format!("{u}/{p}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let _ = writeln!(
        out,
        "users: realm1 {}; realm2 {}   (auth messi surabaya)",
        users(REALM1_USERS),
        users(REALM2_USERS)
    );
    let _ = writeln!(
        out,
        "across realms: send james@realm2 hi (from realm1); group football@realm1 (from realm2)"
    );
    let _ = writeln!(
        out,
        "manage users: jaring chat user list --config {}   load it: jaring bench chat{}",
        dir.join("realm1.toml").display(),
        if realm1.client_addr.port() == jaring_chat::DEFAULT_PORT && !args.hosts {
            String::new()
        } else {
            format!(" --port {}", realm1.client_addr.port())
        }
    );
    if let Some((t, sans)) = &tls {
        let _ = writeln!(
            out,
            "TLS: time, chat and web take TLS on their own ports, echo on its (tls) port: add \
             --tls --ca {ca}\n  the CA: {ca} ({}); certificates for {}\n  \
             Python: ssl.create_default_context(cafile=\"{ca}\").wrap_socket(\
             socket.create_connection((\"{here}\", {port})), server_hostname=\"{here}\")\n  \
             Wireshark: SSLKEYLOGFILE=keys.log jaring lab   writes the TLS session keys so \
             Wireshark can decrypt a capture (never on unless set)",
            if t.created {
                "made now"
            } else {
                "kept from the last start"
            },
            sans.join(", "),
            port = time_addr.port(),
        );
        if let Some(keys) = std::env::var_os("SSLKEYLOGFILE") {
            let _ = writeln!(
                out,
                "  SSLKEYLOGFILE is set: TLS session keys go to {}; anyone with that file can \
                 read captured traffic",
                PathBuf::from(keys).display()
            );
        }
    }
    if let Some(file) = &args.capture {
        let _ = writeln!(
            out,
            "capture: {} (written when the lab stops; open it in Wireshark with \
             contrib/wireshark/jaring.lua)",
            file.display()
        );
    }
    let _ = writeln!(
        out,
        "tour: jaring lab tour (docs/tour.md) lists every lab experiment's commands (best with \
         --hosts --capture FILE)"
    );
    let _ = writeln!(out, "Ctrl-C stops everything.");
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(out.as_bytes())?;
    stdout.flush()?;
    tasks.push(realm1.task);
    tasks.push(realm2.task);
    Ok(tasks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tour_steps_are_its_commands_in_order() {
        let steps = tour_steps(TOUR);
        let first = steps
            .find("$ jaring lab --hosts --capture lab.pcapng   (terminal 1")
            .unwrap();
        let info = steps
            .find("$ jaring lab exec mesin-2 -- jaring info mesin-1 45000")
            .unwrap();
        assert!(first < info, "{steps}");
        for n in 1..=6 {
            assert!(
                steps.contains(&format!("\n{n}. ")),
                "step {n} missing:\n{steps}"
            );
        }
        // Commands only: no expected output, nothing of how the tour is tested.
        assert!(!steps.contains("chunk 1: 16 bytes"), "{steps}");
        assert!(!steps.contains("How this tour is tested"), "{steps}");
    }

    #[test]
    fn local_ipv4_addresses_come_from_the_fib_trie_without_loopback() {
        let trie = "Main:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 0.0.0.0\n        /0 universe UNICAST\n\
                    \x20    +-- 127.0.0.0/8 2 0 2\n           |-- 127.0.0.1\n              /32 host LOCAL\n\
                    \x20       |-- 127.255.255.255\n           /32 link BROADCAST\n\
                    \x20          |-- 192.0.2.0\n              /24 link UNICAST\n\
                    \x20          |-- 192.0.2.2\n              /32 host LOCAL\n\
                    Local:\n           |-- 192.0.2.2\n              /32 host LOCAL\n\
                    \x20          |-- 10.1.2.3\n              /32 host LOCAL\n";
        assert_eq!(
            ipv4_addresses(trie),
            vec![IpAddr::from([192, 0, 2, 2]), IpAddr::from([10, 1, 2, 3])]
        );
    }

    #[test]
    fn only_global_permanent_ipv6_addresses_count() {
        let text = "00000000000000000000000000000001 01 80 10 80       lo\n\
                    20010db8000000000000000000000001 02 40 00 80     eth0\n\
                    20010db8000000000000000000000002 02 40 00 01     eth0\n\
                    fe800000000000000000000000000001 02 40 20 80     eth0\n";
        assert_eq!(
            ipv6_addresses(text),
            vec!["2001:db8::1".parse::<IpAddr>().unwrap()]
        );
    }

    #[test]
    fn a_wildcard_bind_adds_this_machines_addresses_and_an_explicit_one_itself() {
        let lo = IpAddr::from([127, 0, 0, 1]);
        assert!(extra_names(&[lo, lo]).is_empty());
        let there = IpAddr::from([192, 0, 2, 7]);
        assert_eq!(extra_names(&[there, lo]), vec!["192.0.2.7".to_owned()]);
        // Whatever this machine has, never loopback or the wildcard itself.
        for name in extra_names(&[IpAddr::from([0, 0, 0, 0]), lo]) {
            let ip: IpAddr = name.parse().unwrap();
            assert!(!ip.is_loopback() && !ip.is_unspecified(), "{ip}");
        }
    }
}
