//! The record half of cleanup. Files are removed afterwards by the caller, and only when
//! no record points at them, so a crash at any moment leaves no record without its bytes.

use lifeboat_core::{RevisionRetention, Timestamp};

use std::collections::HashSet;

use super::conn::{PgConn, column};
use super::{projects, rows};
use crate::{
    CleanupCursor, CleanupReport, CleanupRules, Error, IDEMPOTENCY_KEY_TTL_MS, Result, StoreCheck,
};

/// Sessions, projects or projects' revision histories one cleanup step handles at most.
const STEP_ROWS: u32 = 16;
/// Idempotency keys one cleanup step looks at at most.
const STEP_KEYS: u32 = 4_096;

/// A stored BIGINT that must not be negative.
fn unsigned(value: i64, what: &str) -> Result<u64> {
    u64::try_from(value).map_err(|_| Error::Internal(format!("{what} is negative: {value}")))
}

/// Adds what the crash and recovery rows of session `$1` count to `purged_counts`, before
/// they go with it: those counts are historical (SPEC §9, migration 0005).
const KEEP_COUNTS: &str = "INSERT INTO purged_counts (tenant, what, key, n) \
     SELECT tenant, 'crash', type, count(*) FROM crashes WHERE session_pk = $1 \
     GROUP BY tenant, type \
     UNION ALL SELECT tenant, 'recovery', option, count(*) FROM recoveries \
     WHERE session_pk = $1 GROUP BY tenant, option \
     UNION ALL SELECT tenant, 'outcome', coalesce(outcome, 'pending'), count(*) \
     FROM recoveries WHERE session_pk = $1 GROUP BY tenant, coalesce(outcome, 'pending') \
     ON CONFLICT (tenant, what, key) DO UPDATE SET n = purged_counts.n + EXCLUDED.n";

