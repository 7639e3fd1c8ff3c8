//! The storage conformance suite (`jaring_chat::storage::conformance`) on the SQLite store: a
//! data directory of its own per check; reopening drops the store and opens the directory again,
//! as a restarted realm does.

use std::time::{Duration, Instant};

use jaring_chat::storage::conformance::{self, Backend};
use jaring_chat_sqlite::{DEFAULT_MAX_BATCH, Error, SqliteStore, Synchronous};
use tempfile::TempDir;

/// Longest a reopen waits for the previous store's lock to go.
const REOPEN_WAIT: Duration = Duration::from_secs(10);

#[derive(Default)]
struct Sqlite {
    /// Every directory handed out, removed when the suite is done; the last is the one the
    /// suite reopens (it reopens only the store it was given last).
    dirs: Vec<TempDir>,
}

impl Backend for Sqlite {
    type Store = SqliteStore;

    async fn fresh(&mut self) -> SqliteStore {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = SqliteStore::open(dir.path(), Synchronous::Full, DEFAULT_MAX_BATCH)
            .expect("open a new SQLite store");
        self.dirs.push(dir);
        store
    }

    async fn reopen(&mut self, store: SqliteStore) -> SqliteStore {
        let dir = self
            .dirs
            .last()
            .expect("reopen after fresh")
            .path()
            .to_owned();
        drop(store);
        // The directory's lock goes with the last clone; the writer thread may still be
        // finishing its last commit, which the new writer's first transaction waits for.
        let start = Instant::now();
        loop {
            match SqliteStore::open(&dir, Synchronous::Full, DEFAULT_MAX_BATCH) {
                Ok(store) => return store,
                Err(Error::Locked(_)) if start.elapsed() < REOPEN_WAIT => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err(e) => panic!("reopen {}: {e}", dir.display()),
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_sqlite_store_passes_the_conformance_suite() {
    conformance::run_all(&mut Sqlite::default()).await;
}
