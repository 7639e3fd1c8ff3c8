//! What a typed line asks for: the classic words (`auth`, `send`, `inbox`, …, the token filled in
//! by the client) and `/`-commands (`/msg`, `/join`, `/query`, `/part`, …), each with its usage
//! line, so a mistake is answered with what to type rather than "cannot parse that".

use std::fmt;

/// Where plain lines go: a peer (`/query henderson`) or a group (`/join football`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    /// A user's address (`henderson`, `james@realm2`).
    User(String),
    /// A group's address (`football`, `football@realm1`).
    Group(String),
}

impl Target {
    /// The address, as the prompt shows it.
    pub(crate) fn name(&self) -> &str {
        match self {
            Self::User(n) | Self::Group(n) => n,
        }
    }
}

/// A request the realm answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Auth,
    Send,
    Inbox,
    Users,
    History,
    Join,
    SendGroup,
    InboxGroup,
    Groups,
    Members,
    Leave,
    Realms,
    Logout,
}

impl Kind {
    /// The protocol's command word.
    pub(crate) fn word(self) -> &'static str {
        match self {
            Self::Auth => "auth",
            Self::Send => "send",
            Self::Inbox => "inbox",
            Self::Users => "users",
            Self::History => "history",
            Self::Join => "group",
            Self::SendGroup => "sendgroup",
            Self::InboxGroup => "inboxgroup",
            Self::Groups => "groups",
            Self::Members => "members",
            Self::Leave => "leave",
            Self::Realms => "realms",
            Self::Logout => "logout",
        }
    }

    /// Whether the same request may be sent again after a connection dropped before its reply
    /// (reading, or joining, twice does no harm; sending a message twice would).
    pub(crate) fn repeatable(self) -> bool {
        matches!(
            self,
            Self::Auth
                | Self::Inbox
                | Self::Users
                | Self::History
                | Self::Join
                | Self::InboxGroup
                | Self::Groups
                | Self::Members
                | Self::Realms
        )
    }
}

/// A request to send: the command and what follows the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Request {
    /// The command.
    pub kind: Kind,
    /// The words after the token (after the command word for `auth`), spaces of a message kept.
    pub args: String,
}

impl Request {
    fn new(kind: Kind, args: impl Into<String>) -> Self {
        Self {
            kind,
            args: args.into(),
        }
    }

    /// The request line with `token` filled in (none for `auth`).
    pub(crate) fn line(&self, token: &str) -> String {
        match (self.kind, self.args.is_empty()) {
            (Kind::Auth, _) => format!("auth {}", self.args),
            (_, true) => format!("{} {token}", self.kind.word()),
            (_, false) => format!("{} {token} {}", self.kind.word(), self.args),
        }
    }
}

impl fmt::Display for Request {
    /// The request as the user would recognise it (no token, no password).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            Kind::Auth => {
                let user = self.args.split(' ').next().unwrap_or_default();
                write!(f, "auth {user}")
            }
            _ if self.args.is_empty() => f.write_str(self.kind.word()),
            _ => write!(f, "{} {}", self.kind.word(), self.args),
        }
    }
}

/// What a typed line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Parsed {
    /// An empty line: nothing.
    Empty,
    /// A request to the realm.
    Request(Request),
    /// `auth USER` without a password: ask for it (hidden) at a terminal.
    NeedPassword(String),
    /// `help`, `/help`.
    Help,
    /// `quit`, `/quit`.
    Quit,
    /// `/query ADDRESS` (`None`: end the conversation).
    Query(Option<String>),
    /// `exit` in a conversation: plain lines stop going to it.
    EndTarget,
    /// `/watch`: take the pushed messages back to this client.
    Watch,
    /// A mistake: the usage line to show.
    Usage(String),
}

/// `help`'s text.
pub(crate) const HELP: &str = "\
commands (classic words, or the same with a / in front):
  auth USER [PASSWORD]     log in (without PASSWORD a terminal asks for it, hidden)
  send TO MESSAGE...       private message; TO is user, or user@realm on a linked realm
  /msg TO MESSAGE...       the same
  /query TO                plain lines go to TO until /query alone (or exit)
  inbox                    messages not shown yet (they are pushed to you anyway)
  users                    who exists, who is online
  history PEER [N]         the last N messages with PEER (or in group PEER)
  group NAME, /join NAME   join group NAME (created if new); plain lines go to it,
                           its messages show as they arrive; exit stops talking to it
  /part [GROUP]            leave GROUP (default: the one you talk to)
  sendgroup GROUP MSG...   one message to a group (joins it if needed)
  inboxgroup GROUP         the group's messages not shown yet
  groups                   every group, with its member count
  members GROUP            who is in a group, who is live
  leave GROUP              leave a group
  realms                   this realm and its links
  /watch                   take pushed messages back from another client of yours
  logout                   end the session
  help, quit
