//! The SQLite backend: one file in WAL mode with `synchronous=FULL`, one writer thread
//! with group commit (see `writer.rs`), and a small pool of read connections.

mod assets;
mod cleanup;
mod events;
mod files;
mod idempotency;
mod keys;
mod projects;
mod rows;
mod schema;
mod transfer;
mod writer;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use lifeboat_core::{
    Asset, AssetCounts, AssetName, AssetStatus, Chain, Change, Checkpoint, CheckpointKind,
    CrashType, Delta, Error as DomainError, FileVersion, Id, Owner, PinnedAsset, Preconditions,
    Project, ProjectRules, RecoveryOption, Saved, SchemaRef, Session, Status, Storage, TenantId,
    Timestamp, save_project,
};
use rusqlite::config::DbConfig;
use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension, params, params_from_iter};
use serde_json::{Value, json};

use crate::blobs::BlobStore;
use crate::lock::DirLock;
use crate::{
    ApiKey, Applied, AuditEntry, CleanupCursor, CleanupReport, CleanupRules, Distribution, Error,
    Event, EventFilter, FileRef, Gauges, Idempotency, Outcome, PAGE_BYTES_MAX, Page, PageRequest,
    ProjectEdit, ProjectInfo, RecoveryFacts, Result, RevisionInfo, SchemaCache, SchemaPut,
    Selection, SessionFilter, SessionOp, SessionToken, Spared, Stats, Store, StoreCheck,
    TransferCounts, Verification, apply,
};
use rows::{CHECKPOINT_COLUMNS, SESSION_COLUMNS};
use writer::{Ack, EarlyAck, Writer};

/// The database file inside the data directory.
pub const DATABASE_FILE: &str = "lifeboat.sqlite3";
/// Read connections kept open for reuse; more are opened under load and then dropped.
const READERS_KEPT: usize = 8;
/// Prepared statements kept per connection: more than the writer uses, so none is
/// evicted and prepared again under load.
const STATEMENT_CACHE: usize = 64;
/// Revision retention is applied on every this-many-th save of a project: pruning can
/// only ever free whole stretches before a snapshot, so checking each save buys nothing.
const PRUNE_EVERY: u64 = 16;
/// Sessions one sweep persists at most, so one sweep never holds the writer for long.
const SWEEP_BATCH_MAX: u32 = 1_000;

/// Translates a SQLite error into a storage error kind. The one place that knows codes.
pub(crate) fn translate(error: rusqlite::Error) -> Error {
    match &error {
        rusqlite::Error::SqliteFailure(failure, _) => match failure.code {
            ErrorCode::DiskFull => Error::Full(error.to_string()),
            ErrorCode::SystemIoFailure
            | ErrorCode::CannotOpen
            | ErrorCode::NotADatabase
            | ErrorCode::DatabaseCorrupt
            | ErrorCode::ReadOnly
            | ErrorCode::PermissionDenied => Error::Unavailable(error.to_string()),
            _ => Error::Internal(error.to_string()),
        },
        _ => Error::Internal(error.to_string()),
    }
}

/// A Lifeboat store in one SQLite file.
#[derive(Clone)]
pub struct SqliteStore {
    blobs: BlobStore,
    writer: Writer,
    readers: Arc<Readers>,
    rules: Arc<ProjectRules>,
    schemas: Arc<SchemaCache>,
}

struct Readers {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl Readers {
    fn open(&self) -> Result<Connection> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(translate)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(translate)?;
        stable_plans(&conn)?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        Ok(conn)
    }

    /// Runs `read` on a pooled connection inside one read transaction, off the async runtime.
    async fn read<T, F>(self: &Arc<Self>, read: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let readers = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let pooled = readers.idle.lock().ok().and_then(|mut idle| idle.pop());
            let mut conn = match pooled {
                Some(conn) => conn,
                None => readers.open()?,
            };
            let tx = conn.transaction().map_err(translate)?;
            let result = read(&tx);
            drop(tx);
            if let Ok(mut idle) = readers.idle.lock()
                && idle.len() < READERS_KEPT
            {
                idle.push(conn);
            }
            result
        })
        .await
        .map_err(|e| Error::Internal(format!("read task failed: {e}")))?
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the store in `data_dir`, applying migrations.
    pub fn open(data_dir: &Path, rules: ProjectRules) -> Result<SqliteStore> {
        crate::blobs::create_dir_durably(data_dir).map_err(|e| {
            Error::Unavailable(format!(
                "cannot create data dir {}: {e}",
                data_dir.display()
            ))
        })?;
        // Before anything is opened: a second process must change nothing.
        let lock = DirLock::acquire(data_dir)?;
        let path = data_dir.join(DATABASE_FILE);
        let mut conn = Connection::open(&path).map_err(translate)?;
        // WAL + FULL: a commit has fsynced the WAL before COMMIT returns.
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(translate)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(translate)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(translate)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(translate)?;
        schema::migrate(&mut conn)?;
        stable_plans(&conn)?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        let blobs = BlobStore::open(data_dir).map_err(|e| {
            Error::Unavailable(format!(
                "cannot open the blob store in {}: {e}",
                data_dir.display()
            ))
        })?;
        Ok(SqliteStore {
            blobs,
            writer: Writer::spawn(conn, path.clone(), lock)?,
            readers: Arc::new(Readers {
                path,
                idle: Mutex::new(Vec::new()),
            }),
            rules: Arc::new(rules),
            schemas: Arc::new(SchemaCache::default()),
        })
    }
}

/// Turns on SQLite's query planner stability guarantee: a plan never depends on the values
/// bound to a statement. Without it, SQLite looks at bound values (an `?2 IS NULL OR …`
/// term, a `LIMIT ?`) and prepares the statement again whenever they change: the event
/// feed's read after every commit was re-parsed each time (about 120,000 instructions,
/// a fifth of a checkpoint write's total, measured with callgrind).
fn stable_plans(conn: &Connection) -> Result<()> {
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)
        .map(drop)
        .map_err(translate)
}

fn encode_cursor(position: i64) -> String {
    URL_SAFE_NO_PAD.encode(position.to_string())
}

fn decode_cursor(cursor: Option<&str>) -> Result<Option<i64>> {
    cursor
        .map(|c| {
            let bytes = URL_SAFE_NO_PAD.decode(c).map_err(|_| Error::BadCursor)?;
            let text = String::from_utf8(bytes).map_err(|_| Error::BadCursor)?;
            text.parse::<i64>().map_err(|_| Error::BadCursor)
        })
        .transpose()
}

fn encode_text_cursor(position: &str) -> String {
    URL_SAFE_NO_PAD.encode(position)
}

fn decode_text_cursor(cursor: Option<&str>) -> Result<String> {
    let Some(cursor) = cursor else {
        return Ok(String::new());
    };
    let bytes = URL_SAFE_NO_PAD
        .decode(cursor)
        .map_err(|_| Error::BadCursor)?;
    String::from_utf8(bytes).map_err(|_| Error::BadCursor)
}

