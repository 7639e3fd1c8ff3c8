//! SQLite storage for jaring chat realms. [`SqliteStore`], the embedded default, implements every
//! storage trait of `jaring_chat::storage` on one `chat.db` in WAL mode under the realm's data
//! directory. No SQLite call runs on an async worker: one writer thread commits in batches (group
//! commit) and answers each caller only after its commit; reads run on a few blocking threads with
//! read-only connections of their own. Design, rationale and measurements:
//! `docs/design/storage.md`.
//!
//! # Layout
//! Modules depend one way: each on those listed below it, never on one above.
//! - `lib.rs`: the public API, and [`Store`] (users and tokens, private messages, inbox, history).
//! - `groups`, `federation`, `users`: [`GroupStore`](jaring_chat::storage::GroupStore),
//!   [`FederationStore`](jaring_chat::storage::FederationStore) and
//!   [`UserAdmin`](jaring_chat::storage::UserAdmin), each with its tables' SQL.
//! - `store`: [`SqliteStore`] itself: the lock, the queue to the writer, the reader pool, and the
//!   ways in (`run_in_commit`, `run_publishing`, `read_with`).
//! - `writer`: the writer thread and its group commit.
//! - `group_writes`: the group writes the writer applies in its transaction.
//! - `read`: reader connections, and the SQL of the inbox and history reads.
//! - `schema`: the schema and its migrations, the checks at open, the data directory's lock.
//! - `index`: the bulk history and inbox indexes.
//! - `mailboxes`: each recipient's undelivered messages, kept in memory by the writer.
//! - `error`: [`Error`], what failed and on which file.

use std::sync::{Arc, PoisonError};

use jaring_chat::storage::{
    NewMessage, Page, Store, StoreError, StoreResult, StoredMessage, TokenRecord, UserRecord,
    Window, conversation_key,
};
use tokio::sync::oneshot;

pub mod error;
mod federation;
mod group_writes;
mod groups;
mod index;
mod mailboxes;
mod read;
mod schema;
mod store;
#[cfg(test)]
mod testing;
mod users;
mod writer;

pub use error::{Error, SqlResult};
pub use index::{HISTORY_INDEX_AFTER, HISTORY_INDEX_EVERY};
pub use jaring_chat::config::{DEFAULT_MAX_BATCH, Synchronous};
pub use read::MAX_READERS;
pub use schema::{DB_FILE, DEFAULT_QUICK_CHECK_ERRORS, LOCK_FILE, lock_dir, open};
pub use store::SqliteStore;
pub use writer::DEFAULT_WRITE_QUEUE;

use mailboxes::Lookup;
use read::{undelivered_within, within_bytes};
use writer::Write;

impl Store for SqliteStore {
    async fn users(&self) -> StoreResult<Vec<UserRecord>> {
        let r = async move { self.read(users::list_users).await }.await;
        r.map_err(StoreError::from)
    }

    async fn tokens(&self) -> StoreResult<Vec<TokenRecord>> {
        let r = async move { self.read(users::tokens).await }.await;
        r.map_err(StoreError::from)
    }

    async fn rehash_password(&self, name: &str, old: &str, new: &str) -> StoreResult<()> {
        let r = async move {
            let (name, old, new) = (name.to_owned(), old.to_owned(), new.to_owned());
            self.run_in_commit(move |c| users::rehash_password(c, &name, &old, &new))
                .await
        }
        .await;
        r.map_err(StoreError::from)
    }

    async fn insert_token(&self, token: TokenRecord) -> StoreResult<()> {
        let r = async move { self.write(|tx| Write::Token(token, tx)).await }.await;
        r.map_err(StoreError::from)
    }

    async fn delete_tokens(&self, hashes: Vec<[u8; 32]>) -> StoreResult<()> {
        let r = async move {
            if hashes.is_empty() {
                return Ok(());
            }
            self.write(|tx| Write::DeleteTokens(hashes, tx)).await
        }
        .await;
        r.map_err(StoreError::from)
    }

    async fn insert_messages(
        &self,
        messages: Vec<NewMessage>,
    ) -> Vec<StoreResult<Arc<StoredMessage>>> {
        let r = async move {
            let n = messages.len();
            let (tx, rx) = oneshot::channel();
            if self
                .writes
                .send(Write::Messages(messages, tx))
                .await
                .is_err()
            {
                return (0..n).map(|_| Err(Error::Stopped)).collect();
            }
            rx.await
                .unwrap_or_else(|_| (0..n).map(|_| Err(Error::Stopped)).collect())
        }
        .await;
        r.into_iter().map(|r| r.map_err(StoreError::from)).collect()
    }

