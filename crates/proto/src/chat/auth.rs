//! `auth USER PASSWORD` → `{"status": "OK", "tokenid": "<token>"}`.

use crate::chat::command::{ParseError, exact};

/// The command word.
pub const WORD: &str = "auth";
/// How to use it, for error messages.
pub const USAGE: &str = "auth USER PASSWORD";

/// Log in; the reply carries a token that the other commands take.
#[derive(Clone, PartialEq, Eq)]
pub struct Auth {
    /// The user name (not validated here: any unknown name gets the same ERROR as a wrong password).
    pub user: String,
    /// The password, as sent.
    pub password: String,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never let a password reach a log line.
        f.debug_struct("Auth")
            .field("user", &self.user)
            .field("password", &"<hidden>")
            .finish()
    }
}

impl Auth {
    /// Parses the parameters after the command word.
    pub fn parse(params: &str) -> Result<Self, ParseError> {
        let [user, password] = exact(params, USAGE)?;
        Ok(Self { user, password })
    }

    /// Appends the request line.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(format!("{WORD} {} {}\r\n", self.user, self.password).as_bytes());
    }
}
