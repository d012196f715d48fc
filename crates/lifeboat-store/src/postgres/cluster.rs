//! The servers on one database: each beats every second (its row in `lifeboat_nodes`,
//! its clock measured against the database's), and one of them holds the maintenance
//! lease (`lifeboat_maintenance`) for a term, renewing it with each beat. A server that
//! stops beating loses the lease when it lapses, and another takes the next term at its
//! next beat: within `LEASE + BEAT` (6 s) of the holder's death.
//!
//! Every time here is the database's (`clock_timestamp()`), so servers whose clocks
//! disagree still agree on who holds the lease.

use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use lifeboat_core::Timestamp;

use super::conn::{PgConn, column, translate};
use super::{Shared, pool_error};
use crate::{Cluster, MaintenanceTerm, Node, Result};

/// How often a server beats (and the lease holder renews).
const BEAT: Duration = crate::BEAT_INTERVAL;
/// How long the maintenance lease lasts unless renewed.
const LEASE: Duration = Duration::from_secs(5);
/// A holder stops acting on its term this long before the lease could lapse, for the time
/// a renewal's answer takes to arrive.
const MARGIN: Duration = Duration::from_millis(1_000);
/// A server that has not beaten for this long is not counted as running.
const ALIVE: Duration = Duration::from_secs(3);
/// Clocks closer than this to the database's are left alone (measurement noise).
const TOLERANCE_MS: i64 = 50;

/// The database's clock in ms since the epoch, as SQL.
const DB_NOW: &str = "(extract(epoch from clock_timestamp()) * 1000)::bigint";

/// This server's part: its id, what its last beat measured, and its maintenance term.
pub(super) struct Membership {
    pub(super) node: String,
    /// Milliseconds to add to this machine's clock to read the database's.
    pub(super) offset_ms: AtomicI64,
    /// This machine's clock minus the database's at the last beat.
    pub(super) skew_ms: AtomicI64,
    /// The term held, and until when (this machine's monotonic clock) it may act on it.
    pub(super) term: Mutex<Option<(u64, Instant)>>,
}

impl Membership {
    pub(super) fn new() -> Membership {
        Membership {
            node: uuid::Uuid::now_v7().to_string(),
            offset_ms: AtomicI64::new(0),
            skew_ms: AtomicI64::new(0),
            term: Mutex::new(None),
        }
    }

    /// The term this server holds now, if any.
    pub(super) fn term(&self) -> Option<u64> {
        let term = self.term.lock().unwrap_or_else(|e| e.into_inner());
        term.filter(|(_, until)| Instant::now() < *until)
            .map(|(term, _)| term)
    }
}

fn local_ms() -> i64 {
    crate::wall_clock().0
}

impl Shared {
    /// One beat: records this server as running, measures its clock against the
    /// database's, and takes or renews the maintenance lease when it is free or ours.
    pub(super) async fn beat(&self) -> Result<()> {
        let me = &self.membership;
        let client = self.pool.get().await.map_err(pool_error)?;
        let read_clock = client
            .prepare_cached(&format!("SELECT {DB_NOW}"))
            .await
            .map_err(translate)?;
        let sent = local_ms();
        let database: i64 = column(
            &client
                .query_one(&read_clock, &[])
                .await
                .map_err(translate)?,
            0,
        )?;
        let skew = (sent + local_ms()) / 2 - database;
        me.skew_ms.store(skew, Ordering::Relaxed);
        if (skew + me.offset_ms.load(Ordering::Relaxed)).abs() > TOLERANCE_MS {
            me.offset_ms.store(-skew, Ordering::Relaxed);
        }
        client
            .execute(
                &format!(
                    "INSERT INTO lifeboat_nodes (id, version, started_at, last_seen, clock_skew_ms)
                     VALUES ($1, $2, {DB_NOW}, {DB_NOW}, $3)
                     ON CONFLICT (id) DO UPDATE
                     SET last_seen = EXCLUDED.last_seen, clock_skew_ms = EXCLUDED.clock_skew_ms"
                ),
                &[&me.node, &env!("CARGO_PKG_VERSION"), &skew],
            )
            .await
            .map_err(translate)?;
        let asked = Instant::now();
        let held = client
            .query_opt(
                &format!(
                    "INSERT INTO lifeboat_maintenance AS m (id, holder, term, expires_at)
                     VALUES (1, $1, 1, {DB_NOW} + $2)
                     ON CONFLICT (id) DO UPDATE
                     SET holder = EXCLUDED.holder,
                         term = CASE WHEN m.holder = EXCLUDED.holder AND m.expires_at > {DB_NOW}
                                     THEN m.term ELSE m.term + 1 END,
                         expires_at = EXCLUDED.expires_at
                     WHERE m.holder = EXCLUDED.holder OR m.expires_at <= {DB_NOW}
                     RETURNING term"
                ),
                &[&me.node, &(LEASE.as_millis() as i64)],
            )
            .await
            .map_err(translate)?;
        let term = match held {
            Some(row) => {
                let term: i64 = column(&row, 0)?;
                Some((term.max(0) as u64, asked + LEASE - MARGIN))
            }
            None => None,
        };
        let holding = term.is_some();
        *me.term.lock().unwrap_or_else(|e| e.into_inner()) = term;
        if holding {
            // The holder forgets servers not seen for a day.
            client
                .execute(
                    &format!("DELETE FROM lifeboat_nodes WHERE last_seen < {DB_NOW} - 86400000"),
                    &[],
                )
                .await
                .map_err(translate)?;
        }
        Ok(())
    }

