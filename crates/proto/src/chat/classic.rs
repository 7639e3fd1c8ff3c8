//! The classic two-realm lab client's group mode: raw text both ways instead of lines and JSON.
//!
//! That client sends `group TOKEN NAME origin`, then each thing its user types as one `sendall`
//! with no line end, and a bare `exit` to stop; it prints whatever each `recv(1024)` returns until
//! one returns exactly `exit`, then reads one framed JSON reply. Its server answered with raw text:
//! `<user> telah bergabung` when someone joined, `<user>: <text>` for each post, `<user>
//! meninggalkan group` when someone left, `exit` in a write of its own, then
//! `{"status": "OK", "message": "Telah keluar dari grup NAME"}` as `json.dumps` writes it.
//!
//! This module is that mode's sans-IO part: [`ClassicChunker`] turns the byte stream into posts
//! (the server adds the quiet pause that ends a chunk), and the renderers write the raw text and
//! the final reply.

use std::collections::VecDeque;

use crate::chat::REPLY_END;
use crate::chat::event::Event;
use crate::chat::reply::{Plain, Status};
use crate::chat::session::{LiveLine, parse_live};

/// What the server writes, alone, to end the client's group mode.
pub const EXIT_ACK: &[u8] = b"exit";

/// Splits a classic client's byte stream into posts.
///
/// A post ends where the client paused (the server calls [`ClassicChunker::end_chunk`] after a
/// quiet moment), at a line end (for `nc` and other line-based tools), or after `max` bytes (cut
/// at a character boundary): a peer that never pauses costs at most `max` bytes of buffer, and its
/// stream is posted in pieces of at most `max` bytes.
#[derive(Debug)]
pub struct ClassicChunker {
    partial: Vec<u8>,
    posts: VecDeque<Vec<u8>>,
    max: usize,
}

impl ClassicChunker {
    /// A chunker whose posts are at most `max` bytes (at least 4, room for any character).
    pub fn new(max: usize) -> Self {
        Self {
            partial: Vec::new(),
            posts: VecDeque::new(),
            max: max.max(4),
        }
    }

    /// Takes bytes from the client.
    pub fn feed(&mut self, mut input: &[u8]) {
        while let Some(end) = memchr::memchr(b'\n', input) {
            self.push_partial(&input[..end]);
            self.end_chunk();
            input = &input[end + 1..];
        }
        self.push_partial(input);
    }

    fn push_partial(&mut self, mut input: &[u8]) {
        while !input.is_empty() {
            let room = self.max - self.partial.len();
            let take = room.min(input.len());
            self.partial.extend_from_slice(&input[..take]);
            input = &input[take..];
            if self.partial.len() == self.max {
                self.cut();
            }
        }
    }

    /// A full chunk: post it up to its last character boundary; the rest starts the next one.
    fn cut(&mut self) {
        // Only a character cut at the end is carried over (`max` ≥ 4 leaves at least one whole
        // character before it); text that is not UTF-8 is cut where it is.
        let at = match std::str::from_utf8(&self.partial) {
            Err(e) if e.error_len().is_none() && e.valid_up_to() > 0 => e.valid_up_to(),
            _ => self.partial.len(),
        };
        let rest = self.partial.split_off(at);
        let post = std::mem::replace(&mut self.partial, rest);
        self.posts.push_back(post);
    }

    /// The client paused (or the stream ended): what it sent since the last post is one post.
    pub fn end_chunk(&mut self) {
        let mut post = std::mem::take(&mut self.partial);
        if post.last() == Some(&b'\r') {
            post.pop();
        }
        if !post.is_empty() {
            self.posts.push_back(post);
        }
    }

    /// Whether bytes wait for the end of their chunk.
    pub fn has_partial(&self) -> bool {
        !self.partial.is_empty()
    }

    /// The next complete post: a message, `exit`, an empty chunk, or text that is not UTF-8.
    pub fn poll(&mut self) -> Option<LiveLine> {
        self.posts.pop_front().map(|p| parse_live(&p))
    }
}

/// Appends the raw text the classic client prints for `event`: `<user>: <text>`,
/// `<user> telah bergabung`, `<user> meninggalkan group` (an `end` is not printed: the server ends
/// the mode with [`EXIT_ACK`] and [`encode_final`]). Events after the first in one write are
/// separated by a line end, so that the client, which prints each read, shows one per line.
pub fn render_event(event: &Event, out: &mut Vec<u8>) {
    let (who, what) = match event {
        Event::Message(m) => (&m.from, None),
        Event::Join(c) => (&c.user, Some(" telah bergabung")),
        Event::Leave(c) => (&c.user, Some(" meninggalkan group")),
        // Classic clients never watch; a live session's end is written the lab's way.
        Event::End(_) | Event::Private(_) | Event::WatchEnd(_) | Event::Closing(_) => return,
    };
    if !out.is_empty() {
        out.push(b'\n');
    }
    out.extend_from_slice(who.as_bytes());
    match (event, what) {
        (Event::Message(m), _) => {
            out.extend_from_slice(b": ");
            out.extend_from_slice(m.msg.as_bytes());
        }
        (_, Some(what)) => out.extend_from_slice(what.as_bytes()),
        _ => {}
    }
}

