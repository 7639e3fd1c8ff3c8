//! `jaring chat client`: an interactive prompt like the lab client, which keeps the token for you.
//!
//! At a terminal it has line editing and history (rustyline); with stdin piped it reads commands
//! line by line and stops at the end of input, so it can be scripted. Output is readable text, or
//! each raw JSON reply with `--json`. Blocking I/O: one user, one connection. In a live group
//! session (`group NAME`) a reader thread prints the group's events as they arrive, through
//! rustyline's external printer at a terminal so they do not garble the line being typed, while
//! the main thread sends each typed line to the group; `exit` ends the session.

use std::io::{self, BufRead as _, IsTerminal as _, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use jaring_runtime::{ClientTls, DialError};

use jaring_proto::chat::{ReplyFramer, is_event};
use rustyline::ExternalPrinter as _;
use serde_json::Value;

/// Largest reply the client accepts (an inbox reply is capped well below it by the server).
const MAX_REPLY: usize = 64 << 20;

/// What the client does.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// `host:port` of the realm.
    pub server: String,
    /// Print raw JSON replies.
    pub json: bool,
    /// Connect (and TLS handshake) and reply timeout.
    pub timeout: Duration,
    /// TLS, if the realm is to be spoken to over it.
    pub tls: Option<ClientTls>,
}

/// Why the client stopped.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Could not connect.
    #[error("cannot connect to {0}")]
    Connect(String, #[source] io::Error),
    /// The connection failed.
    #[error("connection to {0} failed")]
    Io(String, #[source] io::Error),
    /// The server closed the connection.
    #[error("{0} closed the connection")]
    Closed(String),
    /// A reply was not valid.
    #[error("bad reply from {0}")]
    Reply(String, #[source] jaring_proto::chat::reply::ReplyError),
    /// Terminal line editing failed.
    #[error("terminal input failed: {0}")]
    Terminal(String),
    /// Connecting over TLS failed (the message says whether the handshake did, and why).
    #[error(transparent)]
    Dial(#[from] DialError),
    /// `--server` is not `host:port`.
    #[error("{0}: not host:port (e.g. 127.0.0.1:8889)")]
    Address(String),
    /// TLS was asked for outside a tokio runtime (a program error, not the user's).
    #[error("TLS needs the client to run on a tokio runtime's blocking thread")]
    NoRuntime,
}

/// The client's end of its connection. The client is blocking and, in a live group session,
/// reads on one thread while it writes on another: a TCP socket can be cloned for that, a TLS
/// session cannot. So over TLS the client holds one end of a local socket pair, and a task on
/// the async runtime relays between the other end and the TLS session.
enum Wire {
    /// Plaintext: the socket itself.
    Tcp(TcpStream),
    /// TLS: the local end of the relay.
    Relay(UnixStream),
}

impl Wire {
    fn try_clone(&self) -> io::Result<Self> {
        Ok(match self {
            Self::Tcp(s) => Self::Tcp(s.try_clone()?),
            Self::Relay(s) => Self::Relay(s.try_clone()?),
        })
    }

    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        match self {
            Self::Tcp(s) => s.set_read_timeout(timeout),
            Self::Relay(s) => s.set_read_timeout(timeout),
        }
    }
}

impl Read for Wire {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Self::Tcp(s) => s.read(buf),
            Self::Relay(s) => s.read(buf),
        }
    }
}

impl Write for Wire {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Self::Tcp(s) => s.write(buf),
            Self::Relay(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Self::Tcp(s) => s.flush(),
            Self::Relay(s) => s.flush(),
        }
    }
}

