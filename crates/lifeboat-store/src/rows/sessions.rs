//! Rows of sessions, their checkpoints, crashes and recoveries; the event log; and the
//! stored outcomes of idempotent writes.

use lifeboat_core::{Checkpoint, Crash, Id, RecoveryOption, Session, TenantId, Timestamp};
use serde_json::Value;

use crate::{Event, EventFilter, Gauges, IdempotencyKey, Result, SessionFilter, Stats};

/// A row's key in its table, for the rest of the transaction (a session's, a project's).
pub type RowId = i64;

/// Sessions and what hangs off them.
pub trait SessionRows {
    /// A session by tenant and id, as stored (not observed).
    fn session(&mut self, tenant: &TenantId, id: &Id) -> Result<Option<(RowId, Session)>>;
    /// Stores a new session; its id must be free in the tenant.
    fn insert_session(&mut self, tenant: &TenantId, session: &Session) -> Result<RowId>;
    /// Writes every field of a session that changes over its life.
    fn update_session(&mut self, row: RowId, session: &Session) -> Result<()>;
    /// Moves a lease forward, never back, if the session is still `attempt`'s and active:
    /// what an early-acknowledged heartbeat wrote, written again.
    fn extend_lease(
        &mut self,
        row: RowId,
        attempt: u32,
        heartbeat_at: Option<Timestamp>,
        lease: Option<Timestamp>,
        updated_at: Timestamp,
    ) -> Result<()>;
    /// Records a crash for `/stats` (one per attempt; a refined type replaces the first).
    fn record_crash(&mut self, tenant: &TenantId, row: RowId, crash: &Crash) -> Result<()>;
    /// Records a recovery: `attempt` is the attempt it started.
    fn record_recovery(
        &mut self,
        tenant: &TenantId,
        row: RowId,
        attempt: u32,
        option: RecoveryOption,
        now: Timestamp,
    ) -> Result<()>;
    /// Fills in the outcome (`succeeded`, `failed`) of the recovery that started `attempt`,
    /// if it has none yet.
    fn settle_recovery(&mut self, row: RowId, attempt: u32, outcome: &str) -> Result<()>;
    /// Active sessions (of every tenant) whose lease passed at `now` or whose stall is due,
    /// at most `limit`.
    fn due_sessions(
        &mut self,
        now: Timestamp,
        limit: u32,
    ) -> Result<Vec<(TenantId, RowId, Session)>>;
    /// Whether any active session's lease has passed at `now`.
    fn any_lease_passed(&mut self, now: Timestamp) -> Result<bool>;
    /// Every active session, of every tenant.
    fn active_sessions(&mut self) -> Result<Vec<(TenantId, RowId, Session)>>;
    /// When the newest event was recorded, if there is one.
    fn newest_event_at(&mut self) -> Result<Option<Timestamp>>;
    /// A tenant's sessions below the position `before`, newest first, filtered (statuses
    /// as observed at `now`); at most `limit` rows, each with its position.
    fn sessions_page(
        &mut self,
        tenant: &TenantId,
        filter: &SessionFilter,
        before: i64,
        limit: u32,
        now: Timestamp,
    ) -> Result<Vec<(i64, Session)>>;
    /// Recoverable sessions (observed at `now`) below the position `before`, newest first;
    /// at most `limit` rows (the row id is the position).
    fn recoverable_page(
        &mut self,
        tenant: &TenantId,
        project: Option<&Id>,
        before: i64,
        limit: u32,
        now: Timestamp,
    ) -> Result<Vec<(RowId, Session)>>;
    /// Counts of one tenant (statuses as observed at `now`).
    fn stats(&mut self, tenant: &TenantId, now: Timestamp) -> Result<Stats>;
    /// Counts of every tenant, from counters (no table scan).
    fn gauges(&mut self, now: Timestamp) -> Result<Gauges>;

    /// Stores a checkpoint of session `row`, with its pins.
    fn insert_checkpoint(&mut self, row: RowId, checkpoint: &Checkpoint) -> Result<()>;
    /// Deletes the prunable checkpoints (kinds not kept for life) beyond the newest
    /// `retention`, with their pins.
    fn prune_checkpoints(&mut self, row: RowId, retention: u32) -> Result<()>;
    /// A session's checkpoints in seq order, `valid` recomputed.
    fn checkpoints(&mut self, row: RowId) -> Result<Vec<Checkpoint>>;
    /// Up to `limit` checkpoints with a seq after `after`, in seq order.
    fn checkpoints_after(&mut self, row: RowId, after: u64, limit: u32) -> Result<Vec<Checkpoint>>;
    /// Checkpoint `seq`, if stored.
    fn checkpoint(&mut self, row: RowId, seq: u64) -> Result<Option<Checkpoint>>;
    /// The newest checkpoint with a seq below `before`.
    fn checkpoint_before(&mut self, row: RowId, before: u64) -> Result<Option<Checkpoint>>;
    /// Marks checkpoint `seq` invalid for good.
    fn quarantine(&mut self, row: RowId, seq: u64) -> Result<()>;
}

/// What an event is about.
#[derive(Debug, Clone, Copy, Default)]
pub struct Subject<'a> {
    /// The session, if any.
    pub session_id: Option<&'a str>,
    /// The project (of the session, or saved).
    pub project_id: Option<&'a str>,
}

/// The event log.
pub trait EventRows {
    /// Records an event in this transaction (and trims the log to its window).
    fn record_event(
        &mut self,
        tenant: &TenantId,
        kind: &str,
        subject: Subject<'_>,
        data: &Value,
        now: Timestamp,
    ) -> Result<()>;
    /// Events after `after` in order, at most `limit`: of one tenant and filter, or of all.
    fn events(
        &mut self,
        scope: Option<(&TenantId, &EventFilter)>,
        after: i64,
        limit: u32,
    ) -> Result<Vec<Event>>;
    /// The newest event's position (0 if none).
    fn newest_event(&mut self) -> Result<i64>;
}

/// Outcomes of idempotent writes, stored with the write (see `Idempotency-Key`).
pub trait OutcomeRows {
    /// The outcome stored for `key` after `fresh_after`, with its request's fingerprint.
    fn outcome(
        &mut self,
        tenant: &TenantId,
        key: &IdempotencyKey,
        fresh_after: Timestamp,
    ) -> Result<Option<(String, Vec<u8>)>>;
    /// Stores the outcome of the write `key` named.
    fn store_outcome(
        &mut self,
        tenant: &TenantId,
        key: &IdempotencyKey,
        outcome: &[u8],
        now: Timestamp,
    ) -> Result<()>;
}
