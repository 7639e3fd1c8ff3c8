//! One module per subcommand: each turns parsed flags into calls on its library crate.

pub mod bench;
pub mod chat;
pub mod echo;
pub mod info;
pub mod lab;
pub mod time;
pub mod tls;

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

/// The TLS a server's flags ask for: `None` without `--tls-cert`. A certificate or key that
/// cannot be used is a usage error, reported before any port is bound.
pub fn tls_listen(
    args: &crate::cli::TlsServerArgs,
    mode: jaring_runtime::TlsMode,
) -> Result<Option<jaring_runtime::TlsListen>, Failure> {
    match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => load_tls(cert, key, mode).map(Some),
        _ => Ok(None),
    }
}

/// Loads a PEM certificate chain and key into a TLS listener's settings.
pub fn load_tls(
    cert: &std::path::Path,
    key: &std::path::Path,
    mode: jaring_runtime::TlsMode,
) -> Result<jaring_runtime::TlsListen, Failure> {
    let id = jaring_tls::Identity::from_pem_files(cert, key)
        .map_err(|e| Failure::Usage(anyhow::Error::new(e)))?;
    let config =
        jaring_tls::server_config(&id).map_err(|e| Failure::Usage(anyhow::Error::new(e)))?;
    Ok(jaring_runtime::TlsListen { config, mode })
}

/// The client TLS the flags ask for: `None` without `--tls` (`--ca` or `--insecure` imply it).
/// `--insecure` says on stderr, every time, what it gives up.
pub fn client_tls(
    args: &crate::cli::TlsClientArgs,
) -> Result<Option<jaring_runtime::ClientTls>, Failure> {
    if !args.tls && args.ca.is_none() && !args.insecure {
        return Ok(None);
    }
    let trust = match (&args.ca, args.insecure) {
        (Some(ca), _) => jaring_tls::Trust::CaFile(ca.clone()),
        (None, true) => {
            eprintln!(
                "warning: --insecure: the server's certificate is NOT verified; anyone on the \
                 path can read and change this connection (use --ca FILE instead)"
            );
            jaring_tls::Trust::Insecure
        }
        (None, false) => jaring_tls::Trust::System,
    };
    let config =
        jaring_tls::client_config(&trust).map_err(|e| Failure::Usage(anyhow::Error::new(e)))?;
    Ok(Some(jaring_runtime::ClientTls { config }))
}

/// The mode `--tls-only` asks for.
pub fn tls_mode(only: bool) -> jaring_runtime::TlsMode {
    if only {
        jaring_runtime::TlsMode::Only
    } else {
        jaring_runtime::TlsMode::Both
    }
}
