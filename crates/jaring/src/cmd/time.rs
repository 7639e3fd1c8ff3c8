//! `jaring time serve|client`.

use std::sync::Arc;

use jaring_runtime::{CancellationToken, Server, TlsMode};
use jaring_time::TimeService;
use jaring_time::client::{self, ClientOptions};

use crate::cli::{TimeClientArgs, TimeCommand, TimeServeArgs};
use crate::cmd::{bind_failure, client_tls, seconds, tls_listen, tls_mode};
use crate::{CmdResult, signal};

/// Runs a `jaring time` subcommand.
pub async fn run(command: TimeCommand) -> CmdResult {
    match command {
        TimeCommand::Serve(args) => serve(args).await,
        TimeCommand::Client(args) => client(args).await,
    }
}

async fn serve(args: TimeServeArgs) -> CmdResult {
    let tz = crate::cli::time_zone(args.tz.as_deref())?;
    let mut config = args.server.config(args.port, args.max_line)?;
    config.tls = tls_listen(&args.tls.tls, tls_mode(args.tls.tls_only))?;
    config.limits.handshake_timeout = args.tls.tls.handshake_timeout(None);
    let tls = config.tls.as_ref().map(|t| t.mode);
    let server = Server::bind(config).await.map_err(bind_failure)?;
    let port = server.local_addr().port();
    tracing::info!(
        tz = tz.iana_name().unwrap_or("local"),
        "time server ready: try `jaring time client --port {port}`{}",
        match tls {
            None => format!(" or `nc -C 127.0.0.1 {port}`"),
            Some(TlsMode::Both) => format!(
                ", `jaring time client --port {port} --tls --ca CA.pem` or `nc -C 127.0.0.1 {port}` (TLS and plaintext on one port)"
            ),
            Some(TlsMode::Only) => " --tls --ca CA.pem (TLS only)".to_owned(),
        }
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
        tls: client_tls(&args.tls)?,
    };
    let mut stdout = std::io::stdout().lock();
    client::run(&opts, &mut stdout).await?;
    Ok(())
}
