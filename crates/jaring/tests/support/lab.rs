//! The one `jaring lab` launcher of the binary's tests: it starts the lab, reads the table it
//! prints (one row per service: `  what  ADDR:PORT  how`) up to `Ctrl-C stops everything.`, and
//! stops it with SIGTERM.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Instant;

use super::PATIENCE;

/// A running `jaring lab`.
pub struct LabProcess {
    /// The lab's process.
    pub child: Child,
    /// Address by the table's first column ("time", "echo (tls)", "chat realm1", "web", …).
    pub addrs: HashMap<String, SocketAddr>,
    /// Everything it printed up to "Ctrl-C stops everything."
    pub printed: String,
}

impl LabProcess {
    /// `jaring lab --ephemeral --dir DIR <extra…>`.
    pub fn ephemeral(dir: &Path, extra: &[&str]) -> Self {
        let mut args = vec!["--ephemeral"];
        args.extend_from_slice(extra);
        Self::start(dir, &args, &[])
    }

    /// `jaring lab --dir DIR <args…>` with `env` set. `JARING_LAB_BIN` runs another build (a
    /// release one, for a measurement) instead of the test's.
    pub fn start(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        let binary = std::env::var_os("JARING_LAB_BIN")
            .unwrap_or_else(|| env!("CARGO_BIN_EXE_jaring").into());
        let mut child = Command::new(binary)
            .arg("lab")
            .arg("--dir")
            .arg(dir)
            .args(args)
            .env_remove("SSLKEYLOGFILE")
            .env_remove("RUST_LOG")
            .envs(env.iter().copied())
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut addrs = HashMap::new();
        let mut printed = String::new();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        for line in lines.by_ref() {
            let line = line.unwrap();
            printed.push_str(&line);
            printed.push('\n');
            if line.starts_with("Ctrl-C") {
                break;
            }
            if let Some((what, addr)) = row(&line) {
                addrs.insert(what, addr);
            }
        }
        // Whatever it prints later must not block it on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        assert!(
            printed.contains("Ctrl-C"),
            "the lab stopped early:\n{printed}"
        );
        Self {
            child,
            addrs,
            printed,
        }
    }

    /// The port of the table's row `what`.
    pub fn port(&self, what: &str) -> u16 {
        self.addr(what).port()
    }

    /// The address of the table's row `what`.
    pub fn addr(&self, what: &str) -> SocketAddr {
        *self
            .addrs
            .get(what)
            .unwrap_or_else(|| panic!("no {what:?} row in the lab's table:\n{}", self.printed))
    }

    /// SIGTERM, and the exit status once it stopped.
    pub fn terminate(&mut self) -> ExitStatus {
        self.signal("TERM")
    }

    /// Sends `signal` (`TERM`, `HUP`, …), and the exit status once it stopped.
    pub fn signal(&mut self, signal: &str) -> ExitStatus {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(Instant::now() < deadline, "the lab did not stop");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// SIGTERM, then a graceful stop with exit 0.
    pub fn stop(mut self) {
        let code = self.terminate();
        assert!(code.success(), "{code:?}");
    }
}

/// A table row: `  what  ADDR:PORT  how` → (what, address).
fn row(line: &str) -> Option<(String, SocketAddr)> {
    if !line.starts_with("  ") {
        return None;
    }
    let words: Vec<&str> = line.split_whitespace().collect();
    let at = words.iter().position(|w| w.parse::<SocketAddr>().is_ok())?;
    Some((words[..at].join(" "), words[at].parse().ok()?))
}

impl Drop for LabProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
