//! Two real `jaring chat serve` processes linked by federation. kill -9 the receiving realm in the
//! middle of a transfer, keep sending while it is down, restart it on the same ports: every
//! message that got OK arrives exactly once, in the order it was sent.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::path::Path;
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

/// Writes a realm config with cheap password hashing and one peer.
fn config(dir: &Path, name: &str, peer: &str, peer_addr: &str) -> std::path::PathBuf {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            "[realm]\nname = \"{name}\"\ndata_dir = \"{name}-data\"\n\
             [listen]\nbind = \"127.0.0.1\"\nport = 0\n\
             [federation]\nport = 0\n\
             [passwords]\nmemory_kib = 8\niterations = 1\n\
             [[peer]]\nname = \"{peer}\"\naddress = \"{peer_addr}\"\nsecret = \"{SECRET}\"\n"
        ),
    )
    .unwrap();
    path
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

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn kill_9_the_peer_mid_transfer_every_message_arrives_once_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let c2 = config(dir.path(), "realm2", "realm1", "127.0.0.1:9");
    add_user(&c2, "james");
    let (mut realm2, p2, f2) = start(&c2, None);
    let c1 = config(dir.path(), "realm1", "realm2", &format!("127.0.0.1:{f2}"));
    add_user(&c1, "messi");
    let (mut realm1, p1, _) = start(&c1, None);

    let mut messi = Client::connect(p1);
    let tm = messi.auth("messi");
    wait_for("the link", || {
        messi.call(&format!("realms {tm}"))["peers"][0]["state"] == "up"
    });

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
