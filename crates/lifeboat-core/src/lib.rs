//! Lifeboat's pure domain: sessions and their lifecycle, leases, fencing by attempt,
//! checkpoints, and the recovery assessment.
//!
//! This crate knows no SQL, HTTP, async runtime or wall clock: every function that
//! depends on time takes `now` as a parameter, so the rules can be tested exactly.
//! Storage backends load an aggregate, call these functions inside their transaction,
//! and persist what changed.

mod checkpoint;
mod error;
mod id;
mod recovery;
mod session;
mod time;

pub use checkpoint::{Checkpoint, CheckpointKind, CheckpointRef, NewCheckpoint, Sha256};
pub use error::Error;
pub use id::{Id, TenantId};
pub use recovery::{Assessment, AssetCounts, Offer, RecoveryOption, ResumePoint, assess};
pub use session::{
    Crash, CrashType, Metrics, NewSession, Progress, Session, SessionLimits, Status,
    crash_type_for_error,
};
pub use time::Timestamp;
