//! [`MemoryStore`]: every storage trait in memory, with the SQLite store's semantics and none of
//! its durability. For tests (the realm's logic without SQLite, Argon2 or TCP) and
//! `--storage memory` demos: everything is lost when the last clone is dropped, and nothing is
//! ever forgotten before that (delivered messages stay in history, as in any backend), so it is
//! no store for a long-running realm.
//!
//! One mutex holds the whole state: a call takes it once, does all its work ("commits"), and lets
//! it go; so every call is atomic and calls are in one order, the order of their commits, as with
//! the SQLite writer's transactions. Group messages are published after that commit, outside the
//! state lock but under a second one taken before the state lock is released (see its `publish`),
//! so each group's publications follow its `seq` order even when callers race.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use uuid::Uuid;

use super::error::{StoreError, StoreResult};
use super::federation::{
    FederationStore, GroupCursor, MessageKind, Outgoing, ReplicaFeed, ReplicaOutcome, Settled,
    is_ours,
};
use super::groups::{
    GroupRecord, GroupStore, JoinOutcome, MemberRecord, NewGroupMessage, Published, ReadCursor,
    StoredGroupMessage,
};
use super::messages::{
    NewMessage, Store, StoredMessage, TokenRecord, UserRecord, conversation_key,
};
use super::users::{BenchPurge, UserAdmin};
use super::window::{Page, Window, WindowTaker};

/// A store that keeps everything in memory. Cloning shares it.
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    shared: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    /// Held from a commit that stored group messages until they are all published: taken while
    /// the state lock is still held, so publishers run one at a time in commit order (which is
    /// each group's `seq` order), without the state lock held across the realm's callbacks.
    publishing: Mutex<()>,
}

#[derive(Debug)]
struct Group {
    home: String,
    last_seq: i64,
    creator: Option<String>,
    messages: BTreeMap<i64, StoredGroupMessage>,
}

#[derive(Debug, Default)]
struct State {
    /// The latest message `seq` handed out (shared by local, incoming, outgoing and bounces, as
    /// SQLite's `messages` table numbers them all).
    last_seq: i64,
    /// Every private message (and outgoing group post), by `seq`.
    messages: BTreeMap<i64, Arc<StoredMessage>>,
    /// Each conversation's message `seq`s, ascending: a private message's under its
    /// [`conversation_key`], an outgoing group post's under its group's address.
    conversations: HashMap<String, Vec<i64>>,
    /// Each recipient's messages for a local inbox (not those on their way to another realm),
    /// ascending, from just past their delivery cursor.
    inboxes: HashMap<String, Vec<i64>>,
    /// Each recipient's delivery cursor.
    delivered: HashMap<String, i64>,
    /// Ids of every message a federation call stored (incoming, outgoing, bounces).
    federated_ids: HashSet<Uuid>,
    /// Each peer's outbox: `seq` → kind. A peer with nothing waiting has no entry.
    outbox: BTreeMap<String, BTreeMap<i64, MessageKind>>,
    /// Our users' posts to groups homed on peers, by id → `seq` of the outgoing message, until
    /// the home's feed brings them back or bounces them.
    relayed_posts: HashMap<Uuid, i64>,
    users: BTreeMap<String, UserRecord>,
    tokens: HashMap<[u8; 32], String>,
    groups: BTreeMap<String, Group>,
    /// Ids of every stored group message, in any group.
    group_ids: HashSet<Uuid>,
    /// (group, user) → read cursor.
    members: BTreeMap<(String, String), i64>,
    /// (peer, group) → acknowledged `seq`.
    feeds: BTreeMap<(String, String), i64>,
}

impl MemoryStore {
    /// A new, empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while the lock was held left no half-done call behind that the next one could
        // trip on (every call checks before it changes anything), so carry on.
        self.shared
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Publishes `stored` in order once their commit (under `state`) is done. The publishing
    /// lock is taken before `state` is released, so the next commit's messages wait for these.
    fn publish(
        &self,
        state: MutexGuard<'_, State>,
        stored: &[StoredGroupMessage],
        published: Published,
    ) {
        let order = self
            .shared
            .publishing
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        drop(state);
        for m in stored {
            published(m);
        }
        drop(order);
    }
}

