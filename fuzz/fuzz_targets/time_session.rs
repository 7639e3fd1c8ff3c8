//! Any bytes, split anywhere, into a TIME session: never a panic, every reply a whole JAM or ERR
//! line, and the replies independent of where the stream was split.
#![no_main]

use jaring_proto::Flow;
use jaring_proto::time::{Hms, TimeSession};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (Vec<u8>, Vec<u8>)| {
    let (cuts, data) = input;
    let mut clock = Hms { hour: 1, minute: 2, second: 3 };

    let mut whole = TimeSession::new(64);
    let mut expected = Vec::new();
    let expected_flow = whole.handle_input(&data, &mut clock, &mut expected);

    let mut split = TimeSession::new(64);
    let mut got = Vec::new();
    let mut flow = Flow::Continue;
    let mut rest = &data[..];
    for &c in &cuts {
        let at = usize::from(c).min(rest.len());
        let (head, tail) = rest.split_at(at);
        flow = split.handle_input(head, &mut clock, &mut got);
        rest = tail;
    }
    flow = match (flow, split.handle_input(rest, &mut clock, &mut got)) {
        (Flow::Close, _) | (_, Flow::Close) => Flow::Close,
        _ => Flow::Continue,
    };
    assert_eq!(got, expected);
    assert_eq!(flow, expected_flow);
    for line in got.split_inclusive(|&b| b == b'\n') {
        assert!(line.ends_with(b"\r\n"));
        assert!(line.starts_with(b"JAM ") || line.starts_with(b"ERR "));
    }
});
