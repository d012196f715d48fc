//! Mapping between domain values and PostgreSQL rows. Only this file knows column order.

use lifeboat_core::{
    Checkpoint, CheckpointKind, CheckpointRef, Crash, CrashType, Id, Metrics, Progress, Session,
    Sha256, Status, TenantId, Timestamp,
};
use serde_json::{Value, json};
use tokio_postgres::Row;

use super::conn::{PgConn, column};
use super::held::Row as Held;
use crate::stored::{metrics_json, pins_from_json, pins_to_json, prunable_sql};
use crate::{Error, Result, RowId};

/// The session columns, in the order [`session_from_row`] reads them (after `pk`).
pub(super) const SESSION_COLUMNS: &str = "pk, id, project_id, kind, title, status, attempt, \
    max_attempts, heartbeat_timeout_ms, stall_timeout_ms, checkpoint_retention, created_at, \
    updated_at, last_heartbeat_at, lease_expires_at, lease_ran_out_while_down, progress_percent, \
    progress_stage, progress_completed_units, progress_total_units, progress_changed_at, stalled, \
    metrics, metadata, error, crash_type, crash_detected_at, crash_attempt, \
    crash_lease_expires_at, crash_work_lost_ms, latest_seq, latest_kind, latest_stage, \
    latest_created_at, last_seq, completed_at, tenant";

/// Where [`SESSION_COLUMNS`] has the tenant.
pub(super) const TENANT_COLUMN: usize = 36;

/// The checkpoint columns, in the order [`checkpoint_from_row`] reads them.
pub(super) const CHECKPOINT_COLUMNS: &str = "seq, attempt, kind, stage, position, completed_units, \
    total_units, data, sha256, assets, created_at, quarantined";

fn bad_value(index: usize, what: &str) -> Error {
    Error::Internal(format!("stored column {index}: {what}"))
}

/// A BIGINT column read as an unsigned (or narrower) integer; out of range is bad data.
pub(super) fn unsigned<T: TryFrom<i64>>(row: &Row, index: usize) -> Result<T> {
    let value: i64 = column(row, index)?;
    T::try_from(value).map_err(|_| bad_value(index, "integer out of range"))
}

/// A nullable BIGINT column read as an unsigned (or narrower) integer.
fn unsigned_opt<T: TryFrom<i64>>(row: &Row, index: usize) -> Result<Option<T>> {
    column::<Option<i64>>(row, index)?
        .map(|value| T::try_from(value).map_err(|_| bad_value(index, "integer out of range")))
        .transpose()
}

/// A BIGINT 0/1 flag column.
fn flag(row: &Row, index: usize) -> Result<bool> {
    Ok(column::<i64>(row, index)? != 0)
}

fn ts(row: &Row, index: usize) -> Result<Option<Timestamp>> {
    Ok(column::<Option<i64>>(row, index)?.map(Timestamp))
}

fn json_column(row: &Row, index: usize) -> Result<Option<Value>> {
    column::<Option<String>>(row, index)?
        .map(|text| serde_json::from_str(&text).map_err(|_| bad_value(index, "invalid JSON")))
        .transpose()
}

/// A `u64` as BIGINT; beyond `i64::MAX` it cannot be stored.
pub(super) fn bigint(value: u64) -> Result<i64> {
    i64::try_from(value).map_err(|_| Error::Internal(format!("{value} is too large to store")))
}

fn bigint_opt(value: Option<u64>) -> Result<Option<i64>> {
    value.map(bigint).transpose()
}

