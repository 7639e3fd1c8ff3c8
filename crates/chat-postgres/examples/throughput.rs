//! Durable private messages a second through the store alone (no realm, no TCP): `CLIENTS` tasks
//! each send one message at a time and wait for its commit, for `SECONDS`.
//!
//! `cargo run --release -p jaring-chat-postgres --example throughput -- URL [CLIENTS] [SECONDS]`

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use jaring_chat::storage::{NewMessage, Store};
use jaring_chat_postgres::PostgresStore;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .ok_or("usage: throughput URL [CLIENTS] [SECONDS]")?;
    let clients: usize = args.next().map_or(Ok(100), |a| a.parse())?;
    let seconds: u64 = args.next().map_or(Ok(10), |a| a.parse())?;
    let store = PostgresStore::open(&url).await?;
    let sent = Arc::new(AtomicU64::new(0));
    let end = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (store, sent) = (store.clone(), Arc::clone(&sent));
        tasks.push(tokio::spawn(async move {
            while Instant::now() < end {
                let m = NewMessage {
                    id: uuid::Uuid::now_v7(),
                    sender: format!("u{c}"),
                    sender_display: format!("U{c}"),
                    recipient: format!("u{}", (c + 1) % clients),
                    recipient_display: "x".into(),
                    body: "hello there, a message of about forty bytes".into(),
                    sent_at: 0,
                };
                if store.insert_message(m).await.is_ok() {
                    sent.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let n = sent.load(Ordering::Relaxed);
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{clients} clients: {n} durable messages in {secs:.1} s = {:.0}/s",
        n as f64 / secs
    );
    Ok(())
}
