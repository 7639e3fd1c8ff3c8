//! [`WebServer`]: the web port as a runtime [`Handler`]: the page, `/realms`, and `/ws/<realm>`.
//!
//! Being a `Handler`, the web port is admitted, limited, timed out and (with a certificate)
//! encrypted by the runtime's [`jaring_runtime::Server`] exactly as the chat port is. Per
//! connection it reads request heads (bounded by [`DEFAULT_MAX_HEAD`], within the line timeout
//! once one has started, the idle timeout between them), answers the page's routes with keep-alive,
//! and for `/ws` checks `Origin`, answers the handshake and hands the connection to the realm's chat
//! loop through a [`WsTransport`].

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use jaring_chat::ChatServer;
use jaring_chat::storage::Store;
use jaring_proto::http::{
    DEFAULT_MAX_HEAD, DEFAULT_MAX_HEADERS, HeadError, Request, parse_head, reason,
    valid_websocket_key, websocket_accept,
};
use jaring_runtime::driver::{linger_async, write_out};
use jaring_runtime::{Busy, Conn, End, Handler, Transport, Wait, Watch};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::runtime::Handle;
use tracing::debug;

use crate::assets;
use crate::lab::Board;
use crate::ws::WsTransport;

/// The Content-Security-Policy every response carries: the page's own script, style and
/// WebSocket, nothing inline, nothing from elsewhere, no framing. The chat page's adds its one
/// inlined stylesheet by hash ([`page`]).
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

/// The page's stylesheet link, which [`page`] replaces with the stylesheet itself.
const CSS_LINK: &str = r#"<link rel="stylesheet" href="/app.css">"#;

/// The chat page as served, and the CSP that goes with it: the stylesheet inlined, so the first
/// paint waits for no second request (measured in a cold headless Chromium: first contentful
/// paint median ~110 ms with the link, ~85 ms inline), and allowed by its SHA-256 alone
/// (`style-src 'self' 'sha256-…'`): no other inline style runs, and still no inline script.
pub fn page() -> (String, String) {
    use base64::Engine as _;
    use sha2::Digest as _;
    let hash =
        base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(assets::APP_CSS));
    let html =
        assets::INDEX_HTML.replacen(CSS_LINK, &format!("<style>{}</style>", assets::APP_CSS), 1);
    let csp = CSP.replacen(
        "style-src 'self'",
        &format!("style-src 'self' 'sha256-{hash}'"),
        1,
    );
    (html, csp)
}

/// A boxed future of a connection's end, as an endpoint returns it.
pub type Serving = Pin<Box<dyn Future<Output = End> + Send>>;

/// A realm's chat, as the web port serves it: one chat session per WebSocket connection.
/// Object-safe so one web port can serve realms of different storage types (the lab's two).
pub trait ChatEndpoint: Send + Sync + 'static {
    /// Runs the chat session of one connection on `ws` until it ends.
    fn serve_ws(self: Arc<Self>, ws: WsTransport<AnyTransport>, conn: Conn) -> Serving;
}

impl<S: Store> ChatEndpoint for ChatServer<S> {
    fn serve_ws(self: Arc<Self>, ws: WsTransport<AnyTransport>, conn: Conn) -> Serving {
        // The same loop as the TCP port's, on the WebSocket transport.
        Box::pin(Handler::serve_async(self, ws, conn))
    }
}

/// Any transport (plain TCP or TLS), boxed: what a [`ChatEndpoint`] runs on, so that it need not
/// be generic over the transport underneath.
pub struct AnyTransport(Box<dyn Transport>);

impl AnyTransport {
    /// Boxes `stream`.
    pub fn new<T: Transport>(stream: T) -> Self {
        Self(Box::new(stream))
    }
}

impl std::fmt::Debug for AnyTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("AnyTransport").field(&self.0.kind()).finish()
    }
}

impl AsyncRead for AnyTransport {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for AnyTransport {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_shutdown(cx)
    }
}

