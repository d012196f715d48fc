//! Whole-store row work: cleanup's purge in steps, the integrity check, export and import.

use lifeboat_core::{RevisionRetention, TenantId, Timestamp};
use serde_json::Value;

use crate::{
    CleanupCursor, CleanupReport, CleanupRules, Result, Selection, StoreCheck, TransferCounts,
};

/// Maintenance of every tenant's rows.
pub trait MaintenanceRows {
    /// Deletes one bounded step of what `rules` make eligible, from `cursor` on: old
    /// finished sessions with their checkpoints, pins and asset records, old deleted projects
    /// with their revisions and asset records, revisions beyond retention, expired
    /// idempotency outcomes. Answers what it deleted and where the next step starts.
    fn purge_step(
        &mut self,
        rules: CleanupRules,
        retention: RevisionRetention,
        now: Timestamp,
        cursor: CleanupCursor,
    ) -> Result<(CleanupReport, Option<CleanupCursor>)>;
    /// Whether `term` of the maintenance lease is still held by `holder` and unexpired,
    /// and if so, keeps it so until this transaction ends (on PostgreSQL the lease row is
    /// locked `FOR SHARE`, so no other server takes the next term meanwhile). A store one
    /// process owns has no lease: always true.
    fn hold_term(&mut self, holder: &str, term: u64) -> Result<bool>;
    /// The backend's own integrity check, every checkpoint's hash, per-session counters and
    /// the rows derived from others (pins, counters).
    fn check(&mut self) -> Result<StoreCheck>;
    /// The records of `selection` as rows without row ids or tenant (see
    /// `Lifeboat::export`).
    fn export(
        &mut self,
        tenant: &TenantId,
        selection: &Selection,
    ) -> Result<(Value, TransferCounts)>;
    /// Adds exported records to `tenant`: an id that is taken is `AlreadyExists`; rows that
    /// do not read back as valid records are `InvalidArchive`. The caller's transaction makes
    /// it all or nothing.
    fn import(&mut self, tenant: &TenantId, records: &Value) -> Result<TransferCounts>;
}
