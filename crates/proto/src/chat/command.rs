//! [`Command`]: one parsed request line, and the errors a line can have.

use crate::chat::address::{AddressError, excerpt};
use crate::chat::{
    auth, group, groups, history, inbox, inboxgroup, leave, logout, members, next_param, realms,
    send, sendgroup, users, watch,
};

/// A request, parsed. Each variant's struct lives in its own module with its parser and encoder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `auth USER PASSWORD`
    Auth(auth::Auth),
    /// `send TOKEN TO MESSAGE…`
    Send(send::Send),
    /// `inbox TOKEN`
    Inbox(inbox::Inbox),
    /// `logout TOKEN`
    Logout(logout::Logout),
    /// `users TOKEN`
    Users(users::Users),
    /// `history TOKEN PEER [N]` (PEER may be a group)
    History(history::History),
    /// `group TOKEN NAME`
    Group(group::Group),
    /// `sendgroup TOKEN GROUP MESSAGE…`
    SendGroup(sendgroup::SendGroup),
    /// `inboxgroup TOKEN GROUP`
    InboxGroup(inboxgroup::InboxGroup),
    /// `groups TOKEN`
    Groups(groups::Groups),
    /// `members TOKEN GROUP`
    Members(members::Members),
    /// `leave TOKEN GROUP`
    Leave(leave::Leave),
    /// `realms TOKEN`
    Realms(realms::Realms),
    /// `watch TOKEN [CURSOR…]`
    Watch(watch::Watch),
    /// `ack TOKEN CURSOR…`
    Ack(watch::Ack),
    /// `ping [TOKEN]`
    Ping(watch::Ping),
}

/// The commands this realm knows, for error messages.
pub const COMMANDS: &str = "auth, send, inbox, logout, users, history, group, sendgroup, inboxgroup, groups, members, leave, realms, watch, ack, ping";

/// Why a request line was refused. The connection stays open; the `Display` text is the ERROR's
/// `message`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The line was empty or only spaces.
    #[error("empty request; commands: {COMMANDS}")]
    Empty,
    /// The line was not valid UTF-8.
    #[error("request is not valid UTF-8")]
    NotUtf8,
    /// The line holds a NUL byte, which no name or text may hold (PostgreSQL cannot store it, and
    /// a realm must store every message alike on every backend).
    #[error("request holds a NUL byte (0x00); text may hold any other character")]
    Nul,
    /// The command word is not one we know.
    #[error("unknown command \"{0}\"; commands: {COMMANDS}")]
    Unknown(String),
    /// Parameters are missing.
    #[error("missing parameters; usage: {0}")]
    Missing(&'static str),
    /// More parameters than the command takes.
    #[error("too many parameters; usage: {0}")]
    TooMany(&'static str),
    /// A parameter that must be a user name is not one.
    #[error(transparent)]
    Address(#[from] AddressError),
    /// A count parameter is not a number in range.
    #[error("{0}")]
    Count(String),
}

impl Command {
    /// The command word, as it appears on the wire.
    pub fn word(&self) -> &'static str {
        match self {
            Self::Auth(_) => auth::WORD,
            Self::Send(_) => send::WORD,
            Self::Inbox(_) => inbox::WORD,
            Self::Logout(_) => logout::WORD,
            Self::Users(_) => users::WORD,
            Self::History(_) => history::WORD,
            Self::Group(_) => group::WORD,
            Self::SendGroup(_) => sendgroup::WORD,
            Self::InboxGroup(_) => inboxgroup::WORD,
            Self::Groups(_) => groups::WORD,
            Self::Members(_) => members::WORD,
            Self::Leave(_) => leave::WORD,
            Self::Realms(_) => realms::WORD,
            Self::Watch(_) => watch::WATCH,
            Self::Ack(_) => watch::ACK,
            Self::Ping(_) => watch::PING,
        }
    }

    /// Appends the request line, CR LF included.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Self::Auth(c) => c.encode(out),
            Self::Send(c) => c.encode(out),
            Self::Inbox(c) => c.encode(out),
            Self::Logout(c) => c.encode(out),
            Self::Users(c) => c.encode(out),
            Self::History(c) => c.encode(out),
            Self::Group(c) => c.encode(out),
            Self::SendGroup(c) => c.encode(out),
            Self::InboxGroup(c) => c.encode(out),
            Self::Groups(c) => c.encode(out),
            Self::Members(c) => c.encode(out),
            Self::Leave(c) => c.encode(out),
            Self::Realms(c) => c.encode(out),
            Self::Watch(c) => c.encode(out),
            Self::Ack(c) => c.encode(out),
            Self::Ping(c) => c.encode(out),
        }
    }
}

