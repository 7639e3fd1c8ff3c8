//! The writer: one task owning one connection (and the lock session), which takes every queued
//! write, runs them in one transaction, commits once and only then answers each caller.
//!
//! A batch of private messages and delivery cursors only (what a send load is) is written in one
//! round trip: `BEGIN`, one multi-row `INSERT`, one cursor upsert and `COMMIT`, sent together;
//! if PostgreSQL refuses one of them, the transaction is rolled back and the batch is run again
//! as any other batch is, step by step, so that only the bad operation fails.
//!
//! Step by step, private messages, delivery cursors and local group messages of a batch are
//! each written with one multi-row statement (`UNNEST` of arrays) under one savepoint; if that
//! statement fails for a reason other than the connection, the savepoint is rolled back and the
//! operations are retried one by one, each under its own savepoint, so one bad operation fails
//! alone. Every
//! other write is a job ([`Job`]) that runs under a savepoint of its own. After the commit, the
//! group messages' [`Published`] hooks run in batch order (which is `seq` order in each group),
//! then every caller is answered. If the connection is lost, every caller of the batch hears
//! [`Error::Disconnected`] or [`Error::CommitUnknown`] (unavailable), and the writer reconnects
//! with exponential back-off, failing writes at once meanwhile.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use jaring_chat::storage::{
    NewGroupMessage, NewMessage, Published, StoredGroupMessage, StoredMessage, conversation_key,
};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, NoTls, Row, Statement};
use tracing::{debug, error, info, warn};

use crate::error::{Error, PgResult, describe};

/// A boxed future that may borrow for `'a`.
pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// How a batch ended, for each of its callers.
#[derive(Debug, Clone)]
pub(crate) enum Fate {
    /// Committed: each caller gets its own result.
    Committed,
    /// Not committed (or not known to be): each caller gets this error.
    Failed(Error),
}

/// What to tell a caller once its batch's [`Fate`] is known.
pub(crate) type Finish = Box<dyn FnOnce(Fate) + Send>;

/// What a job did: how to answer its caller, and, if the transaction can no longer be used
/// (the connection is gone, or its savepoint could not be rolled back), why.
pub(crate) type JobDone = (Finish, Option<Error>);

/// A write that runs in the writer's transaction. Given `None`, it must not touch the database:
/// the batch failed before it ran, and it returns only how to answer its caller.
pub(crate) type Job = Box<dyn for<'c> FnOnce(Option<&'c Db>) -> BoxFuture<'c, JobDone> + Send>;

/// Makes a [`Job`] of a closure (the annotation lets the closure's lifetimes be inferred).
pub(crate) fn job<F>(f: F) -> Job
where
    F: for<'c> FnOnce(Option<&'c Db>) -> BoxFuture<'c, JobDone> + Send + 'static,
{
    Box::new(f)
}

/// One queued write and where its answer goes.
pub(crate) enum Op {
    /// One connection's pipelined sends, in order.
    Messages(
        Vec<NewMessage>,
        oneshot::Sender<Vec<PgResult<Arc<StoredMessage>>>>,
    ),
    /// A recipient's delivery cursor to move up to a `seq`.
    Delivered(String, i64, oneshot::Sender<PgResult<()>>),
    /// Local group messages, each to get its group's next `seq`.
    GroupMessages(
        Vec<NewGroupMessage>,
        Published,
        oneshot::Sender<PgResult<Vec<StoredGroupMessage>>>,
    ),
    /// Anything else.
    Job(Job),
}

/// A connection with the statements prepared on it, kept for as long as it lives (a prepared
/// statement saves the parse and plan, and a round trip, on every use).
pub(crate) struct Db {
    client: Client,
    statements: Mutex<HashMap<&'static str, Statement>>,
}

impl Db {
    pub(crate) fn new(client: Client) -> Self {
        Self {
            client,
            statements: Mutex::default(),
        }
    }

    /// `sql` prepared on this connection.
    pub(crate) async fn statement(&self, sql: &'static str) -> PgResult<Statement> {
        let cached = self
            .statements
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(sql)
            .cloned();
        if let Some(s) = cached {
            return Ok(s);
        }
        let s = self.client.prepare(sql).await?;
        self.statements
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(sql, s.clone());
        Ok(s)
    }

