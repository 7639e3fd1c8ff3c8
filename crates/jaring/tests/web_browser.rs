//! The chat page (`crates/web/assets/`) in a real headless Chromium, driven over WebDriver
//! (chromedriver), against the real `jaring lab` and its web port: two browsers chat across the
//! two realms; a third shares a group with the terminal client; the page's WebSocket is reset
//! every 2 s while 1,000 group posts and 500 private messages arrive, and it shows each exactly
//! once, in order; a message of HTML shows as text; a page of another origin cannot open the
//! WebSocket; a token logged out behind the page's back is replaced by logging in again; over
//! the lab's TLS the page chats over https and wss; a quiet page pings and keeps its WebSocket
//! under a 2 s idle timeout; scrolling up loads older history, in order, down to the first.
//! Screenshots go to `target/web-screenshots/`.
//!
//! Without `chromium` or `chromedriver` each test says so in one line and passes, except under
//! `CI=true`, where it fails (`.ci/run` installs them).
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::HashMap;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use support::lab::LabProcess;
use support::{ChatClient, ClientProcess, PATIENCE, Relay, flood, free_port, have_tool};

/// How long a whole stream of messages may take to reach the page (shared, noisy machines).
const STREAM_PATIENCE: Duration = Duration::from_secs(240);

/// The flags Chromium needs as root in a container, and to stay off the (closed) network.
const CHROMIUM_FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,800",
];

// ---- The browser harness --------------------------------------------------------------------

/// One chromedriver on a free port; every [`Browser`] is a session of it with a profile of its
/// own. Dropping it kills chromedriver and every browser it started.
struct Driver {
    child: Child,
    port: u16,
    profiles: Vec<tempfile::TempDir>,
}

impl Driver {
    /// Starts chromedriver, or `None` (the test is skipped with one line) when Chromium or
    /// chromedriver is missing; under `CI=true` a missing one fails the test.
    fn start(test: &str) -> Option<Self> {
        if !have_tool("chromium", &["--version"], test)
            || !have_tool("chromedriver", &["--version"], test)
        {
            return None;
        }
        let port = free_port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let deadline = Instant::now() + PATIENCE;
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(Self {
            child,
            port,
            profiles: Vec::new(),
        })
    }

    /// A new browser (a WebDriver session with a fresh profile).
    async fn browser(&mut self) -> Browser {
        self.browser_with(json!({})).await
    }

    /// A new browser with more WebDriver capabilities (`caps`, an object).
    async fn browser_with(&mut self, more: Value) -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let mut args: Vec<String> = CHROMIUM_FLAGS.iter().map(|s| (*s).to_owned()).collect();
        args.push(format!("--user-data-dir={}", profile.path().display()));
        self.profiles.push(profile);
        let caps = json!({
            "goog:chromeOptions": { "binary": chromium_binary(), "args": args },
            // An alert() stays open for the test to find, instead of being dismissed.
            "unhandledPromptBehavior": "ignore",
        });
        let (Value::Object(mut caps), Value::Object(more)) = (caps, more) else {
            unreachable!("both are JSON objects")
        };
        caps.extend(more);
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{}", self.port))
            .await
            .expect("a chromedriver session");
        Browser { client }
    }
}

/// Where Chromium is (Debian's package puts it on PATH as `chromium`).
fn chromium_binary() -> String {
    let out = Command::new("sh")
        .args(["-c", "command -v chromium"])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Every descendant of `pid` (children first found, then theirs), from /proc.
fn descendants(pid: u32) -> Vec<u32> {
    let mut parent_of: HashMap<u32, u32> = HashMap::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(p) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // "pid (comm) state ppid …": comm may hold spaces, so read after the last ')'.
        let Some(rest) = stat.rsplit_once(')') else {
            continue;
        };
        if let Some(ppid) = rest
            .1
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
        {
            parent_of.insert(p, ppid);
        }
    }
    let mut found = vec![pid];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(
            parent_of
                .iter()
                .filter(|&(_, &pp)| pp == parent)
                .map(|(&p, _)| p),
        );
        i += 1;
    }
    found.remove(0);
    found
}

