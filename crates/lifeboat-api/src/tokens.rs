//! Tokens a tenant key hands to a browser or a worker (SPEC §9 r2): a session token acts on
//! one session, a project token on one project.

use serde::{Deserialize, Serialize};

/// `POST /sessions/{id}/token`: a token for this session only, shown once.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SessionTokenBody {
    /// The session it may act on.
    pub session_id: String,
    /// The bearer token: `lbs_<id>_<secret>`. It may send this session's heartbeats,
    /// checkpoints, assets and completion, and dies when the session ends.
    pub token: String,
    /// When it was made.
    pub created_at: String,
}

/// `POST /projects/{id}/token`; every member may be left out (the body too).
#[derive(Debug, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateProjectToken {
    /// How long the token works, in ms: default a day (86,400,000), at most 30 days.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_ms: Option<u64>,
    /// `read`, `write` or both (the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Vec<String>>,
}

/// A project token, shown once: it acts only on its project — `GET`/`HEAD`/`PUT`/`PATCH`,
/// revisions and restore, its assets, its sessions' recovery and `/events?project_id=`.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProjectTokenCreated {
    /// The token's id, for `DELETE /projects/{id}/token/{token_id}`.
    pub id: String,
    /// The bearer token: `lbp_<id>_<secret>`.
    pub token: String,
    /// When it stops working.
    pub expires_at: String,
    /// The project it acts on.
    pub project_id: String,
    /// Its scopes: `read`, `write`.
    pub scopes: Vec<String>,
}
