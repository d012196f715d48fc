//! Projects, revisions and schemas in SQLite. Run on the writer (saves) or a reader.

use lifeboat_core::{
    Chain, Delta, Id, Name, Project, RevisionRetention, Saved, SchemaRef, TenantId, Timestamp,
    rebuild,
};
use rusqlite::{Connection, OptionalExtension, Row, params};
use serde_json::Value;

use super::translate;
use crate::rows::ProjectRow;
use crate::{Error, ProjectInfo, Result, RevisionInfo};

const PROJECT_COLUMNS: &str = "pk, id, title, schema_name, schema_version, revision, state, \
     size_bytes, created_at, updated_at, deleted_at, chain_deltas, chain_bytes";

fn schema_of(row: &Row<'_>, name: usize) -> rusqlite::Result<Option<SchemaRef>> {
    let name_text: Option<String> = row.get(name)?;
    let version_text: Option<String> = row.get(name + 1)?;
    let bad = |index: usize, e: lifeboat_core::Error| {
        rusqlite::Error::FromSqlConversionFailure(index, rusqlite::types::Type::Text, Box::new(e))
    };
    match (name_text, version_text) {
        (Some(n), Some(v)) => Ok(Some(SchemaRef {
            name: Name::parse(&n).map_err(|e| bad(name, e))?,
            version: Name::parse(&v).map_err(|e| bad(name + 1, e))?,
        })),
        _ => Ok(None),
    }
}

fn id_of(row: &Row<'_>, index: usize) -> rusqlite::Result<Id> {
    let raw: String = row.get(index)?;
    Id::parse(&raw).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(index, rusqlite::types::Type::Text, Box::new(e))
    })
}

fn stored_from_row(row: &Row<'_>) -> rusqlite::Result<ProjectRow> {
    let state: String = row.get(6)?;
    let project = Project {
        id: id_of(row, 1)?,
        title: row.get(2)?,
        schema: schema_of(row, 3)?,
        revision: row.get(5)?,
        state: Value::Null,
        size_bytes: row.get(7)?,
        created_at: Timestamp(row.get(8)?),
        updated_at: Timestamp(row.get(9)?),
        deleted_at: row.get::<_, Option<i64>>(10)?.map(Timestamp),
    };
    let chain = Chain {
        deltas: row.get(11)?,
        delta_bytes: row.get(12)?,
    };
    Ok(ProjectRow {
        row: row.get(0)?,
        project,
        chain,
        state_json: state,
    })
}

/// Loads a project row (deleted ones too), its state not yet parsed.
pub(super) fn load(conn: &Connection, tenant: &TenantId, id: &Id) -> Result<Option<ProjectRow>> {
    conn.prepare_cached(&format!(
        "SELECT {PROJECT_COLUMNS} FROM projects WHERE tenant = ?1 AND id = ?2"
    ))
    .map_err(translate)?
    .query_row(params![tenant.as_str(), id.as_str()], stored_from_row)
    .optional()
    .map_err(translate)
}

