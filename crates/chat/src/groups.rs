//! [`Hub`]: the groups a realm knows, in memory, and the live fan-out of their events.
//!
//! Storage is the truth (see [`crate::storage::GroupStore`]); the hub mirrors memberships and read cursors
//! so that commands do not wait for a read, and it owns one ring of pushed events per group with a
//! live session. A committed message is encoded once and put in its group's ring
//! ([`tokio::sync::broadcast`]): one O(1) send, whatever the group's size. Each live session reads
//! the ring at its own pace and writes everything it finds in one batch; a session more than the
//! ring's capacity behind has lost events it can no longer be given live, so its live session is
//! ended with a reason and it catches up from storage with `inboxgroup`. So one slow member never
//! slows the group, and memory is bounded by the ring, not by the slowest member.
//!
//! Joins and leaves touch one map entry each; in a group larger than
//! [`DEFAULT_PRESENCE_MAX_MEMBERS`] they are not pushed as events at all, because n members
//! joining would otherwise cost n² event deliveries (the way big IRC networks mute JOIN/PART in
//! large channels); `members` lists who is in.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

use jaring_proto::chat::event::{Event, GroupMessage, MemberChange, encode_event};
use tokio::sync::{Notify, broadcast, mpsc};

use crate::storage::{GroupRecord, MemberRecord, StoredGroupMessage};

/// Events a live session may fall behind its group before its live session is ended (the ring of
/// pushed events each group with a live session keeps). The member then catches up with
/// `inboxgroup`; nothing is lost, because every message is committed before it is pushed.
pub const DEFAULT_LIVE_QUEUE: usize = 4096;

/// Least time between two writes of one live session in a group with more than
/// [`DEFAULT_EAGER_MAX_LIVE`] live sessions: events arriving sooner wait and go out in the next
/// batch. A busy large group then costs each member at most 1/this writes a second (a write is a
/// system call and the peer's wake-up, the main cost of fan-out), and a write long after the last
/// one goes out at once.
pub const DEFAULT_LIVE_FLUSH: std::time::Duration = std::time::Duration::from_millis(10);

/// Up to this many live sessions, a group's sessions write each event at once (with whatever else
/// is already waiting) instead of batching by [`DEFAULT_LIVE_FLUSH`]: a small group then delivers
/// in about a millisecond rather than up to a flush interval later. Larger groups keep batching,
/// because there every member writing every event at once costs more in wake-ups and system calls
/// than the wait saves (measured: at 1,000 members and 100 msgs/s, writing at once raised p99 from
/// 30 to 240 ms; `bench/results/2026-12-07-1655-chat-groups.md`).
pub const DEFAULT_EAGER_MAX_LIVE: usize = 100;

/// Above this many members, joins and leaves are not pushed to live sessions (they would cost
/// every member a line per join: n² work when n members join); `members` shows who is in.
pub const DEFAULT_PRESENCE_MAX_MEMBERS: usize = 100;

/// Groups one user may create over the realm's life (groups are never deleted, so this bounds
/// what one account can add to every member's `groups` reply and to the realm's memory). Past it,
/// `group` or `sendgroup` to a group that does not exist answers an ERROR saying so; joining
/// existing groups still works. `[limits] groups_per_user` in the realm config changes it.
pub const DEFAULT_GROUPS_PER_USER: usize = 100;

/// One event as pushed: encoded once, shared by every live session of the group.
#[derive(Debug)]
pub struct Pushed {
    /// The message's `seq`, or 0 for a join or leave.
    pub seq: i64,
    /// The framed event, ready to write.
    pub bytes: Box<[u8]>,
    /// For a leave: who left (their own live sessions end).
    pub left: Option<String>,
}

#[derive(Debug, Default)]
struct Member {
    read_seq: i64,
    live: usize,
}

/// A group message on its way to a watching connection: the group's address and the event.
pub type GroupPush = (Arc<str>, Arc<Pushed>);

/// The hub's end of a watching connection (`watch`): group messages are queued to it, private
/// messages and endings only wake it (it reads private messages from storage, in `seq` order,
/// however the wake-ups raced). Bounded: a connection that does not take its events falls behind
/// and is told so (`watch_end`), and the queue is dropped.
#[derive(Debug)]
pub struct WatchHandle {
    id: u64,
    user: String,
    /// SHA-256 of the token that started it: logging that token out ends it.
    token: [u8; 32],
    tx: mpsc::Sender<GroupPush>,
    wake: Notify,
    ended: Mutex<Option<String>>,
}

