//! The row traits of [`crate::rows`] over one PostgreSQL transaction: a write job's or a
//! read job's. Each method is a call into the module that owns that table's SQL.

use std::collections::HashSet;

use lifeboat_core::{
    Asset, AssetName, AssetStatus, Chain, Checkpoint, Crash, FileVersion, Id, Owner,
    RecoveryOption, RevisionRetention, Saved, SchemaRef, Session, Status, TenantId, Timestamp,
};
use serde_json::Value;

use super::conn::PgConn;
use super::{assets, cleanup, events, files, keys, outcomes, projects, rows, sessions, transfer};
use crate::rows::{
    AssetRows, EventRows, KeyRows, MaintenanceRows, OutcomeRows, ProjectRow, ProjectRows,
    SessionRows, Subject,
};
use crate::{
    ApiKey, AuditEntry, CleanupCursor, CleanupReport, CleanupRules, Event, EventFilter, FileRef,
    Gauges, IdempotencyKey, ProjectInfo, ProjectToken, Result, RevisionInfo, RowId, Selection,
    SessionFilter, SessionToken, Stats, StoreCheck, TransferCounts,
};

/// Row access inside the transaction the store opened.
pub(super) struct PgTx<'c>(pub(super) &'c PgConn<'c>);

impl SessionRows for PgTx<'_> {
    fn session(&mut self, tenant: &TenantId, id: &Id) -> Result<Option<(RowId, Session)>> {
        rows::find_session(self.0, tenant, id)
    }

    fn insert_session(&mut self, tenant: &TenantId, session: &Session) -> Result<RowId> {
        rows::insert_session(self.0, tenant, session)
    }

    fn update_session(&mut self, row: RowId, session: &Session) -> Result<()> {
        rows::update_session(self.0, row, session)
    }

    fn extend_lease(
        &mut self,
        row: RowId,
        attempt: u32,
        heartbeat_at: Option<Timestamp>,
        lease: Option<Timestamp>,
        updated_at: Timestamp,
    ) -> Result<()> {
        sessions::extend_lease(self.0, row, attempt, heartbeat_at, lease, updated_at)
    }

    fn record_crash(&mut self, tenant: &TenantId, row: RowId, crash: &Crash) -> Result<()> {
        sessions::record_crash(self.0, tenant, row, crash)
    }

    fn record_recovery(
        &mut self,
        tenant: &TenantId,
        row: RowId,
        attempt: u32,
        option: RecoveryOption,
        now: Timestamp,
    ) -> Result<()> {
        sessions::record_recovery(self.0, tenant, row, attempt, option, now)
    }

    fn settle_recovery(&mut self, row: RowId, attempt: u32, outcome: &str) -> Result<()> {
        sessions::settle_recovery(self.0, row, attempt, outcome)
    }

    fn due_sessions(
        &mut self,
        now: Timestamp,
        limit: u32,
    ) -> Result<Vec<(TenantId, RowId, Session)>> {
        sessions::due(self.0, now, limit)
    }

    fn any_lease_passed(&mut self, now: Timestamp) -> Result<bool> {
        sessions::any_lease_passed(self.0, now)
    }

    fn active_sessions(&mut self) -> Result<Vec<(TenantId, RowId, Session)>> {
        sessions::active(self.0)
    }

    fn newest_event_at(&mut self) -> Result<Option<Timestamp>> {
        sessions::newest_event_at(self.0)
    }

    fn sessions_page(
        &mut self,
        tenant: &TenantId,
        filter: &SessionFilter,
        before: i64,
        limit: u32,
        now: Timestamp,
    ) -> Result<Vec<(i64, Session)>> {
        sessions::page(self.0, tenant, filter, before, limit, now)
    }

    fn recoverable_page(
        &mut self,
        tenant: &TenantId,
        project: Option<&Id>,
        before: i64,
        limit: u32,
        now: Timestamp,
    ) -> Result<Vec<(RowId, Session)>> {
        sessions::recoverable(self.0, tenant, project, before, limit, now)
    }

    fn stats(&mut self, tenant: &TenantId, now: Timestamp) -> Result<Stats> {
        sessions::stats(self.0, tenant, now)
    }

    fn gauges(&mut self, now: Timestamp) -> Result<Gauges> {
        sessions::gauges(self.0, now)
    }

    fn insert_checkpoint(&mut self, row: RowId, checkpoint: &Checkpoint) -> Result<()> {
        rows::insert_checkpoint(self.0, row, checkpoint)
    }

    fn prune_checkpoints(&mut self, row: RowId, retention: u32) -> Result<()> {
        rows::prune_checkpoints(self.0, row, retention)
    }

    fn checkpoints(&mut self, row: RowId) -> Result<Vec<Checkpoint>> {
        rows::all_checkpoints(self.0, row)
    }

    fn checkpoints_after(&mut self, row: RowId, after: u64, limit: u32) -> Result<Vec<Checkpoint>> {
        rows::checkpoints_after(self.0, row, after, limit)
    }

    fn checkpoint(&mut self, row: RowId, seq: u64) -> Result<Option<Checkpoint>> {
        rows::checkpoint_at(self.0, row, seq)
    }

    fn checkpoint_before(&mut self, row: RowId, before: u64) -> Result<Option<Checkpoint>> {
        rows::checkpoint_before(self.0, row, i64::try_from(before).unwrap_or(i64::MAX))
    }

    fn quarantine(&mut self, row: RowId, seq: u64) -> Result<()> {
        rows::quarantine(self.0, row, seq)
    }
}

