//! The backend-independent half of a session write: call the core, collect the result.

use lifeboat_core::{AssetCounts, Checkpoint, Error as DomainError, Session, Timestamp, assess};

use crate::{Applied, Error, SessionOp};

/// Applies `op` to `session` at `now`. `asset_exists` says whether the session has an
/// asset of that name; `asset_verifies` whether it is intact (for a recovery's
/// assessment, with `asset_counts`); `checkpoints` loads the session's checkpoints (with `valid`
/// recomputed) when a recovery needs them.
///
/// On a refusal `session` may still have changed (an expiry observed, a crash type
/// refined); the backend persists it either way.
pub fn apply(
    session: &mut Session,
    op: SessionOp,
    now: Timestamp,
    asset_exists: &dyn Fn(&str) -> bool,
    asset_verifies: &dyn Fn(&str) -> bool,
    asset_counts: AssetCounts,
    checkpoints: impl FnOnce() -> Result<Vec<Checkpoint>, Error>,
) -> Result<Applied, Error> {
    let named_assets = match &op {
        SessionOp::Checkpoint { checkpoint, .. } => checkpoint.assets.as_slice(),
        SessionOp::Fail {
            checkpoint: Some(checkpoint),
            ..
        } => checkpoint.assets.as_slice(),
        _ => &[],
    };
    if let Some(unknown) = named_assets.iter().find(|name| !asset_exists(name)) {
        return Err(DomainError::UnknownAsset(unknown.clone()).into());
    }
    let mut checkpoint = None;
    let mut resume_from = None;
    match op {
        SessionOp::Heartbeat {
            attempt,
            progress,
            metrics,
        } => session.heartbeat(attempt, progress, metrics, now)?,
        SessionOp::Checkpoint {
            attempt,
            checkpoint: new,
        } => checkpoint = Some(session.checkpoint(attempt, new, now)?),
        SessionOp::Pause { attempt } => session.pause(attempt, now)?,
        SessionOp::Fail {
            attempt,
            error,
            checkpoint: new,
        } => checkpoint = session.fail(attempt, error, new, now)?,
        SessionOp::Recover { option, confirm } => {
            session.observe(now);
            let stored = checkpoints()?;
            let assessment = assess(session, &stored, asset_verifies, asset_counts);
            let seq = session.recover(option, confirm, &assessment, now)?;
            resume_from = stored.into_iter().find(|c| Some(c.seq) == seq);
        }
        SessionOp::Complete { attempt } => session.complete(attempt, now)?,
        SessionOp::Cancel { attempt } => session.cancel(attempt, now)?,
    }
    Ok(Applied {
        session: session.clone(),
        checkpoint,
        resume_from,
    })
}