impl Drop for Driver {
    fn drop(&mut self) {
        // Chromium's processes first (found through chromedriver before it goes), then it.
        for pid in descendants(self.child.id()) {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .stderr(Stdio::null())
                .status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One browser window.
struct Browser {
    client: Client,
}

impl Browser {
    async fn goto(&self, url: &str) {
        self.client.goto(url).await.unwrap();
    }

    /// Runs `script` (a function body; `arguments` holds `args`) in the page: its return value.
    async fn js(&self, script: &str, args: Vec<Value>) -> Value {
        self.client.execute(script, args).await.unwrap()
    }

    /// Polls `script` every 100 ms until it returns something other than null/false.
    async fn until(&self, what: &str, patience: Duration, script: &str, args: Vec<Value>) -> Value {
        let deadline = Instant::now() + patience;
        loop {
            let v = self.js(script, args.clone()).await;
            if !v.is_null() && v != Value::Bool(false) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {patience:?} waiting for {what}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn type_into(&self, css: &str, text: &str) {
        let e = self.client.find(Locator::Css(css)).await.unwrap();
        e.clear().await.unwrap();
        e.send_keys(text).await.unwrap();
    }

    async fn click(&self, css: &str) {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
    }

    /// Opens the page at `url`, logs in to `realm` as `user`, and waits for "connected".
    async fn log_in(&self, url: &str, realm: &str, user: &str, password: &str) {
        self.goto(url).await;
        self.until(
            "the realm picker",
            PATIENCE,
            "return document.getElementById('login-realm').options.length > 0",
            vec![],
        )
        .await;
        self.js(
            "document.getElementById('login-realm').value = arguments[0]; return true",
            vec![json!(realm)],
        )
        .await;
        self.type_into("#login-user", user).await;
        self.type_into("#login-password", password).await;
        self.click("#login-button").await;
        self.until(
            "the page to connect",
            PATIENCE,
            "return document.getElementById('status').dataset.state === 'online'",
            vec![],
        )
        .await;
    }

    /// Clicks the conversation `key` (`u:PEER` or `g:GROUP`) in the list, once it is there.
    async fn open(&self, key: &str) {
        self.until(
            &format!("conversation {key} in the list"),
            PATIENCE,
            "const li = [...document.querySelectorAll('#convs li')]
               .find(l => l.dataset.key === arguments[0]);
             if (!li) return false; li.click(); return true",
            vec![json!(key)],
        )
        .await;
    }

    /// Opens a private conversation with `to` from the side form.
    async fn open_private(&self, to: &str) {
        self.type_into("#open-to", to).await;
        self.click("#open-form button").await;
    }

    async fn join(&self, group: &str) {
        self.type_into("#join-group", group).await;
        self.click("#join-form button").await;
        self.until(
            &format!("group {group} open"),
            PATIENCE,
            "return document.getElementById('conv-title').textContent === '# ' + arguments[0]",
            vec![json!(group)],
        )
        .await;
    }

    async fn say(&self, text: &str) {
        self.type_into("#compose-text", text).await;
        self.click("#compose-send").await;
    }

    /// The texts of the open conversation's messages, in page order.
    async fn texts(&self) -> Vec<String> {
        let v = self
            .js(
                "return [...document.querySelectorAll('#msgs .msg .text')].map(e => e.textContent)",
                vec![],
            )
            .await;
        serde_json::from_value(v).unwrap()
    }

    /// Waits until the open conversation shows `text`.
    async fn sees(&self, text: &str) {
        self.until(
            &format!("{text:?} on the page"),
            PATIENCE,
            "return [...document.querySelectorAll('#msgs .msg .text')]
               .some(e => e.textContent === arguments[0])",
            vec![json!(text)],
        )
        .await;
    }

    /// The unread badge of conversation `key`, if it shows one.
    async fn badge(&self, key: &str) -> Option<String> {
        let v = self
            .js(
                "const li = [...document.querySelectorAll('#convs li')]
                   .find(l => l.dataset.key === arguments[0]);
                 const b = li && li.querySelector('.badge'); return b ? b.textContent : null",
                vec![json!(key)],
            )
            .await;
        v.as_str().map(str::to_owned)
    }

    /// Saves a screenshot as `target/web-screenshots/NAME.png`; its path.
    async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.client.screenshot().await.unwrap();
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        eprintln!("screenshot: {}", path.display());
        path
    }

    async fn close(self) {
        let _ = self.client.close().await;
    }
}

/// `target/web-screenshots`, beside the tests' scratch directory.
fn screenshot_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("web-screenshots")
}

// ---- The lab --------------------------------------------------------------------------------

/// A running `jaring lab --ephemeral` with its web port, plaintext, on loopback.
struct Lab {
    lab: LabProcess,
    _dir: tempfile::TempDir,
}

impl Lab {
    fn start() -> Self {
        Self::start_with(&["--no-tls"])
    }

    /// With the lab's own TLS (its web port then takes https and http alike).
    fn start_tls() -> Self {
        Self::start_with(&[])
    }

    fn start_with(extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut args = vec!["--bind", "127.0.0.1", "--web-port", "0"];
        args.extend_from_slice(extra);
        let lab = LabProcess::ephemeral(&dir.path().join("lab"), &args);
        Self { lab, _dir: dir }
    }

    fn port(&self, what: &str) -> u16 {
        self.lab.port(what)
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port("web"))
    }
}

// ---- The tests ------------------------------------------------------------------------------

/// How many cold loads the first-render measurement takes.
const FIRST_RENDER_LOADS: usize = 10;

/// The chat page's first render, measured, not asserted (#18 asks ≤ 100 ms; tests never assert
/// speed): the page loaded in a fresh browser profile (nothing cached) `FIRST_RENDER_LOADS`
/// times against a lab; prints the median and the worst first contentful paint and
/// DOMContentLoaded, in ms after navigation start (`FIRST_RENDER_URL`: another page, for a
/// baseline). On a quiet machine, with a release build:
/// `JARING_LAB_BIN=target/release/jaring cargo test -p jaring --test web_browser first_render
/// -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement for BENCHMARKS.md, not a check"]
async fn first_render_of_the_chat_page() {
    let Some(mut driver) = Driver::start("first_render") else {
        return;
    };
    let lab = Lab::start();
    // FIRST_RENDER_URL measures another page the same way (a baseline: a page of one line).
    let url = std::env::var("FIRST_RENDER_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| lab.url());
    let mut paints = Vec::new();
    let mut loaded = Vec::new();
    for _ in 0..FIRST_RENDER_LOADS {
        let browser = driver.browser().await;
        browser.goto(&url).await;
        let v = browser
            .until(
                "the first paint",
                PATIENCE,
                "const p = performance.getEntriesByName('first-contentful-paint')[0];
                 const n = performance.getEntriesByType('navigation')[0];
                 return p && n.domContentLoadedEventEnd > 0
                     ? [p.startTime, n.domContentLoadedEventEnd] : null",
                vec![],
            )
            .await;
        paints.push(v[0].as_f64().unwrap());
        loaded.push(v[1].as_f64().unwrap());
        let timings = browser
            .js(
                "const n = performance.getEntriesByType('navigation')[0];
                 return [['document', n.responseStart, n.responseEnd]].concat(
                   performance.getEntriesByType('resource').map(
                     r => [new URL(r.name).pathname, r.startTime, r.responseEnd]))
                   .map(([w, s, e]) => `${w} ${s.toFixed(0)}-${e.toFixed(0)} ms`).join(', ')",
                vec![],
            )
            .await;
        eprintln!("  {timings}");
        browser.close().await;
    }
    let summary = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        format!(
            "median {:.0} ms, worst {:.0} ms",
            v[v.len() / 2],
            v[v.len() - 1]
        )
    };
    eprintln!(
        "first render of {url}, {FIRST_RENDER_LOADS} cold loads: first contentful paint {}; \
         DOMContentLoaded {}",
        summary(paints),
        summary(loaded)
    );
}

/// Two browsers, messi on realm1 and james on realm2, chat both ways across the realms' link
/// (unread badge included); a third, henderson, is in a group with the terminal client
/// (`jaring chat client`, lineker) and sees its posts live, and the client sees the page's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_realms_chat_and_a_browser_shares_a_group_with_the_terminal_client() {
    let Some(mut driver) = Driver::start("two_realms_chat") else {
        return;
    };
    let lab = Lab::start();
    let url = lab.url();
    let messi = driver.browser().await;
    let james = driver.browser().await;
    messi.goto(&url).await;
    // The issue asks for the first render to be measured (reported, not asserted).
    let paint = messi
        .until(
            "the first paint",
            PATIENCE,
            "const p = performance.getEntriesByName('first-contentful-paint')[0];
             const n = performance.getEntriesByType('navigation')[0];
             return p ? [p.startTime, n.domContentLoadedEventEnd] : null",
            vec![],
        )
        .await;
    eprintln!("first contentful paint, DOMContentLoaded (ms after navigation start): {paint}");
    // The inlined stylesheet ran (the CSP allows it by its hash; a wrong hash would leave the
    // page unstyled): the body's margin is app.css's 0, not the browser's 8px.
    let styled = messi
        .js(
            "return getComputedStyle(document.body).marginTop + ' ' + \
             getComputedStyle(document.documentElement).getPropertyValue('--accent').trim()",
            vec![],
        )
        .await;
    assert_eq!(styled, json!("0px #0f766e"), "app.css did not apply");
    messi.screenshot("login").await;

    let started = Instant::now();
    messi.log_in(&url, "realm1", "messi", "surabaya").await;
    eprintln!("first login to connected: {:?}", started.elapsed());
    james.log_in(&url, "realm2", "james", "medan").await;

    messi.open_private("james@realm2").await;
    messi.say("hello james, from realm1").await;
    messi.sees("hello james, from realm1").await;
    // james was not looking: a badge, then the message when he opens the conversation.
    james
        .until(
            "an unread badge for messi@realm1",
            PATIENCE,
            "const li = [...document.querySelectorAll('#convs li')]
               .find(l => l.dataset.key === 'u:messi@realm1');
             return !!(li && li.querySelector('.badge'))",
            vec![],
        )
        .await;
    assert_eq!(james.badge("u:messi@realm1").await.as_deref(), Some("1"));
    james.open("u:messi@realm1").await;
    james.sees("hello james, from realm1").await;
    assert_eq!(james.badge("u:messi@realm1").await, None, "read once open");
    james.say("hi messi, realm2 here").await;
    messi.sees("hi messi, realm2 here").await;
    assert_eq!(
        messi.texts().await,
        ["hello james, from realm1", "hi messi, realm2 here"]
    );
    messi.screenshot("chat-private").await;
    // The realms panel: this realm and its link to realm2, up.
    messi.click("#show-realms").await;
    messi
        .until(
            "realm2's link up in the realms panel",
            PATIENCE,
            "return [...document.querySelectorAll('#panel-list .person')].some(li =>
               li.querySelector('.pname').textContent === 'realm2'
               && li.querySelector('.pdetail').textContent.startsWith('up'))",
            vec![],
        )
        .await;

