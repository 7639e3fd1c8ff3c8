//! The real `jaring chat serve` on a real PostgreSQL (a throwaway cluster per test, from
//! `jaring_testkit::pg`), and on an SQLite database left by the release before the storage split:
//!
//! - kill -9 of a PostgreSQL-backed realm mid-burst, restart: every acknowledged message and group
//!   post is there exactly once, in each sender's order, group seqs without a gap;
//! - PostgreSQL stopped under load: clear ERRORs meanwhile, never an OK, never a hang; the same
//!   server process serves again once it is back, and loses nothing it acknowledged;
//! - an SQLite realm linked to a PostgreSQL realm, private messages and groups both ways, kill -9
//!   of either side mid-burst: nothing acknowledged lost, nothing twice;
//! - a pre-split `chat.db` (fixtures/pre-split-realms, made by jaring b219244) keeps working;
//! - `jaring chat user add/passwd/list/del` on either backend, refused while a server runs.
//!
//! Where PostgreSQL is not installed, its tests skip with one line (and fail under `CI=true`).
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use jaring_testkit::pg::PgCluster;
use serde_json::Value;
use support::{ChatClient, ServerProcess, Storage, add_user, password, realm_config, wait_for};

/// How long a test waits for something the realms do by themselves (a link, a relay, a drain).
const SETTLE: Duration = Duration::from_secs(45);

/// Requests a burst client writes before it reads their replies.
const WINDOW: usize = 32;

/// The tests here each run a database, one or two realms and several busy clients; on two shared
/// cores, running them at once would only make each slower and its timings noisier.
fn one_at_a_time() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// What one burst client had acknowledged, in the order it sent them: (request kind, number).
struct Burst {
    acked: Vec<(usize, u32)>,
    /// The first reply that was not OK, if one came before the connection ended or `stop`.
    refused: Option<Value>,
}

impl Burst {
    /// The numbers acknowledged for request kind `kind`, in order.
    fn acked(&self, kind: usize) -> Vec<u32> {
        self.acked
            .iter()
            .filter(|(k, _)| *k == kind)
            .map(|(_, n)| *n)
            .collect()
    }
}

/// Runs a burst on `client` (logged in as `user`) in a thread: windows of [`WINDOW`] pipelined
/// requests, request `i` being `kinds[i % kinds.len()]` followed by the body `USER.N`, until the
/// connection ends, a reply is not OK, or `stop` is set. Each OK bumps `count`.
fn burst(
    mut client: ChatClient,
    user: &'static str,
    kinds: Vec<String>,
    count: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
) -> JoinHandle<Burst> {
    std::thread::spawn(move || {
        let mut out = Burst {
            acked: Vec::new(),
            refused: None,
        };
        // Request r is of kind r % kinds, numbered r / kinds: each (kind, number) once.
        let mut r = 0usize;
        while !stop.load(Ordering::SeqCst) {
            let window: Vec<(usize, u32)> = (r..r + WINDOW)
                .map(|r| (r % kinds.len(), u32::try_from(r / kinds.len()).unwrap()))
                .collect();
            r += WINDOW;
            let lines: Vec<String> = window
                .iter()
                .map(|(kind, n)| format!("{} {user}.{n}", kinds[*kind]))
                .collect();
            if !client.write_lines(&lines) {
                return out;
            }
            for item in window {
                match client.reply() {
                    Some(r) if r["status"] == "OK" => {
                        out.acked.push(item);
                        count.fetch_add(1, Ordering::SeqCst);
                    }
                    Some(r) => {
                        out.refused = Some(r);
                        return out;
                    }
                    None => return out,
                }
            }
        }
        out
    })
}

/// The numbers of `user`'s burst bodies (`USER.N`) among `msgs`, in the order given.
fn numbers<'a>(user: &str, msgs: impl IntoIterator<Item = &'a str>) -> Vec<u32> {
    let prefix = format!("{user}.");
    msgs.into_iter()
        .filter_map(|m| m.strip_prefix(&prefix)?.parse().ok())
        .collect()
}

