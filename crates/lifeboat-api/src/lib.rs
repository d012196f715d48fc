//! Lifeboat's wire contract: the JSON bodies of the HTTP API and the problem types.
//!
//! Shared by the server and the Rust SDK. It does not re-export domain types: the wire
//! shape may only change on purpose. Times are RFC 3339 UTC strings with milliseconds;
//! durations are `*_ms` integers.

mod cluster;
mod problem;
mod tokens;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

pub use cluster::{ClusterBody, ClusterNode, MaintenanceTermBody};
pub use problem::{Problem, ProblemType};
pub use tokens::{CreateProjectToken, ProjectTokenCreated, SessionTokenBody};

/// A page of a list: `{"items": [...], "next_cursor": ...}`.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct List<T> {
    /// The items of this page.
    pub items: Vec<T>,
    /// Pass as `cursor` to fetch the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// `POST /sessions`.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateSession {
    /// Client-chosen id (`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`); a UUIDv7 when absent.
    pub id: Option<String>,
    /// The project the session belongs to.
    pub project_id: Option<String>,
    /// What kind of work, e.g. `render`.
    pub kind: String,
    /// Human title.
    pub title: Option<String>,
    /// Lease length, 1000–86400000 (default 30000).
    pub heartbeat_timeout_ms: Option<u64>,
    /// Flag the session `stalled` when progress does not move for this long (≥ 1000).
    pub stall_timeout_ms: Option<u64>,
    /// Recovering past this many attempts needs confirmation (default 10).
    pub max_attempts: Option<u32>,
    /// Units of work in all.
    pub total_units: Option<u64>,
    /// Newest prunable checkpoints kept, 1–1000 (default 5).
    pub checkpoint_retention: Option<u32>,
    /// Any JSON the application wants kept with the session.
    pub metadata: Option<Value>,
}

/// Progress as reported and as shown.
#[derive(Debug, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ProgressBody {
    /// 0–100.
    pub percent: Option<f64>,
    /// Current stage name.
    pub stage: Option<String>,
    /// Units done.
    pub completed_units: Option<u64>,
    /// Units in all.
    pub total_units: Option<u64>,
}

/// Resource use reported by the worker.
#[derive(Debug, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct MetricsBody {
    /// Resident memory.
    pub memory_bytes: Option<u64>,
    /// The worker's memory limit; ≥ 90 % use at expiry means `out_of_memory`.
    pub memory_limit_bytes: Option<u64>,
    /// CPU use, percent of one core.
    pub cpu_percent: Option<f64>,
    /// GPU memory in use.
    pub gpu_memory_bytes: Option<u64>,
}

/// `POST /sessions/{id}/heartbeat`.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    /// The worker's attempt (fencing token).
    pub attempt: u32,
    /// Progress fields to merge.
    pub progress: Option<ProgressBody>,
    /// Metrics to record.
    pub metrics: Option<MetricsBody>,
}

/// The answer to a heartbeat.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HeartbeatAck {
    /// The session's status.
    pub status: String,
    /// The new end of the lease.
    pub lease_expires_at: Option<String>,
}

/// `POST /sessions/{id}/checkpoints`, and the emergency checkpoint of a fail.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateCheckpoint {
    /// The worker's attempt (fencing token). Not used inside a fail.
    pub attempt: Option<u32>,
    /// `item`, `batch`, `stage`, `milestone`, `emergency` or `manual`.
    pub kind: Option<String>,
    /// Pipeline stage name.
    pub stage: Option<String>,
    /// Any JSON value.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub position: Option<Box<RawValue>>,
    /// Units done.
    pub completed_units: Option<u64>,
    /// Units in all.
    pub total_units: Option<u64>,
    /// Any JSON value, stored byte for byte as sent.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub data: Option<Box<RawValue>>,
    /// Hex SHA-256 of the bytes of `data` (either case); a mismatch is refused.
    pub data_sha256: Option<String>,
    /// Names of the session's assets this checkpoint depends on.
    pub assets: Option<Vec<String>>,
}

