//! What the TIME server's test files share: a server on 127.0.0.1:0 and how to stop it.
#![allow(dead_code, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use jaring_runtime::{CancellationToken, Model, Server, ServerConfig, Stats};
use jaring_time::TimeService;
use jiff::tz::TimeZone;
use tokio::task::JoinHandle;

/// Generous: these machines are shared and noisy; a healthy run takes milliseconds.
pub const PATIENCE: Duration = Duration::from_secs(20);

pub struct Running {
    pub addr: SocketAddr,
    pub stats: Arc<Stats>,
    pub shutdown: CancellationToken,
    pub task: JoinHandle<()>,
}

impl Running {
    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(PATIENCE, self.task)
            .await
            .expect("server stops within the grace period")
            .expect("server task did not panic");
    }
}

pub fn config(model: Model) -> ServerConfig {
    let mut c = ServerConfig::on_port(0);
    c.listen.bind = "127.0.0.1".parse().unwrap();
    c.model = model;
    c
}

pub async fn start_with(config: ServerConfig, tz: TimeZone) -> Running {
    let max_line = config.limits.max_line;
    let server = Server::bind(config).await.expect("bind port 0");
    let addr = server.local_addr();
    let stats = server.stats();
    let shutdown = CancellationToken::new();
    let task =
        tokio::spawn(server.serve(Arc::new(TimeService::new(tz, max_line)), shutdown.clone()));
    Running {
        addr,
        stats,
        shutdown,
        task,
    }
}
