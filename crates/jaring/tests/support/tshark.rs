//! Reading captures with tshark and jaring's Wireshark dissector (`contrib/wireshark/jaring.lua`),
//! and recording them with dumpcap, for the tests that check what a capture shows.
//!
//! Every function takes the capture, the dissector (usually [`dissector()`]) and tshark
//! preferences (`"jaring.time_ports:40000"`, `"tls.keylog_file:/tmp/keys.log"`, each passed as
//! `-o`), and fails the test when tshark fails. tshark runs with an empty home directory, so no
//! personal preferences or plugins (another copy of jaring.lua) change what it shows.
//!
//! A dissector that does not load leaves no `jaring.*` field: [`assert_dissects`] checks that
//! some appear, rather than trusting tshark's exit code.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::PATIENCE;

/// Joins the occurrences of one field in a frame in [`fields`]' columns (tshark's `-E
/// aggregator`): a character no value of the protocols' fields that tests compare holds.
pub const AGGREGATOR: char = '|';

/// The dissector in this repository.
pub fn dissector() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../contrib/wireshark/jaring.lua")
}

/// The dissector's fixtures (captures, preferences, golden outputs).
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../contrib/wireshark/tests")
}

/// Whether tshark and dumpcap run; when not, the test is skipped with one line (or fails under
/// `CI=true`), as [`super::have_tool`] does.
pub fn have_tshark(test: &str) -> bool {
    super::have_tool("tshark", &["--version"], test)
        && super::have_tool("dumpcap", &["--version"], test)
}

/// How tshark is started: as is, or, when this runs as root and the build's init.lua does not
/// run Lua scripts for root (`run_user_scripts_when_superuser`), as `nobody` through runuser
/// (then `true`).
fn tshark_command() -> (Command, bool) {
    static AS_NOBODY: OnceLock<bool> = OnceLock::new();
    let as_nobody = *AS_NOBODY.get_or_init(|| {
        let loads = |mut cmd: Command| {
            cmd.args(["-G", "fields", "-X"])
                .arg(format!("lua_script:{}", dissector().display()))
                .env("HOME", std::env::temp_dir())
                .stderr(Stdio::null())
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("\tjaring.service\t"))
        };
        !loads(Command::new("tshark")) && loads(runuser())
    });
    if as_nobody {
        (runuser(), true)
    } else {
        (Command::new("tshark"), false)
    }
}

fn runuser() -> Command {
    let mut cmd = Command::new("runuser");
    cmd.args(["-u", "nobody", "--", "tshark"]);
    cmd
}

