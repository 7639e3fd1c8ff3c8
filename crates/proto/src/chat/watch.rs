//! `watch TOKEN [CURSOR…]`, `ack TOKEN CURSOR…` and `ping [TOKEN]`: pushed events that survive
//! reconnects (`docs/chat-protocol.md`, "Pushed events").
//!
//! A cursor names what the client already has: `SEQ` for private messages, `GROUP:SEQ` for a group
//! (a group address holds no `:`, so the last `:` splits it).

use std::fmt;

use crate::chat::command::ParseError;
use crate::chat::{Address, next_param};

/// The command words.
pub const WATCH: &str = "watch";
/// See [`WATCH`].
pub const ACK: &str = "ack";
/// See [`WATCH`].
pub const PING: &str = "ping";
/// How to use `watch`, for error messages.
pub const WATCH_USAGE: &str = "watch TOKEN [SEQ] [GROUP:SEQ]…";
/// How to use `ack`, for error messages.
pub const ACK_USAGE: &str = "ack TOKEN SEQ|GROUP:SEQ…";
/// How to use `ping`, for error messages.
pub const PING_USAGE: &str = "ping [TOKEN]";

/// Most cursors one `watch` or `ack` line may carry; a client in more groups sends several `ack`s
/// (and, resuming, the groups past this start from the server's cursors).
pub const MAX_CURSORS: usize = 256;

/// What the client has of one stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cursor {
    /// Private messages up to this `seq`.
    Private(i64),
    /// The group's messages up to this `seq`.
    Group(Address, i64),
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Private(seq) => write!(f, "{seq}"),
            Self::Group(group, seq) => write!(f, "{group}:{seq}"),
        }
    }
}

fn bad_cursor(word: &str, usage: &str) -> ParseError {
    ParseError::Count(format!(
        "cursor \"{}\" is not SEQ or GROUP:SEQ; usage: {usage}",
        crate::chat::address::excerpt(word)
    ))
}

impl Cursor {
    /// Parses one cursor word.
    pub fn parse(word: &str, usage: &'static str) -> Result<Self, ParseError> {
        let seq = |s: &str| {
            s.parse::<i64>()
                .ok()
                .filter(|n| *n >= 0 && s.bytes().all(|b| b.is_ascii_digit()))
        };
        match word.rsplit_once(':') {
            None => seq(word)
                .map(Self::Private)
                .ok_or_else(|| bad_cursor(word, usage)),
            Some((group, n)) => {
                let n = seq(n).ok_or_else(|| bad_cursor(word, usage))?;
                let group = Address::parse(group).map_err(|_| bad_cursor(word, usage))?;
                Ok(Self::Group(group, n))
            }
        }
    }
}

fn cursors(mut rest: &str, usage: &'static str) -> Result<Vec<Cursor>, ParseError> {
    let mut out = Vec::new();
    while let Some((word, r)) = next_param(rest) {
        if out.len() == MAX_CURSORS {
            return Err(ParseError::Count(format!(
                "too many cursors (at most {MAX_CURSORS} in one line)"
            )));
        }
        out.push(Cursor::parse(word, usage)?);
        rest = r;
    }
    Ok(out)
}

fn encode_cursors(word: &str, token: &str, cursors: &[Cursor], out: &mut Vec<u8>) {
    let mut line = format!("{word} {token}");
    for c in cursors {
        line.push(' ');
        line.push_str(&c.to_string());
    }
    line.push_str("\r\n");
    out.extend_from_slice(line.as_bytes());
}

/// Push the user's messages to this connection, resuming after the cursors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watch {
    /// The session token.
    pub token: String,
    /// What the client has already.
    pub cursors: Vec<Cursor>,
}

impl Watch {
    /// Parses the parameters after the command word.
    pub fn parse(params: &str) -> Result<Self, ParseError> {
        let (token, rest) = next_param(params).ok_or(ParseError::Missing(WATCH_USAGE))?;
        Ok(Self {
            token: token.to_owned(),
            cursors: cursors(rest, WATCH_USAGE)?,
        })
    }

    /// Appends the request line.
    pub fn encode(&self, out: &mut Vec<u8>) {
        encode_cursors(WATCH, &self.token, &self.cursors, out);
    }
}

/// The client has everything up to each cursor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    /// The session token.
    pub token: String,
    /// At least one.
    pub cursors: Vec<Cursor>,
}

