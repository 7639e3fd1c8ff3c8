//! Every jaring client and bench workload over TLS, against real servers on port 0 with a CA and
//! a leaf made for the test: echo (message, chunks, repeat, interactive, a file verified byte for
//! byte), the chat client, and `jaring bench` time (persistent, churn with and without session
//! resumption), echo and chat; a wrong CA, a port without TLS and `--insecure` each say so; and a
//! port that takes TLS and plaintext serves a classic plaintext client beside a TLS one.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use predicates::prelude::*;
use serde_json::Value;
use support::{
    ChatClient, ServerProcess, TestPki, bench_failure, bench_users, echo_verifies, jaring, noise,
};

/// `jaring <args…>`'s stdout as JSON, asserting success.
fn json(args: &[&str]) -> Value {
    let out = jaring().args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

/// An echo server with its TLS listener; its client's flags for TLS.
fn echo_over_tls(pki: &TestPki) -> (ServerProcess, Vec<String>) {
    let server_args = pki.server_args();
    let refs: Vec<&str> = server_args.iter().map(String::as_str).collect();
    let server = ServerProcess::echo_tls(&refs);
    let tls_port = server.federation_port.unwrap();
    let client = ["echo", "client", "--tls", "--ca", &pki.ca(), "--port"]
        .iter()
        .map(|s| (*s).to_owned())
        .chain([tls_port.to_string()])
        .collect();
    (server, client)
}

#[test]
fn echo_client_speaks_tls_in_every_mode_and_verifies_a_file_byte_for_byte() {
    let pki = TestPki::create();
    let (_server, client) = echo_over_tls(&pki);
    jaring()
        .args(&client)
        .args(["--chunk", "16", "-v", "a message longer than sixteen bytes"])
        .assert()
        .success()
        .stdout("a message longer than sixteen bytes\n")
        .stderr(
            predicate::str::contains("TLS: TLSv1_3")
                .and(predicate::str::contains("chunk 1: 16 bytes")),
        );
    let out = jaring()
        .args(&client)
        .args(["--repeat", "3", "--interval", "0", "ping"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let out = String::from_utf8(out).unwrap();
    assert_eq!(
        out.lines().filter(|l| l.ends_with("] ping")).count(),
        3,
        "{out}"
    );
    jaring()
        .args(&client)
        .arg("--interactive")
        .write_stdin("hello\nsecond line\nexit\nnever sent\n")
        .assert()
        .success()
        .stdout("hello\nsecond line\n");

    // Several MiB, not a multiple of any buffer: every byte must come back before the close.
    echo_verifies(
        || {
            let mut cmd = jaring();
            cmd.args(&client);
            cmd
        },
        noise(0x9E37_79B9_7F4A_7C15, 5 * 1024 * 1024 + 12_345),
    );
}

#[test]
fn a_wrong_ca_fails_with_the_tls_hint_and_insecure_warns() {
    let pki = TestPki::create();
    let other = TestPki::create();
    let (server, _) = echo_over_tls(&pki);
    let tls_port = server.federation_port.unwrap().to_string();
    jaring()
        .args([
            "echo",
            "client",
            "--ca",
            &other.ca(),
            "--port",
            &tls_port,
            "hi",
        ])
        .assert()
        .code(1)
        .stderr(
            predicate::str::contains("TLS handshake failed")
                .and(predicate::str::contains("--ca"))
                .and(predicate::str::contains("UnknownIssuer")),
        );
    jaring()
        .args(["echo", "client", "--insecure", "--port", &tls_port, "hi"])
        .assert()
        .success()
        .stdout("hi\n")
        .stderr(predicate::str::contains("warning: --insecure"));

    let time = ServerProcess::start(
        &["time", "serve"],
        &pki.server_args().each_ref().map(String::as_str),
    );
    jaring()
        .args([
            "time",
            "client",
            "--ca",
            &other.ca(),
            "--port",
            &time.port.to_string(),
        ])
        .assert()
        .code(1)
        .stderr(
            predicate::str::contains("TLS handshake failed").and(predicate::str::contains("--ca")),
        );
}

/// A realm on port 0 whose client port takes TLS (with the test leaf) and plaintext.
fn tls_realm(dir: &Path, pki: &TestPki) -> ServerProcess {
    bench_users(&dir.join("data"), 8);
    let config = dir.join("realm.toml");
    std::fs::write(
        &config,
        format!(
            "[realm]\nname = \"tlsrealm\"\ndata_dir = \"data\"\n\
             [listen]\nbind = \"127.0.0.1\"\nport = 0\n\
             [tls]\ncert = \"{}\"\nkey = \"{}\"\n",
            pki.cert(),
            pki.key()
        ),
    )
    .unwrap();
    ServerProcess::realm(&config, &[])
}

#[test]
fn chat_client_over_tls_beside_a_plaintext_client_on_the_same_port() {
    let pki = TestPki::create();
    let dir = tempfile::tempdir().unwrap();
    let realm = tls_realm(dir.path(), &pki);
    let server = format!("127.0.0.1:{}", realm.port);
    // A classic plaintext client, logged in and connected through the TLS clients' sessions.
    let mut plain = ChatClient::connect(realm.port);
    let token = plain.auth("u2", "pw");
    let chat_with = |script: &str, extra: &[&str]| {
        jaring()
            .args([
                "chat",
                "client",
                "--tls",
                "--ca",
                &pki.ca(),
                "--server",
                &server,
            ])
            .args(extra)
            .write_stdin(script.to_owned())
            .assert()
            .success()
            .get_output()
            .stdout
            .clone()
    };
    let chat = |script: &str| chat_with(script, &[]);
    let sent = String::from_utf8(chat(
        "auth u0 pw\nsend u1 hello over tls\nsend u2 to the plain one\nquit\n",
    ))
    .unwrap();
    assert!(
        sent.contains("logged in") && sent.matches("sent").count() == 2,
        "{sent}"
    );
    let inbox = String::from_utf8(chat("auth u1 pw\ninbox\nquit\n")).unwrap();
    // Pushed as soon as the client watches, or else in the inbox's reply.
    assert!(
        inbox.contains("<u0> hello over tls") || inbox.contains("u0 → u1: hello over tls"),
        "{inbox}"
    );
    let r = plain.ok(&format!("inbox {token}"));
    assert!(r.to_string().contains("to the plain one"), "{r}");
    plain.ok(&format!("send {token} u0 and back in plaintext"));
    let back = String::from_utf8(chat("auth u0 pw\ninbox\nquit\n")).unwrap();
    assert!(back.contains("and back in plaintext"), "{back}");
    // A group: the post goes out and comes back pushed over the same TLS session. The push may
    // come after the post's reply, so no `quit`: the input's end and a linger wait for it.
    let live = String::from_utf8(chat_with(
        "auth u3 pw\ngroup tlsgroup\nhello group\n",
        &["--linger", "5"],
    ))
    .unwrap();
    assert!(live.contains("Joined group tlsgroup"), "{live}");
    assert!(live.contains("[tlsgroup] <u3> hello group"), "{live}");
    // The wrong CA: one clear failure, exit 1.
    let other = TestPki::create();
    jaring()
        .args(["chat", "client", "--ca", &other.ca(), "--server", &server])
        .write_stdin("quit\n")
        .assert()
        .code(1)
        .stderr(
            predicate::str::contains("TLS handshake failed").and(predicate::str::contains("--ca")),
        );
}

/// Asks the time server on `port` for the time in plaintext, twice, a little apart, from
/// Python's socket module: the classic client.
const PLAIN_TIME: &str = r#"
import socket, sys, time
with socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=20) as s:
    f = s.makefile("rb")
    for _ in range(2):
        s.sendall(b"TIME\r\n")
        print(f.readline().decode().strip())
        time.sleep(0.3)
    s.sendall(b"QUIT\r\n")
"#;

#[test]
fn the_time_port_serves_a_plaintext_and_a_jaring_tls_client_at_once() {
    if !support::have_tool("python3", &["--version"], "tls_clients") {
        return;
    }
    let pki = TestPki::create();
    let server = ServerProcess::start(
        &["time", "serve"],
        &pki.server_args().each_ref().map(String::as_str),
    );
    let port = server.port.to_string();
    let plain = {
        let port = port.clone();
        std::thread::spawn(move || {
            Command::new("python3")
                .args(["-c", PLAIN_TIME, &port])
                .output()
                .unwrap()
        })
    };
    let tls = jaring()
        .args(["time", "client", "--ca", &pki.ca(), "--host", "localhost"])
        .args(["--port", &port, "-n", "3", "--interval", "0.2"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let tls = String::from_utf8(tls).unwrap();
    assert_eq!(
        tls.lines().filter(|l| l.starts_with("JAM ")).count(),
        3,
        "{tls}"
    );
    let plain = plain.join().unwrap();
    let text = String::from_utf8_lossy(&plain.stdout);
    assert!(
        plain.status.success(),
        "{}",
        String::from_utf8_lossy(&plain.stderr)
    );
    assert_eq!(
        text.lines().filter(|l| l.starts_with("JAM ")).count(),
        2,
        "{text}"
    );
}

#[test]
fn bench_time_over_tls_counts_full_and_resumed_handshakes() {
    let pki = TestPki::create();
    let server = ServerProcess::start(
        &["time", "serve"],
        &pki.server_args().each_ref().map(String::as_str),
    );
    let port = server.port.to_string();
    let ca = pki.ca();
    let base = ["bench", "time", "--tls", "--ca", &ca, "--port", &port];
    let run = |extra: &[&str]| {
        let mut args = base.to_vec();
        args.extend(["--connections", "2", "--duration", "1", "--json"]);
        args.extend(extra);
        let r = json(&args);
        assert!(r["requests"].as_u64().unwrap() > 0, "{r}");
        assert_eq!(r["errors"], 0, "{r}");
        r
    };
    let handshakes =
        |r: &Value| r["tls"]["full"].as_u64().unwrap() + r["tls"]["resumed"].as_u64().unwrap();
    let persistent = run(&[]);
    // The second connection may resume the first's session if its handshake starts later.
    assert_eq!(
        handshakes(&persistent),
        2,
        "one handshake per connection: {persistent}"
    );
    assert!(
        persistent["tls"]["full"].as_u64().unwrap() >= 1,
        "{persistent}"
    );
    let churn = run(&["--mode", "churn"]);
    assert!(churn["tls"]["resumed"].as_u64().unwrap() > 0, "{churn}");
    assert_eq!(
        handshakes(&churn),
        churn["requests"].as_u64().unwrap(),
        "a handshake per request: {churn}"
    );
    let full = run(&["--mode", "churn", "--no-resume"]);
    assert_eq!(full["tls"]["resumed"], 0, "{full}");
    assert!(full["tls"]["full"].as_u64().unwrap() > 0, "{full}");
    // The table says it too.
    jaring()
        .args(base)
        .args(["--mode", "churn", "--connections", "1", "--duration", "0.5"])
        .assert()
        .success()
        .stdout(
            predicate::str::contains("TLS handshakes").and(predicate::str::contains("resumed")),
        );
    // Plaintext has no TLS in its report.
    let plain = json(&[
        "bench",
        "time",
        "--port",
        &port,
        "--connections",
        "1",
        "--duration",
        "0.5",
        "--json",
    ]);
    assert!(plain.get("tls").is_none(), "{plain}");
    jaring()
        .args([
            "bench",
            "time",
            "--port",
            &port,
            "--no-resume",
            "--duration",
            "1",
        ])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--tls"));
}

#[test]
fn bench_echo_over_tls_streams_and_round_trips() {
    let pki = TestPki::create();
    let (server, _) = echo_over_tls(&pki);
    let tls_port = server.federation_port.unwrap().to_string();
    let ca = pki.ca();
    for mode in ["stream", "round-trip"] {
        let r = json(&[
            "bench",
            "echo",
            "--tls",
            "--ca",
            &ca,
            "--port",
            &tls_port,
            "--mode",
            mode,
            "--connections",
            "2",
            "--duration",
            "1",
            "--json",
        ]);
        assert_eq!(r["mode"], mode);
        assert!(r["requests"].as_u64().unwrap() > 0, "{r}");
        assert!(r["throughput"]["bytes"].as_u64().unwrap() > 0, "{r}");
        assert_eq!(r["errors"], 0, "{r}");
        // A connection whose handshake starts after another's first reply may resume its
        // session: either kind counts.
        let handshakes = r["tls"]["full"].as_u64().unwrap() + r["tls"]["resumed"].as_u64().unwrap();
        assert!(handshakes >= 2, "one at least per connection: {r}");
        assert!(r["tls"]["full"].as_u64().unwrap() >= 1, "{r}");
    }
}

#[test]
fn bench_chat_over_tls_loses_and_duplicates_nothing() {
    let pki = TestPki::create();
    let dir = tempfile::tempdir().unwrap();
    let realm = tls_realm(dir.path(), &pki);
    let port = realm.port.to_string();
    let ca = pki.ca();
    let tls = [
        "bench",
        "chat",
        "--tls",
        "--ca",
        &ca,
        "--port",
        &port,
        "--password",
        "pw",
    ];
    let mut args = tls.to_vec();
    args.extend([
        "--connections",
        "3",
        "--receivers",
        "2",
        "--duration",
        "1",
        "--json",
    ]);
    let r = json(&args);
    assert!(r["requests"].as_u64().unwrap() > 0, "{r}");
    assert_eq!(r["errors"], 0, "{r}");
    assert_eq!(r["delivery"]["missing"], 0, "{r}");
    assert_eq!(r["delivery"]["duplicates"], 0, "{r}");
    assert_eq!(
        r["tls"]["full"].as_u64().unwrap() + r["tls"]["resumed"].as_u64().unwrap(),
        5,
        "a handshake per connection: {r}"
    );
    let mut args = tls.to_vec();
    args.extend(["--idle", "--connections", "4", "--duration", "1", "--json"]);
    let idle = json(&args);
    assert_eq!(idle["requests"], 4, "{idle}");
    assert_eq!(idle["errors"], 0, "{idle}");
    let mut args = tls.to_vec();
    args.extend([
        "--group",
        "--members",
        "6",
        "--senders",
        "2",
        "--rate",
        "40",
        "--duration",
        "1",
        "--json",
    ]);
    let group = json(&args);
    assert!(group["sent"].as_u64().unwrap() > 0, "{group}");
    assert_eq!(group["lost"], 0, "{group}");
    assert_eq!(group["duplicated"], 0, "{group}");
    jaring()
        .args(tls)
        .args(["--group", "--protocol", "irc", "--duration", "1"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("plaintext"));
}

#[test]
fn the_bench_probe_fails_fast_on_a_port_without_tls_or_a_wrong_ca() {
    let pki = TestPki::create();
    let other = TestPki::create();
    let plain_time = ServerProcess::start(&["time", "serve"], &[]);
    let plain_echo = ServerProcess::start(&["echo", "serve"], &[]);
    let tls_time = ServerProcess::start(
        &["time", "serve"],
        &pki.server_args().each_ref().map(String::as_str),
    );
    for (workload, port, ca) in [
        ("time", plain_time.port, pki.ca()),
        ("echo", plain_echo.port, pki.ca()),
        ("time", tls_time.port, other.ca()),
    ] {
        let started = Instant::now();
        // A 600 s run: only failing before it starts ends within the command's timeout.
        let err = bench_failure(&[workload, "--tls", "--ca", &ca, "--port", &port.to_string()]);
        assert_eq!(err.lines().count(), 1, "{workload} on {port}: {err}");
        assert!(err.contains("TLS"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(30), "{err}");
    }
}
