//! Lifeboat's storage layer: the [`Store`] trait every backend implements, the types it
//! speaks, and the SQLite backend.
//!
//! Backends own transactions and SQL; the lifecycle rules stay in `lifeboat-core`. A
//! backend loads a session inside its transaction, calls [`apply`] (which calls the core),
//! and persists what changed, so every backend enforces the same rules.

mod apply;
pub mod blobs;
mod error;
pub mod lock;
pub mod recovery;
mod schemas;
pub mod sqlite;

use async_trait::async_trait;
use blobs::BlobStore;
use lifeboat_core::{
    Assessment, Asset, AssetCounts, AssetName, AssetStatus, Change, Checkpoint, FileVersion, Id,
    Metrics, NewCheckpoint, Owner, Preconditions, Progress, Project, RecoveryOption, Saved,
    SchemaRef, Session, Status, TenantId, Timestamp,
};
use serde_json::Value;

pub use apply::apply;
pub use error::Error;
pub use recovery::{FileChecks, RecoveryFacts};
pub use schemas::SchemaCache;

/// The result type of every store operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;

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

/// What a session write produced.
#[derive(Debug, Clone)]
pub struct Applied {
    /// The session after the write.
    pub session: Session,
    /// The checkpoint written, if any.
    pub checkpoint: Option<Checkpoint>,
    /// For a recovery: the checkpoint to resume from.
    pub resume_from: Option<Checkpoint>,
}

/// Which sessions a list returns.
#[derive(Debug, Clone, Default)]
pub struct SessionFilter {
    /// Any of these statuses (as observed now); empty means all.
    pub statuses: Vec<Status>,
    /// Only sessions of this project.
    pub project_id: Option<Id>,
    /// Only sessions of this kind.
    pub kind: Option<String>,
}

/// A page request: `limit` items after the opaque `cursor`.
#[derive(Debug, Clone)]
pub struct PageRequest {
    /// 1–1000, validated at the boundary.
    pub limit: u32,
    /// Where the previous page stopped.
    pub cursor: Option<String>,
}

/// A page of items and the cursor of the next page, if there is one.
#[derive(Debug, Clone)]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// Pass back as `cursor` for the next page.
    pub next_cursor: Option<String>,
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

/// p50, p99 and max of a distribution, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Distribution {
    /// Median.
    pub p50: u64,
    /// 99th percentile.
    pub p99: u64,
    /// Largest.
    pub max: u64,
}

impl Distribution {
    /// Nearest-rank percentiles of `values`.
    pub fn of(mut values: Vec<u64>) -> Distribution {
        if values.is_empty() {
            return Distribution::default();
        }
        values.sort_unstable();
        let rank = |p: f64| {
            let index = ((p * values.len() as f64).ceil() as usize).clamp(1, values.len()) - 1;
            values[index]
        };
        Distribution {
            p50: rank(0.50),
            p99: rank(0.99),
            max: values[values.len() - 1],
        }
    }
}

/// Historical and current counts for one tenant (SPEC §9, stats shape).
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// Sessions per status, as observed now.
    pub sessions: Vec<(Status, u64)>,
    /// Crashes per type (historical).
    pub crashes_by_type: Vec<(String, u64)>,
    /// Recoveries per option (historical).
    pub recoveries_by_option: Vec<(String, u64)>,
    /// Recoveries whose attempt later completed.
    pub recoveries_succeeded: u64,
    /// Recoveries whose attempt crashed again.
    pub recoveries_failed: u64,
    /// Recoveries still running.
    pub recoveries_pending: u64,
    /// Checkpoints stored.
    pub checkpoints_total: u64,
    /// Checkpoints found damaged by a verification.
    pub checkpoints_invalid: u64,
    /// Assets by status.
    pub assets: AssetCounts,
    /// `detected_at − lease_expires_at` of expiry crashes.
    pub detection_delay_ms: Distribution,
    /// Work lost at each crash.
    pub work_lost_ms: Distribution,
}

/// Sessions with writes on their way to the store, by `(tenant, id)`, with when the
/// earliest of them arrived: a lease that passed after that arrival is not expired yet.
pub type Spared = std::collections::HashMap<(TenantId, Id), Timestamp>;

/// Bytes of items one list page carries at most: a page whose items pass it ends there,
/// with `next_cursor` (so a page of 1,000 checkpoints of 16 MiB each is never built).
pub const PAGE_BYTES_MAX: usize = 8 * 1024 * 1024;

