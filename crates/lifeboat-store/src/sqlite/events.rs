//! The event log: domain events written in the same transaction as the change they
//! describe, read back in `seq` order by the event stream.

use lifeboat_core::{TenantId, Timestamp};
use rusqlite::{Connection, params};
use serde_json::Value;

use super::translate;
use crate::rows::Subject;
use crate::{Event, EventFilter, Result};

/// The log keeps this many newest events: the replay window of `Last-Event-ID`.
const EVENTS_KEPT: i64 = 100_000;

/// Records an event in the caller's transaction.
pub(super) fn record(
    conn: &Connection,
    tenant: &TenantId,
    kind: &str,
    subject: Subject<'_>,
    data: &Value,
    now: Timestamp,
) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO events (tenant, type, session_id, project_id, data, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )
    .map_err(translate)?
    .execute(params![
        tenant.as_str(),
        kind,
        subject.session_id,
        subject.project_id,
        data.to_string(),
        now.0
    ])
    .map_err(translate)?;
    conn.prepare_cached("DELETE FROM events WHERE seq <= ?1")
        .map_err(translate)?
        .execute(params![conn.last_insert_rowid() - EVENTS_KEPT])
        .map_err(translate)?;
    Ok(())
}

/// Events after `after`, oldest first, at most `limit`; of one tenant and filter, or of
/// everyone (`None`).
pub(super) fn read(
    conn: &Connection,
    scope: Option<(&TenantId, &EventFilter)>,
    after: i64,
    limit: u32,
) -> Result<Vec<Event>> {
    let (tenant, session, project) = match scope {
        Some((tenant, filter)) => (
            Some(tenant.as_str()),
            filter.session_id.as_ref().map(|s| s.as_str()),
            filter.project_id.as_ref().map(|p| p.as_str()),
        ),
        None => (None, None, None),
    };
    let mut events: Vec<Event> = conn
        .prepare_cached(
            "SELECT seq, tenant, type, session_id, project_id, data, created_at FROM events \
             WHERE seq > ?1 AND (?2 IS NULL OR tenant = ?2) \
             AND (?3 IS NULL OR session_id = ?3) AND (?4 IS NULL OR project_id = ?4) \
             ORDER BY seq LIMIT ?5",
        )
        .map_err(translate)?
        .query_map(params![after, tenant, session, project, limit], |row| {
            let data: String = row.get(5)?;
            Ok(Event {
                seq: row.get(0)?,
                tenant: TenantId::new(row.get::<_, String>(1)?),
                kind: row.get(2)?,
                session_id: row.get(3)?,
                project_id: row.get(4)?,
                data: serde_json::from_str(&data).map_err(|e| {
                    rusqlite::Error::FromSqlConversionFailure(
                        5,
                        rusqlite::types::Type::Text,
                        format!("an event's stored data is not JSON: {e}").into(),
                    )
                })?,
                created_at: Timestamp(row.get(6)?),
            })
        })
        .map_err(translate)?
        .collect::<rusqlite::Result<_>>()
        .map_err(translate)?;
    events.sort_by_key(|e| e.seq);
    Ok(events)
}

/// The newest event's `seq` (0 when there is none).
pub(super) fn newest(conn: &Connection) -> Result<i64> {
    conn.query_row("SELECT coalesce(max(seq), 0) FROM events", [], |row| {
        row.get(0)
    })
    .map_err(translate)
}