impl State {
    /// Stores a private message under the next `seq`; `for_inbox`: its recipient is local and
    /// will find it in `pending`.
    fn insert(
        &mut self,
        message: NewMessage,
        conversation: String,
        for_inbox: bool,
    ) -> Arc<StoredMessage> {
        self.last_seq += 1;
        let seq = self.last_seq;
        if for_inbox {
            self.inboxes
                .entry(message.recipient.clone())
                .or_default()
                .push(seq);
        }
        self.conversations
            .entry(conversation)
            .or_default()
            .push(seq);
        let stored = Arc::new(StoredMessage { seq, message });
        self.messages.insert(seq, Arc::clone(&stored));
        stored
    }

    /// Stores a message a federation call brings (incoming, or a bounce) for its recipient's
    /// inbox, unless its id is known: false for a retry.
    fn insert_federated(&mut self, message: NewMessage) -> bool {
        if !self.federated_ids.insert(message.id) {
            return false;
        }
        let key = conversation_key(&message.sender, &message.recipient);
        self.insert(message, key, true);
        true
    }

    fn message(&self, seq: i64) -> Option<&StoredMessage> {
        self.messages.get(&seq).map(|m| &**m)
    }

    /// Whether `m`, attributed to one of our users, is that user's own post to its group with
    /// the same text; if so it is back, and forgotten as a relayed post.
    fn relayed_back(&mut self, m: &StoredGroupMessage) -> bool {
        let ours = self
            .relayed_posts
            .get(&m.message.id)
            .and_then(|seq| self.message(*seq))
            .is_some_and(|sent| {
                sent.message.sender == m.message.sender
                    && sent.message.recipient == m.message.group
                    && sent.message.body == m.message.body
            });
        if ours {
            self.relayed_posts.remove(&m.message.id);
        }
        ours
    }

    /// Where the replica `group` stands (see SQLite's `replica_start`): its last `seq`, or `None`
    /// when it is not kept here; one whose join is under way is created by its first message.
    fn replica_start(
        &mut self,
        home: &str,
        group: &str,
        first_seq: i64,
        joining: bool,
    ) -> Option<i64> {
        if let Some(g) = self.groups.get(group) {
            return Some(g.last_seq);
        }
        if !joining {
            return None;
        }
        let start = first_seq - 1;
        self.groups.insert(
            group.to_owned(),
            Group {
                home: home.to_owned(),
                last_seq: start,
                creator: None,
                messages: BTreeMap::new(),
            },
        );
        Some(start)
    }

