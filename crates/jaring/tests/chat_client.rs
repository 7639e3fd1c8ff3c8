//! `jaring chat client`, scripted, against the real server: it follows a history reply's pages,
//! and what it showed is not shown again on the next run; exit statuses, `--server` forms. Also `chat serve --storage memory`.
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

    // The history first; the 30 messages are also pushed (the client watches after auth),
    // as `<messi> m00-…` lines, and the inbox shows only what was not pushed yet: each message
    // is shown once in the history and once more, pushed or in the inbox.
    let shown = client(
        server.port,
        // Two inbox replies of at most 1 MiB of text would carry the 30 messages.
        "auth henderson surabaya\nhistory messi 30\ninbox\ninbox\n",
    );
    let listed = |i: usize| format!("messi → henderson: m{i:02}-");
    let pushed = |i: usize| format!("<messi> m{i:02}-");
    let order: Vec<usize> = (0..30)
        .map(|i| {
            shown
                .find(&listed(i))
                .unwrap_or_else(|| panic!("m{i:02} missing from the history"))
        })
        .collect();
    assert!(
        order.windows(2).all(|w| w[0] < w[1]),
        "the history is printed oldest first across its pages"
    );
    for i in 0..30 {
        assert_eq!(
            shown.matches(&listed(i)).count() + shown.matches(&pushed(i)).count(),
            2,
            "m{i:02} once in the history and once pushed or in the inbox"
        );
    }

    // The first run acknowledged what it showed before it left: nothing is shown twice.
    let again = client(server.port, "auth henderson surabaya\ninbox\n");
    assert!(again.contains("no new messages"), "{again}");
    assert!(!again.contains("m00-"), "{again}");
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

/// Runs the client on `script` with `args`: its exit code, stdout and stderr.
fn run_client(args: &[&str], script: &str) -> (Option<i32>, String, String) {
    let out = jaring()
        .args(["chat", "client"])
        .args(args)
        .env("NO_COLOR", "1")
        .write_stdin(script)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn piped_use_exits_1_when_a_command_fails_and_2_on_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("realm");
    let server = ServerProcess::start(&["chat", "serve"], &["--data-dir", data.to_str().unwrap()]);
    let at = format!("127.0.0.1:{}", server.port);
    let server_args = ["--server", at.as_str()];

    let (code, out, err) = run_client(&server_args, "auth messi surabaya\nsend henderson hi\n");
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.contains("logged in as messi") && out.contains("sent"),
        "{out}"
    );

    let (code, out, err) = run_client(&server_args, "auth messi wrong\n");
    assert_eq!(code, Some(1), "a refused login fails the run: {out}{err}");
    assert!(out.contains("wrong user name or password"), "{out}");

    let (code, out, _) = run_client(&server_args, "inbox\n");
    assert_eq!(code, Some(1), "a command before auth fails: {out}");
    assert!(out.contains("not logged in"), "{out}");

    let (code, out, _) = run_client(&server_args, "auth messi surabaya\nsend nobody hi\n");
    assert_eq!(code, Some(1), "an ERROR reply fails the run: {out}");
    assert!(out.contains("no user \"nobody\""), "{out}");

    // The usage is the command's own, and the run goes on after it.
    let (code, out, err) = run_client(
        &server_args,
        "auth messi surabaya\nsend henderson\nhistory\ndance\nsend henderson still sent\n",
    );
    assert_eq!(code, Some(2), "{out}{err}");
    assert!(out.contains("usage: send TO MESSAGE"), "{out}");
    assert!(out.contains("usage: history PEER [N]"), "{out}");
    assert!(out.contains("unknown command \"dance\""), "{out}");
    assert!(
        out.ends_with("sent\n"),
        "the line after the mistakes still ran: {out}"
    );
    assert!(err.contains("could not be run as typed"), "{err}");

    // With --json, stdout holds only the realm's JSON; the client's own complaints go to stderr.
    let (code, out, err) = run_client(
        &["--server", at.as_str(), "--json"],
        "auth messi surabaya\nsend henderson\n",
    );
    assert_eq!(code, Some(2), "{out}{err}");
    for line in out.lines() {
        serde_json::from_str::<serde_json::Value>(line)
            .unwrap_or_else(|e| panic!("{e}: {line:?} is not JSON"));
    }
    assert!(err.contains("usage: send TO MESSAGE"), "{err}");

    // auth USER alone asks for the password at a terminal; a script must give it.
    let (code, out, _) = run_client(&server_args, "auth messi\n");
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("usage: auth messi PASSWORD"), "{out}");
}

