//! The session lifecycle of SPEC §2: leases, fencing by attempt, crash records, stalls.
//!
//! Every operation first calls [`Session::observe`], which materialises a lease that has
//! run out, so no caller can act on an `active` session whose lease has passed.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::recovery::{Assessment, RecoveryOption};
use crate::{Checkpoint, CheckpointRef, Error, Id, NewCheckpoint, PinnedAsset, Timestamp};

/// Bounds and defaults of the session fields a client may set (SPEC §2, §9).
#[derive(Debug, Clone, Copy)]
pub struct SessionLimits;

impl SessionLimits {
    /// Default lease length: 30 s.
    pub const HEARTBEAT_TIMEOUT_MS_DEFAULT: u64 = 30_000;
    /// Shortest lease: 1 s.
    pub const HEARTBEAT_TIMEOUT_MS_MIN: u64 = 1_000;
    /// Longest lease: 24 h.
    pub const HEARTBEAT_TIMEOUT_MS_MAX: u64 = 86_400_000;
    /// Shortest stall timeout: 1 s.
    pub const STALL_TIMEOUT_MS_MIN: u64 = 1_000;
    /// Default number of attempts before recovery needs confirmation.
    pub const MAX_ATTEMPTS_DEFAULT: u32 = 10;
    /// Largest `max_attempts`; beyond it a crash loop is certain to be noticed anyway.
    pub const MAX_ATTEMPTS_MAX: u32 = 1_000;
    /// Default number of prunable checkpoints kept.
    pub const CHECKPOINT_RETENTION_DEFAULT: u32 = 5;
    /// Most prunable checkpoints kept.
    pub const CHECKPOINT_RETENTION_MAX: u32 = 1_000;
    /// Longest `kind`, `stage` or `title` text, in bytes: labels, not documents.
    pub const LABEL_BYTES_MAX: usize = 256;
    /// Longest `error` text kept from a `fail`, in bytes.
    pub const ERROR_BYTES_MAX: usize = 16 * 1024;
    /// Largest `metadata`, serialized: it rides along in every session read and list.
    pub const METADATA_BYTES_MAX: usize = 64 * 1024;
}

/// Lifecycle states. `completed` and `cancelled` are final; `incomplete`, `failed` and
/// `paused` are recoverable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// A worker holds the lease.
    Active,
    /// Stopped on purpose, no lease; resumed by `recover`.
    Paused,
    /// The lease ran out: the worker died or lost contact.
    Incomplete,
    /// The worker reported a failure.
    Failed,
    /// Done (final).
    Completed,
    /// Discarded (final).
    Cancelled,
}

impl Status {
    /// Every status, in SPEC order.
    pub const ALL: [Status; 6] = [
        Status::Active,
        Status::Paused,
        Status::Incomplete,
        Status::Failed,
        Status::Completed,
        Status::Cancelled,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Active => "active",
            Status::Paused => "paused",
            Status::Incomplete => "incomplete",
            Status::Failed => "failed",
            Status::Completed => "completed",
            Status::Cancelled => "cancelled",
        }
    }

    /// Parses a wire name.
    pub fn parse(raw: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|s| s.as_str() == raw)
    }

    /// Whether no transition leaves this state.
    pub fn is_final(self) -> bool {
        matches!(self, Status::Completed | Status::Cancelled)
    }

    /// Whether `recover` accepts this state.
    pub fn is_recoverable(self) -> bool {
        matches!(self, Status::Incomplete | Status::Failed | Status::Paused)
    }
}

/// Why a session became `incomplete` or `failed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CrashType {
    /// Heartbeats stopped.
    ClientLost,
    /// A heartbeat arrived after the lease expired, or the error names a network fault.
    Network,
    /// Memory was at ≥ 90 % of the limit, or the error names OOM.
    OutOfMemory,
    /// `fail` with an error.
    ApplicationError,
    /// The lease ran out while the server was down.
    ServerRestart,
}

impl CrashType {
    /// Every crash type, in SPEC order.
    pub const ALL: [CrashType; 5] = [
        CrashType::ClientLost,
        CrashType::Network,
        CrashType::OutOfMemory,
        CrashType::ApplicationError,
        CrashType::ServerRestart,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            CrashType::ClientLost => "client_lost",
            CrashType::Network => "network",
            CrashType::OutOfMemory => "out_of_memory",
            CrashType::ApplicationError => "application_error",
            CrashType::ServerRestart => "server_restart",
        }
    }

    /// Parses a wire name.
    pub fn parse(raw: &str) -> Option<CrashType> {
        CrashType::ALL.into_iter().find(|c| c.as_str() == raw)
    }
}