/// The answer to a checkpoint write.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CheckpointCreated {
    /// 1, 2, 3 … per session.
    pub seq: u64,
    /// Hex SHA-256 of the stored bytes of `data`.
    pub sha256: String,
    /// When it was written.
    pub created_at: String,
}

/// A stored checkpoint.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CheckpointBody {
    /// 1, 2, 3 … per session.
    pub seq: u64,
    /// The attempt that wrote it.
    pub attempt: u32,
    /// The kind.
    pub kind: String,
    /// Stage name.
    pub stage: Option<String>,
    /// Any JSON value, as sent.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub position: Option<Box<RawValue>>,
    /// Units done.
    pub completed_units: Option<u64>,
    /// Units in all.
    pub total_units: Option<u64>,
    /// The stored bytes, unchanged.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub data: Box<RawValue>,
    /// Hex SHA-256 recorded when it was written.
    pub sha256: String,
    /// Whether the stored bytes still match `sha256`.
    pub valid: bool,
    /// The asset versions it depends on, pinned when it was written.
    pub assets: Vec<PinnedAssetBody>,
    /// When it was written.
    pub created_at: String,
}

/// An asset as a checkpoint pinned it (SPEC §5 r2): later writes to the name do not change
/// it. `GET /sessions/{id}/checkpoints/{seq}/assets/{name}` returns these bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PinnedAssetBody {
    /// The asset's name.
    pub name: String,
    /// Bytes pinned (for an appendable asset, its size when the checkpoint was written).
    pub size: u64,
    /// Hex SHA-256 of those bytes.
    pub sha256: String,
}

/// `POST /sessions/{id}/pause|complete|cancel`.
#[derive(Debug, Default, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AttemptBody {
    /// The worker's attempt; absent for an operator action.
    pub attempt: Option<u32>,
}

/// `POST /sessions/{id}/fail`.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Fail {
    /// The worker's attempt.
    pub attempt: u32,
    /// What went wrong; classifies the crash type.
    pub error: String,
    /// An emergency checkpoint written before the failure (kind defaults to `emergency`).
    pub checkpoint: Option<CreateCheckpoint>,
}

/// `POST /sessions/{id}/recover`.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Recover {
    /// `continue`, `restart_batch` or `fresh_start`.
    pub option: String,
    /// Needed for `fresh_start` and past `max_attempts`.
    pub confirm: Option<bool>,
}

/// The crash record.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CrashBody {
    /// `client_lost`, `network`, `out_of_memory`, `application_error` or `server_restart`.
    #[serde(rename = "type")]
    pub kind: String,
    /// When Lifeboat noticed.
    pub detected_at: String,
}

/// The session's newest checkpoint, in short.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LatestCheckpoint {
    /// Its seq.
    pub seq: u64,
    /// Its kind.
    pub kind: String,
    /// Its stage.
    pub stage: Option<String>,
    /// When it was written.
    pub created_at: String,
}

/// A session.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SessionBody {
    /// Unique within the tenant.
    pub id: String,
    /// The project it belongs to.
    pub project_id: Option<String>,
    /// What kind of work.
    pub kind: String,
    /// Human title.
    pub title: Option<String>,
    /// `active`, `paused`, `incomplete`, `failed`, `completed` or `cancelled`.
    pub status: String,
    /// The current attempt (fencing token).
    pub attempt: u32,
    /// Recovering past this many attempts needs confirmation.
    pub max_attempts: u32,
    /// Creation time.
    pub created_at: String,
    /// Last change.
    pub updated_at: String,
    /// Last sign of life.
    pub last_heartbeat_at: Option<String>,
    /// End of the lease; `null` unless active.
    pub lease_expires_at: Option<String>,
    /// Lease length.
    pub heartbeat_timeout_ms: u64,
    /// Stall threshold.
    pub stall_timeout_ms: Option<u64>,
    /// Prunable checkpoints kept.
    pub checkpoint_retention: u32,
    /// Reported progress.
    pub progress: ProgressBody,
    /// Last reported metrics.
    pub metrics: Option<MetricsBody>,
    /// Application data.
    pub metadata: Option<Value>,
    /// The error of the last fail.
    pub error: Option<String>,
    /// Alive but not progressing.
    pub stalled: bool,
    /// The latest crash.
    pub crash: Option<CrashBody>,
    /// The newest checkpoint.
    pub latest_checkpoint: Option<LatestCheckpoint>,
    /// When it completed.
    pub completed_at: Option<String>,
}

