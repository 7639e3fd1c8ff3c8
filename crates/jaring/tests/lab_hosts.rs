//! `jaring lab --hosts`: the lab's three hosts as network namespaces on one machine, as in the
//! course's reports. The servers run on mesin-1 (172.16.16.101); clients run on mesin-2 and
//! mesin-3 with `jaring lab exec`, across the bridge; `--capture` records it; nothing is left
//! behind, not even by a lab killed with SIGKILL. Every test names its own network
//! (`JARING_LAB_NET`), so they run side by side. They need root (network namespaces): without
//! it they are skipped with one line, and under `CI=true` they fail.
#![allow(clippy::unwrap_used)]

mod support;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::lab::LabProcess;
use support::{PATIENCE, have_tool, wait_for};

/// Whether this machine can make the lab's hosts (root and iproute2); says why not otherwise.
fn hosts_available(test: &str) -> bool {
    if !have_tool("ip", &["-V"], test) {
        return false;
    }
    let root = support::is_root();
    if !root {
        let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
        assert!(
            !ci,
            "{test}: needs root for network namespaces, and CI=true"
        );
        eprintln!("{test}: skipped: network namespaces need root");
    }
    root
}

/// A network of this test's own, removed when the test ends however it ends (a failed
/// assertion included), so no test leaves namespaces behind.
struct Net(String);

impl Net {
    fn new(tag: &str) -> Self {
        Self(format!("t{}{tag}", std::process::id()))
    }
}

impl std::ops::Deref for Net {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        let _ = lab_command(&self.0, &["net", "down"]);
    }
}

/// The named network namespaces on this machine.
fn namespaces() -> Vec<String> {
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

/// The namespaces, /etc/netns entries and records of network `net` that exist.
fn leftovers(net: &str) -> Vec<String> {
    let mut found: Vec<String> = namespaces()
        .into_iter()
        .filter(|n| n.starts_with(&format!("{net}-")))
        .collect();
    for dir in ["/etc/netns", "/run/jaring-lab"] {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(&format!("{net}-")) {
                found.push(format!("{dir}/{name}"));
            }
        }
    }
    found
}

