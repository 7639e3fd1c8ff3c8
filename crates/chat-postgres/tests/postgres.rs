//! The PostgreSQL store against a real, throwaway PostgreSQL 15: the lock, a round trip through
//! a restart of the store, and the database going away and coming back under a running store.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

use std::str::FromStr as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jaring_chat::storage::{
    FederationStore, GroupStore, MessageKind, NewGroupMessage, NewMessage, Settled, Store,
    StoreError, TokenRecord, UserAdmin, UserRecord, Window,
};
use jaring_chat_postgres::{PostgresOptions, PostgresStore};
use jaring_testkit::pg::PgCluster;

fn message(from: &str, to: &str, body: &str) -> NewMessage {
    NewMessage {
        id: uuid::Uuid::now_v7(),
        sender: from.into(),
        sender_display: from.to_uppercase(),
        recipient: to.into(),
        recipient_display: to.to_uppercase(),
        body: body.into(),
        sent_at: 1_700_000_000_000,
    }
}

fn group_message(group: &str, from: &str, body: &str) -> NewGroupMessage {
    NewGroupMessage {
        id: uuid::Uuid::now_v7(),
        group: group.into(),
        sender: from.into(),
        sender_display: from.to_uppercase(),
        body: body.into(),
        sent_at: 1_700_000_000_000,
    }
}

fn options() -> PostgresOptions {
    PostgresOptions {
        connect_timeout: Duration::from_secs(2),
        ..PostgresOptions::default()
    }
}