    /// Runs `sql`; the rows it changed.
    pub(crate) async fn execute(
        &self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> PgResult<u64> {
        let s = self.statement(sql).await?;
        Ok(self.client.execute(&s, params).await?)
    }

    /// Runs `sql`; its rows.
    pub(crate) async fn query(
        &self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> PgResult<Vec<Row>> {
        let s = self.statement(sql).await?;
        Ok(self.client.query(&s, params).await?)
    }

    /// Runs `sql`; its row, if any.
    pub(crate) async fn query_opt(
        &self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> PgResult<Option<Row>> {
        let s = self.statement(sql).await?;
        Ok(self.client.query_opt(&s, params).await?)
    }

    /// Runs statements without parameters (transaction control).
    pub(crate) async fn batch(&self, sql: &str) -> PgResult<()> {
        Ok(self.client.batch_execute(sql).await?)
    }

    fn is_closed(&self) -> bool {
        self.client.is_closed()
    }
}

/// The writer's first wait after a failed connection attempt; it doubles up to
/// [`RECONNECT_MAX`]. Writes that arrive while there is no connection fail at once.
pub const RECONNECT_MIN: Duration = Duration::from_millis(100);

/// The writer's longest wait between connection attempts.
pub const RECONNECT_MAX: Duration = Duration::from_secs(5);

/// Longest the writer waits, when it ends, for the server to confirm that it released the
/// database's lock; past it, the lock goes when the server notices the session closed.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(5);

/// The advisory lock key a realm server holds on its database for as long as it runs
/// (`jaring` in ASCII). Advisory locks are per database, so one key serves every database.
pub const LOCK_KEY: i64 = 0x6a61_7269_6e67;

/// How to (re)connect the writer and its lock session.
pub(crate) struct Target {
    pub(crate) config: tokio_postgres::Config,
    /// `host:port/database`, for messages.
    pub(crate) name: String,
    pub(crate) database: String,
}

impl Target {
    /// A new connection, its driver task spawned.
    pub(crate) async fn connect(&self) -> PgResult<Client> {
        let (client, connection) = self.config.connect(NoTls).await?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                debug!(error = %describe(&e), "PostgreSQL connection ended");
            }
        });
        Ok(client)
    }

    /// A lock session: a connection that holds the realm's advisory lock, or the error that says
    /// another server holds it.
    pub(crate) async fn lock(&self) -> PgResult<Client> {
        let client = self.connect().await?;
        let locked: bool = client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&LOCK_KEY])
            .await?
            .get(0);
        if !locked {
            return Err(Error::Open(format!(
                "database {} is in use by another jaring realm server; stop it first",
                self.database
            )));
        }
        Ok(client)
    }
}

pub(crate) struct Writer {
    pub(crate) target: Target,
    pub(crate) db: Option<Db>,
    pub(crate) lock: Option<Client>,
    pub(crate) max_batch: usize,
    backoff: Duration,
    next_attempt: Instant,
    last_failure: String,
}

impl Writer {
    pub(crate) fn new(target: Target, db: Db, lock: Client, max_batch: usize) -> Self {
        Self {
            target,
            db: Some(db),
            lock: Some(lock),
            max_batch: max_batch.max(1),
            backoff: RECONNECT_MIN,
            next_attempt: Instant::now(),
            last_failure: String::new(),
        }
    }

    /// Takes writes until every sender is gone, committing what was queued.
    pub(crate) async fn run(mut self, mut rx: mpsc::Receiver<Op>) {
        let mut batch = Vec::with_capacity(self.max_batch);
        loop {
            if !self.connected() && Instant::now() >= self.next_attempt {
                self.reconnect().await;
            }
            let first = if self.connected() {
                rx.recv().await
            } else {
                tokio::select! {
                    op = rx.recv() => op,
                    () = tokio::time::sleep_until(self.next_attempt) => continue,
                }
            };
            let Some(first) = first else { break };
            batch.push(first);
            while batch.len() < self.max_batch {
                match rx.try_recv() {
                    Ok(op) => batch.push(op),
                    Err(_) => break,
                }
            }
            // A connection the server closed (a restart) is noticed here, and replaced at once.
            if !self.connected() && Instant::now() >= self.next_attempt {
                self.reconnect().await;
            }
            match &self.db {
                Some(db) if self.connected() => {
                    let lost = commit_batch(db, &mut batch).await;
                    if lost {
                        self.lost("the connection was lost during a write");
                    }
                }
                _ => {
                    let e = Error::Disconnected(self.last_failure.clone());
                    for op in batch.drain(..) {
                        fail(op, e.clone()).await;
                    }
                }
            }
        }
        self.release().await;
        debug!("storage writer stopped");
    }

