//! Realm links: pinned mutual TLS 1.3, over in-memory connection pairs (no sockets needed to
//! see which side refuses what).

#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use jaring_tls::pki::Authority;
use jaring_tls::{
    Fingerprint, Identity, LinkRefusal, LinkTrust, Trust, client_config, link_client_config,
    link_refusal, link_server_config, server_name,
};
use rustls::{ClientConnection, Connection, ServerConnection};

const DAY: Duration = Duration::from_secs(86_400);

fn leaf(ca: &Authority, not_before: SystemTime, not_after: SystemTime) -> Identity {
    let leaf = ca
        .issue(&["realm.example".to_owned()], not_before, not_after)
        .unwrap();
    Identity::from_pem(&leaf.cert_pem, &leaf.key_pem).unwrap()
}

fn valid_leaf(ca: &Authority) -> Identity {
    let now = SystemTime::now();
    leaf(ca, now - DAY, now + DAY)
}

fn pin(ids: &[&Identity]) -> LinkTrust {
    LinkTrust {
        pins: ids.iter().map(|id| id.fingerprint()).collect(),
        ca: None,
    }
}

fn pin_with_ca(id: &Identity, ca: &Authority) -> LinkTrust {
    LinkTrust {
        pins: vec![id.fingerprint()],
        ca: Some(vec![ca.cert_der().clone()]),
    }
}

/// Moves records between the two ends until neither has anything to say; returns each
/// side's first error.
fn handshake(
    client: Arc<rustls::ClientConfig>,
    server: Arc<rustls::ServerConfig>,
) -> (
    Connection,
    Result<(), rustls::Error>,
    Connection,
    Result<(), rustls::Error>,
) {
    let mut c = Connection::Client(
        ClientConnection::new(client, server_name("realm.example").unwrap()).unwrap(),
    );
    let mut s = Connection::Server(ServerConnection::new(server).unwrap());
    let (mut c_res, mut s_res) = (Ok(()), Ok(()));
    for _ in 0..32 {
        let a = transfer(&mut c, &mut s, &mut s_res);
        let b = transfer(&mut s, &mut c, &mut c_res);
        if !a && !b {
            break;
        }
    }
    (c, c_res, s, s_res)
}

fn transfer(
    from: &mut Connection,
    to: &mut Connection,
    to_res: &mut Result<(), rustls::Error>,
) -> bool {
    let mut buf = Vec::new();
    while from.wants_write() {
        if from.write_tls(&mut buf).unwrap() == 0 {
            break;
        }
    }
    if buf.is_empty() || to_res.is_err() {
        return false;
    }
    let mut rest = &buf[..];
    while !rest.is_empty() {
        if to.read_tls(&mut rest).unwrap() == 0 {
            break;
        }
        if let Err(e) = to.process_new_packets() {
            *to_res = Err(e);
            break;
        }
    }
    true
}

struct Realms {
    ca: Authority,
    a: Identity,
    b: Identity,
}

fn realms() -> Realms {
    let ca = Authority::create("link test CA").unwrap();
    let (a, b) = (valid_leaf(&ca), valid_leaf(&ca));
    Realms { ca, a, b }
}

#[test]
fn genuine_pinned_link_handshakes_and_carries_data() {
    let r = realms();
    // a serves, b connects; each pins the other (the server also accepts a third key).
    let other = valid_leaf(&r.ca);
    let server = link_server_config(&r.a, pin(&[&other, &r.b])).unwrap();
    let client = link_client_config(&r.b, pin(&[&r.a])).unwrap();
    let (mut c, c_res, mut s, s_res) = handshake(client, server);
    c_res.unwrap();
    s_res.unwrap();
    assert!(!c.is_handshaking() && !s.is_handshaking());
    assert_eq!(c.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_3));
    let seen_by_server = s.peer_certificates().unwrap()[0].clone();
    assert_eq!(
        jaring_tls::fingerprint_of(&seen_by_server).unwrap(),
        r.b.fingerprint()
    );

    c.writer().write_all(b"hello realm").unwrap();
    let mut ok = Ok(());
    transfer(&mut c, &mut s, &mut ok);
    ok.unwrap();
    let mut got = [0u8; 11];
    s.reader().read_exact(&mut got).unwrap();
    assert_eq!(&got, b"hello realm");
}

#[test]
fn genuine_link_with_ca_handshakes() {
    let r = realms();
    let server = link_server_config(&r.a, pin_with_ca(&r.b, &r.ca)).unwrap();
    let client = link_client_config(&r.b, pin_with_ca(&r.a, &r.ca)).unwrap();
    let (_, c_res, _, s_res) = handshake(client, server);
    c_res.unwrap();
    s_res.unwrap();
}