/// How long an `Idempotency-Key` is remembered: 24 hours.
pub const IDEMPOTENCY_KEY_TTL_MS: u64 = 24 * 3_600_000;

/// An idempotent write's key: the tenant's route (`METHOD path`), the client's key, and a
/// fingerprint (SHA-256) of the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey {
    /// `METHOD path`.
    pub route: String,
    /// The client's `Idempotency-Key`.
    pub key: String,
    /// SHA-256 of the method, path and body.
    pub fingerprint: String,
}

/// A response as the client first received it, replayed for a retry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    /// HTTP status.
    pub status: u16,
    /// Headers worth replaying (`ETag`, `Location`).
    pub headers: Vec<(String, String)>,
    /// The body bytes.
    pub body: Vec<u8>,
}

/// Makes a write idempotent: the backend looks the key up inside the write's transaction
/// and stores the rendered response in the same transaction as the write itself, so a
/// retry after a crash finds either nothing (the write did not happen) or the response.
pub struct Idempotency<T> {
    /// The key and the request's fingerprint.
    pub key: IdempotencyKey,
    /// Renders the response from the write's result, as the handler would.
    pub render: Box<dyn FnOnce(&T) -> StoredResponse + Send>,
}

/// A write's outcome: done now, or done before (a replay of an idempotent retry).
#[derive(Debug, Clone)]
pub enum Outcome<T> {
    /// Done by this request.
    Done(T),
    /// Done by an earlier request with the same `Idempotency-Key` and the same body.
    Replayed(StoredResponse),
}

impl<T> Outcome<T> {
    /// The result, when this request did the write.
    pub fn done(self) -> Option<T> {
        match self {
            Outcome::Done(value) => Some(value),
            Outcome::Replayed(_) => None,
        }
    }
}

/// What cleanup removes, and when things become eligible.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CleanupRules {
    /// Unreferenced files older than this are deleted (default 24 h).
    pub orphan_age_ms: u64,
    /// `failed` and `cancelled` sessions untouched for this long are purged (default 7 d).
    pub finished_session_age_ms: u64,
    /// Soft-deleted projects are purged this long after deletion (default 7 d).
    pub deleted_project_age_ms: u64,
}

impl EventFilter {
    /// Whether `event` passes this filter.
    pub fn matches(&self, event: &Event) -> bool {
        self.session_id
            .as_ref()
            .is_none_or(|id| event.session_id.as_deref() == Some(id.as_str()))
            && self
                .project_id
                .as_ref()
                .is_none_or(|id| event.project_id.as_deref() == Some(id.as_str()))
    }
}

impl Default for CleanupRules {
    fn default() -> Self {
        const DAY: u64 = 24 * 3_600_000;
        CleanupRules {
            orphan_age_ms: DAY,
            finished_session_age_ms: 7 * DAY,
            deleted_project_age_ms: 7 * DAY,
        }
    }
}

/// Where the next step of cleanup's record half starts: each kind of record in turn, by
/// primary key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CleanupCursor {
    /// Finished sessions after this `pk`.
    Sessions(i64),
    /// Deleted projects after this `pk`.
    Projects(i64),
    /// Revision histories of live projects after this `pk`.
    Revisions(i64),
    /// Idempotency keys after this `(tenant, key, route)`.
    Keys(Option<(String, String, String)>),
}

impl CleanupCursor {
    /// Where a run starts.
    pub const START: CleanupCursor = CleanupCursor::Sessions(0);
}

/// What an export takes from a tenant. Both lists empty: everything it holds (projects
/// that are not deleted, and every session). A project brings its sessions along.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    /// Project ids.
    pub projects: Vec<Id>,
    /// Session ids.
    pub sessions: Vec<Id>,
}

/// What an export holds, or an import added.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TransferCounts {
    /// Projects.
    pub projects: u64,
    /// Their stored revisions.
    pub revisions: u64,
    /// Schema versions the projects use.
    pub schemas: u64,
    /// Sessions.
    pub sessions: u64,
    /// Their checkpoints.
    pub checkpoints: u64,
    /// Assets of both.
    pub assets: u64,
}