    /// Gives the database's lock back before the writer ends, so that a store opened right
    /// after this one closed finds it free (closing the session would free it too, but only
    /// once the server has noticed, which a new store may beat). Bounded: a server that does not
    /// answer frees the lock when the session goes.
    async fn release(&mut self) {
        let Some(lock) = self.lock.take() else { return };
        if lock.is_closed() {
            return;
        }
        let unlock = lock.execute("SELECT pg_advisory_unlock($1)", &[&LOCK_KEY]);
        match tokio::time::timeout(RELEASE_TIMEOUT, unlock).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => debug!(error = %describe(&e), "cannot release the database's lock"),
            Err(_) => debug!("no answer releasing the database's lock"),
        }
    }

    /// Whether the writer has both its connection and its lock session.
    fn connected(&self) -> bool {
        matches!((&self.db, &self.lock), (Some(db), Some(lock)) if !db.is_closed() && !lock.is_closed())
    }

    fn lost(&mut self, why: &str) {
        warn!(database = %self.target.name, "{why}; reconnecting");
        self.last_failure = why.to_owned();
        self.db = None;
        self.next_attempt = Instant::now();
    }

    /// Takes the lock session again if it is gone (the lock went with it), then the writer's
    /// connection; on failure, waits longer before the next attempt.
    async fn reconnect(&mut self) {
        let r = async {
            if self.lock.as_ref().is_none_or(Client::is_closed) {
                self.lock = None;
                self.db = None;
                self.lock = Some(self.target.lock().await?);
            }
            if self.db.as_ref().is_none_or(Db::is_closed) {
                self.db = None;
                self.db = Some(Db::new(self.target.connect().await?));
            }
            Ok::<_, Error>(())
        }
        .await;
        match r {
            Ok(()) => {
                if !self.last_failure.is_empty() {
                    info!(database = %self.target.name, "storage writer reconnected");
                }
                self.backoff = RECONNECT_MIN;
                self.last_failure.clear();
            }
            Err(e) => {
                let why = e.to_string();
                if why != self.last_failure {
                    error!(database = %self.target.name, error = %why, "storage writer cannot connect; writes fail until it can");
                }
                self.last_failure = why;
                self.next_attempt = Instant::now() + self.backoff;
                self.backoff = (self.backoff * 2).min(RECONNECT_MAX);
            }
        }
    }
}

/// Answers `op`'s caller with `e` without running it.
async fn fail(op: Op, e: Error) {
    unrun(op).await(Fate::Failed(e));
}

/// How to answer `op`'s caller when it never ran.
async fn unrun(op: Op) -> Finish {
    match op {
        Op::Messages(m, reply) => {
            let n = m.len();
            Box::new(move |fate| {
                let e = fate_error(fate);
                drop(reply.send((0..n).map(|_| Err(e.clone())).collect()));
            })
        }
        Op::Delivered(_, _, reply) => Box::new(move |fate| drop(reply.send(Err(fate_error(fate))))),
        Op::GroupMessages(_, _, reply) => {
            Box::new(move |fate| drop(reply.send(Err(fate_error(fate)))))
        }
        Op::Job(job) => job(None).await.0,
    }
}

/// The error to answer with: a batch that "committed" without running this op is a bug; say
/// stopped rather than claim success.
fn fate_error(fate: Fate) -> Error {
    match fate {
        Fate::Failed(e) => e,
        Fate::Committed => Error::Stopped,
    }
}

