//! `gather` against names that need no network: localhost and literal addresses.

use std::time::Duration;

use jaring_info::{InfoError, gather, render};

#[test]
fn literal_ipv4_gives_one_address_per_socket_type() {
    let info = gather("127.0.0.1", "80", Duration::from_secs(10)).expect("literal");
    assert!(!info.addresses.is_empty());
    assert!(info.addresses.iter().all(|a| a.family == "AF_INET"));
    assert!(
        info.addresses
            .iter()
            .all(|a| a.address == "127.0.0.1" && a.port == 80)
    );
    // No socket type was asked for, so the system lists each it supports (as the lab shows).
    assert!(
        info.addresses
            .iter()
            .any(|a| a.socktype == "SOCK_STREAM" && a.protocol == "IPPROTO_TCP")
    );
    assert!(
        info.addresses
            .iter()
            .any(|a| a.socktype == "SOCK_DGRAM" && a.protocol == "IPPROTO_UDP")
    );
    assert_eq!(info.timeout.default_s, None);
    assert_eq!(info.timeout.after_set_s, Some(10.0));
    assert!(info.tcp_defaults.so_rcvbuf > 0 && info.tcp_defaults.so_sndbuf > 0);
    assert!(!info.tcp_defaults.tcp_nodelay);
    assert!(!info.hostname.is_empty());
}

#[test]
fn literal_ipv6_is_af_inet6() {
    let info = gather("::1", "7", Duration::from_secs(1)).expect("literal");
    assert!(
        info.addresses
            .iter()
            .all(|a| a.family == "AF_INET6" && a.address == "::1" && a.port == 7)
    );
}

#[test]
fn localhost_resolves_with_its_canonical_name() {
    let info = gather("localhost", "80", Duration::from_secs(1)).expect("localhost");
    assert!(
        info.addresses
            .iter()
            .any(|a| a.address == "127.0.0.1" || a.address == "::1")
    );
    assert_eq!(info.addresses[0].canonname.as_deref(), Some("localhost"));
    let json = serde_json::to_value(&info).expect("json");
    assert_eq!(json["host"], "localhost");
    assert!(json["timeout"]["default_s"].is_null());
    let table = render(&info);
    assert!(
        table.contains("SO_RCVBUF") && table.contains("localhost"),
        "{table}"
    );
}

#[test]
fn a_name_that_does_not_resolve_is_one_clear_error() {
    // `.invalid` is reserved (RFC 6761): it never resolves.
    let err =
        gather("no-such-host.invalid", "80", Duration::from_secs(1)).expect_err("reserved name");
    assert!(matches!(err, InfoError::Resolve { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.starts_with("cannot resolve no-such-host.invalid:80: "),
        "{text}"
    );
    assert!(!text.contains('\n'));
}
