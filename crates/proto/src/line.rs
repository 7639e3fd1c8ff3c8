//! A bounded, zero-copy line framer for line-oriented protocols.
//!
//! TCP is a stream, so a line may arrive in pieces and several lines may arrive in one read. The framer
//! keeps the unfinished tail between reads and hands complete lines to a callback, borrowing straight
//! from the input whenever a line arrived whole (the common case), copying only a tail that spans reads.
//!
//! A line ends at LF; one CR right before the LF is removed, so both `CR LF` (what the protocols
//! specify) and a bare `LF` (what `nc` without `-C` sends) end a line. The length cap is checked before
//! anything is buffered: a peer that never sends a newline costs at most `max_len` bytes, and the
//! framer reports [`TooLong`] as soon as the cap is passed rather than after the line finally ends.

use std::ops::ControlFlow;

/// A line passed the framer's length cap; the stream cannot be resynchronised cheaply, so callers
/// reply with an error and close.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("line longer than {max} bytes")]
pub struct TooLong {
    /// The cap that was passed, in bytes, not counting the line ending.
    pub max: usize,
}

/// Splits a byte stream into lines of at most `max_len` bytes (line ending excluded).
#[derive(Debug)]
pub struct LineFramer {
    partial: Vec<u8>,
    max_len: usize,
    failed: bool,
}

impl LineFramer {
    /// A framer that accepts lines of up to `max_len` bytes, not counting the CR LF.
    pub fn new(max_len: usize) -> Self {
        Self {
            partial: Vec::new(),
            max_len,
            failed: false,
        }
    }

    /// The length cap this framer enforces.
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Bytes of an unfinished line held since the last call.
    pub fn pending(&self) -> usize {
        self.partial.len()
    }

    /// Takes the bytes of the unfinished line held (for a caller that stops framing lines, such as
    /// a mode that reads raw chunks).
    pub fn take_partial(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.partial)
    }

    /// Feeds `input` and calls `on_line` with each complete line, in order, without its line ending.
    ///
    /// Once the callback returns `Break`, the rest of `input` is dropped: the caller is closing the
    /// connection. After a [`TooLong`] the framer yields nothing more.
    pub fn feed(
        &mut self,
        mut input: &[u8],
        mut on_line: impl FnMut(Result<&[u8], TooLong>) -> ControlFlow<()>,
    ) {
        if self.failed {
            return;
        }
        if !self.partial.is_empty() {
            // Finish the line that spans reads, checking the cap before copying anything.
            match memchr::memchr(b'\n', input) {
                Some(end) => {
                    if self.partial.len() + end > self.max_len + 1 {
                        return self.fail(&mut on_line);
                    }
                    self.partial.extend_from_slice(&input[..end]);
                    input = &input[end + 1..];
                    let line = std::mem::take(&mut self.partial);
                    let flow = on_line(self.check(&line));
                    // Keep the allocation: a peer that splits lines will likely do it again.
                    self.partial = line;
                    self.partial.clear();
                    if flow.is_break() {
                        return;
                    }
                }
                None => {
                    if self.partial.len() + input.len() > self.max_len + 1 {
                        return self.fail(&mut on_line);
                    }
                    self.partial.extend_from_slice(input);
                    return;
                }
            }
        }
        for piece in memchr::memchr_iter(b'\n', input).scan(0, |start, end| {
            let piece = &input[*start..end];
            *start = end + 1;
            Some(piece)
        }) {
            if on_line(self.check(piece)).is_break() {
                return;
            }
            if self.failed {
                return;
            }
        }
        let tail = match memchr::memrchr(b'\n', input) {
            Some(end) => &input[end + 1..],
            None => input,
        };
        // One byte of slack lets a CR wait for its LF without counting against the line.
        if tail.len() > self.max_len + 1 {
            return self.fail(&mut on_line);
        }
        self.partial.extend_from_slice(tail);
    }

    fn check<'a>(&mut self, raw: &'a [u8]) -> Result<&'a [u8], TooLong> {
        let line = raw.strip_suffix(b"\r").unwrap_or(raw);
        if line.len() > self.max_len {
            self.failed = true;
            self.partial = Vec::new();
            return Err(TooLong { max: self.max_len });
        }
        Ok(line)
    }

    fn fail(&mut self, on_line: &mut impl FnMut(Result<&[u8], TooLong>) -> ControlFlow<()>) {
        self.failed = true;
        self.partial = Vec::new();
        let _ = on_line(Err(TooLong { max: self.max_len }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(framer: &mut LineFramer, chunks: &[&[u8]]) -> Vec<Result<Vec<u8>, TooLong>> {
        let mut got = Vec::new();
        for chunk in chunks {
            framer.feed(chunk, |line| {
                got.push(line.map(<[u8]>::to_vec));
                ControlFlow::Continue(())
            });
        }
        got
    }

    #[test]
    fn splits_crlf_and_bare_lf() {
        let mut f = LineFramer::new(16);
        let got = lines(&mut f, &[b"TIME\r\nQUIT\nx"]);
        assert_eq!(got, vec![Ok(b"TIME".to_vec()), Ok(b"QUIT".to_vec())]);
        assert_eq!(f.pending(), 1);
    }

    #[test]
    fn joins_a_line_split_across_reads() {
        let mut f = LineFramer::new(16);
        let got = lines(&mut f, &[b"TI", b"ME\r", b"\n"]);
        assert_eq!(got, vec![Ok(b"TIME".to_vec())]);
        assert_eq!(f.pending(), 0);
    }

    #[test]
    fn a_line_at_the_cap_passes_and_one_past_it_fails() {
        let mut f = LineFramer::new(4);
        assert_eq!(lines(&mut f, &[b"ABCD\r\n"]), vec![Ok(b"ABCD".to_vec())]);
        let mut f = LineFramer::new(4);
        assert_eq!(
            lines(&mut f, &[b"ABCDE\r\n"]),
            vec![Err(TooLong { max: 4 })]
        );
    }

    #[test]
    fn an_endless_line_fails_before_its_end_arrives_and_buffers_at_most_the_cap() {
        let mut f = LineFramer::new(8);
        assert_eq!(lines(&mut f, &[b"AAAAAAAA"]), vec![]);
        assert!(f.pending() <= 9);
        assert_eq!(lines(&mut f, &[b"AA"]), vec![Err(TooLong { max: 8 })]);
        assert_eq!(f.pending(), 0);
        // Nothing more comes out of a failed framer.
        assert_eq!(lines(&mut f, &[b"TIME\r\n"]), vec![]);
    }

    #[test]
    fn a_split_line_that_grows_past_the_cap_fails() {
        let mut f = LineFramer::new(4);
        assert_eq!(
            lines(&mut f, &[b"ABC", b"DEF\r\n"]),
            vec![Err(TooLong { max: 4 })]
        );
    }

    #[test]
    fn break_drops_the_rest_of_the_input() {
        let mut f = LineFramer::new(16);
        let mut seen = 0;
        f.feed(b"A\nB\nC\n", |_| {
            seen += 1;
            ControlFlow::Break(())
        });
        assert_eq!(seen, 1);
    }
}
