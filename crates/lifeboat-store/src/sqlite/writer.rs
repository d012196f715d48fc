//! The one writer: a thread that owns the write connection and commits queued writes in
//! batches (group commit). Callers hold a cheap [`Writer`] handle.
//!
//! Each write runs inside its own savepoint, so a refused write rolls back alone while the
//! rest of the batch commits. Replies go out after the `COMMIT` returns (SQLite WAL with
//! `synchronous=FULL` has fsynced by then). A failed commit poisons the writer: every later
//! write answers [`Error::Poisoned`] until restart, because a retried fsync cannot be
//! trusted. A full disk answers [`Error::Full`] and does not poison: SQLite has rolled the
//! transaction back and the database is intact.
//!
//! A commit that fails after SQLite wrote its frames to the WAL (a failed fsync) would
//! still be found by the WAL recovery at the next start, although its writes were
//! refused. So the writer tracks how much of the WAL holds committed frames (through the
//! WAL hook, which also runs the checkpoints) and, when it is poisoned, cuts the WAL back
//! to that length: what was refused stays refused after a restart.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::Instant;

use rusqlite::Connection;
use rusqlite::wal::CheckpointMode;
use tokio::sync::{mpsc, oneshot, watch};

use super::translate;
use super::tx::SqliteTx;
use crate::Error;
use crate::lock::DirLock;
use crate::rows::{Ack, Redo};

/// Writes queued beyond this make callers wait: backpressure instead of unbounded memory.
const QUEUE_CAPACITY: usize = 8_192;
/// Most writes in one transaction, so one batch never holds the lock for long.
const BATCH_MAX: usize = 512;
/// A checkpoint runs once the WAL holds this many frames (SQLite's own default).
const CHECKPOINT_FRAMES: i32 = 1_000;
/// Bytes of the WAL header, and of each frame's header.
const WAL_HEADER: u64 = 32;
const FRAME_HEADER: u64 = 24;

/// What a job reports back to the loop.
pub(super) struct Finished {
    /// Keep the job's changes (release its savepoint) or roll them back.
    keep: bool,
    /// Set when the job replied before the commit (heartbeats only): how to write its
    /// change again if the commit fails.
    redo: Option<Redo>,
    /// Whether the job hit an I/O error that must poison the writer.
    poison: bool,
    /// Sends the job's answer once the batch's fate is known.
    reply: Box<dyn FnOnce(Result<(), Error>) + Send>,
}

type Job = Box<dyn FnOnce(&Connection) -> Finished + Send>;

/// A handle for queueing writes. Cloning is cheap.
#[derive(Clone)]
pub(super) struct Writer {
    queue: mpsc::Sender<Job>,
    poisoned: Arc<AtomicBool>,
    /// Counts successful commits; the event stream waits on it for new events.
    commits: watch::Receiver<u64>,
}

impl Writer {
    /// Starts the writer thread on `conn`, the connection to the database at `path`.
    /// The thread owns `lock`, so the data directory stays locked until the last write
    /// has been answered and the connection is closed.
    pub(super) fn spawn(
        mut conn: Connection,
        path: PathBuf,
        lock: DirLock,
    ) -> Result<Writer, Error> {
        let wal = WalTail::start(&mut conn, path)?;
        let (queue, jobs) = mpsc::channel(QUEUE_CAPACITY);
        let poisoned = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&poisoned);
        let (committed, commits) = watch::channel(0);
        thread::Builder::new()
            .name("lifeboat-writer".to_owned())
            .spawn(move || {
                run(conn, jobs, flag, committed, wal);
                drop(lock);
            })
            .map_err(|e| Error::Internal(format!("cannot start the writer thread: {e}")))?;
        Ok(Writer {
            queue,
            poisoned,
            commits,
        })
    }

    /// A receiver that changes after every successful commit.
    pub(super) fn commits(&self) -> watch::Receiver<u64> {
        self.commits.clone()
    }

    /// Whether a failed commit has stopped writes.
    pub(super) fn is_poisoned(&self) -> bool {
        self.poisoned.load(Ordering::Acquire)
    }

    /// Runs `work` in the next batch and answers once its fate is durable.
    ///
    /// `work` answers `Err` to roll back its changes, or `Ok(Err(..))` to keep its changes
    /// and still answer a refusal (used when a refused write observed an expiry).
    pub(super) async fn write<T, F>(&self, ack: Ack, work: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<Result<T, Error>, Error> + Send + 'static,
    {
        if self.is_poisoned() {
            return Err(poisoned_error());
        }
        let (tx, rx) = oneshot::channel::<Result<T, Error>>();
        let job: Job = Box::new(move |conn| {
            let outcome = work(conn);
            let keep = outcome.is_ok();
            let poison = matches!(outcome, Err(Error::Unavailable(_)));
            let redo = match &ack {
                Ack::EarlyIf(early) if matches!(outcome, Ok(Ok(_))) => early.take(),
                _ => None,
            };
            let early = redo.is_some();
            let mut answer = Some(outcome.and_then(|inner| inner));
            let mut tx = Some(tx);
            if early && let (Some(tx), Some(answer)) = (tx.take(), answer.take()) {
                let _ = tx.send(answer);
            }
            Finished {
                keep,
                redo,
                poison,
                reply: Box::new(move |commit| {
                    if let (Some(tx), Some(answer)) = (tx, answer) {
                        let _ = tx.send(commit.and(answer));
                    }
                }),
            }
        });
        crate::queue_and_wait(&self.queue, job, rx).await
    }
}

