//! [`GroupStore`] for [`PostgresStore`]: groups, memberships, group messages and read cursors.
//!
//! Writes join the writer's group commit. A group message's `seq` comes from
//! `groups.last_seq`, assigned by the one writer and stored in the transaction that stores the
//! message, so a failed commit takes its numbers back with it and the order has no gaps (see
//! [`crate::writer`]). After the commit the writer runs each message's [`Published`] hook in
//! commit order, which is `seq` order.

use jaring_chat::storage::{
    GroupRecord, GroupStore, JoinOutcome, MemberRecord, NewGroupMessage, Page, Published,
    ReadCursor, StoreResult, StoredGroupMessage, Window, WindowTaker,
};
use tokio::sync::oneshot;
use tokio_postgres::Row;

use crate::error::{Error, PgResult};
use crate::writer::{Db, Op};
use crate::{PostgresStore, sql_limit, unix_ms};

/// A group message row and its bytes of text, for a [`WindowTaker`].
fn weighed(row: &Row) -> PgResult<(StoredGroupMessage, usize)> {
    let m = message_row(row)?;
    let len = m.message.body.len();
    Ok((m, len))
}

fn message_row(row: &Row) -> PgResult<StoredGroupMessage> {
    Ok(StoredGroupMessage {
        seq: row.try_get(1)?,
        message: NewGroupMessage {
            group: row.try_get(0)?,
            id: row.try_get(2)?,
            sender: row.try_get(3)?,
            sender_display: row.try_get(4)?,
            body: row.try_get(5)?,
            sent_at: row.try_get(6)?,
        },
    })
}

const AFTER: &str = "SELECT grp, seq, id, sender, sender_display, body, sent_at \
    FROM group_messages WHERE grp = $1 AND seq > $2 ORDER BY seq LIMIT $3";

const HISTORY: &str = "SELECT grp, seq, id, sender, sender_display, body, sent_at \
    FROM group_messages WHERE grp = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3";

async fn join(db: &Db, group: &str, home: &str, user: &str) -> PgResult<JoinOutcome> {
    let now = unix_ms();
    let created = db
        .execute(
            "INSERT INTO groups (name, home, created_at, last_seq, creator) \
             VALUES ($1, $2, $3, 0, $4) ON CONFLICT (name) DO NOTHING",
            &[&group, &home, &now, &user],
        )
        .await?
        > 0;
    let last_seq: i64 = db
        .query_opt("SELECT last_seq FROM groups WHERE name = $1", &[&group])
        .await?
        .ok_or_else(|| Error::NoSuchGroup(group.to_owned()))?
        .try_get(0)?;
    let existing = db
        .query_opt(
            "SELECT read_seq FROM group_members WHERE grp = $1 AND username = $2",
            &[&group, &user],
        )
        .await?;
    if let Some(row) = existing {
        return Ok(JoinOutcome {
            created,
            new_member: false,
            read_seq: row.try_get(0)?,
        });
    }
    db.execute(
        "INSERT INTO group_members (grp, username, read_seq, joined_at) VALUES ($1, $2, $3, $4)",
        &[&group, &user, &last_seq, &now],
    )
    .await?;
    Ok(JoinOutcome {
        created,
        new_member: true,
        read_seq: last_seq,
    })
}

impl GroupStore for PostgresStore {
    async fn groups(&self) -> StoreResult<Vec<GroupRecord>> {
        let r = async {
            self.read(
                "SELECT name, home, last_seq, creator FROM groups ORDER BY name",
                &[],
            )
            .await?
            .iter()
            .map(|r| {
                Ok(GroupRecord {
                    name: r.try_get(0)?,
                    home: r.try_get(1)?,
                    last_seq: r.try_get(2)?,
                    creator: r.try_get(3)?,
                })
            })
            .collect::<PgResult<Vec<_>>>()
        };
        Ok(r.await?)
    }

