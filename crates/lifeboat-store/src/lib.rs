//! Lifeboat's storage layer: the [`Store`] trait every backend implements (transactions),
//! the row access it offers inside them ([`rows`]), the types rows are made of, and the
//! SQLite backend.
//!
//! A backend stores and decides nothing: the engine (`crates/lifeboat`) runs each
//! operation as a script over [`Tx`], and the rules it applies live in `lifeboat-core`.

pub mod blobs;
mod error;
pub mod lock;
pub mod objects;
pub mod postgres;
mod records;
pub mod rows;
pub mod sqlite;
mod stored;

use std::any::Any;

use async_trait::async_trait;
use blobs::BlobStore;
use lifeboat_core::{AssetCounts, Id, SchemaRef, Status, TenantId, Timestamp};
use serde_json::Value;

pub use error::Error;
pub use rows::{Ack, EarlyAck, JobResult, ReadJob, Redo, RowId, Tx, WriteJob};

/// The result type of every store operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;

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

/// A project token's record (never its secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectToken {
    /// The public part of `lbp_<id>_<secret>`.
    pub id: String,
    /// The project's tenant.
    pub tenant: TenantId,
    /// The one project it may act on.
    pub project_id: Id,
    /// `read`, `write`.
    pub scopes: Vec<String>,
    /// SHA-256 (hex) of the secret.
    pub secret_sha256: String,
    /// When it was made.
    pub created_at: Timestamp,
    /// When it stops working.
    pub expires_at: Timestamp,
    /// When it was revoked, if it was.
    pub revoked_at: Option<Timestamp>,
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

/// A storage backend: transactions over the rows of [`rows`], and where asset bytes are.
///
/// A write job runs in one transaction of its own as far as it can tell (for SQLite: a
/// savepoint inside a batch the one writer commits together, so concurrent writes share
/// an fsync); it is answered after the commit, or — with [`Ack::EarlyIf`] — as soon as it
/// ran. A job's outer error rolls its changes back. On SQLite, jobs of one store never
/// interleave: each sees every job committed before it. On PostgreSQL, several run at once
/// (other servers' writes, and reads), ordered by the row locks they take.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Runs `job` in a write transaction and answers its result once its fate is durable.
    async fn write(&self, ack: Ack, job: WriteJob) -> Result<Box<dyn Any + Send>>;

    /// [`Store::write`] for a job about session `id` of `tenant`, which reads and writes
    /// the session rows of that session alone (its row, its checkpoints and their pins,
    /// events about it), never another session's. A store with several writers gives every job about one
    /// session to the same one, so that they queue behind each other rather than meet on
    /// its row lock; a store may lock the session's row before the job runs (PostgreSQL
    /// locks the sessions of a whole batch in one statement).
    async fn write_about(
        &self,
        tenant: &TenantId,
        id: &Id,
        ack: Ack,
        job: WriteJob,
    ) -> Result<Box<dyn Any + Send>> {
        let _ = (tenant, id);
        self.write(ack, job).await
    }

    /// Runs `job` on a consistent snapshot (writes in it fail).
    async fn read(&self, job: ReadJob) -> Result<Box<dyn Any + Send>>;

    /// Changes when new events may be readable (after a commit, for SQLite); the event feed
    /// waits on it for new events.
    fn subscribe(&self) -> tokio::sync::watch::Receiver<u64>;

    /// Waits until every event committed before this call is numbered, so that a read of
    /// the log finds it. On PostgreSQL a write's events are numbered after its commit, in
    /// the background (`postgres/mod.rs`): this waits for a sequencer pass that started
    /// after the call. Nothing to wait for where a write's events are numbered in its own
    /// transaction (SQLite).
    async fn number_events(&self) -> Result<()> {
        Ok(())
    }

    /// Where this store keeps asset bytes.
    fn blobs(&self) -> &BlobStore;

    /// Whether the store can serve reads and writes.
    async fn ready(&self) -> Result<()>;

    /// Whether other processes write the same records (several servers on one database):
    /// what this process caches of them (API keys) must then be read again now and then.
    fn shared(&self) -> bool;

    /// The right to run cleanup and other maintenance: `Some` while this server holds the
    /// maintenance term (on PostgreSQL, a lease row renewed every second and taken over by
    /// another server within 6 s of its holder's death), `None` while another server
    /// does. One process owns a SQLite store, so it is always granted there.
    async fn maintenance(&self) -> Result<Option<MaintenanceGuard>>;

    /// The servers on this store as it sees them: one (this process) on SQLite.
    async fn cluster(&self) -> Result<Cluster>;

    /// How many times this server has found its database unreachable (a connection lost,
    /// a beat that failed): when it changes, the engine gives the restart grace before it
    /// decides anything about leases, since workers could not heartbeat meanwhile. Always
    /// 0 on SQLite, which is part of this process.
    fn outages(&self) -> u64;

    /// Milliseconds to add to this server's clock to read the store's (the database's)
    /// clock, as last measured; changed only when a measurement differs from it by more
    /// than a small tolerance (noise). Always 0 on SQLite.
    fn clock_offset_ms(&self) -> i64;
}

