//! The database file: its schema (`PRAGMA user_version` = 7), opening it with its pragmas and a
//! start-up integrity check, moving a database of an older version over, telling start-up
//! failures apart (damage, a full disk, a failed read or write), and the data directory's lock.
//! The tables and the history of each version: `docs/design/storage.md#schema-and-migrations`.

use std::fs::File;
use std::path::Path;

use jaring_chat::config::Synchronous;
use rusqlite::{Connection, OptionalExtension as _};

use crate::error::{Error, SqlResult};
use crate::index::{Postings, index_messages};

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
    created_at INTEGER NOT NULL,
    bench INTEGER NOT NULL DEFAULT 0
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
    kind INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (peer, seq)
) WITHOUT ROWID;
PRAGMA user_version = 7;
"
);

/// Problems the start-up integrity check lists at most; past it the rest go unlisted (the first
/// few tell the operator the file is damaged, which is all they need to act).
pub const DEFAULT_QUICK_CHECK_ERRORS: u32 = 5;

/// Bytes the space probe writes (and removes) after a failed write at start, to tell a full disk
/// from another failure: more than SQLite writes at once (a page, or 32 KiB of `-shm`).
const SPACE_PROBE_BYTES: usize = 1 << 20;

/// Opens (creating if needed) the database in `dir` with the schema and pragmas.
///
/// Refuses, each with an error naming the file and what to do: a `chat.db` that exists but is
/// empty ([`Error::Empty`]; a new data directory has no `chat.db` yet, so it is never
/// refused), a damaged one (`PRAGMA quick_check` at every open: [`Error::Corrupt`]), a full
/// disk ([`Error::NoSpace`]) and other read or write failures ([`Error::Read`],
/// [`Error::Write`]).
pub fn open(dir: &Path, sync: Synchronous) -> SqlResult<Connection> {
    std::fs::create_dir_all(dir).map_err(|source| Error::DataDir {
        path: dir.to_owned(),
        source,
    })?;
    let path = dir.join(DB_FILE);
    match std::fs::metadata(&path) {
        Ok(m) if m.len() == 0 => return Err(Error::Empty(path)),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(Error::DataDir {
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
pub(crate) fn diagnose(e: Error, probe_dir: Option<&Path>, path: &Path) -> Error {
    use rusqlite::ffi::{self, ErrorCode};
    let (code, extended) = match &e {
        Error::Sqlite(rusqlite::Error::SqliteFailure(f, _)) => (f.code, f.extended_code),
        _ => return e,
    };
    let Error::Sqlite(source) = e else {
        return e;
    };
    let path = path.to_owned();
    match code {
        ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase => Error::Corrupt {
            detail: source.to_string(),
            path,
        },
        ErrorCode::DiskFull => Error::NoSpace {
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
            Error::Read { path, source }
        }
        // SQLite does not say why a write failed (a full disk shows as SQLITE_IOERR_SHMSIZE,
        // say), so try writing there the same way.
        ErrorCode::SystemIoFailure if probe_dir.is_some() => {
            match probe_dir.and_then(out_of_space) {
                Some(space) => Error::NoSpace {
                    path,
                    source: space,
                },
                None => Error::Write { path, source },
            }
        }
        _ => Error::Sqlite(source),
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
/// that indexes match their tables: that is the much slower `integrity_check`). O(database), at
/// every open: what it costs, `docs/design/storage.md#opening-and-start-up-checks`.
fn quick_check(conn: &Connection, path: &Path) -> SqlResult<()> {
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
    Err(Error::Corrupt {
        path: path.to_owned(),
        detail: format!("integrity check: {}", detail.replace('\n', "; ")),
    })
}

/// [`open`] once the file is known not to be empty.
fn open_checked(path: &Path, sync: Synchronous) -> SqlResult<Connection> {
    let conn = Connection::open(path)?;
    configure(&conn)?;
    quick_check(&conn, path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // Statement and savepoint journals in memory, not spilled to a temporary file past 64 KiB
    // (docs/design/storage.md#pragmas).
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
    federation::migrate(&tx, version)?;
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
    if version < 7 {
        add_bench(&tx)?;
    }
    // A database written by an older version (or a crash before the writer's last catch-up)
    // may hold unindexed messages: index them now, so neither `history` nor a first `inbox`
    // scans more than a few.
    index_messages(&tx, &mut Postings::default())?;
    tx.commit()?;
    Ok(conn)
}

/// Adds `users.bench` (version 7: the bench users `jaring bench` makes) to an older database,
/// whose users are all real ones.
fn add_bench(conn: &Connection) -> rusqlite::Result<()> {
    let has: bool = conn.query_row(
        "SELECT count(*) > 0 FROM pragma_table_info('users') WHERE name = 'bench'",
        [],
        |r| r.get(0),
    )?;
    if !has {
        conn.execute_batch("ALTER TABLE users ADD COLUMN bench INTEGER NOT NULL DEFAULT 0")?;
    }
    Ok(())
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
fn drop_unique_id(conn: &Connection) -> SqlResult<()> {
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

/// What every connection, the writer's and each reader's, is set up with.
pub(crate) fn configure(conn: &Connection) -> SqlResult<()> {
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    // Plans that never depend on bound values, so a cached statement with `LIMIT ?` is not
    // re-prepared at every bind (docs/design/storage.md#pragmas).
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )?;
    Ok(())
}

/// Takes the data directory's lock, or says who holds it.
pub fn lock_dir(dir: &Path) -> SqlResult<File> {
    std::fs::create_dir_all(dir).map_err(|source| Error::DataDir {
        path: dir.to_owned(),
        source,
    })?;
    let file = File::create(dir.join(LOCK_FILE)).map_err(|source| Error::DataDir {
        path: dir.to_owned(),
        source,
    })?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::Locked(dir.to_owned())),
        Err(std::fs::TryLockError::Error(source)) => Err(Error::DataDir {
            path: dir.to_owned(),
            source,
        }),
    }
}

/// The group tables, and the column a database made before it lacks.
mod groups {
    use rusqlite::Connection;

    /// The group tables (added to schema version 1 without touching its tables).
    pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS groups (
    name TEXT PRIMARY KEY NOT NULL,
    home TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    last_seq INTEGER NOT NULL DEFAULT 0,
    creator TEXT
);
CREATE TABLE IF NOT EXISTS group_members (
    grp TEXT NOT NULL,
    user TEXT NOT NULL,
    read_seq INTEGER NOT NULL,
    joined_at INTEGER NOT NULL,
    PRIMARY KEY (grp, user)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS group_messages (
    grp TEXT NOT NULL,
    seq INTEGER NOT NULL,
    id BLOB NOT NULL UNIQUE,
    sender TEXT NOT NULL,
    sender_display TEXT NOT NULL,
    body TEXT NOT NULL,
    sent_at INTEGER NOT NULL,
    PRIMARY KEY (grp, seq)
);
CREATE TABLE IF NOT EXISTS group_feeds (
    peer TEXT NOT NULL,
    grp TEXT NOT NULL,
    acked_seq INTEGER NOT NULL,
    PRIMARY KEY (peer, grp)
) WITHOUT ROWID;
";

    /// Adds `groups.creator` (who created each group, for the per-user creation quota) to a
    /// database made before it existed; its groups keep no creator and count against no one. A
    /// column, not a schema version: an older binary reading this database just ignores it.
    pub(super) fn add_creator(conn: &Connection) -> rusqlite::Result<()> {
        let has: bool = conn.query_row(
            "SELECT count(*) > 0 FROM pragma_table_info('groups') WHERE name = 'creator'",
            [],
            |r| r.get(0),
        )?;
        if !has {
            conn.execute_batch("ALTER TABLE groups ADD COLUMN creator TEXT")?;
        }
        Ok(())
    }
}

/// The federation's tables besides `outbox`, and their migration.
mod federation {
    use rusqlite::Connection;

    use crate::error::SqlResult;

    /// Brings the federation's tables of a database older than `version` 6 up to what the links
    /// expect; runs inside the schema's transaction at open.
    pub(crate) fn migrate(c: &Connection, version: i64) -> SqlResult<()> {
        if version < 6 {
            let has_kind: bool = c.query_row(
                "SELECT count(*) > 0 FROM pragma_table_info('outbox') WHERE name = 'kind'",
                [],
                |r| r.get(0),
            )?;
            if !has_kind {
                // Before version 6 a group post was told from a private message by its
                // conversation, the group's address (no space, unlike a pair of addresses): the
                // last time that shape decides anything.
                c.execute_batch(
                    "ALTER TABLE outbox ADD COLUMN kind INTEGER NOT NULL DEFAULT 0;
                 UPDATE outbox SET kind = 1 WHERE seq IN
                    (SELECT seq FROM messages WHERE instr(conversation, ' ') = 0);",
                )?;
            }
        }
        c.execute_batch(
            "CREATE TABLE IF NOT EXISTS relayed_posts (
            id BLOB PRIMARY KEY NOT NULL,
            seq INTEGER NOT NULL
         ) WITHOUT ROWID;
         -- Posts still in the outbox (a database from before this table): their
         -- feed has not brought them back yet.
         INSERT OR IGNORE INTO relayed_posts (id, seq)
            SELECT m.id, m.seq FROM outbox o JOIN messages m ON m.seq = o.seq
            WHERE o.kind = 1;
         -- A replica joined before its start was recorded, still without a message,
         -- starts where its first member's read cursor does (the home's seq at the
         -- join), so the gap-free rule holds from its first message.
         UPDATE groups SET last_seq = (
                SELECT min(read_seq) FROM group_members WHERE grp = groups.name)
            WHERE instr(name, '@') > 0 AND last_seq = 0
            AND EXISTS (SELECT 1 FROM group_members WHERE grp = groups.name)
            AND NOT EXISTS (SELECT 1 FROM group_messages WHERE grp = groups.name);",
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SqliteStore;
    use crate::testing::{history, inbox, message, send, window};
    use crate::writer::{INSERT_MESSAGE, insert_message};
    use jaring_chat::storage::{
        Store as _, StoreError, UserAdmin as _, UserRecord, conversation_key,
    };

    #[test]
    fn start_up_failures_name_the_file_and_say_what_failed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DB_FILE);
        let failure = |code| {
            Error::Sqlite(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(code),
                None,
            ))
        };
        let probe = Some(dir.path());
        let read = diagnose(failure(rusqlite::ffi::SQLITE_IOERR_READ), probe, &path);
        assert!(
            matches!(&read, Error::Read { path: p, .. } if *p == path),
            "{read}"
        );
        assert!(read.to_string().starts_with("cannot read "), "{read}");
        let short = diagnose(failure(rusqlite::ffi::SQLITE_IOERR_SHORT_READ), None, &path);
        assert!(matches!(short, Error::Read { .. }), "{short}");
        // A write that failed where there is room is a write error, not a full disk.
        let write = diagnose(failure(rusqlite::ffi::SQLITE_IOERR_SHMSIZE), probe, &path);
        assert!(matches!(write, Error::Write { .. }), "{write}");
        // Without a probe (a read at run time) a failed write stays as SQLite said it.
        let unprobed = diagnose(failure(rusqlite::ffi::SQLITE_IOERR_SHMSIZE), None, &path);
        assert!(matches!(unprobed, Error::Sqlite(_)), "{unprobed}");
        let corrupt = diagnose(failure(rusqlite::ffi::SQLITE_CORRUPT), None, &path);
        assert!(
            corrupt.to_string().contains(&*path.to_string_lossy()),
            "{corrupt}"
        );
        let busy = diagnose(failure(rusqlite::ffi::SQLITE_BUSY), probe, &path);
        assert!(matches!(busy, Error::Sqlite(_)), "{busy}");
        assert!(!dir.path().join(".jaring-space-probe").exists());
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
    async fn a_version_6_database_gains_the_bench_flag_and_its_users_stay_real() {
        let dir = tempfile::tempdir().unwrap();
        {
            // Version 6: users without `bench`.
            let conn = older_version(
                dir.path(),
                "ALTER TABLE users DROP COLUMN bench; PRAGMA user_version = 6;",
            );
            conn.execute(
                "INSERT INTO users (name, display_name, password_hash, created_at) \
                 VALUES ('amy', 'Amy', 'h', 0)",
                [],
            )
            .unwrap();
        }
        let store = SqliteStore::open(dir.path(), Synchronous::Full, 16).unwrap();
        let users = store.users().await.unwrap();
        assert_eq!(users.len(), 1);
        assert!(
            !users[0].bench,
            "a user from before the flag is a real user"
        );
        // The real user is never overwritten by a bench user; a new bench user is flagged.
        let bench = |name: &str| UserRecord {
            name: name.into(),
            display_name: name.into(),
            password_hash: "cheap".into(),
            bench: false,
        };
        assert!(matches!(
            store.put_bench_users(vec![bench("amy")]).await,
            Err(StoreError::UserExists(n)) if n == "amy"
        ));
        store.put_bench_users(vec![bench("b0")]).await.unwrap();
        let flags: Vec<(String, bool)> = store
            .list_users()
            .await
            .unwrap()
            .into_iter()
            .map(|u| (u.name, u.bench))
            .collect();
        assert_eq!(flags, [("amy".into(), false), ("b0".into(), true)]);
        let conn = Connection::open(dir.path().join(DB_FILE)).unwrap();
        assert_eq!(
            conn.pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0))
                .unwrap(),
            7
        );
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
        let retry = jaring_chat::storage::FederationStore::receive(&store, vec![from_afar]);
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
            7
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