/// `got` (one sender's messages where they arrived, in arrival order) holds each number at most
/// once, in the order they were sent, and every acknowledged one.
fn once_in_order(what: &str, got: &[u32], acked: &[u32]) {
    assert!(
        got.windows(2).all(|w| w[0] < w[1]),
        "{what}: out of order or twice: {got:?}"
    );
    let have: HashSet<u32> = got.iter().copied().collect();
    let lost: Vec<u32> = acked
        .iter()
        .copied()
        .filter(|n| !have.contains(n))
        .collect();
    assert!(lost.is_empty(), "{what}: acknowledged but lost: {lost:?}");
}

/// Asks `inbox` until it is empty, then confirms the last reply; returns (from, msg) as handed
/// out.
fn drain_inbox(c: &mut ChatClient, token: &str) -> Vec<(String, String)> {
    let mut got = Vec::new();
    loop {
        let r = c.ok(&format!("inbox {token}"));
        let before = got.len();
        for list in r["messages"].as_object().unwrap().values() {
            for m in list.as_array().unwrap() {
                got.push((
                    m["from"].as_str().unwrap().to_owned(),
                    m["msg"].as_str().unwrap().to_owned(),
                ));
            }
        }
        if got.len() == before {
            break;
        }
    }
    c.ok(&format!("realms {token}"));
    got
}

/// A group message: (seq, id, from, msg).
type Post = (i64, String, String, String);

fn post(m: &Value) -> Post {
    (
        m["seq"].as_i64().unwrap(),
        m["id"].as_str().unwrap().to_owned(),
        m["from"].as_str().unwrap().to_owned(),
        m["msg"].as_str().unwrap().to_owned(),
    )
}

/// Asks `inboxgroup` until it is empty, then confirms the last reply.
fn drain_group(c: &mut ChatClient, token: &str, group: &str) -> Vec<Post> {
    let mut got = Vec::new();
    loop {
        let r = c.ok(&format!("inboxgroup {token} {group}"));
        let page = r["messages"].as_array().unwrap();
        if page.is_empty() {
            break;
        }
        got.extend(page.iter().map(post));
    }
    c.ok(&format!("realms {token}"));
    got
}

/// The whole history of `group` (at most 1,000 messages, which the tests stay under).
fn history(c: &mut ChatClient, token: &str, group: &str) -> Vec<Post> {
    let r = c.ok(&format!("history {token} {group} 1000"));
    assert!(r.get("more").is_none(), "history of {group} fits one reply");
    r["messages"].as_array().unwrap().iter().map(post).collect()
}

/// The seqs of `posts` are `first, first + 1, …`: no gap, none twice.
fn gap_free(what: &str, posts: &[Post], first: i64) {
    let seqs: Vec<i64> = posts.iter().map(|p| p.0).collect();
    let want: Vec<i64> = (first..first + seqs.len() as i64).collect();
    assert_eq!(seqs, want, "{what}: seqs with a gap or twice");
}

/// `from`'s burst posts in `posts`, by number.
fn posts_of(posts: &[Post], from: &str, user: &str) -> Vec<u32> {
    numbers(
        user,
        posts.iter().filter(|p| p.2 == from).map(|p| p.3.as_str()),
    )
}

fn logged_in(port: u16, user: &str) -> (ChatClient, String) {
    let mut c = ChatClient::connect(port);
    let t = c.auth(user, &password(user));
    (c, t)
}

const SENDERS: [&str; 4] = ["ana", "ben", "cai", "dua"];

