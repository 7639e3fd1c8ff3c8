//! Where typed lines come from: a blocking thread per client, with rustyline at a terminal
//! (history, Tab completion, a hidden password prompt, and an external printer so pushed
//! messages appear above the prompt without garbling the line being typed) or plain lines from a
//! pipe. Lines go to the async core over a bounded channel, so a long script is read only as fast
//! as it is run.

use std::collections::BTreeSet;
use std::io::BufRead as _;
use std::sync::{Arc, Mutex, mpsc as std_mpsc};
use std::time::Duration;

use rustyline::completion::Completer;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::history::DefaultHistory;
use rustyline::validate::Validator;
use tokio::sync::{mpsc, oneshot};

use super::command::{self, Completes};

/// Dropped (or sent on) when the core has handled a line, so the terminal thread shows its next
/// prompt after the reply, with the prompt then true (`messi@realm1>` right after `auth`).
pub(crate) type Done = Option<std_mpsc::SyncSender<()>>;

/// What the input side sends the core.
#[derive(Debug)]
pub(crate) enum Input {
    /// A line, without its line end.
    Line(String, Done),
    /// The end of input (Ctrl-D, end of the pipe, Ctrl-C).
    Eof,
}

/// A printer of lines above the prompt (rustyline's external printer).
pub(crate) type Printer = Box<dyn rustyline::ExternalPrinter + Send>;

/// What the core and the terminal thread share.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    /// The prompt the next `readline` shows.
    pub prompt: Mutex<String>,
    /// Whether plain lines go to a conversation (for completion and the password prompt).
    pub in_conversation: Mutex<bool>,
    /// Names seen, for Tab completion.
    pub names: Mutex<Names>,
}

/// User and group names the client has seen (in replies and events).
#[derive(Debug, Default)]
pub(crate) struct Names {
    /// User addresses.
    pub users: BTreeSet<String>,
    /// Group addresses.
    pub groups: BTreeSet<String>,
}

/// Most names kept for completion, so a realm of a million users cannot fill the client.
const MAX_NAMES: usize = 10_000;

impl Names {
    /// Remembers a user's address.
    pub(crate) fn user(&mut self, name: &str) {
        if !name.is_empty() && self.users.len() < MAX_NAMES {
            self.users.insert(name.to_owned());
        }
    }

    /// Remembers a group's address.
    pub(crate) fn group(&mut self, name: &str) {
        if !name.is_empty() && self.groups.len() < MAX_NAMES {
            self.groups.insert(name.to_owned());
        }
    }
}

/// A lock that survives a panic elsewhere: the data are display hints, never invariants.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Tab completion of command words, user names and group names.
struct Helper {
    shared: Arc<Shared>,
}

impl Completer for Helper {
    type Candidate = String;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &rustyline::Context<'_>,
    ) -> rustyline::Result<(usize, Vec<String>)> {
        let before = &line[..pos];
        let start = before.rfind(' ').map_or(0, |i| i + 1);
        let word = &before[start..];
        let earlier: Vec<&str> = before[..start].split_whitespace().collect();
        let names = lock(&self.shared.names);
        let from = |set: &BTreeSet<String>| -> Vec<String> {
            set.iter()
                .filter(|n| n.starts_with(word))
                .map(|n| format!("{n} "))
                .collect()
        };
        let conversation = *lock(&self.shared.in_conversation);
        let candidates = match earlier.first() {
            None if word.starts_with('/') || !conversation => command::WORDS
                .iter()
                .filter(|w| w.starts_with(word))
                .map(|w| format!("{w} "))
                .collect(),
            // In a conversation a line is a message: complete nicks in it, as IRC clients do.
            None => from(&names.users),
            Some(cmd) => match command::completes(cmd, earlier.len()) {
                Completes::User => from(&names.users),
                Completes::Group => from(&names.groups),
                Completes::Either => {
                    let mut all = from(&names.users);
                    all.extend(from(&names.groups));
                    all
                }
                Completes::Nothing if conversation && !cmd.starts_with('/') => from(&names.users),
                Completes::Nothing => Vec::new(),
            },
        };
        Ok((start, candidates))
    }
}

impl Hinter for Helper {
    type Hint = String;
}
impl Highlighter for Helper {}
impl Validator for Helper {}
impl rustyline::Helper for Helper {}

/// If `line` is `auth USER` (no password) as a command, the user name.
fn auth_without_password(line: &str, conversation: bool) -> Option<&str> {
    let words: Vec<&str> = line.split_whitespace().collect();
    match words.as_slice() {
        [cmd, user] if (!conversation && matches!(*cmd, "auth" | "login")) => Some(user),
        [cmd, user] if matches!(*cmd, "/auth" | "/login") => Some(user),
        _ => None,
    }
}

/// Reads lines at a terminal until Ctrl-D, Ctrl-C or `quit`'s end of input, with the prompt
/// `shared` holds; sends the printer for pushed lines first. Waits after each line until the
/// core has handled it (at most `wait`).
pub(crate) fn terminal(
    shared: Arc<Shared>,
    tx: mpsc::Sender<Input>,
    printer: oneshot::Sender<Result<Option<Printer>, String>>,
    wait: Duration,
) {
    let mut editor = match rustyline::Editor::<Helper, DefaultHistory>::new() {
        Ok(e) => e,
        Err(e) => {
            let _ = printer.send(Err(e.to_string()));
            return;
        }
    };
    editor.set_helper(Some(Helper {
        shared: Arc::clone(&shared),
    }));
    let external = editor
        .create_external_printer()
        .ok()
        .map(|p| Box::new(p) as Printer);
    if printer.send(Ok(external)).is_err() {
        return;
    }
    loop {
        let prompt = lock(&shared.prompt).clone();
        match editor.readline(&prompt) {
            Ok(mut line) => {
                let conversation = *lock(&shared.in_conversation);
                if let Some(user) = auth_without_password(&line, conversation) {
                    // Hidden, and never in the history.
                    match rpassword::prompt_password(format!("password for {user}: ")) {
                        Ok(password) => line = format!("auth {user} {}", password.trim()),
                        Err(_) => continue,
                    }
                } else if !line.trim().is_empty() && auth_words(&line) != Some(3) {
                    let _ = editor.add_history_entry(line.as_str());
                }
                let (done, handled) = std_mpsc::sync_channel(1);
                if tx.blocking_send(Input::Line(line, Some(done))).is_err() {
                    return;
                }
                let _ = handled.recv_timeout(wait);
            }
            Err(_) => break,
        }
    }
    let _ = tx.blocking_send(Input::Eof);
}

/// How many words an `auth` line has (`None`: not an `auth` line), to keep passwords out of the
/// history.
fn auth_words(line: &str) -> Option<usize> {
    let words: Vec<&str> = line.split_whitespace().collect();
    matches!(
        words.first().map(|w| w.trim_start_matches('/')),
        Some("auth" | "login")
    )
    .then_some(words.len())
}

/// Reads lines from a pipe until its end.
pub(crate) fn piped(tx: mpsc::Sender<Input>) {
    let stdin = std::io::stdin();
    let mut lines = stdin.lock();
    loop {
        let mut line = String::new();
        match lines.read_line(&mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                let line = line.trim_end_matches(['\r', '\n']).to_owned();
                if tx.blocking_send(Input::Line(line, None)).is_err() {
                    return;
                }
            }
        }
    }
    let _ = tx.blocking_send(Input::Eof);
}
