//! Recovery endpoints (SPEC §7 "Recovery").

use axum::Json;
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use lifeboat::{Applied, FileChecks, IdempotencyKey, RecoveryOption, SessionOp, TenantId};
use lifeboat_api::{
    AssetCountsBody, CheckpointCheck, List, Problem, ProblemType, Recover, Recovered, RecoveryBody,
    VerifyBody,
};

use serde::Deserialize;

use super::sessions::session_op;
use crate::AppState;
use crate::auth::{Caller, audit};
use crate::convert::{checkpoint_body, recovery_body, session_body};
use crate::error::ApiError;
use crate::extract::{ApiQuery, JsonBody, page, path_id};
use crate::idempotency::{Rendered, json};

/// Query of `/recovery`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct RecoveryQuery {
    /// Page size, 1–1000 (default 50).
    limit: Option<String>,
    /// From `next_cursor` of the previous page.
    cursor: Option<String>,
    /// Only sessions of this project. A project token sees only its project's sessions
    /// whether or not it names it.
    project_id: Option<String>,
}

/// Recoverable sessions (incomplete, failed, paused), newest first, each assessed.
#[utoipa::path(get, path = "/api/v1/recovery", tag = "recovery", params(RecoveryQuery),
    responses((status = 200, body = List<RecoveryBody>), (status = 400, body = Problem),
        (status = 403, body = Problem)))]
pub(crate) async fn list_recoverable(
    State(state): State<AppState>,
    Extension(tenant): Extension<TenantId>,
    Extension(caller): Extension<Caller>,
    ApiQuery(query): ApiQuery<RecoveryQuery>,
) -> Result<Json<List<RecoveryBody>>, ApiError> {
    let page = page(query.limit.as_deref(), query.cursor)?;
    let asked = query.project_id.as_deref().map(path_id).transpose()?;
    let project = match (caller.project, asked) {
        (Some(own), Some(asked)) if own != asked => {
            return Err(ApiError::new(
                ProblemType::FORBIDDEN,
                format!("this project token acts on project {own} only"),
            ));
        }
        (own, asked) => own.or(asked),
    };
    let found = state
        .lifeboat
        .recoverable(&tenant, project.as_ref(), &page)
        .await?;
    Ok(Json(List {
        items: found
            .items
            .iter()
            .map(|r| recovery_body(r, false))
            .collect::<Result<_, _>>()?,
        next_cursor: found.next_cursor,
    }))
}

/// One session's recovery assessment with its options.
#[utoipa::path(get, path = "/api/v1/sessions/{id}/recovery", tag = "recovery",
    params(("id" = String, Path, description = "Session id")),
    responses((status = 200, body = RecoveryBody), (status = 404, body = Problem)))]
pub(crate) async fn session_recovery(
    State(state): State<AppState>,
    Extension(tenant): Extension<TenantId>,
    Path(id): Path<String>,
) -> Result<Json<RecoveryBody>, ApiError> {
    let recovery = state.lifeboat.recovery(&tenant, &path_id(&id)?).await?;
    Ok(Json(recovery_body(&recovery, true)?))
}

/// Recovers a session: a new attempt with a fresh lease, and where to resume.
#[utoipa::path(post, path = "/api/v1/sessions/{id}/recover", tag = "recovery", request_body = Recover,
    params(("id" = String, Path, description = "Session id")),
    responses((status = 200, body = Recovered), (status = 409, body = Problem), (status = 422, body = Problem)))]
pub(crate) async fn recover(
    State(state): State<AppState>,
    Extension(tenant): Extension<TenantId>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    key: Option<Extension<IdempotencyKey>>,
    JsonBody(body): JsonBody<Recover>,
) -> Result<Response, ApiError> {
    fn render(applied: &Applied) -> Rendered {
        let resume_from = applied
            .resume_from
            .as_ref()
            .map(checkpoint_body)
            .transpose();
        match resume_from {
            Ok(resume_from) => json(
                StatusCode::OK,
                &[],
                &Recovered {
                    session: session_body(&applied.session),
                    resume_from,
                },
            ),
            Err(error) => json(
                StatusCode::from_u16(error.problem.status)
                    .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                &[],
                &error.problem,
            ),
        }
    }
    let option = RecoveryOption::parse(&body.option).ok_or_else(|| {
        ApiError::new(
            ProblemType::VALIDATION_FAILED,
            format!(
                "unknown option {:?}; expected continue, restart_batch or fresh_start",
                body.option
            ),
        )
    })?;
    let op = SessionOp::Recover {
        option,
        confirm: body.confirm.unwrap_or(false),
        files: FileChecks::default(),
    };
    let response = session_op(&state, &tenant, &id, op, key, render).await?;
    if response.status().is_success() {
        let detail = serde_json::json!({"option": option.as_str(), "confirm": body.confirm});
        audit(
            &state,
            &tenant,
            &caller,
            "session.recover",
            format!("session:{id}"),
            detail,
        )
        .await;
    }
    Ok(response)
}

/// Re-hashes every checkpoint of a session; damaged ones are marked invalid for good.
#[utoipa::path(post, path = "/api/v1/sessions/{id}/verify", tag = "recovery",
    params(("id" = String, Path, description = "Session id")),
    responses((status = 200, body = VerifyBody), (status = 404, body = Problem)))]
pub(crate) async fn verify(
    State(state): State<AppState>,
    Extension(tenant): Extension<TenantId>,
    Path(id): Path<String>,
) -> Result<Json<VerifyBody>, ApiError> {
    let found = state.lifeboat.verify(&tenant, &path_id(&id)?).await?;
    Ok(Json(VerifyBody {
        checkpoints: CheckpointCheck {
            total: found.total,
            valid: found.valid,
            invalid: found.invalid,
        },
        assets: AssetCountsBody {
            total: found.assets.total,
            ok: found.assets.ok,
            missing: found.assets.missing,
            corrupt: found.assets.corrupt,
        },
        issues: found.issues,
    }))
}
