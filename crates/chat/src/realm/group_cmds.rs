//! The group commands of a [`Realm`]: `group`, `sendgroup`, `inboxgroup`, `groups`, `members`,
//! `leave`, and `history` of a group.

use std::sync::Arc;

use jaring_proto::chat::Address;
use jaring_proto::chat::classic;
use jaring_proto::chat::event::{Event, GroupMessage, MemberChange};
use jaring_proto::chat::group::Group;
use jaring_proto::chat::group_reply::{
    GroupEntry, GroupHistoryOk, GroupSent, GroupsOk, InboxGroupOk, Joined, MemberEntry, MembersOk,
};
use jaring_proto::chat::reply::{self, Status};
use jaring_proto::chat::sendgroup::SendGroup;
use tracing::error;

use super::{
    ConnState, Delivery, Realm, STORAGE_FAILED, encode_name_page, encode_seq_page, lock, size_page,
    unix_ms,
};
use crate::groups::{Hub, NotSubscribed, Subscription};
use crate::remote::Lookup;
use crate::storage::{JoinOutcome, NewGroupMessage, ReadCursor, StoredGroupMessage};
use crate::storage::{NewMessage, Store, StoreError, Window};

/// Where a group address leads.
enum GroupRef {
    /// A group homed here: its name.
    Local(String),
    /// A group homed on a peer: its replica here (`name@realm`), the realm, the name there.
    Remote {
        replica: String,
        realm: String,
        name: String,
    },
}

impl GroupRef {
    /// The group's name in this realm's store and hub.
    fn here(&self) -> &str {
        match self {
            Self::Local(n) => n,
            Self::Remote { replica, .. } => replica,
        }
    }
}

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
    /// Whether the session speaks the classic client's raw-text group mode
    /// ([`jaring_proto::chat::classic`]) rather than JSON events.
    pub classic: bool,
    hub: Arc<Hub>,
    closed: bool,
    ended: bool,
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

    /// Ends the session in the hub now (as dropping it does): the member may start another live
    /// session, which starts from the member's cursor, so advance it first.
    pub fn end(&mut self) {
        self.close();
        if !std::mem::replace(&mut self.ended, true) {
            self.hub.unsubscribe(&self.group, &self.user);
        }
    }
}

