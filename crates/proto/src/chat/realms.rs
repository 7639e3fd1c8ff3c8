//! `realms TOKEN`: this realm's federation peers and the state of each link.

use serde::{Deserialize, Serialize};

use crate::chat::command::{ParseError, exact};
use crate::chat::reply::Status;

/// The command word.
pub const WORD: &str = "realms";
/// How to use it, for error messages.
pub const USAGE: &str = "realms TOKEN";

/// List the federation peers and their link state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Realms {
    /// The session token.
    pub token: String,
}

impl Realms {
    /// Parses the parameters after the command word.
    pub fn parse(params: &str) -> Result<Self, ParseError> {
        let [token] = exact(params, USAGE)?;
        Ok(Self { token })
    }

    /// Appends the request line.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(format!("{WORD} {}\r\n", self.token).as_bytes());
    }
}

/// One peer in a [`RealmsOk`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerEntry {
    /// The peer realm's name.
    pub realm: String,
    /// Its server-to-server address, as configured.
    pub address: String,
    /// `up`, `connecting`, `backoff` (waiting to redial) or `waiting` (the peer dials us).
    pub state: String,
    /// Messages committed here and not yet acknowledged by the peer.
    pub outbox: u64,
    /// The last reason the link failed, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// The OK of `realms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RealmsOk {
    /// Always OK.
    pub status: Status,
    /// This realm's name.
    pub realm: String,
    /// Every configured peer, by name.
    pub peers: Vec<PeerEntry>,
}
