//! [`SqliteStore`]: the embedded default store. SQLite (bundled) in WAL mode with
//! `synchronous=FULL`, in `chat.db` under the realm's data directory.
//!
//! No SQLite call runs on an async worker. Writes go over a bounded channel to one writer thread,
//! which takes everything queued (up to [`DEFAULT_MAX_BATCH`] operations), runs it in one
//! transaction, commits once, and only then answers each caller: concurrent senders share one fsync
//! (group commit), which is the difference between ~2,500 and hundreds of thousands of durable
//! messages a second on this machine. Reads run on blocking threads with their own connections
//! (WAL lets them proceed while the writer commits), at most [`MAX_READERS`] at once, except
//! `inbox`: once a recipient has read its inbox, the writer keeps a copy of its undelivered
//! messages in memory and `inbox` reads that (`sqlite/mailboxes.rs` says how the copy stays
//! exact). The commit's sync is an `fdatasync` (the workspace's `.cargo/config.toml` builds the
//! bundled SQLite with `HAVE_FDATASYNC`): it flushes the WAL's data, and its size when it grew,
//! without writing its timestamps back every commit.
//!
//! # Schema (`PRAGMA user_version` = 5)
//! - `users(name, display_name, password_hash, created_at)`
//! - `tokens(hash, user, created_at)`: SHA-256 of each live token, never the token.
//! - `messages(seq, id, sender, sender_display, recipient, recipient_display, conversation, body,
//!   sent_at, delivered_at)`: `seq` is the commit order; `id` is a UUID v7. A database of
//!   version 2 or older, whose `id` was `UNIQUE`, is copied into this table when opened.
//!   `conversation` keys history (a sorted pair of addresses for private messages, the group name
//!   for group messages in issue 5). `delivered_at` is set only on a message stored for no inbox
//!   here (one on its way to another realm), and on messages an older version delivered.
//! - `inbox_delivered(recipient, upto)`: each recipient's messages up to `seq` `upto` are
//!   delivered. The cursor moves only after the `inbox` reply carrying them was written to the
//!   socket; a recipient's undelivered messages are always its newest, because every `inbox`
//!   returns the oldest first. Before version 5 each delivered message had its `delivered_at`
//!   set, behind an index of the undelivered ones: every message cost a row rewrite and two index
//!   changes. Pinned A/B of the two (4 interleaved rounds, every round faster): 36.4-38.8k to
//!   39.4-42.1k durable messages a second, 22.4-24.0 to 20.3-21.9 µs of CPU each.
//! - `history_index(conversation, last_seq, seqs)`, `inbox_index(recipient, last_seq, seqs)` and
//!   `history_indexed(upto)`: what `history` finds a conversation's messages by, and a first
//!   `inbox` (before the recipient's mailbox is in memory) its recipient's, brought up to date in
//!   bulk rather than with every message. Version 1 kept an index on `messages(conversation,
//!   seq)`, which cost every message a B-tree insert on a page of its own conversation; in a
//!   pinned A/B (4 interleaved rounds) the bulk index took the bench's realm from 24.2k to 28.2k
//!   durable messages a second, on 10% less CPU each. The writer notes the `seq` of each message
//!   it commits under its conversation and its recipient and, at most [`HISTORY_INDEX_EVERY`]
//!   messages or [`HISTORY_INDEX_AFTER`] behind, adds one row per conversation and one per
//!   recipient holding those `seq`s (8-byte little-endian, ascending), moving `upto` in the same
//!   transaction; messages it did not note (a federation job's, an older version's) are read
//!   back instead. A reader takes the rows (past its cursor, for `inbox`) and scans the few
//!   messages newer than `upto` by `seq`. A delivery drops the recipient's `inbox_index` rows
//!   that lie wholly behind its cursor. A database older than version 5 is moved over when it is
//!   opened: its delivered messages become cursors, and every message is indexed anew.
//! - `groups(name, home, created_at, last_seq, creator)`,
//!   `group_members(grp, user, read_seq, joined_at)`,
//!   `group_messages(grp, seq, id, sender, sender_display, body, sent_at)`: see `sqlite/groups.rs`
//!   for how `seq` and the read cursors work. `creator` (who created a local group, for the
//!   per-user creation quota) is added to an older database when it is opened.
//! - `outbox(peer, seq)`: messages waiting for another realm's acknowledgement (issue 6), empty
//!   until federation is configured.
//! - `federated_ids(id)`: the id of every message a federation link stored, so that a retried
//!   message is stored once. Only those: a message between two local users has an id this realm
//!   just made, and a unique index over every message's id cost the chat bench a seventh of its
//!   durable messages a second (pinned A/B, 4 interleaved rounds: 33.8k to 39.4k msgs/s, 26.0 to
//!   22.0 µs of CPU each; callgrind: 14% of the writer's instructions). A partial unique index
//!   over the federated messages (version 3, never released) still cost every insert two
//!   `instr()` calls to decide it was not federated: 4% of the writer's instructions.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension as _, params};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, error};

mod groups;
mod mailboxes;

use mailboxes::{Lookup, Mailboxes};

use crate::store::{
    NewMessage, Page, Store, StoreError, StoreResult, StoredMessage, TokenRecord, UserRecord,
    Window, WindowTaker, conversation_key,
};

/// Most write operations committed in one transaction. A larger batch amortises the fsync over more
/// messages; this one keeps a commit well under a few milliseconds of work.
pub const DEFAULT_MAX_BATCH: usize = 4096;

/// Reads that run at once, each on a blocking thread with a reader connection of its own (kept
/// for the next read). More would not read faster on a machine of a few cores; they would only
/// hold more threads and connections (each with its own page cache): 10,000 clients reading their
/// first inbox at once took the realm to ~110 MiB.
pub const MAX_READERS: usize = 8;

/// Writes that may wait for the writer thread. When full, writers wait (backpressure) instead of
/// queueing without bound.
pub const DEFAULT_WRITE_QUEUE: usize = 16 * 1024;

/// Most messages `history` (or a first `inbox`) may have to find without the indexes: once this
/// many are unindexed, the next commit indexes them. Indexing them together costs a row per
/// conversation and per recipient, not an entry per message; but each of those rows lands on a
/// page of its own once the index is large (~150 pages written for the bench's 100
/// conversations), so a catch-up's cost hardly depends on how many messages it covers. A scan of
/// this many rows by `seq` takes ~0.8 ms here (0.14 ms for 1,024); catching up every 1,024
/// messages instead held the chat bench to 41-50k durable messages a second against 52-61k (pinned
/// A/B, 5 interleaved rounds, every round faster).
pub const HISTORY_INDEX_EVERY: i64 = 8192;

/// Longest a message waits to be indexed for `history` when fewer than
/// [`HISTORY_INDEX_EVERY`] arrive.
pub const HISTORY_INDEX_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

/// The database file's name inside the data directory.
pub const DB_FILE: &str = "chat.db";

/// The lock file a running server holds, so offline tools do not change data under it.
pub const LOCK_FILE: &str = "realm.lock";

/// The columns of `messages`, for the schema and for moving an older table over.
macro_rules! messages_columns {
    () => {
        "(
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id BLOB NOT NULL,
    sender TEXT NOT NULL,
    sender_display TEXT NOT NULL,
    recipient TEXT NOT NULL,
    recipient_display TEXT NOT NULL,
    conversation TEXT NOT NULL,
    body TEXT NOT NULL,
    sent_at INTEGER NOT NULL,
    delivered_at INTEGER
)"
    };
}

