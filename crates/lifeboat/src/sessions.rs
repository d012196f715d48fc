//! Session writes, each written once as a script over the store's rows: create a
//! session; apply a worker's or an operator's write (heartbeat, checkpoint, pause, fail,
//! recover, complete, cancel); persist an expiry; sweep; the restart grace.
//!
//! Every script loads the row, lets `lifeboat-core` decide, and persists what changed with
//! the history that follows from it (events, crash and recovery rows), in one transaction.

use std::collections::HashMap;
use std::sync::Arc;

use lifeboat_core::{
    Checkpoint, CheckpointKind, Crash, Id, NewCheckpoint, NewSession, Owner, PinnedAsset, Session,
    Sha256, Status, TenantId, Timestamp,
};
use lifeboat_store::rows::{EarlyAck, Subject};
use lifeboat_store::{
    Ack, Error, Gauges, IdempotencyKey, JobResult, Page, PageRequest, Result, RowId, SessionFilter,
    Stats, Tx,
};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::apply::apply;
use crate::expiry::Spared;
use crate::recovery::facts_of;
use crate::store::{Undecodable, once, once_with};
use crate::{Applied, Lifeboat, Outcome, SessionOp, page};

/// Sessions one sweep persists at most, so one sweep never holds the writer for long.
const SWEEP_BATCH_MAX: u32 = 1_000;

impl Lifeboat {
    /// Creates a session: `active`, attempt 1, with a lease.
    pub async fn create_session(&self, tenant: &TenantId, new: NewSession) -> Result<Session> {
        Ok(self
            .create_session_with(tenant, new, None)
            .await?
            .into_inner())
    }

    /// [`Lifeboat::create_session`], idempotent with `key`.
    pub async fn create_session_with(
        &self,
        tenant: &TenantId,
        new: NewSession,
        key: Option<IdempotencyKey>,
    ) -> Result<Outcome<Session>> {
        let id = match &new.id {
            Some(id) => id.clone(),
            None => Id::parse(&uuid::Uuid::now_v7().to_string())?,
        };
        let session = Session::create(id, new, self.now())?;
        let about = (tenant.clone(), session.id.clone());
        let tenant = tenant.clone();
        let now = session.created_at;
        self.write_about(&about.0, &about.1, Ack::AfterCommit, move |tx| {
            once(tx, &tenant, key.as_ref(), now, |tx| {
                if tx.session(&tenant, &session.id)?.is_some() {
                    return Ok(Err(Error::AlreadyExists {
                        what: "session",
                        id: session.id.to_string(),
                    }));
                }
                tx.insert_session(&tenant, &session)?;
                record_changes(tx, &tenant, None, &session, now)?;
                Ok(Ok(session.clone()))
            })
        })
        .await
    }

    /// Applies any session write; the named methods below are shorthands.
    pub async fn update(&self, tenant: &TenantId, id: &Id, op: SessionOp) -> Result<Applied> {
        Ok(self.update_with(tenant, id, op, None).await?.into_inner())
    }

    /// [`Lifeboat::update`], idempotent with `key`.
    ///
    /// The write's `now` is when it arrived here, however long it then waits for the
    /// writer; until it is written its session is spared from expiry (see `expiry`). A
    /// recovery first looks at the session's files, outside the writer.
    pub async fn update_with(
        &self,
        tenant: &TenantId,
        id: &Id,
        mut op: SessionOp,
        key: Option<IdempotencyKey>,
    ) -> Result<Outcome<Applied>> {
        self.after_outage().await?;
        if let SessionOp::Recover { files, .. } = &mut op {
            let facts = self.recovery_facts(tenant, id).await?;
            *files = self.check_files(facts.versions()).await;
        }
        let early = Arc::new(EarlyAck::default());
        let ack = match op {
            SessionOp::Heartbeat { .. } => Ack::EarlyIf(Arc::clone(&early)),
            _ => Ack::AfterCommit,
        };
        let arrival = self
            .inner
            .arrivals
            .arrive(self.inner.clock.as_ref(), tenant, id);
        let about = (tenant, id);
        let (tenant, id, now) = (tenant.clone(), id.clone(), arrival.at());
        let written = self
            .write_about(about.0, about.1, ack, move |tx| {
                let receipt = matches!(
                    op,
                    SessionOp::Heartbeat { .. } | SessionOp::Checkpoint { .. }
                );
                let encode = |applied: &Applied| store_applied(applied, receipt);
                let decode = |tx: &mut dyn Tx, stored: &[u8]| replay(tx, &tenant, &id, stored);
                once_with(tx, &tenant, key.as_ref(), now, encode, decode, |tx| {
                    update_script(tx, &tenant, &id, op.clone(), now, &early)
                })
            })
            .await;
        drop(arrival);
        written
    }

