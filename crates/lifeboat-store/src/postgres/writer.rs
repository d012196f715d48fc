//! Group commit for writes: a writer thread, owning one connection that it drives on a
//! runtime of its own (so a statement's round trip wakes no other thread), takes the
//! writes queued at the time, up to [`BATCH_MAX`], and runs them in one transaction, each
//! from its own savepoint: a write that fails rolls back alone while the rest of its batch
//! commits. Every write of a batch is answered after the one `COMMIT` (durable unless every
//! write of the batch was a lease-only heartbeat, see `PgStore::write`).
//!
//! A server has `WRITERS` of them (`mod.rs`; one today), and every write of one session
//! goes to the same one: a batch holds the row locks of all its writes until its
//! `COMMIT`, so two batches each holding a session the other wants next would deadlock,
//! and a session's heartbeat and checkpoint in flight together are the common way to get
//! there (with four writers taking any write, a test met `deadlock detected` in 2 runs of
//! 6). Batches of different servers can still meet on row locks in rarer ways; the write
//! PostgreSQL cancels then runs again (see [`Ran::Again`], `docs/deployment.md`).

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::Weak;
use std::sync::atomic::Ordering;
use std::thread;

use tokio::sync::{mpsc, oneshot};
use tokio_postgres::NoTls;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::Shared;
use super::conn::{Link, Owned, PgConn, connect_error, translate};
use super::held::Held;
use super::rows;
use lifeboat_core::{Id, TenantId};

use crate::{Error, Result};

/// Most writes in one transaction: each savepoint that writes takes a subtransaction id,
/// and past 64 of them in one transaction (`PGPROC_MAX_CACHED_SUBXIDS`) every snapshot
/// taken meanwhile, on any connection, is marked overflowed and checks `pg_subtrans`.
const BATCH_MAX: usize = 48;
/// Writes queued beyond this make callers wait: backpressure instead of unbounded memory.
const QUEUE_CAPACITY: usize = 4_096;
/// Most runs of one write that concurrent writes (of other servers, or of a sweep or a
/// restart grace locking sessions outside key order) roll back: the last one's error is
/// its answer (503, retry).
const RUNS_MAX: u32 = 4;
/// Most session keys a writer remembers (see [`Keys`]); past them it starts over.
const KEYS_MAX: usize = 100_000;

/// What a write did, known once it ran: whether to keep its changes, whether it may
/// commit without waiting for the WAL flush, and how to answer it once the batch's fate
/// is known (with whether the batch recorded events).
struct Finished {
    keep: bool,
    relaxed: bool,
    reply: Box<dyn FnOnce(Result<bool>) + Send>,
}

/// What running a queued write came to.
enum Ran {
    /// It ran: roll it back or keep it, and answer it after the commit.
    Finished(Finished),
    /// A concurrent write (of another server, or an earlier job of its own batch) made it
    /// fail: roll it back and run it again in the next batch.
    Again,
    /// It could not run, and was answered so.
    Answered,
}

/// The session a write is about (see `Store::write_about`).
pub(super) struct About {
    /// A hash of the session's tenant and id: which writer it goes to, and which writes
    /// of a batch are about the same session.
    pub(super) key: u64,
    tenant: TenantId,
    id: Id,
}

impl About {
    pub(super) fn new(tenant: &TenantId, id: &Id) -> About {
        let mut hasher = std::hash::DefaultHasher::new();
        (tenant, id).hash(&mut hasher);
        About {
            key: hasher.finish(),
            tenant: tenant.clone(),
            id: id.clone(),
        }
    }
}

/// The `pk` of sessions the writer locked ahead before, by tenant and id: a batch whose
/// sessions are all known locks them by `pk` ([`lock_ahead`]), a statement that only the
/// primary key serves, planned once. (By tenant and id, the planner, which may know
/// little of a table autovacuum has not analyzed, was seen to read a small table whole, or
/// to walk every session of the tenant for each one.) A `pk` never changes and is never
/// used again, so a key known is at worst out of date: the session was deleted, and is
/// forgotten when a lock ahead does not find it.
#[derive(Default)]
struct Keys(HashMap<(String, String), i64>);

impl Keys {
    /// The keys of `sessions`, if every one is known.
    fn of(&self, sessions: &[(String, String)]) -> Option<Vec<i64>> {
        sessions
            .iter()
            .map(|session| self.0.get(session).copied())
            .collect()
    }

