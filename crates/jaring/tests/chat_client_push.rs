//! `jaring chat client` (piped, `--json`) against the real server while its connection is reset
//! at random points, while the server is killed with `kill -9` and restarted, and with a 2 s idle
//! timeout: another user sends 1,000 private messages and another member 1,000 group posts, and
//! the client shows every one exactly once, in order.
#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use support::{
    ChatClient, ClientProcess, PATIENCE, Relay, ServerProcess, flood, free_port, wait_for,
};

const N: usize = 1000;

/// How long the whole stream may take to arrive (generous: shared, noisy machines).
const STREAM_PATIENCE: Duration = Duration::from_secs(180);

/// `messi`'s private messages to henderson and `lineker`'s posts to football, numbered from
/// `from` to `to`, sent at once from two threads.
fn send_both(port: u16, from: usize, to: usize) {
    let private: Vec<String> = (from..to)
        .map(|i| format!("send {{T}} henderson p{i:04}"))
        .collect();
    let group: Vec<String> = (from..to)
        .map(|i| format!("sendgroup {{T}} football g{i:04}"))
        .collect();
    let a = std::thread::spawn(move || flood(port, "messi", &private, Duration::ZERO));
    let b = std::thread::spawn(move || flood(port, "lineker", &group, Duration::ZERO));
    a.join().unwrap();
    b.join().unwrap();
}

/// Makes henderson and lineker members of football.
fn join_football(port: u16) {
    for user in ["henderson", "lineker"] {
        let mut c = ChatClient::connect(port);
        let t = c.auth(user, "surabaya");
        c.ok(&format!("group {t} football"));
        // Back to commands; the membership stays. Events may come before the final OK.
        assert!(c.write_lines(&["exit".to_owned()]));
        let r = loop {
            let r = c.reply().unwrap();
            if r.get("status").is_some() {
                break r;
            }
        };
        assert_eq!(r["status"], "OK", "{r}");
    }
}

/// The private texts and group texts the client printed, in the order printed.
fn shown(client: &ClientProcess) -> (Vec<String>, Vec<String>) {
    let mut private = Vec::new();
    let mut group = Vec::new();
    for v in client.json_lines() {
        let text = v["msg"].as_str().unwrap_or_default().to_owned();
        match v["event"].as_str() {
            Some("private") => private.push(text),
            Some("message") if v["group"] == "football" => group.push(text),
            _ => {}
        }
    }
    (private, group)
}

/// Waits until the client has shown `n` of each, then checks each stream is exactly the
/// messages sent, once each, in the order sent.
fn assert_exactly_once(client: &ClientProcess, n: usize) {
    wait_for("every message shown", STREAM_PATIENCE, || {
        let (p, g) = shown(client);
        p.len() >= n && g.len() >= n
    });
    // Anything repeated late would show up now.
    std::thread::sleep(Duration::from_secs(1));
    let (private, group) = shown(client);
    let want_p: Vec<String> = (0..n).map(|i| format!("p{i:04}")).collect();
    let want_g: Vec<String> = (0..n).map(|i| format!("g{i:04}")).collect();
    assert_eq!(private.len(), n, "private messages shown once each");
    assert_eq!(private, want_p, "private messages in order");
    assert_eq!(group.len(), n, "group posts shown once each");
    assert_eq!(group, want_g, "group posts in order");
}

fn start_client(port: u16, extra: &[&str]) -> ClientProcess {
    let server = format!("127.0.0.1:{port}");
    let mut args = vec!["--server", server.as_str(), "--json", "--timeout", "5"];
    args.extend(extra);
    let mut client = ClientProcess::start(&args);
    client.type_line("auth henderson surabaya");
    wait_for("the client to watch", PATIENCE, || {
        client
            .json_lines()
            .iter()
            .any(|v| v["message"] == "Watching")
    });
    client
}

fn notices(client: &ClientProcess) -> String {
    client.stderr.lock().unwrap().join("\n")
}

