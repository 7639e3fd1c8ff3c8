//! What the federation keeps in the realm's SQLite database, written through the store's writer
//! thread so it shares its group commits.
//!
//! - An outgoing message is one row in `messages` (recipient `user@realm`, already marked
//!   delivered so no local inbox ever returns it) and one row in `outbox(peer, seq)`, committed
//!   together: `send` answers OK only after that commit.
//! - The row leaves `outbox` only when the peer acknowledged it (or bounced it, in which case the
//!   bounce is written to the sender's inbox in the same transaction, once).
//! - Every message a link stores (incoming, outgoing, bounces) first claims its id in
//!   `federated_ids` with `INSERT OR IGNORE`: a retried message that was committed before finds
//!   its id taken and is silently a duplicate, and is acknowledged again. Messages between local
//!   users are not in that table: their ids are fresh, and an index over every message's id
//!   cost the realm a seventh of its throughput.
//! - A message from one of our users to a group homed on a peer takes the same way: a `messages`
//!   row whose `conversation` is the group's address here (`g@realm`: no space, unlike the key of
//!   a private conversation, which is how the link tells it is a group post) and an outbox row.
//! - `group_feeds(peer, grp, acked_seq)`: for each group homed here with members on `peer`, up to
//!   which `seq` the peer has committed the group's messages in its replica.

use std::collections::HashMap;

use rusqlite::params;

use crate::sqlite::{MESSAGE_COLUMNS, SqliteStore, message_row};
use crate::store::{NewMessage, StoreError, StoreResult, StoredMessage, conversation_key};

const INSERT: &str = "INSERT INTO messages (id, sender, sender_display, recipient, \
    recipient_display, conversation, body, sent_at, delivered_at) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)";

/// Claims a message's id for this realm; a retry finds it taken.
const CLAIM_ID: &str = "INSERT OR IGNORE INTO federated_ids (id) VALUES (?1)";

fn insert(
    c: &rusqlite::Connection,
    m: &NewMessage,
    delivered_at: Option<i64>,
) -> StoreResult<bool> {
    insert_in(
        c,
        m,
        &conversation_key(&m.sender, &m.recipient),
        delivered_at,
    )
}

fn insert_in(
    c: &rusqlite::Connection,
    m: &NewMessage,
    conversation: &str,
    delivered_at: Option<i64>,
) -> StoreResult<bool> {
    if c.prepare_cached(CLAIM_ID)?
        .execute([&m.id.as_bytes()[..]])?
        == 0
    {
        return Ok(false);
    }
    let n = c.prepare_cached(INSERT)?.execute(params![
        &m.id.as_bytes()[..],
        m.sender,
        m.sender_display,
        m.recipient,
        m.recipient_display,
        conversation,
        m.body,
        m.sent_at,
        delivered_at,
    ])?;
    Ok(n == 1)
}

/// Commits outgoing messages and their outbox rows for `peer`, in order, all or none (a
/// connection's pipelined sends share the commit); returns them with their sequence numbers.
pub(crate) async fn enqueue(
    store: &SqliteStore,
    peer: String,
    messages: Vec<NewMessage>,
) -> StoreResult<Vec<StoredMessage>> {
    enqueue_keyed(store, peer, messages, |m| {
        conversation_key(&m.sender, &m.recipient)
    })
    .await
}

/// Commits posts of our users to a group homed on `peer` (each message's recipient is the group's
/// address here, `g@peer`, which is also its conversation) with their outbox rows, in order, all
/// or none.
pub(crate) async fn enqueue_group_posts(
    store: &SqliteStore,
    peer: String,
    messages: Vec<NewMessage>,
) -> StoreResult<Vec<StoredMessage>> {
    enqueue_keyed(store, peer, messages, |m| m.recipient.clone()).await
}

/// Commits `messages`, each under the conversation `conversation` gives it, with their outbox
/// rows for `peer`, in order; a failure undoes only these rows, not the other callers' work in
/// the writer's transaction.
async fn enqueue_keyed(
    store: &SqliteStore,
    peer: String,
    messages: Vec<NewMessage>,
    conversation: fn(&NewMessage) -> String,
) -> StoreResult<Vec<StoredMessage>> {
    store
        .run_in_commit(move |c| {
            c.execute_batch("SAVEPOINT enqueue")?;
            let result = (|| {
                let mut stored = Vec::with_capacity(messages.len());
                for message in messages {
                    insert_in(c, &message, &conversation(&message), Some(message.sent_at))?;
                    let seq = c.last_insert_rowid();
                    c.prepare_cached("INSERT INTO outbox (peer, seq) VALUES (?1, ?2)")?
                        .execute(params![peer, seq])?;
                    stored.push(StoredMessage { seq, message });
                }
                Ok::<_, StoreError>(stored)
            })();
            match result {
                Ok(stored) => {
                    c.execute_batch("RELEASE enqueue")?;
                    Ok(stored)
                }
                Err(e) => {
                    c.execute_batch("ROLLBACK TO enqueue; RELEASE enqueue")?;
                    Err(e)
                }
            }
        })
        .await
}

/// An outbox entry: the message, and whether it is a post to a group (else a private message).
pub(crate) struct Outgoing {
    pub(crate) stored: StoredMessage,
    pub(crate) group_post: bool,
}