#[test]
fn kill_9_mid_burst_loses_no_acknowledged_message_or_group_post() {
    let _serial = one_at_a_time();
    let Some(pg) = PgCluster::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let url = pg.create_database("realm1");
    let config = realm_config(dir.path(), "realm1", Storage::Postgres(&url), &[]);
    for user in SENDERS.iter().chain(&["boss"]) {
        add_user(&config, user);
    }
    let mut server = ServerProcess::realm(&config, &[]);
    let (mut boss, tb) = logged_in(server.port, "boss");
    boss.ok(&format!("sendgroup {tb} hall the hall opens"));

    // Each sender pipelines private messages to boss and posts to hall, interleaved; every one
    // logs in before the kill, so a login cut short is not mistaken for a lost message.
    let count = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let bursts: Vec<_> = SENDERS
        .iter()
        .map(|&user| {
            let (c, t) = logged_in(server.port, user);
            let kinds = vec![format!("send {t} boss"), format!("sendgroup {t} hall")];
            burst(c, user, kinds, Arc::clone(&count), Arc::clone(&stop))
        })
        .collect();
    wait_for("400 acknowledged requests", SETTLE, || {
        count.load(Ordering::SeqCst) >= 400
    });
    server.kill9();
    let bursts: Vec<Burst> = bursts.into_iter().map(|b| b.join().unwrap()).collect();
    for (user, b) in SENDERS.iter().zip(&bursts) {
        assert!(b.refused.is_none(), "{user} refused: {:?}", b.refused);
    }

    let server = ServerProcess::realm(&config, &[]);
    let (mut boss, tb) = logged_in(server.port, "boss");
    let inbox = drain_inbox(&mut boss, &tb);
    let posts = drain_group(&mut boss, &tb, "hall");
    let hist = history(&mut boss, &tb, "hall");
    gap_free("hall", &hist, 1);
    assert!(!posts.is_empty(), "boss missed every post");
    gap_free("boss's inboxgroup of hall", &posts, posts[0].0);
    assert_eq!(
        posts[..],
        hist[hist.len() - posts.len()..],
        "inboxgroup hands out the end of the history"
    );
    for (user, b) in SENDERS.iter().zip(&bursts) {
        let private = numbers(
            user,
            inbox.iter().filter(|m| m.0 == *user).map(|m| m.1.as_str()),
        );
        once_in_order(&format!("{user} to boss"), &private, &b.acked(0));
        eprintln!(
            "{user}: {} messages acknowledged, {} arrived",
            b.acked(0).len(),
            private.len()
        );
        let group = posts_of(&hist, user, user);
        once_in_order(&format!("{user} in hall"), &group, &b.acked(1));
        assert_eq!(
            posts_of(&posts, user, user),
            group,
            "{user}: boss's inboxgroup has every post of the history after his cursor"
        );
    }
}

/// One request of test 2 and what became of it.
struct Outcome {
    n: u32,
    sent: Instant,
    replied: Instant,
    /// `None` for OK, else the ERROR's message.
    error: Option<String>,
}

