//! What a backend offers the engine: transactions, and inside one, row access per
//! aggregate. The engine (`crates/lifeboat`) writes each operation once, as a script over
//! these traits; a backend implements them with its own SQL and decides nothing.
//!
//! [`Store::write`](crate::Store::write) runs a job in one transaction — for SQLite, a
//! savepoint inside a group commit of the one writer — and [`Store::read`](crate::Store::read)
//! runs one on a consistent snapshot. A job is synchronous: it must not wait on anything but
//! its own rows (no file system, no network), so that it never holds the writer long.

mod assets;
mod keys;
mod maintenance;
mod projects;
mod sessions;

use std::any::Any;
use std::sync::{Arc, Mutex};

pub use assets::AssetRows;
pub use keys::KeyRows;
pub use maintenance::MaintenanceRows;
pub use projects::{ProjectRow, ProjectRows};
pub use sessions::{EventRows, OutcomeRows, RowId, SessionRows, Subject};

use crate::Result;

/// Every row access of one transaction.
pub trait Tx:
    SessionRows + EventRows + OutcomeRows + ProjectRows + AssetRows + KeyRows + MaintenanceRows
{
}

impl<T> Tx for T where
    T: SessionRows + EventRows + OutcomeRows + ProjectRows + AssetRows + KeyRows + MaintenanceRows
{
}

/// A job's answer: the outer `Result` rolls the job's changes back (a storage failure, or
/// a refusal that must change nothing); `Ok(Err(..))` keeps them and still answers the
/// refusal (a refused write that observed an expiry).
pub type JobResult<T> = Result<Result<T>>;

/// A write job, type-erased so that a store can be a trait object. A store may run it
/// more than once: when a concurrent write of another server made a run fail and rolled
/// it back ([`crate::Error::Contended`]), it runs again, from the start, in a later
/// transaction. So a job reads what it needs on every run and keeps nothing of a run
/// that failed.
pub type WriteJob = Box<dyn FnMut(&mut dyn Tx) -> JobResult<Box<dyn Any + Send>> + Send>;

/// A read job.
pub type ReadJob = Box<dyn FnOnce(&mut dyn Tx) -> Result<Box<dyn Any + Send>> + Send>;

/// Writes again what an early-acknowledged write wrote, after its batch's commit failed
/// without stopping the store (a full disk): the client was told, so it must become so.
pub type Redo = Box<dyn Fn(&mut dyn Tx) -> Result<()> + Send>;

/// When a write is answered.
pub enum Ack {
    /// After its commit.
    AfterCommit,
    /// As soon as it ran, if it succeeded and left a [`Redo`] here: a heartbeat that
    /// changed nothing but the lease (SPEC §6).
    EarlyIf(Arc<EarlyAck>),
}

/// Where a write that may be acknowledged early leaves how to write its change again.
#[derive(Default)]
pub struct EarlyAck(Mutex<Option<Redo>>);

impl EarlyAck {
    /// Allows the early answer: `redo` writes the same change again after a failed commit.
    pub fn allow(&self, redo: Redo) {
        if let Ok(mut slot) = self.0.lock() {
            *slot = Some(redo);
        }
    }

    /// The redo left by the job, if it allowed an early answer.
    pub fn take(&self) -> Option<Redo> {
        self.0.lock().ok().and_then(|mut slot| slot.take())
    }
}
