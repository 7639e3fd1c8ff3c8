//! The writer thread, the only connection that writes: it takes everything queued (up to the
//! batch limit), runs it in one transaction, commits once (one `fdatasync` for every caller in
//! the batch: group commit), brings the mailboxes up to date and only then answers each caller.
//! Why, and what each choice here bought: `docs/design/storage.md#the-writer-and-group-commit`.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use jaring_chat::storage::{NewMessage, StoredMessage, TokenRecord, conversation_key};
use rusqlite::{Connection, params};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, error};

use crate::error::{Error, SqlResult};
use crate::group_writes::{Finish, GroupWrite};
use crate::index::{HistoryIndexing, Postings, history_due, index_messages, newest_seq};
use crate::mailboxes::Mailboxes;
use crate::read::undelivered_since;

/// Writes that may wait for the writer thread. When full, writers wait (backpressure) instead of
/// queueing without bound.
pub const DEFAULT_WRITE_QUEUE: usize = 16 * 1024;

pub(crate) fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// One queued write and where its answer goes.
pub(crate) enum Write {
    /// Messages of one connection's pipelined sends, in order: one queue slot and one wake-up
    /// for all of them.
    Messages(
        Vec<NewMessage>,
        oneshot::Sender<Vec<SqlResult<Arc<StoredMessage>>>>,
    ),
    Delivered(String, i64, oneshot::Sender<SqlResult<()>>),
    Token(TokenRecord, oneshot::Sender<SqlResult<()>>),
    DeleteTokens(Vec<[u8; 32]>, oneshot::Sender<SqlResult<()>>),
    Group(GroupWrite),
    /// Work of another module (federation) that must share the writer's transactions; it returns
    /// what to do once the commit succeeded (`true`) or failed (`false`).
    Run(Box<dyn FnOnce(&Connection) -> AfterCommit + Send>),
}

/// What a [`SqliteStore::run_in_commit`](crate::SqliteStore::run_in_commit) job does once its
/// transaction is committed or failed.
pub(crate) type AfterCommit = Box<dyn FnOnce(bool) + Send>;

pub(crate) fn write_loop(
    mut conn: Connection,
    mut rx: mpsc::Receiver<Write>,
    max_batch: usize,
    mailboxes: &Mutex<Mailboxes>,
) {
    wake_without_preempting();
    let mut batch = Vec::with_capacity(max_batch);
    let mut history = HistoryIndexing {
        last: std::time::Instant::now(),
        postings: Postings::default(),
    };
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(w) => batch.push(w),
                Err(_) => break,
            }
        }
        commit_batch(&mut conn, &mut batch, &mut history, mailboxes);
    }
    debug!("storage writer stopped");
}

/// Puts the calling thread (the writer) under `SCHED_BATCH`, whose only difference from the
/// default policy is that its wake-ups never preempt the thread running on that CPU.
///
/// Left unpreempted, the async worker queues the whole group of requests that came in during a
/// commit for the next one (`docs/design/storage.md#sched_batch`). Skipped (and logged) if the
/// thread is not at the default niceness, which the call would reset. Returns whether the thread
/// now runs under `SCHED_BATCH`.
fn wake_without_preempting() -> bool {
    use thread_priority::{
        NormalThreadSchedulePolicy, ThreadPriority, ThreadPriorityOsValue, ThreadSchedulePolicy,
    };
    match rustix::process::getpriority_process(None) {
        Ok(0) => {}
        Ok(nice) => {
            debug!(nice, "storage writer keeps the default scheduling policy");
            return false;
        }
        Err(e) => {
            debug!(error = %e, "cannot read the storage writer's niceness");
            return false;
        }
    }
    thread_priority::set_thread_priority_and_policy(
        thread_priority::thread_native_id(),
        ThreadPriority::Os(ThreadPriorityOsValue::default()),
        ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Batch),
    )
    .inspect_err(|e| debug!(error = %e, "storage writer keeps the default scheduling policy"))
    .is_ok()
}