#[test]
fn postgres_stopped_under_load_errors_meanwhile_and_the_same_server_recovers() {
    let _serial = one_at_a_time();
    let Some(pg) = PgCluster::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let url = pg.create_database("realm1");
    let config = realm_config(dir.path(), "realm1", Storage::Postgres(&url), &[]);
    let senders = &SENDERS[..3];
    for user in senders.iter().chain(&["boss"]) {
        add_user(&config, user);
    }
    let mut server = ServerProcess::realm(&config, &[]);
    // Logged in now: a login writes its token to the database.
    let (mut boss, tb) = logged_in(server.port, "boss");

    let stop = Arc::new(AtomicBool::new(false));
    let outcomes: Vec<Arc<Mutex<Vec<Outcome>>>> = senders.iter().map(|_| Arc::default()).collect();
    let threads: Vec<JoinHandle<()>> = senders
        .iter()
        .zip(&outcomes)
        .map(|(&user, log)| {
            let (mut c, t) = logged_in(server.port, user);
            let (log, stop) = (Arc::clone(log), Arc::clone(&stop));
            std::thread::spawn(move || {
                for n in 0.. {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let sent = Instant::now();
                    let r = c
                        .call(&format!("send {t} boss {user}.{n}"))
                        .unwrap_or_else(|| panic!("{user}: no reply to send {n}"));
                    let error = (r["status"] != "OK").then(|| r["message"].to_string());
                    let failed = error.is_some();
                    log.lock().unwrap().push(Outcome {
                        n,
                        sent,
                        replied: Instant::now(),
                        error,
                    });
                    if failed {
                        // Errors come at once; do not spin the two cores on them.
                        std::thread::sleep(Duration::from_millis(10));
                    }
                }
            })
        })
        .collect();
    let each = |pred: &dyn Fn(&Outcome) -> bool, at_least: usize| {
        outcomes
            .iter()
            .all(|log| log.lock().unwrap().iter().filter(|o| pred(o)).count() >= at_least)
    };
    wait_for("sends OK before the outage", SETTLE, || {
        each(&|o| o.error.is_none(), 20)
    });

    pg.stop();
    let down = Instant::now();
    wait_for(
        "every sender to get ERRORs while PostgreSQL is down",
        SETTLE,
        || each(&|o| o.sent > down && o.error.is_some(), 3),
    );
    assert!(server.is_running(), "the server died with its database");
    let up = Instant::now();
    pg.start_again();
    wait_for(
        "every sender's sends to be OK again, same server process",
        SETTLE,
        || each(&|o| o.sent > up && o.error.is_none(), 10),
    );
    stop.store(true, Ordering::SeqCst);
    for t in threads {
        t.join().unwrap();
    }
    assert!(server.is_running());

    let inbox = drain_inbox(&mut boss, &tb);
    for (user, log) in senders.iter().zip(&outcomes) {
        let log = log.lock().unwrap();
        for o in log.iter() {
            let latency = o.replied - o.sent;
            assert!(
                latency < Duration::from_secs(10),
                "{user}.{}: reply took {latency:?}",
                o.n
            );
            if o.sent > down && o.replied < up {
                let error = o
                    .error
                    .as_deref()
                    .unwrap_or_else(|| panic!("{user}.{}: OK while PostgreSQL was down", o.n));
                assert!(
                    error.contains("could not store this; try again later"),
                    "{user}.{}: unclear error {error}",
                    o.n
                );
            }
        }
        let acked: Vec<u32> = log
            .iter()
            .filter(|o| o.error.is_none())
            .map(|o| o.n)
            .collect();
        let got = numbers(
            user,
            inbox.iter().filter(|m| m.0 == *user).map(|m| m.1.as_str()),
        );
        once_in_order(&format!("{user} to boss"), &got, &acked);
        let errors = log.iter().filter(|o| o.error.is_some()).count();
        eprintln!(
            "{user}: {} OK, {errors} ERROR, {} arrived",
            acked.len(),
            got.len()
        );
    }
}

/// Which realm of the linked pair is killed.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Victim {
    /// alpha, on SQLite (it dials beta).
    Sqlite,
    /// beta, on PostgreSQL.
    Postgres,
}

