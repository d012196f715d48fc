//! Storage error kinds. Backends translate driver errors into these in one place.

/// Why a storage operation did not succeed.
///
/// Not `#[non_exhaustive]`, on purpose: the server maps every kind to its answer in one
/// exhaustive `match`, so a new kind cannot silently become a 500.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The domain refused the operation.
    #[error(transparent)]
    Domain(#[from] lifeboat_core::Error),
    /// No such record in this tenant.
    #[error("{what} {id} not found")]
    NotFound {
        /// The kind of record.
        what: &'static str,
        /// Its id.
        id: String,
    },
    /// The id is taken.
    #[error("{what} {id} already exists")]
    AlreadyExists {
        /// The kind of record.
        what: &'static str,
        /// Its id.
        id: String,
    },
    /// The `Idempotency-Key` was used before with a different request.
    #[error(
        "Idempotency-Key {0:?} was used before with a different request; use a new key for a new request"
    )]
    IdempotencyKeyReused(String),
    /// The request may not touch this (a path outside every asset root).
    #[error("{0}")]
    Forbidden(String),
    /// An upload is larger than the configured limit; nothing was kept.
    #[error("{0}")]
    TooLarge(String),
    /// A pagination cursor that this store did not issue.
    #[error("invalid cursor")]
    BadCursor,
    /// Storage cannot accept writes (a failed fsync or commit poisoned the writer), or
    /// cannot be reached.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// A concurrent write got in the way (a deadlock between two transactions, or both
    /// inserting the same new row) and this one was rolled back: nothing was changed. A
    /// store runs such a write again a few times before it answers this.
    #[error(
        "a concurrent write got in the way, and this one was rolled back; nothing was changed; retry: {0}"
    )]
    Contended(String),
    /// The connection to the database was lost while a `COMMIT` was under way: the write
    /// may or may not have happened. Retrying with the same `Idempotency-Key` settles it.
    #[error(
        "the database connection was lost during COMMIT, so the outcome is unknown; retry with the same Idempotency-Key: {0}"
    )]
    OutcomeUnknown(String),
    /// Another process owns the data directory (SPEC §6): nothing was opened or changed.
    #[error(
        "the data directory {dir} is in use by another lifeboat process{}; stop it first, or use another --data-dir",
        pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
    )]
    Locked {
        /// The directory.
        dir: String,
        /// The owner's pid, when its lock file says.
        pid: Option<u32>,
    },
    /// An earlier commit failed (a failed fsync), so the writer stopped: writes are
    /// refused until the process restarts, since a retried fsync cannot be trusted.
    #[error(
        "writes are stopped: a commit failed earlier, so nothing is written until the server restarts"
    )]
    Poisoned,
    /// The disk is full; nothing was written.
    #[error("storage full: {0}")]
    Full(String),
    /// An archive to import is damaged, truncated or not an export; nothing was imported.
    #[error("{0}")]
    InvalidArchive(String),
    /// Not an error: a dry run's report, carried out of the transaction it rolls back.
    #[error("dry run")]
    DryRun(Box<(crate::CleanupReport, Option<crate::CleanupCursor>)>),
    /// An unexpected storage failure.
    #[error("storage error: {0}")]
    Internal(String),
}
