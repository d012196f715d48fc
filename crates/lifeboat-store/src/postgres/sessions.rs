//! Session rows beyond the row itself (`rows.rs`): crashes, recoveries, the sweeper's and
//! the restart grace's questions, lists, counts. No rule is decided here.

use lifeboat_core::{
    AssetStatus, Crash, CrashType, Id, RecoveryOption, Session, Status, TenantId, Timestamp,
};
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use super::conn::{PgConn, column};
use super::rows::{self, SESSION_COLUMNS, bigint};
use crate::{Distribution, Error, Gauges, Result, RowId, SessionFilter, Stats};

/// A `count(*)` column.
fn count_at(row: &Row, index: usize) -> Result<u64> {
    u64::try_from(column::<i64>(row, index)?)
        .map_err(|e| Error::Internal(format!("negative count: {e}")))
}

/// Records a crash for `/stats`: one row per attempt, a refined type replacing the first.
pub(super) fn record_crash(
    conn: &PgConn<'_>,
    tenant: &TenantId,
    pk: RowId,
    crash: &Crash,
) -> Result<()> {
    conn.execute(
        "INSERT INTO crashes (tenant, session_pk, attempt, type, detected_at, \
         lease_expires_at, work_lost_ms) VALUES ($1, $2, $3, $4, $5, $6, $7) \
         ON CONFLICT (session_pk, attempt) DO UPDATE SET type = excluded.type",
        &[
            &tenant.as_str(),
            &pk,
            &i64::from(crash.attempt),
            &crash.kind.as_str(),
            &crash.detected_at.0,
            &crash.lease_expires_at.map(|t| t.0),
            &bigint(crash.work_lost_ms)?,
        ],
    )?;
    Ok(())
}

/// Records a recovery that started `attempt`.
pub(super) fn record_recovery(
    conn: &PgConn<'_>,
    tenant: &TenantId,
    pk: RowId,
    attempt: u32,
    option: RecoveryOption,
    now: Timestamp,
) -> Result<()> {
    conn.execute(
        "INSERT INTO recoveries (tenant, session_pk, attempt, option, created_at) \
         VALUES ($1, $2, $3, $4, $5)",
        &[
            &tenant.as_str(),
            &pk,
            &i64::from(attempt),
            &option.as_str(),
            &now.0,
        ],
    )?;
    Ok(())
}

/// Fills in the outcome of the recovery that started `attempt`, if it has none yet.
pub(super) fn settle_recovery(
    conn: &PgConn<'_>,
    pk: RowId,
    attempt: u32,
    outcome: &str,
) -> Result<()> {
    conn.execute(
        "UPDATE recoveries SET outcome = $1 \
         WHERE session_pk = $2 AND attempt = $3 AND outcome IS NULL",
        &[&outcome, &pk, &i64::from(attempt)],
    )?;
    Ok(())
}

/// A lease-only heartbeat's change, written again: the lease never moves backwards, and
/// a session that is no longer this attempt's active one is left alone.
pub(super) fn extend_lease(
    conn: &PgConn<'_>,
    pk: RowId,
    attempt: u32,
    heartbeat_at: Option<Timestamp>,
    lease: Option<Timestamp>,
    updated_at: Timestamp,
) -> Result<()> {
    conn.write(
        "UPDATE sessions SET last_heartbeat_at = greatest(coalesce(last_heartbeat_at, 0), $1), \
         lease_expires_at = greatest(lease_expires_at, $2), lease_ran_out_while_down = 0, \
         updated_at = greatest(updated_at, $3) \
         WHERE pk = $4 AND status = 'active' AND attempt = $5",
        &[
            &heartbeat_at.map(|t| t.0),
            &lease.map(|t| t.0),
            &updated_at.0,
            &pk,
            &i64::from(attempt),
        ],
    )?;
    Ok(())
}

fn with_tenant(row: &Row) -> Result<(TenantId, RowId, Session)> {
    let tenant: String = column(row, 36)?;
    let (pk, session) = rows::session_from_row(row)?;
    Ok((TenantId::new(tenant), pk, session))
}

