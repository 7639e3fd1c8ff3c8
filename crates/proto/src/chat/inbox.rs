//! `inbox TOKEN`.

use crate::chat::command::{ParseError, exact};

/// The command word.
pub const WORD: &str = "inbox";
/// How to use it, for error messages.
pub const USAGE: &str = "inbox TOKEN";

/// Fetch the messages not yet delivered; each is returned once, oldest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inbox {
    /// The session token.
    pub token: String,
}

impl Inbox {
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
