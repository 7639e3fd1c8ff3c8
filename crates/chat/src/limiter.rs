//! Rate limiting of failed logins, per client address and per user name.
//!
//! Fixed windows: after `max` failures within `window`, further attempts from that address (or for
//! that user) are refused until the window ends, before any password is checked, so guessing costs
//! the attacker time and the server nothing. An IPv6 client is counted by its /64
//! ([`IPV6_PREFIX_BITS`]): one subscriber usually holds a whole /64, and counting each /128 alone
//! let one host try 20 passwords from every address it has. An IPv4-mapped IPv6 address
//! (`::ffff:a.b.c.d`, what a dual-stack listener reports) counts as its IPv4 address. Unknown user
//! names are counted exactly like real ones, so the limiter does not reveal which names exist. The tables are bounded: when one is full,
//! expired entries are dropped, and if none expired the oldest window goes.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::time::Duration;

/// Failed logins allowed per client address per window.
pub const DEFAULT_FAILURES_PER_ADDRESS: u32 = 20;
/// Failed logins allowed per user name per window (from all addresses together).
pub const DEFAULT_FAILURES_PER_USER: u32 = 5;
/// The window the counts above apply to.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(60);
/// Addresses are counted by the runtime's rule (an IPv6 /64, an IPv4-mapped address as its IPv4
/// address), the same as its connection cap per address.
pub use jaring_runtime::{IPV6_PREFIX_BITS, address_key};

/// Entries each table holds at most (about 100 bytes each).
pub const DEFAULT_TABLE_ENTRIES: usize = 100_000;

/// Limits for [`AuthLimiter`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitConfig {
    /// Failures per address per window.
    pub per_address: u32,
    /// Failures per user per window.
    pub per_user: u32,
    /// The window.
    pub window: Duration,
    /// Table size bound.
    pub max_entries: usize,
}

impl Default for LimitConfig {
    fn default() -> Self {
        Self {
            per_address: DEFAULT_FAILURES_PER_ADDRESS,
            per_user: DEFAULT_FAILURES_PER_USER,
            window: DEFAULT_WINDOW,
            max_entries: DEFAULT_TABLE_ENTRIES,
        }
    }
}

/// Why a login attempt was refused before checking the password.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Limited {
    /// Too many failures from this address.
    #[error("too many failed logins from your address; wait {}s and try again", .0.as_secs().max(1))]
    Address(Duration),
    /// Too many failures for this user name.
    #[error("too many failed logins for this user; wait {}s and try again", .0.as_secs().max(1))]
    User(Duration),
}

#[derive(Debug, Clone, Copy)]
struct Window {
    start: Duration,
    failures: u32,
}

#[derive(Debug)]
struct Table<K> {
    entries: HashMap<K, Window>,
}

impl<K: Hash + Eq + Clone> Table<K> {
    fn wait(&self, key: &K, max: u32, window: Duration, now: Duration) -> Option<Duration> {
        let w = self.entries.get(key)?;
        let end = w.start + window;
        (w.failures >= max && now < end).then(|| end - now)
    }

    fn fail(&mut self, key: K, window: Duration, now: Duration, max_entries: usize) {
        if !self.entries.contains_key(&key) && self.entries.len() >= max_entries {
            self.entries.retain(|_, w| now < w.start + window);
            if self.entries.len() >= max_entries
                && let Some(oldest) = self
                    .entries
                    .iter()
                    .min_by_key(|(_, w)| w.start)
                    .map(|(k, _)| k.clone())
            {
                self.entries.remove(&oldest);
            }
        }
        let w = self.entries.entry(key).or_insert(Window {
            start: now,
            failures: 0,
        });
        if now >= w.start + window {
            *w = Window {
                start: now,
                failures: 0,
            };
        }
        w.failures = w.failures.saturating_add(1);
    }
}

/// Counts failed logins and refuses attempts over the limits.
#[derive(Debug)]
pub struct AuthLimiter {
    config: LimitConfig,
    by_address: Table<IpAddr>,
    by_user: Table<String>,
}