    // The terminal client joins football and posts; the page in the same group sees it live.
    let henderson = driver.browser().await;
    henderson
        .log_in(&url, "realm1", "henderson", "surabaya")
        .await;
    henderson.join("football").await;
    let server = format!("127.0.0.1:{}", lab.port("chat realm1"));
    let mut terminal = ClientProcess::start(&["--server", &server, "--json", "--timeout", "5"]);
    terminal.type_line("auth lineker surabaya");
    terminal.type_line("/join football");
    support::wait_for("the terminal client in football", PATIENCE, || {
        terminal
            .json_lines()
            .iter()
            .any(|v| v["group"] == "football" && v["status"] == "OK")
    });
    terminal.type_line("kick-off at eight, who is in?");
    henderson.sees("kick-off at eight, who is in?").await;
    henderson.say("count me in").await;
    support::wait_for("the page's post in the terminal", PATIENCE, || {
        terminal
            .json_lines()
            .iter()
            .any(|v| v["event"] == "message" && v["msg"] == "count me in")
    });
    terminal.type_line("great, see you on the pitch");
    henderson.sees("great, see you on the pitch").await;
    terminal.type_line("bring the <b>ball</b> this time");
    henderson.sees("bring the <b>ball</b> this time").await;
    assert_eq!(
        henderson.texts().await,
        [
            "kick-off at eight, who is in?",
            "count me in",
            "great, see you on the pitch",
            "bring the <b>ball</b> this time",
        ]
    );
    // Own posts are told apart; the others' carry the sender.
    let mine = henderson
        .js(
            "return [...document.querySelectorAll('#msgs .msg')].map(e => e.classList.contains('mine'))",
            vec![],
        )
        .await;
    assert_eq!(mine, json!([false, true, false, false]));
    henderson.click("#show-members").await;
    henderson
        .until(
            "lineker among the members",
            PATIENCE,
            "return [...document.querySelectorAll('#panel-list .pname')].some(e => e.textContent === 'lineker')",
            vec![],
        )
        .await;
    // A private message while henderson looks at the group: a badge on messi's conversation.
    messi.open_private("henderson").await;
    messi.say("are you coming tonight?").await;
    henderson
        .until(
            "an unread badge for messi",
            PATIENCE,
            "const li = [...document.querySelectorAll('#convs li')]
               .find(l => l.dataset.key === 'u:messi');
             const b = li && li.querySelector('.badge'); return b ? b.textContent : null",
            vec![],
        )
        .await;
    henderson.screenshot("chat-group").await;
    terminal.type_line("exit");
    drop(terminal);
    for b in [messi, james, henderson] {
        b.close().await;
    }
}

