//! The record half of cleanup. Files are removed afterwards by the caller, and only when
//! no record points at them, so a crash at any moment leaves no record without its bytes.

use lifeboat_core::{RevisionRetention, Timestamp};
use rusqlite::{Connection, params};

use std::collections::HashSet;

use super::{projects, rows, translate};
use crate::{CleanupReport, CleanupRules, FileRef, IDEMPOTENCY_KEY_TTL_MS, Result, StoreCheck};

/// Deletes (in the caller's transaction) what `rules` make eligible, and counts it.
pub(super) fn records(
    conn: &Connection,
    rules: CleanupRules,
    retention: RevisionRetention,
    now: Timestamp,
) -> Result<CleanupReport> {
    let mut report = CleanupReport::default();
    let ids = |sql: &str, before: i64| -> Result<Vec<(i64, String, String)>> {
        conn.prepare(sql)
            .map_err(translate)?
            .query_map(params![before], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?))
            })
            .map_err(translate)?
            .collect::<rusqlite::Result<_>>()
            .map_err(translate)
    };
    let delete_assets = |tenant: &str, kind: &str, id: &str| -> Result<()> {
        conn.prepare_cached(
            "DELETE FROM assets WHERE tenant = ?1 AND owner_kind = ?2 AND owner_id = ?3",
        )
        .map_err(translate)?
        .execute(params![tenant, kind, id])
        .map_err(translate)?;
        Ok(())
    };

    let finished = ids(
        "SELECT pk, tenant, id FROM sessions \
         WHERE (status = 'failed' OR status = 'cancelled') AND updated_at <= ?1",
        now.minus_ms(rules.finished_session_age_ms).0,
    )?;
    for (pk, tenant, id) in finished {
        report.checkpoints_pruned += conn
            .query_row(
                "SELECT count(*) FROM checkpoints WHERE session_pk = ?1",
                [pk],
                |row| row.get::<_, u64>(0),
            )
            .map_err(translate)?;
        delete_assets(&tenant, "session", &id)?;
        // Checkpoints, crashes and recoveries go with it (ON DELETE CASCADE).
        conn.execute("DELETE FROM sessions WHERE pk = ?1", [pk])
            .map_err(translate)?;
        report.sessions_purged += 1;
    }

    let deleted = ids(
        "SELECT pk, tenant, id FROM projects WHERE deleted_at IS NOT NULL AND deleted_at <= ?1",
        now.minus_ms(rules.deleted_project_age_ms).0,
    )?;
    for (pk, tenant, id) in deleted {
        delete_assets(&tenant, "project", &id)?;
        conn.execute("DELETE FROM projects WHERE pk = ?1", [pk])
            .map_err(translate)?;
        report.projects_purged += 1;
    }

    let live: Vec<(i64, u64)> = conn
        .prepare("SELECT pk, revision FROM projects WHERE deleted_at IS NULL")
        .map_err(translate)?
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
        .map_err(translate)?
        .collect::<rusqlite::Result<_>>()
        .map_err(translate)?;
    for (pk, newest) in live {
        report.revisions_pruned += projects::prune(conn, pk, newest, retention, now)?;
    }

    report.idempotency_keys_expired = conn
        .execute(
            "DELETE FROM idempotency_keys WHERE created_at <= ?1",
            [now.minus_ms(IDEMPOTENCY_KEY_TTL_MS).0],
        )
        .map_err(translate)? as u64;
    Ok(report)
}

/// Whether any asset record names this file.
pub(super) fn referenced(conn: &Connection, file: &FileRef) -> Result<bool> {
    let (sql, key) = match file {
        FileRef::Blob(sha256) => (
            "SELECT 1 FROM assets WHERE storage = 'blob' AND sha256 = ?1",
            sha256,
        ),
        FileRef::Appendable(key) => (
            "SELECT 1 FROM assets WHERE storage = 'appendable' AND location = ?1",
            key,
        ),
    };
    conn.prepare_cached(sql)
        .map_err(translate)?
        .exists([key])
        .map_err(translate)
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

/// Marks damaged checkpoints invalid for good; answers how many.
pub(super) fn quarantine(conn: &Connection, damaged: &[(String, String, u64)]) -> Result<u64> {
    let mut marked = 0;
    for (tenant, id, seq) in damaged {
        marked += conn
            .prepare_cached(
                "UPDATE checkpoints SET quarantined = 1 WHERE seq = ?3 AND session_pk = \
                 (SELECT pk FROM sessions WHERE tenant = ?1 AND id = ?2)",
            )
            .map_err(translate)?
            .execute(params![tenant, id, seq])
            .map_err(translate)? as u64;
    }
    Ok(marked)
}

fn quarantined(conn: &Connection, session_pk: i64, seq: u64) -> Result<bool> {
    conn.prepare_cached("SELECT quarantined FROM checkpoints WHERE session_pk = ?1 AND seq = ?2")
        .map_err(translate)?
        .query_row(params![session_pk, seq], |row| row.get(0))
        .map_err(translate)
}
