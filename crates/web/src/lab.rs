//! The lab's dashboard (`/lab`, fed by `/lab/stats`) and `/metrics` (Prometheus text format):
//! every service's counters and each realm's users, links and largest groups, read at request
//! time from the servers' own counters (nothing is sampled in the background).

use std::fmt::Write as _;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use jaring_chat::realm::RealmOverview;
use jaring_runtime::{Stats, StatsSnapshot};
use serde::Serialize;

/// A realm the board shows.
pub trait RealmSource: Send + Sync + 'static {
    /// The realm now.
    fn overview(&self) -> Pin<Box<dyn Future<Output = RealmOverview> + Send + '_>>;
}

impl<S: jaring_chat::Store> RealmSource for jaring_chat::Realm<S> {
    fn overview(&self) -> Pin<Box<dyn Future<Output = RealmOverview> + Send + '_>> {
        Box::pin(jaring_chat::Realm::overview(self))
    }
}

/// Bytes a service moved, where its own counter knows better than the runtime's (echo's
/// splice path never passes through a driver).
pub type ByteCounter = Arc<dyn Fn() -> u64 + Send + Sync>;

/// One listening service on the board.
#[derive(Clone)]
pub struct ServiceSource {
    /// `time`, `echo`, `echo (tls)`, `chat realm1`, `web`, …
    pub name: String,
    /// Where it listens.
    pub addr: String,
    /// Its server's counters.
    pub stats: Arc<Stats>,
    /// Bytes echoed, for echo.
    pub bytes: Option<ByteCounter>,
}

impl std::fmt::Debug for ServiceSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceSource")
            .field("name", &self.name)
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// Everything the dashboard and `/metrics` show.
#[derive(Clone, Default)]
pub struct Board {
    services: Vec<ServiceSource>,
    realms: Vec<Arc<dyn RealmSource>>,
    started: Option<Instant>,
}

impl std::fmt::Debug for Board {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Board")
            .field("services", &self.services)
            .field("realms", &self.realms.len())
            .finish()
    }
}

/// One service in `/lab/stats`.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceSample {
    /// Its name.
    pub name: String,
    /// Where it listens.
    pub addr: String,
    /// Its counters.
    #[serde(flatten)]
    pub stats: StatsSnapshot,
}

/// The body of `/lab/stats`.
#[derive(Debug, Clone, Serialize)]
pub struct BoardSample {
    /// When it was read, ms since the Unix epoch.
    pub at_ms: u64,
    /// Seconds since the board was made.
    pub uptime_s: f64,
    /// Every service.
    pub services: Vec<ServiceSample>,
    /// Every realm.
    pub realms: Vec<RealmOverview>,
}

impl Board {
    /// An empty board.
    pub fn new() -> Self {
        Self {
            started: Some(Instant::now()),
            ..Self::default()
        }
    }

    /// Adds a service.
    pub fn service(&mut self, source: ServiceSource) {
        self.services.push(source);
    }

    /// Adds a realm.
    pub fn realm(&mut self, realm: Arc<dyn RealmSource>) {
        self.realms.push(realm);
    }

    /// Whether it shows anything.
    pub fn is_empty(&self) -> bool {
        self.services.is_empty() && self.realms.is_empty()
    }

    /// Everything, read now.
    pub async fn sample(&self) -> BoardSample {
        let services = self
            .services
            .iter()
            .map(|s| {
                let mut stats = s.stats.snapshot();
                if let Some(bytes) = &s.bytes {
                    let echoed = bytes();
                    stats.bytes_in = stats.bytes_in.max(echoed);
                    stats.bytes_out = stats.bytes_out.max(echoed);
                }
                ServiceSample {
                    name: s.name.clone(),
                    addr: s.addr.clone(),
                    stats,
                }
            })
            .collect();
        let mut realms = Vec::with_capacity(self.realms.len());
        for r in &self.realms {
            realms.push(r.overview().await);
        }
        BoardSample {
            at_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            uptime_s: self.started.map_or(0.0, |s| s.elapsed().as_secs_f64()),
            services,
            realms,
        }
    }
}

