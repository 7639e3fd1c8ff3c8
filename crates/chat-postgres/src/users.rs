//! Users: the realm's start-up list and the operator's [`UserAdmin`], through the writer's
//! transactions (a change that fails leaves nothing behind: each runs under its own savepoint).
//! The store holds the database's lock, so a running server and `jaring chat user …` never
//! both have it open. Bench users, and removing them with everything they wrote, too.

use jaring_chat::storage::{BenchPurge, StoreResult, UserAdmin, UserRecord};

use crate::error::{Error, PgResult};
use crate::writer::Db;
use crate::{PostgresStore, unix_ms};

/// Every user, by name.
pub(crate) async fn list_users(store: &PostgresStore) -> PgResult<Vec<UserRecord>> {
    store
        .read(
            "SELECT name, display_name, password_hash, bench FROM users ORDER BY name",
            &[],
        )
        .await?
        .iter()
        .map(|r| {
            Ok(UserRecord {
                name: r.try_get(0)?,
                display_name: r.try_get(1)?,
                password_hash: r.try_get(2)?,
                bench: r.try_get(3)?,
            })
        })
        .collect()
}

impl UserAdmin for PostgresStore {
    async fn list_users(&self) -> StoreResult<Vec<UserRecord>> {
        Ok(list_users(self).await?)
    }

    async fn add_user(&self, user: UserRecord) -> StoreResult<()> {
        Ok(self
            .run_in_commit(move |db| {
                Box::pin(async move {
                    let n = db
                        .execute(
                            "INSERT INTO users (name, display_name, password_hash, created_at, bench) \
                             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (name) DO NOTHING",
                            &[
                                &user.name,
                                &user.display_name,
                                &user.password_hash,
                                &unix_ms(),
                                &user.bench,
                            ],
                        )
                        .await?;
                    if n == 0 {
                        return Err(Error::UserExists(user.name));
                    }
                    Ok(())
                })
            })
            .await?)
    }

    async fn set_password(&self, name: &str, password_hash: &str) -> StoreResult<()> {
        let (name, hash) = (name.to_owned(), password_hash.to_owned());
        Ok(self
            .run_in_commit(move |db| {
                Box::pin(async move {
                    let n = db
                        .execute(
                            "UPDATE users SET password_hash = $1 WHERE name = $2",
                            &[&hash, &name],
                        )
                        .await?;
                    if n == 0 {
                        return Err(Error::NoSuchUser(name));
                    }
                    db.execute("DELETE FROM tokens WHERE username = $1", &[&name])
                        .await?;
                    Ok(())
                })
            })
            .await?)
    }

    async fn delete_user(&self, name: &str) -> StoreResult<()> {
        let name = name.to_owned();
        Ok(self
            .run_in_commit(move |db| {
                Box::pin(async move {
                    let n = db
                        .execute("DELETE FROM users WHERE name = $1", &[&name])
                        .await?;
                    if n == 0 {
                        return Err(Error::NoSuchUser(name));
                    }
                    db.execute("DELETE FROM tokens WHERE username = $1", &[&name])
                        .await?;
                    Ok(())
                })
            })
            .await?)
    }

    async fn put_bench_users(&self, users: Vec<UserRecord>) -> StoreResult<()> {
        Ok(self
            .run_in_commit(move |db| Box::pin(put_bench_users(db, users)))
            .await?)
    }

    async fn purge_bench_users(&self) -> StoreResult<BenchPurge> {
        Ok(self
            .run_in_commit(move |db| Box::pin(purge_bench_users(db)))
            .await?)
    }
}