/// Connects over TLS on the current tokio runtime (the caller is on one of its blocking
/// threads) and starts the relay; returns the local end, and the TLS version and cipher suite.
fn connect_tls(opts: &ClientOptions, tls: &ClientTls) -> Result<(Wire, String), ClientError> {
    let handle = tokio::runtime::Handle::try_current().map_err(|_| ClientError::NoRuntime)?;
    let (host, port) = opts
        .server
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h, p.parse::<u16>().ok()?)))
        .ok_or_else(|| ClientError::Address(opts.server.clone()))?;
    let mut stream =
        handle.block_on(jaring_runtime::connect(host, port, opts.timeout, Some(tls)))?;
    let summary = stream.tls_summary().unwrap_or_default();
    let (local, remote) =
        UnixStream::pair().map_err(|e| ClientError::Io(opts.server.clone(), e))?;
    remote
        .set_nonblocking(true)
        .map_err(|e| ClientError::Io(opts.server.clone(), e))?;
    handle.spawn(async move {
        let Ok(mut remote) = tokio::net::UnixStream::from_std(remote) else {
            return;
        };
        // Ends when either side closes; the copy flushes TLS whenever the local side pauses.
        let _ = tokio::io::copy_bidirectional(&mut stream, &mut remote).await;
    });
    Ok((Wire::Relay(local), summary))
}

/// Connects in plain TCP, trying each address in turn.
fn connect_tcp(opts: &ClientOptions) -> Result<Wire, ClientError> {
    let addrs: Vec<std::net::SocketAddr> = std::net::ToSocketAddrs::to_socket_addrs(&opts.server)
        .map_err(|e| ClientError::Connect(opts.server.clone(), e))?
        .collect();
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
    for a in addrs {
        match TcpStream::connect_timeout(&a, opts.timeout) {
            Ok(s) => {
                let _ = s.set_nodelay(true);
                return Ok(Wire::Tcp(s));
            }
            Err(e) => last = e,
        }
    }
    Err(ClientError::Connect(opts.server.clone(), last))
}

struct Conn {
    stream: Wire,
    framer: ReplyFramer,
    server: String,
}

impl Conn {
    fn call(&mut self, line: &str) -> Result<Value, ClientError> {
        let io_err = |e| ClientError::Io(self.server.clone(), e);
        self.stream
            .write_all(format!("{line}\r\n").as_bytes())
            .map_err(io_err)?;
        let mut buf = [0u8; 8192];
        loop {
            if let Some(v) = self
                .framer
                .poll_reply()
                .map_err(|e| ClientError::Reply(self.server.clone(), e))?
            {
                return Ok(v);
            }
            let n = self
                .stream
                .read(&mut buf)
                .map_err(|e| ClientError::Io(self.server.clone(), e))?;
            if n == 0 {
                return Err(ClientError::Closed(self.server.clone()));
            }
            self.framer.handle_input(&buf[..n]);
        }
    }
}

const HELP: &str = "commands:
  auth USER PASSWORD      log in (the token is kept for the commands below)
  send TO MESSAGE...      send a private message (TO: user, or user@realm on a linked realm)
  inbox                   messages you have not read yet
  users                   who exists, who is online
  history PEER [N]        the last N messages with PEER (or in group PEER)
  group NAME              join group NAME (created if new) and chat live: each line you
                          type goes to the group, its messages print as they arrive;
                          exit ends the live session (you stay a member);
                          NAME@REALM is the group NAME of a linked realm
  sendgroup GROUP MESSAGE...  send one message to a group (joins it if needed)
  inboxgroup GROUP        the group's messages you have not read yet
  groups                  every group, with its member count
  members GROUP           who is in a group, who is live
  leave GROUP             leave a group
  realms                  linked realms and the state of each link
  logout                  end the session
  help, quit";

