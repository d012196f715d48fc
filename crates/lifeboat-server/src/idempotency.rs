//! `Idempotency-Key` on every POST, PUT and PATCH.
//!
//! The middleware reads the key, fingerprints the request (SHA-256 of method, path and
//! body) and refuses a second request with the same key while the first is in flight
//! (409). Handlers pass the key to the engine, which stores the write's outcome (the
//! domain result, not a response) inside the write's own transaction, so a retry gets
//! the original outcome even after a crash, and never a second write; the handler renders
//! it the same way both times.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use lifeboat::{IdempotencyKey, Outcome, TenantId};
use lifeboat_api::ProblemType;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::AppState;
use crate::error::ApiError;

/// The request header.
pub(crate) const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// The longest key accepted.
const KEY_LEN_MAX: usize = 255;

/// Keys of requests being processed now: `(tenant, route, key)`.
#[derive(Default)]
pub struct InFlight(Mutex<HashSet<(String, String, String)>>);

/// Removes its key from [`InFlight`] when the request is done, however it ends.
struct Claim {
    in_flight: Arc<InFlight>,
    entry: (String, String, String),
}

impl Drop for Claim {
    fn drop(&mut self) {
        if let Ok(mut keys) = self.in_flight.0.lock() {
            keys.remove(&self.entry);
        }
    }
}

/// Parses the key: an RFC 8941 string (`"…"`) or the bare form; visible ASCII, 1–255.
fn parse_key(raw: &HeaderValue) -> Result<String, ApiError> {
    let text = raw.to_str().unwrap_or_default().trim();
    let key = text
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(text);
    let valid = !key.is_empty()
        && key.len() <= KEY_LEN_MAX
        && key.bytes().all(|b| b.is_ascii_graphic() && b != b'"');
    if !valid {
        return Err(ApiError::new(
            ProblemType::MALFORMED_REQUEST,
            format!("Idempotency-Key must be 1 to {KEY_LEN_MAX} visible ASCII characters"),
        ));
    }
    Ok(key.to_owned())
}

/// Middleware on `/api/v1` (after authentication).
pub(crate) async fn track(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let writes = matches!(
        *request.method(),
        Method::POST | Method::PUT | Method::PATCH
    );
    let Some(raw) = request.headers().get(IDEMPOTENCY_KEY).filter(|_| writes) else {
        return Ok(next.run(request).await);
    };
    let key = parse_key(raw)?;
    let tenant = request
        .extensions()
        .get::<TenantId>()
        .cloned()
        .unwrap_or_default();
    let route = format!("{} {}", request.method(), request.uri().path());
    // Claimed before the body is read, so a slow upload is already "in flight".
    let entry = (tenant.as_str().to_owned(), route.clone(), key.clone());
    let fresh = state
        .in_flight
        .0
        .lock()
        .map(|mut keys| keys.insert(entry.clone()))
        .unwrap_or(false);
    if !fresh {
        return Err(ApiError::new(
            ProblemType::IDEMPOTENCY_KEY_IN_USE,
            format!("a request with Idempotency-Key {key:?} is still in flight; retry shortly"),
        ));
    }
    let _claim = Claim {
        in_flight: Arc::clone(&state.in_flight),
        entry,
    };
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, crate::BODY_BYTES_MAX)
        .await
        .map_err(|_| {
            ApiError::new(
                ProblemType::PAYLOAD_TOO_LARGE,
                format!("the body is larger than {} bytes", crate::BODY_BYTES_MAX),
            )
        })?;
    let mut hasher = Sha256::new();
    hasher.update(route.as_bytes());
    hasher.update(b"\n");
    hasher.update(&bytes);
    let fingerprint = hex::encode(hasher.finalize());
    let mut request = Request::from_parts(parts, Body::from(bytes));
    request.extensions_mut().insert(IdempotencyKey {
        route,
        key,
        fingerprint,
    });
    Ok(next.run(request).await)
}

/// A write's JSON response: status, headers, body.
pub(crate) struct Rendered {
    status: StatusCode,
    headers: Vec<(HeaderName, String)>,
    body: Vec<u8>,
}

/// A JSON response of a write.
pub(crate) fn json<T: Serialize>(
    status: StatusCode,
    headers: &[(HeaderName, String)],
    body: &T,
) -> Rendered {
    Rendered {
        status,
        headers: headers.to_vec(),
        body: serde_json::to_vec(body).unwrap_or_default(),
    }
}

/// The response of a write, the same whether it was done now or replayed.
pub(crate) fn respond<T>(outcome: Outcome<T>, render: fn(&T) -> Rendered) -> Response {
    let rendered = render(&outcome.into_inner());
    let mut response = (rendered.status, rendered.body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    for (name, value) in rendered.headers {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    }
    response
}