/// Asset counts by verification status.
#[derive(Debug, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AssetCountsBody {
    /// All assets.
    pub total: u64,
    /// Verified.
    pub ok: u64,
    /// Gone.
    pub missing: u64,
    /// Size or hash differs.
    pub corrupt: u64,
}

/// One recovery option.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OptionBody {
    /// `continue`, `restart_batch` or `fresh_start`.
    pub option: String,
    /// The checkpoint it starts from.
    pub resume_from: Option<CheckpointBody>,
    /// Whether the request must say `"confirm": true`.
    pub requires_confirmation: bool,
}

/// A recoverable session and how it can be recovered.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RecoveryBody {
    /// The session.
    pub session: SessionBody,
    /// When its newest checkpoint was written.
    pub last_saved_at: Option<String>,
    /// The newest checkpoint that verifies with all its assets.
    pub resume_from: Option<CheckpointBody>,
    /// False only when checkpoints exist but none verifies.
    pub can_recover: bool,
    /// 0–1; see docs/recovery.md.
    pub confidence: f64,
    /// The work a `continue` will redo.
    pub work_lost_ms: u64,
    /// The latest crash.
    pub crash: Option<CrashBody>,
    /// The session's assets by status.
    pub assets: AssetCountsBody,
    /// Assets that are missing or corrupt.
    pub missing_assets: Vec<String>,
    /// The options (only on `GET /sessions/{id}/recovery`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub options: Option<Vec<OptionBody>>,
}

/// The answer to a recovery.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Recovered {
    /// The session, now active with a new attempt.
    pub session: SessionBody,
    /// Where to resume; `null` for a fresh start or when nothing was saved.
    pub resume_from: Option<CheckpointBody>,
}

/// Checkpoint verification.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CheckpointCheck {
    /// Checkpoints stored.
    pub total: u64,
    /// Checkpoints whose bytes match.
    pub valid: u64,
    /// Seqs of those that do not.
    pub invalid: Vec<u64>,
}

/// `POST /sessions/{id}/verify`.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VerifyBody {
    /// Checkpoint hashes.
    pub checkpoints: CheckpointCheck,
    /// Asset statuses.
    pub assets: AssetCountsBody,
    /// Problems found.
    pub issues: Vec<String>,
}

/// p50, p99 and max, in milliseconds.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DistributionBody {
    /// Median.
    pub p50: u64,
    /// 99th percentile.
    pub p99: u64,
    /// Largest.
    pub max: u64,
}

/// Crash counts.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CrashStats {
    /// All crashes.
    pub total: u64,
    /// Per crash type.
    pub by_type: std::collections::BTreeMap<String, u64>,
}

/// Recovery counts.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RecoveryStats {
    /// All recoveries.
    pub total: u64,
    /// Per option.
    pub by_option: std::collections::BTreeMap<String, u64>,
    /// Whose attempt later completed.
    pub succeeded: u64,
    /// Whose attempt crashed again.
    pub failed: u64,
    /// Still running.
    pub pending: u64,
}

/// Checkpoint counts.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CheckpointStats {
    /// Stored.
    pub total: u64,
    /// Found damaged by a verification.
    pub invalid: u64,
}

