//! The `jaring` binary as a user runs it: help, completions, exit codes, a real server and client,
//! and graceful shutdown on SIGTERM.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use assert_cmd::cargo::cargo_bin;
use predicates::prelude::*;

fn jaring() -> assert_cmd::Command {
    assert_cmd::Command::new(cargo_bin("jaring"))
}

/// Starts `jaring time serve` on a free port and returns it with the port it logged.
fn serve(extra: &[&str]) -> (Child, u16) {
    let mut child = Command::new(cargo_bin("jaring"))
        .args(["time", "serve", "--bind", "127.0.0.1", "--port", "0"])
        .args(extra)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn jaring");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let deadline = Instant::now() + Duration::from_secs(30);
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
    (child, port)
}

#[test]
fn help_lists_the_services() {
    jaring()
        .arg("--help")
        .assert()
        .success()
        .stdout(predicate::str::contains("time").and(predicate::str::contains("bench")));
}

#[test]
fn every_time_subcommand_has_an_example() {
    for sub in [["time", "serve"], ["time", "client"], ["bench", "time"]] {
        jaring()
            .args(sub)
            .arg("--help")
            .assert()
            .success()
            .stdout(predicate::str::contains("Example"));
    }
}

#[test]
fn completions_are_printed() {
    jaring()
        .args(["completions", "bash"])
        .assert()
        .success()
        .stdout(predicate::str::contains("jaring"));
}

#[test]
fn usage_errors_exit_2() {
    jaring()
        .args(["time", "serve", "--model", "forking"])
        .assert()
        .code(2);
    jaring()
        .args(["time", "serve", "--port", "0", "--tz", "Mars/Olympus"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "unknown time zone \"Mars/Olympus\"",
        ));
    jaring()
        .args(["time", "serve", "--port", "0", "--idle-timeout", "0"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("idle timeout"));
}

#[test]
fn a_refused_client_exits_1_naming_host_and_port() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    jaring()
        .args(["time", "client", "--port", &port.to_string()])
        .assert()
        .code(1)
        .stderr(predicate::str::contains(format!(
            "127.0.0.1:{port}: cannot connect"
        )));
}

#[test]
fn client_and_server_talk_and_sigterm_stops_the_server_cleanly() {
    let (mut server, port) = serve(&["--tz", "UTC"]);
    jaring()
        .args([
            "time",
            "client",
            "--port",
            &port.to_string(),
            "--count",
            "2",
            "--interval",
            "0.05",
        ])
        .assert()
        .success()
        .stdout(predicate::str::is_match(r"^JAM \d\d:\d\d:\d\d\nJAM \d\d:\d\d:\d\d\n$").unwrap());

    // A client is connected when the signal arrives: it is told, and the server still exits 0.
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let status = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let mut said = String::new();
    std::io::Read::read_to_string(&mut conn, &mut said).unwrap();
    assert_eq!(said, "ERR server shutting down; closing\r\n");
    let deadline = Instant::now() + Duration::from_secs(30);
    let code = loop {
        if let Some(status) = server.try_wait().unwrap() {
            break status.code();
        }
        assert!(Instant::now() < deadline, "server exits after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(code, Some(0));
}

#[test]
fn bench_time_reports_json() {
    let (mut server, port) = serve(&[]);
    let out = jaring()
        .args([
            "bench",
            "time",
            "--port",
            &port.to_string(),
            "-c",
            "4",
            "-d",
            "0.5",
            "--json",
        ])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let report: serde_json::Value = serde_json::from_slice(&out).expect("JSON report");
    assert!(report["requests"].as_u64().unwrap() > 0, "{report}");
    assert_eq!(report["errors"].as_u64(), Some(0), "{report}");
    assert_eq!(report["mode"], "persistent");
    assert!(report["latency"]["p99_us"].as_u64().is_some());

    let out = jaring()
        .args([
            "bench",
            "time",
            "--port",
            &port.to_string(),
            "-c",
            "2",
            "-d",
            "0.5",
            "--mode",
            "churn",
            "--json",
        ])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let report: serde_json::Value = serde_json::from_slice(&out).expect("JSON report");
    assert!(report["requests"].as_u64().unwrap() > 0, "{report}");
    assert_eq!(report["errors"].as_u64(), Some(0), "{report}");
    server.kill().unwrap();
    server.wait().unwrap();
}
