//! An expiry is a fact (SPEC §2 r2). Two rules meet here:
//!
//! - A write's `now` is when it arrived. While it waits for the writer, its session is
//!   *spared*: no sweep expires a lease that passed after that write arrived, so a
//!   heartbeat that arrived in time is never refused as late because the writer was busy.
//! - No answer shows an expiry that is not persisted. A read that would observe a lease
//!   as passed first has the expiry written (or waits for the spared write that keeps the
//!   session alive), so the crash it shows — type and `detected_at` — is the one every
//!   later read, `/stats`, `/events`, `/recovery` and a restart will show.
//!
//! Arrivals and the `now` of a read are taken under one lock, so a write that arrived
//! before a read's `now` is always in the read's snapshot of spared sessions.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::Duration;

use lifeboat_core::{Id, Session, Status, TenantId, Timestamp};
use lifeboat_store::Result;

use crate::{Clock, Lifeboat};

/// How long a read waits, in all, for spared writes to reach the writer before it answers
/// with what is stored (they normally take microseconds; a stuck writer must not hang reads).
const SETTLE_WAIT_MAX: Duration = Duration::from_secs(5);
/// The pause between two looks while a spared write is on its way.
const SETTLE_POLL: Duration = Duration::from_millis(2);

/// Sessions with writes on their way to the store, by `(tenant, id)`, with when the
/// earliest of them arrived: a lease that passed after that arrival is not expired yet.
pub(crate) type Spared = HashMap<(TenantId, Id), Timestamp>;

/// The writes on their way to the store, by session, with when each arrived.
#[derive(Default)]
pub(crate) struct Arrivals(Mutex<HashMap<(TenantId, Id), Vec<Timestamp>>>);

/// Removes its arrival when the write is done (or dropped).
pub(crate) struct Arrival<'a> {
    arrivals: &'a Arrivals,
    key: (TenantId, Id),
    at: Timestamp,
}

impl Arrivals {
    /// Records a write to `(tenant, id)` arriving now; answers its `now`.
    pub(crate) fn arrive(&self, clock: &dyn Clock, tenant: &TenantId, id: &Id) -> Arrival<'_> {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let at = clock.now();
        let key = (tenant.clone(), id.clone());
        map.entry(key.clone()).or_default().push(at);
        Arrival {
            arrivals: self,
            key,
            at,
        }
    }

    /// The time now and the sessions spared at it, taken together.
    pub(crate) fn snapshot(&self, clock: &dyn Clock) -> (Timestamp, Spared) {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let now = clock.now();
        let spared = map
            .iter()
            .filter_map(|(key, times)| Some((key.clone(), *times.iter().min()?)))
            .collect();
        (now, spared)
    }
}

impl Arrival<'_> {
    /// When the write arrived: its `now`.
    pub(crate) fn at(&self) -> Timestamp {
        self.at
    }
}

impl Drop for Arrival<'_> {
    fn drop(&mut self) {
        let mut map = self.arrivals.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(times) = map.get_mut(&self.key) {
            if let Some(index) = times.iter().position(|t| *t == self.at) {
                times.swap_remove(index);
            }
            if times.is_empty() {
                map.remove(&self.key);
            }
        }
    }
}

/// Whether a write that arrived at `arrived` keeps `session` alive past `now`.
fn spared_by(session: &Session, arrived: Option<&Timestamp>) -> bool {
    match (arrived, session.lease_expires_at) {
        (Some(arrived), Some(lease)) => *arrived < lease,
        _ => false,
    }
}

impl Lifeboat {
    /// After the store lost its database (PostgreSQL restarted, the network failed), the
    /// restart grace, once, before anything decides about leases: workers could not
    /// heartbeat while it was gone, so a lease that ran out meanwhile is not a crash yet.
    /// Session writes, sweeps and the reads that persist expiries call this first; until
    /// the grace is written (the database is back), they fail as the store does.
    pub(crate) async fn after_outage(&self) -> Result<()> {
        let graced = &self.inner.outages_graced;
        let outages = self.inner.store.outages();
        if graced.load(Ordering::SeqCst) == outages {
            return Ok(());
        }
        let _one_at_a_time = self.inner.outage_grace.lock().await;
        if graced.load(Ordering::SeqCst) == outages {
            return Ok(());
        }
        let count = self.begin_restart_grace(self.now()).await?;
        graced.store(outages, Ordering::SeqCst);
        tracing::warn!(
            sessions = count,
            "the database was unreachable: restart grace given to active sessions"
        );
        Ok(())
    }

    /// A time `now` at which every lease that has passed is persisted as expired: what
    /// reads of several sessions (lists, `/stats`, `/recovery`) observe at.
    pub(crate) async fn settled_now(&self) -> Result<Timestamp> {
        self.after_outage().await?;
        let started = tokio::time::Instant::now();
        loop {
            let (now, spared) = self.inner.arrivals.snapshot(self.inner.clock.as_ref());
            if !self.any_lease_passed(now).await? {
                return Ok(now);
            }
            self.sweep_at(now, spared).await?;
            if !self.any_lease_passed(now).await? || started.elapsed() > SETTLE_WAIT_MAX {
                return Ok(now);
            }
            tokio::time::sleep(SETTLE_POLL).await;
        }
    }

    /// One session as observed now, with an expiry it shows persisted first.
    pub(crate) async fn settled_session(&self, tenant: &TenantId, id: &Id) -> Result<Session> {
        self.after_outage().await?;
        let started = tokio::time::Instant::now();
        loop {
            let (now, spared) = self.inner.arrivals.snapshot(self.inner.clock.as_ref());
            let mut session = self.stored_session(tenant, id).await?;
            let passed = session.status == Status::Active
                && session.lease_expires_at.is_some_and(|lease| lease <= now);
            if !passed {
                session.observe(now);
                return Ok(session);
            }
            let arrived = spared.get(&(tenant.clone(), id.clone()));
            if !spared_by(&session, arrived) {
                let mut session = self.expire(tenant, id, now).await?;
                session.observe(now);
                return Ok(session);
            }
            if started.elapsed() > SETTLE_WAIT_MAX {
                session.observe(now);
                return Ok(session);
            }
            tokio::time::sleep(SETTLE_POLL).await;
        }
    }
}