/// Appends the reply that ends the group mode, after [`EXIT_ACK`], as the lab's server wrote it:
/// `json.dumps` layout (`{"status": "OK", "message": "…"}`), then `\r\n\r\n`.
pub fn encode_final(status: Status, message: String, out: &mut Vec<u8>) {
    // Serialising a struct of two strings into a Vec cannot fail.
    let _ = crate::chat::ascii::to_python_writer(&Plain { status, message }, out);
    out.extend_from_slice(REPLY_END);
}

/// The message of the final OK after `exit`.
pub fn left_message(group: &str) -> String {
    format!("Telah keluar dari grup {group}")
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::chat::event::{GroupMessage, MemberChange};

    fn drain(c: &mut ClassicChunker) -> Vec<LiveLine> {
        std::iter::from_fn(|| c.poll()).collect()
    }

    #[test]
    fn a_chunk_is_a_post_once_the_client_pauses() {
        let mut c = ClassicChunker::new(64);
        c.feed(b"hello ");
        c.feed(b"there");
        assert!(drain(&mut c).is_empty(), "no pause yet");
        assert!(c.has_partial());
        c.end_chunk();
        c.feed(b"exit");
        c.end_chunk();
        assert_eq!(
            drain(&mut c),
            [LiveLine::Message("hello there".into()), LiveLine::Exit]
        );
        // Line ends end posts too (nc), and an empty chunk sends nothing.
        c.feed(b"one\r\ntwo\n\r\n");
        assert_eq!(
            drain(&mut c),
            [
                LiveLine::Message("one".into()),
                LiveLine::Message("two".into())
            ]
        );
        c.end_chunk();
        assert!(drain(&mut c).is_empty());
    }

    #[test]
    fn a_stream_without_pauses_is_cut_at_max_on_character_boundaries() {
        let mut c = ClassicChunker::new(8);
        // "é" is 2 bytes: 3 ASCII + 2×é = 7, the next é would cross 8.
        c.feed("abcééé".as_bytes());
        c.feed(b"xyz");
        c.end_chunk();
        let got = drain(&mut c);
        assert_eq!(
            got,
            [
                LiveLine::Message("abcéé".into()),
                LiveLine::Message("éxyz".into())
            ]
        );
    }

    #[test]
    fn events_render_as_the_lab_server_wrote_them() {
        let change = MemberChange {
            group: "g".into(),
            user: "henderson".into(),
            display_name: "Jordan Henderson".into(),
        };
        let mut out = Vec::new();
        render_event(&Event::Join(change.clone()), &mut out);
        render_event(
            &Event::Message(GroupMessage {
                group: "g".into(),
                seq: 1,
                id: "x".into(),
                from: "messi".into(),
                msg_from: "Lionel Messi".into(),
                msg: "hola é".into(),
                sent_at: 0,
            }),
            &mut out,
        );
        render_event(&Event::Leave(change), &mut out);
        assert_eq!(
            String::from_utf8(out).expect("utf-8"),
            "henderson telah bergabung\nmessi: hola é\nhenderson meninggalkan group"
        );
        let mut out = Vec::new();
        encode_final(Status::Ok, left_message("football"), &mut out);
        assert_eq!(
            out,
            b"{\"status\": \"OK\", \"message\": \"Telah keluar dari grup football\"}\r\n\r\n"
        );
    }

    proptest! {
        /// However the stream is cut, posts never exceed `max` bytes, and between pauses the text
        /// comes out whole and in order.
        #[test]
        fn posts_are_bounded_and_lose_nothing(
            text in "[a-z\u{e9}\u{65e5}\u{1f600} ]{0,200}",
            cuts in proptest::collection::vec(0usize..800, 0..6),
            max in 4usize..40,
        ) {
            let bytes = text.as_bytes();
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(bytes.len())).collect();
            cuts.sort_unstable();
            let mut c = ClassicChunker::new(max);
            let mut start = 0;
            for cut in cuts.into_iter().chain([bytes.len()]) {
                c.feed(&bytes[start..cut]);
                start = cut;
            }
            c.end_chunk();
            let mut joined = String::new();
            while let Some(post) = c.posts.pop_front() {
                prop_assert!(post.len() <= max);
                joined.push_str(std::str::from_utf8(&post).expect("cut on a boundary"));
            }
            prop_assert_eq!(joined, text);
        }
    }
}
