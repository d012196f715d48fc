//! Projects, revisions and schemas in PostgreSQL. Run in a write job (saves) or a read.

use lifeboat_core::{
    Chain, Delta, Id, Name, Project, RevisionRetention, Saved, SchemaRef, TenantId, Timestamp,
    rebuild,
};
use serde_json::Value;
use tokio_postgres::Row;

use super::conn::{PgConn, column};
use super::rows::{bigint, unsigned};
use crate::rows::ProjectRow;
use crate::{Error, ProjectInfo, Result, RevisionInfo};

const PROJECT_COLUMNS: &str = "pk, id, title, schema_name, schema_version, revision, state, \
     size_bytes, created_at, updated_at, deleted_at, chain_deltas, chain_bytes";

fn schema_of(row: &Row, name: usize) -> Result<Option<SchemaRef>> {
    let name_text: Option<String> = column(row, name)?;
    let version_text: Option<String> = column(row, name + 1)?;
    let bad =
        |index: usize, e: lifeboat_core::Error| Error::Internal(format!("column {index}: {e}"));
    match (name_text, version_text) {
        (Some(n), Some(v)) => Ok(Some(SchemaRef {
            name: Name::parse(&n).map_err(|e| bad(name, e))?,
            version: Name::parse(&v).map_err(|e| bad(name + 1, e))?,
        })),
        _ => Ok(None),
    }
}

fn id_of(row: &Row, index: usize) -> Result<Id> {
    let raw: String = column(row, index)?;
    Id::parse(&raw).map_err(|e| Error::Internal(format!("column {index}: {e}")))
}

fn stored_from_row(row: &Row) -> Result<ProjectRow> {
    let state: String = column(row, 6)?;
    let project = Project {
        id: id_of(row, 1)?,
        title: column(row, 2)?,
        schema: schema_of(row, 3)?,
        revision: unsigned(row, 5)?,
        state: Value::Null,
        size_bytes: unsigned(row, 7)?,
        created_at: Timestamp(column(row, 8)?),
        updated_at: Timestamp(column(row, 9)?),
        deleted_at: column::<Option<i64>>(row, 10)?.map(Timestamp),
    };
    let chain = Chain {
        deltas: unsigned(row, 11)?,
        delta_bytes: unsigned(row, 12)?,
    };
    Ok(ProjectRow {
        row: column(row, 0)?,
        project,
        chain,
        state_json: state,
    })
}

/// Loads a project row (deleted ones too), its state not yet parsed; locked in a write.
pub(super) fn load(conn: &PgConn<'_>, tenant: &TenantId, id: &Id) -> Result<Option<ProjectRow>> {
    conn.query_opt(
        &format!(
            "SELECT {PROJECT_COLUMNS} FROM projects WHERE tenant = $1 AND id = $2{}",
            conn.for_update()
        ),
        &[&tenant.as_str(), &id.as_str()],
    )?
    .as_ref()
    .map(stored_from_row)
    .transpose()
}

