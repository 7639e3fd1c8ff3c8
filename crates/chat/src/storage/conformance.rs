//! The storage conformance suite: what every backend must do, checked through the traits alone.
//!
//! An adapter crate runs it from its tests with the `conformance` feature of `jaring-chat`:
//! implement [`Backend`] (a fresh, empty store per check; the same data opened again for the
//! durability check) and call [`run_all`], or call the `check_*` functions one by one (each takes
//! a fresh, empty store) to see them as separate tests. A failed check panics with a message
//! that names what went wrong; [`run_all`] prints each check's name to stderr before it runs.
//!
//! The checks follow the guarantees in `docs/design/storage.md`: one order within a
//! conversation and a group (gap-free group `seq`s, publication in that order, even with
//! concurrent callers), exactly-once under retries and duplicates from peers, cursors that never
//! move back, paging limits (count, bytes, `cut`), settling that is idempotent, all-or-nothing
//! calls, and data that survives being opened again.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};

use super::{
    BenchPurge, FederationStore as _, GroupCursor, GroupRecord, GroupStore as _, JoinOutcome,
    MemberRecord, MessageKind, NewGroupMessage, NewMessage, Page, Published, ReadCursor,
    ReplicaOutcome, Settled, Storage, Store as _, StoreError, StoreResult, StoredGroupMessage,
    StoredMessage, TokenRecord, UserAdmin as _, UserRecord, Window,
};

/// How the suite gets stores of one backend.
pub trait Backend {
    /// The backend's store.
    type Store: Storage;

    /// A new, empty store (its own database, directory or schema: nothing shared with any other
    /// store this backend handed out).
    fn fresh(&mut self) -> impl Future<Output = Self::Store>;

    /// The same data opened anew, as a restarted realm would: `store` (and every clone of it the
    /// suite made) is given up first. A backend that keeps nothing (memory) returns `store`.
    fn reopen(&mut self, store: Self::Store) -> impl Future<Output = Self::Store>;
}

/// A [`Backend`] whose stores keep nothing: `fresh` calls the function, `reopen` hands the same
/// store back (so [`check_reopen_keeps_everything`] checks only that nothing is lost in between).
#[derive(Debug)]
pub struct NotDurable<F>(pub F);

impl<S: Storage, F: FnMut() -> S> Backend for NotDurable<F> {
    type Store = S;

    async fn fresh(&mut self) -> S {
        (self.0)()
    }

    async fn reopen(&mut self, store: S) -> S {
        store
    }
}

/// Runs every check, each on a fresh store from `backend`, then the durability check.
pub async fn run_all<B: Backend>(backend: &mut B) {
    macro_rules! checks {
        ($($check:ident),* $(,)?) => {$(
            eprintln!("storage conformance: {}", stringify!($check));
            let store = backend.fresh().await;
            $check(&store).await;
            drop(store);
        )*};
    }
    checks!(
        check_conversation_order,
        check_concurrent_sends_keep_one_order,
        check_insert_messages_batch,
        check_inbox,
        check_tokens,
        check_rehash_password,
        check_user_admin,
        check_put_bench_users,
        check_purge_bench_users,
        check_purge_without_bench_users,
        check_groups_join_and_leave,
        check_group_seqs_gap_free,
        check_concurrent_group_posts,
        check_group_reads,
        check_advance_cursors,
        check_outbox,
        check_enqueue_all_or_none,
        check_settle,
        check_receive_dedupes,
        check_feeds,
        check_join_replica,
        check_store_replica_order,
        check_store_replica_attribution,
    );
    eprintln!("storage conformance: check_reopen_keeps_everything");
    check_reopen_keeps_everything(backend).await;
}

// ---------------------------------------------------------------------------------------------
// Private messages

/// Messages between two addresses are in one order (`seq` strictly increasing, history oldest
/// first, the same from either side), and history pages by `before`, by count and by bytes (the
/// first message whatever its size; `cut` exactly when the byte limit left older ones out).
pub async fn check_conversation_order<S: Storage>(store: &S) {
    let mut sent = Vec::new();
    for i in 0..6 {
        let (from, to) = if i % 2 == 0 {
            ("amy", "bob")
        } else {
            ("bob", "amy")
        };
        // 10 bytes each.
        sent.push(send(store, from, to, &format!("m{i}-xxxxxxx")).await);
        send(store, "amy", "cat", &format!("c{i}")).await;
    }
    assert_increasing(
        sent.iter().map(|m| m.seq),
        "seqs of messages sent one after another",
    );
    let all = ok(
        store
            .conversation("amy", "bob", window(100, None, usize::MAX))
            .await,
        "history",
    );
    assert_eq!(
        all.messages,
        sent.iter().map(|m| (**m).clone()).collect::<Vec<_>>(),
        "history of amy and bob: every message as stored, oldest first, no one else's"
    );
    assert!(!all.cut, "a history that fits is not cut");
    let other_side = ok(
        store
            .conversation("bob", "amy", window(100, None, usize::MAX))
            .await,
        "history",
    );
    assert_eq!(other_side, all, "history is the same whichever side asks");
    let cat = ok(
        store
            .conversation("cat", "amy", window(100, None, usize::MAX))
            .await,
        "history",
    );
    assert_eq!(
        bodies(&cat),
        ["c0", "c1", "c2", "c3", "c4", "c5"],
        "history of amy and cat"
    );
    let none = ok(
        store
            .conversation("amy", "dan", window(100, None, usize::MAX))
            .await,
        "history",
    );
    assert!(
        none.messages.is_empty() && !none.cut,
        "no conversation: an empty page, not cut"
    );

    // Paging by count: the newest `limit` older than `before`.
    let seqs = |p: &Page<StoredMessage>| p.messages.iter().map(|m| m.seq).collect::<Vec<_>>();
    let seq = |i: usize| sent[i].seq;
    let newest = ok(
        store
            .conversation("amy", "bob", window(4, None, usize::MAX))
            .await,
        "history",
    );
    assert_eq!(
        seqs(&newest),
        [seq(2), seq(3), seq(4), seq(5)],
        "the newest 4, oldest first"
    );
    assert!(!newest.cut, "a page ended by its count is not cut");
    let older = ok(
        store
            .conversation("amy", "bob", window(4, Some(seq(2)), usize::MAX))
            .await,
        "history",
    );
    assert_eq!(
        seqs(&older),
        [seq(0), seq(1)],
        "the page before the newest 4"
    );
    let oldest = ok(
        store
            .conversation("amy", "bob", window(4, Some(seq(0)), usize::MAX))
            .await,
        "history",
    );
    assert!(
        oldest.messages.is_empty(),
        "nothing before the first message"
    );

    // Paging by bytes.
    let page = ok(
        store
            .conversation("amy", "bob", window(100, None, 25))
            .await,
        "history",
    );
    assert_eq!(
        seqs(&page),
        [seq(4), seq(5)],
        "25 bytes hold the newest two 10-byte messages"
    );
    assert!(page.cut, "the byte limit left older messages out: cut");
    let page = ok(
        store
            .conversation("amy", "bob", window(100, Some(seq(4)), 25))
            .await,
        "history",
    );
    assert_eq!(
        seqs(&page),
        [seq(2), seq(3)],
        "the next page by bytes goes on before the cut"
    );
    assert!(page.cut, "older messages are still left out: cut");
    let page = ok(
        store.conversation("amy", "bob", window(100, None, 0)).await,
        "history",
    );
    assert_eq!(
        seqs(&page),
        [seq(5)],
        "the newest message comes whatever its size"
    );
    assert!(
        page.cut,
        "a one-message page with older ones left out is cut"
    );
    let page = ok(
        store
            .conversation("amy", "bob", window(100, None, 60))
            .await,
        "history",
    );
    assert_eq!(
        page.messages.len(),
        6,
        "60 bytes hold all six 10-byte messages"
    );
    assert!(!page.cut, "everything fitted exactly: not cut");
    let page = ok(
        store
            .conversation("amy", "bob", window(100, None, 59))
            .await,
        "history",
    );
    assert_eq!(page.messages.len(), 5, "59 bytes hold five");
    assert!(page.cut, "59 bytes left one out: cut");
    let page = ok(
        store.conversation("amy", "bob", window(3, None, 30)).await,
        "history",
    );
    assert_eq!(
        seqs(&page),
        [seq(3), seq(4), seq(5)],
        "count and bytes both reached"
    );
    assert!(
        !page.cut,
        "a page ended by its count is not cut, even when its bytes are full"
    );

    // One huge message.
    let big = send(store, "amy", "bob", &"x".repeat(1000)).await;
    let page = ok(
        store
            .conversation("amy", "bob", window(100, None, 10))
            .await,
        "history",
    );
    assert_eq!(
        seqs(&page),
        [big.seq],
        "a message larger than the byte limit comes alone"
    );
    assert!(page.cut, "with older ones left out");
    let page = ok(
        store
            .conversation("amy", "bob", window(1, Some(seq(1)), 0))
            .await,
        "history",
    );
    assert_eq!(seqs(&page), [seq(0)], "the first message, alone");
    assert!(!page.cut, "nothing older was left out: not cut");
}

/// Concurrent senders: every message gets its own `seq`, history is in `seq` order, and each
/// sender's messages keep the order it sent them in.
pub async fn check_concurrent_sends_keep_one_order<S: Storage>(store: &S) {
    const TASKS: usize = 8;
    const EACH: usize = 20;
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            for i in 0..EACH {
                let m = ok(
                    store
                        .insert_message(message("amy", "bob", &format!("{t}-{i}")))
                        .await,
                    "send",
                );
                seqs.push(m.seq);
            }
            seqs
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        let seqs = t.await.expect("a sending task panicked");
        assert_increasing(
            seqs.iter().copied(),
            "one sender's seqs, in the order it sent",
        );
        all.extend(seqs);
    }
    let distinct: HashSet<i64> = all.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        TASKS * EACH,
        "every message has a seq of its own"
    );
    let history = ok(
        store
            .conversation("amy", "bob", window(1000, None, usize::MAX))
            .await,
        "history",
    );
    assert_eq!(
        history.messages.len(),
        TASKS * EACH,
        "history holds every message"
    );
    assert_increasing(history.messages.iter().map(|m| m.seq), "history's seqs");
    for t in 0..TASKS {
        let own: Vec<String> = history
            .messages
            .iter()
            .map(|m| m.message.body.clone())
            .filter(|b| b.starts_with(&format!("{t}-")))
            .collect();
        let expected: Vec<String> = (0..EACH).map(|i| format!("{t}-{i}")).collect();
        assert_eq!(
            own, expected,
            "sender {t}'s messages in history, in its order"
        );
    }
    let inbox = ok(store.pending("bob", 1000, usize::MAX).await, "pending");
    assert_eq!(
        inbox.messages.iter().map(|m| m.seq).collect::<Vec<_>>(),
        history.messages.iter().map(|m| m.seq).collect::<Vec<_>>(),
        "the inbox is in the same order as history"
    );
}

