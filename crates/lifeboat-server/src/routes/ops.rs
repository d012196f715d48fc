//! Operations endpoints: stats, sweep, health, readiness, metrics.

use axum::Json;
use axum::extract::{Extension, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use lifeboat::TenantId;
use lifeboat_api::{
    CleanupBody, ClusterBody, ClusterNode, DamagedCheckpoint, MaintenanceTermBody, Problem,
    ProblemType, StatsBody, StoreVerifyBody, SweepBody,
};
use serde_json::json;

use crate::AppState;
use crate::convert::{rfc3339, stats_body};
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

/// The servers on this store, the maintenance term (who runs cleanup) and the events
/// not yet sent to streams. Needs the bootstrap admin key: it describes the whole store.
#[utoipa::path(get, path = "/api/v1/admin/cluster", tag = "operations",
    responses((status = 200, body = ClusterBody), (status = 403, body = Problem),
        (status = 503, body = Problem)))]
pub(crate) async fn cluster(
    State(state): State<AppState>,
    Extension(caller): Extension<crate::auth::Caller>,
) -> Result<Json<ClusterBody>, ApiError> {
    if !caller.bootstrap {
        return Err(ApiError::new(
            ProblemType::FORBIDDEN,
            "the cluster view describes the whole store (every tenant) and needs the bootstrap admin key",
        ));
    }
    let cluster = state.lifeboat.cluster().await?;
    let holder = cluster.maintenance_holder().map(str::to_owned);
    Ok(Json(ClusterBody {
        store: if state.lifeboat.is_shared() {
            "postgres"
        } else {
            "sqlite"
        }
        .to_owned(),
        node: cluster.node.clone(),
        now: rfc3339(cluster.now),
        nodes: cluster
            .nodes
            .into_iter()
            .map(|node| ClusterNode {
                maintenance: holder.as_deref() == Some(node.id.as_str()),
                id: node.id,
                version: node.version,
                started_at: rfc3339(node.started_at),
                last_seen_at: rfc3339(node.last_seen),
                alive: node.alive,
                clock_skew_ms: node.clock_skew_ms,
            })
            .collect(),
        maintenance: cluster.maintenance.map(|term| MaintenanceTermBody {
            holder: term.holder,
            term: term.term,
            expires_at: rfc3339(term.expires_at),
        }),
        unsequenced_events: cluster.unsequenced_events,
        event_lag_ms: cluster.oldest_unsequenced_ms,
    }))
}

/// `?dry_run=` of a cleanup. Anything else is refused (400): a mistyped `?dryrun=true`
/// must not run a real cleanup.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct CleanupQuery {
    /// `true` counts what would go and changes nothing (default `false`).
    dry_run: Option<String>,
}

/// Runs cleanup now: old finished sessions, old deleted projects, revisions beyond
/// retention, expired idempotency keys, then unreferenced files older than 24 h.
#[utoipa::path(post, path = "/api/v1/admin/cleanup", tag = "operations", params(CleanupQuery),
    responses((status = 200, body = CleanupBody), (status = 400, body = Problem), (status = 403, body = Problem),
        (status = 503, body = Problem)))]
pub(crate) async fn cleanup(
    State(state): State<AppState>,
    Extension(tenant): Extension<TenantId>,
    Extension(caller): Extension<crate::auth::Caller>,
    ApiQuery(query): ApiQuery<CleanupQuery>,
) -> Result<Json<CleanupBody>, ApiError> {
    if !caller.bootstrap {
        return Err(ApiError::new(
            ProblemType::FORBIDDEN,
            "cleanup acts on the whole store (every tenant) and needs the bootstrap admin key",
        ));
    }
    let dry_run = flag("dry_run", query.dry_run.as_deref())?;
    let report = state.lifeboat.cleanup(dry_run).await?;
    if !dry_run {
        let detail = json!({
            "sessions_purged": report.sessions_purged,
            "projects_purged": report.projects_purged,
            "revisions_pruned": report.revisions_pruned,
            "orphan_files_deleted": report.orphan_files_deleted,
        });
        crate::auth::audit(
            &state,
            &tenant,
            &caller,
            "cleanup",
            "store".to_owned(),
            detail,
        )
        .await;
    }
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

/// `?repair=` of a store verification.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct VerifyQuery {
    /// `true` quarantines damaged checkpoints and records asset statuses (default `false`).
    repair: Option<String>,
}

/// Verifies the whole store, all tenants: SQLite's integrity check, every checkpoint's
/// hash, per-session counters, every asset's bytes. Nothing is ever deleted.
#[utoipa::path(post, path = "/api/v1/admin/verify", tag = "operations", params(VerifyQuery),
    responses((status = 200, body = StoreVerifyBody), (status = 400, body = Problem)))]