    /// Deletes the bench users and everything that is theirs (see
    /// [`UserAdmin::purge_bench_users`]).
    fn purge_bench(&mut self) -> BenchPurge {
        let bench: BTreeSet<String> = self
            .users
            .values()
            .filter(|u| u.bench)
            .map(|u| u.name.clone())
            .collect();
        if bench.is_empty() {
            return BenchPurge::default();
        }
        let mut purge = BenchPurge {
            users: bench.iter().cloned().collect(),
            ..BenchPurge::default()
        };
        // Private messages (and outgoing group posts) a bench user sent or received. Local
        // addresses are bare names, so a peer's message to a bench user has it as recipient.
        let gone: HashSet<i64> = self
            .messages
            .iter()
            .filter(|(_, m)| {
                bench.contains(&m.message.sender) || bench.contains(&m.message.recipient)
            })
            .map(|(seq, _)| *seq)
            .collect();
        for seq in &gone {
            if let Some(m) = self.messages.remove(seq) {
                self.federated_ids.remove(&m.message.id);
            }
        }
        purge.private_messages = gone.len() as u64;
        self.relayed_posts.retain(|_, seq| !gone.contains(seq));
        for seqs in self.conversations.values_mut() {
            seqs.retain(|s| !gone.contains(s));
        }
        self.conversations.retain(|_, seqs| !seqs.is_empty());
        for seqs in self.inboxes.values_mut() {
            seqs.retain(|s| !gone.contains(s));
        }
        self.inboxes
            .retain(|recipient, seqs| !seqs.is_empty() && !bench.contains(recipient));
        self.delivered
            .retain(|recipient, _| !bench.contains(recipient));
        for outbox in self.outbox.values_mut() {
            outbox.retain(|seq, _| !gone.contains(seq));
        }
        self.outbox.retain(|_, outbox| !outbox.is_empty());
        // Groups: what the bench users were in or created may go whole once they are gone.
        let candidates: BTreeSet<String> = self
            .members
            .keys()
            .filter(|(_, user)| bench.contains(user))
            .map(|(group, _)| group.clone())
            .chain(
                self.groups
                    .iter()
                    .filter(|(_, g)| g.creator.as_ref().is_some_and(|c| bench.contains(c)))
                    .map(|(name, _)| name.clone()),
            )
            .collect();
        for g in self.groups.values_mut() {
            let group_ids = &mut self.group_ids;
            g.messages.retain(|_, m| {
                let keep = !bench.contains(&m.message.sender);
                if !keep {
                    group_ids.remove(&m.message.id);
                    purge.group_messages += 1;
                }
                keep
            });
        }
        self.members.retain(|(_, user), _| !bench.contains(user));
        let with_members: HashSet<&String> = self.members.keys().map(|(g, _)| g).collect();
        let emptied: Vec<String> = candidates
            .into_iter()
            .filter(|g| !with_members.contains(g))
            .collect();
        for name in &emptied {
            if let Some(g) = self.groups.remove(name) {
                purge.group_messages += g.messages.len() as u64;
                for m in g.messages.values() {
                    self.group_ids.remove(&m.message.id);
                }
            }
            self.feeds.retain(|(_, group), _| group != name);
        }
        purge.groups = emptied;
        // A group a bench user created that stays counts against no one.
        for g in self.groups.values_mut() {
            if g.creator.as_ref().is_some_and(|c| bench.contains(c)) {
                g.creator = None;
            }
        }
        self.tokens.retain(|_, user| !bench.contains(user));
        self.users.retain(|_, u| !u.bench);
        purge
    }

    /// Stores a replica's message under its home `seq`; false if its id (or its place) is taken.
    fn insert_replica(&mut self, m: &StoredGroupMessage) -> bool {
        let Some(group) = self.groups.get_mut(&m.message.group) else {
            return false;
        };
        if self.group_ids.contains(&m.message.id) || group.messages.contains_key(&m.seq) {
            return false;
        }
        self.group_ids.insert(m.message.id);
        group.messages.insert(m.seq, m.clone());
        true
    }
}

impl Store for MemoryStore {
    async fn users(&self) -> StoreResult<Vec<UserRecord>> {
        self.list_users().await
    }

    async fn tokens(&self) -> StoreResult<Vec<TokenRecord>> {
        Ok(self
            .state()
            .tokens
            .iter()
            .map(|(hash, user)| TokenRecord {
                hash: *hash,
                user: user.clone(),
            })
            .collect())
    }

    async fn rehash_password(&self, name: &str, old: &str, new: &str) -> StoreResult<()> {
        if let Some(user) = self.state().users.get_mut(name)
            && user.password_hash == old
        {
            user.password_hash = new.to_owned();
        }
        Ok(())
    }

    async fn insert_token(&self, token: TokenRecord) -> StoreResult<()> {
        self.state().tokens.insert(token.hash, token.user);
        Ok(())
    }

    async fn delete_tokens(&self, hashes: Vec<[u8; 32]>) -> StoreResult<()> {
        let mut state = self.state();
        for h in &hashes {
            state.tokens.remove(h);
        }
        Ok(())
    }

