//! The little of HTTP/1.1 the web port needs, sans-IO: a bounded request-head parser and the
//! WebSocket handshake's accept key (RFC 6455 §4.2.2).
//!
//! The web port serves a handful of GET routes and the WebSocket upgrade; it never takes a request
//! body. So the parser reads only the head (request line and header fields, up to the empty line),
//! refuses anything over [`DEFAULT_MAX_HEAD`] bytes or [`DEFAULT_MAX_HEADERS`] fields, and is
//! strict: lines end with CR LF, a bare CR or LF, a folded header line or a control character is
//! an error rather than something to guess at (request smuggling lives in such guesses).

use base64::Engine as _;
use sha1::{Digest as _, Sha1};

/// Bytes a request head (request line, header fields and the empty line) may take. Browsers send
/// well under 2 KiB; 8 KiB is what common servers allow.
pub const DEFAULT_MAX_HEAD: usize = 8 * 1024;

/// Header fields a request may carry.
pub const DEFAULT_MAX_HEADERS: usize = 64;

/// What ends a request head.
pub const HEAD_END: &[u8] = b"\r\n\r\n";

/// The GUID RFC 6455 appends to the client's key before hashing it.
pub const WEBSOCKET_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Why a request head cannot be served; its `Display` is the sentence for the 400 reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    /// The head is longer than the limit (or has no end within it).
    #[error("request head over {limit} bytes; send a shorter one")]
    TooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// More header fields than the limit.
    #[error("more than {limit} header fields; send fewer")]
    TooManyHeaders {
        /// The limit.
        limit: usize,
    },
    /// Not HTTP/1.0 or HTTP/1.1.
    #[error("only HTTP/1.1 (and 1.0) is served here")]
    Version,
    /// Not a well-formed request head; says which part.
    #[error("malformed request: {0}")]
    Malformed(&'static str),
}

/// A parsed request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The method, as sent (methods are case-sensitive).
    pub method: String,
    /// The request target, as sent (origin form: `/path?query`, or `*`).
    pub target: String,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    /// The header fields in order: name as sent, value without surrounding spaces.
    pub headers: Vec<(String, String)>,
}

impl Request {
    /// The target's path: without its query.
    pub fn path(&self) -> &str {
        self.target
            .split_once('?')
            .map_or(self.target.as_str(), |(p, _)| p)
    }

    /// The value of the first field named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// How many fields are named `name` (a repeated `Host` or `Origin` is suspicious).
    pub fn count(&self, name: &str) -> usize {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .count()
    }

    /// Whether any field named `name` lists `token` in its comma-separated value
    /// (case-insensitive), as `Connection: keep-alive, Upgrade` lists `upgrade`.
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .flat_map(|(_, v)| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }

    /// Whether the client wants the connection kept open after the response: HTTP/1.1 unless it
    /// says `Connection: close`; HTTP/1.0 only if it says `keep-alive`.
    pub fn keep_alive(&self) -> bool {
        if self.minor_version == 0 {
            self.has_token("connection", "keep-alive")
        } else {
            !self.has_token("connection", "close")
        }
    }
}

/// Where the head in `buf` ends (the index just past its empty line), if it has arrived.
pub fn head_len(buf: &[u8]) -> Option<usize> {
    memchr::memmem::find(buf, HEAD_END).map(|i| i + HEAD_END.len())
}

/// Parses the request head at the start of `buf`: `Ok(None)` while it has not all arrived (read
/// more), `Ok(Some((request, len)))` with the head's length in bytes (what follows is the next
/// request, or WebSocket frames), or why it cannot be served. Never reads past `max_head` bytes.
pub fn parse_head(
    buf: &[u8],
    max_head: usize,
    max_headers: usize,
) -> Result<Option<(Request, usize)>, HeadError> {
    let window = &buf[..buf.len().min(max_head)];
    let Some(len) = head_len(window) else {
        return if buf.len() >= max_head {
            Err(HeadError::TooLarge { limit: max_head })
        } else {
            Ok(None)
        };
    };
    // Up to and including the last line's CR: every line then ends with CR before its LF split.
    let text = &window[..len - 3];
    let mut lines = text.split(|&b| b == b'\n').map(|l| {
        l.strip_suffix(b"\r")
            .ok_or(HeadError::Malformed("a line ends without CR LF"))
    });
    let first = lines
        .next()
        .ok_or(HeadError::Malformed("no request line"))??;
    let (method, target, minor_version) = request_line(first)?;
    let mut headers = Vec::new();
    for line in lines {
        let line = line?;
        if headers.len() == max_headers {
            return Err(HeadError::TooManyHeaders { limit: max_headers });
        }
        headers.push(header_line(line)?);
    }
    Ok(Some((
        Request {
            method,
            target,
            minor_version,
            headers,
        },
        len,
    )))
}