/// Active sessions whose lease passed at `now` or whose stall is due, at most `limit`,
/// the longest due first. In a write transaction they are locked, skipping those another
/// server's sweep holds (so never waiting, whatever the order).
pub(super) fn due(
    conn: &PgConn<'_>,
    now: Timestamp,
    limit: u32,
) -> Result<Vec<(TenantId, RowId, Session)>> {
    let lock = if conn.for_update().is_empty() {
        ""
    } else {
        " FOR UPDATE SKIP LOCKED"
    };
    // Ordered by `due_second` so that even a generic plan walks `sessions_due` from its
    // start and stops at `now`: ordered by `pk`, it walked the primary key through every
    // session when none was due (0004_session_due.sql).
    conn.query(
        &format!(
            "SELECT {SESSION_COLUMNS} FROM sessions WHERE status = 'active' AND \
             due_second <= $1::bigint / 1000 AND \
             (lease_expires_at <= $1 OR (stall_timeout_ms IS NOT NULL AND \
              stalled = 0 AND stall_timeout_ms <= $1 - progress_changed_at)) \
             ORDER BY due_second LIMIT $2{lock}"
        ),
        &[&now.0, &i64::from(limit)],
    )?
    .iter()
    .map(with_tenant)
    .collect()
}

/// Whether any active session's lease has passed at `now`: found as `due` finds them, so
/// that a generic plan walks `sessions_due` too (with `EXISTS`, it scanned every session).
pub(super) fn any_lease_passed(conn: &PgConn<'_>, now: Timestamp) -> Result<bool> {
    let found = conn.query_opt(
        "SELECT 1 FROM sessions WHERE status = 'active' AND due_second <= $1::bigint / 1000 \
         AND lease_expires_at <= $1 ORDER BY due_second LIMIT 1",
        &[&now.0],
    )?;
    Ok(found.is_some())
}

/// Every active session.
pub(super) fn active(conn: &PgConn<'_>) -> Result<Vec<(TenantId, RowId, Session)>> {
    // Locked (in key order, as every multi-row lock here) in a write: the restart grace
    // rewrites each of these rows, which must not undo a write another server made since.
    conn.query(
        &format!(
            "SELECT {SESSION_COLUMNS} FROM sessions WHERE status = 'active' ORDER BY pk{}",
            conn.for_update()
        ),
        &[],
    )?
    .iter()
    .map(with_tenant)
    .collect()
}

/// When the newest event was recorded.
pub(super) fn newest_event_at(conn: &PgConn<'_>) -> Result<Option<Timestamp>> {
    conn.query_opt(
        "SELECT created_at FROM events ORDER BY id DESC LIMIT 1",
        &[],
    )?
    .map(|row| column(&row, 0).map(Timestamp))
    .transpose()
}

/// SQL for "observed status is `status`", given `$now` bound as parameter `now_index`.
fn status_condition(status: Status, now_index: usize) -> String {
    match status {
        Status::Active => format!("(status = 'active' AND lease_expires_at > ${now_index})"),
        Status::Incomplete => format!(
            "(status = 'incomplete' OR (status = 'active' AND lease_expires_at <= ${now_index}))"
        ),
        other => format!("status = '{}'", other.as_str()),
    }
}

