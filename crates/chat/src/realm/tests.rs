//! The realm's commands against the in-memory store: no sockets, no SQLite, the cheapest hash.
#![allow(clippy::unwrap_used)]

use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use jaring_proto::chat::parse_command;
use serde_json::Value;

use super::*;
use crate::clock::ManualClock;
use crate::password::PasswordCost;
use crate::remote::{BoxFuture, RemoteJoin, RemoteMember};
use crate::storage::{GroupStore as _, MemoryStore, StoreResult, UserAdmin as _, UserRecord};

const PEER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

/// A realm on a fresh memory store with users `names` (password: name + "pw").
async fn realm(names: &[&str]) -> Realm<MemoryStore> {
    let store = MemoryStore::new();
    for n in names {
        store
            .add_user(UserRecord {
                name: (*n).to_owned(),
                display_name: n.to_uppercase(),
                password_hash: hash_blocking(&format!("{n}pw"), PasswordCost::INSECURE_TEST)
                    .unwrap(),
                bench: false,
            })
            .await
            .unwrap();
    }
    let options = RealmOptions {
        password_cost: PasswordCost::INSECURE_TEST,
        ..RealmOptions::default()
    };
    Realm::open(options, store, Arc::new(ManualClock::default()))
        .await
        .unwrap()
}

/// Runs one request line; returns its reply and what the server would do next.
async fn run(realm: &Realm<MemoryStore>, conn: &mut ConnState, line: &str) -> (Value, Outcome) {
    let command = parse_command(line.as_bytes()).unwrap();
    let mut out = Vec::new();
    let outcome = realm.execute(conn, command, &mut out).await;
    assert!(out.ends_with(b"\r\n\r\n"), "framed: {out:?}");
    (serde_json::from_slice(&out).unwrap(), outcome)
}

async fn call(realm: &Realm<MemoryStore>, conn: &mut ConnState, line: &str) -> Value {
    run(realm, conn, line).await.0
}

async fn login(realm: &Realm<MemoryStore>, conn: &mut ConnState, user: &str) -> String {
    let r = call(realm, conn, &format!("auth {user} {user}pw")).await;
    assert_eq!(r["status"], "OK", "{r}");
    r["tokenid"].as_str().unwrap().to_owned()
}