/// What a cleanup run removed (or, in a dry run, would remove).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CleanupReport {
    /// Unreferenced asset files deleted.
    pub orphan_files_deleted: u64,
    /// Their bytes.
    pub bytes_freed: u64,
    /// Sessions purged, with their checkpoints and assets.
    pub sessions_purged: u64,
    /// Checkpoints removed with them.
    pub checkpoints_pruned: u64,
    /// Project revisions beyond retention.
    pub revisions_pruned: u64,
    /// Soft-deleted projects purged, with their revisions and assets.
    pub projects_purged: u64,
    /// Expired idempotency keys.
    pub idempotency_keys_expired: u64,
}

/// The record half of a whole-store verification.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StoreCheck {
    /// SQLite's own `integrity_check` findings (empty when it says `ok`).
    pub integrity: Vec<String>,
    /// Checkpoints whose hash was checked.
    pub checkpoints_checked: u64,
    /// Bytes of checkpoint data hashed.
    pub checkpoint_bytes: u64,
    /// Checkpoints whose data no longer matches its SHA-256: `(tenant, session, seq)`.
    pub damaged: Vec<(String, String, u64)>,
    /// Of those, how many were quarantined by this run (`repair`).
    pub quarantined: u64,
    /// Counters that disagree with the rows they count.
    pub inconsistencies: Vec<String>,
}

/// One entry of the audit trail.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEntry {
    /// Position, increasing.
    pub seq: i64,
    /// The tenant of the key that acted.
    pub tenant: TenantId,
    /// When.
    pub at: Timestamp,
    /// The key id, or `bootstrap`.
    pub actor: String,
    /// `session.recover`, `session.cancel`, `project.restore`, `project.delete`,
    /// `asset.delete`, `key.create`, `key.revoke`, `cleanup`.
    pub action: String,
    /// What it acted on, e.g. `session:render-42`.
    pub resource: String,
    /// Details (the recovery option, the key's tenant and scopes, cleanup counts, …).
    pub detail: Value,
}

/// A session token's record (never its secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionToken {
    /// The public part of `lbs_<id>_<secret>`.
    pub id: String,
    /// The session's tenant.
    pub tenant: TenantId,
    /// The one session it may act on (that session row: a later session that reuses the
    /// id is another one, and the token dies with the first).
    pub session_id: Id,
    /// The attempt it acts for: the session's current one when the token was made.
    pub attempt: u32,
    /// SHA-256 (hex) of the secret.
    pub secret_sha256: String,
    /// When it was made.
    pub created_at: Timestamp,
}

/// An API key's record (never its secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    /// The public part of `lb_<id>_<secret>`.
    pub id: String,
    /// The tenant it acts for.
    pub tenant: TenantId,
    /// SHA-256 (hex) of the secret.
    pub secret_sha256: String,
    /// `read`, `write`, `admin`.
    pub scopes: Vec<String>,
    /// When it was made.
    pub created_at: Timestamp,
    /// When it was revoked, if it was.
    pub revoked_at: Option<Timestamp>,
}

/// Point-in-time figures for `/metrics`, across all tenants.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Gauges {
    /// Sessions by observed status.
    pub sessions: Vec<(Status, u64)>,
    /// Bytes of all asset records.
    pub asset_bytes: u64,
    /// Bytes of the database (pages in use and free).
    pub database_bytes: u64,
}

/// A stored file as records name it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum FileRef {
    /// A whole upload, by SHA-256 (hex).
    Blob(String),
    /// An appendable file, by key.
    Appendable(String),
}

/// A domain event as the event stream delivers it.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Position in the stream (the SSE `id:`), increasing.
    pub seq: i64,
    /// Whose event it is.
    pub tenant: TenantId,
    /// The session it is about, if any.
    pub session_id: Option<String>,
    /// The project it is about (a project's save, or an event of one of its sessions).
    pub project_id: Option<String>,
    /// `project.saved`, `session.status`, `session.stalled` or `checkpoint.created`.
    pub kind: String,
    /// The event's fields.
    pub data: Value,
    /// When it was committed.
    pub created_at: Timestamp,
}

/// Which events a subscriber wants.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventFilter {
    /// Only this session's events.
    pub session_id: Option<Id>,
    /// Only events of this project (its saves, and its sessions' events).
    pub project_id: Option<Id>,
}

