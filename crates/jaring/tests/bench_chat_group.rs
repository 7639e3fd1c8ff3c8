//! `jaring bench chat --group` against a real `jaring chat serve` on port 0: every delivery due
//! arrives once, and the report says so.
#![allow(clippy::unwrap_used)]

mod support;

use std::process::Command;

use serde_json::Value;
use support::ServerProcess;

#[test]
fn bench_chat_group_delivers_every_message_once() {
    let tmp = tempfile::tempdir().unwrap();
    support::bench_users(&tmp.path().join("data"), 20);
    let config = tmp.path().join("realm.toml");
    std::fs::write(
        &config,
        "[realm]\ndata_dir = \"data\"\n[listen]\nbind = \"127.0.0.1\"\nport = 0\n",
    )
    .unwrap();
    let server = ServerProcess::run([
        std::ffi::OsStr::new("chat"),
        "serve".as_ref(),
        "--config".as_ref(),
        config.as_os_str(),
    ]);
    let port = server.port;
    let out = Command::new(env!("CARGO_BIN_EXE_jaring"))
        .args(["bench", "chat", "--group", "--json", "--password", "pw"])
        .args([
            "--members",
            "20",
            "--senders",
            "3",
            "--rate",
            "60",
            "--duration",
            "1",
        ])
        .arg("--port")
        .arg(port.to_string())
        .output()
        .unwrap();
    drop(server);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    let sent = r["sent"].as_u64().unwrap();
    assert!(sent > 0, "{r}");
    assert_eq!(r["expected"].as_u64().unwrap(), sent * 20, "{r}");
    assert_eq!(r["delivered"], r["expected"], "{r}");
    assert_eq!(
        (r["lost"].as_u64(), r["duplicated"].as_u64()),
        (Some(0), Some(0)),
        "{r}"
    );
    assert_eq!(r["out_of_order"], 0, "{r}");
    assert_eq!(r["members_cut"], 0, "{r}");
    assert!(r["latency_p50_us"].as_u64().unwrap() > 0);
}
