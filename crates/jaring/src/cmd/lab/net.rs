//! The lab's three hosts on one machine: Linux network namespaces `mesin-1`, `mesin-2` and
//! `mesin-3` (172.16.16.101–103/24, as in the course's reports) joined by a bridge that lives in
//! a namespace of its own, so the machine's own network is never touched.
//!
//! Namespaces are made with iproute2's `ip` (the standard way; mininet does the same), so a user
//! can also reach them with `ip netns exec mesin-2 …`. What made them is recorded in
//! `/run/jaring-lab/NET`: a lab that crashed leaves its pid there, and the next start, seeing
//! that pid gone, removes the leftovers before building afresh.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};

/// The environment variable that prefixes every namespace name (`PREFIX-mesin-1`), so that
/// several labs (tests) can run on one machine at once.
pub const NET_ENV: &str = "JARING_LAB_NET";

/// The lab's hosts and their addresses, as in the reports.
pub const HOSTS: [(&str, Ipv4Addr); 3] = [
    ("mesin-1", Ipv4Addr::new(172, 16, 16, 101)),
    ("mesin-2", Ipv4Addr::new(172, 16, 16, 102)),
    ("mesin-3", Ipv4Addr::new(172, 16, 16, 103)),
];

/// The hosts' network prefix length.
const PREFIX_LEN: u8 = 24;

/// The host the lab's servers run on.
pub const SERVER_HOST: &str = "mesin-1";

/// The bridge, inside the switch namespace.
const BRIDGE: &str = "br0";

/// Each host's interface (the bridge end is `p1`, `p2`, … in the switch namespace).
const HOST_IF: &str = "eth0";

/// Where the lab records who made its network (one file per network name).
const STATE_DIR: &str = "/run/jaring-lab";

/// How long a capture program may take to start or to finish its file.
const CAPTURE_PATIENCE: Duration = Duration::from_secs(10);

/// How long a capture program is given after it says it listens.
const CAPTURE_SETTLE: Duration = Duration::from_millis(500);

/// How long a capture runs on before it is stopped: dumpcap hands packets over in batches and
/// drops what it has not read when told to stop (measured: the last second was lost).
const CAPTURE_DRAIN: Duration = Duration::from_millis(1200);

/// One lab network: its namespace names follow from an optional prefix.
#[derive(Debug, Clone)]
pub struct LabNet {
    prefix: Option<String>,
}

/// Who made a network that is up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    /// `jaring lab net up`: it stays until `jaring lab net down`.
    NetUp,
    /// `jaring lab --hosts` with this pid: removed when that lab stops.
    Lab(u32),
}

impl LabNet {
    /// The network `JARING_LAB_NET` names (the default one without it). A prefix is refused
    /// unless it is short and plain, since it becomes part of file and namespace names.
    pub fn from_env() -> anyhow::Result<Self> {
        match std::env::var(NET_ENV) {
            Ok(p) if p.is_empty() => Ok(Self { prefix: None }),
            Ok(p) => {
                let plain = p.len() <= 24
                    && p.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
                if !plain {
                    bail!(
                        "{NET_ENV}={p:?} is not a usable prefix: use up to 24 letters, digits, \
                         '-' or '_'"
                    );
                }
                Ok(Self { prefix: Some(p) })
            }
            Err(_) => Ok(Self { prefix: None }),
        }
    }

    /// The namespace of `host` (`mesin-2` → `mesin-2`, or `PREFIX-mesin-2`).
    pub fn namespace(&self, host: &str) -> String {
        match &self.prefix {
            Some(p) => format!("{p}-{host}"),
            None => host.to_owned(),
        }
    }

    /// The namespace holding the bridge.
    fn switch(&self) -> String {
        match &self.prefix {
            Some(p) => format!("{p}-lab"),
            None => "jaring-lab".to_owned(),
        }
    }

    /// Every namespace of this network, the switch last.
    fn namespaces(&self) -> Vec<String> {
        let mut all: Vec<String> = HOSTS.iter().map(|(h, _)| self.namespace(h)).collect();
        all.push(self.switch());
        all
    }

