//! The chat session (what a client's bytes become) under hostile input, in command and in live
//! mode: never a panic; a line over the cap is reported once and nothing after it is queued.
#![no_main]

use jaring_proto::chat::{ChatSession, Request};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|chunks: Vec<(bool, Vec<u8>)>| {
    let mut session = ChatSession::new(64);
    let mut too_long = 0;
    for (live, chunk) in &chunks {
        // The server switches modes between reads (a `group` OK, an `exit`).
        if *live {
            session.enter_live();
        } else {
            session.leave_live();
        }
        session.handle_input(chunk);
        while let Some(request) = session.poll_request() {
            match request {
                Request::TooLong(_) => too_long += 1,
                Request::Live(_) => assert!(*live),
                Request::Command(_) | Request::Invalid(_) => assert!(!*live),
            }
        }
        if too_long > 0 {
            assert!(session.is_closed());
        }
    }
    assert!(too_long <= 1, "a connection hears of one over-long line, then closes");
});