#[test]
fn the_server_is_host_or_host_and_port_and_the_port_defaults_to_8889() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("realm");
    let server = ServerProcess::start(&["chat", "serve"], &["--data-dir", data.to_str().unwrap()]);
    let port = server.port.to_string();
    for args in [
        vec!["--server", "127.0.0.1", "--port", port.as_str()],
        vec!["--host", "127.0.0.1", "--port", port.as_str()],
        vec!["--server", "localhost", "-p", port.as_str()],
    ] {
        let (code, out, err) = run_client(&args, "auth messi surabaya\nrealms\n");
        assert_eq!(code, Some(0), "{args:?}: {out}{err}");
        assert!(out.contains("realm realm1"), "{args:?}: {out}");
    }
    let both = format!("127.0.0.1:{port}");
    let (code, _, err) = run_client(&["--server", &both, "--port", "1"], "");
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("give one"), "{err}");
    let (code, _, err) = run_client(&["--server", "127.0.0.1:http"], "");
    assert_eq!(code, Some(2), "{err}");

    // Without a port, 8889: the client connects there (if the port is free to listen on here).
    match std::net::TcpListener::bind("127.0.0.1:8889") {
        Ok(listener) => {
            let (code, out, err) = run_client(&["--server", "127.0.0.1"], "help\n");
            assert_eq!(code, Some(0), "{out}{err}");
            listener.set_nonblocking(true).unwrap();
            assert!(
                listener.accept().is_ok(),
                "the client connected to port 8889"
            );
        }
        Err(e) => eprintln!("default port not checked: 127.0.0.1:8889 is taken here ({e})"),
    }
}

#[test]
fn messages_show_local_hh_mm_and_nicks_coloured_only_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("realm");
    let server = ServerProcess::start(&["chat", "serve"], &["--data-dir", data.to_str().unwrap()]);
    let at = format!("127.0.0.1:{}", server.port);
    let mut messi = ChatClient::connect(server.port);
    let tm = messi.auth("messi", "surabaya");
    messi.ok(&format!("send {tm} henderson what time is it"));

    let show = |tz: &str, color: &str, no_color: bool| {
        let mut cmd = jaring();
        cmd.args(["--color", color, "chat", "client", "--server", &at])
            .env("TZ", tz)
            .write_stdin("auth henderson surabaya\nhistory messi 1\n");
        if no_color {
            cmd.env("NO_COLOR", "1");
        } else {
            cmd.env_remove("NO_COLOR");
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap()
    };
    // `[hh:mm]` of the line that carries the message.
    let minutes = |shown: &str| -> i32 {
        let line = shown
            .lines()
            .find(|l| l.contains("what time is it"))
            .unwrap_or_else(|| panic!("{shown}"));
        let at = line.find('[').unwrap();
        let hh: i32 = line[at + 1..at + 3].parse().unwrap();
        let mm: i32 = line[at + 4..at + 6].parse().unwrap();
        hh * 60 + mm
    };
    let utc = show("UTC", "never", false);
    let jakarta = show("Asia/Jakarta", "never", false);
    // Jakarta is UTC+7 all year (the minute may tick between the two runs).
    let diff = (minutes(&jakarta) - minutes(&utc)).rem_euclid(24 * 60);
    assert!((7 * 60..=7 * 60 + 1).contains(&diff), "{utc}\n{jakarta}");
    assert!(!utc.contains('\x1b'), "--color never: {utc:?}");

    let coloured = show("UTC", "always", true);
    assert!(
        coloured.contains("\x1b["),
        "--color always wins over NO_COLOR: {coloured:?}"
    );
    let again = show("UTC", "always", true);
    let nick = |s: &str| {
        let at = s.find("messi\x1b[0m").unwrap();
        s[s[..at].rfind("\x1b[").unwrap()..at].to_owned()
    };
    assert_eq!(nick(&coloured), nick(&again), "a nick keeps its colour");
    // auto: not a terminal here, so no colour.
    assert!(!show("UTC", "auto", false).contains('\x1b'));
}

#[test]
fn while_the_realm_is_down_help_and_quit_still_answer_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("realm");
    let mut server =
        ServerProcess::start(&["chat", "serve"], &["--data-dir", data.to_str().unwrap()]);
    let at = format!("127.0.0.1:{}", server.port);
    let mut client = support::ClientProcess::start(&["--server", &at]);
    client.type_line("auth messi surabaya");
    support::wait_for("the login", support::PATIENCE, || {
        client
            .stdout
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("logged in as messi"))
    });
    server.kill9();
    support::wait_for("Disconnected", support::PATIENCE, || {
        client
            .stderr
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("Disconnected"))
    });
    client.type_line("help");
    support::wait_for("the help", support::PATIENCE, || {
        client
            .stdout
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("/query TO"))
    });
    client.type_line("quit");
    // Within PATIENCE, long before a script would give up on the realm (DEFAULT_PIPED_GIVE_UP).
    assert_eq!(client.finish(), Some(0));
}
