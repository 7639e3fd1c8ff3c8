//! Federation over real TCP: two and three linked realms, name resolution, a link cut under a
//! transfer, and everything that must be refused (client port, wrong secret, wrong realm name).
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use jaring_chat::federation::{Federation, FederationConfig, PeerConfig};
use jaring_chat::{RealmOptions, SystemClock};
use jaring_proto::federation::auth::{Role, Transcript, hex};
use jaring_proto::federation::{DEFAULT_MAX_FRAME, Frame, LinkFramer, VERSION};
use jaring_runtime::Model;
use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

const SECRET: &[u8] = b"a test secret of 32 bytes, ok...";

struct Node {
    _dir: tempfile::TempDir,
    running: Running,
    fed: Arc<Federation>,
}

impl Node {
    fn addr(&self) -> SocketAddr {
        self.running.addr
    }
}

fn peer(name: &str, address: SocketAddr, secret: &[u8]) -> PeerConfig {
    PeerConfig {
        name: name.into(),
        address: address.to_string(),
        secret: secret.to_vec(),
    }
}

/// Starts realm `name` with `users` (password = name + "pw"), linked to `peers`.
async fn node(name: &str, users: &[&str], peers: Vec<PeerConfig>) -> Node {
    let dir = tempfile::tempdir().unwrap();
    add_users(dir.path(), users);
    let options = RealmOptions {
        name: name.into(),
        ..options()
    };
    let running = start(
        dir.path(),
        options,
        Arc::new(SystemClock::default()),
        Model::Async,
    )
    .await;
    let mut config = FederationConfig::new("127.0.0.1:0".parse().unwrap(), peers);
    config.backoff_max = Duration::from_millis(500);
    config.lookup_timeout = Duration::from_secs(10);
    let fed = Federation::start(&running.realm, config, running.shutdown.clone())
        .await
        .unwrap();
    Node {
        _dir: dir,
        running,
        fed,
    }
}

/// An address nobody listens on, for peers that are only dialled by the other side.
fn nowhere() -> SocketAddr {
    "127.0.0.1:9".parse().unwrap()
}

