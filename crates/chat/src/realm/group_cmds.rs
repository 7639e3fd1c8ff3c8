//! The group commands of a [`Realm`]: `group`, `sendgroup`, `inboxgroup`, `groups`, `members`,
//! `leave`, and `history` of a group.

use std::sync::Arc;

use jaring_proto::chat::Address;
use jaring_proto::chat::event::{GroupMessage, MemberChange};
use jaring_proto::chat::group::Group;
use jaring_proto::chat::group_reply::{
    GroupEntry, GroupHistoryOk, GroupSent, GroupsOk, InboxGroupOk, Joined, MemberEntry, MembersOk,
};
use jaring_proto::chat::reply::{self, Status};
use jaring_proto::chat::sendgroup::SendGroup;
use tracing::error;

use super::{ConnState, Delivery, Realm, STORAGE_FAILED, lock, unix_ms};
use crate::group_store::{NewGroupMessage, StoredGroupMessage};
use crate::groups::{Hub, Subscription};
use crate::store::{Store, StoreError};

/// A connection's live session on a group, handed to the server after the `group` OK. Dropping
/// it ends the session in the hub: only then may the member's `inboxgroup` run again, so the
/// session's last cursor must be advanced before it is dropped.
#[derive(Debug)]
pub struct LiveSession {
    /// The group.
    pub group: String,
    /// The member.
    pub user: String,
    /// The group's events from the moment of joining, and the member's cursor then.
    pub subscription: Subscription,
    hub: Arc<Hub>,
    closed: bool,
}

impl LiveSession {
    /// Stops receiving the group's events (the ring no longer waits for this session); the
    /// session may still write what it holds.
    pub fn close(&mut self) {
        if std::mem::replace(&mut self.closed, true) {
            return;
        }
        // Close the receiver first, so the hub can see whether anyone still listens.
        let (_, events) = tokio::sync::broadcast::channel(1);
        drop(std::mem::replace(&mut self.subscription.events, events));
        self.hub.unlisten(&self.group);
    }
}

impl Drop for LiveSession {
    fn drop(&mut self) {
        self.close();
        self.hub.unsubscribe(&self.group, &self.user);
    }
}

/// The lease that lets one connection at a time hand a member a group's messages.
fn lease_key(user: &str, group: &str) -> String {
    format!("{user} {group}")
}

/// Converts a stored group message to its wire form.
pub fn wire_group_message(m: &StoredGroupMessage) -> GroupMessage {
    let g = &m.message;
    GroupMessage {
        group: g.group.clone(),
        seq: m.seq,
        id: g.id.to_string(),
        from: g.sender.clone(),
        msg_from: g.sender_display.clone(),
        msg: g.body.clone(),
        sent_at: g.sent_at,
    }
}

impl<S: Store> Realm<S> {
    /// The realm's options.
    pub fn options(&self) -> &super::RealmOptions {
        &self.options
    }

    /// The hub of the realm's groups.
    pub fn hub(&self) -> &Arc<Hub> {
        &self.groups
    }

    /// The local name of a group address, or the ERROR appended.
    fn group_name(&self, addr: &Address, out: &mut Vec<u8>) -> Option<String> {
        if self.refuse_foreign(addr, out) {
            return None;
        }
        Some(addr.name.clone())
    }

    /// Makes `user` a member (creating the group on first join); pushes the join. The ERROR is
    /// appended on failure. Returns (created, new_member).
    async fn ensure_member(
        &self,
        group: &str,
        user: &str,
        out: &mut Vec<u8>,
    ) -> Option<(bool, bool)> {
        if self.groups.membership(group, user).is_some() {
            return Some((false, false));
        }
        if !self.groups.exists(group) && self.user(group).is_some() {
            reply::encode_error(
                format_args!("{group:?} is a user of this realm; pick another group name"),
                out,
            );
            return None;
        }
        let outcome = match self.store.join_group(group, &self.options.name, user).await {
            Ok(o) => o,
            Err(e) => {
                error!(error = %e, "cannot store a group membership");
                reply::encode_error(STORAGE_FAILED, out);
                return None;
            }
        };
        if self.groups.joined(group, user, outcome.read_seq) && outcome.new_member {
            self.groups
                .publish_presence(self.member_change(group, user), false);
        }
        Some((outcome.created, outcome.new_member))
    }

    fn member_change(&self, group: &str, user: &str) -> MemberChange {
        MemberChange {
            group: group.to_owned(),
            user: user.to_owned(),
            display_name: self
                .user(user)
                .map_or_else(|| user.to_owned(), |u| u.display_name),
        }
    }

