//! `members TOKEN GROUP`: the members of a group, and which of them are in a live session.

use crate::chat::Address;
use crate::chat::command::{ParseError, exact_then_optional};

/// The command word.
pub const WORD: &str = "members";
/// How to use it, for error messages.
pub const USAGE: &str = "members TOKEN GROUP [AFTER]";

/// List a group's members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Members {
    /// The session token.
    pub token: String,
    /// The group.
    pub group: Address,
    /// The page cursor: only members after this one (the `next` of the page before).
    pub after: Option<String>,
}

impl Members {
    /// Parses the parameters after the command word.
    pub fn parse(params: &str) -> Result<Self, ParseError> {
        let ([token, group], after) = exact_then_optional(params, USAGE)?;
        Ok(Self {
            token,
            group: Address::parse(&group)?,
            after,
        })
    }

    /// Appends the request line.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let line = match &self.after {
            Some(after) => format!("{WORD} {} {} {after}\r\n", self.token, self.group),
            None => format!("{WORD} {} {}\r\n", self.token, self.group),
        };
        out.extend_from_slice(line.as_bytes());
    }
}
