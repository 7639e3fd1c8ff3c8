//! `jaring bench chat` against a real `jaring chat serve` on port 0: the send mode reports
//! messages with no errors and every acknowledged message delivered exactly once; the idle mode
//! holds its connections and reads the server's memory.
#![allow(clippy::unwrap_used)]

mod support;

use std::path::Path;
use std::process::Command;

use serde_json::Value;
use support::ServerProcess;

/// Users u0..u{USERS-1}, password `pw` (see [`support::bench_users`]).
const USERS: usize = 8;

/// Starts a realm on port 0 over `dir` and returns it with the port it logged.
fn serve(dir: &Path) -> (ServerProcess, u16) {
    let config = dir.join("realm.toml");
    std::fs::write(
        &config,
        "[realm]\nname = \"bench\"\ndata_dir = \"data\"\n[listen]\nbind = \"127.0.0.1\"\nport = 0\n",
    )
    .unwrap();
    let server = ServerProcess::run([
        std::ffi::OsStr::new("chat"),
        "serve".as_ref(),
        "--config".as_ref(),
        config.as_os_str(),
    ]);
    let port = server.port;
    (server, port)
}

/// `jaring bench chat --json … --port PORT [--server-pid PID] <extra…>`'s report.
fn bench(port: u16, pid: Option<u32>, extra: &[&str]) -> Value {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_jaring"));
    cmd.args(["bench", "chat", "--json", "--password", "pw", "--port"])
        .arg(port.to_string());
    if let Some(pid) = pid {
        cmd.arg("--server-pid").arg(pid.to_string());
    }
    let out = cmd.args(extra).output().unwrap();
    assert!(
        out.status.success(),
        "bench failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn bench_chat_sends_durable_messages_and_holds_idle_connections() {
    let tmp = tempfile::tempdir().unwrap();
    support::bench_users(&tmp.path().join("data"), USERS);
    let (server, port) = serve(tmp.path());
    let pid = server.pid();

    // One send in flight per sender, then several (pipelined): every OK is a durable message
    // that arrives once, in order, either way. The second run finds the server by its port.
    for pipeline in ["1", "8"] {
        let r = bench(
            port,
            (pipeline == "1").then_some(pid),
            &[
                "--connections",
                "4",
                "--receivers",
                "2",
                "--duration",
                "1",
                "--pipeline",
                pipeline,
            ],
        );
        assert_eq!(r["workload"], "chat");
        assert_eq!(r["mode"], "send");
        assert!(r["requests"].as_u64().unwrap() > 0, "{r}");
        assert_eq!(r["errors"], 0, "{r}");
        let d = &r["delivery"];
        assert_eq!(d["receivers"], 2);
        assert!(d["acknowledged"].as_u64().unwrap() >= r["requests"].as_u64().unwrap());
        assert!(d["delivered"].as_u64().unwrap() >= d["acknowledged"].as_u64().unwrap());
        assert_eq!(d["missing"], 0, "{r}");
        assert_eq!(d["duplicates"], 0, "{r}");
        assert_eq!(d["out_of_order"], 0, "{r}");
        assert!(d["latency"]["p50_us"].as_u64().unwrap() > 0);
        assert_eq!(r["server"]["pid"], pid);
        assert!(r["server"]["rss_kib"].as_u64().unwrap() > 0);
    }

    let r = bench(
        port,
        Some(pid),
        &["--idle", "--connections", "5", "--duration", "1"],
    );
    assert_eq!(r["mode"], "idle");
    assert_eq!(r["requests"], 5, "{r}");
    assert_eq!(r["errors"], 0, "{r}");
    let s = &r["server"];
    assert!(s["rss_kib"].as_u64().unwrap() > 0);
    assert!(s["rss_before_kib"].as_u64().unwrap() > 0);
    assert!(s["rss_per_connection_bytes"].is_u64(), "{r}");
}

#[test]
fn bench_chat_says_how_to_create_missing_users_and_locks_nobody_out() {
    let tmp = tempfile::tempdir().unwrap();
    support::bench_users(&tmp.path().join("data"), USERS);
    let (_server, port) = serve(tmp.path());
    // Many connections, a thousand group members or watchers, all missing (and, with
    // --no-setup, not made by the bench): each run tries one login.
    for (workload, hint) in [
        (&["--connections", "50"][..], "bench/chat/run.sh"),
        (&["--group", "--members", "1000"], "bench/chat/run_group.sh"),
        (&["--push", "--watchers", "1000"], "bench/chat/push.sh"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_jaring"))
            .args([
                "bench",
                "chat",
                "--no-setup",
                "--user-prefix",
                "nobody",
                "--port",
            ])
            .arg(port.to_string())
            .args(["--duration", "1"])
            .args(workload)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("cannot log in as nobody0") && err.contains("wrong user name or password"),
            "{err}"
        );
        assert!(err.contains(hint) && err.contains("--no-setup"), "{err}");
    }
    // Three failed logins from this address: a real user here is not locked out.
    let mut real = support::ChatClient::connect(port);
    real.auth("u1", "pw");
}

#[test]
fn bench_chat_push_pushes_every_message_once_and_leaves_nothing_unacknowledged() {
    let tmp = tempfile::tempdir().unwrap();
    support::bench_users(&tmp.path().join("data"), USERS);
    let (server, port) = serve(tmp.path());
    let pid = server.pid();
    // A message from before the run, never acknowledged: pushed at the first watch, not counted
    // as the run's, and acknowledged, so the second run is pushed nothing stale.
    let mut before = support::ChatClient::connect(port);
    let token = before.auth("u0", "pw");
    before.ok(&format!("send {token} u2 left over from an earlier run"));
    for (round, extra) in [
        (0, &["--duration", "1"][..]),
        (1, &["--duration", "10", "--messages", "50"]),
    ] {
        let mut args = vec![
            "--push",
            "--watchers",
            "5",
            "--senders",
            "2",
            "--rate",
            "200",
        ];
        args.extend_from_slice(extra);
        let r = bench(port, Some(pid), &args);
        assert_eq!(r["mode"], "push", "{r}");
        assert_eq!(r["watchers"], 5);
        let sent = r["sent"].as_u64().unwrap();
        assert!(sent > 0, "{r}");
        if round == 1 {
            assert_eq!(sent, 50, "{r}");
        }
        assert_eq!(r["pushed"].as_u64().unwrap(), sent, "{r}");
        assert_eq!(r["lost"], 0, "{r}");
        assert_eq!(r["duplicated"], 0, "{r}");
        assert_eq!(r["out_of_order"], 0, "{r}");
        assert_eq!(r["send_errors"], 0, "{r}");
        assert_eq!(r["watches_ended"], 0, "{r}");
        assert_eq!(r["ack_errors"], 0, "{r}");
        assert_eq!(r["stale"], if round == 0 { 1 } else { 0 }, "{r}");
        assert!(r["latency"]["p50_us"].as_u64().unwrap() > 0, "{r}");
        let s = &r["server"];
        assert_eq!(s["pid"], pid);
        assert!(s["rss_watching_kib"].as_u64().unwrap() > 0, "{r}");
    }
}