const SCHEMA: &str = concat!(
    "
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY NOT NULL,
    display_name TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS tokens (
    hash BLOB PRIMARY KEY NOT NULL,
    user TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS messages ",
    messages_columns!(),
    ";
DROP INDEX IF EXISTS messages_pending;
DROP INDEX IF EXISTS messages_federated_id;
CREATE TABLE IF NOT EXISTS federated_ids (id BLOB PRIMARY KEY NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS history_index (
    conversation TEXT NOT NULL,
    last_seq INTEGER NOT NULL,
    seqs BLOB NOT NULL,
    PRIMARY KEY (conversation, last_seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS history_indexed (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    upto INTEGER NOT NULL
);
INSERT OR IGNORE INTO history_indexed (id, upto) VALUES (0, 0);
CREATE TABLE IF NOT EXISTS inbox_index (
    recipient TEXT NOT NULL,
    last_seq INTEGER NOT NULL,
    seqs BLOB NOT NULL,
    PRIMARY KEY (recipient, last_seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS inbox_delivered (
    recipient TEXT PRIMARY KEY NOT NULL,
    upto INTEGER NOT NULL
) WITHOUT ROWID;
DROP INDEX IF EXISTS messages_conversation;
CREATE TABLE IF NOT EXISTS outbox (
    peer TEXT NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (peer, seq)
) WITHOUT ROWID;
PRAGMA user_version = 5;
"
);

/// How hard SQLite works to make a commit durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Synchronous {
    /// fsync on every commit: a commit survives power loss (the default).
    #[default]
    Full,
    /// fsync only at WAL checkpoints: a commit survives a crash of the process, not of the machine.
    Normal,
}

/// Problems the start-up integrity check lists at most; past it the rest go unlisted (the first
/// few tell the operator the file is damaged, which is all they need to act).
pub const DEFAULT_QUICK_CHECK_ERRORS: u32 = 5;

/// Bytes the space probe writes (and removes) after a failed write at start, to tell a full disk
/// from another failure: more than SQLite writes at once (a page, or 32 KiB of `-shm`).
const SPACE_PROBE_BYTES: usize = 1 << 20;

/// Opens (creating if needed) the database in `dir` with the schema and pragmas.
///
/// Refuses, each with an error naming the file and what to do: a `chat.db` that exists but is
/// empty ([`StoreError::Empty`]; a new data directory has no `chat.db` yet, so it is never
/// refused), a damaged one (`PRAGMA quick_check` at every open: [`StoreError::Corrupt`]), a full
/// disk ([`StoreError::NoSpace`]) and other read or write failures ([`StoreError::Read`],
/// [`StoreError::Write`]).
pub fn open(dir: &Path, sync: Synchronous) -> StoreResult<Connection> {
    std::fs::create_dir_all(dir).map_err(|source| StoreError::DataDir {
        path: dir.to_owned(),
        source,
    })?;
    let path = dir.join(DB_FILE);
    match std::fs::metadata(&path) {
        Ok(m) if m.len() == 0 => return Err(StoreError::Empty(path)),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(StoreError::DataDir {
                path: dir.to_owned(),
                source,
            });
        }
    }
    open_checked(&path, sync).map_err(|e| diagnose(e, Some(dir), &path))
}

/// What an SQLite failure on the database at `path` means, as the error to show: damage, a full
/// disk, a read or a write that failed. Other errors stay as they are. A failed write is told from
/// a full disk by writing a probe in `probe_dir`; without one it stays as SQLite said it.
fn diagnose(e: StoreError, probe_dir: Option<&Path>, path: &Path) -> StoreError {
    use rusqlite::ffi::{self, ErrorCode};
    let (code, extended) = match &e {
        StoreError::Sqlite(rusqlite::Error::SqliteFailure(f, _)) => (f.code, f.extended_code),
        _ => return e,
    };
    let StoreError::Sqlite(source) = e else {
        return e;
    };
    let path = path.to_owned();
    match code {
        ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase => StoreError::Corrupt {
            detail: source.to_string(),
            path,
        },
        ErrorCode::DiskFull => StoreError::NoSpace {
            source: probe_dir
                .and_then(out_of_space)
                .unwrap_or_else(|| std::io::ErrorKind::StorageFull.into()),
            path,
        },
        ErrorCode::SystemIoFailure
            if matches!(
                extended,
                ffi::SQLITE_IOERR_READ | ffi::SQLITE_IOERR_SHORT_READ
            ) =>
        {
            StoreError::Read { path, source }
        }
        // SQLite does not say why a write failed (a full disk shows as SQLITE_IOERR_SHMSIZE,
        // say), so try writing there the same way.
        ErrorCode::SystemIoFailure if probe_dir.is_some() => {
            match probe_dir.and_then(out_of_space) {
                Some(space) => StoreError::NoSpace {
                    path,
                    source: space,
                },
                None => StoreError::Write { path, source },
            }
        }
        _ => StoreError::Sqlite(source),
    }
}

/// Whether `dir`'s disk is out of room (or the process at its file size limit): the error of a
/// [`SPACE_PROBE_BYTES`] write there, if it failed for lack of space.
fn out_of_space(dir: &Path) -> Option<std::io::Error> {
    use std::io::{ErrorKind, Write as _};
    let probe = dir.join(".jaring-space-probe");
    let result = File::create(&probe).and_then(|mut f| {
        let chunk = [0u8; 64 * 1024];
        for _ in 0..SPACE_PROBE_BYTES / chunk.len() {
            f.write_all(&chunk)?;
        }
        // Some file systems find out about space only when the data is written back.
        f.sync_all()
    });
    let _ = std::fs::remove_file(&probe);
    match result {
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::StorageFull | ErrorKind::FileTooLarge | ErrorKind::QuotaExceeded
            ) =>
        {
            Some(e)
        }
        _ => None,
    }
}

/// `PRAGMA quick_check`: every page and index entry is read and checked for consistency (not
/// that indexes match their tables: that is the much slower `integrity_check`). O(database): on
/// this machine 0.3 s for a 145 MB database of a million messages (warm page cache; cold, as fast
/// as the disk reads the file), 0.7 ms for a new lab realm: a start-up cost worth a clear refusal of a
/// damaged file instead of "could not store this" on some later read.
fn quick_check(conn: &Connection, path: &Path) -> StoreResult<()> {
    let mut s = conn.prepare(&format!("PRAGMA quick_check({DEFAULT_QUICK_CHECK_ERRORS})"))?;
    let problems = s
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    if problems.len() == 1 && problems[0] == "ok" {
        return Ok(());
    }
    // One line: SQLite's first report starts with a `*** in database main ***` line of its own.
    let detail = problems
        .join("\n")
        .replace("*** in database main ***\n", "");
    Err(StoreError::Corrupt {
        path: path.to_owned(),
        detail: format!("integrity check: {}", detail.replace('\n', "; ")),
    })
}

/// [`open`] once the file is known not to be empty.
fn open_checked(path: &Path, sync: Synchronous) -> StoreResult<Connection> {
    let conn = Connection::open(path)?;
    configure(&conn)?;
    quick_check(&conn, path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // Statement and savepoint journals in memory. They hold the old copy of each page a savepoint
    // changes (the history catch-up changes ~100 at once); past 64 KiB SQLite spilled them to a
    // temporary file, ~360 `pwrite`s a catch-up. Pinned A/B (4 interleaved rounds): 35.4k to
    // 38.9k durable messages a second.
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    conn.pragma_update(
        None,
        "synchronous",
        match sync {
            Synchronous::Full => "FULL",
            Synchronous::Normal => "NORMAL",
        },
    )?;
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    drop_unique_id(&conn)?;
    // The schema, the version it sets and every step of moving an older database over commit
    // together: a crash half-way leaves the old version, which the next start moves over again.
    // Immediate: a deferred transaction that reads first cannot take the write lock once a
    // running server has committed since (SQLITE_BUSY at once, no waiting).
    let tx = rusqlite::Transaction::new_unchecked(&conn, rusqlite::TransactionBehavior::Immediate)?;
    tx.execute_batch(SCHEMA)?;
    tx.execute_batch(groups::SCHEMA)?;
    groups::add_creator(&tx)?;
    if version < 4 {
        // Before version 4 the ids of federated messages were kept unique by the messages table
        // itself: claim them, so that a retry of one of them is still a duplicate.
        tx.execute_batch(
            "INSERT OR IGNORE INTO federated_ids (id) SELECT id FROM messages \
             WHERE instr(sender, '@') > 0 OR instr(recipient, '@') > 0",
        )?;
    }
    if version < 5 {
        deliveries_to_cursors(&tx)?;
    }
    // A database written by an older version (or a crash before the writer's last catch-up)
    // may hold unindexed messages: index them now, so neither `history` nor a first `inbox`
    // scans more than a few.
    index_messages(&tx, &mut Postings::default())?;
    tx.commit()?;
    Ok(conn)
}

/// Moves a database older than version 5, which marked every delivered message
/// (`delivered_at`), to one cursor per recipient (`inbox_delivered`), and has its messages
/// indexed anew, now by recipient as well as by conversation.
///
/// A recipient's delivered messages were always the oldest ones (each `inbox` marks everything
/// up to the newest message it returned), so the cursor sits just before the oldest undelivered
/// one, or at the newest message when all were delivered. Were a delivered message ever newer
/// than an undelivered one, it would be delivered again: never lost.
fn deliveries_to_cursors(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(
        "INSERT OR REPLACE INTO inbox_delivered (recipient, upto) \
         SELECT recipient, coalesce(min(CASE WHEN delivered_at IS NULL THEN seq END) - 1, max(seq)) \
         FROM messages WHERE instr(recipient, '@') = 0 GROUP BY recipient; \
         DELETE FROM history_index; \
         DELETE FROM inbox_index; \
         UPDATE history_indexed SET upto = 0;",
    )
}

/// Moves a database of version 2 or older to a `messages` table without a `UNIQUE` constraint on
/// `id` (federated messages' ids are kept unique in `federated_ids` instead). SQLite cannot drop
/// a table's `UNIQUE` constraint, so the table is copied into a new one, keeping every `seq` and
/// the AUTOINCREMENT counter, in one transaction.
fn drop_unique_id(conn: &Connection) -> StoreResult<()> {
    let old: bool = conn.query_row(
        "SELECT count(*) > 0 FROM sqlite_master WHERE name = 'sqlite_autoindex_messages_1'",
        [],
        |r| r.get(0),
    )?;
    if !old {
        return Ok(());
    }
    let tx = conn.unchecked_transaction()?;
    let counter: Option<i64> = tx
        .query_row(
            "SELECT seq FROM sqlite_sequence WHERE name = 'messages'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    tx.execute_batch(concat!(
        "CREATE TABLE messages_v3 ",
        messages_columns!(),
        ";
         INSERT INTO messages_v3 (seq, id, sender, sender_display, recipient, recipient_display,
             conversation, body, sent_at, delivered_at)
         SELECT seq, id, sender, sender_display, recipient, recipient_display, conversation,
             body, sent_at, delivered_at FROM messages ORDER BY seq;
         DROP TABLE messages;
         ALTER TABLE messages_v3 RENAME TO messages;"
    ))?;
    if let Some(counter) = counter {
        tx.execute(
            "UPDATE sqlite_sequence SET seq = max(seq, ?1) WHERE name = 'messages'",
            [counter],
        )?;
    }
    tx.commit()?;
    Ok(())
}

/// Opens a read-only connection to the database in `dir`, which [`open`] has already set up.
///
/// Not through [`open`]: its schema ends with `PRAGMA user_version`, a write, so every new reader
/// queued for the write lock behind the writer's back-to-back transactions. Under load that held
/// the first `inbox` on a fresh reader for seconds (SQLite's busy handler backs off up to 100 ms
/// a try), which the bench saw as a send→inbox p99 of 0.3-5 s whenever server and load shared a
/// core. A read-only connection never asks for that lock.
fn open_reader(dir: &Path) -> StoreResult<Connection> {
    let conn = Connection::open_with_flags(
        dir.join(DB_FILE),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    configure(&conn)?;
    Ok(conn)
}

/// What every connection, the writer's and each reader's, is set up with.
fn configure(conn: &Connection) -> StoreResult<()> {
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    // Plans that never depend on bound values. Without this, SQLite marks a statement with
    // `LIMIT ?` to be re-prepared (parsed and planned again) whenever the parameter is bound, so
    // every cached `inbox` query was compiled afresh: 6% of the server's CPU under load.
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )?;
    Ok(())
}

/// Takes the data directory's lock, or says who holds it.
pub fn lock_dir(dir: &Path) -> StoreResult<File> {
    std::fs::create_dir_all(dir).map_err(|source| StoreError::DataDir {
        path: dir.to_owned(),
        source,
    })?;
    let file = File::create(dir.join(LOCK_FILE)).map_err(|source| StoreError::DataDir {
        path: dir.to_owned(),
        source,
    })?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::Locked(dir.to_owned())),
        Err(std::fs::TryLockError::Error(source)) => Err(StoreError::DataDir {
            path: dir.to_owned(),
            source,
        }),
    }
}

fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// One queued write and where its answer goes.
enum Write {
    /// Messages of one connection's pipelined sends, in order: one queue slot and one wake-up
    /// for all of them.
    Messages(
        Vec<NewMessage>,
        oneshot::Sender<Vec<StoreResult<Arc<StoredMessage>>>>,
    ),
    Delivered(String, i64, oneshot::Sender<StoreResult<()>>),
    Token(TokenRecord, oneshot::Sender<StoreResult<()>>),
    DeleteTokens(Vec<[u8; 32]>, oneshot::Sender<StoreResult<()>>),
    Group(groups::GroupWrite),
    /// Work of another module (federation) that must share the writer's transactions; it returns
    /// what to do once the commit succeeded (`true`) or failed (`false`).
    Run(Box<dyn FnOnce(&Connection) -> AfterCommit + Send>),
}

/// What a [`SqliteStore::run_in_commit`] job does once its transaction is committed or failed.
type AfterCommit = Box<dyn FnOnce(bool) + Send>;

/// The SQLite store. Cloning shares the writer thread and the reader pool.
#[derive(Clone)]
pub struct SqliteStore {
    writes: mpsc::Sender<Write>,
    readers: Arc<Mutex<Vec<Connection>>>,
    /// One permit per read running at a time: reads past [`MAX_READERS`] wait their turn instead
    /// of each taking a blocking thread and opening a reader connection of their own.
    reading: Arc<tokio::sync::Semaphore>,
    /// Each recipient's undelivered messages, kept by the writer so `inbox` reads no database.
    mailboxes: Arc<Mutex<Mailboxes>>,
    dir: PathBuf,
    _lock: Arc<File>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Locks `dir`, opens its database and starts the writer thread. The thread ends when the last
    /// clone of the store is dropped, after committing what was queued.
    pub fn open(dir: &Path, sync: Synchronous, max_batch: usize) -> StoreResult<Self> {
        let lock = lock_dir(dir)?;
        let writer = open(dir, sync)?;
        let (tx, rx) = mpsc::channel(DEFAULT_WRITE_QUEUE);
        let max_batch = max_batch.max(1);
        let mailboxes = Arc::new(Mutex::new(Mailboxes::new(
            mailboxes::DEFAULT_BUDGET,
            mailboxes::DEFAULT_BOX_LIMIT,
        )));
        let kept = Arc::clone(&mailboxes);
        std::thread::Builder::new()
            .name("chat-db-writer".into())
            .spawn(move || write_loop(writer, rx, max_batch, &kept))
            .map_err(|source| StoreError::DataDir {
                path: dir.to_owned(),
                source,
            })?;
        Ok(Self {
            writes: tx,
            readers: Arc::default(),
            reading: Arc::new(tokio::sync::Semaphore::new(MAX_READERS)),
            mailboxes,
            dir: dir.to_owned(),
            _lock: Arc::new(lock),
        })
    }

    async fn write<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<StoreResult<T>>) -> Write,
    ) -> StoreResult<T> {
        let (tx, rx) = oneshot::channel();
        self.writes
            .send(make(tx))
            .await
            .map_err(|_| StoreError::Stopped)?;
        rx.await.map_err(|_| StoreError::Stopped)?
    }

    /// Runs `job` inside the writer's next transaction, together with whatever else is queued (one
    /// fsync for all), and returns its result once that transaction is committed. If the commit
    /// fails, the caller gets an error and nothing `job` wrote is kept. `job` must not commit or
    /// roll back itself; statements that fail inside it should be reported through its result.
    pub async fn run_in_commit<T: Send + 'static>(
        &self,
        job: impl FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let (tx, rx) = oneshot::channel();
        let run: Box<dyn FnOnce(&Connection) -> AfterCommit + Send> = Box::new(move |conn| {
            // A savepoint per job: a job that fails leaves nothing behind, and the rest of the batch
            // still commits.
            let result = conn
                .execute_batch("SAVEPOINT job")
                .map_err(StoreError::from)
                .and_then(|()| job(conn));
            let keep = if result.is_ok() {
                "RELEASE job"
            } else {
                "ROLLBACK TO job; RELEASE job"
            };
            let result = match (result, conn.execute_batch(keep)) {
                (Ok(v), Ok(())) => Ok(v),
                (Err(e), _) => Err(e),
                (Ok(_), Err(e)) => Err(e.into()),
            };
            Box::new(move |committed| {
                let _ = tx.send(if committed {
                    result
                } else {
                    Err(StoreError::Stopped)
                });
            })
        });
        self.writes
            .send(Write::Run(run))
            .await
            .map_err(|_| StoreError::Stopped)?;
        rx.await.map_err(|_| StoreError::Stopped)?
    }

    /// Runs the read `f` on a blocking thread with a pooled connection of its own.
    pub async fn read_with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        self.read(f).await
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let permit = Arc::clone(&self.reading)
            .acquire_owned()
            .await
            .map_err(|_| StoreError::Stopped)?;
        let readers = Arc::clone(&self.readers);
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || {
            let conn = readers.lock().unwrap_or_else(PoisonError::into_inner).pop();
            let conn = match conn {
                Some(c) => c,
                None => open_reader(&dir)?,
            };
            // A damaged page or a failed read names the file and says it was a read (the realm's
            // start-up reads its users, tokens and groups through here).
            let result = f(&conn).map_err(|e| diagnose(e, None, &dir.join(DB_FILE)));
            readers
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(conn);
            drop(permit);
            result
        })
        .await
        .map_err(|_| StoreError::Stopped)?
    }
}

