//! `jaring bench chat --push`: the push workload's flags, run and report.

use std::io::Write as _;

use anyhow::anyhow;
use comfy_table::{Table, presets::UTF8_BORDERS_ONLY};
use jaring_bench::chat_push::{PushOptions, PushReport};
use jaring_bench::units::{bytes, count, micros};

use crate::cli::BenchChatArgs;
use crate::cmd::seconds;
use crate::{CmdResult, Failure};

/// Runs the push workload and prints its report; fails, loudly, if a message was lost,
/// duplicated or pushed out of order.
pub async fn run(c: &BenchChatArgs) -> CmdResult {
    let duration = seconds("duration", c.load.duration)?;
    if c.watchers == 0 || c.senders == 0 || duration.is_zero() || c.messages == Some(0) {
        return Err(Failure::Usage(anyhow!(
            "need --watchers and --senders of at least 1, a --duration above 0 and --messages (if given) above 0"
        )));
    }
    let mut opts = PushOptions {
        watchers: c.watchers,
        senders: c.senders,
        duration,
        messages: c.messages,
        // The tag, sender, number and nanoseconds fit in 48 bytes.
        size: c.size.max(48),
        user_prefix: c.user_prefix.clone(),
        password: c.password().to_owned(),
        tls: super::bench_tls(&c.load)?,
        ..PushOptions::default()
    };
    if let Some(rate) = c.load.rate {
        opts.rate = rate;
    }
    let target = super::reachable(&c.load.host, c.port, opts.tls.as_ref()).await?;
    opts.server_pid = super::server_pid(c, target).await;
    eprintln!(
        "jaring bench: {} watching and {} sending connection{} to {target}, {} msgs/s for {} s{}",
        count(opts.watchers as u64),
        count(opts.senders as u64),
        if opts.senders == 1 { "" } else { "s" },
        opts.rate,
        c.load.duration,
        opts.messages
            .map_or_else(String::new, |m| format!(" (at most {m} messages)")),
    );
    let report = jaring_bench::chat_push::run(target, &opts)
        .await
        .map_err(|e| Failure::Runtime(e.into()))?;
    print(&report, c.load.json)?;
    if !report.exact() {
        eprintln!(
            "jaring bench: PUSH IS NOT EXACTLY ONCE: {} lost, {} duplicated, {} out of order of {} sent",
            report.lost, report.duplicated, report.out_of_order, report.sent
        );
        return Err(Failure::Runtime(anyhow!(
            "{} messages lost, {} duplicated, {} out of order",
            report.lost,
            report.duplicated,
            report.out_of_order
        )));
    }
    if report.sent == 0 {
        return Err(Failure::Runtime(anyhow!(
            "no message was sent ({} send errors): can the senders send to the watchers?",
            report.send_errors
        )));
    }
    Ok(())
}

fn print(r: &PushReport, json: bool) -> Result<(), Failure> {
    let mut stdout = std::io::stdout().lock();
    if json {
        let text = serde_json::to_string_pretty(r).map_err(|e| Failure::Runtime(e.into()))?;
        let _ = writeln!(stdout, "{text}");
        return Ok(());
    }
    let l = &r.latency;
    let mut rows = vec![
        ("workload", "chat (push)".to_owned()),
        ("target", r.target.clone()),
        (
            "connections",
            format!(
                "{} watching, {} sending",
                count(r.watchers as u64),
                count(r.senders as u64)
            ),
        ),
        (
            "load",
            format!(
                "{} msgs/s asked for {:.1} s (sent for {:.1} s)",
                jaring_bench::units::rate(r.rate_per_s),
                r.duration_s,
                r.sending_s
            ),
        ),
        (
            "sent (OK)",
            format!("{} ({} errors)", count(r.sent), count(r.send_errors)),
        ),
        ("pushed", count(r.pushed)),
        (
            "lost / duplicated",
            format!(
                "{} / {} ({} out of order){}",
                count(r.lost),
                count(r.duplicated),
                count(r.out_of_order),
                if r.lost + r.duplicated + r.out_of_order > 0 {
                    "  <-- NOT EXACTLY ONCE"
                } else {
                    ""
                }
            ),
        ),
        (
            "send→pushed",
            format!(
                "p50 {}, p90 {}, p99 {}, max {}",
                micros(l.p50_us),
                micros(l.p90_us),
                micros(l.p99_us),
                micros(l.max_us)
            ),
        ),
        (
            "send→OK (commit)",
            format!(
                "p50 {}, p99 {}",
                micros(r.send_ok.p50_us),
                micros(r.send_ok.p99_us)
            ),
        ),
        (
            "watches ended early",
            match &r.watch_end_reason {
                Some(why) => format!("{} (first: {why})", count(r.watches_ended)),
                None => count(r.watches_ended),
            },
        ),
        ("ack errors", count(r.ack_errors)),
        ("earlier runs' events", count(r.stale)),
        ("setup", format!("{:.1} s", r.setup_s)),
    ];
    if let Some(s) = &r.server {
        rows.push((
            "server RSS",
            format!(
                "{} before, {} watching ({} per watcher), {} at the end",
                bytes(s.rss_before_kib * 1024),
                bytes(s.rss_watching_kib * 1024),
                bytes(s.rss_per_watcher_bytes),
                bytes(s.rss_end_kib * 1024)
            ),
        ));
        rows.push((
            "server CPU",
            format!(
                "{:.2} s ({:.0} µs per message)",
                s.cpu_s, s.cpu_us_per_message
            ),
        ));
    }
    let mut table = Table::new();
    table.load_style(UTF8_BORDERS_ONLY);
    for (k, v) in rows {
        table.add_row([k.to_owned(), v]);
    }
    let _ = writeln!(stdout, "{table}");
    Ok(())
}
