//! Project and schema endpoints (SPEC §4, §7 "Projects", "Schemas").
//!
//! Conventions (see `docs/api-design.md`): `ETag: "<revision>"` on every read and save;
//! `If-Match` / `If-None-Match: *` make a save conditional (412 with the current ETag);
//! `PATCH` takes `application/merge-patch+json` or `application/json-patch+json`.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Extension, Path, State};
use axum::http::header::{CONTENT_TYPE, ETAG, IF_MATCH, IF_NONE_MATCH};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use lifeboat::{
    Change, IdempotencyKey, Name, Preconditions, ProjectEdit, SaveOutcome, SchemaPut, SchemaRef,
    TenantId, parse_json_patch,
};
use lifeboat_api::{
    List, Problem, ProblemType, ProjectBody, ProjectSaved, ProjectSummary, PutProject, Restore,
    RevisionBody,
};
use serde::Deserialize;
use serde_json::Value;

use super::sessions::PageQuery;
use crate::AppState;
use crate::auth::{Caller, audit};
use crate::convert::rfc3339;
use crate::error::ApiError;
use crate::extract::{ApiQuery, JsonBody, body_rejection, page, parse_json, path_id};
use crate::idempotency::{Rendered, json, respond};

/// The media types `PATCH` accepts, as advertised in `Accept-Patch`.
const ACCEPT_PATCH: &str = "application/merge-patch+json, application/json-patch+json";

/// `?revision=N` of `GET /projects/{id}`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct RevisionQuery {
    /// Read this revision instead of the current one.
    revision: Option<String>,
}

fn etag(revision: u64) -> String {
    format!("\"{revision}\"")
}

/// Reads `If-Match` and `If-None-Match`. ETags that are not revisions never match.
fn preconditions(headers: &HeaderMap) -> Preconditions {
    let text = |name| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|v| v.trim().to_owned())
            .collect::<Vec<_>>()
    };
    let if_match = text(IF_MATCH);
    let if_match = if if_match.is_empty() {
        None
    } else if if_match.iter().any(|v| v == "*") {
        Some(None)
    } else {
        Some(Some(
            if_match
                .iter()
                .filter_map(|v| v.strip_prefix('"')?.strip_suffix('"')?.parse().ok())
                .collect(),
        ))
    };
    Preconditions {
        if_match,
        if_none_match_any: text(IF_NONE_MATCH).iter().any(|v| v == "*"),
    }
}

fn schema_ref(raw: &str) -> Result<SchemaRef, ApiError> {
    SchemaRef::parse(raw).map_err(|e| ApiError::new(ProblemType::VALIDATION_FAILED, e.to_string()))
}

/// 201 for a new project, 200 otherwise; `ETag` of the new revision.
fn saved_response(saved: &SaveOutcome) -> Rendered {
    let status = if saved.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    json(
        status,
        &[(ETAG, etag(saved.revision))],
        &ProjectSaved {
            id: saved.id.to_string(),
            revision: saved.revision,
            updated_at: rfc3339(saved.updated_at),
            size_bytes: saved.size_bytes,
        },
    )
}

async fn save(
    state: &AppState,
    tenant: &TenantId,
    id: &str,
    edit: ProjectEdit,
    headers: &HeaderMap,
    key: Option<Extension<IdempotencyKey>>,
) -> Result<Response, ApiError> {
    let id = path_id(id)?;
    let key = key.map(|Extension(key)| key);
    let outcome = state
        .lifeboat
        .save_project(tenant, &id, edit, preconditions(headers), key)
        .await?;
    Ok(respond(outcome, saved_response))
}

/// Creates or replaces a project's state: a new revision.
#[utoipa::path(put, path = "/api/v1/projects/{id}", tag = "projects", request_body = PutProject,
    params(("id" = String, Path, description = "Project id")),
    responses((status = 201, body = ProjectSaved), (status = 200, body = ProjectSaved),
        (status = 412, body = Problem), (status = 413, body = Problem), (status = 422, body = Problem)))]
pub(crate) async fn put_project(
    State(state): State<AppState>,
    Extension(tenant): Extension<TenantId>,
    Path(id): Path<String>,
    headers: HeaderMap,
    key: Option<Extension<IdempotencyKey>>,
    JsonBody(body): JsonBody<PutProject>,
) -> Result<Response, ApiError> {
    let change = Change::Replace {
        state: body.state,
        title: body.title,
        schema: body.schema.as_deref().map(schema_ref).transpose()?,
    };
    save(
        &state,
        &tenant,
        &id,
        ProjectEdit::Change(change),
        &headers,
        key,
    )
    .await
}