/// `jaring lab <args…>` (a subcommand) on network `net`.
fn lab_command(net: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_jaring"))
        .arg("lab")
        .args(args)
        .env("JARING_LAB_NET", net)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// `jaring lab exec HOST -- jaring <args…>`: what it printed on stdout, and on stderr.
fn on_host(net: &str, host: &str, args: &[&str]) -> (String, String) {
    let mut all = vec!["exec", host, "--", env!("CARGO_BIN_EXE_jaring")];
    all.extend_from_slice(args);
    let out = lab_command(net, &all);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(out.status.success(), "{host}: jaring {args:?}: {stderr}");
    (stdout, stderr)
}

/// Runs a chat session on `host`: `lines` piped into `jaring chat client`.
fn chat_on(net: &str, host: &str, server: &str, lines: &str) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_jaring"))
        .args(["lab", "exec", host, "--", env!("CARGO_BIN_EXE_jaring")])
        .args(["chat", "client", "--server", server])
        .env("JARING_LAB_NET", net)
        .env("NO_COLOR", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), lines.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// The lab on its three hosts, with a capture and its TLS key log (`DIR/keys.log`), on
/// network `net`.
fn lab_on_hosts(dir: &Path, net: &str, extra: &[&str]) -> LabProcess {
    let keys = dir.join("keys.log");
    let capture = dir.join("lab.pcapng");
    let mut args = vec![
        "--hosts",
        "--capture",
        capture.to_str().unwrap(),
        // The web port stays on this machine's loopback: any free port there.
        "--web-port",
        "0",
    ];
    args.extend_from_slice(extra);
    LabProcess::start(
        &dir.join("lab"),
        &args,
        &[
            ("JARING_LAB_NET", net),
            ("SSLKEYLOGFILE", keys.to_str().unwrap()),
        ],
    )
}

/// The experiments of the reports, from mesin-2 and mesin-3 to the servers on mesin-1: TIME,
/// the 46-byte echo read in 16-byte pieces, a message across the realms' link; the capture has
/// it all; the lab stops cleanly and removes its hosts.
#[test]
fn clients_on_mesin_2_and_3_reach_every_server_on_mesin_1() {
    let test = "clients_on_mesin_2_and_3_reach_every_server_on_mesin_1";
    if !hosts_available(test) || !have_tool("tshark", &["--version"], test) {
        return;
    }
    let net = Net::new("a");
    let dir = tempfile::tempdir().unwrap();
    let lab = lab_on_hosts(dir.path(), &net, &[]);
    // The table names mesin-1's address and the lab's own ports.
    assert_eq!(lab.addr("time").to_string(), "172.16.16.101:45000");
    assert_eq!(lab.addr("chat realm2").to_string(), "172.16.16.101:8899");
    assert!(
        lab.printed.contains("jaring lab exec mesin-2 -- COMMAND"),
        "{}",
        lab.printed
    );
    let status =
        String::from_utf8_lossy(&lab_command(&net, &["net", "status"]).stdout).into_owned();
    assert!(
        status.starts_with("up (made by `jaring lab --hosts`"),
        "{status}"
    );

    let (time, _) = on_host(&net, "mesin-2", &["time", "client", "--host", "mesin-1"]);
    assert!(time.starts_with("JAM "), "{time}");
    // The reports' hard cases for a dissector, from mesin-2: a request one byte per segment,
    // then 50 requests in one segment; every reply comes back.
    const SPLIT_AND_PIPELINED: &str = "import socket, time\n\
        s = socket.create_connection(('mesin-1', 45000))\n\
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)\n\
        for b in b'TIME\\r\\n':\n    s.send(bytes([b])); time.sleep(0.02)\n\
        s.sendall(b'TIME\\r\\n' * 50)\n\
        got = b''\n\
        while got.count(b'JAM ') < 51:\n    got += s.recv(4096)\n\
        s.sendall(b'QUIT\\r\\n'); s.close(); print(got.count(b'JAM '))\n";
    let split = lab_command(
        &net,
        &[
            "exec",
            "mesin-2",
            "--",
            "python3",
            "-c",
            SPLIT_AND_PIPELINED,
        ],
    );
    assert_eq!(
        String::from_utf8_lossy(&split.stdout).trim(),
        "51",
        "{}",
        String::from_utf8_lossy(&split.stderr)
    );
    // TLS on the same port, verified against the lab's CA by the name the host knows it by.
    let ca = dir.path().join("lab/tls/ca.pem");
    for name in ["mesin-1", "mesin-1.lab", "172.16.16.101"] {
        let (time, _) = on_host(
            &net,
            "mesin-3",
            &[
                "time",
                "client",
                "--host",
                name,
                "--tls",
                "--ca",
                ca.to_str().unwrap(),
            ],
        );
        assert!(time.starts_with("JAM "), "{name}: {time}");
    }
    // A lab name goes to mesin-1's DNS server; a name from outside is refused there.
    let (info, _) = on_host(&net, "mesin-2", &["info", "mesin-3.lab", "45000"]);
    assert!(info.contains("172.16.16.103:45000"), "{info}");
    let outside = lab_command(
        &net,
        &[
            "exec",
            "mesin-2",
            "--",
            env!("CARGO_BIN_EXE_jaring"),
            "info",
            "www.its.ac.id",
            "80",
        ],
    );
    assert!(
        !outside.status.success()
            && String::from_utf8_lossy(&outside.stderr).contains("cannot resolve www.its.ac.id"),
        "{outside:?}"
    );
    let (echoed, pieces) = on_host(
        &net,
        "mesin-3",
        &[
            "echo",
            "client",
            "--host",
            "172.16.16.101",
            "--chunk",
            "16",
            "-v",
            "a message that is forty-six bytes long, see it",
        ],
    );
    assert_eq!(
        echoed.trim_end(),
        "a message that is forty-six bytes long, see it"
    );
    for piece in [
        "chunk 1: 16 bytes",
        "chunk 2: 16 bytes",
        "chunk 3: 14 bytes",
    ] {
        assert!(pieces.contains(piece), "{pieces}");
    }
    // Across the link, from a client on mesin-2 (realm1) to one on mesin-3 (realm2).
    let sent = chat_on(
        &net,
        "mesin-2",
        "mesin-1:8889",
        "auth messi surabaya\nsend james@realm2 over the bridge\nquit\n",
    );
    assert!(sent.contains("sent"), "{sent}");
    let mut inbox = String::new();
    wait_for("the message across the link", PATIENCE, || {
        inbox = chat_on(
            &net,
            "mesin-3",
            "mesin-1:8899",
            "auth james medan\ninbox\nquit\n",
        );
        inbox.contains("over the bridge")
    });
    // The dashboard, on this machine's loopback (outside the hosts), counted the TIME request.
    let web = lab.addr("web");
    assert!(web.ip().is_loopback(), "{web}");
    let mut stats = String::new();
    let mut s = std::net::TcpStream::connect(web).unwrap();
    std::io::Write::write_all(
        &mut s,
        b"GET /lab/stats HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    std::io::Read::read_to_string(&mut s, &mut stats).unwrap();
    let body: serde_json::Value =
        serde_json::from_str(stats.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    let time = body["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "time")
        .unwrap()
        .clone();
    assert_eq!(time["addr"], "172.16.16.101:45000");
    assert!(time["requests"].as_u64().unwrap() >= 1, "{time}");
    // A command's exit code is exec's; an unknown host is a usage error.
    let failed = lab_command(&net, &["exec", "mesin-2", "--", "sh", "-c", "exit 7"]);
    assert_eq!(failed.status.code(), Some(7));
    let unknown = lab_command(&net, &["exec", "mesin-9", "--", "true"]);
    assert_eq!(unknown.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("mesin-1, mesin-2, mesin-3"));

    lab.stop();
    assert!(
        leftovers(&net).is_empty(),
        "left behind: {:?}",
        leftovers(&net)
    );
    // The capture: the TIME exchange between mesin-2 and mesin-1 crossed the bridge, and the
    // realms' link (on mesin-1's loopback) is in it too.
    let capture = dir.path().join("lab.pcapng");
    let fields = |filter: &str| -> Vec<String> {
        let out = Command::new("tshark")
            .arg("-r")
            .arg(&capture)
            .args(["-Y", filter, "-T", "fields", "-e", "ip.src", "-e", "ip.dst"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect()
    };
    let time_packets = fields("tcp.port == 45000 && tcp.len > 0");
    assert!(
        time_packets.contains(&"172.16.16.102\t172.16.16.101".to_owned())
            && time_packets.contains(&"172.16.16.101\t172.16.16.102".to_owned()),
        "{time_packets:?}"
    );
    assert!(
        !fields("(tcp.port == 9889 || tcp.port == 9899) && tcp.len > 0").is_empty(),
        "no link frames in the capture"
    );
    assert!(!fields("tcp.port == 10000 && ip.src == 172.16.16.103").is_empty());
    // The dissector decodes the lab's capture: every service, the link, and TLS by the key log.
    let lua = support::tshark::dissector();
    let keys = format!("tls.keylog_file:{}", dir.path().join("keys.log").display());
    let prefs = [keys.as_str()];
    support::tshark::assert_dissects(&capture, &lua, &prefs, 20);
    for (filter, what) in [
        (
            "jaring.time.request == \"TIME\" && ip.src == 172.16.16.102",
            "TIME from mesin-2",
        ),
        (
            "jaring.time.request == \"TIME\" && tls",
            "TIME over TLS, decrypted",
        ),
        ("jaring.echo.bytes", "echo"),
        ("jaring.chat.cmd == \"send\"", "the chat's send"),
        ("jaring.fed.kind", "the link's frames"),
    ] {
        assert!(
            support::tshark::count(&capture, &lua, &prefs, filter) > 0,
            "{what} ({filter}) not decoded in the lab's capture"
        );
    }
    // Every TIME from mesin-2 is one PDU, however it was cut: the time client's one, the
    // byte-by-byte one and the 50 pipelined ones.
    let from_mesin_2: usize = support::tshark::fields_where(
        &capture,
        &lua,
        &prefs,
        "ip.src == 172.16.16.102 && jaring.time.request",
        &["jaring.time.request"],
    )
    .iter()
    .flat_map(|row| {
        row[0]
            .split(support::tshark::AGGREGATOR)
            .map(str::to_owned)
            .collect::<Vec<_>>()
    })
    .filter(|r| r == "TIME")
    .count();
    assert_eq!(from_mesin_2, 52, "TIME PDUs from mesin-2");
    let dns = fields("dns.flags.response == 1 && dns.a == 172.16.16.103");
    assert_eq!(
        dns,
        ["172.16.16.101\t172.16.16.102"],
        "the A answer for mesin-3.lab"
    );
    assert_eq!(
        fields("dns.flags.rcode == 5 && dns.qry.name == \"www.its.ac.id\"").len(),
        2,
        "REFUSED for the A and AAAA queries"
    );
}

/// The iterative server of the reports with a backlog of 1: a second client, on another host,
/// connects (the kernel queues it) but gets no answer until the first one leaves; the async
/// server answers it at once.
#[test]
fn an_iterative_server_makes_the_second_host_wait_and_the_async_one_does_not() {
    let test = "an_iterative_server_makes_the_second_host_wait_and_the_async_one_does_not";
    if !hosts_available(test) || !have_tool("python3", &["--version"], test) {
        return;
    }
    for (model, waits) in [("iterative", true), ("async", false)] {
        let net = Net::new(&format!("m{}", &model[..2]));
        let dir = tempfile::tempdir().unwrap();
        let lab = lab_on_hosts(
            dir.path(),
            &net,
            &["--model", model, "--backlog", "1", "--no-tls"],
        );
        let release = dir.path().join("release");
        // The first client (mesin-2) connects, is echoed, and holds on until told to leave.
        const HOLD: &str = "import socket, os, sys, time\n\
            s = socket.create_connection(('mesin-1', 10000))\n\
            s.sendall(b'first\\n'); print(s.recv(100).decode().strip(), flush=True)\n\
            while not os.path.exists(sys.argv[1]): time.sleep(0.05)\n\
            s.close()\n";
        let mut first = Command::new(env!("CARGO_BIN_EXE_jaring"))
            .args(["lab", "exec", "mesin-2", "--", "python3", "-c", HOLD])
            .arg(&release)
            .env("JARING_LAB_NET", &*net)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(first.stdout.as_mut().unwrap()),
            &mut line,
        )
        .unwrap();
        assert_eq!(line.trim(), "first", "{model}");
        // The second (mesin-3) asks while the first holds the server.
        let second = Command::new(env!("CARGO_BIN_EXE_jaring"))
            .args(["lab", "exec", "mesin-3", "--", env!("CARGO_BIN_EXE_jaring")])
            .args([
                "echo",
                "client",
                "--host",
                "mesin-1",
                "--timeout",
                "60",
                "second",
            ])
            .env("JARING_LAB_NET", &*net)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let answered = wait_exit_within(second, Duration::from_secs(2));
        match (waits, answered) {
            (true, Err(second)) => {
                // Still waiting in the backlog: the first leaves, and the second is served.
                std::fs::write(&release, "").unwrap();
                let out = second.wait_with_output().unwrap();
                assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "second");
            }
            (false, Ok(out)) => {
                assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "second");
                std::fs::write(&release, "").unwrap();
            }
            (true, Ok(out)) => panic!(
                "the iterative server answered the second client while the first held it: {}",
                String::from_utf8_lossy(&out.stdout)
            ),
            (false, Err(_)) => panic!("the async server made the second client wait"),
        }
        first.wait().unwrap();
        lab.stop();
        assert!(leftovers(&net).is_empty(), "{:?}", leftovers(&net));
    }
}

/// The child's output if it exits within `within`, else the child, still running.
fn wait_exit_within(
    mut child: std::process::Child,
    within: Duration,
) -> Result<Output, std::process::Child> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            return Ok(child.wait_with_output().unwrap());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(child)
}

/// A lab killed with SIGKILL leaves its hosts behind; the next start on the same network
/// removes them and builds afresh; a closed terminal (SIGHUP) stops it cleanly.
#[test]
fn a_killed_lab_leaves_hosts_that_the_next_start_removes() {
    let test = "a_killed_lab_leaves_hosts_that_the_next_start_removes";
    if !hosts_available(test) {
        return;
    }
    let net = Net::new("k");
    let dir = tempfile::tempdir().unwrap();
    let mut lab = LabProcess::start(
        &dir.path().join("lab"),
        &["--hosts", "--no-web", "--no-tls"],
        &[("JARING_LAB_NET", &*net)],
    );
    lab.child.kill().unwrap();
    lab.child.wait().unwrap();
    assert!(!leftovers(&net).is_empty(), "a SIGKILL cannot clean up");
    let lab = LabProcess::start(
        &dir.path().join("lab"),
        &["--hosts", "--no-web", "--no-tls"],
        &[("JARING_LAB_NET", &*net)],
    );
    let (time, _) = on_host(&net, "mesin-3", &["time", "client", "--host", "mesin-1"]);
    assert!(time.starts_with("JAM "), "{time}");
    // Its terminal closed (SIGHUP): a graceful stop that removes the hosts.
    let mut lab = lab;
    assert!(lab.signal("HUP").success());
    assert!(leftovers(&net).is_empty(), "{:?}", leftovers(&net));
}

/// `jaring lab net up|status|down` without the servers: any program runs on the hosts, a
/// capture started with `net up` is written at `net down`, and `down` leaves nothing.
#[test]
fn net_up_runs_any_program_on_the_hosts_and_net_down_removes_them() {
    let test = "net_up_runs_any_program_on_the_hosts_and_net_down_removes_them";
    if !hosts_available(test) || !have_tool("dumpcap", &["--version"], test) {
        return;
    }
    let net = Net::new("n");
    let dir = tempfile::tempdir().unwrap();
    let capture = dir.path().join("net.pcapng");
    let up = lab_command(&net, &["net", "up", "--capture", capture.to_str().unwrap()]);
    assert!(
        up.status.success(),
        "{}",
        String::from_utf8_lossy(&up.stderr)
    );
    let again = lab_command(&net, &["net", "up"]);
    assert!(String::from_utf8_lossy(&again.stdout).contains("already up"));
    // A capture asked of hosts already up is refused, not silently dropped.
    let other = dir.path().join("other.pcapng");
    let again = lab_command(&net, &["net", "up", "--capture", other.to_str().unwrap()]);
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("no capture started"));
    let server = Command::new(env!("CARGO_BIN_EXE_jaring"))
        .args(["lab", "exec", "mesin-1", "--", env!("CARGO_BIN_EXE_jaring")])
        .args(["time", "serve", "--port", "45000"])
        .env("JARING_LAB_NET", &*net)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut reply = String::new();
    wait_for("the time server on mesin-1", PATIENCE, || {
        let out = lab_command(
            &net,
            &[
                "exec",
                "mesin-2",
                "--",
                env!("CARGO_BIN_EXE_jaring"),
                "time",
                "client",
                "--host",
                "mesin-1",
            ],
        );
        reply = String::from_utf8_lossy(&out.stdout).into_owned();
        out.status.success()
    });
    assert!(reply.starts_with("JAM "), "{reply}");
    let status =
        String::from_utf8_lossy(&lab_command(&net, &["net", "status"]).stdout).into_owned();
    assert!(status.contains("made by `jaring lab net up`"), "{status}");
    let down = lab_command(&net, &["net", "down"]);
    let said = String::from_utf8_lossy(&down.stdout);
    assert!(
        down.status.success() && said.contains("capture written"),
        "{said}"
    );
    // The server ran in the hosts: `down` ended it.
    let mut server = server;
    wait_for("the server on mesin-1 to end", PATIENCE, || {
        server.try_wait().unwrap().is_some()
    });
    assert!(leftovers(&net).is_empty(), "{:?}", leftovers(&net));
    let after = lab_command(&net, &["net", "status"]);
    assert_eq!(String::from_utf8_lossy(&after.stdout).trim(), "down");
    assert!(std::fs::metadata(&capture).unwrap().len() > 0);
}

/// Without root the hosts cannot be made: the lab says what is missing and how to get it, and
/// makes nothing.
#[test]
fn without_root_the_hosts_are_refused_with_what_to_do() {
    let test = "without_root_the_hosts_are_refused_with_what_to_do";
    if !hosts_available(test) || !have_tool("runuser", &["--version"], test) {
        return;
    }
    let net = Net::new("r");
    let out = Command::new("runuser")
        .args(["-u", "nobody", "--"])
        .arg(env!("CARGO_BIN_EXE_jaring"))
        .args(["lab", "--hosts", "--dir", "/tmp/never-made-by-jaring-test"])
        .env("JARING_LAB_NET", &*net)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains("needs root") && said.contains("CAP_SYS_ADMIN") && said.contains("sudo"),
        "{said}"
    );
    assert!(leftovers(&net).is_empty());
    assert!(!Path::new("/tmp/never-made-by-jaring-test").exists());
}

/// Namespaces with the lab's names that jaring did not make (the course's own recipe makes a
/// `mesin-2` too) are never removed: the lab refuses and says how to proceed.
#[test]
fn namespaces_jaring_did_not_make_are_left_alone() {
    let test = "namespaces_jaring_did_not_make_are_left_alone";
    if !hosts_available(test) {
        return;
    }
    let net = Net::new("o");
    let theirs = format!("{}-mesin-2", &*net);
    let added = Command::new("ip")
        .args(["netns", "add", &theirs])
        .status()
        .unwrap();
    assert!(added.success());
    let up = lab_command(&net, &["net", "up"]);
    let said = String::from_utf8_lossy(&up.stderr);
    assert!(!up.status.success(), "{said}");
    assert!(
        said.contains("jaring did not make them") && said.contains(&theirs),
        "{said}"
    );
    assert!(
        namespaces().contains(&theirs),
        "the user's namespace was removed"
    );
    let removed = Command::new("ip")
        .args(["netns", "del", &theirs])
        .status()
        .unwrap();
    assert!(removed.success());
}