/// Parses one request line (without its line ending).
pub fn parse_command(line: &[u8]) -> Result<Command, ParseError> {
    let text = std::str::from_utf8(line).map_err(|_| ParseError::NotUtf8)?;
    if text.contains('\0') {
        return Err(ParseError::Nul);
    }
    // Trailing spaces are not part of any parameter: the classic client ends every line with one.
    let text = text.trim_end_matches([' ', '\t']);
    let Some((word, params)) = next_param(text) else {
        return Err(ParseError::Empty);
    };
    // The lab's words are lower case; accepting any case costs nothing and helps people at telnet.
    let command = if word.eq_ignore_ascii_case(auth::WORD) {
        Command::Auth(auth::Auth::parse(params)?)
    } else if word.eq_ignore_ascii_case(send::WORD) {
        Command::Send(send::Send::parse(params)?)
    } else if word.eq_ignore_ascii_case(inbox::WORD) {
        Command::Inbox(inbox::Inbox::parse(params)?)
    } else if word.eq_ignore_ascii_case(logout::WORD) {
        Command::Logout(logout::Logout::parse(params)?)
    } else if word.eq_ignore_ascii_case(users::WORD) {
        Command::Users(users::Users::parse(params)?)
    } else if word.eq_ignore_ascii_case(history::WORD) {
        Command::History(history::History::parse(params)?)
    } else if word.eq_ignore_ascii_case(group::WORD) {
        Command::Group(group::Group::parse(params)?)
    } else if word.eq_ignore_ascii_case(sendgroup::WORD) {
        Command::SendGroup(sendgroup::SendGroup::parse(params)?)
    } else if word.eq_ignore_ascii_case(inboxgroup::WORD) {
        Command::InboxGroup(inboxgroup::InboxGroup::parse(params)?)
    } else if word.eq_ignore_ascii_case(groups::WORD) {
        Command::Groups(groups::Groups::parse(params)?)
    } else if word.eq_ignore_ascii_case(members::WORD) {
        Command::Members(members::Members::parse(params)?)
    } else if word.eq_ignore_ascii_case(leave::WORD) {
        Command::Leave(leave::Leave::parse(params)?)
    } else if word.eq_ignore_ascii_case(realms::WORD) {
        Command::Realms(realms::Realms::parse(params)?)
    } else if word.eq_ignore_ascii_case(watch::WATCH) {
        Command::Watch(watch::Watch::parse(params)?)
    } else if word.eq_ignore_ascii_case(watch::ACK) {
        Command::Ack(watch::Ack::parse(params)?)
    } else if word.eq_ignore_ascii_case(watch::PING) {
        Command::Ping(watch::Ping::parse(params)?)
    } else {
        return Err(ParseError::Unknown(excerpt(word)));
    };
    Ok(command)
}

/// Parses exactly `N` space-separated parameters.
/// `N` parameters and at most one more, optional (a page cursor).
pub(crate) fn exact_then_optional<const N: usize>(
    params: &str,
    usage: &'static str,
) -> Result<([String; N], Option<String>), ParseError> {
    let mut rest = params;
    let mut got: [String; N] = std::array::from_fn(|_| String::new());
    for slot in &mut got {
        let (p, r) = next_param(rest).ok_or(ParseError::Missing(usage))?;
        *slot = p.to_owned();
        rest = r;
    }
    let Some((optional, rest)) = next_param(rest) else {
        return Ok((got, None));
    };
    if next_param(rest).is_some() {
        return Err(ParseError::TooMany(usage));
    }
    Ok((got, Some(optional.to_owned())))
}