/// Reads a page from `rows` (each with its encoded cursor), stopping after `limit` items
/// or once they carry [`PAGE_BYTES_MAX`] bytes by `size` (at least one item either way):
/// rows past that are never read, and `next_cursor` says where the next page starts.
fn paginate_within<T>(
    rows: impl Iterator<Item = Result<(String, T)>>,
    size: impl Fn(&T) -> usize,
    limit: u32,
) -> Result<Page<T>> {
    let mut items = Vec::new();
    let mut last = None;
    let mut bytes = 0;
    for row in rows {
        let (cursor, item) = row?;
        if items.len() == limit as usize || bytes >= PAGE_BYTES_MAX {
            return Ok(Page {
                items,
                next_cursor: last,
            });
        }
        bytes += size(&item);
        items.push(item);
        last = Some(cursor);
    }
    Ok(Page {
        items,
        next_cursor: None,
    })
}

/// Cuts a `limit + 1` fetch down to a page, with the cursor of the last item kept.
fn paginate<T>(mut rows: Vec<(i64, T)>, limit: u32) -> Page<T> {
    let limit = limit as usize;
    let next_cursor = if rows.len() > limit {
        rows.truncate(limit);
        rows.last().map(|(position, _)| encode_cursor(*position))
    } else {
        None
    };
    Page {
        items: rows.into_iter().map(|(_, item)| item).collect(),
        next_cursor,
    }
}

/// The bytes a checkpoint adds to a list page.
fn checkpoint_bytes(c: &Checkpoint) -> usize {
    c.data.len() + c.position.as_ref().map_or(0, String::len) + 128 * c.assets.len()
}

/// "This checkpoint's kind is pruned by retention", as SQL. Written as `<>` tests, not
/// `IN (…)`: SQLite builds a temporary table for an `IN` list on every run, and that
/// allocation churn was the largest cost of a checkpoint write (see BENCHMARKS.md).
fn prunable_sql() -> String {
    CheckpointKind::ALL
        .into_iter()
        .filter(|k| k.is_kept_for_life())
        .map(|k| format!("kind <> '{}'", k.as_str()))
        .collect::<Vec<_>>()
        .join(" AND ")
}

/// Persists `after`, and the history rows that follow from how it differs from `before`.
fn persist(
    conn: &Connection,
    tenant: &TenantId,
    pk: i64,
    before: &Session,
    after: &Session,
) -> Result<()> {
    rows::update_session(conn, pk, after)?;
    events::session_changes(conn, tenant, Some(before), after, after.updated_at)?;
    if after.crash != before.crash
        && let Some(crash) = &after.crash
    {
        conn.prepare_cached(
            "INSERT INTO crashes (tenant, session_pk, attempt, type, detected_at, \
             lease_expires_at, work_lost_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
             ON CONFLICT (session_pk, attempt) DO UPDATE SET type = excluded.type",
        )
        .map_err(translate)?
        .execute(params![
            tenant.as_str(),
            pk,
            crash.attempt,
            crash.kind.as_str(),
            crash.detected_at.0,
            crash.lease_expires_at.map(|t| t.0),
            crash.work_lost_ms,
        ])
        .map_err(translate)?;
    }
    let outcome = match after.status {
        _ if after.status == before.status => None,
        Status::Incomplete | Status::Failed => Some("failed"),
        Status::Completed => Some("succeeded"),
        _ => None,
    };
    if let Some(outcome) = outcome {
        conn.prepare_cached(
            "UPDATE recoveries SET outcome = ?1 \
             WHERE session_pk = ?2 AND attempt = ?3 AND outcome IS NULL",
        )
        .map_err(translate)?
        .execute(params![outcome, pk, after.attempt])
        .map_err(translate)?;
    }
    Ok(())
}

/// Writes a checkpoint and prunes beyond retention, in the caller's transaction.
///
/// Pruning reads the prunable `seq`s (at most `retention + 1`, since every write prunes),
/// sorts them here and deletes from the first one beyond retention. The SQL has no
/// `ORDER BY` or `LIMIT`: with either, this bundled SQLite re-prepares the statement on
/// every run, which profiles showed as the largest remaining cost of a checkpoint.
fn write_checkpoint(conn: &Connection, pk: i64, retention: u32, c: &Checkpoint) -> Result<()> {
    rows::insert_checkpoint(conn, pk, c)?;
    if c.kind.is_kept_for_life() {
        return Ok(());
    }
    let prunable = prunable_sql();
    // Each prunable seq, and whether it pins assets (its pins go with it).
    let mut seqs: Vec<(i64, bool)> = conn
        .prepare_cached(&format!(
            "SELECT seq, assets <> '[]' FROM checkpoints WHERE session_pk = ?1 AND {prunable}"
        ))
        .map_err(translate)?
        .query_map(params![pk], |row| Ok((row.get(0)?, row.get(1)?)))
        .map_err(translate)?
        .collect::<rusqlite::Result<_>>()
        .map_err(translate)?;
    let keep = retention as usize;
    if seqs.len() <= keep {
        return Ok(());
    }
    seqs.sort_unstable();
    let pruned = &seqs[..seqs.len() - keep];
    let (newest_pruned, _) = pruned[pruned.len() - 1];
    conn.prepare_cached(&format!(
        "DELETE FROM checkpoints WHERE session_pk = ?1 AND {prunable} AND seq <= ?2"
    ))
    .map_err(translate)?
    .execute(params![pk, newest_pruned])
    .map_err(translate)?;
    for (seq, _) in pruned.iter().filter(|(_, pins)| *pins) {
        conn.prepare_cached("DELETE FROM pinned_files WHERE session_pk = ?1 AND seq = ?2")
            .map_err(translate)?
            .execute(params![pk, seq])
            .map_err(translate)?;
    }
    Ok(())
}

/// Crash metrics: by type, how late the crash was noticed, and how much work it cost.
fn record_crash(crash: &lifeboat_core::Crash) {
    metrics::counter!("lifeboat_crashes_total", "type" => crash.kind.as_str()).increment(1);
    if let Some(expired) = crash.lease_expires_at {
        let delay = crash.detected_at.ms_since(expired) as f64 / 1000.0;
        metrics::histogram!("lifeboat_detection_delay_seconds").record(delay);
    }
    metrics::histogram!("lifeboat_work_lost_seconds").record(crash.work_lost_ms as f64 / 1000.0);
}

/// Whether a write changed nothing but the lease: the one kind of write acknowledged
/// before its commit (SPEC §6). Anything a reader would notice waits for the commit.
fn only_lease_moved(before: &Session, after: &Session) -> bool {
    let mut same = after.clone();
    same.last_heartbeat_at = before.last_heartbeat_at;
    same.lease_expires_at = before.lease_expires_at;
    same.lease_ran_out_while_down = before.lease_ran_out_while_down;
    same.updated_at = before.updated_at;
    same == *before
}

