//! RFC 9457 problem details and the one table of problem types.
//!
//! Every error the API answers is one of [`ProblemType::ALL`]; each has a page at
//! `docs/problems/<slug>.md`, and a test keeps the two in step.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A kind of error: its stable slug, HTTP status and title.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProblemType {
    /// Stable identifier; the `type` URI ends with it.
    pub slug: &'static str,
    /// HTTP status code.
    pub status: u16,
    /// Short summary, the same for every occurrence.
    pub title: &'static str,
}

macro_rules! problem_types {
    ($($name:ident = $slug:literal, $status:literal, $title:literal;)*) => {
        impl ProblemType {
            $(
                #[doc = $title]
                pub const $name: ProblemType = ProblemType { slug: $slug, status: $status, title: $title };
            )*
            /// Every problem type the API can answer.
            pub const ALL: &'static [ProblemType] = &[$(ProblemType::$name),*];
        }
    };
}

problem_types! {
    MALFORMED_REQUEST = "malformed-request", 400, "The request is malformed";
    INVALID_ID = "invalid-id", 400, "An id or name in the path is invalid";
    UNAUTHORIZED = "unauthorized", 401, "Missing or invalid bearer token";
    FORBIDDEN = "forbidden", 403, "The key may not do this";
    NOT_FOUND = "not-found", 404, "No such resource";
    METHOD_NOT_ALLOWED = "method-not-allowed", 405, "Method not allowed on this resource";
    REQUEST_TIMEOUT = "request-timeout", 408, "The request body stopped arriving";
    ALREADY_EXISTS = "already-exists", 409, "The resource already exists";
    SESSION_NOT_ACTIVE = "session-not-active", 409, "The session is not in a state that allows this";
    ATTEMPT_MISMATCH = "attempt-mismatch", 409, "The attempt is not the session's current attempt";
    LEASE_EXPIRED = "lease-expired", 409, "The lease expired; the session must be recovered";
    ATTEMPTS_EXHAUSTED = "attempts-exhausted", 409, "The session has used all its attempts";
    NOT_RECOVERABLE = "not-recoverable", 409, "The session is not recoverable";
    CANNOT_RECOVER = "cannot-recover", 409, "This recovery option has no valid starting point";
    OFFSET_MISMATCH = "offset-mismatch", 409, "The append does not start at the asset's current size";
    ASSET_CHANGED = "asset-changed", 409, "The external file changed on disk and is not served";
    PATCH_CONFLICT = "patch-conflict", 409, "The patch does not apply to the current state";
    SCHEMA_CONFLICT = "schema-conflict", 409, "This schema version is registered with another body";
    IDEMPOTENCY_KEY_IN_USE = "idempotency-key-in-use", 409, "A request with this Idempotency-Key is still in flight";
    PRECONDITION_FAILED = "precondition-failed", 412, "A precondition (If-Match, If-None-Match) does not hold";
    PAYLOAD_TOO_LARGE = "payload-too-large", 413, "The request body is too large";
    ASSET_TOO_LARGE = "asset-too-large", 413, "The asset is over the upload size limit";
    STATE_TOO_LARGE = "state-too-large", 413, "The project state is over max_state_bytes";
    UNSUPPORTED_MEDIA_TYPE = "unsupported-media-type", 415, "Unsupported content type";
    RANGE_NOT_SATISFIABLE = "range-not-satisfiable", 416, "The requested range starts past the end of the bytes";
    VALIDATION_FAILED = "validation-failed", 422, "The request is well-formed but invalid";
    CONFIRMATION_REQUIRED = "confirmation-required", 422, "This action needs \"confirm\": true";
    HASH_MISMATCH = "hash-mismatch", 422, "The data does not match the given SHA-256";
    UNKNOWN_ASSET = "unknown-asset", 422, "The checkpoint names an asset that does not exist";
    UNKNOWN_SCHEMA = "unknown-schema", 422, "The save names a schema that is not registered";
    SCHEMA_VIOLATION = "schema-violation", 422, "The state does not match the project's schema";
    IDEMPOTENCY_KEY_REUSED = "idempotency-key-reused", 422, "The Idempotency-Key was used with a different request";
    INVALID_ARCHIVE = "invalid-archive", 422, "The archive is damaged, truncated or not a Lifeboat export";
    RATE_LIMITED = "rate-limited", 429, "Too many writes with this key; retry after a moment";
    INTERNAL = "internal", 500, "Internal server error";
    STORAGE_UNAVAILABLE = "storage-unavailable", 503, "Storage is unavailable";
    STORAGE_FULL = "storage-full", 507, "Storage is full";
}

/// An RFC 9457 `application/problem+json` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Problem {
    /// A URI reference ending in the stable slug, e.g. `/problems/session-not-active`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Summary of the problem type.
    pub title: String,
    /// HTTP status code.
    pub status: u16,
    /// What went wrong this time.
    pub detail: String,
    /// Validation errors: `[{path, message}]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<Value>>,
    /// With `offset-mismatch`: the asset's size now, where the next append must start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current_size: Option<u64>,
}

impl Problem {
    /// A problem of `kind` with `detail`.
    pub fn new(kind: ProblemType, detail: impl Into<String>) -> Problem {
        Problem {
            kind: format!("/problems/{}", kind.slug),
            title: kind.title.to_owned(),
            status: kind.status,
            detail: detail.into(),
            errors: None,
            current_size: None,
        }
    }

    /// The slug at the end of `type`.
    pub fn slug(&self) -> &str {
        self.kind.rsplit('/').next().unwrap_or_default()
    }
}
