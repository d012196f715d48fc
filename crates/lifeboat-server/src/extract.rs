//! Extractors that turn a request into parsed values or a problem: JSON bodies, queries,
//! path ids and page requests.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use lifeboat::{Id, PageRequest};
use lifeboat_api::ProblemType;
use serde::de::DeserializeOwned;
use serde_json::error::Category;

use crate::error::ApiError;

/// Default page size of every list.
const LIMIT_DEFAULT: u32 = 50;
/// Largest page size; a larger `limit` is refused, never clamped.
const LIMIT_MAX: u32 = 1000;

/// A JSON body: 415 unless `application/json`, 400 if it does not parse, 422 if it parses
/// but does not fit (unknown fields included), 413 if too large.
pub(crate) struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let is_json = request
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|mime| {
                let mime = mime.trim();
                mime.eq_ignore_ascii_case("application/json")
                    || (mime.starts_with("application/") && mime.ends_with("+json"))
            });
        if !is_json {
            return Err(ApiError::new(
                ProblemType::UNSUPPORTED_MEDIA_TYPE,
                "send the body as Content-Type: application/json",
            ));
        }
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(body_rejection)?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// A body that could not be read: too large (413) or broken (400).
pub(crate) fn body_rejection(rejection: BytesRejection) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            ProblemType::PAYLOAD_TOO_LARGE,
            format!("the body is larger than {} bytes", crate::BODY_BYTES_MAX),
        )
    } else {
        ApiError::new(ProblemType::MALFORMED_REQUEST, rejection.body_text())
    }
}

/// Parses a JSON body; an empty body is read as `{}` so that bodies with only optional
/// members may be omitted.
pub(crate) fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        bytes
    };
    serde_json::from_slice(bytes).map_err(|e| match e.classify() {
        Category::Data => ApiError::new(ProblemType::VALIDATION_FAILED, e.to_string()),
        _ => ApiError::new(
            ProblemType::MALFORMED_REQUEST,
            format!("malformed JSON: {e}"),
        ),
    })
}

/// A JSON body that may be absent altogether (pause, complete, cancel).
pub(crate) struct OptionalJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Default> FromRequest<S> for OptionalJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let has_body = request.headers().contains_key(CONTENT_TYPE)
            || request
                .headers()
                .get(axum::http::header::CONTENT_LENGTH)
                .is_some_and(|v| v != "0");
        if !has_body {
            return Ok(OptionalJson(T::default()));
        }
        JsonBody::<T>::from_request(request, state)
            .await
            .map(|JsonBody(value)| OptionalJson(value))
    }
}

/// A query string; 400 if it does not parse.
pub(crate) struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or_default();
        serde_urlencoded_from_str(query)
            .map(ApiQuery)
            .map_err(|e| ApiError::new(ProblemType::MALFORMED_REQUEST, format!("bad query: {e}")))
    }
}

fn serde_urlencoded_from_str<T: DeserializeOwned>(query: &str) -> Result<T, String> {
    axum::extract::Query::<T>::try_from_uri(
        &format!("/?{query}")
            .parse()
            .map_err(|e: axum::http::uri::InvalidUri| e.to_string())?,
    )
    .map(|q| q.0)
    .map_err(|e| e.body_text())
}

/// Parses an id from the path: 400 `invalid-id` if it does not match the pattern.
pub(crate) fn path_id(raw: &str) -> Result<Id, ApiError> {
    Id::parse(raw).map_err(|e| ApiError::new(ProblemType::INVALID_ID, e.to_string()))
}

/// Parses `limit` (1–1000, default 50, never clamped) and `cursor`.
pub(crate) fn page(limit: Option<&str>, cursor: Option<String>) -> Result<PageRequest, ApiError> {
    let limit = match limit {
        None => LIMIT_DEFAULT,
        Some(raw) => raw
            .parse::<u32>()
            .ok()
            .filter(|l| (1..=LIMIT_MAX).contains(l))
            .ok_or_else(|| {
                ApiError::new(
                    ProblemType::MALFORMED_REQUEST,
                    format!("limit must be an integer from 1 to {LIMIT_MAX}, not {raw:?}"),
                )
            })?,
    };
    Ok(PageRequest { limit, cursor })
}
