//! `jaring lab` on ephemeral ports: it starts, prints where everything listens, every client works
//! against it (time, both echo ports, chat on both realms and across the link, private and in a
//! group), and SIGTERM stops it cleanly.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use jaring_proto::chat::ReplyFramer;
use serde_json::Value;

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

#[test]
fn the_lab_starts_and_every_client_works_against_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut lab = Command::new(env!("CARGO_BIN_EXE_jaring"))
        .args(["lab", "--bind", "127.0.0.1", "--ephemeral", "--dir"])
        .arg(dir.path().join("lab"))
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut ports: HashMap<String, u16> = HashMap::new();
    let mut lines = BufReader::new(lab.stdout.take().unwrap()).lines();
    for line in lines.by_ref() {
        let line = line.unwrap();
        if line.starts_with("Ctrl-C") {
            break;
        }
        if let Some(i) = line.find("127.0.0.1:") {
            let what = line[..i].trim().to_owned();
            let port: String = line[i + 10..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            ports.insert(what, port.parse().unwrap());
        }
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
    let status = Command::new("kill")
        .args(["-TERM", &lab.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    drop(c1);
    drop(c2);
    let deadline = Instant::now() + Duration::from_secs(30);
    let code = loop {
        if let Some(s) = lab.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "lab did not stop");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(code.success(), "{code:?}");
}
