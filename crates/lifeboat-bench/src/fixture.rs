//! A large store built straight in SQL: the fastest way to a million sessions.
//!
//! It opens the data dir through `lifeboat` first, so the schema comes from the real
//! migrations, then fills the tables in bulk. The column lists below must follow
//! `crates/lifeboat-store/migrations/sqlite`; the benchmark fails loudly if they do not.

use std::path::Path;

use lifeboat::{Config, Lifeboat};
use rusqlite::Connection;

/// `sessions` in all: `recoverable` failed ones with two checkpoints each, `active` ones
/// with a live lease (the restart grace's work at start), the rest completed.
pub(crate) fn build(
    dir: &Path,
    sessions: u64,
    recoverable: u64,
    active: u64,
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let lifeboat = Lifeboat::open(Config::new(dir)).await?;
        drop(lifeboat);
        anyhow::Ok(())
    })?;
    let conn = Connection::open(dir.join("lifeboat.sqlite3"))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64;
    let completed = sessions.saturating_sub(recoverable + active);
    conn.execute_batch("BEGIN")?;
    // Completed sessions first (older), then the recoverable ones (newest), interleaved
    // enough that the recovery query must skip over completed rows through its index.
    conn.execute(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?1)
         INSERT INTO sessions (tenant, id, kind, status, attempt, max_attempts,
             heartbeat_timeout_ms, checkpoint_retention, created_at, updated_at,
             last_heartbeat_at, progress_changed_at, completed_at)
         SELECT 'default', 'done-' || i, 'bench', 'completed', 1, 10, 30000, 5,
             ?2 - 86400000 + i, ?2, ?2, ?2, ?2 FROM n",
        rusqlite::params![completed, now],
    )?;
    conn.execute(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?1)
         INSERT INTO sessions (tenant, id, kind, status, attempt, max_attempts,
             heartbeat_timeout_ms, checkpoint_retention, created_at, updated_at,
             last_heartbeat_at, progress_changed_at, error, crash_type, crash_detected_at,
             crash_attempt, crash_work_lost_ms, latest_seq, latest_kind, latest_created_at,
             last_seq)
         SELECT 'default', 'crashed-' || i, 'bench', 'failed', 1, 10, 30000, 5,
             ?2 - 3600000 + i, ?2, ?2, ?2, 'boom', 'application_error', ?2, 1, 1000,
             2, 'item', ?2 - 1000, 2 FROM n",
        rusqlite::params![recoverable, now],
    )?;
    conn.execute(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?1)
         INSERT INTO sessions (tenant, id, kind, status, attempt, max_attempts,
             heartbeat_timeout_ms, checkpoint_retention, created_at, updated_at,
             last_heartbeat_at, lease_expires_at, progress_changed_at)
         SELECT 'default', 'active-' || i, 'bench', 'active', 1, 10, 30000, 5,
             ?2 - 60000 + i, ?2, ?2, ?2 + 30000, ?2 FROM n",
        rusqlite::params![active, now],
    )?;
    let data = r#"{"cursor":12345,"note":"benchmark checkpoint"}"#;
    let sha = lifeboat::Sha256::of(data.as_bytes()).as_str().to_owned();
    conn.execute(
        "INSERT INTO checkpoints (session_pk, seq, attempt, kind, data, sha256, created_at)
         SELECT pk, s.seq, 1, 'item', ?1, ?2, ?3 FROM sessions,
             (SELECT 1 AS seq UNION ALL SELECT 2) AS s
         WHERE status = 'failed'",
        rusqlite::params![data, sha, now - 1000],
    )?;
    conn.execute_batch("COMMIT")?;
    Ok(())
}