/// Runs `batch` in one transaction, commits, then answers every caller; returns whether the
/// connection was lost.
async fn commit_batch(db: &Db, batch: &mut Vec<Op>) -> bool {
    let mut messages = Vec::new();
    let mut delivered = Vec::new();
    let mut groups = Vec::new();
    let mut jobs = Vec::new();
    for op in batch.drain(..) {
        match op {
            Op::Messages(m, reply) => messages.push((m, reply)),
            Op::Delivered(r, upto, reply) => delivered.push((r, upto, reply)),
            Op::GroupMessages(m, p, reply) => groups.push((m, p, reply)),
            Op::Job(j) => jobs.push(j),
        }
    }
    // The common batch, sends and inbox cursors only, takes one round trip; anything else, or a
    // refusal, takes the step-by-step path.
    if groups.is_empty() && jobs.is_empty() {
        match commit_together(db, &messages, &delivered).await {
            Together::Committed(seqs) => {
                answer_together(messages, delivered, seqs, Fate::Committed);
                return db.is_closed();
            }
            Together::Failed(e) => {
                answer_together(messages, delivered, Vec::new(), Fate::Failed(e));
                return db.is_closed();
            }
            Together::Refused(e) => {
                debug!(error = %e, "a batch was refused whole; storing it step by step");
            }
        }
    }
    let mut done: Vec<Finish> = Vec::new();
    let mut broken: Option<Error> = db.batch("BEGIN").await.err();
    if broken.is_none() {
        broken = insert_messages(db, std::mem::take(&mut messages), &mut done).await;
    }
    if broken.is_none() {
        broken = deliver(db, std::mem::take(&mut delivered), &mut done).await;
    }
    if broken.is_none() {
        broken = insert_group_messages(db, std::mem::take(&mut groups), &mut done).await;
    }
    let mut jobs = jobs.into_iter();
    if broken.is_none() {
        for j in jobs.by_ref() {
            let (finish, e) = j(Some(db)).await;
            done.push(finish);
            if e.is_some() || db.is_closed() {
                broken = Some(e.unwrap_or_else(|| Error::Disconnected("connection closed".into())));
                break;
            }
        }
    }
    // What never ran (the batch broke first) is answered with the batch's failure.
    for (m, reply) in messages {
        done.push(unrun(Op::Messages(m, reply)).await);
    }
    for (r, upto, reply) in delivered {
        done.push(unrun(Op::Delivered(r, upto, reply)).await);
    }
    for (m, p, reply) in groups {
        done.push(unrun(Op::GroupMessages(m, p, reply)).await);
    }
    for j in jobs {
        done.push(unrun(Op::Job(j)).await);
    }
    let fate = match broken {
        Some(e) => {
            if !db.is_closed()
                && let Err(r) = db.batch("ROLLBACK").await
            {
                debug!(error = %r, "cannot roll back a failed batch");
            }
            error!(error = %e, "storage batch failed; nothing of it is committed");
            Fate::Failed(e)
        }
        None => match db.batch("COMMIT").await {
            Ok(()) => Fate::Committed,
            Err(Error::Pg(e)) if crate::error::unavailable(&e) => {
                error!(error = %describe(&e), "connection lost during COMMIT: outcome unknown");
                Fate::Failed(Error::CommitUnknown(e))
            }
            Err(e) => {
                error!(error = %e, "storage commit failed");
                Fate::Failed(e)
            }
        },
    };
    for finish in done {
        finish(fate.clone());
    }
    db.is_closed()
}

/// How [`commit_together`] ended.
enum Together {
    /// Committed; the messages' `seq`s in their order.
    Committed(Vec<i64>),
    /// Not committed, or not known to be: every caller gets this error.
    Failed(Error),
    /// A statement was refused (not the connection's fault): nothing is committed, and the
    /// batch can be run again step by step so that only the bad operation fails.
    Refused(Error),
}

/// Writes a batch of private messages and delivery cursors in one round trip: `BEGIN`, one
/// `INSERT` of every message, one upsert of every cursor and `COMMIT` are sent together, so the
/// batch costs one wait for the database instead of one per statement. If a statement fails,
/// PostgreSQL skips the rest of the transaction and its `COMMIT` rolls back, so nothing of it
/// is kept and the caller may retry step by step.
async fn commit_together(
    db: &Db,
    messages: &[(Vec<NewMessage>, MessagesReply)],
    delivered: &[(String, i64, UnitReply)],
) -> Together {
    let prepare = |sql| async move {
        match db.statement(sql).await {
            Ok(s) => Ok(s),
            Err(e) if e.is_unavailable() || db.is_closed() => Err(Together::Failed(e)),
            Err(e) => Err(Together::Refused(e)),
        }
    };
    // Prepared first (once per connection): a prepare inside the pipeline would wait for its
    // answer and let the statements after it overtake the insert.
    let (insert, deliver) = match (prepare(INSERT_MESSAGES).await, prepare(DELIVER).await) {
        (Ok(i), Ok(d)) => (i, d),
        (Err(e), _) | (_, Err(e)) => return e,
    };
    let all: Vec<&NewMessage> = messages.iter().flat_map(|(m, _)| m.iter()).collect();
    let conversations: Vec<String> = all
        .iter()
        .map(|m| conversation_key(&m.sender, &m.recipient))
        .collect();
    let columns = MessageColumns::new(&all, &conversations);
    let cursors: Vec<(&str, i64)> = delivered.iter().map(|(r, u, _)| (r.as_str(), *u)).collect();
    let (recipients, uptos) = highest_cursors(&cursors);
    let client = &db.client;
    // `biased`: polled in this order, each sends its request on its first poll, so the server
    // receives them in this order.
    let (begin, rows, moved, commit) = tokio::join!(
        biased;
        client.batch_execute("BEGIN"),
        async {
            if all.is_empty() {
                return Ok(Vec::new());
            }
            client.query(&insert, &columns.params()).await
        },
        async {
            if recipients.is_empty() {
                return Ok(0);
            }
            client.execute(&deliver, &[&recipients, &uptos]).await
        },
        client.batch_execute("COMMIT"),
    );
    let gone = |e: &tokio_postgres::Error| crate::error::unavailable(e) || db.is_closed();
    if let Err(e) = begin {
        // Without its BEGIN the statements after it ran on their own: what they did is unknown.
        error!(error = %describe(&e), "BEGIN failed: outcome of the batch unknown");
        return Together::Failed(Error::CommitUnknown(Arc::new(e)));
    }
    match commit {
        Err(e) if gone(&e) => {
            error!(error = %describe(&e), "connection lost during COMMIT: outcome unknown");
            return Together::Failed(Error::CommitUnknown(Arc::new(e)));
        }
        Err(e) => {
            error!(error = %e, "storage commit failed");
            return Together::Failed(Error::Pg(Arc::new(e)));
        }
        Ok(()) => {}
    }
    // COMMIT answered: it committed if every statement before it succeeded, and rolled back if
    // one failed.
    let rows = match (rows, moved) {
        (Ok(rows), Ok(_)) => rows,
        (Err(e), _) | (_, Err(e)) => {
            return if gone(&e) {
                Together::Failed(Error::Disconnected(describe(&e)))
            } else {
                Together::Refused(Error::Pg(Arc::new(e)))
            };
        }
    };
    let mut seqs: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
    seqs.sort_unstable();
    if seqs.len() != all.len() {
        // Cannot happen (one row per element of the arrays); stored, but say so, not OK.
        return Together::Failed(Error::Unexpected(format!(
            "inserted {} messages but {} came back",
            all.len(),
            seqs.len()
        )));
    }
    Together::Committed(seqs)
}

