//! `send TOKEN TO MESSAGE…` → `{"status": "OK", "message": "Message Sent"}` once committed.

use crate::chat::Address;
use crate::chat::command::ParseError;
use crate::chat::next_param;

/// The command word.
pub const WORD: &str = "send";
/// How to use it, for error messages.
pub const USAGE: &str = "send TOKEN TO MESSAGE";

/// Send a private message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Send {
    /// The sender's token; the sender is the token's user, never anything in the text.
    pub token: String,
    /// The recipient.
    pub to: Address,
    /// The rest of the line after TO and the one space that separates them, spaces kept (trailing
    /// spaces are stripped from every line).
    pub message: String,
}

impl Send {
    /// Parses the parameters after the command word.
    pub fn parse(params: &str) -> Result<Self, ParseError> {
        let (token, rest) = next_param(params).ok_or(ParseError::Missing(USAGE))?;
        let (to, rest) = next_param(rest).ok_or(ParseError::Missing(USAGE))?;
        let to = Address::parse(to)?;
        if rest.trim_matches(' ').is_empty() {
            return Err(ParseError::Missing(USAGE));
        }
        Ok(Self {
            token: token.to_owned(),
            to,
            message: rest.to_owned(),
        })
    }

    /// Appends the request line.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(
            format!("{WORD} {} {} {}\r\n", self.token, self.to, self.message).as_bytes(),
        );
    }
}