/// Runs `batch` in one transaction, commits, brings the mailboxes up to date, then answers every
/// caller.
fn commit_batch(
    conn: &mut Connection,
    batch: &mut Vec<Write>,
    history: &mut HistoryIndexing,
    mailboxes: &Mutex<Mailboxes>,
) {
    enum Done {
        Messages(
            Vec<SqlResult<Arc<StoredMessage>>>,
            oneshot::Sender<Vec<SqlResult<Arc<StoredMessage>>>>,
        ),
        Unit(SqlResult<()>, oneshot::Sender<SqlResult<()>>),
        Delivered(String, i64, SqlResult<()>, oneshot::Sender<SqlResult<()>>),
        Group(Finish),
        Run(AfterCommit),
    }
    let tx = match conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate) {
        Ok(tx) => tx,
        Err(e) => {
            error!(error = %e, "cannot begin a storage transaction");
            for w in batch.drain(..) {
                fail(w);
            }
            return;
        }
    };
    let now = unix_ms();
    let mut done = Vec::with_capacity(batch.len());
    // Messages for local inboxes that other modules' jobs inserted, read back for the mailboxes;
    // `None` once a read-back failed, and then every mailbox is dropped after the commit.
    let mut arrived = Some(Vec::new());
    // Checked out of the statement cache once a batch, not once a message: the lookup hashes the
    // SQL text, and the return re-inserts it (docs/design/storage.md#the-writer-and-group-commit).
    let mut insert = None;
    for w in batch.drain(..) {
        match w {
            Write::Messages(messages, reply) => {
                let r = messages
                    .into_iter()
                    .map(|m| {
                        let conversation = conversation_key(&m.sender, &m.recipient);
                        let insert = match &mut insert {
                            Some(insert) => insert,
                            None => insert.insert(tx.prepare_cached(INSERT_MESSAGE)?),
                        };
                        let seq = insert_message(&tx, insert, &m, &conversation)?;
                        history.postings.add(&conversation, Some(&m.recipient), seq);
                        Ok(Arc::new(StoredMessage { seq, message: m }))
                    })
                    .collect();
                done.push(Done::Messages(r, reply));
            }
            Write::Delivered(recipient, upto, reply) => {
                let r = deliver(&tx, &recipient, upto).map_err(Error::from);
                done.push(Done::Delivered(recipient, upto, r, reply));
            }
            Write::Token(t, reply) => {
                let r = tx
                    .prepare_cached(
                        "INSERT OR REPLACE INTO tokens (hash, user, created_at) VALUES (?1, ?2, ?3)",
                    )
                    .and_then(|mut s| s.execute(params![&t.hash[..], t.user, now]))
                    .map(drop)
                    .map_err(Error::from);
                done.push(Done::Unit(r, reply));
            }
            Write::DeleteTokens(hashes, reply) => {
                let r = (|| {
                    let mut s = tx.prepare_cached("DELETE FROM tokens WHERE hash = ?1")?;
                    for h in &hashes {
                        s.execute(params![&h[..]])?;
                    }
                    Ok::<(), rusqlite::Error>(())
                })()
                .map_err(Error::from);
                done.push(Done::Unit(r, reply));
            }
            Write::Group(g) => done.push(Done::Group(g.apply(&tx, now))),
            Write::Run(job) => {
                let before = newest_seq(&tx);
                done.push(Done::Run(job(&tx)));
                arrived = arrived.zip(before.ok()).and_then(|(mut arrived, before)| {
                    arrived.extend(
                        undelivered_since(&tx, before)
                            .ok()?
                            .into_iter()
                            .map(Arc::new),
                    );
                    Some(arrived)
                });
            }
        }
    }
    drop(insert);
    // In this transaction, so catching up costs no commit of its own. A failure leaves the index
    // behind, never wrong (`history` scans what is past `upto`), and fails no caller.
    let mut indexed = false;
    match history_due(&tx, history) {
        Ok(true) => {
            let r = tx
                .execute_batch("SAVEPOINT history")
                .and_then(|()| index_messages(&tx, &mut history.postings));
            let end = match r {
                Ok(n) => {
                    debug!(messages = n, "history index caught up");
                    indexed = true;
                    "RELEASE history"
                }
                Err(e) => {
                    error!(error = %e, "cannot update the history index");
                    "ROLLBACK TO history; RELEASE history"
                }
            };
            if let Err(e) = tx.execute_batch(end) {
                error!(error = %e, "cannot update the history index");
            }
        }
        Ok(false) => {}
        Err(e) => error!(error = %e, "cannot read the history index's position"),
    }
    if let Err(e) = tx.commit() {
        // Nothing of the batch is durable: every caller hears so, and no OK goes out.
        error!(error = %e, "storage commit failed");
        // Nor are the seqs noted for the history index; its next catch-up reads the messages.
        history.postings = Postings::default();
        for d in done {
            match d {
                Done::Messages(r, reply) => {
                    drop(reply.send(r.iter().map(|_| Err(Error::Stopped)).collect()));
                }
                Done::Unit(_, reply) | Done::Delivered(_, _, _, reply) => {
                    drop(reply.send(Err(Error::Stopped)));
                }
                Done::Group(f) => f.run(false),
                Done::Run(after) => after(false),
            }
        }
        return;
    }
    if indexed {
        history.last = std::time::Instant::now();
    }
    // Before any caller hears OK: a sender told its message is stored finds it in the mailbox.
    {
        let mut mailboxes = mailboxes.lock().unwrap_or_else(PoisonError::into_inner);
        match &arrived {
            Some(arrived) => arrived.iter().for_each(|m| mailboxes.committed(m)),
            None => mailboxes.clear(),
        }
        for d in &done {
            match d {
                Done::Messages(r, _) => r.iter().flatten().for_each(|m| mailboxes.committed(m)),
                Done::Delivered(recipient, upto, Ok(()), _) => {
                    mailboxes.delivered(recipient, *upto);
                }
                _ => {}
            }
        }
    }
    for d in done {
        match d {
            Done::Messages(r, reply) => drop(reply.send(r)),
            Done::Unit(r, reply) | Done::Delivered(_, _, r, reply) => drop(reply.send(r)),
            Done::Group(f) => f.run(true),
            Done::Run(after) => after(true),
        }
    }
}

