//! The lab CA and its leaves against real clients on loopback: Python's ssl module in strict
//! mode, `openssl s_client`, and rustls configured by this crate.

#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use jaring_tls::{Trust, client_config, pki, server_config};
use rustls::HandshakeKind;

const PYTHON_CLIENT: &str = r#"
import socket, ssl, sys
cafile, port, host = sys.argv[1], int(sys.argv[2]), sys.argv[3]
ctx = ssl.create_default_context(cafile=cafile)
ctx.verify_flags |= ssl.VERIFY_X509_STRICT
with socket.create_connection(("127.0.0.1", port), timeout=20) as raw:
    with ctx.wrap_socket(raw, server_hostname=host) as tls:
        tls.sendall(b"hello\n")
        answer = b""
        while not answer.endswith(b"\n"):
            chunk = tls.recv(100)
            if not chunk:
                break
            answer += chunk
        print(tls.version(), answer.decode().strip())
"#;

#[test]
fn python_strict_accepts_the_lab_leaf_by_name_and_by_address() {
    if !common::have_tool("python3", "--version") {
        return;
    }
    let (lab, id) = common::lab("python");
    let port = common::serve(server_config(&id).unwrap());
    for host in ["localhost", "127.0.0.1"] {
        let out = Command::new("python3")
            .args(["-c", PYTHON_CLIENT])
            .arg(&lab.ca)
            .arg(port.to_string())
            .arg(host)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "python3 refused {host}:\n{stdout}\n{stderr}"
        );
        assert!(stdout.contains("echo: hello"), "{host}: {stdout}");
        assert!(stdout.contains("TLSv1.3"), "{host}: {stdout}");
    }
    std::fs::remove_dir_all(&lab.dir).unwrap();
}

#[test]
fn python_strict_refuses_a_leaf_from_another_ca() {
    if !common::have_tool("python3", "--version") {
        return;
    }
    let (lab, _) = common::lab("python-neg");
    let (_, other) = common::lab("python-neg-other");
    let port = common::serve(server_config(&other).unwrap());
    let out = Command::new("python3")
        .args(["-c", PYTHON_CLIENT])
        .arg(&lab.ca)
        .arg(port.to_string())
        .arg("localhost")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("CERTIFICATE_VERIFY_FAILED"), "{stderr}");
    std::fs::remove_dir_all(&lab.dir).unwrap();
}

fn s_client(port: u16, ca: &std::path::Path, extra: &[&str]) -> String {
    let mut child = Command::new("openssl")
        .arg("s_client")
        .arg("-connect")
        .arg(format!("127.0.0.1:{port}"))
        .arg("-CAfile")
        .arg(ca)
        .args(["-verify_return_error", "-verify_hostname", "localhost"])
        .args(["-servername", "localhost"])
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"hello\n").unwrap();
    // Give the answer a moment to arrive before EOF on stdin makes s_client hang up.
    std::thread::sleep(Duration::from_millis(300));
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn openssl_s_client_verifies_the_lab_leaf() {
    if !common::have_tool("openssl", "version") {
        return;
    }
    let (lab, id) = common::lab("openssl");
    let port = common::serve(server_config(&id).unwrap());
    let out = s_client(port, &lab.ca, &[]);
    assert!(out.contains("Verify return code: 0 (ok)"), "{out}");
    assert!(out.contains("echo: hello"), "{out}");

    // TLS 1.2 with -reconnect: resumption by ticket, and (-no_ticket) by session id, which
    // only the server's session cache can serve.
    for extra in [
        &["-tls1_2", "-reconnect"][..],
        &["-tls1_2", "-reconnect", "-no_ticket"],
    ] {
        let out = s_client(port, &lab.ca, extra);
        assert!(
            out.contains("Verify return code: 0 (ok)"),
            "{extra:?}: {out}"
        );
        assert!(out.contains("Reused, TLSv1.2"), "{extra:?}: {out}");
    }
    std::fs::remove_dir_all(&lab.dir).unwrap();
}

#[test]
fn rustls_client_with_the_lab_ca_connects_and_resumes() {
    let (lab, id) = common::lab("rustls");
    let port = common::serve(server_config(&id).unwrap());
    let client = client_config(&Trust::CaFile(lab.ca.clone())).unwrap();
    for host in ["localhost", "127.0.0.1"] {
        let (kind, answer) = common::exchange(client.clone(), port, host).unwrap();
        assert_eq!(answer, "echo: hello\n");
        if host == "localhost" {
            assert_eq!(kind, HandshakeKind::Full, "first connection");
        }
    }
    // Same config, same server name: the ticket from the first connection is used.
    let (kind, answer) = common::exchange(client.clone(), port, "localhost").unwrap();
    assert_eq!(answer, "echo: hello\n");
    assert_eq!(kind, HandshakeKind::Resumed);

    // A name the leaf does not carry is refused.
    let err = common::exchange(client, port, "elsewhere.example").unwrap_err();
    assert!(err.to_string().contains("not valid for name"), "{err}");
    std::fs::remove_dir_all(&lab.dir).unwrap();
}

#[test]
fn insecure_trust_connects_to_an_unknown_ca_that_ca_trust_refuses() {
    let (lab, _) = common::lab("insecure");
    let (other_lab, other) = common::lab("insecure-other");
    let port = common::serve(server_config(&other).unwrap());

    let (_, answer) =
        common::exchange(client_config(&Trust::Insecure).unwrap(), port, "localhost").unwrap();
    assert_eq!(answer, "echo: hello\n");

    let strict = client_config(&Trust::CaFile(lab.ca.clone())).unwrap();
    let err = common::exchange(strict, port, "localhost").unwrap_err();
    // Both labs' CAs share a name, so webpki finds the wrong issuer and reports a bad
    // signature rather than an unknown issuer: either way the certificate is refused.
    assert!(
        err.to_string().contains("invalid peer certificate"),
        "{err}"
    );
    std::fs::remove_dir_all(&lab.dir).unwrap();
    std::fs::remove_dir_all(&other_lab.dir).unwrap();
}

#[test]
fn ca_file_errors_name_the_file_and_the_flag() {
    let missing = common::scratch("no-ca").join("ca.pem");
    let err = client_config(&Trust::CaFile(missing)).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("cannot read CA file") && msg.contains("--ca"),
        "{msg}"
    );
}

#[test]
fn an_expired_leaf_is_refused_by_a_ca_verifying_client() {
    let dir = common::scratch("expired-service");
    let lab = pki::ensure_lab(&dir, &[], &["localhost".to_owned()]).unwrap();
    let ca = pki::Authority::load(&lab.ca, &dir.join("ca-key.pem")).unwrap();
    let now = SystemTime::now();
    let day = Duration::from_secs(86_400);
    let leaf = ca
        .issue(&["localhost".to_owned()], now - 3 * day, now - day)
        .unwrap();
    let id = jaring_tls::Identity::from_pem(&leaf.cert_pem, &leaf.key_pem).unwrap();
    let port = common::serve(server_config(&id).unwrap());
    let err = common::exchange(
        client_config(&Trust::CaFile(lab.ca.clone())).unwrap(),
        port,
        "localhost",
    )
    .unwrap_err();
    assert!(err.to_string().to_lowercase().contains("expired"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
