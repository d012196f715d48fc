//! The domain's refusals. Each maps to one problem slug in the server's table.

/// Why the domain refused an operation. A refusal changes nothing, except where a
/// variant's documentation says otherwise.
///
/// Not `#[non_exhaustive]`, on purpose: the server maps every refusal to its problem type
/// in one exhaustive `match`, so a new refusal cannot silently get a wrong status.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// An id in a path or body does not match the id pattern.
    #[error("invalid id {0:?}: ids match ^[A-Za-z0-9][A-Za-z0-9._-]{{0,127}}$")]
    InvalidId(String),
    /// A field is well-formed JSON but its value is not allowed.
    #[error("{field}: {message}")]
    Invalid {
        /// The JSON member at fault.
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// The write names an attempt other than the session's current one (fencing).
    #[error("attempt {sent} is not the session's current attempt {current}")]
    AttemptMismatch {
        /// The attempt the request named.
        sent: u32,
        /// The session's current attempt.
        current: u32,
    },
    /// The session is not in a state the lifecycle table allows for this operation.
    #[error("session is {status}; {operation} is allowed only when it is {allowed}")]
    InvalidState {
        /// The operation that was refused.
        operation: &'static str,
        /// The session's current status.
        status: &'static str,
        /// The statuses that allow the operation.
        allowed: &'static str,
    },
    /// A heartbeat or checkpoint of the current attempt arrived after its lease expired.
    /// The session is `incomplete`; the refusal refines its crash type to `network`.
    #[error(
        "the lease of attempt {attempt} expired; the session is incomplete and must be recovered"
    )]
    LeaseExpired {
        /// The attempt whose lease expired.
        attempt: u32,
    },
    /// Recovering would exceed `max_attempts`; `confirm: true` overrides.
    #[error(
        "attempt {attempt} has reached max_attempts {max_attempts}; send \"confirm\": true to recover anyway"
    )]
    AttemptsExhausted {
        /// The session's current attempt.
        attempt: u32,
        /// The session's limit.
        max_attempts: u32,
    },
    /// The session is not recoverable (not `incomplete`, `failed` or `paused`).
    #[error(
        "session is {status} and cannot be recovered; only incomplete, failed and paused sessions can"
    )]
    NotRecoverable {
        /// The session's current status.
        status: &'static str,
    },
    /// The chosen recovery option has no valid starting point.
    #[error("{0}")]
    CannotRecover(String),
    /// The option needs `"confirm": true`.
    #[error("{0} discards saved progress and needs \"confirm\": true")]
    ConfirmationRequired(&'static str),
    /// `data_sha256` does not match the SHA-256 of the bytes of `data`.
    #[error("data_sha256 {sent} does not match the SHA-256 of data, {actual}")]
    HashMismatch {
        /// What the client sent.
        sent: String,
        /// What the bytes hash to.
        actual: String,
    },
    /// A checkpoint names an asset the session does not have.
    #[error("unknown asset {0:?}: upload or register it before naming it in a checkpoint")]
    UnknownAsset(String),
    /// A schema name or version does not match the name pattern.
    #[error(
        "invalid name {0:?}: schema names and versions match ^[A-Za-z0-9][A-Za-z0-9._-]{{0,63}}$"
    )]
    InvalidName(String),
    /// `If-Match` or `If-None-Match` does not hold. `current` is the project's revision
    /// (none when it does not exist).
    #[error("{0}")]
    PreconditionFailed(String, Option<u64>),
    /// A field is larger than its limit (nothing was stored).
    #[error("{field} is {size} bytes, over the limit of {limit}")]
    TooLarge {
        /// The JSON member at fault.
        field: &'static str,
        /// Its size, serialized.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The state would exceed `max_state_bytes`.
    #[error("the state is {size} bytes serialized, over the limit of {limit}")]
    StateTooLarge {
        /// The size the save would produce.
        size: usize,
        /// `max_state_bytes`.
        limit: usize,
    },
    /// A JSON Patch cannot be applied to the current state (a failed `test`, a missing path).
    #[error("the patch does not apply to revision {revision}: {message}")]
    PatchConflict {
        /// The revision the patch was applied to.
        revision: u64,
        /// Why it does not apply.
        message: String,
    },
    /// The save names a schema version that is not registered.
    #[error(
        "unknown schema {0:?}: register it with PUT /api/v1/schemas/{{name}}/{{version}} first"
    )]
    UnknownSchema(String),
    /// An asset name breaks the naming rules (SPEC §5).
    #[error("invalid asset name {name:?}: {why}")]
    InvalidAssetName {
        /// The name (cut short).
        name: String,
        /// Which rule it breaks.
        why: String,
    },
    /// An append's offset is neither the asset's size nor a retry of bytes already there.
    #[error("offset {offset} does not continue the asset, whose size is {current_size}")]
    OffsetMismatch {
        /// The offset the request named.
        offset: u64,
        /// The asset's size now.
        current_size: u64,
    },
    /// An external file is no longer what was registered (SPEC §5 r2): it does not resolve
    /// inside a root to a regular file of the registered size. Nothing was read.
    #[error("asset {name} changed on disk and is not served: {why}")]
    AssetChanged {
        /// The asset's name.
        name: String,
        /// What changed.
        why: String,
    },
    /// The project does not exist (or is deleted).
    #[error("project {0} not found")]
    ProjectNotFound(String),
    /// The state does not satisfy the project's schema.
    #[error("the state does not match schema {schema}: {} error(s)", errors.len())]
    SchemaViolation {
        /// `name@version`.
        schema: String,
        /// Each violation: a JSON Pointer into the state and a message.
        errors: Vec<FieldError>,
    },
    /// A schema version is immutable: it was registered with another body.
    #[error("schema {0} is already registered with a different body; register a new version")]
    SchemaConflict(String),
}

/// One validation failure: where (a JSON Pointer) and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// RFC 6901 pointer to the offending value (`""` is the whole document).
    pub path: String,
    /// What is wrong.
    pub message: String,
}
