//! [`PostgresStore`]: a chat realm's storage in PostgreSQL, for a realm that outgrows its SQLite
//! file or an operator who runs PostgreSQL already. It keeps the guarantees of the SQLite store
//! (`jaring-chat-sqlite`, the reference for every semantic); `docs/design/storage-postgres.md`
//! says how, and what it measured.
//!
//! # Layout
//! - `writer`: the one writer task and its group commit: every write of a batch in one
//!   transaction, each operation under a savepoint, one `COMMIT`, then the answers.
//! - `schema`: the versioned schema (`jaring_schema`) and its migrations.
//! - this module: opening (connection checks, the lock, migrations), the reader pool and the
//!   private messages ([`Store`]).
//! - `groups`, `federation`, `users`: the other traits of the port.
//! - [`error`]: the crate's own [`Error`], turned into the port's `StoreError` at its boundary.
//!
//! # Two servers on one database: the second refuses
//! [`PostgresStore::open`] takes a session-level advisory lock (`pg_try_advisory_lock`, key
//! [`LOCK_KEY`]) on a connection of its own and keeps it for as long as the store lives.
//! A second realm server on the same database, or `jaring chat user …` while a server runs,
//! fails to open with "database X is in use by another jaring realm server; stop it first".
//! That is the chosen answer for now: a realm server keeps its users, groups and mailboxes in
//! memory and assigns group `seq`s from one writer, which two servers would not share (the
//! multi-node issue lifts this). If the lock session is lost (the database restarted), the writer
//! takes the lock again before it writes again; while another server holds it, writes fail.
//! When the last clone goes, the writer commits what is queued and releases the lock;
//! [`PostgresStore::close`] waits for that, so the database can be opened again at once.
//!
//! # Failures
//! - Start-up with the database unreachable fails with [`StoreError::Open`] naming host, port and
//!   database and what to do.
//! - A write answers OK only after its transaction committed. If the connection is lost during a
//!   batch, every caller of the batch gets `StoreError::Unavailable`; if it is lost during
//!   `COMMIT`, whose outcome is then unknown, they get `Unavailable` too: nothing is acknowledged
//!   that is not known to be committed. A message that did commit may then be sent again by its
//!   sender; a federated message's retry is de-duplicated by its id (`federated_ids`), a local
//!   one is stored twice (as with any client retry after a lost reply).
//! - The writer reconnects by itself, with exponential back-off from [`RECONNECT_MIN`]
//!   to [`RECONNECT_MAX`]; meanwhile writes fail at once with `Unavailable` rather than
//!   wait. Readers get `Unavailable` too, and the pool replaces closed connections.
//! - Connections are made without TLS (`NoTls`): use a loopback or otherwise trusted network.

use std::str::FromStr as _;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use jaring_chat::storage::{
    NewMessage, Page, Store, StoreError, StoreResult, StoredMessage, TokenRecord, UserRecord,
    Window, WindowTaker, conversation_key,
};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row};
use tracing::{info, warn};

pub mod error;
mod federation;
mod groups;
mod schema;
mod users;
mod writer;

pub use error::{Error, PgResult};
pub use schema::SCHEMA_VERSION;
use writer::{BoxFuture, Db, Fate, Finish, Op, Target, Writer, job};
pub use writer::{LOCK_KEY, RECONNECT_MAX, RECONNECT_MIN};

/// Most write operations the writer runs in one transaction. More waiting are left for the next.
pub const DEFAULT_MAX_BATCH: usize = 4096;

/// Reader connections at most; reads past it wait for one.
pub const DEFAULT_POOL_SIZE: usize = 8;

/// How long connecting may take before it counts as failed (at start: the store does not open;
/// later: that reconnection attempt failed).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Writes that may wait for the writer. When full, writers wait (backpressure) instead of
/// queueing without bound.
pub const DEFAULT_WRITE_QUEUE: usize = 16 * 1024;

/// How the store uses PostgreSQL. `Default` gives the `DEFAULT_*` values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresOptions {
    /// Most write operations in one transaction ([`DEFAULT_MAX_BATCH`]).
    pub max_batch: usize,
    /// Reader connections at most ([`DEFAULT_POOL_SIZE`]).
    pub pool_size: usize,
    /// Longest a connection attempt may take ([`DEFAULT_CONNECT_TIMEOUT`]).
    pub connect_timeout: Duration,
    /// Writes that may wait for the writer ([`DEFAULT_WRITE_QUEUE`]).
    pub write_queue: usize,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        Self {
            max_batch: DEFAULT_MAX_BATCH,
            pool_size: DEFAULT_POOL_SIZE,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            write_queue: DEFAULT_WRITE_QUEUE,
        }
    }
}

