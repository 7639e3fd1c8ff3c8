//! jaring's Wireshark dissector (`contrib/wireshark/jaring.lua`) read by tshark: the fixtures
//! (real jaring traffic, `contrib/wireshark/tests/regen.sh`) against their golden field output,
//! and live captures on loopback: a request one byte per segment and 50 requests in one segment
//! must decode as exactly the right number of PDUs, and hostile bytes as expert infos, never as a
//! malformed packet or a Lua error.
//!
//! Skipped, with one line, where tshark or dumpcap is missing or dumpcap cannot capture (not
//! root); under CI=true that fails instead.

mod support;

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

use support::tshark::{self, Capture};
use support::{ChatClient, PATIENCE, ServerProcess, Storage, add_user, password, realm_config};

const TEST: &str = "dissector";

/// Between the bytes of a split request: long enough that each leaves in a segment of its own.
const BYTE_PAUSE: Duration = Duration::from_millis(10);

/// How many requests the pipelining clients write at once.
const PIPELINED: usize = 50;

/// One fixture: its capture, the preferences it needs, the fields its golden output shows.
struct Fixture {
    name: String,
    pcap: PathBuf,
    prefs: Vec<String>,
    fields: Vec<String>,
    golden: String,
}

fn fixtures() -> Vec<Fixture> {
    let dir = tshark::fixtures();
    let read = |name: &str, ext: &str| {
        let path = dir.join(format!("{name}.{ext}"));
        std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e} (contrib/wireshark/tests/regen.sh makes it)",
                path.display()
            )
        })
    };
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .expect("contrib/wireshark/tests")
        .filter_map(|e| {
            let name = e.expect("dir entry").file_name().into_string().ok()?;
            Some(name.strip_suffix(".pcapng")?.to_owned())
        })
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|name| Fixture {
            pcap: dir.join(format!("{name}.pcapng")),
            prefs: read(&name, "prefs")
                .lines()
                .filter(|l| !l.is_empty())
                .map(|l| l.replace("{dir}", &dir.display().to_string()))
                .collect(),
            fields: read(&name, "fields").lines().map(str::to_owned).collect(),
            golden: read(&name, "golden"),
            name,
        })
        .collect()
}

fn prefs(f: &Fixture) -> Vec<&str> {
    f.prefs.iter().map(String::as_str).collect()
}

fn fixture(name: &str) -> Fixture {
    fixtures()
        .into_iter()
        .find(|f| f.name == name)
        .unwrap_or_else(|| panic!("no fixture {name}"))
}

/// How many times each value occurs.
fn tally(values: &[String]) -> BTreeMap<&str, usize> {
    let mut out = BTreeMap::new();
    for v in values {
        *out.entry(v.as_str()).or_default() += 1;
    }
    out
}

#[test]
fn fixtures_match_their_golden_output() {
    if !tshark::have_tshark(TEST) {
        return;
    }
    let lua = tshark::dissector();
    let all = fixtures();
    let names: Vec<&str> = all.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["chat", "echo", "federation", "time", "tls"]);
    // One pass (tshark's way), and two (-2: Wireshark's, where a packet is dissected again when
    // shown): the state the dissector keeps per connection must give the same output.
    for (f, two_pass) in all.iter().flat_map(|f| [(f, false), (f, true)]) {
        let mut args = vec![
            "-Y",
            "jaring",
            "-T",
            "fields",
            "-E",
            "header=y",
            "-E",
            "aggregator=|",
        ];
        if two_pass {
            args.push("-2");
        }
        for field in &f.fields {
            args.extend(["-e", field]);
        }
        let out = tshark::tshark(&f.pcap, &lua, &prefs(f), &args);
        let got = String::from_utf8(out.stdout).expect("utf-8 fields");
        if got != f.golden {
            let diff: Vec<String> = got
                .lines()
                .zip(f.golden.lines())
                .filter(|(a, b)| a != b)
                .take(5)
                .map(|(a, b)| format!("  got:      {a}\n  expected: {b}"))
                .collect();
            panic!(
                "{}: the dissector's output (two passes: {two_pass}) differs from {}.golden ({} lines, expected {}):\n{}\n\
                 If the change is intended and you checked the new output, \
                 contrib/wireshark/tests/regen.sh --golden-only writes it.",
                f.name,
                f.name,
                got.lines().count(),
                f.golden.lines().count(),
                diff.join("\n")
            );
        }
        if !two_pass {
            tshark::assert_dissects(&f.pcap, &lua, &prefs(f), f.golden.lines().count() - 1);
        }
    }
}