fn bodies(messages: &Value) -> Vec<String> {
    messages
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["msg"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_message_waits_in_the_inbox_until_the_reply_is_confirmed() {
    let realm = realm(&["messi", "henderson"]).await;
    let (mut a, mut b) = (
        ConnState::new(PEER, std::time::Duration::from_secs(300)),
        ConnState::new(PEER, std::time::Duration::from_secs(300)),
    );
    let ta = login(&realm, &mut a, "messi").await;
    let tb = login(&realm, &mut b, "henderson").await;
    for body in ["one", "two"] {
        let r = call(&realm, &mut a, &format!("send {ta} henderson {body}")).await;
        assert_eq!(r["status"], "OK", "{r}");
    }
    // Handed out, then the connection ends before confirming: handed out again.
    let (r, outcome) = run(&realm, &mut b, &format!("inbox {tb}")).await;
    assert_eq!(bodies(&r["messages"]["messi"]), ["one", "two"]);
    let Outcome::Deliver(delivery) = outcome else {
        panic!("an inbox with messages is a delivery to confirm");
    };
    drop(delivery);
    let (r, outcome) = run(&realm, &mut b, &format!("inbox {tb}")).await;
    assert_eq!(
        bodies(&r["messages"]["messi"]),
        ["one", "two"],
        "redelivered"
    );
    let Outcome::Deliver(delivery) = outcome else {
        panic!("still a delivery");
    };
    realm.confirm(delivery).await;
    let r = call(&realm, &mut b, &format!("inbox {tb}")).await;
    assert_eq!(
        r["messages"],
        serde_json::json!({}),
        "confirmed: delivered once"
    );
    // History keeps both, oldest first, from either side.
    let r = call(&realm, &mut a, &format!("history {ta} henderson 10")).await;
    assert_eq!(bodies(&r["messages"]), ["one", "two"]);
}

#[tokio::test]
async fn tokens_speak_only_for_their_user_and_end_at_logout() {
    let realm = realm(&["messi", "henderson"]).await;
    let mut a = ConnState::new(PEER, std::time::Duration::from_secs(300));
    let ta = login(&realm, &mut a, "messi").await;
    let r = call(&realm, &mut a, "auth messi wrong").await;
    assert_eq!(r["status"], "ERROR");
    let r = call(&realm, &mut a, &format!("send {ta} nobody hi")).await;
    assert_eq!(r["status"], "ERROR", "{r}");
    let r = call(&realm, &mut a, &format!("logout {ta}")).await;
    assert_eq!(r["status"], "OK", "{r}");
    let r = call(&realm, &mut a, &format!("send {ta} henderson hi")).await;
    assert_eq!(
        r["status"], "ERROR",
        "a logged-out token sends nothing: {r}"
    );
    assert!(
        realm.store().tokens().await.unwrap().is_empty(),
        "forgotten in storage"
    );
}

#[tokio::test]
async fn a_restart_keeps_users_tokens_and_undelivered_messages() {
    let realm1 = realm(&["messi", "henderson"]).await;
    let mut a = ConnState::new(PEER, std::time::Duration::from_secs(300));
    let ta = login(&realm1, &mut a, "messi").await;
    let r = call(&realm1, &mut a, &format!("send {ta} henderson kept")).await;
    assert_eq!(r["status"], "OK");
    // A second realm on the same store is what a restart sees.
    let store = realm1.store().clone();
    drop(realm1);
    let options = RealmOptions {
        password_cost: PasswordCost::INSECURE_TEST,
        ..RealmOptions::default()
    };
    let realm2 = Realm::open(options, store, Arc::new(ManualClock::default()))
        .await
        .unwrap();
    let mut b = ConnState::new(PEER, std::time::Duration::from_secs(300));
    let r = call(&realm2, &mut a, &format!("users {ta}")).await;
    assert_eq!(r["status"], "OK", "the token survived: {r}");
    let tb = login(&realm2, &mut b, "henderson").await;
    let r = call(&realm2, &mut b, &format!("inbox {tb}")).await;
    assert_eq!(bodies(&r["messages"]["messi"]), ["kept"]);
}

#[tokio::test]
async fn group_posts_are_ordered_gap_free_and_read_from_each_members_cursor() {
    let realm = realm(&["messi", "henderson"]).await;
    let (mut a, mut b) = (
        ConnState::new(PEER, std::time::Duration::from_secs(300)),
        ConnState::new(PEER, std::time::Duration::from_secs(300)),
    );
    let ta = login(&realm, &mut a, "messi").await;
    let tb = login(&realm, &mut b, "henderson").await;
    let r = call(&realm, &mut a, &format!("sendgroup {ta} chess before")).await;
    assert_eq!(r["status"], "OK", "the first post creates the group: {r}");
    let r = call(&realm, &mut b, &format!("sendgroup {tb} chess joined")).await;
    assert_eq!(r["status"], "OK", "{r}");
    for i in 0..3 {
        let r = call(&realm, &mut a, &format!("sendgroup {ta} chess m{i}")).await;
        assert_eq!(r["status"], "OK", "{r}");
    }
    let (r, outcome) = run(&realm, &mut b, &format!("inboxgroup {tb} chess")).await;
    let msgs = r["messages"].as_array().unwrap();
    let seqs: Vec<i64> = msgs.iter().map(|m| m["seq"].as_i64().unwrap()).collect();
    // From the join on (what came before is history), their own post included.
    assert_eq!(bodies(&r["messages"]), ["joined", "m0", "m1", "m2"], "{r}");
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "gap-free: {seqs:?}"
    );
    let Outcome::Deliver(delivery) = outcome else {
        panic!("a delivery to confirm");
    };
    realm.confirm(delivery).await;
    let r = call(&realm, &mut b, &format!("inboxgroup {tb} chess")).await;
    assert_eq!(r["messages"], serde_json::json!([]), "cursor moved: {r}");
    let groups = realm.store().groups().await.unwrap();
    assert_eq!(groups[0].last_seq, 5, "five posts, seqs 1..=5");
    assert_eq!(groups[0].creator.as_deref(), Some("messi"));
}

/// A [`Remote`] that records what the realm hands it.
#[derive(Default)]
struct Recorder {
    enqueued: Mutex<Vec<(String, NewMessage)>>,
}

impl Remote for Recorder {
    fn peer_names(&self) -> Vec<String> {
        vec!["realm2".into()]
    }
    fn lookup<'a>(&'a self, realm: &'a str, user: &'a str) -> BoxFuture<'a, Lookup> {
        Box::pin(async move {
            match (realm, user) {
                ("realm2", "ronaldo") => Lookup::Found("Cristiano".into()),
                ("realm2", _) => Lookup::Missing,
                _ => Lookup::NotPeer,
            }
        })
    }
    fn enqueue(
        &self,
        realm: &str,
        messages: Vec<NewMessage>,
    ) -> BoxFuture<'_, StoreResult<Vec<StoredMessage>>> {
        let realm = realm.to_owned();
        Box::pin(async move {
            let mut q = self.enqueued.lock().unwrap();
            Ok(messages
                .into_iter()
                .map(|m| {
                    q.push((realm.clone(), m.clone()));
                    StoredMessage {
                        seq: q.len() as i64,
                        message: m,
                    }
                })
                .collect())
        })
    }
    fn status(&self) -> BoxFuture<'_, Vec<jaring_proto::chat::realms::PeerEntry>> {
        Box::pin(async { Vec::new() })
    }
    fn group_lookup<'a>(&'a self, _: &'a str, _: &'a str) -> BoxFuture<'a, Lookup> {
        Box::pin(async { Lookup::Unreachable })
    }
    fn group_join<'a>(
        &'a self,
        _: &'a str,
        _: &'a str,
        _: &'a str,
    ) -> BoxFuture<'a, Result<RemoteJoin, String>> {
        Box::pin(async { Err("not in this test".into()) })
    }
    fn group_leave<'a>(
        &'a self,
        _: &'a str,
        _: &'a str,
        _: &'a str,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async { Err("not in this test".into()) })
    }
    fn group_members<'a>(
        &'a self,
        _: &'a str,
        _: &'a str,
    ) -> BoxFuture<'a, Result<(Vec<RemoteMember>, bool), String>> {
        Box::pin(async { Err("not in this test".into()) })
    }
    fn group_post(
        &self,
        _: &str,
        _: Vec<NewMessage>,
    ) -> BoxFuture<'_, StoreResult<Vec<StoredMessage>>> {
        Box::pin(async { Err(StoreError::Stopped) })
    }
}

