//! Groups over real TCP: live sessions, offline commands, ordering, slow members, large groups.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use common::*;
use jaring_chat::{RealmOptions, SystemClock};
use jaring_runtime::Model;
use serde_json::Value;

async fn realm_with(
    users: &[&str],
    options: RealmOptions,
    model: Model,
) -> (tempfile::TempDir, Running) {
    common::realm_with(users, options, |c| c.model = model).await
}

/// `group TOKEN NAME`, retried (bounded) while the member's previous live session, on a
/// connection just dropped, has not ended on the server yet: one live session per member.
async fn go_live(c: &mut Client, token: &str, group: &str) -> Value {
    for _ in 0..200 {
        let v = c.call(&format!("group {token} {group}")).await;
        if v["status"] == "ERROR" && error(&v).contains("live session open") {
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
            continue;
        }
        return v;
    }
    panic!("the previous live session never ended");
}

/// The next frame that is not a join or leave event.
async fn next_non_presence(c: &mut Client) -> Value {
    loop {
        let v = c.reply().await.expect("a frame");
        if !matches!(v["event"].as_str(), Some("join" | "leave")) {
            return v;
        }
    }
}

/// Reads message events until `n` were seen; returns their (seq, msg).
async fn messages(c: &mut Client, n: usize) -> Vec<(i64, String)> {
    let mut got = Vec::new();
    while got.len() < n {
        let v = next_non_presence(c).await;
        assert_eq!(v["event"], "message", "{v}");
        got.push((
            v["seq"].as_i64().unwrap(),
            v["msg"].as_str().unwrap().to_owned(),
        ));
    }
    got
}

/// The OK that ends a live session after `exit`, skipping events still in flight.
async fn exit_live(c: &mut Client) -> Value {
    exit_collect(c).await.0
}

/// `exit`, then the final reply and the messages pushed before it.
async fn exit_collect(c: &mut Client) -> (Value, Vec<(i64, String)>) {
    c.send_raw(b"exit\r\n").await;
    let mut got = Vec::new();
    loop {
        let v = c.reply().await.expect("the final reply");
        if v.get("status").is_some() {
            return (v, got);
        }
        if v["event"] == "message" {
            got.push((
                v["seq"].as_i64().unwrap(),
                v["msg"].as_str().unwrap().to_owned(),
            ));
        }
    }
}

