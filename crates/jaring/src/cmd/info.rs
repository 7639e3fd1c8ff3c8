//! `jaring info [HOST] [PORT]`.

use std::io::Write as _;

use anyhow::Context as _;
use jaring_info::InfoError;

use crate::cli::InfoArgs;
use crate::cmd::seconds;
use crate::{CmdResult, Failure};

/// Looks up the host on a blocking thread (getaddrinfo may wait seconds for DNS) and prints the
/// report. A name that does not resolve is the user's to fix: exit 2.
pub async fn run(args: InfoArgs) -> CmdResult {
    let timeout = seconds("timeout", args.timeout)?;
    let (host, port) = (args.host.clone(), args.port.clone());
    let info = tokio::task::spawn_blocking(move || jaring_info::gather(&host, &port, timeout))
        .await
        .context("the lookup thread failed")?
        .map_err(|e| match e {
            InfoError::Resolve { .. } => Failure::Usage(e.into()),
            other => Failure::Runtime(other.into()),
        })?;
    let mut stdout = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut stdout, &info).context("cannot write the report")?;
        writeln!(stdout)?;
    } else {
        write!(stdout, "{}", jaring_info::render(&info))?;
    }
    Ok(())
}
