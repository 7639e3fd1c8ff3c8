//! [`Error`]: why the SQLite store failed, in SQLite's terms; it becomes the port's
//! backend-neutral [`StoreError`] where it leaves this crate.

use jaring_chat::storage::StoreError;

/// Why the SQLite store failed. Details go to the server log, never to clients.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The database refused or failed.
    #[error("database error")]
    Sqlite(#[from] rusqlite::Error),
    /// The storage thread is gone (the server is stopping, or it crashed).
    #[error("the storage thread has stopped")]
    Stopped,
    /// The data directory is unusable.
    #[error("cannot use the data directory {path}")]
    DataDir {
        /// The directory.
        path: std::path::PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// Another process (a running realm server) holds the data directory.
    #[error(
        "the data directory {0} is in use by a running realm server; stop it first (users are managed offline)"
    )]
    Locked(std::path::PathBuf),
    /// The database file is damaged (SQLite's integrity check failed, or SQLite says so).
    #[error(
        "{path} is damaged ({detail}); stop here and restore it from a backup (or, to start an \
         empty realm, move it and its -wal and -shm files away)"
    )]
    Corrupt {
        /// The database file.
        path: std::path::PathBuf,
        /// What SQLite found (the first problems `PRAGMA quick_check` reported).
        detail: String,
    },
    /// The database file exists but is empty: SQLite would take it for a new database.
    #[error(
        "{0} is empty (0 bytes), so the realm's users and messages are not in it; restore it from \
         a backup (if this realm's first start was cut short, delete the file and start again)"
    )]
    Empty(std::path::PathBuf),
    /// The disk (or the file size limit) has no room for what the database must write.
    #[error("no space left on device ({path}); free some space on its disk and start again")]
    NoSpace {
        /// The database file.
        path: std::path::PathBuf,
        /// What the system said when the space was tried.
        source: std::io::Error,
    },
    /// Reading the database file failed (a failing disk, or a file changed under SQLite).
    #[error(
        "cannot read {path}: the disk or the file is failing; check the disk (dmesg) and restore the file from a backup"
    )]
    Read {
        /// The database file.
        path: std::path::PathBuf,
        /// What SQLite said.
        source: rusqlite::Error,
    },
    /// Writing the database (or its -wal or -shm file) failed for a reason other than space.
    #[error(
        "cannot write {path} (or its -wal and -shm files); check the disk (dmesg) and the directory's permissions"
    )]
    Write {
        /// The database file.
        path: std::path::PathBuf,
        /// What SQLite said.
        source: rusqlite::Error,
    },
    /// A message to send to another realm has the id of one stored from or for a link already
    /// (ids are fresh UUID v7s: a bug, never a retry).
    #[error("message id {0} is stored already")]
    IdReused(uuid::Uuid),
    /// A user to add exists already.
    #[error("user {0:?} exists already")]
    UserExists(String),
    /// A user to change does not exist.
    #[error("no user {0:?} in this realm")]
    NoSuchUser(String),
}

/// Result of an SQLite store call.
pub type SqlResult<T> = Result<T, Error>;

impl From<Error> for StoreError {
    fn from(e: Error) -> Self {
        use rusqlite::ffi::ErrorCode;
        match e {
            Error::Stopped => StoreError::Stopped,
            Error::UserExists(name) => StoreError::UserExists(name),
            Error::NoSuchUser(name) => StoreError::NoSuchUser(name),
            // A busy database (another process holds the write lock) passes; nothing was written.
            Error::Sqlite(rusqlite::Error::SqliteFailure(f, _))
                if matches!(f.code, ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) =>
            {
                StoreError::unavailable(Error::Sqlite(rusqlite::Error::SqliteFailure(f, None)))
            }
            Error::Sqlite(_) | Error::IdReused(_) => StoreError::backend(e),
            Error::DataDir { .. }
            | Error::Locked(_)
            | Error::Corrupt { .. }
            | Error::Empty(_)
            | Error::NoSpace { .. }
            | Error::Read { .. }
            | Error::Write { .. } => StoreError::Open(Box::new(e)),
        }
    }
}
