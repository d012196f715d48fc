//! The event log: domain events written in the same transaction as the change they
//! describe, read back in `seq` order by the event stream.

use lifeboat_core::{TenantId, Timestamp};
use serde_json::Value;

use super::conn::{PgConn, column};
use crate::rows::Subject;
use crate::{Error, Event, EventFilter, Result};

/// The log keeps this many newest events: the replay window of `Last-Event-ID`.
const EVENTS_KEPT: i64 = 100_000;

/// The advisory lock a sequencer pass holds, so that passes (on any server) run one at a
/// time and each pass's numbers follow the last one's.
const SEQUENCER_LOCK: i64 = 7_305_656_075_935_817_844;

/// Events numbered per sequencer pass at most (a pass finds the rest at its next run).
const SEQUENCE_BATCH: i64 = 10_000;

/// Records an event in the caller's transaction, without its `seq`: the sequencer gives it
/// one after the transaction commits (see the schema).
pub(super) fn record(
    conn: &PgConn<'_>,
    tenant: &TenantId,
    kind: &str,
    subject: Subject<'_>,
    data: &Value,
    now: Timestamp,
) -> Result<()> {
    conn.execute(
        "INSERT INTO events (tenant, type, session_id, project_id, data, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
        &[
            &tenant.as_str(),
            &kind,
            &subject.session_id,
            &subject.project_id,
            &data.to_string(),
            &now.0,
        ],
    )?;
    conn.note_event();
    Ok(())
}

/// One sequencer pass, in its own write transaction: numbers the committed events that have
/// no `seq` yet, in `id` order, after the newest `seq`, and trims the log to its window when
/// a pass crosses a thousand. Answers how many it numbered.
/// The notification channel of this schema's event passes, as SQL.
pub(super) const CHANNEL: &str = "'lifeboat_' || md5(current_schema())";

pub(super) fn sequence(conn: &PgConn<'_>) -> Result<u64> {
    conn.execute("SELECT pg_advisory_xact_lock($1)", &[&SEQUENCER_LOCK])?;
    let head = newest(conn)?;
    let numbered = conn.execute(
        "UPDATE events SET seq = $1 + todo.n \
         FROM (SELECT id, row_number() OVER (ORDER BY id) AS n FROM events \
               WHERE seq IS NULL ORDER BY id LIMIT $2) AS todo \
         WHERE events.id = todo.id",
        &[&head, &SEQUENCE_BATCH],
    )?;
    if numbered > 0 {
        // Wakes the other servers' feeds at this commit (see `listen`): one notification
        // per pass, never one per write.
        conn.execute(&format!("SELECT pg_notify({CHANNEL}, '')"), &[])?;
    }
    let now_head = head + i64::try_from(numbered).unwrap_or(i64::MAX);
    if now_head / 1_000 > head / 1_000 {
        conn.execute(
            "DELETE FROM events WHERE seq <= $1",
            &[&(now_head - EVENTS_KEPT)],
        )?;
    }
    Ok(numbered)
}

/// Events after `after`, oldest first, at most `limit`; of one tenant and filter, or of
/// everyone (`None`).
pub(super) fn read(
    conn: &PgConn<'_>,
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
        .query(
            "SELECT seq, tenant, type, session_id, project_id, data, created_at FROM events \
             WHERE seq > $1 AND ($2::TEXT IS NULL OR tenant = $2) \
             AND ($3::TEXT IS NULL OR session_id = $3) AND ($4::TEXT IS NULL OR project_id = $4) \
             ORDER BY seq LIMIT $5",
            &[&after, &tenant, &session, &project, &i64::from(limit)],
        )?
        .iter()
        .map(|row| {
            let data: String = column(row, 5)?;
            Ok(Event {
                seq: column(row, 0)?,
                tenant: TenantId::new(column::<String>(row, 1)?),
                kind: column(row, 2)?,
                session_id: column(row, 3)?,
                project_id: column(row, 4)?,
                data: serde_json::from_str(&data).map_err(|e| {
                    Error::Internal(format!("an event's stored data is not JSON: {e}"))
                })?,
                created_at: Timestamp(column(row, 6)?),
            })
        })
        .collect::<Result<_>>()?;
    events.sort_by_key(|e| e.seq);
    Ok(events)
}

/// The newest event's `seq` (0 when there is none).
pub(super) fn newest(conn: &PgConn<'_>) -> Result<i64> {
    column(
        &conn.query_one("SELECT coalesce(max(seq), 0)::BIGINT FROM events", &[])?,
        0,
    )
}
