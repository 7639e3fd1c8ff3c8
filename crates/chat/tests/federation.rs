//! Federation over real TCP: two and three linked realms, name resolution, a link cut under a
//! transfer, and everything that must be refused (client port, wrong secret, wrong realm name).
#![allow(clippy::unwrap_used)]

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use common::federation::*;
use common::*;
use jaring_chat::federation::PeerConfig;
use jaring_proto::federation::auth::{Role, Transcript, hex};
use jaring_proto::federation::{DEFAULT_MAX_FRAME, Frame, LinkFramer, VERSION};
use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// Realms a, b and c with these users, linked each to each (a dials b and c; b dials c), every
/// link up.
async fn three_realms(a: &[&str], b: &[&str], c: &[&str]) -> (Node, Node, Node) {
    let c = node(
        "c",
        c,
        vec![peer("a", nowhere(), SECRET), peer("b", nowhere(), SECRET)],
    )
    .await;
    let b = node(
        "b",
        b,
        vec![
            peer("a", nowhere(), SECRET),
            peer("c", c.fed.local_addr(), SECRET),
        ],
    )
    .await;
    let a = node(
        "a",
        a,
        vec![
            peer("b", b.fed.local_addr(), SECRET),
            peer("c", c.fed.local_addr(), SECRET),
        ],
    )
    .await;
    for (f, p) in [(&a.fed, "b"), (&a.fed, "c"), (&b.fed, "c"), (&c.fed, "a")] {
        wait_up(f, p).await;
    }
    (a, b, c)
}

/// realm1 (`users1`) dialling realm2 (`users2`) through a [`Relay`] the test can cut, both with
/// an unacknowledged window of `window` messages, the link up.
async fn relayed_pair(users1: &[&str], users2: &[&str], window: usize) -> (Node, Relay, Node) {
    let r2 = node_with(
        "realm2",
        users2,
        vec![peer("realm1", nowhere(), SECRET)],
        window,
    )
    .await;
    let relay = Relay::start(Some(r2.fed.local_addr())).await;
    let r1 = node_with(
        "realm1",
        users1,
        vec![peer("realm2", relay.addr, SECRET)],
        window,
    )
    .await;
    wait_up(&r1.fed, "realm2").await;
    (r1, relay, r2)
}

/// Starts realm `name` with `users` (password = name + "pw"), linked to `peers`.
async fn node(name: &str, users: &[&str], peers: Vec<PeerConfig>) -> Node {
    node_with(name, users, peers, jaring_chat::federation::DEFAULT_WINDOW).await
}

/// [`node`] with at most `window` messages unacknowledged on each link.
async fn node_with(name: &str, users: &[&str], peers: Vec<PeerConfig>, window: usize) -> Node {
    node_config(name, users, peers, |c| c.window = window).await
}

