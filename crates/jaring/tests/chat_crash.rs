//! kill -9 the real `jaring chat serve` in the middle of a burst of sends, restart it on the same
//! data directory: every message that got OK is in its recipient's inbox exactly once.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::{ChatClient, ServerProcess};

const USERS: [&str; 3] = ["messi", "henderson", "lineker"];

/// `jaring chat serve` on `dir`, on a free loopback port.
fn start(dir: &std::path::Path) -> ServerProcess {
    ServerProcess::start(&["chat", "serve"], &["--data-dir", dir.to_str().unwrap()])
}

#[test]
fn every_acknowledged_message_survives_kill_9_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start(dir.path());
    let port = server.port;
    let acked: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    // Every sender logs in before the kill: a login still hashing its password when the server
    // dies would fail the test for a reason that is not the one under test.
    let authed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut senders = Vec::new();
    for s in 0..6 {
        let acked = Arc::clone(&acked);
        let authed = Arc::clone(&authed);
        senders.push(std::thread::spawn(move || {
            let mut c = ChatClient::connect(port);
            let from = USERS[s % 3];
            let to = USERS[(s + 1) % 3];
            let t = c.auth(from, "surabaya");
            authed.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            for k in 0.. {
                let body = format!("s{s}-{k}");
                match c.call(&format!("send {t} {to} {body}")) {
                    Some(r) if r["status"] == "OK" => {
                        acked.lock().unwrap().push((to.to_owned(), body))
                    }
                    _ => break,
                }
            }
        }));
    }
    // Senders keep going until the kill cuts them off; let a burst build up, then kill -9.
    while authed.load(std::sync::atomic::Ordering::SeqCst) < 6 || acked.lock().unwrap().len() < 300
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    server.kill9();
    for s in senders {
        s.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 300);

    let mut server = start(dir.path());
    let port = server.port;
    let mut seen: HashMap<(String, String), usize> = HashMap::new();
    let mut c = ChatClient::connect(port);
    for user in USERS {
        let t = c.auth(user, "surabaya");
        loop {
            let r = c.call(&format!("inbox {t}")).unwrap();
            let mut n = 0;
            for list in r["messages"].as_object().unwrap().values() {
                for m in list.as_array().unwrap() {
                    *seen
                        .entry((user.to_owned(), m["msg"].as_str().unwrap().to_owned()))
                        .or_default() += 1;
                    n += 1;
                }
            }
            if n == 0 {
                break;
            }
        }
    }
    server.kill9();
    for key in &acked {
        assert_eq!(seen.get(key), Some(&1), "acknowledged message {key:?}");
    }
    // Messages in flight at the kill may or may not have been committed, but never twice.
    assert!(seen.values().all(|&n| n == 1));
}

/// A watching client resumes with its cursors after the realm is killed with `kill -9` and
/// restarted: every message that got OK is pushed to it exactly once, all in the order sent,
/// including the ones sent after the restart (over the token that survived it).
#[test]
fn pushed_messages_survive_kill_9_exactly_once_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start(dir.path());
    let mut sender = ChatClient::connect(server.port);
    let ts = sender.auth("messi", "surabaya");
    let mut watcher = ChatClient::connect(server.port);
    let tw = watcher.auth("henderson", "surabaya");
    watcher.ok(&format!("watch {tw}"));
    let mut acked: Vec<u64> = Vec::new();
    let mut got: Vec<u64> = Vec::new();
    let mut cursor = 0i64;
    // Read what is pushed, keeping the cursor as a client does.
    let take = |w: &mut ChatClient, got: &mut Vec<u64>, cursor: &mut i64, until: usize| {
        while got.len() < until {
            let Some(v) = w.reply() else { return };
            if v["event"] == "private" {
                *cursor = v["seq"].as_i64().unwrap();
                got.push(v["msg"].as_str().unwrap().parse().unwrap());
            }
        }
    };
    for k in 0..200u64 {
        sender.ok(&format!("send {ts} henderson {k}"));
        acked.push(k);
    }
    take(&mut watcher, &mut got, &mut cursor, 120);
    // More messages are committed (and pushed, unread) when the realm dies.
    for k in 200..300u64 {
        sender.ok(&format!("send {ts} henderson {k}"));
        acked.push(k);
    }
    server.kill9();
    let mut server = start(dir.path());
    let mut watcher = ChatClient::connect(server.port);
    watcher.ok(&format!("watch {tw} {cursor}"));
    let mut sender = ChatClient::connect(server.port);
    for k in 300..350u64 {
        sender.ok(&format!("send {ts} henderson {k}"));
        acked.push(k);
    }
    take(&mut watcher, &mut got, &mut cursor, acked.len());
    server.kill9();
    assert_eq!(got, acked, "every message once, in the order sent");
}
