//! API key records.

use lifeboat_core::{Id, Status, TenantId, Timestamp};
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::translate;
use crate::{ApiKey, AuditEntry, ProjectToken, Result, SessionToken};

const KEY_COLUMNS: &str = "id, tenant, secret_sha256, scopes, created_at, revoked_at";

fn key_from_row(row: &Row<'_>) -> rusqlite::Result<ApiKey> {
    let scopes: String = row.get(3)?;
    Ok(ApiKey {
        id: row.get(0)?,
        tenant: TenantId::new(row.get::<_, String>(1)?),
        secret_sha256: row.get(2)?,
        scopes: scopes
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        created_at: Timestamp(row.get(4)?),
        revoked_at: row.get::<_, Option<i64>>(5)?.map(Timestamp),
    })
}

pub(super) fn insert(conn: &Connection, key: &ApiKey) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO api_keys (id, tenant, secret_sha256, scopes, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )
    .map_err(translate)?
    .execute(params![
        key.id,
        key.tenant.as_str(),
        key.secret_sha256,
        key.scopes.join(","),
        key.created_at.0
    ])
    .map_err(translate)?;
    Ok(())
}

pub(super) fn find(conn: &Connection, id: &str) -> Result<Option<ApiKey>> {
    conn.prepare_cached(&format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE id = ?1"))
        .map_err(translate)?
        .query_row([id], key_from_row)
        .optional()
        .map_err(translate)
}

/// Up to `limit` keys (of `tenant`, or of all) with an id after `after`, by id.
pub(super) fn list(
    conn: &Connection,
    tenant: Option<&TenantId>,
    after: &str,
    limit: u32,
) -> Result<Vec<ApiKey>> {
    conn.prepare_cached(&format!(
        "SELECT {KEY_COLUMNS} FROM api_keys WHERE (?1 IS NULL OR tenant = ?1) AND id > ?2 \
         ORDER BY id LIMIT ?3"
    ))
    .map_err(translate)?
    .query_map(
        params![tenant.map(TenantId::as_str), after, limit],
        key_from_row,
    )
    .map_err(translate)?
    .collect::<rusqlite::Result<_>>()
    .map_err(translate)
}

pub(super) fn revoke(conn: &Connection, id: &str, now: Timestamp) -> Result<()> {
    conn.prepare_cached("UPDATE api_keys SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL")
        .map_err(translate)?
        .execute(params![id, now.0])
        .map_err(translate)?;
    Ok(())
}

/// Appends an audit entry.
pub(super) fn audit(conn: &Connection, entry: &AuditEntry) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO audit (tenant, at, actor, action, resource, detail) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )
    .map_err(translate)?
    .execute(params![
        entry.tenant.as_str(),
        entry.at.0,
        entry.actor,
        entry.action,
        entry.resource,
        entry.detail.to_string()
    ])
    .map_err(translate)?;
    Ok(())
}

/// Audit entries below `before` (a seq), newest first.
pub(super) fn audit_trail(
    conn: &Connection,
    tenant: Option<&TenantId>,
    before: i64,
    limit: u32,
) -> Result<Vec<(i64, AuditEntry)>> {
    conn.prepare_cached(
        "SELECT seq, tenant, at, actor, action, resource, detail FROM audit \
         WHERE (?1 IS NULL OR tenant = ?1) AND seq < ?2 ORDER BY seq DESC LIMIT ?3",
    )
    .map_err(translate)?
    .query_map(
        params![tenant.map(TenantId::as_str), before, limit],
        |row| {
            let detail: String = row.get(6)?;
            let seq: i64 = row.get(0)?;
            Ok((
                seq,
                AuditEntry {
                    seq,
                    tenant: TenantId::new(row.get::<_, String>(1)?),
                    at: Timestamp(row.get(2)?),
                    actor: row.get(3)?,
                    action: row.get(4)?,
                    resource: row.get(5)?,
                    detail: serde_json::from_str(&detail).unwrap_or(serde_json::Value::Null),
                },
            ))
        },
    )
    .map_err(translate)?
    .collect::<rusqlite::Result<_>>()
    .map_err(translate)
}

