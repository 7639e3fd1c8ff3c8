//! The realm's storage port: every trait the realm, groups, federation and the CLI need, with
//! the records they pass. Adapters implement them: [`memory`] here (not durable: tests and
//! demos), SQLite (`jaring-chat-sqlite`, the embedded default) and PostgreSQL
//! (`jaring-chat-postgres`). `docs/design/storage.md` explains the guarantees and how each
//! backend keeps them; the `conformance` suite (feature `conformance`) checks them on any backend.

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
pub mod error;
pub mod federation;
pub mod groups;
pub mod memory;
pub mod messages;
pub mod users;
pub mod window;

pub use error::{BackendError, StoreError, StoreResult};
pub use federation::{
    FederationStore, GroupCursor, MessageKind, Outgoing, ReplicaFeed, ReplicaOutcome, Settled,
    is_ours,
};
pub use groups::{
    GroupRecord, GroupStore, JoinOutcome, MemberRecord, NewGroupMessage, Published, ReadCursor,
    StoredGroupMessage,
};
pub use memory::MemoryStore;
pub use messages::{NewMessage, Store, StoredMessage, TokenRecord, UserRecord, conversation_key};
pub use users::{BenchPurge, UserAdmin};
pub use window::{Page, Window, WindowTaker};

/// Everything a realm server needs of one backend: its messages and groups, its federation and
/// its users. Cloning shares the store (its connections, its writer).
pub trait Storage: Store + FederationStore + UserAdmin + Clone {}

impl<S: Store + FederationStore + UserAdmin + Clone> Storage for S {}