    /// Learns the keys of `rows` (selected with `rows::SESSION_COLUMNS`), and forgets the
    /// other sessions of `asked`, which are no longer stored.
    fn learn(&mut self, asked: &[(String, String)], rows: &[tokio_postgres::Row]) {
        if self.0.len() + rows.len() > KEYS_MAX {
            self.0.clear();
        }
        let mut found = HashSet::with_capacity(rows.len());
        for row in rows {
            if let (Ok(pk), Ok(tenant), Ok(id)) = (
                row.try_get::<_, i64>(0),
                row.try_get::<_, String>(rows::TENANT_COLUMN),
                row.try_get::<_, String>(1),
            ) {
                found.insert(pk);
                self.0.insert((tenant, id), pk);
            }
        }
        for session in asked {
            if self.0.get(session).is_some_and(|pk| !found.contains(pk)) {
                self.0.remove(session);
            }
        }
    }
}

/// A queued write: runs on the writer thread inside the batch's transaction (perhaps more
/// than once, see [`Ran::Again`]), or, given the reason it cannot run, answers that.
struct Job {
    /// The session it is about, if one: its row is locked before the batch's writes about
    /// sessions run, and a write that runs again goes before the later writes about the same session, so
    /// they keep their order.
    about: Option<About>,
    run: Box<dyn FnMut(Turn<'_>) -> Ran + Send>,
}

impl Job {
    fn key(&self) -> Option<u64> {
        self.about.as_ref().map(|about| about.key)
    }
}

/// What a queued write is given: the batch's connection, or why it cannot run.
type Turn<'c> = std::result::Result<&'c PgConn<'c>, Error>;

/// How the writer thread connects.
#[derive(Clone)]
pub(super) struct Connect {
    pub(super) config: tokio_postgres::Config,
    pub(super) tls: Option<MakeRustlsConnect>,
}

/// The queue of writes the writer thread serves.
pub(super) struct Writer {
    queue: mpsc::Sender<Job>,
}

impl Writer {
    /// Starts the writer thread. It stops when the store's last handle is dropped.
    pub(super) fn spawn(connect: &Connect, shared: Weak<Shared>) -> Result<Writer> {
        let (queue, jobs) = mpsc::channel(QUEUE_CAPACITY);
        let connect = connect.clone();
        thread::Builder::new()
            .name("lifeboat-pg-writer".to_owned())
            .spawn(move || run(&connect, jobs, &shared))
            .map_err(|e| Error::Internal(format!("cannot start the writer thread: {e}")))?;
        Ok(Writer { queue })
    }

    /// Runs `work` in the next batch; answers its answer once the batch committed, with
    /// whether the batch recorded events. A run that fails because of a concurrent write
    /// ([`Error::Contended`]) is rolled back and `work` runs again in a later batch, up to
    /// [`RUNS_MAX`] runs in all.
    pub(super) async fn write<T, F>(&self, about: Option<About>, mut work: F) -> Result<(T, bool)>
    where
        T: Send + 'static,
        F: FnMut(&PgConn<'_>) -> (Result<T>, bool) + Send + 'static,
    {
        let (tx, rx) = oneshot::channel::<Result<(T, bool)>>();
        let mut tx = Some(tx);
        let mut runs = 0;
        let run = Box::new(move |conn: Turn<'_>| {
            let conn = match conn {
                Ok(conn) => conn,
                Err(error) => {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(Err(error));
                    }
                    return Ran::Answered;
                }
            };
            let (answer, relaxed) = work(conn);
            runs += 1;
            if matches!(answer, Err(Error::Contended(_))) && runs < RUNS_MAX {
                return Ran::Again;
            }
            let keep = answer.is_ok();
            let Some(tx) = tx.take() else {
                // Answered already (it cannot be: a job is answered once, when it ends).
                return Ran::Finished(Finished {
                    keep: false,
                    relaxed: false,
                    reply: Box::new(drop),
                });
            };
            Ran::Finished(Finished {
                keep,
                relaxed: keep && relaxed,
                reply: Box::new(move |commit| {
                    let _ = tx.send(commit.and_then(|events| answer.map(|a| (a, events))));
                }),
            })
        });
        let job = Job { about, run };
        crate::queue_and_wait(&self.queue, job, rx).await
    }
}