/// A tenant's sessions below `before`, newest first, filtered; at most `limit`.
pub(super) fn page(
    conn: &PgConn<'_>,
    tenant: &TenantId,
    filter: &SessionFilter,
    before: i64,
    limit: u32,
    now: Timestamp,
) -> Result<Vec<(i64, Session)>> {
    let t = tenant.as_str();
    let project = filter.project_id.as_ref().map(Id::as_str);
    let mut sql = format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE tenant = $1 AND pk < $2");
    let mut values: Vec<&(dyn ToSql + Sync)> = vec![&t, &before, &now.0];
    // `$3` is always used, so that its type is known when no status needs it.
    sql.push_str(" AND $3::BIGINT = $3");
    if !filter.statuses.is_empty() {
        let any: Vec<String> = filter
            .statuses
            .iter()
            .map(|s| status_condition(*s, 3))
            .collect();
        sql.push_str(&format!(" AND ({})", any.join(" OR ")));
    }
    if let Some(project) = &project {
        values.push(project);
        sql.push_str(&format!(" AND project_id = ${}", values.len()));
    }
    if let Some(kind) = &filter.kind {
        values.push(kind);
        sql.push_str(&format!(" AND kind = ${}", values.len()));
    }
    sql.push_str(&format!(" ORDER BY pk DESC LIMIT {limit}"));
    conn.query(&sql, &values)?
        .iter()
        .map(rows::session_from_row)
        .collect()
}

/// Recoverable sessions (observed at `now`) below `before`, newest first; at most `limit`.
pub(super) fn recoverable(
    conn: &PgConn<'_>,
    tenant: &TenantId,
    project: Option<&Id>,
    before: i64,
    limit: u32,
    now: Timestamp,
) -> Result<Vec<(RowId, Session)>> {
    // The first status term repeats the partial index's condition, so only open sessions
    // are scanned.
    conn.query(
        &format!(
            "SELECT {SESSION_COLUMNS} FROM sessions WHERE tenant = $1 AND pk < $2 \
             AND status <> 'completed' AND status <> 'cancelled' \
             AND (status <> 'active' OR lease_expires_at <= $3) \
             AND ($5::TEXT IS NULL OR project_id = $5) \
             ORDER BY pk DESC LIMIT $4"
        ),
        &[
            &tenant.as_str(),
            &before,
            &now.0,
            &i64::from(limit),
            &project.map(Id::as_str),
        ],
    )?
    .iter()
    .map(rows::session_from_row)
    .collect()
}

/// Counts of every tenant, counted from the rows (there are no counters: one hot counter
/// row would make every node's session writes wait on it). A session whose lease passed
/// but is not swept yet counts as incomplete.
pub(super) fn gauges(conn: &PgConn<'_>, now: Timestamp) -> Result<Gauges> {
    let mut gauges = Gauges {
        sessions: Status::ALL.into_iter().map(|s| (s, 0)).collect(),
        ..Gauges::default()
    };
    let by_status = conn.query(
        "SELECT CASE WHEN status = 'active' AND lease_expires_at <= $1 THEN 'incomplete' \
         ELSE status END, count(*) FROM sessions GROUP BY 1",
        &[&now.0],
    )?;
    for row in &by_status {
        let status: String = column(row, 0)?;
        let count = count_at(row, 1)?;
        if let Some(slot) = gauges
            .sessions
            .iter_mut()
            .find(|(s, _)| s.as_str() == status)
        {
            slot.1 = count;
        }
    }
    let row = conn.query_one("SELECT coalesce(sum(size), 0)::BIGINT FROM assets", &[])?;
    gauges.asset_bytes = u64::try_from(column::<i64>(&row, 0)?).unwrap_or(0);
    // The tables (with their indexes and TOAST) of the store's schema: other schemas of
    // the same database may hold other stores.
    let row = conn.query_one(
        "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)::BIGINT FROM pg_class c \
         JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'm')",
        &[],
    )?;
    gauges.database_bytes = u64::try_from(column::<i64>(&row, 0)?).unwrap_or(0);
    Ok(gauges)
}