    async fn insert_messages(
        &self,
        messages: Vec<NewMessage>,
    ) -> Vec<StoreResult<Arc<StoredMessage>>> {
        let mut state = self.state();
        messages
            .into_iter()
            .map(|m| {
                let key = conversation_key(&m.sender, &m.recipient);
                Ok(state.insert(m, key, true))
            })
            .collect()
    }

    async fn pending(
        &self,
        recipient: &str,
        limit: usize,
        max_bytes: usize,
    ) -> StoreResult<Page<Arc<StoredMessage>>> {
        let state = self.state();
        let cursor = state.delivered.get(recipient).copied().unwrap_or(0);
        let mut taker = WindowTaker::new(Window {
            limit,
            before: None,
            max_bytes,
        });
        let seqs = state.inboxes.get(recipient).map_or(&[][..], Vec::as_slice);
        let from = seqs.partition_point(|s| *s <= cursor);
        for seq in seqs[from..].iter().take(limit) {
            let Some(m) = state.messages.get(seq) else {
                continue;
            };
            if !taker.take(Arc::clone(m), m.message.body.len()) {
                break;
            }
        }
        Ok(taker.finish_as_taken())
    }

    async fn mark_delivered(&self, recipient: &str, upto_seq: i64) -> StoreResult<()> {
        let mut state = self.state();
        let cursor = state.delivered.entry(recipient.to_owned()).or_insert(0);
        *cursor = (*cursor).max(upto_seq);
        let cursor = *cursor;
        // What is delivered is never read from the inbox again: only history finds it.
        if let Some(seqs) = state.inboxes.get_mut(recipient) {
            let from = seqs.partition_point(|s| *s <= cursor);
            seqs.drain(..from);
        }
        Ok(())
    }

    async fn conversation(
        &self,
        a: &str,
        b: &str,
        window: Window,
    ) -> StoreResult<Page<StoredMessage>> {
        let state = self.state();
        let mut taker = WindowTaker::new(window);
        if let Some(seqs) = state.conversations.get(&conversation_key(a, b)) {
            let end = seqs.partition_point(|s| *s < window.before_seq());
            for seq in seqs[..end].iter().rev().take(window.limit) {
                let Some(m) = state.message(*seq) else {
                    continue;
                };
                if !taker.take(m.clone(), m.message.body.len()) {
                    break;
                }
            }
        }
        Ok(taker.finish())
    }
}

impl GroupStore for MemoryStore {
    async fn groups(&self) -> StoreResult<Vec<GroupRecord>> {
        Ok(self
            .state()
            .groups
            .iter()
            .map(|(name, g)| GroupRecord {
                name: name.clone(),
                home: g.home.clone(),
                last_seq: g.last_seq,
                creator: g.creator.clone(),
            })
            .collect())
    }

    async fn memberships(&self) -> StoreResult<Vec<MemberRecord>> {
        Ok(self
            .state()
            .members
            .iter()
            .map(|((group, user), read_seq)| MemberRecord {
                group: group.clone(),
                user: user.clone(),
                read_seq: *read_seq,
            })
            .collect())
    }

    async fn join_group(&self, group: &str, home: &str, user: &str) -> StoreResult<JoinOutcome> {
        let mut state = self.state();
        let mut created = false;
        let last_seq = state
            .groups
            .entry(group.to_owned())
            .or_insert_with(|| {
                created = true;
                Group {
                    home: home.to_owned(),
                    last_seq: 0,
                    creator: Some(user.to_owned()),
                    messages: BTreeMap::new(),
                }
            })
            .last_seq;
        match state.members.entry((group.to_owned(), user.to_owned())) {
            std::collections::btree_map::Entry::Occupied(e) => Ok(JoinOutcome {
                created,
                new_member: false,
                read_seq: *e.get(),
            }),
            std::collections::btree_map::Entry::Vacant(e) => {
                e.insert(last_seq);
                Ok(JoinOutcome {
                    created,
                    new_member: true,
                    read_seq: last_seq,
                })
            }
        }
    }

