//! The admin socket of a running realm: its server, its client, and how a tool on the same
//! machine finds it (`docs/chat-admin.md`).
//!
//! Who may use it: the user the realm runs as, and root. The socket file is made owner-only,
//! and every connection's peer credentials (`SO_PEERCRED`) are checked before anything is read,
//! so a looser directory or a process passed the file descriptor changes nothing.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use jaring_proto::chat::admin::{
    ADMIN_SOCKET_FILE, AdminReply, AdminRequest, DEFAULT_ADMIN_MAX_LINE, RealmInfo, encode_line,
    parse_request,
};
use jaring_runtime::CancellationToken;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;
use tracing::warn;

use crate::realm::{AdminError, Realm};
use crate::storage::Storage;

/// Connections served at once; more wait for a slot.
pub const DEFAULT_ADMIN_CONNECTIONS: usize = 8;

/// How long a connection may sit between requests (and a request take to arrive).
pub const DEFAULT_ADMIN_IDLE: Duration = Duration::from_secs(60);

/// How long a client waits for an answer: a purge of a large bench run takes a while.
pub const DEFAULT_ADMIN_CALL_TIMEOUT: Duration = Duration::from_secs(120);

/// Longest path `bind`/`connect` take directly (`sun_path` is 108 bytes with its NUL); longer
/// ones go through the directory's `/proc/self/fd` entry.
const MAX_DIRECT_PATH: usize = 100;

/// What the admin socket says about its realm in `hello`.
#[derive(Debug, Clone)]
pub struct AdminInfo {
    /// The port clients connect to.
    pub client_port: u16,
    /// The federation port, if any.
    pub federation_port: Option<u16>,
    /// `sqlite`, `postgres` or `memory`.
    pub backend: String,
}

