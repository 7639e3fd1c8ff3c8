//! [`FederationStore`]: what the links to peer realms keep durably: the outbox, its settlement,
//! de-duplicated receipt, the feeds of groups homed here and the replicas of groups homed on
//! peers. `docs/federation.md` states the guarantees; `docs/design/storage.md` how the backends
//! keep them.

use std::collections::{HashMap, HashSet};
use std::future::Future;

use super::error::StoreResult;
use super::groups::{Published, StoredGroupMessage};
use super::messages::{NewMessage, StoredMessage};

/// What an outgoing message is: a private message to `user@peer`, or a post of one of our users
/// to a group homed on the peer (its recipient is the group's address here, `group@peer`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageKind {
    /// A private message.
    Private,
    /// A post to a group homed on the peer.
    GroupPost,
}

/// An outbox entry, as the link sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// The message and its place in the outbox's order.
    pub stored: StoredMessage,
    /// Private message or group post.
    pub kind: MessageKind,
}

/// An outbox message the peer answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settled {
    /// Its `seq` in the outbox.
    pub seq: i64,
    /// Its id.
    pub id: uuid::Uuid,
    /// For a bounced message: the notice for its sender.
    pub bounce: Option<NewMessage>,
}

/// Where a group's feed to a peer (or a replica) stands: every message up to `seq` is committed
/// on the receiving side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupCursor {
    /// The group (as this realm names it).
    pub group: String,
    /// The highest `seq` acknowledged.
    pub seq: i64,
}

/// What storing a batch of a replica's messages came to.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReplicaOutcome {
    /// Each replica kept here that a message was for, with its latest `seq` after the commit:
    /// every message up to it is committed, so that is what to acknowledge.
    pub acks: Vec<GroupCursor>,
    /// The first refused message's reason (a gap, a post forged in one of our users' names, an
    /// id reused): the link ends, and the home resends from what was acknowledged.
    pub refused: Option<String>,
    /// Replicas this realm does not keep (no local member, no join under way): their messages
    /// were ignored and are not acknowledged.
    pub ignored: Vec<String>,
}

/// The rules a home realm's feed must keep, applied by every store as it stores a batch of
/// replica messages (`FederationStore::store_replica`), so that they are written once: a message
/// is stored only if its `seq` is exactly its replica's last + 1 (at or below it: a resend,
/// skipped; above it: a gap, refused with everything after it in that replica), only into a
/// replica this realm keeps, and one attributed to one of our users only if that user posted it.
///
/// The store asks, per message: [`Self::knows`] (else it looks up where the replica stands and
/// says [`Self::start`]), [`Self::wants`], then, for [`is_ours`], whether it relayed that post
/// ([`Self::misattributed`] if not), then stores it ([`Self::id_reused`] if its id is taken,
/// else [`Self::stored`]). [`Self::finish`] gives the outcome, whose acks are each replica's new
/// last `seq` for the store to record.
#[derive(Debug, Default)]
pub struct ReplicaFeed {
    /// Each replica's last seq (`None`: not kept here) and whether it refused one, in the order
    /// they first appear.
    replicas: Vec<(String, Option<i64>, bool)>,
    index: HashMap<String, usize>,
    refused: Option<String>,
}

/// Whether a replica message is attributed to one of this realm's users (a sender without
/// `@`): the store must check that the user posted it.
pub fn is_ours(m: &StoredGroupMessage) -> bool {
    !m.message.sender.contains('@')
}

impl ReplicaFeed {
    /// A feed for one batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether `group`'s replica was looked up in this batch.
    pub fn knows(&self, group: &str) -> bool {
        self.index.contains_key(group)
    }

    /// Where `group`'s replica stands: its last `seq`, or `None` if this realm does not keep it.
    pub fn start(&mut self, group: &str, last: Option<i64>) {
        self.index.insert(group.to_owned(), self.replicas.len());
        self.replicas.push((group.to_owned(), last, false));
    }

    /// Whether `m` is to be stored next; refuses its replica at a gap.
    pub fn wants(&mut self, m: &StoredGroupMessage) -> bool {
        let Some(&i) = self.index.get(&m.message.group) else {
            return false;
        };
        let (group, last, refused) = &mut self.replicas[i];
        let Some(last) = *last else { return false };
        if *refused || m.seq <= last {
            return false;
        }
        if m.seq > last + 1 {
            *refused = true;
            self.refused.get_or_insert(format!(
                "a gap in the feed of {group}: seq {} follows {last}",
                m.seq
            ));
            return false;
        }
        true
    }

    /// `m`, attributed by `home` to one of our users, is not a post of theirs: its replica
    /// refuses it and all after it.
    pub fn misattributed(&mut self, home: &str, m: &StoredGroupMessage) {
        self.refuse(
            m,
            format!(
                "{home} attributed a message to our user {} in {} (seq {}, id {}) that they never \
                 posted there",
                m.message.sender, m.message.group, m.seq, m.message.id
            ),
        );
    }