impl Drop for LiveSession {
    fn drop(&mut self) {
        self.end();
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

    /// Where a group address leads, or the ERROR appended. `name@<this realm>` is a group homed
    /// here and `name@peer` the group homed on that peer. A bare name is the group of this realm
    /// if there is one; else the replica of a peer's group this realm keeps already, if exactly one
    /// peer's; else the peers are asked: exactly one homes it → that one; several → ERROR naming
    /// them; none (or none that could be asked) → a group of this realm, created on first join.
    async fn group_ref(&self, addr: &Address, out: &mut Vec<u8>) -> Option<GroupRef> {
        let remote_ref = |name: &str, realm: &str| GroupRef::Remote {
            replica: format!("{name}@{realm}"),
            realm: realm.to_owned(),
            name: name.to_owned(),
        };
        let remote = self.remote.get();
        if let Some(realm) = addr.realm.as_deref()
            && realm != self.options.name
            && let Some(remote) = remote
        {
            let peers = remote.peer_names();
            if !peers.iter().any(|p| p == realm) {
                reply::encode_error(
                    format_args!(
                        "no link to realm {realm:?}: this realm ({}) links to {}",
                        self.options.name,
                        peers.join(", ")
                    ),
                    out,
                );
                return None;
            }
            return Some(remote_ref(&addr.name, realm));
        }
        if self.refuse_foreign(addr, out) {
            return None;
        }
        let name = &addr.name;
        let (Some(remote), None) = (remote, &addr.realm) else {
            return Some(GroupRef::Local(name.clone()));
        };
        if self.groups.exists(name) {
            return Some(GroupRef::Local(name.clone()));
        }
        if let Some(replica) = self.kept_replica(name) {
            let (_, realm) = replica.split_once('@')?;
            return Some(remote_ref(name, realm));
        }
        let peers = remote.peer_names();
        let mut found = Vec::new();
        for realm in &peers {
            // A peer that cannot be asked counts as not having it: creating a group must not wait
            // for a peer to come back.
            if let Lookup::Found(_) = remote.group_lookup(realm, name).await {
                found.push(format!("{name}@{realm}"));
            }
        }
        match found.len() {
            0 => Some(GroupRef::Local(name.clone())),
            1 => {
                let (_, realm) = found[0].split_once('@')?;
                Some(remote_ref(name, realm))
            }
            _ => {
                reply::encode_error(
                    format_args!(
                        "{name:?} is a group on several realms; say which: {}",
                        found.join(" or ")
                    ),
                    out,
                );
                None
            }
        }
    }

    /// The replica `name@peer` this realm keeps of a peer's group `name`, if it keeps exactly one
    /// (and `name` is not a group of this realm).
    pub(super) fn kept_replica(&self, name: &str) -> Option<String> {
        let remote = self.remote.get()?;
        if self.groups.exists(name) {
            return None;
        }
        let mut kept = remote
            .peer_names()
            .into_iter()
            .map(|p| format!("{name}@{p}"))
            .filter(|g| self.groups.exists(g));
        let first = kept.next()?;
        kept.next().is_none().then_some(first)
    }

    /// The name under which a group address is stored here, or the ERROR appended.
    async fn group_name(&self, addr: &Address, out: &mut Vec<u8>) -> Option<String> {
        self.group_ref(addr, out).await.map(|g| g.here().to_owned())
    }

    /// Makes `user` (a user of this realm, or `user@peer`) a member of the group homed here
    /// (creating it on first join); pushes the join. The error says why not.
    async fn join_member(&self, group: &str, user: &str) -> Result<JoinOutcome, String> {
        let mut slot = None;
        if !self.groups.exists(group) {
            if self.user(group).is_some() {
                return Err(format!(
                    "{group:?} is a user of realm {}; pick another group name",
                    self.options.name
                ));
            }
            let max = self.options.groups_per_user;
            slot = Some(self.groups.reserve_creation(user, max).map_err(|n| {
                format!(
                    "no group {group:?} on realm {}, and you cannot create it: you created {n} \
                     groups, the most one user may (groups_per_user = {max}); join an existing \
                     group instead",
                    self.options.name
                )
            })?);
        }
        let outcome = self
            .store
            .join_group(group, &self.options.name, user)
            .await
            .map_err(|e| {
                error!(error = %e, "cannot store a group membership");
                STORAGE_FAILED.to_owned()
            })?;
        // Kept only if this join made the group; else (another join made it first) given back.
        if let Some(slot) = slot.filter(|_| outcome.created) {
            slot.keep();
        }
        if self.groups.joined(group, user, outcome.read_seq) && outcome.new_member {
            self.groups
                .publish_presence(self.member_change(group, user), false);
        }
        Ok(outcome)
    }

    /// A peer's user (`user@peer`) joins the group `group` homed here.
    pub async fn join_for_peer(&self, group: &str, member: &str) -> Result<JoinOutcome, String> {
        self.join_member(group, member).await
    }

    /// The members of the group `group` homed here, for a peer: (address, display name, live).
    pub fn members_for_peer(
        &self,
        group: &str,
    ) -> Option<Vec<jaring_proto::federation::GroupMember>> {
        let list = self.groups.members(group)?;
        Some(
            list.into_iter()
                .map(|(name, live)| jaring_proto::federation::GroupMember {
                    display: self
                        .user(&name)
                        .map_or_else(|| name.clone(), |u| u.display_name),
                    name,
                    live,
                })
                .collect(),
        )
    }

    /// A peer's user (`user@peer`) leaves the group `group` homed here (done already is fine: a
    /// retried leave whose answer was lost).
    pub async fn leave_for_peer(&self, group: &str, member: &str) -> Result<(), String> {
        if !self.groups.exists(group) {
            return Err(format!("no group {group:?} on realm {}", self.options.name));
        }
        if self.groups.membership(group, member).is_none() {
            return Ok(());
        }
        self.leave_member(group, member).await
    }

    /// Ends a membership in storage, then in the hub; pushes the leave.
    async fn leave_member(&self, group: &str, user: &str) -> Result<(), String> {
        if let Err(e) = self.store.leave_group(group, user).await {
            error!(error = %e, "cannot store a group leave");
            return Err(STORAGE_FAILED.to_owned());
        }
        let change = self.member_change(group, user);
        if self.groups.left(group, user) {
            self.groups.publish_presence(change, true);
        }
        Ok(())
    }

    /// Stores group messages relayed by a peer realm (posts of its users to groups homed here), in
    /// order, in one commit; a message whose id is stored already is a retry and is skipped.
    pub async fn post_relayed(
        &self,
        messages: Vec<NewGroupMessage>,
    ) -> Result<Vec<StoredGroupMessage>, StoreError> {
        let hub = Arc::clone(&self.groups);
        self.store
            .insert_group_messages(messages, Box::new(move |m| hub.publish_message(m)))
            .await
    }

    /// Makes `user` a member of the group (creating a local group on first join, asking the home
    /// realm of a remote one); pushes the join. The ERROR is appended on failure. Returns
    /// (created, new_member).
    async fn ensure_member(
        &self,
        group: &GroupRef,
        user: &str,
        out: &mut Vec<u8>,
    ) -> Option<(bool, bool)> {
        if self.groups.membership(group.here(), user).is_some() {
            return Some((false, false));
        }
        let joined = match group {
            GroupRef::Local(name) => self
                .join_member(name, user)
                .await
                .map(|o| (o.created, o.new_member)),
            GroupRef::Remote {
                replica,
                realm,
                name,
            } => match self.remote.get() {
                Some(remote) => remote.group_join(realm, name, user).await.map(|j| {
                    if self.groups.joined(replica, user, j.read_seq) && j.new_member {
                        self.groups
                            .publish_presence(self.member_change(replica, user), false);
                    }
                    (j.created, j.new_member)
                }),
                None => Err(format!("no link to realm {realm:?}")),
            },
        };
        match joined {
            Ok(j) => Some(j),
            Err(e) => {
                reply::encode_error(e, out);
                None
            }
        }
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

    /// `group TOKEN NAME [ORIGIN]`: join and start a live session (with ORIGIN, a classic one).
    pub(super) async fn group_join(
        &self,
        conn: &mut ConnState,
        c: Group,
        out: &mut Vec<u8>,
    ) -> Option<LiveSession> {
        let user = self.resolve(conn, &c.token, out).await?;
        let target = self.group_ref(&c.group, out).await?;
        let (created, new_member) = self.ensure_member(&target, &user, out).await?;
        let group = target.here().to_owned();
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
        let subscription = match subscription {
            Ok(s) => s,
            Err(NotSubscribed::NotMember) => {
                // Left on another connection in between.
                reply::encode_error(
                    format_args!("you are not a member of {group:?}; join it again"),
                    out,
                );
                return None;
            }
            Err(NotSubscribed::AlreadyLive) => {
                // Both sessions would be handed every message: the member would get each twice.
                reply::encode_error(
                    format_args!(
                        "you have a live session open on {group:?} on another connection; \
                         send exit there first (one live session per member and group)"
                    ),
                    out,
                );
                return None;
            }
        };
        let classic = c.is_classic();
        if classic {
            // The classic client's group mode has no JSON OK: its server's first words were the
            // joiner's own `<user> telah bergabung`.
            classic::render_event(
                &Event::Join(MemberChange {
                    group: group.clone(),
                    user: user.clone(),
                    display_name: user.clone(),
                }),
                out,
            );
        } else {
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
        }
        Some(LiveSession {
            group,
            user,
            subscription,
            classic,
            hub: Arc::clone(&self.groups),
            closed: false,
            ended: false,
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
        if let Some((_, realm)) = group.split_once('@') {
            return self
                .post_remote(group, realm, user, &sender_display, bodies)
                .await;
        }
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

    /// Posts to the replica `group` of a group homed on `realm`: committed to the outbox for the
    /// home realm, which orders it; it comes back with its `seq` through the group's feed. The
    /// messages returned carry `seq` 0 (not ordered yet).
    async fn post_remote(
        &self,
        group: &str,
        realm: &str,
        user: &str,
        sender_display: &str,
        bodies: Vec<String>,
    ) -> Result<Vec<StoredGroupMessage>, StoreError> {
        let Some(remote) = self.remote.get() else {
            return Err(StoreError::Stopped);
        };
        let messages = bodies
            .into_iter()
            .map(|body| NewMessage {
                id: uuid::Uuid::now_v7(),
                sender: user.to_owned(),
                sender_display: sender_display.to_owned(),
                recipient: group.to_owned(),
                recipient_display: group.to_owned(),
                body,
                sent_at: unix_ms(),
            })
            .collect();
        let stored = remote.group_post(realm, messages).await?;
        Ok(stored
            .into_iter()
            .map(|m| StoredGroupMessage {
                seq: 0,
                message: NewGroupMessage {
                    id: m.message.id,
                    group: group.to_owned(),
                    sender: m.message.sender,
                    sender_display: m.message.sender_display,
                    body: m.message.body,
                    sent_at: m.message.sent_at,
                },
            })
            .collect())
    }

    /// Moves a member's read cursor forward in memory now and in storage when `persist`.
    pub async fn advance_cursor(&self, group: &str, user: &str, seq: i64, persist: bool) {
        self.groups.advance(group, user, seq);
        if persist
            && let Err(e) = self
                .store
                .advance_cursors(vec![ReadCursor {
                    group: group.to_owned(),
                    user: user.to_owned(),
                    seq,
                }])
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
        let Some(target) = self.group_ref(&c.group, out).await else {
            return;
        };
        if self.ensure_member(&target, &user, out).await.is_none() {
            return;
        }
        let group = target.here().to_owned();
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
        if !self.groups.exists(group) && group.contains('@') {
            reply::encode_error(
                format_args!("you are not a member of {group:?}; join with: group TOKEN {group}"),
                out,
            );
            return None;
        }
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
        since: Option<i64>,
        out: &mut Vec<u8>,
    ) -> Option<Delivery> {
        let user = self.resolve(conn, token, out).await?;
        let group = self.group_name(group, out).await?;
        let read_seq = self.require_member(&group, &user, out)?;
        if let Some(since) = since.filter(|s| *s > read_seq) {
            self.advance_cursor(&group, &user, since, true).await;
        }
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
        // One more than a reply carries, to tell whether more wait.
        let page = match self
            .store
            .group_messages(&group, read_seq, limit + 1, self.options.inbox_max_bytes)
            .await
        {
            Ok(p) => p,
            Err(e) => {
                error!(error = %e, "cannot read a group inbox");
                reply::encode_error(STORAGE_FAILED, out);
                return None;
            }
        };
        let pending = page.messages;
        let wire: Vec<_> = pending.iter().take(limit).map(wire_group_message).collect();
        let more = page.cut || wire.len() < pending.len();
        let sent = reply::encode_fitting(
            wire.len(),
            self.options.max_reply_bytes,
            |k| InboxGroupOk {
                status: Status::Ok,
                group: group.clone(),
                messages: wire[..k].to_vec(),
                more: more || k < wire.len(),
            },
            out,
        );
        delivery.upto_seq = pending[..sent].last()?.seq;
        Some(delivery)
    }

    pub(super) async fn groups_cmd(
        &self,
        conn: &mut ConnState,
        token: &str,
        after: Option<&str>,
        out: &mut Vec<u8>,
    ) {
        let Some(user) = self.resolve(conn, token, out).await else {
            return;
        };
        let (page, left_out) = size_page(
            self.groups
                .list(&user, after)
                .into_iter()
                .map(|(name, members, member)| GroupEntry {
                    name,
                    members,
                    member,
                }),
            self.options.max_reply_bytes,
            |g| g.name.len(),
        );
        encode_name_page(
            &page,
            left_out,
            self.options.max_reply_bytes,
            |g| &g.name,
            |groups, more, next| GroupsOk {
                status: Status::Ok,
                groups,
                more,
                next,
            },
            out,
        );
    }

    pub(super) async fn members_cmd(
        &self,
        conn: &mut ConnState,
        token: &str,
        group: &Address,
        after: Option<&str>,
        out: &mut Vec<u8>,
    ) {
        if self.resolve(conn, token, out).await.is_none() {
            return;
        }
        let Some(target) = self.group_ref(group, out).await else {
            return;
        };
        let group = target.here().to_owned();
        let local = self.groups.members(&group);
        let mut more = false;
        // A group homed elsewhere: everyone, as its home lists them (live there, or live here).
        let home = match (&target, self.remote.get()) {
            (GroupRef::Remote { realm, name, .. }, Some(remote)) => {
                remote.group_members(realm, name).await.ok()
            }
            _ => None,
        };
        let members: Vec<MemberEntry> = if let Some((list, cut)) = home {
            more = cut;
            let live_here: std::collections::HashSet<&str> = local
                .iter()
                .flatten()
                .filter(|(_, live)| *live)
                .map(|(n, _)| n.as_str())
                .collect();
            let mut members: Vec<MemberEntry> = list
                .into_iter()
                .map(|(name, display_name, live)| MemberEntry {
                    live: live || live_here.contains(name.as_str()),
                    display_name,
                    name,
                })
                .collect();
            members.sort_unstable_by(|a, b| a.name.cmp(&b.name));
            members
        } else if let Some(list) = local {
            // This realm's own list (the home could not be asked: this realm's members only).
            list.into_iter()
                .map(|(name, live)| MemberEntry {
                    display_name: self
                        .user(&name)
                        .map_or_else(|| name.clone(), |u| u.display_name),
                    name,
                    live,
                })
                .collect()
        } else {
            reply::encode_error(
                format_args!(
                    "no group {group:?} on realm {}; `group` creates one",
                    self.options.name
                ),
                out,
            );
            return;
        };
        // A peer's list is its first answer already (`more` says whether it was cut); this
        // realm's own list pages by name.
        let remote_cut = more;
        let (page, left_out) = size_page(
            members
                .into_iter()
                .filter(|m| remote_cut || after.is_none_or(|a| m.name.as_str() > a)),
            self.options.max_reply_bytes,
            |m| m.name.len() + m.display_name.len(),
        );
        encode_name_page(
            &page,
            left_out || remote_cut,
            self.options.max_reply_bytes,
            |m| &m.name,
            |members, more, next| MembersOk {
                status: Status::Ok,
                group: group.clone(),
                members,
                more,
                next: next.filter(|_| !remote_cut),
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
        let Some(target) = self.group_ref(group, out).await else {
            return;
        };
        let group = target.here().to_owned();
        if self.require_member(&group, &user, out).is_none() {
            return;
        }
        if let GroupRef::Remote { realm, name, .. } = &target {
            // The home realm first: a leave it did not hear of would keep feeding us.
            let left = match self.remote.get() {
                Some(remote) => remote.group_leave(realm, name, &user).await,
                None => Err(format!("no link to realm {realm:?}")),
            };
            if let Err(e) = left {
                reply::encode_error(e, out);
                return;
            }
        }
        if let Err(e) = self.leave_member(&group, &user).await {
            reply::encode_error(e, out);
            return;
        }
        reply::encode_ok(&format!("Left group {group}"), out);
    }

    /// `history TOKEN GROUP [N [BEFORE]]` for a group the user is a member of.
    pub(super) async fn group_history(
        &self,
        user: &str,
        group: &str,
        window: Window,
        out: &mut Vec<u8>,
    ) {
        if self.require_member(group, user, out).is_none() {
            return;
        }
        match self.store.group_history(group, window).await {
            Ok(page) => {
                let wire: Vec<_> = page.messages.iter().map(wire_group_message).collect();
                encode_seq_page(
                    &wire,
                    |i| page.messages[i].seq,
                    page.cut,
                    self.options.max_reply_bytes,
                    |messages, more, next| GroupHistoryOk {
                        status: Status::Ok,
                        group: group.to_owned(),
                        messages,
                        more,
                        next,
                    },
                    out,
                );
            }
            Err(e) => {
                error!(error = %e, "cannot read a group's history");
                reply::encode_error(STORAGE_FAILED, out);
            }
        }
    }
}