/// How much of the WAL file holds frames that must survive: everything after it belongs
/// to no successful commit.
struct WalTail {
    /// The `-wal` file.
    path: PathBuf,
    /// Bytes of one frame: its header and one page.
    frame_bytes: u64,
    /// Frames of the WAL still needed after the last commit (0 once a checkpoint has
    /// copied them all into the database file).
    needed: Arc<AtomicU64>,
}

impl WalTail {
    /// Empties the WAL (a truncating checkpoint), then installs the WAL hook, which
    /// records the committed length after each commit and checkpoints as SQLite would.
    fn start(conn: &mut Connection, database: PathBuf) -> Result<WalTail, Error> {
        conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
            .map_err(translate)?;
        let page_size: u64 = conn
            .query_row("PRAGMA page_size", [], |row| row.get(0))
            .map_err(translate)?;
        let needed = Arc::new(AtomicU64::new(0));
        let recorder = Arc::clone(&needed);
        conn.wal_hook(Some(move |wal: &mut rusqlite::hooks::Wal, frames: i32| {
            let mut kept = u64::try_from(frames).unwrap_or(0);
            if frames >= CHECKPOINT_FRAMES {
                // A checkpoint that copied every frame leaves none needed.
                if let Ok((log, done)) = wal.checkpoint_v2(CheckpointMode::PASSIVE)
                    && log >= 0
                    && log == done
                {
                    kept = 0;
                }
            }
            recorder.store(kept, Ordering::Release);
            Ok(())
        }))
        .map_err(translate)?;
        let mut path = database.into_os_string();
        path.push("-wal");
        Ok(WalTail {
            path: PathBuf::from(path),
            frame_bytes: FRAME_HEADER + page_size,
            needed,
        })
    }

    /// Cuts the WAL back to its committed frames, so a commit that failed halfway (its
    /// frames written, its fsync failed) is not replayed at the next start.
    fn discard_uncommitted(&self) {
        let keep = WAL_HEADER + self.needed.load(Ordering::Acquire) * self.frame_bytes;
        let cut = std::fs::OpenOptions::new()
            .write(true)
            .open(&self.path)
            .and_then(|file| match file.metadata()?.len() {
                // The cut itself must be durable: a power cut right after it could
                // otherwise bring the refused frames back.
                len if len > keep => file
                    .set_len(keep)
                    .and_then(|()| file.sync_all())
                    .map(|()| len - keep),
                _ => Ok(0),
            });
        match cut {
            Ok(bytes) => tracing::warn!(bytes, "cut the failed commit from the WAL"),
            Err(error) => tracing::error!(%error, "cannot cut the failed commit from the WAL"),
        }
    }
}

fn poisoned_error() -> Error {
    Error::Poisoned
}

