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
//! - `relayed_posts(id, seq)`: each post of one of our users to a group homed on a peer, by id,
//!   pointing at its `messages` row, from its commit until the home's feed brings it back into the
//!   replica (or the home bounces it). A post the home attributes to one of our users is stored
//!   only if it is found here with the same sender, group and text: a peer cannot put words in our
//!   users' mouths. Created when federation starts ([`prepare`]).
//! - A replica's messages are stored gap-free ([`store_replica`]): each under the home's `seq`,
//!   which must be exactly the replica's last `seq` + 1 (an older one is a resend and ignored).

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};

use rusqlite::{Connection, OptionalExtension as _, params};

use crate::group_store::{Published, StoredGroupMessage};
use crate::sqlite::{MESSAGE_COLUMNS, SqliteStore, message_row};
use crate::store::{NewMessage, StoreError, StoreResult, StoredMessage, conversation_key};

/// Creates the federation's own table and brings older databases up to what the link expects.
/// Run once when federation starts, before any link.
pub(crate) async fn prepare(store: &SqliteStore) -> StoreResult<()> {
    store
        .run_in_commit(|c| {
            c.execute_batch(
                "CREATE TABLE IF NOT EXISTS relayed_posts (
                    id BLOB PRIMARY KEY NOT NULL,
                    seq INTEGER NOT NULL
                 ) WITHOUT ROWID;
                 -- Posts still in the outbox (a database from before this table): their
                 -- feed has not brought them back yet.
                 INSERT OR IGNORE INTO relayed_posts (id, seq)
                    SELECT m.id, m.seq FROM outbox o JOIN messages m ON m.seq = o.seq
                    WHERE instr(m.conversation, ' ') = 0;
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
        })
        .await
}

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
                    let key = conversation(&message);
                    insert_in(c, &message, &key, Some(message.sent_at))?;
                    let seq = c.last_insert_rowid();
                    c.prepare_cached("INSERT INTO outbox (peer, seq) VALUES (?1, ?2)")?
                        .execute(params![peer, seq])?;
                    // A group post (its key has no space): remembered until the feed brings it back.
                    if !key.contains(' ') {
                        c.prepare_cached("INSERT INTO relayed_posts (id, seq) VALUES (?1, ?2)")?
                            .execute(params![&message.id.as_bytes()[..], seq])?;
                    }
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
/// creating the replica, which then starts at `read_seq` (the home's latest `seq` at the join: its
/// next message must be the one after); whether they were not a member yet, once committed.
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
                "INSERT INTO groups (name, home, created_at, last_seq) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (name) DO NOTHING",
            )?
            .execute(params![group, home, super::link::unix_ms(), read_seq])?;
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

/// An outbox message the peer answered.
pub(crate) struct Settled {
    /// Its `seq` in `messages` and `outbox`.
    pub(crate) seq: i64,
    /// Its id.
    pub(crate) id: uuid::Uuid,
    /// For a bounced message: the notice for its sender.
    pub(crate) bounce: Option<NewMessage>,
}

/// Removes acknowledged messages from `peer`'s outbox; for a bounced one, writes its bounce
/// notice to the sender's inbox in the same transaction, only if the outbox row was still there
/// (a bounce repeated after a reconnect is not written twice), and forgets it as a relayed post
/// (the home will never bring it back).
pub(crate) async fn settle(
    store: &SqliteStore,
    peer: String,
    settled: Vec<Settled>,
) -> StoreResult<()> {
    store
        .run_in_commit(move |c| {
            let mut del = c.prepare_cached("DELETE FROM outbox WHERE peer = ?1 AND seq = ?2")?;
            for s in &settled {
                let removed = del.execute(params![peer, s.seq])? == 1;
                if removed && let Some(b) = &s.bounce {
                    insert(c, b, None)?;
                    c.prepare_cached("DELETE FROM relayed_posts WHERE id = ?1")?
                        .execute([&s.id.as_bytes()[..]])?;
                }
            }
            Ok(())
        })
        .await
}

/// What storing a batch of a replica's messages came to.
#[derive(Debug, Default)]
pub(crate) struct ReplicaOutcome {
    /// Each replica kept here that a message was for, with its latest `seq` after the commit:
    /// every message up to it is committed, so that is what to acknowledge.
    pub(crate) acks: Vec<(String, i64)>,
    /// The first refused message's reason (a gap, a post forged in one of our users' names, an
    /// id reused): the link ends, and the home resends from what was acknowledged.
    pub(crate) refused: Option<String>,
    /// Replicas this realm does not keep (no local member, no join under way): their messages
    /// were ignored and are not acknowledged.
    pub(crate) ignored: Vec<String>,
}