/// Opens the store once a dropped one has let go of the database's lock (its writer ends
/// shortly after the last clone is dropped; [`PostgresStore::close`] waits for that instead).
async fn reopen(url: &str) -> PostgresStore {
    for _ in 0..100 {
        match PostgresStore::open_with(url, options()).await {
            Ok(s) => return s,
            Err(StoreError::Open(e)) if e.to_string().contains("in use") => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("cannot open the store again: {e}"),
        }
    }
    panic!("the first store never let go of the database");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_store_on_the_same_database_is_refused() {
    let Some(pg) = PgCluster::start() else { return };
    let url = pg.create_database("realm");
    let first = PostgresStore::open_with(&url, options()).await.unwrap();
    let second = PostgresStore::open_with(&url, options()).await;
    match second {
        Err(StoreError::Open(e)) => assert_eq!(
            e.to_string(),
            "database realm is in use by another jaring realm server; stop it first"
        ),
        other => panic!("the second store opened: {other:?}"),
    }
    // Another database on the same server is another realm: not refused.
    let other = pg.create_database("other");
    let third = PostgresStore::open_with(&other, options()).await.unwrap();
    // Dropped, a store lets go of its database in the background.
    drop(third);
    drop(reopen(&other).await);
    // Closed, it has let go when `close` returns, not merely soon after: `close` waits while
    // the writer is still busy with a write whose caller is gone (held up here by a table lock
    // taken in another session), that write is committed, and then no advisory lock is held.
    let watcher = {
        let config = tokio_postgres::Config::from_str(&url).unwrap();
        let (client, connection) = config.connect(tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(connection);
        client
    };
    watcher
        .batch_execute("BEGIN; LOCK TABLE messages IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let clone = first.clone();
    let caller =
        tokio::spawn(async move { clone.insert_message(message("amy", "bob", "last")).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    caller.abort();
    assert!(caller.await.unwrap_err().is_cancelled());
    let mut closing = tokio::spawn(first.close());
    assert!(
        tokio::time::timeout(Duration::from_millis(300), &mut closing)
            .await
            .is_err(),
        "close returned while the writer was still writing"
    );
    watcher.batch_execute("COMMIT").await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), closing)
        .await
        .expect("close did not return once the writer could finish")
        .unwrap();
    let held: i64 = watcher
        .query_one(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(held, 0, "the lock is still held after close returned");
    let again = PostgresStore::open_with(&url, options()).await.unwrap();
    let inbox = again.pending("bob", 10, usize::MAX).await.unwrap();
    assert_eq!(
        inbox.messages.len(),
        1,
        "what was queued when the last clone went is committed"
    );
    again.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_sharing_a_commit_each_succeed_or_fail_whole() {
    let Some(pg) = PgCluster::start() else { return };
    let store = PostgresStore::open_with(&pg.url(), options())
        .await
        .unwrap();
    store.join_group("g", "here", "amy").await.unwrap();
    // Many calls at once, so that the writer takes several into one transaction; every third
    // names a group that does not exist after a valid message.
    let mut calls = Vec::new();
    for i in 0..60 {
        let store = store.clone();
        calls.push(tokio::spawn(async move {
            let mut batch = vec![
                group_message("g", "amy", &format!("{i}-a")),
                group_message("g", "amy", &format!("{i}-b")),
            ];
            if i % 3 == 0 {
                batch.push(group_message("nosuch", "amy", "x"));
            }
            (
                i,
                store.insert_group_messages(batch, Box::new(|_| {})).await,
            )
        }));
    }
    let mut stored = Vec::new();
    for call in calls {
        let (i, r) = call.await.unwrap();
        match r {
            Ok(m) if i % 3 != 0 => {
                assert_eq!(m.len(), 2);
                assert_eq!(m[1].seq, m[0].seq + 1, "one call's seqs are consecutive");
                stored.extend(m.into_iter().map(|m| m.message.body));
            }
            Err(StoreError::Backend(_)) if i % 3 == 0 => {}
            other => panic!("call {i}: {other:?}"),
        }
    }
    let page = store
        .group_messages("g", 0, 1000, usize::MAX)
        .await
        .unwrap();
    assert_eq!(
        page.messages.iter().map(|m| m.seq).collect::<Vec<_>>(),
        (1..=80).collect::<Vec<i64>>(),
        "the 40 calls that succeeded, gap-free"
    );
    let mut bodies: Vec<String> = page.messages.into_iter().map(|m| m.message.body).collect();
    bodies.sort();
    stored.sort();
    assert_eq!(bodies, stored, "nothing of a failed call is stored");

    // An enqueue naming one id twice, or one claimed before, fails whole.
    let m = message("amy", "zed@far", "twice");
    let r = store
        .enqueue(
            "far",
            MessageKind::Private,
            vec![message("amy", "zed@far", "fine"), m.clone(), m],
        )
        .await;
    assert!(matches!(r, Err(StoreError::Backend(_))), "{r:?}");
    assert!(store.outbox_counts().await.unwrap().is_empty());
    store.close().await;
}

/// Private sends and inbox cursors normally go in one round trip with their commit; a batch one
/// of whose sends PostgreSQL refuses (text cannot hold NUL) is redone step by step, so only that
/// send fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_send_fails_alone_in_a_shared_commit() {
    let Some(pg) = PgCluster::start() else { return };
    let store = PostgresStore::open_with(&pg.url(), options())
        .await
        .unwrap();
    let first = store
        .insert_messages(vec![message("amy", "cat", "c0")])
        .await;
    let c0 = first[0].as_ref().unwrap().seq;
    let mut calls = Vec::new();
    for i in 0..60 {
        let store = store.clone();
        calls.push(tokio::spawn(async move {
            if i == 30 {
                store.mark_delivered("cat", c0).await.unwrap();
                return (i, Vec::new());
            }
            let body = if i % 5 == 0 {
                format!("{i}\0")
            } else {
                format!("{i}")
            };
            let sent = store
                .insert_messages(vec![message("amy", "bob", &body)])
                .await;
            (i, sent)
        }));
    }
    let mut stored = Vec::new();
    for call in calls {
        let (i, r) = call.await.unwrap();
        match r.as_slice() {
            [] if i == 30 => {}
            [Ok(m)] if i % 5 != 0 => stored.push(m.seq),
            [Err(StoreError::Backend(_))] if i % 5 == 0 => {}
            other => panic!("call {i}: {other:?}"),
        }
    }
    assert_eq!(stored.len(), 48, "every send without a NUL is stored");
    stored.sort_unstable();
    let inbox = store.pending("bob", 1000, usize::MAX).await.unwrap();
    assert_eq!(
        inbox.messages.iter().map(|m| m.seq).collect::<Vec<_>>(),
        stored,
        "bob's inbox holds exactly the sends that were acknowledged, in seq order"
    );
    assert!(
        store
            .pending("cat", 10, usize::MAX)
            .await
            .unwrap()
            .messages
            .is_empty(),
        "the cursor moved in the same commits stays moved"
    );
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_up_with_the_database_down_says_where_and_what_to_do() {
    let Some(pg) = PgCluster::start() else { return };
    let url = pg.url();
    pg.stop();
    let e = PostgresStore::open_with(&url, options()).await.unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, StoreError::Open(_)), "{e:?}");
    let port = url.rsplit(':').next().unwrap().split('/').next().unwrap();
    assert!(
        text.contains(&format!("127.0.0.1:{port}")) && text.contains("check that the server runs"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_is_stored_is_there_after_the_store_is_reopened() {
    let Some(pg) = PgCluster::start() else { return };
    let url = pg.url();
    let store = PostgresStore::open_with(&url, options()).await.unwrap();
    let amy = UserRecord {
        name: "amy".into(),
        display_name: "Amy".into(),
        password_hash: "$argon2id$x".into(),
        bench: false,
    };
    store.add_user(amy.clone()).await.unwrap();
    assert!(matches!(
        store.add_user(amy.clone()).await,
        Err(StoreError::UserExists(n)) if n == "amy"
    ));
    assert!(matches!(
        store.set_password("nobody", "h").await,
        Err(StoreError::NoSuchUser(_))
    ));
    store
        .insert_token(TokenRecord {
            hash: [7; 32],
            user: "amy".into(),
        })
        .await
        .unwrap();

    // Private messages: seqs in commit order, answered in the callers' order.
    let stored = store
        .insert_messages(vec![
            message("amy", "bob", "one"),
            message("bob", "amy", "two"),
            message("amy", "bob", "three"),
        ])
        .await;
    let seqs: Vec<i64> = stored.iter().map(|r| r.as_ref().unwrap().seq).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    let inbox = store.pending("bob", 10, usize::MAX).await.unwrap();
    assert_eq!(
        inbox
            .messages
            .iter()
            .map(|m| m.message.body.as_str())
            .collect::<Vec<_>>(),
        ["one", "three"]
    );
    store.mark_delivered("bob", seqs[0]).await.unwrap();
    // A cursor never moves back.
    store.mark_delivered("bob", 0).await.unwrap();

    // Groups: gap-free seqs, published after the commit in seq order.
    let joined = store.join_group("g", "here", "amy").await.unwrap();
    assert!(joined.created && joined.new_member && joined.read_seq == 0);
    let pushed = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&pushed);
    let posts = store
        .insert_group_messages(
            vec![
                group_message("g", "amy", "a"),
                group_message("g", "amy", "b"),
            ],
            Box::new(move |m| seen.lock().unwrap().push(m.seq)),
        )
        .await
        .unwrap();
    assert_eq!(posts.iter().map(|m| m.seq).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(*pushed.lock().unwrap(), [1, 2]);
    // A retried id is stored once; a group that does not exist fails alone.
    let retry = store
        .insert_group_messages(vec![posts[0].message.clone()], Box::new(|_| {}))
        .await
        .unwrap();
    assert!(retry.is_empty());
    assert!(
        store
            .insert_group_messages(vec![group_message("nope", "amy", "x")], Box::new(|_| {}))
            .await
            .is_err()
    );

    // Federation: the outbox, a bounce written once, a retried receipt skipped.
    let out = store
        .enqueue(
            "far",
            MessageKind::Private,
            vec![message("amy", "zed@far", "hi")],
        )
        .await
        .unwrap();
    let incoming = message("zed@far", "amy", "hello");
    assert_eq!(store.receive(vec![incoming.clone()]).await.unwrap(), 1);
    assert_eq!(store.receive(vec![incoming.clone()]).await.unwrap(), 0);
    let bounce = Settled {
        seq: out[0].seq,
        id: out[0].message.id,
        bounce: Some(message("far", "amy", "no such user")),
    };
    store.settle("far", vec![bounce.clone()]).await.unwrap();
    store.settle("far", vec![bounce]).await.unwrap();
    store.close().await;

    let store = PostgresStore::open_with(&url, options()).await.unwrap();
    assert_eq!(store.list_users().await.unwrap(), [amy]);
    assert_eq!(store.tokens().await.unwrap().len(), 1);
    let inbox = store.pending("bob", 10, usize::MAX).await.unwrap();
    assert_eq!(inbox.messages.len(), 1);
    assert_eq!(inbox.messages[0].message.body, "three");
    let amy_inbox: Vec<String> = store
        .pending("amy", 10, usize::MAX)
        .await
        .unwrap()
        .messages
        .iter()
        .map(|m| m.message.body.clone())
        .collect();
    assert_eq!(amy_inbox, ["two", "hello", "no such user"]);
    let history = store
        .conversation(
            "bob",
            "amy",
            Window {
                limit: 10,
                before: None,
                max_bytes: usize::MAX,
            },
        )
        .await
        .unwrap();
    assert_eq!(history.messages.len(), 3);
    assert_eq!(store.groups().await.unwrap()[0].last_seq, 2);
    assert_eq!(store.memberships().await.unwrap().len(), 1);
    let page = store.group_messages("g", 0, 10, 1).await.unwrap();
    assert_eq!((page.messages.len(), page.cut), (1, true));
    assert!(store.outbox_counts().await.unwrap().is_empty());
    // The next group message continues the order.
    let next = store
        .insert_group_messages(vec![group_message("g", "amy", "c")], Box::new(|_| {}))
        .await
        .unwrap();
    assert_eq!(next[0].seq, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_fail_while_the_database_is_down_and_succeed_again_without_reopening() {
    let Some(pg) = PgCluster::start() else { return };
    let store = PostgresStore::open_with(&pg.url(), options())
        .await
        .unwrap();
    let before = store.insert_message(message("amy", "bob", "before")).await;
    assert!(before.is_ok(), "{before:?}");

    pg.stop();
    for i in 0..3 {
        let r = tokio::time::timeout(
            Duration::from_secs(10),
            store.insert_message(message("amy", "bob", &format!("during {i}"))),
        )
        .await
        .expect("a send during the outage hangs");
        assert!(matches!(r, Err(StoreError::Unavailable(_))), "{r:?}");
        let g = store.join_group("g", "here", "amy").await;
        assert!(matches!(g, Err(StoreError::Unavailable(_))), "{g:?}");
        let read = store.pending("bob", 10, usize::MAX).await;
        assert!(matches!(read, Err(StoreError::Unavailable(_))), "{read:?}");
    }

    pg.start_again();
    let mut after = None;
    for _ in 0..100 {
        match store.insert_message(message("amy", "bob", "after")).await {
            Ok(m) => {
                after = Some(m);
                break;
            }
            Err(StoreError::Unavailable(_)) => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(e) => panic!("{e}"),
        }
    }
    assert!(after.is_some(), "the store did not recover");
    // Readers recover too; nothing that failed was stored.
    let mut inbox = None;
    for _ in 0..50 {
        match store.pending("bob", 10, usize::MAX).await {
            Ok(p) => {
                inbox = Some(p);
                break;
            }
            Err(StoreError::Unavailable(_)) => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(e) => panic!("{e}"),
        }
    }
    let bodies: Vec<String> = inbox
        .expect("readers did not recover")
        .messages
        .iter()
        .map(|m| m.message.body.clone())
        .collect();
    assert_eq!(bodies, ["before", "after"]);
    // And the lock is held again: a second store is refused.
    let second = PostgresStore::open_with(&pg.url(), options()).await;
    assert!(matches!(second, Err(StoreError::Open(_))), "{second:?}");
}
