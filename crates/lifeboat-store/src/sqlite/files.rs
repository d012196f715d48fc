//! File versions in SQLite: the ones verification found damaged, and whether a record
//! (an asset, or a retained checkpoint's pin) still names a stored file.

use std::collections::HashSet;

use lifeboat_core::{FileVersion, Timestamp};
use rusqlite::{Connection, params};

use super::translate;
use crate::{FileRef, Result};

/// Of `versions`, those a verification found damaged.
pub(super) fn damaged(conn: &Connection, versions: &[FileVersion]) -> Result<HashSet<FileVersion>> {
    let mut statement = conn
        .prepare_cached("SELECT 1 FROM damaged_files WHERE storage = ?1 AND key = ?2 AND size = ?3")
        .map_err(translate)?;
    let mut found = HashSet::new();
    for version in versions {
        if statement
            .exists(params![version.storage, version.key, version.size])
            .map_err(translate)?
        {
            found.insert(version.clone());
        }
    }
    Ok(found)
}

/// Records what a verification found: a damaged version is remembered (recovery will not
/// resume from it), an intact one forgotten.
pub(super) fn record(
    conn: &Connection,
    version: &FileVersion,
    damaged: bool,
    now: Timestamp,
) -> Result<()> {
    let sql = if damaged {
        "INSERT OR IGNORE INTO damaged_files (storage, key, size, found_at) VALUES (?1, ?2, ?3, ?4)"
    } else {
        "DELETE FROM damaged_files WHERE storage = ?1 AND key = ?2 AND size = ?3 AND ?4 = ?4"
    };
    conn.prepare_cached(sql)
        .map_err(translate)?
        .execute(params![version.storage, version.key, version.size, now.0])
        .map_err(translate)?;
    Ok(())
}

/// A whole upload's good bytes were just stored again under their SHA-256: the blob is
/// healed for every record that names it.
pub(super) fn heal_blob(conn: &Connection, sha256: &str, now: Timestamp) -> Result<()> {
    conn.prepare_cached("DELETE FROM damaged_files WHERE storage = 'blob' AND key = ?1")
        .map_err(translate)?
        .execute([sha256])
        .map_err(translate)?;
    conn.prepare_cached(
        "UPDATE assets SET status = 'ok', verified_at = ?2 \
         WHERE storage = 'blob' AND sha256 = ?1 AND status <> 'ok'",
    )
    .map_err(translate)?
    .execute(params![sha256, now.0])
    .map_err(translate)?;
    Ok(())
}

/// Whether any asset record, or any retained checkpoint's pin, names this file. Index
/// probes only (`assets_blob`, `assets_location`, `pinned_files_key`).
///
/// With `purged`, records a cleanup would purge do not count (`failed` and `cancelled`
/// sessions updated at or before the first cutoff, projects deleted at or before the
/// second): what a dry run asks, since it leaves those records in place.
pub(super) fn referenced(
    conn: &Connection,
    file: &FileRef,
    purged: Option<(i64, i64)>,
) -> Result<bool> {
    // One statement per storage, each written so that its partial index applies.
    let (storage, key, asset_sql) = match file {
        FileRef::Blob(sha256) => (
            "blob",
            sha256,
            "SELECT 1 FROM assets a WHERE a.storage = 'blob' AND a.sha256 = ?1",
        ),
        FileRef::Appendable(key) => (
            "appendable",
            key,
            "SELECT 1 FROM assets a WHERE a.storage <> 'blob' AND a.location = ?1 \
             AND a.storage = 'appendable'",
        ),
    };
    let (sessions_before, projects_before) = purged.unwrap_or((i64::MIN, i64::MIN));
    let by_asset = conn
        .prepare_cached(&format!(
            "{asset_sql} \
             AND NOT EXISTS (SELECT 1 FROM sessions s WHERE a.owner_kind = 'session' \
                 AND s.tenant = a.tenant AND s.id = a.owner_id \
                 AND (s.status = 'failed' OR s.status = 'cancelled') AND s.updated_at <= ?2) \
             AND NOT EXISTS (SELECT 1 FROM projects p WHERE a.owner_kind = 'project' \
                 AND p.tenant = a.tenant AND p.id = a.owner_id \
                 AND p.deleted_at IS NOT NULL AND p.deleted_at <= ?3)"
        ))
        .map_err(translate)?
        .exists(params![key, sessions_before, projects_before])
        .map_err(translate)?;
    if by_asset {
        return Ok(true);
    }
    conn.prepare_cached(
        "SELECT 1 FROM pinned_files f JOIN sessions s ON s.pk = f.session_pk \
         WHERE f.storage = ?1 AND f.key = ?2 \
         AND NOT ((s.status = 'failed' OR s.status = 'cancelled') AND s.updated_at <= ?3)",
    )
    .map_err(translate)?
    .exists(params![storage, key, sessions_before])
    .map_err(translate)
}

/// Indexes the pins of a session's imported checkpoints in `pinned_files`. An archive of
/// an earlier version names assets only; its checkpoints pin the versions imported with
/// them (as migration 0007 did for stored ones).
pub(super) fn index_imported_pins(conn: &Connection, session_pk: i64) -> Result<()> {
    conn.execute(
        "UPDATE checkpoints SET assets = ( \
             SELECT json_group_array(json_object( \
                 'name', j.value, 'size', coalesce(a.size, 0), \
                 'sha256', coalesce(a.sha256, printf('%064d', 0)), \
                 'storage', coalesce(a.storage, 'blob'), 'location', a.location)) \
             FROM json_each(checkpoints.assets) j \
             JOIN sessions s ON s.pk = checkpoints.session_pk \
             LEFT JOIN assets a ON a.tenant = s.tenant AND a.owner_kind = 'session' \
                 AND a.owner_id = s.id AND a.name = j.value) \
         WHERE session_pk = ?1 AND json_type(assets, '$[0]') = 'text'",
        [session_pk],
    )
    .map_err(translate)?;
    conn.execute(
        "INSERT OR IGNORE INTO pinned_files (session_pk, seq, storage, key) \
         SELECT c.session_pk, c.seq, j.value ->> 'storage', \
             CASE j.value ->> 'storage' WHEN 'blob' THEN j.value ->> 'sha256' \
             ELSE j.value ->> 'location' END \
         FROM checkpoints c, json_each(c.assets) j WHERE c.session_pk = ?1",
        [session_pk],
    )
    .map_err(translate)?;
    Ok(())
}
