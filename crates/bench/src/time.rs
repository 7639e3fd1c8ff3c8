//! TIME workloads: `persistent` (N connections doing round trips) and `churn` (a connection per
//! request: connect, TIME, QUIT, close, as the labs' client does). Both speak TLS when the
//! options say so; churn then shows what a handshake per request costs, and how much session
//! resumption saves.

use std::net::SocketAddr;

use jaring_proto::time::{REPLY_LEN, parse_reply};
use jaring_runtime::ClientStream;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

use crate::engine::{self, LoadOptions, Report, Worker};
use crate::net::{REQUEST_TIMEOUT, Tls, io_kind, open};

/// Which TIME workload to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Each connection stays open and does TIME round trips back to back.
    Persistent,
    /// Each request opens its own connection: connect, TIME, QUIT, close.
    Churn,
}

impl Mode {
    /// The mode's name on the command line and in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Persistent => "persistent",
            Self::Churn => "churn",
        }
    }
}

/// Runs the TIME workload against `target`.
pub async fn run(target: SocketAddr, mode: Mode, opts: &LoadOptions) -> Report {
    engine::run(
        "time",
        mode.as_str(),
        &target.to_string(),
        opts,
        move |_, worker| {
            let tls = opts.tls.clone();
            async move {
                match mode {
                    Mode::Persistent => persistent(target, tls.as_ref(), worker).await,
                    Mode::Churn => churn(target, tls.as_ref(), worker).await,
                }
            }
        },
    )
    .await
}

async fn persistent(target: SocketAddr, tls: Option<&Tls>, mut w: Worker) -> Worker {
    while !w.done() {
        let Some(stream) = w.open(target, tls).await else {
            continue;
        };
        // The loop is compiled once per transport, so plaintext runs on the socket itself.
        match stream {
            ClientStream::Tcp(mut s) => requests(&mut s, &mut w).await,
            mut tls => requests(&mut tls, &mut w).await,
        }
    }
    w
}

/// Round trips on one connection until the run ends or one fails.
async fn requests<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S, w: &mut Worker) {
    let mut buf = [0u8; 256];
    while !w.done() {
        let Some(t0) = w.start_request().await else {
            break;
        };
        match round_trip(stream, &mut buf).await {
            Ok(()) => w.record(t0.elapsed()),
            Err(kind) => {
                w.error_pause(kind).await;
                break;
            }
        }
    }
    if w.done() {
        let _ = stream.write_all(b"QUIT\r\n").await;
        let _ = stream.flush().await;
    }
}

async fn churn(target: SocketAddr, tls: Option<&Tls>, mut w: Worker) -> Worker {
    let mut buf = [0u8; 256];
    while !w.done() {
        let Some(t0) = w.start_request().await else {
            break;
        };
        let result = async {
            let mut stream = open(target, tls).await?;
            w.opened(&stream);
            round_trip(&mut stream, &mut buf).await?;
            let quit = async {
                stream.write_all(b"QUIT\r\n").await?;
                stream.flush().await
            };
            quit.await.map_err(|e| io_kind("write", &e))?;
            // Wait for the server's close, so the TIME_WAIT lands on its side, not on our ports.
            match tokio::time::timeout(REQUEST_TIMEOUT, stream.read(&mut buf)).await {
                Ok(Ok(0)) => Ok(()),
                Ok(Ok(_)) => Err("data after QUIT".to_owned()),
                Ok(Err(e)) => Err(io_kind("read", &e)),
                Err(_) => Err("no close after QUIT".to_owned()),
            }
        }
        .await;
        match result {
            Ok(()) => w.record(t0.elapsed()),
            Err(kind) => w.error_pause(kind).await,
        }
    }
    w
}

/// Sends one TIME and reads one whole, valid reply.
async fn round_trip<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    buf: &mut [u8],
) -> Result<(), String> {
    let sent = async {
        stream.write_all(b"TIME\r\n").await?;
        // TLS holds the record until flushed; on TCP this returns at once.
        stream.flush().await
    };
    sent.await.map_err(|e| io_kind("write", &e))?;
    let mut have = 0;
    loop {
        let read = tokio::time::timeout(REQUEST_TIMEOUT, stream.read(&mut buf[have..]));
        let n = match read.await {
            Ok(Ok(0)) => return Err("closed by server".to_owned()),
            Ok(Ok(n)) => n,
            Ok(Err(e)) => return Err(io_kind("read", &e)),
            Err(_) => return Err("reply timeout".to_owned()),
        };
        have += n;
        if buf[..have].ends_with(b"\r\n") || have >= buf.len() {
            break;
        }
    }
    if have != REPLY_LEN {
        return Err("malformed reply".to_owned());
    }
    parse_reply(&buf[..REPLY_LEN - 2]).map_err(|_| "malformed reply".to_owned())?;
    Ok(())
}
