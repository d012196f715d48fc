//! API key records in PostgreSQL.

use lifeboat_core::{Id, Status, TenantId, Timestamp};
use tokio_postgres::Row;

use super::conn::{PgConn, column};
use crate::{ApiKey, AuditEntry, Error, ProjectToken, Result, SessionToken};

const KEY_COLUMNS: &str = "id, tenant, secret_sha256, scopes, created_at, revoked_at";

/// Scopes as stored: comma-separated.
fn scopes_from(text: &str) -> Vec<String> {
    text.split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

fn key_from_row(row: &Row) -> Result<ApiKey> {
    let scopes: String = column(row, 3)?;
    Ok(ApiKey {
        id: column(row, 0)?,
        tenant: TenantId::new(column::<String>(row, 1)?),
        secret_sha256: column(row, 2)?,
        scopes: scopes_from(&scopes),
        created_at: Timestamp(column(row, 4)?),
        revoked_at: column::<Option<i64>>(row, 5)?.map(Timestamp),
    })
}

pub(super) fn insert(conn: &PgConn<'_>, key: &ApiKey) -> Result<()> {
    conn.execute(
        "INSERT INTO api_keys (id, tenant, secret_sha256, scopes, created_at) \
         VALUES ($1, $2, $3, $4, $5)",
        &[
            &key.id,
            &key.tenant.as_str(),
            &key.secret_sha256,
            &key.scopes.join(","),
            &key.created_at.0,
        ],
    )?;
    Ok(())
}

/// A key, if recorded (locked in a write job, which reads it to revoke it).
pub(super) fn find(conn: &PgConn<'_>, id: &str) -> Result<Option<ApiKey>> {
    conn.query_opt(
        &format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE id = $1{}",
            conn.for_update()
        ),
        &[&id],
    )?
    .map(|row| key_from_row(&row))
    .transpose()
}

/// Up to `limit` keys (of `tenant`, or of all) with an id after `after`, by id.
pub(super) fn list(
    conn: &PgConn<'_>,
    tenant: Option<&TenantId>,
    after: &str,
    limit: u32,
) -> Result<Vec<ApiKey>> {
    conn.query(
        &format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE ($1::TEXT IS NULL OR tenant = $1) \
             AND id > $2 ORDER BY id LIMIT $3"
        ),
        &[&tenant.map(TenantId::as_str), &after, &i64::from(limit)],
    )?
    .iter()
    .map(key_from_row)
    .collect()
}

pub(super) fn revoke(conn: &PgConn<'_>, id: &str, now: Timestamp) -> Result<()> {
    conn.execute(
        "UPDATE api_keys SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL",
        &[&id, &now.0],
    )?;
    Ok(())
}

/// Appends an audit entry.
pub(super) fn audit(conn: &PgConn<'_>, entry: &AuditEntry) -> Result<()> {
    conn.execute(
        "INSERT INTO audit (tenant, at, actor, action, resource, detail) \
         VALUES ($1, $2, $3, $4, $5, $6)",
        &[
            &entry.tenant.as_str(),
            &entry.at.0,
            &entry.actor,
            &entry.action,
            &entry.resource,
            &entry.detail.to_string(),
        ],
    )?;
    Ok(())
}

/// Audit entries below `before` (a seq), newest first.
pub(super) fn audit_trail(
    conn: &PgConn<'_>,
    tenant: Option<&TenantId>,
    before: i64,
    limit: u32,
) -> Result<Vec<(i64, AuditEntry)>> {
    conn.query(
        "SELECT seq, tenant, at, actor, action, resource, detail FROM audit \
         WHERE ($1::TEXT IS NULL OR tenant = $1) AND seq < $2 ORDER BY seq DESC LIMIT $3",
        &[&tenant.map(TenantId::as_str), &before, &i64::from(limit)],
    )?
    .iter()
    .map(|row| {
        let detail: String = column(row, 6)?;
        let seq: i64 = column(row, 0)?;
        Ok((
            seq,
            AuditEntry {
                seq,
                tenant: TenantId::new(column::<String>(row, 1)?),
                at: Timestamp(column(row, 2)?),
                actor: column(row, 3)?,
                action: column(row, 4)?,
                resource: column(row, 5)?,
                detail: serde_json::from_str(&detail).unwrap_or(serde_json::Value::Null),
            },
        ))
    })
    .collect()
}