impl Transport for AnyTransport {
    fn poll_read_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.0.poll_read_ready(cx)
    }

    fn read_now(&mut self, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        self.0.read_now(buf)
    }

    fn write_now(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write_now(buf)
    }

    fn holds_output(&self) -> bool {
        self.0.holds_output()
    }

    fn tcp(&self) -> &TcpStream {
        self.0.tcp()
    }

    fn kind(&self) -> &'static str {
        self.0.kind()
    }
}

/// One realm the web port serves.
#[derive(Clone)]
pub struct WebRealm {
    /// Its name: the `<realm>` of `/ws/<realm>`.
    pub name: String,
    /// Its chat.
    pub endpoint: Arc<dyn ChatEndpoint>,
}

impl std::fmt::Debug for WebRealm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebRealm")
            .field("name", &self.name)
            .finish()
    }
}

/// The web port's settings.
#[derive(Debug, Clone)]
pub struct WebOptions {
    /// The realms served, the default (`/ws`) first.
    pub realms: Vec<WebRealm>,
    /// Origins besides the request's own that may open the WebSocket (`https://chat.example`).
    pub allowed_origins: Vec<String>,
    /// The chat's line limit: no WebSocket message may be longer.
    pub max_line: usize,
    /// A quiet WebSocket is pinged after this long ([`crate::ws::DEFAULT_PING_EVERY`]).
    pub ping_every: Duration,
    /// A pinged WebSocket that sends nothing for this long is dropped
    /// ([`crate::ws::DEFAULT_PONG_TIMEOUT`]).
    pub pong_timeout: Duration,
    /// What `/lab`, `/lab/stats` and `/metrics` show (empty: only the realms' own numbers,
    /// once the caller adds them).
    pub board: Board,
}

impl WebOptions {
    /// Serves `realms` (the first is `/ws`'s) with lines up to `max_line` bytes, no other
    /// origins, and the default liveness timers.
    pub fn new(realms: Vec<WebRealm>, max_line: usize) -> Self {
        Self {
            realms,
            allowed_origins: Vec::new(),
            max_line,
            ping_every: crate::ws::DEFAULT_PING_EVERY,
            pong_timeout: crate::ws::DEFAULT_PONG_TIMEOUT,
            board: Board::new(),
        }
    }
}

/// The web port as a runtime [`Handler`]. See the [module docs](self).
#[derive(Debug)]
pub struct WebServer {
    options: WebOptions,
    realms_json: String,
    /// `GET /` and its CSP ([`page`]).
    page: (String, String),
    handle: Handle,
}

impl WebServer {
    /// Serves `options`. Must be called within a tokio runtime (connection threads, under
    /// `--model threads`, block on its handle).
    pub fn new(options: WebOptions) -> Self {
        let names: Vec<&str> = options.realms.iter().map(|r| r.name.as_str()).collect();
        let realms_json = serde_json::json!({ "realms": names }).to_string();
        Self {
            options,
            realms_json,
            page: page(),
            handle: Handle::current(),
        }
    }

    /// The realm `/ws…` names: `/ws` the first, `/ws/<name>` that one.
    fn realm(&self, path: &str) -> Option<Option<&WebRealm>> {
        let rest = path.strip_prefix("/ws")?;
        let name = match rest {
            "" | "/" => return Some(self.options.realms.first()),
            r => r.strip_prefix('/')?,
        };
        Some(self.options.realms.iter().find(|r| r.name == name))
    }

    /// Whether a WebSocket may be opened from `origin` for a request to `host`: no Origin (not a
    /// browser), the page's own origin, or one the operator allowed.
    pub fn origin_allowed(&self, origin: Option<&str>, host: Option<&str>) -> bool {
        let Some(origin) = origin else {
            return true;
        };
        let same = host.is_some_and(|host| {
            ["http://", "https://"].iter().any(|scheme| {
                origin
                    .strip_prefix(scheme)
                    .is_some_and(|o| o.eq_ignore_ascii_case(host))
            })
        });
        same || self
            .options
            .allowed_origins
            .iter()
            .any(|a| a.trim_end_matches('/').eq_ignore_ascii_case(origin))
    }