/// Runs `tshark -r PCAP -X lua_script:LUA -o PREF… ARGS…` and returns its output, failing the
/// test if tshark fails.
pub fn tshark(pcap: &Path, lua: &Path, prefs: &[&str], args: &[&str]) -> Output {
    let home = tempfile::tempdir().expect("temp home");
    let (mut cmd, as_nobody) = tshark_command();
    if as_nobody {
        use std::os::unix::fs::PermissionsExt as _;
        // nobody's tshark writes its profile there.
        std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o777))
            .expect("open the temp home to nobody");
    }
    cmd.arg("-r")
        .arg(pcap)
        .arg("-X")
        .arg(format!("lua_script:{}", lua.display()))
        .env("HOME", home.path())
        .env_remove("XDG_CONFIG_HOME");
    for pref in prefs {
        cmd.args(["-o", pref]);
    }
    let out = cmd.args(args).output().expect("run tshark");
    assert!(
        out.status.success(),
        "tshark {args:?} on {} failed: {}",
        pcap.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The values of `fields` in every frame where the display filter `filter` matches: one row per
/// frame, one column per field, a field's occurrences in a frame joined by [`AGGREGATOR`].
pub fn fields_where(
    pcap: &Path,
    lua: &Path,
    prefs: &[&str],
    filter: &str,
    fields: &[&str],
) -> Vec<Vec<String>> {
    let mut args = vec!["-Y", filter, "-T", "fields", "-E", "aggregator=|"];
    for f in fields {
        args.extend(["-e", f]);
    }
    let out = tshark(pcap, lua, prefs, &args);
    String::from_utf8(out.stdout)
        .expect("utf-8 fields")
        .lines()
        .map(|line| line.split('\t').map(str::to_owned).collect())
        .collect()
}

/// [`fields_where`] for every frame the dissector decoded something in (`jaring`).
pub fn fields(pcap: &Path, lua: &Path, prefs: &[&str], fields: &[&str]) -> Vec<Vec<String>> {
    fields_where(pcap, lua, prefs, "jaring", fields)
}

/// Every occurrence of each of `fields` in the capture, in frame order, one list per field (one
/// value per PDU for the fields the dissector adds once per PDU, such as `jaring.time.request`
/// or `jaring.chat.kind`).
pub fn values(pcap: &Path, lua: &Path, prefs: &[&str], fields: &[&str]) -> Vec<Vec<String>> {
    let mut out = vec![Vec::new(); fields.len()];
    for row in self::fields(pcap, lua, prefs, fields) {
        for (list, cell) in out.iter_mut().zip(&row) {
            if !cell.is_empty() {
                list.extend(cell.split(AGGREGATOR).map(str::to_owned));
            }
        }
    }
    out
}

/// How many frames each display filter matches, in one pass over the capture (tshark's
/// `io,stat`), and what tshark wrote to stderr, without the line it always writes when run as
/// root. A filter may not hold a comma (io,stat separates them with commas).
pub fn counts(
    pcap: &Path,
    lua: &Path,
    prefs: &[&str],
    filters: &[&str],
) -> (Vec<usize>, Vec<String>) {
    assert!(filters.iter().all(|f| !f.contains(',')), "{filters:?}");
    let stat = format!("io,stat,0,{}", filters.join(","));
    let out = tshark(pcap, lua, prefs, &["-q", "-z", &stat]);
    let text = String::from_utf8_lossy(&out.stdout);
    // The one interval's row: `| 0.000 <> 1.603 |     45 |  7476 |      0 |     0 |`, a frame
    // count and a byte count for each filter.
    let row = text
        .lines()
        .find(|l| l.contains("<>"))
        .unwrap_or_else(|| panic!("no io,stat row in {text}"));
    let cells: Vec<&str> = row.split('|').map(str::trim).collect();
    let counts = (0..filters.len())
        .map(|i| {
            cells
                .get(2 + 2 * i)
                .and_then(|c| c.parse().ok())
                .unwrap_or_else(|| panic!("no frame count for {} in {row}", filters[i]))
        })
        .collect();
    let stderr = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| !l.contains("This could be dangerous"))
        .map(str::to_owned)
        .collect();
    (counts, stderr)
}

/// How many frames the display filter `filter` matches.
pub fn count(pcap: &Path, lua: &Path, prefs: &[&str], filter: &str) -> usize {
    counts(pcap, lua, prefs, &[filter]).0[0]
}

/// Frames Wireshark marked malformed (a dissector threw: `_ws.malformed`). jaring.lua marks
/// what breaks the protocols with expert infos of other groups, so this stays 0 for any input.
pub fn malformed_count(pcap: &Path, lua: &Path, prefs: &[&str]) -> usize {
    count(pcap, lua, prefs, "_ws.malformed")
}

/// The display filter of a Lua error: Wireshark's (`_ws.lua.error`) or one the dissector
/// caught itself (`jaring.internal`).
pub const LUA_ERROR: &str = "_ws.lua.error || jaring.internal";

/// Frames with a Lua error ([`LUA_ERROR`]).
pub fn lua_error_count(pcap: &Path, lua: &Path, prefs: &[&str]) -> usize {
    count(pcap, lua, prefs, LUA_ERROR)
}

/// The checks every capture must pass, in one pass: the dissector loaded and decoded something
/// (at least `min_frames` frames hold a `jaring.*` field), no frame is malformed, no Lua error,
/// nothing on tshark's stderr.
pub fn assert_dissects(pcap: &Path, lua: &Path, prefs: &[&str], min_frames: usize) {
    let (n, stderr) = counts(pcap, lua, prefs, &["jaring", "_ws.malformed", LUA_ERROR]);
    let what = pcap.display();
    assert!(
        n[0] >= min_frames,
        "{what}: {} frames hold a jaring.* field, expected at least {min_frames} \
         (did the dissector load? are the ports in the preferences?) {stderr:?}",
        n[0]
    );
    assert_eq!(n[1], 0, "{what}: malformed frames");
    assert_eq!(n[2], 0, "{what}: Lua errors");
    assert!(stderr.is_empty(), "{what}: tshark said: {stderr:?}");
}

