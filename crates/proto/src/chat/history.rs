//! `history TOKEN PEER [N [BEFORE]]`: the last N messages of the conversation with PEER, both
//! directions (or of a group), before the cursor BEFORE when given.

use crate::chat::Address;
use crate::chat::command::ParseError;
use crate::chat::next_param;

/// The command word.
pub const WORD: &str = "history";
/// How to use it, for error messages.
pub const USAGE: &str = "history TOKEN PEER [N [BEFORE]]";

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
    /// The page cursor (the `next` of a reply cut short by its size): only older messages.
    pub before: Option<i64>,
}

impl History {
    /// Parses the parameters after the command word.
    pub fn parse(params: &str) -> Result<Self, ParseError> {
        let (token, rest) = next_param(params).ok_or(ParseError::Missing(USAGE))?;
        let (peer, rest) = next_param(rest).ok_or(ParseError::Missing(USAGE))?;
        let peer = Address::parse(peer)?;
        let (count, before) = match next_param(rest) {
            None => (None, None),
            Some((n, rest)) => {
                let count = match n.parse::<u32>() {
                    Ok(n) if n > 0 => n,
                    _ => {
                        return Err(ParseError::Count(format!(
                            "N must be a whole number of messages, 1 or more; usage: {USAGE}"
                        )));
                    }
                };
                let before = match next_param(rest) {
                    None => None,
                    Some((cursor, rest)) => {
                        if next_param(rest).is_some() {
                            return Err(ParseError::TooMany(USAGE));
                        }
                        match cursor.parse::<i64>() {
                            Ok(c) if c > 0 => Some(c),
                            _ => {
                                return Err(ParseError::Count(format!(
                                    "BEFORE must be the `next` of an earlier history reply; usage: {USAGE}"
                                )));
                            }
                        }
                    }
                };
                (Some(count), before)
            }
        };
        Ok(Self {
            token: token.to_owned(),
            peer,
            count,
            before,
        })
    }

    /// Appends the request line.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let line = match (self.count, self.before) {
            (Some(n), Some(b)) => format!("{WORD} {} {} {n} {b}\r\n", self.token, self.peer),
            (Some(n), None) => format!("{WORD} {} {} {n}\r\n", self.token, self.peer),
            // BEFORE needs N before it.
            (None, Some(b)) => format!(
                "{WORD} {} {} {DEFAULT_COUNT} {b}\r\n",
                self.token, self.peer
            ),
            (None, None) => format!("{WORD} {} {}\r\n", self.token, self.peer),
        };
        out.extend_from_slice(line.as_bytes());
    }
}
