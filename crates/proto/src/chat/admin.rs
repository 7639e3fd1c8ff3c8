//! The realm's admin socket: user administration of a running realm, for its operator only.
//!
//! A realm listens on a Unix socket (by default `admin.sock` in its data directory) that only
//! the user the realm runs as (and root) may use: the file is owner-only and the server checks
//! each peer's credentials. A request is one line of JSON (`{"op":"list_users"}`) ending in LF;
//! the reply is one line of JSON: `{"ok":true,…}` or `{"ok":false,"error":"…"}`. The
//! specification with examples is `docs/chat-admin.md`.
//!
//! Nothing here reads or returns a password hash; passwords travel only towards the realm.

use serde::{Deserialize, Serialize};

/// Cap on a request line (bytes): a password and a name, not a file.
pub const DEFAULT_ADMIN_MAX_LINE: usize = 16 * 1024;

/// Cap on the bench users one `put_bench_users` creates.
pub const DEFAULT_MAX_BENCH_USERS: u32 = 100_000;

/// The `code` of a `put_bench_users` refused because a name is a real user's.
pub const CODE_REAL_USER: &str = "real_user";

/// The admin socket's file name in a realm's data directory.
pub const ADMIN_SOCKET_FILE: &str = "admin.sock";

/// One request. (The variants without fields are written `{}` so that `deny_unknown_fields`
/// refuses extra keys on them too.)
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum AdminRequest {
    /// Which realm answers, and where its clients connect.
    Hello {},
    /// Every user with their display name and whether they are a bench user.
    ListUsers {},
    /// Adds a user (the realm hashes the password at its configured cost).
    AddUser {
        /// Login name.
        name: String,
        /// Display name (the name when absent).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        display_name: Option<String>,
        /// The password.
        password: String,
    },
    /// Replaces a user's password and ends all their sessions.
    SetPassword {
        /// Login name.
        name: String,
        /// The new password.
        password: String,
    },
    /// Deletes a user and ends their sessions (their messages stay in others' history).
    DeleteUser {
        /// Login name.
        name: String,
    },
    /// Creates (or re-creates) bench users `PREFIX0` … `PREFIX{count-1}` with a cheap hash of
    /// `password`; refused without creating any if one of the names is a real user's.
    PutBenchUsers {
        /// Name prefix.
        prefix: String,
        /// How many.
        count: u32,
        /// Their common password.
        password: String,
    },
    /// Deletes every bench user and everything they wrote.
    PurgeBench {},
}

/// A user as the admin socket lists them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminUser {
    /// Login name.
    pub name: String,
    /// Display name.
    pub display_name: String,
    /// Made by `jaring bench` (removed by `purge_bench`).
    pub bench: bool,
    /// Logged in on at least one connection right now.
    pub online: bool,
}

/// What `hello` answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RealmInfo {
    /// The realm's name.
    pub realm: String,
    /// The port its clients connect to.
    pub client_port: u16,
    /// Its federation port, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub federation_port: Option<u16>,
    /// The storage backend (`sqlite`, `postgres`, `memory`).
    pub backend: String,
    /// Users (bench users included).
    pub users: u64,
}

/// What `purge_bench` removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurgeCounts {
    /// Bench users deleted.
    pub users: u64,
    /// Private messages deleted.
    pub private_messages: u64,
    /// Group messages deleted.
    pub group_messages: u64,
    /// Groups deleted whole (only bench users were in them).
    pub groups: Vec<String>,
}

/// One reply: `ok` and at most one of the payloads, or `ok: false` and `error`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminReply {
    /// Whether the request was carried out.
    pub ok: bool,
    /// What went wrong and what to do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What kind of failure, for programs: [`CODE_REAL_USER`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// `hello`'s answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub realm: Option<RealmInfo>,
    /// `list_users`' answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub users: Option<Vec<AdminUser>>,
    /// `put_bench_users`: how many bench users now exist under the prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<u32>,
    /// `purge_bench`'s answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purged: Option<PurgeCounts>,
}

impl AdminReply {
    /// A plain success.
    pub fn done() -> Self {
        Self {
            ok: true,
            ..Self::default()
        }
    }

    /// A failure saying `error`.
    pub fn failed(error: impl Into<String>) -> Self {
        Self {
            ok: false,
            error: Some(error.into()),
            ..Self::default()
        }
    }
}