/// Answers the callers of a batch [`commit_together`] ran: `seqs` in the messages' order.
fn answer_together(
    messages: Vec<(Vec<NewMessage>, MessagesReply)>,
    delivered: Vec<(String, i64, UnitReply)>,
    seqs: Vec<i64>,
    fate: Fate,
) {
    let mut seqs = seqs.into_iter();
    for (batch, reply) in messages {
        let answer = match &fate {
            Fate::Committed => batch
                .into_iter()
                .zip(seqs.by_ref())
                .map(|(message, seq)| Ok(Arc::new(StoredMessage { seq, message })))
                .collect(),
            Fate::Failed(e) => batch.iter().map(|_| Err(e.clone())).collect(),
        };
        drop(reply.send(answer));
    }
    for (_, _, reply) in delivered {
        drop(reply.send(match &fate {
            Fate::Committed => Ok(()),
            Fate::Failed(e) => Err(e.clone()),
        }));
    }
}

/// Runs `stage` under savepoint `hot`; `Ok(true)`: it succeeded; `Ok(false)`: it failed for a
/// reason other than the connection and is rolled back; `Err`: the transaction is unusable.
async fn under_savepoint<T>(
    db: &Db,
    stage: impl Future<Output = PgResult<T>>,
) -> Result<PgResult<T>, Error> {
    // Sent together: the savepoint is on the wire before the stage's first statement.
    let (sp, r) = tokio::join!(db.batch("SAVEPOINT hot"), stage);
    let r = sp.and(r);
    match r {
        Ok(v) => {
            db.batch("RELEASE SAVEPOINT hot").await?;
            Ok(Ok(v))
        }
        Err(e) if e.is_unavailable() || db.is_closed() => Err(e),
        Err(e) => {
            db.batch("ROLLBACK TO SAVEPOINT hot; RELEASE SAVEPOINT hot")
                .await?;
            Ok(Err(e))
        }
    }
}

const INSERT_MESSAGES: &str = "INSERT INTO messages (id, sender, sender_display, recipient, \
    recipient_display, conversation, body, sent_at) \
    SELECT id, sender, sender_display, recipient, recipient_display, conversation, body, sent_at \
    FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], \
        $7::text[], $8::bigint[]) WITH ORDINALITY \
        AS t(id, sender, sender_display, recipient, recipient_display, conversation, body, \
        sent_at, ord) \
    ORDER BY ord RETURNING seq";

/// [`INSERT_MESSAGES`]'s arrays, one per column.
struct MessageColumns<'a> {
    ids: Vec<uuid::Uuid>,
    senders: Vec<&'a str>,
    sender_displays: Vec<&'a str>,
    recipients: Vec<&'a str>,
    recipient_displays: Vec<&'a str>,
    conversations: &'a [String],
    bodies: Vec<&'a str>,
    sent: Vec<i64>,
}

