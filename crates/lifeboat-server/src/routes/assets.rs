//! Asset endpoints under `/sessions/{id}/assets/` and `/projects/{id}/assets/` (SPEC §5).
//!
//! Uploads are streamed to disk as they arrive (never held whole in memory); appends are
//! bounded by the request body limit. Names are parsed into `AssetName` before anything
//! touches the disk.

use std::collections::HashMap;

use axum::Json;
use axum::body::Body;
use axum::extract::{Extension, FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use lifeboat::{Asset, AssetName, OpenAsset, Owner, Sha256, Storage, TenantId};
use lifeboat_api::{AssetBody, List, Problem, ProblemType, RegisterAsset};
use serde::Deserialize;

use super::sessions::PageQuery;
use crate::AppState;
use crate::auth::{Caller, audit};
use crate::convert::rfc3339;
use crate::error::ApiError;
use crate::extract::{ApiQuery, JsonBody, page, path_id};

/// The optional end-to-end check of an upload.
const CONTENT_SHA256: &str = "x-content-sha256";

/// The owner named by the path: `/api/v1/sessions/{id}/…` or `/api/v1/projects/{id}/…`.
pub(crate) struct AssetOwner(Owner);

impl<S: Send + Sync> FromRequestParts<S> for AssetOwner {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let mut segments = parts.uri.path().trim_start_matches('/').split('/').skip(2);
        let kind = segments.next().unwrap_or_default();
        let id = path_id(segments.next().unwrap_or_default())?;
        match kind {
            "sessions" => Ok(AssetOwner(Owner::Session(id))),
            "projects" => Ok(AssetOwner(Owner::Project(id))),
            _ => Err(ApiError::new(ProblemType::NOT_FOUND, "no such endpoint")),
        }
    }
}

/// `?attempt=N` of a session asset write (SPEC §5 r2).
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct FenceQuery {
    /// The writer's attempt: a stale one is 409 `attempt-mismatch` and changes nothing.
    attempt: Option<String>,
}

/// The attempt a session asset write is fenced by: `?attempt=N`, and for a session token
/// the token's attempt (see `Caller::fence`).
pub(crate) struct Fence(Option<u32>);

impl<S: Send + Sync> FromRequestParts<S> for Fence {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let ApiQuery(query) = ApiQuery::<FenceQuery>::from_request_parts(parts, state).await?;
        let sent = query
            .attempt
            .map(|raw| {
                raw.parse::<u32>().map_err(|_| {
                    ApiError::new(
                        ProblemType::MALFORMED_REQUEST,
                        format!("attempt must be a non-negative integer, not {raw:?}"),
                    )
                })
            })
            .transpose()?;
        match parts.extensions.get::<Caller>() {
            Some(caller) => caller.fence(sent).map(Fence),
            None => Ok(Fence(sent)),
        }
    }
}

fn asset_name(params: &HashMap<String, String>) -> Result<AssetName, ApiError> {
    let raw = params.get("name").map(String::as_str).unwrap_or_default();
    AssetName::parse(raw).map_err(|e| ApiError::new(ProblemType::INVALID_ID, e.to_string()))
}

pub(crate) fn asset_body(asset: &Asset) -> AssetBody {
    AssetBody {
        name: asset.name.to_string(),
        size: asset.size,
        sha256: asset.sha256.as_str().to_owned(),
        status: asset.status.as_str().to_owned(),
        source: match asset.storage {
            Storage::External(_) => "external",
            _ => "uploaded",
        }
        .to_owned(),
        kind: asset.kind.clone(),
        verified_at: rfc3339(asset.verified_at),
        created_at: rfc3339(asset.created_at),
        updated_at: rfc3339(asset.updated_at),
    }
}

fn created_or_ok(created: bool) -> StatusCode {
    if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    }
}

