//! [`Realm`]: what a chat realm knows and does, independent of sockets and server models.
//!
//! The server hands it one parsed [`Command`] at a time and writes the reply it encodes. Commands
//! that change state wait for storage: `send` answers OK only once the message is committed. An
//! `inbox` reply comes with a [`Delivery`], which the server confirms only when the client sends
//! its next request on that connection (it has read the reply); until then the messages stay
//! undelivered, so a crash or a dropped connection in between means they are delivered again,
//! never lost.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jaring_proto::chat::auth::Auth;
use jaring_proto::chat::history::{self, History};
use jaring_proto::chat::reply::{
    self, AuthOk, HistoryOk, InboxOk, Message, Sent, Status, UserEntry, UsersOk,
};
use jaring_proto::chat::send::Send;
use jaring_proto::chat::{Address, Command};
use tracing::{error, info, warn};

mod admin_cmds;
mod group_cmds;
#[cfg(test)]
mod tests;
mod watch_cmds;

pub use admin_cmds::AdminError;

pub use group_cmds::{LiveSession, wire_group_message};
pub use watch_cmds::WatchStart;

use crate::clock::Clock;
use crate::groups::{DEFAULT_LIVE_QUEUE, DEFAULT_PRESENCE_MAX_MEMBERS, Hub};
use crate::limiter::{AuthLimiter, LimitConfig};
use crate::password::{PasswordCost, Passwords, hash_blocking};
use crate::remote::{Lookup, Remote};
use crate::storage::{NewMessage, Store, StoreError, StoredMessage, TokenRecord, Window};
use crate::token::{Refused, Tokens, new_token, token_hash};

/// Messages one `inbox` reply carries at most; the reply says `"more": true` when others wait.
pub const DEFAULT_INBOX_MAX_MESSAGES: usize = 1000;

/// Bytes of message text one `inbox` reply carries at most (at least one message always fits).
pub const DEFAULT_INBOX_MAX_BYTES: usize = 1024 * 1024;

/// Most messages one `history` reply returns, whatever N asks for.
pub const DEFAULT_HISTORY_MAX: usize = 1000;

/// Most bytes of one reply, as sent (after JSON escaping). A `history`, `users`, `groups` or
/// `members` reply that would be longer carries what fits, with `"more": true` and a `"next"`
/// cursor for the rest; an `inbox` or `inboxgroup` reply carries what fits and `"more": true`.
/// Every reply carries at least one item, whatever its size (a message is at most one request
/// line, 64 KiB by default).
pub const DEFAULT_MAX_REPLY_BYTES: usize = 1024 * 1024;

/// What a reply entry costs besides its strings (keys, quotes, flags), for sizing a page before
/// it is encoded; the encoding has the last word.
const ENTRY_OVERHEAD: usize = 64;

/// The ERROR for a wrong user name or a wrong password: the same text for both, so names cannot
/// be probed.
pub const BAD_LOGIN: &str = "wrong user name or password";

/// The ERROR for a token that is unknown, logged out or expired.
pub const BAD_TOKEN: &str = "unknown or expired token; log in again with: auth USER PASSWORD";

/// The ERROR when storage fails: details go to the log, not to the client.
pub(crate) const STORAGE_FAILED: &str = "the server could not store this; try again later";

/// Everything configurable about a realm's behaviour.
#[derive(Debug, Clone)]
pub struct RealmOptions {
    /// The realm's name (the `realm` in `name@realm`).
    pub name: String,
    /// Idle time after which a token expires.
    pub token_idle: Duration,
    /// Live tokens per user.
    pub tokens_per_user: usize,
    /// Failed-login limits.
    pub auth_limits: LimitConfig,
    /// Cost of new password hashes.
    pub password_cost: PasswordCost,
    /// Password hashes computed at once.
    pub hash_concurrency: usize,
    /// Messages per inbox reply.
    pub inbox_max_messages: usize,
    /// Text bytes per inbox reply.
    pub inbox_max_bytes: usize,
    /// Messages per history reply.
    pub history_max: usize,
    /// Bytes per reply (see [`DEFAULT_MAX_REPLY_BYTES`]).
    pub max_reply_bytes: usize,
    /// Events a live group session may fall behind before it is ended.
    pub live_queue: usize,
    /// Largest group whose joins and leaves are pushed as events.
    pub presence_max_members: usize,
    /// Least time between two writes of a live session in a large group (batching; see
    /// [`crate::groups::DEFAULT_EAGER_MAX_LIVE`]).
    pub live_flush: Duration,
    /// Groups one user may create.
    pub groups_per_user: usize,
}

