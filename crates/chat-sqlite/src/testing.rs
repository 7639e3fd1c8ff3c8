//! Helpers the unit tests share: messages, a store's sends, and what its reads answer.

use std::path::Path;

use jaring_chat::storage::{NewMessage, Store as _, Window};

use crate::read::open_reader;
use crate::store::SqliteStore;

pub(crate) fn message(from: &str, to: &str, body: &str) -> NewMessage {
    NewMessage {
        id: uuid::Uuid::now_v7(),
        sender: from.into(),
        sender_display: from.into(),
        recipient: to.into(),
        recipient_display: to.into(),
        body: body.into(),
        sent_at: 0,
    }
}

pub(crate) async fn send(store: &SqliteStore, from: &str, to: &str, body: &str) {
    store.insert_message(message(from, to, body)).await.unwrap();
}

pub(crate) fn window(limit: usize) -> Window {
    Window {
        limit,
        before: None,
        max_bytes: usize::MAX,
    }
}

pub(crate) async fn history(store: &SqliteStore, limit: usize) -> Vec<String> {
    let found = store
        .conversation("bob", "amy", window(limit))
        .await
        .unwrap();
    assert!(!found.cut);
    found.messages.into_iter().map(|m| m.message.body).collect()
}

/// The bodies of `to`'s undelivered messages, as the store answers and as the database holds
/// them; the two must agree.
pub(crate) async fn inbox(store: &SqliteStore, dir: &Path, to: &str) -> Vec<String> {
    let answered: Vec<String> = store
        .pending(to, 100, usize::MAX)
        .await
        .unwrap()
        .messages
        .into_iter()
        .map(|m| m.message.body.clone())
        .collect();
    let db = open_reader(dir).unwrap();
    let mut s = db
        .prepare(
            "SELECT body FROM messages WHERE recipient = ?1 AND delivered_at IS NULL \
             AND seq > coalesce((SELECT upto FROM inbox_delivered WHERE recipient = ?1), 0) \
             ORDER BY seq",
        )
        .unwrap();
    let stored: Vec<String> = s
        .query_map([to], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(answered, stored, "the inbox and the database disagree");
    answered
}