/// A batch's results come back in its order, each the message it was given, with increasing
/// `seq`s.
pub async fn check_insert_messages_batch<S: Storage>(store: &S) {
    let batch: Vec<NewMessage> = (0..5)
        .map(|i| message("amy", ["bob", "cat"][i % 2], &format!("b{i}")))
        .collect();
    let results = store.insert_messages(batch.clone()).await;
    assert_eq!(
        results.len(),
        batch.len(),
        "one result per message of the batch"
    );
    let stored: Vec<Arc<StoredMessage>> = results
        .into_iter()
        .map(|r| r.expect("a message of the batch was not stored"))
        .collect();
    for (s, m) in stored.iter().zip(&batch) {
        assert_eq!(
            &s.message, m,
            "the batch's results are in its order, each its message"
        );
    }
    assert_increasing(stored.iter().map(|m| m.seq), "a batch's seqs");
    let next = send(store, "amy", "bob", "after").await;
    assert!(next.seq > stored[4].seq, "a later message gets a later seq");
    assert!(
        store.insert_messages(Vec::new()).await.is_empty(),
        "an empty batch: no results"
    );
    let bob = ok(store.pending("bob", 100, usize::MAX).await, "pending");
    assert_eq!(bodies_arc(&bob), ["b0", "b2", "b4", "after"], "bob's inbox");
}

/// `pending` returns the oldest undelivered messages after the recipient's cursor, limited by
/// count and bytes; only `mark_delivered` moves the cursor, and never back.
pub async fn check_inbox<S: Storage>(store: &S) {
    let mut b = Vec::new();
    for i in 0..5 {
        b.push(send(store, "amy", "bob", &format!("b{i}-xxxxxxx")).await);
        if i == 2 {
            send(store, "amy", "cat", "c0").await;
            send(store, "bob", "amy", "a0").await;
        }
    }
    let seqs = |p: &Page<Arc<StoredMessage>>| p.messages.iter().map(|m| m.seq).collect::<Vec<_>>();
    let seq = |i: usize| b[i].seq;
    let page = ok(store.pending("bob", 100, usize::MAX).await, "pending");
    assert_eq!(
        page.messages
            .iter()
            .map(|m| (**m).clone())
            .collect::<Vec<_>>(),
        b.iter().map(|m| (**m).clone()).collect::<Vec<_>>(),
        "bob's inbox: the messages to him, as stored, oldest first (not what he sent)"
    );
    assert!(!page.cut, "an inbox that fits is not cut");
    let again = ok(store.pending("bob", 100, usize::MAX).await, "pending");
    assert_eq!(
        seqs(&again),
        seqs(&page),
        "reading does not deliver: the same messages again"
    );
    let page = ok(store.pending("bob", 2, usize::MAX).await, "pending");
    assert_eq!(seqs(&page), [seq(0), seq(1)], "the oldest 2");
    assert!(!page.cut, "a page ended by its count is not cut");
    let page = ok(store.pending("bob", 100, 25).await, "pending");
    assert_eq!(
        seqs(&page),
        [seq(0), seq(1)],
        "25 bytes hold the oldest two 10-byte messages"
    );
    assert!(page.cut, "the byte limit left some out: cut");
    let page = ok(store.pending("bob", 100, 0).await, "pending");
    assert_eq!(
        seqs(&page),
        [seq(0)],
        "the oldest message comes whatever its size"
    );
    assert!(page.cut, "and the rest are left out: cut");
    let page = ok(store.pending("bob", 100, 50).await, "pending");
    assert_eq!(page.messages.len(), 5, "50 bytes hold all five");
    assert!(!page.cut, "everything fitted exactly: not cut");

    ok(store.mark_delivered("bob", seq(1)).await, "mark_delivered");
    let page = ok(store.pending("bob", 100, usize::MAX).await, "pending");
    assert_eq!(
        seqs(&page),
        [seq(2), seq(3), seq(4)],
        "after delivering up to the second"
    );
    let page = ok(store.pending("bob", 100, usize::MAX).await, "pending");
    assert_eq!(
        seqs(&page),
        [seq(2), seq(3), seq(4)],
        "read again: the same"
    );
    ok(store.mark_delivered("bob", seq(0)).await, "mark_delivered");
    let page = ok(store.pending("bob", 100, usize::MAX).await, "pending");
    assert_eq!(
        seqs(&page),
        [seq(2), seq(3), seq(4)],
        "a delivery cursor never moves back"
    );
    let b5 = send(store, "amy", "bob", "b5-xxxxxxx").await;
    let page = ok(store.pending("bob", 100, usize::MAX).await, "pending");
    assert_eq!(
        seqs(&page),
        [seq(2), seq(3), seq(4), b5.seq],
        "a new message joins the end"
    );
    let page = ok(store.pending("bob", 1, usize::MAX).await, "pending");
    assert_eq!(seqs(&page), [seq(2)], "the oldest undelivered one");
    let page = ok(store.pending("bob", 100, 15).await, "pending");
    assert_eq!(seqs(&page), [seq(2)], "bytes count from the cursor on");
    assert!(page.cut, "cut");
    ok(store.mark_delivered("bob", b5.seq).await, "mark_delivered");
    let page = ok(store.pending("bob", 100, usize::MAX).await, "pending");
    assert!(
        page.messages.is_empty() && !page.cut,
        "everything delivered: an empty inbox"
    );

    let cat = ok(store.pending("cat", 100, usize::MAX).await, "pending");
    assert_eq!(
        bodies_arc(&cat),
        ["c0"],
        "bob's deliveries leave cat's inbox alone"
    );
    let amy = ok(store.pending("amy", 100, usize::MAX).await, "pending");
    assert_eq!(bodies_arc(&amy), ["a0"], "amy's inbox");
    let dan = ok(store.pending("dan", 100, usize::MAX).await, "pending");
    assert!(dan.messages.is_empty(), "no messages: an empty inbox");

    let big = send(store, "amy", "bob", &"x".repeat(1000)).await;
    let small = send(store, "amy", "bob", "small").await;
    let page = ok(store.pending("bob", 100, 10).await, "pending");
    assert_eq!(
        seqs(&page),
        [big.seq],
        "a message larger than the byte limit comes alone"
    );
    assert!(page.cut, "cut");
    ok(store.mark_delivered("bob", big.seq).await, "mark_delivered");
    let page = ok(store.pending("bob", 100, 10).await, "pending");
    assert_eq!(seqs(&page), [small.seq], "then the next");
    assert!(!page.cut, "nothing left out");
    let history = ok(
        store
            .conversation("amy", "bob", window(100, None, usize::MAX))
            .await,
        "history",
    );
    assert_eq!(
        history.messages.len(),
        9,
        "delivered messages stay in history (eight to bob, one from him)"
    );
}

// ---------------------------------------------------------------------------------------------
// Users and tokens

/// Tokens are stored, replaced by hash, deleted, and read back.
pub async fn check_tokens<S: Storage>(store: &S) {
    let t = |n: u8, user: &str| TokenRecord {
        hash: [n; 32],
        user: user.into(),
    };
    for token in [t(1, "amy"), t(2, "amy"), t(3, "bob")] {
        ok(store.insert_token(token).await, "insert_token");
    }
    assert_eq!(
        tokens(store).await,
        [t(1, "amy"), t(2, "amy"), t(3, "bob")],
        "every token"
    );
    ok(store.insert_token(t(1, "amy")).await, "insert_token");
    assert_eq!(
        tokens(store).await.len(),
        3,
        "a token stored twice is one token"
    );
    ok(
        store.delete_tokens(vec![[2; 32], [9; 32]]).await,
        "delete_tokens",
    );
    assert_eq!(
        tokens(store).await,
        [t(1, "amy"), t(3, "bob")],
        "a deleted token is gone"
    );
    ok(
        store.delete_tokens(Vec::new()).await,
        "delete_tokens of none",
    );
    assert_eq!(tokens(store).await.len(), 2, "deleting none deletes none");
}

/// `rehash_password` replaces the hash only while it is still `old`, and leaves sessions alone.
pub async fn check_rehash_password<S: Storage>(store: &S) {
    ok(store.add_user(user("amy", "h1")).await, "add_user");
    ok(
        store
            .insert_token(TokenRecord {
                hash: [1; 32],
                user: "amy".into(),
            })
            .await,
        "insert_token",
    );
    ok(
        store.rehash_password("amy", "wrong", "h2").await,
        "rehash_password",
    );
    assert_eq!(
        hash_of(store, "amy").await,
        "h1",
        "a rehash from a hash that is not the stored one does nothing"
    );
    ok(
        store.rehash_password("amy", "h1", "h2").await,
        "rehash_password",
    );
    assert_eq!(
        hash_of(store, "amy").await,
        "h2",
        "a rehash from the stored hash replaces it"
    );
    ok(
        store.rehash_password("amy", "h1", "h3").await,
        "rehash_password",
    );
    assert_eq!(
        hash_of(store, "amy").await,
        "h2",
        "a second rehash from the old hash does nothing"
    );
    assert_eq!(
        tokens(store).await.len(),
        1,
        "a rehash leaves the user's sessions alone"
    );
    ok(
        store.rehash_password("nobody", "h1", "h2").await,
        "rehash_password of no user is no error",
    );
}

/// User administration: added users listed by name, a taken name refused, a password change or
/// a deletion ends the user's sessions (only theirs), and an unknown user is an error.
pub async fn check_user_admin<S: Storage>(store: &S) {
    for name in ["bob", "amy", "cat"] {
        ok(
            store.add_user(user(name, &format!("{name}-hash"))).await,
            "add_user",
        );
    }
    let names = |users: Vec<UserRecord>| users.into_iter().map(|u| u.name).collect::<Vec<_>>();
    assert_eq!(
        names(ok(store.list_users().await, "list_users")),
        ["amy", "bob", "cat"],
        "list_users, by name"
    );
    assert_eq!(
        ok(store.users().await, "users"),
        ok(store.list_users().await, "list_users"),
        "users() lists the same"
    );
    assert_eq!(
        ok(store.list_users().await, "list_users")[0],
        user("amy", "amy-hash"),
        "a user as added"
    );
    match store.add_user(user("amy", "other")).await {
        Err(StoreError::UserExists(name)) => assert_eq!(name, "amy", "UserExists names the user"),
        other => panic!("adding a user that exists: want UserExists, got {other:?}"),
    }
    assert_eq!(
        hash_of(store, "amy").await,
        "amy-hash",
        "a refused add changes nothing"
    );
    for (n, who) in [(1, "amy"), (2, "amy"), (3, "bob")] {
        ok(
            store
                .insert_token(TokenRecord {
                    hash: [n; 32],
                    user: who.into(),
                })
                .await,
            "insert_token",
        );
    }
    ok(store.set_password("amy", "new-hash").await, "set_password");
    assert_eq!(
        hash_of(store, "amy").await,
        "new-hash",
        "set_password replaces the hash"
    );
    let left: Vec<String> = tokens(store).await.into_iter().map(|t| t.user).collect();
    assert_eq!(
        left,
        ["bob"],
        "set_password ends the user's sessions, and only theirs"
    );
    match store.set_password("dan", "x").await {
        Err(StoreError::NoSuchUser(name)) => assert_eq!(name, "dan", "NoSuchUser names the user"),
        other => panic!("set_password of no user: want NoSuchUser, got {other:?}"),
    }
    send(store, "bob", "cat", "before bob left").await;
    ok(store.delete_user("bob").await, "delete_user");
    assert_eq!(
        names(ok(store.list_users().await, "list_users")),
        ["amy", "cat"],
        "a deleted user is gone"
    );
    assert!(
        tokens(store).await.is_empty(),
        "delete_user ends the user's sessions"
    );
    match store.delete_user("bob").await {
        Err(StoreError::NoSuchUser(name)) => assert_eq!(name, "bob", "NoSuchUser names the user"),
        other => panic!("deleting a user twice: want NoSuchUser, got {other:?}"),
    }
    let history = ok(
        store
            .conversation("cat", "bob", window(10, None, usize::MAX))
            .await,
        "history",
    );
    assert_eq!(
        bodies(&history),
        ["before bob left"],
        "a deleted user's messages stay in others' history"
    );
}

