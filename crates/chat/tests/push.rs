//! Pushed events over real TCP (`watch`, `ack`, `ping`): private and group messages reach a
//! watching connection once and in order, across resets, takeovers, live sessions and restarts.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use jaring_chat::{RealmOptions, SystemClock};
use jaring_runtime::Model;
use serde_json::Value;

/// A watching client: replies come back from [`Watcher::call`]; events pile up in `events`.
struct Watcher {
    c: Client,
    token: String,
    events: Vec<Value>,
}

impl Watcher {
    async fn new(addr: std::net::SocketAddr, user: &str, cursors: &str) -> Self {
        let (c, token) = login(addr, user).await;
        let mut w = Self {
            c,
            token,
            events: Vec::new(),
        };
        let r = w.call(&format!("watch {} {cursors}", w.token)).await;
        assert_eq!(r["message"], "Watching", "{r}");
        w
    }

    /// Sends `line` and returns its reply, keeping the events that come before it.
    async fn call(&mut self, line: &str) -> Value {
        self.c.send_raw(format!("{line}\r\n").as_bytes()).await;
        loop {
            let v = self.c.reply().await.expect("a reply");
            if v.get("event").is_some() {
                self.events.push(v);
            } else {
                return v;
            }
        }
    }

    /// Reads until `n` events are held (or the server closes: `false`).
    async fn wait_events(&mut self, n: usize) -> bool {
        while self.events.len() < n {
            match self.c.reply().await {
                Some(v) => {
                    assert!(v.get("event").is_some(), "a reply nobody asked for: {v}");
                    self.events.push(v);
                }
                None => return false,
            }
        }
        true
    }
}

/// Makes the client's user a member of `group` (a live session, left at once).
async fn join(c: &mut Client, token: &str, group: &str) {
    assert!(ok(&c.call(&format!("group {token} {group}")).await));
    c.send_raw(b"exit\r\n").await;
    loop {
        let v = c.reply().await.unwrap();
        if v.get("status").is_some() {
            assert!(ok(&v), "{v}");
            return;
        }
    }
}

fn texts(events: &[Value], kind: &str) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["event"] == kind)
        .map(|e| e["msg"].as_str().unwrap().to_owned())
        .collect()
}

