//! `jaring chat client`: a chat client a user of irssi would accept, on the realm's protocol.
//!
//! An async core on tokio owns the connection (TCP or TLS, [`jaring_runtime::connect`]); a
//! blocking thread reads what the user types (rustyline at a terminal, with Tab completion and a
//! hidden password prompt; lines from a pipe otherwise) and hands each line to the core.
//!
//! - After `auth` the client `watch`es: private messages and the messages of the user's groups
//!   are pushed and shown as they arrive (`[hh:mm] <nick> text`, `[hh:mm] [group] <nick> text`),
//!   above the prompt at a terminal without garbling the line being typed. The auth reply's unread
//!   counts are shown at login.
//! - It keeps cursors (the last private `seq` and the last `seq` of each group shown), drops
//!   anything at or below them, acknowledges them (`ack`) at least every 100 ms and every 256
//!   events, and pings every third of the idle timeout the `watch` reply gives.
//! - After any drop it says "Disconnected", reconnects with backoff (0.5 s doubling to 30 s, with
//!   jitter), reuses its token or logs in again (the password is kept in memory only), and
//!   `watch`es again with its cursors, so nothing is lost or shown twice; then "Reconnected".
//!   Lines typed meanwhile wait and are sent after the reconnect.
//! - Scripted (stdin not a terminal): commands run one at a time, each after the last one's
//!   reply; pushed messages print as they arrive; at the end of input the client waits
//!   `--linger` seconds for more, acknowledges what it showed, and exits with status 1 if any
//!   command failed, 2 if any line was a usage error.

mod command;
mod core;
mod display;
mod input;

use std::io::IsTerminal as _;
use std::sync::Arc;
use std::time::Duration;

use jaring_runtime::{ClientTls, DialError};

/// The port a realm serves clients on unless told otherwise.
pub const DEFAULT_PORT: u16 = crate::DEFAULT_PORT;

/// The first reconnect waits about this long; each failure doubles it.
pub const DEFAULT_BACKOFF_MIN: Duration = Duration::from_millis(500);

/// The longest wait between reconnect attempts.
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Scripted use gives up after this long without a connection (a terminal user never is
/// abandoned: they can quit).
pub const DEFAULT_PIPED_GIVE_UP: Duration = Duration::from_secs(120);

/// Acknowledge shown messages at least this often while they arrive.
pub const DEFAULT_ACK_EVERY: Duration = Duration::from_millis(100);

/// …and after at most this many unacknowledged events.
pub const DEFAULT_ACK_EVENTS: usize = 256;

/// Lines typed while disconnected that wait to be sent; more are refused, loudly.
pub const DEFAULT_MAX_QUEUED: usize = 100;

/// Most cursors in one `watch` or `ack` line (the protocol's limit).
pub const MAX_CURSORS_PER_LINE: usize = 256;

/// Largest frame (reply or event) the client accepts; the realm caps replies at 1 MiB.
pub const MAX_FRAME: usize = 64 << 20;

/// What the client does.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// The realm's host name or address.
    pub host: String,
    /// The realm's client port.
    pub port: u16,
    /// Print every reply and event as one JSON object per line.
    pub json: bool,
    /// Colour nicks and notices.
    pub color: bool,
    /// Connect (and TLS handshake) timeout, and how long a reply may take before the connection
    /// counts as dead.
    pub timeout: Duration,
    /// TLS, if the realm is to be spoken to over it.
    pub tls: Option<ClientTls>,
    /// Scripted use: how long to keep showing pushed messages after the end of input.
    pub linger: Duration,
}

/// How a run ended, for the exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Every command succeeded (exit status 0).
    Success,
    /// This many commands failed: an ERROR reply, a refused login, a send whose connection
    /// dropped before its reply (exit status 1).
    Failed(u32),
    /// This many lines were usage errors (exit status 2; wins over failures).
    Usage(u32),
}

/// Why the client stopped.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The first connection failed (later drops are reconnected).
    #[error(transparent)]
    Dial(#[from] DialError),
    /// Terminal line editing could not start.
    #[error("terminal input failed: {0}")]
    Terminal(String),
    /// Scripted use: the realm stayed unreachable.
    #[error(
        "{0}: no connection for {1} s; giving up (the realm is down or unreachable; run the \
         script again once it is back)"
    )]
    GaveUp(String, u64),
}

/// Runs the client until `quit`, Ctrl-D or the end of input (then `--linger`).
pub async fn run(opts: ClientOptions) -> Result<Outcome, ClientError> {
    let interactive = std::io::stdin().is_terminal();
    let shared = Arc::new(input::Shared::default());
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let printer = if interactive {
        let (ptx, prx) = tokio::sync::oneshot::channel();
        let shared = Arc::clone(&shared);
        let wait = opts.timeout;
        std::thread::Builder::new()
            .name("chat-input".into())
            .spawn(move || input::terminal(shared, tx, ptx, wait))
            .map_err(|e| ClientError::Terminal(e.to_string()))?;
        prx.await
            .map_err(|_| ClientError::Terminal("the input thread ended".into()))?
            .map_err(ClientError::Terminal)?
    } else {
        std::thread::Builder::new()
            .name("chat-input".into())
            .spawn(move || input::piped(tx))
            .map_err(|e| ClientError::Terminal(e.to_string()))?;
        None
    };
    core::Core::new(opts, interactive, printer, shared)
        .run(rx)
        .await
}

/// Splits `--server HOST[:PORT]` (`[::1]:8889`, `::1`, `example.org`) into host and port;
/// `None` if a port is given and is not a number.
pub fn parse_server(server: &str) -> Option<(String, Option<u16>)> {
    if let Some(rest) = server.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        return match after.strip_prefix(':') {
            Some(port) => Some((host.to_owned(), Some(port.parse().ok()?))),
            None if after.is_empty() => Some((host.to_owned(), None)),
            None => None,
        };
    }
    match server.rsplit_once(':') {
        // More than one colon and no brackets: a bare IPv6 address.
        Some((host, _)) if host.contains(':') => Some((server.to_owned(), None)),
        Some((host, port)) => Some((host.to_owned(), Some(port.parse().ok()?))),
        None => Some((server.to_owned(), None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_addresses_with_and_without_ports() {
        let p = |s: &str| parse_server(s);
        assert_eq!(p("127.0.0.1"), Some(("127.0.0.1".into(), None)));
        assert_eq!(p("127.0.0.1:8899"), Some(("127.0.0.1".into(), Some(8899))));
        assert_eq!(p("localhost"), Some(("localhost".into(), None)));
        assert_eq!(p("::1"), Some(("::1".into(), None)));
        assert_eq!(p("[::1]:9"), Some(("::1".into(), Some(9))));
        assert_eq!(p("[::1]"), Some(("::1".into(), None)));
        assert_eq!(p("host:port"), None);
    }
}
