//! What the binary's tests share: running `jaring`, and starting a server process on a free port
//! whose address is read from its own log line.

// Each test binary uses its own subset of these helpers.
#![allow(dead_code)]

pub mod lab;
pub mod tshark;
pub mod web;

use std::ffi::OsStr;
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use assert_cmd::cargo::cargo_bin;

/// Generous: these machines are shared and noisy.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// The `jaring` binary, with a timeout so a hung command fails the test instead of hanging it.
pub fn jaring() -> assert_cmd::Command {
    let mut cmd = assert_cmd::Command::new(cargo_bin("jaring"));
    cmd.timeout(Duration::from_secs(60));
    cmd
}

/// Spawns `jaring <args…>` logging at info level, without colours, to a piped stderr (stdout
/// discarded).
pub fn spawn_logging<I, A>(args: I) -> Child
where
    I: IntoIterator<Item = A>,
    A: AsRef<OsStr>,
{
    Command::new(cargo_bin("jaring"))
        .args(args)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn jaring")
}

/// `len` bytes of xorshift noise from `seed`: no pattern a buffer size could line up with.
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Echoes `data` with the echo client `client()` makes, as a file and from stdin, then an empty
/// stdin: each run must report every byte echoed and, for `data`, its SHA-256.
pub fn echo_verifies(client: impl Fn() -> assert_cmd::Command, data: Vec<u8>) {
    use predicates::prelude::*;
    use sha2::{Digest as _, Sha256};
    use std::io::Write as _;

    let hash: String = Sha256::digest(&data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    file.write_all(&data).expect("write temp file");
    let expected = format!("echoed {} bytes in", data.len());
    client()
        .args(["--file", file.path().to_str().expect("utf-8 path")])
        .assert()
        .success()
        .stdout(
            predicate::str::contains(expected.clone()).and(predicate::str::contains(hash.clone())),
        );
    client()
        .args(["--file", "-"])
        .write_stdin(data)
        .assert()
        .success()
        .stdout(predicate::str::contains(expected).and(predicate::str::contains(hash)));
    // An empty file is a valid, if short, stream.
    client()
        .args(["--file", "-"])
        .write_stdin(Vec::new())
        .assert()
        .success()
        .stdout(predicate::str::contains("echoed 0 bytes"));
}

/// `jaring bench <args…> --duration 600`, which must fail (exit code 1) long before that: its
/// stderr.
pub fn bench_failure(args: &[&str]) -> String {
    let out = jaring()
        .arg("bench")
        .args(args)
        .args(["--duration", "600"])
        .assert()
        .code(1)
        .get_output()
        .stderr
        .clone();
    String::from_utf8(out).expect("utf-8 stderr")
}

/// Users u0..u{n-1} (display name "User i"), password `pw` at the cheapest hash cost so logins
/// are instant, in the realm store in `dir`.
pub fn bench_users(dir: &Path, n: usize) {
    let hash = jaring_chat::password::hash_blocking(
        "pw",
        jaring_chat::password::PasswordCost::INSECURE_TEST,
    )
    .expect("hash");
    let users = (0..n)
        .map(|i| jaring_chat::storage::UserRecord {
            name: format!("u{i}"),
            display_name: format!("User {i}"),
            password_hash: hash.clone(),
            bench: false,
        })
        .collect();
    add_users(dir, users);
}

/// A `jaring … serve` process on a free loopback port; killed when dropped.
#[derive(Debug)]
pub struct ServerProcess {
    child: Child,
    /// The port it logged.
    pub port: u16,
    /// The federation port, for a realm started with [`ServerProcess::realm`] whose config has
    /// peers.
    pub federation_port: Option<u16>,
}

impl ServerProcess {
    /// Runs `jaring <command…> --bind 127.0.0.1 --port 0 <extra…>` and waits for its "listening"
    /// log line.
    pub fn start(command: &[&str], extra: &[&str]) -> Self {
        let mut args: Vec<&OsStr> = command.iter().map(OsStr::new).collect();
        args.extend(["--bind", "127.0.0.1", "--port", "0"].map(OsStr::new));
        args.extend(extra.iter().map(OsStr::new));
        Self::run(args)
    }

    /// Runs `jaring <args…>` exactly as given (e.g. a server whose config file sets 127.0.0.1 and
    /// port 0) and waits for the runtime's "listening" log line.
    pub fn run<I, A>(args: I) -> Self
    where
        I: IntoIterator<Item = A>,
        A: AsRef<OsStr>,
    {
        Self::spawn(args, |line| {
            let port = line.split("addr=127.0.0.1:").nth(1)?;
            let port = port.split_whitespace().next().and_then(|p| p.parse().ok());
            Some((port.expect("port in log line"), None))
        })
    }

    /// Runs `jaring chat serve --config CONFIG <extra…>` (a config from [`realm_config`]) and
    /// waits for its "chat realm ready" line, which names the client and federation ports.
    pub fn realm(config: &Path, extra: &[&str]) -> Self {
        let mut args = vec![
            OsStr::new("chat"),
            OsStr::new("serve"),
            OsStr::new("--config"),
        ];
        args.push(config.as_os_str());
        args.extend(extra.iter().map(OsStr::new));
        Self::spawn(args, |line| {
            if !line.contains("chat realm ready") {
                return None;
            }
            let port_after = |key: &str| -> Option<u16> {
                let rest = &line[line.find(key)? + key.len()..];
                let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                digits.parse().ok()
            };
            let client = port_after("--server 127.0.0.1:").expect("client port in log line");
            Some((client, port_after("federation=127.0.0.1:")))
        })
    }

    /// Runs `jaring chat serve --bind 127.0.0.1 --port 0 --web-port 0 <extra…>` and waits for
    /// its "web ready" line; `port` is the client port, `federation_port` holds the web port.
    pub fn realm_web(extra: &[&str]) -> Self {
        let mut args: Vec<&str> = vec!["chat", "serve", "--bind", "127.0.0.1", "--port", "0"];
        args.extend(["--web-port", "0"]);
        args.extend(extra);
        let mut client = None;
        Self::spawn(args, move |line| {
            let number = |key: &str| -> Option<u16> {
                let rest = &line[line.find(key)? + key.len()..];
                let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                digits.parse().ok()
            };
            if line.contains("chat realm ready") {
                client = number("--server 127.0.0.1:");
            }
            let web = number("web ready: http://127.0.0.1:")
                .or_else(|| number("web ready: https://127.0.0.1:"))?;
            Some((client.expect("the client port is logged first"), Some(web)))
        })
    }

    /// Runs `jaring echo serve --bind 127.0.0.1 --port 0 --tls-port 0 <extra…>` (`extra` names
    /// the certificate and key) and waits for both of its ports; `federation_port` holds the TLS
    /// one.
    pub fn echo_tls(extra: &[&str]) -> Self {
        let mut args: Vec<&str> = vec!["echo", "serve", "--bind", "127.0.0.1", "--port", "0"];
        args.extend(["--tls-port", "0"]);
        args.extend(extra);
        let mut plain = None;
        Self::spawn(args, move |line| {
            let number = |key: &str| -> Option<u16> {
                let rest = &line[line.find(key)? + key.len()..];
                let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                digits.parse().ok()
            };
            if line.contains("echo server ready") {
                plain = number("--port ");
            }
            let tls = number("echo over TLS on port ")?;
            Some((
                plain.expect("the plaintext port is logged first"),
                Some(tls),
            ))
        })
    }

    /// Spawns `jaring <args…>` and reads its log until `ready` finds the ports in a line.
    fn spawn<I, A>(args: I, mut ready: impl FnMut(&str) -> Option<(u16, Option<u16>)>) -> Self
    where
        I: IntoIterator<Item = A>,
        A: AsRef<OsStr>,
    {
        let mut child = spawn_logging(args);
        let stderr = child.stderr.take().expect("stderr");
        let mut lines = BufReader::new(stderr).lines();
        let deadline = Instant::now() + PATIENCE;
        let (port, federation_port) = loop {
            assert!(Instant::now() < deadline, "server did not log its address");
            let line = lines
                .next()
                .expect("server still running")
                .expect("read log");
            if let Some(ports) = ready(&line) {
                break ports;
            }
        };
        // Keep draining stderr so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Self {
            child,
            port,
            federation_port,
        }
    }

    /// Whether the process is still running (not exited, not killed).
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().expect("wait").is_none()
    }

    /// Ends the process with SIGKILL (`kill -9`: no shutdown, no flush) and reaps it.
    pub fn kill9(&mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reap");
    }

    /// The process id, for signals.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the process to exit and returns its exit code (`None` if a signal ended it).
    pub fn wait_exit(&mut self) -> Option<i32> {
        exit_code(&mut self.child, "the server did not exit")
    }
}

