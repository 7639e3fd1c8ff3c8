//! Addresses: `name` for a user of this realm, `name@realm` for a user of a named realm.
//!
//! Groups (issue 5) and federation (issue 6) use the same syntax, so the rules live in one place:
//! a name is 1 to [`MAX_NAME`] characters of ASCII letters, digits, `_`, `-` and `.`, starting with
//! a letter or digit; a realm name follows the same rule.

use std::fmt;

/// Longest user, group or realm name, in bytes.
pub const MAX_NAME: usize = 32;

/// A user (or group) address: a name and, when given, the realm it lives on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Address {
    /// The name within its realm.
    pub name: String,
    /// The realm, when the address named one (`name@realm`).
    pub realm: Option<String>,
}

/// Why a text is not an address; the message says what a valid one looks like.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    /// The name part is not valid.
    #[error(
        "invalid name {0:?}: use 1 to 32 letters, digits, '_', '-' or '.', starting with a letter or digit"
    )]
    Name(String),
    /// The realm part is not valid.
    #[error(
        "invalid realm {0:?}: use 1 to 32 letters, digits, '_', '-' or '.', starting with a letter or digit"
    )]
    Realm(String),
}

/// Whether `s` is a valid user, group or realm name.
pub fn is_valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_NAME
        && s.as_bytes()[0].is_ascii_alphanumeric()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

impl Address {
    /// Parses `name` or `name@realm`.
    pub fn parse(s: &str) -> Result<Self, AddressError> {
        let (name, realm) = match s.split_once('@') {
            Some((n, r)) => (n, Some(r)),
            None => (s, None),
        };
        if !is_valid_name(name) {
            return Err(AddressError::Name(excerpt(name)));
        }
        if let Some(r) = realm
            && !is_valid_name(r)
        {
            return Err(AddressError::Realm(excerpt(r)));
        }
        Ok(Self {
            name: name.to_owned(),
            realm: realm.map(str::to_owned),
        })
    }

    /// Whether this address names a user of `realm` (a bare name always does).
    pub fn is_in(&self, realm: &str) -> bool {
        self.realm.as_deref().is_none_or(|r| r == realm)
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.realm {
            Some(r) => write!(f, "{}@{r}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// A short, escaped copy of untrusted text for an error message.
pub(crate) fn excerpt(s: &str) -> String {
    const CHARS: usize = 40;
    let mut out: String = s.chars().take(CHARS).flat_map(char::escape_debug).collect();
    if s.chars().count() > CHARS {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bare_and_realm_addresses() {
        let a = Address::parse("messi").expect("valid");
        assert_eq!((a.name.as_str(), a.realm.as_deref()), ("messi", None));
        assert!(a.is_in("realm1"));
        let b = Address::parse("james@realm2").expect("valid");
        assert_eq!(b.to_string(), "james@realm2");
        assert!(!b.is_in("realm1"));
        assert!(b.is_in("realm2"));
    }

    #[test]
    fn refuses_bad_names() {
        for bad in ["", "@x", "a@", "-a", "a b", "a@b@c", &"x".repeat(33), "é"] {
            assert!(Address::parse(bad).is_err(), "{bad:?}");
        }
        assert!(Address::parse(&"x".repeat(32)).is_ok());
    }
}
