//! Session and checkpoint endpoints (SPEC §7 "Sessions").

use axum::Json;
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use lifeboat::{
    Applied, CheckpointKind, IdempotencyKey, Session, SessionFilter, SessionOp, SessionToken,
    Status, TenantId,
};
use lifeboat_api::{
    AttemptBody, CheckpointBody, CheckpointCreated, CreateCheckpoint, CreateSession, Fail,
    Heartbeat, HeartbeatAck, List, Problem, ProblemType, SessionBody, SessionTokenBody,
};
use serde::Deserialize;
use serde_json::json;

use crate::AppState;
use crate::auth::{Caller, audit};
use crate::convert::{
    checkpoint_body, metrics, new_checkpoint, new_session, progress, rfc3339, session_body,
};
use crate::error::ApiError;
use crate::extract::{ApiQuery, JsonBody, OptionalJson, page, path_id};
use crate::idempotency::{Rendered, json, respond};

/// Query of `GET /sessions`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct SessionQuery {
    /// Comma-separated statuses, e.g. `incomplete,failed`.
    status: Option<String>,
    /// Only sessions of this project.
    project_id: Option<String>,
    /// Only sessions of this kind.
    kind: Option<String>,
    /// Page size, 1–1000 (default 50).
    limit: Option<String>,
    /// From `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// Query of paged lists.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct PageQuery {
    /// Page size, 1–1000 (default 50).
    pub(crate) limit: Option<String>,
    /// From `next_cursor` of the previous page.
    pub(crate) cursor: Option<String>,
}

/// Creates a session: `active`, attempt 1, with a lease.
#[utoipa::path(post, path = "/api/v1/sessions", tag = "sessions", request_body = CreateSession,
    responses((status = 201, body = SessionBody), (status = 409, body = Problem), (status = 422, body = Problem)))]
pub(crate) async fn create_session(
    State(state): State<AppState>,
    Extension(tenant): Extension<TenantId>,
    key: Option<Extension<IdempotencyKey>>,
    JsonBody(body): JsonBody<CreateSession>,
) -> Result<Response, ApiError> {
    fn render(session: &Session) -> Rendered {
        json(StatusCode::CREATED, &[], &session_body(session))
    }
    let key = key.map(|Extension(key)| key);
    let outcome = state
        .lifeboat
        .create_session_with(&tenant, new_session(body)?, key)
        .await?;
    Ok(respond(outcome, render))
}

/// Lists sessions, newest first.
#[utoipa::path(get, path = "/api/v1/sessions", tag = "sessions", params(SessionQuery),
    responses((status = 200, body = List<SessionBody>), (status = 400, body = Problem)))]
