//! Outcomes of idempotent writes, stored in the write's own transaction.

use lifeboat_core::{TenantId, Timestamp};

use super::conn::{PgConn, column};
use crate::{IdempotencyKey, Result};

/// The outcome stored for `key` after `fresh_after`, with its request's fingerprint.
///
/// In a write, first locks the key until the transaction ends, so that two nodes racing
/// one key run one after the other: the second finds the first's committed outcome.
pub(super) fn find(
    conn: &PgConn<'_>,
    tenant: &TenantId,
    key: &IdempotencyKey,
    fresh_after: Timestamp,
) -> Result<Option<(String, Vec<u8>)>> {
    if !conn.for_update().is_empty() {
        conn.execute(
            "SELECT pg_advisory_xact_lock(\
             hashtextextended($1::TEXT || ' ' || $2::TEXT || ' ' || $3::TEXT, 0))",
            &[&tenant.as_str(), &key.key, &key.route],
        )?;
    }
    conn.query_opt(
        "SELECT fingerprint, outcome FROM outcomes \
         WHERE tenant = $1 AND route = $2 AND key = $3 AND created_at > $4",
        &[&tenant.as_str(), &key.route, &key.key, &fresh_after.0],
    )?
    .map(|row| Ok((column(&row, 0)?, column(&row, 1)?)))
    .transpose()
}

/// Stores an outcome (replacing an expired one of the same key).
pub(super) fn store(
    conn: &PgConn<'_>,
    tenant: &TenantId,
    key: &IdempotencyKey,
    outcome: &[u8],
    now: Timestamp,
) -> Result<()> {
    conn.write(
        "INSERT INTO outcomes (tenant, route, key, fingerprint, outcome, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (tenant, key, route) DO UPDATE SET fingerprint = EXCLUDED.fingerprint, \
         outcome = EXCLUDED.outcome, created_at = EXCLUDED.created_at",
        &[
            &tenant.as_str(),
            &key.route,
            &key.key,
            &key.fingerprint,
            &outcome,
            &now.0,
        ],
    )?;
    Ok(())
}
