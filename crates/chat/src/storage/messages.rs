//! [`Store`]: users, tokens and private messages, what a realm's commands need.
//!
//! Every write returns only after it is durable: `send` answers OK on that promise. Addresses are
//! strings (`name`, later `name@realm` and group names), and every message carries a UUID v7 id
//! chosen by the realm it was first sent on, so a federation link can de-duplicate retries.

use std::future::Future;
use std::sync::Arc;

use super::error::StoreResult;
use super::window::{Page, Window};

/// A user as stored: login name, display name, Argon2id password hash (PHC string) and whether
/// it is a bench user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    /// Login name (unique in the realm).
    pub name: String,
    /// Display name, shown as `msg_from` / `msg_to` as in the lab.
    pub display_name: String,
    /// The Argon2id hash in PHC string form; the password itself is never stored.
    pub password_hash: String,
    /// A bench user, made by `jaring bench` through a realm's admin socket: a cheap password hash
    /// never upgraded, removed with everything it wrote by
    /// [`UserAdmin::purge_bench_users`](super::UserAdmin::purge_bench_users).
    pub bench: bool,
}

/// A message to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage {
    /// Globally unique, time-ordered id (UUID v7).
    pub id: uuid::Uuid,
    /// Sender address.
    pub sender: String,
    /// Sender display name at the time of sending.
    pub sender_display: String,
    /// Recipient address.
    pub recipient: String,
    /// Recipient display name at the time of sending.
    pub recipient_display: String,
    /// The text.
    pub body: String,
    /// Milliseconds since the Unix epoch.
    pub sent_at: i64,
}

/// A message as read back, with the sequence number the store assigned at commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    /// Commit order within this realm: strictly increasing, never reused.
    pub seq: i64,
    /// What was stored.
    pub message: NewMessage,
}

/// A session token as stored: only the SHA-256 of the token, never the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    /// SHA-256 of the token text.
    pub hash: [u8; 32],
    /// Whose token it is.
    pub user: String,
}

/// Durable storage of a realm. Every method may be called from many tasks at once.
pub trait Store: super::groups::GroupStore + Send + Sync + 'static {
    /// Every user, by name.
    fn users(&self) -> impl Future<Output = StoreResult<Vec<UserRecord>>> + Send;

    /// Every live token (loaded at start so a restart does not log everyone out).
    fn tokens(&self) -> impl Future<Output = StoreResult<Vec<TokenRecord>>> + Send;

    /// Replaces user `name`'s password hash `old` with `new` (a login moving it to the configured
    /// cost), leaving their sessions alone; does nothing if the hash is no longer `old`. Returns
    /// once committed.
    fn rehash_password(
        &self,
        name: &str,
        old: &str,
        new: &str,
    ) -> impl Future<Output = StoreResult<()>> + Send;

    /// Stores a token; returns once committed.
    fn insert_token(&self, token: TokenRecord) -> impl Future<Output = StoreResult<()>> + Send;

    /// Forgets tokens (logout, expiry); returns once committed.
    fn delete_tokens(&self, hashes: Vec<[u8; 32]>) -> impl Future<Output = StoreResult<()>> + Send;

    /// Stores a message; returns, with its sequence number, once it is durable (a batch of one).
    fn insert_message(
        &self,
        message: NewMessage,
    ) -> impl Future<Output = StoreResult<Arc<StoredMessage>>> + Send {
        async move {
            self.insert_messages(vec![message])
                .await
                .pop()
                .unwrap_or(Err(super::StoreError::Stopped))
        }
    }

    /// Stores messages in order, in one commit (a connection's pipelined sends); returns each
    /// one's result, in the same order, once they are durable.
    fn insert_messages(
        &self,
        messages: Vec<NewMessage>,
    ) -> impl Future<Output = Vec<StoreResult<Arc<StoredMessage>>>> + Send;

    /// The oldest messages to `recipient` not yet delivered, oldest first: at most `limit`, and
    /// no more than `max_bytes` of text (the first one whatever its size; `cut` when that left
    /// some out), so one read never loads more than about that much. Shared, not copied: a
    /// store may hand out the very messages it keeps in memory for the next `inbox`.
    fn pending(
        &self,
        recipient: &str,
        limit: usize,
        max_bytes: usize,
    ) -> impl Future<Output = StoreResult<Page<Arc<StoredMessage>>>> + Send;

    /// Marks every undelivered message to `recipient` up to and including `upto_seq` as delivered;
    /// returns once committed.
    fn mark_delivered(
        &self,
        recipient: &str,
        upto_seq: i64,
    ) -> impl Future<Output = StoreResult<()>> + Send;

    /// The latest messages between `a` and `b`, both directions, in `window`, oldest first.
    fn conversation(
        &self,
        a: &str,
        b: &str,
        window: Window,
    ) -> impl Future<Output = StoreResult<Page<StoredMessage>>> + Send;
}

/// The key of the conversation between two addresses, the same whichever side asks.
pub fn conversation_key(a: &str, b: &str) -> String {
    let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
    // A space cannot occur in an address, so the pair is unambiguous.
    format!("{lo} {hi}")
}