fn fail(w: Write) {
    match w {
        Write::Messages(m, r) => drop(r.send(m.iter().map(|_| Err(Error::Stopped)).collect())),
        Write::Delivered(_, _, r) | Write::Token(_, r) | Write::DeleteTokens(_, r) => {
            drop(r.send(Err(Error::Stopped)));
        }
        Write::Group(g) => g.fail(),
        Write::Run(job) => drop(job),
    }
}

/// Moves `recipient`'s delivery cursor up to `upto` (never back), and drops the inbox index rows
/// that lie wholly behind it. One row a delivery, however many messages it carried, where
/// marking each message (`delivered_at`, before version 5) rewrote its row and changed the index
/// of undelivered messages twice.
fn deliver(conn: &Connection, recipient: &str, upto: i64) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO inbox_delivered (recipient, upto) VALUES (?1, ?2) \
         ON CONFLICT (recipient) DO UPDATE SET upto = max(upto, excluded.upto)",
    )?
    .execute(params![recipient, upto])?;
    conn.prepare_cached("DELETE FROM inbox_index WHERE recipient = ?1 AND last_seq <= ?2")?
        .execute(params![recipient, upto])?;
    Ok(())
}

pub(crate) const INSERT_MESSAGE: &str = "INSERT INTO messages (id, sender, sender_display, recipient, \
    recipient_display, conversation, body, sent_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)";