    /// Persists the expiry of one session's lease as observed at `now`, if it has passed
    /// and is not persisted yet; answers the session as stored afterwards.
    pub(crate) async fn expire(
        &self,
        tenant: &TenantId,
        id: &Id,
        now: Timestamp,
    ) -> Result<Session> {
        let about = (tenant, id);
        let (tenant, id) = (tenant.clone(), id.clone());
        self.write_about(about.0, about.1, Ack::AfterCommit, move |tx| {
            let (row, mut session) = load(tx, &tenant, &id)?;
            let lease_passed = session.status == Status::Active
                && session.lease_expires_at.is_some_and(|lease| lease <= now);
            if lease_passed {
                let before = session.clone();
                session.observe(now);
                persist(tx, &tenant, row, &before, &session)?;
                count_new_crash(&before, &session);
            }
            Ok(Ok(session))
        })
        .await
    }

    /// Persists expired leases and stall flags of every tenant at `now`, except sessions
    /// `spared` by a write that arrived before their lease passed; answers how many timed
    /// out.
    pub(crate) async fn sweep_at(&self, now: Timestamp, spared: Spared) -> Result<u64> {
        self.write(Ack::AfterCommit, move |tx| {
            let mut timed_out = 0;
            for (tenant, row, mut session) in tx.due_sessions(now, SWEEP_BATCH_MAX)? {
                let arrived = spared.get(&(tenant.clone(), session.id.clone()));
                if let (Some(arrived), Some(lease)) = (arrived, session.lease_expires_at)
                    && *arrived < lease
                {
                    continue;
                }
                let before = session.clone();
                if session.observe(now) {
                    persist(tx, &tenant, row, &before, &session)?;
                }
                if session.status == Status::Incomplete {
                    timed_out += 1;
                    count_new_crash(&before, &session);
                }
            }
            Ok(Ok(timed_out))
        })
        .await
    }

    /// Gives every active session one full timeout from `ready_at` (the restart grace),
    /// except those whose lease had passed before the last write the store committed:
    /// those expire now (SPEC §2 r2). Answers how many sessions were given the grace.
    pub(crate) async fn begin_restart_grace(&self, ready_at: Timestamp) -> Result<u64> {
        self.write(Ack::AfterCommit, move |tx| {
            let active = tx.active_sessions()?;
            let last_commit_at = last_commit(tx, active.iter().map(|(_, _, s)| s))?;
            let mut graced = 0;
            for (tenant, row, mut session) in active {
                let before = session.clone();
                session.begin_restart_grace(ready_at, last_commit_at);
                persist(tx, &tenant, row, &before, &session)?;
                if session.status == Status::Incomplete {
                    count_new_crash(&before, &session);
                } else {
                    graced += 1;
                }
            }
            Ok(Ok(graced))
        })
        .await
    }
}

/// Reads of sessions.
impl Lifeboat {
    /// One session, as of now (an expiry it shows is persisted first).
    pub async fn session(&self, tenant: &TenantId, id: &Id) -> Result<Session> {
        self.settled_session(tenant, id).await
    }

    /// One session as stored (not observed).
    pub(crate) async fn stored_session(&self, tenant: &TenantId, id: &Id) -> Result<Session> {
        let (tenant, id) = (tenant.clone(), id.clone());
        self.read(move |tx| Ok(load(tx, &tenant, &id)?.1)).await
    }

    /// Whether any active session's lease has passed at `now`.
    pub(crate) async fn any_lease_passed(&self, now: Timestamp) -> Result<bool> {
        self.read(move |tx| tx.any_lease_passed(now)).await
    }

