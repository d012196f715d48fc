//! Errors as RFC 9457 problems. [`ApiError::from`] is the one mapping from library error
//! kinds to problem types; a 5xx hides its detail from the client and logs it instead.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use lifeboat::{DomainError, Error};
use lifeboat_api::{Problem, ProblemType};

/// What a 401 asks for (RFC 9110 §11.6.1: a 401 names the scheme it wants; RFC 6750's).
pub(crate) const CHALLENGE: HeaderValue = HeaderValue::from_static("Bearer realm=\"lifeboat\"");

/// An error on its way to becoming a problem+json response.
#[derive(Debug)]
pub struct ApiError {
    /// The body (boxed: errors travel in every `Result` of the server).
    pub problem: Box<Problem>,
    /// Headers the client needs to act on it (`ETag` with a 412, `Accept-Patch` with a 415).
    pub headers: Vec<(header::HeaderName, HeaderValue)>,
}

impl ApiError {
    /// A problem of `kind` with `detail`.
    pub fn new(kind: ProblemType, detail: impl Into<String>) -> ApiError {
        ApiError {
            problem: Box::new(Problem::new(kind, detail)),
            headers: Vec::new(),
        }
    }

    /// Adds a header to the response.
    pub fn with_header(mut self, name: header::HeaderName, value: HeaderValue) -> ApiError {
        self.headers.push((name, value));
        self
    }
}

impl From<Error> for ApiError {
    fn from(error: Error) -> ApiError {
        let kind = match &error {
            Error::Domain(domain) => match domain {
                DomainError::InvalidId(_) => ProblemType::INVALID_ID,
                DomainError::Invalid { .. } => ProblemType::VALIDATION_FAILED,
                DomainError::AttemptMismatch { .. } => ProblemType::ATTEMPT_MISMATCH,
                DomainError::InvalidState { .. } => ProblemType::SESSION_NOT_ACTIVE,
                DomainError::LeaseExpired { .. } => ProblemType::LEASE_EXPIRED,
                DomainError::AttemptsExhausted { .. } => ProblemType::ATTEMPTS_EXHAUSTED,
                DomainError::NotRecoverable { .. } => ProblemType::NOT_RECOVERABLE,
                DomainError::CannotRecover(_) => ProblemType::CANNOT_RECOVER,
                DomainError::ConfirmationRequired(_) => ProblemType::CONFIRMATION_REQUIRED,
                DomainError::HashMismatch { .. } => ProblemType::HASH_MISMATCH,
                DomainError::UnknownAsset(_) => ProblemType::UNKNOWN_ASSET,
                DomainError::InvalidName(_) => ProblemType::INVALID_ID,
                DomainError::PreconditionFailed(..) => ProblemType::PRECONDITION_FAILED,
                DomainError::StateTooLarge { .. } => ProblemType::STATE_TOO_LARGE,
                DomainError::TooLarge { .. } => ProblemType::PAYLOAD_TOO_LARGE,
                DomainError::PatchConflict { .. } => ProblemType::PATCH_CONFLICT,
                DomainError::UnknownSchema(_) => ProblemType::UNKNOWN_SCHEMA,
                DomainError::SchemaViolation { .. } => ProblemType::SCHEMA_VIOLATION,
                DomainError::SchemaConflict(_) => ProblemType::SCHEMA_CONFLICT,
                DomainError::ProjectNotFound(_) => ProblemType::NOT_FOUND,
                DomainError::InvalidAssetName { .. } => ProblemType::INVALID_ID,
                DomainError::OffsetMismatch { .. } => ProblemType::OFFSET_MISMATCH,
                DomainError::AssetChanged { .. } => ProblemType::ASSET_CHANGED,
            },
            Error::IdempotencyKeyReused(_) => ProblemType::IDEMPOTENCY_KEY_REUSED,
            Error::Forbidden(_) => ProblemType::FORBIDDEN,
            Error::TooLarge(_) => ProblemType::ASSET_TOO_LARGE,
            Error::NotFound { .. } => ProblemType::NOT_FOUND,
            Error::AlreadyExists { .. } => ProblemType::ALREADY_EXISTS,
            Error::BadCursor => ProblemType::MALFORMED_REQUEST,
            Error::InvalidArchive(_) => ProblemType::INVALID_ARCHIVE,
            Error::Unavailable(_) | Error::Contended(_) | Error::OutcomeUnknown(_) => {
                ProblemType::STORAGE_UNAVAILABLE
            }
            Error::Full(_) => ProblemType::STORAGE_FULL,
            Error::Poisoned | Error::Locked { .. } => ProblemType::STORAGE_UNAVAILABLE,
            Error::DryRun(_) | Error::Internal(_) => ProblemType::INTERNAL,
        };
        if kind.status >= 500 {
            tracing::error!(%error, "request failed");
            let detail = match (&error, kind.status) {
                (Error::OutcomeUnknown(_), _) => {
                    "the connection to the database was lost during the commit, so whether this write happened is unknown; retry with the same Idempotency-Key"
                }
                (Error::Contended(_), _) => {
                    "a concurrent write got in the way; nothing was written; retry"
                }
                (Error::Unavailable(_), _) => {
                    "storage is unavailable for the moment; nothing was written; retry"
                }
                (_, 503) => {
                    "storage is unavailable; nothing was written; retry after the server restarts"
                }
                (_, 507) => "storage is full; nothing was written",
                _ => "an internal error occurred; it has been logged",
            };
            return ApiError::new(kind, detail);
        }
        let mut api = ApiError::new(kind, error.to_string());
        match &error {
            Error::Domain(DomainError::SchemaViolation { errors, .. }) => {
                api.problem.errors = Some(
                    errors
                        .iter()
                        .map(|e| serde_json::json!({"path": e.path, "message": e.message}))
                        .collect(),
                );
            }
            Error::Domain(DomainError::OffsetMismatch { current_size, .. }) => {
                api.problem.current_size = Some(*current_size);
            }
            Error::Domain(DomainError::PreconditionFailed(_, Some(current))) => {
                if let Ok(etag) = HeaderValue::from_str(&format!("\"{current}\"")) {
                    api = api.with_header(header::ETAG, etag);
                }
            }
            _ => {}
        }
        api
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, axum::Json(&self.problem)).into_response();
        for (name, value) in self.headers {
            response.headers_mut().insert(name, value);
        }
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        }
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, CHALLENGE);
        }
        response
    }
}

/// Renders a panic in a handler as a 500 problem (the panic itself is logged).
pub(crate) fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("a request handler panicked");
    ApiError::new(
        ProblemType::INTERNAL,
        "an internal error occurred; it has been logged",
    )
    .into_response()
}