    async fn leave_group(&self, group: &str, user: &str) -> StoreResult<bool> {
        Ok(self
            .state()
            .members
            .remove(&(group.to_owned(), user.to_owned()))
            .is_some())
    }

    async fn insert_group_messages(
        &self,
        messages: Vec<NewGroupMessage>,
        published: Published,
    ) -> StoreResult<Vec<StoredGroupMessage>> {
        let mut state = self.state();
        // All or nothing, as one transaction: find what would fail before changing anything. A
        // message whose id is stored (or comes earlier in this call) is a retry and skipped.
        let mut seen = HashSet::new();
        for m in &messages {
            if !state.group_ids.contains(&m.id)
                && seen.insert(m.id)
                && !state.groups.contains_key(&m.group)
            {
                return Err(StoreError::backend(format!("no group {:?}", m.group)));
            }
        }
        let mut stored = Vec::with_capacity(messages.len());
        for message in messages {
            if !state.group_ids.insert(message.id) {
                continue;
            }
            let Some(group) = state.groups.get_mut(&message.group) else {
                // Checked above.
                continue;
            };
            group.last_seq += 1;
            let m = StoredGroupMessage {
                seq: group.last_seq,
                message,
            };
            group.messages.insert(m.seq, m.clone());
            stored.push(m);
        }
        self.publish(state, &stored, published);
        Ok(stored)
    }

    async fn group_messages(
        &self,
        group: &str,
        after: i64,
        limit: usize,
        max_bytes: usize,
    ) -> StoreResult<Page<StoredGroupMessage>> {
        let state = self.state();
        let mut taker = WindowTaker::new(Window {
            limit,
            before: None,
            max_bytes,
        });
        if let Some(g) = state.groups.get(group) {
            for m in g
                .messages
                .range(after.saturating_add(1)..)
                .map(|(_, m)| m)
                .take(limit)
            {
                if !taker.take(m.clone(), m.message.body.len()) {
                    break;
                }
            }
        }
        Ok(taker.finish_as_taken())
    }

    async fn group_history(
        &self,
        group: &str,
        window: Window,
    ) -> StoreResult<Page<StoredGroupMessage>> {
        let state = self.state();
        let mut taker = WindowTaker::new(window);
        if let Some(g) = state.groups.get(group) {
            for m in g
                .messages
                .range(..window.before_seq())
                .rev()
                .map(|(_, m)| m)
                .take(window.limit)
            {
                if !taker.take(m.clone(), m.message.body.len()) {
                    break;
                }
            }
        }
        Ok(taker.finish())
    }

    async fn advance_cursors(&self, cursors: Vec<ReadCursor>) -> StoreResult<()> {
        let mut state = self.state();
        for c in cursors {
            if let Some(read) = state.members.get_mut(&(c.group, c.user)) {
                *read = (*read).max(c.seq);
            }
        }
        Ok(())
    }
}

impl FederationStore for MemoryStore {
    async fn enqueue(
        &self,
        peer: &str,
        kind: MessageKind,
        messages: Vec<NewMessage>,
    ) -> StoreResult<Vec<StoredMessage>> {
        let mut state = self.state();
        // All or none: an id this realm has stored from or for a link (or twice in this call)
        // is refused before anything is stored.
        let mut seen = HashSet::new();
        for m in &messages {
            if state.federated_ids.contains(&m.id) || !seen.insert(m.id) {
                return Err(StoreError::backend(format!(
                    "message id {} is stored already",
                    m.id
                )));
            }
        }
        let mut stored = Vec::with_capacity(messages.len());
        for message in messages {
            state.federated_ids.insert(message.id);
            let id = message.id;
            let key = match kind {
                MessageKind::Private => conversation_key(&message.sender, &message.recipient),
                MessageKind::GroupPost => message.recipient.clone(),
            };
            // For no inbox here: it is on its way to another realm.
            let m = state.insert(message, key, false);
            state
                .outbox
                .entry(peer.to_owned())
                .or_default()
                .insert(m.seq, kind);
            if kind == MessageKind::GroupPost {
                state.relayed_posts.insert(id, m.seq);
            }
            stored.push((*m).clone());
        }
        Ok(stored)
    }