/// Creates or replaces the bench users `users`; refuses (writing nothing) if one is a real user.
async fn put_bench_users(db: &Db, users: Vec<UserRecord>) -> PgResult<()> {
    let names: Vec<&str> = users.iter().map(|u| u.name.as_str()).collect();
    let mut existing = std::collections::HashMap::new();
    for row in db
        .query(
            "SELECT name, bench FROM users WHERE name = ANY($1)",
            &[&names],
        )
        .await?
    {
        existing.insert(row.try_get::<_, String>(0)?, row.try_get::<_, bool>(1)?);
    }
    // The first one named in the call, whatever order the database found them in.
    if let Some(real) = names.iter().find(|n| existing.get(**n) == Some(&false)) {
        return Err(Error::UserExists((*real).to_owned()));
    }
    let replaced: Vec<&String> = existing.keys().collect();
    let now = unix_ms();
    for u in &users {
        db.execute(
            "INSERT INTO users (name, display_name, password_hash, created_at, bench) \
             VALUES ($1, $2, $3, $4, true) ON CONFLICT (name) DO UPDATE SET \
             display_name = excluded.display_name, password_hash = excluded.password_hash",
            &[&u.name, &u.display_name, &u.password_hash, &now],
        )
        .await?;
    }
    if !replaced.is_empty() {
        db.execute("DELETE FROM tokens WHERE username = ANY($1)", &[&replaced])
            .await?;
    }
    Ok(())
}

/// Deletes the bench users and everything that is theirs (see
/// [`UserAdmin::purge_bench_users`]); the tables it touches: `docs/design/storage.md#bench-users`.
async fn purge_bench_users(db: &Db) -> PgResult<BenchPurge> {
    let users: Vec<String> = db
        .query("SELECT name FROM users WHERE bench ORDER BY name", &[])
        .await?
        .iter()
        .map(|r| r.try_get(0))
        .collect::<Result<_, _>>()?;
    if users.is_empty() {
        return Ok(BenchPurge::default());
    }
    // Private messages, with their outbox entries and federation state, in one statement. Local
    // addresses are bare names, so a bench user is the sender or the recipient by name whichever
    // realm the other side is on.
    let private: i64 = db
        .query_opt(
            "WITH gone AS ( \
                 DELETE FROM messages WHERE sender = ANY($1) OR recipient = ANY($1) \
                 RETURNING seq, id), \
             outbox_gone AS (DELETE FROM outbox WHERE seq IN (SELECT seq FROM gone)), \
             ids_gone AS (DELETE FROM federated_ids WHERE id IN (SELECT id FROM gone)), \
             posts_gone AS (DELETE FROM relayed_posts WHERE id IN (SELECT id FROM gone)) \
             SELECT count(*) FROM gone",
            &[&users],
        )
        .await?
        .map(|r| r.try_get(0))
        .transpose()?
        .unwrap_or(0);
    db.execute(
        "DELETE FROM inbox_delivered WHERE recipient = ANY($1)",
        &[&users],
    )
    .await?;
    // Groups: those a bench user was in or created may be left with no member.
    let candidates: Vec<String> = db
        .query(
            "SELECT grp FROM group_members WHERE username = ANY($1) \
             UNION SELECT name FROM groups WHERE creator = ANY($1)",
            &[&users],
        )
        .await?
        .iter()
        .map(|r| r.try_get(0))
        .collect::<Result<_, _>>()?;
    let mut group_messages = db
        .execute(
            "DELETE FROM group_messages WHERE sender = ANY($1)",
            &[&users],
        )
        .await?;
    db.execute(
        "DELETE FROM group_members WHERE username = ANY($1)",
        &[&users],
    )
    .await?;
    let groups: Vec<String> = db
        .query(
            "DELETE FROM groups g WHERE name = ANY($1) \
             AND NOT EXISTS (SELECT 1 FROM group_members m WHERE m.grp = g.name) \
             RETURNING name",
            &[&candidates],
        )
        .await?
        .iter()
        .map(|r| r.try_get(0))
        .collect::<Result<_, _>>()?;
    let mut groups = groups;
    groups.sort();
    if !groups.is_empty() {
        group_messages += db
            .execute("DELETE FROM group_messages WHERE grp = ANY($1)", &[&groups])
            .await?;
        db.execute("DELETE FROM group_feeds WHERE grp = ANY($1)", &[&groups])
            .await?;
    }
    // A group a bench user created that stays counts against no one's quota.
    db.execute(
        "UPDATE groups SET creator = NULL WHERE creator = ANY($1)",
        &[&users],
    )
    .await?;
    db.execute("DELETE FROM tokens WHERE username = ANY($1)", &[&users])
        .await?;
    db.execute("DELETE FROM users WHERE bench", &[]).await?;
    Ok(BenchPurge {
        users,
        private_messages: u64::try_from(private).unwrap_or_default(),
        group_messages,
        groups,
    })
}
