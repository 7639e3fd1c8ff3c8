//! `inboxgroup TOKEN GROUP`: the group's messages you have not read yet, each once, in the group's order.

use crate::chat::Address;
use crate::chat::command::{ParseError, exact};

/// The command word.
pub const WORD: &str = "inboxgroup";
/// How to use it, for error messages.
pub const USAGE: &str = "inboxgroup TOKEN GROUP";

/// Fetch the group messages after the member's read cursor, oldest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboxGroup {
    /// The session token.
    pub token: String,
    /// The group.
    pub group: Address,
}

impl InboxGroup {
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