    fn state_file(&self) -> PathBuf {
        Path::new(STATE_DIR).join(self.switch())
    }

    /// The address of `host`, or a clear error naming the lab's hosts.
    pub fn address(host: &str) -> anyhow::Result<Ipv4Addr> {
        HOSTS
            .iter()
            .find(|(h, _)| *h == host)
            .map(|(_, a)| *a)
            .ok_or_else(|| {
                anyhow!(
                    "the lab has no host {host:?}: its hosts are {}",
                    HOSTS.map(|(h, _)| h).join(", ")
                )
            })
    }

    /// Whether every namespace of this network exists.
    pub fn is_up(&self) -> anyhow::Result<bool> {
        let existing = existing_namespaces()?;
        Ok(self.namespaces().iter().all(|n| existing.contains(n)))
    }

    /// Who made this network, if it is recorded.
    pub fn owner(&self) -> Option<Owner> {
        let text = std::fs::read_to_string(self.state_file()).ok()?;
        // The first line says who; a capture may follow.
        match text.lines().next().unwrap_or_default().trim() {
            "net up" => Some(Owner::NetUp),
            other => other
                .strip_prefix("lab ")
                .and_then(|pid| pid.parse().ok())
                .map(Owner::Lab),
        }
    }

    /// Brings the network up for `owner`. A network already made by `jaring lab net up` is
    /// reused as it is; one left by a lab that is gone is removed and made afresh; one whose
    /// lab still runs is refused.
    pub fn up(&self, owner: &Owner) -> anyhow::Result<Made> {
        check_privileges()?;
        let ours = self.check_ours()?;
        match self.owner() {
            Some(Owner::NetUp) if ours.len() == self.namespaces().len() => {
                return Ok(Made::Reused);
            }
            Some(Owner::Lab(pid)) if is_jaring(pid) && Owner::Lab(pid) != *owner => bail!(
                "the lab's hosts are in use by a running lab (pid {pid}): stop it first \
                 (or set {NET_ENV}=NAME for a second network)"
            ),
            _ => {}
        }
        // Whatever is left of an earlier network (a crash, a half-made start) goes first.
        self.remove()?;
        std::fs::create_dir_all(STATE_DIR).with_context(|| format!("cannot create {STATE_DIR}"))?;
        let record = match owner {
            Owner::NetUp => "net up".to_owned(),
            Owner::Lab(pid) => format!("lab {pid}"),
        };
        std::fs::write(self.state_file(), record)
            .with_context(|| format!("cannot write {}", self.state_file().display()))?;
        if let Err(e) = self.build() {
            let _ = self.remove();
            return Err(e);
        }
        Ok(Made::Fresh)
    }

    /// This network's namespaces that exist, refusing if jaring did not make them: namespaces
    /// of these names from elsewhere (the course's own recipe makes a `mesin-1` too) are never
    /// removed behind the user's back.
    pub fn check_ours(&self) -> anyhow::Result<Vec<String>> {
        let existing = existing_namespaces()?;
        let present: Vec<String> = self
            .namespaces()
            .into_iter()
            .filter(|n| existing.contains(n))
            .collect();
        if self.owner().is_none() && !present.is_empty() {
            bail!(
                "network namespaces {} exist and jaring did not make them: remove them \
                 (ip netns del NAME) or set {NET_ENV}=NAME to give the lab's hosts other names",
                present.join(", ")
            );
        }
        Ok(present)
    }

