//! Users: the realm's start-up list and the operator's [`UserAdmin`], through the writer's
//! transactions (a change that fails leaves nothing behind: each runs in its own savepoint), and
//! the bench users with everything they wrote.

use std::collections::HashSet;
use std::sync::PoisonError;

use jaring_chat::storage::{BenchPurge, StoreResult, TokenRecord, UserAdmin, UserRecord};
use rusqlite::{Connection, OptionalExtension as _, params};

use crate::error::{Error, SqlResult};
use crate::index::{Postings, index_messages};
use crate::store::SqliteStore;
use crate::writer::unix_ms;

impl UserAdmin for SqliteStore {
    async fn list_users(&self) -> StoreResult<Vec<UserRecord>> {
        Ok(self.read_with(list_users).await?)
    }

    async fn add_user(&self, user: UserRecord) -> StoreResult<()> {
        Ok(self.run_in_commit(move |c| add_user(c, &user)).await?)
    }

    async fn set_password(&self, name: &str, password_hash: &str) -> StoreResult<()> {
        let (name, hash) = (name.to_owned(), password_hash.to_owned());
        Ok(self
            .run_in_commit(move |c| set_password(c, &name, &hash))
            .await?)
    }

    async fn delete_user(&self, name: &str) -> StoreResult<()> {
        let name = name.to_owned();
        Ok(self.run_in_commit(move |c| delete_user(c, &name)).await?)
    }

    async fn put_bench_users(&self, users: Vec<UserRecord>) -> StoreResult<()> {
        Ok(self
            .run_in_commit(move |c| put_bench_users(c, &users))
            .await?)
    }

    async fn purge_bench_users(&self) -> StoreResult<BenchPurge> {
        let mailboxes = std::sync::Arc::clone(&self.mailboxes);
        Ok(self
            .run_in_commit_then(purge_bench_users, move |purge: &BenchPurge| {
                // Mailboxes hold copies of undelivered messages, some of them (a real user's
                // from a bench user) deleted now: forgotten once committed, before any later
                // commit, so a read that began before the purge installs nothing either.
                if !purge.users.is_empty() {
                    mailboxes
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .clear();
                }
            })
            .await?)
    }
}

/// Every user, by name (offline tools and the server's start-up).
pub(crate) fn list_users(conn: &Connection) -> SqlResult<Vec<UserRecord>> {
    let mut s =
        conn.prepare("SELECT name, display_name, password_hash, bench FROM users ORDER BY name")?;
    let rows = s.query_map([], |r| {
        Ok(UserRecord {
            name: r.get(0)?,
            display_name: r.get(1)?,
            password_hash: r.get(2)?,
            bench: r.get(3)?,
        })
    })?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

/// Adds a user; refuses a name that exists.
fn add_user(conn: &Connection, user: &UserRecord) -> SqlResult<()> {
    let exists: Option<i64> = conn
        .query_row("SELECT 1 FROM users WHERE name = ?1", [&user.name], |r| {
            r.get(0)
        })
        .optional()?;
    if exists.is_some() {
        return Err(Error::UserExists(user.name.clone()));
    }
    conn.execute(
        "INSERT INTO users (name, display_name, password_hash, created_at, bench) \
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            user.name,
            user.display_name,
            user.password_hash,
            unix_ms(),
            user.bench
        ],
    )?;
    Ok(())
}

/// Replaces a user's password hash and ends all their sessions.
fn set_password(conn: &Connection, name: &str, hash: &str) -> SqlResult<()> {
    let n = conn.execute(
        "UPDATE users SET password_hash = ?1 WHERE name = ?2",
        params![hash, name],
    )?;
    if n == 0 {
        return Err(Error::NoSuchUser(name.to_owned()));
    }
    conn.execute("DELETE FROM tokens WHERE user = ?1", [name])?;
    Ok(())
}

/// Deletes a user and their sessions; their messages stay in others' history.
fn delete_user(conn: &Connection, name: &str) -> SqlResult<()> {
    let n = conn.execute("DELETE FROM users WHERE name = ?1", [name])?;
    if n == 0 {
        return Err(Error::NoSuchUser(name.to_owned()));
    }
    conn.execute("DELETE FROM tokens WHERE user = ?1", [name])?;
    Ok(())
}

