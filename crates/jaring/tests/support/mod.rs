//! What the binary's tests share: running `jaring`, and starting a server process on a free port
//! whose address is read from its own log line.

// Each test binary uses its own subset of these helpers.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::io::{BufRead as _, BufReader};
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

/// A `jaring … serve` process on a free loopback port; killed when dropped.
#[derive(Debug)]
pub struct ServerProcess {
    child: Child,
    /// The port it logged.
    pub port: u16,
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
        let mut child = Command::new(cargo_bin("jaring"))
            .args(args)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn jaring");
        let stderr = child.stderr.take().expect("stderr");
        let mut lines = BufReader::new(stderr).lines();
        let deadline = Instant::now() + PATIENCE;
        let port = loop {
            assert!(Instant::now() < deadline, "server did not log its address");
            let line = lines
                .next()
                .expect("server still running")
                .expect("read log");
            if let Some(rest) = line.split("addr=127.0.0.1:").nth(1) {
                break rest
                    .split_whitespace()
                    .next()
                    .and_then(|p| p.parse().ok())
                    .expect("port in log line");
            }
        };
        // Keep draining stderr so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Self { child, port }
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
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status.code();
            }
            assert!(Instant::now() < deadline, "server exits");
            std::thread::sleep(Duration::from_millis(20));
        }
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
