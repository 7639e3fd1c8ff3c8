//! [`WsTransport`]: a WebSocket connection as a [`Transport`], so the chat's connection loop runs
//! on it unchanged.
//!
//! The loop reads command lines and writes replies framed with CR LF CR LF; this transport changes
//! the framing only:
//! - **In**: one text message is one command line. It reaches the loop as the message plus CR LF.
//!   A text message holding CR or LF, or a binary message, is refused with the chat protocol's
//!   ERROR reply (as a text message) and never reaches the loop, so it can never run as two
//!   commands; the connection stays open (a page with a bug should not lose its session for one
//!   bad message). A message over the line limit is refused by the WebSocket layer; the peer gets
//!   the ERROR the TCP port sends for an over-long line, a Close frame 1009, and the connection
//!   ends, as on TCP. A Close frame (or the TCP stream's end) reads as EOF.
//! - **Out**: the bytes written are split at CR LF CR LF; each reply or event goes out as one text
//!   message without its terminator. Bytes before a terminator wait for it; at shutdown what is
//!   left goes as one message.
//! - **Liveness**: a peer quiet for [`DEFAULT_PING_EVERY`] is pinged; one that sends nothing, not
//!   even the pong, within [`DEFAULT_PONG_TIMEOUT`] after that is dead and its connection fails.
//!   Pongs do not count as activity for the chat's idle timeout, which applies as on TCP.
//!   The peer's pings are answered by the WebSocket layer.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use futures_core::Stream as _;
use futures_sink::Sink;
use jaring_proto::chat::{ChatSession, REPLY_END, encode_error};
use jaring_proto::line::TooLong;
use jaring_runtime::Transport;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError};
use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Bytes, Message};

/// A quiet peer is pinged after this long.
pub const DEFAULT_PING_EVERY: Duration = Duration::from_secs(30);

/// A pinged peer that sends nothing for this long is taken for dead.
pub const DEFAULT_PONG_TIMEOUT: Duration = Duration::from_secs(30);

/// Bytes of whole messages waiting to be sent past which a write waits for the peer to take some
/// (the chat loop's own reply budget, so the gateway adds no unbounded buffer).
pub const DEFAULT_OUT_BUDGET: usize = jaring_chat::server::DEFAULT_REPLY_BUDGET;

/// Capacity of the line buffer kept between messages; a longer line's buffer is given back.
const KEEP_INPUT: usize = 4096;

/// What the client is told when a message holds CR or LF.
pub const LINE_BREAK_REFUSAL: &str = "one WebSocket message is one command: a message holding CR or \
     LF is not run; send each command as its own message, without CR or LF";

/// What the client is told when it sends a binary message.
pub const BINARY_REFUSAL: &str =
    "commands are text messages; a binary message is not run: send the command as text";

/// The WebSocket settings for a chat line limit of `max_line` bytes: no message or frame over it,
/// and the runtime's read buffer (tungstenite allocates 128 KiB per connection by default: 128 MiB
/// for a thousand idle browsers).
pub fn config(max_line: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(jaring_runtime::service::DEFAULT_READ_BUFFER)
        .max_message_size(Some(max_line))
        .max_frame_size(Some(max_line))
}

/// A server-side WebSocket connection over `S`, seen as a byte stream of command lines and
/// CR LF CR LF-framed replies. See the [module docs](self).
pub struct WsTransport<S> {
    ws: WebSocketStream<S>,
    max_line: usize,
    /// The current command line plus CR LF, and how much of it the loop has read.
    input: Vec<u8>,
    read: usize,
    /// A refusal to send once the loop has read every line before it (keeps replies in order).
    refusal: Option<&'static str>,
    /// The peer closed (or the stream ended): reads give EOF once `input` is read.
    eof: bool,
    /// A read failure to report once `input` is read.
    failed: Option<io::Error>,
    /// Written bytes not yet ending in CR LF CR LF.
    partial: Vec<u8>,
    /// How far `partial` has been searched for a terminator.
    scanned: usize,
    /// Whole messages waiting for the WebSocket to take them, and their bytes.
    queue: VecDeque<Message>,
    queued: usize,
    /// Messages taken by the WebSocket and not yet flushed to the stream.
    unflushed: bool,
    /// When the peer last sent anything, and when we pinged it (if it has not answered).
    last_heard: Instant,
    pinged: Option<Instant>,
    timer: Pin<Box<Sleep>>,
    ping_every: Duration,
    pong_timeout: Duration,
}

impl<S> std::fmt::Debug for WsTransport<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsTransport")
            .field("max_line", &self.max_line)
            .field("eof", &self.eof)
            .field("queued", &self.queued)
            .finish_non_exhaustive()
    }
}