impl Default for RealmOptions {
    fn default() -> Self {
        Self {
            name: "realm1".into(),
            token_idle: crate::token::DEFAULT_TOKEN_IDLE,
            tokens_per_user: crate::token::DEFAULT_TOKENS_PER_USER,
            auth_limits: LimitConfig::default(),
            password_cost: PasswordCost::default(),
            hash_concurrency: crate::password::DEFAULT_HASH_CONCURRENCY,
            inbox_max_messages: DEFAULT_INBOX_MAX_MESSAGES,
            inbox_max_bytes: DEFAULT_INBOX_MAX_BYTES,
            history_max: DEFAULT_HISTORY_MAX,
            max_reply_bytes: DEFAULT_MAX_REPLY_BYTES,
            live_queue: DEFAULT_LIVE_QUEUE,
            presence_max_members: DEFAULT_PRESENCE_MAX_MEMBERS,
            live_flush: crate::groups::DEFAULT_LIVE_FLUSH,
            groups_per_user: crate::groups::DEFAULT_GROUPS_PER_USER,
        }
    }
}

/// Why a realm could not start.
#[derive(Debug, thiserror::Error)]
pub enum RealmError {
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] crate::storage::StoreError),
    /// The password settings are unusable.
    #[error(transparent)]
    Password(#[from] crate::password::PasswordError),
}

#[derive(Debug, Clone)]
struct User {
    display_name: String,
    password_hash: String,
    /// A bench user (see `UserRecord::bench`): their cheap hash is never moved to the cost.
    bench: bool,
}

/// The state of one connection that the realm cares about: who it is, and which users it made
/// online.
#[derive(Debug)]
pub struct ConnState {
    peer: IpAddr,
    online_as: HashSet<String>,
    idle_timeout: Duration,
}

impl ConnState {
    /// A new connection from `peer`, closed after `idle_timeout` without a request (the `watch`
    /// reply tells the client, so it can ping in time).
    pub fn new(peer: IpAddr, idle_timeout: Duration) -> Self {
        Self {
            peer,
            online_as: HashSet::new(),
            idle_timeout,
        }
    }
}

/// Messages handed out by an `inbox` reply, waiting for the client to show it has the reply.
///
/// Confirm it with [`Realm::confirm`] once the connection sends its next request; dropping it
/// instead (the connection ended first) leaves the messages undelivered, to be returned by the
/// next `inbox`. While it is held, other connections of the user are handed none of them.
#[must_use = "confirm the delivery once the client has the reply, or drop it to redeliver"]
#[derive(Debug)]
pub struct Delivery {
    recipient: String,
    upto_seq: i64,
    leases: Arc<Mutex<HashSet<String>>>,
    /// For `inboxgroup`: (group, member), whose read cursor moves instead.
    group: Option<(String, String)>,
}

/// What the server does after writing a command's reply.
#[must_use = "confirm a delivery, or run the live session"]
#[derive(Debug)]
pub enum Outcome {
    /// Nothing more.
    Replied,
    /// Confirm this delivery once the reply is written.
    Deliver(Delivery),
    /// The connection is now a live group session.
    Live(LiveSession),
    /// The connection now watches: push its user's messages.
    Watch(WatchStart),
}

impl Drop for Delivery {
    fn drop(&mut self) {
        lock(&self.leases).remove(&self.recipient);
    }
}

/// Groups [`Realm::overview`] lists, the largest first.
pub const DEFAULT_OVERVIEW_GROUPS: usize = 10;

/// A realm at one instant, for dashboards and metrics.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RealmOverview {
    /// The realm's name.
    pub realm: String,
    /// Users.
    pub users: u64,
    /// Users logged in on at least one connection.
    pub online: u64,
    /// Live session tokens.
    pub sessions: u64,
    /// Failed logins since the realm started.
    pub failed_logins: u64,
    /// Groups.
    pub groups: u64,
    /// The largest groups.
    pub largest_groups: Vec<GroupSize>,
    /// Each link to a peer realm: state and outbox depth.
    pub links: Vec<jaring_proto::chat::realms::PeerEntry>,
}

/// A group's size.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct GroupSize {
    /// The group's name.
    pub name: String,
    /// Members.
    pub members: u64,
    /// Live sessions open on it.
    pub live: u64,
}

/// A chat realm: users, tokens, presence and the durable store behind them.
pub struct Realm<S> {
    options: RealmOptions,
    store: S,
    users: RwLock<BTreeMap<String, User>>,
    tokens: Mutex<Tokens>,
    online: Mutex<HashMap<String, usize>>,
    limiter: Mutex<AuthLimiter>,
    passwords: Passwords,
    clock: Arc<dyn Clock>,
    /// Users whose inbox reply is on its way; a second `inbox` meanwhile gets nothing rather than
    /// the same messages again.
    leases: Arc<Mutex<HashSet<String>>>,
    /// The groups, their members and their live fan-out.
    groups: Arc<Hub>,
    /// Verified against when the user does not exist, so a wrong name costs the same as a wrong
    /// password and timing does not reveal which names exist.
    dummy_hash: String,
    /// The federation, once started: how `user@realm` and unknown bare names reach peers.
    remote: OnceLock<Arc<dyn Remote>>,
    /// Failed logins since the start (for the dashboard).
    failed_logins: std::sync::atomic::AtomicU64,
}

/// Where an address leads.
enum Target {
    /// A user of this realm: name and display name.
    Local(String, String),
    /// A user of a peer realm: `user@realm`, the realm, and the display name if the peer said.
    Remote(String, String, Option<String>),
}