/// Bench users: `put_bench_users` creates them flagged (whatever the records say) beside real
/// users, replaces a bench user of the same name (new display name and hash, sessions ended),
/// and refuses a real user's name, naming the first, writing nothing of the call.
pub async fn check_put_bench_users<S: Storage>(store: &S) {
    ok(store.add_user(user("amy", "amy-hash")).await, "add_user");
    ok(
        store
            .put_bench_users(vec![user("b0", "h0"), user("b1", "h1")])
            .await,
        "put_bench_users",
    );
    let listed = ok(store.list_users().await, "list_users");
    assert_eq!(
        listed,
        [
            user("amy", "amy-hash"),
            bench("b0", "h0"),
            bench("b1", "h1")
        ],
        "bench users are listed flagged, real users not"
    );
    assert_eq!(
        ok(store.users().await, "users"),
        listed,
        "users() returns the flag too"
    );
    for (n, who) in [(1, "b0"), (2, "b1"), (3, "amy")] {
        ok(
            store
                .insert_token(TokenRecord {
                    hash: [n; 32],
                    user: who.into(),
                })
                .await,
            "insert_token",
        );
    }
    let renamed = UserRecord {
        display_name: "Bench Zero".into(),
        ..user("b0", "h0-new")
    };
    ok(
        store
            .put_bench_users(vec![renamed.clone(), user("b2", "h2")])
            .await,
        "put_bench_users replacing b0",
    );
    assert_eq!(
        ok(store.list_users().await, "list_users"),
        [
            user("amy", "amy-hash"),
            UserRecord {
                bench: true,
                ..renamed
            },
            bench("b1", "h1"),
            bench("b2", "h2"),
        ],
        "a bench user put again gets the new display name and hash; a new one is added"
    );
    let left: Vec<String> = tokens(store).await.into_iter().map(|t| t.user).collect();
    assert_eq!(
        left,
        ["b1", "amy"],
        "a replaced bench user's sessions end, and only theirs"
    );
    let before = ok(store.list_users().await, "list_users");
    match store
        .put_bench_users(vec![
            user("b3", "h3"),
            user("b1", "h1-other"),
            user("amy", "stolen"),
            user("b4", "h4"),
        ])
        .await
    {
        Err(StoreError::UserExists(name)) => {
            assert_eq!(name, "amy", "UserExists names the real user");
        }
        other => {
            panic!("putting a real user's name as a bench user: want UserExists, got {other:?}")
        }
    }
    assert_eq!(
        ok(store.list_users().await, "list_users"),
        before,
        "a refused put writes nothing: no user created, no bench user replaced, the real one kept"
    );
    assert_eq!(
        tokens(store).await.len(),
        2,
        "a refused put ends no session"
    );
}

/// `purge_bench_users` deletes the bench users and exactly what is theirs, in every table: their
/// sessions; private messages from, to and between them (local, from a peer, queued for a peer,
/// a post on its way to a group homed on a peer); their group messages and memberships; the
/// groups left with no member (whole: messages, feeds; a replica too), which can then be
/// created again from scratch (`seq` 1 again). Real users' data stays as it was, `seq`s and
/// all; a group a bench user created that keeps a real member stays, created by no one.
pub async fn check_purge_bench_users<S: Storage>(store: &S) {
    for name in ["amy", "bob"] {
        ok(
            store.add_user(user(name, &format!("{name}-hash"))).await,
            "add_user",
        );
    }
    ok(
        store
            .put_bench_users(vec![user("b0", "h0"), user("b1", "h1")])
            .await,
        "put_bench_users",
    );
    for (n, who) in [(1, "amy"), (2, "b0"), (3, "b1")] {
        ok(
            store
                .insert_token(TokenRecord {
                    hash: [n; 32],
                    user: who.into(),
                })
                .await,
            "insert_token",
        );
    }
    // Private messages: real and real, bench and bench, real and bench both ways, from a peer
    // to a bench user and to a real one, queued for the peer by each kind of user.
    send(store, "amy", "bob", "real 1").await;
    send(store, "b0", "b1", "bench to bench").await;
    send(store, "amy", "b0", "real to bench").await;
    send(store, "b1", "bob", "bench to real").await;
    send(store, "bob", "amy", "real 2").await;
    ok(
        store
            .receive(vec![
                message("zed@far", "b0", "afar to bench"),
                message("zed@far", "bob", "afar to real"),
            ])
            .await,
        "receive",
    );
    for (kind, from, to, body) in [
        (MessageKind::Private, "b0", "zed@far", "bench out"),
        (MessageKind::Private, "amy", "zed@far", "real out"),
        (MessageKind::GroupPost, "b1", "g@far", "bench post"),
        (MessageKind::GroupPost, "amy", "g@far", "real post"),
    ] {
        ok(
            store
                .enqueue("far", kind, vec![message(from, to, body)])
                .await,
            "enqueue",
        );
    }
    // b1 read their inbox; bob's is read (a store may keep it in memory from here on).
    let b1_inbox = ok(store.pending("b1", 100, usize::MAX).await, "pending");
    let b1_last = b1_inbox.messages.last().map_or(0, |m| m.seq);
    ok(store.mark_delivered("b1", b1_last).await, "mark_delivered");
    assert_eq!(
        bodies_arc(&ok(store.pending("bob", 100, usize::MAX).await, "pending")),
        ["real 1", "bench to real", "afar to real"],
        "bob's inbox before the purge"
    );
    // Groups: bench users only (fed to a peer), mixed, made by a bench user but with a real
    // member, real users only (fed too), and a replica only a bench user is in.
    for (group, who) in [
        ("benchonly", "b0"),
        ("benchonly", "b1"),
        ("mixed", "amy"),
        ("mixed", "b0"),
        ("mixed", "bob"),
        ("benchmade", "b1"),
        ("benchmade", "amy"),
        ("realonly", "amy"),
        ("realonly", "bob"),
    ] {
        ok(store.join_group(group, "here", who).await, "join_group");
    }
    for (group, from) in [
        ("benchonly", "b0"),
        ("benchonly", "b1"),
        ("benchonly", "b0"),
        ("mixed", "amy"),
        ("mixed", "b0"),
        ("mixed", "bob"),
        ("mixed", "b0"),
        ("mixed", "amy"),
        ("benchmade", "b1"),
        ("realonly", "bob"),
    ] {
        ok(
            store
                .insert_group_messages(vec![group_message(group, from, from)], nothing())
                .await,
            "insert_group_messages",
        );
    }
    ok(
        store
            .advance_cursors(vec![
                cursor("benchonly", "b0", 3),
                cursor("mixed", "bob", 2),
            ])
            .await,
        "advance_cursors",
    );
    for group in ["benchonly", "realonly"] {
        ok(store.open_feed("far", group, 0).await, "open_feed");
    }
    ok(
        store.join_replica("r@far", "far", "b0", 0).await,
        "join_replica",
    );
    let replicated = ok(
        store
            .store_replica(
                "far",
                vec![replica_message("r@far", 1, "zed@far", "replicated")],
                HashSet::new(),
                nothing(),
            )
            .await,
        "store_replica",
    );
    assert_eq!(
        replicated.acks,
        [gc("r@far", 1)],
        "the replica's message is stored"
    );
    // What is real, as it reads before the purge.
    let real_history = ok(
        store
            .conversation("amy", "bob", window(100, None, usize::MAX))
            .await,
        "history",
    );
    let mixed = ok(
        store.group_messages("mixed", 0, 100, usize::MAX).await,
        "group_messages",
    );
    let realonly = ok(
        store.group_messages("realonly", 0, 100, usize::MAX).await,
        "group_messages",
    );
    let amy_inbox = ok(store.pending("amy", 100, usize::MAX).await, "pending");

    let purge = ok(store.purge_bench_users().await, "purge_bench_users");
    assert_eq!(
        purge,
        BenchPurge {
            users: vec!["b0".into(), "b1".into()],
            // bench to bench, real to bench, bench to real, afar to bench, bench out, bench post.
            private_messages: 6,
            // benchonly's 3, mixed's 2 of b0, benchmade's 1 of b1, and r@far's 1 (gone whole).
            group_messages: 7,
            groups: vec!["benchonly".into(), "r@far".into()],
        },
        "what the purge says it deleted"
    );
    assert_eq!(
        ok(store.list_users().await, "list_users"),
        [user("amy", "amy-hash"), user("bob", "bob-hash")],
        "the bench users are gone, the real ones as they were"
    );
    assert_eq!(
        tokens(store).await,
        [TokenRecord {
            hash: [1; 32],
            user: "amy".into()
        }],
        "the bench users' sessions are gone, the real ones' stay"
    );
    // Private messages.
    assert_eq!(
        ok(
            store
                .conversation("amy", "bob", window(100, None, usize::MAX))
                .await,
            "history",
        ),
        real_history,
        "real users' history is untouched, seqs and all"
    );
    assert_eq!(
        bodies(&real_history),
        ["real 1", "real 2"],
        "real users' history"
    );
    for (a, b) in [
        ("b0", "b1"),
        ("amy", "b0"),
        ("b1", "bob"),
        ("zed@far", "b0"),
        ("b0", "zed@far"),
    ] {
        let page = ok(
            store
                .conversation(a, b, window(100, None, usize::MAX))
                .await,
            "history",
        );
        assert!(
            page.messages.is_empty(),
            "history of {a} and {b} is gone: {:?}",
            bodies(&page)
        );
    }
    assert_eq!(
        bodies_arc(&ok(store.pending("bob", 100, usize::MAX).await, "pending")),
        ["real 1", "afar to real"],
        "a bench user's message to a real user is gone from their inbox (even one read before)"
    );
    assert_eq!(
        ok(store.pending("amy", 100, usize::MAX).await, "pending"),
        amy_inbox,
        "a real user's inbox without bench messages is untouched"
    );
    for who in ["b0", "b1"] {
        assert!(
            ok(store.pending(who, 100, usize::MAX).await, "pending")
                .messages
                .is_empty(),
            "{who}'s inbox is gone"
        );
    }
    let out: Vec<String> = ok(store.outbox_after("far", 0, 100).await, "outbox_after")
        .into_iter()
        .map(|o| o.stored.message.body)
        .collect();
    assert_eq!(
        out,
        ["real out", "real post"],
        "the bench users' queued messages and posts are gone from the outbox, real ones stay"
    );
    assert_eq!(
        ok(store.outbox_counts().await, "outbox_counts"),
        HashMap::from([("far".to_owned(), 2)]),
        "outbox counts"
    );
    // Groups.
    assert_eq!(
        sorted_groups(store).await,
        [
            GroupRecord {
                name: "benchmade".into(),
                home: "here".into(),
                last_seq: 1,
                creator: None,
            },
            GroupRecord {
                name: "mixed".into(),
                home: "here".into(),
                last_seq: 5,
                creator: Some("amy".into()),
            },
            GroupRecord {
                name: "realonly".into(),
                home: "here".into(),
                last_seq: 1,
                creator: Some("amy".into()),
            },
        ],
        "groups left with no member are gone; one a bench user made stays, made by no one"
    );
    assert_eq!(
        memberships(store).await,
        [
            member("benchmade", "amy", 0),
            member("mixed", "amy", 0),
            member("mixed", "bob", 2),
            member("realonly", "amy", 0),
            member("realonly", "bob", 0),
        ],
        "only real users' memberships and read cursors stay"
    );
    let mixed_after = ok(
        store.group_messages("mixed", 0, 100, usize::MAX).await,
        "group_messages",
    );
    assert_eq!(
        mixed_after.messages,
        mixed
            .messages
            .iter()
            .filter(|m| m.message.sender != "b0")
            .cloned()
            .collect::<Vec<_>>(),
        "a mixed group keeps its real users' messages, seqs unchanged"
    );
    assert_eq!(
        mixed_after
            .messages
            .iter()
            .map(|m| m.seq)
            .collect::<Vec<_>>(),
        [1, 3, 5],
        "the real messages' seqs in the mixed group"
    );
    assert_eq!(
        ok(
            store
                .group_history("mixed", window(100, None, usize::MAX))
                .await,
            "group_history",
        )
        .messages,
        mixed_after.messages,
        "the mixed group's history is its real messages"
    );
    assert_eq!(
        ok(
            store.group_messages("realonly", 0, 100, usize::MAX).await,
            "group_messages",
        ),
        realonly,
        "a real group is untouched"
    );
    assert!(
        ok(
            store.group_messages("benchmade", 0, 100, usize::MAX).await,
            "group_messages",
        )
        .messages
        .is_empty(),
        "the bench user's message in the group they made is gone"
    );
    for group in ["benchonly", "r@far"] {
        assert!(
            ok(
                store.group_messages(group, 0, 100, usize::MAX).await,
                "group_messages"
            )
            .messages
            .is_empty(),
            "{group}'s messages are gone"
        );
    }
    assert_eq!(
        feeds(store, "far").await,
        [gc("realonly", 0)],
        "a deleted group's feed goes with it"
    );
    // The bench-only group starts again from scratch.
    let join = ok(
        store.join_group("benchonly", "here", "amy").await,
        "join_group",
    );
    assert_eq!(
        join,
        JoinOutcome {
            created: true,
            new_member: true,
            read_seq: 0
        },
        "a deleted group is created anew"
    );
    let again = ok(
        store
            .insert_group_messages(vec![group_message("benchonly", "amy", "anew")], nothing())
            .await,
        "insert_group_messages",
    );
    assert_eq!(again[0].seq, 1, "a group created anew starts at seq 1");
    assert_eq!(
        bodies_group(&ok(
            store.group_messages("benchonly", 0, 100, usize::MAX).await,
            "group_messages"
        )),
        ["anew"],
        "nothing of the deleted group shows in the new one"
    );
    // A bench user's name is free again; sends go on after the purge.
    ok(
        store.put_bench_users(vec![user("b0", "h0")]).await,
        "put_bench_users after the purge",
    );
    let next = send(store, "amy", "bob", "real 3").await;
    assert!(
        next.seq > real_history.messages.last().map_or(0, |m| m.seq),
        "seqs go on increasing after a purge"
    );
    assert_eq!(
        bodies(&ok(
            store
                .conversation("amy", "bob", window(100, None, usize::MAX))
                .await,
            "history",
        )),
        ["real 1", "real 2", "real 3"],
        "history after the purge"
    );
}