impl<'a> MessageColumns<'a> {
    fn new(messages: &[&'a NewMessage], conversations: &'a [String]) -> Self {
        let col = |f: fn(&'a NewMessage) -> &'a str| messages.iter().map(|m| f(m)).collect();
        Self {
            ids: messages.iter().map(|m| m.id).collect(),
            senders: col(|m| &m.sender),
            sender_displays: col(|m| &m.sender_display),
            recipients: col(|m| &m.recipient),
            recipient_displays: col(|m| &m.recipient_display),
            conversations,
            bodies: col(|m| &m.body),
            sent: messages.iter().map(|m| m.sent_at).collect(),
        }
    }

    fn params(&self) -> [&(dyn ToSql + Sync); 8] {
        [
            &self.ids,
            &self.senders,
            &self.sender_displays,
            &self.recipients,
            &self.recipient_displays,
            &self.conversations,
            &self.bodies,
            &self.sent,
        ]
    }
}

/// Stores `messages` (for local inboxes) with one statement; their `seq`s, in their order.
pub(crate) async fn insert_message_rows(
    db: &Db,
    messages: &[&NewMessage],
    conversations: &[String],
) -> PgResult<Vec<i64>> {
    let columns = MessageColumns::new(messages, conversations);
    let rows = db.query(INSERT_MESSAGES, &columns.params()).await?;
    let mut seqs: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
    // Assigned in `ord` order; the rows may come back in any.
    seqs.sort_unstable();
    if seqs.len() != messages.len() {
        return Err(Error::Unexpected(format!(
            "inserted {} messages but {} came back",
            messages.len(),
            seqs.len()
        )));
    }
    Ok(seqs)
}

type MessagesReply = oneshot::Sender<Vec<PgResult<Arc<StoredMessage>>>>;

/// Private messages of every caller in the batch, in one statement; one by one if it failed.
async fn insert_messages(
    db: &Db,
    ops: Vec<(Vec<NewMessage>, MessagesReply)>,
    done: &mut Vec<Finish>,
) -> Option<Error> {
    if ops.is_empty() {
        return None;
    }
    let all: Vec<&NewMessage> = ops.iter().flat_map(|(m, _)| m.iter()).collect();
    let conversations: Vec<String> = all
        .iter()
        .map(|m| conversation_key(&m.sender, &m.recipient))
        .collect();
    let together = match under_savepoint(db, insert_message_rows(db, &all, &conversations)).await {
        Ok(r) => r,
        Err(e) => return Some(e),
    };
    drop(all);
    let mut results: Vec<Vec<PgResult<Arc<StoredMessage>>>> = Vec::with_capacity(ops.len());
    let mut replies = Vec::with_capacity(ops.len());
    match together {
        Ok(seqs) => {
            let mut seqs = seqs.into_iter();
            for (messages, reply) in ops {
                results.push(
                    messages
                        .into_iter()
                        .zip(seqs.by_ref())
                        .map(|(message, seq)| Ok(Arc::new(StoredMessage { seq, message })))
                        .collect(),
                );
                replies.push(reply);
            }
        }
        Err(e) => {
            debug!(error = %e, "a batch of messages failed; storing them one caller at a time");
            for (messages, reply) in ops {
                let refs: Vec<&NewMessage> = messages.iter().collect();
                let conversations: Vec<String> = refs
                    .iter()
                    .map(|m| conversation_key(&m.sender, &m.recipient))
                    .collect();
                let r = match under_savepoint(db, insert_message_rows(db, &refs, &conversations))
                    .await
                {
                    Ok(r) => r,
                    Err(e) => {
                        done.push(unrun(Op::Messages(messages, reply)).await);
                        return Some(e);
                    }
                };
                drop(refs);
                results.push(match r {
                    Ok(seqs) => messages
                        .into_iter()
                        .zip(seqs)
                        .map(|(message, seq)| Ok(Arc::new(StoredMessage { seq, message })))
                        .collect(),
                    Err(e) => messages.iter().map(|_| Err(e.clone())).collect(),
                });
                replies.push(reply);
            }
        }
    }
    for (r, reply) in results.into_iter().zip(replies) {
        done.push(Box::new(move |fate| match fate {
            Fate::Committed => drop(reply.send(r)),
            Fate::Failed(e) => drop(reply.send(r.iter().map(|_| Err(e.clone())).collect())),
        }));
    }
    None
}

const DELIVER: &str = "INSERT INTO inbox_delivered (recipient, upto) \
    SELECT * FROM UNNEST($1::text[], $2::bigint[]) \
    ON CONFLICT (recipient) DO UPDATE SET upto = GREATEST(inbox_delivered.upto, excluded.upto)";

/// Moves delivery cursors (never back), in one statement.
async fn deliver_rows(db: &Db, cursors: &[(&str, i64)]) -> PgResult<()> {
    let (recipients, uptos) = highest_cursors(cursors);
    db.execute(DELIVER, &[&recipients, &uptos]).await?;
    Ok(())
}

/// [`DELIVER`]'s arrays: each recipient once, with its highest cursor (ON CONFLICT DO UPDATE may
/// not touch a row twice in one statement).
fn highest_cursors<'a>(cursors: &[(&'a str, i64)]) -> (Vec<&'a str>, Vec<i64>) {
    let mut highest: HashMap<&str, i64> = HashMap::new();
    for (r, upto) in cursors {
        let e = highest.entry(r).or_insert(*upto);
        *e = (*e).max(*upto);
    }
    highest.into_iter().unzip()
}