/// The record of the session's latest crash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Crash {
    /// The classification.
    pub kind: CrashType,
    /// When Lifeboat noticed.
    pub detected_at: Timestamp,
    /// The attempt that crashed.
    pub attempt: u32,
    /// The lease that ran out, for crashes found by expiry; detection delay is
    /// `detected_at − lease_expires_at`.
    pub lease_expires_at: Option<Timestamp>,
    /// Time between the newest checkpoint (or creation) and the last sign of life.
    pub work_lost_ms: u64,
}

/// Classifies a `fail` error text (SPEC §9, crash type order).
pub fn crash_type_for_error(error: &str) -> CrashType {
    let text = error.to_lowercase();
    let has = |needles: &[&str]| needles.iter().any(|n| text.contains(n));
    if has(&[
        "out of memory",
        "oom",
        "outofmemory",
        "memoryerror",
        "cannot allocate memory",
    ]) {
        CrashType::OutOfMemory
    } else if has(&[
        "network",
        "connection reset",
        "connection refused",
        "connection closed",
        "timed out",
        "timeout",
        "unreachable",
        "econnreset",
    ]) {
        CrashType::Network
    } else {
        CrashType::ApplicationError
    }
}

/// Reported progress. A heartbeat merges the fields it carries.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// 0–100.
    pub percent: Option<f64>,
    /// Current stage name.
    pub stage: Option<String>,
    /// Units done.
    pub completed_units: Option<u64>,
    /// Units in all.
    pub total_units: Option<u64>,
}

impl Progress {
    /// Overlays the fields `update` carries; answers whether anything changed.
    fn merge(&mut self, update: Progress) -> bool {
        let before = self.clone();
        if update.percent.is_some() {
            self.percent = update.percent;
        }
        if update.stage.is_some() {
            self.stage = update.stage;
        }
        if update.completed_units.is_some() {
            self.completed_units = update.completed_units;
        }
        if update.total_units.is_some() {
            self.total_units = update.total_units;
        }
        *self != before
    }

    /// Refuses values outside their ranges.
    pub fn validate(&self) -> Result<(), Error> {
        if let Some(p) = self.percent
            && !(0.0..=100.0).contains(&p)
        {
            return Err(Error::Invalid {
                field: "percent",
                message: format!("{p} is outside 0–100"),
            });
        }
        check_label("stage", self.stage.as_deref())
    }
}

/// Resource use reported by the worker; the last report decides `out_of_memory`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// Resident memory.
    pub memory_bytes: Option<u64>,
    /// The worker's memory limit.
    pub memory_limit_bytes: Option<u64>,
    /// CPU use, percent of one core.
    pub cpu_percent: Option<f64>,
    /// GPU memory in use.
    pub gpu_memory_bytes: Option<u64>,
}

impl Metrics {
    /// Whether memory is at or above 90 % of the limit.
    fn near_memory_limit(&self) -> bool {
        match (self.memory_bytes, self.memory_limit_bytes) {
            (Some(used), Some(limit)) if limit > 0 => {
                u128::from(used) * 10 >= u128::from(limit) * 9
            }
            _ => false,
        }
    }
}

/// A session as a client asks for it, after parsing.
#[derive(Debug, Clone, Default)]
pub struct NewSession {
    /// Client-chosen id; generated when absent.
    pub id: Option<Id>,
    /// The project it belongs to.
    pub project_id: Option<Id>,
    /// What kind of work (free text, e.g. `render`).
    pub kind: String,
    /// Human title.
    pub title: Option<String>,
    /// Lease length.
    pub heartbeat_timeout_ms: Option<u64>,
    /// Progress stall threshold.
    pub stall_timeout_ms: Option<u64>,
    /// Attempts before recovery needs confirmation.
    pub max_attempts: Option<u32>,
    /// Units in all.
    pub total_units: Option<u64>,
    /// Prunable checkpoints kept.
    pub checkpoint_retention: Option<u32>,
    /// Any JSON the application wants kept.
    pub metadata: Option<Value>,
}

