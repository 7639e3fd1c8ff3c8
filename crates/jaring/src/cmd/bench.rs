//! `jaring bench …`: runs a workload and prints its report as a table or JSON.

use std::io::{IsTerminal as _, Write as _};
use std::net::SocketAddr;

use anyhow::{Context as _, anyhow};
use comfy_table::{Table, presets::UTF8_BORDERS_ONLY};
use jaring_bench::engine::Stop;
use jaring_bench::net::Tls;
use jaring_bench::units;
use jaring_bench::{LoadOptions, Report};

use crate::cli::{BenchArgs, BenchChatArgs, BenchWorkload, EchoMode, LoadArgs, TimeMode};
use crate::cmd::{client_tls, seconds};
use crate::{CmdResult, Failure};

mod group;
mod push;
mod users;

/// Runs a `jaring bench` workload; a chat workload on a realm of this machine makes its users
/// first and removes them after (see `users`).
pub async fn run(mut args: BenchArgs) -> CmdResult {
    // Checked before any user is made, so a usage error leaves nothing behind.
    check(&args.workload)?;
    let made = match &mut args.workload {
        BenchWorkload::Chat(c) => users::prepare(c).await?,
        _ => None,
    };
    let result = run_workload(args).await;
    if let Some(made) = made {
        made.finish().await;
    }
    result
}

/// The checks of the flags' combinations.
fn check(workload: &BenchWorkload) -> Result<(), Failure> {
    let paced = match workload {
        BenchWorkload::Echo(e) => (
            matches!(e.mode, EchoMode::Stream),
            "an echo stream has no requests to pace",
        ),
        BenchWorkload::Chat(c) => (
            !c.group && !c.push && (c.idle || c.drain || c.pipeline > 1),
            "chat paces single sends only: not with --idle, --drain or --pipeline",
        ),
        BenchWorkload::Time(_) => (false, ""),
    };
    let load = match workload {
        BenchWorkload::Time(t) => &t.load,
        BenchWorkload::Echo(e) => &e.load,
        BenchWorkload::Chat(c) => &c.load,
    };
    if let BenchWorkload::Chat(c) = workload
        && (c.group || c.drain || c.push)
        && (load.interval.is_some()
            || load.csv.is_some()
            || load.hdr_out.is_some()
            || load.plot.is_some())
    {
        return Err(Failure::Usage(anyhow!(
            "--interval, --csv, --hdr-out and --plot are for time, echo and chat sends, not --group, --push or --drain"
        )));
    }
    if let BenchWorkload::Chat(c) = workload
        && c.ws
        && (c.group || c.push || c.drain || c.cross_realm)
    {
        return Err(Failure::Usage(anyhow!(
            "--ws drives the send and idle workloads, not --group, --push, --drain or --cross-realm"
        )));
    }
    if let Some(rate) = load.rate {
        if paced.0 {
            return Err(Failure::Usage(anyhow!("--rate: {}", paced.1)));
        }
        if !(rate.is_finite() && rate > 0.0) {
            return Err(Failure::Usage(anyhow!(
                "--rate must be a number of requests per second above 0"
            )));
        }
    }
    Ok(())
}