/// With no bench user, `purge_bench_users` deletes nothing and says so.
pub async fn check_purge_without_bench_users<S: Storage>(store: &S) {
    ok(store.add_user(user("amy", "amy-hash")).await, "add_user");
    ok(store.join_group("g", "here", "amy").await, "join_group");
    ok(store.leave_group("g", "amy").await, "leave_group");
    send(store, "amy", "bob", "hi").await;
    let before = snapshot(store).await;
    assert_eq!(
        ok(store.purge_bench_users().await, "purge_bench_users"),
        BenchPurge::default(),
        "a purge without bench users"
    );
    assert_eq!(
        snapshot(store).await,
        before,
        "a purge without bench users changes nothing (not even a group with no member)"
    );
}

// ---------------------------------------------------------------------------------------------
// Groups

/// A join creates the group (recording its home and creator) or joins it; a new member's cursor
/// is the group's latest `seq`; a leave ends only the membership.
pub async fn check_groups_join_and_leave<S: Storage>(store: &S) {
    let amy = ok(store.join_group("g", "here", "amy").await, "join_group");
    assert_eq!(
        amy,
        JoinOutcome {
            created: true,
            new_member: true,
            read_seq: 0
        },
        "the first join creates the group"
    );
    assert_eq!(
        ok(store.groups().await, "groups"),
        [GroupRecord {
            name: "g".into(),
            home: "here".into(),
            last_seq: 0,
            creator: Some("amy".into())
        }],
        "the group as created: its home, no message yet, its creator"
    );
    let bob = ok(store.join_group("g", "here", "bob").await, "join_group");
    assert_eq!(
        bob,
        JoinOutcome {
            created: false,
            new_member: true,
            read_seq: 0
        },
        "a second member"
    );
    post(store, "g", "amy", 3).await;
    ok(
        store.advance_cursors(vec![cursor("g", "amy", 2)]).await,
        "advance_cursors",
    );
    let again = ok(store.join_group("g", "here", "amy").await, "join_group");
    assert_eq!(
        again,
        JoinOutcome {
            created: false,
            new_member: false,
            read_seq: 2
        },
        "joining again changes nothing and tells the member's cursor"
    );
    let cat = ok(store.join_group("g", "here", "cat").await, "join_group");
    assert_eq!(
        cat,
        JoinOutcome {
            created: false,
            new_member: true,
            read_seq: 3
        },
        "a new member starts at the group's latest seq: what came before is history"
    );
    assert_eq!(
        memberships(store).await,
        [
            member("g", "amy", 2),
            member("g", "bob", 0),
            member("g", "cat", 3)
        ],
        "memberships"
    );
    assert!(
        ok(store.leave_group("g", "bob").await, "leave_group"),
        "leaving a group one is in"
    );
    assert!(
        !ok(store.leave_group("g", "bob").await, "leave_group"),
        "leaving it again: not a member"
    );
    assert!(
        !ok(store.leave_group("nosuch", "bob").await, "leave_group"),
        "leaving no group"
    );
    assert!(
        ok(store.leave_group("g", "amy").await, "leave_group"),
        "leave"
    );
    assert!(
        ok(store.leave_group("g", "cat").await, "leave_group"),
        "leave"
    );
    assert!(memberships(store).await.is_empty(), "everyone left");
    let groups = ok(store.groups().await, "groups");
    assert_eq!(groups.len(), 1, "the group stays when everyone left");
    assert_eq!(
        (groups[0].last_seq, groups[0].creator.as_deref()),
        (3, Some("amy")),
        "and keeps its seq and creator"
    );
    let history = ok(
        store.group_history("g", window(10, None, usize::MAX)).await,
        "group_history",
    );
    assert_eq!(history.messages.len(), 3, "and its history");
    let back = ok(store.join_group("g", "here", "bob").await, "join_group");
    assert_eq!(
        back,
        JoinOutcome {
            created: false,
            new_member: true,
            read_seq: 3
        },
        "rejoining is a new membership"
    );
    let other = ok(store.join_group("h", "here", "bob").await, "join_group");
    assert!(
        other.created && other.new_member && other.read_seq == 0,
        "another group: {other:?}"
    );
    let creators: Vec<Option<String>> = sorted_groups(store)
        .await
        .into_iter()
        .map(|g| g.creator)
        .collect();
    assert_eq!(
        creators,
        [Some("amy".into()), Some("bob".into())],
        "each group's creator"
    );
}

/// Group `seq`s are 1, 2, 3, … per group with no gap across calls, each published once, in
/// order, before its call returns; a retried id is skipped (no `seq` used); a call naming a
/// group that does not exist fails and stores nothing.
pub async fn check_group_seqs_gap_free<S: Storage>(store: &S) {
    ok(store.join_group("g", "here", "amy").await, "join_group");
    ok(store.join_group("h", "here", "amy").await, "join_group");
    let log = Log::default();
    let mut seqs = Vec::new();
    for call in 0..3 {
        let batch = (0..3)
            .map(|i| group_message("g", "amy", &format!("{call}-{i}")))
            .collect();
        let stored = ok(
            store.insert_group_messages(batch, log.hook()).await,
            "insert_group_messages",
        );
        assert_eq!(
            log.seqs("g").len(),
            seqs.len() + 3,
            "a call's messages are published before it returns"
        );
        seqs.extend(stored.iter().map(|m| m.seq));
    }
    assert_eq!(
        seqs,
        (1..=9).collect::<Vec<_>>(),
        "seqs 1..9 over three calls, no gap"
    );
    let mixed = vec![
        group_message("h", "amy", "h1"),
        group_message("g", "amy", "g10"),
        group_message("h", "amy", "h2"),
    ];
    let stored = ok(
        store.insert_group_messages(mixed.clone(), log.hook()).await,
        "insert_group_messages",
    );
    let got: Vec<(String, i64)> = stored
        .iter()
        .map(|m| (m.message.group.clone(), m.seq))
        .collect();
    assert_eq!(
        got,
        [("h".into(), 1), ("g".into(), 10), ("h".into(), 2)],
        "each group has its own seqs"
    );
    for (s, m) in stored.iter().zip(&mixed) {
        assert_eq!(&s.message, m, "stored as given, in the call's order");
    }
    assert_eq!(
        log.seqs("g"),
        (1..=10).collect::<Vec<_>>(),
        "g published once each, in order"
    );
    assert_eq!(log.seqs("h"), [1, 2], "h published once each, in order");

    // A retry of a stored id: skipped, not published, no seq taken.
    let retry = mixed[1].clone();
    let fresh = group_message("g", "amy", "g11");
    let stored = ok(
        store
            .insert_group_messages(vec![retry, fresh.clone(), fresh.clone()], log.hook())
            .await,
        "insert_group_messages",
    );
    assert_eq!(
        stored.len(),
        1,
        "a stored id (or one twice in a call) is a retry, stored once"
    );
    assert_eq!(
        (stored[0].seq, &stored[0].message),
        (11, &fresh),
        "the new one takes the next seq"
    );
    assert_eq!(
        log.seqs("g"),
        (1..=11).collect::<Vec<_>>(),
        "a retry is not published again"
    );

    // All or nothing.
    let broken = vec![
        group_message("g", "amy", "lost"),
        group_message("nosuch", "amy", "x"),
    ];
    let r = store.insert_group_messages(broken, log.hook()).await;
    assert!(
        r.is_err(),
        "a message for a group that does not exist fails the call: {r:?}"
    );
    assert_eq!(log.seqs("g").len(), 11, "a failed call publishes nothing");
    let page = ok(
        store.group_messages("g", 0, 100, usize::MAX).await,
        "group_messages",
    );
    assert_eq!(
        page.messages.len(),
        11,
        "a failed call stores nothing, not even its valid messages"
    );
    let next = ok(
        store
            .insert_group_messages(vec![group_message("g", "amy", "g12")], log.hook())
            .await,
        "insert_group_messages",
    );
    assert_eq!(next[0].seq, 12, "a failed call takes no seq");
    let groups = sorted_groups(store).await;
    assert_eq!(
        groups
            .iter()
            .map(|g| (g.name.as_str(), g.last_seq))
            .collect::<Vec<_>>(),
        [("g", 12), ("h", 2)],
        "each group's last_seq"
    );
}

