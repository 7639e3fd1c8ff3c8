//! A WebSocket client of the web port: what the tests (and a `--ws` bench) connect with.
//!
//! It does the client's half of the handshake itself over any byte stream (plain TCP or
//! [`jaring_runtime::ClientStream`] for TLS), so it needs no HTTP library.

use std::time::Duration;

use base64::Engine as _;
use futures_sink::Sink;
use jaring_proto::http::{HEAD_END, head_len, websocket_accept};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

/// Bytes a handshake response may take.
pub const DEFAULT_MAX_RESPONSE_HEAD: usize = 8 * 1024;

/// Why a WebSocket could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The connection failed.
    #[error("WebSocket connection failed: {0}")]
    Io(#[from] std::io::Error),
    /// The server answered with another status than 101 (its status line and body follow).
    #[error("the server refused the WebSocket: {status_line}")]
    Refused {
        /// e.g. `HTTP/1.1 403 Forbidden`.
        status_line: String,
        /// The whole response as far as it was read.
        response: String,
    },
    /// The response was not a valid handshake.
    #[error("not a WebSocket handshake response: {0}")]
    Handshake(&'static str),
}

/// What to ask for: the request target, the `Host` and (as a browser would) the `Origin`.
#[derive(Debug, Clone)]
pub struct Upgrade<'a> {
    /// `/ws` or `/ws/<realm>`.
    pub path: &'a str,
    /// The `Host` header, e.g. `127.0.0.1:8080`.
    pub host: &'a str,
    /// The `Origin` header; `None` sends none (a non-browser client).
    pub origin: Option<&'a str>,
}

/// Opens a WebSocket on `stream` (connected to the web port): sends the upgrade request, checks
/// the 101 and its accept key. Messages of any size up to the tungstenite defaults are accepted.
pub async fn open<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    upgrade: &Upgrade<'_>,
) -> Result<WebSocketStream<S>, ClientError> {
    let mut nonce = [0u8; 16];
    rand::Rng::fill_bytes(&mut rand::rng(), &mut nonce);
    let key = base64::engine::general_purpose::STANDARD.encode(nonce);
    let mut req = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n",
        upgrade.path, upgrade.host
    );
    if let Some(origin) = upgrade.origin {
        req.push_str(&format!("Origin: {origin}\r\n"));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes()).await?;
    stream.flush().await?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    let len = loop {
        if let Some(len) = head_len(&buf) {
            break len;
        }
        if buf.len() > DEFAULT_MAX_RESPONSE_HEAD {
            return Err(ClientError::Handshake("response head too long"));
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(ClientError::Handshake("the server closed before answering"));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..len - HEAD_END.len()]).into_owned();
    let status_line = head.lines().next().unwrap_or_default().to_owned();
    if !status_line.starts_with("HTTP/1.1 101") {
        // Read the body a moment (it says why), for the error.
        let _ = tokio::time::timeout(Duration::from_millis(200), async {
            while let Ok(n) = stream.read(&mut chunk).await {
                if n == 0 || buf.len() > DEFAULT_MAX_RESPONSE_HEAD * 2 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
        })
        .await;
        return Err(ClientError::Refused {
            status_line,
            response: String::from_utf8_lossy(&buf).into_owned(),
        });
    }
    let accept = head.lines().skip(1).find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("sec-websocket-accept")
            .then(|| value.trim().to_owned())
    });
    if accept.as_deref() != Some(websocket_accept(&key).as_str()) {
        return Err(ClientError::Handshake("wrong Sec-WebSocket-Accept"));
    }
    let rest = buf.split_off(len);
    Ok(WebSocketStream::from_partially_read(
        stream,
        rest,
        Role::Client,
        Some(WebSocketConfig::default()),
    )
    .await)
}

/// Sends `line` as one text message.
pub async fn send<S: AsyncRead + AsyncWrite + Unpin>(
    ws: &mut WebSocketStream<S>,
    line: &str,
) -> Result<(), ClientError> {
    send_message(ws, Message::text(line)).await
}

/// Sends each of `lines` as its own text message with one flush for all (a pipelining client,
/// such as a load generator, pays one write for a batch).
pub async fn send_lines<S: AsyncRead + AsyncWrite + Unpin>(
    ws: &mut WebSocketStream<S>,
    lines: &[&str],
) -> Result<(), ClientError> {
    let mut ws = std::pin::Pin::new(ws);
    for line in lines {
        std::future::poll_fn(|cx| ws.as_mut().poll_ready(cx))
            .await
            .map_err(ws_io)?;
        ws.as_mut()
            .start_send(Message::text(*line))
            .map_err(ws_io)?;
    }
    std::future::poll_fn(|cx| ws.as_mut().poll_flush(cx))
        .await
        .map_err(ws_io)
}

/// Sends `msg` (and flushes it).
pub async fn send_message<S: AsyncRead + AsyncWrite + Unpin>(
    ws: &mut WebSocketStream<S>,
    msg: Message,
) -> Result<(), ClientError> {
    let mut ws = std::pin::Pin::new(ws);
    std::future::poll_fn(|cx| ws.as_mut().poll_ready(cx))
        .await
        .map_err(ws_io)?;
    ws.as_mut().start_send(msg).map_err(ws_io)?;
    std::future::poll_fn(|cx| ws.as_mut().poll_flush(cx))
        .await
        .map_err(ws_io)
}

