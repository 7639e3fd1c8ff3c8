//! [`UserAdmin`]: the operator's user administration (`jaring chat user …`), and the bench users
//! `jaring bench` makes and removes.
//!
//! A running realm reads its users once, at start; a backend therefore lets these run only while
//! no realm server uses the same data (SQLite: the data directory's lock; PostgreSQL: the
//! database's lock), so a change never goes unseen. A running realm calls them through its own
//! store (its admin socket) and brings its memory up to date with what they did.

use std::future::Future;

use super::error::StoreResult;
use super::messages::UserRecord;

/// What [`UserAdmin::purge_bench_users`] deleted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BenchPurge {
    /// The bench users deleted, by name.
    pub users: Vec<String>,
    /// Private messages deleted: every one a bench user sent or received (from this realm or a
    /// peer, bounce notices included), and a bench user's posts still on their way to a group
    /// homed on a peer.
    pub private_messages: u64,
    /// Group messages deleted: every one a bench user sent, in any group, and every message of
    /// the groups deleted whole.
    pub group_messages: u64,
    /// Groups deleted whole (no member left once the bench users went), by name.
    pub groups: Vec<String>,
}

/// Listing, adding, changing and deleting users.
pub trait UserAdmin: Send + Sync + 'static {
    /// Every user, by name.
    fn list_users(&self) -> impl Future<Output = StoreResult<Vec<UserRecord>>> + Send;

    /// Adds a user (a bench user if `user.bench`); [`super::StoreError::UserExists`] if the name
    /// is taken.
    fn add_user(&self, user: UserRecord) -> impl Future<Output = StoreResult<()>> + Send;

    /// Replaces a user's password hash and ends all their sessions;
    /// [`super::StoreError::NoSuchUser`] if there is no such user.
    fn set_password(
        &self,
        name: &str,
        password_hash: &str,
    ) -> impl Future<Output = StoreResult<()>> + Send;

    /// Deletes a user and their sessions (their messages stay in others' history);
    /// [`super::StoreError::NoSuchUser`] if there is no such user.
    fn delete_user(&self, name: &str) -> impl Future<Output = StoreResult<()>> + Send;

    /// Creates the bench users `users` (each stored with `bench = true` whatever the record
    /// says), or replaces an existing bench user of the same name (new display name and hash;
    /// their sessions end), all in one transaction. [`super::StoreError::UserExists`] naming the
    /// first user that is NOT a bench user (a real user is never overwritten), and then nothing
    /// is written.
    fn put_bench_users(
        &self,
        users: Vec<UserRecord>,
    ) -> impl Future<Output = StoreResult<()>> + Send;

    /// Deletes every bench user and everything that is theirs, in one transaction, and says what
    /// went: their sessions; every private message a bench user sent or received, with its
    /// outbox entry and delivery state; their memberships and read cursors; every group message
    /// a bench user sent; and every group a bench user was in (or created) that has no member
    /// left, whole. Groups with a real member stay, and so does every real user's message in
    /// them (with its `seq`). With no bench user it writes nothing and returns an empty
    /// [`BenchPurge`].
    fn purge_bench_users(&self) -> impl Future<Output = StoreResult<BenchPurge>> + Send;
}
