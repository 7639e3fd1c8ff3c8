//! docs/tour.md, run: every command of the tour against a real three-host lab, each output checked
//! against what the tour says to expect, so the tour cannot drift from the program.
//!
//! The convention (documented at the end of docs/tour.md): in a ```` ```console ```` block, a line
//! starting with `$ ` is a command (a line ending in `\` continues on the next), the lines after it
//! are its expected output (stdout and stderr as one stream), `...` alone on a line matches any
//! run of lines (none too) and `[..]` matches any text within a line. A command must exit 0,
//! unless it ends in `&`: then it runs in the background while the block goes on, and its output
//! is checked (its exit status is not) when the block ends. `<!-- tour: lab -->` before a block
//! whose one command is `[NAME=VALUE…] jaring lab --hosts …` (re)starts the lab with exactly those
//! arguments: what it prints up to `Ctrl-C stops everything.` is that command's output.
//! `<!-- tour: stop -->` stops it (the reader's Ctrl-C); it must then leave no namespace behind.
//!
//! Each command runs under `sh -c` in a scratch directory (the lab keeps its data in
//! `./jaring-lab` there and writes the captures there; `bench` and `contrib` are the
//! repository's), with the built `jaring` first on PATH and `JARING_LAB_NET` set to a network of
//! this test's own, each with a timeout. Needs root, `ip`, python3, dumpcap and tshark: otherwise one line
//! says why and the test passes, except under `CI=true`, where it fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::HashMap;
use std::io::{BufReader, Read as _};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use support::have_tool;
use support::lab::LabProcess;

/// The tour, from the repository root.
const TOUR: &str = "docs/tour.md";

/// The line the lab prints last, once everything listens.
const LAB_READY: &str = "Ctrl-C stops everything.";

/// How long one command may take (the longest step of the tour takes about ten seconds).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(90);

/// How long the lab may take to stop and remove its namespaces after SIGTERM.
const LAB_STOP_TIMEOUT: Duration = Duration::from_secs(60);

/// How long the whole tour may take (it takes about a minute): past it, a lab that never said it
/// was ready, or anything else stuck, fails the run instead of hanging it.
const TOUR_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// One step of the tour, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    /// `<!-- tour: lab -->` and a block whose one command is `jaring lab --hosts …`: (re)start the
    /// lab with it.
    Lab(Cmd),
    /// `<!-- tour: stop -->` (the reader's Ctrl-C in the lab's terminal): stop the lab.
    Stop { line: usize },
    /// Any other ```` ```console ```` block: run its commands.
    Run { line: usize, commands: Vec<Cmd> },
}

/// One command of the tour and what it must print.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Cmd {
    /// Line of the tour where the command starts (1-based), for messages.
    line: usize,
    /// The command as `sh -c` gets it (a trailing `&` removed).
    text: String,
    /// It ended in `&`: runs alongside the rest of its block.
    background: bool,
    /// The expected output, one pattern a line.
    expected: Vec<String>,
}

