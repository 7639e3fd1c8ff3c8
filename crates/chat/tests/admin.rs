//! The admin socket against a real realm (SQLite in a temporary directory) and real sockets:
//! users added, changed and deleted while the realm serves take effect at once; bench users log
//! in with their cheap hash, never replace a real user, and go with everything they wrote; the
//! socket refuses what is not a request, and (as root) refuses other users.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::sync::Arc;

use common::{Client, Running, TIMEOUT, bodies, ok, options, realm_with};
use jaring_chat::RealmOptions;
use jaring_chat::admin::{AdminClient, AdminInfo, AdminListener, AdminSocketError};
use jaring_chat::password::PasswordCost;
use jaring_chat::storage::Store as _;
use jaring_proto::chat::admin::{AdminReply, AdminRequest};
use jaring_runtime::Model;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::UnixStream;

/// Serves `r`'s admin socket at `dir/admin.sock` until the realm stops; returns its path.
async fn admin(r: &Running, dir: &Path) -> std::path::PathBuf {
    let listener = AdminListener::bind(Some(&dir.join("admin.sock")))
        .await
        .unwrap();
    let path = listener.path().to_owned();
    let info = AdminInfo {
        client_port: r.addr.port(),
        federation_port: None,
        backend: "sqlite".into(),
    };
    tokio::spawn(listener.serve(Arc::clone(&r.realm), info, r.shutdown.clone()));
    path
}

async fn hello(path: &Path) -> jaring_proto::chat::admin::RealmInfo {
    AdminClient::connect(path)
        .await
        .unwrap()
        .hello()
        .await
        .unwrap()
}

async fn call(path: &Path, request: AdminRequest) -> Result<AdminReply, AdminSocketError> {
    AdminClient::connect(path)
        .await
        .unwrap()
        .call(&request)
        .await
}