fn run(
    conn: Connection,
    mut jobs: mpsc::Receiver<Job>,
    poisoned: Arc<AtomicBool>,
    committed: watch::Sender<u64>,
    wal: WalTail,
) {
    let mut batch: Vec<Job> = Vec::with_capacity(BATCH_MAX);
    // Early-acknowledged changes whose commit failed, written again with the next batch.
    let mut redos: Vec<Redo> = Vec::new();
    while let Some(first) = jobs.blocking_recv() {
        batch.push(first);
        while batch.len() < BATCH_MAX {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        if poisoned.load(Ordering::Acquire) {
            for job in batch.drain(..) {
                // Run nothing: answer each job with the poison error.
                drop(job);
            }
            if !redos.is_empty() {
                tracing::warn!(
                    heartbeats = redos.len(),
                    "acknowledged heartbeats are lost with the failed commit; the restart grace covers them"
                );
                redos.clear();
            }
            continue;
        }
        let started = Instant::now();
        let size = batch.len();
        let outcome = commit_batch(&conn, batch.drain(..), &mut redos);
        metrics::histogram!("lifeboat_commit_batch_size").record(size as f64);
        metrics::histogram!("lifeboat_commit_duration_seconds")
            .record(started.elapsed().as_secs_f64());
        match outcome {
            // Never blocks: subscribers read the new events themselves, at their pace.
            Ok(()) => committed.send_modify(|count| *count += 1),
            Err(reason @ (Error::Unavailable(_) | Error::Poisoned)) => {
                tracing::error!(%reason, "commit failed; writes are stopped until restart");
                poisoned.store(true, Ordering::Release);
                wal.discard_uncommitted();
            }
            Err(_) => {}
        }
    }
}

/// Runs `jobs` in one transaction and replies to each with the commit's outcome.
///
/// `redos` come in as the early-acknowledged changes of an earlier failed commit, written
/// first; they go out as those of this batch if its commit fails too.
fn commit_batch(
    conn: &Connection,
    jobs: impl Iterator<Item = Job>,
    redos: &mut Vec<Redo>,
) -> Result<(), Error> {
    if let Err(e) = exec(conn, "BEGIN IMMEDIATE") {
        return Err(translate(e));
    }
    let retried = std::mem::take(redos);
    for redo in &retried {
        let written = exec(conn, "SAVEPOINT job")
            .map_err(translate)
            .and_then(|()| match redo(&mut SqliteTx(conn)) {
                Ok(()) => exec(conn, "RELEASE job").map_err(translate),
                Err(_) => exec(conn, "ROLLBACK TO job")
                    .and_then(|()| exec(conn, "RELEASE job"))
                    .map_err(translate),
            });
        if let Err(error) = written {
            tracing::error!(%error, "cannot write an acknowledged heartbeat again");
        }
    }
    let mut pending = Vec::with_capacity(BATCH_MAX);
    let mut poison = false;
    for job in jobs {
        if poison {
            drop(job);
            continue;
        }
        let finished = run_job(conn, job);
        poison |= finished.poison;
        pending.push(finished);
    }
    let commit = if poison {
        Err(poisoned_error())
    } else {
        exec(conn, "COMMIT").map_err(translate)
    };
    if commit.is_err() {
        // The transaction may already be gone; a failed rollback changes nothing here.
        let _ = conn.execute_batch("ROLLBACK");
    }
    let written = pending.iter().filter(|f| f.keep).count();
    metrics::counter!("lifeboat_writes_total").increment(written as u64);
    if commit.is_err() {
        // Still owed: the earlier ones and this batch's early-acknowledged heartbeats.
        *redos = retried;
    }
    for finished in pending {
        if commit.is_err()
            && let Some(redo) = finished.redo
        {
            redos.push(redo);
        }
        (finished.reply)(commit.clone());
    }
    commit
}

/// Runs one statement through the statement cache (the per-job savepoint statements run
/// thousands of times a second; parsing them each time shows in profiles).
fn exec(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(drop)
}

fn run_job(conn: &Connection, job: Job) -> Finished {
    if let Err(e) = exec(conn, "SAVEPOINT job") {
        let error = translate(e);
        return Finished {
            keep: false,
            redo: None,
            poison: matches!(error, Error::Unavailable(_)),
            reply: Box::new(move |_| drop(error)),
        };
    }
    let finished = job(conn);
    let end = if finished.keep {
        exec(conn, "RELEASE job")
    } else {
        exec(conn, "ROLLBACK TO job").and_then(|()| exec(conn, "RELEASE job"))
    };
    match end {
        Ok(()) => finished,
        Err(e) => Finished {
            poison: true,
            ..finished
        }
        .with_note(translate(e)),
    }
}

impl Finished {
    fn with_note(self, error: Error) -> Finished {
        tracing::error!(%error, "savepoint failed");
        self
    }
}
