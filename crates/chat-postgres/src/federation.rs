//! [`FederationStore`] in PostgreSQL: the same tables and rules as the SQLite store's
//! (`jaring-chat-sqlite`'s `federation.rs` explains them), written through the writer so they
//! share its group commits.
//!
//! - An outgoing message is a `messages` row (already delivered, so no local inbox returns it)
//!   and an `outbox(peer, seq, kind)` row, committed together; it leaves the outbox when the peer
//!   answers (a bounce writes its notice to the sender's inbox in the same transaction, once).
//! - Every message a link stores first claims its id in `federated_ids` (`ON CONFLICT DO
//!   NOTHING`): a retry of a committed message is a duplicate and is acknowledged again. This is
//!   also what makes a retry safe after a commit whose outcome was unknown.
//! - `relayed_posts(id, seq)` remembers our users' posts to groups homed on peers until the
//!   home's feed brings them back; `group_feeds(peer, grp, acked_seq)` is each feed's cursor.
//! - A replica's messages are stored gap-free, each under its home's `seq`.

use std::collections::{HashMap, HashSet};

use jaring_chat::storage::{
    FederationStore, GroupCursor, MessageKind, NewMessage, Outgoing, Published, ReplicaFeed,
    ReplicaOutcome, Settled, StoreResult, StoredGroupMessage, StoredMessage, conversation_key,
    is_ours,
};

use crate::error::{Error, PgResult};
use crate::writer::{Db, insert_message_rows};
use crate::{PostgresStore, message_row, sql_limit, unix_ms};

/// Claims ids for this realm; returns those that were not claimed before.
const CLAIM_IDS: &str = "INSERT INTO federated_ids (id) SELECT * FROM UNNEST($1::uuid[]) \
    ON CONFLICT DO NOTHING RETURNING id";

const INSERT_DELIVERED: &str = "INSERT INTO messages (id, sender, sender_display, recipient, \
    recipient_display, conversation, body, sent_at, delivered_at) \
    SELECT id, sender, sender_display, recipient, recipient_display, conversation, body, \
        sent_at, sent_at \
    FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], \
        $7::text[], $8::bigint[]) WITH ORDINALITY \
        AS t(id, sender, sender_display, recipient, recipient_display, conversation, body, \
        sent_at, ord) \
    ORDER BY ord RETURNING seq";

/// How `outbox.kind` stores a [`MessageKind`].
fn kind_code(kind: MessageKind) -> i16 {
    match kind {
        MessageKind::Private => 0,
        MessageKind::GroupPost => 1,
    }
}

/// Claims `m`'s id and stores it for its recipient's inbox; false if the id was claimed before.
async fn insert_claimed(db: &Db, m: &NewMessage) -> PgResult<bool> {
    let claimed = db.query(CLAIM_IDS, &[&vec![m.id]]).await?;
    if claimed.is_empty() {
        return Ok(false);
    }
    insert_message_rows(db, &[m], &[conversation_key(&m.sender, &m.recipient)]).await?;
    Ok(true)
}