pub(super) fn insert_session_token(
    conn: &Connection,
    session_pk: i64,
    token: &SessionToken,
) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO session_tokens (id, tenant, session_id, secret_sha256, created_at, \
         session_pk, attempt) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )
    .map_err(translate)?
    .execute(params![
        token.id,
        token.tenant.as_str(),
        token.session_id.as_str(),
        token.secret_sha256,
        token.created_at.0,
        session_pk,
        token.attempt,
    ])
    .map_err(translate)?;
    Ok(())
}

/// A session token with its session's status, found through the session row it was made
/// for (a token whose session is gone is gone with it).
pub(super) fn find_session_token(
    conn: &Connection,
    id: &str,
) -> Result<Option<(SessionToken, Status)>> {
    conn.prepare_cached(
        "SELECT t.id, t.tenant, t.session_id, t.secret_sha256, t.created_at, t.attempt, \
         s.status FROM session_tokens t JOIN sessions s ON s.pk = t.session_pk \
         WHERE t.id = ?1 AND s.tenant = t.tenant AND s.id = t.session_id",
    )
    .map_err(translate)?
    .query_row([id], |row| {
        let bad = |index: usize, e: String| {
            rusqlite::Error::FromSqlConversionFailure(index, rusqlite::types::Type::Text, e.into())
        };
        let session: String = row.get(2)?;
        let status: String = row.get(6)?;
        let token = SessionToken {
            id: row.get(0)?,
            tenant: TenantId::new(row.get::<_, String>(1)?),
            session_id: Id::parse(&session).map_err(|e| bad(2, e.to_string()))?,
            secret_sha256: row.get(3)?,
            created_at: Timestamp(row.get(4)?),
            attempt: row.get(5)?,
        };
        let status = Status::parse(&status).ok_or_else(|| bad(6, status.clone()))?;
        Ok((token, status))
    })
    .optional()
    .map_err(translate)
}

pub(super) fn insert_project_token(conn: &Connection, token: &ProjectToken) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO project_tokens (id, tenant, project_id, secret_sha256, scopes, \
         created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )
    .map_err(translate)?
    .execute(params![
        token.id,
        token.tenant.as_str(),
        token.project_id.as_str(),
        token.secret_sha256,
        token.scopes.join(","),
        token.created_at.0,
        token.expires_at.0,
    ])
    .map_err(translate)?;
    Ok(())
}

pub(super) fn find_project_token(conn: &Connection, id: &str) -> Result<Option<ProjectToken>> {
    conn.prepare_cached(
        "SELECT id, tenant, project_id, secret_sha256, scopes, created_at, expires_at, \
         revoked_at FROM project_tokens WHERE id = ?1",
    )
    .map_err(translate)?
    .query_row([id], |row| {
        let project: String = row.get(2)?;
        let scopes: String = row.get(4)?;
        Ok(ProjectToken {
            id: row.get(0)?,
            tenant: TenantId::new(row.get::<_, String>(1)?),
            project_id: Id::parse(&project).map_err(|e| {
                rusqlite::Error::FromSqlConversionFailure(
                    2,
                    rusqlite::types::Type::Text,
                    e.to_string().into(),
                )
            })?,
            secret_sha256: row.get(3)?,
            scopes: scopes
                .split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
            created_at: Timestamp(row.get(5)?),
            expires_at: Timestamp(row.get(6)?),
            revoked_at: row.get::<_, Option<i64>>(7)?.map(Timestamp),
        })
    })
    .optional()
    .map_err(translate)
}

pub(super) fn revoke_project_token(conn: &Connection, id: &str, now: Timestamp) -> Result<()> {
    conn.prepare_cached(
        "UPDATE project_tokens SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
    )
    .map_err(translate)?
    .execute(params![id, now.0])
    .map_err(translate)?;
    Ok(())
}

pub(super) fn purge_project_tokens(
    conn: &Connection,
    before: Timestamp,
    limit: u32,
) -> Result<u64> {
    let deleted = conn
        .prepare_cached(
            "DELETE FROM project_tokens WHERE id IN \
             (SELECT id FROM project_tokens WHERE expires_at < ?1 LIMIT ?2)",
        )
        .map_err(translate)?
        .execute(params![before.0, limit])
        .map_err(translate)?;
    Ok(deleted as u64)
}