#[test]
fn server_refuses_an_unpinned_client_key() {
    let r = realms();
    let stranger = valid_leaf(&r.ca);
    let server = link_server_config(&r.a, pin(&[&stranger])).unwrap();
    let client = link_client_config(&r.b, pin(&[&r.a])).unwrap();
    let (_, c_res, _, s_res) = handshake(client, server);
    let refusal = link_refusal(&s_res.unwrap_err());
    assert_eq!(
        refusal,
        LinkRefusal::WrongPin {
            got: r.b.fingerprint()
        }
    );
    let msg = refusal.to_string();
    assert!(msg.contains(&r.b.fingerprint().to_string()), "{msg}");
    assert!(msg.contains("[[peer]]") && msg.contains("jaring chat tls fingerprint"));

    // The client only hears an alert: it is told the peer refused its certificate.
    let err = c_res.unwrap_err();
    assert!(matches!(err, rustls::Error::AlertReceived(_)), "{err:?}");
    match link_refusal(&err) {
        LinkRefusal::Other(why) => assert!(why.contains("refused our certificate"), "{why}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn client_refuses_an_unpinned_server_key() {
    let r = realms();
    let stranger = valid_leaf(&r.ca);
    let server = link_server_config(&r.a, pin(&[&r.b])).unwrap();
    let client = link_client_config(&r.b, pin(&[&stranger])).unwrap();
    let (_, c_res, _, s_res) = handshake(client, server);
    assert_eq!(
        link_refusal(&c_res.unwrap_err()),
        LinkRefusal::WrongPin {
            got: r.a.fingerprint()
        }
    );
    assert!(matches!(
        link_refusal(&s_res.unwrap_err()),
        LinkRefusal::Other(why) if why.contains("refused our certificate")
    ));
}

#[test]
fn pinned_key_from_another_ca_is_unknown_ca_on_both_sides() {
    let r = realms();
    let foreign_ca = Authority::create("someone else's CA").unwrap();
    let foreign = valid_leaf(&foreign_ca);

    // The server checks: the client's key is pinned but issued by another CA.
    let server = link_server_config(&r.a, pin_with_ca(&foreign, &r.ca)).unwrap();
    let client = link_client_config(&foreign, pin(&[&r.a])).unwrap();
    let (_, c_res, _, s_res) = handshake(client, server);
    assert_eq!(link_refusal(&s_res.unwrap_err()), LinkRefusal::UnknownCa);
    assert_eq!(link_refusal(&c_res.unwrap_err()), LinkRefusal::UnknownCa);

    // The client checks.
    let server = link_server_config(&foreign, pin(&[&r.b])).unwrap();
    let client = link_client_config(&r.b, pin_with_ca(&foreign, &r.ca)).unwrap();
    let (_, c_res, _, s_res) = handshake(client, server);
    assert_eq!(link_refusal(&c_res.unwrap_err()), LinkRefusal::UnknownCa);
    assert_eq!(link_refusal(&s_res.unwrap_err()), LinkRefusal::UnknownCa);
}

#[test]
fn expired_and_not_yet_valid_leaves_are_refused() {
    let r = realms();
    let now = SystemTime::now();
    let expired = leaf(&r.ca, now - 3 * DAY, now - DAY);
    let server = link_server_config(&r.a, pin(&[&expired])).unwrap();
    let client = link_client_config(&expired, pin(&[&r.a])).unwrap();
    let (_, c_res, _, s_res) = handshake(client, server);
    assert_eq!(link_refusal(&s_res.unwrap_err()), LinkRefusal::Expired);
    // The alert (certificate_expired) maps to the same.
    assert_eq!(link_refusal(&c_res.unwrap_err()), LinkRefusal::Expired);

    let early = leaf(&r.ca, now + DAY, now + 3 * DAY);
    let server = link_server_config(&early, pin(&[&r.b])).unwrap();
    let client = link_client_config(&r.b, pin(&[&early])).unwrap();
    let (_, c_res, _, _) = handshake(client, server);
    let refusal = link_refusal(&c_res.unwrap_err());
    assert_eq!(refusal, LinkRefusal::NotYetValid);
    assert!(refusal.to_string().contains("clocks"));
}

#[test]
fn a_client_without_certificate_is_refused() {
    let r = realms();
    let server = link_server_config(&r.a, pin(&[&r.b])).unwrap();
    let client = client_config(&Trust::Insecure).unwrap();
    let (_, c_res, _, s_res) = handshake(client, server);
    let s_err = s_res.unwrap_err();
    assert_eq!(
        link_refusal(&s_err),
        LinkRefusal::NoCertificate,
        "{s_err:?}"
    );
    let c_err = c_res.unwrap_err();
    assert_eq!(
        link_refusal(&c_err),
        LinkRefusal::NoCertificate,
        "{c_err:?}"
    );
}

#[test]
fn links_need_a_pin() {
    let r = realms();
    let empty = LinkTrust {
        pins: Vec::new(),
        ca: None,
    };
    let err = link_server_config(&r.a, empty.clone()).unwrap_err();
    assert!(err.to_string().contains("fingerprint"), "{err}");
    assert!(link_client_config(&r.a, empty).is_err());
    // A pin that matches nothing is still a pin: the config builds.
    let nobody = LinkTrust {
        pins: vec![Fingerprint([0; 32])],
        ca: None,
    };
    link_client_config(&r.a, nobody).unwrap();
}
