//! `jaring chat client`, scripted, against the real server: it follows a history reply's pages,
//! and a piped inbox is not handed out again on the next run. Also `chat serve --storage memory`.
#![allow(clippy::unwrap_used)]

mod support;

use support::{ChatClient, ServerProcess, jaring};

fn client(port: u16, script: &str) -> String {
    let out = jaring()
        .args(["chat", "client", "--server", &format!("127.0.0.1:{port}")])
        .write_stdin(script)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn the_client_follows_history_pages_and_acknowledges_its_last_inbox() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("realm");
    let server = ServerProcess::start(&["chat", "serve"], &["--data-dir", data.to_str().unwrap()]);
    let mut messi = ChatClient::connect(server.port);
    let tm = messi.auth("messi", "surabaya");
    // 30 messages of 60 kB: 1.8 MB, more than one reply carries.
    for i in 0..30 {
        let text = format!("m{i:02}-{}", "x".repeat(60_000));
        assert_eq!(
            messi.call(&format!("send {tm} henderson {text}")).unwrap()["status"],
            "OK"
        );
    }

    let shown = client(
        server.port,
        // Two inbox replies of at most 1 MiB of text carry the 30 messages.
        "auth henderson surabaya\nhistory messi 30\ninbox\ninbox\n",
    );
    // The history comes first, so each message's first mention is its history line.
    let order: Vec<usize> = (0..30)
        .map(|i| {
            shown
                .find(&format!("m{i:02}-"))
                .unwrap_or_else(|| panic!("m{i:02} missing from the history"))
        })
        .collect();
    assert!(
        order.windows(2).all(|w| w[0] < w[1]),
        "the history is printed oldest first across its pages"
    );
    for i in 0..30 {
        assert_eq!(
            shown.matches(&format!("m{i:02}-")).count(),
            2,
            "m{i:02} once in the history and once in the inbox"
        );
    }

    // The first run printed the inbox and said so before it left: nothing is handed out twice.
    let again = client(server.port, "auth henderson surabaya\ninbox\n");
    assert!(again.contains("no new messages"), "{again}");
}

/// Messages in `user`'s inbox, as `sender: text`.
fn inbox(port: u16, user: &str) -> Vec<String> {
    let mut c = ChatClient::connect(port);
    let t = c.auth(user, "surabaya");
    let r = c.ok(&format!("inbox {t}"));
    let mut shown = Vec::new();
    for (sender, list) in r["messages"].as_object().unwrap() {
        for m in list.as_array().unwrap() {
            shown.push(format!("{sender}: {}", m["msg"].as_str().unwrap()));
        }
    }
    shown
}

#[test]
fn a_memory_realm_from_the_command_line_serves_and_keeps_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("realm");
    let args = ["--data-dir", data.to_str().unwrap(), "--storage", "memory"];
    let mut server = ServerProcess::start(&["chat", "serve"], &args);
    let mut messi = ChatClient::connect(server.port);
    let tm = messi.auth("messi", "surabaya");
    messi.ok(&format!("send {tm} henderson hello from memory"));
    assert_eq!(
        inbox(server.port, "henderson"),
        ["messi: hello from memory"]
    );
    messi.ok(&format!("send {tm} henderson gone at the restart"));
    server.kill9();
    assert!(
        !data.join("chat.db").exists(),
        "a memory realm writes no database"
    );

    let server = ServerProcess::start(&["chat", "serve"], &args);
    assert!(
        inbox(server.port, "henderson").is_empty(),
        "nothing survives a memory realm's restart"
    );
}
