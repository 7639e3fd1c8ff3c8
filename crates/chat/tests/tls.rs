//! The chat realm over TLS on real TCP: TLS and plaintext clients on one port talking to each
//! other, big replies, pipelined sends and live groups over TLS under every model, and a TLS-only
//! port refusing plaintext with a reply the classic client can read.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use jaring_runtime::{ClientTls, Model, TlsListen, TlsMode};
use jaring_testkit::tls::TestPki;
use serde_json::Value;

/// A realm of `users` serving TLS in `mode` under `model`.
async fn tls_realm(
    pki: &TestPki,
    users: &[&str],
    model: Model,
    mode: TlsMode,
) -> (tempfile::TempDir, Running) {
    let config = pki.server_config();
    common::realm_with(users, options(), move |c| {
        c.model = model;
        c.tls = Some(TlsListen { config, mode });
    })
    .await
}

fn client_tls(pki: &TestPki) -> ClientTls {
    ClientTls {
        config: pki.client_config(),
    }
}

async fn tls_login(addr: std::net::SocketAddr, tls: &ClientTls, user: &str) -> (Client, String) {
    let mut c = Client::connect_tls(addr, tls).await;
    let t = c.auth(user, &format!("{user}pw")).await;
    (c, t)
}

#[tokio::test]
async fn tls_and_plaintext_users_talk_on_one_port_under_every_model() {
    let pki = TestPki::new();
    let tls = client_tls(&pki);
    for model in [Model::Async, Model::Threads] {
        let (_dir, r) = tls_realm(&pki, &["ana", "budi"], model, TlsMode::Both).await;
        let (mut a, ta) = tls_login(r.addr, &tls, "ana").await;
        let (mut b, tb) = login(r.addr, "budi").await;
        assert!(ok(&a.call(&format!("send {ta} budi over tls")).await));
        assert!(ok(&b.call(&format!("send {tb} ana in plaintext")).await));
        let inbox = b.call(&format!("inbox {tb}")).await;
        assert_eq!(bodies(&inbox), [("ana".into(), "over tls".into())]);
        let inbox = a.call(&format!("inbox {ta}")).await;
        assert_eq!(bodies(&inbox), [("budi".into(), "in plaintext".into())]);
        r.stop().await;
    }
}

#[tokio::test]
async fn pipelined_sends_and_a_megabyte_inbox_cross_tls_intact() {
    let pki = TestPki::new();
    let tls = client_tls(&pki);
    let (_dir, r) = tls_realm(&pki, &["ana", "budi"], Model::Async, TlsMode::Only).await;
    let (mut a, ta) = tls_login(r.addr, &tls, "ana").await;
    let (mut b, tb) = tls_login(r.addr, &tls, "budi").await;
    // 400 sends of 3,000 bytes in one write: many TLS records each way.
    let n = 400;
    let mut burst = Vec::new();
    for i in 0..n {
        let text = format!("{i:04}-{}", "x".repeat(2995));
        burst.extend_from_slice(format!("send {ta} budi {text}\r\n").as_bytes());
    }
    a.send_raw(&burst).await;
    for _ in 0..n {
        assert!(ok(&a.reply().await.unwrap()));
    }
    let mut got = Vec::new();
    loop {
        let inbox = b.call(&format!("inbox {tb}")).await;
        let page = bodies(&inbox);
        if page.is_empty() {
            break;
        }
        got.extend(page.into_iter().map(|(_, m)| m));
    }
    assert_eq!(got.len(), n);
    for (i, m) in got.iter().enumerate() {
        assert!(
            m.starts_with(&format!("{i:04}-")),
            "message {i} out of order"
        );
        assert_eq!(m.len(), 3000);
    }
    r.stop().await;
}

/// `group TOKEN NAME` and the OK.
async fn go_live(c: &mut Client, token: &str, group: &str) {
    let v = c.call(&format!("group {token} {group}")).await;
    assert!(ok(&v), "{v}");
}

/// Message events (text) until `n` were seen.
async fn messages(c: &mut Client, n: usize) -> Vec<String> {
    let mut got = Vec::new();
    while got.len() < n {
        let v: Value = c.reply().await.expect("an event");
        if v["event"] == "message" {
            got.push(v["msg"].as_str().unwrap().to_owned());
        }
    }
    got
}

#[tokio::test]
async fn a_live_group_over_tls_and_plaintext_gives_everyone_one_order() {
    let pki = TestPki::new();
    let tls = client_tls(&pki);
    for model in [Model::Async, Model::Threads] {
        let (_dir, r) = tls_realm(&pki, &["ana", "budi", "cici"], model, TlsMode::Both).await;
        let (mut a, ta) = tls_login(r.addr, &tls, "ana").await;
        let (mut b, tb) = tls_login(r.addr, &tls, "budi").await;
        let (mut c, tc) = login(r.addr, "cici").await;
        go_live(&mut a, &ta, "kelas").await;
        go_live(&mut b, &tb, "kelas").await;
        go_live(&mut c, &tc, "kelas").await;
        let lines = |who: &str| {
            (0..50)
                .map(|i| format!("{who}-{i}\r\n"))
                .collect::<String>()
                .into_bytes()
        };
        a.send_raw(&lines("ana")).await;
        c.send_raw(&lines("cici")).await;
        let (ga, gb, gc) = tokio::join!(
            messages(&mut a, 100),
            messages(&mut b, 100),
            messages(&mut c, 100)
        );
        assert_eq!(ga, gb, "{model}");
        assert_eq!(ga, gc, "{model}");
        for who in ["ana", "cici"] {
            let mine: Vec<_> = ga.iter().filter(|m| m.starts_with(who)).collect();
            let want: Vec<String> = (0..50).map(|i| format!("{who}-{i}")).collect();
            assert_eq!(mine, want.iter().collect::<Vec<_>>(), "{model}");
        }
        for m in [&mut a, &mut b, &mut c] {
            m.send_raw(b"exit\r\n").await;
            loop {
                let v = m.reply().await.expect("the final OK");
                if v.get("status").is_some() {
                    assert!(ok(&v), "{v}");
                    break;
                }
            }
        }
        r.stop().await;
    }
}

#[tokio::test]
async fn a_tls_only_realm_answers_a_plaintext_client_with_one_error_reply() {
    let pki = TestPki::new();
    let (_dir, r) = tls_realm(&pki, &["ana"], Model::Async, TlsMode::Only).await;
    let mut plain = Client::connect(r.addr).await;
    let v = plain.call("auth ana anapw").await;
    assert!(error(&v).contains("TLS only"), "{v}");
    assert!(plain.reply().await.is_none(), "then the server closes");
    let tls = client_tls(&pki);
    let (mut a, ta) = tls_login(r.addr, &tls, "ana").await;
    assert!(ok(&a.call(&format!("send {ta} ana note to self")).await));
    r.stop().await;
}