/// RFC 9110's `tchar`: what a method or a field name is made of.
fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn request_line(line: &[u8]) -> Result<(String, String, u8), HeadError> {
    let mut parts = line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(HeadError::Malformed(
            "the request line is not METHOD TARGET HTTP/1.1",
        ));
    };
    if method.is_empty() || !method.iter().copied().all(is_token_char) {
        return Err(HeadError::Malformed("the method is not a token"));
    }
    let origin_form = target.first() == Some(&b'/');
    if !(origin_form || target == b"*") || !target.iter().all(|&b| b.is_ascii_graphic()) {
        return Err(HeadError::Malformed(
            "the target is not a path starting with /",
        ));
    }
    let minor = match version {
        b"HTTP/1.1" => 1,
        b"HTTP/1.0" => 0,
        v if v.starts_with(b"HTTP/") => return Err(HeadError::Version),
        _ => return Err(HeadError::Malformed("no HTTP version")),
    };
    // Both checked to be ASCII above.
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    Ok((text(method), text(target), minor))
}

fn header_line(line: &[u8]) -> Result<(String, String), HeadError> {
    if matches!(line.first(), Some(b' ' | b'\t')) {
        return Err(HeadError::Malformed("folded header lines are not accepted"));
    }
    let colon =
        memchr::memchr(b':', line).ok_or(HeadError::Malformed("a header line has no colon"))?;
    let (name, value) = (&line[..colon], &line[colon + 1..]);
    if name.is_empty() || !name.iter().copied().all(is_token_char) {
        return Err(HeadError::Malformed("a header name is not a token"));
    }
    let value = value.trim_ascii();
    if value.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        return Err(HeadError::Malformed(
            "a header value holds a control character",
        ));
    }
    let value = std::str::from_utf8(value)
        .map_err(|_| HeadError::Malformed("a header value is not UTF-8"))?;
    Ok((String::from_utf8_lossy(name).into_owned(), value.to_owned()))
}

/// Whether `key` is a valid `Sec-WebSocket-Key`: base64 of 16 bytes.
pub fn valid_websocket_key(key: &str) -> bool {
    base64::engine::general_purpose::STANDARD
        .decode(key)
        .is_ok_and(|k| k.len() == 16)
}

