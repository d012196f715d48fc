//! Bearer-token authentication for `/api/v1`. Tokens are compared in constant time.

use axum::extract::{Request, State};
use axum::http::Method;
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

/// Who is calling: the tenant the key acts for, its scopes, and whether it is the
/// bootstrap admin key (which may act across tenants: create keys for any tenant, see
/// every key, verify the whole store).
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    pub(crate) bootstrap: bool,
    pub(crate) scopes: Vec<String>,
}

impl Caller {
    fn may(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope || s == "admin")
    }
}

/// The scope a request needs: `admin` for `/keys`, `/admin/*` and `/audit`, `read` for
/// every GET, `write` for the rest.
fn required_scope(method: &Method, path: &str) -> &'static str {
    let path = path.trim_start_matches("/api/v1");
    if path.starts_with("/keys") || path.starts_with("/admin/") || path.starts_with("/audit") {
        "admin"
    } else if matches!(*method, Method::GET | Method::HEAD) {
        "read"
    } else {
        "write"
    }
}

/// Admits a request with a valid bearer token and the scope it needs, and tags it with
/// the key's tenant. 401 without a valid key, 403 without the scope.
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
        .map(str::trim)
        .map(str::to_owned);
    let Some(presented) = presented else {
        return Err(ApiError::new(
            ProblemType::UNAUTHORIZED,
            "send Authorization: Bearer <key>",
        ));
    };
    let (tenant, caller) = if state.admin_token.matches(&presented) {
        let caller = Caller {
            bootstrap: true,
            scopes: vec!["admin".to_owned()],
        };
        (TenantId::default(), caller)
    } else {
        match state.lifeboat.authenticate(&presented).await? {
            Some(key) => {
                let caller = Caller {
                    bootstrap: false,
                    scopes: key.scopes,
                };
                (key.tenant, caller)
            }
            None => {
                return Err(ApiError::new(
                    ProblemType::UNAUTHORIZED,
                    "the bearer token is not a valid key (unknown, revoked or mistyped)",
                ));
            }
        }
    };
    let scope = required_scope(request.method(), request.uri().path());
    if !caller.may(scope) {
        return Err(ApiError::new(
            ProblemType::FORBIDDEN,
            format!("this key lacks the {scope} scope"),
        ));
    }
    request.extensions_mut().insert(tenant);
    request.extensions_mut().insert(caller);
    Ok(next.run(request).await)
}