/// Concurrent callers posting to the same groups: seqs stay gap-free, each call's messages get
/// consecutive seqs, and every message is published once, in `seq` order per group, before its
/// call returns.
pub async fn check_concurrent_group_posts<S: Storage>(store: &S) {
    const TASKS: usize = 8;
    const CALLS: usize = 10;
    for g in ["g", "h"] {
        ok(store.join_group(g, "here", "amy").await, "join_group");
    }
    let log = Log::default();
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let (store, log) = (store.clone(), log.clone());
        tasks.push(tokio::spawn(async move {
            for c in 0..CALLS {
                // Three to g and one to h, interleaved.
                let batch = vec![
                    group_message("g", "amy", &format!("{t}-{c}-0")),
                    group_message("h", "amy", &format!("{t}-{c}-h")),
                    group_message("g", "amy", &format!("{t}-{c}-1")),
                    group_message("g", "amy", &format!("{t}-{c}-2")),
                ];
                let stored = ok(
                    store.insert_group_messages(batch, log.hook()).await,
                    "insert_group_messages",
                );
                let g: Vec<i64> = stored
                    .iter()
                    .filter(|m| m.message.group == "g")
                    .map(|m| m.seq)
                    .collect();
                assert!(
                    g.len() == 3 && g[1] == g[0] + 1 && g[2] == g[1] + 1,
                    "one call's messages to a group take consecutive seqs: {g:?}"
                );
                let published = log.ids();
                assert!(
                    stored.iter().all(|m| published.contains(&m.message.id)),
                    "a call's messages are published before it returns"
                );
            }
        }));
    }
    for t in tasks {
        t.await.expect("a posting task panicked");
    }
    let (g, h) = (TASKS * CALLS * 3, TASKS * CALLS);
    assert_eq!(
        log.seqs("g"),
        (1..=g as i64).collect::<Vec<_>>(),
        "g: every seq published once, in seq order"
    );
    assert_eq!(
        log.seqs("h"),
        (1..=h as i64).collect::<Vec<_>>(),
        "h: every seq published once, in seq order"
    );
    let page = ok(
        store.group_messages("g", 0, 10_000, usize::MAX).await,
        "group_messages",
    );
    assert_eq!(
        page.messages.iter().map(|m| m.seq).collect::<Vec<_>>(),
        (1..=g as i64).collect::<Vec<_>>(),
        "g's stored seqs: gap-free"
    );
    let published: Vec<Uuid> = log
        .take()
        .into_iter()
        .filter(|m| m.message.group == "g")
        .map(|m| m.message.id)
        .collect();
    assert_eq!(
        page.messages
            .iter()
            .map(|m| m.message.id)
            .collect::<Vec<_>>(),
        published,
        "each message was published under the seq it is stored with"
    );
}

/// `group_messages` reads after a `seq`, by count and bytes; `group_history` reads the newest
/// before a `seq`, by count and bytes; neither mixes groups.
pub async fn check_group_reads<S: Storage>(store: &S) {
    for g in ["g", "h"] {
        ok(store.join_group(g, "here", "amy").await, "join_group");
    }
    for i in 1..=10 {
        // 10 bytes each.
        let batch = vec![
            group_message("g", "amy", &format!("g{i:02}-xxxxxx")),
            group_message("h", "amy", "h"),
        ];
        ok(
            store.insert_group_messages(batch, nothing()).await,
            "insert_group_messages",
        );
    }
    let seqs = |p: &Page<StoredGroupMessage>| p.messages.iter().map(|m| m.seq).collect::<Vec<_>>();
    let range = |a: i64, b: i64| (a..=b).collect::<Vec<_>>();
    let read = |after, limit, bytes| store.group_messages("g", after, limit, bytes);
    let page = ok(read(0, 100, usize::MAX).await, "group_messages");
    assert_eq!(seqs(&page), range(1, 10), "every message of g, in order");
    assert!(
        page.messages.iter().all(|m| m.message.group == "g"),
        "only g's"
    );
    assert!(!page.cut, "not cut");
    assert_eq!(bodies_group(&page)[0], "g01-xxxxxx", "stored as given");
    let page = ok(read(3, 4, usize::MAX).await, "group_messages");
    assert_eq!(seqs(&page), range(4, 7), "after 3, at most 4");
    assert!(!page.cut, "ended by its count: not cut");
    let page = ok(read(0, 100, 25).await, "group_messages");
    assert_eq!(seqs(&page), range(1, 2), "25 bytes hold two");
    assert!(page.cut, "bytes left some out: cut");
    let page = ok(read(0, 100, 0).await, "group_messages");
    assert_eq!(seqs(&page), [1], "the first whatever its size");
    assert!(page.cut, "cut");
    let page = ok(read(9, 100, 0).await, "group_messages");
    assert_eq!(seqs(&page), [10], "the last one");
    assert!(!page.cut, "nothing left out: not cut");
    let page = ok(read(10, 100, usize::MAX).await, "group_messages");
    assert!(
        page.messages.is_empty() && !page.cut,
        "nothing after the last"
    );
    let page = ok(
        store.group_messages("nosuch", 0, 100, usize::MAX).await,
        "group_messages",
    );
    assert!(page.messages.is_empty(), "no group: nothing");

    let history = |limit, before, bytes| store.group_history("g", window(limit, before, bytes));
    let page = ok(history(3, None, usize::MAX).await, "group_history");
    assert_eq!(seqs(&page), range(8, 10), "the newest 3, oldest first");
    assert!(!page.cut, "ended by its count: not cut");
    let page = ok(history(3, Some(8), usize::MAX).await, "group_history");
    assert_eq!(seqs(&page), range(5, 7), "the 3 before 8");
    let page = ok(history(3, Some(1), usize::MAX).await, "group_history");
    assert!(page.messages.is_empty(), "nothing before the first");
    let page = ok(history(100, None, 25).await, "group_history");
    assert_eq!(seqs(&page), range(9, 10), "25 bytes hold the newest two");
    assert!(page.cut, "cut");
    let page = ok(history(100, None, 0).await, "group_history");
    assert_eq!(seqs(&page), [10], "the newest whatever its size");
    assert!(page.cut, "cut");
    let page = ok(history(100, None, usize::MAX).await, "group_history");
    assert_eq!(seqs(&page), range(1, 10), "the whole history");
    assert!(!page.cut, "not cut");
    let page = ok(
        store
            .group_history("h", window(100, None, usize::MAX))
            .await,
        "group_history",
    );
    assert_eq!(seqs(&page), range(1, 10), "h's own seqs");
    assert!(
        page.messages.iter().all(|m| m.message.group == "h"),
        "only h's"
    );
}

/// Read cursors move forward only, and only for members.
pub async fn check_advance_cursors<S: Storage>(store: &S) {
    for u in ["amy", "bob"] {
        ok(store.join_group("g", "here", u).await, "join_group");
    }
    post(store, "g", "amy", 5).await;
    ok(
        store
            .advance_cursors(vec![cursor("g", "amy", 3), cursor("g", "bob", 2)])
            .await,
        "advance_cursors",
    );
    assert_eq!(
        memberships(store).await,
        [member("g", "amy", 3), member("g", "bob", 2)],
        "cursors moved"
    );
    ok(
        store.advance_cursors(vec![cursor("g", "amy", 1)]).await,
        "advance_cursors",
    );
    assert_eq!(
        memberships(store).await[0],
        member("g", "amy", 3),
        "a read cursor never moves back"
    );
    ok(
        store
            .advance_cursors(vec![cursor("g", "cat", 4), cursor("nosuch", "amy", 4)])
            .await,
        "advance_cursors",
    );
    assert_eq!(
        memberships(store).await.len(),
        2,
        "a cursor of no member makes no membership"
    );
    ok(store.leave_group("g", "bob").await, "leave_group");
    ok(
        store
            .advance_cursors(vec![cursor("g", "bob", 5), cursor("g", "amy", 5)])
            .await,
        "advance_cursors",
    );
    assert_eq!(
        memberships(store).await,
        [member("g", "amy", 5)],
        "a left member stays gone"
    );
    ok(
        store.advance_cursors(Vec::new()).await,
        "advance_cursors of none",
    );
}

// ---------------------------------------------------------------------------------------------
// Federation

/// The outbox: increasing `seq`s in commit order, per peer, read after a `seq` with a limit,
/// kinds kept, counted per peer; an outgoing private message is in its sender's history and in
/// no inbox here.
pub async fn check_outbox<S: Storage>(store: &S) {
    let p = |body: &str| message("amy", "bob@far", body);
    let first = ok(
        store
            .enqueue("far", MessageKind::Private, vec![p("p0"), p("p1")])
            .await,
        "enqueue",
    );
    let post = ok(
        store
            .enqueue(
                "far",
                MessageKind::GroupPost,
                vec![message("amy", "g@far", "g0")],
            )
            .await,
        "enqueue",
    );
    let near = ok(
        store
            .enqueue(
                "near",
                MessageKind::Private,
                vec![message("amy", "cat@near", "n0")],
            )
            .await,
        "enqueue",
    );
    let last = ok(
        store
            .enqueue("far", MessageKind::Private, vec![p("p2")])
            .await,
        "enqueue",
    );
    assert_eq!(
        first
            .iter()
            .map(|m| m.message.body.as_str())
            .collect::<Vec<_>>(),
        ["p0", "p1"],
        "enqueue returns its messages in order"
    );
    assert_eq!(
        first[0].message,
        p("p0").with_id(first[0].message.id),
        "enqueue returns what it stored"
    );
    let far: Vec<StoredMessage> = first.iter().chain(&post).chain(&last).cloned().collect();
    assert_increasing(
        first
            .iter()
            .chain(&post)
            .chain(&near)
            .chain(&last)
            .map(|m| m.seq),
        "outbox seqs, in commit order",
    );
    let out = ok(store.outbox_after("far", 0, 100).await, "outbox_after");
    assert_eq!(
        out.iter().map(|o| o.stored.clone()).collect::<Vec<_>>(),
        far,
        "far's outbox, in commit order, as enqueued"
    );
    assert_eq!(
        out.iter().map(|o| o.kind).collect::<Vec<_>>(),
        [
            MessageKind::Private,
            MessageKind::Private,
            MessageKind::GroupPost,
            MessageKind::Private
        ],
        "each entry's kind as enqueued"
    );
    let out = ok(store.outbox_after("far", 0, 2).await, "outbox_after");
    assert_eq!(
        out.iter().map(|o| o.stored.seq).collect::<Vec<_>>(),
        [far[0].seq, far[1].seq],
        "the oldest 2"
    );
    let out = ok(
        store.outbox_after("far", far[1].seq, 100).await,
        "outbox_after",
    );
    assert_eq!(
        out.iter().map(|o| o.stored.seq).collect::<Vec<_>>(),
        [far[2].seq, far[3].seq],
        "after the second"
    );
    assert!(
        ok(
            store.outbox_after("far", far[3].seq, 100).await,
            "outbox_after"
        )
        .is_empty(),
        "after the last: nothing"
    );
    let out = ok(store.outbox_after("near", 0, 100).await, "outbox_after");
    assert_eq!(
        out.iter().map(|o| o.stored.clone()).collect::<Vec<_>>(),
        near,
        "near's outbox, its own"
    );
    assert!(
        ok(store.outbox_after("nowhere", 0, 100).await, "outbox_after").is_empty(),
        "no such peer: nothing"
    );
    let counts = ok(store.outbox_counts().await, "outbox_counts");
    assert_eq!(
        counts,
        HashMap::from([("far".into(), 4), ("near".into(), 1)]),
        "outbox_counts"
    );
    for who in ["amy", "bob@far", "bob", "g@far"] {
        let inbox = ok(store.pending(who, 100, usize::MAX).await, "pending");
        assert!(
            inbox.messages.is_empty(),
            "an outgoing message is in no inbox here ({who}'s)"
        );
    }
    let history = ok(
        store
            .conversation("amy", "bob@far", window(100, None, usize::MAX))
            .await,
        "history",
    );
    assert_eq!(
        bodies(&history),
        ["p0", "p1", "p2"],
        "an outgoing private message is in its sender's history"
    );
}