async fn enqueue(
    db: &Db,
    peer: &str,
    kind: MessageKind,
    messages: Vec<NewMessage>,
) -> PgResult<Vec<StoredMessage>> {
    if messages.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<uuid::Uuid> = messages.iter().map(|m| m.id).collect();
    // Fresh ids, claimed so that a bounce or a feed bringing them back is recognised. One
    // claimed before (or twice in this call) is a bug, never a retry: the call fails, and its
    // savepoint takes back everything it wrote, as in the SQLite store.
    let claimed: HashSet<uuid::Uuid> = db
        .query(CLAIM_IDS, &[&ids])
        .await?
        .iter()
        .map(|r| r.try_get(0))
        .collect::<Result<_, _>>()?;
    if claimed.len() != ids.len() {
        let mut first = HashSet::with_capacity(ids.len());
        let reused = ids
            .iter()
            .find(|id| !claimed.contains(id) || !first.insert(**id))
            .copied()
            .unwrap_or_default();
        return Err(Error::IdReused(reused));
    }
    let keys: Vec<String> = messages
        .iter()
        .map(|m| match kind {
            MessageKind::Private => conversation_key(&m.sender, &m.recipient),
            MessageKind::GroupPost => m.recipient.clone(),
        })
        .collect();
    let col = |f: fn(&NewMessage) -> &str| messages.iter().map(f).collect::<Vec<&str>>();
    let sent: Vec<i64> = messages.iter().map(|m| m.sent_at).collect();
    let rows = db
        .query(
            INSERT_DELIVERED,
            &[
                &ids,
                &col(|m| &m.sender),
                &col(|m| &m.sender_display),
                &col(|m| &m.recipient),
                &col(|m| &m.recipient_display),
                &keys,
                &col(|m| &m.body),
                &sent,
            ],
        )
        .await?;
    let mut seqs: Vec<i64> = rows
        .iter()
        .map(|r| r.try_get(0))
        .collect::<Result<_, _>>()?;
    seqs.sort_unstable();
    if seqs.len() != messages.len() {
        return Err(Error::Unexpected(format!(
            "enqueued {} messages but {} came back",
            messages.len(),
            seqs.len()
        )));
    }
    db.execute(
        "INSERT INTO outbox (peer, seq, kind) SELECT $1, s, $2 FROM UNNEST($3::bigint[]) AS s",
        &[&peer, &kind_code(kind), &seqs],
    )
    .await?;
    // Remembered until the feed brings it back.
    if kind == MessageKind::GroupPost {
        db.execute(
            "INSERT INTO relayed_posts (id, seq) SELECT * FROM UNNEST($1::uuid[], $2::bigint[])",
            &[&ids, &seqs],
        )
        .await?;
    }
    Ok(messages
        .into_iter()
        .zip(seqs)
        .map(|(message, seq)| StoredMessage { seq, message })
        .collect())
}

async fn receive(db: &Db, messages: Vec<NewMessage>) -> PgResult<usize> {
    if messages.is_empty() {
        return Ok(0);
    }
    let ids: Vec<uuid::Uuid> = messages.iter().map(|m| m.id).collect();
    let mut claimed: HashSet<uuid::Uuid> = db
        .query(CLAIM_IDS, &[&ids])
        .await?
        .iter()
        .map(|r| r.try_get(0))
        .collect::<Result<_, _>>()?;
    // In order; an id twice in one call is stored once.
    let new: Vec<&NewMessage> = messages.iter().filter(|m| claimed.remove(&m.id)).collect();
    if new.is_empty() {
        return Ok(0);
    }
    let keys: Vec<String> = new
        .iter()
        .map(|m| conversation_key(&m.sender, &m.recipient))
        .collect();
    insert_message_rows(db, &new, &keys).await?;
    Ok(new.len())
}

async fn settle(db: &Db, peer: &str, settled: Vec<Settled>) -> PgResult<()> {
    for s in &settled {
        let removed = db
            .execute(
                "DELETE FROM outbox WHERE peer = $1 AND seq = $2",
                &[&peer, &s.seq],
            )
            .await?
            == 1;
        if removed && let Some(b) = &s.bounce {
            insert_claimed(db, b).await?;
            db.execute("DELETE FROM relayed_posts WHERE id = $1", &[&s.id])
                .await?;
        }
    }
    Ok(())
}

/// Where the replica `group` (homed on `home`) stands: its last `seq`, or `None` if this realm
/// does not keep it. A replica not stored yet whose join is under way (`joining`) is created by
/// its first message, `first_seq`.
async fn replica_start(
    db: &Db,
    home: &str,
    group: &str,
    first_seq: i64,
    joining: bool,
) -> PgResult<Option<i64>> {
    let last: Option<i64> = db
        .query_opt("SELECT last_seq FROM groups WHERE name = $1", &[&group])
        .await?
        .map(|r| r.try_get(0))
        .transpose()?;
    if last.is_some() || !joining {
        return Ok(last);
    }
    let start = first_seq - 1;
    db.execute(
        "INSERT INTO groups (name, home, created_at, last_seq) VALUES ($1, $2, $3, $4)",
        &[&group, &home, &unix_ms(), &start],
    )
    .await?;
    Ok(Some(start))
}