/// Counts of one tenant (SPEC §9, stats shape).
pub(super) fn stats(conn: &PgConn<'_>, tenant: &TenantId, now: Timestamp) -> Result<Stats> {
    let t = tenant.as_str();
    let mut stats = Stats {
        sessions: Status::ALL.into_iter().map(|s| (s, 0)).collect(),
        crashes_by_type: CrashType::ALL
            .into_iter()
            .map(|c| (c.as_str().to_owned(), 0))
            .collect(),
        recoveries_by_option: RecoveryOption::ALL
            .into_iter()
            .map(|o| (o.as_str().to_owned(), 0))
            .collect(),
        ..Stats::default()
    };
    let by_status = conn.query(
        "SELECT CASE WHEN status = 'active' AND lease_expires_at <= $2 THEN 'incomplete' \
         ELSE status END, count(*) FROM sessions WHERE tenant = $1 GROUP BY 1",
        &[&t, &now.0],
    )?;
    for row in &by_status {
        let status: String = column(row, 0)?;
        let count = count_at(row, 1)?;
        if let Some(slot) = stats
            .sessions
            .iter_mut()
            .find(|(s, _)| s.as_str() == status)
        {
            slot.1 = count;
        }
    }
    let grouped = |sql: &str, into: &mut Vec<(String, u64)>| -> Result<()> {
        for row in &conn.query(sql, &[&t])? {
            let key: String = column(row, 0)?;
            let count = count_at(row, 1)?;
            match into.iter_mut().find(|(k, _)| *k == key) {
                Some(slot) => slot.1 += count,
                None => into.push((key, count)),
            }
        }
        Ok(())
    };
    grouped(
        "SELECT type, count(*) FROM crashes WHERE tenant = $1 GROUP BY type",
        &mut stats.crashes_by_type,
    )?;
    grouped(
        "SELECT option, count(*) FROM recoveries WHERE tenant = $1 GROUP BY option",
        &mut stats.recoveries_by_option,
    )?;
    // What purged sessions had counted (historical counts, SPEC §9).
    for (what, into) in [
        ("crash", &mut stats.crashes_by_type),
        ("recovery", &mut stats.recoveries_by_option),
    ] {
        grouped(
            &format!("SELECT key, n FROM purged_counts WHERE tenant = $1 AND what = '{what}'"),
            into,
        )?;
    }
    let mut outcomes = Vec::new();
    grouped(
        "SELECT key, n FROM purged_counts WHERE tenant = $1 AND what = 'outcome'",
        &mut outcomes,
    )?;
    grouped(
        "SELECT coalesce(outcome, 'pending'), count(*) FROM recoveries WHERE tenant = $1 \
         GROUP BY 1",
        &mut outcomes,
    )?;
    for (outcome, count) in outcomes {
        match outcome.as_str() {
            "succeeded" => stats.recoveries_succeeded = count,
            "failed" => stats.recoveries_failed = count,
            _ => stats.recoveries_pending = count,
        }
    }
    let row = conn.query_one(
        "SELECT count(*), coalesce(sum(c.quarantined), 0)::BIGINT FROM checkpoints c \
         JOIN sessions s ON s.pk = c.session_pk WHERE s.tenant = $1",
        &[&t],
    )?;
    (stats.checkpoints_total, stats.checkpoints_invalid) = (count_at(&row, 0)?, count_at(&row, 1)?);
    // Assets by their last verification status (POST …/verify refreshes it).
    let counted = conn.query(
        "SELECT status, count(*) FROM assets WHERE tenant = $1 GROUP BY status",
        &[&t],
    )?;
    for row in &counted {
        let status: String = column(row, 0)?;
        let count = count_at(row, 1)?;
        stats.assets.total += count;
        match AssetStatus::parse(&status) {
            Some(AssetStatus::Ok) => stats.assets.ok += count,
            Some(AssetStatus::Missing) => stats.assets.missing += count,
            Some(AssetStatus::Corrupt) => stats.assets.corrupt += count,
            None => {}
        }
    }
    let values = |sql: &str| -> Result<Vec<u64>> {
        conn.query(sql, &[&t])?
            .iter()
            .map(|row| Ok(u64::try_from(column::<i64>(row, 0)?).unwrap_or(0)))
            .collect()
    };
    stats.detection_delay_ms = Distribution::of(values(
        "SELECT detected_at - lease_expires_at FROM crashes \
         WHERE tenant = $1 AND lease_expires_at IS NOT NULL",
    )?);
    stats.work_lost_ms = Distribution::of(values(
        "SELECT work_lost_ms FROM crashes WHERE tenant = $1",
    )?);
    Ok(stats)
}
