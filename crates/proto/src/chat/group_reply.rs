//! The OK replies of the group commands.

use serde::{Deserialize, Serialize};

use crate::chat::event::GroupMessage;
use crate::chat::reply::Status;

/// The OK of `group`: the connection is now a live session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Joined {
    /// Always OK.
    pub status: Status,
    /// `Joined group NAME`, for people.
    pub message: String,
    /// The group's address.
    pub group: String,
    /// Whether this join created the group.
    pub created: bool,
    /// Whether this join made the user a member (false: a member already).
    pub new_member: bool,
}

/// The OK of `sendgroup`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupSent {
    /// Always OK.
    pub status: Status,
    /// `Message Sent`, as for `send`.
    pub message: String,
    /// The group's address.
    pub group: String,
    /// The message id (a UUID v7).
    pub id: String,
    /// The message's place in the group's order.
    pub seq: i64,
}

/// The OK of `inboxgroup`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboxGroupOk {
    /// Always OK.
    pub status: Status,
    /// The group's address.
    pub group: String,
    /// The messages after the member's read cursor, in the group's order.
    pub messages: Vec<GroupMessage>,
    /// True when more wait than one reply carries: ask again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub more: bool,
}

/// The OK of a group `history`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupHistoryOk {
    /// Always OK.
    pub status: Status,
    /// The group's address.
    pub group: String,
    /// The latest messages, oldest first.
    pub messages: Vec<GroupMessage>,
    /// True when the reply was cut short by its size cap: more wait (absent when false).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub more: bool,
    /// With `more`: the cursor to send as the command's last word for the next page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// One group in the reply to `groups`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupEntry {
    /// The group's address.
    pub name: String,
    /// How many members it has.
    pub members: usize,
    /// Whether the asking user is one of them.
    pub member: bool,
}

/// The OK of `groups`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupsOk {
    /// Always OK.
    pub status: Status,
    /// Every group of the realm, by name.
    pub groups: Vec<GroupEntry>,
    /// True when the reply was cut short by its size cap: more wait (absent when false).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub more: bool,
    /// With `more`: the cursor to send as the command's last word for the next page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// One member in the reply to `members`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberEntry {
    /// The member's address.
    pub name: String,
    /// The member's display name.
    pub display_name: String,
    /// Whether the member has a live session on the group open now.
    pub live: bool,
}

/// The OK of `members`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembersOk {
    /// Always OK.
    pub status: Status,
    /// The group's address.
    pub group: String,
    /// Its members, by name.
    pub members: Vec<MemberEntry>,
    /// More members than one reply carries: these are the first, by name (absent when
    /// `false`). For a group of another realm, that realm's first answer.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub more: bool,
    /// With `more`, for a group of this realm: the cursor for the next page (`members TOKEN
    /// GROUP NEXT`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}
