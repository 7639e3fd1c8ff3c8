//! One module per subcommand: each turns parsed flags into calls on its library crate.

pub mod bench;
pub mod chat;
pub mod echo;
pub mod info;
pub mod lab;
pub mod time;

use clap::CommandFactory as _;

use crate::Failure;
use crate::cli::Cli;

/// `jaring completions SHELL`: prints the completion script on stdout.
pub fn completions(shell: clap_complete::Shell) {
    clap_complete::generate(shell, &mut Cli::command(), "jaring", &mut std::io::stdout());
}

/// Maps a failure to bind to whose fault it is: a bad configuration is the user's (exit 2), a taken
/// port or a refused bind is the environment's (exit 1).
pub fn bind_failure(e: jaring_runtime::BindError) -> Failure {
    match e {
        jaring_runtime::BindError::Config(_) => Failure::Usage(e.into()),
        other => Failure::Runtime(other.into()),
    }
}

/// A duration in seconds from the command line, refused if negative, infinite or absurd.
pub fn seconds(flag: &str, secs: f64) -> Result<std::time::Duration, Failure> {
    std::time::Duration::try_from_secs_f64(secs).map_err(|_| {
        Failure::Usage(anyhow::anyhow!(
            "--{flag} must be a number of seconds, 0 or more (got {secs})"
        ))
    })
}