impl<S> std::fmt::Debug for Realm<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Realm")
            .field("name", &self.options.name)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section is a few map operations that leave the map consistent.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl<S: Store> Realm<S> {
    /// Loads users and live tokens from `store`.
    pub async fn open(
        options: RealmOptions,
        store: S,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, RealmError> {
        let passwords = Passwords::new(options.password_cost, options.hash_concurrency)?;
        let users: BTreeMap<String, User> = store
            .users()
            .await?
            .into_iter()
            .map(|u| {
                (
                    u.name,
                    User {
                        display_name: u.display_name,
                        password_hash: u.password_hash,
                        bench: u.bench,
                    },
                )
            })
            .collect();
        let now = clock.now();
        let mut tokens = Tokens::new(options.token_idle, options.tokens_per_user);
        let mut stale = Vec::new();
        for t in store.tokens().await? {
            // A restart gives every surviving token a fresh idle period.
            if users.contains_key(&t.user) {
                if let Some(evicted) = tokens.insert(t.hash, &t.user, now) {
                    stale.push(evicted);
                }
            } else {
                stale.push(t.hash);
            }
        }
        store.delete_tokens(stale).await?;
        let cost = options.password_cost;
        let dummy_hash = tokio::task::spawn_blocking(move || hash_blocking("jaring-dummy", cost))
            .await
            .map_err(|_| crate::password::PasswordError::Stopped)??;
        let groups = Arc::new(Hub::new(options.live_queue, options.presence_max_members));
        groups.load(store.groups().await?, store.memberships().await?);
        Ok(Self {
            groups,
            limiter: Mutex::new(AuthLimiter::new(options.auth_limits)),
            options,
            store,
            users: RwLock::new(users),
            tokens: Mutex::new(tokens),
            online: Mutex::default(),
            passwords,
            clock,
            leases: Arc::default(),
            dummy_hash,
            remote: OnceLock::new(),
            failed_logins: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// The realm's name.
    pub fn name(&self) -> &str {
        &self.options.name
    }

    /// The store behind the realm.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// Users in the realm.
    pub fn user_count(&self) -> usize {
        self.users
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Live tokens.
    pub fn token_count(&self) -> usize {
        lock(&self.tokens).len()
    }

    /// What the lab's dashboard and `/metrics` show of the realm now: its users and sessions,
    /// its links (state and outbox depth) and its largest groups.
    pub async fn overview(&self) -> RealmOverview {
        let links = match self.remote.get() {
            Some(r) => r.status().await,
            None => Vec::new(),
        };
        RealmOverview {
            realm: self.options.name.clone(),
            users: self.user_count() as u64,
            online: lock(&self.online).len() as u64,
            sessions: self.token_count() as u64,
            failed_logins: self
                .failed_logins
                .load(std::sync::atomic::Ordering::Relaxed),
            groups: self.groups.group_count() as u64,
            largest_groups: self
                .groups
                .largest(DEFAULT_OVERVIEW_GROUPS)
                .into_iter()
                .map(|(name, members, live)| GroupSize {
                    name,
                    members: members as u64,
                    live: live as u64,
                })
                .collect(),
            links,
        }
    }

    /// Connects the realm to its federation; a second call is ignored.
    pub fn set_remote(&self, remote: Arc<dyn Remote>) {
        let _ = self.remote.set(remote);
    }

    /// A local user's display name, or `None` if there is no such user.
    pub fn display_name(&self, name: &str) -> Option<String> {
        self.user(name).map(|u| u.display_name)
    }

    fn user(&self, name: &str) -> Option<User> {
        self.users
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .cloned()
    }

    /// Executes `command` for the connection `conn`, appending the reply to `out`. An `inbox` or
    /// `inboxgroup` with messages returns the [`Delivery`] to confirm once `out` is written; a
    /// `group` that succeeded returns the [`LiveSession`] the connection turns into.
    pub async fn execute(
        &self,
        conn: &mut ConnState,
        command: Command,
        out: &mut Vec<u8>,
    ) -> Outcome {
        match command {
            Command::Auth(c) => self.auth(conn, c, out).await,
            Command::Send(c) => self.send(conn, c, out).await,
            Command::Inbox(c) => {
                return self
                    .inbox(conn, &c.token, c.since, out)
                    .await
                    .map_or(Outcome::Replied, Outcome::Deliver);
            }
            Command::Logout(c) => self.logout(conn, &c.token, out).await,
            Command::Users(c) => {
                self.users_cmd(conn, &c.token, c.after.as_deref(), out)
                    .await
            }
            Command::History(c) => self.history(conn, c, out).await,
            Command::Group(c) => {
                return self
                    .group_join(conn, c, out)
                    .await
                    .map_or(Outcome::Replied, Outcome::Live);
            }
            Command::SendGroup(c) => self.sendgroup(conn, c, out).await,
            Command::InboxGroup(c) => {
                return self
                    .inboxgroup(conn, &c.token, &c.group, c.since, out)
                    .await
                    .map_or(Outcome::Replied, Outcome::Deliver);
            }
            Command::Groups(c) => {
                self.groups_cmd(conn, &c.token, c.after.as_deref(), out)
                    .await;
            }
            Command::Members(c) => {
                self.members_cmd(conn, &c.token, &c.group, c.after.as_deref(), out)
                    .await;
            }
            Command::Leave(c) => self.leave_cmd(conn, &c.token, &c.group, out).await,
            Command::Realms(c) => self.realms(conn, &c.token, out).await,
            Command::Watch(c) => {
                let idle = conn.idle_timeout.as_secs();
                return self
                    .watch(conn, c, idle, out)
                    .await
                    .map_or(Outcome::Replied, Outcome::Watch);
            }
            Command::Ack(c) => self.ack(conn, c, out).await,
            Command::Ping(c) => self.ping(conn, c, out).await,
        }
        Outcome::Replied
    }

    /// Confirms that the client has an inbox reply: its messages are now delivered.
    pub async fn confirm(&self, delivery: Delivery) {
        if let Some((group, user)) = &delivery.group {
            self.advance_cursor(group, user, delivery.upto_seq, true)
                .await;
            return;
        }
        if let Err(e) = self
            .store
            .mark_delivered(&delivery.recipient, delivery.upto_seq)
            .await
        {
            // Not marked means delivered again later: a duplicate, never a loss.
            error!(error = %e, user = %delivery.recipient, "cannot mark messages delivered");
        }
        drop(delivery);
    }

    /// The connection closed: its users go offline unless another connection holds them.
    pub fn disconnect(&self, conn: &mut ConnState) {
        let mut online = lock(&self.online);
        for user in conn.online_as.drain() {
            if let Some(n) = online.get_mut(&user) {
                *n -= 1;
                if *n == 0 {
                    online.remove(&user);
                }
            }
        }
    }

    /// Removes expired tokens from memory and storage; the server calls it now and then.
    pub async fn sweep(&self) {
        let expired = lock(&self.tokens).sweep(self.clock.now());
        if !expired.is_empty() {
            let n = expired.len();
            if let Err(e) = self.store.delete_tokens(expired).await {
                warn!(error = %e, "cannot delete expired tokens");
            } else {
                info!(expired = n, "expired idle tokens");
            }
        }
    }

    fn mark_online(&self, conn: &mut ConnState, user: &str) {
        if !conn.online_as.contains(user) {
            conn.online_as.insert(user.to_owned());
            *lock(&self.online).entry(user.to_owned()).or_default() += 1;
        }
    }

    /// The user a token belongs to, or the ERROR reply already appended.
    async fn resolve(
        &self,
        conn: &mut ConnState,
        token: &str,
        out: &mut Vec<u8>,
    ) -> Option<String> {
        let result = lock(&self.tokens).resolve(token, self.clock.now());
        match result {
            Ok(user) => {
                self.mark_online(conn, &user);
                Some(user)
            }
            Err(refused) => {
                if let Refused::Expired(hash) = refused
                    && let Err(e) = self.store.delete_tokens(vec![hash]).await
                {
                    warn!(error = %e, "cannot delete an expired token");
                }
                reply::encode_error(BAD_TOKEN, out);
                None
            }
        }
    }

    async fn auth(&self, conn: &mut ConnState, c: Auth, out: &mut Vec<u8>) {
        let now = self.clock.now();
        if let Err(limited) = lock(&self.limiter).check(conn.peer, &c.user, now) {
            reply::encode_error(limited, out);
            return;
        }
        let (stored, bench) = self
            .user(&c.user)
            .map_or((None, false), |u| (Some(u.password_hash), u.bench));
        let checked = self
            .passwords
            .check(c.password, stored.clone(), self.dummy_hash.clone())
            .await;
        let checked = match checked {
            Ok(checked) => checked,
            Err(e) => {
                error!(error = %e, "password verification failed");
                reply::encode_error(STORAGE_FAILED, out);
                return;
            }
        };
        // A bench user's cheap hash stays cheap: a thousand bench logins would otherwise cost a
        // thousand hashes at full cost.
        if let (Some(old), Some(new), false) = (&stored, &checked.rehashed, bench) {
            self.store_rehash(&c.user, old, new).await;
        }
        if !checked.matched {
            self.failed_logins
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            lock(&self.limiter).fail(conn.peer, &c.user, self.clock.now());
            info!(peer = %conn.peer, user = %c.user, "failed login");
            reply::encode_error(BAD_LOGIN, out);
            return;
        }
        let token = new_token();
        let hash = token_hash(&token);
        if let Err(e) = self
            .store
            .insert_token(TokenRecord {
                hash,
                user: c.user.clone(),
            })
            .await
        {
            error!(error = %e, "cannot store a token");
            reply::encode_error(STORAGE_FAILED, out);
            return;
        }
        let evicted = lock(&self.tokens).insert(hash, &c.user, self.clock.now());
        if let Some(old) = evicted {
            let _ = self.store.delete_tokens(vec![old]).await;
        }
        self.mark_online(conn, &c.user);
        let (unread, unread_more) = self.unread_private(&c.user).await;
        reply::encode(
            &AuthOk {
                status: Status::Ok,
                tokenid: token,
                unread,
                unread_more,
                unread_groups: self.groups.unread(&c.user),
            },
            out,
        );
    }

    /// The user's undelivered private messages counted by sender (at most the first
    /// `inbox_max_messages` and `inbox_max_bytes` of them; `true` when more wait).
    async fn unread_private(&self, user: &str) -> (BTreeMap<String, u64>, bool) {
        let limit = self.options.inbox_max_messages.max(1);
        let page = match self
            .store
            .pending(user, limit + 1, self.options.inbox_max_bytes)
            .await
        {
            Ok(page) => page,
            Err(e) => {
                // Counting is a courtesy: the login itself succeeded.
                warn!(error = %e, %user, "cannot count unread messages");
                return (BTreeMap::new(), false);
            }
        };
        let mut counts = BTreeMap::new();
        for m in page.messages.iter().take(limit) {
            *counts.entry(m.message.sender.clone()).or_default() += 1;
        }
        (counts, page.cut || page.messages.len() > limit)
    }

    /// Keeps a login's new hash of its user's password, now at the configured cost, in storage
    /// and then in memory. On failure the old hash stays, which still verifies: the next login
    /// tries again.
    async fn store_rehash(&self, name: &str, old: &str, new: &str) {
        if let Err(e) = self.store.rehash_password(name, old, new).await {
            warn!(error = %e, user = %name, "cannot store a password hash at the configured cost");
            return;
        }
        let mut users = self.users.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(u) = users.get_mut(name).filter(|u| u.password_hash == old) {
            u.password_hash = new.to_owned();
        }
    }

    /// Whether `addr` names another realm, which is refused (the ERROR appended) until
    /// federation is configured.
    fn refuse_foreign(&self, addr: &Address, out: &mut Vec<u8>) -> bool {
        if addr.is_in(&self.options.name) {
            return false;
        }
        reply::encode_error(
            format_args!(
                "no link to realm {:?}: this realm ({}) has no federation peers configured",
                addr.realm.as_deref().unwrap_or_default(),
                self.options.name
            ),
            out,
        );
        true
    }

    /// The local user an address names, or the ERROR appended.
    fn local_user(&self, addr: &Address, out: &mut Vec<u8>) -> Option<User> {
        if self.refuse_foreign(addr, out) {
            return None;
        }
        let user = self.user(&addr.name);
        if user.is_none() {
            reply::encode_error(
                format_args!("no user {:?} on realm {}", addr.name, self.options.name),
                out,
            );
        }
        user
    }

    /// Resolves an address: a local user first; `user@peer` through the peer; a bare name that is
    /// no local user through every peer (exactly one must have it). Or the ERROR appended.
    async fn target(&self, addr: &Address, out: &mut Vec<u8>) -> Option<Target> {
        let remote = self.remote.get();
        if let Some(realm) = addr.realm.as_deref()
            && realm != self.options.name
        {
            let Some(remote) = remote else {
                reply::encode_error(
                    format_args!(
                        "no link to realm {realm:?}: this realm ({}) has no federation peers configured",
                        self.options.name
                    ),
                    out,
                );
                return None;
            };
            return match remote.lookup(realm, &addr.name).await {
                Lookup::Found(d) => Some(Target::Remote(addr.to_string(), realm.into(), Some(d))),
                // Queued; if the user turns out not to exist, the sender gets a bounce.
                Lookup::Unreachable => Some(Target::Remote(addr.to_string(), realm.into(), None)),
                Lookup::Missing => {
                    reply::encode_error(
                        format_args!("no user {:?} on realm {realm}", addr.name),
                        out,
                    );
                    None
                }
                Lookup::NotPeer => {
                    reply::encode_error(
                        format_args!(
                            "no link to realm {realm:?}: this realm ({}) links to {}",
                            self.options.name,
                            remote.peer_names().join(", ")
                        ),
                        out,
                    );
                    None
                }
            };
        }
        if let Some(u) = self.user(&addr.name) {
            return Some(Target::Local(addr.name.clone(), u.display_name));
        }
        if let (None, Some(remote)) = (&addr.realm, remote) {
            let mut found = Vec::new();
            let mut unreachable = Vec::new();
            for realm in remote.peer_names() {
                match remote.lookup(&realm, &addr.name).await {
                    Lookup::Found(d) => found.push((realm, d)),
                    Lookup::Unreachable => unreachable.push(realm),
                    Lookup::Missing | Lookup::NotPeer => {}
                }
            }
            match found.len() {
                1 => {
                    let (realm, d) = found.remove(0);
                    return Some(Target::Remote(
                        format!("{}@{realm}", addr.name),
                        realm,
                        Some(d),
                    ));
                }
                0 => {}
                _ => {
                    let names: Vec<String> = found
                        .iter()
                        .map(|(r, _)| format!("{}@{r}", addr.name))
                        .collect();
                    reply::encode_error(
                        format_args!(
                            "{:?} is a user on several realms; say which: {}",
                            addr.name,
                            names.join(" or ")
                        ),
                        out,
                    );
                    return None;
                }
            }
            let mut text = format!(
                "no user {:?} on realm {} or its peers",
                addr.name, self.options.name
            );
            if !unreachable.is_empty() {
                text.push_str(&format!(
                    " ({} unreachable now: to queue for later, write {}@REALM)",
                    unreachable.join(", "),
                    addr.name
                ));
            }
            reply::encode_error(text, out);
            return None;
        }
        self.local_user(addr, out);
        None
    }

    async fn send(&self, conn: &mut ConnState, c: Send, out: &mut Vec<u8>) {
        self.send_many(conn, vec![c], out).await;
    }

    /// `send`s that arrived together on one connection (a client pipelining its sends): the
    /// local ones are committed as one write, so they cost one queue slot and one wake-up
    /// between them, and the replies go out in request order.
    pub async fn send_many(&self, conn: &mut ConnState, sends: Vec<Send>, out: &mut Vec<u8>) {
        // Each send's ERROR, or which destination (this realm: `None`, or a peer) it goes to.
        let mut slots = Vec::with_capacity(sends.len());
        let mut destinations: Vec<(Option<String>, Vec<NewMessage>)> = Vec::new();
        for c in sends {
            let mut error = Vec::new();
            let Some((message, via)) = self.prepare_send(conn, c, &mut error).await else {
                slots.push(Err(error));
                continue;
            };
            let at = match destinations.iter().position(|(d, _)| *d == via) {
                Some(at) => at,
                None => {
                    destinations.push((via, Vec::new()));
                    destinations.len() - 1
                }
            };
            destinations[at].1.push(message);
            slots.push(Ok(at));
        }
        let mut results = Vec::with_capacity(destinations.len());
        for (via, messages) in destinations {
            let n = messages.len();
            let stored = match (via, self.remote.get()) {
                (Some(realm), Some(remote)) => match remote.enqueue(&realm, messages).await {
                    Ok(stored) => stored.into_iter().map(|m| Ok(Arc::new(m))).collect(),
                    Err(e) => {
                        error!(error = %e, "cannot store messages for another realm");
                        (0..n).map(|_| Err(StoreError::Stopped)).collect()
                    }
                },
                _ => {
                    let stored = self.store.insert_messages(messages).await;
                    for m in stored.iter().flatten() {
                        self.groups.wake_private(&m.message.recipient);
                    }
                    stored
                }
            };
            results.push(stored.into_iter());
        }
        for slot in slots {
            let at = match slot {
                Err(error) => {
                    out.extend_from_slice(&error);
                    continue;
                }
                Ok(at) => at,
            };
            match results[at].next().unwrap_or(Err(StoreError::Stopped)) {
                Ok(stored) => reply::encode(
                    &Sent {
                        status: Status::Ok,
                        message: "Message Sent".into(),
                        id: stored.message.id.to_string(),
                    },
                    out,
                ),
                Err(e) => {
                    error!(error = %e, "cannot store a message");
                    reply::encode_error(STORAGE_FAILED, out);
                }
            }
        }
    }

    /// Checks a `send` and builds its message, with the peer realm it goes to if it is remote;
    /// `None` with the ERROR in `out` if it cannot be sent.
    async fn prepare_send(
        &self,
        conn: &mut ConnState,
        c: Send,
        out: &mut Vec<u8>,
    ) -> Option<(NewMessage, Option<String>)> {
        let from = self.resolve(conn, &c.token, out).await?;
        let target = self.target(&c.to, out).await?;
        let sender_display = self
            .user(&from)
            .map_or_else(|| from.clone(), |u| u.display_name);
        let (recipient, recipient_display, via) = match target {
            Target::Local(name, display) => (name, display, None),
            Target::Remote(addr, realm, display) => {
                (addr.clone(), display.unwrap_or(addr), Some(realm))
            }
        };
        let message = NewMessage {
            id: uuid::Uuid::now_v7(),
            sender: from,
            sender_display,
            recipient,
            recipient_display,
            body: c.message,
            sent_at: unix_ms(),
        };
        Some((message, via))
    }

    async fn realms(&self, conn: &mut ConnState, token: &str, out: &mut Vec<u8>) {
        if self.resolve(conn, token, out).await.is_none() {
            return;
        }
        let peers = match self.remote.get() {
            Some(r) => r.status().await,
            None => Vec::new(),
        };
        reply::encode(
            &jaring_proto::chat::realms::RealmsOk {
                status: Status::Ok,
                realm: self.options.name.clone(),
                peers,
            },
            out,
        );
    }

    async fn inbox(
        &self,
        conn: &mut ConnState,
        token: &str,
        since: Option<i64>,
        out: &mut Vec<u8>,
    ) -> Option<Delivery> {
        let user = self.resolve(conn, token, out).await?;
        if let Some(since) = since.filter(|s| *s > 0)
            && let Err(e) = self.store.mark_delivered(&user, since).await
        {
            error!(error = %e, "cannot mark messages delivered");
            reply::encode_error(STORAGE_FAILED, out);
            return None;
        }
        if !lock(&self.leases).insert(user.clone()) {
            // Another connection of this user is being handed these very messages right now.
            reply::encode(&InboxOk::default(), out);
            return None;
        }
        let delivery = Delivery {
            recipient: user.clone(),
            upto_seq: 0,
            leases: Arc::clone(&self.leases),
            group: None,
        };
        let limit = self.options.inbox_max_messages.max(1);
        // One more than a reply carries, to tell whether more wait.
        let page = match self
            .store
            .pending(&user, limit + 1, self.options.inbox_max_bytes)
            .await
        {
            Ok(p) => p,
            Err(e) => {
                error!(error = %e, "cannot read an inbox");
                reply::encode_error(STORAGE_FAILED, out);
                return None;
            }
        };
        let pending = page.messages;
        let taken = pending.len().min(limit);
        let more = page.cut || taken < pending.len();
        let sent = reply::encode_fitting(
            taken,
            self.options.max_reply_bytes,
            |k| {
                let mut inbox = InboxOk {
                    messages: Vec::new(),
                    more: more || k < taken,
                };
                for m in &pending[..k] {
                    let wire = wire_message(m);
                    match inbox
                        .messages
                        .iter_mut()
                        .find(|(s, _)| *s == m.message.sender)
                    {
                        Some((_, list)) => list.push(wire),
                        None => inbox.messages.push((m.message.sender.clone(), vec![wire])),
                    }
                }
                inbox
            },
            out,
        );
        let mut delivery = delivery;
        delivery.upto_seq = pending[..sent].last()?.seq;
        Some(delivery)
    }

    async fn logout(&self, conn: &mut ConnState, token: &str, out: &mut Vec<u8>) {
        let Some(user) = self.resolve(conn, token, out).await else {
            return;
        };
        let hash = token_hash(token);
        lock(&self.tokens).remove(&hash);
        self.groups
            .end_watches_of(&hash, "the token was logged out; log in again and watch");
        if conn.online_as.remove(&user) {
            let mut online = lock(&self.online);
            if let Some(n) = online.get_mut(&user) {
                *n -= 1;
                if *n == 0 {
                    online.remove(&user);
                }
            }
        }
        if let Err(e) = self.store.delete_tokens(vec![hash]).await {
            error!(error = %e, "cannot delete a token");
        }
        reply::encode_ok("Logged Out", out);
    }

    async fn users_cmd(
        &self,
        conn: &mut ConnState,
        token: &str,
        after: Option<&str>,
        out: &mut Vec<u8>,
    ) {
        if self.resolve(conn, token, out).await.is_none() {
            return;
        }
        let online = lock(&self.online);
        let users = self.users.read().unwrap_or_else(PoisonError::into_inner);
        let range = match after {
            Some(after) => users
                .range::<str, _>((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded)),
            None => users.range::<str, _>(..),
        };
        let (page, left_out) = size_page(
            range.map(|(name, u)| UserEntry {
                name: name.clone(),
                display_name: u.display_name.clone(),
                online: online.contains_key(name),
            }),
            self.options.max_reply_bytes,
            |u| u.name.len() + u.display_name.len(),
        );
        drop(users);
        drop(online);
        encode_name_page(
            &page,
            left_out,
            self.options.max_reply_bytes,
            |u| &u.name,
            |users, more, next| UsersOk {
                status: Status::Ok,
                users,
                more,
                next,
            },
            out,
        );
    }

    async fn history(&self, conn: &mut ConnState, c: History, out: &mut Vec<u8>) {
        let Some(user) = self.resolve(conn, &c.token, out).await else {
            return;
        };
        let n = (c.count.unwrap_or(history::DEFAULT_COUNT) as usize).min(self.options.history_max);
        let window = Window {
            limit: n,
            before: c.before,
            max_bytes: self.options.max_reply_bytes,
        };
        // A user's name means the conversation with them; otherwise the name may be a group's
        // (a group cannot be created under a user's name).
        if c.peer.is_in(&self.options.name)
            && self.user(&c.peer.name).is_none()
            && self.groups.exists(&c.peer.name)
        {
            self.group_history(&user, &c.peer.name, window, out).await;
            return;
        }
        // `name@peer` is the replica of a group homed on the peer, once someone here joined it; a
        // bare name that is no user here may be the one such replica this realm keeps.
        let replica = if c.peer.is_in(&self.options.name) {
            self.kept_replica(&c.peer.name)
                .filter(|_| self.user(&c.peer.name).is_none())
        } else {
            Some(c.peer.to_string()).filter(|g| self.groups.exists(g))
        };
        if let Some(group) = replica {
            self.group_history(&user, &group, window, out).await;
            return;
        }
        let peer = match self.target(&c.peer, out).await {
            Some(Target::Local(name, _) | Target::Remote(name, _, _)) => name,
            None => return,
        };
        match self.store.conversation(&user, &peer, window).await {
            Ok(page) => {
                let wire: Vec<Message> = page.messages.iter().map(wire_message).collect();
                encode_seq_page(
                    &wire,
                    |i| page.messages[i].seq,
                    page.cut,
                    self.options.max_reply_bytes,
                    |messages, more, next| HistoryOk {
                        status: Status::Ok,
                        peer: peer.clone(),
                        messages,
                        more,
                        next,
                    },
                    out,
                );
            }
            Err(e) => {
                error!(error = %e, "cannot read a conversation");
                reply::encode_error(STORAGE_FAILED, out);
            }
        }
    }
}

/// The items of a name-sorted list that fit in a reply of `cap` bytes by their raw `size` (the
/// first always), and whether any were left out.
fn size_page<T>(
    items: impl Iterator<Item = T>,
    cap: usize,
    size: impl Fn(&T) -> usize,
) -> (Vec<T>, bool) {
    let mut page = Vec::new();
    let mut bytes = 0;
    for item in items {
        bytes += size(&item) + ENTRY_OVERHEAD;
        if !page.is_empty() && bytes > cap {
            return (page, true);
        }
        page.push(item);
    }
    (page, false)
}

/// Encodes a page of a name-sorted list: as many of `items` as fit in `cap` bytes, with `more`
/// and the `next` cursor (the last name sent) when any were left out.
fn encode_name_page<T: Clone, R: serde::Serialize>(
    items: &[T],
    left_out: bool,
    cap: usize,
    name: impl Fn(&T) -> &str,
    make: impl Fn(Vec<T>, bool, Option<String>) -> R,
    out: &mut Vec<u8>,
) {
    reply::encode_fitting(
        items.len(),
        cap,
        |k| {
            let more = left_out || k < items.len();
            let next = items[..k]
                .last()
                .filter(|_| more)
                .map(|t| name(t).to_owned());
            make(items[..k].to_vec(), more, next)
        },
        out,
    );
}

/// Encodes a page of history, oldest first: the newest of `messages` that fit in `cap` bytes,
/// with `more` and the `next` cursor (the oldest sent message's seq) when older ones were left
/// out, here or by the store (`cut`).
pub(crate) fn encode_seq_page<T: Clone, R: serde::Serialize>(
    messages: &[T],
    seq: impl Fn(usize) -> i64,
    cut: bool,
    cap: usize,
    make: impl Fn(Vec<T>, bool, Option<String>) -> R,
    out: &mut Vec<u8>,
) {
    let n = messages.len();
    reply::encode_fitting(
        n,
        cap,
        |k| {
            let more = cut || k < n;
            let next = (more && k > 0).then(|| seq(n - k).to_string());
            make(messages[n - k..].to_vec(), more, next)
        },
        out,
    );
}

pub(crate) fn wire_message(stored: &StoredMessage) -> Message {
    let m = &stored.message;
    Message {
        msg_from: m.sender_display.clone(),
        msg_to: m.recipient_display.clone(),
        msg: m.body.clone(),
        id: m.id.to_string(),
        from: m.sender.clone(),
        to: m.recipient.clone(),
        sent_at: m.sent_at,
        seq: stored.seq,
    }
}

/// The lab's users, for the demo realm: name, display name; every password is `surabaya`.
pub const DEMO_USERS: [(&str, &str); 3] = [
    ("messi", "Lionel Messi"),
    ("henderson", "Jordan Henderson"),
    ("lineker", "Gary Lineker"),
];

/// The demo realm's password, as in the lab.
pub const DEMO_PASSWORD: &str = "surabaya";

impl<S: Store> crate::federation::LinkRealm for Realm<S> {
    fn name(&self) -> &str {
        Realm::name(self)
    }

    fn hub(&self) -> &Arc<Hub> {
        Realm::hub(self)
    }

    fn display_name(&self, user: &str) -> Option<String> {
        Realm::display_name(self, user)
    }

    fn members_for_peer(&self, group: &str) -> Option<Vec<jaring_proto::federation::GroupMember>> {
        Realm::members_for_peer(self, group)
    }

    fn join_for_peer<'a>(
        &'a self,
        group: &'a str,
        member: &'a str,
    ) -> crate::remote::BoxFuture<'a, Result<crate::storage::JoinOutcome, String>> {
        Box::pin(Realm::join_for_peer(self, group, member))
    }

    fn leave_for_peer<'a>(
        &'a self,
        group: &'a str,
        member: &'a str,
    ) -> crate::remote::BoxFuture<'a, Result<(), String>> {
        Box::pin(Realm::leave_for_peer(self, group, member))
    }

    fn post_relayed(
        &self,
        posts: Vec<crate::storage::NewGroupMessage>,
    ) -> crate::remote::BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move { Realm::post_relayed(self, posts).await.map(drop) })
    }

    fn set_remote(&self, remote: Arc<dyn Remote>) {
        Realm::set_remote(self, remote);
    }
}