    async fn outbox_after(
        &self,
        peer: &str,
        after: i64,
        limit: usize,
    ) -> StoreResult<Vec<Outgoing>> {
        let state = self.state();
        let Some(outbox) = state.outbox.get(peer) else {
            return Ok(Vec::new());
        };
        Ok(outbox
            .range(after.saturating_add(1)..)
            .filter_map(|(seq, kind)| {
                state.message(*seq).map(|m| Outgoing {
                    stored: m.clone(),
                    kind: *kind,
                })
            })
            .take(limit)
            .collect())
    }

    async fn outbox_counts(&self) -> StoreResult<HashMap<String, u64>> {
        Ok(self
            .state()
            .outbox
            .iter()
            .map(|(peer, o)| (peer.clone(), o.len() as u64))
            .collect())
    }

    async fn settle(&self, peer: &str, settled: Vec<Settled>) -> StoreResult<()> {
        let mut state = self.state();
        for s in settled {
            let Some(outbox) = state.outbox.get_mut(peer) else {
                break;
            };
            let removed = outbox.remove(&s.seq).is_some();
            if outbox.is_empty() {
                state.outbox.remove(peer);
            }
            if removed && let Some(bounce) = s.bounce {
                state.insert_federated(bounce);
                state.relayed_posts.remove(&s.id);
            }
        }
        Ok(())
    }

    async fn receive(&self, messages: Vec<NewMessage>) -> StoreResult<usize> {
        let mut state = self.state();
        Ok(messages
            .into_iter()
            .map(|m| usize::from(state.insert_federated(m)))
            .sum())
    }

    async fn open_feed(&self, peer: &str, group: &str, from_seq: i64) -> StoreResult<()> {
        self.state()
            .feeds
            .entry((peer.to_owned(), group.to_owned()))
            .or_insert(from_seq);
        Ok(())
    }

    async fn feeds(&self, peer: &str) -> StoreResult<Vec<GroupCursor>> {
        Ok(self
            .state()
            .feeds
            .iter()
            .filter(|((p, _), _)| p == peer)
            .map(|((_, group), seq)| GroupCursor {
                group: group.clone(),
                seq: *seq,
            })
            .collect())
    }

    async fn ack_feeds(&self, peer: &str, acked: Vec<GroupCursor>) -> StoreResult<()> {
        let mut state = self.state();
        for a in acked {
            let seq = state
                .feeds
                .entry((peer.to_owned(), a.group))
                .or_insert(a.seq);
            *seq = (*seq).max(a.seq);
        }
        Ok(())
    }

    async fn join_replica(
        &self,
        group: &str,
        home: &str,
        user: &str,
        read_seq: i64,
    ) -> StoreResult<bool> {
        let mut state = self.state();
        state
            .groups
            .entry(group.to_owned())
            .or_insert_with(|| Group {
                home: home.to_owned(),
                last_seq: read_seq,
                creator: None,
                messages: BTreeMap::new(),
            });
        let key = (group.to_owned(), user.to_owned());
        if state.members.contains_key(&key) {
            return Ok(false);
        }
        state.members.insert(key, read_seq);
        Ok(true)
    }

    async fn store_replica(
        &self,
        home: &str,
        messages: Vec<StoredGroupMessage>,
        joining: HashSet<String>,
        published: Published,
    ) -> StoreResult<ReplicaOutcome> {
        let mut state = self.state();
        let mut feed = ReplicaFeed::new();
        let mut new = Vec::new();
        for m in messages {
            let group = &m.message.group;
            if !feed.knows(group) {
                let last = state.replica_start(home, group, m.seq, joining.contains(group));
                feed.start(group, last);
            }
            if !feed.wants(&m) {
                continue;
            }
            if is_ours(&m) && !state.relayed_back(&m) {
                feed.misattributed(home, &m);
            } else if !state.insert_replica(&m) {
                feed.id_reused(&m);
            } else {
                feed.stored(&m);
                new.push(m);
            }
        }
        let out = feed.finish();
        for ack in &out.acks {
            if let Some(g) = state.groups.get_mut(&ack.group) {
                g.last_seq = ack.seq;
            }
        }
        self.publish(state, &new, published);
        Ok(out)
    }
}