/// Writes a lease-only heartbeat's change again (see `writer::Redo`): the lease never
/// moves backwards, and a session that is no longer this attempt's active one is left alone.
fn lease_redo(pk: i64, session: &Session) -> writer::Redo {
    let (attempt, updated_at) = (session.attempt, session.updated_at.0);
    let heartbeat_at = session.last_heartbeat_at.map(|t| t.0);
    let lease = session.lease_expires_at.map(|t| t.0);
    Box::new(move |conn| {
        conn.prepare_cached(
            "UPDATE sessions SET last_heartbeat_at = max(coalesce(last_heartbeat_at, 0), ?1), \
             lease_expires_at = max(lease_expires_at, ?2), lease_ran_out_while_down = 0, \
             updated_at = max(updated_at, ?3) \
             WHERE pk = ?4 AND status = 'active' AND attempt = ?5",
        )?
        .execute(params![heartbeat_at, lease, updated_at, pk, attempt])
        .map(drop)
    })
}

/// What a recovery needs of one loaded session, read in the caller's transaction.
fn facts_of(
    conn: &Connection,
    tenant: &TenantId,
    pk: i64,
    session: Session,
) -> Result<RecoveryFacts> {
    let checkpoints = rows::all_checkpoints(conn, pk)?;
    let assets = assets::all(conn, tenant, &Owner::Session(session.id.clone()))?;
    let mut facts = RecoveryFacts {
        session,
        checkpoints,
        assets,
        damaged: HashSet::new(),
    };
    facts.damaged = files::damaged(conn, &facts.versions())?;
    Ok(facts)
}

/// When the store last committed a write, as far as its rows tell: the newest change of
/// an active session (heartbeats change nothing else) or the newest event (every other
/// session change, checkpoint and project save records one). A lower bound, read at
/// start-up from rows the restart grace loads anyway, plus one index probe.
fn last_commit<'s>(
    conn: &Connection,
    active: impl Iterator<Item = &'s Session>,
) -> Result<Timestamp> {
    let newest_event: Option<i64> = conn
        .query_row(
            "SELECT created_at FROM events ORDER BY seq DESC LIMIT 1",
            [],
            |row| row.get(0),
        )
        .optional()
        .map_err(translate)?;
    let newest_session = active.map(|s| s.updated_at.0).max();
    Ok(Timestamp(
        newest_event.max(newest_session).unwrap_or(i64::MIN),
    ))
}

