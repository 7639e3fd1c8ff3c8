//! `history TOKEN PEER [N]`: the last N messages of the conversation with PEER, both directions.

use crate::chat::Address;
use crate::chat::command::ParseError;
use crate::chat::next_param;

/// The command word.
pub const WORD: &str = "history";
/// How to use it, for error messages.
pub const USAGE: &str = "history TOKEN PEER [N]";

/// Messages returned when N is not given.
pub const DEFAULT_COUNT: u32 = 50;

/// The conversation with a peer, delivered or not; reading it marks nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct History {
    /// The session token.
    pub token: String,
    /// The other side of the conversation.
    pub peer: Address,
    /// How many of the latest messages, when given; the server caps it.
    pub count: Option<u32>,
}

impl History {
    /// Parses the parameters after the command word.
    pub fn parse(params: &str) -> Result<Self, ParseError> {
        let (token, rest) = next_param(params).ok_or(ParseError::Missing(USAGE))?;
        let (peer, rest) = next_param(rest).ok_or(ParseError::Missing(USAGE))?;
        let peer = Address::parse(peer)?;
        let count = match next_param(rest) {
            None => None,
            Some((n, rest)) => {
                if next_param(rest).is_some() {
                    return Err(ParseError::TooMany(USAGE));
                }
                match n.parse::<u32>() {
                    Ok(n) if n > 0 => Some(n),
                    _ => {
                        return Err(ParseError::Count(format!(
                            "N must be a whole number of messages, 1 or more; usage: {USAGE}"
                        )));
                    }
                }
            }
        };
        Ok(Self {
            token: token.to_owned(),
            peer,
            count,
        })
    }

    /// Appends the request line.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let line = match self.count {
            Some(n) => format!("{WORD} {} {} {n}\r\n", self.token, self.peer),
            None => format!("{WORD} {} {}\r\n", self.token, self.peer),
        };
        out.extend_from_slice(line.as_bytes());
    }
}