/// Runs the client until `quit` or the end of input.
pub fn run(opts: &ClientOptions, out: &mut impl Write) -> Result<(), ClientError> {
    let (stream, tls) = match &opts.tls {
        Some(tls) => {
            let (wire, summary) = connect_tls(opts, tls)?;
            (wire, Some(summary))
        }
        None => (connect_tcp(opts)?, None),
    };
    let _ = stream.set_read_timeout(Some(opts.timeout));
    let mut conn = Conn {
        stream,
        framer: ReplyFramer::new(MAX_REPLY),
        server: opts.server.clone(),
    };
    let mut token = String::new();
    // Whether the last reply was an inbox with messages that no request has followed yet.
    let mut unacknowledged = false;
    let interactive = io::stdin().is_terminal();
    let mut editor = if interactive {
        let over = tls.map_or_else(String::new, |t| format!(" over TLS ({t})"));
        let _ = writeln!(
            out,
            "connected to {}{over}; type help for commands",
            opts.server
        );
        Some(rustyline::DefaultEditor::new().map_err(|e| ClientError::Terminal(e.to_string()))?)
    } else {
        None
    };
    let mut stdin = io::stdin().lock();
    loop {
        let line = match &mut editor {
            Some(ed) => match ed.readline(if token.is_empty() { "chat> " } else { "chat* " }) {
                Ok(l) => {
                    let _ = ed.add_history_entry(l.as_str());
                    l
                }
                Err(
                    rustyline::error::ReadlineError::Interrupted
                    | rustyline::error::ReadlineError::Eof,
                ) => break,
                Err(e) => return Err(ClientError::Terminal(e.to_string())),
            },
            None => {
                let mut l = String::new();
                match stdin.read_line(&mut l) {
                    Ok(0) => break,
                    Ok(_) => l.trim_end_matches(['\r', '\n']).to_owned(),
                    Err(e) => return Err(ClientError::Terminal(e.to_string())),
                }
            }
        };
        let words: Vec<&str> = line.split_whitespace().collect();
        let Some(&cmd) = words.first() else { continue };
        let need_token = |out: &mut dyn Write| {
            let _ = writeln!(out, "error: not logged in; auth USER PASSWORD first");
        };
        let request = match (cmd, words.len()) {
            ("quit" | "exit", _) => break,
            ("help", _) => {
                let _ = writeln!(out, "{HELP}");
                continue;
            }
            ("auth", 3) => format!("auth {} {}", words[1], words[2]),
            (
                "send" | "inbox" | "users" | "history" | "logout" | "group" | "sendgroup"
                | "inboxgroup" | "groups" | "members" | "leave" | "realms",
                _,
            ) if token.is_empty() => {
                need_token(out);
                continue;
            }
            // The classic client's trailing origin word is accepted and ignored.
            ("group", 2 | 3) => {
                let reply = conn.call(&format!("group {token} {}", words[1]))?;
                if reply["status"] != "OK" || opts.json {
                    print_reply(cmd, &reply, opts.json, out);
                }
                if reply["status"] == "OK" {
                    if !opts.json {
                        let _ = writeln!(
                            out,
                            "live in {}: type to send, exit to leave the live session",
                            words[1]
                        );
                    }
                    live(&mut conn, opts, editor.as_mut(), &mut stdin, out)?;
                }
                continue;
            }
            ("sendgroup", n) if n >= 3 => {
                let rest = line.trim_start()[9..].trim_start();
                let msg = rest.split_once(' ').map_or("", |(_, m)| m);
                format!("sendgroup {token} {} {msg}", words[1])
            }
            ("inboxgroup" | "members" | "leave", 2) => format!("{cmd} {token} {}", words[1]),
            ("groups", 1) => format!("groups {token}"),
            ("send", n) if n >= 3 => {
                // Everything after TO, spaces kept.
                let rest = line.trim_start()[4..].trim_start();
                let msg = rest.split_once(' ').map_or("", |(_, m)| m);
                format!("send {token} {} {msg}", words[1])
            }
            ("inbox" | "users" | "logout" | "realms", 1) => format!("{cmd} {token}"),
            ("history", 2..=4) => format!("history {token} {}", words[1..].join(" ")),
            _ => {
                let _ = writeln!(out, "error: cannot parse that; type help for commands");
                continue;
            }
        };
        let mut reply = conn.call(&request)?;
        if !opts.json {
            reply = follow_pages(&mut conn, cmd, &words, &token, reply)?;
        }
        print_reply(cmd, &reply, opts.json, out);
        // The realm counts an inbox reply as delivered when this connection sends its next
        // request; the user has seen it once it is printed.
        unacknowledged = matches!(cmd, "inbox" | "inboxgroup") && carries_messages(&reply);
        if reply["status"] == "OK" {
            match cmd {
                "auth" => token = reply["tokenid"].as_str().unwrap_or_default().to_owned(),
                "logout" => token.clear(),
                _ => {}
            }
        }
    }
    if unacknowledged && !token.is_empty() {
        // Shows the realm we have the last inbox reply, which would otherwise be handed out
        // again next time; `realms` changes nothing.
        let _ = conn.call(&format!("realms {token}"));
    }
    Ok(())
}