/// A label value escaped as the Prometheus text format wants (`\`, `"`, newline).
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// `sample` in the Prometheus text exposition format (version 0.0.4).
pub fn prometheus(sample: &BoardSample) -> String {
    let mut out = String::new();
    type Pick = fn(&StatsSnapshot) -> u64;
    let service_metrics: [(&str, &str, &str, Pick); 7] = [
        (
            "jaring_connections_accepted_total",
            "counter",
            "Connections admitted.",
            |s| s.accepted,
        ),
        (
            "jaring_connections_refused_total",
            "counter",
            "Connections refused at a limit.",
            |s| s.refused,
        ),
        (
            "jaring_connections_open",
            "gauge",
            "Connections open now.",
            |s| s.open,
        ),
        (
            "jaring_requests_total",
            "counter",
            "Requests answered (time: replies, chat: commands).",
            |s| s.requests,
        ),
        (
            "jaring_request_errors_total",
            "counter",
            "Requests refused as malformed.",
            |s| s.errors,
        ),
        (
            "jaring_received_bytes_total",
            "counter",
            "Bytes read from clients.",
            |s| s.bytes_in,
        ),
        (
            "jaring_sent_bytes_total",
            "counter",
            "Bytes written to clients.",
            |s| s.bytes_out,
        ),
    ];
    let series = |out: &mut String, name: &str, value: &dyn Fn(&StatsSnapshot) -> String| {
        for s in &sample.services {
            let _ = writeln!(
                out,
                "{name}{{service=\"{}\",addr=\"{}\"}} {}",
                label(&s.name),
                label(&s.addr),
                value(&s.stats)
            );
        }
    };
    for (name, kind, help, pick) in service_metrics {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        series(&mut out, name, &|s| pick(s).to_string());
    }
    let name = "jaring_request_service_seconds_total";
    let _ = writeln!(
        out,
        "# HELP {name} Time spent serving requests, from the read that completed them to the reply's write.\n# TYPE {name} counter"
    );
    series(&mut out, name, &|s| (s.service_us as f64 / 1e6).to_string());
    type RealmPick = fn(&RealmOverview) -> u64;
    let realm_metrics: [(&str, &str, &str, RealmPick); 5] = [
        ("jaring_chat_users", "gauge", "Users of the realm.", |r| {
            r.users
        }),
        (
            "jaring_chat_online_users",
            "gauge",
            "Users logged in now.",
            |r| r.online,
        ),
        (
            "jaring_chat_sessions",
            "gauge",
            "Live session tokens.",
            |r| r.sessions,
        ),
        (
            "jaring_chat_failed_logins_total",
            "counter",
            "Failed logins since the start.",
            |r| r.failed_logins,
        ),
        ("jaring_chat_groups", "gauge", "Groups of the realm.", |r| {
            r.groups
        }),
    ];
    for (name, kind, help, pick) in realm_metrics {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for r in &sample.realms {
            let _ = writeln!(out, "{name}{{realm=\"{}\"}} {}", label(&r.realm), pick(r));
        }
    }
    for (name, help) in [
        (
            "jaring_chat_link_up",
            "1 when the link to the peer realm is up.",
        ),
        (
            "jaring_chat_link_outbox",
            "Messages waiting for the peer realm.",
        ),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for r in &sample.realms {
            for l in &r.links {
                let value = if name.ends_with("up") {
                    u64::from(l.state == "up")
                } else {
                    l.outbox
                };
                let _ = writeln!(
                    out,
                    "{name}{{realm=\"{}\",peer=\"{}\"}} {value}",
                    label(&r.realm),
                    label(&l.realm)
                );
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_format_has_help_type_and_escaped_labels() {
        let stats = Arc::new(Stats::default());
        stats
            .shard(1)
            .answered(2, std::time::Duration::from_micros(10));
        stats
            .shard(2)
            .answered(1, std::time::Duration::from_micros(10));
        stats.shard(1).failed(1);
        let sample = BoardSample {
            at_ms: 0,
            uptime_s: 0.0,
            services: vec![ServiceSample {
                name: "chat \"r\\1\"".into(),
                addr: "127.0.0.1:1".into(),
                stats: stats.snapshot(),
            }],
            realms: Vec::new(),
        };
        let text = prometheus(&sample);
        assert!(
            text.contains("# TYPE jaring_requests_total counter\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "jaring_requests_total{service=\"chat \\\"r\\\\1\\\"\",addr=\"127.0.0.1:1\"} 3\n"
            ),
            "{text}"
        );
        assert!(text.contains("jaring_request_errors_total{"), "{text}");
        assert!(
            text.contains("jaring_request_service_seconds_total{"),
            "{text}"
        );
        // Every sample line is NAME{labels} VALUE.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (_, value) = line.rsplit_once(' ').unwrap();
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
    }
}