/// One run of long work, with its lease and its attempt number.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Session {
    /// Unique within its tenant.
    pub id: Id,
    /// The project it belongs to.
    pub project_id: Option<Id>,
    /// What kind of work.
    pub kind: String,
    /// Human title.
    pub title: Option<String>,
    /// Lifecycle state.
    pub status: Status,
    /// Fencing token: only writes naming this attempt are accepted.
    pub attempt: u32,
    /// Recovering past this needs confirmation.
    pub max_attempts: u32,
    /// Lease length.
    pub heartbeat_timeout_ms: u64,
    /// Progress stall threshold.
    pub stall_timeout_ms: Option<u64>,
    /// Prunable checkpoints kept.
    pub checkpoint_retention: u32,
    /// Creation time.
    pub created_at: Timestamp,
    /// Last change of any field.
    pub updated_at: Timestamp,
    /// Last sign of life from the worker (heartbeat, checkpoint, pause or fail).
    pub last_heartbeat_at: Option<Timestamp>,
    /// When the lease runs out; `Some` exactly when `status` is `active`.
    pub lease_expires_at: Option<Timestamp>,
    /// Set at start-up when this lease had already run out while the server was down;
    /// an expiry during the restart grace is then a `server_restart` crash.
    pub lease_ran_out_while_down: bool,
    /// Reported progress.
    pub progress: Progress,
    /// When progress (or the checkpoint seq) last moved.
    pub progress_changed_at: Timestamp,
    /// Alive but not moving for `stall_timeout_ms`.
    pub stalled: bool,
    /// The last reported metrics.
    pub metrics: Option<Metrics>,
    /// Application data.
    pub metadata: Option<Value>,
    /// The error text of the last `fail`.
    pub error: Option<String>,
    /// The latest crash, kept after recovery as history.
    pub crash: Option<Crash>,
    /// The newest checkpoint written.
    pub latest_checkpoint: Option<CheckpointRef>,
    /// The last seq assigned; seqs are never reused.
    pub last_seq: u64,
    /// When it completed.
    pub completed_at: Option<Timestamp>,
}

impl Session {
    /// Creates a session in `active`, attempt 1, with a fresh lease.
    pub fn create(id: Id, new: NewSession, now: Timestamp) -> Result<Session, Error> {
        let heartbeat_timeout_ms = new
            .heartbeat_timeout_ms
            .unwrap_or(SessionLimits::HEARTBEAT_TIMEOUT_MS_DEFAULT);
        check_range(
            "heartbeat_timeout_ms",
            heartbeat_timeout_ms,
            SessionLimits::HEARTBEAT_TIMEOUT_MS_MIN,
            SessionLimits::HEARTBEAT_TIMEOUT_MS_MAX,
        )?;
        if let Some(stall) = new.stall_timeout_ms {
            check_range(
                "stall_timeout_ms",
                stall,
                SessionLimits::STALL_TIMEOUT_MS_MIN,
                u64::MAX,
            )?;
        }
        let max_attempts = new
            .max_attempts
            .unwrap_or(SessionLimits::MAX_ATTEMPTS_DEFAULT);
        check_range(
            "max_attempts",
            max_attempts.into(),
            1,
            SessionLimits::MAX_ATTEMPTS_MAX.into(),
        )?;
        let checkpoint_retention = new
            .checkpoint_retention
            .unwrap_or(SessionLimits::CHECKPOINT_RETENTION_DEFAULT);
        check_range(
            "checkpoint_retention",
            checkpoint_retention.into(),
            1,
            SessionLimits::CHECKPOINT_RETENTION_MAX.into(),
        )?;
        if new.kind.is_empty() {
            return Err(Error::Invalid {
                field: "kind",
                message: "must not be empty".to_owned(),
            });
        }
        check_label("kind", Some(&new.kind))?;
        check_label("title", new.title.as_deref())?;
        if let Some(metadata) = &new.metadata {
            let size = metadata.to_string().len();
            if size > SessionLimits::METADATA_BYTES_MAX {
                return Err(Error::TooLarge {
                    field: "metadata",
                    size,
                    limit: SessionLimits::METADATA_BYTES_MAX,
                });
            }
        }
        Ok(Session {
            id,
            project_id: new.project_id,
            kind: new.kind,
            title: new.title,
            status: Status::Active,
            attempt: 1,
            max_attempts,
            heartbeat_timeout_ms,
            stall_timeout_ms: new.stall_timeout_ms,
            checkpoint_retention,
            created_at: now,
            updated_at: now,
            last_heartbeat_at: None,
            lease_expires_at: Some(now.plus_ms(heartbeat_timeout_ms)),
            lease_ran_out_while_down: false,
            progress: Progress {
                total_units: new.total_units,
                ..Progress::default()
            },
            progress_changed_at: now,
            stalled: false,
            metrics: None,
            metadata: new.metadata,
            error: None,
            crash: None,
            latest_checkpoint: None,
            last_seq: 0,
            completed_at: None,
        })
    }