/// Writes the project row and its new revision. `pk` is `None` for a new project.
pub(super) fn write(
    conn: &Connection,
    tenant: &TenantId,
    pk: Option<i64>,
    saved: &Saved,
    chain: Chain,
) -> Result<i64> {
    let (project, delta, state) = (&saved.project, &saved.delta, &saved.state_json);
    let schema = project.schema.as_ref();
    let pk = match pk {
        Some(pk) => {
            conn.prepare_cached(
                "UPDATE projects SET title = ?2, schema_name = ?3, schema_version = ?4, \
                 revision = ?5, state = ?6, size_bytes = ?7, created_at = ?8, updated_at = ?9, \
                 deleted_at = NULL, chain_deltas = ?10, chain_bytes = ?11 WHERE pk = ?1",
            )
            .map_err(translate)?
            .execute(params![
                pk,
                project.title,
                schema.map(|s| s.name.as_str()),
                schema.map(|s| s.version.as_str()),
                project.revision,
                state,
                project.size_bytes,
                project.created_at.0,
                project.updated_at.0,
                chain.deltas,
                chain.delta_bytes,
            ])
            .map_err(translate)?;
            pk
        }
        None => {
            conn.prepare_cached(
                "INSERT INTO projects (tenant, id, title, schema_name, schema_version, revision, \
                 state, size_bytes, created_at, updated_at, chain_deltas, chain_bytes) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            )
            .map_err(translate)?
            .execute(params![
                tenant.as_str(),
                project.id.as_str(),
                project.title,
                schema.map(|s| s.name.as_str()),
                schema.map(|s| s.version.as_str()),
                project.revision,
                state,
                project.size_bytes,
                project.created_at.0,
                project.updated_at.0,
                chain.deltas,
                chain.delta_bytes,
            ])
            .map_err(translate)?;
            conn.last_insert_rowid()
        }
    };
    conn.prepare_cached(
        "INSERT INTO revisions (project_pk, revision, kind, body, size_bytes, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )
    .map_err(translate)?
    .execute(params![
        pk,
        project.revision,
        delta.kind(),
        delta.body(),
        project.size_bytes,
        project.updated_at.0,
    ])
    .map_err(translate)?;
    Ok(pk)
}

/// Deletes revisions that retention no longer requires, in the save's transaction.
///
/// Only whole stretches before a snapshot go, so every kept revision can still be
/// rebuilt: the revisions older than the newest snapshot at or before the oldest revision
/// retention keeps.
pub(super) fn prune(
    conn: &Connection,
    pk: i64,
    newest: u64,
    retention: RevisionRetention,
    now: Timestamp,
) -> Result<u64> {
    // Walks revisions oldest first and stops at the first young one: it reads only the
    // old revisions still kept, never the whole young history (`+created_at` keeps SQLite
    // from answering through the age index, which reads every young revision).
    let oldest_young: Option<u64> = conn
        .prepare_cached(
            "SELECT revision FROM revisions WHERE project_pk = ?1 AND +created_at >= ?2 \
             ORDER BY revision LIMIT 1",
        )
        .map_err(translate)?
        .query_row(params![pk, now.minus_ms(retention.max_age_ms).0], |row| {
            row.get(0)
        })
        .optional()
        .map_err(translate)?;
    let keep_from = retention.oldest_kept(newest, oldest_young);
    let base: Option<u64> = conn
        .prepare_cached(
            "SELECT MAX(revision) FROM revisions \
             WHERE project_pk = ?1 AND kind = 'snapshot' AND revision <= ?2",
        )
        .map_err(translate)?
        .query_row(params![pk, keep_from], |row| row.get(0))
        .map_err(translate)?;
    let Some(base) = base else {
        return Ok(0);
    };
    let deleted = conn
        .prepare_cached("DELETE FROM revisions WHERE project_pk = ?1 AND revision < ?2")
        .map_err(translate)?
        .execute(params![pk, base])
        .map_err(translate)?;
    Ok(deleted as u64)
}

/// Rebuilds the state at `revision` from the newest snapshot at or before it.
pub(super) fn state_at(
    conn: &Connection,
    pk: i64,
    id: &Id,
    revision: u64,
) -> Result<(Value, RevisionInfo)> {
    let missing = || Error::NotFound {
        what: "revision",
        id: format!("{id}@{revision}"),
    };
    let base: u64 = conn
        .prepare_cached(
            "SELECT MAX(revision) FROM revisions \
             WHERE project_pk = ?1 AND kind = 'snapshot' AND revision <= ?2",
        )
        .map_err(translate)?
        .query_row(params![pk, revision], |row| row.get::<_, Option<u64>>(0))
        .map_err(translate)?
        .ok_or_else(missing)?;
    // No ORDER BY: sorted here (see `write_checkpoint` on re-prepared statements).
    let mut rows: Vec<(u64, String, String, u64, i64)> = conn
        .prepare_cached(
            "SELECT revision, kind, body, size_bytes, created_at FROM revisions \
             WHERE project_pk = ?1 AND revision >= ?2 AND revision <= ?3",
        )
        .map_err(translate)?
        .query_map(params![pk, base, revision], |row| {
            Ok((
                row.get(0)?,
                row.get(1)?,
                row.get(2)?,
                row.get(3)?,
                row.get(4)?,
            ))
        })
        .map_err(translate)?
        .collect::<rusqlite::Result<_>>()
        .map_err(translate)?;
    rows.sort_unstable_by_key(|row| row.0);
    let Some(last) = rows.last() else {
        return Err(missing());
    };
    if last.0 != revision {
        return Err(missing());
    }
    let info = RevisionInfo {
        revision,
        created_at: Timestamp(last.4),
        size_bytes: last.3,
    };
    let damaged = |at: u64| Error::Internal(format!("project {id}: revision {at} is damaged"));
    let mut deltas = rows
        .into_iter()
        .map(|(at, kind, body, _, _)| Delta::load(&kind, &body).ok_or_else(|| damaged(at)));
    let Some(Delta::Snapshot(snapshot)) = deltas.next().transpose()? else {
        return Err(damaged(base));
    };
    let deltas = deltas.collect::<Result<Vec<_>>>()?;
    let state = rebuild(snapshot, deltas)
        .map_err(|e| Error::Internal(format!("project {id}: revision {revision}: {e}")))?;
    Ok((state, info))
}

/// Soft delete.
pub(super) fn mark_deleted(conn: &Connection, pk: i64, now: Timestamp) -> Result<()> {
    conn.prepare_cached("UPDATE projects SET deleted_at = ?2 WHERE pk = ?1")
        .map_err(translate)?
        .execute(params![pk, now.0])
        .map_err(translate)?;
    Ok(())
}

/// Live projects, newest first, from `before` (a pk).
pub(super) fn list(
    conn: &Connection,
    tenant: &TenantId,
    before: i64,
    limit: u32,
) -> Result<Vec<(i64, ProjectInfo)>> {
    conn.prepare_cached(
        "SELECT pk, id, title, schema_name, schema_version, revision, size_bytes, created_at, \
         updated_at FROM projects \
         WHERE tenant = ?1 AND pk < ?2 AND deleted_at IS NULL ORDER BY pk DESC LIMIT ?3",
    )
    .map_err(translate)?
    .query_map(params![tenant.as_str(), before, limit], |row| {
        Ok((
            row.get(0)?,
            ProjectInfo {
                id: id_of(row, 1)?,
                title: row.get(2)?,
                schema: schema_of(row, 3)?,
                revision: row.get(5)?,
                size_bytes: row.get(6)?,
                created_at: Timestamp(row.get(7)?),
                updated_at: Timestamp(row.get(8)?),
            },
        ))
    })
    .map_err(translate)?
    .collect::<rusqlite::Result<_>>()
    .map_err(translate)
}

/// A project's revisions, newest first, below `before`.
pub(super) fn revisions(
    conn: &Connection,
    pk: i64,
    before: i64,
    limit: u32,
) -> Result<Vec<(i64, RevisionInfo)>> {
    conn.prepare_cached(
        "SELECT revision, size_bytes, created_at FROM revisions \
         WHERE project_pk = ?1 AND revision < ?2 ORDER BY revision DESC LIMIT ?3",
    )
    .map_err(translate)?
    .query_map(params![pk, before, limit], |row| {
        let revision: i64 = row.get(0)?;
        Ok((
            revision,
            RevisionInfo {
                revision: row.get(0)?,
                size_bytes: row.get(1)?,
                created_at: Timestamp(row.get(2)?),
            },
        ))
    })
    .map_err(translate)?
    .collect::<rusqlite::Result<_>>()
    .map_err(translate)
}

/// A registered schema's body.
pub(super) fn schema_body(
    conn: &Connection,
    tenant: &TenantId,
    schema: &SchemaRef,
) -> Result<Option<Value>> {
    let body: Option<String> = conn
        .prepare_cached("SELECT body FROM schemas WHERE tenant = ?1 AND name = ?2 AND version = ?3")
        .map_err(translate)?
        .query_row(
            params![
                tenant.as_str(),
                schema.name.as_str(),
                schema.version.as_str()
            ],
            |row| row.get(0),
        )
        .optional()
        .map_err(translate)?;
    body.map(|body| {
        serde_json::from_str(&body).map_err(|e| {
            Error::Internal(format!("schema {schema}: stored body does not parse: {e}"))
        })
    })
    .transpose()
}

/// Registers a schema version.
pub(super) fn insert_schema(
    conn: &Connection,
    tenant: &TenantId,
    schema: &SchemaRef,
    body: &Value,
    now: Timestamp,
) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO schemas (tenant, name, version, body, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
    )
    .map_err(translate)?
    .execute(params![
        tenant.as_str(),
        schema.name.as_str(),
        schema.version.as_str(),
        body.to_string(),
        now.0
    ])
    .map_err(translate)?;
    Ok(())
}