/// The `Sec-WebSocket-Accept` value answering `key`: base64(SHA-1(key + GUID)).
pub fn websocket_accept(key: &str) -> String {
    let mut sha = Sha1::new();
    sha.update(key.as_bytes());
    sha.update(WEBSOCKET_GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(sha.finalize())
}

/// The reason phrase for the status codes the web port sends.
pub fn reason(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        426 => "Upgrade Required",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Option<(Request, usize)>, HeadError> {
        parse_head(s.as_bytes(), DEFAULT_MAX_HEAD, DEFAULT_MAX_HEADERS)
    }

    #[test]
    fn the_rfc_example_key_gives_the_rfc_accept() {
        // RFC 6455 §1.3.
        assert_eq!(
            websocket_accept("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert!(valid_websocket_key("dGhlIHNhbXBsZSBub25jZQ=="));
        assert!(!valid_websocket_key("short"));
        assert!(!valid_websocket_key("dGhlIHNhbXBsZSBub25jZQ"));
    }

    #[test]
    fn a_websocket_upgrade_parses() {
        let head = "GET /ws/realm1?x=1 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\
                    Upgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n\
                    Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
                    Sec-WebSocket-Version: 13\r\nOrigin: http://127.0.0.1:8080\r\n\r\nFRAME";
        let (req, len) = parse(head).unwrap().unwrap();
        assert_eq!(&head[len..], "FRAME");
        assert_eq!(req.method, "GET");
        assert_eq!(req.path(), "/ws/realm1");
        assert_eq!(req.minor_version, 1);
        assert_eq!(req.header("host"), Some("127.0.0.1:8080"));
        assert_eq!(req.header("ORIGIN"), Some("http://127.0.0.1:8080"));
        assert!(req.has_token("connection", "upgrade"));
        assert!(req.has_token("upgrade", "WebSocket"));
        assert!(req.keep_alive());
        assert_eq!(req.count("host"), 1);
    }

    #[test]
    fn an_unfinished_head_asks_for_more_and_a_long_one_is_refused() {
        assert_eq!(parse("GET / HTTP/1.1\r\nHost: x\r\n"), Ok(None));
        let long = format!("GET / HTTP/1.1\r\nX: {}\r\n", "a".repeat(DEFAULT_MAX_HEAD));
        assert_eq!(
            parse(&long),
            Err(HeadError::TooLarge {
                limit: DEFAULT_MAX_HEAD
            })
        );
        // Complete, but past the limit.
        let long = format!("{long}\r\n");
        assert!(matches!(parse(&long), Err(HeadError::TooLarge { .. })));
    }

    #[test]
    fn too_many_headers_are_refused() {
        let mut head = "GET / HTTP/1.1\r\n".to_owned();
        for i in 0..=DEFAULT_MAX_HEADERS {
            head.push_str(&format!("X-{i}: y\r\n"));
        }
        head.push_str("\r\n");
        assert_eq!(
            parse(&head),
            Err(HeadError::TooManyHeaders {
                limit: DEFAULT_MAX_HEADERS
            })
        );
    }

    #[test]
    fn malformed_heads_say_why() {
        for bad in [
            "GET / HTTP/1.1\nHost: x\r\n\r\n",
            "GET /  HTTP/1.1\r\n\r\n",
            "GET http://x/ HTTP/1.1\r\n\r\n",
            "G(T / HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nHost x\r\n\r\n",
            "GET / HTTP/1.1\r\n folded\r\n\r\n",
            "GET / HTTP/1.1\r\nX: a\x01b\r\n\r\n",
            "GET / HTTP/1.1\r\nX y: z\r\n\r\n",
            "GET / FTP\r\n\r\n",
        ] {
            assert!(
                matches!(parse(bad), Err(HeadError::Malformed(_))),
                "{bad:?}: {:?}",
                parse(bad)
            );
        }
        assert_eq!(parse("GET / HTTP/2.0\r\n\r\n"), Err(HeadError::Version));
    }

    #[test]
    fn keep_alive_follows_the_version_and_connection() {
        let ka = |s: &str| parse(s).unwrap().unwrap().0.keep_alive();
        assert!(ka("GET / HTTP/1.1\r\n\r\n"));
        assert!(!ka("GET / HTTP/1.1\r\nConnection: close\r\n\r\n"));
        assert!(!ka("GET / HTTP/1.0\r\n\r\n"));
        assert!(ka("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"));
    }

    proptest::proptest! {
        #[test]
        fn the_parser_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512),
                                   max in 0usize..600, headers in 0usize..8) {
            let _ = parse_head(&bytes, max, headers);
        }

        #[test]
        fn heads_made_of_plausible_pieces_never_panic(
            line in "[A-Z]{0,4} [/a-z?=]{0,6} HTTP/1\\.[0-2]",
            fields in proptest::collection::vec("[A-Za-z: \t\r\n-]{0,12}", 0..6),
        ) {
            let head = format!("{line}\r\n{}\r\n\r\n", fields.join("\r\n"));
            if let Ok(Some((req, len))) = parse_head(head.as_bytes(), DEFAULT_MAX_HEAD, 4) {
                proptest::prop_assert!(len <= head.len());
                proptest::prop_assert!(req.headers.len() <= 4);
            }
        }
    }
}
