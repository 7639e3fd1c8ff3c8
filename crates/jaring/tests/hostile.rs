//! The real `jaring chat serve` under clients that pipeline every command and never read: its
//! memory stays bounded (the bound docs/chat-protocol.md states), it does not keep growing once
//! they leave, and SIGTERM still ends it within the grace period.
#![allow(clippy::unwrap_used)]

mod support;

use std::io::Write as _;
use std::time::{Duration, Instant};

use support::{ChatClient, ServerProcess, rss_kib};

/// Hostile connections, each from 127.0.0.1 and logged in.
const HOSTILE: usize = 8;

/// The resident memory the server may reach with [`HOSTILE`] such clients. Each holds at most
/// the reply budget (64 KiB) and one reply (1 MiB) once it is blocked; on top come the history
/// windows being read and encoded (at most 8 reads at once, each about 1 MiB of text read, its
/// copy and its encoding), SQLite's page caches and the allocator's retention, over ~45 MiB at
/// rest. Measured: 134 MiB at most. Before the reply cap and budget one such connection grew
/// the server by gigabytes.
const RSS_BOUND_MIB: u64 = 200;

/// How long the hostile clients keep pipelining.
const ATTACK: Duration = Duration::from_secs(6);

#[test]
fn pipelining_clients_that_never_read_cost_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("realm");
    let mut server = ServerProcess::start(
        &["chat", "serve"],
        &["--data-dir", data.to_str().unwrap(), "--grace", "2"],
    );
    let pid = server.pid();

    // What makes replies big: 40 messages of 60 kB in a conversation and in a group.
    let mut messi = ChatClient::connect(server.port);
    let tm = messi.auth("messi", "surabaya");
    let big = "x".repeat(60_000);
    for _ in 0..40 {
        let r = messi.call(&format!("send {tm} henderson {big}")).unwrap();
        assert_eq!(r["status"], "OK", "{r}");
    }
    assert_eq!(
        messi.call(&format!("group {tm} football")).unwrap()["status"],
        "OK"
    );
    // The live session's events may come before the OK that ends it.
    let mut bye = messi.call("exit").unwrap();
    while bye.get("status").is_none() {
        bye = messi.reply().unwrap();
    }
    assert_eq!(bye["status"], "OK", "{bye}");
    for _ in 0..40 {
        let r = messi
            .call(&format!("sendgroup {tm} football {big}"))
            .unwrap();
        assert_eq!(r["status"], "OK", "{r}");
    }
    let rest = rss_kib(pid).unwrap();

    let mut threads = Vec::new();
    for _ in 0..HOSTILE {
        let port = server.port;
        threads.push(std::thread::spawn(move || {
            let mut c = ChatClient::connect(port);
            let t = c.auth("messi", "surabaya");
            let burst = [
                format!("history {t} henderson 1000"),
                format!("history {t} football 1000"),
                format!("users {t}"),
                format!("groups {t}"),
                format!("members {t} football"),
                format!("inboxgroup {t} football"),
                format!("inbox {t}"),
                format!("send {t} lineker pipelined"),
                format!("realms {t}"),
            ]
            .join("\r\n")
                + "\r\n";
            // Writes until the server stops reading (the kernel's buffers fill) or time is up.
            c.stream
                .set_write_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            let started = Instant::now();
            while started.elapsed() < ATTACK {
                if c.stream.write_all(burst.as_bytes()).is_err() {
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
            c
        }));
    }
    let mut peak = 0;
    let started = Instant::now();
    while started.elapsed() < ATTACK {
        peak = peak.max(rss_kib(pid).unwrap());
        std::thread::sleep(Duration::from_millis(100));
    }
    let hostile: Vec<ChatClient> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    peak = peak.max(rss_kib(pid).unwrap());
    eprintln!(
        "server RSS: {} MiB at rest, {} MiB at most with {HOSTILE} clients that never read",
        rest / 1024,
        peak / 1024
    );
    assert!(
        peak / 1024 < RSS_BOUND_MIB,
        "RSS reached {} MiB (from {} MiB at rest) with {HOSTILE} clients that never read",
        peak / 1024,
        rest / 1024
    );

    // A good client is still served meanwhile.
    let mut good = ChatClient::connect(server.port);
    let tg = good.auth("lineker", "surabaya");
    assert_eq!(good.call(&format!("users {tg}")).unwrap()["status"], "OK");

    // They leave: nothing keeps growing.
    drop(hostile);
    std::thread::sleep(Duration::from_secs(1));
    let after = rss_kib(pid).unwrap();
    assert!(
        after <= peak + 8 * 1024,
        "RSS kept growing after the clients left: {} MiB, peak {} MiB",
        after / 1024,
        peak / 1024
    );

    // SIGTERM with replies still queued: the process is gone within its grace period.
    let mut queued = ChatClient::connect(server.port);
    let tq = queued.auth("messi", "surabaya");
    let _ = queued.stream.write_all(
        format!("history {tq} henderson 1000\r\n")
            .repeat(50)
            .as_bytes(),
    );
    let signalled = Instant::now();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
    let code = server.wait_exit();
    assert!(
        signalled.elapsed() < Duration::from_secs(2 + 8),
        "exited {:?} after SIGTERM with a 2 s grace period",
        signalled.elapsed()
    );
    assert_eq!(code, Some(0));
    drop(queued);
}