messages to you and your groups show as they arrive: [hh:mm] <nick> text
in a conversation (/query, /join) every line is a message: commands need the /";

/// Command words Tab completes (classic and `/`-style).
pub(crate) const WORDS: &[&str] = &[
    "auth",
    "send",
    "inbox",
    "users",
    "history",
    "group",
    "sendgroup",
    "inboxgroup",
    "groups",
    "members",
    "leave",
    "realms",
    "logout",
    "help",
    "quit",
    "/msg",
    "/query",
    "/join",
    "/part",
    "/watch",
    "/help",
    "/quit",
    "/auth",
    "/send",
    "/inbox",
    "/users",
    "/history",
    "/group",
    "/sendgroup",
    "/inboxgroup",
    "/groups",
    "/members",
    "/leave",
    "/realms",
    "/logout",
];

/// What the argument at word `index` (1: the first after the command) of `command` names, for
/// completion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Completes {
    /// A user.
    User,
    /// A group.
    Group,
    /// A user or a group (`history`).
    Either,
    /// Nothing to complete.
    Nothing,
}

/// What `command`'s argument number `index` names.
pub(crate) fn completes(command: &str, index: usize) -> Completes {
    match (command.trim_start_matches('/'), index) {
        ("send" | "msg" | "query" | "q", 1) => Completes::User,
        ("history", 1) => Completes::Either,
        ("group" | "join" | "j" | "sendgroup" | "inboxgroup" | "members" | "leave" | "part", 1) => {
            Completes::Group
        }
        _ => Completes::Nothing,
    }
}

/// The message after `n` words: everything after the space that ends word `n`, leading spaces
/// beyond that one kept, as `send` stores it.
fn message_after(line: &str, n: usize) -> Option<&str> {
    let mut rest = line.trim_start();
    for i in 0..n {
        let end = rest.find(' ')?;
        rest = if i + 1 == n {
            &rest[end + 1..]
        } else {
            rest[end..].trim_start_matches(' ')
        };
    }
    if rest.trim().is_empty() {
        None
    } else {
        Some(rest)
    }
}