/// The writer thread: takes what is queued, runs it as one batch, again. Writes to run
/// again (see [`Ran::Again`]) go first in the next batch.
fn run(connect: &Connect, mut jobs: mpsc::Receiver<Job>, shared: &Weak<Shared>) {
    let mut link: Option<Owned> = None;
    let mut keys = Keys::default();
    let mut batch: Vec<Job> = Vec::with_capacity(BATCH_MAX);
    loop {
        if batch.is_empty() {
            match jobs.blocking_recv() {
                Some(first) => batch.push(first),
                None => return,
            }
        }
        while batch.len() < BATCH_MAX {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let size = batch.len();
        let started = std::time::Instant::now();
        let (lost, again) = match begin(connect, &mut link) {
            Ok(owned) => commit_batch(owned, std::mem::take(&mut batch), &mut keys),
            Err(error) => {
                for mut job in batch.drain(..) {
                    (job.run)(Err(error.clone()));
                }
                (true, Vec::new())
            }
        };
        batch.extend(again);
        metrics::histogram!("lifeboat_commit_batch_size").record(size as f64);
        metrics::histogram!("lifeboat_commit_duration_seconds")
            .record(started.elapsed().as_secs_f64());
        if lost {
            link = None;
            if let Some(shared) = shared.upgrade() {
                shared.outages.fetch_add(1, Ordering::SeqCst);
            }
        }
    }
}

/// The writer's connection inside a new transaction, connected first if it has none or
/// its connection was found closed. A connection that fails at `BEGIN` (the database
/// restarted while it was idle) is replaced once: nothing ran on it yet.
fn begin<'l>(connect: &Connect, link: &'l mut Option<Owned>) -> Result<&'l Owned> {
    // Lets the connection task notice a closed socket before the batch uses it.
    let open_one = link.take().filter(|owned| {
        owned.runtime.block_on(tokio::task::yield_now());
        !owned.client.is_closed()
    });
    let reused = open_one.is_some();
    let owned = match open_one {
        Some(owned) => owned,
        None => open(connect)?,
    };
    let owned = match start(&owned) {
        Ok(()) => owned,
        Err(error) if reused && error.code().is_none() => {
            let owned = open(connect)?;
            start(&owned).map_err(translate)?;
            owned
        }
        Err(error) => return Err(translate(error)),
    };
    Ok(link.insert(owned))
}

/// Opens a transaction on `owned`, with nothing held back from before.
fn start(owned: &Owned) -> std::result::Result<(), tokio_postgres::Error> {
    owned.forget_from(0);
    let _ = owned.held_back_failure();
    owned.batch("BEGIN ISOLATION LEVEL READ COMMITTED").1?;
    owned.began();
    Ok(())
}

/// A new connection, driven by a runtime of the calling thread's own.
fn open(connect: &Connect) -> Result<Owned> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Internal(format!("cannot start the writer's runtime: {e}")))?;
    let client = runtime.block_on(async {
        let client = match &connect.tls {
            Some(tls) => {
                let (client, connection) = connect.config.connect(tls.clone()).await?;
                tokio::spawn(connection);
                client
            }
            None => {
                let (client, connection) = connect.config.connect(NoTls).await?;
                tokio::spawn(connection);
                client
            }
        };
        // Every statement planned for its own parameters and the tables' sizes now: a
        // prepared statement's generic plan, made while a table was small, may keep
        // scanning it whole after it grew (with dead rows between vacuums too); planning
        // each execution costs little, as a batch runs few statements. (The held rows'
        // statements and the lock ahead by key are the exception, see
        // `held::PLANS_ONCE`; `conn::Owned` sets this back before the next statement.)
        client
            .batch_execute("SET plan_cache_mode = force_custom_plan")
            .await?;
        Ok::<_, tokio_postgres::Error>(client)
    });
    Ok(Owned::new(runtime, client.map_err(connect_error)?))
}