/// alpha (SQLite, user messi, group ag) and beta (PostgreSQL, user james, group bg), linked; each
/// user writes to the other and belongs to the other realm's group. Both burst private messages,
/// posts to their own realm's group and posts to the other's; `victim` is killed mid-burst while
/// the other keeps going, then restarted on the same ports and data. Then: every acknowledged
/// message arrives exactly once in order, each group's history is gap-free with every
/// acknowledged post once, and its replica on the other realm matches it.
fn linked_realms_survive_kill_9(victim: Victim) {
    let _serial = one_at_a_time();
    let Some(pg) = PgCluster::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let url = pg.create_database("beta");
    // alpha sorts first, so alpha dials and beta's address for it is never used.
    let beta_cfg = realm_config(
        dir.path(),
        "beta",
        Storage::Postgres(&url),
        &[("alpha", "127.0.0.1:9")],
    );
    add_user(&beta_cfg, "james");
    let mut beta = ServerProcess::realm(&beta_cfg, &[]);
    let fb = beta.federation_port.expect("beta's federation port");
    let beta_addr = format!("127.0.0.1:{fb}");
    let alpha_cfg = realm_config(
        dir.path(),
        "alpha",
        Storage::Sqlite,
        &[("beta", &beta_addr)],
    );
    add_user(&alpha_cfg, "messi");
    let mut alpha = ServerProcess::realm(&alpha_cfg, &[]);

    let (mut messi, tm) = logged_in(alpha.port, "messi");
    let (mut james, tj) = logged_in(beta.port, "james");
    wait_for("the link", SETTLE, || {
        messi.ok(&format!("realms {tm}"))["peers"][0]["state"] == "up"
    });
    messi.ok(&format!("send {tm} james@beta hello james"));
    james.ok(&format!("send {tj} messi@alpha hello messi"));
    messi.ok(&format!("sendgroup {tm} ag ag opens"));
    james.ok(&format!("sendgroup {tj} ag@alpha james joins ag"));
    james.ok(&format!("sendgroup {tj} bg bg opens"));
    messi.ok(&format!("sendgroup {tm} bg@beta messi joins bg"));

    let (messi_count, james_count) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let stop = Arc::new(AtomicBool::new(false));
    // Kinds: 0 private to the other realm, 1 own realm's group, 2 the other realm's group.
    let messi_burst = burst(
        messi,
        "messi",
        vec![
            format!("send {tm} james@beta"),
            format!("sendgroup {tm} ag"),
            format!("sendgroup {tm} bg@beta"),
        ],
        Arc::clone(&messi_count),
        Arc::clone(&stop),
    );
    let james_burst = burst(
        james,
        "james",
        vec![
            format!("send {tj} messi@alpha"),
            format!("sendgroup {tj} bg"),
            format!("sendgroup {tj} ag@alpha"),
        ],
        Arc::clone(&james_count),
        Arc::clone(&stop),
    );
    let (victim_count, survivor_count) = match victim {
        Victim::Sqlite => (&messi_count, &james_count),
        Victim::Postgres => (&james_count, &messi_count),
    };
    wait_for("150 acknowledged on the victim", SETTLE, || {
        victim_count.load(Ordering::SeqCst) >= 150 && survivor_count.load(Ordering::SeqCst) >= 60
    });
    match victim {
        Victim::Sqlite => alpha.kill9(),
        Victim::Postgres => beta.kill9(),
    }
    // The survivor keeps sending while its peer is down: to the peer's user and group, its OKs
    // are promises kept by its outbox.
    let at_kill = survivor_count.load(Ordering::SeqCst);
    wait_for("90 more acknowledged on the survivor", SETTLE, || {
        survivor_count.load(Ordering::SeqCst) >= at_kill + 90
    });
    stop.store(true, Ordering::SeqCst);
    let messi_burst = messi_burst.join().unwrap();
    let james_burst = james_burst.join().unwrap();
    assert!(messi_burst.refused.is_none(), "{:?}", messi_burst.refused);
    assert!(james_burst.refused.is_none(), "{:?}", james_burst.refused);

    let fb_arg = fb.to_string();
    let (alpha, beta) = match victim {
        Victim::Sqlite => (ServerProcess::realm(&alpha_cfg, &[]), beta),
        Victim::Postgres => (
            alpha,
            ServerProcess::realm(&beta_cfg, &["--federation-port", &fb_arg]),
        ),
    };
    let (mut messi, tm) = logged_in(alpha.port, "messi");
    let (mut james, tj) = logged_in(beta.port, "james");

    // Private messages, both ways: everything acknowledged arrives, once, in order.
    for (c, t, from, sender, burst, first) in [
        (
            &mut james,
            &tj,
            "messi@alpha",
            "messi",
            &messi_burst,
            "hello james",
        ),
        (
            &mut messi,
            &tm,
            "james@beta",
            "james",
            &james_burst,
            "hello messi",
        ),
    ] {
        let acked = burst.acked(0);
        let mut got: Vec<(String, String)> = Vec::new();
        wait_for(&format!("{sender}'s messages"), SETTLE, || {
            got.extend(drain_inbox(c, t));
            let have: HashSet<u32> = numbers(sender, got.iter().map(|m| m.1.as_str()))
                .into_iter()
                .collect();
            acked.iter().all(|n| have.contains(n))
        });
        // Whatever was still on its way has had time to arrive; it must not arrive twice.
        std::thread::sleep(Duration::from_millis(500));
        got.extend(drain_inbox(c, t));
        assert!(got.iter().all(|m| m.0 == from), "{got:?}");
        let msgs: Vec<&str> = got.iter().map(|m| m.1.as_str()).collect();
        assert_eq!(
            msgs.iter().filter(|m| **m == first).count(),
            1,
            "{first:?} once"
        );
        once_in_order(
            &format!("{sender} to the other realm"),
            &numbers(sender, msgs),
            &acked,
        );
    }

    // Groups, each on its home and its replica.
    check_group(
        (&mut messi, &tm, "ag"),
        (&mut james, &tj, "ag@alpha"),
        [
            ("messi", "messi", &messi_burst, 1),
            ("james@beta", "james", &james_burst, 2),
        ],
    );
    check_group(
        (&mut james, &tj, "bg"),
        (&mut messi, &tm, "bg@beta"),
        [
            ("james", "james", &james_burst, 1),
            ("messi@alpha", "messi", &messi_burst, 2),
        ],
    );
    for (c, t) in [(&mut messi, &tm), (&mut james, &tj)] {
        wait_for("the outbox to drain", SETTLE, || {
            c.ok(&format!("realms {t}"))["peers"][0]["outbox"] == 0
        });
    }
}