/// A project write.
#[derive(Debug, Clone, PartialEq)]
pub enum ProjectEdit {
    /// A `PUT` or `PATCH`.
    Change(Change),
    /// `POST …/restore`: the state of `revision` as a new revision.
    Restore(u64),
}

/// A project in a list: everything but the state.
#[derive(Debug, Clone, PartialEq)]
pub struct ProjectInfo {
    /// The id.
    pub id: Id,
    /// The title.
    pub title: Option<String>,
    /// The schema.
    pub schema: Option<SchemaRef>,
    /// The current revision.
    pub revision: u64,
    /// Bytes of the serialized state.
    pub size_bytes: u64,
    /// When revision 1 was saved.
    pub created_at: Timestamp,
    /// When the current revision was saved.
    pub updated_at: Timestamp,
}

/// One revision in a project's history.
#[derive(Debug, Clone, PartialEq)]
pub struct RevisionInfo {
    /// Its number.
    pub revision: u64,
    /// When it was saved.
    pub created_at: Timestamp,
    /// Bytes of the state at that revision.
    pub size_bytes: u64,
}

/// A registered schema version.
#[derive(Debug, Clone, PartialEq)]
pub struct SchemaPut {
    /// False when an identical body was registered before.
    pub created: bool,
    /// The schema.
    pub body: Value,
}

