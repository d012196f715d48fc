//! Mapping between domain values and SQLite rows. Only this file knows column order.

use lifeboat_core::{
    Checkpoint, CheckpointKind, CheckpointRef, Crash, CrashType, Id, Metrics, Progress, Session,
    Sha256, Status, TenantId, Timestamp,
};
use rusqlite::types::Type;
use rusqlite::{Connection, OptionalExtension, Row, params};
use serde_json::Value;

use super::translate;
use crate::Error;
use crate::stored::{metrics_json, pins_from_json, pins_to_json, prunable_sql};

/// The session columns, in the order [`session_from_row`] reads them (after `pk`).
pub(super) const SESSION_COLUMNS: &str = "pk, id, project_id, kind, title, status, attempt, \
    max_attempts, heartbeat_timeout_ms, stall_timeout_ms, checkpoint_retention, created_at, \
    updated_at, last_heartbeat_at, lease_expires_at, lease_ran_out_while_down, progress_percent, \
    progress_stage, progress_completed_units, progress_total_units, progress_changed_at, stalled, \
    metrics, metadata, error, crash_type, crash_detected_at, crash_attempt, \
    crash_lease_expires_at, crash_work_lost_ms, latest_seq, latest_kind, latest_stage, \
    latest_created_at, last_seq, completed_at, tenant";

/// The checkpoint columns, in the order [`checkpoint_from_row`] reads them.
pub(super) const CHECKPOINT_COLUMNS: &str = "seq, attempt, kind, stage, position, completed_units, \
    total_units, data, sha256, assets, created_at, quarantined";

fn bad_text(index: usize, what: &str) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(index, Type::Text, what.into())
}

fn ts(row: &Row<'_>, index: usize) -> rusqlite::Result<Option<Timestamp>> {
    Ok(row.get::<_, Option<i64>>(index)?.map(Timestamp))
}

fn json_column(row: &Row<'_>, index: usize) -> rusqlite::Result<Option<Value>> {
    row.get::<_, Option<String>>(index)?
        .map(|text| serde_json::from_str(&text).map_err(|_| bad_text(index, "invalid JSON")))
        .transpose()
}

/// Reads `(pk, Session)` from a row selected with [`SESSION_COLUMNS`].
pub(super) fn session_from_row(row: &Row<'_>) -> rusqlite::Result<(i64, Session)> {
    let id: String = row.get(1)?;
    let project_id: Option<String> = row.get(2)?;
    let status: String = row.get(5)?;
    let crash_type: Option<String> = row.get(25)?;
    let latest_kind: Option<String> = row.get(31)?;
    let metrics = json_column(row, 22)?.map(|m| Metrics {
        memory_bytes: m["memory_bytes"].as_u64(),
        memory_limit_bytes: m["memory_limit_bytes"].as_u64(),
        cpu_percent: m["cpu_percent"].as_f64(),
        gpu_memory_bytes: m["gpu_memory_bytes"].as_u64(),
    });
    let crash = match (crash_type, ts(row, 26)?) {
        (Some(kind), Some(detected_at)) => Some(Crash {
            kind: CrashType::parse(&kind).ok_or_else(|| bad_text(25, "unknown crash type"))?,
            detected_at,
            attempt: row.get(27)?,
            lease_expires_at: ts(row, 28)?,
            work_lost_ms: row.get(29)?,
        }),
        _ => None,
    };
    let latest_checkpoint = match (row.get::<_, Option<u64>>(30)?, latest_kind, ts(row, 33)?) {
        (Some(seq), Some(kind), Some(created_at)) => Some(CheckpointRef {
            seq,
            kind: CheckpointKind::parse(&kind).map_err(|_| bad_text(31, "unknown kind"))?,
            stage: row.get(32)?,
            created_at,
        }),
        _ => None,
    };
    let session = Session {
        id: Id::parse(&id).map_err(|_| bad_text(1, "invalid id"))?,
        project_id: project_id
            .map(|p| Id::parse(&p).map_err(|_| bad_text(2, "invalid id")))
            .transpose()?,
        kind: row.get(3)?,
        title: row.get(4)?,
        status: Status::parse(&status).ok_or_else(|| bad_text(5, "unknown status"))?,
        attempt: row.get(6)?,
        max_attempts: row.get(7)?,
        heartbeat_timeout_ms: row.get(8)?,
        stall_timeout_ms: row.get(9)?,
        checkpoint_retention: row.get(10)?,
        created_at: Timestamp(row.get(11)?),
        updated_at: Timestamp(row.get(12)?),
        last_heartbeat_at: ts(row, 13)?,
        lease_expires_at: ts(row, 14)?,
        lease_ran_out_while_down: row.get(15)?,
        progress: Progress {
            percent: row.get(16)?,
            stage: row.get(17)?,
            completed_units: row.get(18)?,
            total_units: row.get(19)?,
        },
        progress_changed_at: Timestamp(row.get(20)?),
        stalled: row.get(21)?,
        metrics,
        metadata: json_column(row, 23)?,
        error: row.get(24)?,
        crash,
        latest_checkpoint,
        last_seq: row.get(34)?,
        completed_at: ts(row, 35)?,
    };
    Ok((row.get(0)?, session))
}