/// What the fixtures must show, said outright (the golden files say it only implicitly).
#[test]
fn fixtures_show_what_the_protocols_say() {
    if !tshark::have_tshark(TEST) {
        return;
    }
    let lua = tshark::dissector();

    let time = fixture("time");
    let rows = tshark::fields(
        &time.pcap,
        &lua,
        &prefs(&time),
        &["jaring.time.kind", "jaring.time.error"],
    );
    let kinds: Vec<String> = rows
        .iter()
        .filter(|r| !r[0].is_empty())
        .flat_map(|r| r[0].split('|').map(str::to_owned).collect::<Vec<_>>())
        .collect();
    let kinds = tally(&kinds);
    // jaring's client (2), one byte per segment (1), 50 in one write, one ending in a bare LF.
    assert_eq!(
        kinds.get("TIME"),
        Some(&(2 + 1 + PIPELINED + 1)),
        "{kinds:?}"
    );
    assert_eq!(kinds.get("QUIT"), Some(&4), "{kinds:?}");
    assert_eq!(kinds.get("blank"), Some(&1), "{kinds:?}");
    assert_eq!(kinds.get("unknown"), Some(&1), "{kinds:?}");
    assert!(
        rows.iter()
            .any(|r| r[0].split('|').filter(|k| *k == "TIME").count() == PIPELINED),
        "no frame holds the {PIPELINED} pipelined requests: {rows:?}"
    );
    let errors: Vec<&str> = rows
        .iter()
        .map(|r| r[1].as_str())
        .filter(|e| !e.is_empty())
        .collect();
    assert_eq!(
        errors,
        ["unknown request \"hello\"; send TIME or QUIT (upper case)"]
    );

    let chat = fixture("chat");
    let [kinds, events, tokens, cmds] = <[Vec<String>; 4]>::try_from(tshark::values(
        &chat.pcap,
        &lua,
        &prefs(&chat),
        &[
            "jaring.chat.kind",
            "jaring.chat.event",
            "jaring.chat.token",
            "jaring.chat.cmd",
        ],
    ))
    .expect("four fields");
    let kinds = tally(&kinds);
    for kind in ["request", "reply", "event", "live", "raw"] {
        assert!(kinds.contains_key(kind), "no chat {kind}: {kinds:?}");
    }
    let events = tally(&events);
    assert!(
        events.contains_key("private") && events.contains_key("message"),
        "{events:?}"
    );
    assert_eq!(tally(&cmds).get("send"), Some(&2), "{cmds:?}");
    // Tokens are masked unless a preference reveals them.
    assert!(!tokens.is_empty());
    assert!(tokens.iter().all(|t| t.ends_with("(masked)")), "{tokens:?}");
    let mut reveal = prefs(&chat);
    reveal.push("jaring.reveal_secrets:TRUE");
    let tokens = tshark::values(&chat.pcap, &lua, &reveal, &["jaring.chat.token"]).remove(0);
    assert!(
        !tokens.is_empty()
            && tokens
                .iter()
                .all(|t| t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit())),
        "{tokens:?}"
    );

    let fed = fixture("federation");
    let kinds = tshark::values(&fed.pcap, &lua, &prefs(&fed), &["jaring.fed.kind"]).remove(0);
    assert_eq!(kinds[..4], ["hello", "challenge", "auth", "ready"]);
    for kind in [
        "lookup", "found", "msg", "ack", "gjoin", "greply", "gpost", "gmsg", "gack",
    ] {
        assert!(
            kinds.iter().any(|k| k == kind),
            "no {kind} frame: {kinds:?}"
        );
    }

    // Inside TLS, with the key log: every service decoded, all of it marked as TLS; and
    // nothing without the key log.
    let tls = fixture("tls");
    let services = tshark::values(&tls.pcap, &lua, &prefs(&tls), &["jaring.service"]).remove(0);
    let services = tally(&services);
    for service in ["time", "echo", "chat", "fed"] {
        assert!(
            services.contains_key(service),
            "no {service} over TLS: {services:?}"
        );
    }
    let (n, _) = tshark::counts(&tls.pcap, &lua, &prefs(&tls), &["jaring && !jaring.tls"]);
    assert_eq!(n, [0]);
    let without_keys: Vec<&str> = prefs(&tls)
        .into_iter()
        .filter(|p| !p.starts_with("tls.keylog_file"))
        .collect();
    assert_eq!(tshark::count(&tls.pcap, &lua, &without_keys, "jaring"), 0);
}

/// Writes `bytes` one byte per segment.
fn trickle(stream: &mut TcpStream, bytes: &[u8]) {
    for b in bytes {
        stream.write_all(&[*b]).expect("write a byte");
        std::thread::sleep(BYTE_PAUSE);
    }
}

/// Reads until `n` occurrences of `end` arrived.
fn read_until(stream: &mut TcpStream, end: &[u8], n: usize) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0; 65536];
    while got.windows(end.len()).filter(|w| *w == end).count() < n {
        let k = stream.read(&mut buf).expect("read");
        assert!(k > 0, "closed after {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..k]);
    }
    got
}