impl WatchHandle {
    /// Wakes the connection: a private message may be waiting, or the watch has ended.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Resolves at the next [`WatchHandle::wake`] (or at once if one happened since the last).
    pub async fn woken(&self) {
        self.wake.notified().await;
    }

    /// Ends the watch (the connection writes `watch_end` with `reason`); the first reason stays.
    pub fn end(&self, reason: impl Into<String>) {
        lock(&self.ended).get_or_insert_with(|| reason.into());
        self.wake();
    }

    /// Why the watch ended, if it did.
    pub fn ended(&self) -> Option<String> {
        lock(&self.ended).clone()
    }

    /// Whose messages it carries.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// Queues a group message; a full queue ends the watch (the connection fell behind).
    fn push(&self, item: GroupPush, cap: usize) {
        if self.tx.try_send(item).is_err() && !self.tx.is_closed() {
            self.end(format!(
                "you fell {cap} events behind, so the server stopped pushing; resume with: \
                 watch TOKEN CURSOR…"
            ));
        }
    }
}

/// Why a watch was taken over: written to the connection that watched before.
pub const WATCH_MOVED: &str = "watching moved to another connection";

#[derive(Debug, Default)]
struct GroupState {
    members: HashMap<String, Member>,
    last_seq: i64,
    ring: Option<broadcast::Sender<Arc<Pushed>>>,
    /// Members with a watching connection, which every message of the group is queued to.
    watching: HashMap<String, Arc<WatchHandle>>,
    /// Members of other realms (`user@realm`), counted by realm: the peers this group's messages
    /// are fed to.
    peers: BTreeMap<String, usize>,
}

impl GroupState {
    fn new(last_seq: i64) -> Self {
        Self {
            last_seq,
            ..Self::default()
        }
    }

    fn add_member(&mut self, user: &str, read_seq: i64) -> bool {
        if let Some(m) = self.members.get_mut(user) {
            m.read_seq = m.read_seq.max(read_seq);
            return false;
        }
        self.members
            .insert(user.to_owned(), Member { read_seq, live: 0 });
        if let Some((_, realm)) = user.split_once('@') {
            *self.peers.entry(realm.to_owned()).or_default() += 1;
        }
        true
    }

    fn remove_member(&mut self, user: &str) -> Option<Member> {
        let m = self.members.remove(user)?;
        self.watching.remove(user);
        if let Some((_, realm)) = user.split_once('@')
            && let Some(n) = self.peers.get_mut(realm)
        {
            *n -= 1;
            if *n == 0 {
                self.peers.remove(realm);
            }
        }
        Some(m)
    }
}

/// What a peer realm with members in a group hears of it through [`FeedHook`].
#[derive(Debug)]
pub enum FeedEvent<'a> {
    /// The group has a new message, or a new member on the peer: feed it.
    Message,
    /// A join (`false`) or leave (`true`), to pass on to the peer's live sessions now.
    Presence(&'a MemberChange, bool),
}

/// Called with a peer realm's name when a group it has members in has something new for it.
pub type FeedHook = Box<dyn Fn(&str, &FeedEvent<'_>) + Send + Sync>;

/// The realm's groups in memory.
pub struct Hub {
    groups: Mutex<BTreeMap<String, GroupState>>,
    /// Groups each user created (or is creating right now: see [`CreationSlot`]).
    created: Arc<Mutex<HashMap<String, usize>>>,
    live_queue: usize,
    presence_max: usize,
    feed: OnceLock<FeedHook>,
    /// The watching connection of each user that has one. Lock order: `groups`, then this.
    watchers: Mutex<HashMap<String, Arc<WatchHandle>>>,
    next_watch: AtomicU64,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("live_queue", &self.live_queue)
            .finish_non_exhaustive()
    }
}