/// Inserts a new session row.
pub(super) fn insert_session(
    conn: &Connection,
    tenant: &TenantId,
    s: &Session,
) -> Result<(), Error> {
    let metrics = metrics_json(s);
    let metadata = s.metadata.as_ref().map(Value::to_string);
    let crash = s.crash.as_ref();
    let latest = s.latest_checkpoint.as_ref();
    let mut statement = conn
        .prepare_cached(
            "INSERT INTO sessions (tenant, id, project_id, kind, title, status, attempt, \
             max_attempts, heartbeat_timeout_ms, stall_timeout_ms, checkpoint_retention, \
             created_at, updated_at, last_heartbeat_at, lease_expires_at, \
             lease_ran_out_while_down, progress_percent, progress_stage, \
             progress_completed_units, progress_total_units, progress_changed_at, stalled, \
             metrics, metadata, error, crash_type, crash_detected_at, crash_attempt, \
             crash_lease_expires_at, crash_work_lost_ms, latest_seq, latest_kind, latest_stage, \
             latest_created_at, last_seq, completed_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, \
             ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27, ?28, ?29, ?30, ?31, ?32, ?33, ?34, \
             ?35, ?36)",
        )
        .map_err(translate)?;
    statement
        .execute(params![
            tenant.as_str(),
            s.id.as_str(),
            s.project_id.as_ref().map(Id::as_str),
            s.kind,
            s.title,
            s.status.as_str(),
            s.attempt,
            s.max_attempts,
            s.heartbeat_timeout_ms,
            s.stall_timeout_ms,
            s.checkpoint_retention,
            s.created_at.0,
            s.updated_at.0,
            s.last_heartbeat_at.map(|t| t.0),
            s.lease_expires_at.map(|t| t.0),
            s.lease_ran_out_while_down,
            s.progress.percent,
            s.progress.stage,
            s.progress.completed_units,
            s.progress.total_units,
            s.progress_changed_at.0,
            s.stalled,
            metrics,
            metadata,
            s.error,
            crash.map(|c| c.kind.as_str()),
            crash.map(|c| c.detected_at.0),
            crash.map(|c| c.attempt),
            crash.and_then(|c| c.lease_expires_at.map(|t| t.0)),
            crash.map(|c| c.work_lost_ms),
            latest.map(|c| c.seq),
            latest.map(|c| c.kind.as_str()),
            latest.and_then(|c| c.stage.clone()),
            latest.map(|c| c.created_at.0),
            s.last_seq,
            s.completed_at.map(|t| t.0),
        ])
        .map(drop)
        .map_err(translate)
}

/// Writes the fields of a session that change over its life, by primary key.
///
/// A plain `UPDATE … WHERE pk` (no upsert, no `RETURNING`): this runs for every heartbeat
/// and checkpoint, and SQLite answers an upsert or `RETURNING` with extra index probes
/// and a temporary table.
pub(super) fn update_session(conn: &Connection, pk: i64, s: &Session) -> Result<(), Error> {
    let crash = s.crash.as_ref();
    let latest = s.latest_checkpoint.as_ref();
    conn.prepare_cached(
        "UPDATE sessions SET status = ?2, attempt = ?3, updated_at = ?4, \
         last_heartbeat_at = ?5, lease_expires_at = ?6, lease_ran_out_while_down = ?7, \
         progress_percent = ?8, progress_stage = ?9, progress_completed_units = ?10, \
         progress_total_units = ?11, progress_changed_at = ?12, stalled = ?13, metrics = ?14, \
         error = ?15, crash_type = ?16, crash_detected_at = ?17, crash_attempt = ?18, \
         crash_lease_expires_at = ?19, crash_work_lost_ms = ?20, latest_seq = ?21, \
         latest_kind = ?22, latest_stage = ?23, latest_created_at = ?24, last_seq = ?25, \
         completed_at = ?26 WHERE pk = ?1",
    )
    .map_err(translate)?
    .execute(params![
        pk,
        s.status.as_str(),
        s.attempt,
        s.updated_at.0,
        s.last_heartbeat_at.map(|t| t.0),
        s.lease_expires_at.map(|t| t.0),
        s.lease_ran_out_while_down,
        s.progress.percent,
        s.progress.stage,
        s.progress.completed_units,
        s.progress.total_units,
        s.progress_changed_at.0,
        s.stalled,
        metrics_json(s),
        s.error,
        crash.map(|c| c.kind.as_str()),
        crash.map(|c| c.detected_at.0),
        crash.map(|c| c.attempt),
        crash.and_then(|c| c.lease_expires_at.map(|t| t.0)),
        crash.map(|c| c.work_lost_ms),
        latest.map(|c| c.seq),
        latest.map(|c| c.kind.as_str()),
        latest.and_then(|c| c.stage.clone()),
        latest.map(|c| c.created_at.0),
        s.last_seq,
        s.completed_at.map(|t| t.0),
    ])
    .map(drop)
    .map_err(translate)
}

