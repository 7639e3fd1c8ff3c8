//! The `jaring` binary as a user runs it: help, completions, exit codes, a real server and client,
//! and graceful shutdown on SIGTERM.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

mod support;

use std::process::Command;
use std::time::Duration;

use predicates::prelude::*;
use support::{ServerProcess, bench_failure, jaring};

fn serve(extra: &[&str]) -> ServerProcess {
    ServerProcess::start(&["time", "serve"], extra)
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
fn the_manual_pages_are_printed_or_written() {
    jaring()
        .arg("man")
        .assert()
        .success()
        .stdout(predicate::str::contains(".TH jaring 1").and(predicate::str::contains(".SH NAME")));
    let dir = tempfile::tempdir().unwrap();
    jaring()
        .args(["man", "--dir"])
        .arg(dir.path())
        .assert()
        .success();
    for page in ["jaring.1", "jaring-chat-serve.1", "jaring-bench-time.1"] {
        let text = std::fs::read_to_string(dir.path().join(page)).unwrap();
        assert!(text.contains(".SH SYNOPSIS"), "{page}: {text}");
    }
}

#[test]
fn completions_read_in_part_are_not_an_error() {
    use std::io::Read as _;
    // The script is larger than a pipe holds, so the writer is still writing when `head` closes.
    let mut child = Command::new(assert_cmd::cargo::cargo_bin("jaring"))
        .args(["completions", "bash"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 16];
    child.stdout.take().unwrap().read_exact(&mut first).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_bench_against_a_dead_port_fails_at_once_with_one_line() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = dead.local_addr().unwrap().port().to_string();
    drop(dead);
    for workload in [&["time"][..], &["echo"], &["chat"], &["chat", "--group"]] {
        // A 600 s run: only failing before it starts ends within the command's 60 s timeout.
        let err = bench_failure(&[workload, &["--port", port.as_str()]].concat());
        assert_eq!(err.lines().count(), 1, "{workload:?}: {err}");
        assert!(
            err.contains("cannot connect to 127.0.0.1:") && err.contains("is the server running"),
            "{workload:?}: {err}"
        );
    }
}

#[test]
fn ctrl_c_stops_a_bench_and_prints_what_it_measured() {
    let server = serve(&[]);
    let port = server.port.to_string();
    let (code, report) = support::interrupted_bench(&["time", "--port", &port]);
    assert_eq!(code, Some(0), "{report}");
    assert_eq!(report["interrupted"], true, "{report}");
    assert!(report["requests"].as_u64().unwrap() > 0, "{report}");
    let secs = report["duration_s"].as_f64().unwrap();
    assert!(secs > 0.0 && secs < 600.0, "{report}");
}

/// `kill -SIGNAL pid`.
fn signal(name: &str, pid: u32) {
    let sent = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .unwrap();
    assert!(sent.success(), "kill -{name} {pid}");
}

#[test]
fn a_fixed_rate_is_kept_and_a_stall_is_charged_to_every_request_it_delayed() {
    use std::io::BufRead as _;
    let server = serve(&[]);
    let port = server.port.to_string();
    // 200 requests a second on 4 connections for 2 s; the server is stopped for 0.5 s in the
    // middle. About 100 requests fall due during the stall: timed from when they were due, a
    // quarter of all requests waited for it, so even the 90th percentile shows it (timed from
    // when they were sent, only the 4 in flight would).
    let mut child = Command::new(assert_cmd::cargo::cargo_bin("jaring"))
        .args(["bench", "time", "--port", &port, "-c", "4", "--rate", "200"])
        .args(["--duration", "2", "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    assert!(
        lines.any(|l| l.unwrap().contains("Ctrl-C stops early")),
        "the bench did not start"
    );
    std::thread::sleep(Duration::from_millis(500));
    signal("STOP", server.pid());
    std::thread::sleep(Duration::from_millis(500));
    signal("CONT", server.pid());
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["rate_per_s"], 200.0, "{report}");
    let requests = report["requests"].as_u64().unwrap();
    // Never more than the schedule holds (2 s × 200/s), whatever the timing.
    assert!(requests <= 404, "{report}");
    assert!(
        requests >= 200,
        "at least half the schedule is kept: {report}"
    );
    let l = &report["latency"];
    assert!(l["max_us"].as_u64().unwrap() >= 300_000, "{report}");
    assert!(l["p90_us"].as_u64().unwrap() >= 20_000, "{report}");
    jaring()
        .args(["bench", "echo", "--port", &port, "--rate", "10"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("no requests to pace"));
    jaring()
        .args([
            "bench", "chat", "--group", "--port", &port, "--plot", "g.svg",
        ])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("not --group"));
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
    jaring()
        .args(["time", "serve", "--port", "0", "--grace=-1"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "--grace must be a number of seconds",
        ));
    jaring()
        .args(["time", "client", "--count", "0"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--count"));
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
    let mut server = serve(&["--tz", "UTC"]);
    let port = server.port;
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
        .args(["-TERM", &server.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let mut said = String::new();
    std::io::Read::read_to_string(&mut conn, &mut said).unwrap();
    assert_eq!(said, "ERR server shutting down; closing\r\n");
    let code = server.wait_exit();
    assert_eq!(code, Some(0));
}

/// `jaring bench time --port PORT -d 0.5 <extra…>`'s standard output (it must succeed).
fn bench_time(port: u16, extra: &[&str]) -> Vec<u8> {
    jaring()
        .args(["bench", "time", "--port", &port.to_string(), "-d", "0.5"])
        .args(extra)
        .assert()
        .success()
        .get_output()
        .stdout
        .clone()
}

#[test]
fn bench_time_reports_json() {
    let server = serve(&[]);
    let port = server.port;
    let out = bench_time(port, &["-c", "4", "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&out).expect("JSON report");
    assert!(report["requests"].as_u64().unwrap() > 0, "{report}");
    assert_eq!(report["errors"].as_u64(), Some(0), "{report}");
    assert_eq!(report["mode"], "persistent");
    assert!(report["latency"]["p99_us"].as_u64().is_some());
    let buckets = report["latency"]["buckets"].as_array().unwrap();
    assert_eq!(
        buckets
            .iter()
            .map(|b| b["count"].as_u64().unwrap())
            .sum::<u64>(),
        report["requests"].as_u64().unwrap(),
        "the distribution counts every request once"
    );

    // For people: separated counts, latency in fitting units, and the distribution drawn.
    let table = String::from_utf8(bench_time(port, &["-c", "4"])).unwrap();
    for row in ["latency p99.9", "latency distribution", "%  █"] {
        assert!(table.contains(row), "{row:?} missing from\n{table}");
    }
    let requests = table
        .lines()
        .find(|l| l.contains(" requests ") && !l.contains('/'))
        .unwrap();
    assert!(
        requests.contains(',') || requests.split_whitespace().nth(2).unwrap().len() <= 3,
        "{requests}"
    );

    // Samples every 0.1 s: on stderr, in the JSON and in the CSV file.
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("samples.csv");
    let csv_arg = csv.to_str().unwrap();
    let out = bench_time(port, &["-c", "2", "-i", "0.1", "--csv", csv_arg, "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&out).expect("JSON report");
    let intervals = report["intervals"].as_array().unwrap();
    assert!(intervals.len() >= 2, "{report}");
    let sampled: u64 = intervals
        .iter()
        .map(|i| i["requests"].as_u64().unwrap())
        .sum();
    assert!(
        sampled > 0 && sampled <= report["requests"].as_u64().unwrap(),
        "{report}"
    );
    let rows = std::fs::read_to_string(&csv).unwrap();
    assert_eq!(rows.lines().count(), intervals.len() + 1, "{rows}");
    assert!(
        rows.starts_with("end_s,requests,errors,requests_per_s\n"),
        "{rows}"
    );

    // The latency histogram as an HdrHistogram interval log that its own parser reads back.
    let hdr = dir.path().join("latency.hlog");
    let out = bench_time(
        port,
        &["-c", "2", "--hdr-out", hdr.to_str().unwrap(), "--json"],
    );
    let report: serde_json::Value = serde_json::from_slice(&out).expect("JSON report");
    let log = std::fs::read(&hdr).unwrap();
    let mut logged = Vec::new();
    for entry in hdrhistogram::serialization::interval_log::IntervalLogIterator::new(&log) {
        if let hdrhistogram::serialization::interval_log::LogEntry::Interval(h) = entry.unwrap() {
            use base64::Engine as _;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(h.encoded_histogram())
                .unwrap();
            let h: hdrhistogram::Histogram<u64> = hdrhistogram::serialization::Deserializer::new()
                .deserialize(&mut bytes.as_slice())
                .unwrap();
            logged.push(h.len());
        }
    }
    assert_eq!(logged, [report["requests"].as_u64().unwrap()], "{report}");

    // The plot: an SVG document with the requests/s line and one bar per latency bucket.
    let svg = dir.path().join("run.svg");
    let out = bench_time(
        port,
        &["-c", "2", "--plot", svg.to_str().unwrap(), "--json"],
    );
    let report: serde_json::Value = serde_json::from_slice(&out).expect("JSON report");
    let text = std::fs::read_to_string(&svg).unwrap();
    let doc = roxmltree::Document::parse(&text).expect("the plot is well-formed XML");
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    let texts: Vec<&str> = doc
        .descendants()
        .filter(|n| n.has_tag_name("text"))
        .filter_map(|n| n.text())
        .map(str::trim)
        .collect();
    for caption in [
        "time (persistent) against",
        "latency: requests taking at most",
    ] {
        assert!(
            texts.iter().any(|t| t.contains(caption)),
            "{caption:?} not in {texts:?}"
        );
    }
    let line = doc
        .descendants()
        .filter(|n| n.has_tag_name("polyline"))
        .find(|n| n.attribute("stroke") == Some("#0000FF"))
        .expect("the requests/s line");
    assert!(line.attribute("points").unwrap().split(' ').count() >= 2);
    let bars = doc
        .descendants()
        .filter(|n| n.has_tag_name("rect") && n.attribute("fill") == Some("#0000FF"))
        .count();
    assert_eq!(
        bars,
        report["latency"]["buckets"].as_array().unwrap().len(),
        "one bar per latency bucket"
    );
    jaring()
        .args([
            "bench",
            "time",
            "--port",
            &port.to_string(),
            "--plot",
            "run.png",
        ])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("SVG only"));

    let out = bench_time(port, &["-c", "2", "--mode", "churn", "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&out).expect("JSON report");
    assert!(report["requests"].as_u64().unwrap() > 0, "{report}");
    assert_eq!(report["errors"].as_u64(), Some(0), "{report}");
    drop(server);
}