/// Uploads a whole file (replacing any asset of that name). The bytes are streamed to
/// disk, fsynced and stored under their SHA-256 before the record is written.
#[utoipa::path(put, path = "/api/v1/sessions/{id}/assets/{name}", tag = "assets",
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    params(("id" = String, Path, description = "Session id (or a project's, under /projects)"),
        ("name" = String, Path, description = "Asset name, may contain /"),
        ("X-Content-SHA256" = Option<String>, Header, description = "Expected SHA-256 of the bytes"),
        FenceQuery),
    responses((status = 201, body = AssetBody), (status = 200, body = AssetBody), (status = 400, body = Problem),
        (status = 404, body = Problem), (status = 409, body = Problem), (status = 413, body = Problem),
        (status = 422, body = Problem)))]
pub(crate) async fn put_asset(
    State(state): State<AppState>,
    Extension(tenant): Extension<TenantId>,
    AssetOwner(owner): AssetOwner,
    Path(params): Path<HashMap<String, String>>,
    Fence(fence): Fence,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let name = asset_name(&params)?;
    let expected = headers
        .get(CONTENT_SHA256)
        .map(|v| {
            Sha256::parse("X-Content-SHA256", v.to_str().unwrap_or_default())
                .map_err(|e| ApiError::new(ProblemType::MALFORMED_REQUEST, e.to_string()))
        })
        .transpose()?;
    let limit = state.lifeboat.max_asset_bytes();
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit) {
        return Err(too_large(limit));
    }
    let mut upload = state.lifeboat.upload(&tenant, &owner, fence).await?;
    let idle = state.lifeboat.upload_idle_timeout();
    let mut body = body;
    loop {
        // No overall deadline: a slow upload goes on as long as bytes keep coming.
        let Ok(next) = tokio::time::timeout(idle, body.frame()).await else {
            let received = upload.size();
            upload.abort().await;
            return Err(idle_timeout(idle, received));
        };
        let Some(frame) = next else {
            break;
        };
        let frame = match frame {
            Ok(frame) => frame,
            Err(e) => {
                let received = upload.size();
                upload.abort().await;
                return Err(ApiError::new(
                    ProblemType::MALFORMED_REQUEST,
                    format!("the upload was cut off after {received} bytes: {e}"),
                ));
            }
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if let Err(e) = upload.write(data, limit).await {
            upload.abort().await;
            return Err(if e.kind() == std::io::ErrorKind::FileTooLarge {
                too_large(limit)
            } else {
                lifeboat::Error::Unavailable(format!("cannot write the upload: {e}")).into()
            });
        }
    }
    let (asset, created) = state
        .lifeboat
        .put_asset(&tenant, &owner, &name, upload, expected, fence)
        .await?;
    Ok((created_or_ok(created), Json(asset_body(&asset))).into_response())
}

fn idle_timeout(idle: std::time::Duration, received: u64) -> ApiError {
    ApiError::new(
        ProblemType::REQUEST_TIMEOUT,
        format!(
            "no bytes arrived for {} s (after {received} bytes); nothing was kept, send it again",
            idle.as_secs_f64()
        ),
    )
}

fn too_large(limit: u64) -> ApiError {
    ApiError::new(
        ProblemType::ASSET_TOO_LARGE,
        format!("assets are limited to {limit} bytes"),
    )
}

/// `?offset=N` of an append.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct AppendQuery {
    /// Where the chunk starts: the asset's current size (0 creates it), or an earlier
    /// offset to retry a chunk already stored.
    offset: Option<String>,
}

/// Appends a chunk at `offset`: 201 when it made the asset (at offset 0), else 200.
/// Retrying a stored chunk is a no-op (200); any other offset than the current size is 409
/// with `current_size`. The chunk is durable before the answer.
#[utoipa::path(post, path = "/api/v1/sessions/{id}/assets/{name}", tag = "assets",
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    params(("id" = String, Path, description = "Session id (or a project's, under /projects)"),
        ("name" = String, Path, description = "Asset name"), AppendQuery, FenceQuery),
    responses((status = 201, description = "The append made the asset (at offset 0)", body = AssetBody), (status = 200, body = AssetBody), (status = 400, body = Problem), (status = 404, body = Problem),
        (status = 409, body = Problem), (status = 413, body = Problem)))]