/// Writes the project row and its new revision. `pk` is `None` for a new project.
pub(super) fn write(
    conn: &PgConn<'_>,
    tenant: &TenantId,
    pk: Option<i64>,
    saved: &Saved,
    chain: Chain,
) -> Result<i64> {
    let (project, delta, state) = (&saved.project, &saved.delta, &saved.state_json);
    let schema_name = project.schema.as_ref().map(|s| s.name.as_str());
    let schema_version = project.schema.as_ref().map(|s| s.version.as_str());
    let revision = bigint(project.revision)?;
    let size_bytes = bigint(project.size_bytes)?;
    let deltas = bigint(chain.deltas)?;
    let delta_bytes = bigint(chain.delta_bytes)?;
    let pk = match pk {
        Some(pk) => {
            conn.execute(
                "UPDATE projects SET title = $2, schema_name = $3, schema_version = $4, \
                 revision = $5, state = $6, size_bytes = $7, created_at = $8, updated_at = $9, \
                 deleted_at = NULL, chain_deltas = $10, chain_bytes = $11 WHERE pk = $1",
                &[
                    &pk,
                    &project.title,
                    &schema_name,
                    &schema_version,
                    &revision,
                    state,
                    &size_bytes,
                    &project.created_at.0,
                    &project.updated_at.0,
                    &deltas,
                    &delta_bytes,
                ],
            )?;
            pk
        }
        None => {
            let row = conn.query_one(
                "INSERT INTO projects (tenant, id, title, schema_name, schema_version, revision, \
                 state, size_bytes, created_at, updated_at, chain_deltas, chain_bytes) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) RETURNING pk",
                &[
                    &tenant.as_str(),
                    &project.id.as_str(),
                    &project.title,
                    &schema_name,
                    &schema_version,
                    &revision,
                    state,
                    &size_bytes,
                    &project.created_at.0,
                    &project.updated_at.0,
                    &deltas,
                    &delta_bytes,
                ],
            )?;
            column(&row, 0)?
        }
    };
    conn.execute(
        "INSERT INTO revisions (project_pk, revision, kind, body, size_bytes, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
        &[
            &pk,
            &revision,
            &delta.kind(),
            &delta.body(),
            &size_bytes,
            &project.updated_at.0,
        ],
    )?;
    Ok(pk)
}

/// Deletes revisions that retention no longer requires, in the save's transaction.
///
/// Only whole stretches before a snapshot go, so every kept revision can still be
/// rebuilt: the revisions older than the newest snapshot at or before the oldest revision
/// retention keeps.
pub(super) fn prune(
    conn: &PgConn<'_>,
    pk: i64,
    newest: u64,
    retention: RevisionRetention,
    now: Timestamp,
) -> Result<u64> {
    // Walks revisions oldest first and stops at the first young one: it reads only the
    // old revisions still kept, never the whole young history (`created_at + 0` keeps the
    // planner from answering through the age index, which reads every young revision).
    let oldest_young: Option<u64> = conn
        .query_opt(
            "SELECT revision FROM revisions WHERE project_pk = $1 AND created_at + 0 >= $2 \
             ORDER BY revision LIMIT 1",
            &[&pk, &now.minus_ms(retention.max_age_ms).0],
        )?
        .map(|row| unsigned(&row, 0))
        .transpose()?;
    let keep_from = bigint(retention.oldest_kept(newest, oldest_young))?;
    let base: Option<i64> = column(
        &conn.query_one(
            "SELECT MAX(revision) FROM revisions \
             WHERE project_pk = $1 AND kind = 'snapshot' AND revision <= $2",
            &[&pk, &keep_from],
        )?,
        0,
    )?;
    let Some(base) = base else {
        return Ok(0);
    };
    conn.execute(
        "DELETE FROM revisions WHERE project_pk = $1 AND revision < $2",
        &[&pk, &base],
    )
}

/// Rebuilds the state at `revision` from the newest snapshot at or before it.
pub(super) fn state_at(
    conn: &PgConn<'_>,
    pk: i64,
    id: &Id,
    revision: u64,
) -> Result<(Value, RevisionInfo)> {
    let missing = || Error::NotFound {
        what: "revision",
        id: format!("{id}@{revision}"),
    };
    let Ok(at) = i64::try_from(revision) else {
        return Err(missing());
    };
    let base: i64 = column::<Option<i64>>(
        &conn.query_one(
            "SELECT MAX(revision) FROM revisions \
             WHERE project_pk = $1 AND kind = 'snapshot' AND revision <= $2",
            &[&pk, &at],
        )?,
        0,
    )?
    .ok_or_else(missing)?;
    let base_revision = u64::try_from(base)
        .map_err(|_| Error::Internal(format!("project {id}: revision {base} is negative")))?;
    // No ORDER BY, as in SQLite: sorted here.
    let mut rows: Vec<(u64, String, String, u64, i64)> = conn
        .query(
            "SELECT revision, kind, body, size_bytes, created_at FROM revisions \
             WHERE project_pk = $1 AND revision >= $2 AND revision <= $3",
            &[&pk, &base, &at],
        )?
        .iter()
        .map(|row| {
            Ok((
                unsigned(row, 0)?,
                column(row, 1)?,
                column(row, 2)?,
                unsigned(row, 3)?,
                column(row, 4)?,
            ))
        })
        .collect::<Result<_>>()?;
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
        return Err(damaged(base_revision));
    };
    let deltas = deltas.collect::<Result<Vec<_>>>()?;
    let state = rebuild(snapshot, deltas)
        .map_err(|e| Error::Internal(format!("project {id}: revision {revision}: {e}")))?;
    Ok((state, info))
}

