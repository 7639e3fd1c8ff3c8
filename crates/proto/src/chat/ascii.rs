//! [`AsciiFormatter`]: compact JSON with every non-ASCII character escaped, as Python's
//! `json.dumps` does by default (`ensure_ascii=True`).
//!
//! The classic lab client reads replies 64 bytes at a time and decodes each piece on its own, so a
//! multi-byte UTF-8 character cut by a read boundary makes it fail and drop the connection (and the
//! inbox it was reading is lost with it). Pure ASCII can be cut anywhere. The lab's own server never
//! sent anything else, because `json.dumps` escapes non-ASCII as `\uXXXX`; every reply and event
//! of the client port is written through this formatter so jaring's bytes are the same. Parsed, the
//! JSON holds exactly the original text, so storage and JSON clients see no difference.

use std::io::{self, Write};

use serde_json::ser::Formatter;

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Compact JSON (the [`Formatter`] defaults, as `serde_json::to_writer` writes) whose strings hold only ASCII: a character outside
/// U+0020–U+007E that is not already escaped is written `\uXXXX` (lower-case hex; a UTF-16
/// surrogate pair above U+FFFF), exactly as Python's `json.dumps(ensure_ascii=True)` writes it.
#[derive(Debug, Clone, Copy, Default)]
pub struct AsciiFormatter;

/// Appends `\uXXXX` for one UTF-16 code unit.
fn push_unit(out: &mut [u8; 12], at: usize, unit: u16) -> usize {
    out[at] = b'\\';
    out[at + 1] = b'u';
    for (i, shift) in [12u16, 8, 4, 0].into_iter().enumerate() {
        out[at + 2 + i] = HEX[usize::from((unit >> shift) & 0xf)];
    }
    at + 6
}

impl Formatter for AsciiFormatter {
    fn write_string_fragment<W: ?Sized + Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        let bytes = fragment.as_bytes();
        // The common case, plain ASCII text, costs one scan and one write. DEL (0x7f) is ASCII but
        // Python escapes it too.
        if bytes.is_ascii() && memchr::memchr(0x7f, bytes).is_none() {
            return writer.write_all(bytes);
        }
        let mut start = 0;
        for (i, c) in fragment.char_indices() {
            if c.is_ascii() && c != '\x7f' {
                continue;
            }
            // Runs of plain ASCII between escapes go out in one write each.
            writer.write_all(&bytes[start..i])?;
            start = i + c.len_utf8();
            let mut units = [0u16; 2];
            let mut buf = [0u8; 12];
            let mut len = 0;
            for unit in c.encode_utf16(&mut units) {
                len = push_unit(&mut buf, len, *unit);
            }
            writer.write_all(&buf[..len])?;
        }
        writer.write_all(&bytes[start..])
    }
}

/// [`AsciiFormatter`] with the separators of Python's `json.dumps` defaults: `", "` between
/// items and `": "` after a key, all on one line (`{"status": "OK", "message": "…"}`), for the
/// replies the classic client's group mode expects byte for byte.
#[derive(Debug, Clone, Copy, Default)]
pub struct PythonFormatter;

impl Formatter for PythonFormatter {
    fn begin_array_value<W: ?Sized + Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> io::Result<()> {
        if first {
            Ok(())
        } else {
            writer.write_all(b", ")
        }
    }

    fn begin_object_key<W: ?Sized + Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> io::Result<()> {
        if first {
            Ok(())
        } else {
            writer.write_all(b", ")
        }
    }

    fn begin_object_value<W: ?Sized + Write>(&mut self, writer: &mut W) -> io::Result<()> {
        writer.write_all(b": ")
    }

    fn write_string_fragment<W: ?Sized + Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        AsciiFormatter.write_string_fragment(writer, fragment)
    }
}

/// Appends `value` as Python's `json.dumps(value)` would write it (see [`PythonFormatter`]).
pub fn to_python_writer<T: serde::Serialize + ?Sized>(
    value: &T,
    out: &mut Vec<u8>,
) -> serde_json::Result<()> {
    let mut ser = serde_json::Serializer::with_formatter(out, PythonFormatter);
    value.serialize(&mut ser)
}

/// Appends `value` as compact, pure-ASCII JSON (see [`AsciiFormatter`]).
pub fn to_ascii_writer<T: serde::Serialize + ?Sized>(
    value: &T,
    out: &mut Vec<u8>,
) -> serde_json::Result<()> {
    let mut ser = serde_json::Serializer::with_formatter(out, AsciiFormatter);
    value.serialize(&mut ser)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn ascii_json(s: &str) -> String {
        let mut out = Vec::new();
        to_ascii_writer(s, &mut out).expect("a string serialises");
        String::from_utf8(out).expect("ascii is utf-8")
    }

    #[test]
    fn matches_python_json_dumps() {
        // The right-hand sides are what `python3 -c 'import json; print(json.dumps(s))'` prints.
        for (text, python) in [
            ("plain", r#""plain""#),
            ("é", r#""\u00e9""#),
            ("日本", r#""\u65e5\u672c""#),
            ("😀", r#""\ud83d\ude00""#),
            ("a\x7fb", r#""a\u007fb""#),
            ("\x00\x1f\n\t\"\\/", r#""\u0000\u001f\n\t\"\\/""#),
            ("mixed é and 😀 ok", r#""mixed \u00e9 and \ud83d\ude00 ok""#),
        ] {
            assert_eq!(ascii_json(text), python, "{text:?}");
        }
    }

    #[test]
    fn objects_stay_compact() {
        let mut out = Vec::new();
        to_ascii_writer(&serde_json::json!({"msg": "café"}), &mut out).expect("serialises");
        assert_eq!(out, br#"{"msg":"caf\u00e9"}"#);
    }

    #[test]
    fn python_layout_matches_json_dumps() {
        #[derive(serde::Serialize)]
        struct Reply {
            status: &'static str,
            message: &'static str,
            list: [u8; 2],
        }
        // What `json.dumps({"status": "OK", "message": "déjà", "list": [1, 2]})` prints.
        let mut out = Vec::new();
        let reply = Reply {
            status: "OK",
            message: "d\u{e9}j\u{e0}",
            list: [1, 2],
        };
        to_python_writer(&reply, &mut out).expect("serialises");
        assert_eq!(
            String::from_utf8(out).expect("ascii"),
            r#"{"status": "OK", "message": "d\u00e9j\u00e0", "list": [1, 2]}"#
        );
    }

    proptest! {
        /// Any text comes out as pure ASCII and parses back to itself.
        #[test]
        fn any_string_round_trips_as_ascii(text in any::<String>()) {
            let json = ascii_json(&text);
            prop_assert!(json.bytes().all(|b| (0x20..0x7f).contains(&b)), "{}", json);
            let back: String = serde_json::from_str(&json).expect("valid JSON");
            prop_assert_eq!(back, text);
        }
    }
}
