//! A throwaway PostgreSQL 15 cluster for one test: its own data directory, port and socket
//! directory, all removed when it is dropped.
//!
//! Tests call [`PgCluster::start`] and return early when it gives `None` (PostgreSQL is not
//! installed); under `CI=true` it panics instead, so CI cannot pass by skipping. `.ci/run`
//! installs `postgresql-15`.
//!
//! ```no_run
//! use jaring_testkit::pg::PgCluster;
//!
//! let Some(pg) = PgCluster::start() else { return };
//! let url = pg.create_database("realm_a");
//! assert_eq!(pg.psql(&url, "select 1"), "1");
//! ```
//!
//! Why shell out to `initdb` and `pg_ctl` rather than use a crate: pgtemp calls `sudo` (absent on
//! these machines) and postgresql_embedded downloads binaries at run time (no network). As root,
//! `initdb` and `postgres` refuse to run, so they run as the `postgres` user through `runuser`;
//! clients (`psql`, `createdb`, `pgbench`) connect over TCP as [`USER`] and run as the caller.
//!
//! The server keeps `fsync` on, as production does, so durability tests (kill -9, restart, count
//! the rows) mean something; only `initdb` skips its final sync (`--no-sync`): a crash during
//! set-up just fails the test.

use std::fs;
use std::io::Write as _;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal};
use tempfile::TempDir;

/// The superuser `initdb` creates; authentication is `trust`, so there is no password.
pub const USER: &str = "jaring";

/// Where Debian's `postgresql-15` puts the server binaries; looked at before PATH.
const DEBIAN_BIN_DIR: &str = "/usr/lib/postgresql/15/bin";

/// The oldest major version accepted when the binaries come from PATH.
const MIN_MAJOR: u32 = 15;

/// Seconds `pg_ctl` waits for a start or stop (`pg_ctl -t`), so a stuck server fails the test
/// instead of hanging it.
const PG_CTL_TIMEOUT_SECS: &str = "30";

/// Seconds a client waits to connect (`PGCONNECT_TIMEOUT`), for the same reason.
const CONNECT_TIMEOUT_SECS: &str = "10";

/// How long [`PgCluster::kill9`] waits for the killed processes to be reaped.
const REAP_PATIENCE: Duration = Duration::from_secs(30);

/// Start attempts: another process can take the probed free port before the server binds it.
const START_ATTEMPTS: u32 = 5;

/// A running PostgreSQL cluster on `127.0.0.1`, stopped (immediate mode) and deleted on drop.
///
/// Every method panics with a clear message when something goes wrong: it is a test fixture.
#[derive(Debug)]
pub struct PgCluster {
    bin_dir: PathBuf,
    /// True when we are root: `initdb` and `pg_ctl` then run as the `postgres` user.
    as_postgres: bool,
    port: u16,
    /// Holds `data/` (the cluster), `log` (the server's log) and the Unix socket.
    dir: TempDir,
}

impl PgCluster {
    /// Initialises a fresh cluster in a temp dir and starts it on a free loopback port.
    ///
    /// Returns `None` after one `skipped…` line on stderr when PostgreSQL 15 is not installed;
    /// panics instead when the environment says `CI=true`.
    pub fn start() -> Option<Self> {
        let Some(bin_dir) = find_bin_dir() else {
            let why = "PostgreSQL 15 not found (install postgresql-15)";
            assert!(
                !in_ci(),
                "{why}; CI=true, so tests that need it must not skip"
            );
            // Straight to stderr, not eprintln!: libtest captures the macros' output and hides it
            // for tests that pass, and a skip must be seen. libtest names each test's thread after
            // the test.
            let line = match std::thread::current().name() {
                Some(test) if test != "main" => format!("skipped {test}: {why}\n"),
                _ => format!("skipped: {why}\n"),
            };
            let _ = std::io::stderr().write_all(line.as_bytes());
            return None;
        };
        let dir = tempfile::Builder::new()
            .prefix("jaring-pg-")
            .tempdir()
            .unwrap_or_else(|e| panic!("create a temp dir for PostgreSQL: {e}"));
        let as_postgres = rustix::process::geteuid().is_root();
        if as_postgres {
            run(
                Command::new("chown").arg("postgres:").arg(dir.path()),
                "give the temp dir to the postgres user",
            );
        }
        let mut cluster = Self {
            bin_dir,
            as_postgres,
            port: 0,
            dir,
        };
        cluster.initdb();
        let mut attempt = 1;
        loop {
            cluster.port = free_port();
            match cluster.pg_ctl_start() {
                Ok(()) => return Some(cluster),
                Err(why) if attempt < START_ATTEMPTS && why.contains("Address already in use") => {
                    attempt += 1;
                }
                Err(why) => panic!("start PostgreSQL on port {}: {why}", cluster.port),
            }
        }
    }