/// Runs `insert` ([`INSERT_MESSAGE`], prepared on `conn`) for `m`; returns its `seq`.
pub(crate) fn insert_message(
    conn: &Connection,
    insert: &mut rusqlite::Statement<'_>,
    m: &NewMessage,
    conversation: &str,
) -> SqlResult<i64> {
    insert.execute(params![
        &m.id.as_bytes()[..],
        m.sender,
        m.sender_display,
        m.recipient,
        m.recipient_display,
        conversation,
        m.body,
        m.sent_at
    ])?;
    Ok(conn.last_insert_rowid())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SqliteStore;
    use crate::testing::{inbox, send};
    use jaring_chat::config::Synchronous;
    use jaring_chat::storage::Store as _;

    #[tokio::test]
    async fn the_writer_thread_runs_under_sched_batch() {
        // Where it cannot be done (the tests run under `nice`, or a sandbox refuses the call),
        // the writer keeps the default policy: find out on a thread of our own.
        if !std::thread::spawn(wake_without_preempting).join().unwrap() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path(), Synchronous::Full, 16).unwrap();
        // The thread has set its policy once it has committed something.
        send(&store, "amy", "bob", "hi").await;
        // Field 41 of /proc/<pid>/task/<tid>/stat is the scheduling policy; 3 is SCHED_BATCH.
        // Other tests' stores run writers of their own in this process, one perhaps just started
        // and not yet switched: ours, which has committed, is among those that say 3.
        let mut batch = 0;
        for task in std::fs::read_dir("/proc/self/task").unwrap() {
            let task = task.unwrap().path();
            let comm = std::fs::read_to_string(task.join("comm")).unwrap_or_default();
            if comm.trim() != "chat-db-writer" {
                continue;
            }
            let stat = std::fs::read_to_string(task.join("stat")).unwrap_or_default();
            // The command name, in parentheses, may hold spaces: count fields after it.
            let Some((_, fields)) = stat.rsplit_once(") ") else {
                continue;
            };
            if fields.split(' ').nth(41 - 3) == Some("3") {
                batch += 1;
            }
        }
        assert!(batch >= 1, "no storage writer runs under SCHED_BATCH");
        drop(store);
    }

    #[tokio::test]
    async fn an_inbox_kept_in_memory_follows_every_commit() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path(), Synchronous::Full, 16).unwrap();
        send(&store, "amy", "bob", "before").await;
        // The first read fills bob's mailbox; from then on the writer keeps it.
        assert_eq!(inbox(&store, dir.path(), "bob").await, ["before"]);
        send(&store, "amy", "bob", "after").await;
        send(&store, "amy", "cat", "not bob's").await;
        assert_eq!(inbox(&store, dir.path(), "bob").await, ["before", "after"]);
        let first = store.pending("bob", 1, usize::MAX).await.unwrap().messages;
        assert_eq!(first.len(), 1, "the limit holds in memory too");
        store.mark_delivered("bob", first[0].seq).await.unwrap();
        assert_eq!(inbox(&store, dir.path(), "bob").await, ["after"]);
        // Another module's job (a federation link storing an incoming message) inserts rows
        // itself, in the writer's transaction: the mailbox hears of them all the same.
        store
            .run_in_commit(|c| {
                c.execute(
                    "INSERT INTO messages (id, sender, sender_display, recipient, \
                     recipient_display, conversation, body, sent_at) \
                     VALUES (?1, 'zed@far', 'zed', 'bob', 'bob', 'x', 'from afar', 0)",
                    [&uuid::Uuid::now_v7().as_bytes()[..]],
                )?;
                Ok(())
            })
            .await
            .unwrap();
        assert_eq!(
            inbox(&store, dir.path(), "bob").await,
            ["after", "from afar"]
        );
        // A job that fails leaves nothing behind, in the database or in memory.
        let failed = store
            .run_in_commit(|c| {
                c.execute(
                    "INSERT INTO messages (id, sender, sender_display, recipient, \
                     recipient_display, conversation, body, sent_at) \
                     VALUES (x'00', 'zed@far', 'zed', 'bob', 'bob', 'x', 'undone', 0)",
                    [],
                )?;
                Err::<(), _>(Error::Stopped)
            })
            .await;
        assert!(failed.is_err());
        assert_eq!(
            inbox(&store, dir.path(), "bob").await,
            ["after", "from afar"]
        );
    }
}
