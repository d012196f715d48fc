//! API keys (SPEC §7): create (shown once), list, revoke; admin scope. Project tokens
//! (SPEC §9 r2): made and revoked with a write key.

use axum::Json;
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use lifeboat::{ApiKey, IdempotencyKey, Outcome, ProjectToken, TenantId};
use lifeboat_api::{
    AuditBody, CreateKey, CreateProjectToken, KeyBody, KeyCreated, List, Problem, ProblemType,
    ProjectTokenCreated,
};
use serde_json::json;

use super::sessions::PageQuery;
use crate::extract::{ApiQuery, OptionalJson, page, path_id};

use crate::AppState;
use crate::auth::{Caller, audit};
use crate::convert::rfc3339;
use crate::error::ApiError;
use crate::extract::JsonBody;
use crate::idempotency::{Rendered, json, respond};

fn key_body(key: &ApiKey) -> KeyBody {
    KeyBody {
        id: key.id.clone(),
        tenant: key.tenant.as_str().to_owned(),
        scopes: key.scopes.clone(),
        created_at: rfc3339(key.created_at),
        revoked_at: key.revoked_at.map(rfc3339),
    }
}

/// The tenant a caller's key operations are limited to (`None`: the bootstrap key, all).
fn scope_of(caller: &Caller, tenant: &TenantId) -> Option<TenantId> {
    (!caller.bootstrap).then(|| tenant.clone())
}

/// Makes a key for a tenant. The whole key is in this answer only.
#[utoipa::path(post, path = "/api/v1/keys", tag = "keys", request_body = CreateKey,
    responses((status = 201, body = KeyCreated), (status = 403, body = Problem), (status = 422, body = Problem)))]
pub(crate) async fn create_key(
    State(state): State<AppState>,
    Extension(tenant): Extension<TenantId>,
    Extension(caller): Extension<Caller>,
    key: Option<Extension<IdempotencyKey>>,
    JsonBody(body): JsonBody<CreateKey>,
) -> Result<Response, ApiError> {
    fn render((record, key): &(ApiKey, String)) -> Rendered {
        let body = KeyCreated {
            id: record.id.clone(),
            key: key.clone(),
            tenant: record.tenant.as_str().to_owned(),
            scopes: record.scopes.clone(),
            created_at: rfc3339(record.created_at),
        };
        json(StatusCode::CREATED, &[], &body)
    }
    if !caller.bootstrap && body.tenant != tenant.as_str() {
        return Err(ApiError::new(
            ProblemType::FORBIDDEN,
            "a tenant's admin key can only make keys for its own tenant",
        ));
    }
    let key = key.map(|Extension(key)| key);
    let outcome = state
        .lifeboat
        .create_key_with(&tenant, &body.tenant, &body.scopes, key)
        .await?;
    if let Outcome::Done((record, _)) = &outcome {
        let detail = json!({"tenant": record.tenant.as_str(), "scopes": record.scopes});
        audit(
            &state,
            &tenant,
            &caller,
            "key.create",
            format!("key:{}", record.id),
            detail,
        )
        .await;
    }
    Ok(respond(outcome, render))
}

/// Keys of the caller's tenant (every tenant's for the bootstrap key), without secrets.
#[utoipa::path(get, path = "/api/v1/keys", tag = "keys", params(PageQuery),
    responses((status = 200, body = List<KeyBody>), (status = 400, body = Problem), (status = 403, body = Problem)))]
pub(crate) async fn list_keys(
    State(state): State<AppState>,
    Extension(tenant): Extension<TenantId>,
    Extension(caller): Extension<Caller>,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<Json<List<KeyBody>>, ApiError> {
    let page = page(query.limit.as_deref(), query.cursor)?;
    let keys = state
        .lifeboat
        .keys(scope_of(&caller, &tenant).as_ref(), &page)
        .await?;
    Ok(Json(List {
        items: keys.items.iter().map(key_body).collect(),
        next_cursor: keys.next_cursor,
    }))
}

/// Revokes a key at once: its next request is refused with 401.
#[utoipa::path(delete, path = "/api/v1/keys/{id}", tag = "keys",
    params(("id" = String, Path, description = "Key id")),
    responses((status = 204), (status = 404, body = Problem)))]