fn connect(port: u16) -> TcpStream {
    let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    stream.set_read_timeout(Some(PATIENCE)).expect("timeout");
    stream
}

#[test]
fn live_capture_decodes_split_and_pipelined_requests_exactly() {
    if !tshark::have_tshark(TEST) {
        return;
    }
    let time = ServerProcess::start(&["time", "serve"], &[]);
    let dir = tempfile::tempdir().expect("temp dir");
    let config = realm_config(dir.path(), "realm1", Storage::Sqlite, &[]);
    add_user(&config, "messi");
    let realm = ServerProcess::realm(&config, &[]);
    let pcap = dir.path().join("live.pcapng");
    let filter = format!("tcp port {} or tcp port {}", time.port, realm.port);
    let Some(capture) = Capture::start(&pcap, &filter, TEST) else {
        return;
    };

    // TIME: one request a byte per segment, then 50 in one write.
    let mut t = connect(time.port);
    trickle(&mut t, b"TIME\r\n");
    read_until(&mut t, b"\r\n", 1);
    t.write_all(&b"TIME\r\n".repeat(PIPELINED)).expect("write");
    read_until(&mut t, b"\r\n", PIPELINED);
    t.write_all(b"QUIT\r\n").expect("write");
    let _ = t.read(&mut [0; 16]);

    // Chat: auth a byte per segment, then 50 pings in one write.
    let mut c = ChatClient::connect(realm.port);
    let line = format!("auth messi {}\r\n", password("messi"));
    trickle(&mut c.stream, line.as_bytes());
    c.reply().expect("auth reply");
    let pings: Vec<String> = (0..PIPELINED).map(|_| "ping".to_owned()).collect();
    assert!(c.write_lines(&pings));
    for _ in 0..PIPELINED {
        assert_eq!(c.reply().expect("pong")["message"], "pong");
    }
    drop(c);

    let pcap = capture.stop();
    let lua = tshark::dissector();
    let time_pref = format!("jaring.time_ports:{}", time.port);
    let chat_pref = format!("jaring.chat_ports:{}", realm.port);
    let prefs = [time_pref.as_str(), chat_pref.as_str()];
    tshark::assert_dissects(&pcap, &lua, &prefs, 4);

    let [kinds, clocks, cmds, chat_kinds, statuses, users] =
        <[Vec<String>; 6]>::try_from(tshark::values(
            &pcap,
            &lua,
            &prefs,
            &[
                "jaring.time.kind",
                "jaring.time.clock",
                "jaring.chat.cmd",
                "jaring.chat.kind",
                "jaring.chat.status",
                "jaring.chat.user",
            ],
        ))
        .expect("six fields");
    assert_eq!(
        tally(&kinds),
        BTreeMap::from([("TIME", 1 + PIPELINED), ("QUIT", 1)])
    );
    assert_eq!(clocks.len(), 1 + PIPELINED, "{clocks:?}");
    assert_eq!(
        tally(&cmds),
        BTreeMap::from([("auth", 1), ("ping", PIPELINED)])
    );
    assert_eq!(
        tally(&chat_kinds),
        BTreeMap::from([("request", 1 + PIPELINED), ("reply", 1 + PIPELINED)])
    );
    assert_eq!(tally(&statuses), BTreeMap::from([("OK", 1 + PIPELINED)]));
    assert_eq!(users, ["messi"]);

    // Each byte of a split request was a segment of its own, and they make one request, in the
    // frame of the last byte; the 50 requests came in one segment and make 50.
    let (one_byte, _) = tshark::counts(
        &pcap,
        &lua,
        &prefs,
        &[
            &format!("tcp.dstport == {} && tcp.len == 1", time.port),
            &format!("tcp.dstport == {} && tcp.len == 1", realm.port),
        ],
    );
    assert_eq!(one_byte, [b"TIME\r\n".len(), line.len()]);
    let rows = tshark::fields_where(
        &pcap,
        &lua,
        &prefs,
        "jaring.time.request || jaring.chat.cmd",
        &["tcp.len", "jaring.time.request", "jaring.chat.cmd"],
    );
    let per_frame: Vec<(String, usize)> = rows
        .iter()
        .map(|r| {
            let pdus = if r[1].is_empty() { &r[2] } else { &r[1] };
            (r[0].clone(), pdus.split('|').count())
        })
        .collect();
    assert_eq!(
        per_frame,
        [
            ("1".to_owned(), 1),
            ((6 * PIPELINED).to_string(), PIPELINED),
            ("6".to_owned(), 1),
            ("1".to_owned(), 1),
            ((6 * PIPELINED).to_string(), PIPELINED),
        ]
    );
}