    fn build(&self) -> anyhow::Result<()> {
        let switch = self.switch();
        ip(&["netns", "add", &switch])?;
        ip(&["-n", &switch, "link", "add", BRIDGE, "type", "bridge"])?;
        // IPv4 only, as in the reports: no IPv6 link-local chatter (router solicitations,
        // duplicate address detection) in the students' capture.
        ip(&["-n", &switch, "link", "set", BRIDGE, "addrgenmode", "none"])?;
        ip(&["-n", &switch, "link", "set", BRIDGE, "up"])?;
        ip(&["-n", &switch, "link", "set", "lo", "up"])?;
        let mut hosts_file = String::from(
            "# The jaring lab's hosts (written by jaring lab; removed with the network).\n\
             127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n",
        );
        for (host, address) in HOSTS {
            let _ = writeln!(hosts_file, "{address}\t{host}");
        }
        for (i, (host, address)) in HOSTS.iter().enumerate() {
            let ns = self.namespace(host);
            let port = format!("p{}", i + 1);
            ip(&["netns", "add", &ns])?;
            // Made inside the switch namespace with its other end moved straight into the host,
            // so no interface ever appears in the machine's own namespace.
            ip(&[
                "-n", &switch, "link", "add", &port, "type", "veth", "peer", "name", HOST_IF,
                "netns", &ns,
            ])?;
            ip(&["-n", &switch, "link", "set", &port, "addrgenmode", "none"])?;
            ip(&["-n", &ns, "link", "set", HOST_IF, "addrgenmode", "none"])?;
            ip(&["-n", &switch, "link", "set", &port, "master", BRIDGE, "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            let cidr = format!("{address}/{PREFIX_LEN}");
            ip(&["-n", &ns, "addr", "add", &cidr, "dev", HOST_IF])?;
            ip(&["-n", &ns, "link", "set", HOST_IF, "up"])?;
            // `ip netns exec` mounts /etc/netns/NS/hosts over /etc/hosts: the hosts know each
            // other by name, as on the lab's machines.
            let etc = Path::new("/etc/netns").join(&ns);
            std::fs::create_dir_all(&etc)
                .with_context(|| format!("cannot create {}", etc.display()))?;
            std::fs::write(etc.join("hosts"), &hosts_file)
                .with_context(|| format!("cannot write {}", etc.join("hosts").display()))?;
            // Names under `.lab` go to mesin-1's DNS server (the lab runs one with --hosts);
            // the lab has no way out, so a lookup elsewhere fails fast rather than waiting.
            std::fs::write(
                etc.join("resolv.conf"),
                format!(
                    "# The jaring lab's resolver (mesin-1 answers the lab's names).\n\
                     nameserver {}\noptions timeout:1 attempts:1\n",
                    HOSTS[0].1
                ),
            )
            .with_context(|| format!("cannot write {}", etc.join("resolv.conf").display()))?;
        }
        Ok(())
    }

    /// Removes every namespace of this network, its files and its record. What still runs in
    /// them is asked to stop (SIGTERM, so a capture finishes its file), then killed. A capture
    /// that `jaring lab net up` started is merged into its file. Removing what is not there is
    /// not an error. Returns the namespaces removed and the capture files written.
    pub fn remove(&self) -> anyhow::Result<(Vec<String>, Vec<PathBuf>)> {
        let existing = existing_namespaces()?;
        let present: Vec<String> = self
            .namespaces()
            .into_iter()
            .filter(|ns| existing.contains(ns))
            .collect();
        let me = std::process::id();
        if self.recorded_capture().is_some() && !present.is_empty() {
            std::thread::sleep(CAPTURE_DRAIN);
        }
        let pids: Vec<u32> = present
            .iter()
            .flat_map(|ns| namespace_pids(ns))
            .filter(|&p| p != me)
            .collect();
        signal_all(&pids, rustix::process::Signal::TERM);
        let deadline = Instant::now() + CAPTURE_PATIENCE;
        while pids.iter().any(|&p| pid_alive(p)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        signal_all(&pids, rustix::process::Signal::KILL);
        for ns in &present {
            ip(&["netns", "del", ns])?;
        }
        for ns in self.namespaces() {
            let etc = Path::new("/etc/netns").join(&ns);
            if etc.exists() {
                std::fs::remove_dir_all(&etc)
                    .with_context(|| format!("cannot remove {}", etc.display()))?;
            }
        }
        let mut written = Vec::new();
        if let Some(file) = self.recorded_capture() {
            let parts = [sibling(&file, "bridge"), sibling(&file, "loopback")];
            if parts.iter().all(|p| p.exists()) {
                written = merge(&file, &parts)?;
            }
        }
        let _ = std::fs::remove_file(self.state_file());
        Ok((present, written))
    }

    /// The capture `jaring lab net up --capture` recorded, if any.
    fn recorded_capture(&self) -> Option<PathBuf> {
        let text = std::fs::read_to_string(self.state_file()).ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix("capture "))
            .map(PathBuf::from)
    }

    /// Starts a capture that outlives this process (for `jaring lab net up`): `net down` stops
    /// it and merges its file.
    pub fn capture_detached(&self, file: &Path) -> anyhow::Result<()> {
        let capture = self.capture(file)?;
        let mut record = std::fs::read_to_string(self.state_file()).unwrap_or_default();
        if !record.is_empty() && !record.ends_with('\n') {
            record.push('\n');
        }
        let _ = writeln!(record, "capture {}", capture.file.display());
        std::fs::write(self.state_file(), record)
            .with_context(|| format!("cannot write {}", self.state_file().display()))?;
        // The capture programs run on in their namespaces; `remove` ends them.
        drop(capture.parts);
        Ok(())
    }

    /// Moves the calling thread into `host`'s namespace. Threads it starts afterwards (the
    /// async runtime's workers) are born there: call it before building the runtime.
    pub fn enter(&self, host: &str) -> anyhow::Result<()> {
        let path = Path::new("/run/netns").join(self.namespace(host));
        let file = std::fs::File::open(&path)
            .with_context(|| format!("cannot open {}: is the lab's network up?", path.display()))?;
        rustix::thread::move_into_link_name_space(
            std::os::fd::AsFd::as_fd(&file),
            Some(rustix::thread::LinkNameSpaceType::Network),
        )
        .with_context(|| format!("cannot enter the network namespace {}", path.display()))
    }

    /// Runs `command` on `host` (through `ip netns exec`, so the lab's /etc/hosts applies) and
    /// returns its exit status.
    pub fn exec(&self, host: &str, command: &[OsString]) -> anyhow::Result<ExitStatus> {
        Self::address(host)?;
        if !self.is_up()? {
            bail!("the lab's hosts are not up: start `jaring lab --hosts` or `jaring lab net up`");
        }
        let Some((program, args)) = command.split_first() else {
            bail!("nothing to run: jaring lab exec {host} -- COMMAND [ARGS...]");
        };
        let status = Command::new("ip")
            .args(["netns", "exec", &self.namespace(host)])
            .arg(program)
            .args(args)
            .status()
            .context("cannot run `ip` (Debian: apt install iproute2)")?;
        Ok(status)
    }

    /// Starts recording every packet crossing the bridge into `file`, and what runs on
    /// mesin-1's loopback (the realms' link) beside it, merged at the end.
    pub fn capture(&self, file: &Path) -> anyhow::Result<Capture> {
        let tool = CaptureTool::find()?;
        let bridge_file = sibling(file, "bridge");
        let loopback_file = sibling(file, "loopback");
        let bridge = tool.start(&self.switch(), BRIDGE, &bridge_file)?;
        let loopback = match tool.start(&self.namespace(SERVER_HOST), "lo", &loopback_file) {
            Ok(c) => c,
            Err(e) => {
                let mut bridge = bridge;
                let _ = bridge.kill();
                let _ = bridge.wait();
                return Err(e);
            }
        };
        Ok(Capture {
            file: file.to_owned(),
            parts: vec![(bridge, bridge_file), (loopback, loopback_file)],
        })
    }
}

/// Whether [`LabNet::up`] made the network or found one made by `jaring lab net up`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Made {
    /// Made now: the caller removes it when done.
    Fresh,
    /// Made earlier by `jaring lab net up`: left as it is.
    Reused,
}

/// The program that records packets.
#[derive(Debug, Clone, Copy)]
enum CaptureTool {
    /// Wireshark's capture program: pcapng, and it can merge (mergecap).
    Dumpcap,
    /// tcpdump: pcap.
    Tcpdump,
}

impl CaptureTool {
    fn find() -> anyhow::Result<Self> {
        if on_path("dumpcap") {
            Ok(Self::Dumpcap)
        } else if on_path("tcpdump") {
            Ok(Self::Tcpdump)
        } else {
            bail!(
                "--capture needs dumpcap or tcpdump: install one (Debian: apt install tshark, \
                 which brings dumpcap, or apt install tcpdump)"
            )
        }
    }

