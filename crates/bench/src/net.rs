//! What every workload does on the wire the same way: connect with a timeout, name an I/O failure
//! by its kind (so the report groups errors), and pause after an error.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;

/// How long a worker waits for a connect or a reply before counting an error and trying again.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// After an error, a worker pauses this long so a dead server does not turn the generator into a spin.
pub const ERROR_PAUSE: Duration = Duration::from_millis(10);

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

/// A report key for an I/O error: the operation and the error's kind, not its full text.
pub fn io_kind(op: &str, e: &io::Error) -> String {
    format!("{op}: {}", e.kind())
}
