//! The record half of cleanup. Files are removed afterwards by the caller, and only when
//! no record points at them, so a crash at any moment leaves no record without its bytes.

use lifeboat_core::{RevisionRetention, Timestamp};
use rusqlite::{Connection, params};

use std::collections::HashSet;

use super::{projects, rows, translate};
use crate::{
    CleanupCursor, CleanupReport, CleanupRules, IDEMPOTENCY_KEY_TTL_MS, Result, StoreCheck,
};

/// Sessions, projects or projects' revision histories one cleanup step handles at most.
const STEP_ROWS: u32 = 16;
/// Idempotency keys one cleanup step looks at at most.
const STEP_KEYS: u32 = 4_096;

/// Adds what the crash and recovery rows of session `?1` count to `purged_counts`, before
/// they go with it: those counts are historical (SPEC §9, migration 0010).
const KEEP_COUNTS: &str = "INSERT INTO purged_counts (tenant, what, key, n) \
     SELECT tenant, 'crash', type, count(*) FROM crashes WHERE session_pk = ?1 \
     GROUP BY tenant, type \
     UNION ALL SELECT tenant, 'recovery', option, count(*) FROM recoveries \
     WHERE session_pk = ?1 GROUP BY tenant, option \
     UNION ALL SELECT tenant, 'outcome', coalesce(outcome, 'pending'), count(*) \
     FROM recoveries WHERE session_pk = ?1 GROUP BY tenant, coalesce(outcome, 'pending') \
     ON CONFLICT (tenant, what, key) DO UPDATE SET n = purged_counts.n + excluded.n";

/// Deletes (in the caller's transaction) one bounded step of what `rules` make eligible,
/// from `cursor` on, and counts it; answers where the next step starts (`None`: done).
pub(super) fn records_step(
    conn: &Connection,
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
                "SELECT pk, tenant, id FROM sessions WHERE pk > ?1 \
                 AND (status = 'failed' OR status = 'cancelled') AND updated_at <= ?2 \
                 ORDER BY pk LIMIT ?3",
                after,
                now.minus_ms(rules.finished_session_age_ms).0,
            )?;
            for (pk, tenant, id) in &rows {
                report.checkpoints_pruned += conn
                    .prepare_cached("SELECT count(*) FROM checkpoints WHERE session_pk = ?1")
                    .map_err(translate)?
                    .query_row([pk], |row| row.get::<_, u64>(0))
                    .map_err(translate)?;
                delete_assets(conn, tenant, "session", id)?;
                conn.prepare_cached("DELETE FROM pinned_files WHERE session_pk = ?1")
                    .map_err(translate)?
                    .execute([pk])
                    .map_err(translate)?;
                conn.prepare_cached(KEEP_COUNTS)
                    .map_err(translate)?
                    .execute([pk])
                    .map_err(translate)?;
                // Checkpoints, crashes, recoveries and tokens go with it (CASCADE).
                conn.prepare_cached("DELETE FROM sessions WHERE pk = ?1")
                    .map_err(translate)?
                    .execute([pk])
                    .map_err(translate)?;
                report.sessions_purged += 1;
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
                "SELECT pk, tenant, id FROM projects WHERE pk > ?1 \
                 AND deleted_at IS NOT NULL AND deleted_at <= ?2 ORDER BY pk LIMIT ?3",
                after,
                now.minus_ms(rules.deleted_project_age_ms).0,
            )?;
            for (pk, tenant, id) in &rows {
                delete_assets(conn, tenant, "project", id)?;
                conn.prepare_cached("DELETE FROM projects WHERE pk = ?1")
                    .map_err(translate)?
                    .execute([pk])
                    .map_err(translate)?;
                report.projects_purged += 1;
            }
            match rows.last() {
                Some((pk, _, _)) if rows.len() == STEP_ROWS as usize => {
                    CleanupCursor::Projects(*pk)
                }
                _ => CleanupCursor::Revisions(0),
            }
        }
        CleanupCursor::Revisions(after) => {
            let live: Vec<(i64, u64)> = conn
                .prepare_cached(
                    "SELECT pk, revision FROM projects WHERE pk > ?1 AND deleted_at IS NULL \
                     ORDER BY pk LIMIT ?2",
                )
                .map_err(translate)?
                .query_map(params![after, STEP_ROWS], |row| {
                    Ok((row.get(0)?, row.get(1)?))
                })
                .map_err(translate)?
                .collect::<rusqlite::Result<_>>()
                .map_err(translate)?;
            for (pk, newest) in &live {
                report.revisions_pruned += projects::prune(conn, *pk, *newest, retention, now)?;
            }
            match live.last() {
                Some((pk, _)) if live.len() == STEP_ROWS as usize => CleanupCursor::Revisions(*pk),
                _ => CleanupCursor::Keys(None),
            }
        }
        CleanupCursor::Keys(after) => {
            let (expired, last) = expired_keys(conn, after, now)?;
            let mut delete = conn
                .prepare_cached(
                    "DELETE FROM outcomes WHERE tenant = ?1 AND key = ?2 AND route = ?3",
                )
                .map_err(translate)?;
            for (tenant, key, route) in &expired {
                delete
                    .execute(params![tenant, key, route])
                    .map_err(translate)?;
            }
            report.idempotency_keys_expired = expired.len() as u64;
            match last {
                Some(last) => CleanupCursor::Keys(Some(last)),
                None => return Ok((report, None)),
            }
        }
    };
    Ok((report, Some(next)))
}