    /// `m`'s id is already a stored message's: its replica refuses it and all after it.
    pub fn id_reused(&mut self, m: &StoredGroupMessage) {
        self.refuse(
            m,
            format!(
                "message {} of {} (seq {}) reuses the id of a stored message",
                m.message.id, m.message.group, m.seq
            ),
        );
    }

    /// `m` is stored: its replica's last `seq` moves to it.
    pub fn stored(&mut self, m: &StoredGroupMessage) {
        if let Some(&i) = self.index.get(&m.message.group) {
            self.replicas[i].1 = Some(m.seq);
        }
    }

    fn refuse(&mut self, m: &StoredGroupMessage, why: String) {
        if let Some(&i) = self.index.get(&m.message.group) {
            self.replicas[i].2 = true;
        }
        self.refused.get_or_insert(why);
    }

    /// What the batch came to: each kept replica's last `seq` to record and acknowledge, the
    /// first refusal, and the replicas not kept here.
    pub fn finish(self) -> ReplicaOutcome {
        let mut out = ReplicaOutcome {
            refused: self.refused,
            ..ReplicaOutcome::default()
        };
        for (group, last, _) in self.replicas {
            match last {
                Some(seq) => out.acks.push(GroupCursor { group, seq }),
                None => out.ignored.push(group),
            }
        }
        out
    }
}

/// Durable state of a realm's federation. Every write returns only once committed: a link
/// acknowledges, and `send` answers OK, on that promise.
pub trait FederationStore: Send + Sync + 'static {
    /// Commits outgoing messages of one `kind` to `peer`'s outbox, in order, all or none (a
    /// failure undoes only these, not other callers' work); returns them with their outbox `seq`s,
    /// which increase in commit order. A private message is also kept in the sender's history;
    /// a group post is remembered until the home's feed brings it back ([`Self::store_replica`])
    /// or bounces it ([`Self::settle`]).
    fn enqueue(
        &self,
        peer: &str,
        kind: MessageKind,
        messages: Vec<NewMessage>,
    ) -> impl Future<Output = StoreResult<Vec<StoredMessage>>> + Send;

    /// The oldest `limit` outbox messages for `peer` with `seq` > `after`, in commit order.
    fn outbox_after(
        &self,
        peer: &str,
        after: i64,
        limit: usize,
    ) -> impl Future<Output = StoreResult<Vec<Outgoing>>> + Send;

    /// Messages waiting in each peer's outbox.
    fn outbox_counts(&self) -> impl Future<Output = StoreResult<HashMap<String, u64>>> + Send;

    /// Removes answered messages from `peer`'s outbox. For a bounced one whose outbox row was
    /// still there, writes its bounce notice to the sender's inbox in the same commit and forgets
    /// it as a relayed post: settling the same message twice (after a reconnect) writes nothing
    /// the second time.
    fn settle(
        &self,
        peer: &str,
        settled: Vec<Settled>,
    ) -> impl Future<Output = StoreResult<()>> + Send;

    /// Commits incoming messages to their recipients' inboxes; a message whose id is stored
    /// already is a retry and is skipped. Returns how many were new, once committed.
    fn receive(&self, messages: Vec<NewMessage>)
    -> impl Future<Output = StoreResult<usize>> + Send;

    /// Starts feeding `group` (homed here) to `peer` from `from_seq`, unless it is fed already.
    fn open_feed(
        &self,
        peer: &str,
        group: &str,
        from_seq: i64,
    ) -> impl Future<Output = StoreResult<()>> + Send;

    /// Where each group's feed to `peer` stands.
    fn feeds(&self, peer: &str) -> impl Future<Output = StoreResult<Vec<GroupCursor>>> + Send;

    /// Moves feed cursors of `peer` forward (never back); returns once committed.
    fn ack_feeds(
        &self,
        peer: &str,
        acked: Vec<GroupCursor>,
    ) -> impl Future<Output = StoreResult<()>> + Send;

    /// Makes `user` a member of the replica `group` (homed on `home`) with read cursor
    /// `read_seq`, creating the replica, which then starts at `read_seq` (the home's latest `seq`
    /// at the join: its next message must be the one after); whether they were not a member yet,
    /// once committed.
    fn join_replica(
        &self,
        group: &str,
        home: &str,
        user: &str,
        read_seq: i64,
    ) -> impl Future<Output = StoreResult<bool>> + Send;

    /// Stores messages of replicas of groups homed on `home` (each named `group@home`, in the
    /// order the home sent them), in one commit, gap-free: a message is stored only if its `seq`
    /// is exactly its replica's last + 1 (one at or below is a resend, skipped; one above is a
    /// gap, refused with everything after it in that replica); only into a replica this realm
    /// keeps (one a member joined, or, while a join to it is under way (`joining`), one its first
    /// message creates); and one attributed to one of our users (a sender without `@`) only if it
    /// is that user's own post to that group with the same text, still remembered from
    /// [`Self::enqueue`]. Runs `published` for each new message after the commit, in order.
    fn store_replica(
        &self,
        home: &str,
        messages: Vec<StoredGroupMessage>,
        joining: HashSet<String>,
        published: Published,
    ) -> impl Future<Output = StoreResult<ReplicaOutcome>> + Send;
}
