//! The storage conformance suite (`jaring_chat::storage::conformance`) on the PostgreSQL store:
//! one throwaway cluster for the suite, a database of its own per check; reopening closes the
//! store (its writer commits what was queued and releases the database's lock) and opens the
//! same database again, as a restarted realm does.

use std::time::Duration;

use jaring_chat::storage::conformance::{self, Backend};
use jaring_chat_postgres::{PostgresOptions, PostgresStore};
use jaring_testkit::pg::PgCluster;

/// Longest the whole suite may take: a hang fails the test instead of stalling `cargo test`.
const SUITE_TIMEOUT: Duration = Duration::from_secs(300);

struct Postgres {
    cluster: PgCluster,
    /// The url of every database handed out; the last is the one the suite reopens (it reopens
    /// only the store it was given last).
    urls: Vec<String>,
}

fn options() -> PostgresOptions {
    PostgresOptions {
        connect_timeout: Duration::from_secs(5),
        // A few readers per store: every check gets a store of its own on one cluster.
        pool_size: 4,
        ..PostgresOptions::default()
    }
}

impl Backend for Postgres {
    type Store = PostgresStore;

    async fn fresh(&mut self) -> PostgresStore {
        let url = self
            .cluster
            .create_database(&format!("check_{}", self.urls.len()));
        let store = PostgresStore::open_with(&url, options())
            .await
            .unwrap_or_else(|e| panic!("open a new PostgreSQL store at {url}: {e}"));
        self.urls.push(url);
        store
    }

    async fn reopen(&mut self, store: PostgresStore) -> PostgresStore {
        let url = self.urls.last().expect("reopen after fresh");
        // Waits for the writer to release the lock, so the open below is never refused.
        store.close().await;
        PostgresStore::open_with(url, options())
            .await
            .unwrap_or_else(|e| panic!("reopen {url}: {e}"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_postgres_store_passes_the_conformance_suite() {
    let Some(cluster) = PgCluster::start() else {
        return;
    };
    let mut backend = Postgres {
        cluster,
        urls: Vec::new(),
    };
    tokio::time::timeout(SUITE_TIMEOUT, conformance::run_all(&mut backend))
        .await
        .expect("the conformance suite did not finish in time");
}
