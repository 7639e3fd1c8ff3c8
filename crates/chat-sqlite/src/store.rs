//! [`SqliteStore`]: the handle every storage trait is implemented on. It owns the data
//! directory's lock, the queue to the writer thread (and the thread), the reader connections and
//! the permits that bound them, and the mailboxes the writer keeps. Each trait's implementation
//! lives with its tables: the crate's `# Layout` names them.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use jaring_chat::config::Synchronous;
use jaring_chat::storage::{Published, StoredGroupMessage};
use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use crate::error::{Error, SqlResult};
use crate::group_writes::{Finish, GroupWrite};
use crate::mailboxes::{self, Mailboxes};
use crate::read::{MAX_READERS, open_reader};
use crate::schema::{DB_FILE, diagnose, lock_dir, open};
use crate::writer::{AfterCommit, DEFAULT_WRITE_QUEUE, Write, write_loop};

/// The SQLite store. Cloning shares the writer thread and the reader pool.
#[derive(Clone)]
pub struct SqliteStore {
    pub(crate) writes: mpsc::Sender<Write>,
    pub(crate) readers: Arc<Mutex<Vec<Connection>>>,
    /// One permit per read running at a time: reads past [`MAX_READERS`] wait their turn instead
    /// of each taking a blocking thread and opening a reader connection of their own.
    reading: Arc<tokio::sync::Semaphore>,
    /// Each recipient's undelivered messages, kept by the writer so `inbox` reads no database.
    pub(crate) mailboxes: Arc<Mutex<Mailboxes>>,
    dir: PathBuf,
    _lock: Arc<File>,
    /// The writer thread, joined by [`SqliteStore::close`].
    writer: Arc<Mutex<Option<std::thread::JoinHandle<()>>>>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Locks `dir`, opens its database and starts the writer thread. The thread ends when the last
    /// clone of the store is dropped, after committing what was queued.
    pub fn open(dir: &Path, sync: Synchronous, max_batch: usize) -> SqlResult<Self> {
        let lock = lock_dir(dir)?;
        let writer = open(dir, sync)?;
        let (tx, rx) = mpsc::channel(DEFAULT_WRITE_QUEUE);
        let max_batch = max_batch.max(1);
        let mailboxes = Arc::new(Mutex::new(Mailboxes::new(
            mailboxes::DEFAULT_BUDGET,
            mailboxes::DEFAULT_BOX_LIMIT,
        )));
        let kept = Arc::clone(&mailboxes);
        let writer = std::thread::Builder::new()
            .name("chat-db-writer".into())
            .spawn(move || write_loop(writer, rx, max_batch, &kept))
            .map_err(|source| Error::DataDir {
                path: dir.to_owned(),
                source,
            })?;
        Ok(Self {
            writes: tx,
            readers: Arc::default(),
            reading: Arc::new(tokio::sync::Semaphore::new(MAX_READERS)),
            mailboxes,
            dir: dir.to_owned(),
            _lock: Arc::new(lock),
            writer: Arc::new(Mutex::new(Some(writer))),
        })
    }

    /// Closes the store and, if this was its last clone, waits until the writer thread has
    /// committed what was queued and closed the database (checkpointing the WAL into `chat.db`),
    /// so a short-lived command leaves a self-contained file behind.
    pub async fn close(self) {
        let last = Arc::strong_count(&self.writer) == 1;
        let handle = self
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        drop(self);
        if let (true, Some(handle)) = (last, handle) {
            let _ = tokio::task::spawn_blocking(move || handle.join()).await;
        }
    }