    /// Answers one request into `out`; `Route::Upgrade` when it opens a WebSocket.
    fn route<'a>(&'a self, req: &Request, out: &mut Vec<u8>) -> Route<'a> {
        if req.method != "GET" {
            respond(
                out,
                405,
                &[("Allow", "GET")],
                "text/plain; charset=utf-8",
                b"only GET is served here\n",
            );
            return Route::Close;
        }
        // No route takes a body: one sent anyway would be read as the next request.
        if req.header("transfer-encoding").is_some()
            || req
                .header("content-length")
                .is_some_and(|l| l.trim() != "0")
        {
            respond(
                out,
                400,
                &[],
                "text/plain; charset=utf-8",
                b"no request here takes a body\n",
            );
            return Route::Close;
        }
        let path = req.path();
        if let Some(realm) = self.realm(path) {
            let Some(realm) = realm else {
                respond(
                    out,
                    404,
                    &[],
                    "text/plain; charset=utf-8",
                    b"no such realm here; GET /realms lists them\n",
                );
                return Route::Next;
            };
            return self.upgrade(req, realm, out);
        }
        let (ctype, body): (&str, &[u8]) = match path {
            "/" | "/index.html" => {
                let (html, csp) = &self.page;
                respond_csp(
                    out,
                    csp,
                    200,
                    &[],
                    "text/html; charset=utf-8",
                    html.as_bytes(),
                );
                return Route::Next;
            }
            "/app.js" => ("text/javascript; charset=utf-8", assets::APP_JS.as_bytes()),
            "/app.css" => ("text/css; charset=utf-8", assets::APP_CSS.as_bytes()),
            "/realms" => ("application/json", self.realms_json.as_bytes()),
            "/lab" => ("text/html; charset=utf-8", assets::LAB_HTML.as_bytes()),
            "/lab.js" => ("text/javascript; charset=utf-8", assets::LAB_JS.as_bytes()),
            "/lab.css" => ("text/css; charset=utf-8", assets::LAB_CSS.as_bytes()),
            "/lab/stats" => return Route::Board(BoardFormat::Json),
            "/metrics" => return Route::Board(BoardFormat::Prometheus),
            _ => {
                respond(
                    out,
                    404,
                    &[],
                    "text/plain; charset=utf-8",
                    b"not found; the chat is at /\n",
                );
                return Route::Next;
            }
        };
        respond(out, 200, &[], ctype, body);
        Route::Next
    }

    /// Checks a WebSocket handshake and answers it: 101, or why not.
    fn upgrade<'a>(&self, req: &Request, realm: &'a WebRealm, out: &mut Vec<u8>) -> Route<'a> {
        let plain = "text/plain; charset=utf-8";
        if req.count("origin") > 1 || req.count("host") > 1 {
            respond(out, 400, &[], plain, b"one Host and at most one Origin\n");
            return Route::Close;
        }
        if !self.origin_allowed(req.header("origin"), req.header("host")) {
            respond(
                out,
                403,
                &[],
                plain,
                b"this origin may not open the chat's WebSocket (see [web] allowed_origins)\n",
            );
            return Route::Close;
        }
        if !req.has_token("upgrade", "websocket") || !req.has_token("connection", "upgrade") {
            respond(
                out,
                426,
                &[("Upgrade", "websocket"), ("Connection", "Upgrade")],
                plain,
                b"this is a WebSocket: connect with Upgrade: websocket\n",
            );
            return Route::Close;
        }
        if req.header("sec-websocket-version") != Some("13") {
            respond(
                out,
                426,
                &[("Sec-WebSocket-Version", "13")],
                plain,
                b"WebSocket version 13 only\n",
            );
            return Route::Close;
        }
        let key = req.header("sec-websocket-key").unwrap_or("");
        if !valid_websocket_key(key) {
            respond(out, 400, &[], plain, b"missing or bad Sec-WebSocket-Key\n");
            return Route::Close;
        }
        out.extend_from_slice(
            format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                 Connection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
                websocket_accept(key)
            )
            .as_bytes(),
        );
        Route::Upgrade(realm)
    }

    /// Serves HTTP requests on `stream` until one opens a WebSocket or the connection ends.
    async fn serve<T: Transport>(self: Arc<Self>, mut stream: T, conn: Conn) -> End {
        let mut buf: Vec<u8> = Vec::new();
        let mut out = Vec::new();
        let mut watch = Watch::new(&conn);
        let mut chunk = vec![0u8; conn.read_buffer];
        loop {
            let parsed = parse_head(&buf, DEFAULT_MAX_HEAD, DEFAULT_MAX_HEADERS);
            let (req, len) = match parsed {
                Ok(Some(done)) => done,
                Ok(None) => {
                    watch.partial(!buf.is_empty());
                    let n = match watch.run(stream.read(&mut chunk)).await {
                        Wait::Ready(Ok(0)) => return End::Eof,
                        Wait::Ready(Ok(n)) => n,
                        Wait::Ready(Err(e)) => return End::Error(e),
                        Wait::Idle => return End::Idle,
                        Wait::Shutdown => return End::Shutdown,
                        Wait::Slow => {
                            let body = format!(
                                "request head not finished within {} s\n",
                                conn.line_timeout.as_secs()
                            );
                            respond(&mut out, 408, &[], "text/plain", body.as_bytes());
                            return close(&mut stream, &mut out, &conn, End::SlowRequest).await;
                        }
                    };
                    watch.touch();
                    buf.extend_from_slice(&chunk[..n]);
                    continue;
                }
                Err(e) => {
                    let status = match e {
                        HeadError::TooLarge { .. } | HeadError::TooManyHeaders { .. } => 431,
                        HeadError::Version => 505,
                        HeadError::Malformed(_) => 400,
                    };
                    respond(
                        &mut out,
                        status,
                        &[],
                        "text/plain",
                        format!("{e}\n").as_bytes(),
                    );
                    return close(&mut stream, &mut out, &conn, End::Closed).await;
                }
            };
            watch.partial(false);
            let rest = buf.split_off(len);
            buf = rest;
            debug!(conn = conn.info.id, method = %req.method, path = %req.path(), "web request");
            let started = tokio::time::Instant::now();
            let mut route = self.route(&req, &mut out);
            if let Route::Board(format) = route {
                // Read now, from the servers' own counters (nothing samples in the background).
                let sample = self.options.board.sample().await;
                let (ctype, body) = match format {
                    BoardFormat::Json => (
                        "application/json",
                        serde_json::to_vec(&sample).unwrap_or_default(),
                    ),
                    BoardFormat::Prometheus => (
                        "text/plain; version=0.0.4; charset=utf-8",
                        crate::lab::prometheus(&sample).into_bytes(),
                    ),
                };
                respond(&mut out, 200, &[], ctype, &body);
                route = Route::Next;
            }
            let wrote = out.len() as u64;
            if let Err(e) = write_out(&mut stream, &mut out, conn.idle_timeout).await {
                return End::Error(e);
            }
            // An HTTP request is one request; a WebSocket's commands are counted by the chat
            // loop that runs on it, into the same counters.
            conn.counters().answered(1, started.elapsed());
            conn.counters().moved(len as u64, wrote);
            match route {
                Route::Next if req.keep_alive() => {}
                Route::Next | Route::Close | Route::Board(_) => {
                    return close(&mut stream, &mut out, &conn, End::Closed).await;
                }
                Route::Upgrade(realm) => {
                    debug!(conn = conn.info.id, realm = %realm.name, "websocket open");
                    let endpoint = Arc::clone(&realm.endpoint);
                    let ws = WsTransport::accept(
                        AnyTransport::new(stream),
                        buf,
                        self.options.max_line,
                        (self.options.ping_every, self.options.pong_timeout),
                    )
                    .await;
                    return endpoint.serve_ws(ws, conn).await;
                }
            }
        }
    }
}