fn write_loop(
    mut conn: Connection,
    mut rx: mpsc::Receiver<Write>,
    max_batch: usize,
    mailboxes: &Mutex<Mailboxes>,
) {
    wake_without_preempting();
    let mut batch = Vec::with_capacity(max_batch);
    let mut history = HistoryIndexing {
        last: std::time::Instant::now(),
        postings: Postings::default(),
    };
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(w) => batch.push(w),
                Err(_) => break,
            }
        }
        commit_batch(&mut conn, &mut batch, &mut history, mailboxes);
    }
    debug!("storage writer stopped");
}

/// Puts the calling thread (the writer) under `SCHED_BATCH`, whose only difference from the
/// default policy is that its wake-ups never preempt the thread running on that CPU.
///
/// When the writer's `fdatasync` returns, the async worker is usually half-way through the
/// requests that came in meanwhile. Preempting it cut that group in two: the writer committed
/// the half already queued, and the other half waited a commit, an `fsync` and two context
/// switches more. Left to finish, the worker queues the whole group for one commit. With server
/// and load generator each pinned to a core, 13 of 14 interleaved rounds of the chat bench were
/// faster this way (by 2-25%, over four A/B runs); with both sharing the cores, 4 of 7 (no
/// difference either way). The opposite, a writer at nice -3, was slower in every round. Skipped
/// (and logged) if the thread is not at the default niceness, which the call would reset.
/// Returns whether the thread now runs under `SCHED_BATCH`.
fn wake_without_preempting() -> bool {
    use thread_priority::{
        NormalThreadSchedulePolicy, ThreadPriority, ThreadPriorityOsValue, ThreadSchedulePolicy,
    };
    match rustix::process::getpriority_process(None) {
        Ok(0) => {}
        Ok(nice) => {
            debug!(nice, "storage writer keeps the default scheduling policy");
            return false;
        }
        Err(e) => {
            debug!(error = %e, "cannot read the storage writer's niceness");
            return false;
        }
    }
    thread_priority::set_thread_priority_and_policy(
        thread_priority::thread_native_id(),
        ThreadPriority::Os(ThreadPriorityOsValue::default()),
        ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Batch),
    )
    .inspect_err(|e| debug!(error = %e, "storage writer keeps the default scheduling policy"))
    .is_ok()
}

/// When the writer last brought the history index up to date.
struct HistoryIndexing {
    last: std::time::Instant,
    /// What this writer committed since, so catching up need not read the messages back.
    postings: Postings,
}

/// Indexes every message past `history_indexed.upto`, for `history` and for `inbox`: one
/// `history_index` row per conversation and one `inbox_index` row per recipient with their
/// `seq`s, and `upto` moved to the newest message. Runs inside the caller's transaction: the
/// entries and `upto` commit together, so a reader sees either both or neither. Returns how many
/// messages it indexed.
fn index_messages(conn: &Connection, known: &mut Postings) -> rusqlite::Result<i64> {
    let (upto, newest) = history_position(conn)?;
    let mut postings = std::mem::take(known);
    if newest <= upto {
        return Ok(0);
    }
    // The noted seqs are distinct and ascending: if they all lie past `upto` and there are as
    // many as the range holds, they are exactly the range.
    if postings.first <= upto || postings.count != newest - upto {
        // Some of these messages came another way (a federation job, an older version, a
        // batch whose commit failed), or were indexed another way: read them all back.
        postings = Postings::default();
        let mut s = conn.prepare_cached(
            "SELECT conversation, recipient, seq, delivered_at IS NULL FROM messages \
             WHERE seq > ?1 AND seq <= ?2 ORDER BY seq",
        )?;
        let mut rows = s.query(params![upto, newest])?;
        while let Some(row) = rows.next()? {
            let text = |i| {
                row.get_ref(i)
                    .and_then(|v| v.as_str().map_err(rusqlite::Error::from))
            };
            // A message marked delivered as it was stored (one on its way to another realm, or
            // one an older version delivered) is for no inbox here.
            let for_inbox = row.get::<_, bool>(3)?.then(|| text(1)).transpose()?;
            postings.add(text(0)?, for_inbox, row.get(2)?);
        }
    }
    let mut insert = conn.prepare_cached(
        "INSERT OR REPLACE INTO history_index (conversation, last_seq, seqs) VALUES (?1, ?2, ?3)",
    )?;
    for (conversation, (last, seqs)) in &postings.by_conversation {
        insert.execute(params![conversation, last, seqs])?;
    }
    // A row wholly behind its recipient's delivery cursor (an inbox read these messages before
    // they were indexed) would never be read, nor deleted by a later delivery: not written.
    let mut insert = conn.prepare_cached(
        "INSERT OR REPLACE INTO inbox_index (recipient, last_seq, seqs) \
         SELECT ?1, ?2, ?3 WHERE ?2 > coalesce( \
             (SELECT upto FROM inbox_delivered WHERE recipient = ?1), 0)",
    )?;
    for (recipient, (last, seqs)) in &postings.by_recipient {
        insert.execute(params![recipient, last, seqs])?;
    }
    conn.prepare_cached("UPDATE history_indexed SET upto = ?1 WHERE id = 0")?
        .execute(params![newest])?;
    Ok(newest - upto)
}