/// A storage backend. Every method is scoped by tenant; another tenant's records answer
/// [`Error::NotFound`]. Writes return only after their commit, except heartbeats
/// that only extend a lease (see [`SessionOp::is_heartbeat`]).
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Stores a new session; [`Error::AlreadyExists`] if its id is taken in the tenant.
    async fn create_session(
        &self,
        tenant: &TenantId,
        session: Session,
        idempotency: Option<Idempotency<Session>>,
    ) -> Result<Outcome<Session>>;

    /// Applies `op` to the session at `now`.
    ///
    /// A refusal that observed a change (an expired lease, a late heartbeat refining the
    /// crash type) commits that change and still answers the refusal.
    async fn update_session(
        &self,
        tenant: &TenantId,
        id: &Id,
        op: SessionOp,
        now: Timestamp,
        idempotency: Option<Idempotency<Applied>>,
    ) -> Result<Outcome<Applied>>;

    /// One session as stored (the caller observes it; see [`Store::expire`]).
    async fn session(&self, tenant: &TenantId, id: &Id) -> Result<Session>;

    /// Persists the expiry of one session's lease as observed at `now`, if it has passed
    /// and is not persisted yet; answers the session as stored afterwards.
    async fn expire(&self, tenant: &TenantId, id: &Id, now: Timestamp) -> Result<Session>;

    /// Whether any `active` session's lease has passed at `now` without its expiry being
    /// persisted yet (a read must persist those before it answers, SPEC §2 r2).
    async fn due(&self, now: Timestamp) -> Result<bool>;

    /// Sessions matching `filter`, newest first.
    async fn sessions(
        &self,
        tenant: &TenantId,
        filter: &SessionFilter,
        page: &PageRequest,
        now: Timestamp,
    ) -> Result<Page<Session>>;

    /// A session's stored checkpoints in seq order, with `valid` recomputed.
    async fn checkpoints(
        &self,
        tenant: &TenantId,
        id: &Id,
        page: &PageRequest,
    ) -> Result<Page<Checkpoint>>;

    /// Checkpoint `seq`, or with `None` the newest valid one.
    async fn checkpoint(&self, tenant: &TenantId, id: &Id, seq: Option<u64>) -> Result<Checkpoint>;

    /// What the recovery assessment of one session (any state) needs, read at once.
    async fn recovery_facts(&self, tenant: &TenantId, id: &Id) -> Result<RecoveryFacts>;

    /// The same for recoverable sessions (incomplete, failed, paused, as observed at
    /// `now`), newest first.
    async fn recoverable_facts(
        &self,
        tenant: &TenantId,
        page: &PageRequest,
        now: Timestamp,
    ) -> Result<Page<RecoveryFacts>>;

    /// Re-hashes a session's checkpoints and marks damaged ones.
    async fn verify(&self, tenant: &TenantId, id: &Id) -> Result<Verification>;

    /// Persists expired leases and stall flags of all tenants; answers how many timed out.
    ///
    /// A session in `spared` whose write arrived before its lease passed is left active:
    /// that write, still on its way to the writer, keeps it alive (SPEC §2 r2).
    async fn sweep(&self, now: Timestamp, spared: &Spared) -> Result<u64>;

    /// Gives every active session one full timeout from `ready_at` (the restart grace),
    /// except those whose lease had passed before the last write the store committed:
    /// those expire now. Answers how many sessions were given the grace.
    async fn begin_restart_grace(&self, ready_at: Timestamp) -> Result<u64>;

    /// Counts for one tenant.
    async fn stats(&self, tenant: &TenantId, now: Timestamp) -> Result<Stats>;

    /// Whether the store can serve reads and writes.
    async fn ready(&self) -> Result<()>;

    /// Registers a schema version; identical re-registration is not an error, a different
    /// body is [`lifeboat_core::Error::SchemaConflict`].
    async fn put_schema(
        &self,
        tenant: &TenantId,
        schema: &SchemaRef,
        body: Value,
        now: Timestamp,
        idempotency: Option<Idempotency<SchemaPut>>,
    ) -> Result<Outcome<SchemaPut>>;

    /// A registered schema's body.
    async fn schema(&self, tenant: &TenantId, schema: &SchemaRef) -> Result<Value>;

    /// Saves a project: checks `preconditions`, applies the edit, validates, stores the
    /// revision and records a `project.saved` event, in one transaction.
    async fn save_project(
        &self,
        tenant: &TenantId,
        id: &Id,
        edit: ProjectEdit,
        preconditions: Preconditions,
        now: Timestamp,
        idempotency: Option<Idempotency<Saved>>,
    ) -> Result<Outcome<Saved>>;

    /// A project at its current revision, or at `revision`.
    async fn project(&self, tenant: &TenantId, id: &Id, revision: Option<u64>) -> Result<Project>;

    /// Projects, most recently created first.
    async fn projects(&self, tenant: &TenantId, page: &PageRequest) -> Result<Page<ProjectInfo>>;

    /// Soft-deletes a project (kept for cleanup, reads as absent).
    async fn delete_project(
        &self,
        tenant: &TenantId,
        id: &Id,
        preconditions: Preconditions,
        now: Timestamp,
    ) -> Result<()>;

    /// A project's revisions, newest first.
    async fn revisions(
        &self,
        tenant: &TenantId,
        id: &Id,
        page: &PageRequest,
    ) -> Result<Page<RevisionInfo>>;

    /// Events after `after` in `seq` order, at most `limit`.
    async fn events(
        &self,
        tenant: &TenantId,
        after: i64,
        filter: &EventFilter,
        limit: u32,
    ) -> Result<Vec<Event>>;

    /// Events of every tenant after `after` in `seq` order, at most `limit` (the feed that
    /// fans out to live subscribers).
    async fn all_events(&self, after: i64, limit: u32) -> Result<Vec<Event>>;

    /// The newest event's `seq` in the store (0 if none): where a new stream starts.
    async fn newest_event(&self) -> Result<i64>;

    /// Changes after every commit; subscribers then read new events with [`Store::events`].
    fn subscribe(&self) -> tokio::sync::watch::Receiver<u64>;

    /// Removes one bounded step of the records cleanup is for (all tenants), from
    /// `cursor` on, in one short transaction: old finished sessions with their checkpoints
    /// and asset records, old deleted projects with their revisions and asset records,
    /// revisions beyond retention, expired idempotency keys. Answers what it removed and
    /// where the next step starts (`None`: done). With `dry_run` it counts and changes
    /// nothing.
    async fn cleanup_step(
        &self,
        rules: CleanupRules,
        now: Timestamp,
        dry_run: bool,
        cursor: CleanupCursor,
    ) -> Result<(CleanupReport, Option<CleanupCursor>)>;

    /// Of `candidates`, the stored files no asset record and no retained checkpoint names
    /// (read on a snapshot, outside the writer). With `purged`, records that a cleanup
    /// under those rules at that time would purge do not count: the dry run's question.
    async fn unreferenced(
        &self,
        candidates: Vec<FileRef>,
        purged: Option<(CleanupRules, Timestamp)>,
    ) -> Result<Vec<FileRef>>;

    /// Checks the whole store, all tenants: SQLite's integrity check, every checkpoint's
    /// hash, per-session counters. With `repair`, damaged checkpoints are quarantined
    /// (marked invalid, never deleted).
    async fn check_store(&self, repair: bool) -> Result<StoreCheck>;

    /// The records of `selection` as rows without row ids or tenant, shaped
    /// `{"schemas": [row], "projects": [{"project": row, "revisions": [row], "assets":
    /// [row]}], "sessions": [{"session": row, "checkpoints": [row], "crashes": [row],
    /// "recoveries": [row], "assets": [row]}]}`, each row an object of column → value.
    async fn export_records(
        &self,
        tenant: &TenantId,
        selection: &Selection,
    ) -> Result<(Value, TransferCounts)>;

    /// Adds exported records to `tenant` in one transaction, or nothing: an id that is
    /// taken is `AlreadyExists`; rows that do not read back as valid records (a checkpoint
    /// whose data does not match its hash, revisions that do not rebuild the state) are
    /// `InvalidArchive`.
    async fn import_records(&self, tenant: &TenantId, records: Value) -> Result<TransferCounts>;

    /// Appends to the audit trail.
    async fn audit(&self, entry: AuditEntry) -> Result<()>;

    /// The audit trail, newest first: of one tenant, or (`None`) of all.
    async fn audit_trail(
        &self,
        tenant: Option<&TenantId>,
        page: &PageRequest,
    ) -> Result<Page<AuditEntry>>;

    /// Stores a session token (id, tenant, session, SHA-256 of its secret), bound to the
    /// session's current attempt; answers the record with that attempt.
    async fn create_session_token(&self, token: SessionToken) -> Result<SessionToken>;

    /// A session token by id, with its session's stored status (none once the session
    /// is purged: the token goes with it).
    async fn session_token(&self, id: &str) -> Result<Option<(SessionToken, Status)>>;

    /// Stores a new API key.
    async fn create_key(&self, key: ApiKey) -> Result<()>;

    /// One key by id (revoked ones too).
    async fn key(&self, id: &str) -> Result<Option<ApiKey>>;

    /// Keys, of one tenant or (`None`) of all, by id.
    async fn keys(&self, tenant: Option<&TenantId>, page: &PageRequest) -> Result<Page<ApiKey>>;

    /// Revokes a key at once; answers it, or `None` if there is no such key (in `tenant`,
    /// when given).
    async fn revoke_key(
        &self,
        id: &str,
        tenant: Option<&TenantId>,
        now: Timestamp,
    ) -> Result<Option<ApiKey>>;

    /// Sessions by status, asset bytes and database size, across all tenants.
    async fn gauges(&self, now: Timestamp) -> Result<Gauges>;

    /// Every asset of every tenant, for verification.
    async fn all_assets(&self) -> Result<Vec<(TenantId, Owner, Asset)>>;

    /// Where this store keeps asset bytes.
    fn blobs(&self) -> &BlobStore;

    /// One asset's record (404 if the owner or the asset does not exist).
    async fn asset(&self, tenant: &TenantId, owner: &Owner, name: &AssetName) -> Result<Asset>;

    /// An owner's assets, by name.
    async fn assets(
        &self,
        tenant: &TenantId,
        owner: &Owner,
        page: &PageRequest,
    ) -> Result<Page<Asset>>;

    /// Records an asset whose bytes are already durable; answers whether it is new. With
    /// `fence`, a session's asset is written only if that is the session's current attempt.
    /// A blob's record also heals it: its good bytes were just stored again.
    async fn save_asset(
        &self,
        tenant: &TenantId,
        owner: &Owner,
        asset: Asset,
        fence: Option<u32>,
    ) -> Result<bool>;

    /// Removes an asset's record (fenced like [`Store::save_asset`]), answering it and
    /// whether a record or a retained checkpoint still names its file. Its bytes are left
    /// for cleanup.
    async fn delete_asset(
        &self,
        tenant: &TenantId,
        owner: &Owner,
        name: &AssetName,
        fence: Option<u32>,
    ) -> Result<(Asset, bool)>;

    /// Records what a verification found of file versions: `true` = damaged (never resumed
    /// from again), `false` = intact (forgotten if it was damaged before).
    async fn record_file_checks(
        &self,
        found: Vec<(FileVersion, bool)>,
        now: Timestamp,
    ) -> Result<()>;

    /// Records a verification verdict.
    async fn set_asset_status(
        &self,
        tenant: &TenantId,
        owner: &Owner,
        name: &AssetName,
        status: AssetStatus,
        at: Timestamp,
    ) -> Result<()>;
}