type UnitReply = oneshot::Sender<PgResult<()>>;

async fn deliver(
    db: &Db,
    ops: Vec<(String, i64, UnitReply)>,
    done: &mut Vec<Finish>,
) -> Option<Error> {
    if ops.is_empty() {
        return None;
    }
    let all: Vec<(&str, i64)> = ops.iter().map(|(r, u, _)| (r.as_str(), *u)).collect();
    let together = match under_savepoint(db, deliver_rows(db, &all)).await {
        Ok(r) => r,
        Err(e) => return Some(e),
    };
    drop(all);
    let mut answers = Vec::with_capacity(ops.len());
    match together {
        Ok(()) => answers.extend(ops.into_iter().map(|(_, _, reply)| (Ok(()), reply))),
        Err(_) => {
            for (r, upto, reply) in ops {
                match under_savepoint(db, deliver_rows(db, &[(&r, upto)])).await {
                    Ok(result) => answers.push((result, reply)),
                    Err(e) => {
                        done.push(unrun(Op::Delivered(r, upto, reply)).await);
                        return Some(e);
                    }
                }
            }
        }
    }
    for (r, reply) in answers {
        done.push(Box::new(move |fate| {
            drop(reply.send(match fate {
                Fate::Committed => r,
                Fate::Failed(e) => Err(e),
            }));
        }));
    }
    None
}

type GroupReply = oneshot::Sender<PgResult<Vec<StoredGroupMessage>>>;

const KNOWN_GROUP_IDS: &str = "SELECT id FROM group_messages WHERE id = ANY($1::uuid[])";
const GROUP_SEQS: &str = "SELECT name, last_seq FROM groups WHERE name = ANY($1::text[])";
const INSERT_GROUP_MESSAGES: &str = "INSERT INTO group_messages \
    (grp, seq, id, sender, sender_display, body, sent_at) \
    SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::uuid[], $4::text[], $5::text[], \
        $6::text[], $7::bigint[])";
const SET_GROUP_SEQS: &str = "UPDATE groups SET last_seq = v.last_seq \
    FROM UNNEST($1::text[], $2::bigint[]) AS v(name, last_seq) WHERE groups.name = v.name";

