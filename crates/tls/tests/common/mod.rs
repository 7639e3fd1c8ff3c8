//! Helpers shared by the integration tests: scratch directories, a lab, a loopback server.

#![allow(dead_code, missing_docs, clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jaring_tls::{Identity, pki};

/// A fresh directory under the system temp dir, unique to this process and call.
pub fn scratch(name: &str) -> PathBuf {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    std::env::temp_dir().join(format!(
        "jaring-tls-it-{}-{name}-{nanos}",
        std::process::id()
    ))
}

/// A lab with one leaf `server` for localhost, 127.0.0.1 and ::1.
pub fn lab(name: &str) -> (pki::LabTls, Identity) {
    let sans = ["localhost", "127.0.0.1", "::1"].map(String::from);
    let lab = pki::ensure_lab(&scratch(name), &["server"], &sans).unwrap();
    let id = Identity::from_pem_files(&lab.leaves[0].cert, &lab.leaves[0].key).unwrap();
    (lab, id)
}

/// Serves on 127.0.0.1 (an ephemeral port) from a std thread: each connection reads one line
/// and answers `echo: LINE`, then closes. Returns the port.
pub fn serve(config: Arc<rustls::ServerConfig>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for tcp in listener.incoming() {
            let Ok(tcp) = tcp else { continue };
            let config = config.clone();
            std::thread::spawn(move || {
                // Errors are the client's business (openssl may hang up without close_notify).
                let _ = echo_once(config, tcp);
            });
        }
    });
    port
}

fn echo_once(config: Arc<rustls::ServerConfig>, tcp: TcpStream) -> std::io::Result<()> {
    tcp.set_read_timeout(Some(Duration::from_secs(20)))?;
    let conn = rustls::ServerConnection::new(config).map_err(std::io::Error::other)?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while tls.read(&mut byte)? == 1 && byte[0] != b'\n' {
        line.push(byte[0]);
    }
    tls.write_all(b"echo: ")?;
    tls.write_all(&line)?;
    tls.write_all(b"\n")?;
    tls.conn.send_close_notify();
    tls.flush()?;
    Ok(())
}

/// One exchange as a rustls client: sends `hello`, returns how the handshake went and the
/// answer.
pub fn exchange(
    config: Arc<rustls::ClientConfig>,
    port: u16,
    host: &str,
) -> Result<(rustls::HandshakeKind, String), std::io::Error> {
    let tcp = TcpStream::connect(("127.0.0.1", port))?;
    tcp.set_read_timeout(Some(Duration::from_secs(20)))?;
    let name = jaring_tls::server_name(host).map_err(std::io::Error::other)?;
    let conn = rustls::ClientConnection::new(config, name).map_err(std::io::Error::other)?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    tls.write_all(b"hello\n")?;
    let mut answer = String::new();
    tls.read_to_string(&mut answer)?;
    let kind = tls
        .conn
        .handshake_kind()
        .ok_or_else(|| std::io::Error::other("no handshake kind after the exchange"))?;
    Ok((kind, answer))
}

/// Whether an external tool runs. When it does not: under `CI=true` the test fails, otherwise
/// it prints one line saying it is skipped and the caller returns.
pub fn have_tool(program: &str, version_arg: &str) -> bool {
    let found = std::process::Command::new(program)
        .arg(version_arg)
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("`{program}` is needed for this test and CI=true: install it");
        }
        println!("skipped: `{program}` is not installed (`{program} {version_arg}` did not run)");
    }
    found
}
