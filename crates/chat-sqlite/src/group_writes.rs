//! The group writes the writer applies in its transaction: joins, leaves, posts and read
//! cursors, and federation's publishing jobs. A group message's `seq` comes from
//! `groups.last_seq`, bumped in the transaction that stores the message, so a failed commit takes
//! its numbers back with it and the order has no gaps. Each write is answered by a [`Finish`]
//! once the commit's fate is known; for posts, that runs each message's [`Published`] hook in
//! commit order, which is `seq` order.

use jaring_chat::storage::{JoinOutcome, NewGroupMessage, Published, StoredGroupMessage};
use rusqlite::{Connection, OptionalExtension as _, params};
use tokio::sync::oneshot;

use crate::error::{Error, SqlResult};

/// A queued group write and where its answer goes.
pub(super) enum GroupWrite {
    Join {
        group: String,
        home: String,
        user: String,
        reply: oneshot::Sender<SqlResult<JoinOutcome>>,
    },
    Leave {
        group: String,
        user: String,
        reply: oneshot::Sender<SqlResult<bool>>,
    },
    Messages {
        messages: Vec<NewGroupMessage>,
        published: Published,
        reply: oneshot::Sender<SqlResult<Vec<StoredGroupMessage>>>,
    },
    Cursors {
        cursors: Vec<(String, String, i64)>,
        reply: oneshot::Sender<SqlResult<()>>,
    },
    /// Work of another module (federation: a replica's messages) that stores group messages
    /// itself: it runs in the transaction and says what to do once its fate is known.
    Publishing(Box<dyn FnOnce(&Connection) -> Finish + Send>),
}

/// A group write applied in the open transaction, to be answered once its fate is known.
pub(super) struct Finish(pub(super) Box<dyn FnOnce(bool) + Send>);

impl Finish {
    /// Answers the caller: the result if the transaction committed, an error if it did not.
    pub(super) fn run(self, committed: bool) {
        (self.0)(committed);
    }
}

/// Once committed, pushes each stored message (in order) and then answers with them.
fn publish_then_answer(
    stored: Vec<StoredGroupMessage>,
    published: Published,
    reply: oneshot::Sender<SqlResult<Vec<StoredGroupMessage>>>,
) -> Finish {
    Finish(Box::new(move |committed| {
        if committed {
            for m in &stored {
                published(m);
            }
            let _ = reply.send(Ok(stored));
        } else {
            let _ = reply.send(Err(Error::Stopped));
        }
    }))
}

fn answer<T: Send + 'static>(result: SqlResult<T>, reply: oneshot::Sender<SqlResult<T>>) -> Finish {
    Finish(Box::new(move |committed| {
        let _ = reply.send(if committed {
            result
        } else {
            Err(Error::Stopped)
        });
    }))
}

impl GroupWrite {
    /// Runs the write in the batch's transaction.
    pub(super) fn apply(self, tx: &Connection, now: i64) -> Finish {
        match self {
            Self::Join {
                group,
                home,
                user,
                reply,
            } => answer(join(tx, &group, &home, &user, now), reply),
            Self::Leave { group, user, reply } => answer(
                tx.prepare_cached("DELETE FROM group_members WHERE grp = ?1 AND user = ?2")
                    .and_then(|mut s| s.execute(params![group, user]))
                    .map(|n| n > 0)
                    .map_err(Error::from),
                reply,
            ),
            Self::Messages {
                messages,
                published,
                reply,
            } => {
                // A savepoint per call, as for `run_publishing`: a call that fails half-way (a
                // message for a group that does not exist) must leave none of its messages
                // behind, while the rest of the batch still commits. Without it the messages
                // before the failure were committed, under seqs, never published, and their
                // sender was told they were not stored.
                if let Err(e) = savepoint(tx, "SAVEPOINT group_messages") {
                    return answer(Err(e), reply);
                }
                let mut stored = Vec::with_capacity(messages.len());
                for message in messages {
                    match insert(tx, &message) {
                        Ok(Some(seq)) => stored.push(StoredGroupMessage { seq, message }),
                        // A retry (from another realm) of a message already stored.
                        Ok(None) => {}
                        Err(e) => {
                            let undo = savepoint(tx, "ROLLBACK TO group_messages")
                                .and_then(|()| savepoint(tx, "RELEASE group_messages"));
                            return answer(Err(undo.err().unwrap_or(e)), reply);
                        }
                    }
                }
                if let Err(e) = savepoint(tx, "RELEASE group_messages") {
                    return answer(Err(e), reply);
                }
                publish_then_answer(stored, published, reply)
            }
            Self::Cursors { cursors, reply } => {
                let r = (|| {
                    let mut s = tx.prepare_cached(
                        "UPDATE group_members SET read_seq = ?3 \
                         WHERE grp = ?1 AND user = ?2 AND read_seq < ?3",
                    )?;
                    for (g, u, seq) in &cursors {
                        s.execute(params![g, u, seq])?;
                    }
                    Ok(())
                })();
                answer(r, reply)
            }
            Self::Publishing(job) => job(tx),
        }
    }