/// What a request led to.
enum Route<'a> {
    /// Answered; the connection may take the next request.
    Next,
    /// Answered; close the connection.
    Close,
    /// Answered with 101: the connection is a WebSocket to this realm now.
    Upgrade(&'a WebRealm),
    /// Not answered yet: the board, read now, in this format.
    Board(BoardFormat),
}

/// How the board is asked for.
#[derive(Debug, Clone, Copy)]
enum BoardFormat {
    /// `/lab/stats`.
    Json,
    /// `/metrics`.
    Prometheus,
}

/// Writes what is left, then closes lingering (so the peer reads our last response).
async fn close<T: Transport>(stream: &mut T, out: &mut Vec<u8>, conn: &Conn, end: End) -> End {
    let _ = write_out(stream, out, conn.grace.min(conn.idle_timeout)).await;
    linger_async(stream, &mut [0u8; 1024]).await;
    end
}

/// Appends a complete response: status, the security headers, the body.
fn respond(out: &mut Vec<u8>, status: u16, extra: &[(&str, &str)], ctype: &str, body: &[u8]) {
    respond_csp(out, CSP, status, extra, ctype, body);
}

/// [`respond`] with a CSP of its own.
fn respond_csp(
    out: &mut Vec<u8>,
    csp: &str,
    status: u16,
    extra: &[(&str, &str)],
    ctype: &str,
    body: &[u8],
) {
    use std::fmt::Write as _;
    let mut head = format!("HTTP/1.1 {status} {}\r\n", reason(status));
    let _ = write!(
        head,
        "Content-Type: {ctype}\r\nContent-Length: {}\r\n\
         Content-Security-Policy: {csp}\r\nX-Content-Type-Options: nosniff\r\n\
         Referrer-Policy: no-referrer\r\nCache-Control: no-store\r\n",
        body.len()
    );
    if status >= 400 && status != 404 {
        head.push_str("Connection: close\r\n");
    }
    for (name, value) in extra {
        let _ = write!(head, "{name}: {value}\r\n");
    }
    head.push_str("\r\n");
    out.extend_from_slice(head.as_bytes());
    out.extend_from_slice(body);
}

impl Handler for WebServer {
    fn name(&self) -> &'static str {
        "web"
    }

    fn busy_reply(&self, why: Busy) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        let status = if matches!(why, Busy::TlsRequired) {
            400
        } else {
            503
        };
        respond(
            &mut out,
            status,
            &[],
            "text/plain; charset=utf-8",
            format!("{why}\n").as_bytes(),
        );
        Some(out)
    }

    fn read_buffer_size(&self) -> usize {
        jaring_runtime::service::DEFAULT_READ_BUFFER
    }

    fn serve_async<T: Transport>(
        self: Arc<Self>,
        stream: T,
        conn: Conn,
    ) -> impl Future<Output = End> + Send {
        self.serve(stream, conn)
    }

    fn serve_blocking(self: Arc<Self>, stream: std::net::TcpStream, conn: Conn) -> End {
        // A WebSocket waits on the peer and on pushed events at once: the async loop, driven from
        // this connection thread.
        let handle = self.handle.clone();
        handle.block_on(async move {
            if let Err(e) = stream.set_nonblocking(true) {
                return End::Error(e);
            }
            match TcpStream::from_std(stream) {
                Ok(s) => self.serve(s, conn).await,
                Err(e) => End::Error(e),
            }
        })
    }
}