/// Reads `(pk, Session)` from a row selected with [`SESSION_COLUMNS`].
pub(super) fn session_from_row(row: &Row) -> Result<(i64, Session)> {
    let id: String = column(row, 1)?;
    let project_id: Option<String> = column(row, 2)?;
    let status: String = column(row, 5)?;
    let crash_type: Option<String> = column(row, 25)?;
    let latest_kind: Option<String> = column(row, 31)?;
    let metrics = json_column(row, 22)?.map(|m| Metrics {
        memory_bytes: m["memory_bytes"].as_u64(),
        memory_limit_bytes: m["memory_limit_bytes"].as_u64(),
        cpu_percent: m["cpu_percent"].as_f64(),
        gpu_memory_bytes: m["gpu_memory_bytes"].as_u64(),
    });
    let crash = match (crash_type, ts(row, 26)?) {
        (Some(kind), Some(detected_at)) => Some(Crash {
            kind: CrashType::parse(&kind).ok_or_else(|| bad_value(25, "unknown crash type"))?,
            detected_at,
            attempt: unsigned(row, 27)?,
            lease_expires_at: ts(row, 28)?,
            work_lost_ms: unsigned(row, 29)?,
        }),
        _ => None,
    };
    let latest_checkpoint = match (unsigned_opt::<u64>(row, 30)?, latest_kind, ts(row, 33)?) {
        (Some(seq), Some(kind), Some(created_at)) => Some(CheckpointRef {
            seq,
            kind: CheckpointKind::parse(&kind).map_err(|_| bad_value(31, "unknown kind"))?,
            stage: column(row, 32)?,
            created_at,
        }),
        _ => None,
    };
    let session = Session {
        id: Id::parse(&id).map_err(|_| bad_value(1, "invalid id"))?,
        project_id: project_id
            .map(|p| Id::parse(&p).map_err(|_| bad_value(2, "invalid id")))
            .transpose()?,
        kind: column(row, 3)?,
        title: column(row, 4)?,
        status: Status::parse(&status).ok_or_else(|| bad_value(5, "unknown status"))?,
        attempt: unsigned(row, 6)?,
        max_attempts: unsigned(row, 7)?,
        heartbeat_timeout_ms: unsigned(row, 8)?,
        stall_timeout_ms: unsigned_opt(row, 9)?,
        checkpoint_retention: unsigned(row, 10)?,
        created_at: Timestamp(column(row, 11)?),
        updated_at: Timestamp(column(row, 12)?),
        last_heartbeat_at: ts(row, 13)?,
        lease_expires_at: ts(row, 14)?,
        lease_ran_out_while_down: flag(row, 15)?,
        progress: Progress {
            percent: column(row, 16)?,
            stage: column(row, 17)?,
            completed_units: unsigned_opt(row, 18)?,
            total_units: unsigned_opt(row, 19)?,
        },
        progress_changed_at: Timestamp(column(row, 20)?),
        stalled: flag(row, 21)?,
        metrics,
        metadata: json_column(row, 23)?,
        error: column(row, 24)?,
        crash,
        latest_checkpoint,
        last_seq: unsigned(row, 34)?,
        completed_at: ts(row, 35)?,
    };
    Ok((column(row, 0)?, session))
}

/// Inserts a new session row; answers its `pk`.
pub(super) fn insert_session(conn: &PgConn<'_>, tenant: &TenantId, s: &Session) -> Result<RowId> {
    let metrics = metrics_json(s);
    let metadata = s.metadata.as_ref().map(Value::to_string);
    let crash = s.crash.as_ref();
    let latest = s.latest_checkpoint.as_ref();
    let row = conn.query_one(
        "INSERT INTO sessions (tenant, id, project_id, kind, title, status, attempt, \
         max_attempts, heartbeat_timeout_ms, stall_timeout_ms, checkpoint_retention, \
         created_at, updated_at, last_heartbeat_at, lease_expires_at, \
         lease_ran_out_while_down, progress_percent, progress_stage, \
         progress_completed_units, progress_total_units, progress_changed_at, stalled, \
         metrics, metadata, error, crash_type, crash_detected_at, crash_attempt, \
         crash_lease_expires_at, crash_work_lost_ms, latest_seq, latest_kind, latest_stage, \
         latest_created_at, last_seq, completed_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, \
         $18, $19, $20, $21, $22, $23, $24, $25, $26, $27, $28, $29, $30, $31, $32, $33, $34, \
         $35, $36) RETURNING pk",
        &[
            &tenant.as_str(),
            &s.id.as_str(),
            &s.project_id.as_ref().map(Id::as_str),
            &s.kind,
            &s.title,
            &s.status.as_str(),
            &i64::from(s.attempt),
            &i64::from(s.max_attempts),
            &bigint(s.heartbeat_timeout_ms)?,
            &bigint_opt(s.stall_timeout_ms)?,
            &i64::from(s.checkpoint_retention),
            &s.created_at.0,
            &s.updated_at.0,
            &s.last_heartbeat_at.map(|t| t.0),
            &s.lease_expires_at.map(|t| t.0),
            &i64::from(s.lease_ran_out_while_down),
            &s.progress.percent,
            &s.progress.stage,
            &bigint_opt(s.progress.completed_units)?,
            &bigint_opt(s.progress.total_units)?,
            &s.progress_changed_at.0,
            &i64::from(s.stalled),
            &metrics,
            &metadata,
            &s.error,
            &crash.map(|c| c.kind.as_str()),
            &crash.map(|c| c.detected_at.0),
            &crash.map(|c| i64::from(c.attempt)),
            &crash.and_then(|c| c.lease_expires_at.map(|t| t.0)),
            &bigint_opt(crash.map(|c| c.work_lost_ms))?,
            &bigint_opt(latest.map(|c| c.seq))?,
            &latest.map(|c| c.kind.as_str()),
            &latest.and_then(|c| c.stage.as_deref()),
            &latest.map(|c| c.created_at.0),
            &bigint(s.last_seq)?,
            &s.completed_at.map(|t| t.0),
        ],
    )?;
    column(&row, 0)
}