/// `(pk, Session)` by tenant and id, if stored.
pub(super) fn find_session(
    conn: &Connection,
    tenant: &TenantId,
    id: &Id,
) -> Result<Option<(i64, Session)>, Error> {
    conn.prepare_cached(&format!(
        "SELECT {SESSION_COLUMNS} FROM sessions WHERE tenant = ?1 AND id = ?2"
    ))
    .map_err(translate)?
    .query_row(params![tenant.as_str(), id.as_str()], session_from_row)
    .optional()
    .map_err(translate)
}

/// Loads `(pk, Session)` by tenant and id.
pub(super) fn load_session(
    conn: &Connection,
    tenant: &TenantId,
    id: &Id,
) -> Result<(i64, Session), Error> {
    conn.prepare_cached(&format!(
        "SELECT {SESSION_COLUMNS} FROM sessions WHERE tenant = ?1 AND id = ?2"
    ))
    .map_err(translate)?
    .query_row(params![tenant.as_str(), id.as_str()], session_from_row)
    .optional()
    .map_err(translate)?
    .ok_or_else(|| Error::NotFound {
        what: "session",
        id: id.to_string(),
    })
}

/// Reads a checkpoint from a row selected with [`CHECKPOINT_COLUMNS`], recomputing `valid`.
pub(super) fn checkpoint_from_row(row: &Row<'_>) -> rusqlite::Result<Checkpoint> {
    let kind: String = row.get(2)?;
    let assets: String = row.get(9)?;
    let quarantined: bool = row.get(11)?;
    let checkpoint = Checkpoint {
        seq: row.get(0)?,
        attempt: row.get(1)?,
        kind: CheckpointKind::parse(&kind).map_err(|_| bad_text(2, "unknown kind"))?,
        stage: row.get(3)?,
        position: row.get(4)?,
        completed_units: row.get(5)?,
        total_units: row.get(6)?,
        data: row.get(7)?,
        sha256: Sha256::from_stored(row.get(8)?),
        assets: pins_from_json(&assets).ok_or_else(|| bad_text(9, "invalid pinned assets"))?,
        created_at: Timestamp(row.get(10)?),
        valid: true,
    }
    .verify();
    Ok(Checkpoint {
        valid: checkpoint.valid && !quarantined,
        ..checkpoint
    })
}

/// Inserts a checkpoint of the session `session_pk`.
pub(super) fn insert_checkpoint(
    conn: &Connection,
    session_pk: i64,
    c: &Checkpoint,
) -> Result<(), Error> {
    let assets = pins_to_json(&c.assets);
    conn.prepare_cached(
        "INSERT INTO checkpoints (session_pk, seq, attempt, kind, stage, position, \
         completed_units, total_units, data, sha256, assets, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
    )
    .map_err(translate)?
    .execute(params![
        session_pk,
        c.seq,
        c.attempt,
        c.kind.as_str(),
        c.stage,
        c.position,
        c.completed_units,
        c.total_units,
        c.data,
        c.sha256.as_str(),
        assets,
        c.created_at.0,
    ])
    .map_err(translate)?;
    let mut pinned = conn
        .prepare_cached(
            "INSERT OR IGNORE INTO pinned_files (session_pk, seq, storage, key) \
             VALUES (?1, ?2, ?3, ?4)",
        )
        .map_err(translate)?;
    for pin in &c.assets {
        let version = pin.version();
        pinned
            .execute(params![session_pk, c.seq, version.storage, version.key])
            .map_err(translate)?;
    }
    Ok(())
}

