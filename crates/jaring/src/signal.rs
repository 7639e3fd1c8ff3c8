//! Deciding when to stop: the first SIGINT, SIGTERM or SIGHUP asks every server to shut down
//! gracefully; a second SIGINT or SIGTERM exits at once, for when the grace period is not worth
//! waiting for.

use jaring_runtime::CancellationToken;
use tokio::signal::unix::{SignalKind, signal};
use tracing::{info, warn};

/// Exit status after a second signal: the shell convention for "ended by SIGINT".
const FORCED_EXIT: i32 = 130;

/// Watches for signals in the background and cancels `shutdown` on the first one.
pub fn spawn(shutdown: CancellationToken) {
    tokio::spawn(async move {
        let Ok(mut term) = signal(SignalKind::terminate()) else {
            warn!("cannot watch SIGTERM; only Ctrl-C will stop the server");
            let _ = tokio::signal::ctrl_c().await;
            shutdown.cancel();
            return;
        };
        let Ok(mut int) = signal(SignalKind::interrupt()) else {
            warn!("cannot watch SIGINT");
            return;
        };
        // A closed terminal (SIGHUP) stops a foreground server gracefully too, so `jaring lab
        // --hosts` still removes its hosts; nothing here reloads on SIGHUP.
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            warn!("cannot watch SIGHUP");
            return;
        };
        tokio::select! {
            _ = int.recv() => info!("SIGINT received; shutting down (press Ctrl-C again to force)"),
            _ = term.recv() => info!("SIGTERM received; shutting down"),
            _ = hup.recv() => info!("SIGHUP received (terminal closed?); shutting down"),
        }
        shutdown.cancel();
        tokio::select! {
            _ = int.recv() => {},
            _ = term.recv() => {},
        }
        warn!("second signal; exiting now");
        std::process::exit(FORCED_EXIT);
    });
}