/// Stores messages of replicas of groups homed on `home` (each named `group@home`, in the order
/// the home sent them), in one commit, gap-free: a message is stored only if its `seq` is exactly
/// its replica's last + 1 (one at or below it is a resend, ignored; one above is a gap, refused
/// with everything after it in that replica); only into a replica this realm keeps (a row in
/// `groups`: created by a member's join, or by the first message while a join to it is under way,
/// `joining`); and one attributed to one of our users (a sender without `@`) only if it is that
/// user's own post to that group, with the same text (`relayed_posts`). Runs `published` for each
/// new message after the commit, in order.
pub(crate) async fn store_replica(
    store: &SqliteStore,
    home: String,
    messages: Vec<StoredGroupMessage>,
    joining: HashSet<String>,
    published: Published,
) -> StoreResult<ReplicaOutcome> {
    store
        .run_publishing(
            move |c| {
                let mut out = ReplicaOutcome::default();
                // Each replica's last seq (`None`: not kept here) and whether it refused one.
                let mut replicas: Vec<(String, Option<i64>, bool)> = Vec::new();
                let mut index: HashMap<String, usize> = HashMap::new();
                let mut new = Vec::new();
                for m in messages {
                    let group = &m.message.group;
                    let i = match index.entry(group.clone()) {
                        Entry::Occupied(e) => *e.get(),
                        Entry::Vacant(e) => {
                            let last =
                                replica_start(c, &home, group, m.seq, joining.contains(group))?;
                            replicas.push((group.clone(), last, false));
                            *e.insert(replicas.len() - 1)
                        }
                    };
                    let (_, last, refused) = &mut replicas[i];
                    let Some(last) = last else {
                        continue;
                    };
                    if *refused || m.seq <= *last {
                        continue;
                    }
                    let why = if m.seq > *last + 1 {
                        Some(format!(
                            "a gap in the feed of {group}: seq {} follows {last}",
                            m.seq
                        ))
                    } else if !m.message.sender.contains('@') && !relayed_back(c, &m)? {
                        Some(format!(
                            "{home} attributed a message to our user {} in {group} (seq {}, id {}) \
                             that they never posted there",
                            m.message.sender, m.seq, m.message.id
                        ))
                    } else if !insert_replica(c, &m)? {
                        Some(format!(
                            "message {} of {group} (seq {}) reuses the id of a stored message",
                            m.message.id, m.seq
                        ))
                    } else {
                        None
                    };
                    match why {
                        Some(why) => {
                            *refused = true;
                            out.refused.get_or_insert(why);
                        }
                        None => {
                            *last = m.seq;
                            new.push(m);
                        }
                    }
                }
                let mut set_last =
                    c.prepare_cached("UPDATE groups SET last_seq = ?2 WHERE name = ?1")?;
                for (group, last, _) in replicas {
                    match last {
                        Some(last) => {
                            set_last.execute(params![group, last])?;
                            out.acks.push((group, last));
                        }
                        None => out.ignored.push(group),
                    }
                }
                Ok((new, out))
            },
            published,
        )
        .await
}

/// Where the replica `group` (homed on `home`) stands: its last `seq`, or `None` if this realm
/// does not keep it. A replica not stored yet whose join is under way (`joining`) is created by
/// its first message, `first_seq`: the home's feed starts at the joining member's read cursor.
fn replica_start(
    c: &Connection,
    home: &str,
    group: &str,
    first_seq: i64,
    joining: bool,
) -> StoreResult<Option<i64>> {
    let last: Option<i64> = c
        .prepare_cached("SELECT last_seq FROM groups WHERE name = ?1")?
        .query_row([group], |r| r.get(0))
        .optional()?;
    if last.is_some() || !joining {
        return Ok(last);
    }
    let start = first_seq - 1;
    c.prepare_cached(
        "INSERT INTO groups (name, home, created_at, last_seq) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![group, home, super::link::unix_ms(), start])?;
    Ok(Some(start))
}

/// Whether `m`, attributed to one of our users, is that user's own post to its group, with the
/// same text; if so it is back, and forgotten as a relayed post.
fn relayed_back(c: &Connection, m: &StoredGroupMessage) -> StoreResult<bool> {
    let id = &m.message.id.as_bytes()[..];
    let sent: Option<(String, String, String)> = c
        .prepare_cached(
            "SELECT m.sender, m.recipient, m.body FROM relayed_posts r \
             JOIN messages m ON m.seq = r.seq WHERE r.id = ?1",
        )?
        .query_row([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?;
    let ours = sent.is_some_and(|(sender, group, body)| {
        sender == m.message.sender && group == m.message.group && body == m.message.body
    });
    if ours {
        c.prepare_cached("DELETE FROM relayed_posts WHERE id = ?1")?
            .execute([id])?;
    }
    Ok(ours)
}

/// Stores a replica's message under its home `seq`; false if its id is stored already.
fn insert_replica(c: &Connection, stored: &StoredGroupMessage) -> StoreResult<bool> {
    let m = &stored.message;
    let n = c
        .prepare_cached(
            "INSERT OR IGNORE INTO group_messages \
             (grp, seq, id, sender, sender_display, body, sent_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?
        .execute(params![
            m.group,
            stored.seq,
            &m.id.as_bytes()[..],
            m.sender,
            m.sender_display,
            m.body,
            m.sent_at
        ])?;
    Ok(n == 1)
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
