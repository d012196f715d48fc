//! Session rows beyond the row itself (`rows.rs`): crashes, recoveries, the sweeper's and
//! the restart grace's questions, lists, counts. No rule is decided here.

use lifeboat_core::{
    AssetStatus, Crash, CrashType, Id, RecoveryOption, Session, Status, TenantId, Timestamp,
};
use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, OptionalExtension, params, params_from_iter};

use super::rows::{self, SESSION_COLUMNS};
use super::translate;
use crate::{Distribution, Gauges, Result, RowId, SessionFilter, Stats};

/// Records a crash for `/stats`: one row per attempt, a refined type replacing the first.
pub(super) fn record_crash(
    conn: &Connection,
    tenant: &TenantId,
    pk: RowId,
    crash: &Crash,
) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO crashes (tenant, session_pk, attempt, type, detected_at, \
         lease_expires_at, work_lost_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
         ON CONFLICT (session_pk, attempt) DO UPDATE SET type = excluded.type",
    )
    .map_err(translate)?
    .execute(params![
        tenant.as_str(),
        pk,
        crash.attempt,
        crash.kind.as_str(),
        crash.detected_at.0,
        crash.lease_expires_at.map(|t| t.0),
        crash.work_lost_ms,
    ])
    .map_err(translate)?;
    Ok(())
}

/// Records a recovery that started `attempt`.
pub(super) fn record_recovery(
    conn: &Connection,
    tenant: &TenantId,
    pk: RowId,
    attempt: u32,
    option: RecoveryOption,
    now: Timestamp,
) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO recoveries (tenant, session_pk, attempt, option, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )
    .map_err(translate)?
    .execute(params![
        tenant.as_str(),
        pk,
        attempt,
        option.as_str(),
        now.0
    ])
    .map_err(translate)?;
    Ok(())
}

/// Fills in the outcome of the recovery that started `attempt`, if it has none yet.
pub(super) fn settle_recovery(
    conn: &Connection,
    pk: RowId,
    attempt: u32,
    outcome: &str,
) -> Result<()> {
    conn.prepare_cached(
        "UPDATE recoveries SET outcome = ?1 \
         WHERE session_pk = ?2 AND attempt = ?3 AND outcome IS NULL",
    )
    .map_err(translate)?
    .execute(params![outcome, pk, attempt])
    .map_err(translate)?;
    Ok(())
}

/// A lease-only heartbeat's change, written again: the lease never moves backwards, and
/// a session that is no longer this attempt's active one is left alone.
pub(super) fn extend_lease(
    conn: &Connection,
    pk: RowId,
    attempt: u32,
    heartbeat_at: Option<Timestamp>,
    lease: Option<Timestamp>,
    updated_at: Timestamp,
) -> Result<()> {
    conn.prepare_cached(
        "UPDATE sessions SET last_heartbeat_at = max(coalesce(last_heartbeat_at, 0), ?1), \
         lease_expires_at = max(lease_expires_at, ?2), lease_ran_out_while_down = 0, \
         updated_at = max(updated_at, ?3) \
         WHERE pk = ?4 AND status = 'active' AND attempt = ?5",
    )
    .map_err(translate)?
    .execute(params![
        heartbeat_at.map(|t| t.0),
        lease.map(|t| t.0),
        updated_at.0,
        pk,
        attempt
    ])
    .map_err(translate)?;
    Ok(())
}

fn with_tenant(row: &rusqlite::Row<'_>) -> rusqlite::Result<(TenantId, RowId, Session)> {
    let tenant: String = row.get(36)?;
    let (pk, session) = rows::session_from_row(row)?;
    Ok((TenantId::new(tenant), pk, session))
}

/// Active sessions whose lease passed at `now` or whose stall is due, at most `limit`.
pub(super) fn due(
    conn: &Connection,
    now: Timestamp,
    limit: u32,
) -> Result<Vec<(TenantId, RowId, Session)>> {
    conn.prepare_cached(&format!(
        "SELECT {SESSION_COLUMNS} FROM sessions WHERE status = 'active' AND \
         (lease_expires_at <= ?1 OR (stall_timeout_ms IS NOT NULL AND \
          stalled = 0 AND progress_changed_at + stall_timeout_ms <= ?1)) \
         LIMIT ?2"
    ))
    .map_err(translate)?
    .query_map(params![now.0, limit], with_tenant)
    .map_err(translate)?
    .collect::<rusqlite::Result<_>>()
    .map_err(translate)
}

/// Whether any active session's lease has passed at `now` (the `sessions_lease` index).
pub(super) fn any_lease_passed(conn: &Connection, now: Timestamp) -> Result<bool> {
    conn.prepare_cached("SELECT 1 FROM sessions WHERE status = 'active' AND lease_expires_at <= ?1")
        .map_err(translate)?
        .exists([now.0])
        .map_err(translate)
}

