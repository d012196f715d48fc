//! API keys (SPEC §7): create (shown once), list, revoke. Admin scope.

use axum::Json;
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use lifeboat::{ApiKey, TenantId};
use lifeboat_api::{AuditBody, CreateKey, KeyBody, KeyCreated, List, Problem, ProblemType};
use serde_json::json;

use super::sessions::PageQuery;
use crate::extract::{ApiQuery, page};

use crate::AppState;
use crate::auth::{Caller, audit};
use crate::convert::rfc3339;
use crate::error::ApiError;
use crate::extract::JsonBody;

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
    JsonBody(body): JsonBody<CreateKey>,
) -> Result<(StatusCode, Json<KeyCreated>), ApiError> {
    if !caller.bootstrap && body.tenant != tenant.as_str() {
        return Err(ApiError::new(
            ProblemType::FORBIDDEN,
            "a tenant's admin key can only make keys for its own tenant",
        ));
    }
    let (record, key) = state
        .lifeboat
        .create_key(&body.tenant, &body.scopes)
        .await?;
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
    Ok((
        StatusCode::CREATED,
        Json(KeyCreated {
            id: record.id,
            key,
            tenant: record.tenant.as_str().to_owned(),
            scopes: record.scopes,
            created_at: rfc3339(record.created_at),
        }),
    ))
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