/// Stores the messages of `ops`, each with the next `seq` of its group, with a few statements
/// for all: for each op, the messages stored (a retried id is skipped), or why it failed (a
/// group that does not exist: nothing of that op is stored).
async fn group_rows(
    db: &Db,
    ops: &[&[NewGroupMessage]],
) -> PgResult<Vec<Result<Vec<(i64, usize)>, Error>>> {
    let ids: Vec<uuid::Uuid> = ops.iter().flat_map(|m| m.iter().map(|m| m.id)).collect();
    let names: Vec<&str> = ops
        .iter()
        .flat_map(|m| m.iter().map(|m| m.group.as_str()))
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let (p1, p2): ([&(dyn ToSql + Sync); 1], [&(dyn ToSql + Sync); 1]) = ([&ids], [&names]);
    let (known, last) = tokio::join!(db.query(KNOWN_GROUP_IDS, &p1), db.query(GROUP_SEQS, &p2));
    let mut seen: HashSet<uuid::Uuid> = known?.iter().map(|r| r.get(0)).collect();
    let mut last: HashMap<String, i64> = last?
        .iter()
        .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1)))
        .collect();
    let mut out = Vec::with_capacity(ops.len());
    let (mut grp, mut seq, mut id, mut sender, mut display, mut body, mut sent) =
        (vec![], vec![], vec![], vec![], vec![], vec![], vec![]);
    for messages in ops {
        if let Some(missing) = messages.iter().find(|m| !last.contains_key(&m.group)) {
            out.push(Err(Error::NoSuchGroup(missing.group.clone())));
            continue;
        }
        let mut stored = Vec::with_capacity(messages.len());
        for (i, m) in messages.iter().enumerate() {
            // A retry (from another realm) of a message stored already: stored once.
            if !seen.insert(m.id) {
                continue;
            }
            let Some(l) = last.get_mut(&m.group) else {
                continue;
            };
            *l += 1;
            stored.push((*l, i));
            grp.push(m.group.as_str());
            seq.push(*l);
            id.push(m.id);
            sender.push(m.sender.as_str());
            display.push(m.sender_display.as_str());
            body.push(m.body.as_str());
            sent.push(m.sent_at);
        }
        out.push(Ok(stored));
    }
    if !grp.is_empty() {
        let touched: HashSet<&str> = grp.iter().copied().collect();
        let (names, seqs): (Vec<&str>, Vec<i64>) =
            touched.into_iter().map(|g| (g, last[g])).unzip();
        let rows: [&(dyn ToSql + Sync); 7] = [&grp, &seq, &id, &sender, &display, &body, &sent];
        let last: [&(dyn ToSql + Sync); 2] = [&names, &seqs];
        let (a, b) = tokio::join!(
            db.execute(INSERT_GROUP_MESSAGES, &rows),
            db.execute(SET_GROUP_SEQS, &last)
        );
        a?;
        b?;
    }
    Ok(out)
}

async fn insert_group_messages(
    db: &Db,
    ops: Vec<(Vec<NewGroupMessage>, Published, GroupReply)>,
    done: &mut Vec<Finish>,
) -> Option<Error> {
    if ops.is_empty() {
        return None;
    }
    // Apart: a `Published` is not `Sync`, so nothing borrowed across an await may reach one.
    let mut batches = Vec::with_capacity(ops.len());
    let mut answers = Vec::with_capacity(ops.len());
    for (m, p, reply) in ops {
        batches.push(m);
        answers.push((p, reply));
    }
    let slices: Vec<&[NewGroupMessage]> = batches.iter().map(Vec::as_slice).collect();
    let together = match under_savepoint(db, group_rows(db, &slices)).await {
        Ok(r) => r,
        Err(e) => {
            drop(slices);
            fail_groups(batches, answers, done).await;
            return Some(e);
        }
    };
    drop(slices);
    let results = match together {
        Ok(results) => results,
        Err(e) => {
            debug!(error = %e, "a batch of group messages failed; storing them one caller at a time");
            let mut results = Vec::with_capacity(batches.len());
            let mut broken = None;
            for messages in &batches {
                match under_savepoint(db, group_rows(db, &[messages.as_slice()])).await {
                    Ok(Ok(mut one)) => results.push(one.pop().unwrap_or(Err(Error::Stopped))),
                    Ok(Err(e)) => results.push(Err(e)),
                    Err(e) => {
                        broken = Some(e);
                        break;
                    }
                }
            }
            if let Some(e) = broken {
                fail_groups(batches, answers, done).await;
                return Some(e);
            }
            results
        }
    };
    for ((messages, (published, reply)), result) in batches.into_iter().zip(answers).zip(results) {
        let result = result.map(|stored| {
            let mut messages: Vec<Option<NewGroupMessage>> =
                messages.into_iter().map(Some).collect();
            stored
                .into_iter()
                .filter_map(|(seq, i)| {
                    messages[i]
                        .take()
                        .map(|message| StoredGroupMessage { seq, message })
                })
                .collect::<Vec<_>>()
        });
        done.push(Box::new(move |fate| {
            drop(reply.send(match (fate, result) {
                (Fate::Committed, Ok(stored)) => {
                    for m in &stored {
                        published(m);
                    }
                    Ok(stored)
                }
                (Fate::Committed, Err(e)) | (Fate::Failed(e), _) => Err(e),
            }));
        }));
    }
    None
}

/// Answers group-message callers with the batch's failure.
async fn fail_groups(
    batches: Vec<Vec<NewGroupMessage>>,
    answers: Vec<(Published, GroupReply)>,
    done: &mut Vec<Finish>,
) {
    for (m, (p, reply)) in batches.into_iter().zip(answers) {
        done.push(unrun(Op::GroupMessages(m, p, reply)).await);
    }
}