/// A group creation counted against a user's quota before it is stored: dropped without
/// [`CreationSlot::keep`] (the store failed, or someone else created the group first), it gives
/// the slot back. Counting before storing keeps one user's concurrent creations from all passing
/// the check.
#[derive(Debug)]
#[must_use = "keep the slot once the group was created, or drop it to give it back"]
pub struct CreationSlot {
    created: Arc<Mutex<HashMap<String, usize>>>,
    user: String,
    kept: bool,
}

impl CreationSlot {
    /// The group was created: the slot stays counted.
    pub fn keep(mut self) {
        self.kept = true;
    }
}

impl Drop for CreationSlot {
    fn drop(&mut self) {
        if self.kept {
            return;
        }
        let mut created = lock(&self.created);
        if let Some(n) = created.get_mut(&self.user) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                created.remove(&self.user);
            }
        }
    }
}

/// A member's view of a group, taken at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Membership {
    /// The highest `seq` delivered to the member.
    pub read_seq: i64,
    /// The group's latest `seq`.
    pub last_seq: i64,
    /// Live sessions the member has open on the group.
    pub live: usize,
}

/// A live session's subscription: the ring it reads and where its member's cursor was.
#[derive(Debug)]
pub struct Subscription {
    /// The group's events from the moment of subscribing.
    pub events: broadcast::Receiver<Arc<Pushed>>,
    /// The member's read cursor at that moment: what is after it and before the first event in
    /// the ring is read from storage.
    pub read_seq: i64,
}

