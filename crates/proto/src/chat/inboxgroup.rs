//! `inboxgroup TOKEN GROUP [SINCE]`: the group's messages you have not read yet, each once, in the
//! group's order.

use crate::chat::Address;
use crate::chat::command::{ParseError, exact_then_optional};
use crate::chat::inbox::parse_since;

/// The command word.
pub const WORD: &str = "inboxgroup";
/// How to use it, for error messages.
pub const USAGE: &str = "inboxgroup TOKEN GROUP [SINCE]";

/// Fetch the group messages after the member's read cursor, oldest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboxGroup {
    /// The session token.
    pub token: String,
    /// The group.
    pub group: Address,
    /// The client has the group's messages up to this `seq`: the read cursor moves there first.
    pub since: Option<i64>,
}

impl InboxGroup {
    /// Parses the parameters after the command word.
    pub fn parse(params: &str) -> Result<Self, ParseError> {
        let ([token, group], since) = exact_then_optional(params, USAGE)?;
        Ok(Self {
            token,
            group: Address::parse(&group)?,
            since: parse_since(since, USAGE)?,
        })
    }

    /// Appends the request line.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let line = match self.since {
            Some(since) => format!("{WORD} {} {} {since}\r\n", self.token, self.group),
            None => format!("{WORD} {} {}\r\n", self.token, self.group),
        };
        out.extend_from_slice(line.as_bytes());
    }
}
