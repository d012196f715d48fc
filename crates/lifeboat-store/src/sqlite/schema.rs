//! Versioned migrations: each file runs once, in order, inside one transaction with the
//! bump of `PRAGMA user_version`.

use rusqlite::Connection;

use super::translate;
use crate::Error;

/// Migrations in order; a migration's version is its index + 1. Never edit a released one.
const MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/sqlite/0001_sessions_checkpoints.sql"),
    include_str!("../../migrations/sqlite/0002_projects_schemas_idempotency.sql"),
    include_str!("../../migrations/sqlite/0003_assets.sql"),
    include_str!("../../migrations/sqlite/0004_api_keys.sql"),
    include_str!("../../migrations/sqlite/0005_audit.sql"),
    include_str!("../../migrations/sqlite/0006_idempotency_keys_in_time_order.sql"),
    include_str!("../../migrations/sqlite/0007_fencing_pins_gauges.sql"),
    include_str!("../../migrations/sqlite/0008_outcomes.sql"),
    include_str!("../../migrations/sqlite/0009_project_tokens.sql"),
    include_str!("../../migrations/sqlite/0010_purged_counts.sql"),
];

/// Brings the schema up to date; refuses a database written by a newer Lifeboat.
pub(super) fn migrate(conn: &mut Connection) -> Result<(), Error> {
    let current: usize = conn
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .map_err(translate)?;
    if current > MIGRATIONS.len() {
        return Err(Error::Unavailable(format!(
            "the database has schema version {current}, newer than this Lifeboat knows ({}); upgrade Lifeboat",
            MIGRATIONS.len()
        )));
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(current) {
        let tx = conn.transaction().map_err(translate)?;
        tx.execute_batch(sql).map_err(translate)?;
        tx.pragma_update(None, "user_version", index + 1)
            .map_err(translate)?;
        tx.commit().map_err(translate)?;
        tracing::info!(version = index + 1, "applied migration");
    }
    Ok(())
}