/// Henderson's page reaches the web port through a relay that resets every connection every
/// 2 s, while messi sends 500 private messages and lineker 1,000 posts to a group henderson
/// joined on the page: both conversations end showing every message exactly once, in order (the
/// DOM's message elements, counted and read in order), after many reconnects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_a_reset_every_2_s_every_message_shows_exactly_once_in_order() {
    const PRIVATE: usize = 500;
    const GROUP: usize = 1000;
    let Some(mut driver) = Driver::start("reset_every_2_s") else {
        return;
    };
    let lab = Lab::start();
    let chat = lab.port("chat realm1");
    let relay = Relay::start(lab.port("web"));
    let url = format!("http://127.0.0.1:{}/", relay.port);
    let page = driver.browser().await;
    page.log_in(&url, "realm1", "henderson", "surabaya").await;
    page.join("flood").await;

    // Connections through the relay from here on are the page's reconnects.
    let connected_before = relay.accepted.load(Ordering::SeqCst);
    let stop = Arc::new(AtomicBool::new(false));
    let resetter = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut resets = 0;
            while !stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_secs(2));
                relay.reset_all();
                resets += 1;
            }
            (relay, resets)
        })
    };
    let senders = [
        std::thread::spawn(move || {
            flood(
                chat,
                "messi",
                &(0..PRIVATE)
                    .map(|i| format!("send {{T}} henderson p{i:04}"))
                    .collect::<Vec<_>>(),
                FLOOD_PAUSE,
            );
        }),
        std::thread::spawn(move || {
            flood(
                chat,
                "lineker",
                &(0..GROUP)
                    .map(|i| format!("sendgroup {{T}} flood g{i:04}"))
                    .collect::<Vec<_>>(),
                FLOOD_PAUSE,
            );
        }),
    ];

    // The group is open: its posts arrive in view.
    let want_g: Vec<String> = (0..GROUP).map(|i| format!("g{i:04}")).collect();
    page.until(
        "every group post on the page",
        STREAM_PATIENCE,
        "return document.querySelectorAll('#msgs .msg').length >= arguments[0]",
        vec![json!(GROUP)],
    )
    .await;
    for s in senders {
        s.join().unwrap();
    }
    // The private messages came in the background; the badge says so.
    page.until(
        "the private conversation with messi",
        STREAM_PATIENCE,
        "return [...document.querySelectorAll('#convs li')].some(l => l.dataset.key === 'u:messi')",
        vec![],
    )
    .await;
    page.open("u:messi").await;
    page.until(
        "every private message on the page",
        STREAM_PATIENCE,
        "return document.getElementById('conv-title').textContent === 'messi'
           && document.querySelectorAll('#msgs .msg').length >= arguments[0]",
        vec![json!(PRIVATE)],
    )
    .await;
    // Anything repeated late, through one more reset or two, would show now.
    tokio::time::sleep(Duration::from_secs(5)).await;
    stop.store(true, Ordering::SeqCst);
    let (relay, resets) = resetter.join().unwrap();
    let want_p: Vec<String> = (0..PRIVATE).map(|i| format!("p{i:04}")).collect();
    assert_eq!(page.texts().await, want_p, "private: each once, in order");
    page.open("g:flood").await;
    page.until(
        "the group open again",
        PATIENCE,
        "return document.getElementById('conv-title').textContent === '# flood'",
        vec![],
    )
    .await;
    assert_eq!(page.texts().await, want_g, "group: each once, in order");
    let reconnects = relay.accepted.load(Ordering::SeqCst) - connected_before;
    eprintln!("{resets} resets, {reconnects} reconnects through the relay");
    assert!(
        resets >= 3 && reconnects >= 3,
        "the page reconnected after the resets ({resets} resets, {reconnects} reconnects)"
    );
    page.screenshot("chat-after-resets").await;
    page.close().await;
}

