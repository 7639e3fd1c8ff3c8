//! `sendgroup TOKEN GROUP MESSAGE…`: one message to a group without a live session.

use crate::chat::Address;
use crate::chat::command::ParseError;
use crate::chat::next_param;

/// The command word.
pub const WORD: &str = "sendgroup";
/// How to use it, for error messages.
pub const USAGE: &str = "sendgroup TOKEN GROUP MESSAGE";

/// Send a message to a group; the sender joins it first if not yet a member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendGroup {
    /// The sender's token.
    pub token: String,
    /// The group.
    pub group: Address,
    /// The rest of the line after GROUP and the one space after it, spaces kept.
    pub message: String,
}

impl SendGroup {
    /// Parses the parameters after the command word.
    pub fn parse(params: &str) -> Result<Self, ParseError> {
        let (token, rest) = next_param(params).ok_or(ParseError::Missing(USAGE))?;
        let (group, rest) = next_param(rest).ok_or(ParseError::Missing(USAGE))?;
        let group = Address::parse(group)?;
        if rest.trim_matches(' ').is_empty() {
            return Err(ParseError::Missing(USAGE));
        }
        Ok(Self {
            token: token.to_owned(),
            group,
            message: rest.to_owned(),
        })
    }

    /// Appends the request line.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(
            format!("{WORD} {} {} {}\r\n", self.token, self.group, self.message).as_bytes(),
        );
    }
}
