//! `jaring echo serve|client`.

use std::io::{IsTerminal as _, Write as _};
use std::sync::Arc;

use anyhow::{Context as _, anyhow};
use jaring_echo::client::{self, FileReport, Target};
use jaring_echo::{EchoConfig, EchoServer};
use jaring_runtime::{CancellationToken, Limits, Server};

use crate::cli::{EchoClientArgs, EchoCommand, EchoServeArgs};
use crate::cmd::{bind_failure, seconds};
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
    let server = Server::bind(config).await.map_err(bind_failure)?;
    let port = server.local_addr().port();
    tracing::info!(
        zero_copy = !args.copy && cfg!(target_os = "linux"),
        buffer = args.buffer,
        "echo server ready: try `jaring echo client --port {port} hello` or `nc 127.0.0.1 {port}`"
    );
    let shutdown = CancellationToken::new();
    signal::spawn(shutdown.clone());
    let echo = EchoServer::new(EchoConfig {
        stream_buffer: args.buffer,
        zero_copy: !args.copy,
    });
    server.serve(Arc::new(echo), shutdown).await;
    Ok(())
}

async fn client(args: EchoClientArgs) -> CmdResult {
    let target = Target {
        host: args.host.clone(),
        port: args.port,
        timeout: seconds("timeout", args.timeout)?,
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