    /// Sessions, newest first.
    pub async fn sessions(
        &self,
        tenant: &TenantId,
        filter: &SessionFilter,
        page: &PageRequest,
    ) -> Result<Page<Session>> {
        let now = self.settled_now().await?;
        let before = page::decode(page.cursor.as_deref())?.unwrap_or(i64::MAX);
        let (tenant, filter, limit) = (tenant.clone(), filter.clone(), page.limit);
        let rows = self
            .read(move |tx| {
                tx.sessions_page(&tenant, &filter, before, limit.saturating_add(1), now)
            })
            .await?;
        let rows = rows.into_iter().map(|(position, mut session)| {
            session.observe(now);
            (page::encode(position), session)
        });
        let size = |s: &Session| {
            s.metadata.as_ref().map_or(0, |m| m.to_string().len())
                + s.error.as_ref().map_or(0, String::len)
        };
        Ok(page::within(rows, size, limit))
    }

    /// Counts for one tenant (every expiry they count is persisted first).
    pub async fn stats(&self, tenant: &TenantId) -> Result<Stats> {
        let now = self.settled_now().await?;
        let tenant = tenant.clone();
        self.read(move |tx| tx.stats(&tenant, now)).await
    }

    /// Sessions by status, asset bytes and database size, across all tenants (`/metrics`).
    pub async fn gauges(&self) -> Result<Gauges> {
        let now = self.now();
        self.read(move |tx| tx.gauges(now)).await
    }
}

/// The script of one session write (see [`apply`]): load, let the core decide, persist
/// the session and what follows from the change, in the caller's transaction.
fn update_script(
    tx: &mut dyn Tx,
    tenant: &TenantId,
    id: &Id,
    op: SessionOp,
    now: Timestamp,
    early: &EarlyAck,
) -> JobResult<Applied> {
    let (row, mut session) = load(tx, tenant, id)?;
    let before = session.clone();
    let recovery_option = match &op {
        SessionOp::Recover { option, .. } => Some(*option),
        _ => None,
    };
    let heartbeat = matches!(op, SessionOp::Heartbeat { .. });
    // What the core may ask for, read first: the current versions of the assets a
    // checkpoint names, and what a recovery's assessment needs. Rows only, never files
    // (see `recovery`).
    let pins = current_versions(tx, tenant, id, &op)?;
    let pin = |name: &str| Ok(pins.get(name).cloned().flatten());
    let facts = match &op {
        SessionOp::Recover { .. } => Some(facts_of(tx, tenant, row, session.clone())?),
        _ => None,
    };
    let facts = |now: &Session| {
        let mut facts =
            facts.ok_or_else(|| Error::Internal("recovery facts not read".to_owned()))?;
        facts.session = now.clone();
        Ok(facts)
    };
    let result = apply(&mut session, op, now, &pin, facts);
    if session != before {
        persist(tx, tenant, row, &before, &session)?;
    }
    if heartbeat && only_lease_moved(&before, &session) {
        early.allow(lease_redo(row, &session));
    }
    let applied = match result {
        Ok(applied) => applied,
        Err(refusal) => return Ok(Err(refusal)),
    };
    if let Some(checkpoint) = &applied.checkpoint {
        tx.insert_checkpoint(row, checkpoint)?;
        if !checkpoint.kind.is_kept_for_life() {
            tx.prune_checkpoints(row, session.checkpoint_retention)?;
        }
        let data = json!({
            "session_id": id.as_str(),
            "project_id": session.project_id.as_ref().map(|p| p.as_str()),
            "seq": checkpoint.seq,
            "attempt": checkpoint.attempt,
            "kind": checkpoint.kind.as_str(),
            "stage": checkpoint.stage,
            "sha256": checkpoint.sha256.as_str(),
        });
        tx.record_event(tenant, "checkpoint.created", subject(&session), &data, now)?;
    }
    if let Some(option) = recovery_option {
        tx.record_recovery(tenant, row, session.attempt, option, now)?;
        metrics::counter!("lifeboat_recoveries_total", "option" => option.as_str()).increment(1);
    }
    count_new_crash(&before, &session);
    Ok(Ok(applied))
}

