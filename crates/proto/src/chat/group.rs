//! `group TOKEN NAME [ORIGIN]`: join a group (creating it on first join) and turn the connection
//! into a live group session; with the classic client's fourth word, a classic one
//! (see [`crate::chat::classic`]).

use crate::chat::Address;
use crate::chat::command::ParseError;
use crate::chat::next_param;

/// The command word.
pub const WORD: &str = "group";
/// How to use it, for error messages.
pub const USAGE: &str = "group TOKEN NAME [ORIGIN]";

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
    /// The classic two-realm client's fourth word (it sends `origin`): present, the live session
    /// speaks that lab's raw-text group mode instead of JSON events.
    pub origin: Option<String>,
}

impl Group {
    /// Parses the parameters after the command word. The classic two-realm client sends one more
    /// word (`origin`); any fourth word asks for its group mode.
    pub fn parse(params: &str) -> Result<Self, ParseError> {
        let (token, rest) = next_param(params).ok_or(ParseError::Missing(USAGE))?;
        let (group, rest) = next_param(rest).ok_or(ParseError::Missing(USAGE))?;
        let group = Address::parse(group)?;
        let origin = match next_param(rest) {
            Some((_, rest)) if next_param(rest).is_some() => {
                return Err(ParseError::TooMany(USAGE));
            }
            Some((origin, _)) => Some(origin.to_owned()),
            None => None,
        };
        Ok(Self {
            token: token.to_owned(),
            group,
            origin,
        })
    }

    /// Whether the live session speaks the classic client's raw-text group mode.
    pub fn is_classic(&self) -> bool {
        self.origin.is_some()
    }

    /// Appends the request line.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let origin = self
            .origin
            .as_deref()
            .map_or(String::new(), |o| format!(" {o}"));
        out.extend_from_slice(
            format!("{WORD} {} {}{origin}\r\n", self.token, self.group).as_bytes(),
        );
    }
}
