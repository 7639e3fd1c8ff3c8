//! The read side: read-only reader connections, and the SQL of the reads that find messages: a
//! first `inbox` (the inbox index, then the messages past it), `history` (the unindexed tail,
//! then the history index), and the row every read of `messages` shares. Reads run on blocking
//! threads through [`SqliteStore::read_with`](crate::SqliteStore::read_with); why so few, and
//! why read-only: `docs/design/storage.md#readers`.

use std::path::Path;
use std::sync::Arc;

use jaring_chat::storage::{NewMessage, Page, StoredMessage, Window, WindowTaker};
use rusqlite::{Connection, OptionalExtension as _, params};

use crate::error::SqlResult;
use crate::schema::{DB_FILE, configure};

/// Reads that run at once, each on a blocking thread with a reader connection of its own (kept
/// for the next read); the rest wait their turn. More would not read faster, only hold more
/// memory: `docs/design/storage.md#readers`.
pub const MAX_READERS: usize = 8;

/// Opens a read-only connection to the database in `dir`, which [`open`](crate::open) has already
/// set up. Not through `open`, whose schema ends with a write: a read-only connection never
/// queues for the writer's lock (`docs/design/storage.md#readers`).
pub(crate) fn open_reader(dir: &Path) -> SqlResult<Connection> {
    let conn = Connection::open_with_flags(
        dir.join(DB_FILE),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    configure(&conn)?;
    Ok(conn)
}

/// Up to `limit` of `recipient`'s undelivered messages, oldest first, read in `conn`'s snapshot
/// (which must be one transaction: the writer moves the index and `upto` together): from the
/// inbox index, then from the few messages past it.
#[cfg(test)]
pub(crate) fn undelivered(
    conn: &Connection,
    recipient: &str,
    limit: usize,
) -> rusqlite::Result<Vec<StoredMessage>> {
    Ok(undelivered_within(conn, recipient, limit, usize::MAX)?.messages)
}

/// `undelivered`, stopping before the text passes `max_bytes` (the first message whatever its
/// size): `cut` when that left some out.
pub(crate) fn undelivered_within(
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

/// The undelivered messages with a `seq` past `after`, oldest first.
pub(crate) fn undelivered_since(
    conn: &Connection,
    after: i64,
) -> rusqlite::Result<Vec<StoredMessage>> {
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
pub(crate) fn within_bytes(
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

/// The page of conversation `key`'s history that `window` asks for, in one snapshot: the newest
/// messages not indexed yet (walked back by `seq`), then the history index.
pub(crate) fn conversation(
    c: &Connection,
    key: &str,
    window: Window,
) -> SqlResult<Page<StoredMessage>> {
    // One snapshot for all three reads: the writer moves `upto` and the index together.
    let tx = c.unchecked_transaction()?;
    let upto: i64 = tx.query_row("SELECT upto FROM history_indexed WHERE id = 0", [], |r| {
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
        for row in tail.query_map(params![upto, before, key, window.limit as i64], message_row)? {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::{HISTORY_INDEX_AFTER, HISTORY_INDEX_EVERY};
    use crate::store::SqliteStore;
    use crate::testing::{message, send};
    use jaring_chat::config::Synchronous;
    use jaring_chat::storage::Store as _;

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
}