/// A peer on loopback that reads everything a client sends (up to its FIN), then answers with
/// `reply` and closes: its port, and the thread serving it.
fn hostile_peer(reply: &'static [u8]) -> (u16, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let handle = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        s.set_read_timeout(Some(PATIENCE)).expect("timeout");
        let mut request = Vec::new();
        s.read_to_end(&mut request).expect("read the request");
        s.write_all(reply).expect("write the reply");
    });
    (port, handle)
}

/// Sends `request` in three segments, then its FIN, and reads to the end.
fn hostile_client(port: u16, request: &[u8]) {
    let mut s = connect(port);
    for chunk in request.chunks(request.len().div_ceil(3).max(1)) {
        s.write_all(chunk).expect("write");
        std::thread::sleep(BYTE_PAUSE);
    }
    s.shutdown(std::net::Shutdown::Write).expect("FIN");
    let mut sink = Vec::new();
    s.read_to_end(&mut sink).expect("read the reply");
}

#[test]
fn hostile_bytes_are_expert_infos_not_errors() {
    if !tshark::have_tshark(TEST) {
        return;
    }
    // Servers that break every rule, on each service's port: what the dissector sees from a
    // broken or malicious peer.
    let (time_port, time_peer) = hostile_peer(b"JAM 99\r\nhello\nERR x\r\n\xff\xfe\r\n");
    let (chat_port, chat_peer) = hostile_peer(
        b"{\"status\":\r\n\r\n{\"event\":1}\r\n\r\n{}\r\n\r\n{\"status\":\"OK\",\"x\":\"\\ud800\\u12\"}\r\n\r\n\
          {\"status\":\"OK\",\"deep\":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}\r\n\r\n\
          not json at all\r\n\r\n{\"unterminated\":\"",
    );
    let (fed_port, fed_peer) = hostile_peer(
        b"{\"t\":5}\n[1,2]\n{\"t\":\"nonsense\",\"q\":-1,\"seq\":1e999}\n\n{\"t\":\"msg\"",
    );
    // Echo is binary-safe: bytes that look like a TLS ClientHello are still echo data.
    const TLS_LIKE: &[u8] = b"\x16\x03\x01\x00\x05hello";
    let (echo_port, echo_peer) = hostile_peer(TLS_LIKE);
    let dir = tempfile::tempdir().expect("temp dir");
    let pcap = dir.path().join("hostile.pcapng");
    let filter = format!(
        "tcp port {time_port} or tcp port {chat_port} or tcp port {fed_port} or tcp port {echo_port}"
    );
    let Some(capture) = Capture::start(&pcap, &filter, TEST) else {
        return;
    };
    let long = [
        b"TIME".as_slice(),
        &[b'x'; 3000],
        b"\r\n\xff\xfe\x00\r\n\r\nTIME\n",
    ]
    .concat();
    hostile_client(time_port, &long);
    let chat = [
        b"send\r\nauth a b c d\r\nSEND t bob\r\ninbox \xff\r\n".as_slice(),
        &[b'y'; 200_000],
    ]
    .concat();
    hostile_client(chat_port, &chat);
    hostile_client(
        fed_port,
        b"{\"t\":\"hello\",\"realm\":\"\\u0000\"}\nnot a frame\n",
    );
    hostile_client(echo_port, TLS_LIKE);
    for peer in [time_peer, chat_peer, fed_peer, echo_peer] {
        peer.join().expect("peer thread");
    }
    let pcap = capture.stop();

    let lua = tshark::dissector();
    let prefs = [
        format!("jaring.time_ports:{time_port}"),
        format!("jaring.chat_ports:{chat_port}"),
        format!("jaring.fed_ports:{fed_port}"),
        format!("jaring.echo_ports:{echo_port}"),
        // Smaller than the 200,000-byte line that never ends, so the dissector gives up on it.
        "jaring.max_pdu:100000".to_owned(),
    ];
    let prefs: Vec<&str> = prefs.iter().map(String::as_str).collect();
    tshark::assert_dissects(&pcap, &lua, &prefs, 3);
    let experts = [
        "jaring.bad_json",
        "jaring.bad_reply",
        "jaring.not_utf8",
        "jaring.too_long",
        "jaring.unknown",
        "jaring.unterminated",
        "jaring.bare_lf",
    ];
    let (n, _) = tshark::counts(&pcap, &lua, &prefs, &experts);
    for (expert, n) in experts.iter().zip(n) {
        assert!(n > 0, "no {expert} in the hostile capture");
    }
    let echo_tls = format!("tls && tcp.port == {echo_port}");
    assert_eq!(tshark::count(&pcap, &lua, &prefs, &echo_tls), 0);
    let echoed = tshark::values(&pcap, &lua, &prefs, &["jaring.echo.bytes"]).remove(0);
    let echoed: usize = echoed
        .iter()
        .map(|n| n.parse::<usize>().expect("a count"))
        .sum();
    assert_eq!(echoed, 2 * TLS_LIKE.len());
}