pub(crate) async fn verify_store(
    State(state): State<AppState>,
    Extension(caller): Extension<crate::auth::Caller>,
    ApiQuery(query): ApiQuery<VerifyQuery>,
) -> Result<Json<StoreVerifyBody>, ApiError> {
    if !caller.bootstrap {
        return Err(ApiError::new(
            ProblemType::FORBIDDEN,
            "verifying the whole store (every tenant) needs the bootstrap admin key",
        ));
    }
    let repair = flag("repair", query.repair.as_deref())?;
    let found = state.lifeboat.verify_store(repair).await?;
    Ok(Json(StoreVerifyBody {
        ok: found.is_clean(),
        repair,
        integrity: found.check.integrity.clone(),
        checkpoints_checked: found.check.checkpoints_checked,
        checkpoint_bytes: found.check.checkpoint_bytes,
        damaged_checkpoints: found
            .check
            .damaged
            .iter()
            .map(|(tenant, session_id, seq)| DamagedCheckpoint {
                tenant: tenant.clone(),
                session_id: session_id.clone(),
                seq: *seq,
            })
            .collect(),
        quarantined: found.check.quarantined,
        inconsistencies: found.check.inconsistencies.clone(),
        assets_checked: found.assets_checked,
        asset_bytes: found.asset_bytes,
        missing_assets: found.missing,
        corrupt_assets: found.corrupt,
    }))
}

/// A `true` / `false` query flag (absent: false).
fn flag(name: &str, raw: Option<&str>) -> Result<bool, ApiError> {
    match raw {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(other) => Err(ApiError::new(
            ProblemType::MALFORMED_REQUEST,
            format!("{name} must be true or false, not {other:?}"),
        )),
    }
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

/// The cluster's gauges, as this server sees them (see `GET /admin/cluster`).
fn cluster_metrics(cluster: &lifeboat::Cluster) -> String {
    let alive = cluster.nodes.iter().filter(|node| node.alive).count();
    let holding = cluster.maintenance_holder() == Some(cluster.node.as_str());
    let skew = cluster
        .nodes
        .iter()
        .find(|node| node.id == cluster.node)
        .map_or(0, |node| node.clock_skew_ms);
    let mut text = format!(
        "# HELP lifeboat_cluster_nodes_alive Servers on this store that beat in the last 3 s.\n# TYPE lifeboat_cluster_nodes_alive gauge\nlifeboat_cluster_nodes_alive {alive}\n\
         # HELP lifeboat_maintenance_holder 1 while this server holds the maintenance term (runs cleanup).\n# TYPE lifeboat_maintenance_holder gauge\nlifeboat_maintenance_holder {}\n\
         # HELP lifeboat_clock_skew_milliseconds This server's clock minus the store's, at its last beat.\n# TYPE lifeboat_clock_skew_milliseconds gauge\nlifeboat_clock_skew_milliseconds {skew}\n\
         # HELP lifeboat_events_unsequenced Events committed and not yet numbered for streams.\n# TYPE lifeboat_events_unsequenced gauge\nlifeboat_events_unsequenced {}\n\
         # HELP lifeboat_event_lag_milliseconds How long the oldest of those has waited.\n# TYPE lifeboat_event_lag_milliseconds gauge\nlifeboat_event_lag_milliseconds {}\n",
        u8::from(holding),
        cluster.unsequenced_events,
        cluster.oldest_unsequenced_ms
    );
    if let Some(term) = &cluster.maintenance {
        text.push_str(&format!(
            "# HELP lifeboat_maintenance_term The maintenance lease's current term.\n# TYPE lifeboat_maintenance_term gauge\nlifeboat_maintenance_term {}\n",
            term.term
        ));
    }
    text
}

/// Prometheus text exposition.
pub(crate) async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let mut body = state
        .metrics
        .as_ref()
        .map(|handle| handle.render())
        .unwrap_or_default();
    match state.lifeboat.gauges().await {
        Ok(gauges) => {
            body.push_str("# HELP lifeboat_sessions Sessions by status, all tenants.\n# TYPE lifeboat_sessions gauge\n");
            for (status, count) in &gauges.sessions {
                body.push_str(&format!(
                    "lifeboat_sessions{{status=\"{}\"}} {count}\n",
                    status.as_str()
                ));
            }
            body.push_str(&format!(
                "# HELP lifeboat_asset_bytes Bytes of all assets.\n# TYPE lifeboat_asset_bytes gauge\nlifeboat_asset_bytes {}\n",
                gauges.asset_bytes
            ));
            body.push_str(&format!(
                "# HELP lifeboat_database_bytes Size of the database.\n# TYPE lifeboat_database_bytes gauge\nlifeboat_database_bytes {}\n",
                gauges.database_bytes
            ));
        }
        Err(error) => tracing::warn!(%error, "metrics: cannot read the gauges"),
    }
    match state.lifeboat.cluster().await {
        Ok(cluster) => body.push_str(&cluster_metrics(&cluster)),
        Err(error) => tracing::warn!(%error, "metrics: cannot read the cluster"),
    }
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