impl UserAdmin for MemoryStore {
    async fn list_users(&self) -> StoreResult<Vec<UserRecord>> {
        Ok(self.state().users.values().cloned().collect())
    }

    async fn add_user(&self, user: UserRecord) -> StoreResult<()> {
        let mut state = self.state();
        if state.users.contains_key(&user.name) {
            return Err(StoreError::UserExists(user.name));
        }
        state.users.insert(user.name.clone(), user);
        Ok(())
    }

    async fn set_password(&self, name: &str, password_hash: &str) -> StoreResult<()> {
        let mut state = self.state();
        let Some(user) = state.users.get_mut(name) else {
            return Err(StoreError::NoSuchUser(name.to_owned()));
        };
        user.password_hash = password_hash.to_owned();
        state.tokens.retain(|_, user| user != name);
        Ok(())
    }

    async fn delete_user(&self, name: &str) -> StoreResult<()> {
        let mut state = self.state();
        if state.users.remove(name).is_none() {
            return Err(StoreError::NoSuchUser(name.to_owned()));
        }
        state.tokens.retain(|_, user| user != name);
        Ok(())
    }

    async fn put_bench_users(&self, users: Vec<UserRecord>) -> StoreResult<()> {
        let mut state = self.state();
        // All or nothing: a real user's name is refused before anything changes.
        if let Some(real) = users
            .iter()
            .find(|u| state.users.get(&u.name).is_some_and(|old| !old.bench))
        {
            return Err(StoreError::UserExists(real.name.clone()));
        }
        for mut user in users {
            user.bench = true;
            if state.users.contains_key(&user.name) {
                state.tokens.retain(|_, name| *name != user.name);
            }
            state.users.insert(user.name.clone(), user);
        }
        Ok(())
    }

    async fn purge_bench_users(&self) -> StoreResult<BenchPurge> {
        Ok(self.state().purge_bench())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::conformance::{self, NotDurable};

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn the_memory_store_passes_the_conformance_suite() {
        conformance::run_all(&mut NotDurable(MemoryStore::new)).await;
    }

    #[test]
    fn clones_share_one_store() {
        let a = MemoryStore::new();
        let b = a.clone();
        a.state().last_seq = 41;
        assert_eq!(b.state().last_seq, 41);
    }

    /// A publisher that is slow does not let a later commit's messages overtake its own: each
    /// group's publications stay in `seq` order even when the next caller commits meanwhile.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_slow_publisher_is_not_overtaken() {
        let store = MemoryStore::new();
        store.join_group("g", "here", "amy").await.unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let slow = {
            let log = Arc::clone(&log);
            let store = store.clone();
            tokio::spawn(async move {
                let hook: Published = Box::new(move |m| {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                    log.lock().unwrap().push(m.seq);
                });
                let m = message("first");
                store.insert_group_messages(vec![m], hook).await.unwrap()
            })
        };
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        let hook: Published = {
            let log = Arc::clone(&log);
            Box::new(move |m| log.lock().unwrap().push(m.seq))
        };
        store
            .insert_group_messages(vec![message("second")], hook)
            .await
            .unwrap();
        slow.await.unwrap();
        assert_eq!(*log.lock().unwrap(), [1, 2]);
    }

    fn message(body: &str) -> NewGroupMessage {
        NewGroupMessage {
            id: Uuid::now_v7(),
            group: "g".into(),
            sender: "amy".into(),
            sender_display: "Amy".into(),
            body: body.into(),
            sent_at: 0,
        }
    }
}