async fn wait_up(fed: &Federation, peer: &str) {
    tokio::time::timeout(TIMEOUT, async {
        while !fed.is_up(peer) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("link up in time");
}

async fn login(addr: SocketAddr, user: &str) -> (Client, String) {
    let mut c = Client::connect(addr).await;
    let t = c.auth(user, &format!("{user}pw")).await;
    (c, t)
}

/// Reads `user`'s inbox until `n` messages arrived (failing on more), returning (sender, body).
async fn collect(c: &mut Client, token: &str, n: usize) -> Vec<(String, String)> {
    let mut got = Vec::new();
    tokio::time::timeout(TIMEOUT, async {
        while got.len() < n {
            let r = c.call(&format!("inbox {token}")).await;
            assert!(ok(&r), "{r}");
            let b = bodies(&r);
            if b.is_empty() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            got.extend(b);
        }
    })
    .await
    .unwrap_or_else(|_| panic!("only {} of {n} messages arrived", got.len()));
    assert_eq!(got.len(), n, "more messages than sent: {got:?}");
    got
}

/// realm1 (dials) and realm2 (listens), linked.
async fn pair(users1: &[&str], users2: &[&str]) -> (Node, Node) {
    let r2 = node("realm2", users2, vec![peer("realm1", nowhere(), SECRET)]).await;
    let r1 = node(
        "realm1",
        users1,
        vec![peer("realm2", r2.fed.local_addr(), SECRET)],
    )
    .await;
    wait_up(&r1.fed, "realm2").await;
    wait_up(&r2.fed, "realm1").await;
    (r1, r2)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_realms_private_messages_both_ways_with_history() {
    let (r1, r2) = pair(&["messi", "henderson"], &["james"]).await;
    let (mut messi, tm) = login(r1.addr(), "messi").await;
    let (mut james, tj) = login(r2.addr(), "james").await;

    let r = messi
        .call(&format!("send {tm} james@realm2 hello james"))
        .await;
    assert!(ok(&r), "{r}");
    // A bare name that is no local user is found on the one peer that has it.
    let r = messi.call(&format!("send {tm} james and again")).await;
    assert!(ok(&r), "{r}");
    // Unknown on a live peer: refused at once.
    let r = messi.call(&format!("send {tm} nobody@realm2 hi")).await;
    assert!(
        error(&r).contains("no user \"nobody\" on realm realm2"),
        "{r}"
    );
    let r = messi.call(&format!("send {tm} ghost@realm9 hi")).await;
    assert!(error(&r).contains("no link to realm"), "{r}");

    let got = collect(&mut james, &tj, 2).await;
    assert_eq!(
        got,
        vec![
            ("messi@realm1".to_owned(), "hello james".to_owned()),
            ("messi@realm1".to_owned(), "and again".to_owned())
        ]
    );
    let r = james.call(&format!("send {tj} messi back")).await;
    assert!(ok(&r), "{r}");
    let r = james
        .call(&format!("send {tj} henderson@realm1 hi hendo"))
        .await;
    assert!(ok(&r), "{r}");
    let got = collect(&mut messi, &tm, 1).await;
    assert_eq!(got, vec![("james@realm2".to_owned(), "back".to_owned())]);

    // The inbox names the remote sender as user@realm, in the key and in msg_from.
    let r = messi.call(&format!("history {tm} james@realm2")).await;
    let h: Vec<(String, String)> = r["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["from"].as_str().unwrap().into(),
                m["msg"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        h,
        vec![
            ("messi".into(), "hello james".into()),
            ("messi".into(), "and again".into()),
            ("james@realm2".into(), "back".into()),
        ]
    );
    let r = james.call(&format!("history {tj} messi@realm1")).await;
    assert_eq!(r["messages"].as_array().unwrap().len(), 3, "{r}");
    assert_eq!(r["messages"][0]["msg_from"], "messi@realm1");

    // Everything acknowledged: the outboxes drain.
    tokio::time::timeout(TIMEOUT, async {
        loop {
            let r = messi.call(&format!("realms {tm}")).await;
            assert_eq!(r["peers"][0]["realm"], "realm2", "{r}");
            if r["peers"][0]["state"] == "up" && r["peers"][0]["outbox"] == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap();
    r1.running.stop().await;
    r2.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_realms_resolve_bare_names() {
    // a dials b and c; b dials c. bob lives on b and c, carol on c, dave on a and c.
    let c = node(
        "c",
        &["bob", "carol", "dave"],
        vec![peer("a", nowhere(), SECRET), peer("b", nowhere(), SECRET)],
    )
    .await;
    let b = node(
        "b",
        &["bob"],
        vec![
            peer("a", nowhere(), SECRET),
            peer("c", c.fed.local_addr(), SECRET),
        ],
    )
    .await;
    let a = node(
        "a",
        &["alice", "dave"],
        vec![
            peer("b", b.fed.local_addr(), SECRET),
            peer("c", c.fed.local_addr(), SECRET),
        ],
    )
    .await;
    for (f, p) in [(&a.fed, "b"), (&a.fed, "c"), (&b.fed, "c"), (&c.fed, "a")] {
        wait_up(f, p).await;
    }
    let (mut alice, ta) = login(a.addr(), "alice").await;
    let r = alice.call(&format!("send {ta} bob hi")).await;
    let e = error(&r);
    assert!(e.contains("bob@b") && e.contains("bob@c"), "{e}");
    assert!(ok(&alice.call(&format!("send {ta} carol to carol")).await));
    assert!(ok(&alice
        .call(&format!("send {ta} bob@c to bob on c"))
        .await));
    assert!(ok(&alice
        .call(&format!("send {ta} dave local first"))
        .await));
    let r = alice.call(&format!("send {ta} zed hi")).await;
    assert!(error(&r).contains("no user \"zed\""), "{r}");

    let (mut carol, tc) = login(c.addr(), "carol").await;
    assert_eq!(
        collect(&mut carol, &tc, 1).await,
        vec![("alice@a".to_owned(), "to carol".to_owned())]
    );
    let (mut bob_c, tbc) = login(c.addr(), "bob").await;
    assert_eq!(
        collect(&mut bob_c, &tbc, 1).await,
        vec![("alice@a".to_owned(), "to bob on c".to_owned())]
    );
    let (mut dave, td) = login(a.addr(), "dave").await;
    assert_eq!(
        collect(&mut dave, &td, 1).await,
        vec![("alice".to_owned(), "local first".to_owned())]
    );
    // Both directions across every link: c's bob answers alice by bare name.
    assert!(ok(&bob_c
        .call(&format!("send {tbc} alice hello from c"))
        .await));
    let (mut b_bob, tbb) = login(b.addr(), "bob").await;
    assert!(ok(&b_bob.call(&format!("send {tbb} carol@c from b")).await));
    assert_eq!(
        collect(&mut alice, &ta, 1).await,
        vec![("bob@c".to_owned(), "hello from c".to_owned())]
    );
    assert_eq!(
        collect(&mut carol, &tc, 1).await,
        vec![("bob@b".to_owned(), "from b".to_owned())]
    );
    for n in [a, b, c] {
        n.running.stop().await;
    }
}

/// A TCP relay whose connections the test can cut at will, and whose target can be set later
/// (until then it closes every connection: the peer looks down).
struct Relay {
    addr: SocketAddr,
    target: Arc<Mutex<Option<SocketAddr>>>,
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accepts: JoinHandle<()>,
}

impl Relay {
    async fn start(target: Option<SocketAddr>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let conns: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let list = Arc::clone(&conns);
        let target = Arc::new(Mutex::new(target));
        let to = Arc::clone(&target);
        let accepts = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let Some(target) = *to.lock().unwrap() else {
                    continue;
                };
                let Ok(mut outbound) = TcpStream::connect(target).await else {
                    continue;
                };
                list.lock().unwrap().push(tokio::spawn(async move {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }));
            }
        });
        Self {
            addr,
            target,
            conns,
            accepts,
        }
    }

    /// Closes every relayed connection under the link.
    fn cut(&self) {
        for c in self.conns.lock().unwrap().drain(..) {
            c.abort();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_cut_mid_transfer_loses_and_duplicates_nothing() {
    let r2 = node(
        "realm2",
        &["james"],
        vec![peer("realm1", nowhere(), SECRET)],
    )
    .await;
    let relay = Relay::start(Some(r2.fed.local_addr())).await;
    let r1 = node(
        "realm1",
        &["messi"],
        vec![peer("realm2", relay.addr, SECRET)],
    )
    .await;
    wait_up(&r1.fed, "realm2").await;
    let (mut messi, tm) = login(r1.addr(), "messi").await;
    const N: usize = 1500;
    let mut batch = Vec::new();
    for i in 0..N {
        batch.extend_from_slice(format!("send {tm} james@realm2 m{i:05}\r\n").as_bytes());
        if (i + 1) % 300 == 0 {
            messi.send_raw(&batch).await;
            batch.clear();
            for k in 0..300 {
                if k == 150 {
                    relay.cut();
                }
                let r = messi.reply().await.unwrap();
                assert!(ok(&r), "{r}");
            }
            // Cut the link under whatever is in flight, several times.
            relay.cut();
        }
    }
    let (mut james, tj) = login(r2.addr(), "james").await;
    let got = collect(&mut james, &tj, N).await;
    let expected: Vec<(String, String)> = (0..N)
        .map(|i| ("messi@realm1".to_owned(), format!("m{i:05}")))
        .collect();
    assert_eq!(got, expected, "every message once, in order");
    relay.accepts.abort();
    r1.running.stop().await;
    r2.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_wait_for_a_down_peer_and_unknown_users_bounce_later() {
    let relay = Relay::start(None).await;
    let r1 = node(
        "realm1",
        &["messi"],
        vec![peer("realm2", relay.addr, SECRET)],
    )
    .await;
    let (mut messi, tm) = login(r1.addr(), "messi").await;
    // realm2 is down: both are accepted into the outbox; nobody can say yet that ghost is unknown.
    assert!(ok(&messi
        .call(&format!("send {tm} ghost@realm2 boo"))
        .await));
    assert!(ok(&messi
        .call(&format!("send {tm} james@realm2 waited"))
        .await));
    // A bare name cannot be looked up on a peer that is down: the ERROR says how to queue anyway.
    let r = messi.call(&format!("send {tm} james hi")).await;
    assert!(error(&r).contains("realm2 unreachable"), "{r}");
    let r = messi.call(&format!("realms {tm}")).await;
    assert_eq!(r["peers"][0]["outbox"], 2, "{r}");
    assert_ne!(r["peers"][0]["state"], "up", "{r}");

    let r2 = node(
        "realm2",
        &["james"],
        vec![peer("realm1", nowhere(), SECRET)],
    )
    .await;
    *relay.target.lock().unwrap() = Some(r2.fed.local_addr());
    let (mut james, tj) = login(r2.addr(), "james").await;
    assert_eq!(
        collect(&mut james, &tj, 1).await,
        vec![("messi@realm1".to_owned(), "waited".to_owned())]
    );
    let bounce = collect(&mut messi, &tm, 1).await;
    assert_eq!(bounce[0].0, "postmaster@realm2");
    assert!(
        bounce[0].1.contains("ghost") && bounce[0].1.contains("boo"),
        "{bounce:?}"
    );
    relay.accepts.abort();
    r1.running.stop().await;
    r2.running.stop().await;
}

/// Reads frames until the peer closes; returns them.
async fn frames_until_close(s: &mut TcpStream) -> Vec<Frame> {
    let mut framer = LinkFramer::new(DEFAULT_MAX_FRAME);
    let mut frames = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(TIMEOUT, s.read(&mut buf))
            .await
            .expect("the realm answers or closes")
            .unwrap_or(0);
        if n == 0 {
            return frames;
        }
        if framer.feed(&buf[..n], &mut frames).is_err() {
            return frames;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn impostors_and_clients_are_refused_and_nothing_is_delivered() {
    let (r1, r2) = pair(&["messi"], &["james"]).await;
    let (mut james, tj) = login(r2.addr(), "james").await;
    let msg = |id: &str| Frame::Msg {
        id: id.into(),
        from: "messi".into(),
        to: "james".into(),
        body: "forged".into(),
        sent_at: 0,
    };

    // 1. Link frames on the client port are just unknown commands.
    let (mut client, _) = login(r2.addr(), "james").await;
    for f in [
        Frame::Hello {
            v: VERSION,
            realm: "realm1".into(),
            to: "realm2".into(),
            nonce: hex(&[1; 32]),
        },
        msg("01a20000-0000-7000-8000-000000000001"),
    ] {
        let mut line = Vec::new();
        f.encode(&mut line);
        let r = client
            .call(std::str::from_utf8(&line).unwrap().trim_end())
            .await;
        assert!(error(&r).contains("unknown command"), "{r}");
    }
    // ...and a frame typed as a message is delivered as text, never routed.
    let (mut messi, tm) = login(r1.addr(), "messi").await;
    let text = r#"{"t":"msg","id":"01a20000-0000-7000-8000-000000000002","from":"x","to":"james","body":"b","sent_at":0}"#;
    assert!(ok(&messi
        .call(&format!("send {tm} james@realm2 {text}"))
        .await));
    assert_eq!(
        collect(&mut james, &tj, 1).await,
        vec![("messi@realm1".to_owned(), text.to_owned())]
    );

    // 2. Frames on the link port without a handshake.
    let mut s = TcpStream::connect(r2.fed.local_addr()).await.unwrap();
    let mut out = Vec::new();
    msg("01a20000-0000-7000-8000-000000000003").encode(&mut out);
    s.write_all(&out).await.unwrap();
    let got = frames_until_close(&mut s).await;
    assert!(matches!(&got[..], [Frame::Refused { .. }]), "{got:?}");

    // 3. Claiming to be realm1 without realm1's secret.
    for (claim, secret) in [
        ("realm1", b"not the secret, not at all".as_slice()),
        ("realm3", SECRET),
    ] {
        let mut s = TcpStream::connect(r2.fed.local_addr()).await.unwrap();
        let nonce = hex(&[7; 32]);
        let mut out = Vec::new();
        Frame::Hello {
            v: VERSION,
            realm: claim.into(),
            to: "realm2".into(),
            nonce: nonce.clone(),
        }
        .encode(&mut out);
        s.write_all(&out).await.unwrap();
        let mut framer = LinkFramer::new(DEFAULT_MAX_FRAME);
        let mut frames = Vec::new();
        let mut buf = [0u8; 4096];
        while frames.is_empty() {
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed before answering");
            framer.feed(&buf[..n], &mut frames).unwrap();
        }
        match frames.remove(0) {
            Frame::Challenge { nonce: ln, .. } => {
                let t = Transcript {
                    dialer: claim,
                    listener: "realm2",
                    dialer_nonce: &nonce,
                    listener_nonce: &ln,
                };
                let mut out = Vec::new();
                Frame::Auth {
                    mac: t.proof(secret, Role::Dialer),
                }
                .encode(&mut out);
                s.write_all(&out).await.unwrap();
                let rest = frames_until_close(&mut s).await;
                assert!(
                    matches!(&rest[..], [Frame::Refused { reason }] if reason.contains("failed authentication")),
                    "{rest:?}"
                );
            }
            // An unknown realm name is refused before any challenge.
            Frame::Refused { reason } => assert!(reason.contains("not a peer"), "{reason}"),
            other => panic!("unexpected {other:?}"),
        }
    }

    // 4. A second "realm1" configured with the wrong secret: its link never comes up, its
    // message waits in its own outbox.
    let r0 = node(
        "realm1",
        &["eve"],
        vec![peer(
            "realm2",
            r2.fed.local_addr(),
            b"wrong secret, 16+ bytes",
        )],
    )
    .await;
    let (mut eve, te) = login(r0.addr(), "eve").await;
    let r = eve.call(&format!("send {te} james@realm2 from eve")).await;
    assert!(ok(&r), "queued while the peer is unreachable: {r}");
    tokio::time::timeout(TIMEOUT, async {
        loop {
            let r = eve.call(&format!("realms {te}")).await;
            let p: &Value = &r["peers"][0];
            if p["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("authentication"))
            {
                assert_ne!(p["state"], "up");
                assert_eq!(p["outbox"], 1);
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap();

    // 5. A listener that is not the realm we meant (realm3 answering where realm2 should be).
    let r3 = node(
        "realm3",
        &["james"],
        vec![peer("realm1", nowhere(), SECRET)],
    )
    .await;
    let r1b = node(
        "realm1",
        &["messi"],
        vec![peer("realm2", r3.fed.local_addr(), SECRET)],
    )
    .await;
    tokio::time::timeout(TIMEOUT, async {
        loop {
            let entries = jaring_chat::federation::Remote::status(&*r1b.fed).await;
            if entries[0]
                .last_error
                .as_deref()
                .is_some_and(|e| e.contains("this is realm realm3, not realm2"))
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap();

    // Nothing forged reached james: his inbox is empty.
    let r = james.call(&format!("inbox {tj}")).await;
    assert!(bodies(&r).is_empty(), "{r}");
    for n in [r0, r1b, r3, r1, r2] {
        n.running.stop().await;
    }
}