/// The pause between batches of 50 in the reconnect test: the stream spans several of the
/// relay's resets.
const FLOOD_PAUSE: Duration = Duration::from_millis(400);

/// A message of HTML with a script in an attribute shows as those characters: no element is
/// made from it (nor from its preview in the list) and no alert opens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_of_html_renders_as_text() {
    const XSS: &str = "<img src=x onerror=alert(1)>";
    let Some(mut driver) = Driver::start("html_as_text") else {
        return;
    };
    let lab = Lab::start();
    let mut messi = ChatClient::connect(lab.port("chat realm1"));
    let token = messi.auth("messi", "surabaya");
    messi.ok(&format!("send {token} henderson {XSS}"));
    messi.ok(&format!("send {token} henderson <b>bold</b> and {XSS}"));
    let page = driver.browser().await;
    page.log_in(&lab.url(), "realm1", "henderson", "surabaya")
        .await;
    page.open("u:messi").await;
    page.sees(XSS).await;
    page.sees(&format!("<b>bold</b> and {XSS}")).await;
    let images = page
        .js("return document.querySelectorAll('img, b').length", vec![])
        .await;
    assert_eq!(images, json!(0), "no element made from message text");
    // The preview in the conversation list is text too.
    let preview = page
        .js(
            "return document.querySelector('#convs li[data-key=\"u:messi\"] .preview').textContent",
            vec![],
        )
        .await;
    assert_eq!(preview, json!(format!("<b>bold</b> and {XSS}")));
    // Give an onerror handler time to run, had an image been made.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        page.client.get_alert_text().await.is_err(),
        "an alert opened"
    );
    page.screenshot("chat-html-as-text").await;
    page.close().await;
}

