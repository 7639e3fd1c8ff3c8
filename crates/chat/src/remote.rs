//! [`Remote`]: what a realm asks of its links to other realms, defined on the realm's side so the
//! realm depends on this port and [`crate::federation`] implements it, not the other way round.

use std::future::Future;
use std::pin::Pin;

use jaring_proto::chat::realms::PeerEntry;

use crate::storage::{NewMessage, StoreResult, StoredMessage};

/// What a peer said about a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The user exists; their display name.
    Found(String),
    /// The peer answered: no such user.
    Missing,
    /// The peer could not be asked (link down, or no answer in time).
    Unreachable,
    /// Not one of our peers.
    NotPeer,
}

/// What a group's home realm answered to a join, once the replica membership is committed here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoteJoin {
    /// The join created the group on its home realm.
    pub created: bool,
    /// The join made the user a member (false: they were one).
    pub new_member: bool,
    /// The member's read cursor (a `seq` of the home realm's order).
    pub read_seq: i64,
}

/// A member of a group homed on a peer, as this realm names them: (address, display name, live on
/// the home realm).
pub type RemoteMember = (String, String, bool);

/// A boxed future, so [`Remote`] can be a trait object.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a realm asks of its federation; [`crate::federation::Federation`] implements it.
pub trait Remote: Send + Sync + 'static {
    /// The configured peers, by name.
    fn peer_names(&self) -> Vec<String>;
    /// Asks `realm` whether `user` exists.
    fn lookup<'a>(&'a self, realm: &'a str, user: &'a str) -> BoxFuture<'a, Lookup>;
    /// Commits `messages` (recipients `user@realm`) to `realm`'s outbox, in order, all or none;
    /// returns once durable.
    fn enqueue(
        &self,
        realm: &str,
        messages: Vec<NewMessage>,
    ) -> BoxFuture<'_, StoreResult<Vec<StoredMessage>>>;
    /// Every peer and its link state.
    fn status(&self) -> BoxFuture<'_, Vec<PeerEntry>>;
    /// Asks `realm` whether it is the home of a group `group` ([`Lookup::Found`] with the group's
    /// name).
    fn group_lookup<'a>(&'a self, realm: &'a str, group: &'a str) -> BoxFuture<'a, Lookup>;
    /// Makes `user` (of this realm) a member of `group` homed on `realm`: asks the home realm,
    /// then commits the membership of the replica `group@realm` here. The error says why not.
    fn group_join<'a>(
        &'a self,
        realm: &'a str,
        group: &'a str,
        user: &'a str,
    ) -> BoxFuture<'a, Result<RemoteJoin, String>>;
    /// Ends `user`'s membership of `group` homed on `realm`, on the home realm (the caller ends the
    /// replica's membership here).
    fn group_leave<'a>(
        &'a self,
        realm: &'a str,
        group: &'a str,
        user: &'a str,
    ) -> BoxFuture<'a, Result<(), String>>;
    /// The members of `group` homed on `realm`, as that realm lists them, named as this realm
    /// names them: (address, display name, live on the home realm); and whether the home had
    /// more than one answer carries.
    fn group_members<'a>(
        &'a self,
        realm: &'a str,
        group: &'a str,
    ) -> BoxFuture<'a, Result<(Vec<RemoteMember>, bool), String>>;
    /// Commits posts of this realm's users to a group homed on `realm` to its outbox (each
    /// recipient is `group@realm`), in order; returns once durable.
    fn group_post(
        &self,
        realm: &str,
        messages: Vec<NewMessage>,
    ) -> BoxFuture<'_, StoreResult<Vec<StoredMessage>>>;
}
