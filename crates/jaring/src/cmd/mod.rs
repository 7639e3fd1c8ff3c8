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
pub fn completions(shell: clap_complete::Shell) -> Result<(), Failure> {
    // Made in memory first: clap_complete panics when a write fails.
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "jaring", &mut script);
    print_all(&script, "the completion script")
}

/// Writes `bytes` to stdout. A reader that stops early (`| head`) is not an error: what it
/// wanted was printed.
fn print_all(bytes: &[u8], what: &str) -> Result<(), Failure> {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(Failure::Runtime(
            anyhow::Error::new(e).context(format!("cannot write {what}")),
        )),
        _ => Ok(()),
    }
}

/// `jaring man`: the manual page on stdout, or every page (one per subcommand) in `dir`.
pub fn man(dir: Option<&std::path::Path>) -> Result<(), Failure> {
    if let Some(dir) = dir {
        return clap_mangen::generate_to(Cli::command(), dir).map_err(|e| {
            Failure::Runtime(anyhow::Error::new(e).context(format!(
                "cannot write the manual pages into {}",
                dir.display()
            )))
        });
    }
    let mut page = Vec::new();
    clap_mangen::Man::new(Cli::command())
        .render(&mut page)
        .map_err(|e| Failure::Runtime(e.into()))?;
    print_all(&page, "the manual page")
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