    /// Starts recording `interface` in namespace `ns` into `file`; returns once it records.
    /// What the program says goes to `file` + `.log` (not to a pipe: the capture may outlive
    /// this process, and a write to a closed pipe would end it).
    fn start(self, ns: &str, interface: &str, file: &Path) -> anyhow::Result<Child> {
        let log_path = PathBuf::from(format!("{}.log", file.display()));
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("cannot write {}", log_path.display()))?;
        let mut command = Command::new("ip");
        command.args(["netns", "exec", ns]);
        match self {
            // -q: no packet count on stderr; the start line still comes.
            Self::Dumpcap => command.args(["dumpcap", "-q", "-i", interface, "-w"]),
            // -U: each packet written as it comes, so a kill loses nothing written.
            Self::Tcpdump => command.args(["tcpdump", "-U", "-i", interface, "-w"]),
        };
        command
            .arg(file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        let mut child = command
            .spawn()
            .with_context(|| format!("cannot start the capture on {ns}/{interface}"))?;
        // Both say so once they listen ("Capturing on 'br0'", "listening on br0").
        let deadline = Instant::now() + CAPTURE_PATIENCE;
        loop {
            let said = std::fs::read_to_string(&log_path).unwrap_or_default();
            if said.contains("Capturing on") || said.contains("listening on") {
                let _ = std::fs::remove_file(&log_path);
                // They say so a moment before the kernel hands them packets (seen with dumpcap
                // under load: a connection's first byte missing).
                std::thread::sleep(CAPTURE_SETTLE);
                return Ok(child);
            }
            if child.try_wait()?.is_some() {
                let _ = std::fs::remove_file(&log_path);
                bail!(
                    "the capture on {ns}/{interface} did not start: {}",
                    said.trim().replace('\n', "; ")
                );
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                let _ = std::fs::remove_file(&log_path);
                bail!("the capture on {ns}/{interface} did not start within {CAPTURE_PATIENCE:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A running capture: stop it with [`Capture::finish`].
#[derive(Debug)]
pub struct Capture {
    file: PathBuf,
    parts: Vec<(Child, PathBuf)>,
}

impl Capture {
    /// Stops recording, lets each program finish its file, and merges them into the file asked
    /// for. Returns what was written.
    pub fn finish(mut self) -> anyhow::Result<Vec<PathBuf>> {
        std::thread::sleep(CAPTURE_DRAIN);
        let pids: Vec<u32> = self.parts.iter().map(|(c, _)| c.id()).collect();
        signal_all(&pids, rustix::process::Signal::TERM);
        let deadline = Instant::now() + CAPTURE_PATIENCE;
        for (child, _) in &mut self.parts {
            while child.try_wait()?.is_none() {
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let files: Vec<PathBuf> = self.parts.iter().map(|(_, f)| f.clone()).collect();
        merge(&self.file, &files)
    }
}

/// Merges the capture's parts into `file` with mergecap (pcapng keeps each interface); without
/// mergecap the bridge's part becomes `file` and the loopback's stays beside it.
fn merge(file: &Path, parts: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    if on_path("mergecap") {
        let status = Command::new("mergecap")
            .arg("-w")
            .arg(file)
            .args(parts)
            .status()
            .context("cannot run mergecap")?;
        if status.success() {
            for f in parts {
                let _ = std::fs::remove_file(f);
            }
            return Ok(vec![file.to_owned()]);
        }
    }
    std::fs::rename(&parts[0], file).with_context(|| format!("cannot write {}", file.display()))?;
    Ok(vec![file.to_owned(), parts[1].clone()])
}

fn signal_all(pids: &[u32], signal: rustix::process::Signal) {
    for &pid in pids {
        if let Some(pid) = i32::try_from(pid)
            .ok()
            .and_then(rustix::process::Pid::from_raw)
        {
            let _ = rustix::process::kill_process(pid, signal);
        }
    }
}

/// `lab.pcapng` → `lab.bridge.pcapng`.
fn sibling(file: &Path, part: &str) -> PathBuf {
    let stem = file
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "capture".into());
    let ext = file
        .extension()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "pcapng".into());
    file.with_file_name(format!("{stem}.{part}.{ext}"))
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| dir.join(program).is_file())
            || ["/usr/sbin", "/sbin", "/usr/bin"]
                .iter()
                .any(|d| Path::new(d).join(program).is_file())
    })
}

/// Runs `ip ARGS`; a failure carries what `ip` said.
fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("cannot run `ip` (Debian: apt install iproute2)")?;
    if out.status.success() {
        Ok(())
    } else {
        bail!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )
    }
}

/// The named network namespaces on this machine (`ip netns list`, first word of each line).
fn existing_namespaces() -> anyhow::Result<Vec<String>> {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .context("cannot run `ip` (Debian: apt install iproute2)")?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect())
}

