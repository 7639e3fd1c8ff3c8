//! How replies and events look to people: `[hh:mm] <nick> text` in the user's local time, a
//! stable colour per nick (when colour is on), group lines marked with their group.

use serde_json::Value;

/// Colours used for nicks: the terminal's six plain colours and their bright forms (no black or
/// white, which vanish on one background or the other).
const NICK_COLOURS: [u8; 12] = [31, 32, 33, 34, 35, 36, 91, 92, 93, 94, 95, 96];

/// How to draw text.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Style {
    /// Whether to use ANSI colours.
    pub color: bool,
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or_default()
}

impl Style {
    /// `name` in its colour: the same name always gets the same colour.
    pub(crate) fn nick(&self, name: &str) -> String {
        if !self.color {
            return name.to_owned();
        }
        // FNV-1a: stable across runs and machines (std's hasher is seeded per process).
        let mut h: u32 = 0x811c_9dc5;
        for b in name.bytes() {
            h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
        }
        let colour = NICK_COLOURS[h as usize % NICK_COLOURS.len()];
        format!("\x1b[{colour}m{name}\x1b[0m")
    }

    /// `text` dimmed (timestamps, notices).
    pub(crate) fn dim(&self, text: &str) -> String {
        if self.color {
            format!("\x1b[2m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }

    /// `text` in bold (group marks).
    fn bold(&self, text: &str) -> String {
        if self.color {
            format!("\x1b[1m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }

    /// `[hh:mm]` of a `sent_at` (milliseconds since the epoch) in the local time zone (TZ, else
    /// the system's); `[--:--]` if the message has none.
    pub(crate) fn stamp(&self, sent_at: &Value) -> String {
        let text = sent_at
            .as_i64()
            .and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok())
            .map_or_else(
                || "--:--".to_owned(),
                |t| {
                    t.to_zoned(jiff::tz::TimeZone::system())
                        .strftime("%H:%M")
                        .to_string()
                },
            );
        self.dim(&format!("[{text}]"))
    }

    /// Who sent a message, as shown: the address, and for a user of another realm (an address
    /// with `@`) their display name too, which the address alone would lose.
    fn sender(&self, m: &Value) -> String {
        let from = s(&m["from"]);
        let display = s(&m["msg_from"]);
        let nick = self.nick(from);
        if from.contains('@') && !display.is_empty() && display != from {
            format!("<{nick} ({display})>")
        } else {
            format!("<{nick}>")
        }
    }

    /// One message (a private one, or a group's with `"group"`) as a line:
    /// `[hh:mm] <nick> text` or `[hh:mm] [group] <nick> text`.
    pub(crate) fn message(&self, m: &Value) -> String {
        let group = match m.get("group").map(s) {
            Some(g) if !g.is_empty() => format!("{} ", self.bold(&format!("[{g}]"))),
            _ => String::new(),
        };
        format!(
            "{} {group}{} {}",
            self.stamp(&m["sent_at"]),
            self.sender(m),
            s(&m["msg"])
        )
    }

    /// A message in a listing (history, inbox): with its recipient when it is private, so both
    /// directions of a conversation read right.
    fn listed(&self, m: &Value) -> String {
        if m.get("group").is_some() {
            return format!("  {}", self.message(m));
        }
        format!(
            "  {} {} → {}: {}",
            self.stamp(&m["sent_at"]),
            self.nick(s(&m["from"])),
            self.nick(s(&m["to"])),
            s(&m["msg"])
        )
    }

    /// A pushed event that is not a message, as a line (`None`: nothing to show).
    pub(crate) fn event(&self, v: &Value) -> Option<String> {
        let group = s(&v["group"]);
        Some(match s(&v["event"]) {
            "join" => self.dim(&format!("-- {} joined {group}", s(&v["user"]))),
            "leave" => self.dim(&format!("-- {} left {group}", s(&v["user"]))),
            "end" => format!("-- live session of {group} ended: {}", s(&v["reason"])),
            "closing" => format!(
                "-- the server is closing the connection: {}",
                s(&v["reason"])
            ),
            _ => return None,
        })
    }

    /// The lines that show a reply to `kind`'s request.
    pub(crate) fn reply(&self, kind: super::command::Kind, v: &Value) -> Vec<String> {
        use super::command::Kind;
        let mut out = Vec::new();
        if v["status"] != "OK" {
            out.push(format!("error: {}", s(&v["message"])));
            return out;
        }
        match kind {
            Kind::Auth => out.push(format!(
                "logged in{}",
                unread_summary(v).map_or_else(String::new, |u| format!("; unread: {u}"))
            )),
            Kind::Send => out.push("sent".to_owned()),
            Kind::Logout => out.push("logged out".to_owned()),
            Kind::Inbox => {
                let groups = v["messages"].as_object();
                if groups.is_none_or(|g| g.values().all(|l| l.as_array().is_none_or(Vec::is_empty)))
                {
                    out.push("no new messages".to_owned());
                }
                for list in groups.into_iter().flat_map(|g| g.values()) {
                    for m in list.as_array().into_iter().flatten() {
                        out.push(self.listed(m));
                    }
                }
                if v["more"] == true {
                    out.push("(more waiting: run inbox again)".to_owned());
                }
            }
            Kind::Users => {
                for u in v["users"].as_array().into_iter().flatten() {
                    let mark = if u["online"] == true { "online" } else { "" };
                    out.push(format!(
                        "  {:<16} {:<24} {mark}",
                        s(&u["name"]),
                        s(&u["display_name"])
                    ));
                }
            }
            Kind::History | Kind::InboxGroup => {
                let msgs = v["messages"].as_array();
                if kind == Kind::InboxGroup && msgs.is_none_or(Vec::is_empty) {
                    out.push("no new messages".to_owned());
                }
                for m in msgs.into_iter().flatten() {
                    out.push(self.listed(m));
                }
                if v["more"] == true && kind == Kind::InboxGroup {
                    out.push("(more waiting: run inboxgroup again)".to_owned());
                } else if let Some(next) = v["next"].as_str() {
                    out.push(format!("(older messages: history PEER N {next})"));
                }
            }
            // A group homed on another realm numbers the message there; it arrives with it.
            Kind::SendGroup if v["seq"] == 0 => out.push(format!("sent (to {})", s(&v["group"]))),
            Kind::SendGroup => out.push(format!("sent (#{})", v["seq"])),
            Kind::Join | Kind::Leave => out.push(s(&v["message"]).to_owned()),
            Kind::Groups => {
                for g in v["groups"].as_array().into_iter().flatten() {
                    let mark = if g["member"] == true { "member" } else { "" };
                    out.push(format!(
                        "  {:<24} {:>6} members  {mark}",
                        s(&g["name"]),
                        g["members"]
                    ));
                }
            }
            Kind::Members => {
                for m in v["members"].as_array().into_iter().flatten() {
                    let mark = if m["live"] == true { "live" } else { "" };
                    out.push(format!(
                        "  {:<16} {:<24} {mark}",
                        s(&m["name"]),
                        s(&m["display_name"])
                    ));
                }
                if v["more"] == true {
                    out.push("  … and more (the group's realm sent the first of them)".to_owned());
                }
            }
            Kind::Realms => {
                let peers = v["peers"].as_array();
                if peers.is_none_or(Vec::is_empty) {
                    out.push(format!("realm {} has no federation peers", s(&v["realm"])));
                } else {
                    out.push(format!("realm {}; its links:", s(&v["realm"])));
                }
                for p in peers.into_iter().flatten() {
                    out.push(format!(
                        "  {:<16} {:<22} {:<10} outbox {:<8} {}",
                        s(&p["realm"]),
                        s(&p["address"]),
                        s(&p["state"]),
                        p["outbox"],
                        s(&p["last_error"])
                    ));
                }
            }
        }
        out
    }
}

/// The auth reply's `unread` and `unread_groups` as one line (`2 from messi, 1 from
/// james@realm2; football: 5`), or `None` when nothing waits.
pub(crate) fn unread_summary(v: &Value) -> Option<String> {
    let mut parts = Vec::new();
    for (from, n) in v["unread"].as_object().into_iter().flatten() {
        parts.push(format!("{n} from {from}"));
    }
    if v["unread_more"] == true {
        parts.push("and more".to_owned());
    }
    for (group, n) in v["unread_groups"].as_object().into_iter().flatten() {
        parts.push(format!("{n} in {group}"));
    }
    if parts.is_empty() {
        None
    } else {
        Some(parts.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_nick_keeps_its_colour_and_plain_text_has_none() {
        let on = Style { color: true };
        assert_eq!(on.nick("messi"), on.nick("messi"));
        assert!(on.nick("messi").starts_with("\x1b["));
        let off = Style { color: false };
        assert_eq!(off.nick("messi"), "messi");
        let m = json!({"from":"james@realm2","msg_from":"James Milner","msg":"hi","sent_at":null});
        assert_eq!(off.message(&m), "[--:--] <james@realm2 (James Milner)> hi");
        let g = json!({"group":"football","from":"messi","msg_from":"Lionel Messi","msg":"goal",
                       "sent_at":0});
        assert!(
            off.message(&g).ends_with(" [football] <messi> goal"),
            "{}",
            off.message(&g)
        );
    }

    #[test]
    fn the_unread_summary_names_each_conversation() {
        let v = json!({"unread":{"messi":2},"unread_groups":{"football":5}});
        assert_eq!(
            unread_summary(&v).as_deref(),
            Some("2 from messi, 5 in football")
        );
        assert_eq!(
            unread_summary(&json!({"unread":{},"unread_groups":{}})),
            None
        );
    }
}
