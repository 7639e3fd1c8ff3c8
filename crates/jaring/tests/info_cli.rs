//! `jaring info` as a user runs it; only names that need no network are looked up.

use std::time::Duration;

use assert_cmd::cargo::cargo_bin;
use predicates::prelude::*;

fn info(args: &[&str]) -> assert_cmd::Command {
    let mut cmd = assert_cmd::Command::new(cargo_bin("jaring"));
    cmd.arg("info").args(args).timeout(Duration::from_secs(60));
    cmd
}

fn json(args: &[&str]) -> serde_json::Value {
    let out = info(args)
        .arg("--json")
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    serde_json::from_slice(&out).expect("json")
}

#[test]
fn localhost_json_has_every_section() {
    let v = json(&["localhost", "80"]);
    assert_eq!(v["host"], "localhost");
    assert!(v["timeout"]["default_s"].is_null(), "{v}");
    assert_eq!(v["timeout"]["after_set_s"], 10.0);
    let addrs = v["addresses"].as_array().expect("addresses");
    assert!(
        addrs
            .iter()
            .any(|a| a["address"] == "127.0.0.1" || a["address"] == "::1"),
        "{v}"
    );
    assert_eq!(addrs[0]["canonname"], "localhost");
    assert!(v["hostname"].as_str().is_some_and(|h| !h.is_empty()));
    assert!(v["tcp_defaults"]["so_rcvbuf"].as_u64().expect("rcvbuf") > 0);
    assert_eq!(v["tcp_defaults"]["tcp_nodelay"], false);
}

#[test]
fn the_defaults_are_localhost_80() {
    let v = json(&[]);
    assert_eq!(v["host"], "localhost");
    assert_eq!(v["port"], "80");
}

#[test]
fn literal_addresses_keep_their_family() {
    let v4 = json(&["127.0.0.1", "7", "--timeout", "2.5"]);
    assert!(
        v4["addresses"]
            .as_array()
            .expect("addresses")
            .iter()
            .all(|a| a["family"] == "AF_INET" && a["port"] == 7)
    );
    assert_eq!(v4["timeout"]["after_set_s"], 2.5);
    let v6 = json(&["::1", "7"]);
    assert!(
        v6["addresses"]
            .as_array()
            .expect("addresses")
            .iter()
            .all(|a| a["family"] == "AF_INET6" && a["address"] == "::1")
    );
}

#[test]
fn the_table_shows_every_section() {
    info(&["127.0.0.1"]).assert().success().stdout(
        predicate::str::contains("SO_RCVTIMEO")
            .and(predicate::str::contains("SOCK_STREAM"))
            .and(predicate::str::contains("host name"))
            .and(predicate::str::contains("SO_REUSEADDR")),
    );
}

#[test]
fn a_name_that_does_not_resolve_is_one_line_and_exit_2() {
    let out = info(&["no-such-host.invalid"])
        .assert()
        .code(2)
        .stdout("")
        .get_output()
        .stderr
        .clone();
    let err = String::from_utf8(out).expect("utf-8");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("jaring: cannot resolve no-such-host.invalid:80"),
        "{err}"
    );
}

#[test]
fn a_port_past_65535_is_refused_not_wrapped() {
    info(&["127.0.0.1", "99999"])
        .assert()
        .code(2)
        .stdout("")
        .stderr(predicate::str::contains("a port number is 0 to 65535"));
    let ok = json(&["127.0.0.1", "65535"]);
    assert_eq!(ok["addresses"][0]["port"], 65535);
}
