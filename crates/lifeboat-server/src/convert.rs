//! Domain values to wire bodies, and request bodies to domain values.

use lifeboat::{
    AssetCounts, Checkpoint, CheckpointKind, Crash, Distribution, DomainError, Metrics,
    NewCheckpoint, NewSession, Progress, Recovery, Session, Sha256, Stats, Timestamp,
};
use lifeboat_api::{
    AssetCountsBody, CheckpointBody, CrashBody, CreateCheckpoint, CreateSession, DistributionBody,
    LatestCheckpoint, MetricsBody, OptionBody, PinnedAssetBody, ProblemType, ProgressBody,
    RecoveryBody, SessionBody, StatsBody,
};
use serde_json::value::RawValue;
use time::OffsetDateTime;
use time::macros::format_description;

use crate::error::ApiError;
use crate::extract::path_id;

/// RFC 3339 UTC with milliseconds, e.g. `2026-11-23T10:15:00.123Z`.
pub(crate) fn rfc3339(at: Timestamp) -> String {
    let format =
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(at.0) * 1_000_000)
        .ok()
        .and_then(|t| t.format(format).ok())
        .unwrap_or_default()
}

fn raw(json: &str) -> Result<Box<RawValue>, ApiError> {
    RawValue::from_string(json.to_owned()).map_err(|e| {
        ApiError::new(
            ProblemType::INTERNAL,
            format!("stored JSON is not valid: {e}"),
        )
    })
}

pub(crate) fn session_body(s: &Session) -> SessionBody {
    SessionBody {
        id: s.id.to_string(),
        project_id: s.project_id.as_ref().map(ToString::to_string),
        kind: s.kind.clone(),
        title: s.title.clone(),
        status: s.status.as_str().to_owned(),
        attempt: s.attempt,
        max_attempts: s.max_attempts,
        created_at: rfc3339(s.created_at),
        updated_at: rfc3339(s.updated_at),
        last_heartbeat_at: s.last_heartbeat_at.map(rfc3339),
        lease_expires_at: s.lease_expires_at.map(rfc3339),
        heartbeat_timeout_ms: s.heartbeat_timeout_ms,
        stall_timeout_ms: s.stall_timeout_ms,
        checkpoint_retention: s.checkpoint_retention,
        progress: ProgressBody {
            percent: s.progress.percent,
            stage: s.progress.stage.clone(),
            completed_units: s.progress.completed_units,
            total_units: s.progress.total_units,
        },
        metrics: s.metrics.as_ref().map(|m| MetricsBody {
            memory_bytes: m.memory_bytes,
            memory_limit_bytes: m.memory_limit_bytes,
            cpu_percent: m.cpu_percent,
            gpu_memory_bytes: m.gpu_memory_bytes,
        }),
        metadata: s.metadata.clone(),
        error: s.error.clone(),
        stalled: s.stalled,
        crash: s.crash.as_ref().map(crash_body),
        latest_checkpoint: s.latest_checkpoint.as_ref().map(|c| LatestCheckpoint {
            seq: c.seq,
            kind: c.kind.as_str().to_owned(),
            stage: c.stage.clone(),
            created_at: rfc3339(c.created_at),
        }),
        completed_at: s.completed_at.map(rfc3339),
    }
}

fn crash_body(c: &Crash) -> CrashBody {
    CrashBody {
        kind: c.kind.as_str().to_owned(),
        detected_at: rfc3339(c.detected_at),
    }
}

pub(crate) fn checkpoint_body(c: &Checkpoint) -> Result<CheckpointBody, ApiError> {
    Ok(CheckpointBody {
        seq: c.seq,
        attempt: c.attempt,
        kind: c.kind.as_str().to_owned(),
        stage: c.stage.clone(),
        position: c.position.as_deref().map(raw).transpose()?,
        completed_units: c.completed_units,
        total_units: c.total_units,
        data: raw(&c.data)?,
        sha256: c.sha256.as_str().to_owned(),
        valid: c.valid,
        assets: c
            .assets
            .iter()
            .map(|pin| PinnedAssetBody {
                name: pin.name.to_string(),
                size: pin.size,
                sha256: pin.sha256.as_str().to_owned(),
            })
            .collect(),
        created_at: rfc3339(c.created_at),
    })
}

fn asset_counts(a: AssetCounts) -> AssetCountsBody {
    AssetCountsBody {
        total: a.total,
        ok: a.ok,
        missing: a.missing,
        corrupt: a.corrupt,
    }
}

