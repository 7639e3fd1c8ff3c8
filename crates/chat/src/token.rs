//! Session tokens: 256 random bits from the OS CSPRNG, shown to the client once as 64 hex digits,
//! kept (in memory and on disk) only as their SHA-256, and forgotten after an idle time.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use rand::Rng as _;
use sha2::{Digest as _, Sha256};

/// A token unused for this long expires; its next use is refused and the user must `auth` again.
pub const DEFAULT_TOKEN_IDLE: Duration = Duration::from_secs(3600);

/// Live tokens one user may hold; logging in once more ends the oldest, so a client that logs in
/// in a loop cannot grow the table without bound.
pub const DEFAULT_TOKENS_PER_USER: usize = 64;

/// Length of a token on the wire: 32 bytes as lower-case hex.
pub const TOKEN_LEN: usize = 64;

/// The SHA-256 of a token's text.
pub fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// A fresh token: 32 bytes from the thread-local CSPRNG (seeded from the OS), as hex.
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let mut s = String::with_capacity(TOKEN_LEN);
    for b in bytes {
        s.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
        s.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
    }
    s
}

#[derive(Debug)]
struct Entry {
    user: String,
    last_used: Duration,
}

/// The in-memory table of live tokens, keyed by hash.
#[derive(Debug)]
pub struct Tokens {
    by_hash: HashMap<[u8; 32], Entry>,
    by_user: HashMap<String, VecDeque<[u8; 32]>>,
    idle: Duration,
    per_user: usize,
}

/// A token that was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Not a token this realm issued (or it was logged out).
    Unknown,
    /// It was, but expired; its hash is returned so the caller can delete it from storage.
    Expired([u8; 32]),
}

impl Tokens {
    /// An empty table.
    pub fn new(idle: Duration, per_user: usize) -> Self {
        Self {
            by_hash: HashMap::new(),
            by_user: HashMap::new(),
            idle,
            per_user: per_user.max(1),
        }
    }

    /// Adds a token (new, or loaded from storage); returns the hash of one it evicted, if any.
    pub fn insert(&mut self, hash: [u8; 32], user: &str, now: Duration) -> Option<[u8; 32]> {
        self.by_hash.insert(
            hash,
            Entry {
                user: user.to_owned(),
                last_used: now,
            },
        );
        let list = self.by_user.entry(user.to_owned()).or_default();
        list.push_back(hash);
        if list.len() > self.per_user {
            let old = list.pop_front()?;
            self.by_hash.remove(&old);
            return Some(old);
        }
        None
    }

    /// The user `token` belongs to, refreshing its idle time.
    pub fn resolve(&mut self, token: &str, now: Duration) -> Result<String, Refused> {
        if token.len() != TOKEN_LEN {
            return Err(Refused::Unknown);
        }
        let hash = token_hash(token);
        let entry = self.by_hash.get_mut(&hash).ok_or(Refused::Unknown)?;
        if now.saturating_sub(entry.last_used) >= self.idle {
            self.remove(&hash);
            return Err(Refused::Expired(hash));
        }
        entry.last_used = now;
        Ok(entry.user.clone())
    }

    /// Forgets a token; returns whose it was.
    pub fn remove(&mut self, hash: &[u8; 32]) -> Option<String> {
        let entry = self.by_hash.remove(hash)?;
        if let Some(list) = self.by_user.get_mut(&entry.user) {
            list.retain(|h| h != hash);
            if list.is_empty() {
                self.by_user.remove(&entry.user);
            }
        }
        Some(entry.user)
    }

    /// Forgets every token of `user` (password changed, user deleted); returns their hashes.
    pub fn remove_user(&mut self, user: &str) -> Vec<[u8; 32]> {
        let hashes: Vec<[u8; 32]> = self.by_user.remove(user).map(Vec::from).unwrap_or_default();
        for h in &hashes {
            self.by_hash.remove(h);
        }
        hashes
    }

    /// Removes every expired token and returns their hashes.
    pub fn sweep(&mut self, now: Duration) -> Vec<[u8; 32]> {
        let idle = self.idle;
        let expired: Vec<[u8; 32]> = self
            .by_hash
            .iter()
            .filter(|(_, e)| now.saturating_sub(e.last_used) >= idle)
            .map(|(h, _)| *h)
            .collect();
        for h in &expired {
            self.remove(h);
        }
        expired
    }

    /// Live tokens.
    pub fn len(&self) -> usize {
        self.by_hash.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_random_hex() {
        let a = new_token();
        assert_eq!(a.len(), TOKEN_LEN);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(a, new_token());
    }

    #[test]
    fn idle_tokens_expire_and_use_refreshes() {
        let mut t = Tokens::new(Duration::from_secs(10), 4);
        let tok = new_token();
        t.insert(token_hash(&tok), "messi", Duration::ZERO);
        assert_eq!(
            t.resolve(&tok, Duration::from_secs(9)).as_deref(),
            Ok("messi")
        );
        assert_eq!(
            t.resolve(&tok, Duration::from_secs(18)).as_deref(),
            Ok("messi")
        );
        assert!(matches!(
            t.resolve(&tok, Duration::from_secs(28)),
            Err(Refused::Expired(_))
        ));
        assert_eq!(
            t.resolve(&tok, Duration::from_secs(28)),
            Err(Refused::Unknown)
        );
    }

    #[test]
    fn per_user_cap_evicts_the_oldest() {
        let mut t = Tokens::new(Duration::from_secs(10), 2);
        let toks: Vec<String> = (0..3).map(|_| new_token()).collect();
        let mut evicted = None;
        for tok in &toks {
            evicted = t
                .insert(token_hash(tok), "messi", Duration::ZERO)
                .or(evicted);
        }
        assert_eq!(evicted, Some(token_hash(&toks[0])));
        assert_eq!(t.len(), 2);
        assert_eq!(t.resolve(&toks[0], Duration::ZERO), Err(Refused::Unknown));
    }
}