pub(crate) async fn append_asset(
    State(state): State<AppState>,
    Extension(tenant): Extension<TenantId>,
    AssetOwner(owner): AssetOwner,
    Path(params): Path<HashMap<String, String>>,
    ApiQuery(query): ApiQuery<AppendQuery>,
    Fence(fence): Fence,
    body: Body,
) -> Result<Response, ApiError> {
    let name = asset_name(&params)?;
    let offset = query
        .offset
        .as_deref()
        .and_then(|raw| raw.parse::<u64>().ok())
        .ok_or_else(|| {
            ApiError::new(
                ProblemType::MALFORMED_REQUEST,
                "an append needs ?offset=N (a non-negative integer)",
            )
        })?;
    let idle = state.lifeboat.upload_idle_timeout();
    let read = tokio::time::timeout(idle, axum::body::to_bytes(body, crate::BODY_BYTES_MAX));
    let chunk = read
        .await
        .map_err(|_| idle_timeout(idle, 0))?
        .map_err(|_| {
            ApiError::new(
                ProblemType::PAYLOAD_TOO_LARGE,
                format!(
                    "a chunk is at most {} bytes; send larger data in several appends",
                    crate::BODY_BYTES_MAX
                ),
            )
        })?;
    let appended = state
        .lifeboat
        .append_asset(&tenant, &owner, &name, offset, chunk.to_vec(), fence)
        .await?;
    let status = created_or_ok(appended.created);
    Ok((status, Json(asset_body(&appended.asset))).into_response())
}

/// Registers a file on the server host, inside one of the `--asset-root`s (403 outside).
#[utoipa::path(post, path = "/api/v1/sessions/{id}/assets/register", tag = "assets", request_body = RegisterAsset,
    params(("id" = String, Path, description = "Session id (or a project's, under /projects)"), FenceQuery),
    responses((status = 201, body = AssetBody), (status = 200, body = AssetBody), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)))]
pub(crate) async fn register_asset(
    State(state): State<AppState>,
    Extension(tenant): Extension<TenantId>,
    AssetOwner(owner): AssetOwner,
    Fence(fence): Fence,
    JsonBody(body): JsonBody<RegisterAsset>,
) -> Result<Response, ApiError> {
    let name = AssetName::parse(&body.name)
        .map_err(|e| ApiError::new(ProblemType::VALIDATION_FAILED, e.to_string()))?;
    let (asset, created) = state
        .lifeboat
        .register_asset(&tenant, &owner, &name, &body.path, body.kind, fence)
        .await?;
    Ok((created_or_ok(created), Json(asset_body(&asset))).into_response())
}

/// An owner's assets with their last verification status.
#[utoipa::path(get, path = "/api/v1/sessions/{id}/assets", tag = "assets",
    params(("id" = String, Path, description = "Session id (or a project's, under /projects)"), PageQuery),
    responses((status = 200, body = List<AssetBody>), (status = 400, body = Problem), (status = 404, body = Problem)))]
pub(crate) async fn list_assets(
    State(state): State<AppState>,
    Extension(tenant): Extension<TenantId>,
    AssetOwner(owner): AssetOwner,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<Json<List<AssetBody>>, ApiError> {
    let page = page(query.limit.as_deref(), query.cursor)?;
    let assets = state.lifeboat.assets(&tenant, &owner, &page).await?;
    Ok(Json(List {
        items: assets.items.iter().map(asset_body).collect(),
        next_cursor: assets.next_cursor,
    }))
}

/// An asset's bytes. `Range: bytes=a-b` (one range) answers 206 with `Content-Range`.
/// An external file is checked again first: 409 `asset-changed` if it is no longer a
/// regular file of its registered size inside an asset root.
#[utoipa::path(get, path = "/api/v1/sessions/{id}/assets/{name}", tag = "assets",
    params(("id" = String, Path, description = "Session id (or a project's, under /projects)"),
        ("name" = String, Path, description = "Asset name")),
    responses((status = 200, description = "The bytes"), (status = 206, description = "The requested range"),
        (status = 404, body = Problem), (status = 409, body = Problem),
        (status = 416, description = "Range not satisfiable", body = Problem)))]