/// `GET /stats`, for the tenant of the key.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StatsBody {
    /// Sessions per status.
    pub sessions: std::collections::BTreeMap<String, u64>,
    /// Crashes (historical).
    pub crashes: CrashStats,
    /// Recoveries (historical).
    pub recoveries: RecoveryStats,
    /// Checkpoints.
    pub checkpoints: CheckpointStats,
    /// Assets.
    pub assets: AssetCountsBody,
    /// `detected_at − lease_expires_at` of expiry crashes.
    pub detection_delay_ms: DistributionBody,
    /// Work lost at each crash.
    pub work_lost_ms: DistributionBody,
}

/// `POST /admin/sweep`.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SweepBody {
    /// Sessions whose expiry this sweep persisted.
    pub timed_out: u64,
}

/// `PUT /projects/{id}`: the whole state; `schema` and `title` are kept when omitted.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PutProject {
    /// The document: a JSON object.
    pub state: Value,
    /// `name@version` of a registered schema that every save must satisfy.
    pub schema: Option<String>,
    /// A label for people.
    pub title: Option<String>,
}

/// The answer to a save (`PUT`, `PATCH`, `restore`). The `ETag` header is `"<revision>"`.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProjectSaved {
    /// The project id.
    pub id: String,
    /// The revision this save made.
    pub revision: u64,
    /// When it was saved.
    pub updated_at: String,
    /// Bytes of the serialized state.
    pub size_bytes: u64,
}

/// `GET /projects/{id}`: the project at its current revision (or at `?revision=N`).
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProjectBody {
    /// The project id.
    pub id: String,
    /// The revision shown.
    pub revision: u64,
    /// A label for people.
    pub title: Option<String>,
    /// `name@version` of its schema.
    pub schema: Option<String>,
    /// The document.
    pub state: Value,
    /// When revision 1 was saved.
    pub created_at: String,
    /// When the revision shown was saved.
    pub updated_at: String,
}

/// A project in `GET /projects`: everything but the state.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProjectSummary {
    /// The project id.
    pub id: String,
    /// A label for people.
    pub title: Option<String>,
    /// `name@version` of its schema.
    pub schema: Option<String>,
    /// The current revision.
    pub revision: u64,
    /// Bytes of the serialized state.
    pub size_bytes: u64,
    /// When revision 1 was saved.
    pub created_at: String,
    /// When the current revision was saved.
    pub updated_at: String,
}

/// One revision in `GET /projects/{id}/revisions`.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RevisionBody {
    /// Its number.
    pub revision: u64,
    /// When it was saved.
    pub created_at: String,
    /// Bytes of the state at that revision.
    pub size_bytes: u64,
}

/// `POST /projects/{id}/restore`.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Restore {
    /// The revision whose state becomes the next revision.
    pub revision: u64,
}

/// An asset: `PUT` answers it (201 new, 200 replaced), an append answers it with the new
/// size, and lists show each with its last verification status.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AssetBody {
    /// The name within its session or project.
    pub name: String,
    /// Bytes.
    pub size: u64,
    /// SHA-256 of the bytes, lowercase hex.
    pub sha256: String,
    /// `ok`, `missing` or `corrupt`, as of `verified_at`.
    pub status: String,
    /// `uploaded` or `external`.
    pub source: String,
    /// The label given at registration.
    pub kind: Option<String>,
    /// When the bytes were last checked.
    pub verified_at: String,
    /// When it was first stored.
    pub created_at: String,
    /// When its bytes last changed.
    pub updated_at: String,
}

/// `POST …/assets/register`: a file on the server host, inside an asset root.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RegisterAsset {
    /// The asset name (SPEC §5 rules).
    pub name: String,
    /// The absolute host path.
    pub path: String,
    /// A label, e.g. `audio`.
    pub kind: Option<String>,
}

/// What an export holds (`GET /admin/export`, in its manifest) or an import added
/// (`POST /admin/import`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TransferBody {
    /// Projects.
    pub projects: u64,
    /// Their stored revisions.
    pub revisions: u64,
    /// Schema versions the projects use (an import counts only new ones).
    pub schemas: u64,
    /// Sessions.
    pub sessions: u64,
    /// Their checkpoints.
    pub checkpoints: u64,
    /// Assets of projects and sessions.
    pub assets: u64,
}

