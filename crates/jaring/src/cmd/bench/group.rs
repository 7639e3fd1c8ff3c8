//! `jaring bench chat --group`: the group workload's flags, run and report.

use std::io::Write as _;

use anyhow::anyhow;
use comfy_table::{Table, presets::UTF8_BORDERS_ONLY};
use jaring_bench::chat_group::{GroupOptions, GroupReport, Protocol};

use crate::cli::{BenchChatArgs, GroupProtocol};
use crate::cmd::seconds;
use crate::{CmdResult, Failure};
use jaring_bench::units::{count, micros};

/// Runs the group workload and prints its report; fails if a delivery was lost or duplicated.
pub async fn run(c: &BenchChatArgs) -> CmdResult {
    let protocol = match c.protocol {
        GroupProtocol::Jaring => Protocol::Jaring,
        GroupProtocol::Irc => Protocol::Irc,
    };
    let mut opts = GroupOptions::new(protocol);
    opts.members = c.members;
    opts.senders = c.senders;
    if let Some(rate) = c.load.rate {
        // Whole messages a second; the check before the run refused anything not above 0.
        opts.rate = (rate.round() as u32).max(1);
    }
    opts.size = c.size.max(32);
    opts.duration = seconds("duration", c.load.duration)?;
    opts.user_prefix.clone_from(&c.user_prefix);
    c.password().clone_into(&mut opts.password);
    if let Some(g) = &c.group_name {
        opts.group.clone_from(g);
    }
    if opts.senders == 0 || opts.senders > opts.members || opts.rate == 0 || opts.duration.is_zero()
    {
        return Err(Failure::Usage(anyhow!(
            "need --senders between 1 and --members, --rate above 0 and a --duration"
        )));
    }
    opts.tls = super::bench_tls(&c.load)?;
    if opts.tls.is_some() && protocol == Protocol::Irc {
        return Err(Failure::Usage(anyhow!(
            "--tls is for jaring realms: --protocol irc drives an IRC server in plaintext"
        )));
    }
    let target = super::reachable(&c.load.host, c.port, opts.tls.as_ref()).await?;
    let report = jaring_bench::chat_group::run(target, &opts)
        .await
        .map_err(|e| Failure::Runtime(e.into()))?;
    print(&report, c.load.json)?;
    if report.lost > 0 || report.duplicated > 0 {
        return Err(Failure::Runtime(anyhow!(
            "{} deliveries lost, {} duplicated",
            report.lost,
            report.duplicated
        )));
    }
    Ok(())
}

fn print(r: &GroupReport, json: bool) -> Result<(), Failure> {
    let mut stdout = std::io::stdout().lock();
    if json {
        let text = serde_json::to_string(r).map_err(|e| Failure::Runtime(e.into()))?;
        let _ = writeln!(stdout, "{text}");
        return Ok(());
    }
    let mut table = Table::new();
    table.load_style(UTF8_BORDERS_ONLY);
    let rows = [
        ("server", format!("{} ({:?})", r.target, r.protocol)),
        (
            "group",
            format!(
                "{} members, {} senders, {} msg/s for {:.0} s",
                count(r.members as u64),
                count(r.senders as u64),
                count(u64::from(r.rate)),
                r.duration_s
            ),
        ),
        ("messages sent", count(r.sent)),
        (
            "deliveries",
            format!("{} of {} due", count(r.delivered), count(r.expected)),
        ),
        (
            "deliveries/s",
            jaring_bench::units::rate(r.deliveries_per_s),
        ),
        (
            "lost / duplicated",
            format!(
                "{} / {} ({} out of order)",
                count(r.lost),
                count(r.duplicated),
                count(r.out_of_order)
            ),
        ),
        ("members cut loose", count(r.members_cut)),
        (
            "send→receive",
            format!(
                "p50 {}, p90 {}, p99 {}, max {}",
                micros(r.latency_p50_us),
                micros(r.latency_p90_us),
                micros(r.latency_p99_us),
                micros(r.latency_max_us)
            ),
        ),
        ("setup", format!("{:.1} s", r.setup_s)),
    ];
    for (k, v) in rows {
        table.add_row([k.to_owned(), v]);
    }
    let _ = writeln!(stdout, "{table}");
    Ok(())
}