pub(crate) async fn get_asset(
    State(state): State<AppState>,
    Extension(tenant): Extension<TenantId>,
    AssetOwner(owner): AssetOwner,
    Path(params): Path<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let name = asset_name(&params)?;
    let (_, open) = state.lifeboat.open_asset(&tenant, &owner, &name).await?;
    bytes_response(open, &headers, &name).await
}

/// The bytes of an asset as checkpoint `seq` pinned them (SPEC §5 r2), whatever was written
/// to that name since. `Range` as for `GET …/assets/{name}`.
#[utoipa::path(get, path = "/api/v1/sessions/{id}/checkpoints/{seq}/assets/{name}", tag = "assets",
    params(("id" = String, Path, description = "Session id"),
        ("seq" = u64, Path, description = "Checkpoint seq"),
        ("name" = String, Path, description = "Asset name, as the checkpoint names it")),
    responses((status = 200, description = "The pinned bytes"), (status = 206, description = "The requested range"),
        (status = 400, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem),
        (status = 416, description = "Range not satisfiable", body = Problem)))]
pub(crate) async fn get_pinned_asset(
    State(state): State<AppState>,
    Extension(tenant): Extension<TenantId>,
    Path(params): Path<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id = path_id(params.get("id").map(String::as_str).unwrap_or_default())?;
    let raw_seq = params.get("seq").map(String::as_str).unwrap_or_default();
    let seq = raw_seq.parse::<u64>().map_err(|_| {
        ApiError::new(
            ProblemType::MALFORMED_REQUEST,
            format!("seq must be a positive integer, not {raw_seq:?}"),
        )
    })?;
    let name = asset_name(&params)?;
    let (_, open) = state.lifeboat.open_pinned(&tenant, &id, seq, &name).await?;
    bytes_response(open, &headers, &name).await
}

/// Streams `open`'s bytes, or the one range `Range` asks for (RFC 9110 §14).
async fn bytes_response(
    open: OpenAsset,
    headers: &HeaderMap,
    name: &AssetName,
) -> Result<Response, ApiError> {
    let size = open.size;
    let etag = format!("\"{}\"", open.sha256.as_str());
    // An `If-Range` that does not name these bytes (strongly), or names a date (there is
    // no `Last-Modified`), asks for all of them.
    let if_range_holds = headers
        .get(header::IF_RANGE)
        .is_none_or(|value| value.as_bytes() == etag.as_bytes());
    let range = headers
        .get(header::RANGE)
        .filter(|_| if_range_holds)
        .and_then(|v| v.to_str().ok())
        .map_or(Ranged::Whole, |raw| parse_range(raw, size));
    let (status, start, length) = match range {
        Ranged::Whole => (StatusCode::OK, 0, size),
        Ranged::Part(start, end) => (StatusCode::PARTIAL_CONTENT, start, end - start + 1),
        Ranged::Unsatisfiable => {
            let error = ApiError::new(
                ProblemType::RANGE_NOT_SATISFIABLE,
                format!("{name} is {size} bytes; the range asked for starts at or after its end"),
            );
            return Err(match HeaderValue::from_str(&format!("bytes */{size}")) {
                Ok(value) => error.with_header(header::CONTENT_RANGE, value),
                Err(_) => error,
            });
        }
    };
    let stream = open.stream(start..start + length).await.map_err(|e| {
        ApiError::from(lifeboat::Error::Unavailable(format!(
            "cannot read {name}: {e}"
        )))
    })?;
    let mut response = (status, Body::from_stream(stream)).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Ok(value) = HeaderValue::from_str(&length.to_string()) {
        headers.insert(header::CONTENT_LENGTH, value);
    }
    if let Ok(value) = HeaderValue::from_str(&etag) {
        headers.insert(header::ETAG, value);
    }
    if status == StatusCode::PARTIAL_CONTENT
        && let Ok(value) =
            HeaderValue::from_str(&format!("bytes {start}-{}/{size}", start + length - 1))
    {
        headers.insert(header::CONTENT_RANGE, value);
    }
    Ok(response)
}