/// Reads the tour's steps; an error names the line that breaks the convention.
fn parse(text: &str) -> Result<Vec<Step>, String> {
    let mut steps = Vec::new();
    // A `lab` directive waiting for its block: the directive's line.
    let mut lab_pending: Option<usize> = None;
    // The console block being read: its line, whether a lab directive stands before it, its commands.
    let mut current: Option<(usize, bool, Vec<Cmd>)> = None;
    let mut fence_open = false;
    let mut continuing = false;
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = raw.trim_end();
        if let Some((at, _, commands)) = current.as_mut() {
            if line == "```" {
                if continuing {
                    return Err(format!("line {n}: the block ends inside a command (`\\`)"));
                }
                if commands.is_empty() {
                    return Err(format!("line {at}: a console block without a `$ ` command"));
                }
                let (at, lab, commands) = current.take().expect("inside a block");
                if lab {
                    let [cmd] = &commands[..] else {
                        return Err(format!("line {at}: a lab block holds one command"));
                    };
                    lab_command(&cmd.text).map_err(|e| format!("line {}: {e}", cmd.line))?;
                    steps.push(Step::Lab(cmd.clone()));
                } else {
                    steps.push(Step::Run { line: at, commands });
                }
                continue;
            }
            if continuing {
                let cmd = commands.last_mut().expect("continuing a command");
                continuing = add_command_line(cmd, line);
                continue;
            }
            if let Some(command) = line.strip_prefix("$ ") {
                let mut cmd = Cmd {
                    line: n,
                    text: String::new(),
                    background: false,
                    expected: Vec::new(),
                };
                continuing = add_command_line(&mut cmd, command);
                commands.push(cmd);
            } else if let Some(cmd) = commands.last_mut() {
                cmd.expected.push(line.to_owned());
            } else {
                return Err(format!("line {n}: output before any `$ ` command"));
            }
            continue;
        }
        if line.starts_with("```") {
            if line == "```console" && !fence_open {
                current = Some((n, lab_pending.take().is_some(), Vec::new()));
            } else {
                // Any other fence (sh, text, toml…) is shown, not run.
                fence_open = !fence_open;
                if let Some(at) = lab_pending.filter(|_| fence_open) {
                    return Err(format!(
                        "line {at}: a lab directive must stand right before a console block"
                    ));
                }
            }
            continue;
        }
        if fence_open {
            continue;
        }
        if let Some(rest) = line.trim_start().strip_prefix("<!-- tour:") {
            let word = rest
                .strip_suffix("-->")
                .ok_or_else(|| format!("line {n}: a directive is one line: <!-- tour: WORD -->"))?
                .trim();
            if let Some(at) = lab_pending {
                return Err(format!(
                    "line {at}: a lab directive with no console block after it"
                ));
            }
            match word {
                "lab" => lab_pending = Some(n),
                "stop" => steps.push(Step::Stop { line: n }),
                other => {
                    return Err(format!(
                        "line {n}: unknown directive {other:?} (known: lab, stop)"
                    ));
                }
            }
        }
    }
    if let Some((at, _, _)) = current {
        return Err(format!("line {at}: a console block that never ends"));
    }
    if let Some(at) = lab_pending {
        return Err(format!(
            "line {at}: a lab directive with no console block after it"
        ));
    }
    Ok(steps)
}

/// Adds one line of a command; whether the command goes on on the next line.
fn add_command_line(cmd: &mut Cmd, line: &str) -> bool {
    if let Some(head) = line.strip_suffix('\\') {
        cmd.text.push_str(head);
        cmd.text.push('\n');
        return true;
    }
    cmd.text.push_str(line);
    let text = cmd.text.trim_end();
    // `&&` is a conjunction, not a background job.
    if let Some(head) = text.strip_suffix('&')
        && !head.ends_with('&')
    {
        cmd.text = head.trim_end().to_owned();
        cmd.background = true;
    }
    false
}

/// A lab block's command: `[NAME=VALUE…] jaring lab --hosts ARGS…`.
#[derive(Debug, PartialEq, Eq)]
struct LabCommand {
    env: Vec<(String, String)>,
    /// What follows `jaring lab`.
    args: Vec<String>,
}

fn lab_command(text: &str) -> Result<LabCommand, String> {
    if text.contains(['\'', '"', '\\', '$', '&', '|', ';', '\n']) {
        return Err("a lab block's command is plain words (no quoting or shell)".into());
    }
    let mut words = text.split_whitespace().peekable();
    let mut env = Vec::new();
    while let Some((name, value)) = words.peek().and_then(|w| w.split_once('=')) {
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_uppercase() || c == '_') {
            break;
        }
        env.push((name.to_owned(), value.to_owned()));
        words.next();
    }
    if words.next() != Some("jaring") || words.next() != Some("lab") {
        return Err(format!(
            "a lab block runs `jaring lab --hosts …`, not {text:?}"
        ));
    }
    let args: Vec<String> = words.map(str::to_owned).collect();
    if !args.iter().any(|w| w == "--hosts") {
        return Err("the tour's lab runs on three hosts: --hosts".into());
    }
    if args.iter().any(|w| w == "--dir") {
        return Err("the tour's lab keeps its data in ./jaring-lab: no --dir".into());
    }
    Ok(LabCommand { env, args })
}

/// Whether one line matches one pattern: `[..]` matches any text (none too), the rest literally.
fn line_matches(pattern: &str, line: &str) -> bool {
    let pieces: Vec<&str> = pattern.split("[..]").collect();
    let (first, rest) = pieces
        .split_first()
        .expect("split yields at least one piece");
    let Some(mut left) = line.strip_prefix(first) else {
        return false;
    };
    let Some((last, middle)) = rest.split_last() else {
        return left.is_empty();
    };
    for piece in middle {
        match left.find(piece) {
            Some(at) => left = &left[at + piece.len()..],
            None => return false,
        }
    }
    left.len() >= last.len() && left.ends_with(last)
}