/// The next text message (a reply or an event); `None` when the server closed. Pings and
/// pongs are skipped (pings are answered by the WebSocket layer).
pub async fn recv<S: AsyncRead + AsyncWrite + Unpin>(
    ws: &mut WebSocketStream<S>,
) -> Result<Option<String>, ClientError> {
    loop {
        match next(ws).await? {
            Some(Message::Text(t)) => return Ok(Some(t.as_str().to_owned())),
            Some(Message::Binary(_)) => {
                return Err(ClientError::Handshake("the server sent a binary message"));
            }
            Some(Message::Close(_)) | None => return Ok(None),
            Some(_) => {}
        }
    }
}

/// The next message of any kind; `None` at the end.
pub async fn next<S: AsyncRead + AsyncWrite + Unpin>(
    ws: &mut WebSocketStream<S>,
) -> Result<Option<Message>, ClientError> {
    use futures_core::Stream as _;
    let mut ws = std::pin::Pin::new(ws);
    match std::future::poll_fn(|cx| ws.as_mut().poll_next(cx)).await {
        Some(Ok(m)) => Ok(Some(m)),
        Some(Err(e)) => Err(ws_io(e)),
        None => Ok(None),
    }
}

fn ws_io(e: tokio_tungstenite::tungstenite::Error) -> ClientError {
    match e {
        tokio_tungstenite::tungstenite::Error::Io(e) => ClientError::Io(e),
        other => ClientError::Io(std::io::Error::other(other.to_string())),
    }
}

/// A WebSocket of the web port seen as the TCP port's byte stream: what is written is split
/// into lines, each sent as one text message (without its CR LF); each message received reads
/// as its text followed by CR LF CR LF, the TCP port's framing. So a client written for the TCP
/// port (the load generator's) runs on the web port unchanged.
pub struct Lines<S> {
    ws: WebSocketStream<S>,
    /// Received and not read yet.
    incoming: Vec<u8>,
    read_at: usize,
    /// Written and not sent yet (an unfinished line stays until its CR LF).
    outgoing: Vec<u8>,
}

impl<S> std::fmt::Debug for Lines<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lines")
            .field("incoming", &(self.incoming.len() - self.read_at))
            .field("outgoing", &self.outgoing.len())
            .finish_non_exhaustive()
    }
}

impl<S> Lines<S> {
    /// Wraps an open WebSocket.
    pub fn new(ws: WebSocketStream<S>) -> Self {
        Self {
            ws,
            incoming: Vec::new(),
            read_at: 0,
            outgoing: Vec::new(),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Lines<S> {
    /// The stream underneath.
    pub fn get_ref(&self) -> &S {
        self.ws.get_ref()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Lines<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use futures_core::Stream as _;
        use std::task::Poll;
        let this = &mut *self;
        loop {
            if this.read_at < this.incoming.len() {
                let n = buf.remaining().min(this.incoming.len() - this.read_at);
                buf.put_slice(&this.incoming[this.read_at..this.read_at + n]);
                this.read_at += n;
                return Poll::Ready(Ok(()));
            }
            this.incoming.clear();
            this.read_at = 0;
            match std::pin::Pin::new(&mut this.ws).poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None | Some(Ok(Message::Close(_)))) => return Poll::Ready(Ok(())),
                Poll::Ready(Some(Err(e))) => {
                    return Poll::Ready(Err(std::io::Error::other(e.to_string())));
                }
                Poll::Ready(Some(Ok(Message::Text(t)))) => {
                    this.incoming.extend_from_slice(t.as_bytes());
                    this.incoming.extend_from_slice(b"\r\n\r\n");
                }
                Poll::Ready(Some(Ok(Message::Binary(b)))) => {
                    this.incoming.extend_from_slice(&b);
                    this.incoming.extend_from_slice(b"\r\n\r\n");
                }
                // Pings are answered by the WebSocket layer on the next write or flush.
                Poll::Ready(Some(Ok(_))) => {}
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Lines<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.outgoing.extend_from_slice(buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::task::Poll;
        let this = &mut *self;
        let io = |e: tokio_tungstenite::tungstenite::Error| std::io::Error::other(e.to_string());
        while let Some(end) = memchr::memmem::find(&this.outgoing, b"\r\n") {
            let mut ws = std::pin::Pin::new(&mut this.ws);
            match ws.as_mut().poll_ready(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(io(e))),
                Poll::Ready(Ok(())) => {}
            }
            let line = String::from_utf8_lossy(&this.outgoing[..end]).into_owned();
            this.outgoing.drain(..end + 2);
            if let Err(e) = ws.start_send(Message::text(line)) {
                return Poll::Ready(Err(io(e)));
            }
        }
        std::pin::Pin::new(&mut this.ws).poll_flush(cx).map_err(io)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.ws)
            .poll_close(cx)
            .map_err(|e| std::io::Error::other(e.to_string()))
    }
}
