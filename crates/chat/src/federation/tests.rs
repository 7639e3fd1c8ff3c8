//! Two federations linked over loopback TCP, each in front of a fake realm ([`LinkRealm`]) on the
//! in-memory store: the link protocol, the outbox and bounces, without a realm server or SQLite.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use jaring_runtime::CancellationToken;

use super::*;
use crate::groups::{DEFAULT_LIVE_QUEUE, DEFAULT_PRESENCE_MAX_MEMBERS};
use crate::storage::{FederationStore as _, MemoryStore, Store as _};

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

/// What a link needs of a realm, and no more: users by name, an empty hub.
struct FakeRealm {
    name: String,
    users: HashMap<String, String>,
    hub: Arc<Hub>,
    remote: OnceLock<Arc<dyn Remote>>,
}

impl FakeRealm {
    fn new(name: &str, users: &[(&str, &str)]) -> Arc<Self> {
        Arc::new(Self {
            name: name.into(),
            users: users
                .iter()
                .map(|(n, d)| ((*n).to_owned(), (*d).to_owned()))
                .collect(),
            hub: Arc::new(Hub::new(DEFAULT_LIVE_QUEUE, DEFAULT_PRESENCE_MAX_MEMBERS)),
            remote: OnceLock::new(),
        })
    }
}

impl LinkRealm for FakeRealm {
    fn name(&self) -> &str {
        &self.name
    }
    fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }
    fn display_name(&self, user: &str) -> Option<String> {
        self.users.get(user).cloned()
    }
    fn members_for_peer(&self, _: &str) -> Option<Vec<jaring_proto::federation::GroupMember>> {
        None
    }
    fn join_for_peer<'a>(
        &'a self,
        group: &'a str,
        _: &'a str,
    ) -> BoxFuture<'a, Result<JoinOutcome, String>> {
        Box::pin(async move { Err(format!("no group {group:?} in this fake")) })
    }
    fn leave_for_peer<'a>(&'a self, _: &'a str, _: &'a str) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async { Ok(()) })
    }
    fn post_relayed(&self, _: Vec<NewGroupMessage>) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async { Ok(()) })
    }
    fn set_remote(&self, remote: Arc<dyn Remote>) {
        let _ = self.remote.set(remote);
    }
}

fn config(peer: &str, address: String) -> FederationConfig {
    let mut c = FederationConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        vec![PeerConfig {
            name: peer.into(),
            address,
            secret: SECRET.to_vec(),
            tls: None,
        }],
    );
    c.backoff_max = Duration::from_millis(200);
    c
}

fn message(from: &str, to: &str, body: &str) -> NewMessage {
    NewMessage {
        id: uuid::Uuid::now_v7(),
        sender: from.into(),
        sender_display: from.to_uppercase(),
        recipient: to.into(),
        recipient_display: to.into(),
        body: body.into(),
        sent_at: 1,
    }
}

/// Polls `f` until it returns `Some`, for at most 20 s.
async fn eventually<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    mut f: impl FnMut() -> F,
) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "timed out: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_delivers_the_outbox_once_and_bounces_unknown_users() {
    let shutdown = CancellationToken::new();
    let (alpha, beta) = (
        FakeRealm::new("alpha", &[("messi", "Lionel Messi")]),
        FakeRealm::new("beta", &[("ronaldo", "Cristiano Ronaldo")]),
    );
    let (sa, sb) = (MemoryStore::new(), MemoryStore::new());
    // beta accepts (it sorts second), alpha dials it.
    let fb = Federation::start(
        &beta,
        sb.clone(),
        config("alpha", "127.0.0.1:1".into()),
        shutdown.clone(),
    )
    .await
    .unwrap();
    let fa = Federation::start(
        &alpha,
        sa.clone(),
        config("beta", fb.local_addr().to_string()),
        shutdown.clone(),
    )
    .await
    .unwrap();
    eventually("the link is up", || async {
        fa.is_up("beta").then_some(())
    })
    .await;

    // The realm asks the federation through its port; names come from the fake realm.
    let remote = alpha.remote.get().unwrap();
    assert_eq!(
        remote.lookup("beta", "ronaldo").await,
        Lookup::Found("Cristiano Ronaldo".into())
    );
    assert_eq!(remote.lookup("beta", "nobody").await, Lookup::Missing);

    let sent = remote
        .enqueue(
            "beta",
            vec![
                message("messi", "ronaldo@beta", "one"),
                message("messi", "nobody@beta", "lost"),
                // A NUL (which a peer may send: no client of ours can) arrives as U+FFFD.
                message("messi", "ronaldo@beta", "t\0wo"),
            ],
        )
        .await
        .unwrap();
    assert_eq!(sent.len(), 3);
    let inbox = eventually("both messages at beta", || async {
        let p = sb.pending("ronaldo", 10, 1 << 20).await.unwrap();
        (p.messages.len() == 2).then_some(p)
    })
    .await;
    let got: Vec<(&str, &str)> = inbox
        .messages
        .iter()
        .map(|m| (m.message.sender.as_str(), m.message.body.as_str()))
        .collect();
    assert_eq!(
        got,
        [("messi@alpha", "one"), ("messi@alpha", "t\u{fffd}wo")],
        "in order, named as beta names them, storable by every backend"
    );
    let bounce = eventually("the bounce back at alpha", || async {
        let p = sa.pending("messi", 10, 1 << 20).await.unwrap();
        p.messages.into_iter().next()
    })
    .await;
    assert_eq!(bounce.message.sender, "postmaster@beta");
    assert!(
        bounce.message.body.contains("nobody"),
        "{}",
        bounce.message.body
    );
    eventually("the outbox settled", || async {
        let counts = sa.outbox_counts().await.unwrap();
        (counts.get("beta").copied().unwrap_or(0) == 0).then_some(())
    })
    .await;
    // Nothing arrives twice: beta's store has each message once.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        sb.pending("ronaldo", 10, 1 << 20)
            .await
            .unwrap()
            .messages
            .len(),
        2
    );
    shutdown.cancel();
}