/// A client, its token, and a group name as that client's realm names it.
type Member<'a> = (&'a mut ChatClient, &'a str, &'a str);

/// Checks a group of test 3 on its home and on its replica: every acknowledged post of each
/// poster (name on the home, user, burst, request kind) once, in order, seqs gap-free; the
/// replica's history the same; the replica's member reads the rest by inboxgroup, each seq once.
fn check_group(home: Member<'_>, replica: Member<'_>, posters: [(&str, &str, &Burst, usize); 2]) {
    let (home_c, home_t, group) = home;
    let (replica_c, replica_t, replica_group) = replica;
    let mut hist = Vec::new();
    wait_for(
        &format!("every acknowledged post in {group}"),
        SETTLE,
        || {
            hist = history(home_c, home_t, group);
            posters.iter().all(|(from, user, burst, kind)| {
                let have: HashSet<u32> = posts_of(&hist, from, user).into_iter().collect();
                burst.acked(*kind).iter().all(|n| have.contains(n))
            })
        },
    );
    // Whatever was still on its way has had time to arrive; it must not arrive twice.
    std::thread::sleep(Duration::from_millis(500));
    let hist = history(home_c, home_t, group);
    gap_free(group, &hist, 1);
    for (from, user, burst, kind) in posters {
        once_in_order(
            &format!("{from} in {group}"),
            &posts_of(&hist, from, user),
            &burst.acked(kind),
        );
    }
    let key = |h: &[Post]| -> Vec<(i64, String, String)> {
        h.iter().map(|p| (p.0, p.1.clone(), p.3.clone())).collect()
    };
    // A replica holds the group from its realm's first member's join on.
    wait_for(&format!("{replica_group} to match {group}"), SETTLE, || {
        let replica = key(&history(replica_c, replica_t, replica_group));
        let from = replica.first().map_or(i64::MAX, |p| p.0);
        from <= 3 && replica == key(&hist[usize::try_from(from).unwrap() - 1..])
    });
    let read = drain_group(replica_c, replica_t, replica_group);
    assert!(!read.is_empty(), "{replica_group}: nothing to read");
    gap_free(replica_group, &read, read[0].0);
    assert_eq!(read.last().unwrap().0, hist.last().unwrap().0);
}

#[test]
fn linked_sqlite_and_postgres_realms_survive_kill_9_of_the_sqlite_one() {
    linked_realms_survive_kill_9(Victim::Sqlite);
}

#[test]
fn linked_sqlite_and_postgres_realms_survive_kill_9_of_the_postgres_one() {
    linked_realms_survive_kill_9(Victim::Postgres);
}

/// `PRAGMA user_version` of the SQLite database `db`.
fn user_version(db: &Path) -> i64 {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap()
}