    /// When the session stalls if its progress does not move (`None` when it is not watched
    /// for stalls).
    pub fn stalls_at(&self) -> Option<Timestamp> {
        self.stall_timeout_ms
            .map(|stall| self.progress_changed_at.plus_ms(stall))
    }

    /// Brings the session up to `now`: an `active` session whose lease has passed becomes
    /// `incomplete` with a crash record, and an `active` session whose progress has not
    /// moved for `stall_timeout_ms` is flagged `stalled`. Answers whether anything changed.
    pub fn observe(&mut self, now: Timestamp) -> bool {
        if self.status != Status::Active {
            return false;
        }
        if let Some(lease) = self.lease_expires_at
            && lease <= now
        {
            let kind = if self.lease_ran_out_while_down {
                CrashType::ServerRestart
            } else if self
                .metrics
                .as_ref()
                .is_some_and(Metrics::near_memory_limit)
            {
                CrashType::OutOfMemory
            } else {
                CrashType::ClientLost
            };
            self.crash = Some(Crash {
                kind,
                detected_at: now,
                attempt: self.attempt,
                lease_expires_at: Some(lease),
                work_lost_ms: self.unsaved_work_ms(),
            });
            self.status = Status::Incomplete;
            self.lease_expires_at = None;
            self.lease_ran_out_while_down = false;
            self.stalled = false;
            self.updated_at = now;
            return true;
        }
        let stalled_at = self.stalls_at().filter(|at| *at <= now);
        if stalled_at.is_some() != self.stalled {
            self.stalled = stalled_at.is_some();
            // It changed when it stalled, however late that is seen: every read, the
            // stored row and the `session.stalled` event say the same time.
            if let Some(at) = stalled_at {
                self.updated_at = self.updated_at.max(at);
            }
            return true;
        }
        false
    }

    /// Starts the restart grace: an `active` session gets one full timeout from
    /// `ready_at`, and remembers whether its lease had already run out.
    ///
    /// A lease that had passed before `last_commit_at` (the last write the server
    /// committed before it went down) ran out while the server was still up: that session
    /// gets no grace and expires now, as it would have without the restart (SPEC §2 r2).
    pub fn begin_restart_grace(&mut self, ready_at: Timestamp, last_commit_at: Timestamp) {
        let Some(lease) = self.lease_expires_at else {
            return;
        };
        if self.status != Status::Active {
            return;
        }
        if lease <= last_commit_at {
            self.observe(ready_at);
            return;
        }
        self.lease_ran_out_while_down = lease <= ready_at;
        self.lease_expires_at = Some(lease.max(ready_at.plus_ms(self.heartbeat_timeout_ms)));
    }

    /// A heartbeat of `attempt`: extends the lease and merges progress and metrics.
    ///
    /// A heartbeat of the current attempt that arrives after the lease ran out is refused
    /// with [`Error::LeaseExpired`], and refines the crash type to `network`: the worker
    /// was alive, only its messages were not getting through.
    pub fn heartbeat(
        &mut self,
        attempt: u32,
        progress: Option<Progress>,
        metrics: Option<Metrics>,
        now: Timestamp,
    ) -> Result<(), Error> {
        if let Some(progress) = &progress {
            progress.validate()?;
        }
        self.observe(now);
        self.check_attempt(Some(attempt))?;
        self.refuse_late_signal(now)?;
        self.require("heartbeat", "active", &[Status::Active])?;
        if let Some(progress) = progress
            && self.progress.merge(progress)
        {
            self.progress_changed_at = now;
            self.stalled = false;
        }
        if metrics.is_some() {
            self.metrics = metrics;
        }
        self.extend_lease(now);
        Ok(())
    }

    /// Records checkpoint `seq = last_seq + 1` with the asset versions it pins; it counts
    /// as a heartbeat and as progress.
    pub fn checkpoint(
        &mut self,
        attempt: u32,
        new: NewCheckpoint,
        pins: Vec<PinnedAsset>,
        now: Timestamp,
    ) -> Result<Checkpoint, Error> {
        check_label("stage", new.stage.as_deref())?;
        self.observe(now);
        self.check_attempt(Some(attempt))?;
        self.refuse_late_signal(now)?;
        self.require("checkpoint", "active", &[Status::Active])?;
        let checkpoint = self.append_checkpoint(new, pins, now)?;
        self.extend_lease(now);
        Ok(checkpoint)
    }

