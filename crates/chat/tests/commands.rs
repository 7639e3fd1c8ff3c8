//! Every command and every error path, over real TCP, under each server model.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use jaring_chat::{ManualClock, RealmOptions, SystemClock};
use jaring_runtime::Model;

async fn realm(model: Model) -> (tempfile::TempDir, Running) {
    let dir = tempfile::tempdir().unwrap();
    add_users(dir.path(), &["messi", "henderson", "lineker"]);
    let r = start(
        dir.path(),
        options(),
        Arc::new(SystemClock::default()),
        model,
    )
    .await;
    (dir, r)
}

async fn every_command(model: Model) {
    let (_dir, r) = realm(model).await;
    let mut a = Client::connect(r.addr).await;
    let mut b = Client::connect(r.addr).await;
    let ta = a.auth("messi", "messipw").await;
    assert_eq!(ta.len(), 64);
    let tb = b.auth("henderson", "hendersonpw").await;

    let sent = a.call(&format!("send {ta} henderson hello  there")).await;
    assert_eq!(sent["message"], "Message Sent");
    assert!(sent["id"].as_str().unwrap().len() == 36);
    a.call(&format!("send {ta} henderson second")).await;

    let inbox = b.call(&format!("inbox {tb}")).await;
    assert!(ok(&inbox));
    assert_eq!(
        bodies(&inbox),
        [
            ("messi".into(), "hello  there".into()),
            ("messi".into(), "second".into())
        ]
    );
    let m = &inbox["messages"]["messi"][0];
    assert_eq!(m["msg_from"], "MESSI");
    assert_eq!(m["msg_to"], "HENDERSON");
    assert_eq!(m["from"], "messi");
    // Delivered once: the next inbox is empty.
    let again = b.call(&format!("inbox {tb}")).await;
    assert!(bodies(&again).is_empty());

    let users = a.call(&format!("users {ta}")).await;
    let list = users["users"].as_array().unwrap();
    assert_eq!(list.len(), 3);
    let online: Vec<&str> = list
        .iter()
        .filter(|u| u["online"] == true)
        .map(|u| u["name"].as_str().unwrap())
        .collect();
    assert_eq!(online, ["henderson", "messi"]);

    b.call(&format!("send {tb} messi reply")).await;
    let h = a.call(&format!("history {ta} henderson")).await;
    let msgs: Vec<&str> = h["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["msg"].as_str().unwrap())
        .collect();
    assert_eq!(msgs, ["hello  there", "second", "reply"]);
    let h1 = a.call(&format!("history {ta} henderson 1")).await;
    assert_eq!(h1["messages"].as_array().unwrap().len(), 1);
    assert_eq!(h1["messages"][0]["msg"], "reply");

    let out = a.call(&format!("logout {ta}")).await;
    assert_eq!(out["message"], "Logged Out");
    assert!(error(&a.call(&format!("inbox {ta}")).await).contains("unknown or expired token"));
    let users = b.call(&format!("users {tb}")).await;
    assert!(
        users["users"]
            .as_array()
            .unwrap()
            .iter()
            .all(|u| u["name"] != "messi" || u["online"] == false)
    );
    drop((a, b));
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_async() {
    every_command(Model::Async).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_threads() {
    every_command(Model::Threads).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_iterative() {
    every_command_one_client(Model::Iterative).await;
}

/// Iterative serves one client at a time, so one connection does both sides.
async fn every_command_one_client(model: Model) {
    let (_dir, r) = realm(model).await;
    let mut a = Client::connect(r.addr).await;
    let ta = a.auth("messi", "messipw").await;
    let tb = a.auth("henderson", "hendersonpw").await;
    assert!(ok(&a.call(&format!("send {ta} henderson hi")).await));
    assert_eq!(
        bodies(&a.call(&format!("inbox {tb}")).await),
        [("messi".into(), "hi".into())]
    );
    assert!(bodies(&a.call(&format!("inbox {tb}")).await).is_empty());
    drop(a);
    r.stop().await;
}

/// Sends written back to back (with a bad one and another command among them) are answered in
/// order, one reply each, and arrive in order: the server commits such a run together.
async fn pipelined_sends(model: Model) {
    let (_dir, r) = realm(model).await;
    let mut a = Client::connect(r.addr).await;
    let ta = a.auth("messi", "messipw").await;
    let tb = a.auth("henderson", "hendersonpw").await;
    let mut batch = Vec::new();
    for i in 0..300 {
        let line = match i {
            100 => format!("send {ta} nobody lost\r\n"),
            200 => format!("users {ta}\r\n"),
            _ => format!("send {ta} henderson m{i}\r\n"),
        };
        batch.extend_from_slice(line.as_bytes());
    }
    a.send_raw(&batch).await;
    for i in 0..300 {
        let v = a.reply().await.unwrap();
        match i {
            100 => assert!(error(&v).contains("no user \"nobody\""), "{v}"),
            200 => assert!(v["users"].is_array(), "{v}"),
            _ => assert_eq!(v["message"], "Message Sent", "reply {i}: {v}"),
        }
    }
    let want: Vec<(String, String)> = (0..300)
        .filter(|i| *i != 100 && *i != 200)
        .map(|i| ("messi".to_owned(), format!("m{i}")))
        .collect();
    assert_eq!(bodies(&a.call(&format!("inbox {tb}")).await), want);
    drop(a);
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_sends_async() {
    pipelined_sends(Model::Async).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_sends_threads() {
    pipelined_sends(Model::Threads).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_paths_keep_the_connection_open() {
    let (_dir, r) = realm(Model::Async).await;
    let mut c = Client::connect(r.addr).await;
    let wrong_pw = error(&c.call("auth messi nope").await).to_owned();
    let wrong_user = error(&c.call("auth nobody surabaya").await).to_owned();
    assert_eq!(
        wrong_pw, wrong_user,
        "a wrong user and a wrong password look the same"
    );
    assert!(error(&c.call("dance tok").await).contains("unknown command \"dance\""));
    assert!(error(&c.call("auth messi").await).contains("usage: auth USER PASSWORD"));
    assert!(error(&c.call("send").await).contains("usage: send TOKEN TO MESSAGE"));
    assert!(error(&c.call("inbox").await).contains("usage: inbox TOKEN"));
    assert!(error(&c.call("").await).contains("empty request"));
    assert!(error(&c.call("inbox deadbeef").await).contains("unknown or expired token"));
    assert!(
        error(&c.call(&format!("inbox {}", "a".repeat(64))).await)
            .contains("unknown or expired token")
    );
    let t = c.auth("messi", "messipw").await;
    assert!(error(&c.call(&format!("send {t} nobody hi")).await).contains("no user \"nobody\""));
    assert!(
        error(&c.call(&format!("send {t} bob@elsewhere hi")).await).contains("no link to realm")
    );
    assert!(error(&c.call(&format!("send {t} henderson")).await).contains("usage"));
    assert!(error(&c.call(&format!("history {t} henderson zero")).await).contains("N must be"));
    assert!(error(&c.call(&format!("history {t} nobody")).await).contains("no user"));
    c.send_raw(b"inbox \xff\xfe\r\n").await;
    assert!(error(&c.reply().await.unwrap()).contains("UTF-8"));
    // Still open and working after all that.
    assert!(ok(&c.call(&format!("users {t}")).await));
    drop(c);
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_line_over_the_limit_gets_an_error_then_close() {
    let (_dir, r) = realm(Model::Async).await;
    let mut c = Client::connect(r.addr).await;
    let t = c.auth("messi", "messipw").await;
    let mut line = format!("send {t} henderson ").into_bytes();
    line.resize(jaring_proto::chat::DEFAULT_MAX_LINE + 10, b'x');
    line.extend_from_slice(b"\r\n");
    c.send_raw(&line).await;
    assert!(error(&c.reply().await.unwrap()).contains("line longer than 65536 bytes"));
    assert!(c.reply().await.is_none(), "closed after the error");
    // Nothing of the long line was stored.
    let mut d = Client::connect(r.addr).await;
    let th = d.auth("henderson", "hendersonpw").await;
    assert!(bodies(&d.call(&format!("inbox {th}")).await).is_empty());
    drop(d);
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_are_limited_per_user_and_per_address() {
    let dir = tempfile::tempdir().unwrap();
    add_users(dir.path(), &["messi", "henderson"]);
    let clock = ManualClock::default();
    let mut opts = options();
    opts.auth_limits.per_user = 3;
    opts.auth_limits.per_address = 5;
    let r = start(dir.path(), opts, Arc::new(clock.clone()), Model::Async).await;
    let mut c = Client::connect(r.addr).await;
    for _ in 0..3 {
        assert_eq!(
            error(&c.call("auth messi guess").await),
            "wrong user name or password"
        );
    }
    // Even the right password is refused while the user is limited, without being checked.
    let limited = error(&c.call("auth messi messipw").await).to_owned();
    assert!(
        limited.contains("too many failed logins for this user; wait"),
        "{limited}"
    );
    // An unknown name is limited the same way, so limits reveal nothing.
    for _ in 0..2 {
        error(&c.call("auth ghost guess").await);
    }
    let limited = error(&c.call("auth henderson hendersonpw").await).to_owned();
    assert!(limited.contains("from your address"), "{limited}");
    clock.advance(Duration::from_secs(61));
    c.auth("messi", "messipw").await;
    drop(c);
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_tokens_expire_with_injected_time() {
    let dir = tempfile::tempdir().unwrap();
    add_users(dir.path(), &["messi", "henderson"]);
    let clock = ManualClock::default();
    let opts = RealmOptions {
        token_idle: Duration::from_secs(600),
        ..options()
    };
    let r = start(dir.path(), opts, Arc::new(clock.clone()), Model::Async).await;
    let mut c = Client::connect(r.addr).await;
    let t = c.auth("messi", "messipw").await;
    clock.advance(Duration::from_secs(599));
    assert!(
        ok(&c.call(&format!("inbox {t}")).await),
        "use refreshes the idle time"
    );
    clock.advance(Duration::from_secs(599));
    assert!(ok(&c.call(&format!("inbox {t}")).await));
    clock.advance(Duration::from_secs(600));
    assert!(error(&c.call(&format!("inbox {t}")).await).contains("expired"));
    assert_eq!(r.realm.token_count(), 0);
    drop(c);
    r.stop().await;
}