    /// The URL of the `postgres` database: `postgresql://jaring@127.0.0.1:PORT/postgres`.
    pub fn url(&self) -> String {
        self.url_for("postgres")
    }

    /// The TCP port on `127.0.0.1`; it stays the same across [`stop`](Self::stop) and
    /// [`start_again`](Self::start_again).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The path of a binary from the same installation, e.g. `pgbench` or `psql`.
    pub fn bin(&self, name: &str) -> PathBuf {
        self.bin_dir.join(name)
    }

    /// Creates database `name` (ASCII lower-case letters, digits and `_`) and returns its URL, so
    /// several tests or realms can share one cluster.
    pub fn create_database(&self, name: &str) -> String {
        let plain = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        assert!(plain, "database name {name:?}: use a-z, 0-9 and _ only");
        run(
            self.client("createdb")
                .args(["-h", "127.0.0.1", "-U", USER, "-p"])
                .arg(self.port.to_string())
                .arg(name),
            &format!("create database {name}"),
        );
        self.url_for(name)
    }

    /// Runs `sql` with `psql` against `url` (stopping at the first error) and returns what it
    /// printed, unaligned and without headers, trailing newline removed: `"1"` for `select 1`.
    pub fn psql(&self, url: &str, sql: &str) -> String {
        let out = run(
            self.client("psql")
                .args([
                    "-X",
                    "-q",
                    "-A",
                    "-t",
                    "-v",
                    "ON_ERROR_STOP=1",
                    "-d",
                    url,
                    "-c",
                    sql,
                ])
                .env("PGCONNECT_TIMEOUT", CONNECT_TIMEOUT_SECS),
            &format!("psql {sql:?}"),
        );
        String::from_utf8_lossy(&out.stdout).trim_end().to_owned()
    }

    /// Stops the server cleanly (`pg_ctl -m fast stop`), for "database down" tests.
    pub fn stop(&self) {
        self.pg_ctl_stop("fast")
            .unwrap_or_else(|why| panic!("stop PostgreSQL: {why}"));
    }

    /// Starts the same data directory again on the same port, after [`stop`](Self::stop) or
    /// [`kill9`](Self::kill9); after a kill it runs crash recovery first.
    pub fn start_again(&self) {
        self.pg_ctl_start()
            .unwrap_or_else(|why| panic!("restart PostgreSQL on port {}: {why}", self.port));
    }