/// The current version of each asset a checkpoint of `op` names (none for a name the
/// session has no asset of; the core refuses it). Past the core's limit of names, none
/// are read: the core refuses the checkpoint before it asks.
fn current_versions(
    tx: &mut dyn Tx,
    tenant: &TenantId,
    id: &Id,
    op: &SessionOp,
) -> Result<HashMap<String, Option<PinnedAsset>>> {
    let names = match op {
        SessionOp::Checkpoint { checkpoint, .. }
        | SessionOp::Fail {
            checkpoint: Some(checkpoint),
            ..
        } => checkpoint.assets.as_slice(),
        _ => &[],
    };
    let mut versions = HashMap::new();
    if names.len() > NewCheckpoint::ASSETS_MAX {
        return Ok(versions);
    }
    let owner = Owner::Session(id.clone());
    for name in names {
        if !versions.contains_key(name) {
            let asset = tx.asset(tenant, &owner, name)?;
            versions.insert(name.clone(), asset.map(|a| PinnedAsset::of(&a)));
        }
    }
    Ok(versions)
}

/// What a heartbeat's or a checkpoint's answer shows, stored for its retries instead of
/// the whole result: these are most writes, and their results carry the session (metadata
/// up to 64 KiB) and the checkpoint's `data`, which the request itself sent.
#[derive(Serialize, Deserialize)]
struct Receipt {
    status: Status,
    attempt: u32,
    lease_expires_at: Option<Timestamp>,
    checkpoint: Option<CheckpointReceipt>,
}

#[derive(Serialize, Deserialize)]
struct CheckpointReceipt {
    seq: u64,
    attempt: u32,
    kind: CheckpointKind,
    stage: Option<String>,
    sha256: Sha256,
    created_at: Timestamp,
}

/// A stored outcome of a session write: the receipt of a heartbeat or checkpoint, or the
/// whole result of the rarer writes (whose answers show the whole session).
#[derive(Serialize)]
enum StoredRef<'a> {
    Receipt(Receipt),
    Applied(&'a Applied),
}

#[derive(Deserialize)]
enum Stored {
    Receipt(Receipt),
    Applied(Box<Applied>),
}

fn store_applied(applied: &Applied, receipt: bool) -> serde_json::Result<Vec<u8>> {
    if !receipt {
        return serde_json::to_vec(&StoredRef::Applied(applied));
    }
    let session = &applied.session;
    let checkpoint = applied.checkpoint.as_ref().map(|c| CheckpointReceipt {
        seq: c.seq,
        attempt: c.attempt,
        kind: c.kind,
        stage: c.stage.clone(),
        sha256: c.sha256.clone(),
        created_at: c.created_at,
    });
    serde_json::to_vec(&StoredRef::Receipt(Receipt {
        status: session.status,
        attempt: session.attempt,
        lease_expires_at: session.lease_expires_at,
        checkpoint,
    }))
}

/// The result a retry answers with. From a receipt: the session as stored now with the
/// status, attempt and lease the first answer showed, and the checkpoint as stored (or,
/// once retention pruned it, as the receipt recorded it, without `data`).
fn replay(
    tx: &mut dyn Tx,
    tenant: &TenantId,
    id: &Id,
    stored: &[u8],
) -> Result<Applied, Undecodable> {
    let receipt = match serde_json::from_slice(stored)? {
        Stored::Applied(applied) => return Ok(*applied),
        Stored::Receipt(receipt) => receipt,
    };
    let (row, mut session) = load(tx, tenant, id)?;
    session.status = receipt.status;
    session.attempt = receipt.attempt;
    session.lease_expires_at = receipt.lease_expires_at;
    let checkpoint = match receipt.checkpoint {
        Some(c) => Some(match tx.checkpoint(row, c.seq)? {
            Some(stored) if stored.sha256 == c.sha256 => stored,
            _ => Checkpoint {
                seq: c.seq,
                attempt: c.attempt,
                kind: c.kind,
                stage: c.stage,
                position: None,
                completed_units: None,
                total_units: None,
                data: String::new(),
                sha256: c.sha256,
                assets: Vec::new(),
                created_at: c.created_at,
                valid: true,
            },
        }),
        None => None,
    };
    Ok(Applied {
        session,
        checkpoint,
        resume_from: None,
    })
}