impl EventRows for PgTx<'_> {
    fn record_event(
        &mut self,
        tenant: &TenantId,
        kind: &str,
        subject: Subject<'_>,
        data: &Value,
        now: Timestamp,
    ) -> Result<()> {
        events::record(self.0, tenant, kind, subject, data, now)
    }

    fn events(
        &mut self,
        scope: Option<(&TenantId, &EventFilter)>,
        after: i64,
        limit: u32,
    ) -> Result<Vec<Event>> {
        events::read(self.0, scope, after, limit)
    }

    fn newest_event(&mut self) -> Result<i64> {
        events::newest(self.0)
    }
}

impl OutcomeRows for PgTx<'_> {
    fn outcome(
        &mut self,
        tenant: &TenantId,
        key: &IdempotencyKey,
        fresh_after: Timestamp,
    ) -> Result<Option<(String, Vec<u8>)>> {
        outcomes::find(self.0, tenant, key, fresh_after)
    }

    fn store_outcome(
        &mut self,
        tenant: &TenantId,
        key: &IdempotencyKey,
        outcome: &[u8],
        now: Timestamp,
    ) -> Result<()> {
        outcomes::store(self.0, tenant, key, outcome, now)
    }
}

impl ProjectRows for PgTx<'_> {
    fn project(&mut self, tenant: &TenantId, id: &Id) -> Result<Option<ProjectRow>> {
        projects::load(self.0, tenant, id)
    }

    fn write_project(
        &mut self,
        tenant: &TenantId,
        row: Option<RowId>,
        saved: &Saved,
        chain: Chain,
    ) -> Result<RowId> {
        projects::write(self.0, tenant, row, saved, chain)
    }

    fn prune_revisions(
        &mut self,
        row: RowId,
        newest: u64,
        retention: RevisionRetention,
        now: Timestamp,
    ) -> Result<u64> {
        projects::prune(self.0, row, newest, retention, now)
    }

    fn state_at(&mut self, row: RowId, id: &Id, revision: u64) -> Result<(Value, RevisionInfo)> {
        projects::state_at(self.0, row, id, revision)
    }

    fn mark_project_deleted(&mut self, row: RowId, now: Timestamp) -> Result<()> {
        projects::mark_deleted(self.0, row, now)
    }

    fn projects_page(
        &mut self,
        tenant: &TenantId,
        before: i64,
        limit: u32,
    ) -> Result<Vec<(i64, ProjectInfo)>> {
        projects::list(self.0, tenant, before, limit)
    }

    fn revisions_page(
        &mut self,
        row: RowId,
        before: i64,
        limit: u32,
    ) -> Result<Vec<(i64, RevisionInfo)>> {
        projects::revisions(self.0, row, before, limit)
    }

    fn schema(&mut self, tenant: &TenantId, schema: &SchemaRef) -> Result<Option<Value>> {
        projects::schema_body(self.0, tenant, schema)
    }

    fn insert_schema(
        &mut self,
        tenant: &TenantId,
        schema: &SchemaRef,
        body: &Value,
        now: Timestamp,
    ) -> Result<()> {
        projects::insert_schema(self.0, tenant, schema, body, now)
    }
}