    /// Pauses an `active` session; a paused session holds no lease.
    pub fn pause(&mut self, attempt: Option<u32>, now: Timestamp) -> Result<(), Error> {
        self.observe(now);
        self.check_attempt(attempt)?;
        self.require("pause", "active", &[Status::Active])?;
        self.status = Status::Paused;
        self.lease_expires_at = None;
        self.stalled = false;
        if attempt.is_some() {
            self.last_heartbeat_at = Some(now);
        }
        self.updated_at = now;
        Ok(())
    }

    /// Fails an `active` or `paused` session with an error, after writing the optional
    /// emergency checkpoint (with the asset versions it pins).
    pub fn fail(
        &mut self,
        attempt: u32,
        error: String,
        checkpoint: Option<(NewCheckpoint, Vec<PinnedAsset>)>,
        now: Timestamp,
    ) -> Result<Option<Checkpoint>, Error> {
        if error.len() > SessionLimits::ERROR_BYTES_MAX {
            return Err(Error::Invalid {
                field: "error",
                message: format!("longer than {} bytes", SessionLimits::ERROR_BYTES_MAX),
            });
        }
        self.observe(now);
        self.check_attempt(Some(attempt))?;
        self.require(
            "fail",
            "active or paused",
            &[Status::Active, Status::Paused],
        )?;
        let written = checkpoint
            .map(|(c, pins)| self.append_checkpoint(c, pins, now))
            .transpose()?;
        self.last_heartbeat_at = Some(now);
        self.crash = Some(Crash {
            kind: crash_type_for_error(&error),
            detected_at: now,
            attempt: self.attempt,
            lease_expires_at: None,
            work_lost_ms: self.unsaved_work_ms(),
        });
        self.status = Status::Failed;
        self.error = Some(error);
        self.lease_expires_at = None;
        self.stalled = false;
        self.updated_at = now;
        Ok(written)
    }

    /// Recovers an `incomplete`, `failed` or `paused` session with `option`: a new attempt
    /// with a fresh lease. Answers the checkpoint to resume from (none for a fresh start
    /// or when nothing was saved).
    pub fn recover(
        &mut self,
        option: RecoveryOption,
        confirm: bool,
        assessment: &Assessment,
        now: Timestamp,
    ) -> Result<Option<u64>, Error> {
        self.observe(now);
        if !self.status.is_recoverable() {
            return Err(Error::NotRecoverable {
                status: self.status.as_str(),
            });
        }
        if option == RecoveryOption::FreshStart && !confirm {
            return Err(Error::ConfirmationRequired("fresh_start"));
        }
        if self.attempt >= self.max_attempts && !confirm {
            return Err(Error::AttemptsExhausted {
                attempt: self.attempt,
                max_attempts: self.max_attempts,
            });
        }
        let resume_from = match option {
            RecoveryOption::Continue if !assessment.can_recover => {
                return Err(Error::CannotRecover(
                    "no checkpoint verifies, so there is nothing to continue from; use restart_batch or fresh_start".to_owned(),
                ));
            }
            RecoveryOption::Continue => assessment.resume_from.as_ref().map(|p| p.seq),
            RecoveryOption::RestartBatch => match &assessment.restart_batch_from {
                Some(point) => Some(point.seq),
                None => {
                    return Err(Error::CannotRecover(
                        "no valid batch, stage or milestone checkpoint to restart from".to_owned(),
                    ));
                }
            },
            RecoveryOption::FreshStart => None,
        };
        self.progress = match option {
            RecoveryOption::FreshStart => Progress {
                total_units: self.progress.total_units,
                ..Progress::default()
            },
            _ => assessment
                .point(resume_from)
                .map(|p| p.progress(self.progress.total_units))
                .unwrap_or_else(|| self.progress.clone()),
        };
        self.attempt += 1;
        self.status = Status::Active;
        self.error = None;
        self.stalled = false;
        self.progress_changed_at = now;
        self.extend_lease(now);
        Ok(resume_from)
    }