/// Eligible `(pk, tenant, id)` rows after `after`, one step's worth.
fn pks(
    conn: &Connection,
    sql: &str,
    after: i64,
    before: i64,
) -> Result<Vec<(i64, String, String)>> {
    conn.prepare_cached(sql)
        .map_err(translate)?
        .query_map(params![after, before, STEP_ROWS], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?))
        })
        .map_err(translate)?
        .collect::<rusqlite::Result<_>>()
        .map_err(translate)
}

fn delete_assets(conn: &Connection, tenant: &str, kind: &str, id: &str) -> Result<()> {
    conn.prepare_cached(
        "DELETE FROM assets WHERE tenant = ?1 AND owner_kind = ?2 AND owner_id = ?3",
    )
    .map_err(translate)?
    .execute(params![tenant, kind, id])
    .map_err(translate)?;
    Ok(())
}

type KeyRow = (String, String, String);

/// Of the next [`STEP_KEYS`] idempotency keys in key order after `after`, the expired
/// ones; and the last key looked at, if the table goes on.
fn expired_keys(
    conn: &Connection,
    after: Option<KeyRow>,
    now: Timestamp,
) -> Result<(Vec<KeyRow>, Option<KeyRow>)> {
    let (tenant, key, route) = after.unwrap_or_default();
    let rows: Vec<(String, String, String, i64)> = conn
        .prepare_cached(
            "SELECT tenant, key, route, created_at FROM outcomes \
             WHERE (tenant, key, route) > (?1, ?2, ?3) ORDER BY tenant, key, route LIMIT ?4",
        )
        .map_err(translate)?
        .query_map(params![tenant, key, route, STEP_KEYS], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
        })
        .map_err(translate)?
        .collect::<rusqlite::Result<_>>()
        .map_err(translate)?;
    let full = rows.len() == STEP_KEYS as usize;
    let last = rows
        .last()
        .filter(|_| full)
        .map(|(t, k, r, _)| (t.clone(), k.clone(), r.clone()));
    let cutoff = now.minus_ms(IDEMPOTENCY_KEY_TTL_MS).0;
    let expired = rows
        .into_iter()
        .filter(|(_, _, _, created_at)| *created_at <= cutoff)
        .map(|(t, k, r, _)| (t, k, r))
        .collect();
    Ok((expired, last))
}

/// The read half of a store check (see `Store::check_store`).
pub(super) fn check(conn: &Connection) -> Result<StoreCheck> {
    let mut check = StoreCheck::default();
    let integrity: Vec<String> = conn
        .prepare("PRAGMA integrity_check")
        .map_err(translate)?
        .query_map([], |row| row.get(0))
        .map_err(translate)?
        .collect::<rusqlite::Result<_>>()
        .map_err(translate)?;
    check.integrity = integrity.into_iter().filter(|line| line != "ok").collect();
    check.inconsistencies.extend(derived_rows(conn)?);
    let sessions: Vec<(i64, String, String, u64)> = conn
        .prepare("SELECT pk, tenant, id, last_seq FROM sessions")
        .map_err(translate)?
        .query_map([], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
        })
        .map_err(translate)?
        .collect::<rusqlite::Result<_>>()
        .map_err(translate)?;
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

/// Rows kept in step by code or triggers that disagree with what they derive from: pins
/// of checkpoints that are gone, and the `/metrics` counters.
fn derived_rows(conn: &Connection) -> Result<Vec<String>> {
    let mut found = Vec::new();
    let stray_pins: u64 = conn
        .query_row(
            "SELECT count(*) FROM pinned_files f WHERE NOT EXISTS \
             (SELECT 1 FROM checkpoints c WHERE c.session_pk = f.session_pk AND c.seq = f.seq)",
            [],
            |row| row.get(0),
        )
        .map_err(translate)?;
    if stray_pins > 0 {
        found.push(format!("{stray_pins} pins name checkpoints that are gone"));
    }
    let counters: Vec<(String, i64, i64)> = conn
        .prepare(
            "SELECT g.name, g.value, CASE g.name WHEN 'asset_bytes' \
                 THEN (SELECT coalesce(sum(size), 0) FROM assets) \
                 ELSE (SELECT count(*) FROM sessions s WHERE 'sessions.' || s.status = g.name) END \
             FROM gauges g",
        )
        .map_err(translate)?
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
        .map_err(translate)?
        .collect::<rusqlite::Result<_>>()
        .map_err(translate)?;
    for (name, kept, counted) in counters {
        if kept != counted {
            found.push(format!(
                "counter {name} is {kept}, the rows count {counted}"
            ));
        }
    }
    Ok(found)
}

fn quarantined(conn: &Connection, session_pk: i64, seq: u64) -> Result<bool> {
    conn.prepare_cached("SELECT quarantined FROM checkpoints WHERE session_pk = ?1 AND seq = ?2")
        .map_err(translate)?
        .query_row(params![session_pk, seq], |row| row.get(0))
        .map_err(translate)
}