/// Why the admin socket cannot listen, or a call through it failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminSocketError {
    /// Binding or preparing the socket failed.
    #[error(
        "cannot listen on the admin socket {path}: {source}; set [admin] socket to another path, \
         or [admin] enabled = false"
    )]
    Bind {
        /// The path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Another process serves on that path.
    #[error(
        "another realm answers on the admin socket {0}: two realms cannot share a data directory \
         (set [admin] socket, or [realm] data_dir, to tell them apart)"
    )]
    InUse(PathBuf),
    /// Nothing listens there.
    #[error(
        "cannot reach the admin socket {path}: {source} (is the realm running? it listens there \
         only while it runs)"
    )]
    Connect {
        /// The path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The connection broke, or the answer was not one.
    #[error("the admin socket {path} failed: {reason}")]
    Call {
        /// The path.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The realm answered and refused (not its operator, a name taken, …).
    #[error("the realm refused (through {path}): {reason}")]
    Refused {
        /// The path.
        path: PathBuf,
        /// The realm's words.
        reason: String,
        /// The reply's `code`, when it has one.
        code: Option<String>,
    },
}

/// An admin socket listening; dropping it removes the socket file (and a private directory).
#[derive(Debug)]
pub struct AdminListener {
    listener: UnixListener,
    path: PathBuf,
    /// Keeps the directory open when the path is reached through `/proc/self/fd`.
    _dir: Option<std::fs::File>,
    /// The private directory of a socket with no configured place (memory realms).
    _private: Option<tempfile::TempDir>,
}

impl AdminListener {
    /// Listens at `path`, or in a new private directory under the system's temporary directory
    /// when `path` is `None`. A socket file left by a realm that died is replaced; one that
    /// answers is [`AdminSocketError::InUse`].
    pub async fn bind(path: Option<&Path>) -> Result<Self, AdminSocketError> {
        let (path, private) = match path {
            Some(p) => (p.to_path_buf(), None),
            None => {
                let dir = tempfile::Builder::new()
                    .prefix("jaring-admin-")
                    .tempdir()
                    .map_err(|source| AdminSocketError::Bind {
                        path: std::env::temp_dir(),
                        source,
                    })?;
                (dir.path().join(ADMIN_SOCKET_FILE), Some(dir))
            }
        };
        let bind_err = |source| AdminSocketError::Bind {
            path: path.clone(),
            source,
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(bind_err)?;
        }
        let (reach, dir) = reachable(&path).map_err(bind_err)?;
        if let Ok(meta) = std::fs::symlink_metadata(&path) {
            use std::os::unix::fs::FileTypeExt as _;
            // Only a socket is ours to replace: any other file there is someone's data.
            if !meta.file_type().is_socket() {
                return Err(bind_err(std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    "a file that is not a socket is in the way",
                )));
            }
            if UnixStream::connect(&reach).await.is_ok() {
                return Err(AdminSocketError::InUse(path));
            }
            std::fs::remove_file(&path).map_err(bind_err)?;
        }
        let listener = UnixListener::bind(&reach).map_err(bind_err)?;
        // Owner-only from here on; the credential check below closes the moment between.
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                .map_err(bind_err)?;
        }
        Ok(Self {
            listener,
            path,
            _dir: dir,
            _private: private,
        })
    }

    /// Where it listens.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Serves `realm`'s operator until `shutdown`, then removes the socket file.
    pub async fn serve<S: Storage>(
        self,
        realm: Arc<Realm<S>>,
        info: AdminInfo,
        shutdown: CancellationToken,
    ) {
        let slots = Arc::new(Semaphore::new(DEFAULT_ADMIN_CONNECTIONS));
        let info = Arc::new(info);
        loop {
            let stream = tokio::select! {
                () = shutdown.cancelled() => break,
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        warn!(error = %e, "admin socket: accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
                break;
            };
            let (realm, info, shutdown) = (Arc::clone(&realm), Arc::clone(&info), shutdown.clone());
            tokio::spawn(async move {
                let _slot = slot;
                tokio::select! {
                    () = shutdown.cancelled() => {}
                    () = serve_one(stream, &realm, &info) => {}
                }
            });
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Whether a peer with user id `uid` may administer a realm running as `own`: itself, or root.
pub fn may_administer(uid: u32, own: u32) -> bool {
    uid == own || uid == 0
}

async fn serve_one<S: Storage>(stream: UnixStream, realm: &Realm<S>, info: &AdminInfo) {
    let own = rustix::process::geteuid().as_raw();
    let uid = stream.peer_cred().map(|c| c.uid());
    let (read, mut write) = stream.into_split();
    match uid {
        Ok(uid) if may_administer(uid, own) => {}
        Ok(uid) => {
            warn!(uid, "admin socket: refused a user that is not the realm's");
            let reply = AdminReply::failed(format!(
                "user id {uid} may not administer this realm: only its own user ({own}) and \
                 root may"
            ));
            let _ = write.write_all(&encode_line(&reply)).await;
            return;
        }
        Err(e) => {
            warn!(error = %e, "admin socket: cannot read the peer's credentials");
            return;
        }
    }
    let mut reader = BufReader::new(read);
    let mut line = Vec::new();
    loop {
        line.clear();
        let limit = DEFAULT_ADMIN_MAX_LINE as u64 + 1;
        let read = tokio::time::timeout(
            DEFAULT_ADMIN_IDLE,
            (&mut reader).take(limit).read_until(b'\n', &mut line),
        )
        .await;
        match read {
            Ok(Ok(0)) | Err(_) => return,
            Ok(Err(e)) => {
                warn!(error = %e, "admin socket: read failed");
                return;
            }
            Ok(Ok(_)) => {}
        }
        if line.last() != Some(&b'\n') {
            let reply = if line.len() > DEFAULT_ADMIN_MAX_LINE {
                AdminReply::failed(format!(
                    "request longer than {DEFAULT_ADMIN_MAX_LINE} bytes; closing"
                ))
            } else {
                AdminReply::failed("request not ended by a newline; closing")
            };
            let _ = write.write_all(&encode_line(&reply)).await;
            return;
        }
        let reply = match parse_request(&line[..line.len() - 1]) {
            Ok(request) => execute(realm, info, request).await,
            Err(e) => AdminReply::failed(e.to_string()),
        };
        if write.write_all(&encode_line(&reply)).await.is_err() {
            return;
        }
    }
}

async fn execute<S: Storage>(
    realm: &Realm<S>,
    info: &AdminInfo,
    request: AdminRequest,
) -> AdminReply {
    let done = |r: Result<(), AdminError>| match r {
        Ok(()) => AdminReply::done(),
        Err(e) => AdminReply::failed(e.to_string()),
    };
    match request {
        AdminRequest::Hello {} => AdminReply {
            realm: Some(RealmInfo {
                realm: realm.name().to_owned(),
                client_port: info.client_port,
                federation_port: info.federation_port,
                backend: info.backend.clone(),
                users: realm.user_count() as u64,
            }),
            ..AdminReply::done()
        },
        AdminRequest::ListUsers {} => AdminReply {
            users: Some(realm.admin_users()),
            ..AdminReply::done()
        },
        AdminRequest::AddUser {
            name,
            display_name,
            password,
        } => done(realm.admin_add_user(name, display_name, password).await),
        AdminRequest::SetPassword { name, password } => {
            done(realm.admin_set_password(name, password).await)
        }
        AdminRequest::DeleteUser { name } => done(realm.admin_delete_user(name).await),
        AdminRequest::PutBenchUsers {
            prefix,
            count,
            password,
        } => match realm.admin_put_bench_users(&prefix, count, password).await {
            Ok(n) => AdminReply {
                created: Some(n),
                ..AdminReply::done()
            },
            Err(e) => AdminReply {
                code: e.code().map(str::to_owned),
                ..AdminReply::failed(e.to_string())
            },
        },
        AdminRequest::PurgeBench {} => match realm.admin_purge_bench().await {
            Ok(purged) => AdminReply {
                purged: Some(purged),
                ..AdminReply::done()
            },
            Err(e) => AdminReply::failed(e.to_string()),
        },
    }
}

/// A path `bind`/`connect` accept: `path` itself, or for a long one its directory opened and
/// named through `/proc/self/fd` (the open directory is returned: keep it while using the path).
fn reachable(path: &Path) -> std::io::Result<(PathBuf, Option<std::fs::File>)> {
    if path.as_os_str().len() <= MAX_DIRECT_PATH {
        return Ok((path.to_path_buf(), None));
    }
    use std::os::fd::AsRawFd as _;
    let parent = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().unwrap_or(ADMIN_SOCKET_FILE.as_ref());
    let dir = std::fs::File::open(parent)?;
    let short = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd())).join(name);
    Ok((short, Some(dir)))
}

/// A connection to a realm's admin socket.
#[derive(Debug)]
pub struct AdminClient {
    path: PathBuf,
    reader: BufReader<UnixStream>,
}

impl AdminClient {
    /// Connects to the admin socket at `path`.
    pub async fn connect(path: &Path) -> Result<Self, AdminSocketError> {
        let connect_err = |source| AdminSocketError::Connect {
            path: path.to_path_buf(),
            source,
        };
        let (reach, _dir) = reachable(path).map_err(connect_err)?;
        let stream = UnixStream::connect(&reach).await.map_err(connect_err)?;
        Ok(Self {
            path: path.to_path_buf(),
            reader: BufReader::new(stream),
        })
    }

    /// Where it is connected.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Sends `request` and reads its reply; a reply with `ok: false` is an error with the realm's
    /// words.
    pub async fn call(&mut self, request: &AdminRequest) -> Result<AdminReply, AdminSocketError> {
        let fail = |reason: String| AdminSocketError::Call {
            path: self.path.clone(),
            reason,
        };
        let io = async {
            self.reader
                .get_mut()
                .write_all(&encode_line(request))
                .await?;
            let mut line = Vec::new();
            (&mut self.reader)
                .take(16 * 1024 * 1024)
                .read_until(b'\n', &mut line)
                .await?;
            Ok::<_, std::io::Error>(line)
        };
        let line = match tokio::time::timeout(DEFAULT_ADMIN_CALL_TIMEOUT, io).await {
            Ok(Ok(line)) => line,
            Ok(Err(e)) => return Err(fail(e.to_string())),
            Err(_) => {
                return Err(fail(format!(
                    "no answer within {} s",
                    DEFAULT_ADMIN_CALL_TIMEOUT.as_secs()
                )));
            }
        };
        if line.is_empty() {
            return Err(fail("the realm closed the connection".into()));
        }
        let reply: AdminReply =
            serde_json::from_slice(&line).map_err(|e| fail(format!("unreadable reply ({e})")))?;
        if !reply.ok {
            return Err(AdminSocketError::Refused {
                path: self.path.clone(),
                reason: reply
                    .error
                    .unwrap_or_else(|| "refused without a reason".into()),
                code: reply.code,
            });
        }
        Ok(reply)
    }

    /// `hello`: which realm this is.
    pub async fn hello(&mut self) -> Result<RealmInfo, AdminSocketError> {
        let reply = self.call(&AdminRequest::Hello {}).await?;
        reply.realm.ok_or_else(|| AdminSocketError::Call {
            path: self.path.clone(),
            reason: "hello answered without the realm".into(),
        })
    }
}

/// The admin sockets process `pid` listens on (Linux: its descriptors matched against
/// `/proc/net/unix`), as paths this process can connect to. Empty when `pid` belongs to a user
/// whose descriptors this process cannot read: one who could not use the sockets anyway.
pub fn sockets_of(pid: u32) -> Vec<PathBuf> {
    let Ok(table) = std::fs::read_to_string("/proc/net/unix") else {
        return Vec::new();
    };
    let mut listening = std::collections::HashMap::new();
    for line in table.lines().skip(1) {
        // Num RefCount Protocol Flags Type St Inode Path; flag 0x10000 is a listening socket.
        let f: Vec<&str> = line.split_whitespace().collect();
        let (Some(flags), Some(inode), Some(path)) = (f.get(3), f.get(6), f.get(7)) else {
            continue;
        };
        let accepting = u32::from_str_radix(flags, 16).is_ok_and(|v| v & 0x1_0000 != 0);
        if accepting && path.ends_with(ADMIN_SOCKET_FILE) {
            listening.insert(format!("socket:[{inode}]"), (*path).to_owned());
        }
    }
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for fd in fds.flatten() {
        if let Ok(target) = std::fs::read_link(fd.path())
            && let Some(path) = target.to_str().and_then(|t| listening.get(t))
        {
            // A long path was bound through the realm's own /proc/self/fd: the same directory
            // is /proc/PID/fd from here.
            let path = match path.strip_prefix("/proc/self/") {
                Some(rest) => format!("/proc/{pid}/{rest}"),
                None => path.clone(),
            };
            found.push(PathBuf::from(path));
        }
    }
    found.sort();
    found.dedup();
    found
}

/// The admin socket among those of process `pid` (see [`sockets_of`]) whose realm's `hello`
/// is the one `wanted`: by its client port (`jaring bench chat`), or by its name (a `--ws`
/// bench knows the realm, not its client port).
pub async fn find(pid: u32, wanted: impl Fn(&RealmInfo) -> bool) -> Option<(PathBuf, RealmInfo)> {
    let paths = tokio::task::spawn_blocking(move || sockets_of(pid))
        .await
        .ok()?;
    for path in paths {
        let Ok(mut client) = AdminClient::connect(&path).await else {
            continue;
        };
        if let Ok(info) = client.hello().await
            && wanted(&info)
        {
            return Some((path, info));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_realms_own_user_and_root_may_administer() {
        assert!(may_administer(1000, 1000));
        assert!(may_administer(0, 1000));
        assert!(!may_administer(1001, 1000));
        assert!(may_administer(0, 0));
        assert!(!may_administer(65534, 0));
    }

    #[tokio::test]
    async fn a_stale_socket_is_replaced_and_any_other_file_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(ADMIN_SOCKET_FILE);
        // A socket left by a realm that died (bound, never served, listener gone).
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        let listener = AdminListener::bind(Some(&path)).await.unwrap();
        // One that answers is in use.
        let taken = AdminListener::bind(Some(&path)).await.unwrap_err();
        assert!(matches!(taken, AdminSocketError::InUse(_)), "{taken}");
        drop(listener);
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, b"precious").unwrap();
        let refused = AdminListener::bind(Some(&path)).await.unwrap_err();
        assert!(refused.to_string().contains("not a socket"), "{refused}");
        assert_eq!(std::fs::read(&path).unwrap(), b"precious");
    }

    #[test]
    fn long_paths_go_through_the_directorys_descriptor() {
        let dir = tempfile::tempdir().unwrap();
        let short = dir.path().join("a.sock");
        assert_eq!(reachable(&short).unwrap().0, short);
        let deep = dir.path().join("x".repeat(120));
        std::fs::create_dir_all(&deep).unwrap();
        let (reach, held) = reachable(&deep.join(ADMIN_SOCKET_FILE)).unwrap();
        assert!(reach.starts_with("/proc/self/fd/"), "{}", reach.display());
        assert!(held.is_some());
    }
}
