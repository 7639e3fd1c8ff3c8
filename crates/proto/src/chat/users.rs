//! `users TOKEN`.

use crate::chat::command::{ParseError, exact};

/// The command word.
pub const WORD: &str = "users";
/// How to use it, for error messages.
pub const USAGE: &str = "users TOKEN";

/// List the realm's users and who is online.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Users {
    /// The session token.
    pub token: String,
}

impl Users {
    /// Parses the parameters after the command word.
    pub fn parse(params: &str) -> Result<Self, ParseError> {
        let [token] = exact(params, USAGE)?;
        Ok(Self { token })
    }

    /// Appends the request line.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(format!("{WORD} {}\r\n", self.token).as_bytes());
    }
}
