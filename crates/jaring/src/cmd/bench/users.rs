//! Zero-setup chat benches: the bench makes its users on the realm it loads, through the
//! realm's admin socket, and removes them (with everything they wrote) afterwards.
//!
//! Only for a realm on this machine that runs as this user (or when run as root): the admin
//! socket is found from the process listening on the target port. Anywhere else the bench uses
//! the users that exist, as before.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::anyhow;
use jaring_chat::admin::{AdminClient, AdminSocketError, find};
use jaring_proto::chat::admin::{AdminRequest, CODE_REAL_USER, DEFAULT_MAX_BENCH_USERS};
use rand::RngExt as _;

use crate::Failure;
use crate::cli::BenchChatArgs;

/// Bench users the run made, on one realm or two (`--cross-realm`).
#[derive(Debug)]
pub struct BenchUsers {
    realms: Vec<(String, PathBuf)>,
    keep: bool,
}

/// How many users the workload logs in as: `PREFIX0` … `PREFIX{n-1}`.
fn needed(c: &BenchChatArgs) -> usize {
    if c.group {
        c.members
    } else if c.push {
        c.senders + c.watchers
    } else if c.idle {
        c.load.connections
    } else if c.drain {
        1
    } else {
        let senders = c.load.connections;
        senders + c.receivers.unwrap_or_else(|| senders.div_ceil(10).max(1))
    }
}

/// Makes the bench users on the target realm (and the peer realm with `--cross-realm`) when
/// their admin sockets can be found, setting `c.password` to theirs; `None` when the bench uses
/// the users that exist.
pub async fn prepare(c: &mut BenchChatArgs) -> Result<Option<BenchUsers>, Failure> {
    if c.no_setup || c.drain || matches!(c.protocol, crate::cli::GroupProtocol::Irc) && c.group {
        return Ok(None);
    }
    let count = needed(c);
    let Ok(count) = u32::try_from(count) else {
        return Ok(None);
    };
    if count == 0 || count > DEFAULT_MAX_BENCH_USERS {
        return Ok(None);
    }
    let mut ports = vec![c.port];
    if c.cross_realm {
        ports.push(c.peer_port);
    }
    let Some(host) = local_host(&c.load.host) else {
        return Ok(None);
    };
    let mut sockets = Vec::new();
    for port in ports {
        let target = SocketAddr::new(host, port);
        let pid = tokio::task::spawn_blocking(move || jaring_bench::engine::pid_listening_on(port))
            .await
            .ok()
            .flatten();
        // Nothing listens (or not here): the run itself fails fast and says so, in one line.
        let Some(pid) = pid else {
            return Ok(None);
        };
        let found = if c.ws {
            match ws_realm(&c.ws_path, target).await {
                Some(realm) => find(pid, |info| info.realm == realm).await,
                None => None,
            }
        } else {
            find(pid, |info| info.client_port == port).await
        };
        let Some((path, info)) = found else {
            eprintln!(
                "bench: no admin socket of the realm on {target} found (not on this machine, not \
                 this user's, or an older jaring): using the users that exist"
            );
            return Ok(None);
        };
        sockets.push((info.realm, path));
    }
    let password = c.password.clone().unwrap_or_else(random_password);
    let mut made: Vec<(String, PathBuf)> = Vec::new();
    for (realm, path) in &sockets {
        let result = async {
            let mut admin = AdminClient::connect(path).await?;
            admin
                .call(&AdminRequest::PutBenchUsers {
                    prefix: c.user_prefix.clone(),
                    count,
                    password: password.clone(),
                })
                .await
        }
        .await;
        match result {
            Ok(_) => made.push((realm.clone(), path.clone())),
            Err(e) => {
                // Whatever was made on the first realm goes again before saying why.
                let partial = BenchUsers {
                    realms: made,
                    keep: false,
                };
                partial.finish().await;
                let real = matches!(&e, AdminSocketError::Refused { code: Some(c), .. }
                    if c == CODE_REAL_USER);
                if real {
                    eprintln!(
                        "bench: realm {realm} has real users named {}…: using the users that \
                         exist (pass --user-prefix to have the bench make its own)",
                        c.user_prefix
                    );
                    return Ok(None);
                }
                return Err(Failure::Runtime(anyhow!(
                    "cannot make the bench users on realm {realm}: {e}"
                )));
            }
        }
    }
    c.password = Some(password);
    let names = format!("{p}0 … {p}{last}", p = c.user_prefix, last = count - 1);
    let realms: Vec<&str> = made.iter().map(|(r, _)| r.as_str()).collect();
    eprintln!(
        "bench: made {count} bench users ({names}) on realm {} through its admin socket; {}",
        realms.join(" and "),
        if c.keep_bench_users {
            "they stay (--keep-bench-users)"
        } else {
            "they and everything they write go when the run ends (--keep-bench-users keeps them)"
        }
    );
    Ok(Some(BenchUsers {
        realms: made,
        keep: c.keep_bench_users,
    }))
}

impl BenchUsers {
    /// Removes the bench users and everything they wrote, unless asked to keep them; says what
    /// went (a failure is reported, not fatal: the run's results stand).
    pub async fn finish(self) {
        if self.keep {
            return;
        }
        for (realm, path) in &self.realms {
            let result = async {
                let mut admin = AdminClient::connect(path).await?;
                admin.call(&AdminRequest::PurgeBench {}).await
            }
            .await;
            match result {
                Ok(reply) => {
                    let p = reply.purged.unwrap_or_default();
                    eprintln!(
                        "bench: removed {} bench users, {} private and {} group messages and {} \
                         groups from realm {realm}",
                        p.users,
                        p.private_messages,
                        p.group_messages,
                        p.groups.len()
                    );
                }
                Err(e) => eprintln!(
                    "bench: could not remove the bench users from realm {realm}: {e}; run \
                     `jaring chat user purge-bench --config REALM.toml` later"
                ),
            }
        }
    }
}

/// The target as a loopback address, if it is one (the only place an admin socket can be).
fn local_host(host: &str) -> Option<std::net::IpAddr> {
    match host {
        "localhost" => Some(std::net::Ipv4Addr::LOCALHOST.into()),
        _ => host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .ok()
            .filter(std::net::IpAddr::is_loopback),
    }
}

/// 128 random bits as hex: a bench user's password when none was given.
fn random_password() -> String {
    let bytes: [u8; 16] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The realm a `--ws` bench reaches: the one its path names (`/ws/realm2`), else the web port's
/// default, the first of its `GET /realms` (plain HTTP; `None` when that fails).
async fn ws_realm(path: &str, web: SocketAddr) -> Option<String> {
    if let Some(name) = path.strip_prefix("/ws/").filter(|n| !n.is_empty()) {
        return Some(name.to_owned());
    }
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let ask = async {
        let mut s = tokio::net::TcpStream::connect(web).await.ok()?;
        let req = format!("GET /realms HTTP/1.1\r\nHost: {web}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.ok()?;
        let mut text = Vec::new();
        s.take(64 * 1024).read_to_end(&mut text).await.ok()?;
        let text = String::from_utf8_lossy(&text);
        let (_, body) = text.split_once("\r\n\r\n")?;
        let v: serde_json::Value = serde_json::from_str(body).ok()?;
        v["realms"][0].as_str().map(str::to_owned)
    };
    tokio::time::timeout(std::time::Duration::from_secs(2), ask)
        .await
        .ok()
        .flatten()
}
