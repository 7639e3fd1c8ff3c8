//! [`Watch`]: the connection's side of `watch`, shared by the command loop and live sessions.
//!
//! Private messages are read from storage whenever the hub wakes the watch, and pushed in `seq`
//! order after the last one pushed: the wake-ups of concurrent sends may come in any order, the
//! store's order is the commit order, so nothing is skipped. At most `inbox_max_messages` are
//! pushed beyond the last acknowledged one, because `pending` returns the oldest undelivered.
//! Group messages come queued from the hub (encoded once for everyone) and are pushed when they
//! are the next of their group; a gap (the group was behind at the start, or the queue skipped
//! some while the group was being read) is read from storage first. So each stream reaches the
//! client once and in order, and memory stays bounded by the queue and one batch.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use jaring_proto::chat::event::{Event, Notice, encode_event};
use tokio::sync::mpsc::error::TryRecvError;
use tracing::error;

use crate::groups::{GroupPush, Hub, WatchHandle};
use crate::realm::{Realm, WatchStart, wire_group_message};
use crate::storage::Store;

/// Bytes of events one fill gathers before the connection writes them.
pub const DEFAULT_WATCH_BATCH: usize = 256 * 1024;

/// A connection's watch: what it has pushed of each stream.
#[derive(Debug)]
pub struct Watch {
    hub: Arc<Hub>,
    handle: Arc<WatchHandle>,
    rx: tokio::sync::mpsc::Receiver<GroupPush>,
    /// The `seq` of the last private message pushed (or that the client had).
    private_after: i64,
    /// Private messages may be waiting in storage.
    private_due: bool,
    /// Per group, the `seq` of its last message pushed (or that the client had).
    groups: HashMap<String, i64>,
    /// Groups with messages to read from storage before their queued ones.
    behind: BTreeSet<String>,
    /// A queued message taken while waiting, not yet pushed.
    stash: Option<GroupPush>,
    /// The group a live session on this connection is pushing itself.
    live_group: Option<String>,
    /// A fill stopped at its batch size with more to push.
    more: bool,
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.hub.unwatch(&self.handle);
    }
}

impl Watch {
    /// Starts pushing what `start` describes: first what the client has not had.
    pub fn new(hub: Arc<Hub>, start: WatchStart) -> Self {
        let mut groups = HashMap::new();
        let mut behind = BTreeSet::new();
        for (group, after) in start.groups {
            if hub
                .membership(&group, start.handle.user())
                .is_some_and(|m| m.last_seq > after)
            {
                behind.insert(group.clone());
            }
            groups.insert(group, after);
        }
        Self {
            hub,
            handle: start.handle,
            rx: start.rx,
            private_after: start.private_after,
            private_due: true,
            groups,
            behind,
            stash: None,
            live_group: None,
            more: false,
        }
    }

    /// Whose messages it pushes.
    pub fn user(&self) -> &str {
        self.handle.user()
    }

    /// Resolves when there is something to push or the watch has ended. Cancel-safe.
    pub async fn ready(&mut self) {
        if self.private_due || self.more || !self.behind.is_empty() || self.stash.is_some() {
            return;
        }
        tokio::select! {
            item = self.rx.recv() => match item {
                Some(item) => self.stash = Some(item),
                // The hub dropped the sender: this watch was replaced; `fill` says so.
                None => self.private_due = true,
            },
            () = self.handle.woken() => self.private_due = true,
        }
    }

    /// A live session on this connection pushes `group` itself from now on.
    pub fn enter_live(&mut self, group: &str) {
        self.live_group = Some(group.to_owned());
    }

    /// The live session on `group` ended, having pushed up to `seq`: the watch goes on from there.
    pub fn leave_live(&mut self, group: &str, seq: i64) {
        self.live_group = None;
        let have = self.groups.entry(group.to_owned()).or_insert(seq);
        *have = (*have).max(seq);
        let have = *have;
        if self
            .hub
            .membership(group, self.handle.user())
            .is_some_and(|m| m.last_seq > have)
        {
            self.behind.insert(group.to_owned());
        }
    }

