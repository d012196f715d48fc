//! What the engine's operations take and answer: session writes and their results,
//! recovery views, project edits, outcomes of idempotent writes.

use lifeboat_core::{
    Assessment, AssetCounts, Checkpoint, Id, Metrics, NewCheckpoint, Progress, RecoveryOption,
    Session, Timestamp,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::recovery::FileChecks;
use lifeboat_core::Change;

/// A write to one session, validated by the core inside the backend's transaction.
#[derive(Debug, Clone)]
pub enum SessionOp {
    /// Extend the lease; merge progress and metrics.
    Heartbeat {
        /// Fencing token.
        attempt: u32,
        /// Progress fields to merge.
        progress: Option<Progress>,
        /// Metrics to record.
        metrics: Option<Metrics>,
    },
    /// Record a checkpoint (counts as a heartbeat).
    Checkpoint {
        /// Fencing token.
        attempt: u32,
        /// The checkpoint.
        checkpoint: NewCheckpoint,
    },
    /// Pause an active session.
    Pause {
        /// Fencing token; absent for an operator.
        attempt: Option<u32>,
    },
    /// Fail with an error and an optional emergency checkpoint.
    Fail {
        /// Fencing token.
        attempt: u32,
        /// The error text.
        error: String,
        /// The emergency checkpoint.
        checkpoint: Option<NewCheckpoint>,
    },
    /// Start a new attempt.
    Recover {
        /// Where to start from.
        option: RecoveryOption,
        /// Confirms a fresh start or a recovery past `max_attempts`.
        confirm: bool,
        /// What the session's files looked like just before (looked at outside the
        /// writer, which must never wait on a file system); see [`recovery`].
        files: FileChecks,
    },
    /// Complete the session.
    Complete {
        /// Fencing token; absent for an operator.
        attempt: Option<u32>,
    },
    /// Cancel the session.
    Cancel {
        /// Fencing token; absent for an operator.
        attempt: Option<u32>,
    },
}

impl SessionOp {
    /// Whether this op is a heartbeat. A heartbeat that changes nothing but the lease may
    /// be acknowledged before its commit (SPEC §6, the heartbeat exception), since the
    /// restart grace covers a loss; one that moves progress or metrics waits for it.
    pub fn is_heartbeat(&self) -> bool {
        matches!(self, SessionOp::Heartbeat { .. })
    }
}

/// What a session write produced (stored as the outcome of an idempotent write).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Applied {
    /// The session after the write.
    pub session: Session,
    /// The checkpoint written, if any.
    pub checkpoint: Option<Checkpoint>,
    /// For a recovery: the checkpoint to resume from.
    pub resume_from: Option<Checkpoint>,
}

/// A recoverable session with its assessment.
#[derive(Debug, Clone)]
pub struct Recovery {
    /// The session, as observed now.
    pub session: Session,
    /// The assessment.
    pub assessment: Assessment,
    /// The checkpoint `continue` resumes from.
    pub resume_from: Option<Checkpoint>,
    /// The checkpoint `restart_batch` resumes from.
    pub batch_from: Option<Checkpoint>,
    /// The session's assets by status.
    pub assets: AssetCounts,
    /// Names of assets that are missing or corrupt.
    pub missing_assets: Vec<String>,
}

/// The result of re-hashing a session's checkpoints.
#[derive(Debug, Clone)]
pub struct Verification {
    /// Checkpoints stored.
    pub total: u64,
    /// Checkpoints whose bytes match their hash.
    pub valid: u64,
    /// Seqs of those that do not.
    pub invalid: Vec<u64>,
    /// The session's assets by status.
    pub assets: AssetCounts,
    /// Problems found, one sentence each.
    pub issues: Vec<String>,
}

/// A write's outcome: done now, or done before (an idempotent retry). Both carry the same
/// result, so whoever renders it renders it the same way both times.
#[derive(Debug, Clone)]
pub enum Outcome<T> {
    /// Done by this request.
    Done(T),
    /// Done by an earlier request with the same `Idempotency-Key` and the same body: its
    /// result, as stored then. A heartbeat or checkpoint stores a receipt only: its
    /// replay carries the session as stored now with the status, attempt and lease the
    /// first answer showed, and the checkpoint as stored (once pruned, without `data`).
    Replayed(T),
}

impl<T> Outcome<T> {
    /// The result, however it came.
    pub fn into_inner(self) -> T {
        match self {
            Outcome::Done(value) | Outcome::Replayed(value) => value,
        }
    }

    /// Whether this request did the write.
    pub fn is_done(&self) -> bool {
        matches!(self, Outcome::Done(_))
    }
}

/// A project write.
#[derive(Debug, Clone, PartialEq)]
pub enum ProjectEdit {
    /// A `PUT` or `PATCH`.
    Change(Change),
    /// `POST …/restore`: the state of `revision` as a new revision.
    Restore(u64),
}

/// A registered schema version (stored as the outcome of an idempotent write).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SchemaPut {
    /// False when an identical body was registered before.
    pub created: bool,
    /// The schema.
    pub body: Value,
}

/// What a project save answers (stored as the outcome of an idempotent write): the new
/// revision, not the state, which may be megabytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SaveOutcome {
    /// The project.
    pub id: Id,
    /// Its new revision.
    pub revision: u64,
    /// When it was saved.
    pub updated_at: Timestamp,
    /// Bytes of the serialized state at that revision.
    pub size_bytes: u64,
    /// True when the save created the project (or brought a deleted one back).
    pub created: bool,
}
