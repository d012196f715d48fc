//! File versions in PostgreSQL: the ones verification found damaged, and whether a record
//! (an asset, or a retained checkpoint's pin) still names a stored file.

use std::collections::HashSet;

use lifeboat_core::{FileVersion, Timestamp};

use super::conn::PgConn;
use crate::{Error, FileRef, Result};

/// A version's size as stored.
fn stored_size(version: &FileVersion) -> Result<i64> {
    i64::try_from(version.size).map_err(|e| {
        Error::Internal(format!(
            "{} {}: size {}: {e}",
            version.storage, version.key, version.size
        ))
    })
}

/// Of `versions`, those a verification found damaged.
pub(super) fn damaged(conn: &PgConn<'_>, versions: &[FileVersion]) -> Result<HashSet<FileVersion>> {
    let mut found = HashSet::new();
    for version in versions {
        let size = stored_size(version)?;
        if conn
            .query_opt(
                "SELECT 1 FROM damaged_files WHERE storage = $1 AND key = $2 AND size = $3",
                &[&version.storage, &version.key, &size],
            )?
            .is_some()
        {
            found.insert(version.clone());
        }
    }
    Ok(found)
}

/// Records what a verification found: a damaged version is remembered (recovery will not
/// resume from it), an intact one forgotten.
pub(super) fn record(
    conn: &PgConn<'_>,
    version: &FileVersion,
    damaged: bool,
    now: Timestamp,
) -> Result<()> {
    let size = stored_size(version)?;
    if damaged {
        conn.execute(
            "INSERT INTO damaged_files (storage, key, size, found_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT DO NOTHING",
            &[&version.storage, &version.key, &size, &now.0],
        )?;
    } else {
        conn.execute(
            "DELETE FROM damaged_files WHERE storage = $1 AND key = $2 AND size = $3",
            &[&version.storage, &version.key, &size],
        )?;
    }
    Ok(())
}

/// A whole upload's good bytes were just stored again under their SHA-256: the blob is
/// healed for every record that names it.
pub(super) fn heal_blob(conn: &PgConn<'_>, sha256: &str, now: Timestamp) -> Result<()> {
    conn.execute(
        "DELETE FROM damaged_files WHERE storage = 'blob' AND key = $1",
        &[&sha256],
    )?;
    conn.execute(
        "UPDATE assets SET status = 'ok', verified_at = $2 \
         WHERE storage = 'blob' AND sha256 = $1 AND status <> 'ok'",
        &[&sha256, &now.0],
    )?;
    Ok(())
}

/// Whether any asset record, or any retained checkpoint's pin, names this file. Index
/// probes only (`assets_blob`, `assets_location`, `pinned_files_key`).
///
/// With `purged`, records a cleanup would purge do not count (`failed` and `cancelled`
/// sessions updated at or before the first cutoff, projects deleted at or before the
/// second): what a dry run asks, since it leaves those records in place.
pub(super) fn referenced(
    conn: &PgConn<'_>,
    file: &FileRef,
    purged: Option<(i64, i64)>,
) -> Result<bool> {
    // One statement per storage, each written so that its partial index applies.
    let (storage, key, asset_sql) = match file {
        FileRef::Blob(sha256) => (
            "blob",
            sha256,
            "SELECT 1 FROM assets a WHERE a.storage = 'blob' AND a.sha256 = $1",
        ),
        FileRef::Appendable(key) => (
            "appendable",
            key,
            "SELECT 1 FROM assets a WHERE a.storage <> 'blob' AND a.location = $1 \
             AND a.storage = 'appendable'",
        ),
    };
    let (sessions_before, projects_before) = purged.unwrap_or((i64::MIN, i64::MIN));
    let by_asset = conn
        .query_opt(
            &format!(
                "{asset_sql} \
                 AND NOT EXISTS (SELECT 1 FROM sessions s WHERE a.owner_kind = 'session' \
                     AND s.tenant = a.tenant AND s.id = a.owner_id \
                     AND (s.status = 'failed' OR s.status = 'cancelled') AND s.updated_at <= $2) \
                 AND NOT EXISTS (SELECT 1 FROM projects p WHERE a.owner_kind = 'project' \
                     AND p.tenant = a.tenant AND p.id = a.owner_id \
                     AND p.deleted_at IS NOT NULL AND p.deleted_at <= $3) \
                 LIMIT 1"
            ),
            &[key, &sessions_before, &projects_before],
        )?
        .is_some();
    if by_asset {
        return Ok(true);
    }
    Ok(conn
        .query_opt(
            "SELECT 1 FROM pinned_files f JOIN sessions s ON s.pk = f.session_pk \
             WHERE f.storage = $1 AND f.key = $2 \
             AND NOT ((s.status = 'failed' OR s.status = 'cancelled') AND s.updated_at <= $3) \
             LIMIT 1",
            &[&storage, key, &sessions_before],
        )?
        .is_some())
}

/// Indexes the pins of a session's imported checkpoints in `pinned_files`. An archive of
/// an earlier version names assets only; its checkpoints pin the versions imported with
/// them (as migration 0007 did for stored ones).
pub(super) fn index_imported_pins(conn: &PgConn<'_>, session_pk: i64) -> Result<()> {
    // Checkpoints whose pins are bare names get `{name, size, sha256, storage, location}`
    // objects, in the names' order (jsonb prints those keys in this order).
    conn.execute(
        "UPDATE checkpoints SET assets = ( \
             SELECT jsonb_agg(jsonb_build_object( \
                 'name', j.value, 'size', coalesce(a.size, 0), \
                 'sha256', coalesce(a.sha256, repeat('0', 64)), \
                 'storage', coalesce(a.storage, 'blob'), 'location', a.location) \
                 ORDER BY j.n)::TEXT \
             FROM json_array_elements_text(checkpoints.assets::json) WITH ORDINALITY j (value, n) \
             JOIN sessions s ON s.pk = checkpoints.session_pk \
             LEFT JOIN assets a ON a.tenant = s.tenant AND a.owner_kind = 'session' \
                 AND a.owner_id = s.id AND a.name = j.value) \
         WHERE session_pk = $1 AND json_typeof(assets::json -> 0) = 'string'",
        &[&session_pk],
    )?;
    // A pin without a storage or key is skipped (SQLite's INSERT OR IGNORE skips the
    // NOT NULL violation).
    conn.execute(
        "INSERT INTO pinned_files (session_pk, seq, storage, key) \
         SELECT session_pk, seq, storage, key FROM ( \
             SELECT c.session_pk, c.seq, j.value ->> 'storage' AS storage, \
                 CASE j.value ->> 'storage' WHEN 'blob' THEN j.value ->> 'sha256' \
                 ELSE j.value ->> 'location' END AS key \
             FROM checkpoints c, json_array_elements(c.assets::json) j (value) \
             WHERE c.session_pk = $1) pins \
         WHERE storage IS NOT NULL AND key IS NOT NULL \
         ON CONFLICT DO NOTHING",
        &[&session_pk],
    )?;
    Ok(())
}
