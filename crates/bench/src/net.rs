//! What every workload does on the wire the same way: connect with a timeout (and, with TLS, a
//! handshake), name an I/O failure by its kind (so the report groups errors), and pause after an
//! error.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use jaring_runtime::ClientStream;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;

/// How long a worker waits for a connect or a reply before counting an error and trying again.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// After an error, a worker pauses this long so a dead server does not turn the generator into a spin.
pub const ERROR_PAUSE: Duration = Duration::from_millis(10);

/// TLS for every connection of a run.
#[derive(Debug, Clone)]
pub struct Tls {
    /// The settings: one `Arc` for every connection, so later connections can resume the
    /// sessions of earlier ones (unless its `resumption` is disabled).
    pub config: Arc<rustls::ClientConfig>,
    /// The name the server's certificate must carry: the host as the user gave it.
    pub name: ServerName<'static>,
}

impl Tls {
    /// TLS with `config`, verifying the server as `host` (a name or an address).
    pub fn new(config: Arc<rustls::ClientConfig>, host: &str) -> Result<Self, String> {
        let name = jaring_tls::server_name(host).map_err(|e| e.to_string())?;
        Ok(Self { config, name })
    }

    /// The same, with session resumption off: every handshake is a full one.
    pub fn without_resumption(mut self) -> Self {
        let mut config = (*self.config).clone();
        config.resumption = rustls::client::Resumption::disabled();
        self.config = Arc::new(config);
        self
    }
}

/// Connects to `target` within [`REQUEST_TIMEOUT`], with TCP_NODELAY; the error is a report key.
pub async fn connect(target: SocketAddr) -> Result<TcpStream, String> {
    match tokio::time::timeout(REQUEST_TIMEOUT, TcpStream::connect(target)).await {
        Ok(Ok(s)) => {
            let _ = s.set_nodelay(true);
            Ok(s)
        }
        Ok(Err(e)) => Err(io_kind("connect", &e)),
        Err(_) => Err("connect timeout".to_owned()),
    }
}

/// [`connect`], then with `tls` a handshake, also within [`REQUEST_TIMEOUT`].
pub async fn open(target: SocketAddr, tls: Option<&Tls>) -> Result<ClientStream, String> {
    let tcp = connect(target).await?;
    let Some(tls) = tls else {
        return Ok(ClientStream::Tcp(tcp));
    };
    handshake(tcp, tls, REQUEST_TIMEOUT)
        .await
        .map_err(|e| match e.kind() {
            io::ErrorKind::TimedOut => "tls handshake timeout".to_owned(),
            _ => format!("tls handshake: {e}"),
        })
}

/// A TLS handshake over `tcp` within `timeout` (the runtime's, with this run's settings).
pub async fn handshake(tcp: TcpStream, tls: &Tls, timeout: Duration) -> io::Result<ClientStream> {
    jaring_runtime::handshake(tcp, &tls.config, tls.name.clone(), timeout).await
}

/// A report key for an I/O error: the operation and the error's kind, not its full text.
pub fn io_kind(op: &str, e: &io::Error) -> String {
    format!("{op}: {}", e.kind())
}

/// A chat connection of the load generator: the TCP port's stream (plain or TLS), or the web
/// port's WebSocket seen as that same stream ([`jaring_web::client::Lines`]), so every chat
/// workload speaks either without knowing which.
#[derive(Debug)]
pub enum BenchStream {
    /// The chat port.
    Direct(ClientStream),
    /// The web port's `/ws…`.
    Ws(Box<jaring_web::client::Lines<ClientStream>>),
}

/// Where a `--ws` bench opens its WebSockets: the request target and the `Host` it sends.
#[derive(Debug, Clone)]
pub struct WsTarget {
    /// `/ws` or `/ws/<realm>`.
    pub path: String,
    /// The `Host` header.
    pub host: String,
}

impl BenchStream {
    /// Opens a chat connection to `target`: TCP, TLS with `tls`, then the WebSocket with `ws`.
    pub async fn open(
        target: SocketAddr,
        tls: Option<&Tls>,
        ws: Option<&WsTarget>,
    ) -> Result<Self, String> {
        let stream = open(target, tls).await?;
        let Some(ws) = ws else {
            return Ok(Self::Direct(stream));
        };
        let upgrade = jaring_web::client::Upgrade {
            path: &ws.path,
            host: &ws.host,
            origin: None,
        };
        let opened =
            tokio::time::timeout(REQUEST_TIMEOUT, jaring_web::client::open(stream, &upgrade))
                .await
                .map_err(|_| "websocket handshake timeout".to_owned())?
                .map_err(|e| format!("websocket: {e}"))?;
        Ok(Self::Ws(Box::new(jaring_web::client::Lines::new(opened))))
    }

    /// Whether its TLS session was resumed.
    pub fn resumed(&self) -> bool {
        match self {
            Self::Direct(s) => s.resumed(),
            Self::Ws(l) => l.get_ref().resumed(),
        }
    }
}

impl tokio::io::AsyncRead for BenchStream {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Direct(s) => std::pin::Pin::new(s).poll_read(cx, buf),
            Self::Ws(s) => std::pin::Pin::new(&mut **s).poll_read(cx, buf),
        }
    }
}

impl tokio::io::AsyncWrite for BenchStream {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Direct(s) => std::pin::Pin::new(s).poll_write(cx, buf),
            Self::Ws(s) => std::pin::Pin::new(&mut **s).poll_write(cx, buf),
        }
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Direct(s) => std::pin::Pin::new(s).poll_flush(cx),
            Self::Ws(s) => std::pin::Pin::new(&mut **s).poll_flush(cx),
        }
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Direct(s) => std::pin::Pin::new(s).poll_shutdown(cx),
            Self::Ws(s) => std::pin::Pin::new(&mut **s).poll_shutdown(cx),
        }
    }
}
