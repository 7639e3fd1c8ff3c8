//! Password hashing with Argon2id, off the async workers and bounded in concurrency.
//!
//! Argon2 is slow and memory-hungry on purpose (that is what makes a stolen database expensive to
//! crack), so every hash and verification runs on a blocking thread, and at most
//! [`DEFAULT_HASH_CONCURRENCY`] run at once: a login storm costs `concurrency × memory`, not
//! `connections × memory`.

use std::sync::Arc;

use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
use argon2::{Algorithm, Argon2, Params, Version};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

/// Hashes or verifications running at once; the rest wait their turn.
pub const DEFAULT_HASH_CONCURRENCY: usize = 2;

/// Argon2id cost of new hashes. Existing hashes keep the cost they were made with (it is written
/// in the hash), so raising it applies to new and changed passwords.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PasswordCost {
    /// Memory per hash in KiB (default 19,456 = 19 MiB, the OWASP minimum for Argon2id).
    pub memory_kib: u32,
    /// Passes over the memory (default 2).
    pub iterations: u32,
    /// Lanes (default 1).
    pub parallelism: u32,
}

impl Default for PasswordCost {
    fn default() -> Self {
        Self {
            memory_kib: Params::DEFAULT_M_COST,
            iterations: Params::DEFAULT_T_COST,
            parallelism: Params::DEFAULT_P_COST,
        }
    }
}

impl PasswordCost {
    /// **For tests and benchmarks only**: the cheapest cost Argon2 allows (8 KiB, one pass), so a
    /// thousand logins take milliseconds. Never use it for real passwords.
    pub const INSECURE_TEST: Self = Self {
        memory_kib: 8,
        iterations: 1,
        parallelism: 1,
    };

    fn params(self) -> Result<Params, PasswordError> {
        Params::new(self.memory_kib, self.iterations, self.parallelism, None)
            .map_err(|e| PasswordError::Cost(e.to_string()))
    }
}

/// Why hashing failed.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    /// The configured cost is out of Argon2's range.
    #[error(
        "invalid password cost ({0}); memory_kib must be at least 8 × parallelism, iterations at least 1"
    )]
    Cost(String),
    /// Hashing failed for another reason.
    #[error("cannot hash the password: {0}")]
    Hash(String),
    /// The blocking pool is gone (shutdown).
    #[error("password hashing stopped")]
    Stopped,
}

/// Hashes a password at `cost` (blocking; call from a blocking thread or an offline tool).
pub fn hash_blocking(password: &str, cost: PasswordCost) -> Result<String, PasswordError> {
    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, cost.params()?);
    argon
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| PasswordError::Hash(e.to_string()))
}

/// Whether `password` matches `hash` (blocking). A malformed hash never matches.
pub fn verify_blocking(password: &str, hash: &str) -> bool {
    Argon2::default()
        .verify_password(password.as_bytes(), hash)
        .is_ok()
}

/// Hashing and verification for a running server: on blocking threads, behind a semaphore.
#[derive(Debug, Clone)]
pub struct Passwords {
    permits: Arc<Semaphore>,
    cost: PasswordCost,
}

impl Passwords {
    /// At most `concurrency` Argon2 runs at once; new hashes at `cost`.
    pub fn new(cost: PasswordCost, concurrency: usize) -> Result<Self, PasswordError> {
        cost.params()?;
        Ok(Self {
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            cost,
        })
    }

    /// The cost new hashes are made with.
    pub fn cost(&self) -> PasswordCost {
        self.cost
    }

    /// Verifies off the async workers.
    pub async fn verify(&self, password: String, hash: String) -> Result<bool, PasswordError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| PasswordError::Stopped)?;
        tokio::task::spawn_blocking(move || verify_blocking(&password, &hash))
            .await
            .map_err(|_| PasswordError::Stopped)
    }

    /// Hashes off the async workers.
    pub async fn hash(&self, password: String) -> Result<String, PasswordError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| PasswordError::Stopped)?;
        let cost = self.cost;
        tokio::task::spawn_blocking(move || hash_blocking(&password, cost))
            .await
            .map_err(|_| PasswordError::Stopped)?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_wrong_passwords_do_not() {
        let h = hash_blocking("surabaya", PasswordCost::INSECURE_TEST).expect("hash");
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_blocking("surabaya", &h));
        assert!(!verify_blocking("surabaya ", &h));
        assert!(!verify_blocking("surabaya", "not a hash"));
    }

    #[test]
    fn bad_costs_are_refused() {
        let bad = PasswordCost {
            memory_kib: 1,
            ..PasswordCost::INSECURE_TEST
        };
        assert!(Passwords::new(bad, 1).is_err());
    }
}
