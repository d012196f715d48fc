//! The event log: domain events written in the same transaction as the change they
//! describe, read back in `seq` order by the event stream.

use std::sync::LazyLock;

use lifeboat_core::{TenantId, Timestamp};
use serde_json::{Value, json};

use super::conn::{PgConn, column, translate};
use super::held::Row as Held;
use crate::rows::Subject;
use crate::{Error, Event, EventFilter, Result};

/// The log keeps this many newest events: the replay window of `Last-Event-ID`.
const EVENTS_KEPT: i64 = 100_000;

/// The advisory lock a sequencer pass holds, so that passes (on any server) run one at a
/// time and each pass's numbers follow the last one's.
const SEQUENCER_LOCK: i64 = 7_305_656_075_935_817_844;

/// Events numbered per transaction of a sequencer pass at most (a pass runs another while
/// one numbered this many).
const SEQUENCE_BATCH: i64 = 10_000;

/// Records an event in the caller's transaction, without its `seq`: the sequencer gives it
/// one after the transaction commits (see the schema). Held with the batch's other events
/// and inserted with them in one statement (`held.rs`); one session's in the order
/// recorded.
pub(super) fn record(
    conn: &PgConn<'_>,
    tenant: &TenantId,
    kind: &str,
    subject: Subject<'_>,
    data: &Value,
    now: Timestamp,
) -> Result<()> {
    conn.hold(Held::Event(json!({
        "tenant": tenant.as_str(),
        "type": kind,
        "session_id": subject.session_id,
        "project_id": subject.project_id,
        "data": data.to_string(),
        "created_at": now.0,
    })))?;
    conn.note_event();
    Ok(())
}

/// The notification channel of this schema's event passes, as SQL.
pub(super) const CHANNEL: &str = "'lifeboat_' || md5(current_schema())";

/// Numbers the committed events that wait, after the newest `seq`, in `id` order; answers
/// how many it numbered and the head it numbered after, and wakes the other servers when
/// it numbered any. It has no parameters: its one plan is made at its first run on a
/// connection (a generic plan), under the settings the pass sets first (see [`sequence`]).
static NUMBER: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH head AS (SELECT coalesce(max(seq), 0) AS h FROM events), \
         todo AS (SELECT id, row_number() OVER (ORDER BY id) AS n FROM events \
                  WHERE seq IS NULL ORDER BY id LIMIT {SEQUENCE_BATCH}), \
         numbered AS (UPDATE events SET seq = head.h + todo.n FROM todo, head \
                      WHERE events.id = todo.id RETURNING events.seq) \
         SELECT count(*), (SELECT h FROM head), \
                CASE WHEN count(*) > 0 THEN pg_notify({CHANNEL}, '') END IS NULL \
         FROM numbered"
    )
});

/// Opens a pass's transaction and waits for the lock that passes (on any server) take
/// in turn, so that each pass's numbers follow the last one's.
static BEGIN_PASS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "BEGIN ISOLATION LEVEL READ COMMITTED; \
         SET LOCAL enable_bitmapscan = off; SET LOCAL enable_seqscan = off; \
         SELECT pg_advisory_xact_lock({SEQUENCER_LOCK})"
    )
});

/// A sequencer pass: numbers every event committed before it started, [`SEQUENCE_BATCH`]
/// at a time (see [`number`]). Answers how many it numbered.
pub(super) async fn sequence(client: &deadpool_postgres::ClientWrapper) -> Result<u64> {
    let mut numbered = 0;
    loop {
        let now = number(client).await?;
        numbered += now;
        if now < SEQUENCE_BATCH.unsigned_abs() {
            return Ok(numbered);
        }
    }
}

/// One round trip and one transaction of a pass: numbers the committed events that have
/// no `seq` yet, at most [`SEQUENCE_BATCH`] (see [`NUMBER`]), and trims the log to its
/// window when it crosses a thousand past it (not before: there is nothing to trim, and
/// with few statistics the planner may scan the whole log to find so). Answers how many
/// it numbered.
///
/// The transaction's three requests go out together: the lock is taken by a statement of
/// its own, so that the numbering statement's snapshot, taken after it, sees the last
/// pass's numbers. The events to number are found by walking `events_unsequenced` in `id`
/// order, which the planner is told to do: a bitmap scan, which it prefers while the
/// table's statistics are few, leaves the entries of events numbered since in that index
/// for every later pass to visit again in the heap, where an index scan marks them dead
/// once, and the index reclaims them as it grows. The numbering statement is prepared
/// once per connection, so it is not parsed and planned at every pass.
async fn number(client: &deadpool_postgres::ClientWrapper) -> Result<u64> {
    let number = client.prepare_cached(&NUMBER).await.map_err(translate)?;
    // Polled in order, so that the requests go out in order (pipelined).
    let (begun, counted, committed) = tokio::join!(
        biased;
        client.batch_execute(&BEGIN_PASS),
        client.query_one(&number, &[]),
        // In a transaction that failed, this ends it (as a rollback).
        client.batch_execute("COMMIT"),
    );
    let row = match begun.and(counted).and_then(|row| committed.map(|()| row)) {
        Ok(row) => row,
        Err(error) => {
            // Should the connection have dropped a request, no transaction stays open on
            // it when it goes back to the pool (a broken one is not reused anyway).
            let _ = client.batch_execute("ROLLBACK").await;
            return Err(translate(error));
        }
    };
    let numbered: i64 = column(&row, 0)?;
    let head: i64 = column(&row, 1)?;
    let now_head = head + numbered;
    if now_head > EVENTS_KEPT && now_head / 1_000 > head / 1_000 {
        client
            .execute(
                "DELETE FROM events WHERE seq <= $1",
                &[&(now_head - EVENTS_KEPT)],
            )
            .await
            .map_err(translate)?;
    }
    Ok(u64::try_from(numbered).unwrap_or(0))
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