/// Writes the fields of a session that change over its life (`held::SESSION_CHANGES`),
/// by primary key.
pub(super) fn update_session(conn: &PgConn<'_>, pk: i64, s: &Session) -> Result<()> {
    let crash = s.crash.as_ref();
    let latest = s.latest_checkpoint.as_ref();
    let columns = json!({
        "pk": pk,
        "status": s.status.as_str(),
        "attempt": s.attempt,
        "updated_at": s.updated_at.0,
        "last_heartbeat_at": s.last_heartbeat_at.map(|t| t.0),
        "lease_expires_at": s.lease_expires_at.map(|t| t.0),
        "lease_ran_out_while_down": i64::from(s.lease_ran_out_while_down),
        "progress_percent": s.progress.percent,
        "progress_stage": s.progress.stage,
        "progress_completed_units": bigint_opt(s.progress.completed_units)?,
        "progress_total_units": bigint_opt(s.progress.total_units)?,
        "progress_changed_at": s.progress_changed_at.0,
        "stalled": i64::from(s.stalled),
        "metrics": metrics_json(s),
        "error": s.error,
        "crash_type": crash.map(|c| c.kind.as_str()),
        "crash_detected_at": crash.map(|c| c.detected_at.0),
        "crash_attempt": crash.map(|c| c.attempt),
        "crash_lease_expires_at": crash.and_then(|c| c.lease_expires_at.map(|t| t.0)),
        "crash_work_lost_ms": bigint_opt(crash.map(|c| c.work_lost_ms))?,
        "latest_seq": bigint_opt(latest.map(|c| c.seq))?,
        "latest_kind": latest.map(|c| c.kind.as_str()),
        "latest_stage": latest.and_then(|c| c.stage.as_deref()),
        "latest_created_at": latest.map(|c| c.created_at.0),
        "last_seq": bigint(s.last_seq)?,
        "completed_at": s.completed_at.map(|t| t.0),
    });
    conn.hold(Held::Session(pk, columns))
}

/// `(pk, Session)` by tenant and id, if stored; locked in a write transaction (perhaps
/// ahead, see `writer::lock_ahead`).
pub(super) fn find_session(
    conn: &PgConn<'_>,
    tenant: &TenantId,
    id: &Id,
) -> Result<Option<(i64, Session)>> {
    if let Some(row) = conn.locked_ahead(tenant.as_str(), id.as_str()) {
        return session_from_row(&row).map(Some);
    }
    conn.query_opt(
        &format!(
            "SELECT {SESSION_COLUMNS} FROM sessions WHERE tenant = $1 AND id = $2{}",
            conn.for_update()
        ),
        &[&tenant.as_str(), &id.as_str()],
    )?
    .as_ref()
    .map(session_from_row)
    .transpose()
}

/// Locks the stored sessions among `tenants[i]`, `ids[i]`, in key order; answers their
/// rows (with [`SESSION_COLUMNS`]).
pub(super) fn lock_sessions(conn: &PgConn<'_>, tenants: &[&str], ids: &[&str]) -> Result<Vec<Row>> {
    conn.query(
        &format!(
            "SELECT {SESSION_COLUMNS} FROM sessions \
             WHERE (tenant, id) IN (SELECT * FROM unnest($1::text[], $2::text[])) \
             ORDER BY pk FOR UPDATE"
        ),
        &[&tenants, &ids],
    )
}