pub(crate) fn exact<const N: usize>(
    params: &str,
    usage: &'static str,
) -> Result<[String; N], ParseError> {
    let mut rest = params;
    let mut got: [String; N] = std::array::from_fn(|_| String::new());
    for slot in &mut got {
        let (p, r) = next_param(rest).ok_or(ParseError::Missing(usage))?;
        *slot = p.to_owned();
        rest = r;
    }
    if next_param(rest).is_some() {
        return Err(ParseError::TooMany(usage));
    }
    Ok(got)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::Address;

    fn parse(s: &str) -> Result<Command, ParseError> {
        parse_command(s.as_bytes())
    }

    #[test]
    fn classic_client_lines_parse() {
        assert_eq!(
            parse("auth messi surabaya "),
            Ok(Command::Auth(auth::Auth {
                user: "messi".into(),
                password: "surabaya".into()
            }))
        );
        assert_eq!(
            parse("inbox abc "),
            Ok(Command::Inbox(inbox::Inbox {
                token: "abc".into(),
                since: None,
            }))
        );
        assert_eq!(
            parse("inbox abc 41"),
            Ok(Command::Inbox(inbox::Inbox {
                token: "abc".into(),
                since: Some(41),
            }))
        );
        assert!(
            parse("inbox abc x")
                .expect_err("not a seq")
                .to_string()
                .contains("SINCE must be")
        );
        // The classic client builds the message as " w1 w2", so its line has two spaces after TO.
        assert_eq!(
            parse("send tok henderson  hello there "),
            Ok(Command::Send(send::Send {
                token: "tok".into(),
                to: Address::parse("henderson").expect("valid"),
                message: " hello there".into()
            }))
        );
    }

    #[test]
    fn errors_say_what_is_wrong() {
        assert_eq!(parse(""), Err(ParseError::Empty));
        assert_eq!(parse("   "), Err(ParseError::Empty));
        assert!(matches!(parse("fly me"), Err(ParseError::Unknown(w)) if w == "fly"));
        assert!(matches!(parse("auth messi"), Err(ParseError::Missing(_))));
        assert!(matches!(parse("auth a b c"), Err(ParseError::TooMany(_))));
        assert!(matches!(parse("send t bob"), Err(ParseError::Missing(_))));
        assert!(matches!(parse("send t bob "), Err(ParseError::Missing(_))));
        assert!(matches!(
            parse("send t b@d@x hi"),
            Err(ParseError::Address(_))
        ));
        assert!(matches!(
            parse("history t bob x"),
            Err(ParseError::Count(_))
        ));
        assert_eq!(parse_command(b"auth \xff x"), Err(ParseError::NotUtf8));
        assert_eq!(parse_command(b"send t bob a\0b"), Err(ParseError::Nul));
    }

    #[test]
    fn group_commands_parse_like_the_lab() {
        // The classic two-realm client appends `origin` to `group`: its group mode.
        assert!(matches!(
            parse("group tok football origin "),
            Ok(Command::Group(g)) if g.is_classic() && g.origin.as_deref() == Some("origin")
        ));
        assert!(matches!(
            parse("group tok football"),
            Ok(Command::Group(g)) if !g.is_classic()
        ));
        assert!(matches!(
            parse("group tok football realm1 extra"),
            Err(ParseError::TooMany(_))
        ));
        assert!(matches!(
            parse("sendgroup tok football  hi there "),
            Ok(Command::SendGroup(s)) if s.message == " hi there"
        ));
        assert!(matches!(
            parse("sendgroup tok football"),
            Err(ParseError::Missing(_))
        ));
        assert!(matches!(parse("leave tok"), Err(ParseError::Missing(_))));
        assert!(matches!(
            parse("members tok a b c"),
            Err(ParseError::TooMany(_))
        ));
        assert!(matches!(
            parse("members tok a b"),
            Ok(Command::Members(m)) if m.after.as_deref() == Some("b")
        ));
        assert!(matches!(
            parse("users tok next"),
            Ok(Command::Users(u)) if u.after.as_deref() == Some("next")
        ));
        assert!(matches!(
            parse("users tok a b"),
            Err(ParseError::TooMany(_))
        ));
        assert!(matches!(
            parse("history tok messi 5 42"),
            Ok(Command::History(h)) if h.count == Some(5) && h.before == Some(42)
        ));
        assert!(matches!(
            parse("history tok messi 5 soon"),
            Err(ParseError::Count(_))
        ));
        assert!(matches!(
            parse("inboxgroup tok bad!name"),
            Err(ParseError::Address(_))
        ));
    }

    #[test]
    fn every_command_round_trips_through_its_encoder() {
        for line in [
            "auth messi surabaya",
            "send tok henderson hello  there",
            "inbox tok",
            "logout tok",
            "users tok",
            "history tok henderson",
            "history tok henderson 20",
            "group tok football",
            "group tok football origin",
            "sendgroup tok football hello  all",
            "inboxgroup tok football",
            "groups tok",
            "members tok football",
            "leave tok football",
            "group tok football@realm2",
            "realms tok",
        ] {
            let cmd = parse(line).expect("valid");
            let mut out = Vec::new();
            cmd.encode(&mut out);
            assert_eq!(out, format!("{line}\r\n").into_bytes());
            assert_eq!(parse(line.trim_end()), Ok(cmd));
        }
    }
}