    /// `group TOKEN NAME`: join and start a live session.
    pub(super) async fn group_join(
        &self,
        conn: &mut ConnState,
        c: Group,
        out: &mut Vec<u8>,
    ) -> Option<LiveSession> {
        let user = self.resolve(conn, &c.token, out).await?;
        let group = self.group_name(&c.group, out)?;
        let (created, new_member) = self.ensure_member(&group, &user, out).await?;
        let key = lease_key(&user, &group);
        let subscription = {
            // Under the leases lock, so that no inboxgroup of this member is being handed out
            // while the session starts from the member's cursor (the two would overlap).
            let leases = lock(&self.leases);
            if leases.contains(&key) {
                drop(leases);
                reply::encode_error(
                    format_args!(
                        "your inboxgroup of {group:?} on another connection is still being \
                         delivered; try again in a moment"
                    ),
                    out,
                );
                return None;
            }
            self.groups.subscribe(&group, &user)
        };
        let Some(subscription) = subscription else {
            // Left on another connection in between.
            reply::encode_error(
                format_args!("you are not a member of {group:?}; join it again"),
                out,
            );
            return None;
        };
        reply::encode(
            &Joined {
                status: Status::Ok,
                message: format!("Joined group {group}"),
                group: group.clone(),
                created,
                new_member,
            },
            out,
        );
        Some(LiveSession {
            group,
            user,
            subscription,
            hub: Arc::clone(&self.groups),
            closed: false,
        })
    }

    /// Stores a message from `user` to `group` (a member); pushes it once committed.
    pub async fn post_group_message(
        &self,
        group: &str,
        user: &str,
        body: String,
    ) -> Result<StoredGroupMessage, StoreError> {
        let mut stored = self.post_group_messages(group, user, vec![body]).await?;
        stored.pop().ok_or(StoreError::Stopped)
    }

    /// Stores messages from `user` to `group` (a member) in this order, in one commit; pushes
    /// each once committed.
    pub async fn post_group_messages(
        &self,
        group: &str,
        user: &str,
        bodies: Vec<String>,
    ) -> Result<Vec<StoredGroupMessage>, StoreError> {
        let sender_display = self
            .user(user)
            .map_or_else(|| user.to_owned(), |u| u.display_name);
        let messages = bodies
            .into_iter()
            .map(|body| NewGroupMessage {
                id: uuid::Uuid::now_v7(),
                group: group.to_owned(),
                sender: user.to_owned(),
                sender_display: sender_display.clone(),
                body,
                sent_at: unix_ms(),
            })
            .collect();
        let hub = Arc::clone(&self.groups);
        self.store
            .insert_group_messages(messages, Box::new(move |m| hub.publish_message(m)))
            .await
    }

    /// Moves a member's read cursor forward in memory now and in storage when `persist`.
    pub async fn advance_cursor(&self, group: &str, user: &str, seq: i64, persist: bool) {
        self.groups.advance(group, user, seq);
        if persist
            && let Err(e) = self
                .store
                .advance_cursors(vec![(group.to_owned(), user.to_owned(), seq)])
                .await
        {
            // Not stored means pushed again by a later inboxgroup: a duplicate, never a loss.
            error!(error = %e, "cannot store a read cursor");
        }
    }

    pub(super) async fn sendgroup(&self, conn: &mut ConnState, c: SendGroup, out: &mut Vec<u8>) {
        let Some(user) = self.resolve(conn, &c.token, out).await else {
            return;
        };
        let Some(group) = self.group_name(&c.group, out) else {
            return;
        };
        if self.ensure_member(&group, &user, out).await.is_none() {
            return;
        }
        match self.post_group_message(&group, &user, c.message).await {
            Ok(stored) => reply::encode(
                &GroupSent {
                    status: Status::Ok,
                    message: "Message Sent".into(),
                    group,
                    id: stored.message.id.to_string(),
                    seq: stored.seq,
                },
                out,
            ),
            Err(e) => {
                error!(error = %e, "cannot store a group message");
                reply::encode_error(STORAGE_FAILED, out);
            }
        }
    }

    /// The member's membership, or the ERROR appended.
    fn require_member(&self, group: &str, user: &str, out: &mut Vec<u8>) -> Option<i64> {
        if !self.groups.exists(group) {
            reply::encode_error(
                format_args!(
                    "no group {group:?} on realm {}; `group` creates one",
                    self.options.name
                ),
                out,
            );
            return None;
        }
        let Some(m) = self.groups.membership(group, user) else {
            reply::encode_error(
                format_args!("you are not a member of {group:?}; join with: group TOKEN {group}"),
                out,
            );
            return None;
        };
        Some(m.read_seq)
    }

