//! The client side's one way to connect: resolve, try every address in turn, each within a
//! timeout, and say which host and port failed. Every jaring client uses it, so they all fail the
//! same clear way.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Why a client could not connect; the message names the host and port as the user gave them.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    /// The host name did not resolve.
    #[error("{host}:{port}: cannot resolve host")]
    Resolve {
        /// Host as given.
        host: String,
        /// Port as given.
        port: u16,
        /// What the resolver said.
        source: io::Error,
    },
    /// No address of the host accepted the connection in time.
    #[error("{host}:{port}: cannot connect")]
    Connect {
        /// Host as given.
        host: String,
        /// Port as given.
        port: u16,
        /// The last address's error.
        source: io::Error,
    },
    /// The host's name cannot be checked against a certificate.
    #[error("{host}: not a host name or address a TLS certificate can name")]
    ServerName {
        /// Host as given.
        host: String,
    },
    /// Connected, but the TLS handshake failed (see the source: e.g. an unknown issuer).
    #[error(
        "{host}:{port}: TLS handshake failed (does the port take TLS? does --ca name the CA that \
         signed the server's certificate?)"
    )]
    Tls {
        /// Host as given.
        host: String,
        /// Port as given.
        port: u16,
        /// What rustls said.
        source: io::Error,
    },
}

/// TLS for a client connection: its rustls settings (trust, resumption, key log).
#[derive(Debug, Clone)]
pub struct ClientTls {
    /// The settings; one `Arc` shared by every connection lets them resume sessions.
    pub config: Arc<rustls::ClientConfig>,
}

/// A client's connection: plain TCP or TLS over it.
#[derive(Debug)]
pub enum ClientStream {
    /// Plaintext.
    Tcp(TcpStream),
    /// TLS, after its handshake.
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl ClientStream {
    /// The TCP connection underneath.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Self::Tcp(s) => s,
            Self::Tls(s) => s.get_ref().0,
        }
    }

    /// Whether this TLS connection resumed an earlier session (an abbreviated handshake).
    pub fn resumed(&self) -> bool {
        match self {
            Self::Tcp(_) => false,
            Self::Tls(s) => s.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed),
        }
    }

    /// The TLS protocol version and cipher suite, for a client to show (`None`: plaintext).
    pub fn tls_summary(&self) -> Option<String> {
        let Self::Tls(s) = self else { return None };
        let c = s.get_ref().1;
        let version = c
            .protocol_version()
            .map_or("?".into(), |v| format!("{v:?}"));
        let suite = c
            .negotiated_cipher_suite()
            .map_or("?".into(), |cs| format!("{:?}", cs.suite()));
        Some(format!("{version}, {suite}"))
    }
}

impl AsyncRead for ClientStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            // A server that closes without close_notify has still said all it will (our
            // protocols frame their replies), as on plain TCP.
            Self::Tls(s) => match Pin::new(s).poll_read(cx, buf) {
                Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    Poll::Ready(Ok(()))
                }
                other => other,
            },
        }
    }
}

impl AsyncWrite for ClientStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// [`dial`], then (with `tls`) a TLS handshake within the same `timeout`, verifying the
/// server's certificate against `host` as given.
pub async fn connect(
    host: &str,
    port: u16,
    timeout: Duration,
    tls: Option<&ClientTls>,
) -> Result<ClientStream, DialError> {
    let tcp = dial(host, port, timeout).await?;
    let Some(tls) = tls else {
        return Ok(ClientStream::Tcp(tcp));
    };
    let name = jaring_tls::server_name(host).map_err(|_| DialError::ServerName {
        host: host.to_owned(),
    })?;
    handshake(tcp, &tls.config, name, timeout)
        .await
        .map_err(|source| DialError::Tls {
            host: host.to_owned(),
            port,
            source,
        })
}

/// A client TLS handshake over `tcp` within `timeout`, verifying the server as `name`. A
/// timeout is an error of kind `TimedOut` (a plaintext server waits for a request and says
/// nothing).
pub async fn handshake(
    tcp: TcpStream,
    config: &Arc<rustls::ClientConfig>,
    name: ServerName<'static>,
    timeout: Duration,
) -> io::Result<ClientStream> {
    let connector = tokio_rustls::TlsConnector::from(Arc::clone(config));
    match tokio::time::timeout(timeout, connector.connect(name, tcp)).await {
        Ok(Ok(stream)) => Ok(ClientStream::Tls(Box::new(stream))),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "no handshake within {} s (a plaintext server waits for a request and says nothing)",
                timeout.as_secs_f64()
            ),
        )),
    }
}
/// Connects to `host:port`, trying each resolved address in turn, each within `timeout`, with
/// TCP_NODELAY set (every jaring protocol is request/reply).
pub async fn dial(host: &str, port: u16, timeout: Duration) -> Result<TcpStream, DialError> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|source| DialError::Resolve {
            host: host.to_owned(),
            port,
            source,
        })?
        .collect();
    let mut last = io::Error::new(io::ErrorKind::NotFound, "the host has no addresses");
    for addr in addrs {
        match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Ok(Err(e)) => last = e,
            Err(_) => {
                last = io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("timed out after {} s", timeout.as_secs_f64()),
                );
            }
        }
    }
    Err(DialError::Connect {
        host: host.to_owned(),
        port,
        source: last,
    })
}
