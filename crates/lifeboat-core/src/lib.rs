//! Lifeboat's pure domain: sessions and their lifecycle, leases, fencing by attempt,
//! checkpoints, the recovery assessment, and projects with their revision history.
//!
//! This crate knows no SQL, HTTP, async runtime or wall clock: every function that
//! depends on time takes `now` as a parameter, so the rules can be tested exactly.
//! Storage backends load an aggregate, call these functions inside their transaction,
//! and persist what changed.

mod asset;
mod checkpoint;
mod error;
mod id;
mod project;
mod recovery;
mod running;
mod session;
mod time;

pub use asset::{
    Asset, AssetName, AssetStatus, FileLook, FileVersion, Owner, PinnedAsset, Storage,
};
pub use checkpoint::{Checkpoint, CheckpointKind, CheckpointRef, NewCheckpoint, Sha256};
pub use error::{Error, FieldError};
pub use id::{Id, Name, TenantId};
pub use project::{
    Chain, Change, DEPTH_MAX_DEFAULT, Delta, Preconditions, Project, ProjectRules,
    RevisionRetention, STATE_BYTES_MAX_DEFAULT, Saved, SchemaRef, depth, parse_json_patch, rebuild,
    save as save_project, schema_violation,
};
pub use recovery::{Assessment, AssetCounts, Offer, RecoveryOption, ResumePoint, assess};
pub use running::RunningSha256;
pub use session::{
    Crash, CrashType, Metrics, NewSession, Progress, Session, SessionLimits, Status,
    crash_type_for_error,
};
pub use time::Timestamp;