/// Messages not indexed yet, by conversation and by recipient: the newest `seq` and every `seq`
/// (8-byte little-endian, ascending), as one `history_index` or `inbox_index` row will hold them.
#[derive(Default)]
struct Postings {
    by_conversation: std::collections::HashMap<String, (i64, Vec<u8>)>,
    by_recipient: std::collections::HashMap<String, (i64, Vec<u8>)>,
    /// The first `seq` noted (0 if none).
    first: i64,
    count: i64,
}

impl Postings {
    /// Notes message `seq` under its conversation and, if it is for an inbox here, under its
    /// recipient.
    fn add(&mut self, conversation: &str, recipient: Option<&str>, seq: i64) {
        post(&mut self.by_conversation, conversation, seq);
        if let Some(recipient) = recipient {
            post(&mut self.by_recipient, recipient, seq);
        }
        if self.count == 0 {
            self.first = seq;
        }
        self.count += 1;
    }
}

/// Appends `seq` to `key`'s postings, allocating the key only the first time it is seen.
fn post(map: &mut std::collections::HashMap<String, (i64, Vec<u8>)>, key: &str, seq: i64) {
    let entry = match map.get_mut(key) {
        Some(entry) => entry,
        None => map.entry(key.to_owned()).or_default(),
    };
    entry.0 = seq;
    entry.1.extend_from_slice(&seq.to_le_bytes());
}

/// How far the history index goes (`upto`) and the newest message's `seq`.
fn history_position(conn: &Connection) -> rusqlite::Result<(i64, i64)> {
    let upto = conn
        .prepare_cached("SELECT upto FROM history_indexed WHERE id = 0")?
        .query_row([], |r| r.get(0))?;
    Ok((upto, newest_seq(conn)?))
}

/// Whether the history index is far enough behind to catch up in this transaction.
fn history_due(conn: &Connection, indexing: &HistoryIndexing) -> rusqlite::Result<bool> {
    let (upto, newest) = history_position(conn)?;
    let behind = newest - upto;
    Ok(behind >= HISTORY_INDEX_EVERY
        || (behind > 0 && indexing.last.elapsed() >= HISTORY_INDEX_AFTER))
}

/// Runs `batch` in one transaction, commits, brings the mailboxes up to date, then answers every
/// caller.
fn commit_batch(
    conn: &mut Connection,
    batch: &mut Vec<Write>,
    history: &mut HistoryIndexing,
    mailboxes: &Mutex<Mailboxes>,
) {
    enum Done {
        Messages(
            Vec<StoreResult<Arc<StoredMessage>>>,
            oneshot::Sender<Vec<StoreResult<Arc<StoredMessage>>>>,
        ),
        Unit(StoreResult<()>, oneshot::Sender<StoreResult<()>>),
        Delivered(
            String,
            i64,
            StoreResult<()>,
            oneshot::Sender<StoreResult<()>>,
        ),
        Group(groups::Finish),
        Run(AfterCommit),
    }
    let tx = match conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate) {
        Ok(tx) => tx,
        Err(e) => {
            error!(error = %e, "cannot begin a storage transaction");
            for w in batch.drain(..) {
                fail(w);
            }
            return;
        }
    };
    let now = unix_ms();
    let mut done = Vec::with_capacity(batch.len());
    // Messages for local inboxes that other modules' jobs inserted, read back for the mailboxes;
    // `None` once a read-back failed, and then every mailbox is dropped after the commit.
    let mut arrived = Some(Vec::new());
    // Checked out of the statement cache once a batch, not once a message: the lookup hashes the
    // SQL text, and the return re-inserts it (checking it out per message cost 4.4% more of the
    // writer's instructions in callgrind).
    let mut insert = None;
    for w in batch.drain(..) {
        match w {
            Write::Messages(messages, reply) => {
                let r = messages
                    .into_iter()
                    .map(|m| {
                        let conversation = conversation_key(&m.sender, &m.recipient);
                        let insert = match &mut insert {
                            Some(insert) => insert,
                            None => insert.insert(tx.prepare_cached(INSERT_MESSAGE)?),
                        };
                        let seq = insert_message(&tx, insert, &m, &conversation)?;
                        history.postings.add(&conversation, Some(&m.recipient), seq);
                        Ok(Arc::new(StoredMessage { seq, message: m }))
                    })
                    .collect();
                done.push(Done::Messages(r, reply));
            }
            Write::Delivered(recipient, upto, reply) => {
                let r = deliver(&tx, &recipient, upto).map_err(StoreError::from);
                done.push(Done::Delivered(recipient, upto, r, reply));
            }
            Write::Token(t, reply) => {
                let r = tx
                    .prepare_cached(
                        "INSERT OR REPLACE INTO tokens (hash, user, created_at) VALUES (?1, ?2, ?3)",
                    )
                    .and_then(|mut s| s.execute(params![&t.hash[..], t.user, now]))
                    .map(drop)
                    .map_err(StoreError::from);
                done.push(Done::Unit(r, reply));
            }
            Write::DeleteTokens(hashes, reply) => {
                let r = (|| {
                    let mut s = tx.prepare_cached("DELETE FROM tokens WHERE hash = ?1")?;
                    for h in &hashes {
                        s.execute(params![&h[..]])?;
                    }
                    Ok::<(), rusqlite::Error>(())
                })()
                .map_err(StoreError::from);
                done.push(Done::Unit(r, reply));
            }
            Write::Group(g) => done.push(Done::Group(g.apply(&tx, now))),
            Write::Run(job) => {
                let before = newest_seq(&tx);
                done.push(Done::Run(job(&tx)));
                arrived = arrived.zip(before.ok()).and_then(|(mut arrived, before)| {
                    arrived.extend(
                        undelivered_since(&tx, before)
                            .ok()?
                            .into_iter()
                            .map(Arc::new),
                    );
                    Some(arrived)
                });
            }
        }
    }
    drop(insert);
    // In this transaction, so catching up costs no commit of its own. A failure leaves the index
    // behind, never wrong (`history` scans what is past `upto`), and fails no caller.
    let mut indexed = false;
    match history_due(&tx, history) {
        Ok(true) => {
            let r = tx
                .execute_batch("SAVEPOINT history")
                .and_then(|()| index_messages(&tx, &mut history.postings));
            let end = match r {
                Ok(n) => {
                    debug!(messages = n, "history index caught up");
                    indexed = true;
                    "RELEASE history"
                }
                Err(e) => {
                    error!(error = %e, "cannot update the history index");
                    "ROLLBACK TO history; RELEASE history"
                }
            };
            if let Err(e) = tx.execute_batch(end) {
                error!(error = %e, "cannot update the history index");
            }
        }
        Ok(false) => {}
        Err(e) => error!(error = %e, "cannot read the history index's position"),
    }
    if let Err(e) = tx.commit() {
        // Nothing of the batch is durable: every caller hears so, and no OK goes out.
        error!(error = %e, "storage commit failed");
        // Nor are the seqs noted for the history index; its next catch-up reads the messages.
        history.postings = Postings::default();
        for d in done {
            match d {
                Done::Messages(r, reply) => {
                    drop(reply.send(r.iter().map(|_| Err(StoreError::Stopped)).collect()));
                }
                Done::Unit(_, reply) | Done::Delivered(_, _, _, reply) => {
                    drop(reply.send(Err(StoreError::Stopped)));
                }
                Done::Group(f) => f.run(false),
                Done::Run(after) => after(false),
            }
        }
        return;
    }
    if indexed {
        history.last = std::time::Instant::now();
    }
    // Before any caller hears OK: a sender told its message is stored finds it in the mailbox.
    {
        let mut mailboxes = mailboxes.lock().unwrap_or_else(PoisonError::into_inner);
        match &arrived {
            Some(arrived) => arrived.iter().for_each(|m| mailboxes.committed(m)),
            None => mailboxes.clear(),
        }
        for d in &done {
            match d {
                Done::Messages(r, _) => r.iter().flatten().for_each(|m| mailboxes.committed(m)),
                Done::Delivered(recipient, upto, Ok(()), _) => {
                    mailboxes.delivered(recipient, *upto);
                }
                _ => {}
            }
        }
    }
    for d in done {
        match d {
            Done::Messages(r, reply) => drop(reply.send(r)),
            Done::Unit(r, reply) | Done::Delivered(_, _, r, reply) => drop(reply.send(r)),
            Done::Group(f) => f.run(true),
            Done::Run(after) => after(true),
        }
    }
}

fn fail(w: Write) {
    match w {
        Write::Messages(m, r) => drop(r.send(m.iter().map(|_| Err(StoreError::Stopped)).collect())),
        Write::Delivered(_, _, r) | Write::Token(_, r) | Write::DeleteTokens(_, r) => {
            drop(r.send(Err(StoreError::Stopped)));
        }
        Write::Group(g) => g.fail(),
        Write::Run(job) => drop(job),
    }
}

/// Moves `recipient`'s delivery cursor up to `upto` (never back), and drops the inbox index rows
/// that lie wholly behind it. One row a delivery, however many messages it carried, where
/// marking each message (`delivered_at`, before version 5) rewrote its row and changed the index
/// of undelivered messages twice.
fn deliver(conn: &Connection, recipient: &str, upto: i64) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO inbox_delivered (recipient, upto) VALUES (?1, ?2) \
         ON CONFLICT (recipient) DO UPDATE SET upto = max(upto, excluded.upto)",
    )?
    .execute(params![recipient, upto])?;
    conn.prepare_cached("DELETE FROM inbox_index WHERE recipient = ?1 AND last_seq <= ?2")?
        .execute(params![recipient, upto])?;
    Ok(())
}

