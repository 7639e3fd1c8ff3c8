//! `jaring`: the classic network-programming lab services as one fast, hardened binary.
//!
//! This crate is deliberately thin: it parses the command line, sets up logging and signals, builds
//! the tokio runtime, hands each subcommand to its library crate, and maps failures to exit codes
//! (0 success, 1 runtime failure, 2 usage or configuration error). `anyhow` lives only here.

#![forbid(unsafe_code)]

mod cli;
mod cmd;
mod logging;
mod signal;

use std::io::Write as _;
use std::process::ExitCode;

use clap::Parser as _;

use crate::cli::{Cli, Command};

/// mimalloc instead of glibc's malloc. The chat realm allocates and frees small buffers for every
/// request, reply and message across its worker and writer threads; glibc's allocator took ~10%
/// of a worker's samples there (`malloc_consolidate`, `_int_free`, `unlink_chunk`). In a pinned
/// A/B of the chat bench (4 interleaved rounds) mimalloc took the realm from 35.9k to 39.1k
/// durable messages a second, on 9% less CPU each.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A failure at the edge of the program, sorted by whose it was: the exit code follows from that.
#[derive(Debug)]
pub enum Failure {
    /// The user asked for something that cannot work (bad flag value, bad config): exit 2.
    Usage(anyhow::Error),
    /// It was right to try, and it failed (refused connection, bad reply): exit 1.
    Runtime(anyhow::Error),
}

impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(e: E) -> Self {
        Self::Runtime(e.into())
    }
}

/// The result of a subcommand.
pub type CmdResult = Result<(), Failure>;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let quiet =
        matches!(&cli.command, Command::Lab(lab) if lab.command.is_none() && !lab.args.verbose);
    logging::init(
        &cli.global,
        if quiet {
            logging::QUIET_FILTER
        } else {
            logging::DEFAULT_FILTER
        },
    );
    let result = match cli.command {
        Command::Completions { shell } => cmd::completions(shell),
        Command::Man { dir } => cmd::man(dir.as_deref()),
        // The lab's hosts are made, and entered, before the runtime's threads exist.
        Command::Lab(lab) => cmd::lab::dispatch(lab, |args| {
            run_async(
                Command::Lab(cli::LabCli {
                    command: None,
                    args,
                }),
                cli.global.color,
            )
        }),
        command => run_async(command, cli.global.color),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            let (code, error) = match failure {
                Failure::Usage(e) => (2, e),
                Failure::Runtime(e) => (1, e),
            };
            // One line, the whole cause chain: what failed and why, as `a: b: c`.
            let _ = writeln!(std::io::stderr(), "jaring: {error:#}");
            ExitCode::from(code)
        }
    }
}

/// Runs an async subcommand; `color` is `--color` (the chat client colours nicks by it).
fn run_async(command: Command, color: cli::ColorChoice) -> CmdResult {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("jaring-worker")
        .build()
        .map_err(|e| {
            Failure::Runtime(anyhow::Error::new(e).context("cannot start the async runtime"))
        })?;
    let result = runtime.block_on(async move {
        match command {
            Command::Time(args) => cmd::time::run(args).await,
            Command::Echo(args) => cmd::echo::run(args).await,
            Command::Info(args) => cmd::info::run(args).await,
            Command::Chat(args) => cmd::chat::run(args, color).await,
            Command::Bench(args) => cmd::bench::run(args).await,
            Command::Lab(lab) => cmd::lab::run(lab.args).await,
            Command::Tls(args) => cmd::tls::run(args).await,
            Command::Completions { .. } | Command::Man { .. } => Ok(()),
        }
    });
    // Whatever still runs once the command is done (a connection kept past the grace period, a
    // blocking storage call) is abandoned, not waited for: the grace period was the wait, and
    // dropping the runtime would block on blocking tasks without limit.
    runtime.shutdown_background();
    result
}
