//! The backend-independent half of a session write: call the core, collect the result.

use lifeboat_core::{Error as DomainError, NewCheckpoint, PinnedAsset, Session, Timestamp};

use crate::recovery::{RecoveryFacts, evaluate};
use crate::{Applied, Error, SessionOp};

/// Applies `op` to `session` at `now`. `pin` answers the current version of a named asset
/// of the session (none if it has no such asset), which a checkpoint pins; `facts` reads
/// what a recovery's assessment needs, with `session` as it is now.
///
/// On a refusal `session` may still have changed (an expiry observed, a crash type
/// refined); the backend persists it either way.
pub fn apply(
    session: &mut Session,
    op: SessionOp,
    now: Timestamp,
    pin: &dyn Fn(&str) -> Result<Option<PinnedAsset>, Error>,
    facts: impl FnOnce(&Session) -> Result<RecoveryFacts, Error>,
) -> Result<Applied, Error> {
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
        } => {
            let pins = pins(&new, pin)?;
            checkpoint = Some(session.checkpoint(attempt, new, pins, now)?);
        }
        SessionOp::Pause { attempt } => session.pause(attempt, now)?,
        SessionOp::Fail {
            attempt,
            error,
            checkpoint: new,
        } => {
            let new = match new {
                Some(new) => {
                    let pins = pins(&new, pin)?;
                    Some((new, pins))
                }
                None => None,
            };
            checkpoint = session.fail(attempt, error, new, now)?;
        }
        SessionOp::Recover {
            option,
            confirm,
            files,
        } => {
            session.observe(now);
            let view = evaluate(facts(session)?, &files, now);
            let seq = session.recover(option, confirm, &view.assessment, now)?;
            resume_from = [view.resume_from, view.batch_from]
                .into_iter()
                .flatten()
                .find(|c| Some(c.seq) == seq);
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

/// The versions of the assets `new` names, as they are now (SPEC §5 r2), each once.
fn pins(
    new: &NewCheckpoint,
    pin: &dyn Fn(&str) -> Result<Option<PinnedAsset>, Error>,
) -> Result<Vec<PinnedAsset>, Error> {
    if new.assets.len() > NewCheckpoint::ASSETS_MAX {
        return Err(DomainError::Invalid {
            field: "assets",
            message: format!(
                "a checkpoint names at most {} assets",
                NewCheckpoint::ASSETS_MAX
            ),
        }
        .into());
    }
    let mut pins: Vec<PinnedAsset> = Vec::with_capacity(new.assets.len());
    for name in &new.assets {
        if pins.iter().any(|p| p.name.as_str() == name) {
            continue;
        }
        match pin(name)? {
            Some(found) => pins.push(found),
            None => return Err(DomainError::UnknownAsset(name.clone()).into()),
        }
    }
    Ok(pins)
}
