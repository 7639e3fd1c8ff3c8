//! The lab's DNS: just enough of RFC 1035 to answer A queries for the lab's own names over UDP,
//! so that `getaddrinfo` on the lab's hosts sends real DNS packets a student can see in the
//! capture. Sans-IO: [`answer`] turns one query datagram into one reply datagram.
//!
//! What it answers: a standard query (opcode 0) with one question of class IN. A name in the
//! zone (`mesin-1.lab`) gets its A record (type A) or an empty answer (any other type, such as
//! the AAAA query glibc sends beside the A one); a name under the zone that it does not know
//! gets NXDOMAIN; a name outside the zone gets REFUSED (the lab has no way to the Internet, and
//! says so rather than staying silent). A datagram too short for a header, or a reply, is
//! dropped; any other malformed query gets FORMERR.

use std::net::Ipv4Addr;

/// The longest query accepted (the classic UDP limit); a longer datagram is dropped.
pub const MAX_QUERY: usize = 512;

/// How long resolvers may keep an answer, in seconds (short: the lab is rebuilt often).
pub const TTL_SECS: u32 = 60;

const HEADER: usize = 12;
const TYPE_A: u16 = 1;
const CLASS_IN: u16 = 1;
const FLAG_QR: u16 = 0x8000;
const FLAG_AA: u16 = 0x0400;
const FLAG_RD: u16 = 0x0100;
const OPCODE_MASK: u16 = 0x7800;

/// A reply's code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rcode {
    /// The name exists (with or without records of the type asked).
    NoError = 0,
    /// The query could not be read.
    FormErr = 1,
    /// Not a name of the zone.
    NxDomain = 3,
    /// Not a query this server answers (another opcode, class, or zone).
    Refused = 5,
}

/// The names one server answers for: `NAME.ZONE` → address.
#[derive(Debug, Clone)]
pub struct Zone {
    /// The zone, lower case, without a trailing dot (e.g. `lab`).
    pub origin: String,
    /// The names below it, lower case (e.g. `mesin-1`), and their addresses.
    pub hosts: Vec<(String, Ipv4Addr)>,
}

impl Zone {
    /// Where `name` (lower case, no trailing dot) points, if it is in the zone: `Ok(Some)` for
    /// a known name, `Ok(None)` for an unknown one under the zone, `Err(())` outside it.
    fn lookup(&self, name: &str) -> Result<Option<Ipv4Addr>, ()> {
        if name == self.origin {
            return Ok(None);
        }
        let Some(label) = name
            .strip_suffix(&self.origin)
            .and_then(|n| n.strip_suffix('.'))
        else {
            return Err(());
        };
        Ok(self.hosts.iter().find(|(h, _)| h == label).map(|(_, a)| *a))
    }
}

/// One question read from a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Question {
    /// The name asked, lower case, dot-separated, without the trailing dot.
    pub name: String,
    /// The record type asked.
    pub qtype: u16,
    /// The class asked.
    pub qclass: u16,
    /// Where the question ends in the datagram.
    end: usize,
}

/// Reads the question of a query: labels (no compression: a query has nothing to point to),
/// type, class.
fn question(msg: &[u8]) -> Option<Question> {
    let mut at = HEADER;
    let mut labels: Vec<String> = Vec::new();
    let mut length = 0usize;
    loop {
        let len = usize::from(*msg.get(at)?);
        at += 1;
        if len == 0 {
            break;
        }
        // 0xC0: a compression pointer; 0x40/0x80: reserved label types.
        if len > 63 {
            return None;
        }
        length += len + 1;
        if length > 255 {
            return None;
        }
        let label = msg.get(at..at + len)?;
        labels.push(String::from_utf8_lossy(label).to_ascii_lowercase());
        at += len;
    }
    let qtype = u16::from_be_bytes([*msg.get(at)?, *msg.get(at + 1)?]);
    let qclass = u16::from_be_bytes([*msg.get(at + 2)?, *msg.get(at + 3)?]);
    Some(Question {
        name: labels.join("."),
        qtype,
        qclass,
        end: at + 4,
    })
}

