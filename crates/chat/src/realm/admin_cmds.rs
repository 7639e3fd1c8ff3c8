//! What the admin socket asks of a running realm: user administration that storage and the
//! realm's memory see at once (the realm reads its users only at start).

use std::sync::PoisonError;

use jaring_proto::chat::address::is_valid_name;
use jaring_proto::chat::admin::{AdminUser, PurgeCounts, bench_names};
use tracing::{info, warn};

use super::{Realm, User, lock};
use crate::password::{PasswordCost, hash_blocking};
use crate::storage::{Storage, StoreError, UserRecord};

/// Why an admin request was not carried out.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// A user name that cannot exist.
    #[error("invalid user name {0:?}: use 1 to 32 letters, digits, '_', '-' or '.'")]
    InvalidName(String),
    /// The request itself is out of bounds (a bench prefix, a count).
    #[error("{0}")]
    Invalid(String),
    /// A bench user would replace a real one.
    #[error(
        "{0:?} is a real user of this realm, so no bench users were made: choose another \
         prefix (jaring bench chat --user-prefix)"
    )]
    RealUser(String),
    /// Storage refused or failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Hashing failed.
    #[error(transparent)]
    Password(#[from] crate::password::PasswordError),
}

impl AdminError {
    /// The admin reply's `code` for it, if programs tell it apart.
    pub fn code(&self) -> Option<&'static str> {
        match self {
            Self::RealUser(_) => Some(jaring_proto::chat::admin::CODE_REAL_USER),
            _ => None,
        }
    }
}

/// What the sessions of a deleted or changed user are told when their watch ends.
const ENDED: &str = "your account was changed by the realm's operator; log in again";

impl<S: Storage> Realm<S> {
    /// Every user, by name, with whether they are a bench user and online now.
    pub fn admin_users(&self) -> Vec<AdminUser> {
        let online = lock(&self.online);
        self.users
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(name, u)| AdminUser {
                name: name.clone(),
                display_name: u.display_name.clone(),
                bench: u.bench,
                online: online.contains_key(name),
            })
            .collect()
    }

    /// Adds a real user, the password hashed at the realm's cost.
    pub async fn admin_add_user(
        &self,
        name: String,
        display_name: Option<String>,
        password: String,
    ) -> Result<(), AdminError> {
        if !is_valid_name(&name) {
            return Err(AdminError::InvalidName(name));
        }
        let password_hash = self.passwords.hash(password).await?;
        let display_name = display_name.unwrap_or_else(|| name.clone());
        self.store
            .add_user(UserRecord {
                name: name.clone(),
                display_name: display_name.clone(),
                password_hash: password_hash.clone(),
                bench: false,
            })
            .await?;
        self.users
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(
                name.clone(),
                User {
                    display_name,
                    password_hash,
                    bench: false,
                },
            );
        info!(user = %name, "user added through the admin socket");
        Ok(())
    }

    /// Replaces a user's password (at the realm's cost; a bench user becomes a real one) and
    /// ends all their sessions.
    pub async fn admin_set_password(
        &self,
        name: String,
        password: String,
    ) -> Result<(), AdminError> {
        if self.user(&name).is_none() {
            return Err(StoreError::NoSuchUser(name).into());
        }
        let password_hash = self.passwords.hash(password).await?;
        self.store.set_password(&name, &password_hash).await?;
        if let Some(u) = self
            .users
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .get_mut(&name)
        {
            u.password_hash = password_hash;
        }
        self.end_sessions(&name);
        info!(user = %name, "password changed through the admin socket");
        Ok(())
    }

    /// Deletes a user and ends their sessions.
    pub async fn admin_delete_user(&self, name: String) -> Result<(), AdminError> {
        self.store.delete_user(&name).await?;
        self.users
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&name);
        self.end_sessions(&name);
        self.groups.forget(std::slice::from_ref(&name), &[], ENDED);
        info!(user = %name, "user deleted through the admin socket");
        Ok(())
    }

    /// Creates or re-creates the bench users `prefix0` … with one cheap hash of `password`
    /// (never applied to a real user: a name that is one refuses the whole request).
    pub async fn admin_put_bench_users(
        &self,
        prefix: &str,
        count: u32,
        password: String,
    ) -> Result<u32, AdminError> {
        let names = bench_names(prefix, count).map_err(AdminError::Invalid)?;
        {
            let users = self.users.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(real) = names
                .iter()
                .find(|n| users.get(n.as_str()).is_some_and(|u| !u.bench))
            {
                return Err(AdminError::RealUser(real.clone()));
            }
        }
        // One hash for all: a bench user's password guards nothing but a bench run.
        let password_hash = tokio::task::spawn_blocking(move || {
            hash_blocking(&password, PasswordCost::INSECURE_TEST)
        })
        .await
        .map_err(|_| crate::password::PasswordError::Stopped)??;
        let records: Vec<UserRecord> = names
            .iter()
            .map(|n| UserRecord {
                name: n.clone(),
                display_name: n.clone(),
                password_hash: password_hash.clone(),
                bench: true,
            })
            .collect();
        match self.store.put_bench_users(records).await {
            Err(StoreError::UserExists(real)) => return Err(AdminError::RealUser(real)),
            other => other?,
        }
        {
            let mut users = self.users.write().unwrap_or_else(PoisonError::into_inner);
            for n in &names {
                users.insert(
                    n.clone(),
                    User {
                        display_name: n.clone(),
                        password_hash: password_hash.clone(),
                        bench: true,
                    },
                );
            }
        }
        // A re-created bench user starts without sessions, as storage now has it.
        for n in &names {
            self.end_sessions(n);
        }
        info!(prefix, count, "bench users made through the admin socket");
        Ok(count)
    }

    /// Deletes every bench user and everything they wrote.
    pub async fn admin_purge_bench(&self) -> Result<PurgeCounts, AdminError> {
        let purged = self.store.purge_bench_users().await?;
        {
            let mut users = self.users.write().unwrap_or_else(PoisonError::into_inner);
            for u in &purged.users {
                users.remove(u);
            }
        }
        for u in &purged.users {
            self.end_sessions(u);
        }
        self.groups.forget(&purged.users, &purged.groups, ENDED);
        info!(
            users = purged.users.len(),
            private_messages = purged.private_messages,
            group_messages = purged.group_messages,
            groups = purged.groups.len(),
            "bench users purged through the admin socket"
        );
        Ok(PurgeCounts {
            users: purged.users.len() as u64,
            private_messages: purged.private_messages,
            group_messages: purged.group_messages,
            groups: purged.groups,
        })
    }

    /// Forgets every token of `name` (storage forgot them already) and ends their watch.
    fn end_sessions(&self, name: &str) {
        let hashes = lock(&self.tokens).remove_user(name);
        for h in &hashes {
            self.groups.end_watches_of(h, ENDED);
        }
        if !hashes.is_empty() {
            warn!(user = %name, sessions = hashes.len(), "sessions ended by the operator");
        }
    }
}