/// Parses one typed line. `target` is where plain lines go now, if anywhere.
pub(crate) fn parse(line: &str, target: Option<&Target>) -> Parsed {
    let line = line.trim_end();
    let trimmed = line.trim_start();
    if trimmed.is_empty() {
        return Parsed::Empty;
    }
    if let Some(target) = target
        && !trimmed.starts_with('/')
    {
        if trimmed.eq_ignore_ascii_case("exit") {
            return Parsed::EndTarget;
        }
        return Parsed::Request(match target {
            Target::User(to) => Request::new(Kind::Send, format!("{to} {line}")),
            Target::Group(group) => Request::new(Kind::SendGroup, format!("{group} {line}")),
        });
    }
    let words: Vec<&str> = trimmed.split_whitespace().collect();
    let slash = words[0].starts_with('/');
    let word = words[0].trim_start_matches('/').to_ascii_lowercase();
    let n = words.len() - 1;
    let usage = |u: &str| Parsed::Usage(format!("usage: {u}"));
    let one = |kind: Kind, u: &str| {
        if n == 1 {
            Parsed::Request(Request::new(kind, words[1]))
        } else {
            usage(u)
        }
    };
    let none = |kind: Kind, u: &str| {
        if n == 0 {
            Parsed::Request(Request::new(kind, ""))
        } else {
            usage(u)
        }
    };
    match word.as_str() {
        "help" | "h" | "?" => Parsed::Help,
        "quit" | "q" if !slash || word == "quit" => Parsed::Quit,
        "exit" => Parsed::Quit,
        "auth" | "login" => match n {
            1 => Parsed::NeedPassword(words[1].to_owned()),
            2 => Parsed::Request(Request::new(
                Kind::Auth,
                format!("{} {}", words[1], words[2]),
            )),
            _ => usage("auth USER [PASSWORD]"),
        },
        "send" | "msg" | "m" => match message_after(trimmed, 2) {
            Some(text) if n >= 2 => {
                Parsed::Request(Request::new(Kind::Send, format!("{} {text}", words[1])))
            }
            _ => usage(if slash && word != "send" {
                "/msg TO MESSAGE"
            } else {
                "send TO MESSAGE (TO: a user, or user@realm)"
            }),
        },
        "sendgroup" => match message_after(trimmed, 2) {
            Some(text) if n >= 2 => Parsed::Request(Request::new(
                Kind::SendGroup,
                format!("{} {text}", words[1]),
            )),
            _ => usage("sendgroup GROUP MESSAGE"),
        },
        "query" | "q" => match n {
            0 => Parsed::Query(None),
            1 => Parsed::Query(Some(words[1].to_owned())),
            _ => usage("/query TO (alone: end the conversation)"),
        },
        "inbox" => none(Kind::Inbox, "inbox"),
        "users" => match n {
            0 | 1 => Parsed::Request(Request::new(Kind::Users, words[1..].join(" "))),
            _ => usage("users [AFTER]"),
        },
        "groups" => match n {
            0 | 1 => Parsed::Request(Request::new(Kind::Groups, words[1..].join(" "))),
            _ => usage("groups [AFTER]"),
        },
        "realms" => none(Kind::Realms, "realms"),
        "logout" => none(Kind::Logout, "logout"),
        "history" => match (n, words.get(2).map(|w| w.parse::<u32>())) {
            (1, _) | (2 | 3, Some(Ok(1..))) => {
                Parsed::Request(Request::new(Kind::History, words[1..].join(" ")))
            }
            _ => usage("history PEER [N] (N: how many messages, 1 or more)"),
        },
        // The classic client's trailing origin word is accepted and ignored.
        "group" | "join" | "j" => match n {
            1 | 2 if !(n == 2 && slash) => Parsed::Request(Request::new(Kind::Join, words[1])),
            _ => usage("group NAME (or /join NAME)"),
        },
        "part" => match (n, target) {
            (1, _) => Parsed::Request(Request::new(Kind::Leave, words[1])),
            (0, Some(Target::Group(group))) => {
                Parsed::Request(Request::new(Kind::Leave, group.clone()))
            }
            _ => usage("/part GROUP (alone: the group you talk to)"),
        },
        "inboxgroup" => one(Kind::InboxGroup, "inboxgroup GROUP"),
        "members" => match n {
            1 | 2 => Parsed::Request(Request::new(Kind::Members, words[1..].join(" "))),
            _ => usage("members GROUP"),
        },
        "leave" => one(Kind::Leave, "leave GROUP"),
        "watch" => match n {
            0 => Parsed::Watch,
            _ => usage("/watch"),
        },
        _ => Parsed::Usage(format!(
            "unknown command {:?}; type help for the commands{}",
            words[0],
            if target.is_none() {
                " (/query TO or /join GROUP makes plain lines messages)"
            } else {
                ""
            }
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(line: &str) -> Request {
        match parse(line, None) {
            Parsed::Request(r) => r,
            other => panic!("{line:?}: {other:?}"),
        }
    }

    #[test]
    fn classic_words_fill_in_the_token_and_keep_message_spaces() {
        assert_eq!(
            req("send henderson hello  there").line("T"),
            "send T henderson hello  there"
        );
        assert_eq!(
            req("send henderson  two").line("T"),
            "send T henderson  two"
        );
        assert_eq!(
            req("/msg james@realm2 hi").line("T"),
            "send T james@realm2 hi"
        );
        assert_eq!(req("inbox").line("T"), "inbox T");
        assert_eq!(req("auth messi surabaya").line("T"), "auth messi surabaya");
        assert_eq!(req("group football origin").line("T"), "group T football");
        assert_eq!(req("/join football").line("T"), "group T football");
        assert_eq!(
            req("sendgroup football a  b").line("T"),
            "sendgroup T football a  b"
        );
        assert_eq!(req("history messi 30").line("T"), "history T messi 30");
    }

    #[test]
    fn mistakes_get_their_usage() {
        for (line, usage) in [
            ("send henderson", "usage: send TO MESSAGE"),
            ("send", "usage: send TO MESSAGE"),
            ("/msg james", "usage: /msg TO MESSAGE"),
            ("history", "usage: history PEER [N]"),
            ("history messi zero", "usage: history PEER [N]"),
            ("inbox now", "usage: inbox"),
            ("auth a b c", "usage: auth USER [PASSWORD]"),
            ("/part", "usage: /part GROUP"),
            ("dance", "unknown command \"dance\""),
        ] {
            match parse(line, None) {
                Parsed::Usage(u) => assert!(u.starts_with(usage), "{line:?}: {u}"),
                other => panic!("{line:?}: {other:?}"),
            }
        }
        assert_eq!(
            parse("auth messi", None),
            Parsed::NeedPassword("messi".into())
        );
    }

    #[test]
    fn in_a_conversation_plain_lines_are_messages() {
        let peer = Target::User("henderson".into());
        let group = Target::Group("football".into());
        match parse("inbox please", Some(&peer)) {
            Parsed::Request(r) => assert_eq!(r.line("T"), "send T henderson inbox please"),
            other => panic!("{other:?}"),
        }
        match parse("  kick-off", Some(&group)) {
            Parsed::Request(r) => assert_eq!(r.line("T"), "sendgroup T football   kick-off"),
            other => panic!("{other:?}"),
        }
        assert_eq!(parse("exit", Some(&group)), Parsed::EndTarget);
        assert_eq!(
            parse("/inbox", Some(&group)),
            Parsed::Request(Request::new(Kind::Inbox, ""))
        );
        match parse("/part", Some(&group)) {
            Parsed::Request(r) => assert_eq!(r.line("T"), "leave T football"),
            other => panic!("{other:?}"),
        }
    }
}