async fn run_workload(args: BenchArgs) -> CmdResult {
    let report = match args.workload {
        BenchWorkload::Time(t) => {
            let (target, opts) = prepare(&t.load, t.port).await?;
            let mode = match t.mode {
                TimeMode::Persistent => jaring_bench::time::Mode::Persistent,
                TimeMode::Churn => jaring_bench::time::Mode::Churn,
            };
            let report = jaring_bench::time::run(target, mode, &opts).await;
            output(&report, &t.load)?;
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
            output(&report, &e.load)?;
            report
        }
        BenchWorkload::Chat(c) if c.group => return group::run(&c).await,
        BenchWorkload::Chat(c) if c.push => return push::run(&c).await,
        BenchWorkload::Chat(c) if c.drain => {
            let (target, opts) = prepare(&c.load, c.port).await?;
            let mut chat = chat_options(&c)?;
            chat.tls.clone_from(&opts.tls);
            let r = jaring_bench::chat::drain(target, &chat, opts.duration, &opts.stop)
                .await
                .map_err(|e| Failure::Runtime(e.into()))?;
            if c.load.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&r).map_err(anyhow::Error::from)?
                );
            } else {
                println!(
                    "drained {} of {} messages from {} in {:.2} s: {:.0} msgs/s",
                    r.backlog - r.left,
                    r.backlog,
                    r.target,
                    r.seconds,
                    r.msgs_per_s
                );
            }
            return Ok(());
        }
        BenchWorkload::Chat(c) => {
            let (target, opts) = prepare(&c.load, c.port).await?;
            let mut chat = chat_options(&c)?;
            chat.tls.clone_from(&opts.tls);
            chat.server_pid = server_pid(&c, target).await;
            if c.cross_realm {
                // --senders-only fills the outbox while the peer is down on purpose: no probe.
                let peer = if c.senders_only {
                    tokio::net::lookup_host((c.load.host.as_str(), c.peer_port))
                        .await
                        .ok()
                        .and_then(|mut a| a.next())
                        .ok_or_else(|| anyhow!("cannot resolve {}:{}", c.load.host, c.peer_port))?
                } else {
                    reachable(&c.load.host, c.peer_port, opts.tls.as_ref()).await?
                };
                chat.peer = Some((peer, c.peer_realm.clone()));
            }
            chat.senders_only = c.senders_only;
            let report = jaring_bench::chat::run(target, &chat, &opts)
                .await
                .map_err(|e| Failure::Runtime(e.into()))?;
            output(&report, &c.load)?;
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
    if let Some(plot) = &load.plot
        && plot
            .extension()
            .is_none_or(|e| !e.eq_ignore_ascii_case("svg"))
    {
        return Err(Failure::Usage(anyhow!(
            "--plot draws SVG only (a bitmap would need system fonts): name the file {}.svg",
            plot.with_extension("").display()
        )));
    }
    let wants_samples = load.csv.is_some() || load.plot.is_some();
    let interval = match load.interval {
        Some(secs) => Some(seconds("interval", secs)?).filter(|d| !d.is_zero()),
        // A tenth of the run, at most a second: enough points for a line.
        None if wants_samples => Some((duration / 10).clamp(
            std::time::Duration::from_millis(100),
            std::time::Duration::from_secs(1),
        )),
        None => None,
    };
    if wants_samples && interval.is_none() {
        return Err(Failure::Usage(anyhow!(
            "--csv and --plot need samples: give --interval a number of seconds above 0"
        )));
    }
    let tls = bench_tls(load)?;
    let target = reachable(&load.host, port, tls.as_ref()).await?;
    let opts = LoadOptions {
        connections: load.connections,
        duration,
        progress: !load.json && std::io::stderr().is_terminal(),
        stop: stop_on_ctrl_c(),
        interval,
        rate: load.rate,
        tls,
    };
    eprintln!(
        "jaring bench: {} connection{} to {target}{} for {} s; Ctrl-C stops early and prints what was measured",
        units::count(load.connections as u64),
        if load.connections == 1 { "" } else { "s" },
        match (&opts.tls, load.no_resume) {
            (None, _) => "",
            (Some(_), false) => " over TLS",
            (Some(_), true) => " over TLS (no session resumption)",
        },
        load.duration
    );
    Ok((target, opts))
}

/// A [`Stop`] triggered by the first Ctrl-C; a second one quits at once (exit 130), for a run
/// whose end does not come (a server that stopped answering mid-request).
fn stop_on_ctrl_c() -> Stop {
    let stop = Stop::new();
    let trigger = stop.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_err() {
            return;
        }
        eprintln!("jaring bench: stopping; the results so far follow (Ctrl-C again quits at once)");
        trigger.trigger();
        if tokio::signal::ctrl_c().await.is_ok() {
            std::process::exit(130);
        }
    });
    stop
}

/// The TLS the flags ask for, one session cache for every connection of the run (so they
/// resume) unless `--no-resume`.
pub(crate) fn bench_tls(load: &LoadArgs) -> Result<Option<Tls>, Failure> {
    let Some(client) = client_tls(&load.tls)? else {
        if load.no_resume {
            return Err(Failure::Usage(anyhow!(
                "--no-resume is about TLS sessions: add --tls (and --ca FILE)"
            )));
        }
        return Ok(None);
    };
    let tls = Tls::new(client.config, &load.host).map_err(|e| Failure::Usage(anyhow!(e)))?;
    Ok(Some(if load.no_resume {
        tls.without_resumption()
    } else {
        tls
    }))
}