/// Whether `m`, attributed to one of our users, is that user's own post to its group, with the
/// same text; if so it is back, and forgotten as a relayed post.
async fn relayed_back(db: &Db, m: &StoredGroupMessage) -> PgResult<bool> {
    let sent = db
        .query_opt(
            "SELECT m.sender, m.recipient, m.body FROM relayed_posts r \
             JOIN messages m ON m.seq = r.seq WHERE r.id = $1",
            &[&m.message.id],
        )
        .await?;
    let ours = match sent {
        Some(r) => {
            r.try_get::<_, &str>(0)? == m.message.sender
                && r.try_get::<_, &str>(1)? == m.message.group
                && r.try_get::<_, &str>(2)? == m.message.body
        }
        None => false,
    };
    if ours {
        db.execute("DELETE FROM relayed_posts WHERE id = $1", &[&m.message.id])
            .await?;
    }
    Ok(ours)
}

/// Stores a replica's message under its home `seq`; false if its id (or seq) is stored already.
async fn insert_replica(db: &Db, stored: &StoredGroupMessage) -> PgResult<bool> {
    let m = &stored.message;
    let n = db
        .execute(
            "INSERT INTO group_messages (grp, seq, id, sender, sender_display, body, sent_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
            &[
                &m.group,
                &stored.seq,
                &m.id,
                &m.sender,
                &m.sender_display,
                &m.body,
                &m.sent_at,
            ],
        )
        .await?;
    Ok(n == 1)
}

async fn store_replica(
    db: &Db,
    home: &str,
    messages: Vec<StoredGroupMessage>,
    joining: &HashSet<String>,
) -> PgResult<(Vec<StoredGroupMessage>, ReplicaOutcome)> {
    let mut feed = ReplicaFeed::new();
    let mut new = Vec::new();
    for m in messages {
        let group = &m.message.group;
        if !feed.knows(group) {
            let last = replica_start(db, home, group, m.seq, joining.contains(group)).await?;
            feed.start(group, last);
        }
        if !feed.wants(&m) {
            continue;
        }
        if is_ours(&m) && !relayed_back(db, &m).await? {
            feed.misattributed(home, &m);
        } else if !insert_replica(db, &m).await? {
            feed.id_reused(&m);
        } else {
            feed.stored(&m);
            new.push(m);
        }
    }
    let out = feed.finish();
    for ack in &out.acks {
        db.execute(
            "UPDATE groups SET last_seq = $2 WHERE name = $1",
            &[&ack.group, &ack.seq],
        )
        .await?;
    }
    Ok((new, out))
}

impl FederationStore for PostgresStore {
    async fn enqueue(
        &self,
        peer: &str,
        kind: MessageKind,
        messages: Vec<NewMessage>,
    ) -> StoreResult<Vec<StoredMessage>> {
        let peer = peer.to_owned();
        Ok(self
            .run_in_commit(move |db| {
                Box::pin(async move { enqueue(db, &peer, kind, messages).await })
            })
            .await?)
    }

    async fn outbox_after(
        &self,
        peer: &str,
        after: i64,
        limit: usize,
    ) -> StoreResult<Vec<Outgoing>> {
        let r = async {
            self.read(
                "SELECT m.seq, m.id, m.sender, m.sender_display, m.recipient, \
                 m.recipient_display, m.body, m.sent_at, o.kind \
                 FROM outbox o JOIN messages m ON m.seq = o.seq \
                 WHERE o.peer = $1 AND o.seq > $2 ORDER BY o.seq LIMIT $3",
                &[&peer, &after, &sql_limit(limit)],
            )
            .await?
            .iter()
            .map(|r| {
                Ok(Outgoing {
                    stored: message_row(r)?,
                    kind: if r.try_get::<_, i16>(8)? == 1 {
                        MessageKind::GroupPost
                    } else {
                        MessageKind::Private
                    },
                })
            })
            .collect::<PgResult<Vec<_>>>()
        };
        Ok(r.await?)
    }

    async fn outbox_counts(&self) -> StoreResult<HashMap<String, u64>> {
        let r = async {
            self.read("SELECT peer, count(*) FROM outbox GROUP BY peer", &[])
                .await?
                .iter()
                .map(|r| {
                    Ok((
                        r.try_get::<_, String>(0)?,
                        r.try_get::<_, i64>(1)?.max(0) as u64,
                    ))
                })
                .collect::<PgResult<HashMap<_, _>>>()
        };
        Ok(r.await?)
    }