    async fn pending(
        &self,
        recipient: &str,
        limit: usize,
        max_bytes: usize,
    ) -> StoreResult<Page<Arc<StoredMessage>>> {
        let r = async move {
            let lookup = self
                .mailboxes
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .lookup(recipient, limit);
            let (load, read_limit) = match lookup {
                Lookup::Hit(messages) => return Ok(within_bytes(messages, false, max_bytes)),
                Lookup::Miss { load, read_limit } => (load, read_limit),
            };
            let owned = recipient.to_owned();
            // The mailbox was marked as loading before this read's snapshot: see `mailboxes`. The
            // read stops at `max_bytes` of text whatever it was to fill: a recipient with large
            // messages waiting is read from the database a reply's worth at a time.
            let read = self
                .read(move |c| {
                    let tx = c.unchecked_transaction()?;
                    let page = undelivered_within(&tx, &owned, read_limit, max_bytes)?;
                    Ok((
                        page.messages.into_iter().map(Arc::new).collect::<Vec<_>>(),
                        page.cut,
                    ))
                })
                .await;
            let mut mailboxes = self
                .mailboxes
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            match (read, load) {
                (Ok((mut messages, cut)), load) => {
                    if let Some(load) = load {
                        if cut {
                            // Not all of them: no exact copy to keep.
                            mailboxes.abandon(load);
                        } else {
                            mailboxes.finish_load(load, &messages);
                        }
                    }
                    // A read that was to fill the mailbox may hold more than asked for.
                    let cut = cut && messages.len() <= limit;
                    messages.truncate(limit);
                    Ok(within_bytes(messages, cut, max_bytes))
                }
                (Err(e), Some(load)) => {
                    mailboxes.abandon(load);
                    Err(e)
                }
                (Err(e), None) => Err(e),
            }
        }
        .await;
        r.map_err(StoreError::from)
    }

    async fn mark_delivered(&self, recipient: &str, upto_seq: i64) -> StoreResult<()> {
        let r = async move {
            let recipient = recipient.to_owned();
            self.write(|tx| Write::Delivered(recipient, upto_seq, tx))
                .await
        }
        .await;
        r.map_err(StoreError::from)
    }

    async fn conversation(
        &self,
        a: &str,
        b: &str,
        window: Window,
    ) -> StoreResult<Page<StoredMessage>> {
        let r = async move {
            let key = conversation_key(a, b);
            self.read(move |c| read::conversation(c, &key, window))
                .await
        }
        .await;
        r.map_err(StoreError::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::send;

    /// An inbox read stops at its byte limit, from the database (no mailbox is kept from a read
    /// cut short) and from a mailbox alike, and says that it stopped.
    #[tokio::test]
    async fn an_inbox_read_stops_at_its_byte_limit() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path(), Synchronous::Normal, 16).unwrap();
        for i in 0..10 {
            send(&store, "amy", "bob", &format!("{i}{}", "x".repeat(599))).await;
        }
        let read = |max_bytes| store.pending("bob", 100, max_bytes);
        let first: Vec<i64> = (1..=10).collect();
        let seqs =
            |p: &Page<Arc<StoredMessage>>| p.messages.iter().map(|m| m.seq).collect::<Vec<_>>();
        for _ in 0..2 {
            // 1,500 bytes hold two of the 600-byte messages; the first always comes.
            let cut = read(1500).await.unwrap();
            assert_eq!(seqs(&cut), first[..2]);
            assert!(cut.cut);
            let one = read(10).await.unwrap();
            assert_eq!(seqs(&one), first[..1]);
            assert!(one.cut);
        }
        // A whole read fills the mailbox; reads from it stop at their limit the same way.
        let all = read(usize::MAX).await.unwrap();
        assert_eq!(seqs(&all), first);
        assert!(!all.cut);
        let cut = read(1500).await.unwrap();
        assert_eq!(seqs(&cut), first[..2]);
        assert!(cut.cut);
        store.mark_delivered("bob", 2).await.unwrap();
        assert_eq!(seqs(&read(1500).await.unwrap()), first[2..4]);
    }
}
