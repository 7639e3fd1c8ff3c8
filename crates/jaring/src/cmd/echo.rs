//! `jaring echo serve|client`.

use std::io::{IsTerminal as _, Write as _};
use std::sync::Arc;

use anyhow::{Context as _, anyhow};
use jaring_echo::client::{self, FileReport, Target};
use jaring_echo::{EchoConfig, EchoServer};
use jaring_runtime::{CancellationToken, Limits, Server, TlsMode};

use crate::cli::{EchoClientArgs, EchoCommand, EchoServeArgs};
use crate::cmd::{bind_failure, client_tls, seconds, tls_listen};
use crate::{CmdResult, Failure, signal};

/// Runs a `jaring echo` subcommand.
pub async fn run(command: EchoCommand) -> CmdResult {
    match command {
        EchoCommand::Serve(args) => serve(args).await,
        EchoCommand::Client(args) => client(args).await,
    }
}

async fn serve(args: EchoServeArgs) -> CmdResult {
    if args.buffer == 0 {
        return Err(Failure::Usage(anyhow!("--buffer must be at least 1 byte")));
    }
    // Echo has no lines; the line limit only satisfies the shared configuration.
    let config = args.server.config(args.port, Limits::default().max_line)?;
    let tls = match tls_listen(&args.tls, TlsMode::Only)? {
        Some(tls) => {
            let mut tls_config = config.clone();
            tls_config.listen.port = args.tls_port;
            tls_config.tls = Some(tls);
            tls_config.limits.handshake_timeout = args.tls.handshake_timeout(None);
            Some(tls_config)
        }
        None => None,
    };
    let server = Server::bind(config).await.map_err(bind_failure)?;
    let tls_server = match tls {
        Some(c) => Some(Server::bind(c).await.map_err(bind_failure)?),
        None => None,
    };
    let port = server.local_addr().port();
    tracing::info!(
        zero_copy = !args.copy && cfg!(target_os = "linux"),
        buffer = args.buffer,
        "echo server ready: try `jaring echo client --port {port} hello` or `nc 127.0.0.1 {port}`"
    );
    if let Some(s) = &tls_server {
        let tls_port = s.local_addr().port();
        tracing::info!(
            "echo over TLS on port {tls_port}: try `jaring echo client --tls --ca CA.pem --port {tls_port} hello`"
        );
    }
    let shutdown = CancellationToken::new();
    signal::spawn(shutdown.clone());
    let echo = Arc::new(EchoServer::new(EchoConfig {
        stream_buffer: args.buffer,
        zero_copy: !args.copy,
    }));
    match tls_server {
        None => server.serve(echo, shutdown).await,
        Some(tls_server) => {
            tokio::join!(
                server.serve(Arc::clone(&echo), shutdown.clone()),
                tls_server.serve(echo, shutdown)
            );
        }
    }
    Ok(())
}

async fn client(args: EchoClientArgs) -> CmdResult {
    let tls = client_tls(&args.tls)?;
    let default_port = if tls.is_some() {
        jaring_echo::DEFAULT_TLS_PORT
    } else {
        jaring_echo::DEFAULT_PORT
    };
    let target = Target {
        host: args.host.clone(),
        port: args.port.unwrap_or(default_port),
        timeout: seconds("timeout", args.timeout)?,
        tls,
    };
    let mut stdout = std::io::stdout().lock();
    if let Some(path) = &args.file {
        let report = file(&target, path).await?;
        let secs = report.elapsed.as_secs_f64();
        writeln!(
            stdout,
            "echoed {} bytes in {secs:.3} s: {:.1} MB/s ({:.2} Gbit/s), verified byte for byte\nsha256 {}",
            report.bytes,
            report.bytes_per_s() / 1e6,
            report.bytes_per_s() * 8.0 / 1e9,
            report.sha256
        )?;
        return Ok(());
    }
    if args.interactive {
        let lines = client::read_lines(std::io::stdin().is_terminal());
        client::interactive(&target, lines, &mut stdout).await?;
        return Ok(());
    }
    let message = args.message.unwrap_or_default();
    if let Some(count) = args.repeat {
        let interval = seconds("interval", args.interval)?;
        client::repeat(&target, message.as_bytes(), count, interval, &mut stdout).await?;
        return Ok(());
    }
    let mut stderr = std::io::stderr().lock();
    client::message(
        &target,
        message.as_bytes(),
        args.chunk,
        args.verbose,
        &mut stdout,
        &mut stderr,
    )
    .await?;
    Ok(())
}

async fn file(target: &Target, path: &str) -> Result<FileReport, Failure> {
    let progress = std::io::stderr().is_terminal();
    if path == "-" {
        return Ok(client::file(target, tokio::io::stdin(), "stdin", None, progress).await?);
    }
    let input = tokio::fs::File::open(path)
        .await
        .with_context(|| format!("cannot open {path}"))
        .map_err(Failure::Usage)?;
    let size = input
        .metadata()
        .await
        .ok()
        .filter(|m| m.is_file())
        .map(|m| m.len());
    Ok(client::file(target, input, path, size, progress).await?)
}