/// Up to `limit` of `recipient`'s undelivered messages, oldest first, read in `conn`'s snapshot
/// (which must be one transaction: the writer moves the index and `upto` together): from the
/// inbox index, then from the few messages past it.
#[cfg(test)]
fn undelivered(
    conn: &Connection,
    recipient: &str,
    limit: usize,
) -> rusqlite::Result<Vec<StoredMessage>> {
    Ok(undelivered_within(conn, recipient, limit, usize::MAX)?.messages)
}

/// [`undelivered`], stopping before the text passes `max_bytes` (the first message whatever its
/// size): `cut` when that left some out.
fn undelivered_within(
    conn: &Connection,
    recipient: &str,
    limit: usize,
    max_bytes: usize,
) -> rusqlite::Result<Page<StoredMessage>> {
    let indexed: i64 = conn
        .prepare_cached("SELECT upto FROM history_indexed WHERE id = 0")?
        .query_row([], |r| r.get(0))?;
    let delivered: i64 = conn
        .prepare_cached("SELECT upto FROM inbox_delivered WHERE recipient = ?1")?
        .query_row([recipient], |r| r.get(0))
        .optional()?
        .unwrap_or(0);
    let mut taker = WindowTaker::new(Window {
        limit,
        before: None,
        max_bytes,
    });
    let mut taken = 0;
    let mut by_seq = conn.prepare_cached(&format!(
        "SELECT {MESSAGE_COLUMNS} FROM messages WHERE seq = ?1 AND delivered_at IS NULL"
    ))?;
    let mut postings = conn.prepare_cached(
        "SELECT seqs FROM inbox_index WHERE recipient = ?1 AND last_seq > ?2 ORDER BY last_seq",
    )?;
    let mut rows = postings.query(params![recipient, delivered])?;
    while taken < limit
        && let Some(row) = rows.next()?
    {
        let blob = row.get_ref(0)?.as_blob().map_err(rusqlite::Error::from)?;
        for seq in blob.chunks_exact(8) {
            let seq = i64::from_le_bytes(seq.try_into().unwrap_or_default());
            if seq > delivered
                && let Some(m) = by_seq.query_row([seq], message_row).optional()?
            {
                let len = m.message.body.len();
                if !taker.take(m, len) {
                    return Ok(taker.finish_as_taken());
                }
                taken += 1;
                if taken == limit {
                    return Ok(taker.finish_as_taken());
                }
            }
        }
    }
    let rest = limit - taken;
    if rest > 0 {
        // Not indexed yet: at most HISTORY_INDEX_EVERY messages (plus one batch), by `seq`.
        let mut tail = conn.prepare_cached(&format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages \
             WHERE seq > ?1 AND recipient = ?2 AND delivered_at IS NULL ORDER BY seq LIMIT ?3"
        ))?;
        let rows = tail.query_map(
            params![indexed.max(delivered), recipient, rest as i64],
            message_row,
        )?;
        for row in rows {
            let m = row?;
            let len = m.message.body.len();
            if !taker.take(m, len) {
                break;
            }
        }
    }
    Ok(taker.finish_as_taken())
}

const INSERT_MESSAGE: &str = "INSERT INTO messages (id, sender, sender_display, recipient, \
    recipient_display, conversation, body, sent_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)";

/// Runs `insert` ([`INSERT_MESSAGE`], prepared on `conn`) for `m`; returns its `seq`.
fn insert_message(
    conn: &Connection,
    insert: &mut rusqlite::Statement<'_>,
    m: &NewMessage,
    conversation: &str,
) -> StoreResult<i64> {
    insert.execute(params![
        &m.id.as_bytes()[..],
        m.sender,
        m.sender_display,
        m.recipient,
        m.recipient_display,
        conversation,
        m.body,
        m.sent_at
    ])?;
    Ok(conn.last_insert_rowid())
}

/// The newest message's `seq` (0 if none).
fn newest_seq(conn: &Connection) -> rusqlite::Result<i64> {
    // SQLite answers `max` of the rowid from the end of the table, not by a scan.
    conn.prepare_cached("SELECT max(seq) FROM messages")?
        .query_row([], |r| r.get::<_, Option<i64>>(0))
        .map(Option::unwrap_or_default)
}

/// The undelivered messages with a `seq` past `after`, oldest first.
fn undelivered_since(conn: &Connection, after: i64) -> rusqlite::Result<Vec<StoredMessage>> {
    conn.prepare_cached(&format!(
        "SELECT {MESSAGE_COLUMNS} FROM messages WHERE seq > ?1 AND delivered_at IS NULL \
         ORDER BY seq"
    ))?
    .query_map([after], message_row)?
    .collect()
}

/// `messages` (oldest first) as a page: at most `max_bytes` of text (the first whatever its
/// size); `cut` when that, or the read before (`read_cut`), left some out. Cut in place: this is
/// every `inbox`'s path.
fn within_bytes(
    mut messages: Vec<Arc<StoredMessage>>,
    read_cut: bool,
    max_bytes: usize,
) -> Page<Arc<StoredMessage>> {
    let mut bytes = 0usize;
    let keep = messages
        .iter()
        .position(|m| {
            bytes = bytes.saturating_add(m.message.body.len());
            bytes > max_bytes
        })
        .map_or(messages.len(), |over| over.max(1));
    let cut = read_cut || keep < messages.len();
    messages.truncate(keep);
    Page { messages, cut }
}

/// Reads a row selected with [`MESSAGE_COLUMNS`].
pub(crate) fn message_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<StoredMessage> {
    let id: Vec<u8> = row.get(1)?;
    Ok(StoredMessage {
        seq: row.get(0)?,
        message: NewMessage {
            id: uuid::Uuid::from_slice(&id).unwrap_or_default(),
            sender: row.get(2)?,
            sender_display: row.get(3)?,
            recipient: row.get(4)?,
            recipient_display: row.get(5)?,
            body: row.get(6)?,
            sent_at: row.get(7)?,
        },
    })
}

/// The columns [`message_row`] reads, in its order.
pub(crate) const MESSAGE_COLUMNS: &str =
    "seq, id, sender, sender_display, recipient, recipient_display, body, sent_at";

impl Store for SqliteStore {
    async fn users(&self) -> StoreResult<Vec<UserRecord>> {
        self.read(list_users).await
    }

    async fn tokens(&self) -> StoreResult<Vec<TokenRecord>> {
        self.read(|c| {
            let mut s = c.prepare("SELECT hash, user FROM tokens")?;
            let rows = s.query_map([], |r| {
                let h: Vec<u8> = r.get(0)?;
                Ok((h, r.get::<_, String>(1)?))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (h, user) = row?;
                if let Ok(hash) = <[u8; 32]>::try_from(h.as_slice()) {
                    out.push(TokenRecord { hash, user });
                }
            }
            Ok(out)
        })
        .await
    }

    async fn rehash_password(&self, name: &str, old: &str, new: &str) -> StoreResult<()> {
        let (name, old, new) = (name.to_owned(), old.to_owned(), new.to_owned());
        self.run_in_commit(move |c| {
            c.execute(
                "UPDATE users SET password_hash = ?1 WHERE name = ?2 AND password_hash = ?3",
                params![new, name, old],
            )?;
            Ok(())
        })
        .await
    }

    async fn insert_token(&self, token: TokenRecord) -> StoreResult<()> {
        self.write(|tx| Write::Token(token, tx)).await
    }

    async fn delete_tokens(&self, hashes: Vec<[u8; 32]>) -> StoreResult<()> {
        if hashes.is_empty() {
            return Ok(());
        }
        self.write(|tx| Write::DeleteTokens(hashes, tx)).await
    }

    async fn insert_message(&self, message: NewMessage) -> StoreResult<Arc<StoredMessage>> {
        self.insert_messages(vec![message])
            .await
            .pop()
            .unwrap_or(Err(StoreError::Stopped))
    }

    async fn insert_messages(
        &self,
        messages: Vec<NewMessage>,
    ) -> Vec<StoreResult<Arc<StoredMessage>>> {
        let n = messages.len();
        let (tx, rx) = oneshot::channel();
        if self
            .writes
            .send(Write::Messages(messages, tx))
            .await
            .is_err()
        {
            return (0..n).map(|_| Err(StoreError::Stopped)).collect();
        }
        rx.await
            .unwrap_or_else(|_| (0..n).map(|_| Err(StoreError::Stopped)).collect())
    }

    async fn pending(
        &self,
        recipient: &str,
        limit: usize,
        max_bytes: usize,
    ) -> StoreResult<Page<Arc<StoredMessage>>> {
        let lookup = self
            .mailboxes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .lookup(recipient, limit);
        let (load, read_limit) = match lookup {
            Lookup::Hit(messages) => return Ok(within_bytes(messages, false, max_bytes)),
            Lookup::Miss { load, read_limit } => (load, read_limit),
        };
        let owned = recipient.to_owned();
        // The mailbox was marked as loading before this read's snapshot: see `mailboxes`. The
        // read stops at `max_bytes` of text whatever it was to fill: a recipient with large
        // messages waiting is read from the database a reply's worth at a time.
        let read = self
            .read(move |c| {
                let tx = c.unchecked_transaction()?;
                let page = undelivered_within(&tx, &owned, read_limit, max_bytes)?;
                Ok((
                    page.messages.into_iter().map(Arc::new).collect::<Vec<_>>(),
                    page.cut,
                ))
            })
            .await;
        let mut mailboxes = self
            .mailboxes
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match (read, load) {
            (Ok((mut messages, cut)), load) => {
                if let Some(load) = load {
                    if cut {
                        // Not all of them: no exact copy to keep.
                        mailboxes.abandon(load);
                    } else {
                        mailboxes.finish_load(load, &messages);
                    }
                }
                // A read that was to fill the mailbox may hold more than asked for.
                let cut = cut && messages.len() <= limit;
                messages.truncate(limit);
                Ok(within_bytes(messages, cut, max_bytes))
            }
            (Err(e), Some(load)) => {
                mailboxes.abandon(load);
                Err(e)
            }
            (Err(e), None) => Err(e),
        }
    }

    async fn mark_delivered(&self, recipient: &str, upto_seq: i64) -> StoreResult<()> {
        let recipient = recipient.to_owned();
        self.write(|tx| Write::Delivered(recipient, upto_seq, tx))
            .await
    }

    async fn conversation(
        &self,
        a: &str,
        b: &str,
        window: Window,
    ) -> StoreResult<Page<StoredMessage>> {
        let key = conversation_key(a, b);
        self.read(move |c| {
            // One snapshot for all three reads: the writer moves `upto` and the index together.
            let tx = c.unchecked_transaction()?;
            let upto: i64 =
                tx.query_row("SELECT upto FROM history_indexed WHERE id = 0", [], |r| {
                    r.get(0)
                })?;
            let before = window.before_seq();
            let mut taker = WindowTaker::new(window);
            let mut taken = 0;
            // The newest messages, not indexed yet: at most HISTORY_INDEX_EVERY rows (plus
            // one batch), walked backwards by `seq`.
            {
                let mut tail = tx.prepare_cached(&format!(
                    "SELECT {MESSAGE_COLUMNS} FROM messages \
                     WHERE seq > ?1 AND seq < ?2 AND conversation = ?3 ORDER BY seq DESC LIMIT ?4"
                ))?;
                for row in
                    tail.query_map(params![upto, before, key, window.limit as i64], message_row)?
                {
                    let m = row?;
                    let len = m.message.body.len();
                    if !taker.take(m, len) {
                        return Ok(taker.finish());
                    }
                    taken += 1;
                }
            }
            let rest = window.limit.saturating_sub(taken);
            if rest > 0 {
                let mut seqs = Vec::with_capacity(rest.min(4096));
                let mut postings = tx.prepare_cached(
                    "SELECT seqs FROM history_index WHERE conversation = ?1 AND last_seq <= ?2 \
                     ORDER BY last_seq DESC",
                )?;
                let mut rows = postings.query(params![key, upto])?;
                'postings: while let Some(row) = rows.next()? {
                    let blob = row.get_ref(0)?.as_blob().map_err(rusqlite::Error::from)?;
                    for seq in blob.rchunks_exact(8) {
                        if seqs.len() == rest {
                            break 'postings;
                        }
                        let seq = i64::from_le_bytes(seq.try_into().unwrap_or_default());
                        if seq < before {
                            seqs.push(seq);
                        }
                    }
                }
                let mut by_seq = tx.prepare_cached(&format!(
                    "SELECT {MESSAGE_COLUMNS} FROM messages WHERE seq = ?1"
                ))?;
                for seq in seqs {
                    let m = by_seq.query_row([seq], message_row)?;
                    let len = m.message.body.len();
                    if !taker.take(m, len) {
                        break;
                    }
                }
            }
            Ok(taker.finish())
        })
        .await
    }
}