#[test]
fn every_message_exactly_once_in_order_through_a_connection_reset_at_random_points() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("realm");
    let server = ServerProcess::start(&["chat", "serve"], &["--data-dir", data.to_str().unwrap()]);
    join_football(server.port);
    let relay = Relay::start(server.port);
    let client = start_client(relay.port, &[]);

    let stop = Arc::new(AtomicBool::new(false));
    let resetter = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
            let mut resets = 0;
            while !stop.load(Ordering::SeqCst) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                // 20 to 400 ms between resets: some in the middle of a burst of events, some
                // in the middle of a reconnect's login and watch.
                std::thread::sleep(Duration::from_millis(20 + x % 380));
                relay.reset_all();
                resets += 1;
            }
            (relay, resets)
        })
    };
    send_both(server.port, 0, N);
    assert_exactly_once(&client, N);
    stop.store(true, Ordering::SeqCst);
    let (relay, resets) = resetter.join().unwrap();
    let reconnects = relay.accepted.load(Ordering::SeqCst);
    eprintln!("{resets} resets, {reconnects} connections");
    assert!(
        reconnects > 1,
        "the client reconnected after the resets ({resets} resets, {reconnects} connections)"
    );
    assert!(
        notices(&client).contains("Disconnected"),
        "{}",
        notices(&client)
    );
    assert_eq!(client.finish(), Some(0));
}

#[test]
fn every_message_exactly_once_in_order_across_a_kill_9_of_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("realm");
    let port = free_port();
    let args = |port: u16| {
        [
            "chat".to_owned(),
            "serve".to_owned(),
            "--bind".to_owned(),
            "127.0.0.1".to_owned(),
            "--port".to_owned(),
            port.to_string(),
            "--data-dir".to_owned(),
            data.to_str().unwrap().to_owned(),
        ]
    };
    let mut server = ServerProcess::run(args(port));
    join_football(port);
    let client = start_client(port, &[]);

    send_both(port, 0, N / 2);
    // Kill the realm as soon as the push stream is under way.
    wait_for("the first pushed message", STREAM_PATIENCE, || {
        let (p, g) = shown(&client);
        !p.is_empty() || !g.is_empty()
    });
    server.kill9();
    wait_for("the client to notice", PATIENCE, || {
        notices(&client).contains("Disconnected")
    });
    let _server = ServerProcess::run(args(port));
    send_both(port, N / 2, N);
    assert_exactly_once(&client, N);
    assert!(
        notices(&client).contains("Reconnected"),
        "{}",
        notices(&client)
    );
    assert_eq!(client.finish(), Some(0));
}

#[test]
fn a_pinging_client_outlives_a_2_s_idle_timeout_and_gets_everything() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("realm");
    let server = ServerProcess::start(
        &["chat", "serve"],
        &["--data-dir", data.to_str().unwrap(), "--idle-timeout", "2"],
    );
    join_football(server.port);
    let client = start_client(server.port, &[]);
    // Three idle timeouts of silence from the realm: only the client's pings keep it.
    std::thread::sleep(Duration::from_secs(6));
    send_both(server.port, 0, N);
    assert_exactly_once(&client, N);
    let said = notices(&client);
    assert!(
        !said.contains("Disconnected"),
        "the pinging client was never dropped: {said}"
    );
    assert_eq!(client.finish(), Some(0));
}

#[test]
fn a_client_whose_messages_another_client_took_does_not_take_them_back() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("realm");
    let server = ServerProcess::start(&["chat", "serve"], &["--data-dir", data.to_str().unwrap()]);
    let first = start_client(server.port, &[]);
    let second = start_client(server.port, &[]);
    wait_for("the first client to hear it moved", PATIENCE, || {
        first.json_lines().iter().any(|v| v["event"] == "watch_end")
    });
    // Were the first to take the stream back, the two would take turns and the second would
    // miss messages.
    std::thread::sleep(Duration::from_secs(2));
    let private: Vec<String> = (0..20)
        .map(|i| format!("send {{T}} henderson p{i:04}"))
        .collect();
    flood(server.port, "messi", &private, Duration::ZERO);
    wait_for("the second client to get them all", PATIENCE, || {
        shown(&second).0.len() >= 20
    });
    let (got, _) = shown(&second);
    let want: Vec<String> = (0..20).map(|i| format!("p{i:04}")).collect();
    assert_eq!(got, want);
    assert!(
        shown(&first).0.is_empty(),
        "the first client does not watch any more"
    );
    assert!(
        notices(&first).contains("/watch takes them back"),
        "{}",
        notices(&first)
    );
    assert_eq!(first.finish(), Some(0));
    assert_eq!(second.finish(), Some(0));
}
