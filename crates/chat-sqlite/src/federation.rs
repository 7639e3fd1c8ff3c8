//! [`FederationStore`] in SQLite: the outbox and its settling, messages received from peers
//! (each id claimed once in `federated_ids`, so a retry is stored once), group feeds and replicas
//! (stored gap-free, see [`store_replica`]). Written through the writer thread, so they share its
//! group commits. The tables, and why they are shaped so:
//! `docs/design/storage.md#federation-tables`.

use std::collections::{HashMap, HashSet};

use jaring_chat::storage::{
    FederationStore, GroupCursor, MessageKind, NewMessage, Outgoing, ReplicaOutcome, Settled,
    StoreResult, StoredMessage, conversation_key,
};
use jaring_chat::storage::{Published, ReplicaFeed, StoredGroupMessage, is_ours};
use rusqlite::{Connection, OptionalExtension as _, params};

use crate::error::{Error, SqlResult};
use crate::read::{MESSAGE_COLUMNS, message_row};
use crate::store::SqliteStore;

const INSERT: &str = "INSERT INTO messages (id, sender, sender_display, recipient, \
    recipient_display, conversation, body, sent_at, delivered_at) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)";

/// Claims a message's id for this realm; a retry finds it taken.
const CLAIM_ID: &str = "INSERT OR IGNORE INTO federated_ids (id) VALUES (?1)";

