//! [`GroupStore`]: the storage groups need, which every [`super::Store`] also implements.
//!
//! A group is stored under its address as this realm names it (`name` for a group whose home is
//! this realm; `name@realm` once federation relays groups homed elsewhere) together with its home
//! realm, the one realm that assigns the group's order. Each group message gets the next `seq` of
//! its group in the same transaction that stores it, so the order survives restarts and has no
//! gaps; a replica of a group homed elsewhere stores each message under the `seq` its home
//! assigned (see [`crate::federation`]). Each member has a read
//! cursor: the highest `seq` delivered to them (pushed live or returned by `inboxgroup`).

use std::future::Future;

use super::error::StoreResult;
use super::window::{Page, Window};

/// A group as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupRecord {
    /// The group's address as this realm names it.
    pub name: String,
    /// The realm that orders the group's messages (this realm's name for local groups).
    pub home: String,
    /// The `seq` of its latest message (0 before the first).
    pub last_seq: i64,
    /// Who created it, for the per-user creation quota: `None` for a replica of a peer's group
    /// and for groups created before the quota existed (they count against no one).
    pub creator: Option<String>,
}

/// A membership as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberRecord {
    /// The group.
    pub group: String,
    /// The member's address.
    pub user: String,
    /// The highest `seq` delivered to the member.
    pub read_seq: i64,
}

/// What a join did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JoinOutcome {
    /// The join created the group.
    pub created: bool,
    /// The join made the user a member (false: they were one).
    pub new_member: bool,
    /// The member's read cursor: for a new member, the group's latest `seq`, so that what was
    /// said before they joined is history, not something they missed.
    pub read_seq: i64,
}

/// A group message to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewGroupMessage {
    /// Globally unique, time-ordered id (UUID v7).
    pub id: uuid::Uuid,
    /// The group.
    pub group: String,
    /// Sender address.
    pub sender: String,
    /// Sender display name at the time of sending.
    pub sender_display: String,
    /// The text.
    pub body: String,
    /// Milliseconds since the Unix epoch.
    pub sent_at: i64,
}

/// A group message as read back, with its place in the group's order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredGroupMessage {
    /// 1, 2, 3, … within the group, assigned at commit.
    pub seq: i64,
    /// What was stored.
    pub message: NewGroupMessage,
}

/// A member's read cursor to move: `user` has had every message of `group` up to `seq`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadCursor {
    /// The group.
    pub group: String,
    /// The member's address.
    pub user: String,
    /// The highest `seq` delivered to them.
    pub seq: i64,
}

/// Called for each group message once it is committed, before the caller hears of it. For each
/// group, the calls come in `seq` order, one at a time: this is where the realm pushes the message
/// to live sessions, so pushes follow the group's order without any reordering.
pub type Published = Box<dyn Fn(&StoredGroupMessage) + Send>;

/// Durable storage of groups, memberships, group messages and read cursors.
pub trait GroupStore: Send + Sync + 'static {
    /// Every group (loaded at start).
    fn groups(&self) -> impl Future<Output = StoreResult<Vec<GroupRecord>>> + Send;

    /// Every membership (loaded at start).
    fn memberships(&self) -> impl Future<Output = StoreResult<Vec<MemberRecord>>> + Send;

    /// Makes `user` a member of `group`, creating the group (homed on `home`) if it does not
    /// exist; returns once committed.
    fn join_group(
        &self,
        group: &str,
        home: &str,
        user: &str,
    ) -> impl Future<Output = StoreResult<JoinOutcome>> + Send;

    /// Ends a membership (the group and its history stay); returns whether there was one, once
    /// committed.
    fn leave_group(
        &self,
        group: &str,
        user: &str,
    ) -> impl Future<Output = StoreResult<bool>> + Send;

    /// Stores group messages, in this order, each with the next `seq` of its group, in one
    /// transaction; runs `published` for each after the commit (see [`Published`]); returns the
    /// stored messages. (A live session's lines that arrived together go in one call: one commit,
    /// not one per line.)
    fn insert_group_messages(
        &self,
        messages: Vec<NewGroupMessage>,
        published: Published,
    ) -> impl Future<Output = StoreResult<Vec<StoredGroupMessage>>> + Send;

    /// Messages of `group` with `seq` > `after`, in order: at most `limit`, and no more than
    /// `max_bytes` of text (the first one whatever its size; `cut` when that left some out).
    fn group_messages(
        &self,
        group: &str,
        after: i64,
        limit: usize,
        max_bytes: usize,
    ) -> impl Future<Output = StoreResult<Page<StoredGroupMessage>>> + Send;

    /// The latest messages of `group` in `window`, oldest first.
    fn group_history(
        &self,
        group: &str,
        window: Window,
    ) -> impl Future<Output = StoreResult<Page<StoredGroupMessage>>> + Send;

    /// Moves members' read cursors forward (never back); returns once committed.
    fn advance_cursors(
        &self,
        cursors: Vec<ReadCursor>,
    ) -> impl Future<Output = StoreResult<()>> + Send;
}
