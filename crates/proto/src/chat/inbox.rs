//! `inbox TOKEN [SINCE]`.

use crate::chat::command::{ParseError, exact_then_optional};

/// The command word.
pub const WORD: &str = "inbox";
/// How to use it, for error messages.
pub const USAGE: &str = "inbox TOKEN [SINCE]";

/// Fetch the messages not yet delivered; each is returned once, oldest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inbox {
    /// The session token.
    pub token: String,
    /// The client has every message up to this `seq`: they count as delivered first.
    pub since: Option<i64>,
}

/// Parses an optional SINCE word: a whole number, 0 or more.
pub(crate) fn parse_since(word: Option<String>, usage: &str) -> Result<Option<i64>, ParseError> {
    word.map(|w| {
        w.parse::<i64>()
            .ok()
            .filter(|n| *n >= 0 && w.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(|| {
                ParseError::Count(format!(
                    "SINCE must be the seq of a message you have (a whole number); usage: {usage}"
                ))
            })
    })
    .transpose()
}

impl Inbox {
    /// Parses the parameters after the command word.
    pub fn parse(params: &str) -> Result<Self, ParseError> {
        let ([token], since) = exact_then_optional(params, USAGE)?;
        Ok(Self {
            token,
            since: parse_since(since, USAGE)?,
        })
    }

    /// Appends the request line.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let line = match self.since {
            Some(since) => format!("{WORD} {} {since}\r\n", self.token),
            None => format!("{WORD} {}\r\n", self.token),
        };
        out.extend_from_slice(line.as_bytes());
    }
}