impl AuthLimiter {
    /// A limiter with `config`.
    pub fn new(config: LimitConfig) -> Self {
        Self {
            config,
            by_address: Table {
                entries: HashMap::new(),
            },
            by_user: Table {
                entries: HashMap::new(),
            },
        }
    }

    /// Whether an attempt from `addr` for `user` may go ahead at `now`.
    pub fn check(&self, addr: IpAddr, user: &str, now: Duration) -> Result<(), Limited> {
        let c = &self.config;
        let key = address_key(addr);
        if let Some(wait) = self.by_address.wait(&key, c.per_address, c.window, now) {
            return Err(Limited::Address(wait));
        }
        if let Some(wait) = self
            .by_user
            .wait(&user.to_owned(), c.per_user, c.window, now)
        {
            return Err(Limited::User(wait));
        }
        Ok(())
    }

    /// Records a failed attempt.
    pub fn fail(&mut self, addr: IpAddr, user: &str, now: Duration) {
        let c = self.config;
        self.by_address
            .fail(address_key(addr), c.window, now, c.max_entries);
        self.by_user
            .fail(user.to_owned(), c.window, now, c.max_entries);
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv6Addr;

    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2));

    #[test]
    fn user_limit_applies_across_addresses_and_expires() {
        let mut l = AuthLimiter::new(LimitConfig {
            per_user: 2,
            ..LimitConfig::default()
        });
        let t = Duration::from_secs(100);
        l.fail(A, "messi", t);
        l.fail(B, "messi", t);
        assert!(matches!(l.check(A, "messi", t), Err(Limited::User(_))));
        assert!(l.check(A, "henderson", t).is_ok());
        assert!(l.check(A, "messi", t + DEFAULT_WINDOW).is_ok());
    }

    #[test]
    fn address_limit_covers_every_name() {
        let mut l = AuthLimiter::new(LimitConfig {
            per_address: 3,
            ..LimitConfig::default()
        });
        let t = Duration::ZERO;
        for name in ["a", "b", "c"] {
            l.fail(A, name, t);
        }
        assert!(matches!(l.check(A, "zzz", t), Err(Limited::Address(_))));
        assert!(l.check(B, "zzz", t).is_ok());
    }

    #[test]
    fn ipv6_addresses_of_one_64_share_one_count() {
        let mut l = AuthLimiter::new(LimitConfig::default());
        let t = Duration::ZERO;
        let in_64 = |host: u16| IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0, host));
        // 45 addresses of one /64, as in the report: only the first 20 are let through.
        let checked = (1..=45u16)
            .filter(|&h| {
                let ok = l.check(in_64(h), &format!("u{h}"), t).is_ok();
                if ok {
                    l.fail(in_64(h), &format!("u{h}"), t);
                }
                ok
            })
            .count();
        assert_eq!(checked, DEFAULT_FAILURES_PER_ADDRESS as usize);
        assert!(matches!(
            l.check(in_64(999), "zzz", t),
            Err(Limited::Address(_))
        ));
        let next_64 = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 2, 0, 0, 0, 1));
        assert!(l.check(next_64, "zzz", t).is_ok());
    }

    #[test]
    fn an_ipv4_mapped_address_counts_as_its_ipv4_address() {
        let mut l = AuthLimiter::new(LimitConfig {
            per_address: 2,
            ..LimitConfig::default()
        });
        let t = Duration::ZERO;
        let mapped = IpAddr::V6(std::net::Ipv4Addr::new(10, 0, 0, 2).to_ipv6_mapped());
        l.fail(mapped, "a", t);
        l.fail(B, "b", t);
        assert!(matches!(l.check(B, "c", t), Err(Limited::Address(_))));
        assert!(matches!(l.check(mapped, "c", t), Err(Limited::Address(_))));
        assert!(l.check(A, "c", t).is_ok());
        assert_eq!(address_key(mapped), B);
    }

    #[test]
    fn tables_stay_bounded() {
        let mut l = AuthLimiter::new(LimitConfig {
            max_entries: 10,
            ..LimitConfig::default()
        });
        for i in 0..1000 {
            l.fail(A, &format!("u{i}"), Duration::from_millis(i));
        }
        assert!(l.by_user.entries.len() <= 10);
    }
}