impl AssetRows for PgTx<'_> {
    fn owner_exists(&mut self, tenant: &TenantId, owner: &Owner) -> Result<bool> {
        assets::owner_exists(self.0, tenant, owner)
    }

    fn session_attempt(&mut self, tenant: &TenantId, id: &Id) -> Result<Option<u32>> {
        assets::session_attempt(self.0, tenant, id)
    }

    fn asset(&mut self, tenant: &TenantId, owner: &Owner, name: &str) -> Result<Option<Asset>> {
        assets::find(self.0, tenant, owner, name)
    }

    fn assets(&mut self, tenant: &TenantId, owner: &Owner) -> Result<Vec<Asset>> {
        assets::all(self.0, tenant, owner)
    }

    fn assets_after(
        &mut self,
        tenant: &TenantId,
        owner: &Owner,
        after: &str,
        limit: u32,
    ) -> Result<Vec<Asset>> {
        assets::page(self.0, tenant, owner, after, limit)
    }

    fn all_assets(&mut self) -> Result<Vec<(TenantId, Owner, Asset)>> {
        assets::everything(self.0)
    }

    fn save_asset(&mut self, tenant: &TenantId, owner: &Owner, asset: &Asset) -> Result<bool> {
        assets::save(self.0, tenant, owner, asset)
    }

    fn delete_asset(&mut self, tenant: &TenantId, owner: &Owner, name: &str) -> Result<bool> {
        assets::delete(self.0, tenant, owner, name)
    }

    fn set_asset_status(
        &mut self,
        tenant: &TenantId,
        owner: &Owner,
        name: &AssetName,
        status: AssetStatus,
        at: Timestamp,
    ) -> Result<()> {
        assets::set_status(self.0, tenant, owner, name.as_str(), status, at)
    }

    fn damaged(&mut self, versions: &[FileVersion]) -> Result<HashSet<FileVersion>> {
        files::damaged(self.0, versions)
    }

    fn record_damage(
        &mut self,
        version: &FileVersion,
        damaged: bool,
        now: Timestamp,
    ) -> Result<()> {
        files::record(self.0, version, damaged, now)
    }

    fn heal_blob(&mut self, sha256: &str, now: Timestamp) -> Result<()> {
        files::heal_blob(self.0, sha256, now)
    }

    fn file_named(&mut self, file: &FileRef, purged: Option<(i64, i64)>) -> Result<bool> {
        files::referenced(self.0, file, purged)
    }
}

impl KeyRows for PgTx<'_> {
    fn insert_key(&mut self, key: &ApiKey) -> Result<()> {
        keys::insert(self.0, key)
    }

    fn key(&mut self, id: &str) -> Result<Option<ApiKey>> {
        keys::find(self.0, id)
    }

    fn keys_after(
        &mut self,
        tenant: Option<&TenantId>,
        after: &str,
        limit: u32,
    ) -> Result<Vec<ApiKey>> {
        keys::list(self.0, tenant, after, limit)
    }

    fn revoke_key(&mut self, id: &str, now: Timestamp) -> Result<()> {
        keys::revoke(self.0, id, now)
    }

    fn insert_session_token(&mut self, row: RowId, token: &SessionToken) -> Result<()> {
        keys::insert_session_token(self.0, row, token)
    }

    fn session_token(&mut self, id: &str) -> Result<Option<(SessionToken, Status)>> {
        keys::find_session_token(self.0, id)
    }

    fn insert_project_token(&mut self, token: &ProjectToken) -> Result<()> {
        keys::insert_project_token(self.0, token)
    }

    fn project_token(&mut self, id: &str) -> Result<Option<ProjectToken>> {
        keys::find_project_token(self.0, id)
    }

    fn revoke_project_token(&mut self, id: &str, now: Timestamp) -> Result<()> {
        keys::revoke_project_token(self.0, id, now)
    }

    fn purge_project_tokens(&mut self, before: Timestamp, limit: u32) -> Result<u64> {
        keys::purge_project_tokens(self.0, before, limit)
    }

    fn insert_audit(&mut self, entry: &AuditEntry) -> Result<()> {
        keys::audit(self.0, entry)
    }

    fn audit_before(
        &mut self,
        tenant: Option<&TenantId>,
        before: i64,
        limit: u32,
    ) -> Result<Vec<(i64, AuditEntry)>> {
        keys::audit_trail(self.0, tenant, before, limit)
    }
}

impl MaintenanceRows for PgTx<'_> {
    fn purge_step(
        &mut self,
        rules: CleanupRules,
        retention: RevisionRetention,
        now: Timestamp,
        cursor: CleanupCursor,
    ) -> Result<(CleanupReport, Option<CleanupCursor>)> {
        cleanup::records_step(self.0, rules, retention, now, cursor)
    }

    fn hold_term(&mut self, holder: &str, term: u64) -> Result<bool> {
        super::cluster::hold_term(self.0, holder, term)
    }

    fn check(&mut self) -> Result<StoreCheck> {
        cleanup::check(self.0)
    }

    fn export(
        &mut self,
        tenant: &TenantId,
        selection: &Selection,
    ) -> Result<(Value, TransferCounts)> {
        transfer::export(self.0, tenant, selection)
    }

    fn import(&mut self, tenant: &TenantId, records: &Value) -> Result<TransferCounts> {
        transfer::import(self.0, tenant, records)
    }
}
