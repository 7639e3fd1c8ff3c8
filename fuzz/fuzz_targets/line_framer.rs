//! The line framer under hostile input: never a panic, never a line over the cap, never more than
//! the cap (plus a CR) held between reads.
#![no_main]

use std::ops::ControlFlow;

use jaring_proto::line::LineFramer;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|chunks: Vec<Vec<u8>>| {
    let mut framer = LineFramer::new(32);
    for chunk in &chunks {
        framer.feed(chunk, |line| {
            if let Ok(line) = line {
                assert!(line.len() <= 32);
                assert!(!line.contains(&b'\n'));
            }
            ControlFlow::Continue(())
        });
        assert!(framer.pending() <= 33);
    }
});