/// Waits (at most [`PATIENCE`], else fails saying `stuck`) for `child` to exit: its exit code,
/// `None` if a signal ended it.
fn exit_code(child: &mut Child, stuck: &str) -> Option<i32> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status.code();
        }
        assert!(Instant::now() < deadline, "{stuck}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A blocking chat client speaking the realm's protocol: one request line, one framed reply.
pub struct ChatClient {
    /// The connection.
    pub stream: std::net::TcpStream,
    framer: jaring_proto::chat::ReplyFramer,
}

impl ChatClient {
    /// Connects to 127.0.0.1:`port`; every read waits at most [`PATIENCE`].
    pub fn connect(port: u16) -> Self {
        let stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream.set_read_timeout(Some(PATIENCE)).expect("timeout");
        Self {
            stream,
            framer: jaring_proto::chat::ReplyFramer::new(64 << 20),
        }
    }

    /// Sends `line` and returns the reply, or `None` if the connection ended first.
    pub fn call(&mut self, line: &str) -> Option<serde_json::Value> {
        use std::io::Write as _;
        self.stream
            .write_all(format!("{line}\r\n").as_bytes())
            .ok()?;
        self.reply()
    }

    /// The next reply or event, or `None` if the connection ended first.
    pub fn reply(&mut self) -> Option<serde_json::Value> {
        use std::io::Read as _;
        let mut buf = [0u8; 8192];
        loop {
            if let Some(v) = self.framer.poll_reply().ok()? {
                return Some(v);
            }
            let n = self.stream.read(&mut buf).ok()?;
            if n == 0 {
                return None;
            }
            self.framer.handle_input(&buf[..n]);
        }
    }

    /// Writes `lines` in one go, each ending in CR LF, without reading a reply (pipelining);
    /// `false` if the connection ended.
    pub fn write_lines(&mut self, lines: &[String]) -> bool {
        use std::io::Write as _;
        let mut bytes = String::new();
        for line in lines {
            bytes.push_str(line);
            bytes.push_str("\r\n");
        }
        self.stream.write_all(bytes.as_bytes()).is_ok()
    }

    /// Sends `line` and returns the reply, asserting it is OK.
    pub fn ok(&mut self, line: &str) -> serde_json::Value {
        let r = self
            .call(line)
            .unwrap_or_else(|| panic!("no reply to {line:?}"));
        assert_eq!(r["status"], "OK", "{line:?}: {r}");
        r
    }

    /// Logs in as `user` with `password`; returns the token.
    pub fn auth(&mut self, user: &str, password: &str) -> String {
        let r = self
            .call(&format!("auth {user} {password}"))
            .expect("a reply");
        assert_eq!(r["status"], "OK", "{r}");
        r["tokenid"].as_str().expect("a token").to_owned()
    }
}

/// A process's resident memory in KiB (VmRSS), or `None` once it is gone.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Adds `users` to the SQLite realm in `dir` (before its server starts), through the store's
/// user administration, on a runtime of its own.
pub fn add_users(dir: &std::path::Path, users: Vec<jaring_chat::storage::UserRecord>) {
    use jaring_chat::storage::UserAdmin as _;
    let dir = dir.to_owned();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        rt.block_on(async move {
            let store = jaring_chat_sqlite::SqliteStore::open(
                &dir,
                jaring_chat_sqlite::Synchronous::Full,
                jaring_chat_sqlite::DEFAULT_MAX_BATCH,
            )
            .expect("open the realm's store");
            for u in users {
                store.add_user(u).await.expect("add a user");
            }
            store.close().await;
        });
    })
    .join()
    .expect("users added");
}