pub(super) fn insert_session_token(
    conn: &PgConn<'_>,
    session_pk: i64,
    token: &SessionToken,
) -> Result<()> {
    conn.execute(
        "INSERT INTO session_tokens (id, tenant, session_id, secret_sha256, created_at, \
         session_pk, attempt) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        &[
            &token.id,
            &token.tenant.as_str(),
            &token.session_id.as_str(),
            &token.secret_sha256,
            &token.created_at.0,
            &session_pk,
            &i64::from(token.attempt),
        ],
    )?;
    Ok(())
}

/// A session token with its session's status, found through the session row it was made
/// for (a token whose session is gone is gone with it).
pub(super) fn find_session_token(
    conn: &PgConn<'_>,
    id: &str,
) -> Result<Option<(SessionToken, Status)>> {
    let Some(row) = conn.query_opt(
        "SELECT t.id, t.tenant, t.session_id, t.secret_sha256, t.created_at, t.attempt, \
         s.status FROM session_tokens t JOIN sessions s ON s.pk = t.session_pk \
         WHERE t.id = $1 AND s.tenant = t.tenant AND s.id = t.session_id",
        &[&id],
    )?
    else {
        return Ok(None);
    };
    let bad =
        |index: usize, e: String| Error::Internal(format!("session_tokens column {index}: {e}"));
    let session: String = column(&row, 2)?;
    let attempt: i64 = column(&row, 5)?;
    let status: String = column(&row, 6)?;
    let token = SessionToken {
        id: column(&row, 0)?,
        tenant: TenantId::new(column::<String>(&row, 1)?),
        session_id: Id::parse(&session).map_err(|e| bad(2, e.to_string()))?,
        secret_sha256: column(&row, 3)?,
        created_at: Timestamp(column(&row, 4)?),
        attempt: u32::try_from(attempt).map_err(|e| bad(5, e.to_string()))?,
    };
    let status = Status::parse(&status).ok_or_else(|| bad(6, status.clone()))?;
    Ok(Some((token, status)))
}

pub(super) fn insert_project_token(conn: &PgConn<'_>, token: &ProjectToken) -> Result<()> {
    conn.execute(
        "INSERT INTO project_tokens (id, tenant, project_id, secret_sha256, scopes, \
         created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        &[
            &token.id,
            &token.tenant.as_str(),
            &token.project_id.as_str(),
            &token.secret_sha256,
            &token.scopes.join(","),
            &token.created_at.0,
            &token.expires_at.0,
        ],
    )?;
    Ok(())
}

/// A project token, if recorded (locked in a write job, which reads it to revoke it).
pub(super) fn find_project_token(conn: &PgConn<'_>, id: &str) -> Result<Option<ProjectToken>> {
    let Some(row) = conn.query_opt(
        &format!(
            "SELECT id, tenant, project_id, secret_sha256, scopes, created_at, expires_at, \
             revoked_at FROM project_tokens WHERE id = $1{}",
            conn.for_update()
        ),
        &[&id],
    )?
    else {
        return Ok(None);
    };
    let project: String = column(&row, 2)?;
    let scopes: String = column(&row, 4)?;
    Ok(Some(ProjectToken {
        id: column(&row, 0)?,
        tenant: TenantId::new(column::<String>(&row, 1)?),
        project_id: Id::parse(&project)
            .map_err(|e| Error::Internal(format!("project_tokens column 2: {e}")))?,
        secret_sha256: column(&row, 3)?,
        scopes: scopes_from(&scopes),
        created_at: Timestamp(column(&row, 5)?),
        expires_at: Timestamp(column(&row, 6)?),
        revoked_at: column::<Option<i64>>(&row, 7)?.map(Timestamp),
    }))
}

pub(super) fn revoke_project_token(conn: &PgConn<'_>, id: &str, now: Timestamp) -> Result<()> {
    conn.execute(
        "UPDATE project_tokens SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL",
        &[&id, &now.0],
    )?;
    Ok(())
}

pub(super) fn purge_project_tokens(
    conn: &PgConn<'_>,
    before: Timestamp,
    limit: u32,
) -> Result<u64> {
    conn.execute(
        "DELETE FROM project_tokens WHERE id IN \
         (SELECT id FROM project_tokens WHERE expires_at < $1 LIMIT $2)",
        &[&before.0, &i64::from(limit)],
    )
}
