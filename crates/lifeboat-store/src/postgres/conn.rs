//! One transaction on a pooled PostgreSQL connection, seen from a store job: jobs are
//! synchronous (they run on a blocking thread), so each statement is prepared (cached per
//! connection) and run by blocking on the async client. A job's row modules call these
//! few methods, as the SQLite modules call `rusqlite`'s.

use std::cell::Cell;

use deadpool_postgres::Transaction;
use tokio::runtime::Handle;
use tokio_postgres::Row;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{FromSql, ToSql};

use crate::{Error, Result};

/// A statement's parameters.
pub(super) type Params<'p> = [&'p (dyn ToSql + Sync)];

/// The transaction a job runs in.
pub(super) struct PgConn<'a> {
    handle: Handle,
    tx: &'a Transaction<'a>,
    writing: bool,
    /// Whether the job recorded an event (the store then runs the sequencer after commit).
    events: Cell<bool>,
}

impl<'a> PgConn<'a> {
    pub(super) fn new(handle: Handle, tx: &'a Transaction<'a>, writing: bool) -> PgConn<'a> {
        PgConn {
            handle,
            tx,
            writing,
            events: Cell::new(false),
        }
    }

    /// Notes that this transaction recorded an event.
    pub(super) fn note_event(&self) {
        self.events.set(true);
    }

    /// Whether this transaction recorded an event.
    pub(super) fn recorded_events(&self) -> bool {
        self.events.get()
    }

    /// Every row `sql` answers.
    pub(super) fn query(&self, sql: &str, params: &Params<'_>) -> Result<Vec<Row>> {
        self.handle
            .block_on(async {
                let statement = self.tx.prepare_cached(sql).await?;
                self.tx.query(&statement, params).await
            })
            .map_err(translate)
    }

    /// The one row `sql` answers, if any (more than one is an error).
    pub(super) fn query_opt(&self, sql: &str, params: &Params<'_>) -> Result<Option<Row>> {
        self.handle
            .block_on(async {
                let statement = self.tx.prepare_cached(sql).await?;
                self.tx.query_opt(&statement, params).await
            })
            .map_err(translate)
    }

    /// The one row `sql` answers (none is an error).
    pub(super) fn query_one(&self, sql: &str, params: &Params<'_>) -> Result<Row> {
        self.handle
            .block_on(async {
                let statement = self.tx.prepare_cached(sql).await?;
                self.tx.query_one(&statement, params).await
            })
            .map_err(translate)
    }

    /// Runs `sql`; answers how many rows it changed.
    pub(super) fn execute(&self, sql: &str, params: &Params<'_>) -> Result<u64> {
        self.handle
            .block_on(async {
                let statement = self.tx.prepare_cached(sql).await?;
                self.tx.execute(&statement, params).await
            })
            .map_err(translate)
    }

    /// ` FOR UPDATE` in a write transaction, so that a row a job reads and then writes is
    /// not written by another node in between (reads see a snapshot and lock nothing).
    pub(super) fn for_update(&self) -> &'static str {
        if self.writing { " FOR UPDATE" } else { "" }
    }
}

/// Column `index` of `row`; a value of another type or NULL where none may be is bad
/// data, not a panic.
pub(super) fn column<'r, T: FromSql<'r>>(row: &'r Row, index: usize) -> Result<T> {
    row.try_get(index)
        .map_err(|e| Error::Internal(format!("column {index}: {e}")))
}

/// Translates a PostgreSQL error into a storage error kind. The one place that knows codes.
pub(super) fn translate(error: tokio_postgres::Error) -> Error {
    let Some(code) = error.code() else {
        // No answer from the server: the connection is gone, or was never made (the
        // cause, a refused certificate say, is in the error's source).
        let cause = std::error::Error::source(&error)
            .map(|source| format!(": {source}"))
            .unwrap_or_default();
        return Error::Unavailable(format!("the database cannot be reached: {error}{cause}"));
    };
    let class = &code.code()[..2];
    // Two servers that insert the same new row at once (a session id, a project) meet on
    // its unique key: the loser changed nothing, and its retry finds the winner's row.
    if *code == SqlState::UNIQUE_VIOLATION || *code == SqlState::LOCK_NOT_AVAILABLE {
        Error::Unavailable(format!(
            "a concurrent write got in the way; nothing was changed, retry: {error}"
        ))
    } else if *code == SqlState::DISK_FULL {
        Error::Full(error.to_string())
    } else if *code == SqlState::CHARACTER_NOT_IN_REPERTOIRE
        || *code == SqlState::UNTRANSLATABLE_CHARACTER
    {
        // PostgreSQL's text cannot hold U+0000, which JSON and titles may carry.
        Error::Domain(lifeboat_core::Error::Invalid {
            field: "body",
            message: "text with the NUL character (U+0000) cannot be stored in this server's PostgreSQL database".to_owned(),
        })
    } else if matches!(class, "08" | "40" | "53" | "57")
        || *code == SqlState::READ_ONLY_SQL_TRANSACTION
        || *code == SqlState::ADMIN_SHUTDOWN
    {
        // Connection lost, serialization failure or deadlock, out of resources, the
        // server shutting down, a replica after a failover: nothing was changed, retry.
        Error::Unavailable(error.to_string())
    } else {
        Error::Internal(error.to_string())
    }
}