/// Deletes (in the caller's transaction) one bounded step of what `rules` make eligible,
/// from `cursor` on, and counts it; answers where the next step starts (`None`: done).
pub(super) fn records_step(
    conn: &PgConn<'_>,
    rules: CleanupRules,
    retention: RevisionRetention,
    now: Timestamp,
    cursor: CleanupCursor,
) -> Result<(CleanupReport, Option<CleanupCursor>)> {
    let mut report = CleanupReport::default();
    let next = match cursor {
        CleanupCursor::Sessions(after) => {
            let rows = pks(
                conn,
                "SELECT pk, tenant, id FROM sessions WHERE pk > $1 \
                 AND (status = 'failed' OR status = 'cancelled') AND updated_at <= $2 \
                 ORDER BY pk LIMIT $3",
                after,
                now.minus_ms(rules.finished_session_age_ms).0,
            )?;
            for (pk, tenant, id) in &rows {
                let count = conn.query_one(
                    "SELECT count(*) FROM checkpoints WHERE session_pk = $1",
                    &[pk],
                )?;
                report.checkpoints_pruned += unsigned(column(&count, 0)?, "a count")?;
                delete_assets(conn, tenant, "session", id)?;
                conn.execute("DELETE FROM pinned_files WHERE session_pk = $1", &[pk])?;
                conn.execute(KEEP_COUNTS, &[pk])?;
                // Checkpoints, crashes, recoveries and tokens go with it (CASCADE).
                report.sessions_purged +=
                    conn.execute("DELETE FROM sessions WHERE pk = $1", &[pk])?;
            }
            match rows.last() {
                Some((pk, _, _)) if rows.len() == STEP_ROWS as usize => {
                    CleanupCursor::Sessions(*pk)
                }
                _ => CleanupCursor::Projects(0),
            }
        }
        CleanupCursor::Projects(after) => {
            let rows = pks(
                conn,
                "SELECT pk, tenant, id FROM projects WHERE pk > $1 \
                 AND deleted_at IS NOT NULL AND deleted_at <= $2 ORDER BY pk LIMIT $3",
                after,
                now.minus_ms(rules.deleted_project_age_ms).0,
            )?;
            for (pk, tenant, id) in &rows {
                delete_assets(conn, tenant, "project", id)?;
                report.projects_purged +=
                    conn.execute("DELETE FROM projects WHERE pk = $1", &[pk])?;
            }
            match rows.last() {
                Some((pk, _, _)) if rows.len() == STEP_ROWS as usize => {
                    CleanupCursor::Projects(*pk)
                }
                _ => CleanupCursor::Revisions(0),
            }
        }
        CleanupCursor::Revisions(after) => {
            let live = conn
                .query(
                    "SELECT pk, revision FROM projects WHERE pk > $1 AND deleted_at IS NULL \
                     ORDER BY pk LIMIT $2",
                    &[&after, &i64::from(STEP_ROWS)],
                )?
                .iter()
                .map(|row| {
                    Ok((
                        column::<i64>(row, 0)?,
                        unsigned(column(row, 1)?, "a revision")?,
                    ))
                })
                .collect::<Result<Vec<(i64, u64)>>>()?;
            for (pk, newest) in &live {
                report.revisions_pruned += projects::prune(conn, *pk, *newest, retention, now)?;
            }
            match live.last() {
                Some((pk, _)) if live.len() == STEP_ROWS as usize => CleanupCursor::Revisions(*pk),
                _ => CleanupCursor::Keys(None),
            }
        }
        CleanupCursor::Keys(after) => {
            let cutoff = now.minus_ms(IDEMPOTENCY_KEY_TTL_MS).0;
            let (expired, last) = expired_keys(conn, after, cutoff)?;
            for (tenant, key, route) in &expired {
                // `created_at` again: another node may have replaced the outcome since.
                report.idempotency_keys_expired += conn.execute(
                    "DELETE FROM outcomes WHERE tenant = $1 AND key = $2 AND route = $3 \
                     AND created_at <= $4",
                    &[tenant, key, route, &cutoff],
                )?;
            }
            match last {
                Some(last) => CleanupCursor::Keys(Some(last)),
                None => return Ok((report, None)),
            }
        }
    };
    Ok((report, Some(next)))
}

/// Eligible `(pk, tenant, id)` rows after `after`, one step's worth, locked: a row another
/// node changes meanwhile is checked again, and left out if it no longer qualifies.
fn pks(
    conn: &PgConn<'_>,
    sql: &str,
    after: i64,
    before: i64,
) -> Result<Vec<(i64, String, String)>> {
    conn.query(
        &format!("{sql}{}", conn.for_update()),
        &[&after, &before, &i64::from(STEP_ROWS)],
    )?
    .iter()
    .map(|row| Ok((column(row, 0)?, column(row, 1)?, column(row, 2)?)))
    .collect()
}

fn delete_assets(conn: &PgConn<'_>, tenant: &str, kind: &str, id: &str) -> Result<()> {
    conn.execute(
        "DELETE FROM assets WHERE tenant = $1 AND owner_kind = $2 AND owner_id = $3",
        &[&tenant, &kind, &id],
    )?;
    Ok(())
}

type KeyRow = (String, String, String);

/// Of the next [`STEP_KEYS`] idempotency keys in key order after `after`, the ones created
/// at or before `cutoff`; and the last key looked at, if the table goes on.
fn expired_keys(
    conn: &PgConn<'_>,
    after: Option<KeyRow>,
    cutoff: i64,
) -> Result<(Vec<KeyRow>, Option<KeyRow>)> {
    let (tenant, key, route) = after.unwrap_or_default();
    let rows = conn
        .query(
            "SELECT tenant, key, route, created_at FROM outcomes \
             WHERE (tenant, key, route) > ($1::TEXT, $2::TEXT, $3::TEXT) \
             ORDER BY tenant, key, route LIMIT $4",
            &[&tenant, &key, &route, &i64::from(STEP_KEYS)],
        )?
        .iter()
        .map(|row| {
            Ok((
                column(row, 0)?,
                column(row, 1)?,
                column(row, 2)?,
                column(row, 3)?,
            ))
        })
        .collect::<Result<Vec<(String, String, String, i64)>>>()?;
    let full = rows.len() == STEP_KEYS as usize;
    let last = rows
        .last()
        .filter(|_| full)
        .map(|(t, k, r, _)| (t.clone(), k.clone(), r.clone()));
    let expired = rows
        .into_iter()
        .filter(|(_, _, _, created_at)| *created_at <= cutoff)
        .map(|(t, k, r, _)| (t, k, r))
        .collect();
    Ok((expired, last))
}

