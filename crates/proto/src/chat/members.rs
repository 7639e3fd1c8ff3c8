//! `members TOKEN GROUP`: the members of a group, and which of them are in a live session.

use crate::chat::Address;
use crate::chat::command::{ParseError, exact};

/// The command word.
pub const WORD: &str = "members";
/// How to use it, for error messages.
pub const USAGE: &str = "members TOKEN GROUP";

/// List a group's members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Members {
    /// The session token.
    pub token: String,
    /// The group.
    pub group: Address,
}

impl Members {
    /// Parses the parameters after the command word.
    pub fn parse(params: &str) -> Result<Self, ParseError> {
        let [token, group] = exact(params, USAGE)?;
        Ok(Self {
            token,
            group: Address::parse(&group)?,
        })
    }

    /// Appends the request line.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(format!("{WORD} {} {}\r\n", self.token, self.group).as_bytes());
    }
}