/// What a `Range` header asks of a file of some size.
#[derive(Debug, PartialEq)]
enum Ranged {
    /// All the bytes: no range, or one this server ignores (another unit, bad syntax,
    /// several ranges), as RFC 9110 allows.
    Whole,
    /// The bytes from the first to the last, both included.
    Part(u64, u64),
    /// One byte range, none of whose bytes exist: 416.
    Unsatisfiable,
}

/// `bytes=a-b`, `bytes=a-` or `bytes=-n`, against a file of `size` bytes.
fn parse_range(raw: &str, size: u64) -> Ranged {
    let Some(spec) = raw
        .trim()
        .split_once('=')
        .filter(|(unit, _)| unit.trim().eq_ignore_ascii_case("bytes"))
        .map(|(_, spec)| spec.trim())
    else {
        return Ranged::Whole;
    };
    let Some((first, last)) = spec.split_once('-') else {
        return Ranged::Whole;
    };
    let number = |text: &str| {
        (!text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()))
            .then(|| text.parse::<u64>().ok())
            .flatten()
    };
    match (first.trim(), last.trim()) {
        ("", suffix) => match number(suffix) {
            None => Ranged::Whole,
            Some(0) => Ranged::Unsatisfiable,
            Some(_) if size == 0 => Ranged::Unsatisfiable,
            Some(n) => Ranged::Part(size.saturating_sub(n), size - 1),
        },
        (start, end) => {
            let Some(start) = number(start) else {
                return Ranged::Whole;
            };
            let end = match end {
                "" => u64::MAX,
                end => match number(end) {
                    Some(end) if end >= start => end,
                    _ => return Ranged::Whole,
                },
            };
            if start >= size {
                Ranged::Unsatisfiable
            } else {
                Ranged::Part(start, end.min(size - 1))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Ranged, parse_range};

    #[test]
    fn ranges_are_read_as_rfc_9110_says() {
        for (raw, size, expected) in [
            ("bytes=0-4", 11, Ranged::Part(0, 4)),
            ("bytes=5-", 11, Ranged::Part(5, 10)),
            ("bytes=-3", 11, Ranged::Part(8, 10)),
            ("bytes=-30", 11, Ranged::Part(0, 10)),
            ("bytes=4-400", 11, Ranged::Part(4, 10)),
            ("Bytes = 1-1", 11, Ranged::Part(1, 1)),
            ("bytes=11-", 11, Ranged::Unsatisfiable),
            ("bytes=20-30", 11, Ranged::Unsatisfiable),
            ("bytes=-0", 11, Ranged::Unsatisfiable),
            ("bytes=0-0", 0, Ranged::Unsatisfiable),
            ("bytes=-5", 0, Ranged::Unsatisfiable),
            ("bytes=5-2", 11, Ranged::Whole),
            ("items=0-1", 11, Ranged::Whole),
            ("bytes=abc", 11, Ranged::Whole),
            ("bytes=+1-2", 11, Ranged::Whole),
            ("bytes=0-1,3-4", 11, Ranged::Whole),
        ] {
            assert_eq!(parse_range(raw, size), expected, "{raw} of {size} bytes");
        }
    }
}

/// Removes an asset. A checkpoint that names it no longer qualifies for resume.
#[utoipa::path(delete, path = "/api/v1/sessions/{id}/assets/{name}", tag = "assets",
    params(("id" = String, Path, description = "Session id (or a project's, under /projects)"),
        ("name" = String, Path, description = "Asset name"), FenceQuery),
    responses((status = 204), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub(crate) async fn delete_asset(
    State(state): State<AppState>,
    Extension(tenant): Extension<TenantId>,
    Extension(caller): Extension<Caller>,
    AssetOwner(owner): AssetOwner,
    Path(params): Path<HashMap<String, String>>,
    Fence(fence): Fence,
) -> Result<StatusCode, ApiError> {
    let name = asset_name(&params)?;
    state
        .lifeboat
        .delete_asset(&tenant, &owner, &name, fence)
        .await?;
    let resource = format!("{}:{}/asset:{name}", owner.kind(), owner.id());
    audit(
        &state,
        &tenant,
        &caller,
        "asset.delete",
        resource,
        serde_json::Value::Null,
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}