    pub(crate) async fn write<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<SqlResult<T>>) -> Write,
    ) -> SqlResult<T> {
        let (tx, rx) = oneshot::channel();
        self.writes
            .send(make(tx))
            .await
            .map_err(|_| Error::Stopped)?;
        rx.await.map_err(|_| Error::Stopped)?
    }

    /// Runs `job` inside the writer's next transaction, together with whatever else is queued (one
    /// fsync for all), and returns its result once that transaction is committed. If the commit
    /// fails, the caller gets an error and nothing `job` wrote is kept. `job` must not commit or
    /// roll back itself; statements that fail inside it should be reported through its result.
    pub async fn run_in_commit<T: Send + 'static>(
        &self,
        job: impl FnOnce(&Connection) -> SqlResult<T> + Send + 'static,
    ) -> SqlResult<T> {
        self.run_in_commit_then(job, |_| {}).await
    }

    /// [`Self::run_in_commit`], and `then` runs on the writer thread once `job` succeeded and its
    /// transaction committed, before the answer goes out and before the writer's next
    /// transaction (so nothing committed later sees what it has not done yet).
    pub(crate) async fn run_in_commit_then<T: Send + 'static>(
        &self,
        job: impl FnOnce(&Connection) -> SqlResult<T> + Send + 'static,
        then: impl FnOnce(&T) + Send + 'static,
    ) -> SqlResult<T> {
        let (tx, rx) = oneshot::channel();
        let run: Box<dyn FnOnce(&Connection) -> AfterCommit + Send> = Box::new(move |conn| {
            // A savepoint per job: a job that fails leaves nothing behind, and the rest of the batch
            // still commits.
            let result = conn
                .execute_batch("SAVEPOINT job")
                .map_err(Error::from)
                .and_then(|()| job(conn));
            let keep = if result.is_ok() {
                "RELEASE job"
            } else {
                "ROLLBACK TO job; RELEASE job"
            };
            let result = match (result, conn.execute_batch(keep)) {
                (Ok(v), Ok(())) => Ok(v),
                (Err(e), _) => Err(e),
                (Ok(_), Err(e)) => Err(e.into()),
            };
            Box::new(move |committed| {
                let _ = tx.send(if committed {
                    if let Ok(v) = &result {
                        then(v);
                    }
                    result
                } else {
                    Err(Error::Stopped)
                });
            })
        });
        self.writes
            .send(Write::Run(run))
            .await
            .map_err(|_| Error::Stopped)?;
        rx.await.map_err(|_| Error::Stopped)?
    }

    /// Runs `job` in the writer's next transaction, under a savepoint of its own (a job that
    /// fails leaves nothing behind, and the rest of the batch still commits). `job` stores group
    /// messages and returns the new ones with its own answer; once the transaction is committed,
    /// each new message is given to `published` in order, on the writer thread (so pushes keep
    /// commit order), and only then is the answer returned.
    pub(crate) async fn run_publishing<T: Send + 'static>(
        &self,
        job: impl FnOnce(&Connection) -> SqlResult<(Vec<StoredGroupMessage>, T)> + Send + 'static,
        published: Published,
    ) -> SqlResult<T> {
        let (reply, answer) = oneshot::channel();
        let run = Box::new(move |tx: &Connection| {
            let result = tx
                .execute_batch("SAVEPOINT publishing")
                .map_err(Error::from)
                .and_then(|()| job(tx));
            let keep = if result.is_ok() {
                "RELEASE publishing"
            } else {
                "ROLLBACK TO publishing; RELEASE publishing"
            };
            let result = match (result, tx.execute_batch(keep)) {
                (Ok(v), Ok(())) => Ok(v),
                (Err(e), _) => Err(e),
                (Ok(_), Err(e)) => Err(e.into()),
            };
            Finish(Box::new(move |committed| {
                let _ = reply.send(match result {
                    Ok((stored, value)) if committed => {
                        for m in &stored {
                            published(m);
                        }
                        Ok(value)
                    }
                    Ok(_) => Err(Error::Stopped),
                    Err(e) => Err(e),
                });
            }))
        });
        self.writes
            .send(Write::Group(GroupWrite::Publishing(run)))
            .await
            .map_err(|_| Error::Stopped)?;
        answer.await.map_err(|_| Error::Stopped)?
    }

    /// Runs the read `f` on a blocking thread with a pooled connection of its own.
    pub async fn read_with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> SqlResult<T> + Send + 'static,
    ) -> SqlResult<T> {
        self.read(f).await
    }

    pub(crate) async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> SqlResult<T> + Send + 'static,
    ) -> SqlResult<T> {
        let permit = Arc::clone(&self.reading)
            .acquire_owned()
            .await
            .map_err(|_| Error::Stopped)?;
        let readers = Arc::clone(&self.readers);
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || {
            let conn = readers.lock().unwrap_or_else(PoisonError::into_inner).pop();
            let conn = match conn {
                Some(c) => c,
                None => open_reader(&dir)?,
            };
            // A damaged page or a failed read names the file and says it was a read (the realm's
            // start-up reads its users, tokens and groups through here).
            let result = f(&conn).map_err(|e| diagnose(e, None, &dir.join(DB_FILE)));
            readers
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(conn);
            drop(permit);
            result
        })
        .await
        .map_err(|_| Error::Stopped)?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::send;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_reads_at_once_share_a_few_reader_connections() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path(), Synchronous::Full, 16).unwrap();
        send(&store, "amy", "bob", "hi").await;
        // Slow reads, so that without the limit every one would hold a connection at once.
        let reads: Vec<_> = (0..50)
            .map(|_| {
                let store = store.clone();
                tokio::spawn(async move {
                    store
                        .read_with(|c| {
                            std::thread::sleep(std::time::Duration::from_millis(10));
                            Ok(c.query_row("SELECT count(*) FROM messages", [], |r| {
                                r.get::<_, i64>(0)
                            })?)
                        })
                        .await
                })
            })
            .collect();
        for read in reads {
            assert_eq!(read.await.unwrap().unwrap(), 1);
        }
        let opened = store
            .readers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len();
        assert!(
            (1..=MAX_READERS).contains(&opened),
            "{opened} reader connections"
        );
    }
}