/// Runs `jobs` in the open transaction, commits, and answers each.
///
/// The jobs about no one session run first (their order among concurrent writes is free),
/// then the sessions the other jobs are about are locked, in one statement (see
/// [`lock_ahead`]), then those jobs run. So a restart grace, which locks every active
/// session in key order, is not run after the batch locked some of them: it waits for
/// other servers' batches rather than deadlock with them. (A job about no one session
/// that locks sessions outside key order, before the lock ahead, still can; PostgreSQL
/// then cancels one side and it runs again.) Each job runs from a savepoint of its own,
/// placed before its first statement, to which it alone rolls back if it fails: a job that sends nothing (a
/// checkpoint whose session was locked ahead: its changes are held, see `held.rs`) costs
/// no statement of its own. Savepoints are not released, and a job's changes that the job
/// did not wait for go out with the next statement waited for (or the `COMMIT`). Such a
/// change failing (it should not: its rows are locked) is found with a later statement,
/// and fails the whole batch. Answers whether the connection was lost, and the jobs to run
/// again in the next batch.
fn commit_batch(owned: &Owned, jobs: Vec<Job>, keys: &mut Keys) -> (bool, Vec<Job>) {
    let held = Held::new(owned);
    let conn = PgConn::holding(owned, &held);
    let mut pending = Vec::with_capacity(BATCH_MAX);
    let mut again = Vec::new();
    let mut broken = None;
    let (alone, about): (Vec<Job>, Vec<Job>) =
        jobs.into_iter().partition(|job| job.about.is_none());
    let mut ahead = Some(
        about
            .iter()
            .filter_map(|job| job.about.as_ref())
            .map(|about| {
                (
                    about.tenant.as_str().to_owned(),
                    about.id.as_str().to_owned(),
                )
            })
            .collect::<Vec<(String, String)>>(),
    );
    // The sessions whose rows `held` holds (see `held.rs`).
    let mut holding: HashSet<u64> = HashSet::new();
    for mut job in alone.into_iter().chain(about) {
        if job.about.is_some()
            && broken.is_none()
            && let Some(about) = ahead.take()
        {
            broken = lock_ahead(owned, &held, &about, keys).err();
        }
        if let Some(error) = &broken {
            (job.run)(Err(error.clone()));
            continue;
        }
        let key = job.key();
        if key.is_some() && again.iter().any(|earlier: &Job| earlier.key() == key) {
            // An earlier write about the same session runs again in the next batch: this
            // one follows it there.
            again.push(job);
            continue;
        }
        // A write sees the rows held before it as written when it may read them: it is
        // about a session whose rows are held, or about no one session. Rows past a size
        // go out too.
        if key.is_none_or(|key| !holding.insert(key)) || held.is_large() {
            holding.clear();
            holding.extend(key);
            if let Err(error) = held.send_all() {
                let error = batch_lost(&error);
                (job.run)(Err(error.clone()));
                broken = Some(error);
                continue;
            }
        }
        held.begin_job();
        let mark = owned.held_back();
        owned.savepoint_before_next(true);
        let sends = owned.sends();
        // A job that panics is answered as failed (its reply is dropped) and rolled back.
        let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (job.run)(Ok(&conn))));
        owned.savepoint_before_next(false);
        let finished = match ran {
            Ok(Ran::Finished(finished)) => Some(finished),
            Ok(Ran::Answered) => continue,
            Ok(Ran::Again) => {
                again.push(job);
                None
            }
            Err(_) => {
                tracing::error!("a write job panicked; it is rolled back");
                None
            }
        };
        let keep = finished.as_ref().is_some_and(|f| f.keep);
        if !keep {
            held.drop_job();
        } else if key.is_none()
            && let Err(error) = held.send_all()
        {
            broken = Some(batch_lost(&error));
        }
        if let Some(error) = owned.held_back_failure() {
            broken = Some(batch_lost(&error));
        } else if !keep {
            if owned.sends() == sends {
                // Nothing of it reached the database (not even its savepoint): what it
                // held back is all there is.
                owned.forget_from(mark);
            } else {
                // What is still held back is its own.
                owned.forget_from(0);
                if let (_, Err(error)) = owned.rollback_to("ROLLBACK TO job") {
                    broken = Some(translate(error));
                }
            }
        }
        pending.extend(finished);
    }
    let relaxed = pending.iter().all(|f| f.relaxed);
    if broken.is_none()
        && let Err(error) = held.send_all()
    {
        broken = Some(batch_lost(&error));
    }
    let commit = match broken {
        Some(error) => {
            owned.forget_from(0);
            let _ = owned.batch("ROLLBACK");
            Err(error)
        }
        None => {
            let sql = if relaxed {
                "SET LOCAL synchronous_commit = off; COMMIT"
            } else {
                "COMMIT"
            };
            // A `COMMIT` in a failed transaction rolls back without an error of its own:
            // the savepoint sent before it fails there, and says so.
            owned.defer("SAVEPOINT done");
            match owned.batch(sql) {
                (Some(error), _) => Err(batch_lost(&error)),
                (None, done) => done.map_err(super::commit_error),
            }
        }
    };
    let written = pending.iter().filter(|f| f.keep).count();
    if commit.is_ok() {
        metrics::counter!("lifeboat_writes_total").increment(written as u64);
    }
    let events = conn.recorded_events();
    for finished in pending {
        (finished.reply)(commit.clone().map(|()| events));
    }
    (owned.client.is_closed(), again)
}

