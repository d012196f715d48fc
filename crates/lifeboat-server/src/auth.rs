//! Bearer-token authentication for `/api/v1`. Tokens are compared in constant time.

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::Response;
use lifeboat::TenantId;
use lifeboat_api::ProblemType;
use subtle::ConstantTimeEq;

use crate::AppState;
use crate::error::ApiError;

/// The bootstrap admin key. Its `Debug` never shows the secret.
pub struct AdminToken(String);

impl AdminToken {
    /// Wraps a token.
    pub fn new(token: String) -> AdminToken {
        AdminToken(token)
    }

    fn matches(&self, presented: &str) -> bool {
        self.0.as_bytes().ct_eq(presented.as_bytes()).into()
    }
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(..)")
    }
}

/// Admits a request with a valid bearer token and tags it with the key's tenant.
pub(crate) async fn require_token(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let presented = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let Some(presented) = presented else {
        return Err(ApiError::new(
            ProblemType::UNAUTHORIZED,
            "send Authorization: Bearer <key>",
        ));
    };
    if !state.admin_token.matches(presented) {
        return Err(ApiError::new(
            ProblemType::UNAUTHORIZED,
            "the bearer token is not valid",
        ));
    }
    request.extensions_mut().insert(TenantId::default());
    Ok(next.run(request).await)
}
