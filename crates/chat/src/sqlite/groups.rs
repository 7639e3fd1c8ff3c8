//! [`GroupStore`] for [`SqliteStore`]: groups, memberships, group messages and read cursors.
//!
//! Writes join the same writer thread and group commit as private messages. A group message's
//! `seq` comes from `groups.last_seq`, bumped in the transaction that stores the message, so a
//! failed commit takes its numbers back with it and the order has no gaps. After the commit the
//! writer runs each message's [`Published`] hook in commit order, which is `seq` order.

use rusqlite::{Connection, OptionalExtension as _, params};
use tokio::sync::oneshot;

use super::{SqliteStore, Write};
use crate::group_store::{
    GroupRecord, GroupStore, JoinOutcome, MemberRecord, NewGroupMessage, Published,
    StoredGroupMessage,
};
use crate::store::{Page, StoreError, StoreResult, Window, WindowTaker};

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

/// Adds `groups.creator` (who created each group, for the per-user creation quota) to a database
/// made before it existed; its groups keep no creator and count against no one. A column, not a
/// schema version: an older binary reading this database just ignores it.
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

/// A queued group write and where its answer goes.
pub(super) enum GroupWrite {
    Join {
        group: String,
        home: String,
        user: String,
        reply: oneshot::Sender<StoreResult<JoinOutcome>>,
    },
    Leave {
        group: String,
        user: String,
        reply: oneshot::Sender<StoreResult<bool>>,
    },
    Messages {
        messages: Vec<NewGroupMessage>,
        published: Published,
        reply: oneshot::Sender<StoreResult<Vec<StoredGroupMessage>>>,
    },
    Cursors {
        cursors: Vec<(String, String, i64)>,
        reply: oneshot::Sender<StoreResult<()>>,
    },
    /// Work of another module (federation: a replica's messages) that stores group messages
    /// itself: it runs in the transaction and says what to do once its fate is known.
    Publishing(Box<dyn FnOnce(&Connection) -> Finish + Send>),
}

/// A group write applied in the open transaction, to be answered once its fate is known.
pub(super) struct Finish(Box<dyn FnOnce(bool) + Send>);

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
    reply: oneshot::Sender<StoreResult<Vec<StoredGroupMessage>>>,
) -> Finish {
    Finish(Box::new(move |committed| {
        if committed {
            for m in &stored {
                published(m);
            }
            let _ = reply.send(Ok(stored));
        } else {
            let _ = reply.send(Err(StoreError::Stopped));
        }
    }))
}

