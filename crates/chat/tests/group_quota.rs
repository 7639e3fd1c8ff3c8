//! The per-user quota on group creation, over real TCP: refused with a clear ERROR past the
//! quota, exact under concurrent creations, kept across a restart, and never in the way of
//! joining groups that exist.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use common::{Client, Running, error, ok, options, start};
use jaring_chat::{RealmOptions, SystemClock};
use jaring_chat_sqlite::Synchronous;
use jaring_runtime::Model;

const QUOTA: usize = 3;

async fn realm(dir: &std::path::Path) -> Running {
    let opts = RealmOptions {
        groups_per_user: QUOTA,
        ..options()
    };
    start(dir, opts, Arc::new(SystemClock::default()), Model::Async).await
}

#[tokio::test]
async fn a_user_creates_at_most_the_quota_of_groups() {
    let dir = tempfile::tempdir().unwrap();
    common::add_users(dir.path(), &["messi", "henderson"]);
    let r = realm(dir.path()).await;
    let mut messi = Client::connect(r.addr).await;
    let m = messi.auth("messi", "messipw").await;
    for i in 0..QUOTA {
        let v = messi.call(&format!("sendgroup {m} g{i} hello")).await;
        assert!(ok(&v), "{v}");
    }
    let refused = messi.call(&format!("sendgroup {m} g{QUOTA} hello")).await;
    let text = error(&refused);
    assert!(
        text.contains("you created 3 groups") && text.contains("groups_per_user = 3"),
        "{text}"
    );
    // `group` is refused the same way, and nothing was created.
    assert!(error(&messi.call(&format!("group {m} other")).await).contains("groups_per_user"));
    assert!(!r.realm.hub().exists("other"));
    assert!(!r.realm.hub().exists(&format!("g{QUOTA}")));

    // Joining (and posting to) a group someone else created is not a creation.
    let mut henderson = Client::connect(r.addr).await;
    let h = henderson.auth("henderson", "hendersonpw").await;
    assert!(ok(&henderson
        .call(&format!("sendgroup {h} theirs hi"))
        .await));
    assert!(ok(&messi
        .call(&format!("sendgroup {m} theirs hi back"))
        .await));
    assert!(ok(&messi.call(&format!("sendgroup {m} g0 again")).await));
    r.stop().await;

    // The count lives in the database: a restart does not reset it.
    let r = realm(dir.path()).await;
    let mut messi = Client::connect(r.addr).await;
    let m = messi.auth("messi", "messipw").await;
    assert!(error(&messi.call(&format!("group {m} fresh")).await).contains("groups_per_user"));
    assert_eq!(r.realm.hub().created_by("messi"), QUOTA);
    assert_eq!(r.realm.hub().created_by("henderson"), 1);
    r.stop().await;
}

#[tokio::test]
async fn concurrent_creations_stop_exactly_at_the_quota() {
    let dir = tempfile::tempdir().unwrap();
    common::add_users(dir.path(), &["messi"]);
    let r = realm(dir.path()).await;
    let mut tasks = Vec::new();
    for i in 0..12 {
        let addr = r.addr;
        tasks.push(tokio::spawn(async move {
            let mut c = Client::connect(addr).await;
            let t = c.auth("messi", "messipw").await;
            ok(&c.call(&format!("sendgroup {t} race{i} hi")).await)
        }));
    }
    let mut created = 0;
    for t in tasks {
        created += usize::from(t.await.unwrap());
    }
    assert_eq!(created, QUOTA);
    assert_eq!(r.realm.hub().created_by("messi"), QUOTA);
    r.stop().await;
}

#[tokio::test]
async fn a_database_from_before_the_quota_opens_and_its_groups_count_against_no_one() {
    let dir = tempfile::tempdir().unwrap();
    common::add_users(dir.path(), &["messi"]);
    {
        // A database as the previous version left it: no `creator` column.
        let conn = jaring_chat_sqlite::open(dir.path(), Synchronous::Full).unwrap();
        conn.execute_batch(
            "ALTER TABLE groups DROP COLUMN creator; \
             INSERT INTO groups (name, home, created_at, last_seq) VALUES ('old', 'realm1', 0, 0);",
        )
        .unwrap();
    }
    let r = realm(dir.path()).await;
    assert!(r.realm.hub().exists("old"));
    let mut messi = Client::connect(r.addr).await;
    let m = messi.auth("messi", "messipw").await;
    assert!(ok(&messi.call(&format!("sendgroup {m} old hi")).await));
    for i in 0..QUOTA {
        assert!(ok(&messi.call(&format!("group {m} new{i}")).await));
        messi.send_raw(b"exit\r\n").await;
        assert!(ok(&messi.reply().await.unwrap()));
    }
    assert_eq!(r.realm.hub().created_by("messi"), QUOTA);
    r.stop().await;
}