    /// Answers the caller that nothing was stored.
    pub(super) fn fail(self) {
        match self {
            Self::Join { reply, .. } => drop(reply.send(Err(Error::Stopped))),
            Self::Leave { reply, .. } => drop(reply.send(Err(Error::Stopped))),
            Self::Messages { reply, .. } => drop(reply.send(Err(Error::Stopped))),
            Self::Cursors { reply, .. } => drop(reply.send(Err(Error::Stopped))),
            // Dropping the job drops its answer's sender: the caller hears the store stopped.
            Self::Publishing(job) => drop(job),
        }
    }
}

/// Runs a savepoint statement, prepared once per connection: this is every group post's path.
fn savepoint(tx: &Connection, sql: &str) -> SqlResult<()> {
    tx.prepare_cached(sql)?.execute([])?;
    Ok(())
}

fn join(tx: &Connection, group: &str, home: &str, user: &str, now: i64) -> SqlResult<JoinOutcome> {
    let created = tx
        .prepare_cached(
            "INSERT INTO groups (name, home, created_at, last_seq, creator) \
             VALUES (?1, ?2, ?3, 0, ?4) ON CONFLICT (name) DO NOTHING",
        )?
        .execute(params![group, home, now, user])?
        > 0;
    let last_seq: i64 = tx
        .prepare_cached("SELECT last_seq FROM groups WHERE name = ?1")?
        .query_row([group], |r| r.get(0))?;
    let existing: Option<i64> = tx
        .prepare_cached("SELECT read_seq FROM group_members WHERE grp = ?1 AND user = ?2")?
        .query_row([group, user], |r| r.get(0))
        .optional()?;
    if let Some(read_seq) = existing {
        return Ok(JoinOutcome {
            created,
            new_member: false,
            read_seq,
        });
    }
    tx.prepare_cached(
        "INSERT INTO group_members (grp, user, read_seq, joined_at) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![group, user, last_seq, now])?;
    Ok(JoinOutcome {
        created,
        new_member: true,
        read_seq: last_seq,
    })
}

/// Stores `m` with the next `seq` of its group; `None` when a message with its id is stored
/// already (a retry relayed by another realm: stored once, never twice).
fn insert(tx: &Connection, m: &NewGroupMessage) -> SqlResult<Option<i64>> {
    let known = tx
        .prepare_cached("SELECT 1 FROM group_messages WHERE id = ?1")?
        .query_row([&m.id.as_bytes()[..]], |_| Ok(()))
        .optional()?;
    if known.is_some() {
        return Ok(None);
    }
    let seq: i64 = tx
        .prepare_cached(
            "UPDATE groups SET last_seq = last_seq + 1 WHERE name = ?1 RETURNING last_seq",
        )?
        .query_row([&m.group], |r| r.get(0))?;
    tx.prepare_cached(
        "INSERT INTO group_messages (grp, seq, id, sender, sender_display, body, sent_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        m.group,
        seq,
        &m.id.as_bytes()[..],
        m.sender,
        m.sender_display,
        m.body,
        m.sent_at
    ])?;
    Ok(Some(seq))
}
