//! Password hashing with Argon2id, off the async workers and bounded in concurrency.
//!
//! Argon2 is slow and memory-hungry on purpose (that is what makes a stolen database expensive to
//! crack), so every hash and verification runs on a blocking thread, and at most
//! [`DEFAULT_HASH_CONCURRENCY`] run at once: a login storm costs `concurrency × memory`, not
//! `connections × memory`.
//!
//! A login is checked by [`Passwords::check`]: a failure always costs at least one Argon2 run at
//! the configured cost, so a user whose stored hash is cheaper (made before the cost was raised)
//! answers a wrong password no faster than anyone else, or than a name that does not exist; a
//! success moves a hash that is not at the configured cost to it.

use std::sync::Arc;

use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
use argon2::{Algorithm, Argon2, Params, PasswordHash, Version};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

/// Hashes or verifications running at once; the rest wait their turn.
pub const DEFAULT_HASH_CONCURRENCY: usize = 2;

/// Argon2id cost of new hashes. Existing hashes keep the cost they were made with (it is written
/// in the hash) until their user next logs in, when they are made again at this cost.
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

    /// Roughly what one Argon2 run at this cost takes: the memory filled times the passes over it.
    fn work(self) -> u64 {
        u64::from(self.memory_kib) * u64::from(self.iterations)
    }

    /// The cost written in an Argon2 PHC hash string, and whether it is an Argon2id hash of the
    /// current version (0x13); `None` for a string that is not an Argon2 hash.
    pub fn of_hash(hash: &str) -> Option<(Self, bool)> {
        let h = PasswordHash::new(hash).ok()?;
        let p = Params::try_from(&h).ok()?;
        let current =
            h.algorithm.as_str() == "argon2id" && h.version == Some(u32::from(Version::V0x13));
        Some((
            Self {
                memory_kib: p.m_cost(),
                iterations: p.t_cost(),
                parallelism: p.p_cost(),
            },
            current,
        ))
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

/// What checking a login's password found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    /// The password matches the user's stored hash.
    pub matched: bool,
    /// On a match with a hash not at the configured cost: a new hash of the password at that cost,
    /// to store in place of the old one.
    pub rehashed: Option<String>,
    /// The cost of each Argon2 verification the check ran, in order (what makes the failure
    /// paths cost the same; tests read it).
    pub verified_at: Vec<PasswordCost>,
}

/// Checks `password` against `stored`, a user's hash (`None`: no such user), blocking. `equaliser`
/// is a hash (of anything) at `cost`, the configured cost.
///
/// An unknown user is verified against `equaliser`; a user whose hash is cheaper than `cost`
/// (or unreadable) and whose password is wrong is verified against it too, after their own hash.
/// So every failure runs Argon2 at `cost` at least once, and a wrong password for a user with an
/// old cheap hash costs what it costs for anyone else. (A hash dearer than `cost` still costs
/// more, until its user's next login moves it to `cost`.)
pub fn check_blocking(
    password: &str,
    stored: Option<&str>,
    equaliser: &str,
    cost: PasswordCost,
) -> Checked {
    let mut verified_at = Vec::with_capacity(2);
    let Some(stored) = stored else {
        verify_blocking(password, equaliser);
        verified_at.push(cost);
        return Checked {
            matched: false,
            rehashed: None,
            verified_at,
        };
    };
    let found = PasswordCost::of_hash(stored);
    let matched = verify_blocking(password, stored);
    if let Some((c, _)) = found {
        verified_at.push(c);
    }
    let up_to_cost = found.is_some_and(|(c, _)| c.work() >= cost.work());
    if !matched && !up_to_cost {
        verify_blocking(password, equaliser);
        verified_at.push(cost);
    }
    let current = found.is_some_and(|(c, id)| id && c == cost);
    let rehashed = if matched && !current {
        // A failure here only keeps the old hash, which still verifies: try again next login.
        hash_blocking(password, cost).ok()
    } else {
        None
    };
    Checked {
        matched,
        rehashed,
        verified_at,
    }
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

    /// Checks a login off the async workers (see [`check_blocking`]; `equaliser` is a hash at
    /// [`Self::cost`]).
    pub async fn check(
        &self,
        password: String,
        stored: Option<String>,
        equaliser: String,
    ) -> Result<Checked, PasswordError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| PasswordError::Stopped)?;
        let cost = self.cost;
        tokio::task::spawn_blocking(move || {
            check_blocking(&password, stored.as_deref(), &equaliser, cost)
        })
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

    /// Configured: dearer than the stored hashes made at `INSECURE_TEST`.
    const CONFIGURED: PasswordCost = PasswordCost {
        memory_kib: 64,
        iterations: 2,
        parallelism: 1,
    };

    #[test]
    fn a_wrong_password_for_a_cheap_hash_also_runs_argon2_at_the_configured_cost() {
        let cheap = hash_blocking("surabaya", PasswordCost::INSECURE_TEST).expect("hash");
        let equaliser = hash_blocking("dummy", CONFIGURED).expect("hash");
        let wrong = check_blocking("wrong", Some(&cheap), &equaliser, CONFIGURED);
        assert!(!wrong.matched);
        assert_eq!(wrong.rehashed, None);
        assert_eq!(wrong.verified_at, [PasswordCost::INSECURE_TEST, CONFIGURED]);
        // The same work as for a name that does not exist…
        let unknown = check_blocking("wrong", None, &equaliser, CONFIGURED);
        assert!(!unknown.matched);
        assert_eq!(unknown.verified_at, [CONFIGURED]);
        // …and as for a user whose hash is at the configured cost already.
        let current = hash_blocking("surabaya", CONFIGURED).expect("hash");
        let wrong = check_blocking("wrong", Some(&current), &equaliser, CONFIGURED);
        assert_eq!(wrong.verified_at, [CONFIGURED]);
        // A malformed stored hash fails without Argon2, so the configured run stands in.
        let bad = check_blocking("x", Some("not a hash"), &equaliser, CONFIGURED);
        assert_eq!(bad.verified_at, [CONFIGURED]);
    }

    #[test]
    fn a_match_on_a_hash_not_at_the_configured_cost_is_rehashed_to_it() {
        let equaliser = hash_blocking("dummy", CONFIGURED).expect("hash");
        let cheap = hash_blocking("surabaya", PasswordCost::INSECURE_TEST).expect("hash");
        let ok = check_blocking("surabaya", Some(&cheap), &equaliser, CONFIGURED);
        assert!(ok.matched);
        assert_eq!(ok.verified_at, [PasswordCost::INSECURE_TEST]);
        let new = ok.rehashed.expect("rehashed");
        assert_eq!(PasswordCost::of_hash(&new), Some((CONFIGURED, true)));
        assert!(verify_blocking("surabaya", &new));
        // Already at the configured cost: kept as it is.
        let again = check_blocking("surabaya", Some(&new), &equaliser, CONFIGURED);
        assert!(again.matched);
        assert_eq!(again.rehashed, None);
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