    async fn settle(&self, peer: &str, settled: Vec<Settled>) -> StoreResult<()> {
        let peer = peer.to_owned();
        Ok(self
            .run_in_commit(move |db| Box::pin(async move { settle(db, &peer, settled).await }))
            .await?)
    }

    async fn receive(&self, messages: Vec<NewMessage>) -> StoreResult<usize> {
        Ok(self
            .run_in_commit(move |db| Box::pin(async move { receive(db, messages).await }))
            .await?)
    }

    async fn open_feed(&self, peer: &str, group: &str, from_seq: i64) -> StoreResult<()> {
        let (peer, group) = (peer.to_owned(), group.to_owned());
        Ok(self
            .run_in_commit(move |db| {
                Box::pin(async move {
                    db.execute(
                        "INSERT INTO group_feeds (peer, grp, acked_seq) VALUES ($1, $2, $3) \
                         ON CONFLICT (peer, grp) DO NOTHING",
                        &[&peer, &group, &from_seq],
                    )
                    .await?;
                    Ok(())
                })
            })
            .await?)
    }

    async fn feeds(&self, peer: &str) -> StoreResult<Vec<GroupCursor>> {
        let r = async {
            self.read(
                "SELECT grp, acked_seq FROM group_feeds WHERE peer = $1",
                &[&peer],
            )
            .await?
            .iter()
            .map(|r| {
                Ok(GroupCursor {
                    group: r.try_get(0)?,
                    seq: r.try_get(1)?,
                })
            })
            .collect::<PgResult<Vec<_>>>()
        };
        Ok(r.await?)
    }

    async fn ack_feeds(&self, peer: &str, acked: Vec<GroupCursor>) -> StoreResult<()> {
        if acked.is_empty() {
            return Ok(());
        }
        let peer = peer.to_owned();
        // One row per group: ON CONFLICT DO UPDATE may not touch a row twice in one statement.
        let mut highest: HashMap<String, i64> = HashMap::new();
        for a in acked {
            let e = highest.entry(a.group).or_insert(a.seq);
            *e = (*e).max(a.seq);
        }
        let (groups, seqs): (Vec<String>, Vec<i64>) = highest.into_iter().unzip();
        Ok(self
            .run_in_commit(move |db| {
                Box::pin(async move {
                    db.execute(
                        "INSERT INTO group_feeds (peer, grp, acked_seq) \
                         SELECT $1, g, s FROM UNNEST($2::text[], $3::bigint[]) AS v(g, s) \
                         ON CONFLICT (peer, grp) DO UPDATE \
                         SET acked_seq = GREATEST(group_feeds.acked_seq, excluded.acked_seq)",
                        &[&peer, &groups, &seqs],
                    )
                    .await?;
                    Ok(())
                })
            })
            .await?)
    }

    async fn join_replica(
        &self,
        group: &str,
        home: &str,
        user: &str,
        read_seq: i64,
    ) -> StoreResult<bool> {
        let (group, home, user) = (group.to_owned(), home.to_owned(), user.to_owned());
        Ok(self
            .run_in_commit(move |db| {
                Box::pin(async move {
                    let now = unix_ms();
                    db.execute(
                        "INSERT INTO groups (name, home, created_at, last_seq) \
                         VALUES ($1, $2, $3, $4) ON CONFLICT (name) DO NOTHING",
                        &[&group, &home, &now, &read_seq],
                    )
                    .await?;
                    let n = db
                        .execute(
                            "INSERT INTO group_members (grp, username, read_seq, joined_at) \
                             VALUES ($1, $2, $3, $4) ON CONFLICT (grp, username) DO NOTHING",
                            &[&group, &user, &read_seq, &now],
                        )
                        .await?;
                    Ok(n == 1)
                })
            })
            .await?)
    }

    async fn store_replica(
        &self,
        home: &str,
        messages: Vec<StoredGroupMessage>,
        joining: HashSet<String>,
        published: Published,
    ) -> StoreResult<ReplicaOutcome> {
        let home = home.to_owned();
        Ok(self
            .run_publishing(
                move |db| {
                    Box::pin(async move { store_replica(db, &home, messages, &joining).await })
                },
                published,
            )
            .await?)
    }
}
