//! What a hostile or unlucky client must not be able to do to a realm: lose its own messages to a
//! reset, get a reply larger than the cap, hold a slot with a line that never ends, or take every
//! slot from one address.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{Client, bodies, error, login, ok, options, realm_with};
use jaring_chat::RealmOptions;
use jaring_runtime::Model;
use serde_json::Value;
use tokio::net::TcpSocket;

/// An inbox reply written to a socket that is then reset, unread, is handed out again: only the
/// client's next request shows it has the reply.
async fn inbox_survives_a_reset(model: Model) {
    let (_dir, r) = realm_with(&["messi", "henderson"], options(), |c| c.model = model).await;
    let (mut messi, tm) = login(r.addr, "messi").await;
    for i in 0..10 {
        assert!(ok(&messi.call(&format!("send {tm} henderson m{i}")).await));
    }
    let (mut lost, tl) = login(r.addr, "henderson").await;
    lost.send_raw(format!("inbox {tl}\r\n").as_bytes()).await;
    // The reply has reached our socket; the client dies before reading it.
    tokio::time::timeout(common::TIMEOUT, lost.tcp().readable())
        .await
        .unwrap()
        .unwrap();
    lost.tcp().set_zero_linger().unwrap();
    drop(lost);

    let (mut h, th) = login(r.addr, "henderson").await;
    let mut got = Vec::new();
    // The dead connection's lease is given back once the server sees the reset.
    for _ in 0..100 {
        let inbox = h.call(&format!("inbox {th}")).await;
        got = bodies(&inbox);
        if !got.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let expected: Vec<(String, String)> = (0..10)
        .map(|i| ("messi".to_owned(), format!("m{i}")))
        .collect();
    assert_eq!(got, expected, "every message is handed out again");
    // The next request on this connection acknowledges them: delivered, not handed out again.
    assert!(ok(&h.call(&format!("users {th}")).await));
    let (mut again, ta) = login(r.addr, "henderson").await;
    assert!(bodies(&again.call(&format!("inbox {ta}")).await).is_empty());
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbox_survives_a_reset_async() {
    inbox_survives_a_reset(Model::Async).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbox_survives_a_reset_threads() {
    inbox_survives_a_reset(Model::Threads).await;
}

const CAP: usize = 4096;

/// Sends `line`, returns the reply after checking its size on the wire against [`CAP`].
async fn capped(c: &mut Client, line: &str) -> Value {
    c.send_raw(format!("{line}\r\n").as_bytes()).await;
    let raw = c.reply_bytes().await.expect("a reply");
    assert!(
        raw.len() <= CAP,
        "{line}: a reply of {} bytes, over the cap",
        raw.len()
    );
    assert!(raw.is_ascii(), "replies are ASCII JSON: {line}");
    serde_json::from_slice(&raw).unwrap()
}

/// Follows `"next"` from `first` until a page without `"more"`: each page's `key` items.
async fn all_pages(c: &mut Client, first: &str, key: &str) -> Vec<Vec<Value>> {
    let mut pages = Vec::new();
    let mut line = first.to_owned();
    for _ in 0..1000 {
        let page = capped(c, &line).await;
        assert!(ok(&page), "{page}");
        let got = page[key].as_array().unwrap();
        assert!(!got.is_empty(), "every page carries something: {page}");
        pages.push(got.clone());
        if page["more"] != true {
            assert!(page.get("next").is_none(), "{page}");
            return pages;
        }
        line = format!("{first} {}", page["next"].as_str().unwrap());
    }
    panic!("no last page");
}

fn names(pages: Vec<Vec<Value>>) -> Vec<String> {
    pages
        .into_iter()
        .flatten()
        .map(|v| v["name"].as_str().unwrap().to_owned())
        .collect()
}

/// Every list reply stays under the reply cap and pages, with `"more"` and a `"next"` cursor,
/// through everything exactly once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_list_reply_pages_within_the_cap() {
    let member_names: Vec<String> = (0..60)
        .map(|i| format!("member{i:02}_with_a_rather_long_name"))
        .collect();
    let mut users: Vec<&str> = member_names.iter().map(String::as_str).collect();
    users.extend(["messi", "henderson"]);
    let opts = RealmOptions {
        max_reply_bytes: CAP,
        ..options()
    };
    let (_dir, r) = realm_with(&users, opts, |_| {}).await;
    let (mut messi, tm) = login(r.addr, "messi").await;

    // history: 30 messages of ~600 bytes each (non-ASCII: the cap counts the escaped bytes).
    let body = |i: usize| format!("{i:02} {}", "é".repeat(300));
    for i in 0..30 {
        assert!(ok(&messi
            .call(&format!("send {tm} henderson {}", body(i)))
            .await));
    }
    let pages = all_pages(
        &mut messi,
        &format!("history {tm} henderson 30"),
        "messages",
    )
    .await;
    assert!(
        pages.len() > 1,
        "30 messages of 600 bytes do not fit in one reply"
    );
    // Pages come newest first, each oldest first.
    let texts: Vec<String> = pages
        .into_iter()
        .rev()
        .flatten()
        .map(|m| m["msg"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(texts, (0..30).map(body).collect::<Vec<_>>());

    // users: 62 users at ~100 bytes each.
    let listed = names(all_pages(&mut messi, &format!("users {tm}"), "users").await);
    let mut expected = users.clone();
    expected.sort_unstable();
    assert_eq!(listed, expected, "every user once, by name");

    // groups and members: every member joins one group and creates one of their own.
    for name in &member_names {
        let (mut c, t) = login(r.addr, name).await;
        for group in ["football".to_owned(), format!("g_{}", &name[..28])] {
            let j = c.call(&format!("group {t} {group}")).await;
            assert!(ok(&j), "{j}");
            c.send_raw(b"exit\r\n").await;
            loop {
                let v = c.reply().await.unwrap();
                if v.get("status").is_some() {
                    assert!(ok(&v), "{v}");
                    break;
                }
            }
        }
    }
    let groups = names(all_pages(&mut messi, &format!("groups {tm}"), "groups").await);
    let mut expected: Vec<String> = member_names
        .iter()
        .map(|n| format!("g_{}", &n[..28]))
        .collect();
    expected.push("football".into());
    expected.sort_unstable();
    assert_eq!(groups, expected);
    let members = names(all_pages(&mut messi, &format!("members {tm} football"), "members").await);
    assert_eq!(members, member_names);
    r.stop().await;
}

/// A request line trickled a byte at a time is cut at the line timeout, though every byte keeps
/// the connection from being idle.
async fn a_trickled_line_is_cut(model: Model) {
    let (_dir, r) = realm_with(&["messi"], options(), |c| {
        c.model = model;
        c.limits.line_timeout = Duration::from_secs(1);
        c.limits.idle_timeout = Duration::from_secs(60);
    })
    .await;
    let mut slow = Client::connect(r.addr).await;
    let started = std::time::Instant::now();
    let mut closed = None;
    for b in b"auth messi messipw".iter().cycle().take(100) {
        if tokio::io::AsyncWriteExt::write_all(&mut slow.stream, &[*b])
            .await
            .is_err()
        {
            break;
        }
        let mut probe = [0u8; 256];
        if let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_millis(200), slow.tcp().peek(&mut probe)).await
        {
            closed = Some(n);
            break;
        }
    }
    assert!(closed.is_some(), "the server never cut the trickled line");
    let reply = slow.reply().await.expect("the reason");
    assert!(error(&reply).contains("not finished within 1 s"), "{reply}");
    assert!(started.elapsed() < Duration::from_secs(15));
    // A whole line at a normal pace is fine.
    let (mut c, t) = login(r.addr, "messi").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(ok(&c.call(&format!("users {t}")).await));
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickled_line_is_cut_async() {
    a_trickled_line_is_cut(Model::Async).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickled_line_is_cut_threads() {
    a_trickled_line_is_cut(Model::Threads).await;
}

/// Connects from `source` (any 127.0.0.0/8 address is this machine's).
async fn connect_from(source: [u8; 4], addr: SocketAddr) -> Client {
    let socket = TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::from((source, 0)))
        .expect("bind a loopback source address");
    Client::from_stream(socket.connect(addr).await.unwrap())
}

/// One address gets its share of connections; the next one is told why, and another address
/// is still served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_cannot_take_every_slot() {
    let (_dir, r) = realm_with(&["messi"], options(), |c| {
        c.limits.max_connections = 8;
        c.limits.max_per_address = Some(3);
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut c = connect_from([127, 0, 0, 1], r.addr).await;
        c.auth("messi", "messipw").await;
        held.push(c);
    }
    let mut refused = connect_from([127, 0, 0, 1], r.addr).await;
    let why = refused.reply().await.expect("a reason");
    assert!(
        error(&why).contains("too many connections from your address"),
        "{why}"
    );
    let mut other = connect_from([127, 0, 0, 2], r.addr).await;
    other.auth("messi", "messipw").await;
    // A slot given back is free again.
    drop(held.pop());
    let mut again = None;
    for _ in 0..100 {
        let mut c = connect_from([127, 0, 0, 1], r.addr).await;
        c.send_raw(b"auth messi messipw\r\n").await;
        if c.reply().await.is_some_and(|v| ok(&v)) {
            again = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(again.is_some(), "the freed slot is usable");
    r.stop().await;
}