/// realm1 (dials) and realm2 (listens), linked.
async fn pair(users1: &[&str], users2: &[&str]) -> (Node, Node) {
    let r2 = node("realm2", users2, vec![peer("realm1", nowhere(), SECRET)]).await;
    let r1 = node(
        "realm1",
        users1,
        vec![peer("realm2", r2.fed.local_addr(), SECRET)],
    )
    .await;
    wait_up(&r1.fed, "realm2").await;
    wait_up(&r2.fed, "realm1").await;
    (r1, r2)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_realms_private_messages_both_ways_with_history() {
    let (r1, r2) = pair(&["messi", "henderson"], &["james"]).await;
    let (mut messi, tm) = login(r1.addr(), "messi").await;
    let (mut james, tj) = login(r2.addr(), "james").await;

    let r = messi
        .call(&format!("send {tm} james@realm2 hello james"))
        .await;
    assert!(ok(&r), "{r}");
    // A bare name that is no local user is found on the one peer that has it.
    let r = messi.call(&format!("send {tm} james and again")).await;
    assert!(ok(&r), "{r}");
    // Unknown on a live peer: refused at once.
    let r = messi.call(&format!("send {tm} nobody@realm2 hi")).await;
    assert!(
        error(&r).contains("no user \"nobody\" on realm realm2"),
        "{r}"
    );
    let r = messi.call(&format!("send {tm} ghost@realm9 hi")).await;
    assert!(error(&r).contains("no link to realm"), "{r}");

    let got = collect(&mut james, &tj, 2).await;
    assert_eq!(
        got,
        vec![
            ("messi@realm1".to_owned(), "hello james".to_owned()),
            ("messi@realm1".to_owned(), "and again".to_owned())
        ]
    );
    let r = james.call(&format!("send {tj} messi back")).await;
    assert!(ok(&r), "{r}");
    let r = james
        .call(&format!("send {tj} henderson@realm1 hi hendo"))
        .await;
    assert!(ok(&r), "{r}");
    let got = collect(&mut messi, &tm, 1).await;
    assert_eq!(got, vec![("james@realm2".to_owned(), "back".to_owned())]);

    // The inbox names the remote sender as user@realm, in the key and in msg_from.
    let r = messi.call(&format!("history {tm} james@realm2")).await;
    let h: Vec<(String, String)> = r["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["from"].as_str().unwrap().into(),
                m["msg"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        h,
        vec![
            ("messi".into(), "hello james".into()),
            ("messi".into(), "and again".into()),
            ("james@realm2".into(), "back".into()),
        ]
    );
    let r = james.call(&format!("history {tj} messi@realm1")).await;
    assert_eq!(r["messages"].as_array().unwrap().len(), 3, "{r}");
    assert_eq!(r["messages"][0]["msg_from"], "messi@realm1");

    // Everything acknowledged: the outboxes drain.
    tokio::time::timeout(TIMEOUT, async {
        loop {
            let r = messi.call(&format!("realms {tm}")).await;
            assert_eq!(r["peers"][0]["realm"], "realm2", "{r}");
            if r["peers"][0]["state"] == "up" && r["peers"][0]["outbox"] == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap();
    r1.running.stop().await;
    r2.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_realms_resolve_bare_names() {
    // a dials b and c; b dials c. bob lives on b and c, carol on c, dave on a and c.
    let (a, b, c) = three_realms(&["alice", "dave"], &["bob"], &["bob", "carol", "dave"]).await;
    let (mut alice, ta) = login(a.addr(), "alice").await;
    let r = alice.call(&format!("send {ta} bob hi")).await;
    let e = error(&r);
    assert!(e.contains("bob@b") && e.contains("bob@c"), "{e}");
    assert!(ok(&alice.call(&format!("send {ta} carol to carol")).await));
    assert!(ok(&alice
        .call(&format!("send {ta} bob@c to bob on c"))
        .await));
    assert!(ok(&alice
        .call(&format!("send {ta} dave local first"))
        .await));
    let r = alice.call(&format!("send {ta} zed hi")).await;
    assert!(error(&r).contains("no user \"zed\""), "{r}");

    let (mut carol, tc) = login(c.addr(), "carol").await;
    assert_eq!(
        collect(&mut carol, &tc, 1).await,
        vec![("alice@a".to_owned(), "to carol".to_owned())]
    );
    let (mut bob_c, tbc) = login(c.addr(), "bob").await;
    assert_eq!(
        collect(&mut bob_c, &tbc, 1).await,
        vec![("alice@a".to_owned(), "to bob on c".to_owned())]
    );
    let (mut dave, td) = login(a.addr(), "dave").await;
    assert_eq!(
        collect(&mut dave, &td, 1).await,
        vec![("alice".to_owned(), "local first".to_owned())]
    );
    // Both directions across every link: c's bob answers alice by bare name.
    assert!(ok(&bob_c
        .call(&format!("send {tbc} alice hello from c"))
        .await));
    let (mut b_bob, tbb) = login(b.addr(), "bob").await;
    assert!(ok(&b_bob.call(&format!("send {tbb} carol@c from b")).await));
    assert_eq!(
        collect(&mut alice, &ta, 1).await,
        vec![("bob@c".to_owned(), "hello from c".to_owned())]
    );
    assert_eq!(
        collect(&mut carol, &tc, 1).await,
        vec![("bob@b".to_owned(), "from b".to_owned())]
    );
    for n in [a, b, c] {
        n.running.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_cut_mid_transfer_loses_and_duplicates_nothing() {
    let (r1, relay, r2) = relayed_pair(
        &["messi"],
        &["james"],
        jaring_chat::federation::DEFAULT_WINDOW,
    )
    .await;
    transfer_through_cuts(&r1, &r2, &relay).await;
    relay.accepts.abort();
    r1.running.stop().await;
    r2.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_wait_for_a_down_peer_and_unknown_users_bounce_later() {
    let relay = Relay::start(None).await;
    let r1 = node(
        "realm1",
        &["messi"],
        vec![peer("realm2", relay.addr, SECRET)],
    )
    .await;
    let (mut messi, tm) = login(r1.addr(), "messi").await;
    // realm2 is down: both are accepted into the outbox; nobody can say yet that ghost is unknown.
    assert!(ok(&messi
        .call(&format!("send {tm} ghost@realm2 boo"))
        .await));
    assert!(ok(&messi
        .call(&format!("send {tm} james@realm2 waited"))
        .await));
    // A bare name cannot be looked up on a peer that is down: the ERROR says how to queue anyway.
    let r = messi.call(&format!("send {tm} james hi")).await;
    assert!(error(&r).contains("realm2 unreachable"), "{r}");
    let r = messi.call(&format!("realms {tm}")).await;
    assert_eq!(r["peers"][0]["outbox"], 2, "{r}");
    assert_ne!(r["peers"][0]["state"], "up", "{r}");

    let r2 = node(
        "realm2",
        &["james"],
        vec![peer("realm1", nowhere(), SECRET)],
    )
    .await;
    *relay.target.lock().unwrap() = Some(r2.fed.local_addr());
    let (mut james, tj) = login(r2.addr(), "james").await;
    assert_eq!(
        collect(&mut james, &tj, 1).await,
        vec![("messi@realm1".to_owned(), "waited".to_owned())]
    );
    let bounce = collect(&mut messi, &tm, 1).await;
    assert_eq!(bounce[0].0, "postmaster@realm2");
    assert!(
        bounce[0].1.contains("ghost") && bounce[0].1.contains("boo"),
        "{bounce:?}"
    );
    relay.accepts.abort();
    r1.running.stop().await;
    r2.running.stop().await;
}

/// Reads frames until the peer closes; returns them.
async fn frames_until_close(s: &mut TcpStream) -> Vec<Frame> {
    let mut framer = LinkFramer::new(DEFAULT_MAX_FRAME);
    let mut frames = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(TIMEOUT, s.read(&mut buf))
            .await
            .expect("the realm answers or closes")
            .unwrap_or(0);
        if n == 0 {
            return frames;
        }
        if framer.feed(&buf[..n], &mut frames).is_err() {
            return frames;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn impostors_and_clients_are_refused_and_nothing_is_delivered() {
    let (r1, r2) = pair(&["messi"], &["james"]).await;
    let (mut james, tj) = login(r2.addr(), "james").await;
    let msg = |id: &str| Frame::Msg {
        id: id.into(),
        from: "messi".into(),
        to: "james".into(),
        body: "forged".into(),
        sent_at: 0,
    };

    // 1. Link frames on the client port are just unknown commands.
    let (mut client, _) = login(r2.addr(), "james").await;
    for f in [
        Frame::Hello {
            v: VERSION,
            realm: "realm1".into(),
            to: "realm2".into(),
            nonce: hex(&[1; 32]),
        },
        msg("01a20000-0000-7000-8000-000000000001"),
    ] {
        let mut line = Vec::new();
        f.encode(&mut line);
        let r = client
            .call(std::str::from_utf8(&line).unwrap().trim_end())
            .await;
        assert!(error(&r).contains("unknown command"), "{r}");
    }
    // ...and a frame typed as a message is delivered as text, never routed.
    let (mut messi, tm) = login(r1.addr(), "messi").await;
    let text = r#"{"t":"msg","id":"01a20000-0000-7000-8000-000000000002","from":"x","to":"james","body":"b","sent_at":0}"#;
    assert!(ok(&messi
        .call(&format!("send {tm} james@realm2 {text}"))
        .await));
    assert_eq!(
        collect(&mut james, &tj, 1).await,
        vec![("messi@realm1".to_owned(), text.to_owned())]
    );

    // 2. Frames on the link port without a handshake.
    let mut s = TcpStream::connect(r2.fed.local_addr()).await.unwrap();
    let mut out = Vec::new();
    msg("01a20000-0000-7000-8000-000000000003").encode(&mut out);
    s.write_all(&out).await.unwrap();
    let got = frames_until_close(&mut s).await;
    assert!(matches!(&got[..], [Frame::Refused { .. }]), "{got:?}");

    // 3. Claiming to be realm1 without realm1's secret.
    for (claim, secret) in [
        ("realm1", b"not the secret, not at all".as_slice()),
        ("realm3", SECRET),
    ] {
        let mut s = TcpStream::connect(r2.fed.local_addr()).await.unwrap();
        let nonce = hex(&[7; 32]);
        let mut out = Vec::new();
        Frame::Hello {
            v: VERSION,
            realm: claim.into(),
            to: "realm2".into(),
            nonce: nonce.clone(),
        }
        .encode(&mut out);
        s.write_all(&out).await.unwrap();
        match first_frames(&mut s).await.remove(0) {
            Frame::Challenge { nonce: ln, .. } => {
                let t = Transcript {
                    dialer: claim,
                    listener: "realm2",
                    dialer_nonce: &nonce,
                    listener_nonce: &ln,
                    channel: None,
                };
                let mut out = Vec::new();
                Frame::Auth {
                    mac: t.proof(secret, Role::Dialer),
                }
                .encode(&mut out);
                s.write_all(&out).await.unwrap();
                let rest = frames_until_close(&mut s).await;
                assert!(
                    matches!(&rest[..], [Frame::Refused { reason }] if reason.contains("failed authentication")),
                    "{rest:?}"
                );
            }
            // An unknown realm name is refused before any challenge.
            Frame::Refused { reason } => assert!(reason.contains("not a peer"), "{reason}"),
            other => panic!("unexpected {other:?}"),
        }
    }

    // 4. A second "realm1" configured with the wrong secret: its link never comes up, its
    // message waits in its own outbox.
    let r0 = node(
        "realm1",
        &["eve"],
        vec![peer(
            "realm2",
            r2.fed.local_addr(),
            b"wrong secret, 16+ bytes",
        )],
    )
    .await;
    let (mut eve, te) = login(r0.addr(), "eve").await;
    let r = eve.call(&format!("send {te} james@realm2 from eve")).await;
    assert!(ok(&r), "queued while the peer is unreachable: {r}");
    tokio::time::timeout(TIMEOUT, async {
        loop {
            let r = eve.call(&format!("realms {te}")).await;
            let p: &Value = &r["peers"][0];
            if p["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("authentication"))
            {
                assert_ne!(p["state"], "up");
                assert_eq!(p["outbox"], 1);
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap();

    // 5. A listener that is not the realm we meant (realm3 answering where realm2 should be).
    let r3 = node(
        "realm3",
        &["james"],
        vec![peer("realm1", nowhere(), SECRET)],
    )
    .await;
    let r1b = node(
        "realm1",
        &["messi"],
        vec![peer("realm2", r3.fed.local_addr(), SECRET)],
    )
    .await;
    tokio::time::timeout(TIMEOUT, async {
        loop {
            let entries = jaring_chat::federation::Remote::status(&*r1b.fed).await;
            if entries[0]
                .last_error
                .as_deref()
                .is_some_and(|e| e.contains("this is realm realm3, not realm2"))
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap();

    // Nothing forged reached james: his inbox is empty.
    let r = james.call(&format!("inbox {tj}")).await;
    assert!(bodies(&r).is_empty(), "{r}");
    for n in [r0, r1b, r3, r1, r2] {
        n.running.stop().await;
    }
}

/// The next `n` group message events on a live session (joins and leaves skipped), as JSON.
async fn live_messages(c: &mut Client, n: usize) -> Vec<Value> {
    let mut got = Vec::new();
    while got.len() < n {
        let v = c.reply().await.expect("an event");
        match v["event"].as_str() {
            Some("message") => got.push(v),
            Some("join" | "leave") => {}
            _ => panic!("unexpected frame on a live session: {v}"),
        }
    }
    got
}

/// `exit` on a live session: the final reply, events still in flight skipped.
async fn exit_live(c: &mut Client) -> Value {
    c.send_raw(b"exit\r\n").await;
    loop {
        let v = c.reply().await.expect("the final reply");
        if v.get("status").is_some() {
            return v;
        }
    }
}

/// (seq, from, msg) of message events or stored group messages.
fn seq_from_msg(v: &[Value]) -> Vec<(i64, String, String)> {
    v.iter()
        .map(|m| {
            (
                m["seq"].as_i64().unwrap(),
                m["from"].as_str().unwrap().to_owned(),
                m["msg"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// A group's history as (seq, id, msg), once it holds `n` messages.
async fn group_history(c: &mut Client, token: &str, group: &str, n: usize) -> Vec<Value> {
    tokio::time::timeout(TIMEOUT, async {
        loop {
            let r = c.call(&format!("history {token} {group} 10000")).await;
            assert!(ok(&r), "{r}");
            let m = r["messages"].as_array().unwrap().clone();
            if m.len() >= n {
                assert_eq!(m.len(), n, "more messages than sent");
                return m;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{group}: fewer than {n} messages in time"))
}

/// Maps the sender names of `group_history` on another realm to this realm's names.
fn same_order(a: &[Value], b: &[Value]) {
    let key = |v: &[Value]| -> Vec<(i64, String, String)> {
        v.iter()
            .map(|m| {
                (
                    m["seq"].as_i64().unwrap(),
                    m["id"].as_str().unwrap().to_owned(),
                    m["msg"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    assert_eq!(key(a), key(b), "both realms hold the group in one order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_across_two_realms_with_live_members_on_both() {
    let (r1, r2) = pair(&["messi", "henderson"], &["james", "jordan"]).await;
    let (mut messi, tm) = login(r1.addr(), "messi").await;
    let (mut james, tj) = login(r2.addr(), "james").await;

    let j = messi.call(&format!("group {tm} football")).await;
    assert!(ok(&j) && j["created"] == true, "{j}");
    // realm2's user joins the group homed on realm1, through realm2.
    let j = james.call(&format!("group {tj} football@realm1")).await;
    assert!(ok(&j), "{j}");
    assert_eq!(j["group"], "football@realm1");
    assert_eq!(j["new_member"], true);
    let join = messi.reply().await.unwrap();
    assert_eq!(
        (join["event"].as_str(), join["user"].as_str()),
        (Some("join"), Some("james@realm2"))
    );

    // Both type at once: every message reaches both live sessions once, in the same order.
    const N: usize = 40;
    for i in 0..N {
        messi.send_raw(format!("m{i:03}\r\n").as_bytes()).await;
        james.send_raw(format!("j{i:03}\r\n").as_bytes()).await;
    }
    let on1 = seq_from_msg(&live_messages(&mut messi, 2 * N).await);
    let on2_events = live_messages(&mut james, 2 * N).await;
    assert!(on2_events.iter().all(|e| e["group"] == "football@realm1"));
    let on2 = seq_from_msg(&on2_events);
    let seqs: Vec<i64> = on1.iter().map(|m| m.0).collect();
    assert_eq!(
        seqs,
        (1..=2 * N as i64).collect::<Vec<_>>(),
        "no gap, no duplicate"
    );
    // The same order on both realms; each realm names the other's users user@realm.
    let rename = |from: &str| match from {
        "messi" => "messi@realm1".to_owned(),
        "james@realm2" => "james".to_owned(),
        other => panic!("unexpected sender {other}"),
    };
    let on1_as_2: Vec<_> = on1
        .iter()
        .map(|(s, f, m)| (*s, rename(f), m.clone()))
        .collect();
    assert_eq!(on1_as_2, on2);
    for (who, prefix) in [("messi", 'm'), ("james@realm2", 'j')] {
        let mine: Vec<&str> = on1
            .iter()
            .filter(|m| m.1 == who)
            .map(|m| m.2.as_str())
            .collect();
        let want: Vec<String> = (0..N).map(|i| format!("{prefix}{i:03}")).collect();
        assert_eq!(mine, want, "{who}'s messages once each, in the order typed");
    }
    let m = &on2_events[on2.iter().position(|m| m.1 == "messi@realm1").unwrap()];
    assert_eq!(
        m["msg_from"], "MESSI",
        "the home vouches for its users' display names"
    );

    // sendgroup from realm2 by a non-member joins through realm1 and posts; inboxgroup and
    // history on realm2 read the replica.
    let (mut jordan, tjo) = login(r2.addr(), "jordan").await;
    let r = jordan
        .call(&format!("sendgroup {tjo} football@realm1 from jordan"))
        .await;
    assert!(ok(&r), "{r}");
    assert_eq!(r["group"], "football@realm1");
    let last = 2 * N as i64 + 1;
    for c in [&mut messi, &mut james] {
        let e = live_messages(c, 1).await;
        assert_eq!(
            (e[0]["seq"].as_i64(), e[0]["msg"].as_str()),
            (Some(last), Some("from jordan"))
        );
    }
    let inbox = tokio::time::timeout(TIMEOUT, async {
        loop {
            // The bare name is the one replica this realm keeps.
            let r = jordan.call(&format!("inboxgroup {tjo} football")).await;
            assert!(ok(&r) && r["group"] == "football@realm1", "{r}");
            let m = r["messages"].as_array().unwrap().clone();
            if !m.is_empty() {
                return m;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap();
    assert_eq!(
        seq_from_msg(&inbox),
        [(last, "jordan".to_owned(), "from jordan".to_owned())]
    );
    // realm2 lists the members as realm1 has them, named from realm2, live on either realm.
    let r = jordan.call(&format!("members {tjo} football@realm1")).await;
    let m: Vec<(&str, &str, bool)> = r["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["name"].as_str().unwrap(),
                m["display_name"].as_str().unwrap(),
                m["live"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        m,
        [
            ("james", "JAMES", true),
            ("jordan", "JORDAN", false),
            ("messi@realm1", "MESSI", true)
        ],
        "{r}"
    );
    assert!(ok(&exit_live(&mut messi).await));
    assert!(ok(&exit_live(&mut james).await));
    let h1 = group_history(&mut messi, &tm, "football", last as usize).await;
    let h2 = group_history(&mut jordan, &tjo, "football@realm1", last as usize).await;
    same_order(&h1, &h2);
    assert_eq!(h1.last().unwrap()["from"], "jordan@realm2");
    let r = jordan.call(&format!("history {tjo} football 1")).await;
    assert_eq!(
        r["group"], "football@realm1",
        "the bare name is the replica kept here: {r}"
    );
    assert_eq!(r["messages"][0]["seq"], last);

    // realm1 lists realm2's members as user@realm2; leaving goes through the home realm.
    let r = messi.call(&format!("members {tm} football")).await;
    let names: Vec<&str> = r["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["james@realm2", "jordan@realm2", "messi"]);
    assert!(ok(&jordan
        .call(&format!("leave {tjo} football@realm1"))
        .await));
    let r = messi.call(&format!("members {tm} football")).await;
    assert_eq!(r["members"].as_array().unwrap().len(), 2, "{r}");
    let r = jordan
        .call(&format!("inboxgroup {tjo} football@realm1"))
        .await;
    assert!(error(&r).contains("not a member"), "{r}");
    // A realm that is no peer, and a group name that is a user on its home realm.
    let r = jordan.call(&format!("group {tjo} football@realm9")).await;
    assert!(
        error(&r).contains("no link to realm \"realm9\": this realm (realm2) links to realm1"),
        "{r}"
    );
    let r = jordan.call(&format!("group {tjo} messi@realm1")).await;
    assert!(error(&r).contains("is a user of realm realm1"), "{r}");
    r1.running.stop().await;
    r2.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_link_cut_mid_transfer_loses_and_duplicates_nothing() {
    // A small window: both directions stall on acknowledgements again and again.
    let (r1, relay, r2) = relayed_pair(&["messi"], &["james", "jordan"], 16).await;
    let (mut messi, tm) = login(r1.addr(), "messi").await;
    let (mut james, tj) = login(r2.addr(), "james").await;
    let (mut jordan, tjo) = login(r2.addr(), "jordan").await;
    // jordan listens live on realm2 while the link under the group is cut again and again.
    assert!(ok(&jordan
        .call(&format!("group {tjo} football@realm1"))
        .await));
    const N: usize = 450;
    const BATCH: usize = 150;
    for start in (0..N).step_by(BATCH) {
        let mut a = Vec::new();
        let mut b = Vec::new();
        for i in start..start + BATCH {
            a.extend_from_slice(format!("sendgroup {tm} football m{i:04}\r\n").as_bytes());
            b.extend_from_slice(format!("sendgroup {tj} football@realm1 j{i:04}\r\n").as_bytes());
        }
        messi.send_raw(&a).await;
        james.send_raw(&b).await;
        for k in 0..BATCH {
            if k == BATCH / 2 {
                relay.cut();
            }
            let r = messi.reply().await.unwrap();
            assert!(ok(&r), "{r}");
            let r = james.reply().await.unwrap();
            assert!(ok(&r), "{r}");
        }
        relay.cut();
    }
    let live = seq_from_msg(&live_messages(&mut jordan, 2 * N).await);
    let seqs: Vec<i64> = live.iter().map(|m| m.0).collect();
    assert_eq!(
        seqs,
        (1..=2 * N as i64).collect::<Vec<_>>(),
        "live: every message once, in order"
    );
    for (who, prefix) in [("messi@realm1", 'm'), ("james", 'j')] {
        let mine: Vec<&str> = live
            .iter()
            .filter(|m| m.1 == who)
            .map(|m| m.2.as_str())
            .collect();
        let want: Vec<String> = (0..N).map(|i| format!("{prefix}{i:04}")).collect();
        assert_eq!(mine, want, "{who}: once each, in the order sent");
    }
    let h1 = group_history(&mut messi, &tm, "football", 2 * N).await;
    let h2 = group_history(&mut james, &tj, "football@realm1", 2 * N).await;
    same_order(&h1, &h2);
    relay.accepts.abort();
    r1.running.stop().await;
    r2.running.stop().await;
}

/// A link to a realm's server-to-server port, spoken by the test.
struct RawLink {
    s: TcpStream,
    framer: LinkFramer,
    pending: std::collections::VecDeque<Frame>,
}

/// Connects to `addr` from the loopback address `from` (any 127.0.0.0/8 address binds on Linux).
async fn connect_from(from: IpAddr, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(from, 0))?;
    tokio::time::timeout(TIMEOUT, socket.connect(addr))
        .await
        .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
}

impl RawLink {
    /// Connects to `addr` (realm `realm`) and authenticates as `claim` with `secret`.
    async fn open(addr: SocketAddr, claim: &str, realm: &str, secret: &[u8]) -> Self {
        let s = TcpStream::connect(addr).await.unwrap();
        Self::handshake(s, claim, realm, secret).await
    }

    /// [`RawLink::open`] from the loopback address `from`.
    async fn open_from(
        from: IpAddr,
        addr: SocketAddr,
        claim: &str,
        realm: &str,
        secret: &[u8],
    ) -> Self {
        let s = connect_from(from, addr).await.unwrap();
        Self::handshake(s, claim, realm, secret).await
    }

    async fn handshake(s: TcpStream, claim: &str, realm: &str, secret: &[u8]) -> Self {
        let mut link = Self {
            s,
            framer: LinkFramer::new(DEFAULT_MAX_FRAME),
            pending: Default::default(),
        };
        let nonce = hex(&[9; 32]);
        link.send(Frame::Hello {
            v: VERSION,
            realm: claim.into(),
            to: realm.into(),
            nonce: nonce.clone(),
        })
        .await;
        let Some(Frame::Challenge { nonce: ln, .. }) = link.next().await else {
            panic!("expected a challenge");
        };
        let t = Transcript {
            dialer: claim,
            listener: realm,
            dialer_nonce: &nonce,
            listener_nonce: &ln,
            channel: None,
        };
        link.send(Frame::Auth {
            mac: t.proof(secret, Role::Dialer),
        })
        .await;
        assert_eq!(link.next().await, Some(Frame::Ready));
        link
    }

    async fn send(&mut self, f: Frame) {
        let mut out = Vec::new();
        f.encode(&mut out);
        self.s.write_all(&out).await.unwrap();
    }

    /// Every frame (keep-alives left out) until the realm closes the link.
    async fn until_closed(&mut self) -> Vec<Frame> {
        let mut frames = Vec::new();
        for _ in 0..10_000 {
            match self.next().await {
                Some(f) => frames.push(f),
                None => return frames,
            }
        }
        panic!("the link was not closed: {frames:?}");
    }

    /// The next frame that is not a keep-alive, or None once the realm closed the link.
    async fn next(&mut self) -> Option<Frame> {
        let mut buf = [0u8; 4096];
        loop {
            while let Some(f) = self.pending.pop_front() {
                if !matches!(f, Frame::Ping | Frame::Pong) {
                    return Some(f);
                }
            }
            let n = tokio::time::timeout(TIMEOUT, self.s.read(&mut buf))
                .await
                .expect("the realm answers or closes")
                .unwrap_or(0);
            if n == 0 {
                return None;
            }
            let mut got = Vec::new();
            let r = self.framer.feed(&buf[..n], &mut got);
            self.pending.extend(got);
            if r.is_err() {
                return None;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_posts_only_as_its_own_members() {
    // realm1 dials realm2, which nobody runs: the test speaks as realm2 on a link of its own.
    let r1 = node(
        "realm1",
        &["messi"],
        vec![peer("realm2", nowhere(), SECRET)],
    )
    .await;
    let (mut messi, tm) = login(r1.addr(), "messi").await;
    assert!(ok(&messi.call(&format!("group {tm} football")).await));
    let mut link = RawLink::open(r1.fed.local_addr(), "realm2", "realm1", SECRET).await;

    link.send(Frame::Gjoin {
        q: 1,
        group: "football".into(),
        user: "eve".into(),
    })
    .await;
    match link.next().await {
        Some(Frame::Greply {
            q: 1,
            error: None,
            new_member: true,
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
    // messi@realm2 is not a member: a post "from messi" is refused, never taken as realm1's messi.
    let forged = "01a20000-0000-7000-8000-0000000000f1";
    link.send(Frame::Gpost {
        id: forged.into(),
        group: "football".into(),
        from: "messi".into(),
        body: "forged".into(),
        sent_at: 0,
    })
    .await;
    match link.next().await {
        Some(Frame::Bounce { id, reason }) => {
            assert_eq!(id, forged);
            assert!(reason.contains("messi@realm2 is not a member"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    // eve's post, sent twice (a retry), is stored once, as eve@realm2; the feed brings it to the
    // member realm.
    let id = "01a20000-0000-7000-8000-0000000000f2";
    let post = Frame::Gpost {
        id: id.into(),
        group: "football".into(),
        from: "eve".into(),
        body: "from eve".into(),
        sent_at: 0,
    };
    link.send(post.clone()).await;
    link.send(post).await;
    let mut acks = 0;
    let mut fed = Vec::new();
    while acks < 2 || fed.is_empty() {
        match link.next().await {
            Some(Frame::Ack { id: a }) if a == id => acks += 1,
            Some(Frame::Gmsg {
                group,
                seq,
                from,
                body,
                ..
            }) => fed.push((group, seq, from, body)),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(
        fed,
        [(
            "football".to_owned(),
            1,
            "eve@realm2".to_owned(),
            "from eve".to_owned()
        )]
    );
    link.send(Frame::Gack {
        group: "football".into(),
        seq: 1,
    })
    .await;
    // A sender naming another realm ends the link.
    link.send(Frame::Gpost {
        id: "01a20000-0000-7000-8000-0000000000f3".into(),
        group: "football".into(),
        from: "messi@realm1".into(),
        body: "forged".into(),
        sent_at: 0,
    })
    .await;
    assert_eq!(link.next().await, None, "the link is closed");
    let exit = exit_live(&mut messi).await;
    assert!(ok(&exit), "{exit}");
    let h = group_history(&mut messi, &tm, "football", 1).await;
    assert_eq!(
        seq_from_msg(&h),
        [(1, "eve@realm2".to_owned(), "from eve".to_owned())]
    );
    r1.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_across_three_realms_with_live_members_on_each() {
    // a dials b and c; b dials c. The group is homed on a.
    let (a, b, c) = three_realms(&["alice", "ann"], &["bob", "bea"], &["carol", "cid"]).await;
    let (mut alice, ta) = login(a.addr(), "alice").await;
    let (mut bob, tb) = login(b.addr(), "bob").await;
    let (mut carol, tc) = login(c.addr(), "carol").await;
    // A bare name that no realm has is created on one's own realm; one that exactly one peer has
    // is that peer's.
    for (cl, t, g, want) in [
        (&mut alice, &ta, "chess", "chess"),
        (&mut bob, &tb, "chess", "chess@a"),
        (&mut carol, &tc, "chess@a", "chess@a"),
    ] {
        let j = cl.call(&format!("group {t} {g}")).await;
        assert!(ok(&j) && j["group"] == want, "{j}");
    }
    // Joins reach live sessions on every realm: carol's (on c) reaches bob's session on b through
    // a, the group's home.
    let p = bob.reply().await.unwrap();
    assert_eq!(
        (p["event"].as_str(), p["group"].as_str(), p["user"].as_str()),
        (Some("join"), Some("chess@a"), Some("carol@c")),
        "{p}"
    );
    for (who, display) in [("bob@b", "bob@b"), ("carol@c", "carol@c")] {
        let p = alice.reply().await.unwrap();
        assert_eq!(
            (
                p["event"].as_str(),
                p["user"].as_str(),
                p["display_name"].as_str()
            ),
            (Some("join"), Some(who), Some(display)),
            "{p}"
        );
    }
    const K: usize = 20;
    for i in 0..K {
        alice.send_raw(format!("a{i:02}\r\n").as_bytes()).await;
        bob.send_raw(format!("b{i:02}\r\n").as_bytes()).await;
        carol.send_raw(format!("c{i:02}\r\n").as_bytes()).await;
    }
    let on_a = seq_from_msg(&live_messages(&mut alice, 3 * K).await);
    let on_b = seq_from_msg(&live_messages(&mut bob, 3 * K).await);
    let on_c = seq_from_msg(&live_messages(&mut carol, 3 * K).await);
    let order = |v: &[(i64, String, String)]| -> Vec<(i64, String)> {
        v.iter().map(|m| (m.0, m.2.clone())).collect()
    };
    assert_eq!(
        on_a.iter().map(|m| m.0).collect::<Vec<_>>(),
        (1..=3 * K as i64).collect::<Vec<_>>()
    );
    assert_eq!(order(&on_a), order(&on_b), "a and b see one order");
    assert_eq!(order(&on_a), order(&on_c), "a and c see one order");
    // Each realm names senders from its own point of view.
    let sender_of = |v: &[(i64, String, String)], prefix: char| -> String {
        v.iter()
            .find(|m| m.2.starts_with(prefix))
            .unwrap()
            .1
            .clone()
    };
    assert_eq!(
        [
            sender_of(&on_a, 'a'),
            sender_of(&on_a, 'b'),
            sender_of(&on_a, 'c')
        ],
        ["alice", "bob@b", "carol@c"]
    );
    assert_eq!(
        [
            sender_of(&on_b, 'a'),
            sender_of(&on_b, 'b'),
            sender_of(&on_b, 'c')
        ],
        ["alice@a", "bob", "carol@c"]
    );
    assert_eq!(
        [
            sender_of(&on_c, 'a'),
            sender_of(&on_c, 'b'),
            sender_of(&on_c, 'c')
        ],
        ["alice@a", "bob@b", "carol"]
    );
    // Several realms home a group of that name: the bare name is refused, naming them; a replica
    // already kept here decides.
    let (mut ann, tan) = login(a.addr(), "ann").await;
    let (mut bea, tbe) = login(b.addr(), "bea").await;
    let (mut cid, tci) = login(c.addr(), "cid").await;
    let r = bea.call(&format!("sendgroup {tbe} go on b")).await;
    assert!(ok(&r) && r["group"] == "go", "{r}");
    let r = ann.call(&format!("sendgroup {tan} go@a on a")).await;
    assert!(ok(&r) && r["group"] == "go", "{r}");
    let r = cid.call(&format!("sendgroup {tci} go hi")).await;
    let e = error(&r);
    assert!(
        e.contains("several realms") && e.contains("go@a or go@b"),
        "{e}"
    );
    let r = cid.call(&format!("sendgroup {tci} go@b to b's")).await;
    assert!(ok(&r) && r["group"] == "go@b", "{r}");
    let r = cid.call(&format!("members {tci} go")).await;
    assert_eq!(r["group"], "go@b", "{r}");
    let r = ann.call(&format!("members {tan} go")).await;
    assert_eq!(r["group"], "go", "{r}");
    for n in [a, b, c] {
        n.running.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_realm_keeps_its_replica_while_the_home_is_unreachable() {
    let (r1, relay, r2) = relayed_pair(
        &["messi"],
        &["james", "jordan"],
        jaring_chat::federation::DEFAULT_WINDOW,
    )
    .await;
    let (mut messi, tm) = login(r1.addr(), "messi").await;
    let (mut james, tj) = login(r2.addr(), "james").await;
    assert!(ok(&messi
        .call(&format!("sendgroup {tm} football one"))
        .await));
    assert!(ok(&james
        .call(&format!("sendgroup {tj} football@realm1 two"))
        .await));
    let h = group_history(&mut james, &tj, "football@realm1", 1).await;
    assert_eq!(
        seq_from_msg(&h),
        [(2, "james".to_owned(), "two".to_owned())]
    );

    // The link goes down and stays down.
    *relay.target.lock().unwrap() = None;
    relay.cut();
    tokio::time::timeout(TIMEOUT, async {
        while r2.fed.is_up("realm1") {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap();
    // A new member cannot join without the home...
    let (mut jordan, tjo) = login(r2.addr(), "jordan").await;
    let r = jordan.call(&format!("group {tjo} football@realm1")).await;
    assert!(error(&r).contains("realm realm1 is unreachable"), "{r}");
    // The bare name is the replica realm2 keeps (no peer needs asking); a bare name nobody here
    // knows is a new group of realm2, whether or not realm1 has one.
    let r = jordan.call(&format!("sendgroup {tjo} football hi")).await;
    assert!(error(&r).contains("realm realm1 is unreachable"), "{r}");
    let r = jordan.call(&format!("sendgroup {tjo} chess hi")).await;
    assert!(ok(&r) && r["group"] == "chess" && r["seq"] == 1, "{r}");
    // ...but a member's live session opens on the replica, and what they type waits.
    let j = james.call(&format!("group {tj} football@realm1")).await;
    assert!(ok(&j) && j["new_member"] == false, "{j}");
    james.send_raw(b"while down 1\r\nwhile down 2\r\n").await;
    assert!(ok(&messi
        .call(&format!("sendgroup {tm} football three"))
        .await));

    // The link returns: both sides converge on one order, the live session sees it all once.
    *relay.target.lock().unwrap() = Some(r2.fed.local_addr());
    // (Seq 2, james's own sendgroup, was never given to him: the session starts with it.)
    let got = seq_from_msg(&live_messages(&mut james, 4).await);
    assert_eq!(
        got.iter().map(|m| m.0).collect::<Vec<_>>(),
        [2, 3, 4, 5],
        "{got:?}"
    );
    let mut bodies: Vec<&str> = got.iter().map(|m| m.2.as_str()).collect();
    bodies.sort_unstable();
    assert_eq!(bodies, ["three", "two", "while down 1", "while down 2"]);
    let downs: Vec<&str> = got
        .iter()
        .filter(|m| m.1 == "james")
        .map(|m| m.2.as_str())
        .collect();
    assert_eq!(
        downs,
        ["two", "while down 1", "while down 2"],
        "in the order typed"
    );
    assert!(ok(&exit_live(&mut james).await));
    let h1 = group_history(&mut messi, &tm, "football", 5).await;
    let h2 = group_history(&mut james, &tj, "football@realm1", 4).await;
    same_order(&h1[1..], &h2);
    relay.accepts.abort();
    r1.running.stop().await;
    r2.running.stop().await;
}

/// A group message of `group` homed on the test's realm, as its feed would carry it.
fn gmsg(group: &str, seq: i64, id: &str, from: &str, body: &str) -> Frame {
    Frame::Gmsg {
        group: group.into(),
        seq,
        id: id.into(),
        from: from.into(),
        display: from.into(),
        body: body.into(),
        sent_at: 0,
    }
}

/// `sendgroup` of `body` by a member of the replica `group@realm2` on realm1, the test speaking
/// for realm2 on `link`: answers realm1's `gjoin` (if `join`), acknowledges the `gpost`; returns
/// the post's id.
async fn post_through(
    link: &mut RawLink,
    c: &mut Client,
    token: &str,
    group: &str,
    body: &str,
    join: bool,
) -> String {
    c.send_raw(format!("sendgroup {token} {group}@realm2 {body}\r\n").as_bytes())
        .await;
    if join {
        match link.next().await {
            Some(Frame::Gjoin { q, group: g, .. }) if g == group => {
                link.send(Frame::Greply {
                    q,
                    error: None,
                    read_seq: 0,
                    created: true,
                    new_member: true,
                })
                .await;
            }
            other => panic!("expected a gjoin: {other:?}"),
        }
    }
    let id = match link.next().await {
        Some(Frame::Gpost {
            id,
            group: g,
            body: b,
            ..
        }) if g == group && b == body => id,
        other => panic!("expected the post: {other:?}"),
    };
    link.send(Frame::Ack { id: id.clone() }).await;
    let r = c.reply().await.expect("sendgroup answered");
    assert!(ok(&r), "{r}");
    id
}

/// The highest `seq` the realm acknowledged for `group` in `frames`.
fn acked(frames: &[Frame], group: &str) -> Option<i64> {
    frames
        .iter()
        .filter_map(|f| match f {
            Frame::Gack { group: g, seq } if g == group => Some(*seq),
            _ => None,
        })
        .max()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_home_realm_cannot_forge_our_users_posts_skip_seqs_or_plant_replicas() {
    // realm1 keeps a replica of football@realm2; the test speaks as realm2, its home.
    let r1 = node(
        "realm1",
        &["messi", "ronaldo"],
        vec![peer("realm2", nowhere(), SECRET)],
    )
    .await;
    let (mut messi, tm) = login(r1.addr(), "messi").await;
    let addr = r1.fed.local_addr();
    let mut link = RawLink::open(addr, "realm2", "realm1", SECRET).await;
    let first = post_through(&mut link, &mut messi, &tm, "football", "hello", true).await;
    let second = post_through(&mut link, &mut messi, &tm, "football", "second", false).await;

    // messi's own post, relayed back by the home: stored as his.
    link.send(gmsg("football", 1, &first, "messi@realm1", "hello"))
        .await;
    assert_eq!(
        link.next().await,
        Some(Frame::Gack {
            group: "football".into(),
            seq: 1
        })
    );

    // 1. A post in the name of ronaldo, one of realm1's users, who never posted: refused, the
    //    link ends, nothing past seq 1 is acknowledged.
    let forged = "01a20000-0000-7000-8000-0000000000a1";
    link.send(gmsg("football", 2, forged, "ronaldo@realm1", "forged"))
        .await;
    let frames = link.until_closed().await;
    assert!(acked(&frames, "football") <= Some(1), "{frames:?}");

    // 2. messi's real second post with other words: refused as well.
    let mut link = RawLink::open(addr, "realm2", "realm1", SECRET).await;
    link.send(gmsg("football", 2, &second, "messi@realm1", "altered"))
        .await;
    let frames = link.until_closed().await;
    assert!(acked(&frames, "football") <= Some(1), "{frames:?}");

    // 3. A gap (seq 999 after 1): refused, the link ends so the home resends from its cursor.
    let mut link = RawLink::open(addr, "realm2", "realm1", SECRET).await;
    let id = |n: u8| format!("01a20000-0000-7000-8000-0000000000{n:02x}");
    link.send(gmsg("football", 999, &id(0xb1), "pele", "far ahead"))
        .await;
    let frames = link.until_closed().await;
    assert!(acked(&frames, "football") <= Some(1), "{frames:?}");

    // 4. The resend, in order, goes on from there; a message for a group nobody here joined
    //    (chess) is ignored: no replica, no acknowledgement.
    let mut link = RawLink::open(addr, "realm2", "realm1", SECRET).await;
    link.send(gmsg("football", 2, &second, "messi@realm1", "second"))
        .await;
    link.send(gmsg("chess", 1, &id(0xc1), "pele", "planted"))
        .await;
    link.send(gmsg("football", 3, &id(0xb2), "pele", "from pele"))
        .await;
    let mut frames = Vec::new();
    while acked(&frames, "football") != Some(3) {
        frames.push(link.next().await.expect("acknowledged"));
    }
    assert_eq!(acked(&frames, "chess"), None, "{frames:?}");

    let h = group_history(&mut messi, &tm, "football@realm2", 3).await;
    assert_eq!(
        seq_from_msg(&h),
        [
            (1, "messi".to_owned(), "hello".to_owned()),
            (2, "messi".to_owned(), "second".to_owned()),
            (3, "pele@realm2".to_owned(), "from pele".to_owned()),
        ]
    );
    let (mut ronaldo, tr) = login(r1.addr(), "ronaldo").await;
    let r = ronaldo
        .call(&format!("history {tr} football@realm2 10"))
        .await;
    assert!(
        !r.to_string().contains("forged"),
        "nothing in ronaldo's name: {r}"
    );
    let groups = jaring_chat::storage::GroupStore::groups(r1.running.realm.store())
        .await
        .unwrap();
    let names: Vec<&str> = groups.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(names, ["football@realm2"], "no replica of chess");
    r1.running.stop().await;
}

/// Connections from `from` to `addr` that start a handshake and never finish it.
async fn stalled_handshakes(from: IpAddr, addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let mut s = connect_from(from, addr).await.unwrap();
        // Refused connections may be closed before this write: that is fine.
        let _ = s.write_all(br#"{"t":"hel"#).await;
        out.push(s);
    }
    out
}

/// Waits until at least `n` of `conns` were closed by the realm; returns how many were.
async fn closed_at_least(conns: &[TcpStream], n: usize) -> usize {
    let count = || {
        conns
            .iter()
            .filter(|s| {
                let mut b = [0u8; 64];
                // Ok(0): closed; an error other than WouldBlock: reset; data or WouldBlock: open.
                match s.try_read(&mut b) {
                    Ok(0) => true,
                    Ok(_) => false,
                    Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
                }
            })
            .count()
    };
    let mut closed = count();
    for _ in 0..(TIMEOUT.as_millis() / 50) {
        if closed >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        closed = count();
    }
    closed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handshake_flood_leaves_room_for_the_configured_peer() {
    // realm0 sorts first: it dials realm1, from 127.0.0.2, where its configuration says it is.
    let peer_ip: IpAddr = "127.0.0.2".parse().unwrap();
    let r1 = node_config(
        "realm1",
        &["messi"],
        vec![peer("realm0", SocketAddr::new(peer_ip, 9), SECRET)],
        // Long enough that no flood connection is let go while the test runs.
        |c| c.handshake_timeout = Duration::from_secs(120),
    )
    .await;
    let addr = r1.fed.local_addr();
    let per_address = jaring_chat::federation::DEFAULT_MAX_HANDSHAKES_PER_ADDRESS;
    let pool = jaring_chat::federation::DEFAULT_MAX_HANDSHAKES;

    // 200 connections from one address: all but the per-address cap are closed at once.
    let one = stalled_handshakes("127.0.0.1".parse().unwrap(), addr, 200).await;
    let closed = closed_at_least(&one, 200 - per_address).await;
    assert!(closed >= 200 - per_address, "only {closed} of 200 closed");
    // Then from many addresses, more than the strangers' pool holds.
    let mut many = Vec::new();
    for n in 10..10 + 2 * pool / per_address {
        let from = IpAddr::from([127, 0, 0, n as u8]);
        many.extend(stalled_handshakes(from, addr, per_address).await);
    }
    let want = many.len() - (pool - per_address);
    let closed = closed_at_least(&many, want).await;
    assert!(closed >= want, "only {closed} of {} closed", many.len());

    // Every stranger's slot is taken, and none is freed before the timeout; the peer still links.
    let mut link = RawLink::open_from(peer_ip, addr, "realm0", "realm1", SECRET).await;
    wait_up(&r1.fed, "realm0").await;
    link.send(Frame::Lookup {
        q: 1,
        user: "messi".into(),
    })
    .await;
    assert_eq!(
        link.next().await,
        Some(Frame::Found {
            q: 1,
            display: Some("MESSI".into())
        })
    );
    drop((one, many));
    r1.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickling_peer_cannot_stretch_the_handshake_nor_hold_a_link() {
    let r1 = node_config(
        "realm1",
        &["messi"],
        vec![peer("realm2", nowhere(), SECRET)],
        |c| {
            c.handshake_timeout = Duration::from_secs(1);
            c.link_idle = Duration::from_secs(1);
        },
    )
    .await;
    let addr = r1.fed.local_addr();
    let trickle = Duration::from_millis(100);

    // 1. A hello sent a byte at a time, 100 ms apart (14 s in all): cut at the 1 s deadline.
    let mut hello = Vec::new();
    Frame::Hello {
        v: VERSION,
        realm: "realm2".into(),
        to: "realm1".into(),
        nonce: hex(&[3; 32]),
    }
    .encode(&mut hello);
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut sent = 0;
    for b in &hello {
        if s.write_all(&[*b]).await.is_err() {
            break;
        }
        sent += 1;
        tokio::time::sleep(trickle).await;
        let mut buf = [0u8; 256];
        if !matches!(s.try_read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock) {
            break; // The realm said something (its refusal) or closed.
        }
    }
    assert!(sent < hello.len(), "the whole hello went out: not cut");

    // 2. An authenticated link on which bytes keep coming, a frame never: cut as silent.
    let mut link = RawLink::open(addr, "realm2", "realm1", SECRET).await;
    let partial = format!(r#"{{"t":"msg","id":"x","body":"{}"#, "a".repeat(200));
    let mut cut = false;
    for b in partial.as_bytes() {
        if link.s.write_all(&[*b]).await.is_err() {
            cut = true;
            break;
        }
        tokio::time::sleep(trickle).await;
        let mut buf = [0u8; 4096];
        match link.s.try_read(&mut buf) {
            Ok(0) => {
                cut = true;
                break;
            }
            Err(e) if e.kind() != std::io::ErrorKind::WouldBlock => {
                cut = true;
                break;
            }
            _ => {} // Pings, or nothing yet.
        }
    }
    assert!(cut, "a link that never finished a frame in 20 s was kept");
    r1.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_arriving_over_a_link_are_pushed_to_a_watching_user() {
    let (r1, r2) = pair(&["messi"], &["james"]).await;
    let (mut messi, tm) = login(r1.addr(), "messi").await;
    let (mut james, tj) = login(r2.addr(), "james").await;
    // james joins realm1's group through realm2, then only watches (no live session).
    let j = messi.call(&format!("sendgroup {tm} football hello")).await;
    assert!(ok(&j), "{j}");
    let j = james.call(&format!("group {tj} football@realm1")).await;
    assert!(ok(&j), "{j}");
    james.send_raw(b"exit\r\n").await;
    loop {
        let v = james.reply().await.unwrap();
        if v.get("status").is_some() {
            assert!(ok(&v), "{v}");
            break;
        }
    }
    let w = james.call(&format!("watch {tj}")).await;
    assert_eq!(w["message"], "Watching", "{w}");
    for i in 0..5 {
        assert!(ok(&messi
            .call(&format!("send {tm} james@realm2 p{i}"))
            .await));
        assert!(ok(&messi
            .call(&format!("sendgroup {tm} football g{i}"))
            .await));
    }
    let (mut private, mut group) = (Vec::new(), Vec::new());
    while private.len() < 5 || group.len() < 5 {
        let v = james.reply().await.expect("a frame");
        match v["event"].as_str() {
            Some("private") => private.push(v),
            Some("message") => {
                assert_eq!(v["group"], "football@realm1", "{v}");
                group.push(v["msg"].as_str().unwrap().to_owned());
            }
            _ => panic!("unexpected frame {v}"),
        }
    }
    let texts: Vec<&str> = private.iter().map(|e| e["msg"].as_str().unwrap()).collect();
    assert_eq!(texts, ["p0", "p1", "p2", "p3", "p4"]);
    assert_eq!(private[0]["from"], "messi@realm1");
    // The link's message frame carries no display name (docs/federation.md): the address stands in.
    assert_eq!(private[0]["msg_from"], "messi@realm1");
    assert_eq!(group, ["g0", "g1", "g2", "g3", "g4"]);
    r1.stop().await;
    r2.stop().await;
}