/// Whether the output's lines match the expected patterns, `...` matching any run of lines.
fn output_matches(expected: &[String], actual: &[&str]) -> bool {
    // memo[(i, j)]: expected[i..] against actual[j..]; the tour's outputs are short.
    fn go(
        e: &[String],
        a: &[&str],
        i: usize,
        j: usize,
        memo: &mut HashMap<(usize, usize), bool>,
    ) -> bool {
        if let Some(&known) = memo.get(&(i, j)) {
            return known;
        }
        let result = if i == e.len() {
            j == a.len()
        } else if e[i] == "..." {
            (j..=a.len()).any(|k| go(e, a, i + 1, k, memo))
        } else {
            j < a.len() && line_matches(&e[i], a[j]) && go(e, a, i + 1, j + 1, memo)
        };
        memo.insert((i, j), result);
        result
    }
    go(expected, actual, 0, 0, &mut HashMap::new())
}

/// What a command printed, as the lines the tour compares: CR LF and trailing blanks folded,
/// trailing empty lines dropped.
fn output_lines(output: &str) -> Vec<&str> {
    let mut lines: Vec<&str> = output.lines().map(str::trim_end).collect();
    while lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    lines
}

fn expected_lines(expected: &[String]) -> Vec<String> {
    let mut lines: Vec<String> = expected.iter().map(|l| l.trim_end().to_owned()).collect();
    while lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    lines
}

/// Fails the test unless `output` is what `cmd` should print.
fn check_output(cmd: &Cmd, output: &str) {
    let expected = expected_lines(&cmd.expected);
    let actual = output_lines(output);
    assert!(
        output_matches(&expected, &actual),
        "{TOUR}:{}: `{}` printed what the tour does not expect\n--- expected\n{}\n--- printed\n{}\n---",
        cmd.line,
        cmd.text,
        expected.join("\n"),
        actual.join("\n"),
    );
}

/// Whether the tour can run here: root (network namespaces) and the tools it uses. When not, one
/// line says why, and under `CI=true` the test fails instead.
fn can_run() -> bool {
    if !support::is_root() {
        let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
        assert!(!ci, "tour: the three-host lab needs root, and CI=true");
        eprintln!("tour: skipped: the three-host lab needs root (network namespaces)");
        return false;
    }
    [
        ("ip", "-V"),
        ("python3", "--version"),
        ("dumpcap", "-v"),
        ("tshark", "-v"),
    ]
    .iter()
    .all(|(tool, probe)| have_tool(tool, &[probe], "tour"))
}

/// A process group's leader with its stdout and stderr merged into one pipe, read by a thread.
struct Running {
    child: Child,
    output: mpsc::Receiver<String>,
}

impl Running {
    fn spawn(text: &str, dir: &Path, env: &[(&str, &str)]) -> Self {
        let (reader, writer) = std::io::pipe().expect("pipe");
        let child = Command::new("sh")
            .arg("-c")
            .arg(text)
            .current_dir(dir)
            .envs(env.iter().copied())
            .env_remove("SSLKEYLOGFILE")
            .stdin(Stdio::null())
            .stdout(writer.try_clone().expect("clone pipe"))
            .stderr(writer)
            // Its own group: a timeout kills the command and everything it started.
            .process_group(0)
            .spawn()
            .expect("spawn sh");
        let (tx, output) = mpsc::channel();
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = BufReader::new(reader).read_to_end(&mut bytes);
            let _ = tx.send(String::from_utf8_lossy(&bytes).into_owned());
        });
        Self { child, output }
    }

    /// Waits for the command (killing its group after `timeout`): its exit code and output.
    fn finish(mut self, cmd: &Cmd, timeout: Duration) -> (Option<i32>, String) {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait for sh") {
                break status;
            }
            if Instant::now() >= deadline {
                kill_group(self.child.id());
                let _ = self.child.wait();
                let so_far = self
                    .output
                    .recv_timeout(Duration::from_secs(5))
                    .unwrap_or_default();
                panic!(
                    "{TOUR}:{}: `{}` did not finish within {timeout:?}; it printed:\n{so_far}",
                    cmd.line, cmd.text
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        // Something it started in the background may still hold the pipe: give it a moment,
        // then end the group.
        let output = match self.output.recv_timeout(Duration::from_secs(10)) {
            Ok(output) => output,
            Err(_) => {
                kill_group(self.child.id());
                self.output
                    .recv_timeout(Duration::from_secs(5))
                    .unwrap_or_default()
            }
        };
        (status.code(), output)
    }
}