/// Every active session.
pub(super) fn active(conn: &Connection) -> Result<Vec<(TenantId, RowId, Session)>> {
    conn.prepare_cached(&format!(
        "SELECT {SESSION_COLUMNS} FROM sessions WHERE status = 'active'"
    ))
    .map_err(translate)?
    .query_map([], with_tenant)
    .map_err(translate)?
    .collect::<rusqlite::Result<_>>()
    .map_err(translate)
}

/// When the newest event was recorded.
pub(super) fn newest_event_at(conn: &Connection) -> Result<Option<Timestamp>> {
    conn.query_row(
        "SELECT created_at FROM events ORDER BY seq DESC LIMIT 1",
        [],
        |row| row.get(0).map(Timestamp),
    )
    .optional()
    .map_err(translate)
}

/// SQL for "observed status is `status`", given `?now` bound as parameter `now_index`.
fn status_condition(status: Status, now_index: usize) -> String {
    match status {
        Status::Active => format!("(status = 'active' AND lease_expires_at > ?{now_index})"),
        Status::Incomplete => format!(
            "(status = 'incomplete' OR (status = 'active' AND lease_expires_at <= ?{now_index}))"
        ),
        other => format!("status = '{}'", other.as_str()),
    }
}

/// A tenant's sessions below `before`, newest first, filtered; at most `limit`.
pub(super) fn page(
    conn: &Connection,
    tenant: &TenantId,
    filter: &SessionFilter,
    before: i64,
    limit: u32,
    now: Timestamp,
) -> Result<Vec<(i64, Session)>> {
    let mut sql = format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE tenant = ?1 AND pk < ?2");
    let mut values: Vec<SqlValue> = vec![
        SqlValue::Text(tenant.as_str().to_owned()),
        SqlValue::Integer(before),
        SqlValue::Integer(now.0),
    ];
    sql.push_str(" AND ?3 = ?3");
    if !filter.statuses.is_empty() {
        let any: Vec<String> = filter
            .statuses
            .iter()
            .map(|s| status_condition(*s, 3))
            .collect();
        sql.push_str(&format!(" AND ({})", any.join(" OR ")));
    }
    if let Some(project) = &filter.project_id {
        values.push(SqlValue::Text(project.as_str().to_owned()));
        sql.push_str(&format!(" AND project_id = ?{}", values.len()));
    }
    if let Some(kind) = &filter.kind {
        values.push(SqlValue::Text(kind.clone()));
        sql.push_str(&format!(" AND kind = ?{}", values.len()));
    }
    sql.push_str(&format!(" ORDER BY pk DESC LIMIT {limit}"));
    conn.prepare_cached(&sql)
        .map_err(translate)?
        .query_map(params_from_iter(values), rows::session_from_row)
        .map_err(translate)?
        .collect::<rusqlite::Result<_>>()
        .map_err(translate)
}

/// Recoverable sessions (observed at `now`) below `before`, newest first; at most `limit`.
pub(super) fn recoverable(
    conn: &Connection,
    tenant: &TenantId,
    project: Option<&Id>,
    before: i64,
    limit: u32,
    now: Timestamp,
) -> Result<Vec<(RowId, Session)>> {
    // The first status term repeats the partial index's condition, so SQLite scans only
    // open sessions.
    conn.prepare_cached(&format!(
        "SELECT {SESSION_COLUMNS} FROM sessions WHERE tenant = ?1 AND pk < ?2 \
         AND status <> 'completed' AND status <> 'cancelled' \
         AND (status <> 'active' OR lease_expires_at <= ?3) \
         AND (?5 IS NULL OR project_id = ?5) \
         ORDER BY pk DESC LIMIT ?4"
    ))
    .map_err(translate)?
    .query_map(
        params![
            tenant.as_str(),
            before,
            now.0,
            limit,
            project.map(Id::as_str)
        ],
        rows::session_from_row,
    )
    .map_err(translate)?
    .collect::<rusqlite::Result<_>>()
    .map_err(translate)
}

/// Counts of every tenant, from the counters kept by triggers (migration 0007) plus the
/// leases that passed but are not swept yet (an index range): no table scan.
pub(super) fn gauges(conn: &Connection, now: Timestamp) -> Result<Gauges> {
    let counters: Vec<(String, i64)> = conn
        .prepare_cached("SELECT name, value FROM gauges")
        .map_err(translate)?
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
        .map_err(translate)?
        .collect::<rusqlite::Result<_>>()
        .map_err(translate)?;
    let passed: u64 = conn
        .prepare_cached(
            "SELECT count(*) FROM sessions \
                             WHERE status = 'active' AND lease_expires_at <= ?1",
        )
        .map_err(translate)?
        .query_row([now.0], |row| row.get(0))
        .map_err(translate)?;
    let counter = |name: &str| {
        counters
            .iter()
            .find(|(n, _)| n == name)
            .map_or(0, |(_, v)| u64::try_from(*v).unwrap_or(0))
    };
    let mut gauges = Gauges {
        sessions: Status::ALL
            .into_iter()
            .map(|s| (s, counter(&format!("sessions.{}", s.as_str()))))
            .collect(),
        asset_bytes: counter("asset_bytes"),
        ..Gauges::default()
    };
    for (status, count) in &mut gauges.sessions {
        match status {
            Status::Active => *count = count.saturating_sub(passed),
            Status::Incomplete => *count += passed,
            _ => {}
        }
    }
    let pages: u64 = conn
        .query_row("PRAGMA page_count", [], |row| row.get(0))
        .map_err(translate)?;
    let page_size: u64 = conn
        .query_row("PRAGMA page_size", [], |row| row.get(0))
        .map_err(translate)?;
    gauges.database_bytes = pages * page_size;
    Ok(gauges)
}