/// A page of another origin (a `data:` page, whose origin is opaque, and a page served from
/// another port) cannot open the WebSocket; the page's own origin can (so the check can fail).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_of_another_origin_cannot_open_the_websocket() {
    let Some(mut driver) = Driver::start("cross_origin_websocket") else {
        return;
    };
    let lab = Lab::start();
    let ws = format!("ws://127.0.0.1:{}/ws", lab.port("web"));
    let page = driver.browser().await;
    // Resolves with "open" or "refused" (an error or close before open).
    let try_ws = "const done = arguments[arguments.length - 1];
        const ws = new WebSocket(arguments[0]);
        ws.onopen = () => { ws.close(); done('open'); };
        ws.onerror = () => done('refused');
        ws.onclose = () => done('refused');";
    let attempt = |page: &Browser| {
        let ws = ws.clone();
        let client = page.client.clone();
        async move { client.execute_async(try_ws, vec![json!(ws)]).await.unwrap() }
    };

    page.goto(&lab.url()).await;
    assert_eq!(attempt(&page).await, json!("open"), "same origin");

    page.goto("data:text/html,<title>elsewhere</title><p>another site</p>")
        .await;
    assert_eq!(attempt(&page).await, json!("refused"), "from a data: page");

    let other = OtherSite::start();
    page.goto(&format!("http://127.0.0.1:{}/", other.port))
        .await;
    assert_eq!(
        attempt(&page).await,
        json!("refused"),
        "from http://127.0.0.1:{} (another port is another origin)",
        other.port
    );
    page.close().await;
}

/// A tiny web site on another port: any request gets one HTML page.
struct OtherSite {
    port: u16,
}

impl OtherSite {
    fn start() -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut s) = stream else { continue };
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf);
                let body = "<!doctype html><title>another site</title><p>another site</p>";
                let _ = write!(
                    s,
                    "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        Self { port }
    }
}

