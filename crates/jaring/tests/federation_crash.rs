//! Two real `jaring chat serve` processes linked by federation. kill -9 the receiving realm in the
//! middle of a transfer, keep sending while it is down, restart it on the same ports: every
//! message that got OK arrives exactly once, in the order it was sent. The same over a link of
//! mutual TLS with pinned keys (certificates from a CA made by the test, pins printed by
//! `jaring chat tls fingerprint`).
#![allow(clippy::unwrap_used)]

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use jaring_proto::chat::ReplyFramer;
use serde_json::Value;

const SECRET: &str = "0123456789abcdef0123456789abcdef";

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_jaring"));
    c.env("RUST_LOG", "info").env("NO_COLOR", "1");
    c
}

/// Writes a realm config with cheap password hashing and one peer, linked over TLS with the
/// peer's key pinned when `pin` is given (the realm's certificate: `tls/{name}.pem`).
fn config(
    dir: &Path,
    name: &str,
    peer: &str,
    peer_addr: &str,
    pin: Option<&str>,
) -> std::path::PathBuf {
    let path = dir.join(format!("{name}.toml"));
    let tls = if pin.is_some() {
        format!("[tls]\ncert = \"tls/{name}.pem\"\nkey = \"tls/{name}-key.pem\"\n")
    } else {
        String::new()
    };
    let fingerprint = pin.map_or_else(String::new, |p| format!("fingerprint = \"{p}\"\n"));
    std::fs::write(
        &path,
        format!(
            "[realm]\nname = \"{name}\"\ndata_dir = \"{name}-data\"\n\
             [listen]\nbind = \"127.0.0.1\"\nport = 0\n\
             [federation]\nport = 0\n\
             [passwords]\nmemory_kib = 8\niterations = 1\n{tls}\
             [[peer]]\nname = \"{peer}\"\naddress = \"{peer_addr}\"\nsecret = \"{SECRET}\"\n\
             {fingerprint}"
        ),
    )
    .unwrap();
    path
}

/// Issues `tls/realm1.pem` and `tls/realm2.pem` (with keys) from a new CA.
fn issue_certificates(dir: &Path) {
    let ca = jaring_tls::pki::Authority::create("federation test CA").unwrap();
    std::fs::create_dir_all(dir.join("tls")).unwrap();
    let now = std::time::SystemTime::now();
    let day = Duration::from_secs(24 * 3600);
    for name in ["realm1", "realm2"] {
        let leaf = ca
            .issue(&["127.0.0.1".to_owned()], now - day, now + 30 * day)
            .unwrap();
        std::fs::write(dir.join(format!("tls/{name}.pem")), leaf.cert_pem).unwrap();
        std::fs::write(dir.join(format!("tls/{name}-key.pem")), leaf.key_pem).unwrap();
    }
}

/// `jaring chat tls fingerprint ARGS…`: what it prints.
fn fingerprint(args: &[&std::ffi::OsStr]) -> String {
    let out = bin()
        .args(["chat", "tls", "fingerprint"])
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let pin = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(pin.starts_with("sha256:") && pin.len() == 7 + 64, "{pin}");
    pin
}