/// The processes in namespace `ns`.
pub fn namespace_pids(ns: &str) -> Vec<u32> {
    Command::new("ip")
        .args(["netns", "pids", ns])
        .output()
        .map(|out| {
            String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

fn pid_alive(pid: u32) -> bool {
    Path::new("/proc").join(pid.to_string()).exists()
}

/// Whether `pid` is a running jaring (not another program that got the pid of a dead lab).
fn is_jaring(pid: u32) -> bool {
    std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("comm"))
        .is_ok_and(|comm| comm.trim_end().starts_with("jaring"))
}

/// Capability bits in `/proc/self/status`'s `CapEff`.
const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;

/// Network namespaces need CAP_SYS_ADMIN (naming them under /run/netns) and CAP_NET_ADMIN
/// (their links): say which is missing and how to get them.
pub fn check_privileges() -> anyhow::Result<()> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let effective = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .unwrap_or(0);
    let missing: Vec<&str> = [
        (CAP_SYS_ADMIN, "CAP_SYS_ADMIN"),
        (CAP_NET_ADMIN, "CAP_NET_ADMIN"),
    ]
    .iter()
    .filter(|(bit, _)| effective & (1 << bit) == 0)
    .map(|(_, name)| *name)
    .collect();
    if !missing.is_empty() {
        bail!(
            "the lab's hosts are network namespaces, and making them needs root ({} missing): \
             run it as root, e.g. `sudo jaring lab --hosts`; without root, `jaring lab` runs \
             every service on this machine's loopback",
            missing.join(" and ")
        );
    }
    if !on_path("ip") {
        bail!(
            "the lab's hosts are made with iproute2's `ip`: install it (Debian: apt install iproute2)"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_prefix() {
        let plain = LabNet { prefix: None };
        assert_eq!(plain.namespace("mesin-2"), "mesin-2");
        assert_eq!(plain.switch(), "jaring-lab");
        let test = LabNet {
            prefix: Some("t42".into()),
        };
        assert_eq!(test.namespace("mesin-2"), "t42-mesin-2");
        assert_eq!(
            test.namespaces(),
            ["t42-mesin-1", "t42-mesin-2", "t42-mesin-3", "t42-lab"]
        );
    }

    #[test]
    fn hosts_are_the_reports_addresses() {
        assert_eq!(
            LabNet::address("mesin-1").unwrap(),
            Ipv4Addr::new(172, 16, 16, 101)
        );
        let e = LabNet::address("mesin-9").unwrap_err().to_string();
        assert!(e.contains("mesin-1, mesin-2, mesin-3"), "{e}");
    }

    #[test]
    fn capture_parts_sit_beside_the_file() {
        assert_eq!(
            sibling(Path::new("/tmp/lab.pcapng"), "bridge"),
            Path::new("/tmp/lab.bridge.pcapng")
        );
        assert_eq!(
            sibling(Path::new("cap"), "loopback"),
            Path::new("cap.loopback.pcapng")
        );
    }
}
