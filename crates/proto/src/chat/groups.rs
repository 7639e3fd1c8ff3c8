//! `groups TOKEN`: every group of the realm with its member count.

use crate::chat::command::{ParseError, exact_then_optional};

/// The command word.
pub const WORD: &str = "groups";
/// How to use it, for error messages.
pub const USAGE: &str = "groups TOKEN [AFTER]";

/// List the realm's groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Groups {
    /// The session token.
    pub token: String,
    /// The page cursor: only names after this one (the `next` of the page before).
    pub after: Option<String>,
}

impl Groups {
    /// Parses the parameters after the command word.
    pub fn parse(params: &str) -> Result<Self, ParseError> {
        let ([token], after) = exact_then_optional(params, USAGE)?;
        Ok(Self { token, after })
    }

    /// Appends the request line.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let line = match &self.after {
            Some(after) => format!("{WORD} {} {after}\r\n", self.token),
            None => format!("{WORD} {}\r\n", self.token),
        };
        out.extend_from_slice(line.as_bytes());
    }
}
