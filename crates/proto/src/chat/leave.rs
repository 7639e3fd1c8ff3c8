//! `leave TOKEN GROUP`: end your membership of a group.

use crate::chat::Address;
use crate::chat::command::{ParseError, exact};

/// The command word.
pub const WORD: &str = "leave";
/// How to use it, for error messages.
pub const USAGE: &str = "leave TOKEN GROUP";

/// Leave a group: no more messages from it; its history stays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leave {
    /// The session token.
    pub token: String,
    /// The group.
    pub group: Address,
}

impl Leave {
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