/// The page's token is logged out behind its back (as an expiry would end it): the page logs in
/// again with the password it holds in memory, watches again, and the next message arrives. The
/// token is in session storage, never in the page's URL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_token_is_replaced_by_logging_in_again() {
    let Some(mut driver) = Driver::start("token_refused") else {
        return;
    };
    let lab = Lab::start();
    let page = driver.browser().await;
    page.log_in(&lab.url(), "realm1", "henderson", "surabaya")
        .await;
    let token = page
        .js("return sessionStorage.getItem('jaring.token')", vec![])
        .await;
    let token = token
        .as_str()
        .expect("a token in session storage")
        .to_owned();
    assert_eq!(token.len(), 64, "{token}");
    let url = page.client.current_url().await.unwrap();
    assert!(!url.as_str().contains(&token), "the token is in the URL");

    let mut other = ChatClient::connect(lab.port("chat realm1"));
    other.ok(&format!("logout {token}"));
    let fresh = page
        .until(
            "a new token",
            PATIENCE,
            "const t = sessionStorage.getItem('jaring.token');
             return t !== arguments[0]
               && document.getElementById('status').dataset.state === 'online' ? t : null",
            vec![json!(token)],
        )
        .await;
    assert_eq!(fresh.as_str().map(str::len), Some(64));
    let messi = other.auth("messi", "surabaya");
    other.ok(&format!("send {messi} henderson still there?"));
    page.open("u:messi").await;
    page.sees("still there?").await;
    assert_eq!(page.texts().await, ["still there?"]);
    page.close().await;
}

/// Over the lab's TLS: the page loaded over https talks to the realm over wss (a page of https
/// cannot open a plain ws:// socket) and chats both ways. The browser is told to accept the lab's
/// own CA's certificate, as a person would after installing `ca.pem`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_https_the_page_chats_over_wss() {
    let Some(mut driver) = Driver::start("https_and_wss") else {
        return;
    };
    let lab = Lab::start_tls();
    let url = format!("https://127.0.0.1:{}/", lab.port("web"));
    let page = driver
        .browser_with(json!({ "acceptInsecureCerts": true }))
        .await;
    page.log_in(&url, "realm1", "henderson", "surabaya").await;
    let scheme = page.js("return location.protocol", vec![]).await;
    assert_eq!(scheme, json!("https:"));

    let mut messi = ChatClient::connect(lab.port("chat realm1"));
    let token = messi.auth("messi", "surabaya");
    messi.ok(&format!("send {token} henderson over tls?"));
    page.open("u:messi").await;
    page.sees("over tls?").await;
    page.say("over wss, yes").await;
    page.sees("over wss, yes").await;
    let inbox = messi.ok(&format!("inbox {token}"));
    assert_eq!(
        inbox["messages"]["henderson"][0]["msg"], "over wss, yes",
        "{inbox}"
    );
    page.close().await;
}

/// A realm with a 2 s idle timeout (`chat serve --web-port`, one realm, no realm picker): the page
/// pings at a third of it while nothing happens, so over 7 quiet seconds its WebSocket stays the
/// one it opened (no new connection through the relay), and a message then arrives on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_page_pings_and_keeps_its_websocket() {
    let Some(mut driver) = Driver::start("idle_pings") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = support::ServerProcess::realm_web(&[
        "--storage",
        "memory",
        "--data-dir",
        data.to_str().unwrap(),
        "--idle-timeout",
        "2",
    ]);
    let relay = Relay::start(server.federation_port.unwrap());
    let page = driver.browser().await;
    let url = format!("http://127.0.0.1:{}/", relay.port);
    page.goto(&url).await;
    page.until(
        "the realm list",
        PATIENCE,
        "return document.getElementById('login-realm').options.length === 1",
        vec![],
    )
    .await;
    let picker_hidden = page
        .js(
            "return document.getElementById('login-realm').parentElement.hidden",
            vec![],
        )
        .await;
    assert_eq!(picker_hidden, json!(true), "one realm: no picker");
    page.type_into("#login-user", "henderson").await;
    page.type_into("#login-password", "surabaya").await;
    page.click("#login-button").await;
    page.until(
        "the page to connect",
        PATIENCE,
        "return document.getElementById('status').dataset.state === 'online'",
        vec![],
    )
    .await;
    let before = relay.accepted.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert_eq!(
        relay.accepted.load(Ordering::SeqCst),
        before,
        "the page had to reconnect: the realm closed its quiet WebSocket"
    );
    let mut messi = ChatClient::connect(server.port);
    let token = messi.auth("messi", "surabaya");
    messi.ok(&format!("send {token} henderson still awake?"));
    page.open("u:messi").await;
    page.sees("still awake?").await;
    assert_eq!(relay.accepted.load(Ordering::SeqCst), before);
    page.close().await;
}