/// Answered by [`Store::maintenance`] to the server whose turn it is to run cleanup.
pub struct MaintenanceGuard {
    held: Box<dyn Fn() -> bool + Send + Sync>,
    term: Option<(String, u64)>,
}

impl MaintenanceGuard {
    /// A turn that lasts as long as the guard (one process owns the store).
    pub fn always() -> MaintenanceGuard {
        MaintenanceGuard {
            held: Box::new(|| true),
            term: None,
        }
    }

    /// A turn that lasts while `held` answers true: `term` of a lease `holder` holds,
    /// which may expire.
    pub fn leased(
        holder: String,
        term: u64,
        held: impl Fn() -> bool + Send + Sync + 'static,
    ) -> MaintenanceGuard {
        MaintenanceGuard {
            held: Box::new(held),
            term: Some((holder, term)),
        }
    }

    /// The lease's holder and term, which a maintenance transaction checks and keeps with
    /// `MaintenanceRows::hold_term` (`None` on a store one process owns).
    pub fn term(&self) -> Option<(String, u64)> {
        self.term.clone()
    }

    /// Whether the turn is still this server's: maintenance checks before each step and
    /// stops when it is not.
    pub fn held(&self) -> bool {
        (self.held)()
    }
}

/// How often each server on a shared store records that it is running (its beat).
pub const BEAT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// This machine's wall clock (the engine's `SystemClock` reads it too).
pub fn wall_clock() -> Timestamp {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    Timestamp(ms)
}

/// The servers sharing a store (`GET /admin/cluster`).
#[derive(Debug, Clone, PartialEq)]
pub struct Cluster {
    /// This server's id.
    pub node: String,
    /// The store's clock now (the database's, on PostgreSQL).
    pub now: Timestamp,
    /// Servers seen in the last 10 minutes, this one included.
    pub nodes: Vec<Node>,
    /// Who holds the maintenance term (`None` on SQLite, where there is no term).
    pub maintenance: Option<MaintenanceTerm>,
    /// Events committed but not numbered yet (not yet visible to event streams).
    pub unsequenced_events: u64,
    /// How long the oldest of those has waited, in ms.
    pub oldest_unsequenced_ms: u64,
}

impl Cluster {
    /// The server whose maintenance term has not lapsed: the one running cleanup (this
    /// one on a store with no lease), or `None` until the next beat takes a lapsed term.
    pub fn maintenance_holder(&self) -> Option<&str> {
        match &self.maintenance {
            Some(term) => (term.expires_at > self.now).then_some(term.holder.as_str()),
            None => Some(self.node.as_str()),
        }
    }
}

/// One server, as its beats left it.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// Its id (new at each start).
    pub id: String,
    /// Its Lifeboat version.
    pub version: String,
    /// When it started.
    pub started_at: Timestamp,
    /// Its last beat.
    pub last_seen: Timestamp,
    /// Whether it beat recently enough to count as running.
    pub alive: bool,
    /// How far its clock was ahead of the store's at its last beat (negative: behind).
    pub clock_skew_ms: i64,
}

/// The maintenance lease.
#[derive(Debug, Clone, PartialEq)]
pub struct MaintenanceTerm {
    /// The server holding it.
    pub holder: String,
    /// The term: one more each time the lease changes hands (or lapses and is taken again).
    pub term: u64,
    /// When it lapses unless renewed.
    pub expires_at: Timestamp,
}

/// Queues `job` for a backend's writer thread and waits for the answer it sends on
/// `answer` (both backends' writers are fed this way).
pub(crate) async fn queue_and_wait<J, T>(
    queue: &tokio::sync::mpsc::Sender<J>,
    job: J,
    answer: tokio::sync::oneshot::Receiver<Result<T>>,
) -> Result<T> {
    queue
        .send(job)
        .await
        .map_err(|_| Error::Unavailable("the writer has stopped".to_owned()))?;
    answer
        .await
        .map_err(|_| Error::Unavailable("the writer stopped before answering".to_owned()))?
}
