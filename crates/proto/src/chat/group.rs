//! `group TOKEN NAME`: join a group (creating it on first join) and turn the connection into a live
//! group session.

use crate::chat::Address;
use crate::chat::command::ParseError;
use crate::chat::next_param;

/// The command word.
pub const WORD: &str = "group";
/// How to use it, for error messages.
pub const USAGE: &str = "group TOKEN NAME";

/// Join a group and receive its events live until `exit`.
///
/// After the OK, every line the client sends is a message to the group, `exit` ends the live
/// session, and the server pushes events (see [`crate::chat::event`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// The session token.
    pub token: String,
    /// The group.
    pub group: Address,
}

impl Group {
    /// Parses the parameters after the command word. The classic client sends one more word (its
    /// origin realm); it is accepted and ignored.
    pub fn parse(params: &str) -> Result<Self, ParseError> {
        let (token, rest) = next_param(params).ok_or(ParseError::Missing(USAGE))?;
        let (group, rest) = next_param(rest).ok_or(ParseError::Missing(USAGE))?;
        let group = Address::parse(group)?;
        if let Some((_origin, rest)) = next_param(rest)
            && next_param(rest).is_some()
        {
            return Err(ParseError::TooMany(USAGE));
        }
        Ok(Self {
            token: token.to_owned(),
            group,
        })
    }

    /// Appends the request line.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(format!("{WORD} {} {}\r\n", self.token, self.group).as_bytes());
    }
}