pub(crate) async fn list_sessions(
    State(state): State<AppState>,
    Extension(tenant): Extension<TenantId>,
    ApiQuery(query): ApiQuery<SessionQuery>,
) -> Result<Json<List<SessionBody>>, ApiError> {
    let statuses = query
        .status
        .as_deref()
        .map(|list| {
            list.split(',')
                .map(|raw| {
                    Status::parse(raw.trim()).ok_or_else(|| {
                        ApiError::new(
                            ProblemType::MALFORMED_REQUEST,
                            format!("unknown status {raw:?}"),
                        )
                    })
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()?
        .unwrap_or_default();
    let filter = SessionFilter {
        statuses,
        project_id: query.project_id.as_deref().map(path_id).transpose()?,
        kind: query.kind,
    };
    let page = page(query.limit.as_deref(), query.cursor)?;
    let found = state.lifeboat.sessions(&tenant, &filter, &page).await?;
    Ok(Json(List {
        items: found.items.iter().map(session_body).collect(),
        next_cursor: found.next_cursor,
    }))
}

/// One session.
#[utoipa::path(get, path = "/api/v1/sessions/{id}", tag = "sessions",
    params(("id" = String, Path, description = "Session id")),
    responses((status = 200, body = SessionBody), (status = 404, body = Problem)))]
pub(crate) async fn get_session(
    State(state): State<AppState>,
    Extension(tenant): Extension<TenantId>,
    Path(id): Path<String>,
) -> Result<Json<SessionBody>, ApiError> {
    let session = state.lifeboat.session(&tenant, &path_id(&id)?).await?;
    Ok(Json(session_body(&session)))
}

/// Runs a session write, idempotently when the request carries a key.
pub(crate) async fn session_op(
    state: &AppState,
    tenant: &TenantId,
    id: &str,
    op: SessionOp,
    key: Option<Extension<IdempotencyKey>>,
    render: fn(&Applied) -> Rendered,
) -> Result<Response, ApiError> {
    let id = path_id(id)?;
    let key = key.map(|Extension(key)| key);
    let outcome = state.lifeboat.update_with(tenant, &id, op, key).await?;
    Ok(respond(outcome, render))
}

/// The session object of a write's result, 200.
fn session_of(applied: &Applied) -> Rendered {
    json(StatusCode::OK, &[], &session_body(&applied.session))
}

/// Cancels a session (same as `POST /sessions/{id}/cancel` without an attempt).
#[utoipa::path(delete, path = "/api/v1/sessions/{id}", tag = "sessions",
    params(("id" = String, Path, description = "Session id")),
    responses((status = 200, body = SessionBody), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub(crate) async fn delete_session(
    State(state): State<AppState>,
    Extension(tenant): Extension<TenantId>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let op = SessionOp::Cancel { attempt: None };
    let response = session_op(&state, &tenant, &id, op, None, session_of).await?;
    audit(
        &state,
        &tenant,
        &caller,
        "session.cancel",
        format!("session:{id}"),
        json!({}),
    )
    .await;
    Ok(response)
}

/// Extends the lease of the current attempt, merging progress and metrics.
#[utoipa::path(post, path = "/api/v1/sessions/{id}/heartbeat", tag = "sessions", request_body = Heartbeat,
    params(("id" = String, Path, description = "Session id")),
    responses((status = 200, body = HeartbeatAck), (status = 409, body = Problem)))]
pub(crate) async fn heartbeat(
    State(state): State<AppState>,
    Extension(tenant): Extension<TenantId>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    key: Option<Extension<IdempotencyKey>>,
    JsonBody(body): JsonBody<Heartbeat>,
) -> Result<Response, ApiError> {
    fn render(applied: &Applied) -> Rendered {
        let ack = HeartbeatAck {
            status: applied.session.status.as_str().to_owned(),
            lease_expires_at: applied.session.lease_expires_at.map(rfc3339),
        };
        json(StatusCode::OK, &[], &ack)
    }
    let op = SessionOp::Heartbeat {
        attempt: caller.fence(Some(body.attempt))?.unwrap_or(body.attempt),
        progress: body.progress.map(progress),
        metrics: body.metrics.map(metrics),
    };
    session_op(&state, &tenant, &id, op, key, render).await
}

/// Writes a checkpoint; it counts as a heartbeat.
#[utoipa::path(post, path = "/api/v1/sessions/{id}/checkpoints", tag = "checkpoints", request_body = CreateCheckpoint,
    params(("id" = String, Path, description = "Session id")),
    responses((status = 201, body = CheckpointCreated), (status = 409, body = Problem), (status = 422, body = Problem)))]
pub(crate) async fn create_checkpoint(
    State(state): State<AppState>,
    Extension(tenant): Extension<TenantId>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    key: Option<Extension<IdempotencyKey>>,
    JsonBody(body): JsonBody<CreateCheckpoint>,
) -> Result<Response, ApiError> {
    fn render(applied: &Applied) -> Rendered {
        match &applied.checkpoint {
            Some(written) => json(
                StatusCode::CREATED,
                &[],
                &CheckpointCreated {
                    seq: written.seq,
                    sha256: written.sha256.as_str().to_owned(),
                    created_at: rfc3339(written.created_at),
                },
            ),
            None => json(
                StatusCode::INTERNAL_SERVER_ERROR,
                &[],
                &Problem::new(ProblemType::INTERNAL, "no checkpoint was written"),
            ),
        }
    }
    let Some(attempt) = caller.fence(body.attempt)? else {
        return Err(ApiError::new(
            ProblemType::VALIDATION_FAILED,
            "missing field `attempt`",
        ));
    };
    let checkpoint = new_checkpoint(body, None)?;
    let op = SessionOp::Checkpoint {
        attempt,
        checkpoint,
    };
    session_op(&state, &tenant, &id, op, key, render).await
}

