//! [`StoreError`]: why a store call failed, the same whichever backend stores the realm.

/// A backend's own error (SQLite's, PostgreSQL's), kept as the source of a [`StoreError`] so the
/// log shows it while nothing outside the adapter names its type.
pub type BackendError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why the store failed. Details go to the server log, never to clients; the CLI adds what to do
/// where it shows the error.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database refused or failed the operation (a constraint, a damaged page, a bug).
    #[error("the database failed: {0}")]
    Backend(#[source] BackendError),
    /// The database cannot be reached now (connection refused or lost, server shutting down).
    /// Nothing of the failed call was committed; the store reconnects by itself.
    #[error("the database is unreachable: {0}")]
    Unavailable(#[source] BackendError),
    /// The store is stopping, or its writer is gone.
    #[error("the store has stopped")]
    Stopped,
    /// The store cannot be opened: the backend says why and what to do.
    #[error("{0}")]
    Open(#[source] BackendError),
    /// A user to add exists already.
    #[error("user {0:?} exists already")]
    UserExists(String),
    /// A user to change does not exist.
    #[error("no user {0:?} in this realm")]
    NoSuchUser(String),
}

impl StoreError {
    /// Wraps a backend's error.
    pub fn backend(e: impl Into<BackendError>) -> Self {
        Self::Backend(e.into())
    }

    /// Wraps a backend's error that means the database cannot be reached.
    pub fn unavailable(e: impl Into<BackendError>) -> Self {
        Self::Unavailable(e.into())
    }
}

/// Result of a store call.
pub type StoreResult<T> = Result<T, StoreError>;