    /// The servers, the lease and the events not yet numbered, as the database has them.
    pub(super) async fn cluster(&self) -> Result<Cluster> {
        let client = self.pool.get().await.map_err(pool_error)?;
        let now: i64 = column(
            &client
                .query_one(&format!("SELECT {DB_NOW}"), &[])
                .await
                .map_err(translate)?,
            0,
        )?;
        let nodes = client
            .query(
                "SELECT id, version, started_at, last_seen, clock_skew_ms FROM lifeboat_nodes
                 WHERE last_seen > $1 ORDER BY started_at, id",
                &[&(now - 600_000)],
            )
            .await
            .map_err(translate)?
            .iter()
            .map(|row| {
                let last_seen: i64 = column(row, 3)?;
                Ok(Node {
                    id: column(row, 0)?,
                    version: column(row, 1)?,
                    started_at: Timestamp(column(row, 2)?),
                    last_seen: Timestamp(last_seen),
                    alive: now - last_seen < ALIVE.as_millis() as i64,
                    clock_skew_ms: column(row, 4)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let maintenance = client
            .query_opt(
                "SELECT holder, term, expires_at FROM lifeboat_maintenance WHERE id = 1",
                &[],
            )
            .await
            .map_err(translate)?
            .map(|row| -> Result<MaintenanceTerm> {
                let term: i64 = column(&row, 1)?;
                Ok(MaintenanceTerm {
                    holder: column(&row, 0)?,
                    term: term.max(0) as u64,
                    expires_at: Timestamp(column(&row, 2)?),
                })
            })
            .transpose()?;
        let waiting = client
            .query_one(
                "SELECT count(*), min(created_at) FROM events WHERE seq IS NULL",
                &[],
            )
            .await
            .map_err(translate)?;
        let unsequenced: i64 = column(&waiting, 0)?;
        let oldest: Option<i64> = column(&waiting, 1)?;
        Ok(Cluster {
            node: self.membership.node.clone(),
            now: Timestamp(now),
            nodes,
            maintenance,
            unsequenced_events: unsequenced.max(0) as u64,
            oldest_unsequenced_ms: oldest.map_or(0, |at| (now - at).max(0) as u64),
        })
    }
}

/// Whether `holder` still holds `term`, unexpired by the database's clock; the row stays
/// locked `FOR SHARE` until the transaction ends, so the next term waits for it.
pub(super) fn hold_term(conn: &PgConn<'_>, holder: &str, term: u64) -> Result<bool> {
    let term = i64::try_from(term).map_err(|e| crate::Error::Internal(format!("term: {e}")))?;
    Ok(conn
        .query_opt(
            &format!(
                "SELECT 1 FROM lifeboat_maintenance
                 WHERE id = 1 AND holder = $1 AND term = $2 AND expires_at > {DB_NOW}
                 FOR SHARE"
            ),
            &[&holder, &term],
        )?
        .is_some())
}

/// Every `BEAT`, while the store is open.
pub(super) async fn beat_loop(shared: std::sync::Weak<Shared>) {
    let mut ticks = tokio::time::interval(BEAT);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        // A beat that fails, or hangs past the time a server counts as running, means the
        // database could not be reached: an outage.
        let beat = tokio::time::timeout(ALIVE, shared.beat()).await;
        if let Err(error) = beat.unwrap_or_else(|_| {
            Err(crate::Error::Unavailable(
                "the database did not answer the beat".to_owned(),
            ))
        }) {
            shared.outages.fetch_add(1, Ordering::SeqCst);
            tracing::warn!(%error, "cannot record this server's beat; trying again");
        }
    }
}