/// Creates or replaces the bench users `users`; refuses (writing nothing) if one is a real user.
fn put_bench_users(conn: &Connection, users: &[UserRecord]) -> SqlResult<()> {
    let mut replaced = HashSet::new();
    {
        let mut find = conn.prepare_cached("SELECT bench FROM users WHERE name = ?1")?;
        for u in users {
            match find
                .query_row([&u.name], |r| r.get::<_, bool>(0))
                .optional()?
            {
                Some(false) => return Err(Error::UserExists(u.name.clone())),
                Some(true) => {
                    replaced.insert(u.name.as_str());
                }
                None => {}
            }
        }
    }
    let now = unix_ms();
    let mut put = conn.prepare_cached(
        "INSERT INTO users (name, display_name, password_hash, created_at, bench) \
         VALUES (?1, ?2, ?3, ?4, 1) ON CONFLICT (name) DO UPDATE SET \
         display_name = excluded.display_name, password_hash = excluded.password_hash",
    )?;
    for u in users {
        put.execute(params![u.name, u.display_name, u.password_hash, now])?;
    }
    if !replaced.is_empty() {
        // One pass over the tokens (they have no index by user), not one per user.
        let doomed = tokens(conn)?
            .into_iter()
            .filter(|t| replaced.contains(t.user.as_str()));
        let mut delete = conn.prepare_cached("DELETE FROM tokens WHERE hash = ?1")?;
        for t in doomed {
            delete.execute([&t.hash[..]])?;
        }
    }
    Ok(())
}

/// The bench users, as an SQL set.
const BENCH: &str = "(SELECT name FROM users WHERE bench = 1)";