pub(crate) async fn revoke_key(
    State(state): State<AppState>,
    Extension(tenant): Extension<TenantId>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let revoked = state
        .lifeboat
        .revoke_key(&id, scope_of(&caller, &tenant).as_ref())
        .await?;
    let detail = json!({"tenant": revoked.tenant.as_str()});
    audit(
        &state,
        &tenant,
        &caller,
        "key.revoke",
        format!("key:{id}"),
        detail,
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}

/// The audit trail, newest first: who (key id, or `bootstrap`) did what to which resource.
/// A tenant's admin key sees its tenant's entries; the bootstrap key sees every tenant's.
#[utoipa::path(get, path = "/api/v1/audit", tag = "keys", params(PageQuery),
    responses((status = 200, body = List<AuditBody>), (status = 403, body = Problem)))]
pub(crate) async fn audit_trail(
    State(state): State<AppState>,
    Extension(tenant): Extension<TenantId>,
    Extension(caller): Extension<Caller>,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<Json<List<AuditBody>>, ApiError> {
    let page = page(query.limit.as_deref(), query.cursor)?;
    let found = state
        .lifeboat
        .audit_trail(scope_of(&caller, &tenant).as_ref(), &page)
        .await?;
    Ok(Json(List {
        items: found
            .items
            .into_iter()
            .map(|entry| AuditBody {
                seq: entry.seq,
                tenant: entry.tenant.as_str().to_owned(),
                at: rfc3339(entry.at),
                actor: entry.actor,
                action: entry.action,
                resource: entry.resource,
                detail: entry.detail,
            })
            .collect(),
        next_cursor: found.next_cursor,
    }))
}

/// Makes a token that acts only on this project — its state, revisions, restore, assets,
/// its sessions' recovery and its events — for a page that must not hold a tenant key.
/// The project need not exist yet (the page may create it with `PUT`). Shown once.
#[utoipa::path(post, path = "/api/v1/projects/{id}/token", tag = "projects",
    params(("id" = String, Path, description = "Project id")),
    request_body(content = Option<CreateProjectToken>),
    responses((status = 201, body = ProjectTokenCreated), (status = 403, body = Problem),
        (status = 422, body = Problem)))]
pub(crate) async fn create_project_token(
    State(state): State<AppState>,
    Extension(tenant): Extension<TenantId>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    key: Option<Extension<IdempotencyKey>>,
    OptionalJson(body): OptionalJson<CreateProjectToken>,
) -> Result<Response, ApiError> {
    fn render((record, token): &(ProjectToken, String)) -> Rendered {
        let body = ProjectTokenCreated {
            id: record.id.clone(),
            token: token.clone(),
            expires_at: rfc3339(record.expires_at),
            project_id: record.project_id.to_string(),
            scopes: record.scopes.clone(),
        };
        json(StatusCode::CREATED, &[], &body)
    }
    let project = path_id(&id)?;
    let key = key.map(|Extension(key)| key);
    let outcome = state
        .lifeboat
        .create_project_token_with(&tenant, &project, body.ttl_ms, body.scopes.as_deref(), key)
        .await?;
    if let Outcome::Done((record, _)) = &outcome {
        let detail = json!({"scopes": record.scopes, "expires_at": rfc3339(record.expires_at)});
        audit(
            &state,
            &tenant,
            &caller,
            "project.token.create",
            format!("project-token:{}", record.id),
            detail,
        )
        .await;
    }
    Ok(respond(outcome, render))
}

/// Revokes a project token at once: its next request is 401.
#[utoipa::path(delete, path = "/api/v1/projects/{id}/token/{token_id}", tag = "projects",
    params(("id" = String, Path, description = "Project id"),
        ("token_id" = String, Path, description = "The token's id")),
    responses((status = 204), (status = 404, body = Problem)))]
pub(crate) async fn revoke_project_token(
    State(state): State<AppState>,
    Extension(tenant): Extension<TenantId>,
    Extension(caller): Extension<Caller>,
    Path((id, token_id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let record = state
        .lifeboat
        .revoke_project_token(&tenant, &path_id(&id)?, &token_id)
        .await?;
    audit(
        &state,
        &tenant,
        &caller,
        "project.token.revoke",
        format!("project-token:{}", record.id),
        json!({"project_id": record.project_id.as_str()}),
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}