/// Locks `sessions` (tenant, id), in one statement, in key order (as every
/// statement here that locks several sessions: batches that lock at once wait for each
/// other, never deadlock), and keeps their rows for the jobs (`held.rs`), so that a job
/// loads its session without a statement of its own. When `keys` knows every one, they
/// are locked by `pk` (see [`Keys`]). Should it fail (a deadlock with a write locking
/// otherwise, a lock waited for too long), it is rolled back and each job locks its own
/// session; a batch whose connection it lost fails.
fn lock_ahead(
    owned: &Owned,
    held: &Held<'_>,
    sessions: &[(String, String)],
    keys: &mut Keys,
) -> Result<()> {
    if sessions.is_empty() {
        return Ok(());
    }
    owned.defer("SAVEPOINT ahead");
    let conn = PgConn::new(owned, true);
    let locked = lock_by_key(owned, &conn, sessions, keys).unwrap_or_else(|| {
        let (tenants, ids): (Vec<&str>, Vec<&str>) = sessions
            .iter()
            .map(|(tenant, id)| (tenant.as_str(), id.as_str()))
            .unzip();
        rows::lock_sessions(&conn, &tenants, &ids)
    });
    match locked {
        Ok(rows) => {
            keys.learn(sessions, &rows);
            held.lock_ahead(rows);
            Ok(())
        }
        Err(error) => {
            tracing::debug!(%error, "cannot lock a batch's sessions at once; each write locks its own");
            owned.forget_from(0);
            let _ = owned.held_back_failure();
            match owned.rollback_to("ROLLBACK TO ahead") {
                (_, Ok(())) => Ok(()),
                (_, Err(error)) => Err(batch_lost(&translate(error))),
            }
        }
    }
}

/// Locks `sessions` by `pk` (after `SAVEPOINT ahead`), if `keys` knows every one; `None`
/// when it does not, or when a key was out of date (its session was deleted, and perhaps
/// created again by another server): rolled back to the savepoint then, so that they are
/// locked by tenant and id instead, the new row too in key order, not later by its write.
fn lock_by_key(
    owned: &Owned,
    conn: &PgConn<'_>,
    sessions: &[(String, String)],
    keys: &mut Keys,
) -> Option<Result<Vec<tokio_postgres::Row>>> {
    let pks = keys.of(sessions)?;
    let mut found = Vec::new();
    if let Err(error) = owned.planned_once(&mut || {
        found = rows::lock_sessions_by_pk(conn, &pks)?;
        Ok(())
    }) {
        return Some(Err(error));
    }
    let distinct: HashSet<&i64> = pks.iter().collect();
    if found.len() == distinct.len() {
        return Some(Ok(found));
    }
    keys.learn(sessions, &found);
    match owned.rollback_to("ROLLBACK TO ahead") {
        (None, Ok(())) => None,
        (Some(error), _) => Some(Err(error)),
        (None, Err(error)) => Some(Err(translate(error))),
    }
}

/// The answer to every write of a batch lost because a change held back failed (or the
/// transaction had failed unseen): no fault of theirs (a job's own refusals are found
/// before it holds anything back), and nothing of the batch was committed, so they retry.
fn batch_lost(error: &Error) -> Error {
    Error::Unavailable(format!(
        "a write committed together with this one failed, so neither was; retry: {error}"
    ))
}