/// Deletes the bench users and everything that is theirs (see
/// [`UserAdmin::purge_bench_users`]); the tables it touches: `docs/design/storage.md#bench-users`.
fn purge_bench_users(c: &Connection) -> SqlResult<BenchPurge> {
    let users: Vec<String> = c
        .prepare("SELECT name FROM users WHERE bench = 1 ORDER BY name")?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    if users.is_empty() {
        return Ok(BenchPurge::default());
    }
    let mut purge = BenchPurge {
        users,
        ..BenchPurge::default()
    };
    // The bulk indexes are brought up to date first: every message they will be without is then
    // one they name, and the writer's own notes of unindexed messages (which may name deleted
    // ones) lie behind `upto`, so its next catch-up reads the table instead of trusting them.
    index_messages(c, &mut Postings::default())?;
    // Private messages, with their outbox entries and federation state. Local addresses are bare
    // names, so a bench user is the sender or the recipient by name whichever realm the other
    // side is on. One scan of `messages` (it has no index by sender).
    let mut gone = HashSet::new();
    let mut ids = Vec::new();
    let mut conversations = HashSet::new();
    let mut recipients = HashSet::new();
    {
        let mut s = c.prepare(&format!(
            "SELECT seq, id, conversation, recipient FROM messages \
             WHERE sender IN {BENCH} OR recipient IN {BENCH}"
        ))?;
        let mut rows = s.query([])?;
        // Read in full before deleting: a table is not changed under a scan of it.
        while let Some(row) = rows.next()? {
            gone.insert(row.get::<_, i64>(0)?);
            ids.push(row.get::<_, Vec<u8>>(1)?);
            conversations.insert(row.get::<_, String>(2)?);
            recipients.insert(row.get::<_, String>(3)?);
        }
    }
    {
        let mut delete = c.prepare_cached("DELETE FROM messages WHERE seq = ?1")?;
        for seq in &gone {
            delete.execute([seq])?;
        }
        let mut federated = c.prepare_cached("DELETE FROM federated_ids WHERE id = ?1")?;
        let mut relayed = c.prepare_cached("DELETE FROM relayed_posts WHERE id = ?1")?;
        for id in &ids {
            federated.execute([id])?;
            relayed.execute([id])?;
        }
    }
    purge.private_messages = gone.len() as u64;
    if !gone.is_empty() {
        let queued: Vec<(String, i64)> = c
            .prepare("SELECT peer, seq FROM outbox")?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        let mut delete = c.prepare_cached("DELETE FROM outbox WHERE peer = ?1 AND seq = ?2")?;
        for (peer, seq) in queued.iter().filter(|(_, seq)| gone.contains(seq)) {
            delete.execute(params![peer, seq])?;
        }
        for key in &conversations {
            drop_postings(c, "history_index", "conversation", key, &gone)?;
        }
        for key in &recipients {
            drop_postings(c, "inbox_index", "recipient", key, &gone)?;
        }
    }
    c.execute(
        &format!("DELETE FROM inbox_delivered WHERE recipient IN {BENCH}"),
        [],
    )?;
    // Groups: those a bench user was in or created may be left with no member.
    let candidates: Vec<String> = c
        .prepare(&format!(
            "SELECT grp FROM group_members WHERE user IN {BENCH} \
             UNION SELECT name FROM groups WHERE creator IN {BENCH} ORDER BY 1"
        ))?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    purge.group_messages = c.execute(
        &format!("DELETE FROM group_messages WHERE sender IN {BENCH}"),
        [],
    )? as u64;
    c.execute(
        &format!("DELETE FROM group_members WHERE user IN {BENCH}"),
        [],
    )?;
    let mut empty = c.prepare_cached(
        "SELECT NOT EXISTS (SELECT 1 FROM group_members WHERE grp = ?1) \
         AND EXISTS (SELECT 1 FROM groups WHERE name = ?1)",
    )?;
    for group in candidates {
        if !empty.query_row([&group], |r| r.get::<_, bool>(0))? {
            continue;
        }
        purge.group_messages +=
            c.execute("DELETE FROM group_messages WHERE grp = ?1", [&group])? as u64;
        c.execute("DELETE FROM group_feeds WHERE grp = ?1", [&group])?;
        c.execute("DELETE FROM groups WHERE name = ?1", [&group])?;
        purge.groups.push(group);
    }
    // A group a bench user created that stays counts against no one's quota.
    c.execute(
        &format!("UPDATE groups SET creator = NULL WHERE creator IN {BENCH}"),
        [],
    )?;
    c.execute(&format!("DELETE FROM tokens WHERE user IN {BENCH}"), [])?;
    c.execute("DELETE FROM users WHERE bench = 1", [])?;
    Ok(purge)
}