/// A session's checkpoints in seq order.
#[utoipa::path(get, path = "/api/v1/sessions/{id}/checkpoints", tag = "checkpoints",
    params(("id" = String, Path, description = "Session id"), PageQuery),
    responses((status = 200, body = List<CheckpointBody>), (status = 404, body = Problem)))]
pub(crate) async fn list_checkpoints(
    State(state): State<AppState>,
    Extension(tenant): Extension<TenantId>,
    Path(id): Path<String>,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<Json<List<CheckpointBody>>, ApiError> {
    let page = page(query.limit.as_deref(), query.cursor)?;
    let found = state
        .lifeboat
        .checkpoints(&tenant, &path_id(&id)?, &page)
        .await?;
    Ok(Json(List {
        items: found
            .items
            .iter()
            .map(checkpoint_body)
            .collect::<Result<_, _>>()?,
        next_cursor: found.next_cursor,
    }))
}

/// The newest checkpoint whose data still verifies.
#[utoipa::path(get, path = "/api/v1/sessions/{id}/checkpoints/latest", tag = "checkpoints",
    params(("id" = String, Path, description = "Session id")),
    responses((status = 200, body = CheckpointBody), (status = 404, body = Problem)))]
pub(crate) async fn latest_checkpoint(
    State(state): State<AppState>,
    Extension(tenant): Extension<TenantId>,
    Path(id): Path<String>,
) -> Result<Json<CheckpointBody>, ApiError> {
    let found = state
        .lifeboat
        .checkpoint_at(&tenant, &path_id(&id)?, None)
        .await?;
    Ok(Json(checkpoint_body(&found)?))
}

/// One checkpoint by seq.
#[utoipa::path(get, path = "/api/v1/sessions/{id}/checkpoints/{seq}", tag = "checkpoints",
    params(("id" = String, Path, description = "Session id"), ("seq" = u64, Path, description = "Checkpoint seq")),
    responses((status = 200, body = CheckpointBody), (status = 400, body = Problem), (status = 404, body = Problem)))]
pub(crate) async fn get_checkpoint(
    State(state): State<AppState>,
    Extension(tenant): Extension<TenantId>,
    Path((id, seq)): Path<(String, String)>,
) -> Result<Json<CheckpointBody>, ApiError> {
    let seq = seq.parse::<u64>().map_err(|_| {
        ApiError::new(
            ProblemType::MALFORMED_REQUEST,
            format!("seq must be a positive integer, not {seq:?}"),
        )
    })?;
    let found = state
        .lifeboat
        .checkpoint_at(&tenant, &path_id(&id)?, Some(seq))
        .await?;
    Ok(Json(checkpoint_body(&found)?))
}

/// Pauses an active session; it holds no lease until recovered.
#[utoipa::path(post, path = "/api/v1/sessions/{id}/pause", tag = "sessions", request_body = AttemptBody,
    params(("id" = String, Path, description = "Session id")),
    responses((status = 200, body = SessionBody), (status = 409, body = Problem)))]
pub(crate) async fn pause(
    State(state): State<AppState>,
    Extension(tenant): Extension<TenantId>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    key: Option<Extension<IdempotencyKey>>,
    OptionalJson(body): OptionalJson<AttemptBody>,
) -> Result<Response, ApiError> {
    let op = SessionOp::Pause {
        attempt: caller.fence(body.attempt)?,
    };
    session_op(&state, &tenant, &id, op, key, session_of).await
}