/// dumpcap recording the loopback interface into a file; stopped (and the file made readable
/// by anyone, for a tshark run as `nobody`) by [`Capture::stop`], killed when dropped.
///
/// dumpcap says "Capturing on" before the kernel hands it packets, so [`Capture::start`]
/// returns only once a probe connection (to a port of its own, added to the filter) has been
/// seen: every packet after that is in the file. dumpcap writes to a pipe, which it flushes at
/// every packet (a file it flushes only when it stops), and a thread copies that to the file.
pub struct Capture {
    child: Child,
    path: PathBuf,
    copier: Option<std::thread::JoinHandle<()>>,
    _probe: std::net::TcpListener,
}

impl Capture {
    /// Starts `dumpcap -i lo -f FILTER` into `path` and waits until it captures. `None` (with
    /// one line saying why, or a failure under `CI=true`) when dumpcap cannot capture here (not
    /// root, no capture capabilities).
    pub fn start(path: &Path, filter: &str, test: &str) -> Option<Self> {
        use std::io::{BufRead as _, BufReader, Read as _, Write as _};
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};

        let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the probe");
        let probe_port = probe.local_addr().expect("probe address").port();
        let mut child = Command::new("dumpcap")
            .args(["-q", "-i", "lo", "-w", "-", "-f"])
            .arg(format!("({filter}) or tcp port {probe_port}"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn dumpcap");
        let written = Arc::new(AtomicUsize::new(0));
        let mut stdout = child.stdout.take().expect("dumpcap stdout");
        let mut file = std::fs::File::create(path).expect("create the capture file");
        let counter = Arc::clone(&written);
        let copier = std::thread::spawn(move || {
            let mut buf = vec![0; 1 << 16];
            loop {
                match stdout.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        file.write_all(&buf[..n]).expect("write the capture");
                        counter.fetch_add(n, Ordering::SeqCst);
                    }
                }
            }
        });
        // dumpcap's stderr: wait for "Capturing on", then keep draining it.
        let stderr = child.stderr.take().expect("dumpcap stderr");
        let (said_tx, said_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = said_tx.send(line);
            }
        });
        let mut said = String::new();
        let deadline = Instant::now() + PATIENCE;
        let mut capturing = false;
        while Instant::now() < deadline {
            match said_rx.recv_timeout(Duration::from_millis(50)) {
                Ok(line) => {
                    capturing |= line.contains("Capturing on");
                    said.push_str(&line);
                    said.push('\n');
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            }
            if capturing {
                break;
            }
        }
        if capturing {
            // The file header is out; a probe's packets make it grow once the kernel delivers.
            let header = written.load(Ordering::SeqCst);
            while Instant::now() < deadline {
                let _ = std::net::TcpStream::connect(("127.0.0.1", probe_port));
                std::thread::sleep(Duration::from_millis(50));
                if written.load(Ordering::SeqCst) > header {
                    return Some(Self {
                        child,
                        path: path.to_owned(),
                        copier: Some(copier),
                        _probe: probe,
                    });
                }
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
        assert!(
            !ci,
            "{test}: dumpcap cannot capture on lo and CI=true: {said}"
        );
        eprintln!(
            "{test}: skipped: dumpcap cannot capture on lo here (run as root): {}",
            said.trim()
        );
        None
    }

    /// Stops the capture (SIGINT: dumpcap writes out what it has) and returns the file.
    pub fn stop(mut self) -> PathBuf {
        // The last segments (a FIN, an ACK) reach the capture after the clients return.
        std::thread::sleep(Duration::from_millis(200));
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-INT", &pid]).status();
        super::exit_code(&mut self.child, "dumpcap did not stop");
        if let Some(copier) = self.copier.take() {
            copier.join().expect("capture copier");
        }
        let _ = Command::new("chmod")
            .args(["a+rx"])
            .arg(self.path.parent().expect("capture in a directory"))
            .status();
        let _ = Command::new("chmod").arg("a+r").arg(&self.path).status();
        self.path.clone()
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
