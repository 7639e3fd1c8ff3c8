//! `jaring bench …`: runs a workload and prints its report as a table or JSON.

use std::io::{IsTerminal as _, Write as _};
use std::net::SocketAddr;

use anyhow::{Context as _, anyhow};
use comfy_table::{Table, presets::UTF8_BORDERS_ONLY};
use jaring_bench::{LoadOptions, Report};

use crate::cli::{BenchArgs, BenchWorkload, EchoMode, LoadArgs, TimeMode};
use crate::cmd::seconds;
use crate::{CmdResult, Failure};

/// Runs a `jaring bench` workload.
pub async fn run(args: BenchArgs) -> CmdResult {
    let report = match args.workload {
        BenchWorkload::Time(t) => {
            let (target, opts) = prepare(&t.load, t.port).await?;
            let mode = match t.mode {
                TimeMode::Persistent => jaring_bench::time::Mode::Persistent,
                TimeMode::Churn => jaring_bench::time::Mode::Churn,
            };
            let report = jaring_bench::time::run(target, mode, &opts).await;
            print(&report, t.load.json)?;
            report
        }
        BenchWorkload::Echo(e) => {
            let (target, opts) = prepare(&e.load, e.port).await?;
            let mode = match e.mode {
                EchoMode::Stream => jaring_bench::echo::Mode::Stream,
                EchoMode::RoundTrip => jaring_bench::echo::Mode::RoundTrip,
            };
            let size = e.size.unwrap_or_else(|| mode.default_size());
            let report = jaring_bench::echo::run(target, mode, size, &opts).await;
            print(&report, e.load.json)?;
            report
        }
    };
    if report.requests == 0 {
        return Err(Failure::Runtime(anyhow!(
            "no request succeeded against {} ({} errors): is the server running?",
            report.target,
            report.errors
        )));
    }
    Ok(())
}

async fn prepare(load: &LoadArgs, port: u16) -> Result<(SocketAddr, LoadOptions), Failure> {
    if load.connections == 0 {
        return Err(Failure::Usage(anyhow!("--connections must be at least 1")));
    }
    let duration = seconds("duration", load.duration)?;
    if duration.is_zero() {
        return Err(Failure::Usage(anyhow!(
            "--duration must be more than 0 seconds"
        )));
    }
    let target = tokio::net::lookup_host((load.host.as_str(), port))
        .await
        .with_context(|| format!("cannot resolve {}:{port}", load.host))?
        .next()
        .ok_or_else(|| anyhow!("{}:{port} has no address", load.host))?;
    let opts = LoadOptions {
        connections: load.connections,
        duration,
        progress: !load.json && std::io::stderr().is_terminal(),
    };
    Ok((target, opts))
}

fn print(report: &Report, json: bool) -> Result<(), Failure> {
    let mut stdout = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut stdout, report).context("cannot write the report")?;
        writeln!(stdout)?;
        return Ok(());
    }
    let l = &report.latency;
    let mut table = Table::new();
    table.load_style(UTF8_BORDERS_ONLY);
    table.set_header(["metric", "value"]);
    table.add_row([
        "workload",
        &format!("{} ({})", report.workload, report.mode),
    ]);
    table.add_row(["target", &report.target]);
    table.add_row(["connections", &report.connections.to_string()]);
    table.add_row(["duration", &format!("{:.1} s", report.duration_s)]);
    table.add_row(["requests", &report.requests.to_string()]);
    table.add_row(["errors", &report.errors.to_string()]);
    table.add_row(["requests/s", &format!("{:.0}", report.requests_per_s)]);
    for (name, us) in [
        ("p50", l.p50_us),
        ("p90", l.p90_us),
        ("p99", l.p99_us),
        ("max", l.max_us),
    ] {
        table.add_row([format!("latency {name}"), format!("{us} µs")]);
    }
    if let Some(t) = &report.throughput {
        table.add_row(["bytes echoed".to_owned(), t.bytes.to_string()]);
        table.add_row([
            "throughput".to_owned(),
            format!(
                "{:.1} MB/s ({:.2} Gbit/s)",
                t.bytes_per_s / 1e6,
                t.gbit_per_s
            ),
        ]);
    }
    writeln!(stdout, "{table}")?;
    for e in &report.error_kinds {
        writeln!(stdout, "  {} × {}", e.count, e.kind)?;
    }
    Ok(())
}
