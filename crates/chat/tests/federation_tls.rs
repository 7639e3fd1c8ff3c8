//! Federation links over mutual TLS with pinned keys, between real realms on loopback: a pinned
//! link delivers both ways and survives cuts; a wrong pin, a foreign CA, an expired certificate,
//! a relay that terminates TLS (even with pinned certificates), a plaintext dialer, a dial
//! answered without TLS and a pinned key claiming another realm's name are each refused, with
//! the reason in the peer's link state.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use common::federation::*;
use common::*;
use jaring_chat::federation::{Federation, PeerConfig, PeerTls, Remote as _};
use jaring_chat_sqlite::SqliteStore;
use jaring_proto::federation::auth::{CHANNEL_LABEL, CHANNEL_LEN, Role, Transcript, hex};
use jaring_proto::federation::{DEFAULT_MAX_FRAME, Frame, LinkFramer, VERSION};
use jaring_tls::pki::Authority;
use jaring_tls::{Fingerprint, Identity, LinkTrust};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

const DAY: Duration = Duration::from_secs(24 * 3600);

/// A leaf of `ca` for 127.0.0.1, valid from a day ago for a year.
fn leaf(ca: &Authority) -> Identity {
    let now = SystemTime::now();
    leaf_valid(ca, now - DAY, now + 365 * DAY)
}

fn leaf_valid(ca: &Authority, not_before: SystemTime, not_after: SystemTime) -> Identity {
    let l = ca
        .issue(&["127.0.0.1".to_owned()], not_before, not_after)
        .unwrap();
    Identity::from_pem(&l.cert_pem, &l.key_pem).unwrap()
}

/// The peer must hold `id`'s key.
fn pinned(id: &Identity) -> Option<PeerTls> {
    Some(PeerTls {
        pin: id.fingerprint(),
        ca: None,
    })
}

/// The peer must hold `id`'s key, in a certificate issued by `ca`.
fn pinned_from(id: &Identity, ca: &Authority) -> Option<PeerTls> {
    Some(PeerTls {
        pin: id.fingerprint(),
        ca: Some(vec![ca.cert_der().clone()]),
    })
}

/// Peer `name` at `address`, its link checked by `tls` (plaintext when `None`).
fn tls_peer(name: &str, address: SocketAddr, tls: Option<PeerTls>) -> PeerConfig {
    PeerConfig {
        tls,
        ..peer(name, address, SECRET)
    }
}

/// Starts realm `name` with `users` (password = name + "pw"), presenting `identity` on its
/// links, linked to `peers`.
async fn node(
    name: &str,
    users: &[&str],
    identity: Option<&Identity>,
    peers: Vec<PeerConfig>,
) -> Node {
    node_config(name, users, peers, |config| {
        config.backoff_max = Duration::from_millis(300);
        config.identity = identity.cloned();
    })
    .await
}

/// realm2 with james, presenting `identity`, only dialled by realm1, which it checks by `tls`.
async fn realm2(identity: Option<&Identity>, tls: Option<PeerTls>) -> Node {
    let peers = vec![tls_peer("realm1", nowhere(), tls)];
    node("realm2", &["james"], identity, peers).await
}

/// realm1 with messi, presenting `identity`, dialling realm2 at `address`, which it checks by
/// `tls`.
async fn realm1(identity: Option<&Identity>, address: SocketAddr, tls: Option<PeerTls>) -> Node {
    let peers = vec![tls_peer("realm2", address, tls)];
    node("realm1", &["messi"], identity, peers).await
}

