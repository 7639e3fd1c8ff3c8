//! `watch`, `ack` and `ping`: the realm's side of pushed events (`docs/chat-protocol.md`,
//! "Pushed events"). The connection's side, which reads and writes the events, is
//! [`crate::watch::Watch`].

use std::collections::BTreeMap;
use std::sync::Arc;

use jaring_proto::chat::Address;
use jaring_proto::chat::reply::{self, Status, WatchOk};
use jaring_proto::chat::watch::{Ack, Cursor, Ping, Watch};
use tracing::error;

use super::{ConnState, Realm};
use crate::groups::{GroupPush, WatchHandle};
use crate::storage::{ReadCursor, Store};
use crate::token::token_hash;

/// A `watch` the realm accepted: what the connection needs to start pushing.
#[derive(Debug)]
pub struct WatchStart {
    /// The hub's end of the watch.
    pub handle: Arc<WatchHandle>,
    /// Group messages queued for it.
    pub rx: tokio::sync::mpsc::Receiver<GroupPush>,
    /// Private messages up to this `seq` the client has (0: push every undelivered one).
    pub private_after: i64,
    /// Each group the user is a member of, and the `seq` after which to push its messages.
    pub groups: Vec<(String, i64)>,
}

impl<S: Store> Realm<S> {
    /// The name a group has in this realm's hub (and in events): `name` for this realm's groups,
    /// `name@realm` for replicas of a peer's.
    fn group_key(&self, group: &Address) -> String {
        if group.is_in(&self.options.name) {
            group.name.clone()
        } else {
            group.to_string()
        }
    }

    /// Acknowledges what the cursors say the client has (they never move back).
    async fn take_cursors(&self, user: &str, cursors: &[Cursor]) -> Result<(), ()> {
        let mut ok = true;
        let private = cursors
            .iter()
            .filter_map(|c| match c {
                Cursor::Private(seq) => Some(*seq),
                Cursor::Group(..) => None,
            })
            .max();
        if let Some(seq) = private.filter(|s| *s > 0)
            && let Err(e) = self.store.mark_delivered(user, seq).await
        {
            error!(error = %e, %user, "cannot mark pushed messages delivered");
            ok = false;
        }
        let mut moved = Vec::new();
        for c in cursors {
            if let Cursor::Group(group, seq) = c {
                let key = self.group_key(group);
                // A group the user left since is ignored, as the protocol says.
                if self
                    .groups
                    .membership(&key, user)
                    .is_some_and(|m| m.read_seq < *seq)
                {
                    self.groups.advance(&key, user, *seq);
                    moved.push(ReadCursor {
                        group: key,
                        user: user.to_owned(),
                        seq: *seq,
                    });
                }
            }
        }
        // One write for all of them: a client in many groups acknowledges them together.
        if !moved.is_empty()
            && let Err(e) = self.store.advance_cursors(moved).await
        {
            error!(error = %e, %user, "cannot store read cursors");
            ok = false;
        }
        if ok { Ok(()) } else { Err(()) }
    }

    pub(super) async fn watch(
        &self,
        conn: &mut ConnState,
        c: Watch,
        idle_timeout_secs: u64,
        out: &mut Vec<u8>,
    ) -> Option<WatchStart> {
        let user = self.resolve(conn, &c.token, out).await?;
        if self.take_cursors(&user, &c.cursors).await.is_err() {
            reply::encode_error(super::STORAGE_FAILED, out);
            return None;
        }
        let (handle, rx, members) = self.groups.watch(&user, token_hash(&c.token));
        let mut given: BTreeMap<String, i64> = BTreeMap::new();
        let mut private_after = 0;
        for cursor in c.cursors {
            match cursor {
                Cursor::Private(seq) => private_after = private_after.max(seq),
                Cursor::Group(group, seq) => {
                    let key = self.group_key(&group);
                    let have = given.entry(key).or_insert(seq);
                    *have = (*have).max(seq);
                }
            }
        }
        // The client's cursor where it gave one (even behind the server's: group messages are
        // kept, so it can be given what it missed); the member's read cursor elsewhere.
        let groups = members
            .into_iter()
            .map(|(group, read_seq)| {
                let after = given.get(&group).copied().unwrap_or(read_seq);
                (group, after)
            })
            .collect();
        reply::encode(
            &WatchOk {
                status: Status::Ok,
                message: "Watching".into(),
                user,
                idle_timeout: idle_timeout_secs,
                private_window: self.options.inbox_max_messages.max(1) as u64,
            },
            out,
        );
        Some(WatchStart {
            handle,
            rx,
            private_after,
            groups,
        })
    }

    pub(super) async fn ack(&self, conn: &mut ConnState, c: Ack, out: &mut Vec<u8>) {
        let Some(user) = self.resolve(conn, &c.token, out).await else {
            return;
        };
        if self.take_cursors(&user, &c.cursors).await.is_err() {
            reply::encode_error(super::STORAGE_FAILED, out);
            return;
        }
        // The private window moved: the watching connection may push more.
        if c.cursors.iter().any(|c| matches!(c, Cursor::Private(_))) {
            self.groups.wake_private(&user);
        }
        reply::encode_ok("Acknowledged", out);
    }

    pub(super) async fn ping(&self, conn: &mut ConnState, c: Ping, out: &mut Vec<u8>) {
        if let Some(token) = &c.token
            && self.resolve(conn, token, out).await.is_none()
        {
            return;
        }
        reply::encode_ok("pong", out);
    }
}
