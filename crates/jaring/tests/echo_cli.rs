//! `jaring echo` and `jaring bench echo` as a user runs them, against a real server process.

mod support;

use predicates::prelude::*;
use support::{ServerProcess, echo_verifies, jaring, noise};

/// A `jaring echo serve` process on a free port; killed when dropped.
struct EchoServer(ServerProcess);

impl EchoServer {
    fn start(extra: &[&str]) -> Self {
        Self(ServerProcess::start(&["echo", "serve"], extra))
    }

    fn client(&self) -> assert_cmd::Command {
        let mut cmd = jaring();
        cmd.args(["echo", "client", "--port", &self.0.port.to_string()]);
        cmd
    }
}

#[test]
fn every_echo_subcommand_has_an_example() {
    for sub in [
        &["echo", "serve"][..],
        &["echo", "client"],
        &["bench", "echo"],
        &["info"],
    ] {
        jaring()
            .args(sub)
            .arg("--help")
            .assert()
            .success()
            .stdout(predicate::str::contains("Example"));
    }
}

#[test]
fn a_message_comes_back_in_chunks() {
    let server = EchoServer::start(&["--copy"]);
    server
        .client()
        .args(["--chunk", "16", "-v", "a message longer than sixteen bytes"])
        .assert()
        .success()
        .stdout("a message longer than sixteen bytes\n")
        .stderr(predicate::str::contains(
            "chunk 1: 16 bytes: a message longe",
        ));
}

#[test]
fn a_file_and_stdin_are_echoed_and_verified() {
    let server = EchoServer::start(&["--model", "threads"]);
    echo_verifies(|| server.client(), noise(0x2545_F491_4F6C_DD1D, 1 << 20));
}

#[test]
fn a_missing_file_is_a_usage_error() {
    let server = EchoServer::start(&[]);
    server
        .client()
        .args(["--file", "/nonexistent/file"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("cannot open /nonexistent/file"));
}

#[test]
fn interactive_reads_piped_lines_until_exit() {
    let server = EchoServer::start(&[]);
    server
        .client()
        .arg("--interactive")
        .write_stdin("hello\nsecond line\nexit\nnever sent\n")
        .assert()
        .success()
        .stdout("hello\nsecond line\n");
    // EOF ends it too.
    server
        .client()
        .arg("-i")
        .write_stdin("only\n")
        .assert()
        .success()
        .stdout("only\n");
}

#[test]
fn repeat_prints_timestamped_echoes() {
    let server = EchoServer::start(&["--model", "iterative"]);
    let out = server
        .client()
        .args(["--repeat", "3", "--interval", "0.05", "ping"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let out = String::from_utf8(out).expect("utf-8");
    assert_eq!(out.lines().count(), 3, "{out}");
    assert!(
        out.lines()
            .all(|l| l.starts_with('[') && l.ends_with("] ping")),
        "{out}"
    );
}

#[test]
fn a_refused_connection_exits_1_and_names_the_address() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    };
    jaring()
        .args(["echo", "client", "--port", &port.to_string(), "hi"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains(format!(
            "127.0.0.1:{port}: cannot connect"
        )));
}

#[test]
fn nothing_to_send_is_a_usage_error() {
    jaring().args(["echo", "client"]).assert().code(2);
    jaring()
        .args(["echo", "client", "--repeat", "2"])
        .assert()
        .code(2);
    jaring()
        .args(["echo", "client", "--chunk", "0", "x"])
        .assert()
        .code(2);
}

#[test]
fn bench_echo_reports_throughput_and_round_trips() {
    let server = EchoServer::start(&[]);
    let port = server.0.port.to_string();
    for mode in ["stream", "round-trip"] {
        let out = jaring()
            .args(["bench", "echo", "--port", &port, "--mode", mode])
            .args(["--connections", "2", "--duration", "1", "--json"])
            .assert()
            .success()
            .get_output()
            .stdout
            .clone();
        let report: serde_json::Value = serde_json::from_slice(&out).expect("json report");
        assert_eq!(report["workload"], "echo");
        assert_eq!(report["mode"], mode);
        assert!(
            report["requests"].as_u64().expect("requests") > 0,
            "{report}"
        );
        assert!(
            report["throughput"]["bytes"].as_u64().expect("bytes") > 0,
            "{report}"
        );
        assert_eq!(report["errors"], 0, "{report}");
    }
}

#[test]
fn ctrl_c_stops_an_echo_stream_bench_with_its_throughput() {
    let server = ServerProcess::start(&["echo", "serve"], &[]);
    let port = server.port.to_string();
    let (code, report) =
        support::interrupted_bench(&["echo", "--port", &port, "--connections", "4"]);
    assert_eq!(code, Some(0), "{report}");
    assert_eq!(report["interrupted"], true, "{report}");
    assert!(
        report["throughput"]["bytes"].as_u64().unwrap() > 0,
        "the streams' bytes count, not lost to an abort: {report}"
    );
}