/// How long the target has to accept one connection before the run starts.
const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// How long the probe's TLS handshake may take: a plaintext server that waits for a request line
/// never answers a ClientHello, and this is how long it takes to say so.
const PROBE_HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Resolves `host`:`port` and connects once (with `tls`, handshakes once), so that a server that
/// is down, a wrong port, a port without TLS or a wrong CA ends the run at once with one line
/// instead of a full run of errors and a table of zeros.
pub(crate) async fn reachable(
    host: &str,
    port: u16,
    tls: Option<&Tls>,
) -> Result<SocketAddr, Failure> {
    let target = tokio::net::lookup_host((host, port))
        .await
        .with_context(|| format!("cannot resolve {host}:{port}"))?
        .next()
        .ok_or_else(|| anyhow!("{host}:{port} has no address"))?;
    match tokio::time::timeout(PROBE_TIMEOUT, tokio::net::TcpStream::connect(target)).await {
        Ok(Ok(tcp)) => match tls {
            None => Ok(target),
            Some(tls) => {
                match jaring_bench::net::handshake(tcp, tls, PROBE_HANDSHAKE_TIMEOUT).await {
                    Ok(_) => Ok(target),
                    Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                        Err(Failure::Runtime(anyhow!(
                            "no TLS handshake from {target} within {} s: does that port take TLS? \
                             (a plaintext server waits for a request and says nothing; echo serves \
                             TLS on its --tls-port)",
                            PROBE_HANDSHAKE_TIMEOUT.as_secs()
                        )))
                    }
                    Err(e) => Err(Failure::Runtime(anyhow!(
                        "TLS handshake with {target} failed: {e}; does that port take TLS, and \
                         does --ca name the CA that signed the server's certificate?"
                    ))),
                }
            }
        },
        Ok(Err(e)) => Err(Failure::Runtime(anyhow!(
            "cannot connect to {target}: {e}; is the server running on that port? \
             (`jaring lab` starts every service)"
        ))),
        Err(_) => Err(Failure::Runtime(anyhow!(
            "no answer from {target} within {} s: is a firewall dropping the connection?",
            PROBE_TIMEOUT.as_secs()
        ))),
    }
}

/// `--server-pid`, or when it is not given and the target is on loopback (so surely this
/// machine), the process listening on the target's port (under a lab: the lab process, all its
/// services together). The search reads every process's descriptors: off the async workers.
async fn server_pid(c: &BenchChatArgs, target: SocketAddr) -> Option<u32> {
    if c.server_pid.is_some() || !target.ip().is_loopback() {
        return c.server_pid;
    }
    let port = target.port();
    tokio::task::spawn_blocking(move || jaring_bench::engine::pid_listening_on(port))
        .await
        .ok()
        .flatten()
}

fn chat_options(c: &BenchChatArgs) -> Result<jaring_bench::chat::ChatOptions, Failure> {
    use jaring_bench::chat::{ChatOptions, Mode};
    if c.receivers == Some(0) {
        return Err(Failure::Usage(anyhow!("--receivers must be at least 1")));
    }
    let mode = if c.idle { Mode::Idle } else { Mode::Send };
    Ok(ChatOptions {
        size: c.size,
        receivers: c.receivers.unwrap_or(0),
        user_prefix: c.user_prefix.clone(),
        password: c.password().to_owned(),
        server_pid: c.server_pid,
        ws: c.ws.then(|| jaring_bench::net::WsTarget {
            path: c.ws_path.clone(),
            host: format!("{}:{}", c.load.host, c.port),
        }),
        pipeline: usize::from(c.pipeline),
        ..ChatOptions::new(mode)
    })
}

/// The report on stdout, and the interval samples in `--csv`'s file if asked.
fn output(report: &Report, load: &LoadArgs) -> Result<(), Failure> {
    if let Some(path) = &load.csv {
        let mut csv = String::from("end_s,requests,errors,requests_per_s\n");
        for i in &report.intervals {
            csv.push_str(&format!(
                "{:.3},{},{},{:.1}\n",
                i.end_s, i.requests, i.errors, i.requests_per_s
            ));
        }
        std::fs::write(path, csv)
            .with_context(|| format!("cannot write the samples to {}", path.display()))?;
    }
    if let Some(path) = &load.hdr_out {
        let mut file = std::io::BufWriter::new(
            std::fs::File::create(path)
                .with_context(|| format!("cannot create {}", path.display()))?,
        );
        report
            .write_hdr_log(&mut file)
            .and_then(|()| file.flush())
            .with_context(|| format!("cannot write the histogram to {}", path.display()))?;
    }
    if let Some(path) = &load.plot {
        let latency = !(report.workload == "echo" && report.mode == "stream");
        let svg =
            jaring_bench::plot::svg(report, latency).map_err(|e| Failure::Runtime(e.into()))?;
        std::fs::write(path, svg)
            .with_context(|| format!("cannot write the plot to {}", path.display()))?;
    }
    print(report, load.json)
}