/// Why a request line was refused before it was carried out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdminParseError {
    /// Not one JSON request of the kinds above.
    #[error("not an admin request ({0}); see docs/chat-admin.md")]
    Malformed(String),
}

/// Parses one request line (without its LF).
pub fn parse_request(line: &[u8]) -> Result<AdminRequest, AdminParseError> {
    serde_json::from_slice(line).map_err(|e| AdminParseError::Malformed(e.to_string()))
}

/// One request or reply as a line: JSON and LF.
pub fn encode_line<T: Serialize>(value: &T) -> Vec<u8> {
    // Serialising these plain structs cannot fail: no maps with non-string keys, no custom
    // serialisers.
    let mut line = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    line.push(b'\n');
    line
}

/// The bench user names `prefix0` … `prefix{count-1}`, or why they are not valid user names.
pub fn bench_names(prefix: &str, count: u32) -> Result<Vec<String>, String> {
    if count == 0 || count > DEFAULT_MAX_BENCH_USERS {
        return Err(format!(
            "count must be 1 to {DEFAULT_MAX_BENCH_USERS}, not {count}"
        ));
    }
    let last = format!("{prefix}{}", count - 1);
    if !super::address::is_valid_name(&format!("{prefix}0"))
        || !super::address::is_valid_name(&last)
    {
        return Err(format!(
            "invalid user name prefix {prefix:?}: names are 1 to 32 letters, digits, '_', '-' or \
             '.', starting with a letter or digit ({last:?} would be the last)"
        ));
    }
    Ok((0..count).map(|i| format!("{prefix}{i}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_and_unknown_fields_are_refused() {
        let reqs = [
            AdminRequest::Hello {},
            AdminRequest::ListUsers {},
            AdminRequest::AddUser {
                name: "messi".into(),
                display_name: None,
                password: "p w".into(),
            },
            AdminRequest::PutBenchUsers {
                prefix: "u".into(),
                count: 3,
                password: "x".into(),
            },
            AdminRequest::PurgeBench {},
        ];
        for r in reqs {
            let line = encode_line(&r);
            assert_eq!(line.last(), Some(&b'\n'));
            assert_eq!(parse_request(&line[..line.len() - 1]), Ok(r));
        }
        assert_eq!(
            encode_line(&AdminRequest::Hello {}),
            b"{\"op\":\"hello\"}\n".to_vec()
        );
        assert!(parse_request(br#"{"op":"hello","x":1}"#).is_err());
        assert!(parse_request(br#"{"op":"drop_tables"}"#).is_err());
        assert!(parse_request(b"\xff\xfe").is_err());
        assert!(parse_request(b"").is_err());
    }

    #[test]
    fn bench_names_are_checked_at_both_ends() {
        assert_eq!(bench_names("u", 3).unwrap(), ["u0", "u1", "u2"]);
        assert!(bench_names("u", 0).is_err());
        assert!(bench_names("u", DEFAULT_MAX_BENCH_USERS + 1).is_err());
        assert!(bench_names("-u", 1).is_err());
        assert!(bench_names("u u", 1).is_err());
        // 31 characters of prefix: "…9" fits, "…10" does not.
        let p = "a".repeat(31);
        assert!(bench_names(&p, 10).is_ok());
        assert!(bench_names(&p, 11).is_err());
    }

    proptest::proptest! {
        #[test]
        fn any_line_parses_or_is_refused_without_panicking(line in proptest::collection::vec(proptest::num::u8::ANY, 0..256)) {
            let _ = parse_request(&line);
        }

        #[test]
        fn json_looking_lines_never_panic(s in r#"\{"op":"[a-z_]{0,16}"(,"[a-z_]{1,12}":("[^"]{0,8}"|[0-9]{1,12}|null|true))*\}"#) {
            let _ = parse_request(s.as_bytes());
        }
    }

    #[test]
    fn replies_say_ok_or_error() {
        assert_eq!(
            encode_line(&AdminReply::done()),
            b"{\"ok\":true}\n".to_vec()
        );
        let r: AdminReply =
            serde_json::from_slice(&encode_line(&AdminReply::failed("no"))).unwrap();
        assert!(!r.ok);
        assert_eq!(r.error.as_deref(), Some("no"));
    }
}
