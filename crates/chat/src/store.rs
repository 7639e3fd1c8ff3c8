//! The storage a realm needs, as a trait, so that SQLite (the embedded default, [`crate::sqlite`])
//! can be joined later by a PostgreSQL backend without touching the protocol or the server.
//!
//! Every write returns only after it is durable: `send` answers OK on that promise. Addresses are
//! strings (`name`, later `name@realm` and group names), and every message carries a UUID v7 id
//! chosen by the realm it was first sent on, so a federation link can de-duplicate retries.

use std::future::Future;
use std::sync::Arc;

/// A user as stored: login name, display name and Argon2id password hash (PHC string).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    /// Login name (unique in the realm).
    pub name: String,
    /// Display name, shown as `msg_from` / `msg_to` as in the lab.
    pub display_name: String,
    /// The Argon2id hash in PHC string form; the password itself is never stored.
    pub password_hash: String,
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

/// Which part of a history to read: the newest `limit` messages older than `before`, stopping
/// early once their text passes `max_bytes`, so one request never loads more than about that
/// much whatever the messages' sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Most messages.
    pub limit: usize,
    /// Only messages with a smaller `seq` (the cursor of the page before); `None`: the newest.
    pub before: Option<i64>,
    /// Most bytes of message text; the first message is read whatever its size.
    pub max_bytes: usize,
}

impl Window {
    /// The `seq` bound for SQL: `before`, or past every seq.
    pub fn before_seq(&self) -> i64 {
        self.before.unwrap_or(i64::MAX)
    }
}

/// Messages read through a [`Window`], oldest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    /// The messages.
    pub messages: Vec<T>,
    /// True when the window's byte limit stopped the read with older messages left: the rest
    /// is read with `before` set to the first message's seq.
    pub cut: bool,
}

/// Gathers a [`Window`]'s messages as a backend reads them, newest first, into a [`Page`].
#[derive(Debug)]
pub struct WindowTaker<T> {
    messages: Vec<T>,
    bytes: usize,
    max_bytes: usize,
    cut: bool,
}

impl<T> WindowTaker<T> {
    /// Starts reading `window`.
    pub fn new(window: Window) -> Self {
        Self {
            messages: Vec::new(),
            bytes: 0,
            max_bytes: window.max_bytes,
            cut: false,
        }
    }

    /// Takes the next older message, of `len` bytes of text; `false` (the message left out):
    /// the window is full, stop reading.
    pub fn take(&mut self, message: T, len: usize) -> bool {
        if !self.messages.is_empty() && self.bytes + len > self.max_bytes {
            self.cut = true;
            return false;
        }
        self.bytes += len;
        self.messages.push(message);
        true
    }

    /// The page, oldest first, of messages taken newest first.
    pub fn finish(mut self) -> Page<T> {
        self.messages.reverse();
        self.finish_as_taken()
    }

    /// The page in the order the messages were taken (for a read oldest first).
    pub fn finish_as_taken(self) -> Page<T> {
        Page {
            messages: self.messages,
            cut: self.cut,
        }
    }
}

/// A session token as stored: only the SHA-256 of the token, never the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    /// SHA-256 of the token text.
    pub hash: [u8; 32],
    /// Whose token it is.
    pub user: String,
}

/// Why the store failed. Details go to the server log, never to clients.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database refused or failed.
    #[error("database error")]
    Sqlite(#[from] rusqlite::Error),
    /// The storage thread is gone (the server is stopping, or it crashed).
    #[error("the storage thread has stopped")]
    Stopped,
    /// The data directory is unusable.
    #[error("cannot use the data directory {path}")]
    DataDir {
        /// The directory.
        path: std::path::PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// Another process (a running realm server) holds the data directory.
    #[error(
        "the data directory {0} is in use by a running realm server; stop it first (users are managed offline)"
    )]
    Locked(std::path::PathBuf),
    /// The database file is damaged (SQLite's integrity check failed, or SQLite says so).
    #[error(
        "{path} is damaged ({detail}); stop here and restore it from a backup (or, to start an \
         empty realm, move it and its -wal and -shm files away)"
    )]
    Corrupt {
        /// The database file.
        path: std::path::PathBuf,
        /// What SQLite found (the first problems `PRAGMA quick_check` reported).
        detail: String,
    },
    /// The database file exists but is empty: SQLite would take it for a new database.
    #[error(
        "{0} is empty (0 bytes), so the realm's users and messages are not in it; restore it from \
         a backup (if this realm's first start was cut short, delete the file and start again)"
    )]
    Empty(std::path::PathBuf),
    /// The disk (or the file size limit) has no room for what the database must write.
    #[error("no space left on device ({path}); free some space on its disk and start again")]
    NoSpace {
        /// The database file.
        path: std::path::PathBuf,
        /// What the system said when the space was tried.
        source: std::io::Error,
    },
    /// Reading the database file failed (a failing disk, or a file changed under SQLite).
    #[error(
        "cannot read {path}: the disk or the file is failing; check the disk (dmesg) and restore the file from a backup"
    )]
    Read {
        /// The database file.
        path: std::path::PathBuf,
        /// What SQLite said.
        source: rusqlite::Error,
    },
    /// Writing the database (or its -wal or -shm file) failed for a reason other than space.
    #[error(
        "cannot write {path} (or its -wal and -shm files); check the disk (dmesg) and the directory's permissions"
    )]
    Write {
        /// The database file.
        path: std::path::PathBuf,
        /// What SQLite said.
        source: rusqlite::Error,
    },
    /// A user to add exists already.
    #[error("user {0:?} exists already; use `jaring chat user passwd` to change the password")]
    UserExists(String),
    /// A user to change does not exist.
    #[error("no user {0:?} in this realm; `jaring chat user list` shows who exists")]
    NoSuchUser(String),
}

/// Result of a store call.
pub type StoreResult<T> = Result<T, StoreError>;

/// Durable storage of a realm. Every method may be called from many tasks at once.
pub trait Store: crate::group_store::GroupStore + Send + Sync + 'static {
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

    /// Stores a message; returns, with its sequence number, once it is durable.
    fn insert_message(
        &self,
        message: NewMessage,
    ) -> impl Future<Output = StoreResult<Arc<StoredMessage>>> + Send;

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