/// `enqueue` is all or none: an id this realm has stored from or for a link fails the call, and
/// nothing of it is stored.
pub async fn check_enqueue_all_or_none<S: Storage>(store: &S) {
    let stored = ok(
        store
            .enqueue(
                "far",
                MessageKind::Private,
                vec![message("amy", "bob@far", "one")],
            )
            .await,
        "enqueue",
    );
    let reused = stored[0].message.clone();
    let batch = vec![message("amy", "bob@far", "two"), reused];
    let r = store.enqueue("far", MessageKind::Private, batch).await;
    assert!(r.is_err(), "enqueueing an id stored already fails: {r:?}");
    let out = ok(store.outbox_after("far", 0, 100).await, "outbox_after");
    assert_eq!(
        out.len(),
        1,
        "a failed enqueue leaves nothing in the outbox: {out:?}"
    );
    let history = ok(
        store
            .conversation("amy", "bob@far", window(100, None, usize::MAX))
            .await,
        "history",
    );
    assert_eq!(
        bodies(&history),
        ["one"],
        "a failed enqueue leaves nothing in history"
    );
    let incoming = message("zed@far", "amy", "in");
    assert_eq!(
        ok(store.receive(vec![incoming.clone()]).await, "receive"),
        1,
        "receive"
    );
    let r = store
        .enqueue("far", MessageKind::Private, vec![incoming])
        .await;
    assert!(
        r.is_err(),
        "enqueueing the id of a received message fails: {r:?}"
    );
    assert_eq!(
        ok(store.outbox_counts().await, "outbox_counts").get("far"),
        Some(&1),
        "still one waiting"
    );
}

/// `settle` removes answered messages (only from that peer's outbox); settling again changes
/// nothing; a bounce notice reaches the sender's inbox once, however often it is settled.
pub async fn check_settle<S: Storage>(store: &S) {
    let batch = (0..3)
        .map(|i| message("amy", "bob@far", &format!("p{i}")))
        .collect();
    let out = ok(
        store.enqueue("far", MessageKind::Private, batch).await,
        "enqueue",
    );
    let acked = |m: &StoredMessage| Settled {
        seq: m.seq,
        id: m.message.id,
        bounce: None,
    };
    let waiting = |store: &S| {
        let store = store.clone();
        async move {
            ok(store.outbox_after("far", 0, 100).await, "outbox_after")
                .into_iter()
                .map(|o| o.stored.message.body)
                .collect::<Vec<_>>()
        }
    };
    ok(store.settle("far", vec![acked(&out[0])]).await, "settle");
    assert_eq!(
        waiting(store).await,
        ["p1", "p2"],
        "an acknowledged message leaves the outbox"
    );
    ok(store.settle("far", vec![acked(&out[0])]).await, "settle");
    assert_eq!(
        waiting(store).await,
        ["p1", "p2"],
        "settling it again changes nothing"
    );
    ok(store.settle("near", vec![acked(&out[1])]).await, "settle");
    assert_eq!(
        waiting(store).await,
        ["p1", "p2"],
        "settling on another peer leaves this outbox alone"
    );
    assert_eq!(
        ok(store.outbox_counts().await, "outbox_counts").get("far"),
        Some(&2),
        "outbox_counts"
    );

    let notice = |body: &str| message("postmaster@far", "amy", body);
    let bounced = Settled {
        seq: out[1].seq,
        id: out[1].message.id,
        bounce: Some(notice("bounced p1")),
    };
    ok(store.settle("far", vec![bounced.clone()]).await, "settle");
    assert_eq!(
        waiting(store).await,
        ["p2"],
        "a bounced message leaves the outbox"
    );
    let inbox = ok(store.pending("amy", 100, usize::MAX).await, "pending");
    assert_eq!(
        bodies_arc(&inbox),
        ["bounced p1"],
        "the bounce notice is in the sender's inbox"
    );
    ok(store.settle("far", vec![bounced]).await, "settle");
    // After a reconnect the link bounces it again, with a notice of a new id.
    let again = Settled {
        seq: out[1].seq,
        id: out[1].message.id,
        bounce: Some(notice("bounced p1 again")),
    };
    ok(store.settle("far", vec![again]).await, "settle");
    let inbox = ok(store.pending("amy", 100, usize::MAX).await, "pending");
    assert_eq!(
        bodies_arc(&inbox),
        ["bounced p1"],
        "a bounce settled again is not written again"
    );
    ok(
        store
            .settle(
                "far",
                vec![
                    acked(&out[2]),
                    Settled {
                        seq: 1_000_000,
                        id: Uuid::now_v7(),
                        bounce: None,
                    },
                ],
            )
            .await,
        "settle",
    );
    assert!(waiting(store).await.is_empty(), "everything settled");
    let counts = ok(store.outbox_counts().await, "outbox_counts");
    assert_eq!(
        counts.get("far").copied().unwrap_or(0),
        0,
        "an empty outbox counts nothing: {counts:?}"
    );
    ok(store.settle("far", Vec::new()).await, "settle of none");
}

/// `receive` stores each id once: a retry in a later call or twice in one call is skipped, and
/// so is the id of a message this realm enqueued.
pub async fn check_receive_dedupes<S: Storage>(store: &S) {
    let x = message("zed@far", "bob", "x");
    let y = message("zed@far", "bob", "y");
    let z = message("zed@far", "bob", "z");
    assert_eq!(
        ok(store.receive(vec![x.clone()]).await, "receive"),
        1,
        "a new message"
    );
    assert_eq!(
        ok(store.receive(vec![x.clone()]).await, "receive"),
        0,
        "the same id again is a retry"
    );
    assert_eq!(
        ok(store.receive(vec![y.clone(), y.clone()]).await, "receive"),
        1,
        "twice in one call: once"
    );
    assert_eq!(
        ok(store.receive(vec![x, z]).await, "receive"),
        1,
        "a retry beside a new one"
    );
    let inbox = ok(store.pending("bob", 100, usize::MAX).await, "pending");
    assert_eq!(
        bodies_arc(&inbox),
        ["x", "y", "z"],
        "each received message once, in order"
    );
    assert_eq!(inbox.messages[1].message, y, "stored as received");
    let history = ok(
        store
            .conversation("bob", "zed@far", window(100, None, usize::MAX))
            .await,
        "history",
    );
    assert_eq!(
        bodies(&history),
        ["x", "y", "z"],
        "received messages are in history"
    );
    let out = ok(
        store
            .enqueue(
                "far",
                MessageKind::Private,
                vec![message("bob", "zed@far", "mine")],
            )
            .await,
        "enqueue",
    );
    let echo = NewMessage {
        recipient: "bob".into(),
        ..out[0].message.clone()
    };
    assert_eq!(
        ok(store.receive(vec![echo]).await, "receive"),
        0,
        "the id of an enqueued message is a duplicate"
    );
    assert_eq!(
        ok(store.receive(Vec::new()).await, "receive"),
        0,
        "receiving none"
    );
    assert_eq!(
        ok(store.pending("bob", 100, usize::MAX).await, "pending")
            .messages
            .len(),
        3,
        "bob's inbox"
    );
}

/// Feeds: opened once (a second open changes nothing), acknowledged forward only, per peer.
pub async fn check_feeds<S: Storage>(store: &S) {
    ok(store.open_feed("far", "g", 5).await, "open_feed");
    assert_eq!(feeds(store, "far").await, [gc("g", 5)], "an opened feed");
    ok(store.open_feed("far", "g", 9).await, "open_feed");
    ok(store.open_feed("far", "g", 1).await, "open_feed");
    assert_eq!(
        feeds(store, "far").await,
        [gc("g", 5)],
        "opening a fed group again changes nothing"
    );
    ok(store.open_feed("far", "h", 0).await, "open_feed");
    ok(store.open_feed("near", "g", 2).await, "open_feed");
    ok(
        store.ack_feeds("far", vec![gc("g", 7), gc("h", 3)]).await,
        "ack_feeds",
    );
    assert_eq!(
        feeds(store, "far").await,
        [gc("g", 7), gc("h", 3)],
        "acknowledged"
    );
    ok(store.ack_feeds("far", vec![gc("g", 6)]).await, "ack_feeds");
    assert_eq!(
        feeds(store, "far").await,
        [gc("g", 7), gc("h", 3)],
        "a feed cursor never moves back"
    );
    assert_eq!(
        feeds(store, "near").await,
        [gc("g", 2)],
        "another peer's feed is its own"
    );
    assert!(
        feeds(store, "nowhere").await.is_empty(),
        "no feeds to an unknown peer"
    );
    ok(
        store.ack_feeds("far", Vec::new()).await,
        "ack_feeds of none",
    );
}

/// `join_replica` creates the replica at the member's read cursor, or joins it; a second member
/// does not move the replica.
pub async fn check_join_replica<S: Storage>(store: &S) {
    assert!(
        ok(
            store.join_replica("g@far", "far", "amy", 5).await,
            "join_replica"
        ),
        "a new member"
    );
    assert_eq!(
        ok(store.groups().await, "groups"),
        [GroupRecord {
            name: "g@far".into(),
            home: "far".into(),
            last_seq: 5,
            creator: None
        }],
        "the replica starts at the read cursor, homed on the peer, created by no one"
    );
    assert!(
        !ok(
            store.join_replica("g@far", "far", "amy", 9).await,
            "join_replica"
        ),
        "a member already"
    );
    assert!(
        ok(
            store.join_replica("g@far", "far", "bob", 7).await,
            "join_replica"
        ),
        "a second member"
    );
    assert_eq!(
        sorted_groups(store).await[0].last_seq,
        5,
        "a second join does not move the replica"
    );
    assert_eq!(
        memberships(store).await,
        [member("g@far", "amy", 5), member("g@far", "bob", 7)],
        "each member with the read cursor it joined at"
    );
}