/// Soft delete.
pub(super) fn mark_deleted(conn: &PgConn<'_>, pk: i64, now: Timestamp) -> Result<()> {
    conn.execute(
        "UPDATE projects SET deleted_at = $2 WHERE pk = $1",
        &[&pk, &now.0],
    )?;
    Ok(())
}

/// Live projects, newest first, from `before` (a pk).
pub(super) fn list(
    conn: &PgConn<'_>,
    tenant: &TenantId,
    before: i64,
    limit: u32,
) -> Result<Vec<(i64, ProjectInfo)>> {
    conn.query(
        "SELECT pk, id, title, schema_name, schema_version, revision, size_bytes, created_at, \
         updated_at FROM projects \
         WHERE tenant = $1 AND pk < $2 AND deleted_at IS NULL ORDER BY pk DESC LIMIT $3",
        &[&tenant.as_str(), &before, &i64::from(limit)],
    )?
    .iter()
    .map(|row| {
        Ok((
            column(row, 0)?,
            ProjectInfo {
                id: id_of(row, 1)?,
                title: column(row, 2)?,
                schema: schema_of(row, 3)?,
                revision: unsigned(row, 5)?,
                size_bytes: unsigned(row, 6)?,
                created_at: Timestamp(column(row, 7)?),
                updated_at: Timestamp(column(row, 8)?),
            },
        ))
    })
    .collect()
}

/// A project's revisions, newest first, below `before`.
pub(super) fn revisions(
    conn: &PgConn<'_>,
    pk: i64,
    before: i64,
    limit: u32,
) -> Result<Vec<(i64, RevisionInfo)>> {
    conn.query(
        "SELECT revision, size_bytes, created_at FROM revisions \
         WHERE project_pk = $1 AND revision < $2 ORDER BY revision DESC LIMIT $3",
        &[&pk, &before, &i64::from(limit)],
    )?
    .iter()
    .map(|row| {
        let revision: i64 = column(row, 0)?;
        Ok((
            revision,
            RevisionInfo {
                revision: unsigned(row, 0)?,
                size_bytes: unsigned(row, 1)?,
                created_at: Timestamp(column(row, 2)?),
            },
        ))
    })
    .collect()
}

/// A registered schema's body.
pub(super) fn schema_body(
    conn: &PgConn<'_>,
    tenant: &TenantId,
    schema: &SchemaRef,
) -> Result<Option<Value>> {
    let body: Option<String> = conn
        .query_opt(
            "SELECT body FROM schemas WHERE tenant = $1 AND name = $2 AND version = $3",
            &[
                &tenant.as_str(),
                &schema.name.as_str(),
                &schema.version.as_str(),
            ],
        )?
        .map(|row| column(&row, 0))
        .transpose()?;
    body.map(|body| {
        serde_json::from_str(&body).map_err(|e| {
            Error::Internal(format!("schema {schema}: stored body does not parse: {e}"))
        })
    })
    .transpose()
}

/// Registers a schema version.
pub(super) fn insert_schema(
    conn: &PgConn<'_>,
    tenant: &TenantId,
    schema: &SchemaRef,
    body: &Value,
    now: Timestamp,
) -> Result<()> {
    conn.execute(
        "INSERT INTO schemas (tenant, name, version, body, created_at) VALUES ($1, $2, $3, $4, $5)",
        &[
            &tenant.as_str(),
            &schema.name.as_str(),
            &schema.version.as_str(),
            &body.to_string(),
            &now.0,
        ],
    )?;
    Ok(())
}