pub(crate) fn recovery_body(r: &Recovery, with_options: bool) -> Result<RecoveryBody, ApiError> {
    let options = with_options
        .then(|| {
            r.assessment
                .offers
                .iter()
                .map(|offer| {
                    let resume_from = match offer.resume_from {
                        Some(seq) if r.resume_from.as_ref().is_some_and(|c| c.seq == seq) => {
                            r.resume_from.as_ref().map(checkpoint_body).transpose()?
                        }
                        Some(seq) => r
                            .batch_from
                            .as_ref()
                            .filter(|c| c.seq == seq)
                            .map(checkpoint_body)
                            .transpose()?,
                        None => None,
                    };
                    Ok(OptionBody {
                        option: offer.option.as_str().to_owned(),
                        resume_from,
                        requires_confirmation: offer.requires_confirmation,
                    })
                })
                .collect::<Result<Vec<_>, ApiError>>()
        })
        .transpose()?;
    Ok(RecoveryBody {
        session: session_body(&r.session),
        last_saved_at: r
            .session
            .latest_checkpoint
            .as_ref()
            .map(|c| rfc3339(c.created_at)),
        resume_from: r.resume_from.as_ref().map(checkpoint_body).transpose()?,
        can_recover: r.assessment.can_recover,
        confidence: r.assessment.confidence,
        work_lost_ms: r.assessment.work_lost_ms,
        crash: r.session.crash.as_ref().map(crash_body),
        assets: asset_counts(r.assets),
        missing_assets: r.missing_assets.clone(),
        options,
    })
}

fn distribution(d: Distribution) -> DistributionBody {
    DistributionBody {
        p50: d.p50,
        p99: d.p99,
        max: d.max,
    }
}

pub(crate) fn stats_body(s: Stats) -> StatsBody {
    let crashes_total = s.crashes_by_type.iter().map(|(_, n)| n).sum();
    let recoveries_total = s.recoveries_by_option.iter().map(|(_, n)| n).sum();
    StatsBody {
        sessions: s
            .sessions
            .into_iter()
            .map(|(status, n)| (status.as_str().to_owned(), n))
            .collect(),
        crashes: lifeboat_api::CrashStats {
            total: crashes_total,
            by_type: s.crashes_by_type.into_iter().collect(),
        },
        recoveries: lifeboat_api::RecoveryStats {
            total: recoveries_total,
            by_option: s.recoveries_by_option.into_iter().collect(),
            succeeded: s.recoveries_succeeded,
            failed: s.recoveries_failed,
            pending: s.recoveries_pending,
        },
        checkpoints: lifeboat_api::CheckpointStats {
            total: s.checkpoints_total,
            invalid: s.checkpoints_invalid,
        },
        assets: asset_counts(s.assets),
        detection_delay_ms: distribution(s.detection_delay_ms),
        work_lost_ms: distribution(s.work_lost_ms),
    }
}

pub(crate) fn new_session(body: CreateSession) -> Result<NewSession, ApiError> {
    let id = body.id.as_deref().map(parse_body_id).transpose()?;
    let project_id = body.project_id.as_deref().map(parse_body_id).transpose()?;
    Ok(NewSession {
        id,
        project_id,
        kind: body.kind,
        title: body.title,
        heartbeat_timeout_ms: body.heartbeat_timeout_ms,
        stall_timeout_ms: body.stall_timeout_ms,
        max_attempts: body.max_attempts,
        total_units: body.total_units,
        checkpoint_retention: body.checkpoint_retention,
        metadata: body.metadata,
    })
}

/// An id inside a body is a validation failure (422), unlike one in the path (400).
fn parse_body_id(raw: &str) -> Result<lifeboat::Id, ApiError> {
    path_id(raw).map_err(|e| ApiError::new(ProblemType::VALIDATION_FAILED, e.problem.detail))
}

pub(crate) fn progress(body: ProgressBody) -> Progress {
    Progress {
        percent: body.percent,
        stage: body.stage,
        completed_units: body.completed_units,
        total_units: body.total_units,
    }
}

pub(crate) fn metrics(body: MetricsBody) -> Metrics {
    Metrics {
        memory_bytes: body.memory_bytes,
        memory_limit_bytes: body.memory_limit_bytes,
        cpu_percent: body.cpu_percent,
        gpu_memory_bytes: body.gpu_memory_bytes,
    }
}

/// A checkpoint request; `default_kind` fills a missing kind (emergency inside a fail).
pub(crate) fn new_checkpoint(
    body: CreateCheckpoint,
    default_kind: Option<CheckpointKind>,
) -> Result<NewCheckpoint, ApiError> {
    let invalid = |e: DomainError| ApiError::new(ProblemType::VALIDATION_FAILED, e.to_string());
    let kind = match (body.kind.as_deref(), default_kind) {
        (Some(kind), _) => CheckpointKind::parse(kind).map_err(invalid)?,
        (None, Some(kind)) => kind,
        (None, None) => {
            return Err(ApiError::new(
                ProblemType::VALIDATION_FAILED,
                "missing field `kind`",
            ));
        }
    };
    let data_sha256 = body
        .data_sha256
        .as_deref()
        .map(|raw| Sha256::parse("data_sha256", raw))
        .transpose()
        .map_err(invalid)?;
    let assets = body.assets.unwrap_or_default();
    Ok(NewCheckpoint {
        kind,
        stage: body.stage,
        position: body.position.map(|p| p.get().to_owned()),
        completed_units: body.completed_units,
        total_units: body.total_units,
        data: body
            .data
            .map_or_else(|| "null".to_owned(), |d| d.get().to_owned()),
        data_sha256,
        assets,
    })
}
