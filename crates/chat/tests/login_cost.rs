//! Logins against password hashes made at an older, cheaper Argon2 cost: a successful login
//! moves the stored hash to the configured cost (read back from storage, and surviving a
//! restart); a wrong password changes nothing. That a failure always runs Argon2 at the
//! configured cost is tested on `password::check_blocking` itself (no wall-clock here).
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use common::{Client, Running, error, options, start};
use jaring_chat::password::PasswordCost;
use jaring_chat::realm::BAD_LOGIN;
use jaring_chat::storage::UserAdmin as _;
use jaring_chat::{RealmOptions, SystemClock};
use jaring_runtime::Model;

/// Dearer than `INSECURE_TEST`, which `common::add_users` hashes with, and still cheap.
const CONFIGURED: PasswordCost = PasswordCost {
    memory_kib: 64,
    iterations: 2,
    parallelism: 1,
};

async fn realm(dir: &std::path::Path) -> Running {
    let opts = RealmOptions {
        password_cost: CONFIGURED,
        ..options()
    };
    start(dir, opts, Arc::new(SystemClock::default()), Model::Async).await
}

/// `user`'s password hash as stored in the database.
async fn stored_hash(r: &Running, user: &str) -> String {
    r.realm
        .store()
        .list_users()
        .await
        .unwrap()
        .into_iter()
        .find(|u| u.name == user)
        .unwrap()
        .password_hash
}

#[tokio::test]
async fn a_login_moves_a_cheaper_hash_to_the_configured_cost() {
    let dir = tempfile::tempdir().unwrap();
    common::add_users(dir.path(), &["messi", "henderson"]);
    let r = realm(dir.path()).await;
    let old = stored_hash(&r, "messi").await;
    assert_eq!(
        PasswordCost::of_hash(&old),
        Some((PasswordCost::INSECURE_TEST, true))
    );

    let mut c = Client::connect(r.addr).await;
    assert_eq!(error(&c.call("auth messi wrong").await), BAD_LOGIN);
    assert_eq!(
        stored_hash(&r, "messi").await,
        old,
        "a failure changes nothing"
    );

    c.auth("messi", "messipw").await;
    let new = stored_hash(&r, "messi").await;
    assert_eq!(PasswordCost::of_hash(&new), Some((CONFIGURED, true)));
    // A second login finds it current and leaves it be; the untouched user keeps theirs.
    c.auth("messi", "messipw").await;
    assert_eq!(stored_hash(&r, "messi").await, new);
    let other = stored_hash(&r, "henderson").await;
    assert_eq!(
        PasswordCost::of_hash(&other),
        Some((PasswordCost::INSECURE_TEST, true))
    );
    r.stop().await;

    // The new hash is what the database holds: after a restart the password still works.
    let r = realm(dir.path()).await;
    assert_eq!(stored_hash(&r, "messi").await, new);
    let mut c = Client::connect(r.addr).await;
    c.auth("messi", "messipw").await;
    assert_eq!(error(&c.call("auth messi wrong").await), BAD_LOGIN);
    r.stop().await;
}
