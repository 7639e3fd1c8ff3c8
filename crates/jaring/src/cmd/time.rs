//! `jaring time serve|client`.

use std::sync::Arc;

use anyhow::anyhow;
use jaring_runtime::{CancellationToken, Server};
use jaring_time::TimeService;
use jaring_time::client::{self, ClientOptions};
use jiff::tz::TimeZone;

use crate::cli::{TimeClientArgs, TimeCommand, TimeServeArgs};
use crate::cmd::{bind_failure, seconds};
use crate::{CmdResult, Failure, signal};

/// Runs a `jaring time` subcommand.
pub async fn run(command: TimeCommand) -> CmdResult {
    match command {
        TimeCommand::Serve(args) => serve(args).await,
        TimeCommand::Client(args) => client(args).await,
    }
}

async fn serve(args: TimeServeArgs) -> CmdResult {
    let tz = match &args.tz {
        Some(name) => TimeZone::get(name).map_err(|e| {
            Failure::Usage(anyhow!(
                "unknown time zone {name:?} ({e}); use an IANA name such as Asia/Jakarta or UTC"
            ))
        })?,
        None => TimeZone::system(),
    };
    let config = args.server.config(args.port, args.max_line)?;
    let server = Server::bind(config).await.map_err(bind_failure)?;
    tracing::info!(
        tz = tz.iana_name().unwrap_or("local"),
        "time server ready: try `jaring time client --port {}` or `nc -C 127.0.0.1 {}`",
        server.local_addr().port(),
        server.local_addr().port()
    );
    let shutdown = CancellationToken::new();
    signal::spawn(shutdown.clone());
    server
        .serve(Arc::new(TimeService::new(tz, args.max_line)), shutdown)
        .await;
    Ok(())
}

async fn client(args: TimeClientArgs) -> CmdResult {
    let opts = ClientOptions {
        host: args.host,
        port: args.port,
        count: args.count,
        interval: seconds("interval", args.interval)?,
        timeout: seconds("timeout", args.timeout)?,
    };
    let mut stdout = std::io::stdout().lock();
    client::run(&opts, &mut stdout).await?;
    Ok(())
}