/// A session row or 404./// A session row or 404.
pub(crate) fn load(tx: &mut dyn Tx, tenant: &TenantId, id: &Id) -> Result<(RowId, Session)> {
    tx.session(tenant, id)?.ok_or_else(|| Error::NotFound {
        what: "session",
        id: id.to_string(),
    })
}

fn subject(session: &Session) -> Subject<'_> {
    Subject {
        session_id: Some(session.id.as_str()),
        project_id: session.project_id.as_ref().map(|p| p.as_str()),
    }
}

/// Persists `after`, and the history rows that follow from how it differs from `before`:
/// status and stall events, the crash row, the outcome of the recovery of this attempt.
fn persist(
    tx: &mut dyn Tx,
    tenant: &TenantId,
    row: RowId,
    before: &Session,
    after: &Session,
) -> Result<()> {
    tx.update_session(row, after)?;
    record_changes(tx, tenant, Some(before), after, after.updated_at)?;
    if after.crash != before.crash
        && let Some(crash) = &after.crash
    {
        tx.record_crash(tenant, row, crash)?;
    }
    let outcome = match after.status {
        _ if after.status == before.status => None,
        Status::Incomplete | Status::Failed => Some("failed"),
        Status::Completed => Some("succeeded"),
        _ => None,
    };
    if let Some(outcome) = outcome {
        tx.settle_recovery(row, after.attempt, outcome)?;
    }
    Ok(())
}

/// The events a change of `before` into `after` makes: `session.status` when the status
/// changed (or the session is new), `session.stalled` when it became stalled.
fn record_changes(
    tx: &mut dyn Tx,
    tenant: &TenantId,
    before: Option<&Session>,
    after: &Session,
    now: Timestamp,
) -> Result<()> {
    if before.map(|b| b.status) != Some(after.status) {
        let data = json!({
            "session_id": after.id.as_str(),
            "project_id": after.project_id.as_ref().map(|p| p.as_str()),
            "status": after.status.as_str(),
            "previous": before.map(|b| b.status.as_str()),
            "attempt": after.attempt,
            "crash_type": after.crash.as_ref().map(|c| c.kind.as_str()),
        });
        tx.record_event(tenant, "session.status", subject(after), &data, now)?;
    }
    if after.stalled && !before.is_some_and(|b| b.stalled) {
        let data = json!({
            "session_id": after.id.as_str(),
            "project_id": after.project_id.as_ref().map(|p| p.as_str()),
            "attempt": after.attempt,
        });
        // Dated when it stalled, whichever write (a sweep, a heartbeat) first saw it.
        let stalled_at = after.stalls_at().unwrap_or(now);
        tx.record_event(tenant, "session.stalled", subject(after), &data, stalled_at)?;
    }
    Ok(())
}

/// Crash metrics for a crash `after` has and `before` did not (a refined type of one
/// already counted is not a new crash): by type, how late it was noticed, the work lost.
fn count_new_crash(before: &Session, after: &Session) {
    let Some(crash) = &after.crash else {
        return;
    };
    if before.crash.as_ref().map(|c| c.attempt) == Some(crash.attempt) {
        return;
    }
    record_crash_metrics(crash);
}

fn record_crash_metrics(crash: &Crash) {
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

/// Writes a lease-only heartbeat's change again (see [`lifeboat_store::Redo`]).
fn lease_redo(row: RowId, session: &Session) -> lifeboat_store::Redo {
    let (attempt, updated_at) = (session.attempt, session.updated_at);
    let (heartbeat_at, lease) = (session.last_heartbeat_at, session.lease_expires_at);
    Box::new(move |tx| tx.extend_lease(row, attempt, heartbeat_at, lease, updated_at))
}

/// When the store last committed a write, as far as its rows tell: the newest change of
/// an active session (heartbeats change nothing else) or the newest event (every other
/// session change, checkpoint and project save records one). A lower bound.
fn last_commit<'s>(
    tx: &mut dyn Tx,
    active: impl Iterator<Item = &'s Session>,
) -> Result<Timestamp> {
    let newest_event = tx.newest_event_at()?.map(|t| t.0);
    let newest_session = active.map(|s| s.updated_at.0).max();
    Ok(Timestamp(
        newest_event.max(newest_session).unwrap_or(i64::MIN),
    ))
}

#[cfg(test)]
#[path = "sessions_tests.rs"]
mod tests;