/// `store_replica` keeps each replica gap-free: the next `seq` is stored, a resend ignored, a
/// gap refused with the rest of that replica's messages (other replicas go on), an unknown
/// replica ignored, one being joined created at its first message; acks are each replica's
/// committed last `seq`; new messages are published once, in order, before the call returns.
pub async fn check_store_replica_order<S: Storage>(store: &S) {
    ok(
        store.join_replica("g@far", "far", "amy", 5).await,
        "join_replica",
    );
    let log = Log::default();
    let none = HashSet::new;
    let r = |group: &str, seq: i64, body: &str| replica_message(group, seq, "zed@far", body);
    let m6 = r("g@far", 6, "six");
    let m7 = r("g@far", 7, "seven");
    let out = ok(
        store
            .store_replica("far", vec![m6.clone(), m7.clone()], none(), log.hook())
            .await,
        "store_replica",
    );
    assert_eq!(
        out,
        outcome(&[("g@far", 7)], None, &[]),
        "the next seqs are stored and acknowledged"
    );
    assert_eq!(
        log.seqs("g@far"),
        [6, 7],
        "published in order before the call returns"
    );
    let page = ok(
        store.group_messages("g@far", 0, 100, usize::MAX).await,
        "group_messages",
    );
    assert_eq!(
        page.messages,
        [m6.clone(), m7.clone()],
        "stored under the home's seqs, as sent"
    );
    assert_eq!(
        sorted_groups(store).await[0].last_seq,
        7,
        "the replica's last seq"
    );

    let out = ok(
        store
            .store_replica(
                "far",
                vec![m6, m7, r("g@far", 8, "eight")],
                none(),
                log.hook(),
            )
            .await,
        "store_replica",
    );
    assert_eq!(
        out,
        outcome(&[("g@far", 8)], None, &[]),
        "a resend is ignored, the next one stored"
    );
    assert_eq!(
        log.seqs("g@far"),
        [6, 7, 8],
        "a resend is not published again"
    );

    ok(
        store.join_replica("h@far", "far", "bob", 0).await,
        "join_replica",
    );
    let batch = vec![
        r("g@far", 10, "ten"),
        r("g@far", 9, "nine"),
        r("h@far", 1, "h1"),
        r("h@far", 2, "h2"),
    ];
    let out = ok(
        store.store_replica("far", batch, none(), log.hook()).await,
        "store_replica",
    );
    assert!(
        out.refused.as_deref().is_some_and(|why| !why.is_empty()),
        "a gap is refused, with a reason: {out:?}"
    );
    assert_eq!(
        sorted_acks(&out),
        [gc("g@far", 8), gc("h@far", 2)],
        "acks: what each replica has committed"
    );
    assert!(out.ignored.is_empty(), "nothing ignored");
    let page = ok(
        store.group_messages("g@far", 8, 100, usize::MAX).await,
        "group_messages",
    );
    assert!(
        page.messages.is_empty(),
        "after a gap, the rest of that replica's messages are skipped, even one that would fit"
    );
    assert_eq!(
        log.seqs("h@far"),
        [1, 2],
        "another replica in the same batch goes on"
    );
    assert_eq!(
        log.seqs("g@far"),
        [6, 7, 8],
        "nothing of the refused replica is published"
    );

    let out = ok(
        store
            .store_replica("far", vec![r("x@far", 1, "x")], none(), log.hook())
            .await,
        "store_replica",
    );
    assert_eq!(
        out,
        outcome(&[], None, &["x@far"]),
        "a replica not kept here is ignored"
    );
    assert!(
        !sorted_groups(store).await.iter().any(|g| g.name == "x@far"),
        "an ignored replica is not created"
    );
    let joining: HashSet<String> = ["j@far".to_owned(), "g@far".to_owned()].into();
    let batch = vec![
        r("j@far", 4, "j4"),
        r("j@far", 5, "j5"),
        r("g@far", 9, "nine"),
    ];
    let out = ok(
        store.store_replica("far", batch, joining, log.hook()).await,
        "store_replica",
    );
    assert_eq!(
        sorted_acks(&out),
        [gc("g@far", 9), gc("j@far", 5)],
        "a replica being joined is created at its first message"
    );
    assert_eq!(out.refused, None, "nothing refused");
    let groups = sorted_groups(store).await;
    let j = groups
        .iter()
        .find(|g| g.name == "j@far")
        .expect("the joined replica is stored");
    assert_eq!(
        j,
        &GroupRecord {
            name: "j@far".into(),
            home: "far".into(),
            last_seq: 5,
            creator: None
        },
        "the replica created by its first message"
    );
    assert_eq!(
        ok(
            store.group_messages("j@far", 0, 100, usize::MAX).await,
            "group_messages"
        )
        .messages
        .iter()
        .map(|m| m.seq)
        .collect::<Vec<_>>(),
        [4, 5],
        "it starts at its first message"
    );
    assert_eq!(
        log.seqs("g@far"),
        [6, 7, 8, 9],
        "a kept replica in `joining` goes on where it was"
    );

    // An id stored already, in this replica, another, or a local group, is refused.
    ok(store.join_group("local", "here", "amy").await, "join_group");
    let local = ok(
        store
            .insert_group_messages(vec![group_message("local", "amy", "l")], nothing())
            .await,
        "insert_group_messages",
    );
    let stored6 = ok(
        store.group_messages("g@far", 5, 1, usize::MAX).await,
        "group_messages",
    )
    .messages[0]
        .clone();
    for reused in [stored6.message.id, local[0].message.id] {
        let mut m = r("h@far", 3, "reuse");
        m.message.id = reused;
        let out = ok(
            store
                .store_replica("far", vec![m], none(), log.hook())
                .await,
            "store_replica",
        );
        assert!(
            out.refused.is_some(),
            "a message reusing a stored id is refused: {out:?}"
        );
        assert_eq!(sorted_acks(&out), [gc("h@far", 2)], "and not acknowledged");
    }
    assert_eq!(log.seqs("h@far"), [1, 2], "nothing refused is published");
    let out = ok(
        store
            .store_replica("far", vec![r("h@far", 3, "h3")], none(), log.hook())
            .await,
        "store_replica",
    );
    assert_eq!(
        out,
        outcome(&[("h@far", 3)], None, &[]),
        "a refusal takes no seq: the home resends"
    );
    let out = ok(
        store
            .store_replica("far", Vec::new(), none(), log.hook())
            .await,
        "store_replica",
    );
    assert_eq!(out, ReplicaOutcome::default(), "nothing to store");
}

/// A replica's message attributed to one of our users (a sender without `@`) is stored only if
/// it is that user's own post to that group with the same text, still remembered from
/// `enqueue`: accepted once, then forgotten; a bounce forgets it too.
pub async fn check_store_replica_attribution<S: Storage>(store: &S) {
    ok(
        store.join_replica("g@far", "far", "amy", 0).await,
        "join_replica",
    );
    ok(
        store.join_replica("h@far", "far", "amy", 0).await,
        "join_replica",
    );
    let log = Log::default();
    let none = HashSet::new;
    let feed = |m: StoredGroupMessage| {
        let (store, log) = (store.clone(), log.clone());
        async move {
            ok(
                store
                    .store_replica("far", vec![m], HashSet::new(), log.hook())
                    .await,
                "store_replica",
            )
        }
    };
    let forged = replica_message("g@far", 1, "amy", "forged");
    let out = feed(forged).await;
    assert!(
        out.refused.is_some(),
        "a post in our user's name that they never sent is refused: {out:?}"
    );
    assert_eq!(sorted_acks(&out), [gc("g@far", 0)], "and not acknowledged");

    let post = |body: &str| message("amy", "g@far", body);
    let sent = ok(
        store
            .enqueue(
                "far",
                MessageKind::GroupPost,
                vec![post("mine"), post("hello"), post("elsewhere")],
            )
            .await,
        "enqueue",
    );
    let back = |i: usize, group: &str, seq: i64, sender: &str, body: &str| {
        let mut m = replica_message(group, seq, sender, body);
        m.message.id = sent[i].message.id;
        m
    };
    let out = feed(back(0, "g@far", 1, "amy", "mine")).await;
    assert_eq!(
        out,
        outcome(&[("g@far", 1)], None, &[]),
        "our user's own post, brought back by the home, is stored"
    );
    let out = feed(back(0, "g@far", 2, "amy", "mine")).await;
    assert!(
        out.refused.is_some(),
        "once back it is used up: the same post again, at a new seq, is refused: {out:?}"
    );
    let out = feed(back(1, "g@far", 2, "amy", "HELLO")).await;
    assert!(
        out.refused.is_some(),
        "our user's post with other text is refused: {out:?}"
    );
    let out = feed(back(1, "g@far", 2, "bob", "hello")).await;
    assert!(
        out.refused.is_some(),
        "our user's post in another user's name is refused: {out:?}"
    );
    let out = feed(back(2, "h@far", 1, "amy", "elsewhere")).await;
    assert!(
        out.refused.is_some(),
        "our user's post to another group is refused: {out:?}"
    );
    let out = feed(back(1, "g@far", 2, "amy", "hello")).await;
    assert_eq!(
        out,
        outcome(&[("g@far", 2)], None, &[]),
        "refused look-alikes did not use the post up"
    );
    let out = feed(back(2, "g@far", 3, "amy", "elsewhere")).await;
    assert_eq!(
        out,
        outcome(&[("g@far", 3)], None, &[]),
        "nor did one to the wrong group"
    );
    assert_eq!(
        log.seqs("g@far"),
        [1, 2, 3],
        "the accepted ones published, in order"
    );

    let bounced = ok(
        store
            .enqueue("far", MessageKind::GroupPost, vec![post("bounced")])
            .await,
        "enqueue",
    );
    let settled = Settled {
        seq: bounced[0].seq,
        id: bounced[0].message.id,
        bounce: Some(message("postmaster@far", "amy", "undeliverable")),
    };
    ok(store.settle("far", vec![settled]).await, "settle");
    let mut m = replica_message("g@far", 4, "amy", "bounced");
    m.message.id = bounced[0].message.id;
    let out = ok(
        store
            .store_replica("far", vec![m], none(), log.hook())
            .await,
        "store_replica",
    );
    assert!(
        out.refused.is_some(),
        "a bounced post is forgotten: the home cannot bring it back: {out:?}"
    );
    let acked = ok(
        store
            .enqueue("far", MessageKind::GroupPost, vec![post("acked")])
            .await,
        "enqueue",
    );
    ok(
        store
            .settle(
                "far",
                vec![Settled {
                    seq: acked[0].seq,
                    id: acked[0].message.id,
                    bounce: None,
                }],
            )
            .await,
        "settle",
    );
    let mut m = replica_message("g@far", 4, "amy", "acked");
    m.message.id = acked[0].message.id;
    let out = ok(
        store
            .store_replica("far", vec![m], none(), log.hook())
            .await,
        "store_replica",
    );
    assert_eq!(
        out,
        outcome(&[("g@far", 4)], None, &[]),
        "an acknowledged post is still remembered until it comes back"
    );
    assert_eq!(log.seqs("g@far"), [1, 2, 3, 4], "published in order");
}

// ---------------------------------------------------------------------------------------------
// Durability

/// What a store holds, read through the traits, for comparing before and after a reopen.
#[derive(Debug, PartialEq)]
struct Snapshot {
    users: Vec<UserRecord>,
    tokens: Vec<TokenRecord>,
    bob_inbox: Vec<StoredMessage>,
    history: Vec<StoredMessage>,
    groups: Vec<GroupRecord>,
    members: Vec<MemberRecord>,
    group_messages: BTreeMap<String, Vec<StoredGroupMessage>>,
    outbox: Vec<(StoredMessage, MessageKind)>,
    outbox_counts: HashMap<String, u64>,
    feeds: Vec<GroupCursor>,
}

