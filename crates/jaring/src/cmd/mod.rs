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

pub use crate::cli::seconds;