fn print(report: &Report, json: bool) -> Result<(), Failure> {
    let mut stdout = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut stdout, report).context("cannot write the report")?;
        writeln!(stdout)?;
        return Ok(());
    }
    let l = &report.latency;
    // In stream mode a "request" is one block of the stream: its timing says nothing of latency.
    let latency_means_something = !(report.workload == "echo" && report.mode == "stream");
    let mut table = Table::new();
    table.load_style(UTF8_BORDERS_ONLY);
    table.set_header(["metric", "value"]);
    table.add_row([
        "workload",
        &format!("{} ({})", report.workload, report.mode),
    ]);
    table.add_row(["target", &report.target]);
    table.add_row(["connections", &units::count(report.connections as u64)]);
    let stopped = if report.interrupted {
        " (stopped early)"
    } else {
        ""
    };
    table.add_row(["duration", &format!("{:.1} s{stopped}", report.duration_s)]);
    let what = if latency_means_something {
        "requests"
    } else {
        "blocks echoed"
    };
    table.add_row([what, &units::count(report.requests)]);
    table.add_row(["errors", &units::count(report.errors)]);
    if let Some(rate) = report.rate_per_s {
        table.add_row([&format!("{what}/s asked"), &units::rate(rate)]);
    }
    table.add_row([&format!("{what}/s"), &units::rate(report.requests_per_s)]);
    if latency_means_something {
        for (name, us) in [
            ("p50", l.p50_us),
            ("p90", l.p90_us),
            ("p99", l.p99_us),
            ("p99.9", l.p999_us),
            ("max", l.max_us),
        ] {
            table.add_row([format!("latency {name}"), units::micros(us)]);
        }
    }
    if let Some(t) = &report.throughput {
        table.add_row(["bytes echoed".to_owned(), units::bytes(t.bytes)]);
        table.add_row([
            "throughput".to_owned(),
            format!(
                "{}/s ({:.2} Gbit/s)",
                units::bytes(t.bytes_per_s as u64),
                t.gbit_per_s
            ),
        ]);
    }
    if let Some(d) = &report.delivery {
        table.add_row(["receivers".to_owned(), units::count(d.receivers as u64)]);
        table.add_row([
            "delivered".to_owned(),
            format!(
                "{} of {} acknowledged ({} missing, {} duplicates, {} out of order)",
                units::count(d.delivered),
                units::count(d.acknowledged),
                units::count(d.missing),
                units::count(d.duplicates),
                units::count(d.out_of_order)
            ),
        ]);
        for (name, us) in [("p50", d.latency.p50_us), ("p99", d.latency.p99_us)] {
            table.add_row([format!("send→inbox {name}"), units::micros(us)]);
        }
    }
    if let Some(h) = &report.tls {
        table.add_row([
            "TLS handshakes".to_owned(),
            format!(
                "{} ({} full, {} resumed)",
                units::count(h.full + h.resumed),
                units::count(h.full),
                units::count(h.resumed)
            ),
        ]);
    }
    if let Some(s) = &report.server {
        table.add_row(["server CPU".to_owned(), format!("{:.2} s", s.cpu_s)]);
        table.add_row([
            "server CPU per request".to_owned(),
            format!("{:.1} µs", s.cpu_us_per_request),
        ]);
        table.add_row([
            "server RSS".to_owned(),
            units::bytes(s.rss_kib.saturating_mul(1024)),
        ]);
        if let Some(per) = s.rss_per_connection_bytes {
            table.add_row(["server RSS per connection".to_owned(), units::bytes(per)]);
        }
    }
    writeln!(stdout, "{table}")?;
    for e in &report.error_kinds {
        writeln!(stdout, "  {} × {}", units::count(e.count), e.kind)?;
    }
    if latency_means_something && !l.buckets.is_empty() {
        writeln!(stdout, "\nlatency distribution (requests taking at most):")?;
        write!(stdout, "{}", histogram(&l.buckets))?;
    }
    Ok(())
}

/// Widest bar of the text histogram, in characters.
const BAR_WIDTH: u64 = 40;

/// The latency buckets as a text histogram: one line each, bound, count, share and a bar.
fn histogram(buckets: &[jaring_bench::engine::Bucket]) -> String {
    let total: u64 = buckets.iter().map(|b| b.count).sum();
    let most = buckets.iter().map(|b| b.count).max().unwrap_or(0).max(1);
    let width = buckets
        .iter()
        .map(|b| units::count(b.count).len())
        .max()
        .unwrap_or(1);
    let mut out = String::new();
    for b in buckets {
        // Rounded up, so that any count at all shows.
        let bar = (b.count * BAR_WIDTH).div_ceil(most);
        let share = 100.0 * b.count as f64 / total.max(1) as f64;
        out.push_str(&format!(
            "  {:>8}  {:>width$}  {share:5.1}%  {}\n",
            units::bound(b.le_us),
            units::count(b.count),
            "█".repeat(bar as usize),
        ));
    }
    out
}