async fn realm(
    users: &[&str],
    options: RealmOptions,
    model: Model,
) -> (tempfile::TempDir, Running) {
    realm_with(users, options, |c| c.model = model).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_messages_are_pushed_once_and_kept_until_acknowledged() {
    for model in [Model::Async, Model::Threads] {
        let (_dir, r) = realm(&["ann", "bob"], options(), model).await;
        let mut w = Watcher::new(r.addr, "bob", "").await;
        let (mut a, at) = login(r.addr, "ann").await;
        for i in 0..3 {
            assert!(ok(&a.call(&format!("send {at} bob m{i}")).await));
        }
        assert!(w.wait_events(3).await);
        assert_eq!(texts(&w.events, "private"), ["m0", "m1", "m2"], "{model:?}");
        let seqs: Vec<i64> = w
            .events
            .iter()
            .map(|e| e["seq"].as_i64().unwrap())
            .collect();
        assert!(seqs.windows(2).all(|p| p[0] < p[1]), "{seqs:?}");
        assert_eq!(w.events[0]["from"], "ann");
        assert_eq!(w.events[0]["msg_from"], "ANN");

        // Not acknowledged: a new watch without cursors is pushed them again; with the first's
        // seq, only what follows it.
        drop(w);
        let mut again = Watcher::new(r.addr, "bob", "").await;
        assert!(again.wait_events(3).await);
        assert_eq!(texts(&again.events, "private"), ["m0", "m1", "m2"]);
        drop(again);
        let mut resumed = Watcher::new(r.addr, "bob", &seqs[0].to_string()).await;
        assert!(resumed.wait_events(2).await);
        assert_eq!(texts(&resumed.events, "private"), ["m1", "m2"]);
        // Acknowledged: gone from the next watch and from inbox.
        let ack = resumed
            .call(&format!("ack {} {}", resumed.token, seqs[2]))
            .await;
        assert_eq!(ack["message"], "Acknowledged", "{ack}");
        drop(resumed);
        let mut last = Watcher::new(r.addr, "bob", "").await;
        let inbox = last.call(&format!("inbox {}", last.token)).await;
        assert!(bodies(&inbox).is_empty(), "{inbox}");
        assert!(last.events.is_empty(), "{:?}", last.events);
        r.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_messages_are_pushed_without_a_live_session() {
    let (_dir, r) = realm(&["ann", "bob"], options(), Model::Async).await;
    let (mut a, at) = login(r.addr, "ann").await;
    let (mut b, bt) = login(r.addr, "bob").await;
    assert!(ok(&b
        .call(&format!("sendgroup {bt} football joined"))
        .await));
    assert!(ok(&a
        .call(&format!("sendgroup {at} football before"))
        .await));
    // Both wait for bob: his own post is a message of the group like any other.
    let mut w = Watcher::new(r.addr, "bob", "").await;
    assert!(ok(&a.call(&format!("sendgroup {at} football live")).await));
    // A group joined while watching is pushed too.
    assert!(ok(&a.call(&format!("sendgroup {at} chess first")).await));
    let joined = w.call(&format!("sendgroup {} chess mine", w.token)).await;
    assert!(ok(&joined), "{joined}");
    assert!(ok(&a.call(&format!("sendgroup {at} chess second")).await));
    assert!(w.wait_events(5).await);
    let football: Vec<(i64, String)> = w
        .events
        .iter()
        .filter(|e| e["group"] == "football")
        .map(|e| {
            (
                e["seq"].as_i64().unwrap(),
                e["msg"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        football,
        [
            (1, "joined".into()),
            (2, "before".into()),
            (3, "live".into())
        ]
    );
    let chess: Vec<String> = w
        .events
        .iter()
        .filter(|e| e["group"] == "chess")
        .map(|e| e["msg"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(chess, ["mine", "second"], "joined after `first`");
    // The cursor moves with `ack`: inboxgroup has nothing left.
    let ack = w.call(&format!("ack {} football:3 chess:3", w.token)).await;
    assert!(ok(&ack), "{ack}");
    let left = b.call(&format!("inboxgroup {bt} football")).await;
    assert_eq!(left["messages"].as_array().unwrap().len(), 0, "{left}");
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_in_a_live_session_still_gets_private_messages() {
    for model in [Model::Async, Model::Threads] {
        let (_dir, r) = realm(&["ann", "bob"], options(), model).await;
        let (mut a, at) = login(r.addr, "ann").await;
        let mut w = Watcher::new(r.addr, "bob", "").await;
        let join = w.call(&format!("group {} football", w.token)).await;
        assert!(ok(&join), "{join}");
        assert!(ok(&a.call(&format!("sendgroup {at} football g1")).await));
        assert!(ok(&a.call(&format!("send {at} bob p1")).await));
        assert!(ok(&a.call(&format!("sendgroup {at} football g2")).await));
        // Presence (ann joining) is pushed to live sessions too: count messages only.
        while texts(&w.events, "private").len() + texts(&w.events, "message").len() < 3 {
            let n = w.events.len() + 1;
            assert!(w.wait_events(n).await);
        }
        assert_eq!(texts(&w.events, "private"), ["p1"], "{model:?}");
        assert_eq!(texts(&w.events, "message"), ["g1", "g2"], "{model:?}");
        // After the live session the watch carries the group on, without repeating g1 and g2.
        w.c.send_raw(b"exit\r\n").await;
        let bye = loop {
            let v = w.c.reply().await.unwrap();
            if v.get("status").is_some() {
                break v;
            }
            w.events.push(v);
        };
        assert!(ok(&bye), "{bye}");
        assert!(ok(&a.call(&format!("sendgroup {at} football g3")).await));
        while texts(&w.events, "message").len() < 3 {
            let n = w.events.len() + 1;
            assert!(w.wait_events(n).await);
        }
        assert_eq!(texts(&w.events, "message"), ["g1", "g2", "g3"], "{model:?}");
        r.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_watch_takes_the_stream_over() {
    let (_dir, r) = realm(&["ann", "bob"], options(), Model::Async).await;
    let mut first = Watcher::new(r.addr, "bob", "").await;
    let second = Watcher::new(r.addr, "bob", "").await;
    assert!(first.wait_events(1).await);
    assert_eq!(first.events[0]["event"], "watch_end");
    assert_eq!(first.events[0]["reason"], jaring_chat::groups::WATCH_MOVED);
    // The first connection is open, in command mode, and gets nothing more pushed.
    let (mut a, at) = login(r.addr, "ann").await;
    assert!(ok(&a.call(&format!("send {at} bob hi")).await));
    let mut second = second;
    assert!(second.wait_events(1).await);
    assert_eq!(texts(&second.events, "private"), ["hi"]);
    let users = first.call(&format!("users {}", first.token)).await;
    assert!(ok(&users));
    assert_eq!(first.events.len(), 1, "{:?}", first.events);
    // Logging out the watching token ends that watch.
    let out = second.call(&format!("logout {}", second.token)).await;
    assert!(ok(&out));
    assert!(second.wait_events(2).await);
    assert_eq!(
        second.events[1]["event"], "watch_end",
        "{:?}",
        second.events
    );
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_counts_what_waits_unread() {
    let (_dir, r) = realm(&["ann", "bob", "cat"], options(), Model::Async).await;
    let (mut a, at) = login(r.addr, "ann").await;
    let (mut c, ct) = login(r.addr, "cat").await;
    let (mut b, bt) = login(r.addr, "bob").await;
    join(&mut b, &bt, "football").await;
    drop(b);
    for i in 0..2 {
        assert!(ok(&a.call(&format!("send {at} bob a{i}")).await));
    }
    assert!(ok(&c.call(&format!("send {ct} bob c")).await));
    for i in 0..3 {
        assert!(ok(&a.call(&format!("sendgroup {at} football f{i}")).await));
    }
    let mut b = Client::connect(r.addr).await;
    let v = b.call("auth bob bobpw").await;
    assert_eq!(v["unread"], serde_json::json!({"ann": 2, "cat": 1}), "{v}");
    assert_eq!(
        v["unread_groups"],
        serde_json::json!({"football": 3}),
        "{v}"
    );
    // Nothing waiting: both keys, empty.
    let v = c.call("auth cat catpw").await;
    assert_eq!(v["unread"], serde_json::json!({}), "{v}");
    assert_eq!(v["unread_groups"], serde_json::json!({}), "{v}");
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbox_since_resumes_after_what_the_client_has() {
    let (_dir, r) = realm(&["ann", "bob"], options(), Model::Async).await;
    let (mut a, at) = login(r.addr, "ann").await;
    for i in 0..3 {
        assert!(ok(&a.call(&format!("send {at} bob m{i}")).await));
    }
    let (mut b, bt) = login(r.addr, "bob").await;
    let first = b.call(&format!("inbox {bt}")).await;
    let seq0 = first["messages"]["ann"][0]["seq"].as_i64().unwrap();
    // The connection drops before the next request: the reply may never have been read.
    drop(b);
    let (mut b, bt) = login(r.addr, "bob").await;
    let again = b.call(&format!("inbox {bt} {seq0}")).await;
    assert_eq!(
        bodies(&again),
        [
            ("ann".to_owned(), "m1".to_owned()),
            ("ann".into(), "m2".into())
        ]
    );
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_close_silently_unless_they_take_events() {
    let (_dir, r) = realm_with(&["ann", "bob"], options(), |c| {
        c.limits.idle_timeout = Duration::from_secs(1);
    })
    .await;
    // A classic client in command mode: closed with no frame it could take for a reply.
    let (mut classic, _) = login(r.addr, "ann").await;
    assert_eq!(classic.reply_bytes().await, None, "closed without a word");
    // A watching client: told why in an event, then closed.
    let mut w = Watcher::new(r.addr, "bob", "").await;
    assert!(w.wait_events(1).await);
    assert_eq!(w.events[0]["event"], "closing", "{:?}", w.events);
    assert!(
        w.events[0]["reason"]
            .as_str()
            .unwrap()
            .contains("idle for 1 s"),
        "{:?}",
        w.events
    );
    // A watching client that pings stays, and keeps being pushed.
    let mut alive = Watcher::new(r.addr, "bob", "").await;
    let (mut a, at) = login(r.addr, "ann").await;
    for i in 0..8 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let pong = alive.call(&format!("ping {}", alive.token)).await;
        assert_eq!(pong["message"], "pong");
        // ann keeps her own connection alive by sending.
        assert!(ok(&a.call(&format!("send {at} bob n{i}")).await));
    }
    assert!(alive.wait_events(8).await);
    assert_eq!(
        texts(&alive.events, "private").len(),
        8,
        "{:?}",
        alive.events
    );
    r.stop().await;
}

/// The exactly-once test, on the wire: another user sends 1,000 private messages and
/// 1,000 group posts while the watching connection is reset (RST) at random points and resumes
/// with its cursors each time; in the end it has every message exactly once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resets_at_random_points_lose_and_repeat_nothing() {
    let (_dir, r) = realm(&["ann", "bob"], options(), Model::Async).await;
    {
        let (mut b, bt) = login(r.addr, "bob").await;
        join(&mut b, &bt, "football").await;
    }
    const N: usize = 1000;
    let addr = r.addr;
    let sender = tokio::spawn(async move {
        let (mut a, at) = login(addr, "ann").await;
        for i in 0..N {
            assert!(ok(&a.call(&format!("send {at} bob p{i}")).await));
            assert!(ok(&a.call(&format!("sendgroup {at} football g{i}")).await));
        }
    });
    let mut private: Vec<String> = Vec::new();
    let mut group: Vec<String> = Vec::new();
    let (mut pseq, mut gseq) = (0i64, 0i64);
    let mut resets = 0;
    // A small deterministic generator: how many events to take before the next reset.
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while private.len() < N || group.len() < N {
        assert!(
            tokio::time::Instant::now() < deadline,
            "stuck at {} / {}",
            private.len(),
            group.len()
        );
        let cursors = format!("{pseq} football:{gseq}");
        let mut w = Watcher::new(r.addr, "bob", &cursors).await;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let take = (x % 300) as usize + 1;
        let mut taken = 0;
        while taken < take && (private.len() < N || group.len() < N) {
            let Some(v) = w.c.reply().await else { break };
            match v["event"].as_str() {
                Some("private") => {
                    let seq = v["seq"].as_i64().unwrap();
                    assert!(seq > pseq, "private seq {seq} after {pseq}");
                    pseq = seq;
                    private.push(v["msg"].as_str().unwrap().to_owned());
                }
                Some("message") => {
                    let seq = v["seq"].as_i64().unwrap();
                    assert_eq!(seq, gseq + 1, "group order");
                    gseq = seq;
                    group.push(v["msg"].as_str().unwrap().to_owned());
                }
                None => {
                    // The reply to an `ack`.
                    assert!(ok(&v), "{v}");
                    continue;
                }
                _ => panic!("unexpected frame {v}"),
            }
            taken += 1;
            // Now and then acknowledge, as a client does; the reply is read among the events.
            if taken % 64 == 0 {
                w.c.send_raw(format!("ack {} {pseq} football:{gseq}\r\n", w.token).as_bytes())
                    .await;
            }
        }
        // RST: no FIN, whatever was in flight is lost.
        w.c.tcp().set_zero_linger().unwrap();
        drop(w);
        resets += 1;
    }
    sender.await.unwrap();
    let want_p: Vec<String> = (0..N).map(|i| format!("p{i}")).collect();
    let want_g: Vec<String> = (0..N).map(|i| format!("g{i}")).collect();
    assert_eq!(private, want_p);
    assert_eq!(group, want_g);
    assert!(resets > 3, "only {resets} resets");
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_of_the_server_loses_and_repeats_nothing() {
    let dir = tempfile::tempdir().unwrap();
    add_users(dir.path(), &["ann", "bob"]);
    let clock: Arc<dyn jaring_chat::Clock> = Arc::new(SystemClock::default());
    let r = start(dir.path(), options(), Arc::clone(&clock), Model::Async).await;
    let (mut a, at) = login(r.addr, "ann").await;
    let mut w = Watcher::new(r.addr, "bob", "").await;
    let token = w.token.clone();
    for i in 0..50 {
        assert!(ok(&a.call(&format!("send {at} bob p{i}")).await));
    }
    assert!(w.wait_events(20).await);
    let mut got: Vec<String> = texts(&w.events, "private")[..20].to_vec();
    let last = w.events[19]["seq"].as_i64().unwrap();
    drop((a, w));
    r.stop().await;
    let r = start(dir.path(), options(), clock, Model::Async).await;
    // The token survived the restart; resume after the 20th.
    let mut c = Client::connect(r.addr).await;
    c.send_raw(format!("watch {token} {last}\r\n").as_bytes())
        .await;
    let ok_reply = c.reply().await.unwrap();
    assert_eq!(ok_reply["message"], "Watching", "{ok_reply}");
    let mut seen: HashMap<String, usize> = HashMap::new();
    while got.len() < 50 {
        let v = c.reply().await.unwrap();
        got.push(v["msg"].as_str().unwrap().to_owned());
    }
    for m in &got {
        *seen.entry(m.clone()).or_default() += 1;
    }
    assert!(seen.values().all(|n| *n == 1), "{got:?}");
    assert_eq!(got, (0..50).map(|i| format!("p{i}")).collect::<Vec<_>>());
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_that_does_not_read_is_cut_loose_with_memory_bounded() {
    let options = RealmOptions {
        live_queue: 16,
        ..options()
    };
    let (_dir, r) = realm(&["ann", "bob"], options, Model::Async).await;
    // bob watches from a socket with a tiny receive buffer and reads nothing for a while.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(r.addr).await.unwrap();
    let mut b = Client::from_stream(stream);
    let bt = b.auth("bob", "bobpw").await;
    join(&mut b, &bt, "football").await;
    assert!(ok(&b.call(&format!("watch {bt}")).await));
    let (mut a, at) = login(r.addr, "ann").await;
    // Far more than the kernel's socket buffers hold, so the server's writes must stall.
    const N: i64 = 200;
    let body = "x".repeat(60_000);
    for _ in 0..N {
        assert!(ok(&a
            .call(&format!("sendgroup {at} football {body}"))
            .await));
    }
    // Now read: some messages, in order, then the end of the watch; nothing after it.
    let mut last = 0;
    let ended = loop {
        let v = b.reply().await.expect("a frame");
        match v["event"].as_str() {
            Some("message") => {
                let seq = v["seq"].as_i64().unwrap();
                assert_eq!(seq, last + 1);
                last = seq;
            }
            Some("watch_end") => break v,
            _ => panic!("{v}"),
        }
    };
    assert!(
        ended["reason"]
            .as_str()
            .unwrap()
            .contains("16 events behind"),
        "{ended}"
    );
    assert!(last < N, "it could not have kept up");
    // The connection works on, and resuming from the cursor gives the rest.
    let mut w = Watcher {
        c: b,
        token: bt.clone(),
        events: Vec::new(),
    };
    let r2 = w.call(&format!("watch {bt} football:{last}")).await;
    assert!(ok(&r2), "{r2}");
    let rest = usize::try_from(N - last).unwrap();
    assert!(w.wait_events(rest).await);
    let seqs: Vec<i64> = w
        .events
        .iter()
        .map(|e| e["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(seqs, ((last + 1)..=N).collect::<Vec<_>>());
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_cursors_get_usage_errors() {
    let (_dir, r) = realm(&["bob"], options(), Model::Async).await;
    let (mut b, bt) = login(r.addr, "bob").await;
    let v = b.call(&format!("watch {bt} football:x")).await;
    assert!(error(&v).contains("is not SEQ or GROUP:SEQ"), "{v}");
    let v = b.call(&format!("ack {bt}")).await;
    assert!(error(&v).contains("usage: ack TOKEN"), "{v}");
    let v = b.call("ping").await;
    assert_eq!(v["message"], "pong");
    let v = b.call("ping nosuchtoken").await;
    assert!(error(&v).contains("log in again"), "{v}");
    r.stop().await;
}