/// Counts of one tenant (SPEC §9, stats shape).
pub(super) fn stats(conn: &Connection, tenant: &TenantId, now: Timestamp) -> Result<Stats> {
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
    let mut by_status = conn
        .prepare_cached(
            "SELECT CASE WHEN status = 'active' AND lease_expires_at <= ?2 THEN 'incomplete' \
             ELSE status END, count(*) FROM sessions WHERE tenant = ?1 GROUP BY 1",
        )
        .map_err(translate)?;
    let counts = by_status
        .query_map(params![t, now.0], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, u64>(1)?))
        })
        .map_err(translate)?;
    for row in counts {
        let (status, count) = row.map_err(translate)?;
        if let Some(slot) = stats
            .sessions
            .iter_mut()
            .find(|(s, _)| s.as_str() == status)
        {
            slot.1 = count;
        }
    }
    let grouped = |sql: &str, into: &mut Vec<(String, u64)>| -> Result<()> {
        let mut statement = conn.prepare_cached(sql).map_err(translate)?;
        let rows = statement
            .query_map([t], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, u64>(1)?))
            })
            .map_err(translate)?;
        for row in rows {
            let (key, count) = row.map_err(translate)?;
            match into.iter_mut().find(|(k, _)| *k == key) {
                Some(slot) => slot.1 += count,
                None => into.push((key, count)),
            }
        }
        Ok(())
    };
    grouped(
        "SELECT type, count(*) FROM crashes WHERE tenant = ?1 GROUP BY type",
        &mut stats.crashes_by_type,
    )?;
    grouped(
        "SELECT option, count(*) FROM recoveries WHERE tenant = ?1 GROUP BY option",
        &mut stats.recoveries_by_option,
    )?;
    // What purged sessions had counted (historical counts, SPEC §9).
    for (what, into) in [
        ("crash", &mut stats.crashes_by_type),
        ("recovery", &mut stats.recoveries_by_option),
    ] {
        grouped(
            &format!("SELECT key, n FROM purged_counts WHERE tenant = ?1 AND what = '{what}'"),
            into,
        )?;
    }
    let mut outcomes = Vec::new();
    grouped(
        "SELECT key, n FROM purged_counts WHERE tenant = ?1 AND what = 'outcome'",
        &mut outcomes,
    )?;
    grouped(
        "SELECT coalesce(outcome, 'pending'), count(*) FROM recoveries WHERE tenant = ?1 GROUP BY 1",
        &mut outcomes,
    )?;
    for (outcome, count) in outcomes {
        match outcome.as_str() {
            "succeeded" => stats.recoveries_succeeded = count,
            "failed" => stats.recoveries_failed = count,
            _ => stats.recoveries_pending = count,
        }
    }
    (stats.checkpoints_total, stats.checkpoints_invalid) = conn
        .query_row(
            "SELECT count(*), coalesce(sum(c.quarantined), 0) FROM checkpoints c \
             JOIN sessions s ON s.pk = c.session_pk WHERE s.tenant = ?1",
            [t],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .map_err(translate)?;
    // Assets by their last verification status (POST …/verify refreshes it).
    let mut by_status = conn
        .prepare_cached("SELECT status, count(*) FROM assets WHERE tenant = ?1 GROUP BY status")
        .map_err(translate)?;
    let counted = by_status
        .query_map([t], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, u64>(1)?))
        })
        .map_err(translate)?;
    for row in counted {
        let (status, count) = row.map_err(translate)?;
        stats.assets.total += count;
        match AssetStatus::parse(&status) {
            Some(AssetStatus::Ok) => stats.assets.ok += count,
            Some(AssetStatus::Missing) => stats.assets.missing += count,
            Some(AssetStatus::Corrupt) => stats.assets.corrupt += count,
            None => {}
        }
    }
    let column = |sql: &str| -> Result<Vec<u64>> {
        conn.prepare_cached(sql)
            .map_err(translate)?
            .query_map([t], |row| row.get::<_, i64>(0))
            .map_err(translate)?
            .map(|v| v.map(|v| u64::try_from(v).unwrap_or(0)))
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(translate)
    };
    stats.detection_delay_ms = Distribution::of(column(
        "SELECT detected_at - lease_expires_at FROM crashes \
         WHERE tenant = ?1 AND lease_expires_at IS NOT NULL",
    )?);
    stats.work_lost_ms = Distribution::of(column(
        "SELECT work_lost_ms FROM crashes WHERE tenant = ?1",
    )?);
    Ok(stats)
}