/// SQL for "observed status is `status`", given `?now` bound as parameter `now_index`.
fn status_condition(status: Status, now_index: usize) -> String {
    match status {
        Status::Active => format!("(status = 'active' AND lease_expires_at > ?{now_index})"),
        Status::Incomplete => format!(
            "(status = 'incomplete' OR (status = 'active' AND lease_expires_at <= ?{now_index}))"
        ),
        other => format!("status = '{}'", other.as_str()),
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn create_session(
        &self,
        tenant: &TenantId,
        session: Session,
        idempotency: Option<Idempotency<Session>>,
    ) -> Result<Outcome<Session>> {
        let tenant = tenant.clone();
        let now = session.created_at;
        self.writer
            .write(Ack::AfterCommit, move |conn| {
                idempotency::once(conn, &tenant, idempotency, now, || {
                    let exists = conn
                        .prepare_cached("SELECT 1 FROM sessions WHERE tenant = ?1 AND id = ?2")
                        .map_err(translate)?
                        .exists(params![tenant.as_str(), session.id.as_str()])
                        .map_err(translate)?;
                    if exists {
                        return Ok(Err(Error::AlreadyExists {
                            what: "session",
                            id: session.id.to_string(),
                        }));
                    }
                    rows::insert_session(conn, &tenant, &session)?;
                    events::session_changes(conn, &tenant, None, &session, now)?;
                    Ok(Ok(session))
                })
            })
            .await
    }

    async fn update_session(
        &self,
        tenant: &TenantId,
        id: &Id,
        op: SessionOp,
        now: Timestamp,
        idempotency: Option<Idempotency<Applied>>,
    ) -> Result<Outcome<Applied>> {
        let (tenant, id) = (tenant.clone(), id.clone());
        let early = Arc::new(EarlyAck::default());
        let ack = if op.is_heartbeat() {
            Ack::EarlyIf(Arc::clone(&early))
        } else {
            Ack::AfterCommit
        };
        let recovery_option = match &op {
            SessionOp::Recover { option, .. } => Some(*option),
            _ => None,
        };
        self.writer
            .write(ack, move |conn| {
                idempotency::once(conn, &tenant, idempotency, now, || {
                    let (pk, mut session) = rows::load_session(conn, &tenant, &id)?;
                    let before = session.clone();
                    // The writer looks at records only, never at files (see `recovery`).
                    let owner = Owner::Session(id.clone());
                    let pin = |name: &str| {
                        Ok(assets::find(conn, &tenant, &owner, name)?.map(|a| PinnedAsset::of(&a)))
                    };
                    let facts = |now: &Session| facts_of(conn, &tenant, pk, now.clone());
                    let result = apply(&mut session, op, now, &pin, facts);
                    if session != before {
                        persist(conn, &tenant, pk, &before, &session)?;
                    }
                    if only_lease_moved(&before, &session) {
                        early.allow(lease_redo(pk, &session));
                    }
                    let applied = match result {
                        Ok(applied) => applied,
                        Err(refusal) => return Ok(Err(refusal)),
                    };
                    if let Some(checkpoint) = &applied.checkpoint {
                        write_checkpoint(conn, pk, session.checkpoint_retention, checkpoint)?;
                        let data = json!({
                            "session_id": id.as_str(),
                            "project_id": session.project_id.as_ref().map(|p| p.as_str()),
                            "seq": checkpoint.seq,
                            "attempt": checkpoint.attempt,
                            "kind": checkpoint.kind.as_str(),
                            "stage": checkpoint.stage,
                            "sha256": checkpoint.sha256.as_str(),
                        });
                        let subject = events::Subject {
                            session_id: Some(id.as_str()),
                            project_id: session.project_id.as_ref().map(|p| p.as_str()),
                        };
                        events::record(conn, &tenant, "checkpoint.created", subject, &data, now)?;
                    }
                    if let Some(option) = recovery_option {
                        record_recovery(conn, &tenant, pk, &session, option, now)?;
                        metrics::counter!("lifeboat_recoveries_total", "option" => option.as_str())
                            .increment(1);
                    }
                    // A new crash (not a refinement of the type of one already counted).
                    if let Some(crash) = &session.crash
                        && before.crash.as_ref().map(|c| c.attempt) != Some(crash.attempt)
                    {
                        record_crash(crash);
                    }
                    Ok(Ok(applied))
                })
            })
            .await
    }

    async fn session(&self, tenant: &TenantId, id: &Id) -> Result<Session> {
        let (tenant, id) = (tenant.clone(), id.clone());
        self.readers
            .read(move |conn| Ok(rows::load_session(conn, &tenant, &id)?.1))
            .await
    }

    async fn expire(&self, tenant: &TenantId, id: &Id, now: Timestamp) -> Result<Session> {
        let (tenant, id) = (tenant.clone(), id.clone());
        self.writer
            .write(Ack::AfterCommit, move |conn| {
                let (pk, mut session) = rows::load_session(conn, &tenant, &id)?;
                let before = session.clone();
                if session.status == Status::Active
                    && session.lease_expires_at.is_some_and(|lease| lease <= now)
                {
                    session.observe(now);
                    persist(conn, &tenant, pk, &before, &session)?;
                    if let Some(crash) = &session.crash {
                        record_crash(crash);
                    }
                    return Ok(Ok(session));
                }
                Ok(Ok(before))
            })
            .await
    }

    async fn due(&self, now: Timestamp) -> Result<bool> {
        self.readers
            .read(move |conn| {
                conn.prepare_cached(
                    "SELECT 1 FROM sessions WHERE status = 'active' AND lease_expires_at <= ?1",
                )
                .map_err(translate)?
                .exists([now.0])
                .map_err(translate)
            })
            .await
    }

    async fn sessions(
        &self,
        tenant: &TenantId,
        filter: &SessionFilter,
        page: &PageRequest,
        now: Timestamp,
    ) -> Result<Page<Session>> {
        let after = decode_cursor(page.cursor.as_deref())?.unwrap_or(i64::MAX);
        let mut sql =
            format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE tenant = ?1 AND pk < ?2");
        let mut values: Vec<SqlValue> = vec![
            SqlValue::Text(tenant.as_str().to_owned()),
            SqlValue::Integer(after),
            SqlValue::Integer(now.0),
        ];
        sql.push_str(" AND ?3 = ?3");
        if !filter.statuses.is_empty() {
            let any: Vec<String> = filter
                .statuses
                .iter()
                .map(|s| status_condition(*s, 3))
                .collect();
            sql.push_str(&format!(" AND ({})", any.join(" OR ")));
        }
        if let Some(project) = &filter.project_id {
            values.push(SqlValue::Text(project.as_str().to_owned()));
            sql.push_str(&format!(" AND project_id = ?{}", values.len()));
        }
        if let Some(kind) = &filter.kind {
            values.push(SqlValue::Text(kind.clone()));
            sql.push_str(&format!(" AND kind = ?{}", values.len()));
        }
        sql.push_str(&format!(" ORDER BY pk DESC LIMIT {}", page.limit + 1));
        let limit = page.limit;
        self.readers
            .read(move |conn| {
                let mut statement = conn.prepare_cached(&sql).map_err(translate)?;
                let rows = statement
                    .query_map(params_from_iter(values), rows::session_from_row)
                    .map_err(translate)?
                    .map(|row| {
                        let (pk, mut session) = row.map_err(translate)?;
                        session.observe(now);
                        Ok((encode_cursor(pk), session))
                    });
                let size = |s: &Session| {
                    s.metadata.as_ref().map_or(0, |m| m.to_string().len())
                        + s.error.as_ref().map_or(0, String::len)
                };
                paginate_within(rows, size, limit)
            })
            .await
    }

    async fn checkpoints(
        &self,
        tenant: &TenantId,
        id: &Id,
        page: &PageRequest,
    ) -> Result<Page<Checkpoint>> {
        let (tenant, id) = (tenant.clone(), id.clone());
        let after = decode_cursor(page.cursor.as_deref())?.unwrap_or(0);
        let limit = page.limit;
        self.readers
            .read(move |conn| {
                let (pk, _) = rows::load_session(conn, &tenant, &id)?;
                let mut statement = conn
                    .prepare_cached(&format!(
                        "SELECT {CHECKPOINT_COLUMNS} FROM checkpoints \
                         WHERE session_pk = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3"
                    ))
                    .map_err(translate)?;
                let rows = statement
                    .query_map(params![pk, after, limit + 1], rows::checkpoint_from_row)
                    .map_err(translate)?
                    .map(|row| {
                        row.map_err(translate)
                            .map(|c| (encode_cursor(i64::try_from(c.seq).unwrap_or(i64::MAX)), c))
                    });
                paginate_within(rows, checkpoint_bytes, limit)
            })
            .await
    }

    async fn checkpoint(&self, tenant: &TenantId, id: &Id, seq: Option<u64>) -> Result<Checkpoint> {
        let (tenant, id) = (tenant.clone(), id.clone());
        self.readers
            .read(move |conn| {
                let (pk, _) = rows::load_session(conn, &tenant, &id)?;
                // One row at a time: the newest valid one is almost always the newest.
                let found = match seq {
                    Some(seq) => rows::checkpoint_at(conn, pk, seq)?,
                    None => {
                        let mut before = i64::MAX;
                        loop {
                            match rows::checkpoint_before(conn, pk, before)? {
                                Some(c) if c.valid => break Some(c),
                                Some(c) => before = i64::try_from(c.seq).unwrap_or(0),
                                None => break None,
                            }
                        }
                    }
                };
                found.ok_or_else(|| Error::NotFound {
                    what: "checkpoint",
                    id: seq.map_or_else(|| "latest valid".to_owned(), |s| s.to_string()),
                })
            })
            .await
    }

    async fn recovery_facts(&self, tenant: &TenantId, id: &Id) -> Result<RecoveryFacts> {
        let (tenant, id) = (tenant.clone(), id.clone());
        self.readers
            .read(move |conn| {
                let (pk, session) = rows::load_session(conn, &tenant, &id)?;
                facts_of(conn, &tenant, pk, session)
            })
            .await
    }

    async fn recoverable_facts(
        &self,
        tenant: &TenantId,
        page: &PageRequest,
        now: Timestamp,
    ) -> Result<Page<RecoveryFacts>> {
        let tenant = tenant.clone();
        let after = decode_cursor(page.cursor.as_deref())?.unwrap_or(i64::MAX);
        let limit = page.limit;
        self.readers
            .read(move |conn| {
                // The first status term repeats the partial index's condition, so SQLite
                // scans only open sessions.
                let mut statement = conn
                    .prepare_cached(&format!(
                        "SELECT {SESSION_COLUMNS} FROM sessions WHERE tenant = ?1 AND pk < ?2 \
                         AND status <> 'completed' AND status <> 'cancelled' \
                         AND (status <> 'active' OR lease_expires_at <= ?3) \
                         ORDER BY pk DESC LIMIT ?4"
                    ))
                    .map_err(translate)?;
                let rows = statement
                    .query_map(
                        params![tenant.as_str(), after, now.0, limit + 1],
                        rows::session_from_row,
                    )
                    .map_err(translate)?
                    .map(|row| {
                        let (pk, session) = row.map_err(translate)?;
                        Ok((encode_cursor(pk), facts_of(conn, &tenant, pk, session)?))
                    });
                let size = |facts: &RecoveryFacts| {
                    facts
                        .checkpoints
                        .iter()
                        .map(checkpoint_bytes)
                        .sum::<usize>()
                };
                paginate_within(rows, size, limit)
            })
            .await
    }

    async fn verify(&self, tenant: &TenantId, id: &Id) -> Result<Verification> {
        let (tenant, id) = (tenant.clone(), id.clone());
        // Hashing happens on a read snapshot; the writer only marks what was found.
        let (pk, checkpoints) = self
            .readers
            .read(move |conn| {
                let (pk, _) = rows::load_session(conn, &tenant, &id)?;
                Ok((pk, rows::all_checkpoints(conn, pk)?))
            })
            .await?;
        let invalid: Vec<u64> = checkpoints
            .iter()
            .filter(|c| !c.valid)
            .map(|c| c.seq)
            .collect();
        if !invalid.is_empty() {
            let seqs = invalid.clone();
            self.writer
                .write(Ack::AfterCommit, move |conn| {
                    let mut quarantine = conn
                        .prepare_cached(
                            "UPDATE checkpoints SET quarantined = 1 \
                             WHERE session_pk = ?1 AND seq = ?2",
                        )
                        .map_err(translate)?;
                    for seq in &seqs {
                        quarantine.execute(params![pk, seq]).map_err(translate)?;
                    }
                    Ok(Ok(()))
                })
                .await?;
        }
        let issues = invalid
            .iter()
            .map(|seq| format!("checkpoint {seq}: stored data does not match its sha256"))
            .collect();
        Ok(Verification {
            total: checkpoints.len() as u64,
            valid: (checkpoints.len() - invalid.len()) as u64,
            invalid,
            assets: AssetCounts::default(),
            issues,
        })
    }

    async fn sweep(&self, now: Timestamp, spared: &Spared) -> Result<u64> {
        let spared = spared.clone();
        self.writer
            .write(Ack::AfterCommit, move |conn| {
                let due = conn
                    .prepare_cached(&format!(
                        "SELECT {SESSION_COLUMNS} FROM sessions WHERE status = 'active' AND \
                         (lease_expires_at <= ?1 OR (stall_timeout_ms IS NOT NULL AND \
                          stalled = 0 AND progress_changed_at + stall_timeout_ms <= ?1)) \
                         LIMIT ?2"
                    ))
                    .map_err(translate)?
                    .query_map(params![now.0, SWEEP_BATCH_MAX], |row| {
                        Ok((row.get::<_, String>(36)?, rows::session_from_row(row)?))
                    })
                    .map_err(translate)?
                    .collect::<rusqlite::Result<Vec<_>>>()
                    .map_err(translate)?;
                let mut timed_out = 0;
                for (tenant, (pk, mut session)) in due {
                    let tenant = TenantId::new(tenant);
                    let arrived = spared.get(&(tenant.clone(), session.id.clone()));
                    if let (Some(arrived), Some(lease)) = (arrived, session.lease_expires_at)
                        && *arrived < lease
                    {
                        continue;
                    }
                    let before = session.clone();
                    if session.observe(now) {
                        persist(conn, &tenant, pk, &before, &session)?;
                    }
                    if session.status == Status::Incomplete {
                        timed_out += 1;
                        if let Some(crash) = &session.crash {
                            record_crash(crash);
                        }
                    }
                }
                Ok(Ok(timed_out))
            })
            .await
    }

    async fn begin_restart_grace(&self, ready_at: Timestamp) -> Result<u64> {
        self.writer
            .write(Ack::AfterCommit, move |conn| {
                let active = conn
                    .prepare_cached(&format!(
                        "SELECT {SESSION_COLUMNS} FROM sessions WHERE status = 'active'"
                    ))
                    .map_err(translate)?
                    .query_map([], |row| {
                        Ok((row.get::<_, String>(36)?, rows::session_from_row(row)?))
                    })
                    .map_err(translate)?
                    .collect::<rusqlite::Result<Vec<_>>>()
                    .map_err(translate)?;
                let last_commit_at = last_commit(conn, active.iter().map(|(_, (_, s))| s))?;
                let mut graced = 0;
                for (tenant, (pk, mut session)) in active {
                    let before = session.clone();
                    session.begin_restart_grace(ready_at, last_commit_at);
                    persist(conn, &TenantId::new(tenant), pk, &before, &session)?;
                    match &session.crash {
                        Some(crash) if session.status == Status::Incomplete => record_crash(crash),
                        _ => graced += 1,
                    }
                }
                Ok(Ok(graced))
            })
            .await
    }

    async fn stats(&self, tenant: &TenantId, now: Timestamp) -> Result<Stats> {
        let tenant = tenant.clone();
        self.readers
            .read(move |conn| stats(conn, &tenant, now))
            .await
    }

    async fn ready(&self) -> Result<()> {
        if self.writer.is_poisoned() {
            return Err(Error::Poisoned);
        }
        self.readers
            .read(|conn| {
                conn.query_row("SELECT 1", [], |_| Ok(()))
                    .map_err(translate)
            })
            .await
    }

    async fn put_schema(
        &self,
        tenant: &TenantId,
        schema: &SchemaRef,
        body: Value,
        now: Timestamp,
        idempotency: Option<Idempotency<SchemaPut>>,
    ) -> Result<Outcome<SchemaPut>> {
        SchemaCache::compile(&body)?;
        let (tenant, schema) = (tenant.clone(), schema.clone());
        self.writer
            .write(Ack::AfterCommit, move |conn| {
                idempotency::once(conn, &tenant, idempotency, now, || {
                    if let Some(existing) = projects::schema_body(conn, &tenant, &schema)? {
                        if existing != body {
                            return Ok(Err(DomainError::SchemaConflict(schema.to_string()).into()));
                        }
                        return Ok(Ok(SchemaPut {
                            created: false,
                            body: existing,
                        }));
                    }
                    conn.prepare_cached(
                        "INSERT INTO schemas (tenant, name, version, body, created_at) \
                         VALUES (?1, ?2, ?3, ?4, ?5)",
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
                    Ok(Ok(SchemaPut {
                        created: true,
                        body,
                    }))
                })
            })
            .await
    }

    async fn schema(&self, tenant: &TenantId, schema: &SchemaRef) -> Result<Value> {
        let (tenant, schema) = (tenant.clone(), schema.clone());
        self.readers
            .read(move |conn| {
                projects::schema_body(conn, &tenant, &schema)?.ok_or_else(|| Error::NotFound {
                    what: "schema",
                    id: schema.to_string(),
                })
            })
            .await
    }

    async fn save_project(
        &self,
        tenant: &TenantId,
        id: &Id,
        edit: ProjectEdit,
        preconditions: Preconditions,
        now: Timestamp,
        idempotency: Option<Idempotency<Saved>>,
    ) -> Result<Outcome<Saved>> {
        let (tenant, id) = (tenant.clone(), id.clone());
        let (rules, schemas) = (Arc::clone(&self.rules), Arc::clone(&self.schemas));
        self.writer
            .write(Ack::AfterCommit, move |conn| {
                idempotency::once(conn, &tenant, idempotency, now, || {
                    let mut stored = projects::load(conn, &tenant, &id)?;
                    if let Some(stored) = stored.as_mut() {
                        stored.parse_state()?;
                    }
                    let live = stored.as_ref().filter(|s| s.project.deleted_at.is_none());
                    if let Err(refusal) = preconditions.check(live.map(|s| s.project.revision)) {
                        return Ok(Err(refusal.into()));
                    }
                    let change = match edit {
                        ProjectEdit::Change(change) => change,
                        ProjectEdit::Restore(revision) => {
                            let Some(live) = live else {
                                return Ok(Err(projects::not_found(&id)));
                            };
                            let (state, _) = projects::state_at(conn, live.pk, &id, revision)?;
                            Change::Restore { revision, state }
                        }
                    };
                    if matches!(change, Change::Merge(_) | Change::JsonPatch(_)) && live.is_none() {
                        return Ok(Err(projects::not_found(&id)));
                    }
                    let chain = stored.as_ref().map(|s| s.chain).unwrap_or_default();
                    let validate = |schema: &SchemaRef, state: &Value| {
                        schemas
                            .validate(&tenant, schema, state, || {
                                projects::schema_body(conn, &tenant, schema)
                            })
                            .map_err(|e| match e {
                                Error::Domain(domain) => domain,
                                other => DomainError::Invalid {
                                    field: "schema",
                                    message: other.to_string(),
                                },
                            })
                    };
                    let saved = match save_project(
                        stored.as_ref().map(|s| &s.project),
                        &id,
                        change,
                        &rules,
                        chain,
                        now,
                        &validate,
                    ) {
                        Ok(saved) => saved,
                        Err(refusal) => return Ok(Err(refusal.into())),
                    };
                    let chain = match &saved.delta {
                        Delta::Snapshot(_) => Chain::default(),
                        delta => Chain {
                            deltas: chain.deltas + 1,
                            delta_bytes: chain.delta_bytes + delta.body().len() as u64,
                        },
                    };
                    let pk = projects::write(
                        conn,
                        &tenant,
                        stored.as_ref().map(|s| s.pk),
                        &saved,
                        chain,
                    )?;
                    if saved.project.revision % PRUNE_EVERY == 0 {
                        projects::prune(conn, pk, saved.project.revision, rules.retention, now)?;
                    }
                    events::record(
                        conn,
                        &tenant,
                        "project.saved",
                        events::Subject {
                            session_id: None,
                            project_id: Some(id.as_str()),
                        },
                        &json!({
                            "project_id": id.as_str(),
                            "revision": saved.project.revision,
                            "size_bytes": saved.project.size_bytes,
                        }),
                        now,
                    )?;
                    Ok(Ok(saved))
                })
            })
            .await
    }

    async fn project(&self, tenant: &TenantId, id: &Id, revision: Option<u64>) -> Result<Project> {
        let (tenant, id) = (tenant.clone(), id.clone());
        self.readers
            .read(move |conn| {
                let mut stored = projects::load_live(conn, &tenant, &id)?;
                match revision {
                    Some(revision) if revision != stored.project.revision => {
                        let (state, info) = projects::state_at(conn, stored.pk, &id, revision)?;
                        let mut project = stored.project;
                        project.state = state;
                        project.revision = revision;
                        project.size_bytes = info.size_bytes;
                        project.updated_at = info.created_at;
                        Ok(project)
                    }
                    _ => {
                        stored.parse_state()?;
                        Ok(stored.project)
                    }
                }
            })
            .await
    }

    async fn projects(&self, tenant: &TenantId, page: &PageRequest) -> Result<Page<ProjectInfo>> {
        let tenant = tenant.clone();
        let before = decode_cursor(page.cursor.as_deref())?.unwrap_or(i64::MAX);
        let limit = page.limit;
        self.readers
            .read(move |conn| {
                Ok(paginate(
                    projects::list(conn, &tenant, before, limit)?,
                    limit,
                ))
            })
            .await
    }

    async fn delete_project(
        &self,
        tenant: &TenantId,
        id: &Id,
        preconditions: Preconditions,
        now: Timestamp,
    ) -> Result<()> {
        let (tenant, id) = (tenant.clone(), id.clone());
        self.writer
            .write(Ack::AfterCommit, move |conn| {
                let stored = projects::load_live(conn, &tenant, &id)?;
                if let Err(refusal) = preconditions.check(Some(stored.project.revision)) {
                    return Ok(Err(refusal.into()));
                }
                projects::mark_deleted(conn, stored.pk, now)?;
                Ok(Ok(()))
            })
            .await
    }

    async fn revisions(
        &self,
        tenant: &TenantId,
        id: &Id,
        page: &PageRequest,
    ) -> Result<Page<RevisionInfo>> {
        let (tenant, id) = (tenant.clone(), id.clone());
        let before = decode_cursor(page.cursor.as_deref())?.unwrap_or(i64::MAX);
        let limit = page.limit;
        self.readers
            .read(move |conn| {
                let stored = projects::load_live(conn, &tenant, &id)?;
                Ok(paginate(
                    projects::revisions(conn, stored.pk, before, limit)?,
                    limit,
                ))
            })
            .await
    }

    async fn events(
        &self,
        tenant: &TenantId,
        after: i64,
        filter: &EventFilter,
        limit: u32,
    ) -> Result<Vec<Event>> {
        let (tenant, filter) = (tenant.clone(), filter.clone());
        self.readers
            .read(move |conn| events::read(conn, Some((&tenant, &filter)), after, limit))
            .await
    }

    async fn all_events(&self, after: i64, limit: u32) -> Result<Vec<Event>> {
        self.readers
            .read(move |conn| events::read(conn, None, after, limit))
            .await
    }

    async fn newest_event(&self) -> Result<i64> {
        self.readers.read(events::newest).await
    }

    fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.writer.commits()
    }

    async fn cleanup_step(
        &self,
        rules: CleanupRules,
        now: Timestamp,
        dry_run: bool,
        cursor: CleanupCursor,
    ) -> Result<(CleanupReport, Option<CleanupCursor>)> {
        let retention = self.rules.retention;
        self.writer
            .write(Ack::AfterCommit, move |conn| {
                let (report, next) = cleanup::records_step(conn, rules, retention, now, cursor)?;
                // A dry run counts inside the transaction, then rolls it back.
                if dry_run {
                    return Err(Error::DryRun(Box::new((report, next))));
                }
                Ok(Ok((report, next)))
            })
            .await
            .or_else(|e| match e {
                Error::DryRun(step) => Ok(*step),
                other => Err(other),
            })
    }

    async fn unreferenced(
        &self,
        candidates: Vec<FileRef>,
        purged: Option<(CleanupRules, Timestamp)>,
    ) -> Result<Vec<FileRef>> {
        let purged = purged.map(|(rules, now)| {
            (
                now.minus_ms(rules.finished_session_age_ms).0,
                now.minus_ms(rules.deleted_project_age_ms).0,
            )
        });
        self.readers
            .read(move |conn| {
                let mut orphans = Vec::new();
                for file in candidates {
                    if !files::referenced(conn, &file, purged)? {
                        orphans.push(file);
                    }
                }
                Ok(orphans)
            })
            .await
    }

    async fn check_store(&self, repair: bool) -> Result<StoreCheck> {
        let mut check = self.readers.read(cleanup::check).await?;
        if repair && !check.damaged.is_empty() {
            let damaged = check.damaged.clone();
            check.quarantined = self
                .writer
                .write(Ack::AfterCommit, move |conn| {
                    Ok(Ok(cleanup::quarantine(conn, &damaged)?))
                })
                .await?;
        }
        Ok(check)
    }

    async fn export_records(
        &self,
        tenant: &TenantId,
        selection: &Selection,
    ) -> Result<(Value, TransferCounts)> {
        let (tenant, selection) = (tenant.clone(), selection.clone());
        self.readers
            .read(move |conn| transfer::export(conn, &tenant, &selection))
            .await
    }

    async fn import_records(&self, tenant: &TenantId, records: Value) -> Result<TransferCounts> {
        let tenant = tenant.clone();
        self.writer
            .write(Ack::AfterCommit, move |conn| {
                transfer::import(conn, &tenant, &records).map(Ok)
            })
            .await
    }

    async fn all_assets(&self) -> Result<Vec<(TenantId, Owner, Asset)>> {
        self.readers.read(assets::everything).await
    }

    async fn gauges(&self, now: Timestamp) -> Result<Gauges> {
        self.readers
            .read(move |conn| {
                // Counters kept by triggers (migration 0007), plus the leases that passed
                // but are not swept yet (an index range, a handful of rows): no table scan.
                let counters: Vec<(String, i64)> = conn
                    .prepare_cached("SELECT name, value FROM gauges")
                    .map_err(translate)?
                    .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
                    .map_err(translate)?
                    .collect::<rusqlite::Result<_>>()
                    .map_err(translate)?;
                let passed: u64 = conn
                    .prepare_cached(
                        "SELECT count(*) FROM sessions \
                         WHERE status = 'active' AND lease_expires_at <= ?1",
                    )
                    .map_err(translate)?
                    .query_row([now.0], |row| row.get(0))
                    .map_err(translate)?;
                let counter = |name: &str| {
                    counters
                        .iter()
                        .find(|(n, _)| n == name)
                        .map_or(0, |(_, v)| u64::try_from(*v).unwrap_or(0))
                };
                let mut gauges = Gauges {
                    sessions: Status::ALL
                        .into_iter()
                        .map(|s| (s, counter(&format!("sessions.{}", s.as_str()))))
                        .collect(),
                    asset_bytes: counter("asset_bytes"),
                    ..Gauges::default()
                };
                for (status, count) in &mut gauges.sessions {
                    match status {
                        Status::Active => *count = count.saturating_sub(passed),
                        Status::Incomplete => *count += passed,
                        _ => {}
                    }
                }
                let pages: u64 = conn
                    .query_row("PRAGMA page_count", [], |row| row.get(0))
                    .map_err(translate)?;
                let page_size: u64 = conn
                    .query_row("PRAGMA page_size", [], |row| row.get(0))
                    .map_err(translate)?;
                gauges.database_bytes = pages * page_size;
                Ok(gauges)
            })
            .await
    }

    async fn audit(&self, entry: AuditEntry) -> Result<()> {
        self.writer
            .write(Ack::AfterCommit, move |conn| {
                keys::audit(conn, &entry)?;
                Ok(Ok(()))
            })
            .await
    }

    async fn audit_trail(
        &self,
        tenant: Option<&TenantId>,
        page: &PageRequest,
    ) -> Result<Page<AuditEntry>> {
        let tenant = tenant.cloned();
        let before = decode_cursor(page.cursor.as_deref())?.unwrap_or(i64::MAX);
        let limit = page.limit;
        self.readers
            .read(move |conn| {
                Ok(paginate(
                    keys::audit_trail(conn, tenant.as_ref(), before, limit)?,
                    limit,
                ))
            })
            .await
    }

    async fn create_session_token(&self, token: SessionToken) -> Result<SessionToken> {
        self.writer
            .write(Ack::AfterCommit, move |conn| {
                let (pk, session) = rows::load_session(conn, &token.tenant, &token.session_id)?;
                let token = SessionToken {
                    attempt: session.attempt,
                    ..token
                };
                keys::insert_session_token(conn, pk, &token)?;
                Ok(Ok(token))
            })
            .await
    }

    async fn session_token(&self, id: &str) -> Result<Option<(SessionToken, Status)>> {
        let id = id.to_owned();
        self.readers
            .read(move |conn| keys::find_session_token(conn, &id))
            .await
    }

    async fn create_key(&self, key: ApiKey) -> Result<()> {
        self.writer
            .write(Ack::AfterCommit, move |conn| {
                keys::insert(conn, &key)?;
                Ok(Ok(()))
            })
            .await
    }

    async fn key(&self, id: &str) -> Result<Option<ApiKey>> {
        let id = id.to_owned();
        self.readers.read(move |conn| keys::find(conn, &id)).await
    }

    async fn keys(&self, tenant: Option<&TenantId>, page: &PageRequest) -> Result<Page<ApiKey>> {
        let tenant = tenant.cloned();
        let after = decode_text_cursor(page.cursor.as_deref())?;
        let limit = page.limit;
        self.readers
            .read(move |conn| {
                let found = keys::list(conn, tenant.as_ref(), &after, limit + 1)?;
                let rows = found
                    .into_iter()
                    .map(|key| Ok((encode_text_cursor(&key.id), key)));
                paginate_within(rows, |_| 0, limit)
            })
            .await
    }

    async fn revoke_key(
        &self,
        id: &str,
        tenant: Option<&TenantId>,
        now: Timestamp,
    ) -> Result<Option<ApiKey>> {
        let (id, tenant) = (id.to_owned(), tenant.cloned());
        self.writer
            .write(Ack::AfterCommit, move |conn| {
                let Some(key) = keys::find(conn, &id)?
                    .filter(|k| tenant.as_ref().is_none_or(|t| *t == k.tenant))
                else {
                    return Ok(Ok(None));
                };
                keys::revoke(conn, &id, now)?;
                Ok(Ok(keys::find(conn, &id)?.or(Some(key))))
            })
            .await
    }

    fn blobs(&self) -> &BlobStore {
        &self.blobs
    }

    async fn asset(&self, tenant: &TenantId, owner: &Owner, name: &AssetName) -> Result<Asset> {
        let (tenant, owner, name) = (tenant.clone(), owner.clone(), name.clone());
        self.readers
            .read(move |conn| {
                assets::require_owner(conn, &tenant, &owner)?;
                assets::find(conn, &tenant, &owner, name.as_str())?.ok_or_else(|| Error::NotFound {
                    what: "asset",
                    id: name.to_string(),
                })
            })
            .await
    }

    async fn assets(
        &self,
        tenant: &TenantId,
        owner: &Owner,
        page: &PageRequest,
    ) -> Result<Page<Asset>> {
        let (tenant, owner) = (tenant.clone(), owner.clone());
        let after = decode_text_cursor(page.cursor.as_deref())?;
        let limit = page.limit;
        self.readers
            .read(move |conn| {
                assets::require_owner(conn, &tenant, &owner)?;
                let found = assets::page(conn, &tenant, &owner, &after, limit + 1)?;
                let rows = found
                    .into_iter()
                    .map(|asset| Ok((encode_text_cursor(asset.name.as_str()), asset)));
                paginate_within(rows, |_| 0, limit)
            })
            .await
    }

    async fn save_asset(
        &self,
        tenant: &TenantId,
        owner: &Owner,
        asset: Asset,
        fence: Option<u32>,
    ) -> Result<bool> {
        let (tenant, owner) = (tenant.clone(), owner.clone());
        self.writer
            .write(Ack::AfterCommit, move |conn| {
                if let Err(refusal) = assets::check_owner(conn, &tenant, &owner, fence)? {
                    return Ok(Err(refusal));
                }
                let created = assets::save(conn, &tenant, &owner, &asset)?;
                if asset.storage == Storage::Blob {
                    // These bytes were just written to the blob's path (see
                    // `BlobStore::keep`): whatever a verification found there is gone.
                    files::heal_blob(conn, asset.sha256.as_str(), asset.updated_at)?;
                }
                Ok(Ok(created))
            })
            .await
    }

    async fn record_file_checks(
        &self,
        found: Vec<(FileVersion, bool)>,
        now: Timestamp,
    ) -> Result<()> {
        self.writer
            .write(Ack::AfterCommit, move |conn| {
                for (version, damaged) in &found {
                    files::record(conn, version, *damaged, now)?;
                }
                Ok(Ok(()))
            })
            .await
    }

    async fn delete_asset(
        &self,
        tenant: &TenantId,
        owner: &Owner,
        name: &AssetName,
        fence: Option<u32>,
    ) -> Result<(Asset, bool)> {
        let (tenant, owner, name) = (tenant.clone(), owner.clone(), name.clone());
        self.writer
            .write(Ack::AfterCommit, move |conn| {
                if let Err(refusal) = assets::check_owner(conn, &tenant, &owner, fence)? {
                    return Ok(Err(refusal));
                }
                let Some(asset) = assets::find(conn, &tenant, &owner, name.as_str())? else {
                    return Ok(Err(Error::NotFound {
                        what: "asset",
                        id: name.to_string(),
                    }));
                };
                assets::delete(conn, &tenant, &owner, name.as_str())?;
                let pinned = match &asset.storage {
                    Storage::Appendable(key) => {
                        files::referenced(conn, &FileRef::Appendable(key.clone()), None)?
                    }
                    _ => true,
                };
                Ok(Ok((asset, pinned)))
            })
            .await
    }

    async fn set_asset_status(
        &self,
        tenant: &TenantId,
        owner: &Owner,
        name: &AssetName,
        status: AssetStatus,
        at: Timestamp,
    ) -> Result<()> {
        let (tenant, owner, name) = (tenant.clone(), owner.clone(), name.clone());
        self.writer
            .write(Ack::AfterCommit, move |conn| {
                assets::set_status(conn, &tenant, &owner, name.as_str(), status, at)?;
                Ok(Ok(()))
            })
            .await
    }
}

fn record_recovery(
    conn: &Connection,
    tenant: &TenantId,
    pk: i64,
    session: &Session,
    option: RecoveryOption,
    now: Timestamp,
) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO recoveries (tenant, session_pk, attempt, option, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )
    .map_err(translate)?
    .execute(params![
        tenant.as_str(),
        pk,
        session.attempt,
        option.as_str(),
        now.0
    ])
    .map_err(translate)?;
    Ok(())
}