/// Whether an OK `inbox` (messages by sender) or `inboxgroup` (a list) reply carries any.
fn carries_messages(reply: &Value) -> bool {
    reply["status"] == "OK"
        && match &reply["messages"] {
            Value::Object(by_sender) => by_sender
                .values()
                .any(|v| v.as_array().is_some_and(|l| !l.is_empty())),
            Value::Array(list) => !list.is_empty(),
            _ => false,
        }
}

/// Most pages a listing follows, so a realm that keeps saying "more" cannot keep us forever.
const MAX_PAGES: usize = 1000;

/// For `users`, `groups`, `members` and `history`: asks for the following pages while the reply
/// says `"more"` with a `"next"` cursor, and returns one reply holding them all (history oldest
/// first, as one reply would have been).
fn follow_pages(
    conn: &mut Conn,
    cmd: &str,
    words: &[&str],
    token: &str,
    mut reply: Value,
) -> Result<Value, ClientError> {
    let (key, base) = match cmd {
        "users" => ("users", format!("users {token}")),
        "groups" => ("groups", format!("groups {token}")),
        "members" if words.len() == 2 => ("members", format!("members {token} {}", words[1])),
        "history" if words.len() >= 2 => ("messages", format!("history {token} {}", words[1])),
        _ => return Ok(reply),
    };
    let wanted: usize = words
        .get(2)
        .and_then(|n| n.parse().ok())
        .unwrap_or(jaring_proto::chat::history::DEFAULT_COUNT as usize);
    for _ in 0..MAX_PAGES {
        let Some(next) = reply["next"].as_str().filter(|_| reply["more"] == true) else {
            break;
        };
        let got = reply[key].as_array().map_or(0, Vec::len);
        let request = if cmd == "history" {
            if got >= wanted {
                break;
            }
            format!("{base} {} {next}", wanted - got)
        } else {
            format!("{base} {next}")
        };
        let page = conn.call(&request)?;
        if page["status"] != "OK" {
            return Ok(page);
        }
        let mut items = page[key].as_array().cloned().unwrap_or_default();
        if items.is_empty() {
            break;
        }
        let had = reply[key].as_array().cloned().unwrap_or_default();
        if cmd == "history" {
            // Each page holds older messages than the last.
            items.extend(had);
        } else {
            let mut all = had;
            all.append(&mut items);
            items = all;
        }
        reply[key] = Value::Array(items);
        reply["more"] = page["more"].clone();
        reply["next"] = page["next"].clone();
    }
    Ok(reply)
}