/// Waits until `fed`'s link state for `peer` carries a reason containing `needle`; returns it.
async fn wait_reason(fed: &Federation<SqliteStore>, peer: &str, needle: &str) -> String {
    let mut last = None;
    let found = tokio::time::timeout(TIMEOUT, async {
        loop {
            let status = fed.status().await;
            let entry = status.iter().find(|p| p.realm == peer).unwrap();
            assert_ne!(entry.state, "up", "the link must not come up: {entry:?}");
            if let Some(e) = &entry.last_error
                && e.contains(needle)
            {
                return e.clone();
            }
            last = entry.last_error.clone();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    found.unwrap_or_else(|_| panic!("no reason with {needle:?} for {peer}; last: {last:?}"))
}

/// Sends messi@realm1 → james@realm2 (queued while the link is down) and checks that after the
/// refusals nothing reached james.
async fn nothing_delivered(r1: &Node, r2: &Node) {
    let (mut messi, tm) = login(r1.addr(), "messi").await;
    let r = messi.call(&format!("send {tm} james@realm2 secret")).await;
    assert!(ok(&r), "queued while the peer is unreachable: {r}");
    // A few redials' worth.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let (mut james, tj) = login(r2.addr(), "james").await;
    let r = james.call(&format!("inbox {tj}")).await;
    assert!(
        bodies(&r).is_empty(),
        "nothing may cross a refused link: {r}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pinned_mtls_link_delivers_both_ways() {
    let ca = Authority::create("test CA").unwrap();
    let (id1, id2) = (leaf(&ca), leaf(&ca));
    let r2 = realm2(Some(&id2), pinned(&id1)).await;
    // With the CA check on both sides too.
    let r1 = realm1(Some(&id1), r2.link(), pinned_from(&id2, &ca)).await;
    wait_up(&r1.fed, "realm2").await;
    wait_up(&r2.fed, "realm1").await;
    let (mut messi, tm) = login(r1.addr(), "messi").await;
    let (mut james, tj) = login(r2.addr(), "james").await;
    let r = messi
        .call(&format!("send {tm} james@realm2 over tls"))
        .await;
    assert!(ok(&r), "{r}");
    assert_eq!(
        collect(&mut james, &tj, 1).await,
        vec![("messi@realm1".to_owned(), "over tls".to_owned())]
    );
    let r = james
        .call(&format!("send {tj} messi@realm1 and back"))
        .await;
    assert!(ok(&r), "{r}");
    assert_eq!(
        collect(&mut messi, &tm, 1).await,
        vec![("james@realm2".to_owned(), "and back".to_owned())]
    );
    r1.stop().await;
    r2.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_pin_is_refused_and_nothing_is_delivered() {
    let ca = Authority::create("test CA").unwrap();
    let (id1, id2, other) = (leaf(&ca), leaf(&ca), leaf(&ca));
    let r2 = realm2(Some(&id2), pinned(&id1)).await;
    // realm1 pins a key realm2 does not hold.
    let r1 = realm1(Some(&id1), r2.link(), pinned(&other)).await;
    let reason = wait_reason(&r1.fed, "realm2", "is not the pinned one").await;
    assert!(
        reason.contains(&id2.fingerprint().to_string()),
        "the reason names the key realm2 presented: {reason}"
    );
    nothing_delivered(&r1, &r2).await;
    r1.stop().await;
    r2.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_from_another_ca_is_refused_when_ca_is_set() {
    let ca = Authority::create("test CA").unwrap();
    let foreign = Authority::create("another CA").unwrap();
    let (id1, id2) = (leaf(&ca), leaf(&foreign));
    // The dialer checks: realm2's key is pinned, but its certificate is from another CA.
    let r2 = realm2(Some(&id2), pinned(&id1)).await;
    let r1 = realm1(Some(&id1), r2.link(), pinned_from(&id2, &ca)).await;
    wait_reason(&r1.fed, "realm2", "was not issued by the CA").await;
    nothing_delivered(&r1, &r2).await;
    r1.stop().await;
    r2.stop().await;

    // The listener checks: realm1's key is pinned, its certificate is from another CA.
    let id1 = leaf(&foreign);
    let id2 = leaf(&ca);
    let r2 = realm2(Some(&id2), pinned_from(&id1, &ca)).await;
    let r1 = realm1(Some(&id1), r2.link(), pinned(&id2)).await;
    let theirs = wait_reason(&r1.fed, "realm2", "was not issued by the CA").await;
    assert!(theirs.contains("refused by"), "{theirs}");
    let ours = wait_reason(&r2.fed, "realm1", "was not issued by the CA").await;
    assert!(
        ours.contains("TLS link from realm realm1 refused"),
        "{ours}"
    );
    r1.stop().await;
    r2.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_certificate_is_refused() {
    let ca = Authority::create("test CA").unwrap();
    let now = SystemTime::now();
    let id1 = leaf(&ca);
    let expired = leaf_valid(&ca, now - 30 * DAY, now - DAY);
    let r2 = realm2(Some(&expired), pinned(&id1)).await;
    let r1 = realm1(Some(&id1), r2.link(), pinned(&expired)).await;
    wait_reason(&r1.fed, "realm2", "expired").await;
    nothing_delivered(&r1, &r2).await;
    r1.stop().await;
    r2.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plaintext_dialer_is_refused_by_a_peer_that_requires_tls() {
    let ca = Authority::create("test CA").unwrap();
    let (id1, id2) = (leaf(&ca), leaf(&ca));
    let r2 = realm2(Some(&id2), pinned(&id1)).await;
    let r1 = realm1(None, r2.link(), None).await;
    let theirs = wait_reason(&r1.fed, "realm2", "connected in plaintext").await;
    assert!(theirs.contains("must be mutual TLS"), "{theirs}");
    wait_reason(&r2.fed, "realm1", "connected in plaintext").await;
    nothing_delivered(&r1, &r2).await;
    r1.stop().await;
    r2.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dial_answered_without_tls_is_refused() {
    let ca = Authority::create("test CA").unwrap();
    let (id1, id2) = (leaf(&ca), leaf(&ca));
    // A plaintext realm (no TLS at all) closes a TLS connection.
    let r2 = realm2(None, None).await;
    let r1 = realm1(Some(&id1), r2.link(), pinned(&id2)).await;
    wait_reason(&r1.fed, "realm2", "during the TLS handshake").await;
    nothing_delivered(&r1, &r2).await;
    r1.stop().await;
    r2.stop().await;

    // Something that answers in plaintext (an older realm refusing the bytes it cannot read).
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let answers = tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
            let _ = s
                .write_all(b"{\"t\":\"refused\",\"reason\":\"protocol error\"}\n")
                .await;
        }
    });
    let r1 = realm1(Some(&id1), addr, pinned(&id2)).await;
    wait_reason(&r1.fed, "realm2", "did not answer with TLS").await;
    answers.abort();
    r1.stop().await;
}

/// A TLS client holding `id`, trusting only `server_pin`.
async fn tls_dial(
    addr: SocketAddr,
    id: &Identity,
    server_pin: Fingerprint,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let config = jaring_tls::link_client_config(
        id,
        LinkTrust {
            pins: vec![server_pin],
            ca: None,
        },
    )
    .unwrap();
    let tcp = TcpStream::connect(addr).await.unwrap();
    tokio_rustls::TlsConnector::from(config)
        .connect(jaring_tls::server_name("127.0.0.1").unwrap(), tcp)
        .await
        .unwrap()
}

/// The frames `s` sends until it closes (or a refusal).
async fn frames_until_close<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> Vec<Frame> {
    let mut framer = LinkFramer::new(DEFAULT_MAX_FRAME);
    let mut frames = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let _ = tokio::time::timeout(TIMEOUT, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => framer.feed(&buf[..n], &mut frames).unwrap(),
            }
            if frames.iter().any(|f| matches!(f, Frame::Refused { .. })) {
                break;
            }
        }
    })
    .await;
    frames
}

fn hello(realm: &str, to: &str) -> Vec<u8> {
    let mut out = Vec::new();
    Frame::Hello {
        v: VERSION,
        realm: realm.into(),
        to: to.into(),
        nonce: hex(&[1u8; 32]),
    }
    .encode(&mut out);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pinned_key_cannot_claim_another_realms_name() {
    let ca = Authority::create("test CA").unwrap();
    let (id1, id2, id3) = (leaf(&ca), leaf(&ca), leaf(&ca));
    let r2 = node(
        "realm2",
        &["james"],
        Some(&id2),
        vec![
            tls_peer("realm1", nowhere(), pinned(&id1)),
            tls_peer("realm3", nowhere(), pinned(&id3)),
        ],
    )
    .await;
    // realm3's key, valid and pinned, says it is realm1.
    let mut s = tls_dial(r2.link(), &id3, id2.fingerprint()).await;
    s.write_all(&hello("realm1", "realm2")).await.unwrap();
    s.flush().await.unwrap();
    let frames = frames_until_close(&mut s).await;
    match frames.as_slice() {
        [Frame::Refused { reason }] => assert!(
            reason.contains("key pinned for realm realm3 claimed to be realm realm1"),
            "{reason}"
        ),
        other => panic!("expected one refusal, got {other:?}"),
    }
    // And with its own name it gets a challenge (the pin alone admits it that far).
    let mut s = tls_dial(r2.link(), &id3, id2.fingerprint()).await;
    s.write_all(&hello("realm3", "realm2")).await.unwrap();
    s.flush().await.unwrap();
    let frames = first_frames(&mut s).await;
    assert!(matches!(frames[0], Frame::Challenge { .. }), "{frames:?}");
    r2.stop().await;
}

/// What a relay that terminates TLS on both sides saw.
#[derive(Default)]
struct Spliced {
    /// The channel binding of the dialer's TLS session with the relay.
    dialer_side: Vec<u8>,
    /// The channel binding of the relay's TLS session with the listener.
    listener_side: Vec<u8>,
    /// Frames the dialer sent, then frames the listener sent, as forwarded.
    from_dialer: Vec<Frame>,
    from_listener: Vec<Frame>,
}

/// Forwards decrypted bytes from `rd` to `wr`, recording the frames.
async fn forward<R, W>(mut rd: R, mut wr: W, seen: Arc<Mutex<Spliced>>, from_dialer: bool)
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    let mut framer = LinkFramer::new(DEFAULT_MAX_FRAME);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match rd.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut frames = Vec::new();
        let _ = framer.feed(&buf[..n], &mut frames);
        {
            let mut s = seen.lock().unwrap();
            let list = if from_dialer {
                &mut s.from_dialer
            } else {
                &mut s.from_listener
            };
            list.extend(frames);
        }
        if wr.write_all(&buf[..n]).await.is_err() || wr.flush().await.is_err() {
            break;
        }
    }
    let _ = wr.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_with_pinned_certificates_cannot_splice_two_links() {
    let ca = Authority::create("test CA").unwrap();
    let (id1, id2) = (leaf(&ca), leaf(&ca));
    // The attacker holds two valid certificates whose keys the realms pin: realm1 pins `to_dialer`
    // as realm2's, realm2 pins `to_listener` as realm1's (a stolen key each, or a mistake).
    let (to_dialer, to_listener) = (leaf(&ca), leaf(&ca));
    let r2 = realm2(Some(&id2), pinned(&to_listener)).await;

    let relay = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let relay_addr = relay.local_addr().unwrap();
    // Every finished splice, in order.
    let seen: Arc<Mutex<Vec<Spliced>>> = Arc::default();
    let server = jaring_tls::link_server_config(
        &to_dialer,
        LinkTrust {
            pins: vec![id1.fingerprint()],
            ca: None,
        },
    )
    .unwrap();
    let relays: JoinHandle<()> = {
        let seen = Arc::clone(&seen);
        let (to_listener, target, pin2) = (to_listener.clone(), r2.link(), id2.fingerprint());
        tokio::spawn(async move {
            // One splice at a time: the dialer redials after each failure.
            while let Ok((inbound, _)) = relay.accept().await {
                let Ok(inbound) = tokio_rustls::TlsAcceptor::from(Arc::clone(&server))
                    .accept(inbound)
                    .await
                else {
                    continue;
                };
                let outbound = tls_dial(target, &to_listener, pin2).await;
                let this: Arc<Mutex<Spliced>> = Arc::default();
                {
                    let mut s = this.lock().unwrap();
                    s.dialer_side = inbound
                        .get_ref()
                        .1
                        .export_keying_material(vec![0u8; CHANNEL_LEN], CHANNEL_LABEL, None)
                        .unwrap();
                    s.listener_side = outbound
                        .get_ref()
                        .1
                        .export_keying_material(vec![0u8; CHANNEL_LEN], CHANNEL_LABEL, None)
                        .unwrap();
                }
                let (ird, iwr) = tokio::io::split(inbound);
                let (ord, owr) = tokio::io::split(outbound);
                let a = tokio::spawn(forward(ird, owr, Arc::clone(&this), true));
                let b = tokio::spawn(forward(ord, iwr, Arc::clone(&this), false));
                let _ = tokio::join!(a, b);
                let done = std::mem::take(&mut *this.lock().unwrap());
                seen.lock().unwrap().push(done);
            }
        })
    };
    let r1 = realm1(Some(&id1), relay_addr, pinned(&to_dialer)).await;
    let reason = wait_reason(&r1.fed, "realm2", "channel binding does not match").await;
    assert!(
        reason.contains("failed authentication as realm2 over TLS"),
        "{reason}"
    );
    nothing_delivered(&r1, &r2).await;
    tokio::time::timeout(TIMEOUT, async {
        while seen.lock().unwrap().is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("a splice finished");
    relays.abort();

    // Both TLS sessions were up and the frames went through unchanged: the only thing that
    // stopped the splice is the channel binding. The listener's proof is genuine for its own
    // channel, and would have passed the dialer without the binding.
    let s = seen.lock().unwrap().remove(0);
    assert_ne!(
        s.dialer_side, s.listener_side,
        "two TLS sessions, two channels"
    );
    let Some(Frame::Hello { nonce: dn, .. }) = s.from_dialer.first().cloned() else {
        panic!("no hello relayed: {:?}", s.from_dialer);
    };
    let Some(Frame::Challenge { nonce: ln, mac, .. }) = s.from_listener.first().cloned() else {
        panic!("no challenge relayed: {:?}", s.from_listener);
    };
    fn at<'a>(dn: &'a str, ln: &'a str, channel: Option<&'a [u8]>) -> Transcript<'a> {
        Transcript {
            dialer: "realm1",
            listener: "realm2",
            dialer_nonce: dn,
            listener_nonce: ln,
            channel,
        }
    }
    assert!(
        at(&dn, &ln, Some(&s.listener_side)).verify(SECRET, Role::Listener, &mac),
        "the listener's genuine proof, over its channel with the relay"
    );
    assert!(
        !at(&dn, &ln, Some(&s.dialer_side)).verify(SECRET, Role::Listener, &mac),
        "fails over the dialer's channel: what stopped the splice"
    );
    // Unbound, both ends compute the proof over the same relayed fields: it would have passed.
    let unbound = at(&dn, &ln, None).proof(SECRET, Role::Listener);
    assert!(at(&dn, &ln, None).verify(SECRET, Role::Listener, &unbound));
    assert!(
        matches!(s.from_dialer.last(), Some(Frame::Refused { .. })),
        "the dialer refused the relayed challenge: {:?}",
        s.from_dialer
    );
    r1.stop().await;
    r2.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_link_cut_mid_transfer_loses_and_duplicates_nothing() {
    let ca = Authority::create("test CA").unwrap();
    let (id1, id2) = (leaf(&ca), leaf(&ca));
    let r2 = realm2(Some(&id2), pinned(&id1)).await;
    let relay = Relay::start(Some(r2.link())).await;
    let r1 = realm1(Some(&id1), relay.addr, pinned(&id2)).await;
    wait_up(&r1.fed, "realm2").await;
    transfer_through_cuts(&r1, &r2, &relay).await;
    relay.accepts.abort();
    r1.stop().await;
    r2.stop().await;
}
