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
