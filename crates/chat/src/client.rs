//! `jaring chat client`: an interactive prompt like the lab client, which keeps the token for you.
//!
//! At a terminal it has line editing and history (rustyline); with stdin piped it reads commands
//! line by line and stops at the end of input, so it can be scripted. Output is readable text, or
//! each raw JSON reply with `--json`. Blocking I/O: one user, one connection, nothing to multiplex.

use std::io::{self, BufRead as _, IsTerminal as _, Read as _, Write};
use std::net::TcpStream;
use std::time::Duration;

use jaring_proto::chat::ReplyFramer;
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
    /// Connect and reply timeout.
    pub timeout: Duration,
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
}

struct Conn {
    stream: TcpStream,
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
  send TO MESSAGE...      send a private message
  inbox                   messages you have not read yet
  users                   who exists, who is online
  history PEER [N]        the last N messages with PEER, both ways
  logout                  end the session
  help, quit";

/// Runs the client until `quit` or the end of input.
pub fn run(opts: &ClientOptions, out: &mut impl Write) -> Result<(), ClientError> {
    let addrs: Vec<std::net::SocketAddr> = std::net::ToSocketAddrs::to_socket_addrs(&opts.server)
        .map_err(|e| ClientError::Connect(opts.server.clone(), e))?
        .collect();
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
    let mut stream = None;
    for a in addrs {
        match TcpStream::connect_timeout(&a, opts.timeout) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = e,
        }
    }
    let stream = stream.ok_or_else(|| ClientError::Connect(opts.server.clone(), last))?;
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(opts.timeout));
    let mut conn = Conn {
        stream,
        framer: ReplyFramer::new(MAX_REPLY),
        server: opts.server.clone(),
    };
    let mut token = String::new();
    let interactive = io::stdin().is_terminal();
    let mut editor = if interactive {
        let _ = writeln!(out, "connected to {}; type help for commands", opts.server);
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
            ("send" | "inbox" | "users" | "history" | "logout", _) if token.is_empty() => {
                need_token(out);
                continue;
            }
            ("send", n) if n >= 3 => {
                // Everything after TO, spaces kept.
                let rest = line.trim_start()[4..].trim_start();
                let msg = rest.split_once(' ').map_or("", |(_, m)| m);
                format!("send {token} {} {msg}", words[1])
            }
            ("inbox" | "users" | "logout", 1) => format!("{cmd} {token}"),
            ("history", 2 | 3) => format!("history {token} {}", words[1..].join(" ")),
            _ => {
                let _ = writeln!(out, "error: cannot parse that; type help for commands");
                continue;
            }
        };
        let reply = conn.call(&request)?;
        if opts.json {
            let _ = writeln!(out, "{reply}");
        } else {
            print_reply(cmd, &reply, out);
        }
        if reply["status"] == "OK" {
            match cmd {
                "auth" => token = reply["tokenid"].as_str().unwrap_or_default().to_owned(),
                "logout" => token.clear(),
                _ => {}
            }
        }
    }
    Ok(())
}

fn print_reply(cmd: &str, v: &Value, out: &mut impl Write) {
    let s = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    if v["status"] != "OK" {
        let _ = writeln!(out, "error: {}", s(&v["message"]));
        return;
    }
    let print_msg = |out: &mut dyn Write, m: &Value| {
        let _ = writeln!(
            out,
            "  {} → {}: {}",
            s(&m["from"]),
            s(&m["to"]),
            s(&m["msg"])
        );
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
        "history" => {
            for m in v["messages"].as_array().into_iter().flatten() {
                print_msg(out, m);
            }
        }
        _ => drop(writeln!(out, "{v}")),
    }
}
