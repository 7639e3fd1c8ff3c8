//! [`GroupStore`] for [`SqliteStore`]: groups, memberships, group messages and read cursors.
//! Writes go to the writer thread as [`GroupWrite`]s (see `group_writes`), sharing its group
//! commits with private messages; reads run on the reader connections.

use jaring_chat::storage::{
    GroupRecord, GroupStore, JoinOutcome, MemberRecord, NewGroupMessage, Page, Published,
    ReadCursor, StoreError, StoreResult, StoredGroupMessage, Window, WindowTaker,
};
use rusqlite::params;

use crate::group_writes::GroupWrite;
use crate::store::SqliteStore;
use crate::writer::Write;

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
        let r = async move {
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
        .await;
        r.map_err(StoreError::from)
    }

    async fn memberships(&self) -> StoreResult<Vec<MemberRecord>> {
        let r = async move {
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
        .await;
        r.map_err(StoreError::from)
    }

    async fn join_group(&self, group: &str, home: &str, user: &str) -> StoreResult<JoinOutcome> {
        let r = async move {
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
        .await;
        r.map_err(StoreError::from)
    }

    async fn leave_group(&self, group: &str, user: &str) -> StoreResult<bool> {
        let r = async move {
            let (group, user) = (group.to_owned(), user.to_owned());
            self.write(|reply| Write::Group(GroupWrite::Leave { group, user, reply }))
                .await
        }
        .await;
        r.map_err(StoreError::from)
    }

    async fn insert_group_messages(
        &self,
        messages: Vec<NewGroupMessage>,
        published: Published,
    ) -> StoreResult<Vec<StoredGroupMessage>> {
        let r = async move {
            self.write(|reply| {
                Write::Group(GroupWrite::Messages {
                    messages,
                    published,
                    reply,
                })
            })
            .await
        }
        .await;
        r.map_err(StoreError::from)
    }

    async fn group_messages(
        &self,
        group: &str,
        after: i64,
        limit: usize,
        max_bytes: usize,
    ) -> StoreResult<Page<StoredGroupMessage>> {
        let r = async move {
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
        .await;
        r.map_err(StoreError::from)
    }

    async fn group_history(
        &self,
        group: &str,
        window: Window,
    ) -> StoreResult<Page<StoredGroupMessage>> {
        let r = async move {
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
        .await;
        r.map_err(StoreError::from)
    }

    async fn advance_cursors(&self, cursors: Vec<ReadCursor>) -> StoreResult<()> {
        let cursors: Vec<(String, String, i64)> = cursors
            .into_iter()
            .map(|c| (c.group, c.user, c.seq))
            .collect();
        let r = async move {
            if cursors.is_empty() {
                return Ok(());
            }
            self.write(|reply| Write::Group(GroupWrite::Cursors { cursors, reply }))
                .await
        }
        .await;
        r.map_err(StoreError::from)
    }
}