/// Patches a project's state atomically: a merge patch (RFC 7396) or a JSON Patch (RFC 6902).
#[utoipa::path(patch, path = "/api/v1/projects/{id}", tag = "projects",
    request_body(content = Object, content_type = "application/merge-patch+json",
        description = "A merge patch of the state; or a JSON Patch array as application/json-patch+json"),
    params(("id" = String, Path, description = "Project id")),
    responses((status = 200, body = ProjectSaved), (status = 404, body = Problem), (status = 409, body = Problem),
        (status = 412, body = Problem), (status = 415, body = Problem), (status = 422, body = Problem)))]
pub(crate) async fn patch_project(
    State(state): State<AppState>,
    Extension(tenant): Extension<TenantId>,
    Path(id): Path<String>,
    headers: HeaderMap,
    key: Option<Extension<IdempotencyKey>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let mime = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default();
    let body = body.map_err(body_rejection)?;
    let change = match mime.as_str() {
        "application/merge-patch+json" => Change::Merge(parse_json::<Value>(&body)?),
        "application/json-patch+json" => {
            let patch = parse_json_patch(parse_json::<Value>(&body)?)
                .map_err(|e| ApiError::new(ProblemType::VALIDATION_FAILED, e.to_string()))?;
            Change::JsonPatch(patch)
        }
        _ => {
            return Err(ApiError::new(
                ProblemType::UNSUPPORTED_MEDIA_TYPE,
                format!("PATCH takes {ACCEPT_PATCH}"),
            )
            .with_header(
                axum::http::HeaderName::from_static("accept-patch"),
                HeaderValue::from_static(ACCEPT_PATCH),
            ));
        }
    };
    save(
        &state,
        &tenant,
        &id,
        ProjectEdit::Change(change),
        &headers,
        key,
    )
    .await
}

/// A project with its state, now or at `?revision=N`. `HEAD` answers the headers only.
#[utoipa::path(get, path = "/api/v1/projects/{id}", tag = "projects",
    params(("id" = String, Path, description = "Project id"), RevisionQuery),
    responses((status = 200, body = ProjectBody), (status = 404, body = Problem)))]
pub(crate) async fn get_project(
    State(state): State<AppState>,
    Extension(tenant): Extension<TenantId>,
    Path(id): Path<String>,
    ApiQuery(query): ApiQuery<RevisionQuery>,
) -> Result<Response, ApiError> {
    let revision = query
        .revision
        .map(|raw| {
            raw.parse::<u64>().ok().filter(|r| *r >= 1).ok_or_else(|| {
                ApiError::new(
                    ProblemType::MALFORMED_REQUEST,
                    format!("revision must be a positive integer, not {raw:?}"),
                )
            })
        })
        .transpose()?;
    let project = state
        .lifeboat
        .project(&tenant, &path_id(&id)?, revision)
        .await?;
    let body = ProjectBody {
        id: project.id.to_string(),
        revision: project.revision,
        title: project.title,
        schema: project.schema.map(|s| s.to_string()),
        state: project.state,
        created_at: rfc3339(project.created_at),
        updated_at: rfc3339(project.updated_at),
    };
    let mut response = Json(body).into_response();
    if let Ok(value) = HeaderValue::from_str(&etag(project.revision)) {
        response.headers_mut().insert(ETAG, value);
    }
    Ok(response)
}

/// Projects, most recently created first.
#[utoipa::path(get, path = "/api/v1/projects", tag = "projects", params(PageQuery),
    responses((status = 200, body = List<ProjectSummary>), (status = 400, body = Problem)))]
pub(crate) async fn list_projects(
    State(state): State<AppState>,
    Extension(tenant): Extension<TenantId>,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<Json<List<ProjectSummary>>, ApiError> {
    let page = page(query.limit.as_deref(), query.cursor)?;
    let found = state.lifeboat.projects(&tenant, &page).await?;
    Ok(Json(List {
        items: found
            .items
            .into_iter()
            .map(|p| ProjectSummary {
                id: p.id.to_string(),
                title: p.title,
                schema: p.schema.map(|s| s.to_string()),
                revision: p.revision,
                size_bytes: p.size_bytes,
                created_at: rfc3339(p.created_at),
                updated_at: rfc3339(p.updated_at),
            })
            .collect(),
        next_cursor: found.next_cursor,
    }))
}

/// Soft-deletes a project: it reads as absent; cleanup purges it later. `PUT` brings it back.
#[utoipa::path(delete, path = "/api/v1/projects/{id}", tag = "projects",
    params(("id" = String, Path, description = "Project id")),
    responses((status = 204), (status = 404, body = Problem), (status = 412, body = Problem)))]