async fn snapshot<S: Storage>(store: &S) -> Snapshot {
    let groups = sorted_groups(store).await;
    let mut group_messages = BTreeMap::new();
    for g in &groups {
        let page = ok(
            store.group_messages(&g.name, 0, 1000, usize::MAX).await,
            "group_messages",
        );
        group_messages.insert(g.name.clone(), page.messages);
    }
    Snapshot {
        users: ok(store.users().await, "users"),
        tokens: tokens(store).await,
        bob_inbox: ok(store.pending("bob", 1000, usize::MAX).await, "pending")
            .messages
            .iter()
            .map(|m| (**m).clone())
            .collect(),
        history: ok(
            store
                .conversation("amy", "bob", window(1000, None, usize::MAX))
                .await,
            "history",
        )
        .messages,
        groups,
        members: memberships(store).await,
        group_messages,
        outbox: ok(store.outbox_after("far", 0, 1000).await, "outbox_after")
            .into_iter()
            .map(|o| (o.stored, o.kind))
            .collect(),
        outbox_counts: ok(store.outbox_counts().await, "outbox_counts"),
        feeds: feeds(store, "far").await,
    }
}

/// Everything a store holds is there when its data is opened again (twice over: a second open
/// of migrated data changes nothing), and the orders go on where they were: message `seq`s,
/// group `seq`s, delivery and read cursors, known ids, remembered relayed posts.
pub async fn check_reopen_keeps_everything<B: Backend>(backend: &mut B) {
    let store = backend.fresh().await;
    for name in ["amy", "bob"] {
        ok(
            store.add_user(user(name, &format!("{name}-hash"))).await,
            "add_user",
        );
    }
    ok(
        store.put_bench_users(vec![user("b0", "cheap")]).await,
        "put_bench_users",
    );
    ok(
        store
            .insert_token(TokenRecord {
                hash: [7; 32],
                user: "amy".into(),
            })
            .await,
        "insert_token",
    );
    let first = send(&store, "amy", "bob", "one").await;
    send(&store, "bob", "amy", "two").await;
    send(&store, "amy", "bob", "three").await;
    ok(
        store.mark_delivered("bob", first.seq).await,
        "mark_delivered",
    );
    for u in ["amy", "bob"] {
        ok(store.join_group("g", "here", u).await, "join_group");
    }
    post(&store, "g", "amy", 3).await;
    ok(
        store.advance_cursors(vec![cursor("g", "bob", 2)]).await,
        "advance_cursors",
    );
    let incoming = message("zed@far", "bob", "from afar");
    ok(store.receive(vec![incoming.clone()]).await, "receive");
    ok(
        store
            .enqueue(
                "far",
                MessageKind::Private,
                vec![message("amy", "zed@far", "out")],
            )
            .await,
        "enqueue",
    );
    let relayed = ok(
        store
            .enqueue(
                "far",
                MessageKind::GroupPost,
                vec![message("amy", "r@far", "relayed")],
            )
            .await,
        "enqueue",
    );
    ok(store.open_feed("far", "g", 1).await, "open_feed");
    ok(store.ack_feeds("far", vec![gc("g", 2)]).await, "ack_feeds");
    ok(
        store.join_replica("r@far", "far", "amy", 4).await,
        "join_replica",
    );
    let r5 = replica_message("r@far", 5, "zed@far", "r5");
    ok(
        store
            .store_replica("far", vec![r5.clone()], HashSet::new(), nothing())
            .await,
        "store_replica",
    );
    let before = snapshot(&store).await;
    let last_seq = before
        .outbox
        .iter()
        .map(|(m, _)| m.seq)
        .chain(before.history.iter().map(|m| m.seq))
        .max()
        .unwrap_or(0);

    let store = backend.reopen(store).await;
    assert_eq!(
        snapshot(&store).await,
        before,
        "everything is there after opening the data again"
    );
    let store = backend.reopen(store).await;
    assert_eq!(
        snapshot(&store).await,
        before,
        "and after opening it once more"
    );

    let next = send(&store, "amy", "bob", "four").await;
    assert!(
        next.seq > last_seq,
        "message seqs go on after the last one ({} after {last_seq})",
        next.seq
    );
    let inbox = ok(store.pending("bob", 100, usize::MAX).await, "pending");
    assert_eq!(
        bodies_arc(&inbox),
        ["three", "from afar", "four"],
        "the delivery cursor was kept"
    );
    let g4 = ok(
        store
            .insert_group_messages(vec![group_message("g", "amy", "g4")], nothing())
            .await,
        "insert_group_messages",
    );
    assert_eq!(g4[0].seq, 4, "group seqs go on, gap-free");
    assert_eq!(
        ok(store.receive(vec![incoming]).await, "receive"),
        0,
        "a retry of a message received before is still a duplicate"
    );
    let out = ok(
        store
            .store_replica(
                "far",
                vec![r5, replica_message("r@far", 6, "zed@far", "r6")],
                HashSet::new(),
                nothing(),
            )
            .await,
        "store_replica",
    );
    assert_eq!(
        out,
        outcome(&[("r@far", 6)], None, &[]),
        "the replica goes on where it was"
    );
    let mut back = replica_message("r@far", 7, "amy", "relayed");
    back.message.id = relayed[0].message.id;
    let out = ok(
        store
            .store_replica("far", vec![back], HashSet::new(), nothing())
            .await,
        "store_replica",
    );
    assert_eq!(
        out,
        outcome(&[("r@far", 7)], None, &[]),
        "a relayed post is still remembered"
    );
    ok(
        store.advance_cursors(vec![cursor("g", "bob", 1)]).await,
        "advance_cursors",
    );
    assert!(
        memberships(&store).await.contains(&member("g", "bob", 2)),
        "a read cursor does not move back after a reopen"
    );
}

// ---------------------------------------------------------------------------------------------
// Helpers

use uuid::Uuid;

/// The value of a store call that must succeed.
fn ok<T>(r: StoreResult<T>, what: &str) -> T {
    r.unwrap_or_else(|e| panic!("{what} failed: {e} ({e:?})"))
}

fn message(from: &str, to: &str, body: &str) -> NewMessage {
    NewMessage {
        id: Uuid::now_v7(),
        sender: from.into(),
        sender_display: format!("{from} (display)"),
        recipient: to.into(),
        recipient_display: format!("{to} (display)"),
        body: body.into(),
        sent_at: 1_700_000_000_000,
    }
}

trait WithId {
    fn with_id(self, id: Uuid) -> Self;
}

impl WithId for NewMessage {
    fn with_id(mut self, id: Uuid) -> Self {
        self.id = id;
        self
    }
}

async fn send<S: Storage>(store: &S, from: &str, to: &str, body: &str) -> Arc<StoredMessage> {
    let m = message(from, to, body);
    let stored = ok(store.insert_message(m.clone()).await, "insert_message");
    assert_eq!(
        stored.message, m,
        "insert_message returns the message it stored"
    );
    stored
}

fn group_message(group: &str, from: &str, body: &str) -> NewGroupMessage {
    NewGroupMessage {
        id: Uuid::now_v7(),
        group: group.into(),
        sender: from.into(),
        sender_display: format!("{from} (display)"),
        body: body.into(),
        sent_at: 1_700_000_000_000,
    }
}

fn replica_message(group: &str, seq: i64, from: &str, body: &str) -> StoredGroupMessage {
    StoredGroupMessage {
        seq,
        message: group_message(group, from, body),
    }
}

/// Posts `n` messages to `group`, one call each.
async fn post<S: Storage>(store: &S, group: &str, from: &str, n: usize) {
    for i in 0..n {
        ok(
            store
                .insert_group_messages(vec![group_message(group, from, &format!("{i}"))], nothing())
                .await,
            "insert_group_messages",
        );
    }
}

fn user(name: &str, hash: &str) -> UserRecord {
    UserRecord {
        name: name.into(),
        display_name: format!("{name} (display)"),
        password_hash: hash.into(),
        bench: false,
    }
}

fn bench(name: &str, hash: &str) -> UserRecord {
    UserRecord {
        bench: true,
        ..user(name, hash)
    }
}

async fn hash_of<S: Storage>(store: &S, name: &str) -> String {
    ok(store.users().await, "users")
        .into_iter()
        .find(|u| u.name == name)
        .map(|u| u.password_hash)
        .unwrap_or_else(|| panic!("user {name} is missing"))
}

fn window(limit: usize, before: Option<i64>, max_bytes: usize) -> Window {
    Window {
        limit,
        before,
        max_bytes,
    }
}

fn cursor(group: &str, user: &str, seq: i64) -> ReadCursor {
    ReadCursor {
        group: group.into(),
        user: user.into(),
        seq,
    }
}

fn member(group: &str, user: &str, read_seq: i64) -> MemberRecord {
    MemberRecord {
        group: group.into(),
        user: user.into(),
        read_seq,
    }
}

fn gc(group: &str, seq: i64) -> GroupCursor {
    GroupCursor {
        group: group.into(),
        seq,
    }
}

fn outcome(acks: &[(&str, i64)], refused: Option<String>, ignored: &[&str]) -> ReplicaOutcome {
    ReplicaOutcome {
        acks: acks.iter().map(|(g, s)| gc(g, *s)).collect(),
        refused,
        ignored: ignored.iter().map(|g| (*g).to_owned()).collect(),
    }
}

fn sorted_acks(out: &ReplicaOutcome) -> Vec<GroupCursor> {
    let mut acks = out.acks.clone();
    acks.sort_by(|a, b| a.group.cmp(&b.group));
    acks
}

async fn tokens<S: Storage>(store: &S) -> Vec<TokenRecord> {
    let mut t = ok(store.tokens().await, "tokens");
    t.sort_by_key(|t| t.hash);
    t
}

async fn memberships<S: Storage>(store: &S) -> Vec<MemberRecord> {
    let mut m = ok(store.memberships().await, "memberships");
    m.sort_by(|a, b| (&a.group, &a.user).cmp(&(&b.group, &b.user)));
    m
}

async fn sorted_groups<S: Storage>(store: &S) -> Vec<GroupRecord> {
    let mut g = ok(store.groups().await, "groups");
    g.sort_by(|a, b| a.name.cmp(&b.name));
    g
}

async fn feeds<S: Storage>(store: &S, peer: &str) -> Vec<GroupCursor> {
    let mut f = ok(store.feeds(peer).await, "feeds");
    f.sort_by(|a, b| a.group.cmp(&b.group));
    f
}

fn bodies(page: &Page<StoredMessage>) -> Vec<String> {
    page.messages
        .iter()
        .map(|m| m.message.body.clone())
        .collect()
}

fn bodies_arc(page: &Page<Arc<StoredMessage>>) -> Vec<String> {
    page.messages
        .iter()
        .map(|m| m.message.body.clone())
        .collect()
}

fn bodies_group(page: &Page<StoredGroupMessage>) -> Vec<String> {
    page.messages
        .iter()
        .map(|m| m.message.body.clone())
        .collect()
}

#[track_caller]
fn assert_increasing(seqs: impl IntoIterator<Item = i64>, what: &str) {
    let seqs: Vec<i64> = seqs.into_iter().collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "{what}: not strictly increasing: {seqs:?}"
    );
}

/// A [`Published`] hook that ignores what it is given.
fn nothing() -> Published {
    Box::new(|_| {})
}

/// Every message published, in the order the hooks were called.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<StoredGroupMessage>>>);

impl Log {
    fn hook(&self) -> Published {
        let log = self.clone();
        Box::new(move |m| {
            log.0
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(m.clone())
        })
    }

    fn take(&self) -> Vec<StoredGroupMessage> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The `seq`s published for `group`, in the order they were published.
    fn seqs(&self, group: &str) -> Vec<i64> {
        self.take()
            .into_iter()
            .filter(|m| m.message.group == group)
            .map(|m| m.seq)
            .collect()
    }

    fn ids(&self) -> HashSet<Uuid> {
        self.take().into_iter().map(|m| m.message.id).collect()
    }
}
