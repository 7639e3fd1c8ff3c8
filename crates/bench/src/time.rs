//! TIME workloads: `persistent` (N connections doing round trips) and `churn` (a connection per
//! request: connect, TIME, QUIT, close, as the labs' client does).

use std::net::SocketAddr;

use jaring_proto::time::{REPLY_LEN, parse_reply};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::engine::{self, LoadOptions, Report, Worker};
use crate::net::{ERROR_PAUSE, REQUEST_TIMEOUT, connect, io_kind};

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
        move |_, worker| async move {
            match mode {
                Mode::Persistent => persistent(target, worker).await,
                Mode::Churn => churn(target, worker).await,
            }
        },
    )
    .await
}

async fn persistent(target: SocketAddr, mut w: Worker) -> Worker {
    while !w.done() {
        let mut stream = match connect(target).await {
            Ok(s) => s,
            Err(kind) => {
                w.error(kind);
                tokio::time::sleep(ERROR_PAUSE).await;
                continue;
            }
        };
        let mut buf = [0u8; 256];
        while !w.done() {
            let Some(t0) = w.start_request().await else {
                break;
            };
            match round_trip(&mut stream, &mut buf).await {
                Ok(()) => w.record(t0.elapsed()),
                Err(kind) => {
                    w.error(kind);
                    tokio::time::sleep(ERROR_PAUSE).await;
                    break;
                }
            }
        }
        if w.done() {
            let _ = stream.write_all(b"QUIT\r\n").await;
        }
    }
    w
}

async fn churn(target: SocketAddr, mut w: Worker) -> Worker {
    let mut buf = [0u8; 256];
    while !w.done() {
        let Some(t0) = w.start_request().await else {
            break;
        };
        let result = async {
            let mut stream = connect(target).await?;
            round_trip(&mut stream, &mut buf).await?;
            stream
                .write_all(b"QUIT\r\n")
                .await
                .map_err(|e| io_kind("write", &e))?;
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
            Err(kind) => {
                w.error(kind);
                tokio::time::sleep(ERROR_PAUSE).await;
            }
        }
    }
    w
}

/// Sends one TIME and reads one whole, valid reply.
async fn round_trip(stream: &mut TcpStream, buf: &mut [u8]) -> Result<(), String> {
    stream
        .write_all(b"TIME\r\n")
        .await
        .map_err(|e| io_kind("write", &e))?;
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