    async fn memberships(&self) -> StoreResult<Vec<MemberRecord>> {
        let r = async {
            self.read("SELECT grp, username, read_seq FROM group_members", &[])
                .await?
                .iter()
                .map(|r| {
                    Ok(MemberRecord {
                        group: r.try_get(0)?,
                        user: r.try_get(1)?,
                        read_seq: r.try_get(2)?,
                    })
                })
                .collect::<PgResult<Vec<_>>>()
        };
        Ok(r.await?)
    }

    async fn join_group(&self, group: &str, home: &str, user: &str) -> StoreResult<JoinOutcome> {
        let (group, home, user) = (group.to_owned(), home.to_owned(), user.to_owned());
        Ok(self
            .run_in_commit(move |db| Box::pin(async move { join(db, &group, &home, &user).await }))
            .await?)
    }

    async fn leave_group(&self, group: &str, user: &str) -> StoreResult<bool> {
        let (group, user) = (group.to_owned(), user.to_owned());
        Ok(self
            .run_in_commit(move |db| {
                Box::pin(async move {
                    Ok(db
                        .execute(
                            "DELETE FROM group_members WHERE grp = $1 AND username = $2",
                            &[&group, &user],
                        )
                        .await?
                        > 0)
                })
            })
            .await?)
    }

    async fn insert_group_messages(
        &self,
        messages: Vec<NewGroupMessage>,
        published: Published,
    ) -> StoreResult<Vec<StoredGroupMessage>> {
        let r = async {
            let (tx, rx) = oneshot::channel();
            self.submit(Op::GroupMessages(messages, published, tx))
                .await?;
            rx.await.map_err(|_| Error::Stopped)?
        };
        Ok(r.await?)
    }

    async fn group_messages(
        &self,
        group: &str,
        after: i64,
        limit: usize,
        max_bytes: usize,
    ) -> StoreResult<Page<StoredGroupMessage>> {
        let r = async {
            let rows = self
                .read(AFTER, &[&group, &after, &sql_limit(limit)])
                .await?;
            let window = Window {
                limit,
                before: None,
                max_bytes,
            };
            let taker = WindowTaker::new(window).take_all(rows.iter().map(weighed))?;
            Ok::<_, Error>(taker.finish_as_taken())
        };
        Ok(r.await?)
    }

    async fn group_history(
        &self,
        group: &str,
        window: Window,
    ) -> StoreResult<Page<StoredGroupMessage>> {
        let r = async {
            let rows = self
                .read(
                    HISTORY,
                    &[&group, &window.before_seq(), &sql_limit(window.limit)],
                )
                .await?;
            let taker = WindowTaker::new(window).take_all(rows.iter().map(weighed))?;
            Ok::<_, Error>(taker.finish())
        };
        Ok(r.await?)
    }

    async fn advance_cursors(&self, cursors: Vec<ReadCursor>) -> StoreResult<()> {
        if cursors.is_empty() {
            return Ok(());
        }
        // One row per member: an UPDATE … FROM takes one arbitrary match per row.
        let mut highest: std::collections::HashMap<(String, String), i64> = Default::default();
        for c in cursors {
            let e = highest.entry((c.group, c.user)).or_insert(c.seq);
            *e = (*e).max(c.seq);
        }
        let mut groups = Vec::with_capacity(highest.len());
        let mut users = Vec::with_capacity(highest.len());
        let mut seqs = Vec::with_capacity(highest.len());
        for ((g, u), s) in highest {
            groups.push(g);
            users.push(u);
            seqs.push(s);
        }
        Ok(self
            .run_in_commit(move |db| {
                Box::pin(async move {
                    db.execute(
                        "UPDATE group_members SET read_seq = v.seq \
                         FROM UNNEST($1::text[], $2::text[], $3::bigint[]) AS v(grp, username, seq) \
                         WHERE group_members.grp = v.grp AND group_members.username = v.username \
                         AND group_members.read_seq < v.seq",
                        &[&groups, &users, &seqs],
                    )
                    .await?;
                    Ok(())
                })
            })
            .await?)
    }
}
