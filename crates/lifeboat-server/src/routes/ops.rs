//! Operations endpoints: stats, sweep, health, readiness, metrics.

use axum::Json;
use axum::extract::{Extension, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use lifeboat::TenantId;
use lifeboat_api::{CleanupBody, Problem, ProblemType, StatsBody, SweepBody};
use serde_json::json;

use crate::AppState;
use crate::convert::stats_body;
use crate::error::ApiError;
use crate::extract::ApiQuery;

/// Counts for the tenant of the key.
#[utoipa::path(get, path = "/api/v1/stats", tag = "operations",
    responses((status = 200, body = StatsBody)))]
pub(crate) async fn stats(
    State(state): State<AppState>,
    Extension(tenant): Extension<TenantId>,
) -> Result<Json<StatsBody>, ApiError> {
    Ok(Json(stats_body(state.lifeboat.stats(&tenant).await?)))
}

/// Persists expired leases now instead of at the next background sweep.
#[utoipa::path(post, path = "/api/v1/admin/sweep", tag = "operations",
    responses((status = 200, body = SweepBody), (status = 503, body = Problem)))]
pub(crate) async fn sweep(State(state): State<AppState>) -> Result<Json<SweepBody>, ApiError> {
    let timed_out = state.lifeboat.sweep().await?;
    Ok(Json(SweepBody { timed_out }))
}

/// `?dry_run=` of a cleanup.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct CleanupQuery {
    /// `true` counts what would go and changes nothing (default `false`).
    dry_run: Option<String>,
}

/// Runs cleanup now: old finished sessions, old deleted projects, revisions beyond
/// retention, expired idempotency keys, then unreferenced files older than 24 h.
#[utoipa::path(post, path = "/api/v1/admin/cleanup", tag = "operations", params(CleanupQuery),
    responses((status = 200, body = CleanupBody), (status = 400, body = Problem), (status = 503, body = Problem)))]
pub(crate) async fn cleanup(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<CleanupQuery>,
) -> Result<Json<CleanupBody>, ApiError> {
    let dry_run = match query.dry_run.as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(ApiError::new(
                ProblemType::MALFORMED_REQUEST,
                format!("dry_run must be true or false, not {other:?}"),
            ));
        }
    };
    let report = state.lifeboat.cleanup(dry_run).await?;
    Ok(Json(CleanupBody {
        dry_run,
        orphan_files_deleted: report.orphan_files_deleted,
        bytes_freed: report.bytes_freed,
        sessions_purged: report.sessions_purged,
        checkpoints_pruned: report.checkpoints_pruned,
        revisions_pruned: report.revisions_pruned,
        projects_purged: report.projects_purged,
        idempotency_keys_expired: report.idempotency_keys_expired,
    }))
}

/// Liveness: the process answers. Checks no dependency.
pub(crate) async fn healthz() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

/// Readiness: storage reads and writes are possible.
pub(crate) async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    match state.lifeboat.ready().await {
        Ok(()) => (StatusCode::OK, Json(json!({"status": "ready"}))),
        Err(error) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "unavailable", "reason": error.to_string()})),
        ),
    }
}

/// Prometheus text exposition.
pub(crate) async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let mut body = state
        .metrics
        .as_ref()
        .map(|handle| handle.render())
        .unwrap_or_default();
    body.push_str(&format!(
        "# HELP lifeboat_build_info Build information.\n# TYPE lifeboat_build_info gauge\nlifeboat_build_info{{version=\"{}\"}} 1\n",
        env!("CARGO_PKG_VERSION")
    ));
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        body,
    )
}
