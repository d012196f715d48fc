//! The recovery assessment of SPEC §2: where to resume, how sure we are, what is lost.
//!
//! The formulas are documented in `docs/recovery.md`; keep the two in step.

use crate::{Checkpoint, CheckpointKind, PinnedAsset, Progress, Session, Timestamp};

/// The three ways back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecoveryOption {
    /// From `resume_from`, the newest checkpoint that verifies.
    Continue,
    /// From the newest good `batch`, `stage` or `milestone` checkpoint.
    RestartBatch,
    /// From nothing; needs confirmation.
    FreshStart,
}

impl RecoveryOption {
    /// Every option, in SPEC order.
    pub const ALL: [RecoveryOption; 3] = [
        RecoveryOption::Continue,
        RecoveryOption::RestartBatch,
        RecoveryOption::FreshStart,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            RecoveryOption::Continue => "continue",
            RecoveryOption::RestartBatch => "restart_batch",
            RecoveryOption::FreshStart => "fresh_start",
        }
    }

    /// Parses a wire name.
    pub fn parse(raw: &str) -> Option<RecoveryOption> {
        RecoveryOption::ALL.into_iter().find(|o| o.as_str() == raw)
    }
}

/// Counts of a session's assets by verification status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AssetCounts {
    /// All assets.
    pub total: u64,
    /// Present with the recorded size and hash.
    pub ok: u64,
    /// Gone.
    pub missing: u64,
    /// Size or hash differs.
    pub corrupt: u64,
}

/// A checkpoint a recovery can start from.
#[derive(Debug, Clone, PartialEq)]
pub struct ResumePoint {
    /// Its seq.
    pub seq: u64,
    /// Its kind.
    pub kind: CheckpointKind,
    /// Its stage.
    pub stage: Option<String>,
    /// Units done at that point.
    pub completed_units: Option<u64>,
    /// When it was written.
    pub created_at: Timestamp,
}

impl ResumePoint {
    fn of(checkpoint: &Checkpoint) -> ResumePoint {
        ResumePoint {
            seq: checkpoint.seq,
            kind: checkpoint.kind,
            stage: checkpoint.stage.clone(),
            completed_units: checkpoint.completed_units,
            created_at: checkpoint.created_at,
        }
    }

    /// The session's progress once it resumes here.
    pub fn progress(&self, total_units: Option<u64>) -> Progress {
        Progress {
            percent: None,
            stage: self.stage.clone(),
            completed_units: self.completed_units,
            total_units,
        }
    }
}

/// One recovery option as offered to a person.
#[derive(Debug, Clone, PartialEq)]
pub struct Offer {
    /// The option.
    pub option: RecoveryOption,
    /// The checkpoint seq it starts from, if any.
    pub resume_from: Option<u64>,
    /// Whether the request must say `"confirm": true`.
    pub requires_confirmation: bool,
}

/// What a recovery would do, computed from the session and its checkpoints.
#[derive(Debug, Clone, PartialEq)]
pub struct Assessment {
    /// The newest checkpoint that verifies with all its assets.
    pub resume_from: Option<ResumePoint>,
    /// The newest qualifying `batch`, `stage` or `milestone` checkpoint.
    pub restart_batch_from: Option<ResumePoint>,
    /// False only when checkpoints exist but none qualifies.
    pub can_recover: bool,
    /// In [0, 1]; see `docs/recovery.md`.
    pub confidence: f64,
    /// The work a `continue` will redo.
    pub work_lost_ms: u64,
    /// The options a person can choose, in SPEC order.
    pub offers: Vec<Offer>,
}

impl Assessment {
    /// The resume point with `seq`, from either candidate.
    pub fn point(&self, seq: Option<u64>) -> Option<&ResumePoint> {
        let seq = seq?;
        [&self.resume_from, &self.restart_batch_from]
            .into_iter()
            .flatten()
            .find(|p| p.seq == seq)
    }
}

/// Each newer checkpoint skipped because it is damaged costs this share of confidence.
const SKIPPED_CHECKPOINT_FACTOR: f64 = 0.8;

/// Assesses how `session` can be recovered.
///
/// `checkpoints` are the session's stored checkpoints with `valid` already recomputed;
/// `pin_verifies` says whether a pinned asset version is still there and intact (its asset
/// still exists, its pinned bytes verify); `assets` counts all of the session's assets.
pub fn assess(
    session: &Session,
    checkpoints: &[Checkpoint],
    pin_verifies: &dyn Fn(&PinnedAsset) -> bool,
    assets: AssetCounts,
) -> Assessment {
    let mut newest_first: Vec<&Checkpoint> = checkpoints.iter().collect();
    newest_first.sort_by_key(|c| std::cmp::Reverse(c.seq));
    let qualifies = |c: &Checkpoint| c.valid && c.assets.iter().all(pin_verifies);

    let resume_index = newest_first.iter().position(|c| qualifies(c));
    let resume = resume_index.map(|i| newest_first[i]);
    let restart_batch = newest_first
        .iter()
        .find(|c| c.kind.starts_batch() && qualifies(c))
        .copied();
    let can_recover = checkpoints.is_empty() || resume.is_some();

    let last_sign_of_life = session.last_sign_of_life();
    let saved_at = resume.map_or(session.created_at, |c| c.created_at);
    let work_lost_ms = last_sign_of_life.ms_since(saved_at);

    let confidence = match (resume, resume_index) {
        (Some(_), Some(skipped)) => {
            let interval_ms = (session.heartbeat_timeout_ms / 4).max(1);
            let freshness = if work_lost_ms <= interval_ms {
                1.0
            } else {
                interval_ms as f64 / work_lost_ms as f64
            };
            let skipped = i32::try_from(skipped).unwrap_or(i32::MAX);
            let asset_share = if assets.total == 0 {
                1.0
            } else {
                0.5 + 0.5 * assets.ok as f64 / assets.total as f64
            };
            round3(SKIPPED_CHECKPOINT_FACTOR.powi(skipped) * freshness * asset_share)
        }
        _ => 0.0,
    };

    let mut offers = Vec::with_capacity(3);
    if can_recover {
        offers.push(Offer {
            option: RecoveryOption::Continue,
            resume_from: resume.map(|c| c.seq),
            requires_confirmation: false,
        });
    }
    if let Some(c) = restart_batch {
        offers.push(Offer {
            option: RecoveryOption::RestartBatch,
            resume_from: Some(c.seq),
            requires_confirmation: false,
        });
    }
    offers.push(Offer {
        option: RecoveryOption::FreshStart,
        resume_from: None,
        requires_confirmation: true,
    });

    Assessment {
        resume_from: resume.map(ResumePoint::of),
        restart_batch_from: restart_batch.map(ResumePoint::of),
        can_recover,
        confidence,
        work_lost_ms,
        offers,
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