fn answer<T: Send + 'static>(
    result: StoreResult<T>,
    reply: oneshot::Sender<StoreResult<T>>,
) -> Finish {
    Finish(Box::new(move |committed| {
        let _ = reply.send(if committed {
            result
        } else {
            Err(StoreError::Stopped)
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
                    .map_err(StoreError::from),
                reply,
            ),
            Self::Messages {
                messages,
                published,
                reply,
            } => {
                let mut stored = Vec::with_capacity(messages.len());
                for message in messages {
                    match insert(tx, &message) {
                        Ok(Some(seq)) => stored.push(StoredGroupMessage { seq, message }),
                        // A retry (from another realm) of a message already stored.
                        Ok(None) => {}
                        // The whole transaction fails with it: nothing of the batch commits.
                        Err(e) => return answer(Err(e), reply),
                    }
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
            Self::Join { reply, .. } => drop(reply.send(Err(StoreError::Stopped))),
            Self::Leave { reply, .. } => drop(reply.send(Err(StoreError::Stopped))),
            Self::Messages { reply, .. } => drop(reply.send(Err(StoreError::Stopped))),
            Self::Cursors { reply, .. } => drop(reply.send(Err(StoreError::Stopped))),
            // Dropping the job drops its answer's sender: the caller hears the store stopped.
            Self::Publishing(job) => drop(job),
        }
    }
}

fn join(
    tx: &Connection,
    group: &str,
    home: &str,
    user: &str,
    now: i64,
) -> StoreResult<JoinOutcome> {
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
fn insert(tx: &Connection, m: &NewGroupMessage) -> StoreResult<Option<i64>> {
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

impl SqliteStore {
    /// Runs `job` in the writer's next transaction, under a savepoint of its own (a job that
    /// fails leaves nothing behind, and the rest of the batch still commits). `job` stores group
    /// messages and returns the new ones with its own answer; once the transaction is committed,
    /// each new message is given to `published` in order, on the writer thread (so pushes keep
    /// commit order), and only then is the answer returned.
    pub(crate) async fn run_publishing<T: Send + 'static>(
        &self,
        job: impl FnOnce(&Connection) -> StoreResult<(Vec<StoredGroupMessage>, T)> + Send + 'static,
        published: Published,
    ) -> StoreResult<T> {
        let (reply, answer) = oneshot::channel();
        let run = Box::new(move |tx: &Connection| {
            let result = tx
                .execute_batch("SAVEPOINT publishing")
                .map_err(StoreError::from)
                .and_then(|()| job(tx));
            let keep = if result.is_ok() {
                "RELEASE publishing"
            } else {
                "ROLLBACK TO publishing; RELEASE publishing"
            };
            let result = match (result, tx.execute_batch(keep)) {
                (Ok(v), Ok(())) => Ok(v),
                (Err(e), _) => Err(e),
                (Ok(_), Err(e)) => Err(e.into()),
            };
            Finish(Box::new(move |committed| {
                let _ = reply.send(match result {
                    Ok((stored, value)) if committed => {
                        for m in &stored {
                            published(m);
                        }
                        Ok(value)
                    }
                    Ok(_) => Err(StoreError::Stopped),
                    Err(e) => Err(e),
                });
            }))
        });
        self.writes
            .send(Write::Group(GroupWrite::Publishing(run)))
            .await
            .map_err(|_| StoreError::Stopped)?;
        answer.await.map_err(|_| StoreError::Stopped)?
    }
}

fn message_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<StoredGroupMessage> {
    let id: Vec<u8> = row.get(2)?;
    Ok(StoredGroupMessage {
        seq: row.get(1)?,
        message: NewGroupMessage {
            id: uuid::Uuid::from_slice(&id).unwrap_or_default(),
            group: row.get(0)?,
            sender: row.get(3)?,
            sender_display: row.get(4)?,
            body: row.get(5)?,
            sent_at: row.get(6)?,
        },
    })
}

const COLUMNS: &str = "grp, seq, id, sender, sender_display, body, sent_at";

impl GroupStore for SqliteStore {
    async fn groups(&self) -> StoreResult<Vec<GroupRecord>> {
        self.read(|c| {
            let mut s =
                c.prepare("SELECT name, home, last_seq, creator FROM groups ORDER BY name")?;
            let rows = s.query_map([], |r| {
                Ok(GroupRecord {
                    name: r.get(0)?,
                    home: r.get(1)?,
                    last_seq: r.get(2)?,
                    creator: r.get(3)?,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn memberships(&self) -> StoreResult<Vec<MemberRecord>> {
        self.read(|c| {
            let mut s = c.prepare("SELECT grp, user, read_seq FROM group_members")?;
            let rows = s.query_map([], |r| {
                Ok(MemberRecord {
                    group: r.get(0)?,
                    user: r.get(1)?,
                    read_seq: r.get(2)?,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn join_group(&self, group: &str, home: &str, user: &str) -> StoreResult<JoinOutcome> {
        let (group, home, user) = (group.to_owned(), home.to_owned(), user.to_owned());
        self.write(|reply| {
            Write::Group(GroupWrite::Join {
                group,
                home,
                user,
                reply,
            })
        })
        .await
    }

    async fn leave_group(&self, group: &str, user: &str) -> StoreResult<bool> {
        let (group, user) = (group.to_owned(), user.to_owned());
        self.write(|reply| Write::Group(GroupWrite::Leave { group, user, reply }))
            .await
    }

    async fn insert_group_messages(
        &self,
        messages: Vec<NewGroupMessage>,
        published: Published,
    ) -> StoreResult<Vec<StoredGroupMessage>> {
        self.write(|reply| {
            Write::Group(GroupWrite::Messages {
                messages,
                published,
                reply,
            })
        })
        .await
    }

    async fn group_messages(
        &self,
        group: &str,
        after: i64,
        limit: usize,
        max_bytes: usize,
    ) -> StoreResult<Page<StoredGroupMessage>> {
        let group = group.to_owned();
        self.read(move |c| {
            let mut s = c.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM group_messages WHERE grp = ?1 AND seq > ?2 \
                 ORDER BY seq LIMIT ?3"
            ))?;
            let mut taker = WindowTaker::new(Window {
                limit,
                before: None,
                max_bytes,
            });
            for row in s.query_map(params![group, after, limit as i64], message_row)? {
                let m = row?;
                let len = m.message.body.len();
                if !taker.take(m, len) {
                    break;
                }
            }
            Ok(taker.finish_as_taken())
        })
        .await
    }

    async fn group_history(
        &self,
        group: &str,
        window: Window,
    ) -> StoreResult<Page<StoredGroupMessage>> {
        let group = group.to_owned();
        self.read(move |c| {
            let mut s = c.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM group_messages WHERE grp = ?1 AND seq < ?2 \
                 ORDER BY seq DESC LIMIT ?3"
            ))?;
            let rows = s.query_map(
                params![group, window.before_seq(), window.limit as i64],
                message_row,
            )?;
            let mut taker = WindowTaker::new(window);
            for row in rows {
                let m = row?;
                let len = m.message.body.len();
                if !taker.take(m, len) {
                    break;
                }
            }
            Ok(taker.finish())
        })
        .await
    }

    async fn advance_cursors(&self, cursors: Vec<(String, String, i64)>) -> StoreResult<()> {
        if cursors.is_empty() {
            return Ok(());
        }
        self.write(|reply| Write::Group(GroupWrite::Cursors { cursors, reply }))
            .await
    }
}