async fn auth(r: &Running, user: &str, password: &str) -> (Client, serde_json::Value) {
    let mut c = Client::connect(r.addr).await;
    let v = c.call(&format!("auth {user} {password}")).await;
    (c, v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_added_changed_and_deleted_through_the_socket_count_at_once() {
    let (dir, r) = realm_with(&["messi"], options(), |c| c.model = Model::Async).await;
    let path = admin(&r, dir.path()).await;
    let hello = hello(&path).await;
    assert_eq!(hello.client_port, r.addr.port());
    assert_eq!(hello.users, 1);

    call(
        &path,
        AdminRequest::AddUser {
            name: "newbie".into(),
            display_name: Some("New Bie".into()),
            password: "firstpass".into(),
        },
    )
    .await
    .unwrap();
    let (mut c, v) = auth(&r, "newbie", "firstpass").await;
    assert!(ok(&v), "{v}");
    let token = v["tokenid"].as_str().unwrap().to_owned();
    let listed = call(&path, AdminRequest::ListUsers {}).await.unwrap();
    let users = listed.users.unwrap();
    let newbie = users.iter().find(|u| u.name == "newbie").unwrap();
    assert_eq!(newbie.display_name, "New Bie");
    assert!(!newbie.bench && newbie.online);

    // A new password ends the sessions: the token stops working at once.
    call(
        &path,
        AdminRequest::SetPassword {
            name: "newbie".into(),
            password: "second".into(),
        },
    )
    .await
    .unwrap();
    let v = c.call(&format!("inbox {token}")).await;
    assert!(!ok(&v), "{v}");
    assert!(!ok(&auth(&r, "newbie", "firstpass").await.1));
    assert!(ok(&auth(&r, "newbie", "second").await.1));

    call(
        &path,
        AdminRequest::DeleteUser {
            name: "newbie".into(),
        },
    )
    .await
    .unwrap();
    assert!(!ok(&auth(&r, "newbie", "second").await.1));

    // Errors say what is wrong; nothing changes.
    for (name, says) in [("no spaces", "invalid user name"), ("messi", "exists")] {
        let request = AdminRequest::AddUser {
            name: name.into(),
            display_name: None,
            password: "x".into(),
        };
        let e = call(&path, request).await.unwrap_err();
        assert!(e.to_string().contains(says), "{e}");
    }
    assert!(ok(&auth(&r, "messi", "messipw").await.1));
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_users_are_cheap_never_real_and_go_with_everything_they_wrote() {
    // A configured cost above the cheap one, so a real user's login would rehash.
    let opts = RealmOptions {
        password_cost: PasswordCost {
            memory_kib: 64,
            iterations: 2,
            parallelism: 1,
        },
        ..options()
    };
    let (dir, r) = realm_with(&["real", "c0"], opts, |c| c.model = Model::Async).await;
    let path = admin(&r, dir.path()).await;

    // A real user's name refuses the whole request: c1 is not made either.
    let refused = call(
        &path,
        AdminRequest::PutBenchUsers {
            prefix: "c".into(),
            count: 2,
            password: "bp".into(),
        },
    )
    .await
    .unwrap_err();
    assert!(
        refused.to_string().contains("\"c0\" is a real user"),
        "{refused}"
    );
    assert!(
        matches!(&refused, AdminSocketError::Refused { code: Some(c), .. } if c == "real_user"),
        "{refused:?}"
    );
    assert!(!ok(&auth(&r, "c1", "bp").await.1));
    assert!(ok(&auth(&r, "c0", "c0pw").await.1));

    let made = call(
        &path,
        AdminRequest::PutBenchUsers {
            prefix: "b".into(),
            count: 3,
            password: "bp".into(),
        },
    )
    .await
    .unwrap();
    assert_eq!(made.created, Some(3));
    let hash_of = |users: &[jaring_chat::storage::UserRecord], name: &str| {
        users.iter().find(|u| u.name == name).unwrap().clone()
    };
    let before = r.realm.store().users().await.unwrap();
    assert!(hash_of(&before, "b0").bench);
    assert!(!hash_of(&before, "real").bench);

    let (b0, v) = auth(&r, "b0", "bp").await;
    assert!(ok(&v), "{v}");
    let tb0 = v["tokenid"].as_str().unwrap().to_owned();
    let (b1, v) = auth(&r, "b1", "bp").await;
    let tb1 = v["tokenid"].as_str().unwrap().to_owned();
    let (real, v) = auth(&r, "real", "realpw").await;
    let treal = v["tokenid"].as_str().unwrap().to_owned();
    // The bench user's cheap hash stays cheap; the real user's moved to the configured cost.
    let after = r.realm.store().users().await.unwrap();
    assert_eq!(
        hash_of(&after, "b0").password_hash,
        hash_of(&before, "b0").password_hash
    );
    assert_ne!(
        hash_of(&after, "real").password_hash,
        hash_of(&before, "real").password_hash
    );

    let posts = [
        (0, format!("send {tb0} real from the bench")),
        (2, format!("send {treal} b1 to the bench")),
        (0, format!("send {tb0} b1 bench to bench")),
        (2, format!("send {treal} c0 real to real")),
        (0, format!("sendgroup {tb0} benchonly bench group post")),
        (2, format!("sendgroup {treal} mixed real group post")),
        (1, format!("sendgroup {tb1} mixed bench in a real group")),
        (2, format!("sendgroup {treal} mixed real again")),
    ];
    let mut clients = [b0, b1, real];
    for (who, line) in posts {
        let v = clients[who].call(&line).await;
        assert!(ok(&v), "{line}: {v}");
    }
    let [mut b0, _b1, mut real] = clients;

    let purged = call(&path, AdminRequest::PurgeBench {})
        .await
        .unwrap()
        .purged
        .unwrap();
    assert_eq!(purged.users, 3);
    assert_eq!(purged.private_messages, 3);
    assert_eq!(purged.group_messages, 2);
    assert_eq!(purged.groups, ["benchonly"]);

    // Gone: the users, their sessions, their messages; the real ones stay.
    assert!(!ok(&auth(&r, "b0", "bp").await.1));
    let v = b0.call(&format!("inbox {tb0}")).await;
    assert!(!ok(&v), "{v}");
    let inbox = real.call(&format!("inbox {treal}")).await;
    assert!(ok(&inbox), "{inbox}");
    assert!(!inbox.to_string().contains("from the bench"), "{inbox}");
    let (mut c0, v) = auth(&r, "c0", "c0pw").await;
    let tc0 = v["tokenid"].as_str().unwrap().to_owned();
    let got: Vec<String> = bodies(&c0.call(&format!("inbox {tc0}")).await)
        .into_iter()
        .map(|(_, text)| text)
        .collect();
    assert_eq!(got, ["real to real"]);
    let h = real.call(&format!("history {treal} mixed")).await;
    assert!(ok(&h), "{h}");
    let text = h.to_string();
    assert!(
        text.contains("real group post") && text.contains("real again"),
        "{h}"
    );
    assert!(!text.contains("bench in a real group"), "{h}");
    let groups = real.call(&format!("groups {treal}")).await;
    assert!(!groups.to_string().contains("benchonly"), "{groups}");
    let listed = call(&path, AdminRequest::ListUsers {}).await.unwrap();
    assert!(listed.users.as_ref().unwrap().iter().all(|u| !u.bench));
    // No reply ever carries a password or a hash.
    let text = serde_json::to_string(&listed).unwrap();
    assert!(
        !text.contains("argon2") && !text.contains("password"),
        "{text}"
    );

    // Made again, they start afresh, and so does a group only they were in.
    call(
        &path,
        AdminRequest::PutBenchUsers {
            prefix: "b".into(),
            count: 1,
            password: "bp2".into(),
        },
    )
    .await
    .unwrap();
    let (mut b0, v) = auth(&r, "b0", "bp2").await;
    let tb0 = v["tokenid"].as_str().unwrap().to_owned();
    let v = b0.call(&format!("sendgroup {tb0} benchonly anew")).await;
    assert!(ok(&v), "{v}");
    let h = b0.call(&format!("history {tb0} benchonly")).await;
    assert!(ok(&h), "{h}");
    assert!(!h.to_string().contains("bench group post"), "{h}");
    assert!(h.to_string().contains("anew"), "{h}");
    let again = call(&path, AdminRequest::PurgeBench {}).await.unwrap();
    assert_eq!(again.purged.unwrap().users, 1);
    let none = call(&path, AdminRequest::PurgeBench {}).await.unwrap();
    assert_eq!(none.purged.unwrap(), Default::default());
    r.stop().await;
}

/// Lines that are not requests get one clear error; a line past the cap or never finished
/// closes the connection; the realm keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_socket_refuses_what_is_not_a_request() {
    let (dir, r) = realm_with(&["messi"], options(), |c| c.model = Model::Async).await;
    let path = admin(&r, dir.path()).await;
    let mut s = BufReader::new(UnixStream::connect(&path).await.unwrap());
    for bad in [
        &b"not json\n"[..],
        b"{\"op\":\"drop_tables\"}\n",
        b"{\"op\":\"hello\",\"extra\":1}\n",
        b"\xff\xfe\n",
    ] {
        s.get_mut().write_all(bad).await.unwrap();
        let mut line = String::new();
        s.read_line(&mut line).await.unwrap();
        assert!(line.contains("\"ok\":false"), "{line}");
        assert!(line.contains("not an admin request"), "{line}");
    }
    // Over the cap: one error, then the close.
    let long = vec![b'x'; jaring_proto::chat::admin::DEFAULT_ADMIN_MAX_LINE + 10];
    s.get_mut().write_all(&long).await.unwrap();
    let mut line = String::new();
    s.read_line(&mut line).await.unwrap();
    assert!(line.contains("longer than"), "{line}");
    line.clear();
    let n = tokio::time::timeout(TIMEOUT, s.read_line(&mut line))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0, "{line}");
    // A half line and a hang-up cost nothing; the socket still answers.
    let mut half = UnixStream::connect(&path).await.unwrap();
    half.write_all(b"{\"op\":\"hel").await.unwrap();
    drop(half);
    let hello = hello(&path).await;
    assert_eq!(hello.client_port, r.addr.port());
    r.stop().await;
}

/// Only the realm's own user and root may use the socket: the file is owner-only, and even with
/// the file opened to everyone the server refuses another user by its credentials. Needs root
/// (to act as `nobody`) and python3.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_user_cannot_administer_the_realm() {
    if rustix::process::geteuid().as_raw() != 0 || !have("runuser") || !have("python3") {
        let msg = "admin socket credential test skipped: needs root, runuser and python3";
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{msg}");
        eprintln!("{msg}");
        return;
    }
    let (dir, r) = realm_with(&["messi"], options(), |c| c.model = Model::Async).await;
    // A directory everyone may enter, so only the socket's own mode and the credential check
    // stand in the way.
    let open = tempfile::Builder::new()
        .prefix("jaring-adm")
        .tempdir()
        .unwrap();
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(open.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let path = admin(&r, open.path()).await;
    let mode = {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777
    };
    assert_eq!(mode, 0o600);
    const TRY: &str = r#"
import socket, sys
s = socket.socket(socket.AF_UNIX)
try:
    s.connect(sys.argv[1])
except OSError as e:
    print("connect:", e.strerror); sys.exit(0)
try:
    s.sendall(b'{"op":"put_bench_users","prefix":"x","count":1,"password":"p"}\n')
except BrokenPipeError:
    pass  # refused at once: the refusal is still there to read
print(s.makefile().readline().strip())
"#;
    let as_nobody = |path: &Path| {
        let out = std::process::Command::new("runuser")
            .args(["-u", "nobody", "--", "python3", "-c", TRY])
            .arg(path)
            .output()
            .unwrap();
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    let denied = tokio::task::spawn_blocking({
        let path = path.clone();
        move || as_nobody(&path)
    })
    .await
    .unwrap();
    assert!(denied.contains("Permission denied"), "{denied}");
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
    }
    let refused = tokio::task::spawn_blocking({
        let path = path.clone();
        move || as_nobody(&path)
    })
    .await
    .unwrap();
    assert!(
        refused.contains("may not administer this realm"),
        "{refused}"
    );
    assert!(!ok(&auth(&r, "x0", "p").await.1));
    drop(dir);
    r.stop().await;
}

fn have(program: &str) -> bool {
    std::process::Command::new(program)
        .arg("--version")
        .output()
        .is_ok()
}
