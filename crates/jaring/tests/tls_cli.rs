//! TLS as a user meets it: `jaring tls init` makes the files, `time serve` and `chat serve` take
//! them, and clients that are not jaring's (Python's `ssl` in strict mode, `openssl s_client`)
//! speak TLS to the same port a classic plaintext client uses at the same time.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

mod support;

use std::path::Path;

use support::{ServerProcess, jaring, python};

/// `jaring tls init --dir DIR NAME…`, returning its JSON.
fn init(dir: &Path, names: &[&str]) -> serde_json::Value {
    let out = jaring()
        .args(["tls", "init", "--json", "--dir"])
        .arg(dir)
        .args(names)
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    serde_json::from_slice(&out).unwrap()
}

/// The classic plaintext client: send, print everything until the server closes.
const PLAIN_CLIENT: &str = r#"
import socket, sys
port, request = int(sys.argv[1]), sys.argv[2]
with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
    s.sendall(request.encode().decode("unicode_escape").encode())
    data = b""
    while True:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    print(data.decode().strip())
"#;

#[test]
fn tls_init_makes_keeps_and_fingerprints_its_files() {
    let dir = tempfile::tempdir().unwrap();
    let first = init(dir.path(), &["alpha", "beta"]);
    assert_eq!(first["created"], true, "{first}");
    let again = init(dir.path(), &["alpha", "beta"]);
    assert_eq!(again["created"], false, "{again}");
    assert_eq!(first["leaves"], again["leaves"]);
    for leaf in first["leaves"].as_array().unwrap() {
        let key = leaf["key"].as_str().unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{key}");
        let printed = jaring()
            .args(["tls", "fingerprint", leaf["cert"].as_str().unwrap()])
            .assert()
            .success()
            .get_output()
            .stdout
            .clone();
        assert_eq!(
            String::from_utf8(printed).unwrap().trim(),
            leaf["fingerprint"].as_str().unwrap()
        );
    }
}

#[test]
fn the_time_port_serves_strict_python_openssl_and_a_plaintext_client_at_once() {
    if !support::have_tool("python3", &["--version"], "tls_cli") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let made = init(dir.path(), &["server"]);
    let cert = made["leaves"][0]["cert"].as_str().unwrap().to_owned();
    let key = made["leaves"][0]["key"].as_str().unwrap().to_owned();
    let ca = made["ca"].as_str().unwrap().to_owned();
    let server = ServerProcess::start(
        &["time", "serve"],
        &["--tls-cert", &cert, "--tls-key", &key],
    );
    let port = server.port.to_string();
    let threads: Vec<_> = ["localhost", "127.0.0.1", "plain"]
        .into_iter()
        .map(|host| {
            let (port, ca) = (port.clone(), ca.clone());
            std::thread::spawn(move || {
                if host == "plain" {
                    python(PLAIN_CLIENT, &[&port, "TIME\\r\\nQUIT\\r\\n"])
                } else {
                    support::python_tls_call(
                        host,
                        port.parse().unwrap(),
                        Path::new(&ca),
                        "TIME\r\n",
                    )
                    .unwrap()
                }
            })
        })
        .collect();
    for t in threads {
        let got = t.join().unwrap();
        assert!(got.contains("JAM "), "{got}");
    }
    if support::have_tool("openssl", &["version"], "tls_cli") {
        let (out, _) = support::openssl_s_client(
            server.port,
            Path::new(&ca),
            &["-verify_hostname", "localhost"],
            b"TIME\r\nQUIT\r\n",
            |seen| seen.windows(4).any(|w| w == b"JAM "),
        );
        let text = String::from_utf8_lossy(&out);
        assert!(text.contains("Verify return code: 0 (ok)"), "{text}");
        assert!(text.contains("JAM "), "{text}");
    }
}

#[test]
fn a_tls_only_time_port_refuses_plaintext_in_one_line() {
    if !support::have_tool("python3", &["--version"], "tls_cli") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let made = init(dir.path(), &["server"]);
    let cert = made["leaves"][0]["cert"].as_str().unwrap();
    let key = made["leaves"][0]["key"].as_str().unwrap();
    let server = ServerProcess::start(
        &["time", "serve"],
        &["--tls-cert", cert, "--tls-key", key, "--tls-only"],
    );
    let got = python(PLAIN_CLIENT, &[&server.port.to_string(), "TIME\\r\\n"]);
    assert_eq!(got.lines().count(), 1, "{got}");
    assert!(got.starts_with("ERR ") && got.contains("TLS only"), "{got}");
    let ca = made["ca"].as_str().unwrap();
    jaring()
        .args(["time", "client", "--port", &server.port.to_string()])
        .args(["--host", "localhost", "--ca", ca])
        .assert()
        .success()
        .stdout(predicates::str::starts_with("JAM "));
}

#[test]
fn a_chat_realm_speaks_tls_to_strict_python_beside_plaintext() {
    if !support::have_tool("python3", &["--version"], "tls_cli") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let made = init(dir.path(), &["realm"]);
    let cert = made["leaves"][0]["cert"].as_str().unwrap();
    let key = made["leaves"][0]["key"].as_str().unwrap();
    let ca = made["ca"].as_str().unwrap();
    // The demo realm (the lab's users), in memory.
    let server = ServerProcess::start(
        &["chat", "serve"],
        &["--storage", "memory", "--tls-cert", cert, "--tls-key", key],
    );
    let got = support::python_tls_call(
        "localhost",
        server.port,
        Path::new(ca),
        "auth messi surabaya\r\n",
    )
    .unwrap();
    let reply: serde_json::Value = serde_json::from_str(got.trim()).unwrap();
    assert_eq!(reply["status"], "OK", "{reply}");
    let mut plain = support::ChatClient::connect(server.port);
    let token = plain.auth("henderson", "surabaya");
    assert!(!token.is_empty());
}