/// Checkpoint `seq` of a session, if stored.
pub(super) fn checkpoint_at(
    conn: &Connection,
    session_pk: i64,
    seq: u64,
) -> Result<Option<Checkpoint>, Error> {
    conn.prepare_cached(&format!(
        "SELECT {CHECKPOINT_COLUMNS} FROM checkpoints WHERE session_pk = ?1 AND seq = ?2"
    ))
    .map_err(translate)?
    .query_row(params![session_pk, seq], checkpoint_from_row)
    .optional()
    .map_err(translate)
}

/// The newest checkpoint of a session with a seq below `before`, if any.
pub(super) fn checkpoint_before(
    conn: &Connection,
    session_pk: i64,
    before: i64,
) -> Result<Option<Checkpoint>, Error> {
    conn.prepare_cached(&format!(
        "SELECT {CHECKPOINT_COLUMNS} FROM checkpoints WHERE session_pk = ?1 AND seq < ?2 \
         ORDER BY seq DESC LIMIT 1"
    ))
    .map_err(translate)?
    .query_row(params![session_pk, before], checkpoint_from_row)
    .optional()
    .map_err(translate)
}

/// All checkpoints of a session in seq order.
pub(super) fn all_checkpoints(
    conn: &Connection,
    session_pk: i64,
) -> Result<Vec<Checkpoint>, Error> {
    conn.prepare_cached(&format!(
        "SELECT {CHECKPOINT_COLUMNS} FROM checkpoints WHERE session_pk = ?1 ORDER BY seq"
    ))
    .map_err(translate)?
    .query_map([session_pk], checkpoint_from_row)
    .map_err(translate)?
    .collect::<rusqlite::Result<Vec<_>>>()
    .map_err(translate)
}

/// Up to `limit` checkpoints of a session with a seq after `after`, in seq order.
pub(super) fn checkpoints_after(
    conn: &Connection,
    session_pk: i64,
    after: u64,
    limit: u32,
) -> Result<Vec<Checkpoint>, Error> {
    conn.prepare_cached(&format!(
        "SELECT {CHECKPOINT_COLUMNS} FROM checkpoints \
         WHERE session_pk = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3"
    ))
    .map_err(translate)?
    .query_map(params![session_pk, after, limit], checkpoint_from_row)
    .map_err(translate)?
    .collect::<rusqlite::Result<Vec<_>>>()
    .map_err(translate)
}

/// Marks checkpoint `seq` of a session invalid for good.
pub(super) fn quarantine(conn: &Connection, session_pk: i64, seq: u64) -> Result<(), Error> {
    conn.prepare_cached(
        "UPDATE checkpoints SET quarantined = 1 WHERE session_pk = ?1 AND seq = ?2",
    )
    .map_err(translate)?
    .execute(params![session_pk, seq])
    .map_err(translate)?;
    Ok(())
}

/// Deletes the prunable checkpoints of a session beyond the newest `retention`, and the
/// pins of those that had any.
///
/// Reads the prunable `seq`s (at most `retention + 1`, since every write prunes), sorts
/// them here and deletes from the first one beyond retention. The SQL has no `ORDER BY`
/// or `LIMIT`: with either, this bundled SQLite re-prepared the statement on every run
/// (before the query planner stability guarantee was turned on).
pub(super) fn prune_checkpoints(conn: &Connection, pk: i64, retention: u32) -> Result<(), Error> {
    let prunable = prunable_sql();
    // Each prunable seq, and whether it pins assets (its pins go with it).
    let mut seqs: Vec<(i64, bool)> = conn
        .prepare_cached(&format!(
            "SELECT seq, assets <> '[]' FROM checkpoints WHERE session_pk = ?1 AND {prunable}"
        ))
        .map_err(translate)?
        .query_map(params![pk], |row| Ok((row.get(0)?, row.get(1)?)))
        .map_err(translate)?
        .collect::<rusqlite::Result<_>>()
        .map_err(translate)?;
    let keep = retention as usize;
    if seqs.len() <= keep {
        return Ok(());
    }
    seqs.sort_unstable();
    let pruned = &seqs[..seqs.len() - keep];
    let (newest_pruned, _) = pruned[pruned.len() - 1];
    conn.prepare_cached(&format!(
        "DELETE FROM checkpoints WHERE session_pk = ?1 AND {prunable} AND seq <= ?2"
    ))
    .map_err(translate)?
    .execute(params![pk, newest_pruned])
    .map_err(translate)?;
    for (seq, _) in pruned.iter().filter(|(_, pins)| *pins) {
        conn.prepare_cached("DELETE FROM pinned_files WHERE session_pk = ?1 AND seq = ?2")
            .map_err(translate)?
            .execute(params![pk, seq])
            .map_err(translate)?;
    }
    Ok(())
}