/// The reply to one query datagram, or `None` when it gets none (too short for a header, or
/// itself a reply, or longer than [`MAX_QUERY`]).
pub fn answer(query: &[u8], zone: &Zone) -> Option<Vec<u8>> {
    if query.len() < HEADER || query.len() > MAX_QUERY {
        return None;
    }
    let flags = u16::from_be_bytes([query[2], query[3]]);
    if flags & FLAG_QR != 0 {
        return None;
    }
    let qdcount = u16::from_be_bytes([query[4], query[5]]);
    let reply = |rcode: Rcode, q: Option<&Question>, address: Option<Ipv4Addr>| {
        let mut out = Vec::with_capacity(64);
        out.extend_from_slice(&query[..2]);
        let flags = FLAG_QR | (flags & OPCODE_MASK) | FLAG_AA | (flags & FLAG_RD) | rcode as u16;
        out.extend_from_slice(&flags.to_be_bytes());
        out.extend_from_slice(&u16::from(q.is_some()).to_be_bytes());
        out.extend_from_slice(&u16::from(address.is_some()).to_be_bytes());
        out.extend_from_slice(&[0, 0, 0, 0]);
        if let Some(q) = q {
            out.extend_from_slice(&query[HEADER..q.end]);
        }
        if let Some(address) = address {
            // The answer's name points back at the question's (offset 12).
            out.extend_from_slice(&[0xC0, 0x0C]);
            out.extend_from_slice(&TYPE_A.to_be_bytes());
            out.extend_from_slice(&CLASS_IN.to_be_bytes());
            out.extend_from_slice(&TTL_SECS.to_be_bytes());
            out.extend_from_slice(&4u16.to_be_bytes());
            out.extend_from_slice(&address.octets());
        }
        out
    };
    if flags & OPCODE_MASK != 0 {
        return Some(reply(Rcode::Refused, None, None));
    }
    if qdcount != 1 {
        return Some(reply(Rcode::FormErr, None, None));
    }
    let Some(q) = question(query) else {
        return Some(reply(Rcode::FormErr, None, None));
    };
    if q.qclass != CLASS_IN {
        return Some(reply(Rcode::Refused, Some(&q), None));
    }
    Some(match zone.lookup(&q.name) {
        Err(()) => reply(Rcode::Refused, Some(&q), None),
        Ok(None) => reply(Rcode::NxDomain, Some(&q), None),
        Ok(Some(address)) if q.qtype == TYPE_A => reply(Rcode::NoError, Some(&q), Some(address)),
        // The name exists without a record of that type (AAAA, MX…): an empty answer.
        Ok(Some(_)) => reply(Rcode::NoError, Some(&q), None),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn zone() -> Zone {
        Zone {
            origin: "lab".into(),
            hosts: vec![
                ("mesin-1".into(), Ipv4Addr::new(172, 16, 16, 101)),
                ("mesin-2".into(), Ipv4Addr::new(172, 16, 16, 102)),
            ],
        }
    }

    /// A query as a resolver sends it: id, RD, one question.
    fn query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
        let mut q = id.to_be_bytes().to_vec();
        q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
        for label in name.split('.') {
            q.push(label.len() as u8);
            q.extend_from_slice(label.as_bytes());
        }
        q.push(0);
        q.extend_from_slice(&qtype.to_be_bytes());
        q.extend_from_slice(&CLASS_IN.to_be_bytes());
        q
    }

    fn rcode(reply: &[u8]) -> u16 {
        u16::from_be_bytes([reply[2], reply[3]]) & 0x000F
    }

    #[test]
    fn a_known_name_gets_its_address() {
        let q = query(0xBEEF, "Mesin-2.LAB", TYPE_A);
        let r = answer(&q, &zone()).unwrap();
        assert_eq!(&r[..2], &[0xBE, 0xEF], "the query's id");
        assert_eq!(
            u16::from_be_bytes([r[2], r[3]]),
            0x8500,
            "QR AA RD, NOERROR"
        );
        assert_eq!(&r[4..8], &[0, 1, 0, 1], "one question, one answer");
        assert_eq!(&r[HEADER..q.len()], &q[HEADER..], "the question echoed");
        assert_eq!(&r[r.len() - 4..], &[172, 16, 16, 102]);
    }

    #[test]
    fn aaaa_for_a_known_name_is_an_empty_answer_and_unknown_names_are_told_apart() {
        let r = answer(&query(1, "mesin-1.lab", 28), &zone()).unwrap();
        assert_eq!((rcode(&r), &r[6..8]), (0, &[0u8, 0][..]));
        let r = answer(&query(2, "mesin-9.lab", TYPE_A), &zone()).unwrap();
        assert_eq!(rcode(&r), Rcode::NxDomain as u16);
        let r = answer(&query(3, "www.its.ac.id", TYPE_A), &zone()).unwrap();
        assert_eq!(rcode(&r), Rcode::Refused as u16);
        // A name that merely ends in the zone's letters is outside it.
        let r = answer(&query(4, "mesin-1.collab", TYPE_A), &zone()).unwrap();
        assert_eq!(rcode(&r), Rcode::Refused as u16);
    }

    #[test]
    fn malformed_queries_get_formerr_and_replies_or_scraps_get_nothing() {
        assert_eq!(answer(&[0; 5], &zone()), None);
        let mut reply = query(5, "mesin-1.lab", TYPE_A);
        reply[2] |= 0x80;
        assert_eq!(answer(&reply, &zone()), None);
        let mut cut = query(6, "mesin-1.lab", TYPE_A);
        cut.truncate(cut.len() - 3);
        assert_eq!(rcode(&answer(&cut, &zone()).unwrap()), 1);
        let mut pointer = query(7, "mesin-1.lab", TYPE_A);
        pointer[HEADER] = 0xC0;
        assert_eq!(rcode(&answer(&pointer, &zone()).unwrap()), 1);
        assert_eq!(answer(&vec![0; MAX_QUERY + 1], &zone()), None);
    }

    proptest! {
        /// Any datagram: no panic, and a reply (when there is one) carries the query's id, is
        /// marked a reply, and is never larger than the query plus one answer record.
        #[test]
        fn any_datagram_is_answered_safely(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            if let Some(r) = answer(&bytes, &zone()) {
                prop_assert_eq!(&r[..2], &bytes[..2]);
                prop_assert!(r[2] & 0x80 != 0);
                prop_assert!(r.len() <= bytes.len() + 16);
            }
        }

        /// Every name of the zone, in any letter case, resolves to its address.
        #[test]
        fn every_known_name_resolves_in_any_case(upper in any::<bool>(), which in 0usize..2, id in any::<u16>()) {
            let z = zone();
            let (host, address) = &z.hosts[which];
            let mut name = format!("{host}.lab");
            if upper { name = name.to_uppercase(); }
            let r = answer(&query(id, &name, TYPE_A), &z).unwrap();
            prop_assert_eq!(rcode(&r), 0);
            prop_assert_eq!(&r[r.len() - 4..], &address.octets()[..]);
        }
    }
}