/// The password [`add_user`] gives `user`.
pub fn password(user: &str) -> String {
    format!("{user}-pw")
}

/// Where a realm from [`realm_config`] keeps its data.
#[derive(Debug, Clone, Copy)]
pub enum Storage<'a> {
    /// SQLite in `NAME-data/` beside the config file.
    Sqlite,
    /// The PostgreSQL database at this URL.
    Postgres(&'a str),
}

/// The secret every pair of test realms shares.
pub const FEDERATION_SECRET: &str = "0123456789abcdef0123456789abcdef";

/// Writes `DIR/NAME.toml`: realm NAME on 127.0.0.1 port 0, cheap password hashing, `storage`,
/// and, when `peers` (name, address) is not empty, federation on port 0 with those peers.
pub fn realm_config(
    dir: &Path,
    name: &str,
    storage: Storage<'_>,
    peers: &[(&str, &str)],
) -> PathBuf {
    let mut text = format!(
        "[realm]\nname = \"{name}\"\ndata_dir = \"{name}-data\"\n\
         [listen]\nbind = \"127.0.0.1\"\nport = 0\n\
         [passwords]\nmemory_kib = 8\niterations = 1\n"
    );
    match storage {
        Storage::Sqlite => text.push_str("[storage]\nbackend = \"sqlite\"\n"),
        Storage::Postgres(url) => {
            text.push_str(&format!(
                "[storage]\nbackend = \"postgres\"\nurl = \"{url}\"\n"
            ));
        }
    }
    if !peers.is_empty() {
        text.push_str("[federation]\nport = 0\n");
    }
    for (peer, address) in peers {
        text.push_str(&format!(
            "[[peer]]\nname = \"{peer}\"\naddress = \"{address}\"\nsecret = \"{FEDERATION_SECRET}\"\n"
        ));
    }
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).expect("write the realm config");
    path
}

