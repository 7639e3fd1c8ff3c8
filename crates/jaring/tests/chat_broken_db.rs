//! `jaring chat serve` (and `jaring lab`) on a broken data directory: an empty `chat.db`, one
//! with damaged pages or header, and a disk with no room. Each exits non-zero at once with one line
//! that names the file and says what to do; a new data directory still starts.
#![allow(clippy::unwrap_used)]

mod support;

use std::path::{Path, PathBuf};

use support::{ServerProcess, jaring};

/// SQLite's page size (the default; chat.db does not change it).
const PAGE: usize = 4096;

/// A realm database with users in it, written by the offline `user add`, which closes the database
/// when done: everything is in `chat.db` itself (no `-wal` left), so damaging it damages data.
fn realm_with_users(dir: &Path) -> PathBuf {
    for name in ["messi", "henderson", "lineker", "james", "taeno"] {
        jaring()
            .args(["chat", "user", "add", name, "--data-dir"])
            .arg(dir)
            .write_stdin("surabaya\n")
            .assert()
            .success();
    }
    let db = dir.join("chat.db");
    assert!(!dir.join("chat.db-wal").exists(), "checkpointed on close");
    assert!(std::fs::metadata(&db).unwrap().len() > 2 * PAGE as u64);
    db
}

/// Runs `jaring chat serve` on `dir` and returns its stderr, asserting it failed with exit 1.
fn serve_fails(dir: &Path) -> String {
    let out = jaring()
        .args([
            "chat",
            "serve",
            "--bind",
            "127.0.0.1",
            "--port",
            "0",
            "--data-dir",
        ])
        .arg(dir)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    stderr
}

/// The one `jaring: …` line of a failure.
fn failure_line(stderr: &str) -> &str {
    stderr
        .lines()
        .find(|l| l.starts_with("jaring: "))
        .unwrap_or_else(|| panic!("no failure line in {stderr:?}"))
}

#[test]
fn an_empty_database_is_refused_but_a_new_data_directory_starts() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("realm");
    std::fs::create_dir(&dir).unwrap();
    let db = dir.join("chat.db");
    std::fs::write(&db, b"").unwrap();
    let stderr = serve_fails(&dir);
    let line = failure_line(&stderr);
    assert!(line.contains(&*db.to_string_lossy()), "{line}");
    assert!(line.contains("is empty (0 bytes)"), "{line}");
    assert!(line.contains("restore it from a backup"), "{line}");
    assert_eq!(std::fs::metadata(&db).unwrap().len(), 0, "left as it was");

    // A data directory that is new (absent, or there but empty) is where a realm begins.
    for fresh in [tmp.path().join("absent"), {
        let d = tmp.path().join("made-empty");
        std::fs::create_dir(&d).unwrap();
        d
    }] {
        let server = ServerProcess::start(
            &["chat", "serve", "--data-dir", fresh.to_str().unwrap()],
            &[],
        );
        assert!(server.port > 0);
        drop(server);
        assert!(std::fs::metadata(fresh.join("chat.db")).unwrap().len() > 0);
    }
}

#[test]
fn a_database_with_damaged_pages_is_refused_at_start() {
    let tmp = tempfile::tempdir().unwrap();
    let db = realm_with_users(tmp.path());
    let mut bytes = std::fs::read(&db).unwrap();
    // Page 2 (a table's root page) turned to noise: the kind of damage a bad disk leaves.
    for b in &mut bytes[PAGE..2 * PAGE] {
        *b ^= 0x5a;
    }
    std::fs::write(&db, &bytes).unwrap();
    let stderr = serve_fails(tmp.path());
    let line = failure_line(&stderr);
    assert!(line.contains(&*db.to_string_lossy()), "{line}");
    assert!(line.contains("is damaged"), "{line}");
    assert!(line.contains("restore it from a backup"), "{line}");
    // The offline tools refuse it the same way.
    let out = jaring()
        .args(["chat", "user", "list", "--data-dir"])
        .arg(tmp.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is damaged"));
}

#[test]
fn a_database_with_a_damaged_header_is_refused_at_start() {
    let tmp = tempfile::tempdir().unwrap();
    let db = realm_with_users(tmp.path());
    let mut bytes = std::fs::read(&db).unwrap();
    bytes[..16].copy_from_slice(b"not SQLite 3 at ");
    std::fs::write(&db, &bytes).unwrap();
    let line = failure_line(&serve_fails(tmp.path())).to_owned();
    assert!(line.contains(&*db.to_string_lossy()), "{line}");
    assert!(
        line.contains("is damaged (file is not a database)"),
        "{line}"
    );
}

/// `jaring <args…>` with a file size limit of a few KiB and SIGXFSZ ignored, so that writes past
/// it fail with EFBIG: what a full disk looks like to SQLite (it reports SQLITE_IOERR_SHMSIZE when
/// it cannot grow its `-shm` file), with no mount needed.
fn with_tiny_file_limit(args: &[&str], dir: &Path) -> std::process::Output {
    let mut cmd = std::process::Command::new("sh");
    cmd.arg("-c")
        .arg("trap '' XFSZ; ulimit -f 16 && exec \"$@\"")
        .arg("sh")
        .arg(assert_cmd::cargo::cargo_bin("jaring"))
        .args(args)
        .arg(dir)
        .env("NO_COLOR", "1");
    let mut cmd = assert_cmd::Command::from_std(cmd);
    cmd.timeout(support::PATIENCE);
    cmd.output().unwrap()
}

#[test]
fn a_full_disk_at_start_says_so_and_names_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let serve = [
        "chat",
        "serve",
        "--bind",
        "127.0.0.1",
        "--port",
        "0",
        "--data-dir",
    ];
    // A new realm, and one with users in it.
    let fresh = tmp.path().join("fresh");
    let existing = tmp.path().join("existing");
    realm_with_users(&existing);
    for dir in [fresh, existing] {
        let out = with_tiny_file_limit(&serve, &dir);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        let line = failure_line(&stderr);
        let db = dir.join("chat.db");
        assert!(
            line.contains(&format!("no space left on device ({})", db.display())),
            "{line}"
        );
        assert!(!dir.join(".jaring-space-probe").exists(), "probe removed");
    }
}

#[test]
fn the_lab_names_the_realm_and_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let lab = tmp.path().join("lab");
    std::fs::create_dir_all(lab.join("realm2")).unwrap();
    let db = lab.join("realm2").join("chat.db");
    std::fs::write(&db, b"").unwrap();
    let out = jaring()
        .args(["lab", "--bind", "127.0.0.1", "--ephemeral", "--dir"])
        .arg(&lab)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let line = failure_line(&stderr);
    assert!(line.contains("cannot start realm realm2"), "{line}");
    assert!(line.contains(&*db.to_string_lossy()), "{line}");
}