/// Locks the stored sessions among `pks`, in key order; answers their rows (with
/// [`SESSION_COLUMNS`]). Found through the primary key alone, whatever the planner makes
/// of the table's size: the writer's lock ahead, once it knows its sessions' keys.
pub(super) fn lock_sessions_by_pk(conn: &PgConn<'_>, pks: &[i64]) -> Result<Vec<Row>> {
    conn.query(
        &format!(
            "SELECT {SESSION_COLUMNS} FROM sessions WHERE pk = ANY($1) ORDER BY pk FOR UPDATE"
        ),
        &[&pks],
    )
}

/// Loads `(pk, Session)` by tenant and id.
pub(super) fn load_session(
    conn: &PgConn<'_>,
    tenant: &TenantId,
    id: &Id,
) -> Result<(i64, Session)> {
    conn.query_opt(
        &format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE tenant = $1 AND id = $2"),
        &[&tenant.as_str(), &id.as_str()],
    )?
    .as_ref()
    .map(session_from_row)
    .transpose()?
    .ok_or_else(|| Error::NotFound {
        what: "session",
        id: id.to_string(),
    })
}

/// Reads a checkpoint from a row selected with [`CHECKPOINT_COLUMNS`], recomputing `valid`.
pub(super) fn checkpoint_from_row(row: &Row) -> Result<Checkpoint> {
    let kind: String = column(row, 2)?;
    let assets: String = column(row, 9)?;
    let quarantined = flag(row, 11)?;
    let checkpoint = Checkpoint {
        seq: unsigned(row, 0)?,
        attempt: unsigned(row, 1)?,
        kind: CheckpointKind::parse(&kind).map_err(|_| bad_value(2, "unknown kind"))?,
        stage: column(row, 3)?,
        position: column(row, 4)?,
        completed_units: unsigned_opt(row, 5)?,
        total_units: unsigned_opt(row, 6)?,
        data: column(row, 7)?,
        sha256: Sha256::from_stored(column(row, 8)?),
        assets: pins_from_json(&assets).ok_or_else(|| bad_value(9, "invalid pinned assets"))?,
        created_at: Timestamp(column(row, 10)?),
        valid: true,
    }
    .verify();
    Ok(Checkpoint {
        valid: checkpoint.valid && !quarantined,
        ..checkpoint
    })
}

/// Inserts a checkpoint of the session `session_pk`, and its pins.
pub(super) fn insert_checkpoint(conn: &PgConn<'_>, session_pk: i64, c: &Checkpoint) -> Result<()> {
    let seq = bigint(c.seq)?;
    let columns = json!({
        "session_pk": session_pk,
        "seq": seq,
        "attempt": c.attempt,
        "kind": c.kind.as_str(),
        "stage": c.stage,
        "position": c.position,
        "completed_units": bigint_opt(c.completed_units)?,
        "total_units": bigint_opt(c.total_units)?,
        "data": c.data,
        "sha256": c.sha256.as_str(),
        "assets": pins_to_json(&c.assets),
        "created_at": c.created_at.0,
    });
    let pins = c
        .assets
        .iter()
        .map(|pin| {
            let version = pin.version();
            json!({
                "session_pk": session_pk,
                "seq": seq,
                "storage": version.storage,
                "key": version.key,
            })
        })
        .collect();
    conn.hold(Held::Checkpoint(session_pk, columns, pins))
}

/// Checkpoint `seq` of a session, if stored.
pub(super) fn checkpoint_at(
    conn: &PgConn<'_>,
    session_pk: i64,
    seq: u64,
) -> Result<Option<Checkpoint>> {
    // A seq beyond BIGINT is never stored.
    let Ok(seq) = i64::try_from(seq) else {
        return Ok(None);
    };
    conn.query_opt(
        &format!("SELECT {CHECKPOINT_COLUMNS} FROM checkpoints WHERE session_pk = $1 AND seq = $2"),
        &[&session_pk, &seq],
    )?
    .as_ref()
    .map(checkpoint_from_row)
    .transpose()
}