/// Drops the `seq`s in `gone` from `key`'s rows of the postings `table` (`history_index` or
/// `inbox_index`), and the rows left empty. A row keeps its `last_seq`: it still orders the rows
/// and bounds what they hold, which is all the reads ask of it.
fn drop_postings(
    c: &Connection,
    table: &str,
    column: &str,
    key: &str,
    gone: &HashSet<i64>,
) -> SqlResult<()> {
    let rows: Vec<(i64, Vec<u8>)> = c
        .prepare_cached(&format!(
            "SELECT last_seq, seqs FROM {table} WHERE {column} = ?1"
        ))?
        .query_map([key], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    for (last, seqs) in rows {
        let kept: Vec<u8> = seqs
            .chunks_exact(8)
            .filter(|s| !gone.contains(&i64::from_le_bytes((*s).try_into().unwrap_or_default())))
            .flatten()
            .copied()
            .collect();
        if kept.len() == seqs.len() {
            continue;
        }
        if kept.is_empty() {
            c.prepare_cached(&format!(
                "DELETE FROM {table} WHERE {column} = ?1 AND last_seq = ?2"
            ))?
            .execute(params![key, last])?;
        } else {
            c.prepare_cached(&format!(
                "UPDATE {table} SET seqs = ?3 WHERE {column} = ?1 AND last_seq = ?2"
            ))?
            .execute(params![key, last, kept])?;
        }
    }
    Ok(())
}

/// Every live token's hash and its user (the server's start-up).
pub(crate) fn tokens(c: &Connection) -> SqlResult<Vec<TokenRecord>> {
    let mut s = c.prepare("SELECT hash, user FROM tokens")?;
    let rows = s.query_map([], |r| {
        let h: Vec<u8> = r.get(0)?;
        Ok((h, r.get::<_, String>(1)?))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (h, user) = row?;
        if let Ok(hash) = <[u8; 32]>::try_from(h.as_slice()) {
            out.push(TokenRecord { hash, user });
        }
    }
    Ok(out)
}

/// Replaces `name`'s password hash `old` with `new` (a login that found an outdated hash); a
/// password changed meanwhile is left alone.
pub(crate) fn rehash_password(c: &Connection, name: &str, old: &str, new: &str) -> SqlResult<()> {
    c.execute(
        "UPDATE users SET password_hash = ?1 WHERE name = ?2 AND password_hash = ?3",
        params![new, name, old],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use jaring_chat::config::Synchronous;
    use jaring_chat::storage::Store as _;

    use super::*;
    use crate::index::HISTORY_INDEX_AFTER;
    use crate::schema::DB_FILE;
    use crate::testing::{history, inbox, send};

    /// Every `seq` the bulk indexes name, that `messages` does not hold.
    fn dangling(dir: &Path) -> Vec<i64> {
        let conn = Connection::open(dir.join(DB_FILE)).unwrap();
        let mut missing = Vec::new();
        for table in ["history_index", "inbox_index"] {
            let blobs: Vec<Vec<u8>> = conn
                .prepare(&format!("SELECT seqs FROM {table}"))
                .unwrap()
                .query_map([], |r| r.get(0))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            for seq in blobs.iter().flat_map(|b| b.chunks_exact(8)) {
                let seq = i64::from_le_bytes(seq.try_into().unwrap());
                let found: bool = conn
                    .query_row(
                        "SELECT count(*) > 0 FROM messages WHERE seq = ?1",
                        [seq],
                        |r| r.get(0),
                    )
                    .unwrap();
                if !found {
                    missing.push(seq);
                }
            }
        }
        missing
    }

    /// The bulk indexes never name a purged message: neither right after the purge, nor once the
    /// writer catches up with the messages it noted before it (some of them purged since).
    #[tokio::test]
    async fn a_purge_leaves_the_bulk_indexes_naming_only_stored_messages() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path(), Synchronous::Normal, 16).unwrap();
        let bench = UserRecord {
            name: "b0".into(),
            display_name: "b0".into(),
            password_hash: "cheap".into(),
            bench: true,
        };
        store.put_bench_users(vec![bench]).await.unwrap();
        send(&store, "amy", "bob", "r1").await;
        send(&store, "b0", "bob", "from bench").await;
        send(&store, "amy", "b0", "to bench").await;
        send(&store, "bob", "amy", "r2").await;
        assert_eq!(inbox(&store, dir.path(), "bob").await, ["r1", "from bench"]);
        let purge = store.purge_bench_users().await.unwrap();
        assert_eq!(purge.private_messages, 2);
        assert!(
            dangling(dir.path()).is_empty(),
            "{:?}",
            dangling(dir.path())
        );
        // Past the catch-up interval the next commit indexes what the writer noted, which
        // includes the purged messages: it must read the table instead.
        tokio::time::sleep(HISTORY_INDEX_AFTER + std::time::Duration::from_millis(100)).await;
        send(&store, "amy", "bob", "r3").await;
        send(&store, "amy", "bob", "r4").await;
        let upto: i64 = Connection::open(dir.path().join(DB_FILE))
            .unwrap()
            .query_row("SELECT upto FROM history_indexed", [], |r| r.get(0))
            .unwrap();
        assert!(upto >= 5, "the writer caught up (upto {upto})");
        assert!(
            dangling(dir.path()).is_empty(),
            "{:?}",
            dangling(dir.path())
        );
        assert_eq!(history(&store, 10).await, ["r1", "r2", "r3", "r4"]);
        assert_eq!(inbox(&store, dir.path(), "bob").await, ["r1", "r3", "r4"]);
        assert!(inbox(&store, dir.path(), "b0").await.is_empty());
        assert!(
            store
                .conversation("b0", "bob", crate::testing::window(10))
                .await
                .unwrap()
                .messages
                .is_empty()
        );
    }
}