fn stats(conn: &Connection, tenant: &TenantId, now: Timestamp) -> Result<Stats> {
    let t = tenant.as_str();
    let mut stats = Stats {
        sessions: Status::ALL.into_iter().map(|s| (s, 0)).collect(),
        crashes_by_type: CrashType::ALL
            .into_iter()
            .map(|c| (c.as_str().to_owned(), 0))
            .collect(),
        recoveries_by_option: RecoveryOption::ALL
            .into_iter()
            .map(|o| (o.as_str().to_owned(), 0))
            .collect(),
        ..Stats::default()
    };
    let mut by_status = conn
        .prepare_cached(
            "SELECT CASE WHEN status = 'active' AND lease_expires_at <= ?2 THEN 'incomplete' \
             ELSE status END, count(*) FROM sessions WHERE tenant = ?1 GROUP BY 1",
        )
        .map_err(translate)?;
    let counts = by_status
        .query_map(params![t, now.0], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, u64>(1)?))
        })
        .map_err(translate)?;
    for row in counts {
        let (status, count) = row.map_err(translate)?;
        if let Some(slot) = stats
            .sessions
            .iter_mut()
            .find(|(s, _)| s.as_str() == status)
        {
            slot.1 = count;
        }
    }
    let grouped = |sql: &str, into: &mut Vec<(String, u64)>| -> Result<()> {
        let mut statement = conn.prepare_cached(sql).map_err(translate)?;
        let rows = statement
            .query_map([t], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, u64>(1)?))
            })
            .map_err(translate)?;
        for row in rows {
            let (key, count) = row.map_err(translate)?;
            match into.iter_mut().find(|(k, _)| *k == key) {
                Some(slot) => slot.1 = count,
                None => into.push((key, count)),
            }
        }
        Ok(())
    };
    grouped(
        "SELECT type, count(*) FROM crashes WHERE tenant = ?1 GROUP BY type",
        &mut stats.crashes_by_type,
    )?;
    grouped(
        "SELECT option, count(*) FROM recoveries WHERE tenant = ?1 GROUP BY option",
        &mut stats.recoveries_by_option,
    )?;
    let mut outcomes = Vec::new();
    grouped(
        "SELECT coalesce(outcome, 'pending'), count(*) FROM recoveries WHERE tenant = ?1 GROUP BY 1",
        &mut outcomes,
    )?;
    for (outcome, count) in outcomes {
        match outcome.as_str() {
            "succeeded" => stats.recoveries_succeeded = count,
            "failed" => stats.recoveries_failed = count,
            _ => stats.recoveries_pending = count,
        }
    }
    (stats.checkpoints_total, stats.checkpoints_invalid) = conn
        .query_row(
            "SELECT count(*), coalesce(sum(c.quarantined), 0) FROM checkpoints c \
             JOIN sessions s ON s.pk = c.session_pk WHERE s.tenant = ?1",
            [t],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .map_err(translate)?;
    // Assets by their last verification status (POST …/verify refreshes it).
    let mut by_status = conn
        .prepare_cached("SELECT status, count(*) FROM assets WHERE tenant = ?1 GROUP BY status")
        .map_err(translate)?;
    let counted = by_status
        .query_map([t], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, u64>(1)?))
        })
        .map_err(translate)?;
    for row in counted {
        let (status, count) = row.map_err(translate)?;
        stats.assets.total += count;
        match AssetStatus::parse(&status) {
            Some(AssetStatus::Ok) => stats.assets.ok += count,
            Some(AssetStatus::Missing) => stats.assets.missing += count,
            Some(AssetStatus::Corrupt) => stats.assets.corrupt += count,
            None => {}
        }
    }
    let column = |sql: &str| -> Result<Vec<u64>> {
        conn.prepare_cached(sql)
            .map_err(translate)?
            .query_map([t], |row| row.get::<_, i64>(0))
            .map_err(translate)?
            .map(|v| v.map(|v| u64::try_from(v).unwrap_or(0)))
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(translate)
    };
    stats.detection_delay_ms = Distribution::of(column(
        "SELECT detected_at - lease_expires_at FROM crashes \
         WHERE tenant = ?1 AND lease_expires_at IS NOT NULL",
    )?);
    stats.work_lost_ms = Distribution::of(column(
        "SELECT work_lost_ms FROM crashes WHERE tenant = ?1",
    )?);
    Ok(stats)
}