/// Runs a live group session: events print as they arrive while typed lines go to the group.
fn live(
    conn: &mut Conn,
    opts: &ClientOptions,
    mut editor: Option<&mut rustyline::DefaultEditor>,
    stdin: &mut io::StdinLock<'_>,
    out: &mut impl Write,
) -> Result<(), ClientError> {
    let server = conn.server.clone();
    let io_err = |e| ClientError::Io(server.clone(), e);
    let mut reader = conn.stream.try_clone().map_err(io_err)?;
    // Events come whenever the group speaks: no reply timeout while live.
    conn.stream.set_read_timeout(None).map_err(io_err)?;
    let mut framer = std::mem::replace(&mut conn.framer, ReplyFramer::new(MAX_REPLY));
    let json = opts.json;
    // At a terminal, events print above the line being typed; piped, they come back over a
    // channel and print between lines.
    let mut external = match editor.as_deref_mut() {
        Some(ed) => Some(
            ed.create_external_printer()
                .map_err(|e| ClientError::Terminal(e.to_string()))?,
        ),
        None => None,
    };
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let thread = std::thread::spawn(move || {
        let mut emit = |text: String| match &mut external {
            Some(p) => drop(p.print(text)),
            None => drop(tx.send(text)),
        };
        let mut buf = [0u8; 64 * 1024];
        loop {
            match framer.poll_reply() {
                Ok(Some(v)) => {
                    let text = if json {
                        v.to_string()
                    } else {
                        format_event(&v)
                    };
                    // The final reply ends the live mode; it prints once the prompt is gone.
                    if !is_event(&v) {
                        return (framer, Ok(Some(text)));
                    }
                    emit(text);
                    // So does the server ending the session, which the user must hear at once.
                    if v["event"] == "end" {
                        return (framer, Ok(None));
                    }
                    continue;
                }
                Ok(None) => {}
                Err(e) => return (framer, Err(io::Error::other(e))),
            }
            match reader.read(&mut buf) {
                Ok(0) => return (framer, Err(io::ErrorKind::UnexpectedEof.into())),
                Ok(n) => framer.handle_input(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return (framer, Err(e)),
            }
        }
    });
    while !thread.is_finished() {
        let line = match editor.as_deref_mut() {
            Some(ed) => ed
                .readline("live> ")
                .unwrap_or_else(|_| EXIT_LINE.to_owned()),
            None => {
                let mut l = String::new();
                match stdin.read_line(&mut l) {
                    Ok(0) | Err(_) => EXIT_LINE.to_owned(),
                    Ok(_) => l.trim_end_matches(['\r', '\n']).to_owned(),
                }
            }
        };
        if thread.is_finished() {
            // The server ended the session while this line was typed: it was not sent.
            break;
        }
        conn.stream
            .write_all(format!("{line}\r\n").as_bytes())
            .map_err(|e| ClientError::Io(conn.server.clone(), e))?;
        for text in rx.try_iter() {
            let _ = writeln!(out, "{text}");
        }
        if line.trim().eq_ignore_ascii_case(EXIT_LINE) {
            break;
        }
    }
    let (framer, result) = thread
        .join()
        .map_err(|_| ClientError::Terminal("the event reader failed".into()))?;
    for text in rx.try_iter() {
        let _ = writeln!(out, "{text}");
    }
    if let Ok(Some(last)) = &result {
        let _ = writeln!(out, "{last}");
    }
    conn.framer = framer;
    let _ = conn.stream.set_read_timeout(Some(opts.timeout));
    result.map(drop).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => ClientError::Closed(conn.server.clone()),
        _ => ClientError::Io(conn.server.clone(), e),
    })
}

/// The line that ends a live session.
const EXIT_LINE: &str = "exit";

/// One event (or the final reply) as a line for people.
fn format_event(v: &Value) -> String {
    let s = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    let group = s(&v["group"]);
    match v["event"].as_str() {
        Some("message") => format!("[{group}] {}: {}", s(&v["from"]), s(&v["msg"])),
        Some("join") => format!("[{group}] * {} joined", s(&v["user"])),
        Some("leave") => format!("[{group}] * {} left", s(&v["user"])),
        Some("end") => format!(
            "[{group}] live session ended: {} (back to commands)",
            s(&v["reason"])
        ),
        Some(_) => v.to_string(),
        None if v["status"] == "OK" => "left the live session".to_owned(),
        None => format!("error: {}", s(&v["message"])),
    }
}