/// Why [`Hub::subscribe`] started no live session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotSubscribed {
    /// The user is not a member of the group (or there is no such group).
    NotMember,
    /// The member has a live session open on the group already.
    AlreadyLive,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section is a few map operations that leave the maps consistent.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Hub {
    /// An empty hub whose rings hold `live_queue` events.
    pub fn new(live_queue: usize, presence_max: usize) -> Self {
        Self {
            groups: Mutex::default(),
            created: Arc::default(),
            live_queue: live_queue.max(1),
            presence_max,
            feed: OnceLock::new(),
            watchers: Mutex::default(),
            next_watch: AtomicU64::new(1),
        }
    }

    /// Starts pushing `user`'s messages to a new watching connection, ending the watch they had
    /// (see [`WATCH_MOVED`]). Returns its handle, its queue of group messages, and each group the
    /// user is a member of with the member's read cursor at this instant: every message after
    /// that is either in storage already or will be queued.
    pub fn watch(
        &self,
        user: &str,
        token: [u8; 32],
    ) -> (
        Arc<WatchHandle>,
        mpsc::Receiver<GroupPush>,
        Vec<(String, i64)>,
    ) {
        let (tx, rx) = mpsc::channel(self.live_queue);
        let handle = Arc::new(WatchHandle {
            id: self.next_watch.fetch_add(1, Ordering::Relaxed),
            user: user.to_owned(),
            token,
            tx,
            wake: Notify::new(),
            ended: Mutex::default(),
        });
        let mut map = lock(&self.groups);
        let mut cursors = Vec::new();
        for (name, g) in map.iter_mut() {
            if let Some(m) = g.members.get(user) {
                cursors.push((name.clone(), m.read_seq));
                g.watching.insert(user.to_owned(), Arc::clone(&handle));
            }
        }
        let old = lock(&self.watchers).insert(user.to_owned(), Arc::clone(&handle));
        drop(map);
        if let Some(old) = old {
            old.end(WATCH_MOVED);
        }
        (handle, rx, cursors)
    }

    /// A watching connection stopped watching: forgets its handle (unless another took over).
    pub fn unwatch(&self, handle: &WatchHandle) {
        let mut map = lock(&self.groups);
        for g in map.values_mut() {
            if g.watching
                .get(&handle.user)
                .is_some_and(|h| h.id == handle.id)
            {
                g.watching.remove(&handle.user);
            }
        }
        let mut watchers = lock(&self.watchers);
        if watchers
            .get(&handle.user)
            .is_some_and(|h| h.id == handle.id)
        {
            watchers.remove(&handle.user);
        }
    }

    /// A private message to `user` was committed: wakes their watching connection, if any.
    pub fn wake_private(&self, user: &str) {
        if let Some(h) = lock(&self.watchers).get(user) {
            h.wake();
        }
    }

    /// Ends the watch of whoever watches with the token whose SHA-256 is `token` (logged out).
    pub fn end_watches_of(&self, token: &[u8; 32], reason: &str) {
        let watchers = lock(&self.watchers);
        for h in watchers.values().filter(|h| &h.token == token) {
            h.end(reason);
        }
    }

    /// Forgets users and groups the operator deleted from storage (the admin socket's
    /// `delete_user` and `purge_bench`): each user leaves every group, their watch ends with
    /// `reason` and their creation count goes; each group in `groups` goes whole (its live
    /// sessions see their ring close).
    pub fn forget(&self, users: &[String], groups: &[String], reason: &str) {
        let mut map = lock(&self.groups);
        for g in groups {
            map.remove(g);
        }
        for state in map.values_mut() {
            for u in users {
                state.remove_member(u);
            }
        }
        let mut watchers = lock(&self.watchers);
        for u in users {
            if let Some(h) = watchers.remove(u) {
                h.end(reason);
            }
        }
        drop(watchers);
        drop(map);
        let mut created = lock(&self.created);
        for u in users {
            created.remove(u);
        }
    }

    /// For each group `user` is a member of with messages after their read cursor, how many.
    pub fn unread(&self, user: &str) -> BTreeMap<String, u64> {
        lock(&self.groups)
            .iter()
            .filter_map(|(name, g)| {
                let m = g.members.get(user)?;
                let n = g.last_seq - m.read_seq;
                (n > 0).then(|| (name.clone(), n.unsigned_abs()))
            })
            .collect()
    }

    /// Sets what is called when a group with members on a peer realm changes (federation sets it
    /// to wake that peer's link); a second call is ignored.
    pub fn set_feed(&self, hook: FeedHook) {
        let _ = self.feed.set(hook);
    }

    fn wake_peers(&self, g: &GroupState) {
        if let Some(hook) = self.feed.get() {
            for realm in g.peers.keys() {
                hook(realm, &FeedEvent::Message);
            }
        }
    }

    /// The group's latest `seq`, if the group exists.
    pub fn last_seq(&self, group: &str) -> Option<i64> {
        lock(&self.groups).get(group).map(|g| g.last_seq)
    }

    /// The groups with members on realm `peer`, with their latest `seq`.
    pub fn fed_to(&self, peer: &str) -> Vec<(String, i64)> {
        lock(&self.groups)
            .iter()
            .filter(|(_, g)| g.peers.contains_key(peer))
            .map(|(name, g)| (name.clone(), g.last_seq))
            .collect()
    }

    /// Live sessions reading the group's ring now.
    pub fn live_sessions(&self, group: &str) -> usize {
        lock(&self.groups)
            .get(group)
            .and_then(|g| g.ring.as_ref())
            .map_or(0, broadcast::Sender::receiver_count)
    }

    /// The `n` largest groups: name, members, live sessions (largest first, then by name).
    pub fn largest(&self, n: usize) -> Vec<(String, usize, usize)> {
        let map = lock(&self.groups);
        let mut all: Vec<(String, usize, usize)> = map
            .iter()
            .map(|(name, g)| {
                let live = g.ring.as_ref().map_or(0, broadcast::Sender::receiver_count);
                (name.clone(), g.members.len(), live)
            })
            .collect();
        drop(map);
        all.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        all.truncate(n);
        all
    }

    /// Groups in the realm.
    pub fn group_count(&self) -> usize {
        lock(&self.groups).len()
    }

    /// The ring capacity: how far behind a live session may fall.
    pub fn live_queue(&self) -> usize {
        self.live_queue
    }

    /// Loads what storage holds (at start).
    pub fn load(&self, groups: Vec<GroupRecord>, members: Vec<MemberRecord>) {
        let mut map = lock(&self.groups);
        let mut created = lock(&self.created);
        for g in groups {
            if let Some(creator) = g.creator {
                *created.entry(creator).or_default() += 1;
            }
            map.insert(g.name, GroupState::new(g.last_seq));
        }
        drop(created);
        for m in members {
            if let Some(g) = map.get_mut(&m.group) {
                g.add_member(&m.user, m.read_seq);
            }
        }
    }

    /// Counts a group `user` is about to create, if they have created fewer than `max`;
    /// otherwise returns how many they have created.
    pub fn reserve_creation(&self, user: &str, max: usize) -> Result<CreationSlot, usize> {
        let mut created = lock(&self.created);
        let n = created.entry(user.to_owned()).or_default();
        if *n >= max {
            let n = *n;
            if n == 0 {
                created.remove(user);
            }
            return Err(n);
        }
        *n += 1;
        Ok(CreationSlot {
            created: Arc::clone(&self.created),
            user: user.to_owned(),
            kept: false,
        })
    }

    /// Groups `user` has created (counting creations under way).
    pub fn created_by(&self, user: &str) -> usize {
        lock(&self.created).get(user).copied().unwrap_or(0)
    }

    /// Whether the group exists.
    pub fn exists(&self, group: &str) -> bool {
        lock(&self.groups).contains_key(group)
    }

    /// The user's membership of the group, if they are a member.
    pub fn membership(&self, group: &str, user: &str) -> Option<Membership> {
        let map = lock(&self.groups);
        let g = map.get(group)?;
        g.members.get(user).map(|m| Membership {
            read_seq: m.read_seq,
            last_seq: g.last_seq,
            live: m.live,
        })
    }

    /// A committed join: the group and membership exist now. Returns whether to push the join.
    pub fn joined(&self, group: &str, user: &str, read_seq: i64) -> bool {
        let mut map = lock(&self.groups);
        let g = map
            .entry(group.to_owned())
            .or_insert_with(|| GroupState::new(read_seq));
        if g.add_member(user, read_seq) {
            if user.contains('@') {
                self.wake_peers(g);
            } else if let Some(h) = lock(&self.watchers).get(user) {
                // A watching user who joins is pushed the group's messages from now on.
                g.watching.insert(user.to_owned(), Arc::clone(h));
            }
        }
        g.members.len() <= self.presence_max
    }

    /// A committed leave. Returns whether to push it: in small groups always, in large ones only
    /// when the user has live sessions open, which end on hearing it.
    pub fn left(&self, group: &str, user: &str) -> bool {
        let mut map = lock(&self.groups);
        map.get_mut(group).is_some_and(|g| {
            let live = g.remove_member(user).is_some_and(|m| m.live > 0);
            live || g.members.len() < self.presence_max
        })
    }

    /// Pushes a committed message to the group's live sessions. Storage calls this in `seq` order.
    pub fn publish_message(&self, stored: &StoredGroupMessage) {
        let m = &stored.message;
        let mut map = lock(&self.groups);
        let Some(g) = map.get_mut(&m.group) else {
            return;
        };
        g.last_seq = g.last_seq.max(stored.seq);
        if !g.peers.is_empty() {
            self.wake_peers(g);
        }
        if g.ring.is_none() && g.watching.is_empty() {
            return;
        }
        let mut bytes = Vec::with_capacity(160 + m.body.len());
        encode_event(
            &Event::Message(GroupMessage {
                group: m.group.clone(),
                seq: stored.seq,
                id: m.id.to_string(),
                from: m.sender.clone(),
                msg_from: m.sender_display.clone(),
                msg: m.body.clone(),
                sent_at: m.sent_at,
            }),
            &mut bytes,
        );
        let pushed = Arc::new(Pushed {
            seq: stored.seq,
            bytes: bytes.into_boxed_slice(),
            left: None,
        });
        if !g.watching.is_empty() {
            let name: Arc<str> = Arc::from(m.group.as_str());
            for h in g.watching.values() {
                h.push((Arc::clone(&name), Arc::clone(&pushed)), self.live_queue);
            }
        }
        if let Some(ring) = &g.ring {
            // An error only means no receiver is left; the ring is dropped when the last one goes.
            let _ = ring.send(pushed);
        }
    }

    /// Pushes a join (`leave` false) or leave to the group's live sessions.
    /// Peer realms with members hear of it too, except the member's own realm (which pushed it
    /// to its live sessions itself).
    pub fn publish_presence(&self, change: MemberChange, leave: bool) {
        let map = lock(&self.groups);
        let Some(g) = map.get(&change.group) else {
            return;
        };
        if let Some(hook) = self.feed.get() {
            let own = change.user.split_once('@').map(|(_, r)| r);
            for realm in g.peers.keys().filter(|r| Some(r.as_str()) != own) {
                hook(realm, &FeedEvent::Presence(&change, leave));
            }
        }
        let Some(ring) = &g.ring else {
            return;
        };
        let left = leave.then(|| change.user.clone());
        let mut bytes = Vec::new();
        encode_event(
            &if leave {
                Event::Leave(change)
            } else {
                Event::Join(change)
            },
            &mut bytes,
        );
        let _ = ring.send(Arc::new(Pushed {
            seq: 0,
            bytes: bytes.into_boxed_slice(),
            left,
        }));
    }

    /// Starts a live session of a member: from now on the group's events reach it. A member has
    /// at most one live session per group: a second would be handed every message too, and the
    /// member would get each one twice.
    pub fn subscribe(&self, group: &str, user: &str) -> Result<Subscription, NotSubscribed> {
        let mut map = lock(&self.groups);
        let g = map.get_mut(group).ok_or(NotSubscribed::NotMember)?;
        let member = g.members.get_mut(user).ok_or(NotSubscribed::NotMember)?;
        if member.live > 0 {
            return Err(NotSubscribed::AlreadyLive);
        }
        member.live += 1;
        let read_seq = member.read_seq;
        let capacity = self.live_queue;
        let ring = g.ring.get_or_insert_with(|| broadcast::channel(capacity).0);
        Ok(Subscription {
            events: ring.subscribe(),
            read_seq,
        })
    }

    /// A live session stopped reading the ring (its receiver already dropped); the ring goes with
    /// the last reader. The session still counts as live until [`Hub::unsubscribe`].
    pub fn unlisten(&self, group: &str) {
        let mut map = lock(&self.groups);
        if let Some(g) = map.get_mut(group)
            && g.ring.as_ref().is_some_and(|r| r.receiver_count() == 0)
        {
            g.ring = None;
        }
    }

    /// Ends a live session (its receiver already dropped; its last cursor already advanced, so
    /// that an `inboxgroup` let in by the end of the session starts after what it was given).
    pub fn unsubscribe(&self, group: &str, user: &str) {
        let mut map = lock(&self.groups);
        let Some(g) = map.get_mut(group) else {
            return;
        };
        if let Some(m) = g.members.get_mut(user) {
            m.live = m.live.saturating_sub(1);
        }
        if g.ring.as_ref().is_some_and(|r| r.receiver_count() == 0) {
            g.ring = None;
        }
    }

    /// Moves a member's read cursor forward.
    pub fn advance(&self, group: &str, user: &str, seq: i64) {
        if let Some(m) = lock(&self.groups)
            .get_mut(group)
            .and_then(|g| g.members.get_mut(user))
        {
            m.read_seq = m.read_seq.max(seq);
        }
    }

    /// Every group after `after` (all when `None`), by name: name, member count, whether `user`
    /// is a member.
    pub fn list(&self, user: &str, after: Option<&str>) -> Vec<(String, usize, bool)> {
        let groups = lock(&self.groups);
        let range = match after {
            Some(after) => groups
                .range::<str, _>((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded)),
            None => groups.range::<str, _>(..),
        };
        range
            .map(|(name, g)| (name.clone(), g.members.len(), g.members.contains_key(user)))
            .collect()
    }

    /// A group's members by name, with whether each has a live session open.
    pub fn members(&self, group: &str) -> Option<Vec<(String, bool)>> {
        let map = lock(&self.groups);
        let g = map.get(group)?;
        let mut out: Vec<(String, bool)> = g
            .members
            .iter()
            .map(|(name, m)| (name.clone(), m.live > 0))
            .collect();
        out.sort_unstable();
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::NewGroupMessage;

    fn stored(seq: i64) -> StoredGroupMessage {
        StoredGroupMessage {
            seq,
            message: NewGroupMessage {
                id: uuid::Uuid::now_v7(),
                group: "g".into(),
                sender: "a".into(),
                sender_display: "A".into(),
                body: format!("m{seq}"),
                sent_at: 0,
            },
        }
    }

    #[test]
    fn a_ring_exists_only_while_someone_listens() {
        let hub = Hub::new(4, 100);
        assert_eq!(
            hub.subscribe("g", "a").err(),
            Some(NotSubscribed::NotMember),
            "no such group"
        );
        hub.joined("g", "a", 0);
        let mut sub = hub.subscribe("g", "a").expect("member");
        assert_eq!(
            hub.subscribe("g", "a").err(),
            Some(NotSubscribed::AlreadyLive),
            "one live session per member"
        );
        hub.publish_message(&stored(1));
        let got = sub.events.try_recv().expect("pushed");
        assert_eq!(got.seq, 1);
        drop(sub);
        hub.unsubscribe("g", "a");
        assert!(lock(&hub.groups)["g"].ring.is_none());
        // Without listeners a publish only moves the group's order on.
        hub.publish_message(&stored(2));
        assert_eq!(hub.membership("g", "a").expect("member").last_seq, 2);
    }

    #[test]
    fn a_session_that_falls_a_ring_behind_learns_it_lagged() {
        let hub = Hub::new(4, 100);
        hub.joined("g", "a", 0);
        let mut sub = hub.subscribe("g", "a").expect("member");
        for seq in 1..=5 {
            hub.publish_message(&stored(seq));
        }
        assert!(matches!(
            sub.events.try_recv(),
            Err(broadcast::error::TryRecvError::Lagged(1))
        ));
    }

    #[test]
    fn groups_with_members_on_a_peer_are_fed_to_it_and_wake_it() {
        let hub = Hub::new(4, 100);
        let woken: Arc<Mutex<Vec<String>>> = Arc::default();
        let log = Arc::clone(&woken);
        hub.set_feed(Box::new(move |realm, event| {
            lock(&log).push(format!("{realm} {}", matches!(event, FeedEvent::Message)));
        }));
        hub.joined("g", "a", 0);
        assert!(hub.fed_to("realm2").is_empty());
        hub.publish_message(&stored(1));
        assert!(lock(&woken).is_empty(), "no peer has members yet");
        hub.joined("g", "james@realm2", 1);
        hub.joined("g", "jordan@realm2", 1);
        hub.joined("g", "jordan@realm2", 1);
        assert_eq!(hub.fed_to("realm2"), [("g".to_owned(), 1)]);
        hub.publish_message(&stored(2));
        assert_eq!(*lock(&woken), ["realm2 true", "realm2 true", "realm2 true"]);
        // A join is passed on to the peers with members, but not to the joiner's own realm.
        let change = |user: &str| MemberChange {
            group: "g".into(),
            user: user.into(),
            display_name: user.into(),
        };
        lock(&woken).clear();
        hub.publish_presence(change("b"), false);
        hub.publish_presence(change("james@realm2"), true);
        assert_eq!(*lock(&woken), ["realm2 false"]);
        hub.left("g", "james@realm2");
        assert_eq!(hub.fed_to("realm2").len(), 1, "jordan is still in");
        hub.left("g", "jordan@realm2");
        assert!(hub.fed_to("realm2").is_empty());
    }

    #[test]
    fn creation_slots_count_until_given_back() {
        let hub = Hub::new(4, 100);
        hub.load(
            vec![GroupRecord {
                name: "old".into(),
                home: "realm1".into(),
                last_seq: 0,
                creator: Some("a".into()),
            }],
            Vec::new(),
        );
        assert_eq!(hub.created_by("a"), 1);
        let slot = hub.reserve_creation("a", 2).expect("second of two");
        assert_eq!(hub.reserve_creation("a", 2).map(|_| ()), Err(2));
        drop(slot);
        hub.reserve_creation("a", 2).expect("given back").keep();
        assert_eq!(hub.created_by("a"), 2);
        assert_eq!(hub.reserve_creation("b", 0).map(|_| ()), Err(0));
        assert_eq!(hub.created_by("b"), 0);
    }

    #[test]
    fn presence_is_muted_in_large_groups() {
        let hub = Hub::new(4, 2);
        assert!(hub.joined("g", "a", 0));
        assert!(hub.joined("g", "b", 0));
        assert!(!hub.joined("g", "c", 0));
        assert!(!hub.left("g", "c"));
        assert!(hub.left("g", "b"));
        assert_eq!(hub.list("a", None), [("g".to_owned(), 1, true)]);
        assert!(hub.list("a", Some("g")).is_empty(), "after the cursor");
    }
}