    /// Kills the postmaster and every server process with SIGKILL, like a crash of the database
    /// host (minus the page cache), and waits until they are gone so that
    /// [`start_again`](Self::start_again) can follow.
    ///
    /// The whole process group dies, not just the postmaster: orphaned backends would otherwise
    /// keep serving their connections for a moment, which no real crash does. `pg_ctl` starts the
    /// postmaster in its own session, so its group is exactly the server.
    pub fn kill9(&self) {
        let pid_file = self.data_dir().join("postmaster.pid");
        let text = fs::read_to_string(&pid_file)
            .unwrap_or_else(|e| panic!("kill9: read {}: {e} (is it running?)", pid_file.display()));
        let pid = text
            .lines()
            .next()
            .and_then(|line| line.trim().parse().ok())
            .and_then(Pid::from_raw)
            .unwrap_or_else(|| panic!("kill9: no pid in {}: {text:?}", pid_file.display()));
        let leader = rustix::process::getpgid(Some(pid)).is_ok_and(|group| group == pid);
        let killed = if leader {
            rustix::process::kill_process_group(pid, Signal::KILL)
        } else {
            rustix::process::kill_process(pid, Signal::KILL)
        };
        killed.unwrap_or_else(|e| panic!("kill9: kill -9 postmaster {pid:?}: {e}"));
        // A killed process stays a zombie until its parent (init, here) reaps it, and PostgreSQL
        // refuses to start while the pid in postmaster.pid still exists. Some container inits
        // reap only every second or so.
        let deadline = Instant::now() + REAP_PATIENCE;
        let alive = || {
            if leader {
                rustix::process::test_kill_process_group(pid).is_ok()
            } else {
                rustix::process::test_kill_process(pid).is_ok()
            }
        };
        while alive() {
            assert!(
                Instant::now() < deadline,
                "kill9: postmaster {pid:?} not reaped after {REAP_PATIENCE:?} (does init reap zombies?)"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn url_for(&self, database: &str) -> String {
        format!("postgresql://{USER}@127.0.0.1:{}/{database}", self.port)
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("log")
    }

    /// `initdb`, then the settings every start uses. They go into `postgresql.conf` rather than
    /// `pg_ctl -o`, so the socket path needs no shell quoting and a restart repeats them exactly.
    fn initdb(&self) {
        run(
            self.server_tool("initdb")
                .args(["--no-sync", "-A", "trust", "-U", USER, "-E", "UTF8"])
                // Not the caller's LANG: a non-UTF-8 locale would make `-E UTF8` fail, and tests
                // should sort the same on every machine.
                .arg("--locale=C")
                .arg("-D")
                .arg(self.data_dir()),
            "initdb (as root, the temp dir's parents must be open to the postgres user: check TMPDIR)",
        );
        let socket_dir = self.dir.path().display().to_string().replace('\'', "''");
        let settings = format!(
            "\n# jaring-testkit\n\
             listen_addresses = '127.0.0.1'\n\
             unix_socket_directories = '{socket_dir}'\n\
             # Load tests open many connections; the default is 100.\n\
             max_connections = 200\n"
        );
        let conf = self.data_dir().join("postgresql.conf");
        fs::OpenOptions::new()
            .append(true)
            .open(&conf)
            .and_then(|mut file| file.write_all(settings.as_bytes()))
            .unwrap_or_else(|e| panic!("append test settings to {}: {e}", conf.display()));
    }

    /// `pg_ctl start` on [`port`](Self::port); on failure, pg_ctl's output and what this start
    /// added to the server log.
    fn pg_ctl_start(&self) -> Result<(), String> {
        let log = self.log_path();
        let before = fs::metadata(&log).map_or(0, |meta| meta.len());
        let out = self
            .pg_ctl()
            .arg("start")
            .arg("-l")
            .arg(&log)
            .arg("-o")
            .arg(format!("-p {}", self.port))
            .output()
            .unwrap_or_else(|e| panic!("run pg_ctl: {e}"));
        if out.status.success() {
            return Ok(());
        }
        let text = fs::read(&log).unwrap_or_default();
        let added = text
            .get(usize::try_from(before).unwrap_or(0)..)
            .unwrap_or(&[]);
        Err(format!(
            "{}\nserver log:\n{}",
            describe(&out),
            String::from_utf8_lossy(added)
        ))
    }

    fn pg_ctl_stop(&self, mode: &str) -> Result<(), String> {
        let out = self
            .pg_ctl()
            .args(["stop", "-m", mode])
            .output()
            .unwrap_or_else(|e| panic!("run pg_ctl: {e}"));
        if out.status.success() {
            Ok(())
        } else {
            Err(describe(&out))
        }
    }

    /// `pg_ctl -D data -w -t 30`, ready for a subcommand.
    fn pg_ctl(&self) -> Command {
        let mut cmd = self.server_tool("pg_ctl");
        cmd.arg("-D")
            .arg(self.data_dir())
            .args(["-w", "-t", PG_CTL_TIMEOUT_SECS]);
        cmd
    }

    /// A server-side tool, run as `postgres` when we are root. It runs in the temp dir because the
    /// `postgres` user may not be allowed into the caller's working directory.
    fn server_tool(&self, name: &str) -> Command {
        let mut cmd = if self.as_postgres {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", "postgres", "--"]).arg(self.bin(name));
            cmd
        } else {
            Command::new(self.bin(name))
        };
        cmd.current_dir(self.dir.path());
        cmd
    }

    /// A client tool, run as the caller with a connect timeout.
    fn client(&self, name: &str) -> Command {
        let mut cmd = Command::new(self.bin(name));
        cmd.env("PGCONNECT_TIMEOUT", CONNECT_TIMEOUT_SECS);
        cmd
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        // Only when running: after stop() or kill9() there is nothing to stop, and a failing
        // pg_ctl here must not panic while a test is already unwinding. TempDir removes the rest.
        if self.data_dir().join("postmaster.pid").exists() {
            let _ = self.pg_ctl_stop("immediate");
        }
    }
}

/// The installation's bin directory: Debian's path, else the directory of the `initdb` on PATH
/// (after symlinks, since `pg_ctl`, `psql` and `pgbench` sit beside the real file).
fn find_bin_dir() -> Option<PathBuf> {
    let debian = Path::new(DEBIAN_BIN_DIR);
    if debian.join("initdb").is_file() {
        return Some(debian.to_owned());
    }
    let path = std::env::var_os("PATH")?;
    let initdb = std::env::split_paths(&path)
        .map(|dir| dir.join("initdb"))
        .find(|file| file.is_file())?;
    let dir = fs::canonicalize(initdb).ok()?.parent()?.to_owned();
    (major_version(&dir)? >= MIN_MAJOR).then_some(dir)
}

/// The major version `initdb --version` reports ("initdb (PostgreSQL) 15.14 …" gives 15).
fn major_version(bin_dir: &Path) -> Option<u32> {
    let out = Command::new(bin_dir.join("initdb"))
        .arg("--version")
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .nth(2)?
        .split('.')
        .next()?
        .parse()
        .ok()
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|value| value == "true" || value == "1")
}

/// A port that was free a moment ago; the server may still lose it to someone else (retried).
fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .unwrap_or_else(|e| panic!("find a free port on 127.0.0.1: {e}"))
        .port()
}

/// Runs `cmd` to completion; panics with its output unless it succeeded.
fn run(cmd: &mut Command, what: &str) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: run {:?}: {e}", cmd.get_program()));
    assert!(out.status.success(), "{what}: {}", describe(&out));
    out
}