    /// Appends to `out` the events due, up to about [`DEFAULT_WATCH_BATCH`] bytes. `Err` with
    /// the reason when the watch is over (fell behind, taken over, logged out, storage failed):
    /// the caller writes `watch_end` and drops the watch.
    pub async fn fill<S: Store>(
        &mut self,
        realm: &Realm<S>,
        out: &mut Vec<u8>,
    ) -> Result<(), String> {
        self.more = false;
        if let Some(reason) = self.handle.ended() {
            return Err(reason);
        }
        let start = out.len();
        let full = |out: &Vec<u8>| out.len() - start >= DEFAULT_WATCH_BATCH;
        if self.private_due {
            self.private_due = false;
            let window = realm.options().inbox_max_messages.max(1);
            let page = realm
                .store()
                .pending(self.user(), window, realm.options().inbox_max_bytes)
                .await
                .map_err(|e| {
                    error!(error = %e, user = %self.user(), "cannot read messages to push");
                    "the server could not read your messages; watch again later".to_owned()
                })?;
            let after = self.private_after;
            for m in page.messages.iter().filter(|m| m.seq > after) {
                if full(out) {
                    self.private_due = true;
                    break;
                }
                encode_event(&Event::Private(crate::realm::wire_message(m)), out);
                self.private_after = m.seq;
            }
        }
        // Queued group messages, in their groups' order.
        loop {
            if full(out) {
                self.more = true;
                break;
            }
            let (group, pushed) = match self.stash.take() {
                Some(item) => item,
                None => match self.rx.try_recv() {
                    Ok(item) => item,
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => break,
                },
            };
            if self.live_group.as_deref() == Some(&*group) {
                continue;
            }
            let have = self
                .groups
                .entry(group.to_string())
                .or_insert(pushed.seq - 1);
            if pushed.seq <= *have {
                continue;
            }
            if pushed.seq == *have + 1 && !self.behind.contains(&*group) {
                out.extend_from_slice(&pushed.bytes);
                *have = pushed.seq;
            } else {
                // A gap: storage has it all, this message included (it was committed first).
                self.behind.insert(group.to_string());
            }
        }
        // Groups behind: a page each from storage.
        let page = realm.options().inbox_max_messages.max(1);
        let behind: Vec<String> = self.behind.iter().cloned().collect();
        for group in behind {
            if full(out) {
                self.more = true;
                break;
            }
            if self.live_group.as_deref() == Some(group.as_str()) {
                self.behind.remove(&group);
                continue;
            }
            let after = self.groups.get(&group).copied().unwrap_or(0);
            let msgs = realm
                .store()
                .group_messages(&group, after, page, realm.options().inbox_max_bytes)
                .await
                .map_err(|e| {
                    error!(error = %e, %group, "cannot read a group's messages to push");
                    "the server could not read your groups' messages; watch again later".to_owned()
                })?;
            let mut upto = after;
            for m in &msgs.messages {
                encode_event(&Event::Message(wire_group_message(m)), out);
                upto = m.seq;
            }
            self.groups.insert(group.clone(), upto);
            if msgs.messages.len() < page && !msgs.cut {
                self.behind.remove(&group);
            }
        }
        Ok(())
    }
}

/// Appends to `out` what the watch has due; a watch that ended gets its `watch_end` event
/// appended and is dropped (the connection stays open, not watching).
pub async fn push_due<S: Store>(realm: &Realm<S>, watch: &mut Option<Watch>, out: &mut Vec<u8>) {
    if let Some(w) = watch.as_mut()
        && let Err(reason) = w.fill(realm, out).await
    {
        encode_event(&Event::WatchEnd(Notice { reason }), out);
        *watch = None;
    }
}

/// Resolves when the watch, if there is one, has something due; never without one.
pub async fn due(watch: &mut Option<Watch>) {
    match watch.as_mut() {
        Some(w) => w.ready().await,
        None => std::future::pending().await,
    }
}
