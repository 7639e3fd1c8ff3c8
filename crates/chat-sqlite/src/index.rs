//! The bulk indexes that `history` and a first `inbox` find messages by: `history_index` (a row
//! of `seq`s per conversation), `inbox_index` (per recipient) and `history_indexed.upto`, brought
//! up to date by the writer in bulk, not with every message. Why bulk, and what it bought:
//! `docs/design/storage.md#indexes`.

use rusqlite::{Connection, params};

/// Most messages `history` (or a first `inbox`) may have to find without the indexes: once this
/// many are unindexed, the next commit indexes them. A catch-up costs about the same however many
/// messages it covers, so rarer is cheaper; why this many: `docs/design/storage.md#indexes`.
pub const HISTORY_INDEX_EVERY: i64 = 8192;

/// Longest a message waits to be indexed for `history` when fewer than
/// [`HISTORY_INDEX_EVERY`] arrive.
pub const HISTORY_INDEX_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

/// When the writer last brought the history index up to date.
pub(crate) struct HistoryIndexing {
    pub(crate) last: std::time::Instant,
    /// What this writer committed since, so catching up need not read the messages back.
    pub(crate) postings: Postings,
}

/// Indexes every message past `history_indexed.upto`, for `history` and for `inbox`: one
/// `history_index` row per conversation and one `inbox_index` row per recipient with their
/// `seq`s, and `upto` moved to the newest message. Runs inside the caller's transaction: the
/// entries and `upto` commit together, so a reader sees either both or neither. Returns how many
/// messages it indexed.
pub(crate) fn index_messages(conn: &Connection, known: &mut Postings) -> rusqlite::Result<i64> {
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
pub(crate) struct Postings {
    by_conversation: std::collections::HashMap<String, (i64, Vec<u8>)>,
    by_recipient: std::collections::HashMap<String, (i64, Vec<u8>)>,
    /// The first `seq` noted (0 if none).
    first: i64,
    count: i64,
}

impl Postings {
    /// Notes message `seq` under its conversation and, if it is for an inbox here, under its
    /// recipient.
    pub(crate) fn add(&mut self, conversation: &str, recipient: Option<&str>, seq: i64) {
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
pub(crate) fn history_due(conn: &Connection, indexing: &HistoryIndexing) -> rusqlite::Result<bool> {
    let (upto, newest) = history_position(conn)?;
    let behind = newest - upto;
    Ok(behind >= HISTORY_INDEX_EVERY
        || (behind > 0 && indexing.last.elapsed() >= HISTORY_INDEX_AFTER))
}

/// The newest message's `seq` (0 if none).
pub(crate) fn newest_seq(conn: &Connection) -> rusqlite::Result<i64> {
    // SQLite answers `max` of the rowid from the end of the table, not by a scan.
    conn.prepare_cached("SELECT max(seq) FROM messages")?
        .query_row([], |r| r.get::<_, Option<i64>>(0))
        .map(Option::unwrap_or_default)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use crate::schema::DB_FILE;
    use crate::store::SqliteStore;
    use crate::testing::{history, message, send};
    use jaring_chat::config::Synchronous;
    use jaring_chat::storage::Store as _;

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
            .run_in_commit(|c| index_messages(c, &mut Postings::default()).map_err(Error::from))
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
}