fn describe(out: &Output) -> String {
    format!(
        "{}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether anything answers on the cluster's port.
    fn answers(pg: &PgCluster) -> bool {
        Command::new(pg.bin("pg_isready"))
            .args(["-q", "-h", "127.0.0.1", "-t", "5", "-p"])
            .arg(pg.port().to_string())
            .status()
            .expect("run pg_isready")
            .success()
    }

    #[test]
    fn committed_rows_survive_stop_and_kill9() {
        let Some(pg) = PgCluster::start() else { return };
        let url = pg.url();
        assert_eq!(
            url,
            format!("postgresql://jaring@127.0.0.1:{}/postgres", pg.port())
        );
        assert_eq!(pg.psql(&url, "select 1"), "1");
        assert_eq!(pg.psql(&url, "show fsync"), "on");
        assert_eq!(pg.psql(&url, "show max_connections"), "200");
        pg.psql(&url, "create table t (n int); insert into t values (1)");

        pg.stop();
        assert!(!answers(&pg), "still answering after stop()");
        pg.start_again();
        assert_eq!(pg.psql(&url, "select count(*) from t"), "1");

        pg.psql(&url, "insert into t values (2), (3)");
        pg.kill9();
        assert!(!answers(&pg), "still answering after kill9()");
        pg.start_again();
        assert_eq!(pg.psql(&url, "select count(*) from t"), "3");
    }

    #[test]
    fn databases_are_separate_and_drop_cleans_up() {
        let Some(pg) = PgCluster::start() else { return };
        let url = pg.create_database("realm_a");
        assert_eq!(
            url,
            format!("postgresql://jaring@127.0.0.1:{}/realm_a", pg.port())
        );
        assert_eq!(pg.psql(&url, "select current_database()"), "realm_a");
        pg.psql(&url, "create table only_here (n int)");
        let elsewhere = pg.psql(
            &pg.url(),
            "select count(*) from pg_tables where tablename = 'only_here'",
        );
        assert_eq!(elsewhere, "0");

        let dir = pg.dir.path().to_owned();
        let port = pg.port();
        let bin = pg.bin("pg_isready");
        drop(pg);
        assert!(!dir.exists(), "{} left behind", dir.display());
        let down = Command::new(bin)
            .args(["-q", "-h", "127.0.0.1", "-t", "5", "-p"])
            .arg(port.to_string())
            .status()
            .expect("run pg_isready");
        assert!(
            !down.success(),
            "server on port {port} still answers after drop"
        );
    }
}