    /// Completes a non-final session. Without `attempt` it is an operator action.
    pub fn complete(&mut self, attempt: Option<u32>, now: Timestamp) -> Result<(), Error> {
        self.observe(now);
        self.check_attempt(attempt)?;
        self.require(
            "complete",
            "active, paused, incomplete or failed",
            &[
                Status::Active,
                Status::Paused,
                Status::Incomplete,
                Status::Failed,
            ],
        )?;
        self.status = Status::Completed;
        self.completed_at = Some(now);
        self.finish(now);
        Ok(())
    }

    /// Cancels (discards) a non-final session. Without `attempt` it is an operator action.
    pub fn cancel(&mut self, attempt: Option<u32>, now: Timestamp) -> Result<(), Error> {
        self.observe(now);
        self.check_attempt(attempt)?;
        self.require(
            "cancel",
            "active, paused, incomplete or failed",
            &[
                Status::Active,
                Status::Paused,
                Status::Incomplete,
                Status::Failed,
            ],
        )?;
        self.status = Status::Cancelled;
        self.finish(now);
        Ok(())
    }

    /// The last sign of life: the newest heartbeat, checkpoint, pause or fail, else creation.
    pub fn last_sign_of_life(&self) -> Timestamp {
        self.last_heartbeat_at.unwrap_or(self.created_at)
    }

    fn finish(&mut self, now: Timestamp) {
        self.lease_expires_at = None;
        self.lease_ran_out_while_down = false;
        self.stalled = false;
        self.updated_at = now;
    }

    fn unsaved_work_ms(&self) -> u64 {
        let saved_at = self
            .latest_checkpoint
            .as_ref()
            .map_or(self.created_at, |c| c.created_at);
        self.last_sign_of_life().ms_since(saved_at)
    }

    fn append_checkpoint(
        &mut self,
        new: NewCheckpoint,
        pins: Vec<PinnedAsset>,
        now: Timestamp,
    ) -> Result<Checkpoint, Error> {
        let checkpoint = Checkpoint::build(self.last_seq + 1, self.attempt, new, pins, now)?;
        self.last_seq = checkpoint.seq;
        self.progress.merge(Progress {
            percent: None,
            stage: checkpoint.stage.clone(),
            completed_units: checkpoint.completed_units,
            total_units: checkpoint.total_units,
        });
        self.latest_checkpoint = Some(checkpoint.as_ref());
        self.progress_changed_at = now;
        self.stalled = false;
        self.last_heartbeat_at = Some(now);
        self.updated_at = now;
        Ok(checkpoint)
    }

    fn extend_lease(&mut self, now: Timestamp) {
        self.last_heartbeat_at = Some(now);
        self.lease_expires_at = Some(now.plus_ms(self.heartbeat_timeout_ms));
        self.lease_ran_out_while_down = false;
        self.updated_at = now;
    }

    fn check_attempt(&self, attempt: Option<u32>) -> Result<(), Error> {
        match attempt {
            Some(sent) if sent != self.attempt => Err(Error::AttemptMismatch {
                sent,
                current: self.attempt,
            }),
            _ => Ok(()),
        }
    }

    /// A signal of the current attempt after its lease expired: refine the crash type.
    fn refuse_late_signal(&mut self, now: Timestamp) -> Result<(), Error> {
        if self.status != Status::Incomplete {
            return Ok(());
        }
        if let Some(crash) = &mut self.crash
            && crash.attempt == self.attempt
            && crash.kind == CrashType::ClientLost
        {
            crash.kind = CrashType::Network;
            self.updated_at = now;
        }
        Err(Error::LeaseExpired {
            attempt: self.attempt,
        })
    }

    fn require(
        &self,
        operation: &'static str,
        allowed_text: &'static str,
        allowed: &[Status],
    ) -> Result<(), Error> {
        if allowed.contains(&self.status) {
            return Ok(());
        }
        Err(Error::InvalidState {
            operation,
            status: self.status.as_str(),
            allowed: allowed_text,
        })
    }
}

fn check_range(field: &'static str, value: u64, min: u64, max: u64) -> Result<(), Error> {
    if (min..=max).contains(&value) {
        return Ok(());
    }
    Err(Error::Invalid {
        field,
        message: format!("{value} is outside {min}–{max}"),
    })
}

fn check_label(field: &'static str, value: Option<&str>) -> Result<(), Error> {
    match value {
        Some(text) if text.len() > SessionLimits::LABEL_BYTES_MAX => Err(Error::Invalid {
            field,
            message: format!("longer than {} bytes", SessionLimits::LABEL_BYTES_MAX),
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests;