async fn live_flow(model: Model) {
    let (_dir, r) = realm_with(&["messi", "henderson", "lineker"], options(), model).await;
    let (mut a, ta) = login(r.addr, "messi").await;
    let (mut b, tb) = login(r.addr, "henderson").await;

    // The first join creates the group. (With a fourth word, the classic client's `origin`, the
    // session would speak that client's raw-text mode: tests/classic.rs.)
    let j = a.call(&format!("group {ta} football")).await;
    assert!(ok(&j), "{j}");
    assert_eq!(
        (j["created"].as_bool(), j["new_member"].as_bool()),
        (Some(true), Some(true))
    );
    let j = b.call(&format!("group {tb} football")).await;
    assert_eq!(
        (j["created"].as_bool(), j["new_member"].as_bool()),
        (Some(false), Some(true))
    );
    let join = a.reply().await.unwrap();
    assert_eq!(join["event"], "join");
    assert_eq!(join["user"], "henderson");
    assert_eq!(join["display_name"], "HENDERSON");

    // Every line is a message, pushed to every live member, the sender included, once.
    b.send_raw(b"hello  all \r\n\r\nsecond\r\n").await;
    let want = vec![(1, "hello  all".to_owned()), (2, "second".to_owned())];
    assert_eq!(messages(&mut a, 2).await, want);
    assert_eq!(messages(&mut b, 2).await, want);
    a.send_raw(b"from messi\r\n").await;
    let m = next_non_presence(&mut b).await;
    assert_eq!(
        (
            m["from"].as_str(),
            m["msg_from"].as_str(),
            m["seq"].as_i64()
        ),
        (Some("messi"), Some("MESSI"), Some(3))
    );
    // While henderson is live, the session is handed every message: an inboxgroup on another
    // connection is refused rather than hand some of them twice.
    let (mut b2, tb2) = login(r.addr, "henderson").await;
    let refused = b2.call(&format!("inboxgroup {tb2} football")).await;
    assert!(error(&refused).contains("live session"), "{refused}");

    // exit: the final OK, then command mode on the same connection.
    let bye = exit_live(&mut a).await;
    assert!(ok(&bye), "{bye}");
    assert!(ok(&a.call(&format!("users {ta}")).await));
    // Messages while messi is not live wait for inboxgroup (or the next live session).
    b.send_raw(b"while you were away\r\n").await;
    assert_eq!(
        messages(&mut b, 1).await,
        [(4, "while you were away".to_owned())]
    );
    let ib = a.call(&format!("inboxgroup {ta} football")).await;
    let got: Vec<i64> = ib["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(got, [4]);
    assert!(
        a.call(&format!("inboxgroup {ta} football")).await["messages"]
            .as_array()
            .unwrap()
            .is_empty()
    );

    // groups, members, history.
    let g = a.call(&format!("groups {ta}")).await;
    assert_eq!(
        g["groups"],
        serde_json::json!([{"name":"football","members":2,"member":true}])
    );
    let m = a.call(&format!("members {ta} football")).await;
    assert_eq!(
        m["members"],
        serde_json::json!([
            {"name":"henderson","display_name":"HENDERSON","live":true},
            {"name":"messi","display_name":"MESSI","live":false}
        ])
    );
    let h = a.call(&format!("history {ta} football")).await;
    let bodies: Vec<&str> = h["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["msg"].as_str().unwrap())
        .collect();
    assert_eq!(
        bodies,
        ["hello  all", "second", "from messi", "while you were away"]
    );
    let h1 = a.call(&format!("history {ta} football 1")).await;
    assert_eq!(h1["messages"][0]["seq"], 4);

    // A member who is not live: rejoining replays what they missed, then goes live.
    b.send_raw(b"missed one\r\n").await;
    assert_eq!(messages(&mut b, 1).await, [(5, "missed one".to_owned())]);
    assert!(ok(&a.call(&format!("group {ta} football")).await));
    assert_eq!(messages(&mut a, 1).await, [(5, "missed one".to_owned())]);
    assert!(ok(&exit_live(&mut a).await));

    // leave ends the membership; the live members hear it; the group and its history live on.
    assert!(ok(&a.call(&format!("leave {ta} football")).await));
    let left = b.reply().await.unwrap();
    assert_eq!(
        (left["event"].as_str(), left["user"].as_str()),
        (Some("leave"), Some("messi"))
    );
    assert!(error(&a.call(&format!("inboxgroup {ta} football")).await).contains("not a member"));
    assert!(error(&a.call(&format!("history {ta} football")).await).contains("not a member"));
    assert!(ok(&exit_live(&mut b).await));
    assert!(ok(&b.call(&format!("leave {tb} football")).await));
    let g = b.call(&format!("groups {tb}")).await;
    assert_eq!(
        g["groups"],
        serde_json::json!([{"name":"football","members":0,"member":false}])
    );
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_message_exit_async() {
    live_flow(Model::Async).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_message_exit_threads() {
    live_flow(Model::Threads).await;
}

/// A quiet group does not wait for the flush interval: with `live_flush` set to an hour, each
/// message, sent only after the previous one arrived (so each is written well within the hour
/// after the last write, with nothing else waiting), still reaches every live member, the sender
/// included. Batching holds events back only when they queue up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_group_delivers_without_waiting_for_the_flush_interval() {
    let opts = RealmOptions {
        live_flush: std::time::Duration::from_secs(3600),
        ..options()
    };
    let (_dir, r) = realm_with(&["messi", "henderson"], opts, Model::Async).await;
    let (mut a, ta) = login(r.addr, "messi").await;
    let (mut b, tb) = login(r.addr, "henderson").await;
    assert!(ok(&go_live(&mut a, &ta, "quiet").await));
    assert!(ok(&go_live(&mut b, &tb, "quiet").await));
    // henderson's join was a write to messi's session; every message below follows it within
    // the hour.
    let join = a.reply().await.unwrap();
    assert_eq!(join["event"], "join", "{join}");
    for i in 1..=5 {
        let (from, to) = if i % 2 == 0 {
            (&mut a, &mut b)
        } else {
            (&mut b, &mut a)
        };
        from.send_raw(format!("message {i}\r\n").as_bytes()).await;
        let want = vec![(i, format!("message {i}"))];
        assert_eq!(messages(to, 1).await, want);
        assert_eq!(messages(from, 1).await, want);
    }
    assert!(ok(&exit_live(&mut a).await));
    assert!(ok(&exit_live(&mut b).await));
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_commands_and_errors() {
    let (_dir, r) = realm_with(&["messi", "henderson"], options(), Model::Async).await;
    let (mut a, ta) = login(r.addr, "messi").await;
    let (mut b, tb) = login(r.addr, "henderson").await;
    // sendgroup creates the group and joins the sender.
    let s = a.call(&format!("sendgroup {ta} lab  first one")).await;
    assert_eq!(
        (s["message"].as_str(), s["seq"].as_i64()),
        (Some("Message Sent"), Some(1))
    );
    assert_eq!(s["id"].as_str().unwrap().len(), 36);
    // What was said before someone joined is history, not something they missed.
    assert!(error(&b.call(&format!("inboxgroup {tb} lab")).await).contains("not a member"));
    assert!(ok(&b.call(&format!("sendgroup {tb} lab hi")).await));
    assert!(
        b.call(&format!("inboxgroup {tb} lab")).await["messages"]
            .as_array()
            .unwrap()
            .len()
            == 1
    );
    let ia = a.call(&format!("inboxgroup {ta} lab")).await;
    let msgs: Vec<(&str, i64)> = ia["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["msg"].as_str().unwrap(), m["seq"].as_i64().unwrap()))
        .collect();
    assert_eq!(msgs, [(" first one", 1), ("hi", 2)]);
    let h = b.call(&format!("history {tb} lab")).await;
    assert_eq!(h["group"], "lab");
    assert_eq!(h["messages"].as_array().unwrap().len(), 2);

    // Errors say what to do, and leave the connection usable.
    assert!(error(&a.call(&format!("group {ta} henderson")).await).contains("is a user"));
    assert!(error(&a.call(&format!("members {ta} nogroup")).await).contains("no group"));
    assert!(error(&a.call(&format!("inboxgroup {ta} nogroup")).await).contains("no group"));
    assert!(error(&a.call(&format!("leave {ta} nogroup")).await).contains("no group"));
    assert!(
        error(&a.call(&format!("sendgroup {ta} lab@elsewhere hi")).await)
            .contains("no link to realm")
    );
    assert!(error(&a.call("sendgroup nope lab hi").await).contains("unknown or expired token"));
    assert!(error(&a.call(&format!("sendgroup {ta} lab")).await).contains("usage: sendgroup"));
    assert!(error(&a.call("exit").await).contains("unknown command"));

    // An inbox reply carries at most inbox_max_messages; "more" says ask again.
    r.stop().await;
    let (_dir, r) = realm_with(
        &["messi", "henderson"],
        RealmOptions {
            inbox_max_messages: 3,
            ..options()
        },
        Model::Async,
    )
    .await;
    let (mut a, ta) = login(r.addr, "messi").await;
    let (mut b, tb) = login(r.addr, "henderson").await;
    assert!(ok(&b.call(&format!("sendgroup {tb} g hello")).await));
    assert!(ok(&a.call(&format!("sendgroup {ta} g join")).await));
    for i in 0..5 {
        assert!(ok(&b.call(&format!("sendgroup {tb} g m{i}")).await));
    }
    let mut seen = Vec::new();
    loop {
        let v = a.call(&format!("inboxgroup {ta} g")).await;
        seen.extend(
            v["messages"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["seq"].as_i64().unwrap()),
        );
        if v["more"] != true {
            break;
        }
    }
    assert_eq!(seen, [2, 3, 4, 5, 6, 7]);
    r.stop().await;
}

/// Several concurrent senders: every member sees one order, gapless, each message once, whether
/// live or through inboxgroup afterwards; and it survives a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_senders_one_order() {
    const SENDERS: usize = 4;
    const PER_SENDER: usize = 150;
    const TOTAL: usize = SENDERS * PER_SENDER;
    let names = ["s0", "s1", "s2", "s3", "l0", "l1", "half"];
    let (dir, r) = realm_with(&names, options(), Model::Async).await;
    let mut listeners = Vec::new();
    for n in ["l0", "l1"] {
        let (mut c, t) = login(r.addr, n).await;
        assert!(ok(&c.call(&format!("group {t} race")).await));
        listeners.push(c);
    }
    let (mut half, th) = login(r.addr, "half").await;
    assert!(ok(&half.call(&format!("group {th} race")).await));
    let mut senders = Vec::new();
    for s in 0..SENDERS {
        let addr = r.addr;
        senders.push(tokio::spawn(async move {
            let (mut c, t) = login(addr, &format!("s{s}")).await;
            // Half through sendgroup (pipelined), half as a live session's lines.
            if s % 2 == 0 {
                let mut batch = Vec::new();
                for i in 0..PER_SENDER {
                    batch.extend_from_slice(format!("sendgroup {t} race {s}:{i}\r\n").as_bytes());
                }
                c.send_raw(&batch).await;
                for _ in 0..PER_SENDER {
                    assert!(ok(&c.reply().await.unwrap()));
                }
            } else {
                assert!(ok(&c.call(&format!("group {t} race")).await));
                let mut batch = Vec::new();
                for i in 0..PER_SENDER {
                    batch.extend_from_slice(format!("{s}:{i}\r\n").as_bytes());
                }
                c.send_raw(&batch).await;
                messages(&mut c, PER_SENDER).await;
            }
        }));
    }
    // "half" leaves its live session part-way and catches up with inboxgroup later.
    let mut half_all = messages(&mut half, TOTAL / 3).await;
    let (bye, in_flight) = exit_collect(&mut half).await;
    assert!(ok(&bye));
    half_all.extend(in_flight);
    for s in senders {
        s.await.unwrap();
    }
    let mut orders = Vec::new();
    for mut c in listeners {
        orders.push(messages(&mut c, TOTAL).await);
    }
    let mut rest = Vec::new();
    loop {
        let v = half.call(&format!("inboxgroup {th} race")).await;
        rest.extend(v["messages"].as_array().unwrap().iter().map(|m| {
            (
                m["seq"].as_i64().unwrap(),
                m["msg"].as_str().unwrap().to_owned(),
            )
        }));
        if v["more"] != true {
            break;
        }
    }
    // The next request shows the client has the last reply: its messages are delivered.
    assert!(ok(&half.call(&format!("groups {th}")).await));
    let seqs: Vec<i64> = (1..=TOTAL as i64).collect();
    for o in &orders {
        assert_eq!(
            o.iter().map(|m| m.0).collect::<Vec<_>>(),
            seqs,
            "gapless, in order, once"
        );
        assert_eq!(o, &orders[0], "every member sees the same order");
        // Each sender's own messages keep the order it sent them in.
        for s in 0..SENDERS {
            let mine: Vec<usize> = o
                .iter()
                .filter_map(|m| {
                    m.1.strip_prefix(&format!("{s}:"))
                        .map(|i| i.parse().unwrap())
                })
                .collect();
            assert_eq!(mine, (0..PER_SENDER).collect::<Vec<_>>());
        }
    }
    r.stop().await;
    // After a restart the order and the cursors are what they were.
    let r = start(
        dir.path(),
        options(),
        Arc::new(SystemClock::default()),
        Model::Async,
    )
    .await;
    let (mut c, t) = login(r.addr, "l0").await;
    let h = c.call(&format!("history {t} race 1000")).await;
    let stored: Vec<(i64, String)> = h["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["seq"].as_i64().unwrap(),
                m["msg"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(stored, orders[0]);
    let (mut hc, th) = login(r.addr, "half").await;
    let v = hc.call(&format!("inboxgroup {th} race")).await;
    assert!(
        v["messages"].as_array().unwrap().is_empty(),
        "read before the restart: {v}"
    );
    // The live part and the inboxgroup part together: every message once, in the group's order.
    half_all.extend(rest);
    assert_eq!(
        half_all.len(),
        TOTAL,
        "no gap, no duplicate across live and inboxgroup"
    );
    assert_eq!(half_all, orders[0]);
    r.stop().await;
}

/// Lines the server received in a live session are sent to the group even when the member hangs
/// up right after sending them (with a reset, too: it leaves events unread): received is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_sent_before_hanging_up_reach_the_group() {
    const LINES: usize = 300;
    let (_dir, r) = realm_with(&["a", "b"], options(), Model::Async).await;
    let (mut b, tb) = login(r.addr, "b").await;
    assert!(ok(&b.call(&format!("sendgroup {tb} g hello")).await));
    for round in 0..5 {
        let (mut a, ta) = login(r.addr, "a").await;
        assert!(ok(&go_live(&mut a, &ta, "g").await));
        let mut batch = Vec::new();
        for i in 0..LINES {
            batch.extend_from_slice(format!("{round}:{i}\r\n").as_bytes());
        }
        a.send_raw(&batch).await;
        drop(a);
    }
    // Nothing acknowledges a live line, so wait (bounded) for the last round's commit.
    let want = 1 + 5 * LINES;
    let mut got = 0;
    for _ in 0..200 {
        let h = b.call(&format!("history {tb} g 1")).await;
        got = h["messages"][0]["seq"].as_u64().unwrap_or(0) as usize;
        if got >= want {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(got, want, "every line the server received is in the group");
    r.stop().await;
}

/// A member has one live session per group: a second, on another connection, is refused while
/// the first is open (both would be handed every message), and works once the first has exited.
/// Every message, the backlog included, reaches the member exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_live_session_of_a_member_is_refused() {
    const BACKLOG: usize = 5;
    let (_dir, r) = realm_with(&["messi", "henderson"], options(), Model::Async).await;
    let (mut a1, ta) = login(r.addr, "messi").await;
    let (mut a2, ta2) = login(r.addr, "messi").await;
    let (mut b, tb) = login(r.addr, "henderson").await;
    assert!(ok(&a1.call(&format!("sendgroup {ta} g joined")).await));
    for i in 0..BACKLOG {
        assert!(ok(&b.call(&format!("sendgroup {tb} g backlog-{i}")).await));
    }
    assert!(ok(&a1.call(&format!("group {ta} g")).await));
    // The member's own sendgroup is in its backlog too: it was not delivered to them.
    let backlog: Vec<i64> = (1..=1 + BACKLOG as i64).collect();
    let got: Vec<i64> = messages(&mut a1, BACKLOG + 1)
        .await
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    assert_eq!(got, backlog);

    let refused = a2.call(&format!("group {ta2} g")).await;
    assert!(error(&refused).contains("live session open"), "{refused}");
    assert!(ok(&b.call(&format!("sendgroup {tb} g while-live")).await));
    assert_eq!(
        messages(&mut a1, 1).await,
        [(2 + BACKLOG as i64, "while-live".to_owned())]
    );
    let (bye, _) = exit_collect(&mut a1).await;
    assert!(ok(&bye), "{bye}");

    // Once the first has exited, the second connection goes live, and is handed only what came
    // after: nothing twice.
    assert!(ok(&a2.call(&format!("group {ta2} g")).await));
    assert!(ok(&b.call(&format!("sendgroup {tb} g after")).await));
    assert_eq!(
        messages(&mut a2, 1).await,
        [(3 + BACKLOG as i64, "after".to_owned())]
    );
    assert!(ok(&exit_live(&mut a2).await));
    r.stop().await;
}

/// A member that never reads its socket is cut loose with an `end` event saying why, while the
/// others receive everything; it then catches up with inboxgroup, each message once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_reader_is_cut_loose() {
    // Enough 8 KB messages to fill the kernel's largest send buffer twice over, then some.
    let wmem_max: usize = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_wmem")
        .ok()
        .and_then(|s| s.split_whitespace().nth(2)?.parse().ok())
        .unwrap_or(4 << 20);
    let n = (wmem_max * 2 / 8000).max(1000).div_ceil(50) * 50 + 500;
    let opts = RealmOptions {
        live_queue: 32,
        ..options()
    };
    let (_dir, r) = realm_with(&["fast", "stalled", "sender"], opts, Model::Async).await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stalled = Client::from_stream(socket.connect(r.addr).await.unwrap());
    let ts = stalled.auth("stalled", "stalledpw").await;
    assert!(ok(&stalled.call(&format!("group {ts} busy")).await));
    let (mut fast, tf) = login(r.addr, "fast").await;
    assert!(ok(&fast.call(&format!("group {tf} busy")).await));
    let (mut sender, tsend) = login(r.addr, "sender").await;
    let body = "x".repeat(8000);
    let reader = tokio::spawn(async move {
        let got = messages(&mut fast, n).await;
        (fast, got)
    });
    for chunk in 0..n / 50 {
        let mut batch = Vec::new();
        for i in 0..50 {
            batch.extend_from_slice(
                format!("sendgroup {tsend} busy {} {body}\r\n", chunk * 50 + i).as_bytes(),
            );
        }
        sender.send_raw(&batch).await;
        for _ in 0..50 {
            assert!(ok(&sender.reply().await.unwrap()));
        }
    }
    let (_fast, got) = reader.await.unwrap();
    assert_eq!(
        got.iter().map(|m| m.0).collect::<Vec<_>>(),
        (1..=n as i64).collect::<Vec<_>>()
    );

    // Now the stalled member reads: what it was given, then why its session ended.
    let mut seen = Vec::new();
    let end = loop {
        let v = next_non_presence(&mut stalled).await;
        match v["event"].as_str() {
            Some("message") => seen.push(v["seq"].as_i64().unwrap()),
            Some("end") => break v,
            _ => panic!("unexpected {v}"),
        }
    };
    assert!(end["reason"].as_str().unwrap().contains("behind"), "{end}");
    assert!(seen.len() < n, "it was cut loose before the end");
    assert_eq!(seen, (1..=seen.len() as i64).collect::<Vec<_>>());
    // Back in command mode on the same connection: inboxgroup brings the rest, each once.
    let mut rest = Vec::new();
    loop {
        let v = stalled.call(&format!("inboxgroup {ts} busy")).await;
        rest.extend(
            v["messages"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["seq"].as_i64().unwrap()),
        );
        if v["more"] != true {
            break;
        }
    }
    seen.extend(rest);
    assert_eq!(seen, (1..=n as i64).collect::<Vec<_>>());
    r.stop().await;
}

/// 1,000 members live in one group: each receives every message once, in order; joins of a
/// large group are not pushed to everyone (that would be n² work).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_live_members() {
    const MEMBERS: usize = 1000;
    const MSGS: usize = 20;
    let names: Vec<String> = (0..MEMBERS).map(|i| format!("m{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let (_dir, r) = realm_with(&refs, options(), Model::Async).await;
    let (mut first, t0) = login(r.addr, "m0").await;
    assert!(ok(&first.call(&format!("group {t0} big")).await));
    let mut joins = Vec::new();
    for chunk in names[1..].chunks(100) {
        let mut tasks = Vec::new();
        for n in chunk {
            let (addr, n) = (r.addr, n.clone());
            tasks.push(tokio::spawn(async move {
                let (mut c, t) = login(addr, &n).await;
                assert!(ok(&c.call(&format!("group {t} big")).await));
                c
            }));
        }
        for t in tasks {
            joins.push(t.await.unwrap());
        }
    }
    // Only joins while the group had at most presence_max_members members were pushed.
    let (mut sender, ts) = login(r.addr, "m0").await;
    let mut batch = Vec::new();
    for i in 0..MSGS {
        batch.extend_from_slice(format!("sendgroup {ts} big msg{i}\r\n").as_bytes());
    }
    sender.send_raw(&batch).await;
    for _ in 0..MSGS {
        assert!(ok(&sender.reply().await.unwrap()));
    }
    let want: Vec<(i64, String)> = (0..MSGS)
        .map(|i| (i as i64 + 1, format!("msg{i}")))
        .collect();
    let mut presence = 0;
    let mut got = Vec::new();
    while got.len() < MSGS {
        let v = first.reply().await.unwrap();
        match v["event"].as_str() {
            Some("join") => presence += 1,
            Some("message") => got.push((
                v["seq"].as_i64().unwrap(),
                v["msg"].as_str().unwrap().to_owned(),
            )),
            _ => panic!("unexpected {v}"),
        }
    }
    assert_eq!(got, want);
    assert_eq!(
        presence,
        jaring_chat::groups::DEFAULT_PRESENCE_MAX_MEMBERS - 1
    );
    let mut tasks = Vec::new();
    for mut c in joins {
        let want = want.clone();
        tasks.push(tokio::spawn(async move {
            assert_eq!(messages(&mut c, MSGS).await, want);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let g = sender.call(&format!("groups {ts}")).await;
    assert_eq!(g["groups"][0]["members"], MEMBERS);
    r.stop().await;
}

/// Whether another connection to the database sees a group message with this id: only committed
/// rows are visible to it.
fn committed(dir: &std::path::Path, id: &str) -> bool {
    let conn = jaring_chat_sqlite::open(dir, jaring_chat_sqlite::Synchronous::Full).unwrap();
    let id = uuid::Uuid::parse_str(id).unwrap();
    conn.query_row(
        "SELECT COUNT(*) FROM group_messages WHERE id = ?1",
        [&id.as_bytes()[..]],
        |r| r.get::<_, i64>(0),
    )
    .unwrap()
        == 1
}

/// Every message is committed before its OK goes out and before it is pushed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_before_acknowledged_or_pushed() {
    const N: usize = 40;
    let (dir, r) = realm_with(&["reader", "writer"], options(), Model::Async).await;
    let (mut reader, tr) = login(r.addr, "reader").await;
    assert!(ok(&reader.call(&format!("group {tr} durable")).await));
    let (mut writer, tw) = login(r.addr, "writer").await;
    let mut batch = Vec::new();
    for i in 0..N {
        batch.extend_from_slice(format!("sendgroup {tw} durable m{i}\r\n").as_bytes());
    }
    writer.send_raw(&batch).await;
    for _ in 0..N {
        let v = next_non_presence(&mut reader).await;
        assert_eq!(v["event"], "message");
        assert!(
            committed(dir.path(), v["id"].as_str().unwrap()),
            "pushed before commit: {v}"
        );
    }
    for _ in 0..N {
        let v = writer.reply().await.unwrap();
        assert!(
            committed(dir.path(), v["id"].as_str().unwrap()),
            "acknowledged before commit: {v}"
        );
    }
    r.stop().await;
}
