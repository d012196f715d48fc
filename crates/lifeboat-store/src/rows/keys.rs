//! Rows of API keys, session and project tokens, and the audit trail.

use lifeboat_core::{Status, TenantId, Timestamp};

use crate::{ApiKey, AuditEntry, ProjectToken, Result, RowId, SessionToken};

/// Keys, tokens, audit.
pub trait KeyRows {
    /// Stores a new API key.
    fn insert_key(&mut self, key: &ApiKey) -> Result<()>;
    /// One key by id (revoked ones too).
    fn key(&mut self, id: &str) -> Result<Option<ApiKey>>;
    /// Up to `limit` keys (of `tenant`, or of all) with an id after `after`, by id.
    fn keys_after(
        &mut self,
        tenant: Option<&TenantId>,
        after: &str,
        limit: u32,
    ) -> Result<Vec<ApiKey>>;
    /// Marks a key revoked at `now` (if it is not yet).
    fn revoke_key(&mut self, id: &str, now: Timestamp) -> Result<()>;
    /// Stores a session token of session `row`.
    fn insert_session_token(&mut self, row: RowId, token: &SessionToken) -> Result<()>;
    /// A session token by id, with its session's stored status.
    fn session_token(&mut self, id: &str) -> Result<Option<(SessionToken, Status)>>;
    /// Stores a new project token.
    fn insert_project_token(&mut self, token: &ProjectToken) -> Result<()>;
    /// A project token by id (revoked and expired ones too).
    fn project_token(&mut self, id: &str) -> Result<Option<ProjectToken>>;
    /// Marks a project token revoked at `now` (if it is not yet).
    fn revoke_project_token(&mut self, id: &str, now: Timestamp) -> Result<()>;
    /// Deletes up to `limit` project tokens that expired before `before`; answers how many.
    fn purge_project_tokens(&mut self, before: Timestamp, limit: u32) -> Result<u64>;
    /// Appends to the audit trail.
    fn insert_audit(&mut self, entry: &AuditEntry) -> Result<()>;
    /// The audit trail (of one tenant, or of all), newest first, below `before`.
    fn audit_before(
        &mut self,
        tenant: Option<&TenantId>,
        before: i64,
        limit: u32,
    ) -> Result<Vec<(i64, AuditEntry)>>;
}