/// Every user, by name (offline tools and the server's start-up).
pub fn list_users(conn: &Connection) -> StoreResult<Vec<UserRecord>> {
    let mut s =
        conn.prepare("SELECT name, display_name, password_hash FROM users ORDER BY name")?;
    let rows = s.query_map([], |r| {
        Ok(UserRecord {
            name: r.get(0)?,
            display_name: r.get(1)?,
            password_hash: r.get(2)?,
        })
    })?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

/// Adds a user; refuses a name that exists.
pub fn add_user(conn: &Connection, user: &UserRecord) -> StoreResult<()> {
    let exists: Option<i64> = conn
        .query_row("SELECT 1 FROM users WHERE name = ?1", [&user.name], |r| {
            r.get(0)
        })
        .optional()?;
    if exists.is_some() {
        return Err(StoreError::UserExists(user.name.clone()));
    }
    conn.execute(
        "INSERT INTO users (name, display_name, password_hash, created_at) VALUES (?1, ?2, ?3, ?4)",
        params![user.name, user.display_name, user.password_hash, unix_ms()],
    )?;
    Ok(())
}

/// Replaces a user's password hash and ends all their sessions.
pub fn set_password(conn: &mut Connection, name: &str, hash: &str) -> StoreResult<()> {
    let tx = conn.transaction()?;
    let n = tx.execute(
        "UPDATE users SET password_hash = ?1 WHERE name = ?2",
        params![hash, name],
    )?;
    if n == 0 {
        return Err(StoreError::NoSuchUser(name.to_owned()));
    }
    tx.execute("DELETE FROM tokens WHERE user = ?1", [name])?;
    tx.commit()?;
    Ok(())
}

/// Deletes a user and their sessions; their messages stay in others' history.
pub fn delete_user(conn: &mut Connection, name: &str) -> StoreResult<()> {
    let tx = conn.transaction()?;
    let n = tx.execute("DELETE FROM users WHERE name = ?1", [name])?;
    if n == 0 {
        return Err(StoreError::NoSuchUser(name.to_owned()));
    }
    tx.execute("DELETE FROM tokens WHERE user = ?1", [name])?;
    tx.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_writer_thread_runs_under_sched_batch() {
        // Where it cannot be done (the tests run under `nice`, or a sandbox refuses the call),
        // the writer keeps the default policy: find out on a thread of our own.
        if !std::thread::spawn(wake_without_preempting).join().unwrap() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path(), Synchronous::Full, 16).unwrap();
        // The thread has set its policy once it has committed something.
        send(&store, "amy", "bob", "hi").await;
        // Field 41 of /proc/<pid>/task/<tid>/stat is the scheduling policy; 3 is SCHED_BATCH.
        // Other tests' stores run writers of their own in this process, one perhaps just started
        // and not yet switched: ours, which has committed, is among those that say 3.
        let mut batch = 0;
        for task in std::fs::read_dir("/proc/self/task").unwrap() {
            let task = task.unwrap().path();
            let comm = std::fs::read_to_string(task.join("comm")).unwrap_or_default();
            if comm.trim() != "chat-db-writer" {
                continue;
            }
            let stat = std::fs::read_to_string(task.join("stat")).unwrap_or_default();
            // The command name, in parentheses, may hold spaces: count fields after it.
            let Some((_, fields)) = stat.rsplit_once(") ") else {
                continue;
            };
            if fields.split(' ').nth(41 - 3) == Some("3") {
                batch += 1;
            }
        }
        assert!(batch >= 1, "no storage writer runs under SCHED_BATCH");
        drop(store);
    }

    #[tokio::test]
    async fn a_new_reader_does_not_queue_for_the_write_lock() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path(), Synchronous::Full, 16).unwrap();
        // Another connection holds the write lock, as the writer does batch after batch under
        // load. The store has no reader yet, so this read opens one.
        let holder = Connection::open(dir.path().join(DB_FILE)).unwrap();
        holder.execute_batch("BEGIN IMMEDIATE").unwrap();
        // Far below the 10 s busy timeout a reader that wanted the lock would wait.
        let read = tokio::time::timeout(
            std::time::Duration::from_secs(2),
            store.pending("nobody", 10, usize::MAX),
        )
        .await;
        assert!(
            matches!(read, Ok(Ok(ref m)) if m.messages.is_empty()),
            "the read waited for the write lock: {read:?}"
        );
        holder.execute_batch("ROLLBACK").unwrap();
    }

    #[test]
    fn start_up_failures_name_the_file_and_say_what_failed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DB_FILE);
        let failure = |code| {
            StoreError::Sqlite(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(code),
                None,
            ))
        };
        let probe = Some(dir.path());
        let read = diagnose(failure(rusqlite::ffi::SQLITE_IOERR_READ), probe, &path);
        assert!(
            matches!(&read, StoreError::Read { path: p, .. } if *p == path),
            "{read}"
        );
        assert!(read.to_string().starts_with("cannot read "), "{read}");
        let short = diagnose(failure(rusqlite::ffi::SQLITE_IOERR_SHORT_READ), None, &path);
        assert!(matches!(short, StoreError::Read { .. }), "{short}");
        // A write that failed where there is room is a write error, not a full disk.
        let write = diagnose(failure(rusqlite::ffi::SQLITE_IOERR_SHMSIZE), probe, &path);
        assert!(matches!(write, StoreError::Write { .. }), "{write}");
        // Without a probe (a read at run time) a failed write stays as SQLite said it.
        let unprobed = diagnose(failure(rusqlite::ffi::SQLITE_IOERR_SHMSIZE), None, &path);
        assert!(matches!(unprobed, StoreError::Sqlite(_)), "{unprobed}");
        let corrupt = diagnose(failure(rusqlite::ffi::SQLITE_CORRUPT), None, &path);
        assert!(
            corrupt.to_string().contains(&*path.to_string_lossy()),
            "{corrupt}"
        );
        let busy = diagnose(failure(rusqlite::ffi::SQLITE_BUSY), probe, &path);
        assert!(matches!(busy, StoreError::Sqlite(_)), "{busy}");
        assert!(!dir.path().join(".jaring-space-probe").exists());
    }

    fn message(from: &str, to: &str, body: &str) -> NewMessage {
        NewMessage {
            id: uuid::Uuid::now_v7(),
            sender: from.into(),
            sender_display: from.into(),
            recipient: to.into(),
            recipient_display: to.into(),
            body: body.into(),
            sent_at: 0,
        }
    }

    async fn send(store: &SqliteStore, from: &str, to: &str, body: &str) {
        store.insert_message(message(from, to, body)).await.unwrap();
    }

    fn window(limit: usize) -> Window {
        Window {
            limit,
            before: None,
            max_bytes: usize::MAX,
        }
    }

    async fn history(store: &SqliteStore, limit: usize) -> Vec<String> {
        let found = store
            .conversation("bob", "amy", window(limit))
            .await
            .unwrap();
        assert!(!found.cut);
        found.messages.into_iter().map(|m| m.message.body).collect()
    }

    /// An inbox read stops at its byte limit, from the database (no mailbox is kept from a read
    /// cut short) and from a mailbox alike, and says that it stopped.
    #[tokio::test]
    async fn an_inbox_read_stops_at_its_byte_limit() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path(), Synchronous::Normal, 16).unwrap();
        for i in 0..10 {
            send(&store, "amy", "bob", &format!("{i}{}", "x".repeat(599))).await;
        }
        let read = |max_bytes| store.pending("bob", 100, max_bytes);
        let first: Vec<i64> = (1..=10).collect();
        let seqs =
            |p: &Page<Arc<StoredMessage>>| p.messages.iter().map(|m| m.seq).collect::<Vec<_>>();
        for _ in 0..2 {
            // 1,500 bytes hold two of the 600-byte messages; the first always comes.
            let cut = read(1500).await.unwrap();
            assert_eq!(seqs(&cut), first[..2]);
            assert!(cut.cut);
            let one = read(10).await.unwrap();
            assert_eq!(seqs(&one), first[..1]);
            assert!(one.cut);
        }
        // A whole read fills the mailbox; reads from it stop at their limit the same way.
        let all = read(usize::MAX).await.unwrap();
        assert_eq!(seqs(&all), first);
        assert!(!all.cut);
        let cut = read(1500).await.unwrap();
        assert_eq!(seqs(&cut), first[..2]);
        assert!(cut.cut);
        store.mark_delivered("bob", 2).await.unwrap();
        assert_eq!(seqs(&read(1500).await.unwrap()), first[2..4]);
    }

    /// A history window walks back from its cursor, through the unindexed tail and the index,
    /// and stops at its byte limit with the page marked cut.
    #[tokio::test]
    async fn history_pages_back_by_cursor_and_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path(), Synchronous::Normal, 16).unwrap();
        for i in 0..10 {
            if i == 6 {
                // The commit after this pause indexes what came before: the pages below cross
                // from the unindexed tail into the index.
                tokio::time::sleep(HISTORY_INDEX_AFTER + std::time::Duration::from_millis(100))
                    .await;
            }
            send(&store, "amy", "bob", &format!("m{i}")).await;
        }
        let page = |before, max_bytes| {
            store.conversation(
                "bob",
                "amy",
                Window {
                    limit: 4,
                    before,
                    max_bytes,
                },
            )
        };
        let newest = page(None, usize::MAX).await.unwrap();
        let bodies = |p: &Page<StoredMessage>| -> Vec<String> {
            p.messages.iter().map(|m| m.message.body.clone()).collect()
        };
        assert_eq!(bodies(&newest), ["m6", "m7", "m8", "m9"]);
        assert!(!newest.cut);
        let older = page(Some(newest.messages[0].seq), usize::MAX)
            .await
            .unwrap();
        assert_eq!(bodies(&older), ["m2", "m3", "m4", "m5"]);
        // Each body is 2 bytes: 5 bytes hold two of the three left, and the page says it was cut.
        let cut = page(Some(older.messages[1].seq), 5).await.unwrap();
        assert_eq!(bodies(&cut), ["m1", "m2"]);
        assert!(cut.cut);
        let last = page(Some(cut.messages[0].seq), 5).await.unwrap();
        assert_eq!(bodies(&last), ["m0"]);
        assert!(!last.cut);
        // The first message always comes, whatever its size.
        let one = page(None, 0).await.unwrap();
        assert_eq!(bodies(&one), ["m9"]);
        assert!(one.cut);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_reads_at_once_share_a_few_reader_connections() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path(), Synchronous::Full, 16).unwrap();
        send(&store, "amy", "bob", "hi").await;
        // Slow reads, so that without the limit every one would hold a connection at once.
        let reads: Vec<_> = (0..50)
            .map(|_| {
                let store = store.clone();
                tokio::spawn(async move {
                    store
                        .read_with(|c| {
                            std::thread::sleep(std::time::Duration::from_millis(10));
                            Ok(c.query_row("SELECT count(*) FROM messages", [], |r| {
                                r.get::<_, i64>(0)
                            })?)
                        })
                        .await
                })
            })
            .collect();
        for read in reads {
            assert_eq!(read.await.unwrap().unwrap(), 1);
        }
        let opened = store
            .readers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len();
        assert!(
            (1..=MAX_READERS).contains(&opened),
            "{opened} reader connections"
        );
    }

    /// The bodies of `to`'s undelivered messages, as the store answers and as the database holds
    /// them; the two must agree.
    async fn inbox(store: &SqliteStore, dir: &Path, to: &str) -> Vec<String> {
        let answered: Vec<String> = store
            .pending(to, 100, usize::MAX)
            .await
            .unwrap()
            .messages
            .into_iter()
            .map(|m| m.message.body.clone())
            .collect();
        let db = open_reader(dir).unwrap();
        let mut s = db
            .prepare(
                "SELECT body FROM messages WHERE recipient = ?1 AND delivered_at IS NULL \
                 AND seq > coalesce((SELECT upto FROM inbox_delivered WHERE recipient = ?1), 0) \
                 ORDER BY seq",
            )
            .unwrap();
        let stored: Vec<String> = s
            .query_map([to], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(answered, stored, "the inbox and the database disagree");
        answered
    }

    #[tokio::test]
    async fn an_inbox_kept_in_memory_follows_every_commit() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path(), Synchronous::Full, 16).unwrap();
        send(&store, "amy", "bob", "before").await;
        // The first read fills bob's mailbox; from then on the writer keeps it.
        assert_eq!(inbox(&store, dir.path(), "bob").await, ["before"]);
        send(&store, "amy", "bob", "after").await;
        send(&store, "amy", "cat", "not bob's").await;
        assert_eq!(inbox(&store, dir.path(), "bob").await, ["before", "after"]);
        let first = store.pending("bob", 1, usize::MAX).await.unwrap().messages;
        assert_eq!(first.len(), 1, "the limit holds in memory too");
        store.mark_delivered("bob", first[0].seq).await.unwrap();
        assert_eq!(inbox(&store, dir.path(), "bob").await, ["after"]);
        // Another module's job (a federation link storing an incoming message) inserts rows
        // itself, in the writer's transaction: the mailbox hears of them all the same.
        store
            .run_in_commit(|c| {
                c.execute(
                    "INSERT INTO messages (id, sender, sender_display, recipient, \
                     recipient_display, conversation, body, sent_at) \
                     VALUES (?1, 'zed@far', 'zed', 'bob', 'bob', 'x', 'from afar', 0)",
                    [&uuid::Uuid::now_v7().as_bytes()[..]],
                )?;
                Ok(())
            })
            .await
            .unwrap();
        assert_eq!(
            inbox(&store, dir.path(), "bob").await,
            ["after", "from afar"]
        );
        // A job that fails leaves nothing behind, in the database or in memory.
        let failed = store
            .run_in_commit(|c| {
                c.execute(
                    "INSERT INTO messages (id, sender, sender_display, recipient, \
                     recipient_display, conversation, body, sent_at) \
                     VALUES (x'00', 'zed@far', 'zed', 'bob', 'bob', 'x', 'undone', 0)",
                    [],
                )?;
                Err::<(), _>(StoreError::Stopped)
            })
            .await;
        assert!(failed.is_err());
        assert_eq!(
            inbox(&store, dir.path(), "bob").await,
            ["after", "from afar"]
        );
    }

    #[tokio::test]
    async fn history_reads_the_index_and_the_unindexed_tail_as_one() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path(), Synchronous::Full, 16).unwrap();
        for i in 0..5 {
            send(&store, "amy", "bob", &format!("old {i}")).await;
            send(&store, "amy", "cat", "elsewhere").await;
        }
        // The writer indexes in bulk; make it do so now, as it would after a while.
        let indexed = store
            .run_in_commit(|c| {
                index_messages(c, &mut Postings::default()).map_err(StoreError::from)
            })
            .await
            .unwrap();
        assert_eq!(indexed, 10);
        for i in 0..3 {
            send(&store, "bob", "amy", &format!("new {i}")).await;
            send(&store, "cat", "amy", "elsewhere").await;
        }
        let all = [
            "old 0", "old 1", "old 2", "old 3", "old 4", "new 0", "new 1", "new 2",
        ];
        assert_eq!(history(&store, 100).await, all);
        // Limits that end in the tail, at its edge, and inside the indexed part.
        assert_eq!(history(&store, 2).await, all[6..]);
        assert_eq!(history(&store, 3).await, all[5..]);
        assert_eq!(history(&store, 5).await, all[3..]);
    }

    #[tokio::test]
    async fn the_writer_indexes_history_once_enough_messages_wait() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path(), Synchronous::Full, 16).unwrap();
        let n = HISTORY_INDEX_EVERY as usize + 10;
        let burst = (0..n)
            .map(|i| {
                let (from, to) = if i % 2 == 0 {
                    ("amy", "bob")
                } else {
                    ("cat", "amy")
                };
                message(from, to, &format!("{i}"))
            })
            .collect();
        assert!(store.insert_messages(burst).await.iter().all(Result::is_ok));
        // One batch, committed together with its own catch-up.
        let conn = Connection::open(dir.path().join(DB_FILE)).unwrap();
        let (rows, entries, upto): (i64, i64, i64) = conn
            .query_row(
                "SELECT count(*), sum(length(seqs)) / 8, (SELECT upto FROM history_indexed) \
                 FROM history_index",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        assert_eq!((rows, entries, upto), (2, n as i64, n as i64));
        let expected: Vec<String> = (0..n).step_by(2).map(|i| i.to_string()).collect();
        assert_eq!(history(&store, n).await, expected);
        assert_eq!(history(&store, 3).await, expected[expected.len() - 3..]);
    }

    /// Bodies of `to`'s undelivered messages as the database gives them to a first `inbox` (no
    /// mailbox in memory), `limit` at a time, each step delivered through `store` before the next.
    async fn read_inbox_in_steps(
        store: &SqliteStore,
        dir: &Path,
        to: &str,
        limit: usize,
    ) -> Vec<String> {
        let db = open_reader(dir).unwrap();
        let mut got = Vec::new();
        loop {
            let step = undelivered(&db.unchecked_transaction().unwrap(), to, limit).unwrap();
            let Some(last) = step.last() else {
                return got;
            };
            assert!(step.len() <= limit);
            store.mark_delivered(to, last.seq).await.unwrap();
            got.extend(step.iter().map(|m| m.message.body.clone()));
        }
    }

    #[tokio::test]
    async fn a_first_inbox_reads_the_inbox_index_and_the_messages_past_it() {
        let dir = tempfile::tempdir().unwrap();
        let n = HISTORY_INDEX_EVERY as usize + 40;
        let store = SqliteStore::open(dir.path(), Synchronous::Full, 16).unwrap();
        // Interleaved with another recipient's, so bob's index rows hold every other seq. One
        // batch, indexed in its own commit.
        let burst = (0..n)
            .map(|i| {
                let to = if i % 2 == 0 { "bob" } else { "cat" };
                message("amy", to, &format!("{i}"))
            })
            .collect();
        assert!(store.insert_messages(burst).await.iter().all(Result::is_ok));
        // Past the index (unless a second goes by first): found by scanning.
        for i in n..n + 6 {
            send(&store, "amy", "bob", &i.to_string()).await;
        }
        let bob: Vec<String> = (0..n + 6)
            .filter(|i| *i >= n || i % 2 == 0)
            .map(|i| i.to_string())
            .collect();
        // Steps that end inside an index row, at its end, and inside the unindexed tail.
        let mut got = read_inbox_in_steps(&store, dir.path(), "bob", 7).await;
        assert_eq!(got, bob);
        store.mark_delivered("bob", 0).await.unwrap();
        assert!(
            read_inbox_in_steps(&store, dir.path(), "bob", 7)
                .await
                .is_empty(),
            "a cursor never moves back"
        );
        got = read_inbox_in_steps(&store, dir.path(), "cat", 7).await;
        assert_eq!(
            got,
            (1..n).step_by(2).map(|i| i.to_string()).collect::<Vec<_>>()
        );
        // Everything delivered: the index rows behind the cursors are gone, and stay gone when
        // the catch-up (a second later, with the next commit) indexes bob's tail, which was read
        // before it was indexed; a restarted store has nothing to deliver.
        tokio::time::sleep(HISTORY_INDEX_AFTER + std::time::Duration::from_millis(100)).await;
        send(&store, "amy", "dan", "after the catch-up").await;
        let conn = Connection::open(dir.path().join(DB_FILE)).unwrap();
        let rows: i64 = conn
            .query_row(
                "SELECT count(*) FROM inbox_index WHERE recipient != 'dan'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(rows, 0);
        drop(store);
        let store = SqliteStore::open(dir.path(), Synchronous::Full, 16).unwrap();
        assert!(
            store
                .pending("bob", 10, usize::MAX)
                .await
                .unwrap()
                .messages
                .is_empty()
        );
        assert!(
            store
                .pending("cat", 10, usize::MAX)
                .await
                .unwrap()
                .messages
                .is_empty()
        );
    }

    #[tokio::test]
    async fn a_partly_read_inbox_is_read_on_from_the_database_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let n = HISTORY_INDEX_EVERY as usize + 40;
        {
            let store = SqliteStore::open(dir.path(), Synchronous::Full, 16).unwrap();
            let burst = (0..n)
                .map(|i| message("amy", "bob", &i.to_string()))
                .collect();
            assert!(store.insert_messages(burst).await.iter().all(Result::is_ok));
            let first = store
                .pending("bob", 100, usize::MAX)
                .await
                .unwrap()
                .messages;
            store
                .mark_delivered("bob", first.last().unwrap().seq)
                .await
                .unwrap();
        }
        let store = SqliteStore::open(dir.path(), Synchronous::Full, 16).unwrap();
        let rest: Vec<String> = (100..n).map(|i| i.to_string()).collect();
        assert_eq!(
            read_inbox_in_steps(&store, dir.path(), "bob", 333).await,
            rest
        );
    }

    /// A database in `dir` with today's schema taken back to an older version by `downgrade`.
    fn older_version(dir: &Path, downgrade: &str) -> Connection {
        let conn = open(dir, Synchronous::Full).unwrap();
        conn.execute_batch(downgrade).unwrap();
        conn
    }

    #[tokio::test]
    async fn a_version_4_database_keeps_what_each_inbox_delivered() {
        let dir = tempfile::tempdir().unwrap();
        {
            // Version 4: messages marked delivered one by one, an index of the undelivered ones,
            // no inbox tables.
            let conn = older_version(
                dir.path(),
                "DROP TABLE inbox_index; DROP TABLE inbox_delivered; \
                 CREATE INDEX messages_pending ON messages(recipient, seq) \
                     WHERE delivered_at IS NULL; \
                 PRAGMA user_version = 4;",
            );
            let mut insert = conn.prepare(INSERT_MESSAGE).unwrap();
            for (from, to, body) in [
                ("amy", "bob", "b0"),
                ("amy", "cat", "c0"),
                ("amy", "bob", "b1"),
                ("amy", "bob", "b2"),
                ("amy", "cat", "c1"),
            ] {
                let m = message(from, to, body);
                insert_message(&conn, &mut insert, &m, &conversation_key(from, to)).unwrap();
            }
            // bob read b0 and b1, cat read everything; dan never had mail.
            conn.execute_batch(
                "UPDATE messages SET delivered_at = 1 WHERE body IN ('b0', 'b1', 'c0', 'c1')",
            )
            .unwrap();
        }
        let store = SqliteStore::open(dir.path(), Synchronous::Full, 16).unwrap();
        assert_eq!(inbox(&store, dir.path(), "bob").await, ["b2"]);
        assert!(inbox(&store, dir.path(), "cat").await.is_empty());
        assert!(inbox(&store, dir.path(), "dan").await.is_empty());
        send(&store, "amy", "cat", "c2").await;
        assert_eq!(inbox(&store, dir.path(), "cat").await, ["c2"]);
        // History was indexed anew and still holds every message, delivered or not.
        assert_eq!(
            store
                .conversation("amy", "bob", window(10))
                .await
                .unwrap()
                .messages
                .len(),
            3,
            "history of amy and bob"
        );
        let conn = Connection::open(dir.path().join(DB_FILE)).unwrap();
        let pending_index: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE name = 'messages_pending'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(pending_index, 0);
    }

    #[tokio::test]
    async fn a_message_from_another_realm_is_stored_once_however_often_it_arrives() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path(), Synchronous::Full, 16).unwrap();
        let incoming = message("zed@far", "bob", "hello from afar");
        let first = crate::federation::store::receive(&store, vec![incoming.clone()]);
        assert_eq!(first.await.unwrap(), 1);
        // The link lost the acknowledgement and sent it again.
        let again = crate::federation::store::receive(&store, vec![incoming]);
        assert_eq!(again.await.unwrap(), 0, "a retry is not stored twice");
        assert_eq!(inbox(&store, dir.path(), "bob").await, ["hello from afar"]);
    }

    #[tokio::test]
    async fn a_version_2_database_loses_the_unique_index_on_every_message_id() {
        let dir = tempfile::tempdir().unwrap();
        // Came over a federation link before the upgrade; its retry must still be a duplicate.
        let from_afar = message("zed@far", "cat", "hello from afar");
        {
            let conn = Connection::open(dir.path().join(DB_FILE)).unwrap();
            // Version 2's messages table, with a counter ahead of the newest row, as AUTOINCREMENT
            // allows.
            conn.execute_batch(
                "CREATE TABLE messages (
                     seq INTEGER PRIMARY KEY AUTOINCREMENT,
                     id BLOB NOT NULL UNIQUE,
                     sender TEXT NOT NULL,
                     sender_display TEXT NOT NULL,
                     recipient TEXT NOT NULL,
                     recipient_display TEXT NOT NULL,
                     conversation TEXT NOT NULL,
                     body TEXT NOT NULL,
                     sent_at INTEGER NOT NULL,
                     delivered_at INTEGER
                 );
                 PRAGMA user_version = 2;",
            )
            .unwrap();
            let mut insert = conn.prepare(INSERT_MESSAGE).unwrap();
            for i in 0..3 {
                let m = message("amy", "bob", &format!("m{i}"));
                insert_message(&conn, &mut insert, &m, &conversation_key("amy", "bob")).unwrap();
            }
            insert_message(&conn, &mut insert, &from_afar, "x").unwrap();
            conn.execute("UPDATE sqlite_sequence SET seq = 10", [])
                .unwrap();
        }
        let store = SqliteStore::open(dir.path(), Synchronous::Full, 16).unwrap();
        let conn = Connection::open(dir.path().join(DB_FILE)).unwrap();
        let indexes: Vec<String> = conn
            .prepare(
                "SELECT name FROM sqlite_master WHERE tbl_name = 'messages' AND type = 'index' \
                 ORDER BY name",
            )
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(indexes.is_empty(), "{indexes:?}");
        assert_eq!(inbox(&store, dir.path(), "bob").await, ["m0", "m1", "m2"]);
        let retry = crate::federation::store::receive(&store, vec![from_afar]);
        assert_eq!(
            retry.await.unwrap(),
            0,
            "a retry from before the upgrade is a duplicate"
        );
        assert_eq!(inbox(&store, dir.path(), "cat").await, ["hello from afar"]);
        let seqs: Vec<i64> = store
            .pending("bob", 10, usize::MAX)
            .await
            .unwrap()
            .messages
            .iter()
            .map(|m| m.seq)
            .collect();
        assert_eq!(seqs, [1, 2, 3], "every seq kept");
        assert_eq!(
            conn.pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0))
                .unwrap(),
            5
        );
        let next = store
            .insert_message(message("amy", "bob", "m3"))
            .await
            .unwrap();
        assert_eq!(
            next.seq, 11,
            "the AUTOINCREMENT counter kept: no seq is reused"
        );
    }

    #[tokio::test]
    async fn a_version_1_database_is_indexed_for_history_when_opened() {
        let dir = tempfile::tempdir().unwrap();
        {
            // Version 1: an index on messages(conversation, seq), no history_index.
            let conn = older_version(
                dir.path(),
                "DROP TABLE history_index; DROP TABLE history_indexed; \
                 CREATE INDEX messages_conversation ON messages(conversation, seq); \
                 PRAGMA user_version = 1;",
            );
            for i in 0..4 {
                let m = message("amy", "bob", &format!("m{i}"));
                let mut insert = conn.prepare(INSERT_MESSAGE).unwrap();
                insert_message(&conn, &mut insert, &m, &conversation_key("amy", "bob")).unwrap();
            }
        }
        let store = SqliteStore::open(dir.path(), Synchronous::Full, 16).unwrap();
        let conn = Connection::open(dir.path().join(DB_FILE)).unwrap();
        let old_index: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE name = 'messages_conversation'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(old_index, 0);
        let (indexed, upto): (i64, i64) = conn
            .query_row(
                "SELECT (SELECT length(seqs) / 8 FROM history_index), upto FROM history_indexed",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!((indexed, upto), (4, 4));
        assert_eq!(history(&store, 10).await, ["m0", "m1", "m2", "m3"]);
    }
}