impl<S: Transport> WsTransport<S> {
    /// Wraps `stream`, on which the server already answered the handshake with 101; `part` is
    /// what was read past the request head (frames the client sent early). Lines (messages) over
    /// `max_line` bytes are refused. `liveness`: ping after this much quiet, drop after that much
    /// more without a word ([`DEFAULT_PING_EVERY`], [`DEFAULT_PONG_TIMEOUT`]).
    pub async fn accept(
        stream: S,
        part: Vec<u8>,
        max_line: usize,
        liveness: (Duration, Duration),
    ) -> Self {
        let ws = WebSocketStream::from_partially_read(
            stream,
            part,
            Role::Server,
            Some(config(max_line)),
        )
        .await;
        Self::with_timers(ws, max_line, liveness.0, liveness.1)
    }

    /// Wraps a WebSocket whose handshake is done.
    pub fn with_timers(
        ws: WebSocketStream<S>,
        max_line: usize,
        ping_every: Duration,
        pong_timeout: Duration,
    ) -> Self {
        Self {
            ws,
            max_line,
            input: Vec::new(),
            read: 0,
            refusal: None,
            eof: false,
            failed: None,
            partial: Vec::new(),
            scanned: 0,
            queue: VecDeque::new(),
            queued: 0,
            unflushed: false,
            last_heard: Instant::now(),
            pinged: None,
            timer: Box::pin(tokio::time::sleep(ping_every)),
            ping_every,
            pong_timeout,
        }
    }

    /// The stream underneath.
    pub fn get_ref(&self) -> &S {
        self.ws.get_ref()
    }

    fn has_input(&self) -> bool {
        self.read < self.input.len()
    }

    fn push(&mut self, msg: Message) {
        self.queued += msg.len();
        self.queue.push_back(msg);
    }

    /// Queues the chat protocol's ERROR reply carrying `why`, as one text message.
    fn push_error(&mut self, why: impl std::fmt::Display) {
        let mut out = Vec::new();
        encode_error(why, &mut out);
        out.truncate(out.len().saturating_sub(REPLY_END.len()));
        self.push(text(out));
    }

    /// Hands queued messages to the WebSocket and flushes them: `Ready` once all are sent.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.queue.is_empty() {
            ready!(Pin::new(&mut self.ws).poll_ready(cx)).map_err(io_error)?;
            if let Some(msg) = self.queue.pop_front() {
                self.queued -= msg.len();
                Pin::new(&mut self.ws).start_send(msg).map_err(io_error)?;
                self.unflushed = true;
            }
        }
        if self.unflushed {
            ready!(Pin::new(&mut self.ws).poll_flush(cx)).map_err(io_error)?;
            self.unflushed = false;
        }
        Poll::Ready(Ok(()))
    }

    /// Pings a quiet peer; fails a peer that did not answer in time. Registers the timer.
    fn poll_liveness(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        while self.timer.as_mut().poll(cx).is_ready() {
            let now = Instant::now();
            let next = match self.pinged {
                Some(at) if now >= at + self.pong_timeout => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!(
                            "no pong within {} s of a ping: the peer is gone",
                            self.pong_timeout.as_secs()
                        ),
                    ));
                }
                Some(at) => at + self.pong_timeout,
                None if now >= self.last_heard + self.ping_every => {
                    self.push(Message::Ping(Bytes::new()));
                    self.pinged = Some(now);
                    now + self.pong_timeout
                }
                None => self.last_heard + self.ping_every,
            };
            self.timer.as_mut().reset(next);
        }
        Ok(())
    }

    /// Takes the next message the peer sent, if one is there: a command line into `input`, a
    /// refusal into `refusal`, the end into `eof` or `failed`. `Ready` when one of those changed.
    fn poll_message(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            let item = ready!(Pin::new(&mut self.ws).poll_next(cx));
            self.last_heard = Instant::now();
            self.pinged = None;
            match item {
                Some(Ok(Message::Text(t))) => {
                    if t.as_str().contains(['\r', '\n']) {
                        self.refusal = Some(LINE_BREAK_REFUSAL);
                    } else {
                        if self.input.capacity() > KEEP_INPUT {
                            // One long line does not pin its buffer for the connection's life.
                            self.input = Vec::new();
                        }
                        self.input.clear();
                        self.input.extend_from_slice(t.as_bytes());
                        self.input.extend_from_slice(b"\r\n");
                        self.read = 0;
                    }
                    return Poll::Ready(());
                }
                Some(Ok(Message::Binary(_))) => {
                    self.refusal = Some(BINARY_REFUSAL);
                    return Poll::Ready(());
                }
                // Pings are answered by tungstenite (on the next flush); pongs prove liveness.
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {
                    self.unflushed = true;
                }
                Some(Ok(Message::Close(_))) | None => {
                    // tungstenite queued the Close reply: it goes with the next flush.
                    self.unflushed = true;
                    self.eof = true;
                    return Poll::Ready(());
                }
                Some(Err(WsError::Capacity(CapacityError::MessageTooLong { .. }))) => {
                    // The TCP port's reply to an over-long line, then a Close saying why.
                    let mut out = Vec::new();
                    ChatSession::encode_too_long(TooLong { max: self.max_line }, &mut out);
                    out.truncate(out.len().saturating_sub(REPLY_END.len()));
                    self.push(text(out));
                    self.push(Message::Close(Some(CloseFrame {
                        code: CloseCode::Size,
                        reason: "message over the line limit".into(),
                    })));
                    self.eof = true;
                    return Poll::Ready(());
                }
                Some(Err(WsError::ConnectionClosed | WsError::AlreadyClosed)) => {
                    self.eof = true;
                    return Poll::Ready(());
                }
                Some(Err(e)) => {
                    self.failed = Some(io_error(e));
                    return Poll::Ready(());
                }
            }
        }
    }

    /// Splits whole replies off `partial` into the queue.
    fn frame_output(&mut self) {
        loop {
            let from = self.scanned.saturating_sub(REPLY_END.len() - 1);
            match memchr::memmem::find(&self.partial[from..], REPLY_END) {
                Some(i) => {
                    let end = from + i;
                    let rest = self.partial.split_off(end + REPLY_END.len());
                    let mut msg = std::mem::replace(&mut self.partial, rest);
                    msg.truncate(end);
                    self.scanned = 0;
                    self.push(text(msg));
                }
                None => {
                    self.scanned = self.partial.len();
                    return;
                }
            }
        }
    }
}