/// `jaring chat user add USER --config CONFIG`, the password ([`password`]) on stdin.
pub fn add_user(config: &Path, user: &str) {
    jaring()
        .args(["chat", "user", "add", user, "--config"])
        .arg(config)
        .write_stdin(format!("{}\n", password(user)))
        .assert()
        .success();
}

/// Polls `done` every 50 ms until it is true; fails the test after `patience`.
pub fn wait_for(what: &str, patience: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + patience;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "timed out after {patience:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs `jaring bench <args…> --json` for a long `--duration`, sends it Ctrl-C (SIGINT) once its
/// load is running, and returns its exit code and JSON report.
pub fn interrupted_bench(args: &[&str]) -> (Option<i32>, serde_json::Value) {
    let mut child = Command::new(cargo_bin("jaring"))
        .arg("bench")
        .args(args)
        .args(["--duration", "600", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn jaring bench");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    // The bench says when its load starts; that line comes after its Ctrl-C handler is set.
    loop {
        let line = lines
            .next()
            .expect("the bench ended before it started")
            .expect("read the bench's stderr");
        if line.contains("Ctrl-C stops early") {
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    // Some load first, so the report has something in it.
    std::thread::sleep(Duration::from_millis(500));
    let sent = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(sent.success(), "SIGINT not delivered");
    let deadline = Instant::now() + PATIENCE;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the bench") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the bench did not stop after Ctrl-C"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut out = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().expect("stdout"), &mut out)
        .expect("read the report");
    let report = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out:?}"));
    (status.code(), report)
}

/// Whether this test runs as root (what network namespaces, and so the lab's three hosts, need).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .is_some_and(|ids| ids.split_whitespace().nth(1) == Some("0"))
}

/// Sends `lines` (with `{T}` for the token) on a fresh connection as `user` (password
/// `surabaya`, the lab's), pipelined in batches of 50, each reply OK, `pause` between batches.
pub fn flood(port: u16, user: &str, lines: &[String], pause: Duration) {
    let mut c = ChatClient::connect(port);
    let token = c.auth(user, "surabaya");
    for batch in lines.chunks(50) {
        let batch: Vec<String> = batch.iter().map(|l| l.replace("{T}", &token)).collect();
        assert!(c.write_lines(&batch), "{user}: the realm hung up");
        for line in &batch {
            let r = c
                .reply()
                .unwrap_or_else(|| panic!("{user}: no reply to {line}"));
            assert_eq!(r["status"], "OK", "{line}: {r}");
        }
        std::thread::sleep(pause);
    }
}

/// Whether the external tool `program` runs (`program probe…` exits 0). When it does not, the
/// test that asked is skipped with one line saying why, except under `CI=true`, where a missing
/// tool fails it.
pub fn have_tool(program: &str, probe: &[&str], test: &str) -> bool {
    let ok = Command::new(program)
        .args(probe)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
        assert!(!ci, "{test}: `{program}` is missing and CI=true");
        eprintln!("{test}: skipped: `{program}` is not installed (or does not run)");
    }
    ok
}

/// Runs a Python TLS client: connects to `host`:`port` verifying the server against `ca` with
/// `ssl.create_default_context` and `VERIFY_X509_STRICT` (the host name checked), sends
/// `payload`, and returns what came back up to and including the first LF.
pub fn python_tls_call(host: &str, port: u16, ca: &Path, payload: &str) -> Result<String, String> {
    const SCRIPT: &str = r#"
import socket, ssl, sys
host, port, ca, payload = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
ctx = ssl.create_default_context(cafile=ca)
ctx.verify_flags |= ssl.VERIFY_X509_STRICT
with socket.create_connection((host, port), timeout=30) as raw:
    with ctx.wrap_socket(raw, server_hostname=host) as s:
        s.sendall(payload.encode())
        got = b""
        while b"\n" not in got:
            chunk = s.recv(4096)
            if not chunk:
                break
            got += chunk
        sys.stdout.write(got.decode())
"#;
    let out = Command::new("python3")
        .args(["-c", SCRIPT, host, &port.to_string()])
        .arg(ca)
        .arg(payload)
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A test CA and a leaf it signed for the loopback names (jaring-testkit's), with the paths as
/// the command lines of `jaring` want them.
pub struct TestPki(jaring_testkit::tls::TestPki);

impl TestPki {
    /// Makes the CA and the leaf and writes `ca.pem`, `leaf.pem` and `leaf-key.pem`.
    pub fn create() -> Self {
        Self(jaring_testkit::tls::TestPki::new())
    }

    /// The directory holding the files.
    pub fn dir(&self) -> &Path {
        self.0.dir()
    }

    /// The CA certificate, for clients' `--ca`.
    pub fn ca(&self) -> String {
        utf8(self.0.ca_file())
    }

    /// The leaf certificate, for servers' `--tls-cert`.
    pub fn cert(&self) -> String {
        utf8(self.0.cert_file())
    }

    /// The leaf's key, for servers' `--tls-key`.
    pub fn key(&self) -> String {
        utf8(self.0.key_file())
    }

    /// `--tls-cert CERT --tls-key KEY`, for a server's command line.
    pub fn server_args(&self) -> [String; 4] {
        [
            "--tls-cert".into(),
            self.cert(),
            "--tls-key".into(),
            self.key(),
        ]
    }
}

fn utf8(path: PathBuf) -> String {
    path.into_os_string()
        .into_string()
        .expect("a UTF-8 temp path")
}

/// `openssl s_client` to 127.0.0.1:`port`, trusting only `ca` and refusing any verification
/// failure, with `extra` flags: sends `input`, keeps stdin open (s_client hangs up at its EOF)
/// until what it printed satisfies `done` or the server closes, within [`PATIENCE`]. Returns its
/// stdout and stderr.
pub fn openssl_s_client(
    port: u16,
    ca: &Path,
    extra: &[&str],
    input: &[u8],
    done: impl Fn(&[u8]) -> bool + Send + 'static,
) -> (Vec<u8>, String) {
    use std::io::{Read as _, Write as _};
    let mut child = Command::new("openssl")
        .args(["s_client", "-verify_return_error", "-connect"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("-CAfile")
        .arg(ca)
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run openssl s_client");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(input).expect("write to s_client");
    let mut stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match stdout.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
            if done(&seen) {
                break;
            }
        }
        let _ = tx.send(seen);
    });
    let seen = rx.recv_timeout(PATIENCE).unwrap_or_default();
    drop(stdin);
    let _ = child.kill();
    let out = child.wait_with_output().expect("wait for s_client");
    (seen, String::from_utf8_lossy(&out.stderr).into_owned())
}

/// A free loopback port (bound, then released): for a server that must come back on the same
/// port after a restart.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// `jaring chat client <args…>` as a running process with a piped stdin (kept open until
/// [`ClientProcess::finish`]) whose stdout lines and stderr lines are collected as they come.
pub struct ClientProcess {
    child: Child,
    stdin: Option<std::process::ChildStdin>,
    /// Every stdout line so far.
    pub stdout: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    /// Every stderr line so far (the client's notices: Disconnected, Reconnected, …).
    pub stderr: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl ClientProcess {
    /// Starts the client with `args` after `chat client`.
    pub fn start(args: &[&str]) -> Self {
        let mut child = Command::new(cargo_bin("jaring"))
            .args(["chat", "client"])
            .args(args)
            .env("NO_COLOR", "1")
            .env("TZ", "UTC")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn jaring chat client");
        let collect = |pipe: Box<dyn std::io::Read + Send>| {
            let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
            let sink = std::sync::Arc::clone(&lines);
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    sink.lock().expect("lines").push(line);
                }
            });
            lines
        };
        let stdout = collect(Box::new(child.stdout.take().expect("stdout")));
        let stderr = collect(Box::new(child.stderr.take().expect("stderr")));
        Self {
            stdin: child.stdin.take(),
            child,
            stdout,
            stderr,
        }
    }

    /// Types `line` (a line end is added).
    pub fn type_line(&mut self, line: &str) {
        use std::io::Write as _;
        let stdin = self.stdin.as_mut().expect("stdin still open");
        writeln!(stdin, "{line}").expect("write to the client");
        stdin.flush().expect("flush");
    }

    /// Stdout lines parsed as JSON (with `--json`), skipping any that are not.
    pub fn json_lines(&self) -> Vec<serde_json::Value> {
        self.stdout
            .lock()
            .expect("lines")
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Closes stdin (the end of input) and waits for the exit: its code.
    pub fn finish(mut self) -> Option<i32> {
        drop(self.stdin.take());
        exit_code(&mut self.child, "the client did not exit")
    }
}

impl Drop for ClientProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP relay on a loopback port to `upstream` that can reset every connection through it: an
/// RST to both ends (SO_LINGER 0, then the socket's only descriptor closed), no FIN first.
pub struct Relay {
    /// Where clients connect.
    pub port: u16,
    reset: tokio::sync::broadcast::Sender<()>,
    /// Connections accepted so far.
    pub accepted: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Relay {
    /// Starts relaying to 127.0.0.1:`upstream`, on a runtime of its own.
    pub fn start(upstream: u16) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the relay");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("addr").port();
        let (reset, _) = tokio::sync::broadcast::channel(16);
        let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (resets, count) = (reset.clone(), std::sync::Arc::clone(&accepted));
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                loop {
                    let Ok((mut client, _)) = listener.accept().await else {
                        continue;
                    };
                    let mut reset = resets.subscribe();
                    count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    tokio::spawn(async move {
                        let Ok(mut server) =
                            tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await
                        else {
                            return;
                        };
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                            _ = reset.recv() => {
                                for s in [&client, &server] {
                                    let _ = socket2::SockRef::from(s).set_linger(Some(Duration::ZERO));
                                }
                            }
                        }
                    });
                }
            });
        });
        Self {
            port,
            reset,
            accepted,
        }
    }

    /// Resets every connection through the relay now.
    pub fn reset_all(&self) {
        let _ = self.reset.send(());
    }
}

/// Runs a Python program; its stdout, or a panic with its stderr.
pub fn python(program: &str, args: &[&str]) -> String {
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(program)
        .args(args)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("python printed UTF-8")
}
