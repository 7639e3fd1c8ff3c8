//! The lab's DNS server under any datagram: never a panic; a reply carries the query's id, is
//! marked a reply, and is at most the query plus one answer record (no amplification).
#![no_main]

use std::net::Ipv4Addr;

use jaring_proto::dns::{Zone, answer};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|datagram: &[u8]| {
    let zone = Zone {
        origin: "lab".into(),
        hosts: vec![("mesin-1".into(), Ipv4Addr::new(172, 16, 16, 101))],
    };
    if let Some(reply) = answer(datagram, &zone) {
        assert_eq!(reply[..2], datagram[..2]);
        assert!(reply[2] & 0x80 != 0);
        assert!(reply.len() <= datagram.len() + 16);
    }
});
