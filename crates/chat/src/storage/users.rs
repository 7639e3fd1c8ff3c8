//! [`UserAdmin`]: the operator's user administration (`jaring chat user …`).
//!
//! A running realm reads its users once, at start; a backend therefore lets these run only while
//! no realm server uses the same data (SQLite: the data directory's lock; PostgreSQL: the
//! database's lock), so a change never goes unseen.

use std::future::Future;

use super::error::StoreResult;
use super::messages::UserRecord;

/// Listing, adding, changing and deleting users.
pub trait UserAdmin: Send + Sync + 'static {
    /// Every user, by name.
    fn list_users(&self) -> impl Future<Output = StoreResult<Vec<UserRecord>>> + Send;

    /// Adds a user; [`super::StoreError::UserExists`] if the name is taken.
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
}
