//! `jaring lab` on ephemeral ports: it starts, prints where everything listens, every client works
//! against it (time, both echo ports, chat on both realms and across the link, private and in a
//! group), and SIGTERM stops it cleanly. Its TLS: made once in DIR/tls and reused, on the time
//! port beside plaintext, on the echo TLS port, on the realms' client ports (checked with Python's
//! and OpenSSL's clients, which verify strictly). The realms, like the demo realm of `chat serve`,
//! stay on loopback unless told otherwise, and say so when told.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::HashMap;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use jaring_proto::chat::ReplyFramer;
use serde_json::Value;
use support::lab::LabProcess;
use support::{PATIENCE, have_tool, python, python_tls_call};

fn connect(port: u16) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s
}

fn call(s: &mut TcpStream, framer: &mut ReplyFramer, line: &str) -> Value {
    s.write_all(format!("{line}\r\n").as_bytes()).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(v) = framer.poll_reply().unwrap() {
            return v;
        }
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "closed");
        framer.handle_input(&buf[..n]);
    }
}

/// The lab on ephemeral ports.
struct Lab;

impl Lab {
    fn start(dir: &Path, extra: &[&str]) -> LabProcess {
        LabProcess::ephemeral(dir, extra)
    }
}

/// The lab's one web port: both realms, listed by `/realms`, and a message across the link
/// between two WebSockets.
#[test]
fn the_lab_serves_both_realms_on_its_web_port() {
    let dir = tempfile::tempdir().unwrap();
    let lab = Lab::start(
        &dir.path().join("lab"),
        &["--bind", "127.0.0.1", "--no-tls"],
    );
    let port = lab
        .addrs
        .get("web")
        .map(|a| a.port())
        .expect("a web row in the table");
    let mut s = connect(port);
    s.write_all(b"GET /realms HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut page = String::new();
    s.read_to_string(&mut page).unwrap();
    assert!(
        page.ends_with(r#"{"realms":["realm1","realm2"]}"#),
        "{page}"
    );
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(support::web::lab_across_realms(port));
    lab.stop();
}

#[test]
fn the_lab_without_a_web_port() {
    let dir = tempfile::tempdir().unwrap();
    let lab = Lab::start(
        &dir.path().join("lab"),
        &["--bind", "127.0.0.1", "--no-tls", "--no-web"],
    );
    assert!(!lab.addrs.contains_key("web"), "{}", lab.printed);
    lab.stop();
}

#[test]
fn the_lab_starts_and_every_client_works_against_it() {
    every_client_works(false);
}

/// The same with the lab's TLS on: the classic clients still speak plaintext to the same ports,
/// and the realms' link (messages and the group feed across it) runs over pinned mutual TLS.
#[test]
fn with_tls_every_plaintext_client_still_works_and_the_link_is_tls() {
    every_client_works(true);
}

fn every_client_works(tls: bool) {
    let dir = tempfile::tempdir().unwrap();
    let args: &[&str] = if tls {
        &["--bind", "127.0.0.1"]
    } else {
        &["--bind", "127.0.0.1", "--no-tls"]
    };
    let lab = Lab::start(&dir.path().join("lab"), args);
    let ports: HashMap<String, u16> = lab
        .addrs
        .iter()
        .map(|(k, a)| (k.clone(), a.port()))
        .collect();
    if tls {
        let config = std::fs::read_to_string(dir.path().join("lab/realm1.toml")).unwrap();
        assert!(config.contains("fingerprint = \"sha256:"), "{config}");
    } else {
        assert!(
            !lab.printed.contains("tls") && !dir.path().join("lab/tls").exists(),
            "--no-tls: no TLS anywhere:\n{}",
            lab.printed
        );
    }
    for key in ["time", "echo", "echo (files)", "chat realm1", "chat realm2"] {
        assert!(ports.contains_key(key), "{key} missing from {ports:?}");
    }
    assert!(dir.path().join("lab/realm1.toml").exists());
    let secret = std::fs::read_to_string(dir.path().join("lab/federation.secret")).unwrap();
    assert_eq!(secret.trim().len(), 64, "a random 256-bit secret");

    // TIME
    let mut t = connect(ports["time"]);
    t.write_all(b"TIME\r\n").unwrap();
    let mut reply = String::new();
    BufReader::new(&mut t).read_line(&mut reply).unwrap();
    assert!(reply.starts_with("JAM "), "{reply:?}");

    // ECHO, both ports
    for key in ["echo", "echo (files)"] {
        let mut e = connect(ports[key]);
        e.write_all(b"hello lab\n").unwrap();
        let mut back = [0u8; 10];
        e.read_exact(&mut back).unwrap();
        assert_eq!(&back, b"hello lab\n");
    }

    // CHAT across the link, both ways.
    let mut f1 = ReplyFramer::new(1 << 20);
    let mut c1 = connect(ports["chat realm1"]);
    let r = call(&mut c1, &mut f1, "auth messi surabaya ");
    let t1 = r["tokenid"].as_str().unwrap().to_owned();
    let mut f2 = ReplyFramer::new(1 << 20);
    let mut c2 = connect(ports["chat realm2"]);
    let r = call(&mut c2, &mut f2, "auth james medan ");
    let t2 = r["tokenid"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(30);
    // The link may still be coming up: a send to a bare remote name needs it.
    loop {
        let r = call(
            &mut c1,
            &mut f1,
            &format!("send {t1} james hello from realm1"),
        );
        if r["status"] == "OK" {
            break;
        }
        assert!(Instant::now() < deadline, "{r}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let r = call(
        &mut c2,
        &mut f2,
        &format!("send {t2} messi@realm1 hello from realm2"),
    );
    assert_eq!(r["status"], "OK", "{r}");
    for (c, f, t, from, body) in [
        (&mut c2, &mut f2, &t2, "messi@realm1", "hello from realm1"),
        (&mut c1, &mut f1, &t1, "james@realm2", "hello from realm2"),
    ] {
        loop {
            let r = call(c, f, &format!("inbox {t}"));
            if let Some(m) = r["messages"][from].as_array() {
                assert_eq!(m[0]["msg"], body);
                break;
            }
            assert!(Instant::now() < deadline, "no message from {from}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    // A group of realm1 with a member on realm2: james's post is ordered by realm1 and comes back
    // to realm2 through the group's feed.
    let r = call(&mut c1, &mut f1, &format!("sendgroup {t1} football first"));
    assert_eq!(r["status"], "OK", "{r}");
    let r = call(
        &mut c2,
        &mut f2,
        &format!("sendgroup {t2} football@realm1 from james"),
    );
    assert_eq!(r["status"], "OK", "{r}");
    for (c, f, t, group, from) in [
        (&mut c1, &mut f1, &t1, "football", "james@realm2"),
        (&mut c2, &mut f2, &t2, "football@realm1", "james"),
    ] {
        loop {
            let r = call(c, f, &format!("inboxgroup {t} {group}"));
            let got = r["messages"].as_array().cloned().unwrap_or_default();
            if let Some(m) = got.iter().find(|m| m["msg"] == "from james") {
                assert_eq!(m["from"], from, "{r}");
                assert_eq!(
                    m["seq"], 2,
                    "realm1 ordered it after its own first message: {r}"
                );
                break;
            }
            assert!(
                Instant::now() < deadline,
                "no group message on {group}: {r}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    // SIGTERM: a graceful stop, exit 0.
    drop(c1);
    drop(c2);
    lab.stop();
}

/// The mode bits of a file.
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// `openssl s_client` (verifying against `ca`) to 127.0.0.1:`port`: sends `auth USER PASSWORD`
/// (`login`) and returns the JSON reply read over TLS.
fn openssl_chat_auth(port: u16, ca: &Path, login: &str) -> Value {
    let (out, stderr) = support::openssl_s_client(
        port,
        ca,
        &["-quiet", "-crlf"],
        format!("auth {login}\n").as_bytes(),
        |seen| seen.windows(4).any(|w| w == b"\r\n\r\n"),
    );
    let mut framer = ReplyFramer::new(1 << 20);
    framer.handle_input(&out);
    match framer.poll_reply() {
        Ok(Some(v)) => v,
        other => panic!("no reply over openssl s_client ({other:?}): {stderr}"),
    }
}

#[test]
fn the_lab_makes_its_tls_once_and_serves_it_beside_plaintext() {
    let dir = tempfile::tempdir().unwrap();
    let lab_dir = dir.path().join("lab");
    let tls = lab_dir.join("tls");
    let lab = Lab::start(&lab_dir, &[]);
    let ca = tls.join("ca.pem");
    for name in ["services", "realm1", "realm2"] {
        assert!(tls.join(format!("{name}.pem")).exists(), "{name}.pem");
        assert_eq!(
            mode(&tls.join(format!("{name}-key.pem"))),
            0o600,
            "{name}-key.pem"
        );
    }
    assert!(ca.exists());
    assert_eq!(mode(&tls.join("ca-key.pem")), 0o600);
    assert!(lab.printed.contains("made now"), "{}", lab.printed);
    for hint in [
        "--tls --ca",
        "jaring chat client --server",
        "ssl.create_default_context(cafile=",
        "SSLKEYLOGFILE=keys.log jaring lab",
    ] {
        assert!(
            lab.printed.contains(hint),
            "{hint} missing:\n{}",
            lab.printed
        );
    }
    // TLS has a row of its own only where it has a port of its own (echo); time, the realms
    // and the web port take it on theirs.
    assert!(lab.addrs.contains_key("echo (tls)"), "{}", lab.printed);
    assert!(
        lab.printed
            .contains("time, chat and web take TLS on their own ports"),
        "{}",
        lab.printed
    );
    // The realm configs name their own certificate, and the peer's key for the link to pin.
    let realm1 = std::fs::read_to_string(lab_dir.join("realm1.toml")).unwrap();
    assert!(realm1.contains("cert = \"tls/realm1.pem\""), "{realm1}");
    let realm2_key = jaring_tls::fingerprint_of_pem_file(&tls.join("realm2.pem")).unwrap();
    assert!(realm1.contains(&realm2_key.to_string()), "{realm1}");
    let services = jaring_tls::fingerprint_of_pem_file(&tls.join("services.pem")).unwrap();
    let ca_pem = std::fs::read(&ca).unwrap();

    // Plaintext still works on the time port, and the realms are on loopback.
    let mut t = connect(lab.port("time"));
    t.write_all(b"TIME\r\n").unwrap();
    let mut reply = String::new();
    BufReader::new(&mut t).read_line(&mut reply).unwrap();
    assert!(reply.starts_with("JAM "), "{reply:?}");
    let realm1_conf: String = realm1.lines().filter(|l| l.starts_with("bind")).collect();
    assert_eq!(realm1_conf, "bind = \"127.0.0.1\"");

    let test = "the_lab_makes_its_tls_once_and_serves_it_beside_plaintext";
    if have_tool("python3", &["-c", "import ssl"], test) {
        for host in ["localhost", "127.0.0.1"] {
            let got = python_tls_call(host, lab.port("time"), &ca, "TIME\r\n").unwrap();
            assert!(
                got.starts_with("JAM ") && got.ends_with("\r\n"),
                "{host}: {got:?}"
            );
        }
        let got = python_tls_call("127.0.0.1", lab.port("echo (tls)"), &ca, "hello tls\n").unwrap();
        assert_eq!(got, "hello tls\n");
        // The plaintext echo port stays plaintext: a TLS client gets no handshake there.
        assert!(python_tls_call("127.0.0.1", lab.port("echo"), &ca, "x\n").is_err());
    }
    if have_tool("openssl", &["version"], test) {
        for (realm, login) in [
            ("chat realm1", "messi surabaya"),
            ("chat realm2", "james medan"),
        ] {
            let r = openssl_chat_auth(lab.port(realm), &ca, login);
            assert_eq!(r["status"], "OK", "{realm}: {r}");
            assert!(r["tokenid"].is_string(), "{realm}: {r}");
        }
    }
    lab.stop();

    // A second start keeps every file.
    let lab = Lab::start(&lab_dir, &[]);
    assert!(
        lab.printed.contains("kept from the last start"),
        "{}",
        lab.printed
    );
    assert_eq!(std::fs::read(&ca).unwrap(), ca_pem, "the CA is reused");
    assert_eq!(
        jaring_tls::fingerprint_of_pem_file(&tls.join("services.pem")).unwrap(),
        services,
        "the services certificate is reused"
    );
    assert_eq!(
        jaring_tls::fingerprint_of_pem_file(&tls.join("realm2.pem")).unwrap(),
        realm2_key
    );
    lab.stop();
}

/// Starts `jaring <args…>` and returns its log lines up to the runtime's "listening" line.
fn log_until_listening(args: &[&str]) -> Vec<String> {
    let mut child = support::spawn_logging(args);
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let deadline = Instant::now() + PATIENCE;
    let mut lines = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                let done = line.contains("listening");
                lines.push(line);
                if done {
                    break;
                }
            }
            Err(e) => panic!("no listening line ({e}): {lines:#?}"),
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    lines
}

#[test]
fn a_demo_realm_stays_on_loopback_unless_told_and_then_warns() {
    let serve = ["chat", "serve", "--storage", "memory", "--port", "0"];
    let lines = log_until_listening(&serve);
    let listening = lines.last().unwrap();
    assert!(listening.contains("addr=127.0.0.1:"), "{listening}");
    assert!(
        !lines.iter().any(|l| l.contains("WARN")),
        "no warning on loopback: {lines:#?}"
    );

    let mut wide = serve.to_vec();
    wide.extend(["--bind", "0.0.0.0"]);
    let lines = log_until_listening(&wide);
    assert!(
        lines.last().unwrap().contains("addr=0.0.0.0:"),
        "{lines:#?}"
    );
    let warning = lines
        .iter()
        .find(|l| l.contains("WARN"))
        .unwrap_or_else(|| panic!("no warning for a demo realm on 0.0.0.0: {lines:#?}"));
    assert!(
        warning.contains("demo users") && warning.contains("public passwords"),
        "{warning}"
    );

    // A realm with a config file keeps the usual default: no warning, no loopback default.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("realm.toml");
    std::fs::write(
        &config,
        "[storage]\nbackend = \"memory\"\n[listen]\nport = 0\n",
    )
    .unwrap();
    let lines = log_until_listening(&["chat", "serve", "--config", config.to_str().unwrap()]);
    assert!(
        lines.last().unwrap().contains("addr=0.0.0.0:"),
        "{lines:#?}"
    );
    assert!(!lines.iter().any(|l| l.contains("WARN")), "{lines:#?}");
}

/// Runs `jaring bench chat <args…> --json` to the end and returns its report and what it said on
/// stderr.
fn bench_json(args: &[&str]) -> (Value, String) {
    let out = support::jaring()
        .args(["bench", "chat", "--json"])
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "bench {args:?} failed: {stderr}");
    let text = String::from_utf8(out.stdout).unwrap();
    let report = serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{e}: {text}"));
    (report, stderr)
}

/// Rows of `table` (a table, maybe with a WHERE clause) in a lab realm's SQLite database.
fn rows(db: &Path, table: &str) -> i64 {
    const COUNT: &str = "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); \
                         print(c.execute('SELECT count(*) FROM ' + sys.argv[2]).fetchone()[0])";
    python(COUNT, &[db.to_str().unwrap(), table])
        .trim()
        .parse()
        .unwrap()
}

/// #20's zero-setup chat bench: every chat workload runs against a fresh lab with no other step
/// (the bench makes its users through each realm's admin socket), loses and duplicates nothing,
/// never locks a real user out, and leaves nothing behind: no bench user, no message, no group.
#[test]
fn every_chat_bench_runs_against_a_fresh_lab_and_leaves_nothing_behind() {
    if !have_tool(
        "python3",
        &["--version"],
        "zero-setup bench (reads the lab's databases)",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let lab = Lab::start(dir.path(), &["--no-tls"]);
    let r1 = lab.port("chat realm1").to_string();
    let r2 = lab.port("chat realm2").to_string();
    let password = jaring_chat::realm::DEMO_PASSWORD;

    // Sends, with a real user logging in again and again meanwhile.
    let bench = {
        let r1 = r1.clone();
        std::thread::spawn(move || {
            bench_json(&[
                "-p",
                &r1,
                "-c",
                "20",
                "-d",
                "2",
                "--password",
                "known-bench-pw",
            ])
        })
    };
    let port1 = lab.port("chat realm1");
    let mut logins = 0;
    while !bench.is_finished() {
        let mut s = connect(port1);
        let v = call(
            &mut s,
            &mut ReplyFramer::new(1 << 20),
            &format!("auth messi {password}"),
        );
        assert_eq!(v["status"], "OK", "a real user was locked out: {v}");
        logins += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    let (r, said) = bench.join().unwrap();
    assert!(logins > 0);
    assert!(said.contains("made 22 bench users"), "{said}");
    assert!(said.contains("removed 22 bench users"), "{said}");
    assert!(r["requests"].as_u64().unwrap() > 0, "{r}");
    assert_eq!(r["delivery"]["missing"], 0, "{r}");
    assert_eq!(r["delivery"]["duplicates"], 0, "{r}");
    // The password it was given is gone with the users.
    let mut s = connect(port1);
    let v = call(
        &mut s,
        &mut ReplyFramer::new(1 << 20),
        "auth u0 known-bench-pw",
    );
    assert_eq!(v["status"], "ERROR", "{v}");

    // A group, pushed messages, and across the link: each sets itself up the same way.
    let (g, said) = bench_json(&[
        "-p",
        &r1,
        "--group",
        "--members",
        "30",
        "--senders",
        "3",
        "--rate",
        "60",
        "-d",
        "1",
    ]);
    assert_eq!(
        (g["lost"].as_u64(), g["duplicated"].as_u64()),
        (Some(0), Some(0)),
        "{g}"
    );
    assert!(said.contains("removed 30 bench users"), "{said}");
    let (p, said) = bench_json(&[
        "-p",
        &r2,
        "--push",
        "--watchers",
        "10",
        "--senders",
        "2",
        "--rate",
        "40",
        "-d",
        "1",
    ]);
    assert_eq!(
        (p["lost"].as_u64(), p["duplicated"].as_u64()),
        (Some(0), Some(0)),
        "{p}"
    );
    assert!(said.contains("on realm realm2"), "{said}");
    let (x, said) = bench_json(&[
        "-p",
        &r1,
        "--cross-realm",
        "--peer-port",
        &r2,
        "--peer-realm",
        "realm2",
        "-c",
        "4",
        "-d",
        "1",
    ]);
    assert_eq!(x["delivery"]["missing"], 0, "{x}");
    assert!(said.contains("realm realm1 and realm2"), "{said}");
    // Over the web port's WebSocket (realm2 by its path): the same workload, set up the same way.
    let web = lab.port("web").to_string();
    let (w, said) = bench_json(&[
        "-p",
        &web,
        "--ws",
        "--ws-path",
        "/ws/realm2",
        "-c",
        "4",
        "-d",
        "1",
    ]);
    assert!(w["requests"].as_u64().unwrap() > 0, "{w}");
    assert_eq!(w["delivery"]["missing"], 0, "{w}");
    assert_eq!(w["delivery"]["duplicates"], 0, "{w}");
    assert!(
        said.contains("on realm realm2") && said.contains("removed 5 bench users"),
        "{said}"
    );

    // A user added while the lab runs can log in at once.
    support::jaring()
        .args(["chat", "user", "add", "newcomer", "--config"])
        .arg(dir.path().join("realm1.toml"))
        .write_stdin("fresh-pw\n")
        .assert()
        .success();
    let mut s = connect(port1);
    let v = call(
        &mut s,
        &mut ReplyFramer::new(1 << 20),
        "auth newcomer fresh-pw",
    );
    assert_eq!(v["status"], "OK", "{v}");

    // While the lab runs, its users are listed as they are: no bench user left.
    let list = Command::new(env!("CARGO_BIN_EXE_jaring"))
        .args(["chat", "user", "list", "--json", "--config"])
        .arg(dir.path().join("realm1.toml"))
        .output()
        .unwrap();
    assert!(
        list.status.success(),
        "{}",
        String::from_utf8_lossy(&list.stderr)
    );
    let users: Value = serde_json::from_slice(&list.stdout).unwrap();
    let users = users.as_array().unwrap();
    assert!(
        users
            .iter()
            .any(|u| u["name"] == "messi" && u["online"].is_boolean())
    );
    assert!(users.iter().all(|u| u["bench"] == false), "{users:?}");
    lab.stop();

    for realm in ["realm1", "realm2"] {
        let db = dir.path().join(realm).join("chat.db");
        for table in ["messages", "group_messages", "groups", "outbox"] {
            assert_eq!(rows(&db, table), 0, "{realm}: {table} keeps bench rows");
        }
        assert_eq!(rows(&db, "users WHERE bench = 1"), 0, "{realm}");
    }
}

/// The lab's first screen when it cannot start: a second lab on the same directory names the
/// first one's pid; a taken port names the lab's own flag for it and `--ephemeral`; and a start
/// that fails leaves no half-made directory.
#[test]
fn a_lab_that_cannot_start_says_why_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let lab = Lab::start(&dir.path().join("lab"), &["--no-tls", "--no-web"]);
    let again = Command::new(env!("CARGO_BIN_EXE_jaring"))
        .args(["lab", "--ephemeral", "--no-tls", "--no-web", "--dir"])
        .arg(dir.path().join("lab"))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&again.stderr);
    assert_eq!(again.status.code(), Some(2), "{said}");
    assert!(
        said.contains("already running") && said.contains(&format!("pid {}", lab.child.id())),
        "{said}"
    );
    // The time port the first lab holds, asked for by a second lab in a new directory.
    let taken = lab.port("time").to_string();
    let fresh = dir.path().join("second");
    let out = Command::new(env!("CARGO_BIN_EXE_jaring"))
        .args([
            "lab",
            "--no-tls",
            "--no-web",
            "--time-port",
            &taken,
            "--dir",
        ])
        .arg(&fresh)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains("--time-port") && said.contains("--ephemeral"),
        "{said}"
    );
    assert!(!fresh.exists(), "a failed start left {}", fresh.display());
    lab.stop();
}