/// The read half of a store check (see `Store::check_store`).
pub(super) fn check(conn: &PgConn<'_>) -> Result<StoreCheck> {
    // `integrity` stays empty: PostgreSQL has no `PRAGMA integrity_check` to ask.
    let mut check = StoreCheck::default();
    check.inconsistencies.extend(derived_rows(conn)?);
    let sessions = conn
        .query(
            "SELECT pk, tenant, id, last_seq FROM sessions ORDER BY pk",
            &[],
        )?
        .iter()
        .map(|row| {
            Ok((
                column(row, 0)?,
                column(row, 1)?,
                column(row, 2)?,
                unsigned(column(row, 3)?, "last_seq")?,
            ))
        })
        .collect::<Result<Vec<(i64, String, String, u64)>>>()?;
    for (pk, tenant, id, last_seq) in sessions {
        let checkpoints = rows::all_checkpoints(conn, pk)?;
        let mut seen = HashSet::new();
        for checkpoint in &checkpoints {
            check.checkpoints_checked += 1;
            check.checkpoint_bytes += checkpoint.data.len() as u64;
            if !seen.insert(checkpoint.seq) {
                check.inconsistencies.push(format!(
                    "{tenant}/{id}: seq {} appears twice",
                    checkpoint.seq
                ));
            }
            if checkpoint.seq > last_seq {
                check.inconsistencies.push(format!(
                    "{tenant}/{id}: checkpoint {} is past the session's last_seq {last_seq}",
                    checkpoint.seq
                ));
            }
            // Damaged now, and not yet quarantined (quarantined ones were reported before).
            if lifeboat_core::Sha256::of(checkpoint.data.as_bytes()) != checkpoint.sha256
                && !quarantined(conn, pk, checkpoint.seq)?
            {
                check
                    .damaged
                    .push((tenant.clone(), id.clone(), checkpoint.seq));
            }
        }
    }
    Ok(check)
}

/// Rows kept in step by code that disagree with what they derive from: pins of
/// checkpoints that are gone. (There are no stored `/metrics` counters to compare here:
/// PostgreSQL counts the gauges from the rows.)
fn derived_rows(conn: &PgConn<'_>) -> Result<Vec<String>> {
    let mut found = Vec::new();
    let row = conn.query_one(
        "SELECT count(*) FROM pinned_files f WHERE NOT EXISTS \
         (SELECT 1 FROM checkpoints c WHERE c.session_pk = f.session_pk AND c.seq = f.seq)",
        &[],
    )?;
    let stray_pins = unsigned(column(&row, 0)?, "a count")?;
    if stray_pins > 0 {
        found.push(format!("{stray_pins} pins name checkpoints that are gone"));
    }
    Ok(found)
}

fn quarantined(conn: &PgConn<'_>, session_pk: i64, seq: u64) -> Result<bool> {
    let seq = i64::try_from(seq).map_err(|_| Error::Internal(format!("seq {seq} too large")))?;
    let row = conn.query_one(
        "SELECT quarantined FROM checkpoints WHERE session_pk = $1 AND seq = $2",
        &[&session_pk, &seq],
    )?;
    Ok(column::<i64>(&row, 0)? != 0)
}
