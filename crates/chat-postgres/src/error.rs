//! [`Error`]: why the PostgreSQL store failed, in PostgreSQL's terms; it becomes the port's
//! backend-neutral [`StoreError`] where it leaves this crate.

use std::error::Error as _;
use std::sync::Arc;

use jaring_chat::storage::StoreError;

/// Why the PostgreSQL store failed. Details go to the server log, never to clients. Cloneable
/// (the driver's errors are shared) because one failed commit answers every caller in its batch.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The database refused or failed a statement, or the connection failed.
    #[error("{}", describe(.0))]
    Pg(Arc<tokio_postgres::Error>),
    /// No reader connection could be had.
    #[error("no reader connection: {0}")]
    Pool(Arc<deadpool_postgres::PoolError>),
    /// The writer has no connection now: the database went away and it is reconnecting.
    #[error("the database is unreachable ({0}); the store reconnects by itself")]
    Disconnected(String),
    /// The connection was lost while `COMMIT` was under way: the batch may or may not be
    /// committed, so nothing of it is acknowledged.
    #[error(
        "the connection was lost during COMMIT ({}); whether the batch was committed is unknown, \
         so nothing of it is acknowledged",
        describe(.0)
    )]
    CommitUnknown(Arc<tokio_postgres::Error>),
    /// The store is stopping, or its writer task is gone.
    #[error("the store has stopped")]
    Stopped,
    /// The store cannot be opened; the text says why and what to do.
    #[error("{0}")]
    Open(String),
    /// A group message for a group that is not stored.
    #[error("no group {0:?}")]
    NoSuchGroup(String),
    /// The database answered something this store never writes (a bug, or a hand-edited table).
    #[error("unexpected data: {0}")]
    Unexpected(String),
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

/// Result of a PostgreSQL store call.
pub type PgResult<T> = Result<T, Error>;

impl From<tokio_postgres::Error> for Error {
    fn from(e: tokio_postgres::Error) -> Self {
        Self::Pg(Arc::new(e))
    }
}

impl From<deadpool_postgres::PoolError> for Error {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        Self::Pool(Arc::new(e))
    }
}

impl Error {
    /// Whether this error means the database cannot be reached (as opposed to refusing the work).
    pub fn is_unavailable(&self) -> bool {
        match self {
            Self::Pg(e) => unavailable(e),
            Self::Pool(e) => match e.as_ref() {
                deadpool_postgres::PoolError::Backend(e) => unavailable(e),
                deadpool_postgres::PoolError::Timeout(_) => true,
                _ => false,
            },
            Self::Disconnected(_) | Self::CommitUnknown(_) => true,
            _ => false,
        }
    }
}

/// Whether the driver's error means the connection is gone or the server cannot serve now:
/// the connection closed, an I/O error or time-out, SQLSTATE class 08 (connection exception),
/// 57P01-57P03 (the server is shutting down or starting), 53300 (too many connections).
pub(crate) fn unavailable(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    if let Some(code) = e.code() {
        let code = code.code();
        return code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03" | "53300");
    }
    let mut source = e.source();
    while let Some(s) = source {
        if s.is::<std::io::Error>() {
            return true;
        }
        source = s.source();
    }
    false
}

/// The driver's error in one line: a database error's severity, message and detail (the
/// driver's own `Display` says only "db error"), otherwise the error and its causes.
pub(crate) fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut s = format!("{} {}: {}", db.severity(), db.code().code(), db.message());
        if let Some(detail) = db.detail() {
            s.push_str(" (");
            s.push_str(detail);
            s.push(')');
        }
        return s;
    }
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}

impl From<Error> for StoreError {
    fn from(e: Error) -> Self {
        match e {
            Error::Stopped => StoreError::Stopped,
            Error::UserExists(name) => StoreError::UserExists(name),
            Error::NoSuchUser(name) => StoreError::NoSuchUser(name),
            Error::Open(_) => StoreError::Open(Box::new(e)),
            e if e.is_unavailable() => StoreError::unavailable(e),
            e => StoreError::backend(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_writer_s_own_failures_map_to_the_port_s_errors() {
        assert!(matches!(
            StoreError::from(Error::Disconnected("refused".into())),
            StoreError::Unavailable(_)
        ));
        assert!(matches!(
            StoreError::from(Error::Stopped),
            StoreError::Stopped
        ));
        assert!(matches!(
            StoreError::from(Error::UserExists("amy".into())),
            StoreError::UserExists(n) if n == "amy"
        ));
        assert!(matches!(
            StoreError::from(Error::NoSuchGroup("g".into())),
            StoreError::Backend(_)
        ));
        assert!(matches!(
            StoreError::from(Error::IdReused(uuid::Uuid::nil())),
            StoreError::Backend(_)
        ));
        assert!(matches!(
            StoreError::from(Error::Open("in use".into())),
            StoreError::Open(_)
        ));
    }
}
