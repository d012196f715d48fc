//! Rows of projects, their revisions, and schemas.

use lifeboat_core::{Chain, Id, Project, RevisionRetention, Saved, SchemaRef, TenantId, Timestamp};
use serde_json::Value;

use crate::{Error, ProjectInfo, Result, RevisionInfo, RowId};

/// A stored project. `project.state` is `Null` until [`ProjectRow::parse_state`]: reading
/// an old revision or deleting never needs the (possibly large) current state parsed.
#[derive(Debug, Clone)]
pub struct ProjectRow {
    /// Its key in this transaction.
    pub row: RowId,
    /// The project (deleted ones too: `deleted_at` is set).
    pub project: Project,
    /// The deltas stored since its newest snapshot.
    pub chain: Chain,
    /// The current state as stored (serialized JSON).
    pub state_json: String,
}

impl ProjectRow {
    /// Parses the current state into `project.state`.
    pub fn parse_state(&mut self) -> Result<()> {
        self.project.state = serde_json::from_str(&self.state_json).map_err(|e| {
            Error::Internal(format!(
                "project {}: stored state does not parse: {e}",
                self.project.id
            ))
        })?;
        Ok(())
    }
}

/// Projects, revisions, schemas.
pub trait ProjectRows {
    /// A project (deleted ones too), its state not yet parsed.
    fn project(&mut self, tenant: &TenantId, id: &Id) -> Result<Option<ProjectRow>>;
    /// Writes the project row (`row` is `None` for a new project) and its new revision.
    fn write_project(
        &mut self,
        tenant: &TenantId,
        row: Option<RowId>,
        saved: &Saved,
        chain: Chain,
    ) -> Result<RowId>;
    /// Deletes whole stretches of revisions before the snapshot retention still needs;
    /// answers how many.
    fn prune_revisions(
        &mut self,
        row: RowId,
        newest: u64,
        retention: RevisionRetention,
        now: Timestamp,
    ) -> Result<u64>;
    /// The state at `revision`, rebuilt from its snapshot and the deltas after it.
    fn state_at(&mut self, row: RowId, id: &Id, revision: u64) -> Result<(Value, RevisionInfo)>;
    /// Soft-deletes a project.
    fn mark_project_deleted(&mut self, row: RowId, now: Timestamp) -> Result<()>;
    /// Live projects, newest first, below the position `before`; at most `limit`.
    fn projects_page(
        &mut self,
        tenant: &TenantId,
        before: i64,
        limit: u32,
    ) -> Result<Vec<(i64, ProjectInfo)>>;
    /// A project's revisions, newest first, below `before`; at most `limit`.
    fn revisions_page(
        &mut self,
        row: RowId,
        before: i64,
        limit: u32,
    ) -> Result<Vec<(i64, RevisionInfo)>>;
    /// A registered schema's body.
    fn schema(&mut self, tenant: &TenantId, schema: &SchemaRef) -> Result<Option<Value>>;
    /// Registers a schema version (which must not be registered yet).
    fn insert_schema(
        &mut self,
        tenant: &TenantId,
        schema: &SchemaRef,
        body: &Value,
        now: Timestamp,
    ) -> Result<()>;
}