/// The PostgreSQL store. Cloning shares the writer and the reader pool; the writer commits what
/// is queued and ends (releasing the database's lock) when the last clone is dropped; to wait
/// for that, give the last clone up with [`PostgresStore::close`].
#[derive(Clone)]
pub struct PostgresStore {
    writes: mpsc::Sender<Op>,
    pool: Pool,
    /// `host:port/database`, for messages.
    target: Arc<str>,
    /// The writer task, taken by the [`PostgresStore::close`] of the last clone to wait for it.
    writer: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

/// `host:port` of each host in `config`, for messages (never the password).
fn hosts(config: &tokio_postgres::Config) -> String {
    let ports = config.get_ports();
    config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
            match h {
                tokio_postgres::config::Host::Tcp(h) => format!("{h}:{port}"),
                tokio_postgres::config::Host::Unix(p) => format!("{}:{port}", p.display()),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

impl PostgresStore {
    /// [`Self::open_with`] with the default options.
    pub async fn open(url: &str) -> StoreResult<Self> {
        Self::open_with(url, PostgresOptions::default()).await
    }

    /// Connects to the database at `url` (`postgresql://user@host:port/database`), takes its
    /// lock (a second server on the same database is refused), brings its schema up to date and
    /// starts the writer. Every failure is a [`StoreError::Open`] that names the database and
    /// says what to do.
    pub async fn open_with(url: &str, options: PostgresOptions) -> StoreResult<Self> {
        Ok(Self::open_inner(url, options).await?)
    }

    async fn open_inner(url: &str, options: PostgresOptions) -> PgResult<Self> {
        let mut config = tokio_postgres::Config::from_str(url).map_err(|e| {
            Error::Open(format!(
                "the PostgreSQL url is not valid ({e}); write it as postgresql://user@host:port/database"
            ))
        })?;
        config.connect_timeout(options.connect_timeout);
        if config.get_application_name().is_none() {
            config.application_name("jaring");
        }
        let database = config
            .get_dbname()
            .or(config.get_user())
            .unwrap_or("postgres")
            .to_owned();
        let where_ = hosts(&config);
        let target = Target {
            name: format!("{where_}/{database}"),
            database: database.clone(),
            config: config.clone(),
        };
        let cannot_connect = |e: Error| match e {
            Error::Open(_) => e,
            e => Error::Open(format!(
                "cannot connect to PostgreSQL at {where_} (database {database}): {e}; check that \
                 the server runs and accepts connections there, and the url's user, password \
                 and database"
            )),
        };
        let connect = async {
            let lock = target.lock().await?;
            let mut writer = target.connect().await?;
            Ok::<_, Error>((lock, writer_migrated(&mut writer, &database).await?, writer))
        };
        let (lock, found, writer) =
            match tokio::time::timeout(options.connect_timeout * 2, connect).await {
                Ok(r) => r.map_err(cannot_connect)?,
                Err(_) => {
                    return Err(cannot_connect(Error::Disconnected(format!(
                        "no answer within {:?}",
                        options.connect_timeout * 2
                    ))));
                }
            };
        if found < SCHEMA_VERSION {
            info!(database = %target.name, from = found, to = SCHEMA_VERSION, "schema migrated");
        }
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(options.pool_size.max(1))
            .create_timeout(Some(options.connect_timeout))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| Error::Open(format!("cannot build the reader pool: {e}")))?;
        let name: Arc<str> = target.name.clone().into();
        let (tx, rx) = mpsc::channel(options.write_queue.max(1));
        let writer = Writer::new(target, Db::new(writer), lock, options.max_batch);
        let writer = tokio::spawn(writer.run(rx));
        Ok(Self {
            writes: tx,
            pool,
            target: name,
            writer: Arc::new(Mutex::new(Some(writer))),
        })
    }

    /// Gives up this clone of the store and, if it was the last, waits until the writer has
    /// committed what was queued and released the database's lock, so that the next
    /// [`Self::open`] of the same database (a restart, `jaring chat user …` after a server) is
    /// not refused as "in use". Merely dropping the last clone does the same in the background.
    pub async fn close(self) {
        let last = Arc::strong_count(&self.writer) == 1;
        let writer = self
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        // The writer ends once every sender (every clone) is gone.
        drop(self);
        if let (true, Some(writer)) = (last, writer)
            && let Err(e) = writer.await
        {
            warn!(error = %e, "the storage writer ended abnormally");
        }
    }

    /// `host:port/database` of the store, for messages.
    pub fn target(&self) -> &str {
        &self.target
    }

    async fn submit(&self, op: Op) -> PgResult<()> {
        self.writes.send(op).await.map_err(|_| Error::Stopped)
    }

    /// Runs `f` in the writer's next transaction, together with whatever else is queued, under a
    /// savepoint of its own (if it fails, nothing it wrote is kept and the rest of the batch still
    /// commits), and returns its result once the transaction is committed. `f` must not commit or
    /// roll back itself.
    pub(crate) async fn run_in_commit<T, F>(&self, f: F) -> PgResult<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c Db) -> BoxFuture<'c, PgResult<T>> + Send + 'static,
    {
        self.run_publishing(
            move |db| Box::pin(async move { Ok((Vec::new(), f(db).await?)) }),
            Box::new(|_| {}),
        )
        .await
    }

    /// [`Self::run_in_commit`] for a job that stores group messages: once committed, each new
    /// message is given to `published`, in order, on the writer (so pushes keep commit order),
    /// and only then is the answer returned.
    pub(crate) async fn run_publishing<T, F>(
        &self,
        f: F,
        published: jaring_chat::storage::Published,
    ) -> PgResult<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(
                &'c Db,
            ) -> BoxFuture<
                'c,
                PgResult<(Vec<jaring_chat::storage::StoredGroupMessage>, T)>,
            > + Send
            + 'static,
    {
        let (reply, answer) = oneshot::channel::<PgResult<T>>();
        let j = job(move |db| {
            Box::pin(async move {
                let Some(db) = db else {
                    let finish: Finish = Box::new(move |fate| {
                        drop(reply.send(Err(match fate {
                            Fate::Failed(e) => e,
                            Fate::Committed => Error::Stopped,
                        })));
                    });
                    return (finish, None);
                };
                // Sent together: the savepoint is on the wire before the job's first statement.
                let (sp, result) = tokio::join!(db.batch("SAVEPOINT op"), f(db));
                let result = sp.and(result);
                let end = if result.is_ok() {
                    "RELEASE SAVEPOINT op"
                } else {
                    "ROLLBACK TO SAVEPOINT op; RELEASE SAVEPOINT op"
                };
                let broken = match (db.batch(end).await, &result) {
                    (Err(e), _) => Some(e),
                    (Ok(()), Err(e)) if e.is_unavailable() => Some(e.clone()),
                    _ => None,
                };
                let finish: Finish = Box::new(move |fate| {
                    drop(reply.send(match (fate, result) {
                        (Fate::Committed, Ok((stored, value))) => {
                            for m in &stored {
                                published(m);
                            }
                            Ok(value)
                        }
                        (Fate::Committed, Err(e)) | (Fate::Failed(e), _) => Err(e),
                    }));
                });
                (finish, broken)
            })
        });
        self.submit(Op::Job(j)).await?;
        answer.await.map_err(|_| Error::Stopped)?
    }

    /// Runs a read on a pooled connection.
    pub(crate) async fn read(
        &self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> PgResult<Vec<Row>> {
        let c = self.pool.get().await?;
        let s = c.prepare_cached(sql).await?;
        Ok(c.query(&s, params).await?)
    }
}

async fn writer_migrated(client: &mut tokio_postgres::Client, database: &str) -> PgResult<i32> {
    schema::migrate(client, database).await
}

/// `usize` as a SQL `LIMIT`.
pub(crate) fn sql_limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Reads a message row selected as `seq, id, sender, sender_display, recipient,
/// recipient_display, body, sent_at`.
/// A message row and its bytes of text, for a [`WindowTaker`].
fn weighed(row: &Row) -> PgResult<(StoredMessage, usize)> {
    let m = message_row(row)?;
    let len = m.message.body.len();
    Ok((m, len))
}

pub(crate) fn message_row(row: &Row) -> PgResult<StoredMessage> {
    Ok(StoredMessage {
        seq: row.try_get(0)?,
        message: NewMessage {
            id: row.try_get(1)?,
            sender: row.try_get(2)?,
            sender_display: row.try_get(3)?,
            recipient: row.try_get(4)?,
            recipient_display: row.try_get(5)?,
            body: row.try_get(6)?,
            sent_at: row.try_get(7)?,
        },
    })
}

/// Milliseconds since the Unix epoch.
pub(crate) fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

const PENDING: &str = "SELECT seq, id, sender, sender_display, recipient, recipient_display, \
    body, sent_at FROM messages \
    WHERE recipient = $1 AND delivered_at IS NULL \
    AND seq > coalesce((SELECT upto FROM inbox_delivered WHERE recipient = $1), 0) \
    ORDER BY seq LIMIT $2";

const CONVERSATION: &str = "SELECT seq, id, sender, sender_display, recipient, \
    recipient_display, body, sent_at FROM messages \
    WHERE conversation = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3";

impl Store for PostgresStore {
    async fn users(&self) -> StoreResult<Vec<UserRecord>> {
        Ok(users::list_users(self).await?)
    }

    async fn tokens(&self) -> StoreResult<Vec<TokenRecord>> {
        let r = async {
            let rows = self.read("SELECT hash, username FROM tokens", &[]).await?;
            let mut out = Vec::with_capacity(rows.len());
            for row in rows {
                let hash: Vec<u8> = row.try_get(0)?;
                if let Ok(hash) = <[u8; 32]>::try_from(hash.as_slice()) {
                    out.push(TokenRecord {
                        hash,
                        user: row.try_get(1)?,
                    });
                }
            }
            Ok::<_, Error>(out)
        };
        Ok(r.await?)
    }

    async fn rehash_password(&self, name: &str, old: &str, new: &str) -> StoreResult<()> {
        let (name, old, new) = (name.to_owned(), old.to_owned(), new.to_owned());
        Ok(self
            .run_in_commit(move |db| {
                Box::pin(async move {
                    db.execute(
                        "UPDATE users SET password_hash = $1 WHERE name = $2 AND password_hash = $3",
                        &[&new, &name, &old],
                    )
                    .await?;
                    Ok(())
                })
            })
            .await?)
    }

    async fn insert_token(&self, token: TokenRecord) -> StoreResult<()> {
        Ok(self
            .run_in_commit(move |db| {
                Box::pin(async move {
                    db.execute(
                        "INSERT INTO tokens (hash, username, created_at) VALUES ($1, $2, $3) \
                         ON CONFLICT (hash) DO UPDATE SET username = excluded.username, \
                         created_at = excluded.created_at",
                        &[&&token.hash[..], &token.user, &unix_ms()],
                    )
                    .await?;
                    Ok(())
                })
            })
            .await?)
    }

    async fn delete_tokens(&self, hashes: Vec<[u8; 32]>) -> StoreResult<()> {
        if hashes.is_empty() {
            return Ok(());
        }
        Ok(self
            .run_in_commit(move |db| {
                Box::pin(async move {
                    let hashes: Vec<&[u8]> = hashes.iter().map(|h| &h[..]).collect();
                    db.execute(
                        "DELETE FROM tokens WHERE hash = ANY($1::bytea[])",
                        &[&hashes],
                    )
                    .await?;
                    Ok(())
                })
            })
            .await?)
    }

    async fn insert_messages(
        &self,
        messages: Vec<NewMessage>,
    ) -> Vec<StoreResult<Arc<StoredMessage>>> {
        let n = messages.len();
        if n == 0 {
            return Vec::new();
        }
        let (tx, rx) = oneshot::channel();
        let r = match self.submit(Op::Messages(messages, tx)).await {
            Ok(()) => rx
                .await
                .unwrap_or_else(|_| (0..n).map(|_| Err(Error::Stopped)).collect()),
            Err(e) => (0..n).map(|_| Err(e.clone())).collect(),
        };
        r.into_iter().map(|r| r.map_err(StoreError::from)).collect()
    }

    async fn pending(
        &self,
        recipient: &str,
        limit: usize,
        max_bytes: usize,
    ) -> StoreResult<Page<Arc<StoredMessage>>> {
        let r = async {
            let rows = self.read(PENDING, &[&recipient, &sql_limit(limit)]).await?;
            let window = Window {
                limit,
                before: None,
                max_bytes,
            };
            let shared = rows
                .iter()
                .map(|r| weighed(r).map(|(m, len)| (Arc::new(m), len)));
            let taker = WindowTaker::new(window).take_all(shared)?;
            Ok::<_, Error>(taker.finish_as_taken())
        };
        Ok(r.await?)
    }

    async fn mark_delivered(&self, recipient: &str, upto_seq: i64) -> StoreResult<()> {
        let r = async {
            let (tx, rx) = oneshot::channel();
            self.submit(Op::Delivered(recipient.to_owned(), upto_seq, tx))
                .await?;
            rx.await.map_err(|_| Error::Stopped)?
        };
        Ok(r.await?)
    }

    async fn conversation(
        &self,
        a: &str,
        b: &str,
        window: Window,
    ) -> StoreResult<Page<StoredMessage>> {
        let r = async {
            let key = conversation_key(a, b);
            let rows = self
                .read(
                    CONVERSATION,
                    &[&key, &window.before_seq(), &sql_limit(window.limit)],
                )
                .await?;
            let taker = WindowTaker::new(window).take_all(rows.iter().map(weighed))?;
            Ok::<_, Error>(taker.finish())
        };
        Ok(r.await?)
    }
}