#[tokio::test]
async fn a_message_to_another_realm_goes_to_the_federation_in_the_senders_name() {
    let realm = realm(&["messi"]).await;
    let remote = Arc::new(Recorder::default());
    realm.set_remote(Arc::clone(&remote) as Arc<dyn Remote>);
    let mut a = ConnState::new(PEER, std::time::Duration::from_secs(300));
    let ta = login(&realm, &mut a, "messi").await;
    let r = call(&realm, &mut a, &format!("send {ta} ronaldo@realm2 ola")).await;
    assert_eq!(r["status"], "OK", "{r}");
    let r = call(&realm, &mut a, &format!("send {ta} nobody@realm2 ola")).await;
    assert_eq!(r["status"], "ERROR", "the peer said no such user: {r}");
    let r = call(&realm, &mut a, &format!("send {ta} x@realm9 ola")).await;
    assert_eq!(r["status"], "ERROR", "not a peer: {r}");
    let q = remote.enqueued.lock().unwrap();
    assert_eq!(q.len(), 1, "only the deliverable one");
    let (to_realm, m) = &q[0];
    assert_eq!(to_realm, "realm2");
    assert_eq!(
        (m.sender.as_str(), m.recipient.as_str(), m.body.as_str()),
        ("messi", "ronaldo@realm2", "ola")
    );
}