pub(crate) async fn delete_project(
    State(state): State<AppState>,
    Extension(tenant): Extension<TenantId>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    state
        .lifeboat
        .delete_project(&tenant, &path_id(&id)?, preconditions(&headers))
        .await?;
    audit(
        &state,
        &tenant,
        &caller,
        "project.delete",
        format!("project:{id}"),
        Value::Null,
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}

/// A project's revisions, newest first.
#[utoipa::path(get, path = "/api/v1/projects/{id}/revisions", tag = "projects",
    params(("id" = String, Path, description = "Project id"), PageQuery),
    responses((status = 200, body = List<RevisionBody>), (status = 404, body = Problem)))]
pub(crate) async fn list_revisions(
    State(state): State<AppState>,
    Extension(tenant): Extension<TenantId>,
    Path(id): Path<String>,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<Json<List<RevisionBody>>, ApiError> {
    let page = page(query.limit.as_deref(), query.cursor)?;
    let found = state
        .lifeboat
        .revisions(&tenant, &path_id(&id)?, &page)
        .await?;
    Ok(Json(List {
        items: found
            .items
            .into_iter()
            .map(|r| RevisionBody {
                revision: r.revision,
                created_at: rfc3339(r.created_at),
                size_bytes: r.size_bytes,
            })
            .collect(),
        next_cursor: found.next_cursor,
    }))
}

/// Restores an earlier revision's state as a new revision.
#[utoipa::path(post, path = "/api/v1/projects/{id}/restore", tag = "projects", request_body = Restore,
    params(("id" = String, Path, description = "Project id")),
    responses((status = 200, body = ProjectSaved), (status = 404, body = Problem), (status = 412, body = Problem)))]
pub(crate) async fn restore(
    State(state): State<AppState>,
    Extension(tenant): Extension<TenantId>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    headers: HeaderMap,
    key: Option<Extension<IdempotencyKey>>,
    JsonBody(body): JsonBody<Restore>,
) -> Result<Response, ApiError> {
    let edit = ProjectEdit::Restore(body.revision);
    let response = save(&state, &tenant, &id, edit, &headers, key).await?;
    let detail = serde_json::json!({"revision": body.revision});
    audit(
        &state,
        &tenant,
        &caller,
        "project.restore",
        format!("project:{id}"),
        detail,
    )
    .await;
    Ok(response)
}

fn schema_path(name: &str, version: &str) -> Result<SchemaRef, ApiError> {
    let parse = |raw: &str| {
        Name::parse(raw).map_err(|e| ApiError::new(ProblemType::INVALID_ID, e.to_string()))
    };
    Ok(SchemaRef {
        name: parse(name)?,
        version: parse(version)?,
    })
}

/// Registers a JSON Schema (Draft 2020-12) version. The body is the schema itself.
/// A registered version is immutable: 200 for the identical body, 409 for another.
#[utoipa::path(put, path = "/api/v1/schemas/{name}/{version}", tag = "schemas",
    request_body(content = serde_json::Value, description = "The JSON Schema document (an object, or true / false)"),
    params(("name" = String, Path, description = "Schema name"), ("version" = String, Path, description = "Version")),
    responses((status = 201, body = serde_json::Value), (status = 200, body = serde_json::Value), (status = 409, body = Problem), (status = 422, body = Problem)))]
pub(crate) async fn put_schema(
    State(state): State<AppState>,
    Extension(tenant): Extension<TenantId>,
    Path((name, version)): Path<(String, String)>,
    key: Option<Extension<IdempotencyKey>>,
    JsonBody(body): JsonBody<Value>,
) -> Result<Response, ApiError> {
    fn render(put: &SchemaPut) -> Rendered {
        let status = if put.created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        };
        json(status, &[], &put.body)
    }
    let schema = schema_path(&name, &version)?;
    let key = key.map(|Extension(key)| key);
    let outcome = state
        .lifeboat
        .put_schema(&tenant, &schema, body, key)
        .await?;
    Ok(respond(outcome, render))
}

/// A registered schema version.
#[utoipa::path(get, path = "/api/v1/schemas/{name}/{version}", tag = "schemas",
    params(("name" = String, Path, description = "Schema name"), ("version" = String, Path, description = "Version")),
    responses((status = 200, body = serde_json::Value), (status = 404, body = Problem)))]
pub(crate) async fn get_schema(
    State(state): State<AppState>,
    Extension(tenant): Extension<TenantId>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let schema = schema_path(&name, &version)?;
    Ok(Json(state.lifeboat.schema(&tenant, &schema).await?))
}
