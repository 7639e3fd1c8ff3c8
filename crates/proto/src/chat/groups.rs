//! `groups TOKEN`: every group of the realm with its member count.

use crate::chat::command::{ParseError, exact};

/// The command word.
pub const WORD: &str = "groups";
/// How to use it, for error messages.
pub const USAGE: &str = "groups TOKEN";

/// List the realm's groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Groups {
    /// The session token.
    pub token: String,
}

impl Groups {
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