/// `POST /admin/cleanup`: what was removed (or, with `dry_run=true`, would be).
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CleanupBody {
    /// Whether this was a dry run (nothing changed).
    pub dry_run: bool,
    /// Unreferenced asset files older than the orphan age.
    pub orphan_files_deleted: u64,
    /// Their bytes.
    pub bytes_freed: u64,
    /// Old `failed` / `cancelled` sessions, with their checkpoints and assets.
    pub sessions_purged: u64,
    /// Checkpoints removed with those sessions.
    pub checkpoints_pruned: u64,
    /// Project revisions beyond retention.
    pub revisions_pruned: u64,
    /// Soft-deleted projects past the grace period, with revisions and assets.
    pub projects_purged: u64,
    /// Idempotency keys older than 24 hours.
    pub idempotency_keys_expired: u64,
}

/// A damaged checkpoint found by `POST /admin/verify`.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DamagedCheckpoint {
    /// Its tenant.
    pub tenant: String,
    /// Its session.
    pub session_id: String,
    /// Its seq.
    pub seq: u64,
}

/// `POST /admin/verify`: the whole store checked, all tenants.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StoreVerifyBody {
    /// True when nothing is wrong.
    pub ok: bool,
    /// Whether damaged checkpoints were quarantined and asset statuses recorded.
    pub repair: bool,
    /// SQLite's integrity check findings (empty when it says ok).
    pub integrity: Vec<String>,
    /// Checkpoints hashed.
    pub checkpoints_checked: u64,
    /// Bytes of checkpoint data hashed.
    pub checkpoint_bytes: u64,
    /// Checkpoints whose data no longer matches its SHA-256 (and were not yet quarantined).
    pub damaged_checkpoints: Vec<DamagedCheckpoint>,
    /// How many of them this run quarantined.
    pub quarantined: u64,
    /// Counters that disagree with the rows they count.
    pub inconsistencies: Vec<String>,
    /// Assets re-hashed.
    pub assets_checked: u64,
    /// Their bytes.
    pub asset_bytes: u64,
    /// `tenant/owner-kind/owner/name` of assets whose file is gone.
    pub missing_assets: Vec<String>,
    /// Those whose size or SHA-256 differs.
    pub corrupt_assets: Vec<String>,
}

/// `POST /keys`.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    /// The tenant the key acts for (a tenant admin key may only name its own).
    pub tenant: String,
    /// Any of `read`, `write`, `admin`.
    pub scopes: Vec<String>,
}

/// A key as listed (never its secret).
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct KeyBody {
    /// The key's id (the public part of `lb_<id>_<secret>`).
    pub id: String,
    /// The tenant it acts for.
    pub tenant: String,
    /// Its scopes.
    pub scopes: Vec<String>,
    /// When it was made.
    pub created_at: String,
    /// When it was revoked, if it was.
    pub revoked_at: Option<String>,
}

/// The answer to `POST /keys`: the whole key, shown this once.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct KeyCreated {
    /// The key's id.
    pub id: String,
    /// The bearer token: `lb_<id>_<secret>`. Store it now; only a hash is kept.
    pub key: String,
    /// The tenant it acts for.
    pub tenant: String,
    /// Its scopes.
    pub scopes: Vec<String>,
    /// When it was made.
    pub created_at: String,
}

/// One entry of `GET /audit`.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditBody {
    /// Position, increasing.
    pub seq: i64,
    /// The tenant of the key that acted.
    pub tenant: String,
    /// When.
    pub at: String,
    /// The key id, or `bootstrap`.
    pub actor: String,
    /// What was done, e.g. `session.recover`.
    pub action: String,
    /// To what, e.g. `session:render-42`.
    pub resource: String,
    /// Details of the action.
    pub detail: Value,
}
