//! Users: the realm's start-up list and the operator's [`UserAdmin`], through the writer's
//! transactions (a change that fails leaves nothing behind: each runs in its own savepoint).

use jaring_chat::storage::{StoreResult, TokenRecord, UserAdmin, UserRecord};
use rusqlite::{Connection, OptionalExtension as _, params};

use crate::error::{Error, SqlResult};
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
}

/// Every user, by name (offline tools and the server's start-up).
pub(crate) fn list_users(conn: &Connection) -> SqlResult<Vec<UserRecord>> {
    let mut s =
        conn.prepare("SELECT name, display_name, password_hash FROM users ORDER BY name")?;
    let rows = s.query_map([], |r| {
        Ok(UserRecord {
            name: r.get(0)?,
            display_name: r.get(1)?,
            password_hash: r.get(2)?,
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
        "INSERT INTO users (name, display_name, password_hash, created_at) VALUES (?1, ?2, ?3, ?4)",
        params![user.name, user.display_name, user.password_hash, unix_ms()],
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