fn kill_group(pgid: u32) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{pgid}")])
        .status();
}

/// The running three-host lab, started with the shared launcher.
struct Lab {
    process: LabProcess,
    /// The capture file it was asked for, if any.
    capture: Option<PathBuf>,
    net: String,
}

impl Lab {
    /// Starts the lab block's command with its data in `dir`/jaring-lab (where a reader's lab
    /// keeps it, run from `dir`); what it printed up to the ready line must match `cmd`.
    fn start(cmd: &Cmd, dir: &Path, net: &str) -> Self {
        let LabCommand { env, mut args } = lab_command(&cmd.text).expect("checked when parsed");
        // The launcher does not run the lab in `dir`: paths the reader gives relative to it are
        // made absolute.
        let mut capture = None;
        if let Some(i) = args.iter().position(|a| a == "--capture") {
            let file = dir.join(args.get(i + 1).expect("--capture FILE"));
            args[i + 1] = file.display().to_string();
            capture = Some(file);
        }
        let mut env: Vec<(String, String)> = env
            .into_iter()
            .map(|(name, value)| match name.as_str() {
                "SSLKEYLOGFILE" => (name, dir.join(value).display().to_string()),
                _ => (name, value),
            })
            .collect();
        env.push(("JARING_LAB_NET".into(), net.to_owned()));
        // The web page is on this machine's loopback, outside the lab's network: port 8080 there
        // may be anyone's while tests run side by side, and the tour prints no web port.
        if !args.iter().any(|a| a == "--web-port" || a == "--no-web") {
            args.extend(["--web-port".to_owned(), "0".to_owned()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let env: Vec<(&str, &str)> = env.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        let process = LabProcess::start(&dir.join("jaring-lab"), &args, &env);
        let lab = Self {
            process,
            capture,
            net: net.to_owned(),
        };
        check_output(cmd, &lab.process.printed);
        lab
    }

    /// SIGTERM (the reader's Ctrl-C): it must exit 0, leave no namespace behind, and have
    /// written its capture.
    fn stop(mut self, line: usize) {
        let status = self.process.terminate();
        assert!(
            status.success(),
            "{TOUR}:{line}: the lab exited with {status:?}"
        );
        let left = leftovers(&self.net);
        assert!(
            left.is_empty(),
            "{TOUR}:{line}: the stopped lab left these behind: {left:?}"
        );
        if let Some(capture) = self.capture.take() {
            let bytes = std::fs::read(&capture).unwrap_or_default();
            // Every pcapng file starts with a Section Header Block, type 0x0A0D0D0A.
            assert!(
                bytes.starts_with(&[0x0a, 0x0d, 0x0d, 0x0a]),
                "{TOUR}:{line}: the lab's capture {} is missing or not pcapng ({} bytes)",
                capture.display(),
                bytes.len()
            );
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // A failed assertion unwinds through here: stop the lab as Ctrl-C would, so it removes
        // its namespaces (the launcher's own drop kills it, which would leave them to the next
        // start).
        let child = &mut self.process.child;
        if child.try_wait().ok().flatten().is_none() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + LAB_STOP_TIMEOUT;
            while Instant::now() < deadline && child.try_wait().ok().flatten().is_none() {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// This run's network, taken down when the test ends however it ends (a failed assertion
/// included), so the test never leaves namespaces behind.
struct Net(String);

impl Drop for Net {
    fn drop(&mut self) {
        let _ = Command::new(env!("CARGO_BIN_EXE_jaring"))
            .args(["lab", "net", "down"])
            .env("JARING_LAB_NET", &self.0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// The namespaces and /etc/netns entries of network `net` that exist.
fn leftovers(net: &str) -> Vec<String> {
    let ours = |name: &str| name.starts_with(&format!("{net}-"));
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("run ip netns list");
    let mut found: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| ours(n))
        .map(str::to_owned)
        .collect();
    for entry in std::fs::read_dir("/etc/netns")
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        if ours(&name) {
            found.push(format!("/etc/netns/{name}"));
        }
    }
    found
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn tour_text() -> String {
    let path = repo_root().join(TOUR);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

#[test]
fn the_tour_runs_as_written() {
    let steps = parse(&tour_text()).unwrap_or_else(|e| panic!("{TOUR}: {e}"));
    if !can_run() {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    // The tour runs from a checkout: the classic Python servers (bench/) and the Wireshark
    // plugin (contrib/) are the repository's.
    for shared in ["bench", "contrib"] {
        std::os::unix::fs::symlink(repo_root().join(shared), dir.path().join(shared))
            .expect("link the checkout's directories");
    }
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_jaring"))
        .parent()
        .expect("the binary has a directory");
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    // A network of this run's own: tests running at once never share a lab.
    let net = Net(format!("t{}tour", std::process::id()));
    let env = [
        ("PATH", path.as_str()),
        ("JARING_LAB_NET", net.0.as_str()),
        ("NO_COLOR", "1"),
    ];
    // The shared launcher waits for the lab's ready line without a deadline: a watchdog bounds
    // the run, taking the hosts down (and what runs on them) before it fails it.
    let (done, finished) = mpsc::channel::<()>();
    let watched = net.0.clone();
    std::thread::spawn(move || {
        // Disconnected: the test ended (a failure unwinds through the lab's own clean-up).
        if let Err(mpsc::RecvTimeoutError::Timeout) = finished.recv_timeout(TOUR_TIMEOUT) {
            eprintln!("tour: not finished within {TOUR_TIMEOUT:?}; taking the lab down");
            drop(Net(watched));
            std::process::exit(1);
        }
    });
    let mut lab: Option<Lab> = None;
    let mut started = false;
    let mut ran = 0;
    for step in &steps {
        let (line, commands) = match step {
            Step::Lab(cmd) => {
                if let Some(old) = lab.take() {
                    old.stop(cmd.line);
                }
                lab = Some(Lab::start(cmd, dir.path(), &net.0));
                started = true;
                ran += 1;
                continue;
            }
            Step::Stop { line } => {
                lab.take()
                    .unwrap_or_else(|| panic!("{TOUR}:{line}: stop, but no lab runs"))
                    .stop(*line);
                continue;
            }
            Step::Run { line, commands } => (line, commands),
        };
        assert!(
            started,
            "{TOUR}:{line}: a command before the lab is started"
        );
        let mut background = Vec::new();
        for cmd in commands {
            let running = Running::spawn(&cmd.text, dir.path(), &env);
            ran += 1;
            if cmd.background {
                background.push((cmd, running));
                continue;
            }
            let (code, output) = running.finish(cmd, COMMAND_TIMEOUT);
            assert_eq!(
                code,
                Some(0),
                "{TOUR}:{}: `{}` failed; it printed:\n{output}",
                cmd.line,
                cmd.text
            );
            check_output(cmd, &output);
        }
        for (cmd, running) in background {
            let (_, output) = running.finish(cmd, COMMAND_TIMEOUT);
            check_output(cmd, &output);
        }
    }
    if let Some(lab) = lab.take() {
        lab.stop(0);
    }
    let _ = done.send(());
    eprintln!("tour: {ran} commands run and checked");
}

#[test]
fn the_tour_follows_its_convention() {
    let steps = parse(&tour_text()).unwrap_or_else(|e| panic!("{TOUR}: {e}"));
    assert!(
        matches!(steps.first(), Some(Step::Lab(_))),
        "the tour starts the lab first"
    );
    let commands: usize = steps
        .iter()
        .map(|s| match s {
            Step::Run { commands, .. } => commands.len(),
            _ => 0,
        })
        .sum();
    assert!(
        commands >= 20,
        "only {commands} commands: is the tour all there?"
    );
    for step in &steps {
        if let Step::Run { commands, .. } = step {
            for cmd in commands {
                assert!(
                    !cmd.expected.iter().any(|l| l.contains('\t')),
                    "{TOUR}:{}: a tab in the expected output (write spaces)",
                    cmd.line
                );
            }
        }
    }
}

#[test]
fn a_line_pattern_matches_any_text_where_it_says_so() {
    assert!(line_matches("JAM [..]", "JAM 21:04:11"));
    assert!(line_matches("JAM [..]", "JAM "));
    assert!(!line_matches("JAM [..]", "JAM"));
    assert!(line_matches("[..]", ""));
    assert!(line_matches("a[..]b[..]c", "a-b-b-c"));
    assert!(line_matches(
        "[..] <messi@realm1> hi",
        "[21:18] <messi@realm1> hi"
    ));
    assert!(!line_matches(
        "[..] <messi@realm1> hi",
        "[21:18] <messi@realm1> hi!"
    ));
    assert!(!line_matches("exact", "exactly"));
    assert!(!line_matches("exact", "inexact"));
    // The last piece must not overlap the one before it.
    assert!(!line_matches("ab[..]ba", "aba"));
    assert!(line_matches("ab[..]ba", "abba"));
}

#[test]
fn an_output_pattern_matches_runs_of_lines_with_dots() {
    let e = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    assert!(output_matches(&e(&["a", "...", "z"]), &["a", "z"]));
    assert!(output_matches(
        &e(&["a", "...", "z"]),
        &["a", "b", "c", "z"]
    ));
    assert!(!output_matches(&e(&["a", "...", "z"]), &["a", "b", "c"]));
    assert!(output_matches(&e(&["..."]), &[]));
    assert!(output_matches(
        &e(&["...", "[..] x", "..."]),
        &["1", "2 x", "3"]
    ));
    assert!(!output_matches(&e(&["...", "[..] x", "..."]), &["1", "3"]));
    assert!(!output_matches(&e(&["a"]), &["a", "b"]), "extra lines fail");
    assert!(
        !output_matches(&e(&[]), &["a"]),
        "no expected output means none"
    );
    assert!(output_matches(&e(&[]), &[]));
    // A `...` that could stop early must still let the rest match.
    assert!(output_matches(
        &e(&["...", "b", "c"]),
        &["b", "x", "b", "c"]
    ));
    // Output is compared without CR and trailing blanks.
    assert_eq!(
        output_lines("JAM 1\r\nJAM 2  \r\n\r\n"),
        vec!["JAM 1", "JAM 2"]
    );
}

#[test]
fn the_convention_parses_commands_outputs_and_directives() {
    let text = "intro\n\
                <!-- tour: lab -->\n\
                ```console\n\
                $ SSLKEYLOGFILE=keys.log jaring lab --hosts --capture lab.pcapng\n\
                ...\n\
                Ctrl-C stops everything.\n\
                ```\n\
                ```sh\n\
                $ not run\n\
                ```\n\
                ```console\n\
                $ server &\n\
                started\n\
                $ a && b\n\
                $ long \\\n\
                continued\n\
                out\n\
                ```\n\
                <!-- tour: stop -->\n";
    let steps = parse(text).unwrap();
    assert_eq!(steps.len(), 3);
    let Step::Lab(lab) = &steps[0] else {
        panic!("{steps:?}")
    };
    assert_eq!(lab.expected, vec!["...", LAB_READY]);
    assert_eq!(
        lab_command(&lab.text).unwrap(),
        LabCommand {
            env: vec![("SSLKEYLOGFILE".into(), "keys.log".into())],
            args: vec!["--hosts".into(), "--capture".into(), "lab.pcapng".into()],
        }
    );
    let Step::Run { line: 11, commands } = &steps[1] else {
        panic!("{steps:?}")
    };
    assert_eq!(
        (commands[0].text.as_str(), commands[0].background),
        ("server", true)
    );
    assert_eq!(commands[0].expected, vec!["started"]);
    assert_eq!(
        (commands[1].text.as_str(), commands[1].background),
        ("a && b", false)
    );
    assert_eq!(commands[2].text, "long \ncontinued");
    assert_eq!(commands[2].expected, vec!["out"]);
    assert_eq!(commands[2].line, 15);
    assert_eq!(steps[2], Step::Stop { line: 19 });

    for (bad, why) in [
        ("```console\nout\n```\n", "output before any"),
        ("```console\n```\n", "without a `$ ` command"),
        ("```console\n$ a\n", "never ends"),
        ("```console\n$ a \\\n```\n", "inside a command"),
        ("<!-- tour: lab -->\ntext\n", "no console block"),
        ("<!-- tour: dance -->\n", "unknown directive"),
        (
            "<!-- tour: lab -->\n```console\n$ jaring lab\n```\n",
            "--hosts",
        ),
        (
            "<!-- tour: lab -->\n```console\n$ jaring lab --hosts --dir x\n```\n",
            "no --dir",
        ),
        (
            "<!-- tour: lab -->\n```console\n$ jaring lab --hosts 'x'\n```\n",
            "plain words",
        ),
        (
            "<!-- tour: lab -->\n```console\n$ jaring lab --hosts\n$ b\n```\n",
            "one command",
        ),
        (
            "<!-- tour: lab -->\n```sh\nx\n```\n",
            "right before a console block",
        ),
        (
            "<!-- tour: lab -->\n<!-- tour: stop -->\n",
            "no console block",
        ),
    ] {
        let err = parse(bad).unwrap_err();
        assert!(err.contains(why), "{bad:?}: {err}");
    }
}
