//! Users: the realm's start-up list and the operator's [`UserAdmin`], through the writer's
//! transactions (a change that fails leaves nothing behind: each runs under its own savepoint).
//! The store holds the database's lock, so a running server and `jaring chat user …` never
//! both have it open.

use jaring_chat::storage::{StoreResult, UserAdmin, UserRecord};

use crate::error::{Error, PgResult};
use crate::{PostgresStore, unix_ms};

/// Every user, by name.
pub(crate) async fn list_users(store: &PostgresStore) -> PgResult<Vec<UserRecord>> {
    store
        .read(
            "SELECT name, display_name, password_hash FROM users ORDER BY name",
            &[],
        )
        .await?
        .iter()
        .map(|r| {
            Ok(UserRecord {
                name: r.try_get(0)?,
                display_name: r.try_get(1)?,
                password_hash: r.try_get(2)?,
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
                            "INSERT INTO users (name, display_name, password_hash, created_at) \
                             VALUES ($1, $2, $3, $4) ON CONFLICT (name) DO NOTHING",
                            &[
                                &user.name,
                                &user.display_name,
                                &user.password_hash,
                                &unix_ms(),
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
}