/// The newest checkpoint of a session with a seq below `before`, if any.
pub(super) fn checkpoint_before(
    conn: &PgConn<'_>,
    session_pk: i64,
    before: i64,
) -> Result<Option<Checkpoint>> {
    conn.query_opt(
        &format!(
            "SELECT {CHECKPOINT_COLUMNS} FROM checkpoints WHERE session_pk = $1 AND seq < $2 \
             ORDER BY seq DESC LIMIT 1"
        ),
        &[&session_pk, &before],
    )?
    .as_ref()
    .map(checkpoint_from_row)
    .transpose()
}

/// All checkpoints of a session in seq order.
pub(super) fn all_checkpoints(conn: &PgConn<'_>, session_pk: i64) -> Result<Vec<Checkpoint>> {
    conn.query(
        &format!("SELECT {CHECKPOINT_COLUMNS} FROM checkpoints WHERE session_pk = $1 ORDER BY seq"),
        &[&session_pk],
    )?
    .iter()
    .map(checkpoint_from_row)
    .collect()
}

/// Up to `limit` checkpoints of a session with a seq after `after`, in seq order.
pub(super) fn checkpoints_after(
    conn: &PgConn<'_>,
    session_pk: i64,
    after: u64,
    limit: u32,
) -> Result<Vec<Checkpoint>> {
    // No stored seq is beyond BIGINT, so a larger `after` finds none either way.
    let after = i64::try_from(after).unwrap_or(i64::MAX);
    conn.query(
        &format!(
            "SELECT {CHECKPOINT_COLUMNS} FROM checkpoints \
             WHERE session_pk = $1 AND seq > $2 ORDER BY seq LIMIT $3"
        ),
        &[&session_pk, &after, &i64::from(limit)],
    )?
    .iter()
    .map(checkpoint_from_row)
    .collect()
}

/// Marks checkpoint `seq` of a session invalid for good.
pub(super) fn quarantine(conn: &PgConn<'_>, session_pk: i64, seq: u64) -> Result<()> {
    // A seq beyond BIGINT is never stored: nothing to mark.
    let Ok(seq) = i64::try_from(seq) else {
        return Ok(());
    };
    conn.execute(
        "UPDATE checkpoints SET quarantined = 1 WHERE session_pk = $1 AND seq = $2",
        &[&session_pk, &seq],
    )?;
    Ok(())
}

/// Deletes the prunable checkpoint that a new one pushed out of the newest `retention`,
/// and its pins if it had any.
///
/// Only that one: a session never holds more than `retention` prunable checkpoints
/// between writes (every insert of one is followed by this, and an import by
/// [`prune_all_checkpoints`]), so the one at position `retention` from the newest is the
/// only one beyond. Looking no further matters: the index entries of checkpoints pruned
/// before stay until vacuum, and a `seq <= cut` scan walked every one of them, a cost
/// that grew with each checkpoint a session wrote (`BENCHMARKS.md`). Held with the
/// batch's other prunings, and run as one statement (`held.rs`).
pub(super) fn prune_checkpoints(conn: &PgConn<'_>, pk: i64, retention: u32) -> Result<()> {
    conn.hold(Held::Prune(pk, i64::from(retention)))
}

/// Deletes every prunable checkpoint of a session beyond the newest `retention` (its own),
/// and the pins of those that had any: what an imported session is brought to, so that
/// [`prune_checkpoints`] finds it as it expects.
pub(super) fn prune_all_checkpoints(conn: &PgConn<'_>, pk: i64) -> Result<()> {
    let prunable = prunable_sql();
    conn.execute(
        &format!(
            "WITH doomed AS (DELETE FROM checkpoints WHERE session_pk = $1 AND {prunable} \
             AND seq <= (SELECT seq FROM checkpoints WHERE session_pk = $1 AND {prunable} \
                         ORDER BY seq DESC \
                         OFFSET (SELECT checkpoint_retention FROM sessions WHERE pk = $1) \
                         LIMIT 1) \
             RETURNING seq, assets <> '[]' AS pins) \
             DELETE FROM pinned_files WHERE session_pk = $1 \
             AND seq IN (SELECT seq FROM doomed WHERE pins)"
        ),
        &[&pk],
    )?;
    Ok(())
}
