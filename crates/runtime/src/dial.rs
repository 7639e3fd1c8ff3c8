//! The client side's one way to connect: resolve, try every address in turn, each within a
//! timeout, and say which host and port failed. Every jaring client uses it, so they all fail the
//! same clear way.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

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