    pub(super) async fn inboxgroup(
        &self,
        conn: &mut ConnState,
        token: &str,
        group: &Address,
        out: &mut Vec<u8>,
    ) -> Option<Delivery> {
        let user = self.resolve(conn, token, out).await?;
        let group = self.group_name(group, out)?;
        self.require_member(&group, &user, out)?;
        let key = lease_key(&user, &group);
        let read_seq = {
            let mut leases = lock(&self.leases);
            // A live session is handed every message after its start; an inboxgroup beside it
            // would hand some of them twice.
            let Some(membership) = self.groups.membership(&group, &user) else {
                // Left on another connection since the check above.
                drop(leases);
                return self.require_member(&group, &user, out).and(None);
            };
            if membership.live > 0 {
                drop(leases);
                reply::encode_error(
                    format_args!(
                        "you have a live session open on {group:?} and its messages go there; \
                         use inboxgroup once it has ended"
                    ),
                    out,
                );
                return None;
            }
            // The cursor is read under the lease, after any other inboxgroup moved it.
            leases.insert(key.clone()).then_some(membership.read_seq)
        };
        let Some(read_seq) = read_seq else {
            // Another connection of this member is being handed these very messages right now.
            reply::encode(
                &InboxGroupOk {
                    status: Status::Ok,
                    group,
                    messages: Vec::new(),
                    more: false,
                },
                out,
            );
            return None;
        };
        let mut delivery = Delivery {
            recipient: key,
            upto_seq: 0,
            leases: Arc::clone(&self.leases),
            group: Some((group.clone(), user.clone())),
        };
        let limit = self.options.inbox_max_messages.max(1);
        let pending = match self.store.group_messages(&group, read_seq, limit + 1).await {
            Ok(p) => p,
            Err(e) => {
                error!(error = %e, "cannot read a group inbox");
                reply::encode_error(STORAGE_FAILED, out);
                return None;
            }
        };
        let mut reply = InboxGroupOk {
            status: Status::Ok,
            group,
            messages: Vec::new(),
            more: false,
        };
        let mut bytes = 0;
        for (i, m) in pending.iter().enumerate() {
            if i == limit || (i > 0 && bytes + m.message.body.len() > self.options.inbox_max_bytes)
            {
                reply.more = true;
                break;
            }
            bytes += m.message.body.len();
            delivery.upto_seq = m.seq;
            reply.messages.push(wire_group_message(m));
        }
        reply::encode(&reply, out);
        (delivery.upto_seq > 0).then_some(delivery)
    }

    pub(super) async fn groups_cmd(&self, conn: &mut ConnState, token: &str, out: &mut Vec<u8>) {
        let Some(user) = self.resolve(conn, token, out).await else {
            return;
        };
        let groups = self
            .groups
            .list(&user)
            .into_iter()
            .map(|(name, members, member)| GroupEntry {
                name,
                members,
                member,
            })
            .collect();
        reply::encode(
            &GroupsOk {
                status: Status::Ok,
                groups,
            },
            out,
        );
    }

    pub(super) async fn members_cmd(
        &self,
        conn: &mut ConnState,
        token: &str,
        group: &Address,
        out: &mut Vec<u8>,
    ) {
        if self.resolve(conn, token, out).await.is_none() {
            return;
        }
        let Some(group) = self.group_name(group, out) else {
            return;
        };
        let Some(list) = self.groups.members(&group) else {
            reply::encode_error(
                format_args!(
                    "no group {group:?} on realm {}; `group` creates one",
                    self.options.name
                ),
                out,
            );
            return;
        };
        let members = list
            .into_iter()
            .map(|(name, live)| MemberEntry {
                display_name: self
                    .user(&name)
                    .map_or_else(|| name.clone(), |u| u.display_name),
                name,
                live,
            })
            .collect();
        reply::encode(
            &MembersOk {
                status: Status::Ok,
                group,
                members,
            },
            out,
        );
    }

    pub(super) async fn leave_cmd(
        &self,
        conn: &mut ConnState,
        token: &str,
        group: &Address,
        out: &mut Vec<u8>,
    ) {
        let Some(user) = self.resolve(conn, token, out).await else {
            return;
        };
        let Some(group) = self.group_name(group, out) else {
            return;
        };
        if self.require_member(&group, &user, out).is_none() {
            return;
        }
        if let Err(e) = self.store.leave_group(&group, &user).await {
            error!(error = %e, "cannot store a group leave");
            reply::encode_error(STORAGE_FAILED, out);
            return;
        }
        let change = self.member_change(&group, &user);
        if self.groups.left(&group, &user) {
            self.groups.publish_presence(change, true);
        }
        reply::encode_ok(&format!("Left group {group}"), out);
    }

    /// `history TOKEN GROUP [N]` for a group the user is a member of.
    pub(super) async fn group_history(&self, user: &str, group: &str, n: usize, out: &mut Vec<u8>) {
        if self.require_member(group, user, out).is_none() {
            return;
        }
        match self.store.group_history(group, n).await {
            Ok(msgs) => reply::encode(
                &GroupHistoryOk {
                    status: Status::Ok,
                    group: group.to_owned(),
                    messages: msgs.iter().map(wire_group_message).collect(),
                },
                out,
            ),
            Err(e) => {
                error!(error = %e, "cannot read a group's history");
                reply::encode_error(STORAGE_FAILED, out);
            }
        }
    }
}