fn insert(c: &rusqlite::Connection, m: &NewMessage, delivered_at: Option<i64>) -> SqlResult<bool> {
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
) -> SqlResult<bool> {
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

/// Commits `messages` of one `kind` with their outbox rows for `peer`, in order; a failure undoes
/// only these rows, not the other callers' work in the writer's transaction. A group post's
/// conversation is its group's address here (its recipient).
async fn enqueue(
    store: &SqliteStore,
    peer: String,
    kind: MessageKind,
    messages: Vec<NewMessage>,
) -> SqlResult<Vec<StoredMessage>> {
    store
        .run_in_commit(move |c| {
            c.execute_batch("SAVEPOINT enqueue")?;
            let result = (|| {
                let mut stored = Vec::with_capacity(messages.len());
                for message in messages {
                    let key = match kind {
                        MessageKind::Private => {
                            conversation_key(&message.sender, &message.recipient)
                        }
                        MessageKind::GroupPost => message.recipient.clone(),
                    };
                    // Not stored (its id is known): `last_insert_rowid` would name another
                    // message, which the outbox would then send.
                    if !insert_in(c, &message, &key, Some(message.sent_at))? {
                        return Err(Error::IdReused(message.id));
                    }
                    let seq = c.last_insert_rowid();
                    c.prepare_cached("INSERT INTO outbox (peer, seq, kind) VALUES (?1, ?2, ?3)")?
                        .execute(params![peer, seq, kind_code(kind)])?;
                    // Remembered until the feed brings it back.
                    if kind == MessageKind::GroupPost {
                        c.prepare_cached("INSERT INTO relayed_posts (id, seq) VALUES (?1, ?2)")?
                            .execute(params![&message.id.as_bytes()[..], seq])?;
                    }
                    stored.push(StoredMessage { seq, message });
                }
                Ok::<_, Error>(stored)
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

/// The oldest `limit` outbox messages for `peer` after sequence `after`, in commit order.
async fn outbox_after(
    store: &SqliteStore,
    peer: String,
    after: i64,
    limit: usize,
) -> SqlResult<Vec<Outgoing>> {
    store
        .read_with(move |c| {
            let mut s = c.prepare_cached(&format!(
                "SELECT {MESSAGE_COLUMNS}, \
                 (SELECT kind FROM outbox o WHERE o.peer = ?1 AND o.seq = messages.seq) \
                 FROM messages WHERE seq IN \
                 (SELECT seq FROM outbox WHERE peer = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3) \
                 ORDER BY seq"
            ))?;
            let rows = s.query_map(params![peer, after, limit as i64], |r| {
                Ok(Outgoing {
                    stored: message_row(r)?,
                    kind: if r.get::<_, i64>(8)? == 1 {
                        MessageKind::GroupPost
                    } else {
                        MessageKind::Private
                    },
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
}

/// Starts feeding `grp` to `peer` from `from_seq`, unless it is fed already.
async fn open_feed(store: &SqliteStore, peer: String, grp: String, from_seq: i64) -> SqlResult<()> {
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
async fn feeds(store: &SqliteStore, peer: String) -> SqlResult<Vec<GroupCursor>> {
    store
        .read_with(move |c| {
            let mut s =
                c.prepare_cached("SELECT grp, acked_seq FROM group_feeds WHERE peer = ?1")?;
            let rows = s.query_map([peer], |r| {
                Ok(GroupCursor {
                    group: r.get(0)?,
                    seq: r.get(1)?,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
}

/// Moves feed cursors of `peer` forward (never back), once committed.
async fn ack_feeds(store: &SqliteStore, peer: String, acked: Vec<GroupCursor>) -> SqlResult<()> {
    store
        .run_in_commit(move |c| {
            let mut s = c.prepare_cached(
                "INSERT INTO group_feeds (peer, grp, acked_seq) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (peer, grp) DO UPDATE SET acked_seq = max(acked_seq, excluded.acked_seq)",
            )?;
            for a in &acked {
                s.execute(params![peer, a.group, a.seq])?;
            }
            Ok(())
        })
        .await
}

/// Makes `user` a member of the replica `group` (homed on `home`) with read cursor `read_seq`,
/// creating the replica, which then starts at `read_seq` (the home's latest `seq` at the join: its
/// next message must be the one after); whether they were not a member yet, once committed.
async fn join_replica(
    store: &SqliteStore,
    group: String,
    home: String,
    user: String,
    read_seq: i64,
) -> SqlResult<bool> {
    store
        .run_in_commit(move |c| {
            c.prepare_cached(
                "INSERT INTO groups (name, home, created_at, last_seq) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (name) DO NOTHING",
            )?
            .execute(params![group, home, crate::writer::unix_ms(), read_seq])?;
            let n = c
                .prepare_cached(
                    "INSERT INTO group_members (grp, user, read_seq, joined_at) \
                     VALUES (?1, ?2, ?3, ?4) ON CONFLICT (grp, user) DO NOTHING",
                )?
                .execute(params![group, user, read_seq, crate::writer::unix_ms()])?;
            Ok(n == 1)
        })
        .await
}

/// Removes acknowledged messages from `peer`'s outbox; for a bounced one, writes its bounce
/// notice to the sender's inbox in the same transaction, only if the outbox row was still there
/// (a bounce repeated after a reconnect is not written twice), and forgets it as a relayed post
/// (the home will never bring it back).
async fn settle(store: &SqliteStore, peer: String, settled: Vec<Settled>) -> SqlResult<()> {
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

/// Stores messages of replicas of groups homed on `home` (each named `group@home`, in the order
/// the home sent them), in one commit, gap-free: a message is stored only if its `seq` is exactly
/// its replica's last + 1 (one at or below it is a resend, ignored; one above is a gap, refused
/// with everything after it in that replica); only into a replica this realm keeps (a row in
/// `groups`: created by a member's join, or by the first message while a join to it is under way,
/// `joining`); and one attributed to one of our users (a sender without `@`) only if it is that
/// user's own post to that group, with the same text (`relayed_posts`). Runs `published` for each
/// new message after the commit, in order.
async fn store_replica(
    store: &SqliteStore,
    home: String,
    messages: Vec<StoredGroupMessage>,
    joining: HashSet<String>,
    published: Published,
) -> SqlResult<ReplicaOutcome> {
    store
        .run_publishing(
            move |c| {
                let mut feed = ReplicaFeed::new();
                let mut new = Vec::new();
                for m in messages {
                    let group = &m.message.group;
                    if !feed.knows(group) {
                        let last = replica_start(c, &home, group, m.seq, joining.contains(group))?;
                        feed.start(group, last);
                    }
                    if !feed.wants(&m) {
                        continue;
                    }
                    if is_ours(&m) && !relayed_back(c, &m)? {
                        feed.misattributed(&home, &m);
                    } else if !insert_replica(c, &m)? {
                        feed.id_reused(&m);
                    } else {
                        feed.stored(&m);
                        new.push(m);
                    }
                }
                let out = feed.finish();
                let mut set_last =
                    c.prepare_cached("UPDATE groups SET last_seq = ?2 WHERE name = ?1")?;
                for ack in &out.acks {
                    set_last.execute(params![ack.group, ack.seq])?;
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
) -> SqlResult<Option<i64>> {
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
    .execute(params![group, home, crate::writer::unix_ms(), start])?;
    Ok(Some(start))
}

/// Whether `m`, attributed to one of our users, is that user's own post to its group, with the
/// same text; if so it is back, and forgotten as a relayed post.
fn relayed_back(c: &Connection, m: &StoredGroupMessage) -> SqlResult<bool> {
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
fn insert_replica(c: &Connection, stored: &StoredGroupMessage) -> SqlResult<bool> {
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
async fn receive(store: &SqliteStore, messages: Vec<NewMessage>) -> SqlResult<usize> {
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
async fn outbox_counts(store: &SqliteStore) -> SqlResult<HashMap<String, u64>> {
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

/// How `outbox.kind` stores a [`MessageKind`].
fn kind_code(kind: MessageKind) -> i64 {
    match kind {
        MessageKind::Private => 0,
        MessageKind::GroupPost => 1,
    }
}

impl FederationStore for SqliteStore {
    async fn enqueue(
        &self,
        peer: &str,
        kind: MessageKind,
        messages: Vec<NewMessage>,
    ) -> StoreResult<Vec<StoredMessage>> {
        Ok(enqueue(self, peer.to_owned(), kind, messages).await?)
    }

    async fn outbox_after(
        &self,
        peer: &str,
        after: i64,
        limit: usize,
    ) -> StoreResult<Vec<Outgoing>> {
        Ok(outbox_after(self, peer.to_owned(), after, limit).await?)
    }

    async fn outbox_counts(&self) -> StoreResult<HashMap<String, u64>> {
        Ok(outbox_counts(self).await?)
    }

    async fn settle(&self, peer: &str, settled: Vec<Settled>) -> StoreResult<()> {
        Ok(settle(self, peer.to_owned(), settled).await?)
    }

    async fn receive(&self, messages: Vec<NewMessage>) -> StoreResult<usize> {
        Ok(receive(self, messages).await?)
    }

    async fn open_feed(&self, peer: &str, group: &str, from_seq: i64) -> StoreResult<()> {
        Ok(open_feed(self, peer.to_owned(), group.to_owned(), from_seq).await?)
    }

    async fn feeds(&self, peer: &str) -> StoreResult<Vec<GroupCursor>> {
        Ok(feeds(self, peer.to_owned()).await?)
    }

    async fn ack_feeds(&self, peer: &str, acked: Vec<GroupCursor>) -> StoreResult<()> {
        Ok(ack_feeds(self, peer.to_owned(), acked).await?)
    }

    async fn join_replica(
        &self,
        group: &str,
        home: &str,
        user: &str,
        read_seq: i64,
    ) -> StoreResult<bool> {
        Ok(join_replica(
            self,
            group.to_owned(),
            home.to_owned(),
            user.to_owned(),
            read_seq,
        )
        .await?)
    }

    async fn store_replica(
        &self,
        home: &str,
        messages: Vec<StoredGroupMessage>,
        joining: HashSet<String>,
        published: Published,
    ) -> StoreResult<ReplicaOutcome> {
        Ok(store_replica(self, home.to_owned(), messages, joining, published).await?)
    }
}

#[cfg(test)]
mod tests {
    use crate::store::SqliteStore;
    use crate::testing::{inbox, message};
    use jaring_chat::config::Synchronous;

    #[tokio::test]
    async fn a_message_from_another_realm_is_stored_once_however_often_it_arrives() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path(), Synchronous::Full, 16).unwrap();
        let incoming = message("zed@far", "bob", "hello from afar");
        let first = jaring_chat::storage::FederationStore::receive(&store, vec![incoming.clone()]);
        assert_eq!(first.await.unwrap(), 1);
        // The link lost the acknowledgement and sent it again.
        let again = jaring_chat::storage::FederationStore::receive(&store, vec![incoming]);
        assert_eq!(again.await.unwrap(), 0, "a retry is not stored twice");
        assert_eq!(inbox(&store, dir.path(), "bob").await, ["hello from afar"]);
    }
}