fn print_reply(cmd: &str, v: &Value, json: bool, out: &mut impl Write) {
    if json {
        let _ = writeln!(out, "{v}");
        return;
    }
    let s = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    if v["status"] != "OK" {
        let _ = writeln!(out, "error: {}", s(&v["message"]));
        return;
    }
    let print_msg = |out: &mut dyn Write, m: &Value| {
        let _ = if m.get("group").is_some() {
            writeln!(
                out,
                "  [{}] {}: {}",
                s(&m["group"]),
                s(&m["from"]),
                s(&m["msg"])
            )
        } else {
            writeln!(
                out,
                "  {} → {}: {}",
                s(&m["from"]),
                s(&m["to"]),
                s(&m["msg"])
            )
        };
    };
    match cmd {
        "auth" => drop(writeln!(out, "logged in")),
        "send" => drop(writeln!(out, "sent")),
        "logout" => drop(writeln!(out, "logged out")),
        "inbox" => {
            let groups = v["messages"].as_object();
            if groups.is_none_or(|g| g.values().all(|l| l.as_array().is_none_or(Vec::is_empty))) {
                let _ = writeln!(out, "no new messages");
            }
            for list in groups.into_iter().flat_map(|g| g.values()) {
                for m in list.as_array().into_iter().flatten() {
                    print_msg(out, m);
                }
            }
            if v["more"] == true {
                let _ = writeln!(out, "(more waiting: run inbox again)");
            }
        }
        "users" => {
            for u in v["users"].as_array().into_iter().flatten() {
                let mark = if u["online"] == true { "online" } else { "" };
                let _ = writeln!(
                    out,
                    "  {:<16} {:<24} {mark}",
                    s(&u["name"]),
                    s(&u["display_name"])
                );
            }
        }
        "history" | "inboxgroup" => {
            let msgs = v["messages"].as_array();
            if cmd == "inboxgroup" && msgs.is_none_or(Vec::is_empty) {
                let _ = writeln!(out, "no new messages");
            }
            for m in msgs.into_iter().flatten() {
                print_msg(out, m);
            }
            if v["more"] == true && cmd == "inboxgroup" {
                let _ = writeln!(out, "(more waiting: run inboxgroup again)");
            } else if let Some(next) = v["next"].as_str() {
                let _ = writeln!(out, "(older messages: history PEER N {next})");
            }
        }
        // A group homed on another realm numbers the message there; it arrives with its number.
        "sendgroup" if v["seq"] == 0 => drop(writeln!(out, "sent (to {})", s(&v["group"]))),
        "sendgroup" => drop(writeln!(out, "sent (#{})", v["seq"])),
        "leave" => drop(writeln!(out, "{}", s(&v["message"]))),
        "groups" => {
            for g in v["groups"].as_array().into_iter().flatten() {
                let mark = if g["member"] == true { "member" } else { "" };
                let _ = writeln!(
                    out,
                    "  {:<24} {:>6} members  {mark}",
                    s(&g["name"]),
                    g["members"]
                );
            }
        }
        "members" => {
            for m in v["members"].as_array().into_iter().flatten() {
                let mark = if m["live"] == true { "live" } else { "" };
                let _ = writeln!(
                    out,
                    "  {:<16} {:<24} {mark}",
                    s(&m["name"]),
                    s(&m["display_name"])
                );
            }
            if v["more"] == true {
                let _ = writeln!(
                    out,
                    "  … and more (the group's realm sent the first of them)"
                );
            }
        }
        "realms" => {
            let peers = v["peers"].as_array();
            if peers.is_none_or(Vec::is_empty) {
                let _ = writeln!(out, "realm {} has no federation peers", s(&v["realm"]));
            }
            for p in peers.into_iter().flatten() {
                let _ = writeln!(
                    out,
                    "  {:<16} {:<22} {:<10} outbox {:<8} {}",
                    s(&p["realm"]),
                    s(&p["address"]),
                    s(&p["state"]),
                    p["outbox"],
                    s(&p["last_error"])
                );
            }
        }
        _ => drop(writeln!(out, "{v}")),
    }
}