/// History and scroll-back: 120 posts made before henderson joins are history, not unread; the
/// page shows the newest page of them on opening and the older ones as it is scrolled up, each
/// once, in order, down to the first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrolling_up_loads_older_history_in_order() {
    const POSTS: usize = 120;
    let Some(mut driver) = Driver::start("scroll_back") else {
        return;
    };
    let lab = Lab::start();
    flood(
        lab.port("chat realm1"),
        "messi",
        &(0..POSTS)
            .map(|i| format!("sendgroup {{T}} archive h{i:03}"))
            .collect::<Vec<_>>(),
        FLOOD_PAUSE,
    );
    let page = driver.browser().await;
    page.log_in(&lab.url(), "realm1", "henderson", "surabaya")
        .await;
    page.join("archive").await;
    page.until(
        "the newest page of history",
        PATIENCE,
        "return document.querySelectorAll('#msgs .msg').length > 0",
        vec![],
    )
    .await;
    let first_page = page.texts().await;
    assert!(
        first_page.len() < POSTS && first_page.last().map(String::as_str) == Some("h119"),
        "{first_page:?}"
    );
    page.until(
        "every older page, scrolling up",
        PATIENCE,
        "const log = document.getElementById('log'); log.scrollTop = 0;
         log.dispatchEvent(new Event('scroll'));
         return document.querySelectorAll('#msgs .msg').length >= arguments[0]
           && document.getElementById('log-top').textContent.startsWith('the beginning')",
        vec![json!(POSTS)],
    )
    .await;
    let want: Vec<String> = (0..POSTS).map(|i| format!("h{i:03}")).collect();
    assert_eq!(page.texts().await, want);
    page.close().await;
}

/// The lab's dashboard moves while a bench runs: the time card's rate, read from the page, rises
/// above zero within seconds; realm1's card shows its link up; `/metrics` counts the same
/// requests in the Prometheus text format.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_moves_while_a_bench_runs() {
    let Some(mut driver) = Driver::start("dashboard") else {
        return;
    };
    let lab = Lab::start();
    let page = driver.browser().await;
    page.goto(&format!("{}lab", lab.url())).await;
    let rate = "const e = document.querySelector('[data-key=\"time\"] .rate'); \
                return e && e.dataset.value !== undefined ? Number(e.dataset.value) : null";
    page.until("the time card", PATIENCE, rate, vec![]).await;
    let port = lab.port("time").to_string();
    let bench = std::thread::spawn(move || {
        Command::new(env!("CARGO_BIN_EXE_jaring"))
            .args(["bench", "time", "--port", &port, "--duration", "6"])
            .args(["--connections", "2"])
            .output()
            .unwrap()
    });
    let moving = "const e = document.querySelector('[data-key=\"time\"] .rate'); \
                  const v = Number(e.dataset.value); return v > 0 ? v : null";
    let seen = page
        .until("the time card's rate to move", PATIENCE, moving, vec![])
        .await;
    assert!(seen.as_f64().unwrap() > 0.0, "{seen}");
    page.until(
        "realm1's link shown up",
        PATIENCE,
        "return document.querySelectorAll('[data-key=\"realm1\"] .links td.up').length > 0 || null",
        vec![],
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    page.screenshot("lab-dashboard").await;
    let out = bench.join().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let metrics = http_get(lab.port("web"), "/metrics");
    let line = metrics
        .lines()
        .find(|l| l.starts_with("jaring_requests_total{service=\"time\""))
        .unwrap_or_else(|| panic!("no time requests in /metrics:\n{metrics}"));
    let count: u64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(count > 0, "{line}");
    assert!(
        metrics.contains("jaring_chat_link_up{realm=\"realm1\",peer=\"realm2\"} 1"),
        "{metrics}"
    );
    page.close().await;
}

/// `GET path` on the web port: the body.
fn http_get(port: u16, path: &str) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_owned()
}