/// The oldest `limit` outbox messages for `peer` after sequence `after`, in commit order.
pub(crate) async fn outbox_after(
    store: &SqliteStore,
    peer: String,
    after: i64,
    limit: usize,
) -> StoreResult<Vec<Outgoing>> {
    store
        .read_with(move |c| {
            let mut s = c.prepare_cached(&format!(
                "SELECT {MESSAGE_COLUMNS}, instr(conversation, ' ') = 0 FROM messages WHERE seq IN \
                 (SELECT seq FROM outbox WHERE peer = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3) \
                 ORDER BY seq"
            ))?;
            let rows = s.query_map(params![peer, after, limit as i64], |r| {
                Ok(Outgoing {
                    stored: message_row(r)?,
                    group_post: r.get(8)?,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
}

/// Starts feeding `grp` to `peer` from `from_seq`, unless it is fed already.
pub(crate) async fn open_feed(
    store: &SqliteStore,
    peer: String,
    grp: String,
    from_seq: i64,
) -> StoreResult<()> {
    store
        .run_in_commit(move |c| {
            c.prepare_cached(
                "INSERT INTO group_feeds (peer, grp, acked_seq) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (peer, grp) DO NOTHING",
            )?
            .execute(params![peer, grp, from_seq])?;
            Ok(())
        })
        .await
}

/// Where each group's feed to `peer` stands: the highest `seq` it acknowledged.
pub(crate) async fn feeds(store: &SqliteStore, peer: String) -> StoreResult<HashMap<String, i64>> {
    store
        .read_with(move |c| {
            let mut s =
                c.prepare_cached("SELECT grp, acked_seq FROM group_feeds WHERE peer = ?1")?;
            let rows = s.query_map([peer], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(rows.collect::<Result<HashMap<_, _>, _>>()?)
        })
        .await
}

/// Moves feed cursors of `peer` forward (never back), once committed.
pub(crate) async fn ack_feeds(
    store: &SqliteStore,
    peer: String,
    acked: Vec<(String, i64)>,
) -> StoreResult<()> {
    store
        .run_in_commit(move |c| {
            let mut s = c.prepare_cached(
                "INSERT INTO group_feeds (peer, grp, acked_seq) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (peer, grp) DO UPDATE SET acked_seq = max(acked_seq, excluded.acked_seq)",
            )?;
            for (grp, seq) in &acked {
                s.execute(params![peer, grp, seq])?;
            }
            Ok(())
        })
        .await
}

/// Makes `user` a member of the replica `group` (homed on `home`) with read cursor `read_seq`,
/// creating the replica; whether they were not a member yet, once committed.
pub(crate) async fn join_replica(
    store: &SqliteStore,
    group: String,
    home: String,
    user: String,
    read_seq: i64,
) -> StoreResult<bool> {
    store
        .run_in_commit(move |c| {
            c.prepare_cached(
                "INSERT INTO groups (name, home, created_at, last_seq) VALUES (?1, ?2, ?3, 0) \
                 ON CONFLICT (name) DO NOTHING",
            )?
            .execute(params![group, home, super::link::unix_ms()])?;
            let n = c
                .prepare_cached(
                    "INSERT INTO group_members (grp, user, read_seq, joined_at) \
                     VALUES (?1, ?2, ?3, ?4) ON CONFLICT (grp, user) DO NOTHING",
                )?
                .execute(params![group, user, read_seq, super::link::unix_ms()])?;
            Ok(n == 1)
        })
        .await
}

/// Removes acknowledged messages from `peer`'s outbox; for a bounced one, writes its bounce
/// notice to the sender's inbox in the same transaction, only if the outbox row was still there
/// (a bounce repeated after a reconnect is not written twice).
pub(crate) async fn settle(
    store: &SqliteStore,
    peer: String,
    settled: Vec<(i64, Option<NewMessage>)>,
) -> StoreResult<()> {
    store
        .run_in_commit(move |c| {
            let mut del = c.prepare_cached("DELETE FROM outbox WHERE peer = ?1 AND seq = ?2")?;
            for (seq, bounce) in &settled {
                let removed = del.execute(params![peer, seq])? == 1;
                if removed && let Some(b) = bounce {
                    insert(c, b, None)?;
                }
            }
            Ok(())
        })
        .await
}

/// Commits incoming messages to their recipients' inboxes; a message whose id is known is a retry
/// and is ignored. Returns once committed: only then may they be acknowledged.
pub(crate) async fn receive(store: &SqliteStore, messages: Vec<NewMessage>) -> StoreResult<usize> {
    store
        .run_in_commit(move |c| {
            let mut new = 0;
            for m in &messages {
                new += usize::from(insert(c, m, None)?);
            }
            Ok(new)
        })
        .await
}

/// Messages waiting in each peer's outbox.
pub(crate) async fn outbox_counts(store: &SqliteStore) -> StoreResult<HashMap<String, u64>> {
    store
        .read_with(|c| {
            let mut s = c.prepare_cached("SELECT peer, count(*) FROM outbox GROUP BY peer")?;
            let rows = s.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
            let mut out = HashMap::new();
            for row in rows {
                let (peer, n) = row?;
                out.insert(peer, n.max(0) as u64);
            }
            Ok(out)
        })
        .await
}
