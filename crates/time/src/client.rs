//! `jaring time client`: connect, send `TIME` N times at an interval, print each reply, `QUIT`.

use std::io::{self, Write};
use std::net::SocketAddr;
use std::time::Duration;

use jaring_proto::time::{Hms, ReplyError, parse_reply};
use jaring_runtime::{ClientTls, DialError, connect};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};

/// Longest reply line the client accepts; a real reply is 14 bytes, an `ERR` a few dozen.
const MAX_REPLY: u64 = 4096;

/// What the client does.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Host name or address of the server.
    pub host: String,
    /// Server port.
    pub port: u16,
    /// How many TIME requests to send.
    pub count: u64,
    /// Pause between requests.
    pub interval: Duration,
    /// Limit on connecting and on waiting for each reply.
    pub timeout: Duration,
    /// TLS, if the server is to be spoken to over it.
    pub tls: Option<ClientTls>,
}

/// Why the client failed. Every message names the server, so a script's log says where.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Resolving or connecting failed.
    #[error(transparent)]
    Dial(#[from] DialError),
    /// The server did not answer in time.
    #[error("{server}: no reply within {secs} s", secs = .timeout.as_secs_f64())]
    Timeout {
        /// The server's address.
        server: SocketAddr,
        /// The limit that passed.
        timeout: Duration,
    },
    /// The server closed the connection before replying.
    #[error("{server}: connection closed before a reply arrived")]
    Closed {
        /// The server's address.
        server: SocketAddr,
    },
    /// The reply was not `JAM hh:mm:ss`, or was an `ERR`.
    #[error("{server}")]
    Reply {
        /// The server's address.
        server: SocketAddr,
        /// What was wrong with the reply.
        source: ReplyError,
    },
    /// Reading or writing the socket failed.
    #[error("{server}")]
    Io {
        /// The server's address.
        server: SocketAddr,
        /// The socket error.
        source: io::Error,
    },
    /// Writing the output failed (e.g. a closed pipe).
    #[error("cannot write output")]
    Output(#[source] io::Error),
}

/// Runs the client, writing one line per reply (`JAM hh:mm:ss`) to `out`.
pub async fn run(opts: &ClientOptions, out: &mut impl Write) -> Result<Vec<Hms>, ClientError> {
    let stream = connect(&opts.host, opts.port, opts.timeout, opts.tls.as_ref()).await?;
    let server = stream.tcp().peer_addr().map_err(|source| {
        ClientError::Dial(DialError::Connect {
            host: opts.host.clone(),
            port: opts.port,
            source,
        })
    })?;
    let io_err = |source| ClientError::Io { server, source };
    let mut stream = BufReader::new(stream);
    let mut times = Vec::with_capacity(opts.count.min(1024) as usize);
    let mut line = Vec::with_capacity(64);
    for i in 0..opts.count {
        if i > 0 && !opts.interval.is_zero() {
            tokio::time::sleep(opts.interval).await;
        }
        let request = stream.get_mut();
        request.write_all(b"TIME\r\n").await.map_err(io_err)?;
        // TLS holds the record until flushed.
        request.flush().await.map_err(io_err)?;
        line.clear();
        let mut limited = (&mut stream).take(MAX_REPLY);
        match tokio::time::timeout(opts.timeout, limited.read_until(b'\n', &mut line)).await {
            Err(_) => {
                return Err(ClientError::Timeout {
                    server,
                    timeout: opts.timeout,
                });
            }
            Ok(Err(e)) => return Err(io_err(e)),
            Ok(Ok(0)) => return Err(ClientError::Closed { server }),
            Ok(Ok(_)) => {}
        }
        let Some(body) = line.strip_suffix(b"\n") else {
            // No line ending within the cap, or EOF mid-line: either way not a reply.
            return Err(ClientError::Reply {
                server,
                source: parse_reply(&line)
                    .err()
                    .unwrap_or(ReplyError::Malformed(String::new())),
            });
        };
        let body = body.strip_suffix(b"\r").unwrap_or(body);
        let hms = parse_reply(body).map_err(|source| ClientError::Reply { server, source })?;
        writeln!(out, "JAM {hms}").map_err(ClientError::Output)?;
        times.push(hms);
    }
    // QUIT, then wait briefly for the server to close first, so the TIME_WAIT stays on its side.
    let stream = stream.get_mut();
    if stream.write_all(b"QUIT\r\n").await.is_ok() && stream.flush().await.is_ok() {
        let mut sink = [0u8; 64];
        let _ = tokio::time::timeout(Duration::from_secs(1), stream.read(&mut sink)).await;
    }
    Ok(times)
}
