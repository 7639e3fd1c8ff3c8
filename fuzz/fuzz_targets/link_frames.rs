//! The federation link's framer under hostile input (it reads the handshake from anyone who
//! connects to the server-to-server port): never a panic, and every frame it accepts encodes back
//! to a line that decodes to the same frame. Raw bytes, so docs/federation.md's example frames
//! make a seed corpus as they are; the first byte picks where the input is split between two
//! reads.
#![no_main]

use jaring_proto::federation::LinkFramer;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let (first, second) = rest.split_at(usize::from(split).min(rest.len()));
    let mut framer = LinkFramer::new(1024);
    let mut frames = Vec::new();
    if framer.feed(first, &mut frames).is_ok() {
        let _ = framer.feed(second, &mut frames);
    }
    for frame in frames {
        let mut line = Vec::new();
        frame.encode(&mut line);
        let mut again = Vec::new();
        LinkFramer::new(1 << 20)
            .feed(&line, &mut again)
            .expect("an encoded frame decodes");
        assert_eq!(again, [frame]);
    }
});
