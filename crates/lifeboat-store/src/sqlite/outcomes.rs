//! Outcomes of idempotent writes, stored in the write's own transaction.

use lifeboat_core::{TenantId, Timestamp};
use rusqlite::{Connection, OptionalExtension, params};

use super::translate;
use crate::{IdempotencyKey, Result};

/// The outcome stored for `key` after `fresh_after`, with its request's fingerprint.
pub(super) fn find(
    conn: &Connection,
    tenant: &TenantId,
    key: &IdempotencyKey,
    fresh_after: Timestamp,
) -> Result<Option<(String, Vec<u8>)>> {
    conn.prepare_cached(
        "SELECT fingerprint, outcome FROM outcomes \
         WHERE tenant = ?1 AND route = ?2 AND key = ?3 AND created_at > ?4",
    )
    .map_err(translate)?
    .query_row(
        params![tenant.as_str(), key.route, key.key, fresh_after.0],
        |row| Ok((row.get(0)?, row.get(1)?)),
    )
    .optional()
    .map_err(translate)
}

/// Stores an outcome (replacing an expired one of the same key).
pub(super) fn store(
    conn: &Connection,
    tenant: &TenantId,
    key: &IdempotencyKey,
    outcome: &[u8],
    now: Timestamp,
) -> Result<()> {
    conn.prepare_cached(
        "INSERT OR REPLACE INTO outcomes (tenant, route, key, fingerprint, outcome, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )
    .map_err(translate)?
    .execute(params![
        tenant.as_str(),
        key.route,
        key.key,
        key.fingerprint,
        outcome,
        now.0,
    ])
    .map_err(translate)?;
    Ok(())
}