impl Ack {
    /// Parses the parameters after the command word.
    pub fn parse(params: &str) -> Result<Self, ParseError> {
        let (token, rest) = next_param(params).ok_or(ParseError::Missing(ACK_USAGE))?;
        let cursors = cursors(rest, ACK_USAGE)?;
        if cursors.is_empty() {
            return Err(ParseError::Missing(ACK_USAGE));
        }
        Ok(Self {
            token: token.to_owned(),
            cursors,
        })
    }

    /// Appends the request line.
    pub fn encode(&self, out: &mut Vec<u8>) {
        encode_cursors(ACK, &self.token, &self.cursors, out);
    }
}

/// Keeps the connection (and, with a token, the token) from idling out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ping {
    /// The session token, if the client has one.
    pub token: Option<String>,
}

impl Ping {
    /// Parses the parameters after the command word.
    pub fn parse(params: &str) -> Result<Self, ParseError> {
        let Some((token, rest)) = next_param(params) else {
            return Ok(Self { token: None });
        };
        if next_param(rest).is_some() {
            return Err(ParseError::TooMany(PING_USAGE));
        }
        Ok(Self {
            token: Some(token.to_owned()),
        })
    }

    /// Appends the request line.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let line = match &self.token {
            Some(t) => format!("{PING} {t}\r\n"),
            None => format!("{PING}\r\n"),
        };
        out.extend_from_slice(line.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cursor() -> impl Strategy<Value = Cursor> {
        prop_oneof![
            (0i64..i64::MAX).prop_map(Cursor::Private),
            (
                "[a-z0-9][a-z0-9_.-]{0,12}",
                proptest::option::of("[a-z][a-z0-9]{0,6}"),
                0i64..1 << 40
            )
                .prop_map(|(name, realm, seq)| {
                    let addr = match realm {
                        Some(r) => format!("{name}@{r}"),
                        None => name,
                    };
                    Cursor::Group(Address::parse(&addr).expect("valid"), seq)
                }),
        ]
    }

    proptest! {
        /// What a client encodes, the server parses back to the same cursors.
        #[test]
        fn cursors_survive_the_wire(cursors in proptest::collection::vec(cursor(), 1..20)) {
            let ack = Ack { token: "T".into(), cursors };
            let mut line = Vec::new();
            ack.encode(&mut line);
            let text = std::str::from_utf8(&line).expect("ascii");
            let parsed = crate::chat::parse_command(text.trim_end().as_bytes()).expect("parses");
            prop_assert_eq!(parsed, crate::chat::Command::Ack(ack));
        }

        /// No input makes the cursor parser panic; what it accepts encodes back to itself.
        #[test]
        fn any_word_is_a_cursor_or_an_error(word in "\\PC{0,40}") {
            if let Ok(c) = Cursor::parse(&word, WATCH_USAGE) {
                prop_assert_eq!(Cursor::parse(&c.to_string(), WATCH_USAGE).ok(), Some(c));
            }
        }
    }

    #[test]
    fn cursors_parse_and_encode_back() {
        let w = Watch::parse("T 41 football:8 chess@realm2:0").expect("valid");
        assert_eq!(
            w.cursors,
            [
                Cursor::Private(41),
                Cursor::Group(Address::parse("football").expect("name"), 8),
                Cursor::Group(Address::parse("chess@realm2").expect("name"), 0),
            ]
        );
        let mut out = Vec::new();
        w.encode(&mut out);
        assert_eq!(out, b"watch T 41 football:8 chess@realm2:0\r\n");
        assert_eq!(Watch::parse("T").expect("no cursors").cursors, []);
    }

    #[test]
    fn bad_cursors_say_what_a_cursor_is() {
        for bad in [
            "-1",
            "1.5",
            "+3",
            "x",
            "football:",
            ":3",
            "a b:3",
            "foot:ball:x",
            "g:-2",
        ] {
            let e = Ack::parse(&format!("T {bad}")).expect_err(bad);
            assert!(
                e.to_string().contains("is not SEQ or GROUP:SEQ"),
                "{bad}: {e}"
            );
        }
        assert_eq!(
            Ack::parse("T").expect_err("empty"),
            ParseError::Missing(ACK_USAGE)
        );
        let many = (0..=MAX_CURSORS)
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(" ");
        assert!(
            Watch::parse(&format!("T {many}"))
                .expect_err("too many")
                .to_string()
                .contains("too many cursors")
        );
    }

    #[test]
    fn ping_takes_an_optional_token() {
        assert_eq!(Ping::parse("").expect("bare"), Ping { token: None });
        assert_eq!(Ping::parse("T").expect("token").token.as_deref(), Some("T"));
        assert!(Ping::parse("T x").is_err());
    }
}