/// Completes a session.
#[utoipa::path(post, path = "/api/v1/sessions/{id}/complete", tag = "sessions", request_body = AttemptBody,
    params(("id" = String, Path, description = "Session id")),
    responses((status = 200, body = SessionBody), (status = 409, body = Problem)))]
pub(crate) async fn complete(
    State(state): State<AppState>,
    Extension(tenant): Extension<TenantId>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    key: Option<Extension<IdempotencyKey>>,
    OptionalJson(body): OptionalJson<AttemptBody>,
) -> Result<Response, ApiError> {
    let op = SessionOp::Complete {
        attempt: caller.fence(body.attempt)?,
    };
    session_op(&state, &tenant, &id, op, key, session_of).await
}

/// Cancels (discards) a session.
#[utoipa::path(post, path = "/api/v1/sessions/{id}/cancel", tag = "sessions", request_body = AttemptBody,
    params(("id" = String, Path, description = "Session id")),
    responses((status = 200, body = SessionBody), (status = 409, body = Problem)))]
pub(crate) async fn cancel(
    State(state): State<AppState>,
    Extension(tenant): Extension<TenantId>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    key: Option<Extension<IdempotencyKey>>,
    OptionalJson(body): OptionalJson<AttemptBody>,
) -> Result<Response, ApiError> {
    let op = SessionOp::Cancel {
        attempt: caller.fence(body.attempt)?,
    };
    let response = session_op(&state, &tenant, &id, op, key, session_of).await?;
    let detail = json!({"attempt": body.attempt});
    audit(
        &state,
        &tenant,
        &caller,
        "session.cancel",
        format!("session:{id}"),
        detail,
    )
    .await;
    Ok(response)
}

/// Fails a session with an error and an optional emergency checkpoint.
#[utoipa::path(post, path = "/api/v1/sessions/{id}/fail", tag = "sessions", request_body = Fail,
    params(("id" = String, Path, description = "Session id")),
    responses((status = 200, body = SessionBody), (status = 409, body = Problem), (status = 422, body = Problem)))]
pub(crate) async fn fail(
    State(state): State<AppState>,
    Extension(tenant): Extension<TenantId>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    key: Option<Extension<IdempotencyKey>>,
    JsonBody(body): JsonBody<Fail>,
) -> Result<Response, ApiError> {
    let checkpoint = body
        .checkpoint
        .map(|c| new_checkpoint(c, Some(CheckpointKind::Emergency)))
        .transpose()?;
    let op = SessionOp::Fail {
        attempt: caller.fence(Some(body.attempt))?.unwrap_or(body.attempt),
        error: body.error,
        checkpoint,
    };
    session_op(&state, &tenant, &id, op, key, session_of).await
}

/// Makes a token that may act only on this session — its heartbeats, checkpoints, assets
/// and completion — for a browser or worker that must not hold a tenant key. Shown once;
/// it stops working when the session completes or is cancelled.
#[utoipa::path(post, path = "/api/v1/sessions/{id}/token", tag = "sessions",
    params(("id" = String, Path, description = "Session id")),
    responses((status = 201, body = SessionTokenBody), (status = 404, body = Problem),
        (status = 409, description = "The session is completed or cancelled", body = Problem)))]
pub(crate) async fn session_token(
    State(state): State<AppState>,
    Extension(tenant): Extension<TenantId>,
    key: Option<Extension<IdempotencyKey>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    fn render((record, token): &(SessionToken, String)) -> Rendered {
        let body = SessionTokenBody {
            session_id: record.session_id.to_string(),
            token: token.clone(),
            created_at: rfc3339(record.created_at),
        };
        json(StatusCode::CREATED, &[], &body)
    }
    let key = key.map(|Extension(key)| key);
    let outcome = state
        .lifeboat
        .create_session_token_with(&tenant, &path_id(&id)?, key)
        .await?;
    Ok(respond(outcome, render))
}