/// A text message of `bytes` (the chat's replies are JSON, so UTF-8; anything else is made so).
fn text(bytes: Vec<u8>) -> Message {
    match String::from_utf8(bytes) {
        Ok(s) => Message::text(s),
        Err(e) => Message::text(String::from_utf8_lossy(e.as_bytes()).into_owned()),
    }
}

fn io_error(e: WsError) -> io::Error {
    match e {
        WsError::Io(e) => e,
        WsError::ConnectionClosed | WsError::AlreadyClosed => {
            io::Error::new(io::ErrorKind::BrokenPipe, "the WebSocket is closed")
        }
        other => io::Error::new(io::ErrorKind::InvalidData, other.to_string()),
    }
}

impl<S: Transport> AsyncRead for WsTransport<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.has_input() {
            ready!(this.poll_read_ready(cx))?;
        }
        // Pipelined commands go to the loop in one read, as they would from a TCP socket, while
        // each is whole and no refusal waits behind them.
        while buf.remaining() > 0 && this.has_input() {
            let take = (this.input.len() - this.read).min(buf.remaining());
            buf.put_slice(&this.input[this.read..this.read + take]);
            this.read += take;
            if this.has_input()
                || this.refusal.is_some()
                || this.eof
                || this.failed.is_some()
                || this.poll_message(cx).is_pending()
            {
                break;
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: Transport> AsyncWrite for WsTransport<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.queued >= DEFAULT_OUT_BUDGET {
            // The peer is slow to take what we have: wait for it before taking more.
            ready!(this.poll_send(cx))?;
        }
        this.partial.extend_from_slice(buf);
        this.frame_output();
        // Sends what it can now; what it cannot goes with the next flush or write.
        if let Poll::Ready(Err(e)) = this.poll_send(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_send(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.partial.is_empty() {
            let rest = std::mem::take(&mut this.partial);
            this.scanned = 0;
            this.push(text(rest));
        }
        ready!(this.poll_send(cx))?;
        // Sends our Close; the peer's answer then reads as EOF.
        Pin::new(&mut this.ws).poll_close(cx).map_err(io_error)
    }
}

impl<S: Transport> Transport for WsTransport<S> {
    fn poll_read_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            if self.has_input() {
                return Poll::Ready(Ok(()));
            }
            if let Some(why) = self.refusal.take() {
                // Every line before it was read and answered (the loop writes its replies before
                // it waits again), so the refusal goes out in order.
                self.push_error(why);
            }
            if let Err(e) = self.poll_liveness(cx) {
                return Poll::Ready(Err(e));
            }
            // Refusals, pings, pongs and Close replies go out while the loop waits.
            let sent = self.poll_send(cx);
            if self.eof || self.failed.is_some() {
                // Our last words (a Close reply, an over-long line's ERROR) go before the end.
                ready!(sent)?;
                return match self.failed.take() {
                    Some(e) => Poll::Ready(Err(e)),
                    None => Poll::Ready(Ok(())),
                };
            }
            if let Poll::Ready(Err(e)) = sent {
                return Poll::Ready(Err(e));
            }
            ready!(self.poll_message(cx));
        }
    }

    fn holds_output(&self) -> bool {
        !self.queue.is_empty() || self.unflushed
    }

    fn tcp(&self) -> &TcpStream {
        self.ws.get_ref().tcp()
    }

    fn kind(&self) -> &'static str {
        "websocket"
    }
}