fn add_user(config: &Path, user: &str) {
    let mut child = bin()
        .args(["chat", "user", "add", user, "--config"])
        .arg(config)
        .stdin(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{user}pw").unwrap();
    assert!(child.wait().unwrap().success());
}

/// Starts a realm; returns it with its client and federation ports, read from its log.
fn start(config: &Path, ports: Option<(u16, u16)>) -> (Child, u16, u16) {
    let mut cmd = bin();
    cmd.args(["chat", "serve", "--config"]).arg(config);
    if let Some((p, f)) = ports {
        cmd.args([
            "--port",
            &p.to_string(),
            "--federation-port",
            &f.to_string(),
        ]);
    }
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let port_after = |line: &str, key: &str| -> u16 {
        let i = line.find(key).unwrap() + key.len();
        line[i..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse()
            .unwrap()
    };
    let (client, fed) = loop {
        let line = lines.next().expect("server log").unwrap();
        if line.contains("chat realm ready") {
            break (
                port_after(&line, "--server 127.0.0.1:"),
                port_after(&line, "federation=127.0.0.1:"),
            );
        }
    };
    std::thread::spawn(move || for _ in lines {});
    (child, client, fed)
}

struct Client {
    stream: TcpStream,
    framer: ReplyFramer,
}

impl Client {
    fn connect(port: u16) -> Self {
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        Self {
            stream,
            framer: ReplyFramer::new(64 << 20),
        }
    }

    fn reply(&mut self) -> Value {
        let mut buf = [0u8; 8192];
        loop {
            if let Some(v) = self.framer.poll_reply().unwrap() {
                return v;
            }
            let n = self.stream.read(&mut buf).unwrap();
            assert!(n > 0, "server closed");
            self.framer.handle_input(&buf[..n]);
        }
    }

    fn call(&mut self, line: &str) -> Value {
        self.stream
            .write_all(format!("{line}\r\n").as_bytes())
            .unwrap();
        self.reply()
    }

    fn auth(&mut self, user: &str) -> String {
        let r = self.call(&format!("auth {user} {user}pw"));
        assert_eq!(r["status"], "OK", "{r}");
        r["tokenid"].as_str().unwrap().to_owned()
    }
}

/// realm2 (with james) and realm1 (with messi, dialling realm2), linked, messi logged in.
struct Pair {
    c1: PathBuf,
    c2: PathBuf,
    realm1: Child,
    realm2: Child,
    p1: u16,
    p2: u16,
    f1: u16,
    f2: u16,
    messi: Client,
    tm: String,
}

fn linked_pair(dir: &Path) -> Pair {
    linked_pair_over(dir, false)
}

/// [`linked_pair`], over mutual TLS with pinned keys when `tls`.
fn linked_pair_over(dir: &Path, tls: bool) -> Pair {
    let (pin1, pin2) = if tls {
        issue_certificates(dir);
        let cert = |name: &str| dir.join(format!("tls/{name}.pem"));
        // Both ways of asking: a certificate file, and a realm's config.
        let pin1 = fingerprint(&["--cert".as_ref(), cert("realm1").as_os_str()]);
        let probe = config(dir, "realm2", "realm1", "127.0.0.1:9", Some(&pin1));
        let pin2 = fingerprint(&["--config".as_ref(), probe.as_os_str()]);
        assert_ne!(pin1, pin2);
        (Some(pin1), Some(pin2))
    } else {
        (None, None)
    };
    let c2 = config(dir, "realm2", "realm1", "127.0.0.1:9", pin1.as_deref());
    add_user(&c2, "james");
    let (realm2, p2, f2) = start(&c2, None);
    let c1 = config(
        dir,
        "realm1",
        "realm2",
        &format!("127.0.0.1:{f2}"),
        pin2.as_deref(),
    );
    add_user(&c1, "messi");
    let (realm1, p1, f1) = start(&c1, None);
    let mut messi = Client::connect(p1);
    let tm = messi.auth("messi");
    wait_for("the link", || {
        messi.call(&format!("realms {tm}"))["peers"][0]["state"] == "up"
    });
    Pair {
        c1,
        c2,
        realm1,
        realm2,
        p1,
        p2,
        f1,
        f2,
        messi,
        tm,
    }
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn kill_9_the_peer_mid_transfer_every_message_arrives_once_in_order() {
    kill_9_the_peer_mid_transfer(false);
}

#[test]
fn kill_9_the_peer_mid_transfer_over_tls_every_message_arrives_once_in_order() {
    kill_9_the_peer_mid_transfer(true);
}

fn kill_9_the_peer_mid_transfer(tls: bool) {
    let dir = tempfile::tempdir().unwrap();
    let Pair {
        c2,
        mut realm1,
        mut realm2,
        p2,
        f2,
        mut messi,
        tm,
        ..
    } = linked_pair_over(dir.path(), tls);

    const N: usize = 600;
    let mut burst = String::new();
    for i in 0..N / 2 {
        burst.push_str(&format!("send {tm} james@realm2 m{i:04}\r\n"));
    }
    messi.stream.write_all(burst.as_bytes()).unwrap();
    for i in 0..N / 2 {
        let r = messi.reply();
        assert_eq!(r["status"], "OK", "{r}");
        if i == N / 4 {
            // Mid-transfer: the receiving realm dies without a chance to say anything.
            realm2.kill().unwrap();
            realm2.wait().unwrap();
        }
    }
    // While it is down, sends still get OK: the outbox holds them durably.
    for i in N / 2..N {
        let r = messi.call(&format!("send {tm} james@realm2 m{i:04}"));
        assert_eq!(r["status"], "OK", "{r}");
    }
    let (mut realm2, _, _) = start(&c2, Some((p2, f2)));

    let mut james = Client::connect(p2);
    let tj = james.auth("james");
    let mut got: Vec<String> = Vec::new();
    wait_for("every message", || {
        let r = james.call(&format!("inbox {tj}"));
        for list in r["messages"].as_object().unwrap().values() {
            for m in list.as_array().unwrap() {
                assert_eq!(m["from"], "messi@realm1");
                got.push(m["msg"].as_str().unwrap().to_owned());
            }
        }
        got.len() >= N
    });
    let expected: Vec<String> = (0..N).map(|i| format!("m{i:04}")).collect();
    assert_eq!(got, expected, "exactly once, in order");
    wait_for("the outbox to drain", || {
        messi.call(&format!("realms {tm}"))["peers"][0]["outbox"] == 0
    });
    for c in [&mut realm1, &mut realm2] {
        c.kill().unwrap();
        c.wait().unwrap();
    }
}

/// Sends `n` lines `sendgroup T GROUP {prefix}{i}` in one burst, killing `victim` after about half
/// of the OKs, then `n` more one by one while it is down; every one must be OK.
fn burst_with_kill(c: &mut Client, token: &str, group: &str, prefix: char, victim: &mut Child) {
    const N: usize = 150;
    let mut burst = String::new();
    for i in 0..N {
        burst.push_str(&format!("sendgroup {token} {group} {prefix}{i:04}\r\n"));
    }
    c.stream.write_all(burst.as_bytes()).unwrap();
    for i in 0..N {
        let r = c.reply();
        assert_eq!(r["status"], "OK", "{r}");
        if i == N / 2 {
            victim.kill().unwrap();
            victim.wait().unwrap();
        }
    }
    for i in N..2 * N {
        let r = c.call(&format!("sendgroup {token} {group} {prefix}{i:04}"));
        assert_eq!(r["status"], "OK", "{r}");
    }
}

/// A group's history once it holds `n` messages: (seq, id, from, msg).
fn group_history(
    c: &mut Client,
    token: &str,
    group: &str,
    n: usize,
) -> Vec<(i64, String, String, String)> {
    let mut got = Vec::new();
    wait_for(&format!("{n} messages in {group}"), || {
        let r = c.call(&format!("history {token} {group} 1000"));
        assert_eq!(r["status"], "OK", "{r}");
        got = r["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    m["seq"].as_i64().unwrap(),
                    m["id"].as_str().unwrap().to_owned(),
                    m["from"].as_str().unwrap().to_owned(),
                    m["msg"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        got.len() >= n
    });
    got
}

#[test]
fn kill_9_either_realm_of_a_group_every_message_arrives_once_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let Pair {
        c1,
        c2,
        mut realm1,
        mut realm2,
        p1,
        p2,
        f1,
        f2,
        mut messi,
        tm,
    } = linked_pair(dir.path());
    let mut james = Client::connect(p2);
    let tj = james.auth("james");
    // james (realm2) creates the group on its home, realm1, and joins it there.
    let r = james.call(&format!("sendgroup {tj} football@realm1 hello"));
    assert_eq!(r["status"], "OK", "{r}");
    let r = messi.call(&format!("sendgroup {tm} football kick-off"));
    assert_eq!(r["status"], "OK", "{r}");

    // The member realm dies under the feed; the home keeps taking messages.
    burst_with_kill(&mut messi, &tm, "football", 'm', &mut realm2);
    let (mut realm2b, _, _) = start(&c2, Some((p2, f2)));
    let mut james = Client::connect(p2);
    let tj = james.auth("james");
    // The home realm dies under the member realm's posts; they wait in realm2's outbox.
    burst_with_kill(&mut james, &tj, "football@realm1", 'j', &mut realm1);
    let (mut realm1b, _, _) = start(&c1, Some((p1, f1)));
    let mut messi = Client::connect(p1);
    let tm = messi.auth("messi");

    let total = 2 + 4 * 150;
    let h1 = group_history(&mut messi, &tm, "football", total);
    let h2 = group_history(&mut james, &tj, "football@realm1", total);
    let seqs: Vec<i64> = h1.iter().map(|m| m.0).collect();
    assert_eq!(
        seqs,
        (1..=total as i64).collect::<Vec<_>>(),
        "no gap, no duplicate"
    );
    let key = |h: &[(i64, String, String, String)]| -> Vec<(i64, String, String)> {
        h.iter().map(|m| (m.0, m.1.clone(), m.3.clone())).collect()
    };
    assert_eq!(key(&h1), key(&h2), "one order on both realms");
    for (who, prefix) in [("messi", 'm'), ("james@realm2", 'j')] {
        let mine: Vec<&str> = h1
            .iter()
            .filter(|m| m.2 == who && m.3.starts_with(prefix) && m.3.len() == 5)
            .map(|m| m.3.as_str())
            .collect();
        let want: Vec<String> = (0..300).map(|i| format!("{prefix}{i:04}")).collect();
        assert_eq!(mine, want, "{who}: exactly once, in order");
    }
    for c in [&mut realm1b, &mut realm2b] {
        c.kill().unwrap();
        c.wait().unwrap();
    }
}
