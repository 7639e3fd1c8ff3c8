//! Logging set-up: tracing to stderr, readable or JSON, filtered by RUST_LOG (default `info`, with
//! rustls's own messages at `error`; `jaring lab` without `-v`: `warn`).

use std::io::IsTerminal as _;

use tracing_subscriber::EnvFilter;

use crate::cli::{ColorChoice, GlobalArgs, LogFormat};

/// The filter without RUST_LOG. Every TLS failure reaches jaring as an error it reports itself,
/// in one line that says what to do; rustls's own warnings about the same failure would only
/// repeat it.
pub const DEFAULT_FILTER: &str = "info,rustls=error";

/// The filter for `jaring lab` without `-v`: its start-up table is the first screen, not the
/// servers' info lines.
pub const QUIET_FILTER: &str = "warn,rustls=error";

/// Installs the global subscriber with `default` as the filter unless RUST_LOG sets one. Logs
/// go to stderr so stdout stays clean for replies and `--json`.
pub fn init(args: &GlobalArgs, default: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    match args.log_format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.with_ansi(use_color(args.color)).init(),
    }
}

/// Whether stderr output should be coloured, by `--color` and NO_COLOR (<https://no-color.org>).
pub fn use_color(choice: ColorChoice) -> bool {
    match choice {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => {
            std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
                && std::io::stderr().is_terminal()
        }
    }
}
