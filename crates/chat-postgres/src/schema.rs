//! The schema and its migrations: each a numbered step, applied in order, all pending ones in one
//! transaction with their rows in `jaring_schema`, so a crash half-way leaves the old version.

use tokio_postgres::Client;

use crate::error::{Error, PgResult};

/// The migrations, in order: version `i + 1` is `MIGRATIONS[i]`. Append only; never edit one
/// that was released.
const MIGRATIONS: &[&str] = &[
    // 1: everything the SQLite store's version 6 holds, without its bulk history index (a
    // B-tree over (conversation, seq) costs PostgreSQL little next to its commit).
    "
CREATE TABLE users (
    name TEXT PRIMARY KEY,
    display_name TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE TABLE tokens (
    hash BYTEA PRIMARY KEY,
    username TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX tokens_username ON tokens (username);
CREATE TABLE messages (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id UUID NOT NULL,
    sender TEXT NOT NULL,
    sender_display TEXT NOT NULL,
    recipient TEXT NOT NULL,
    recipient_display TEXT NOT NULL,
    conversation TEXT NOT NULL,
    body TEXT NOT NULL,
    sent_at BIGINT NOT NULL,
    delivered_at BIGINT
);
CREATE INDEX messages_pending ON messages (recipient, seq);
CREATE INDEX messages_conversation ON messages (conversation, seq);
CREATE TABLE inbox_delivered (
    recipient TEXT PRIMARY KEY,
    upto BIGINT NOT NULL
);
CREATE TABLE groups (
    name TEXT PRIMARY KEY,
    home TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    last_seq BIGINT NOT NULL DEFAULT 0,
    creator TEXT
);
CREATE TABLE group_members (
    grp TEXT NOT NULL,
    username TEXT NOT NULL,
    read_seq BIGINT NOT NULL,
    joined_at BIGINT NOT NULL,
    PRIMARY KEY (grp, username)
);
CREATE TABLE group_messages (
    grp TEXT NOT NULL,
    seq BIGINT NOT NULL,
    id UUID NOT NULL UNIQUE,
    sender TEXT NOT NULL,
    sender_display TEXT NOT NULL,
    body TEXT NOT NULL,
    sent_at BIGINT NOT NULL,
    PRIMARY KEY (grp, seq)
);
CREATE TABLE group_feeds (
    peer TEXT NOT NULL,
    grp TEXT NOT NULL,
    acked_seq BIGINT NOT NULL,
    PRIMARY KEY (peer, grp)
);
CREATE TABLE federated_ids (id UUID PRIMARY KEY);
CREATE TABLE outbox (
    peer TEXT NOT NULL,
    seq BIGINT NOT NULL,
    kind SMALLINT NOT NULL,
    PRIMARY KEY (peer, seq)
);
CREATE TABLE relayed_posts (
    id UUID PRIMARY KEY,
    seq BIGINT NOT NULL
);
",
    // 2: bench users (`jaring bench`); every user before them is a real one.
    "ALTER TABLE users ADD COLUMN bench BOOLEAN NOT NULL DEFAULT false;",
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: i32 = MIGRATIONS.len() as i32;

/// Brings the database up to [`SCHEMA_VERSION`] in one transaction; refuses a database of a
/// newer version (written by a newer jaring) rather than guess at it. Returns the version found.
/// The caller holds the realm's advisory lock, so no other jaring migrates at the same time.
pub(crate) async fn migrate(client: &mut Client, database: &str) -> PgResult<i32> {
    let tx = client.transaction().await?;
    // Looked up first rather than `CREATE TABLE IF NOT EXISTS` alone, which makes the server send
    // a NOTICE ("relation already exists, skipping") that the driver logs at every start.
    let exists: bool = tx
        .query_one("SELECT to_regclass('jaring_schema') IS NOT NULL", &[])
        .await?
        .get(0);
    if !exists {
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS jaring_schema (
                version INTEGER PRIMARY KEY,
                applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
             )",
        )
        .await?;
    }
    let found: i32 = tx
        .query_one("SELECT coalesce(max(version), 0) FROM jaring_schema", &[])
        .await?
        .get(0);
    if found > SCHEMA_VERSION {
        return Err(Error::Open(format!(
            "database {database} has jaring schema version {found}, newer than this jaring knows \
             ({SCHEMA_VERSION}); run the jaring that wrote it, or a newer one"
        )));
    }
    for (i, step) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        tx.batch_execute(step).await?;
        tx.execute(
            "INSERT INTO jaring_schema (version) VALUES ($1)",
            &[&(i as i32 + 1)],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(found)
}

#[cfg(test)]
mod tests {
    use std::str::FromStr as _;

    use jaring_chat::storage::{Store as _, StoreError, UserAdmin as _, UserRecord};
    use jaring_testkit::pg::PgCluster;
    use tokio_postgres::{AsyncMessage, NoTls};

    use super::*;

    #[tokio::test]
    async fn migrating_is_silent_and_idempotent() {
        let Some(pg) = PgCluster::start() else { return };
        let config = tokio_postgres::Config::from_str(&pg.url()).unwrap();
        let (mut client, mut connection) = config.connect(NoTls).await.unwrap();
        // Driven by hand to see the server's notices, which the driver would only log.
        let (notices, mut heard) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(Ok(m)) = std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                if let AsyncMessage::Notice(n) = m {
                    drop(notices.send(n.message().to_owned()));
                }
            }
        });
        assert_eq!(migrate(&mut client, "postgres").await.unwrap(), 0);
        assert_eq!(
            migrate(&mut client, "postgres").await.unwrap(),
            SCHEMA_VERSION
        );
        assert_eq!(
            migrate(&mut client, "postgres").await.unwrap(),
            SCHEMA_VERSION
        );
        let versions: i64 = client
            .query_one("SELECT count(*) FROM jaring_schema", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(
            versions,
            i64::from(SCHEMA_VERSION),
            "each step recorded once"
        );
        // Every notice was sent before the answers above; a round trip flushes the channel.
        client.batch_execute("SELECT 1").await.unwrap();
        let mut said = Vec::new();
        while let Ok(n) = heard.try_recv() {
            said.push(n);
        }
        assert!(said.is_empty(), "the server said: {said:?}");
    }

    /// A database at version 1 (before bench users) moves to the latest: its users stay, as
    /// real users, and bench users can be added.
    #[tokio::test]
    async fn a_version_1_database_gains_the_bench_flag_and_its_users_stay_real() {
        let Some(pg) = PgCluster::start() else { return };
        let url = pg.url();
        let config = tokio_postgres::Config::from_str(&url).unwrap();
        let (mut client, connection) = config.connect(NoTls).await.unwrap();
        tokio::spawn(connection);
        {
            // Version 1, as a jaring of that version left it.
            let tx = client.transaction().await.unwrap();
            tx.batch_execute(
                "CREATE TABLE jaring_schema (version INTEGER PRIMARY KEY, \
                 applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
            )
            .await
            .unwrap();
            tx.batch_execute(MIGRATIONS[0]).await.unwrap();
            tx.batch_execute(
                "INSERT INTO jaring_schema (version) VALUES (1); \
                 INSERT INTO users (name, display_name, password_hash, created_at) \
                 VALUES ('amy', 'Amy', 'h', 0);",
            )
            .await
            .unwrap();
            tx.commit().await.unwrap();
        }
        drop(client);
        let store = crate::PostgresStore::open(&url).await.unwrap();
        let users = store.users().await.unwrap();
        assert_eq!(users.len(), 1);
        assert!(
            !users[0].bench,
            "a user from before the flag is a real user"
        );
        let bench = |name: &str| UserRecord {
            name: name.into(),
            display_name: name.into(),
            password_hash: "cheap".into(),
            bench: false,
        };
        assert!(matches!(
            store.put_bench_users(vec![bench("amy")]).await,
            Err(StoreError::UserExists(n)) if n == "amy"
        ));
        store.put_bench_users(vec![bench("b0")]).await.unwrap();
        let flags: Vec<(String, bool)> = store
            .list_users()
            .await
            .unwrap()
            .into_iter()
            .map(|u| (u.name, u.bench))
            .collect();
        assert_eq!(flags, [("amy".into(), false), ("b0".into(), true)]);
        store.close().await;
        let (client, connection) = config.connect(NoTls).await.unwrap();
        tokio::spawn(connection);
        let version: i32 = client
            .query_one("SELECT max(version) FROM jaring_schema", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(version, SCHEMA_VERSION);
    }

    #[tokio::test]
    async fn a_database_of_a_newer_jaring_is_refused() {
        let Some(pg) = PgCluster::start() else { return };
        let url = pg.url();
        pg.psql(
            &url,
            &format!(
                "CREATE TABLE jaring_schema (version INTEGER PRIMARY KEY, \
                 applied_at TIMESTAMPTZ NOT NULL DEFAULT now()); \
                 INSERT INTO jaring_schema (version) VALUES ({})",
                SCHEMA_VERSION + 1
            ),
        );
        let config = tokio_postgres::Config::from_str(&url).unwrap();
        let (mut client, connection) = config.connect(NoTls).await.unwrap();
        tokio::spawn(connection);
        let e = migrate(&mut client, "postgres").await.unwrap_err();
        assert!(
            e.to_string().contains("newer than this jaring knows"),
            "{e}"
        );
    }
}