/// fixtures/pre-split-realms: alpha and beta as jaring b219244 left them (see the fixtures'
/// README). The new binary opens both: logins, inboxes, histories and groups are intact, and the
/// three kinds of item alpha still owed beta (a private message in the outbox, a post to beta's
/// group in the outbox, a message of alpha's group in beta's feed) are delivered as what they are
/// once beta is up.
#[test]
fn a_realm_from_before_the_storage_split_keeps_working() {
    let _serial = one_at_a_time();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pre-split-realms");
    let dir = tempfile::tempdir().unwrap();
    for realm in ["alpha", "beta"] {
        let data = dir.path().join(format!("{realm}-data"));
        std::fs::create_dir(&data).unwrap();
        std::fs::copy(
            fixture.join(format!("{realm}-data/chat.db")),
            data.join("chat.db"),
        )
        .unwrap();
        assert_eq!(
            user_version(&data.join("chat.db")),
            5,
            "the fixture is the old schema"
        );
    }
    let old_login = |port: u16, user: &str| {
        let mut c = ChatClient::connect(port);
        let t = c.auth(user, &format!("{user}pw"));
        (c, t)
    };
    let beta_cfg = realm_config(
        dir.path(),
        "beta",
        Storage::Sqlite,
        &[("alpha", "127.0.0.1:9")],
    );
    let mut beta = ServerProcess::realm(&beta_cfg, &[]);
    let beta_addr = format!("127.0.0.1:{}", beta.federation_port.unwrap());
    let alpha_cfg = realm_config(
        dir.path(),
        "alpha",
        Storage::Sqlite,
        &[("beta", &beta_addr)],
    );
    let mut alpha = ServerProcess::realm(&alpha_cfg, &[]);

    let (mut henderson, th) = old_login(alpha.port, "henderson");
    let unread = drain_inbox(&mut henderson, &th);
    assert_eq!(unread, [("messi".to_owned(), "third, unread".to_owned())]);
    let r = henderson.ok(&format!("history {th} messi 50"));
    let msgs: Vec<&str> = r["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["msg"].as_str().unwrap())
        .collect();
    assert_eq!(msgs, ["first", "second", "third, unread", "back to you"]);

    let (mut messi, tm) = old_login(alpha.port, "messi");
    let lobby: Vec<(i64, String, String)> = history(&mut messi, &tm, "lobby")
        .into_iter()
        .map(|p| (p.0, p.2, p.3))
        .collect();
    let want = [
        (1, "messi", "lobby opens"),
        (2, "henderson", "henderson here"),
        (3, "james@beta", "james joins lobby"),
        (4, "messi", "queued gmsg"),
    ]
    .map(|(s, f, m)| (s, f.to_owned(), m.to_owned()));
    assert_eq!(lobby, want);

    // beta is up: alpha's outbox and lobby's feed reach it, each as its own kind.
    let (mut james, tj) = old_login(beta.port, "james");
    let mut got = Vec::new();
    wait_for("james's two messages from alpha", SETTLE, || {
        got.extend(drain_inbox(&mut james, &tj));
        got.len() >= 2
    });
    let want =
        ["across, unread", "queued private"].map(|m| ("messi@alpha".to_owned(), m.to_owned()));
    assert_eq!(got, want);
    let want_pier = [
        (1, "james", "pier opens"),
        (2, "messi@alpha", "messi joins pier"),
        (3, "messi@alpha", "queued gpost"),
    ]
    .map(|(s, f, m)| (s, f.to_owned(), m.to_owned()));
    let without_id = |h: Vec<Post>| -> Vec<(i64, String, String)> {
        h.into_iter().map(|p| (p.0, p.2, p.3)).collect()
    };
    wait_for("the queued post in pier", SETTLE, || {
        without_id(history(&mut james, &tj, "pier")) == want_pier
    });
    wait_for("the queued lobby message on beta", SETTLE, || {
        let h = without_id(history(&mut james, &tj, "lobby@alpha"));
        h.last()
            .is_some_and(|p| *p == (4, "messi@alpha".to_owned(), "queued gmsg".to_owned()))
    });
    wait_for("pier's new seq back on alpha", SETTLE, || {
        let h = without_id(history(&mut messi, &tm, "pier@beta"));
        h.last() == Some(&(3, "messi".to_owned(), "queued gpost".to_owned()))
    });
    wait_for("alpha's outbox to drain", SETTLE, || {
        messi.ok(&format!("realms {tm}"))["peers"][0]["outbox"] == 0
    });
    // Nothing bounced, nothing came twice.
    assert_eq!(
        drain_inbox(&mut messi, &tm),
        [("henderson".to_owned(), "back to you".to_owned())]
    );
    assert!(drain_inbox(&mut james, &tj).is_empty());

    alpha.kill9();
    beta.kill9();
    for realm in ["alpha", "beta"] {
        let db = dir.path().join(format!("{realm}-data/chat.db"));
        assert_eq!(user_version(&db), 7, "{realm} migrated");
    }
}

/// Runs `jaring chat user ARGS… --config CONFIG` with `stdin`; (success, stdout, stderr).
fn user_cmd(config: &Path, args: &[&str], stdin: &str) -> (bool, String, String) {
    let out = support::jaring()
        .args(["chat", "user"])
        .args(args)
        .arg("--config")
        .arg(config)
        .write_stdin(stdin)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn listed(config: &Path) -> Vec<String> {
    let (ok, out, err) = user_cmd(config, &["list", "--json"], "");
    assert!(ok, "{err}");
    let list: Value = serde_json::from_str(&out).unwrap();
    list.as_array()
        .unwrap()
        .iter()
        .map(|u| format!("{} ({})", u["name"].as_str().unwrap(), u["display_name"]))
        .collect()
}

/// `jaring chat user add/passwd/list/del` against one backend, as an operator uses them.
fn user_administration(storage: Storage<'_>) {
    let dir = tempfile::tempdir().unwrap();
    let config = realm_config(dir.path(), "admin", storage, &[]);
    let (ok, _, err) = user_cmd(
        &config,
        &["add", "amy", "--display-name", "Amy Pond"],
        "one\n",
    );
    assert!(ok, "{err}");
    let (ok, _, err) = user_cmd(&config, &["add", "amy"], "two\n");
    assert!(!ok && err.contains("jaring chat user passwd"), "{err}");
    add_user(&config, "rory");
    assert_eq!(listed(&config), ["amy (\"Amy Pond\")", "rory (\"rory\")"]);
    let (ok, _, err) = user_cmd(&config, &["passwd", "amy"], "three\n");
    assert!(ok, "{err}");

    let mut server = ServerProcess::realm(&config, &[]);
    let mut c = ChatClient::connect(server.port);
    assert_eq!(c.call("auth amy one").unwrap()["status"], "ERROR");
    c.auth("amy", "three");
    // While a server runs, the commands go through its admin socket: the change counts at
    // once, in the running realm and in storage.
    let mut r = ChatClient::connect(server.port);
    let token = r.auth("rory", &support::password("rory"));
    let (ok, _, err) = user_cmd(&config, &["del", "rory"], "");
    assert!(ok && err.contains("deleted rory"), "{err}");
    assert_eq!(
        r.call(&format!("inbox {token}")).unwrap()["status"],
        "ERROR"
    );
    let again = ChatClient::connect(server.port)
        .call(&format!("auth rory {}", support::password("rory")))
        .unwrap();
    assert_eq!(again["status"], "ERROR");
    assert_eq!(listed(&config), ["amy (\"Amy Pond\")"]);
    server.kill9();
    server.wait_exit();
    // And it stays so after the realm stopped: it was in storage.
    assert_eq!(listed(&config), ["amy (\"Amy Pond\")"]);
    let (ok, _, err) = user_cmd(&config, &["del", "rory"], "");
    assert!(!ok && err.contains("jaring chat user list"), "{err}");
}

#[test]
fn user_administration_works_on_sqlite_and_postgres() {
    let _one = one_at_a_time();
    user_administration(Storage::Sqlite);
    let Some(pg) = PgCluster::start() else { return };
    let url = pg.create_database("admin");
    user_administration(Storage::Postgres(&url));
}
