//! Bearer-token authentication for `/api/v1`. Tokens are compared in constant time.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::Method;
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::Response;
use lifeboat::{
    API_KEY_PREFIX, Id, PROJECT_TOKEN_PREFIX, ProjectToken, SESSION_TOKEN_PREFIX, TenantId,
    split_token,
};
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
    /// The key id, or `bootstrap`: the actor in the audit trail.
    pub(crate) actor: String,
    pub(crate) bootstrap: bool,
    pub(crate) scopes: Vec<String>,
    /// For a session token: the attempt it was made for (SPEC §9 r2). Its writes act for
    /// that attempt only.
    pub(crate) attempt: Option<u32>,
    /// For a project token: the one project it acts on. Lists it may read (`/recovery`)
    /// show only that project's sessions.
    pub(crate) project: Option<Id>,
    /// What authenticated it, for an answer that lasts (an event stream) to check again.
    pub(crate) credential: Credential,
}

/// What authenticated a caller.
#[derive(Debug, Clone)]
pub(crate) enum Credential {
    Bootstrap,
    Key(String),
    SessionToken,
    ProjectToken(String),
}

impl Credential {
    /// Whether it still works: a revoked key, or a revoked or expired project token, no
    /// longer does. (A session token cannot open an event stream.)
    pub(crate) async fn still_valid(
        &self,
        lifeboat: &lifeboat::Lifeboat,
    ) -> lifeboat::Result<bool> {
        match self {
            Credential::Bootstrap | Credential::SessionToken => Ok(true),
            Credential::Key(id) => lifeboat.key_live(id).await,
            Credential::ProjectToken(id) => lifeboat.project_token_live(id).await,
        }
    }
}

impl Caller {
    /// Whether the caller holds `scope` (`admin` holds every scope).
    pub(crate) fn may(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope || s == "admin")
    }

    /// The attempt a session write is fenced by: what the request names, and for a
    /// session token the token's attempt (a request naming another is 409 at once).
    pub(crate) fn fence(&self, sent: Option<u32>) -> Result<Option<u32>, ApiError> {
        match (self.attempt, sent) {
            (Some(token), Some(sent)) if sent != token => Err(ApiError::new(
                ProblemType::ATTEMPT_MISMATCH,
                format!("this session token acts for attempt {token} only, not {sent}"),
            )),
            (Some(token), _) => Ok(Some(token)),
            (None, sent) => Ok(sent),
        }
    }
}

/// What a session token may do: on its own session, read it, heartbeat, write and read
/// checkpoints, complete or fail it, and use its assets.
fn session_token_may(method: &Method, path: &str, session: &str) -> bool {
    let Some(rest) = path
        .strip_prefix("/api/v1/sessions/")
        .and_then(|rest| rest.strip_prefix(session))
    else {
        return false;
    };
    let read = matches!(*method, Method::GET | Method::HEAD);
    match rest {
        "" => read,
        "/heartbeat" | "/complete" | "/fail" => *method == Method::POST,
        "/checkpoints" => read || *method == Method::POST,
        _ => {
            rest.starts_with("/checkpoints/") && read
                || rest == "/assets"
                || rest.starts_with("/assets/") && rest != "/assets/register"
        }
    }
}

/// What a project token may reach with a request, judged by its path alone.
enum ProjectAccess {
    Yes,
    No,
    /// Only if this session belongs to the token's project (its recovery and recover).
    IfSessionOfProject(String),
    /// Only if this session belongs to the token's project and is not `active`: the
    /// recovery prompt's Discard (cancel) of a session that stopped, never of live work.
    IfStoppedSessionOfProject(String),
}

/// What a project token may do (SPEC §9 r2): on its own project `GET`/`HEAD`/`PUT`/`PATCH`,
/// its revisions and restore, its assets (not registering external files); `/recovery`
/// (which then lists only its sessions), its sessions' recovery and `/events` of its
/// project.
fn project_token_may(method: &Method, path: &str, query: &str, project: &str) -> ProjectAccess {
    let read = matches!(*method, Method::GET | Method::HEAD);
    let post = *method == Method::POST;
    let Some(path) = path.strip_prefix("/api/v1") else {
        return ProjectAccess::No;
    };
    let allowed = if let Some(rest) = path
        .strip_prefix("/projects/")
        .and_then(|rest| rest.strip_prefix(project))
    {
        match rest {
            "" => read || matches!(*method, Method::PUT | Method::PATCH),
            "/revisions" | "/assets" => read,
            "/restore" => post,
            _ => rest.starts_with("/assets/") && rest != "/assets/register",
        }
    } else if path == "/recovery" {
        read
    } else if path == "/events" {
        let mut named = query
            .split('&')
            .filter_map(|pair| pair.strip_prefix("project_id="))
            .peekable();
        read && named.peek().is_some() && named.all(|named| named == project)
    } else if let Some(rest) = path.strip_prefix("/sessions/") {
        return match rest.split_once('/') {
            Some((session, "recovery")) if read => {
                ProjectAccess::IfSessionOfProject(session.to_owned())
            }
            Some((session, "recover")) if post => {
                ProjectAccess::IfSessionOfProject(session.to_owned())
            }
            Some((session, "cancel")) if post => {
                ProjectAccess::IfStoppedSessionOfProject(session.to_owned())
            }
            _ => ProjectAccess::No,
        };
    } else {
        false
    };
    if allowed {
        ProjectAccess::Yes
    } else {
        ProjectAccess::No
    }
}

/// Whether a project token's request is within its project: by path, and for a session's
/// recovery by the session's project (a session that does not exist is refused the same
/// way, so the token learns nothing of sessions outside its project).
async fn project_request_allowed(
    state: &AppState,
    token: &ProjectToken,
    access: ProjectAccess,
) -> Result<bool, ApiError> {
    Ok(match access {
        ProjectAccess::Yes => true,
        ProjectAccess::No => false,
        ProjectAccess::IfSessionOfProject(session) => {
            of_project(state, token, &session, true).await?
        }
        ProjectAccess::IfStoppedSessionOfProject(session) => {
            of_project(state, token, &session, false).await?
        }
    })
}

/// Whether session `session` (as observed now) belongs to the token's project, and, unless
/// `active_too`, has stopped.
async fn of_project(
    state: &AppState,
    token: &ProjectToken,
    session: &str,
    active_too: bool,
) -> Result<bool, ApiError> {
    Ok(match Id::parse(session) {
        Ok(session) => match state.lifeboat.session(&token.tenant, &session).await {
            Ok(found) => {
                found.project_id.as_ref() == Some(&token.project_id)
                    && (active_too || found.status != lifeboat::Status::Active)
            }
            Err(lifeboat::Error::NotFound { .. }) => false,
            Err(other) => return Err(other.into()),
        },
        Err(_) => false,
    })
}

/// The key a rate limit counts against: the id of an API key, or the bootstrap key.
fn caller_key(presented: &str) -> String {
    if let Some((id, _)) = split_token(presented, SESSION_TOKEN_PREFIX) {
        return format!("session-token:{id}");
    }
    if let Some((id, _)) = split_token(presented, PROJECT_TOKEN_PREFIX) {
        return format!("project-token:{id}");
    }
    split_token(presented, API_KEY_PREFIX)
        .map_or_else(|| "bootstrap".to_owned(), |(id, _)| id.to_owned())
}

/// Token buckets kept before full ones are dropped: a bucket that has refilled is the same
/// as a new one, so dropping it changes no answer and keeps memory bounded by active keys.
const BUCKETS_MAX: usize = 10_000;

/// A token bucket per key for writes: `per_second` tokens a second, up to `burst`.
#[derive(Debug)]
pub struct WriteLimit {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl WriteLimit {
    /// `per_second` writes a second per key, in bursts of up to `burst`.
    pub fn new(per_second: u32, burst: u32) -> WriteLimit {
        WriteLimit {
            per_second: f64::from(per_second.max(1)),
            burst: f64::from(burst.max(1)),
            buckets: Mutex::default(),
        }
    }

    /// Takes a token for `key`, or answers how long until one is there.
    pub(crate) fn take(&self, key: String) -> Result<(), Duration> {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() >= BUCKETS_MAX {
            let (rate, burst) = (self.per_second, self.burst);
            buckets.retain(|_, (tokens, at)| {
                *tokens + now.duration_since(*at).as_secs_f64() * rate < burst
            });
        }
        let (tokens, at) = buckets.entry(key).or_insert((self.burst, now));
        *tokens =
            (*tokens + now.duration_since(*at).as_secs_f64() * self.per_second).min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - *tokens) / self.per_second))
        }
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
    let (tenant, caller) = if presented.starts_with(SESSION_TOKEN_PREFIX) {
        let Some(token) = state
            .lifeboat
            .authenticate_session_token(&presented)
            .await?
        else {
            return Err(ApiError::new(
                ProblemType::UNAUTHORIZED,
                "the session token is not valid, or its session has ended",
            ));
        };
        if !session_token_may(
            request.method(),
            request.uri().path(),
            token.session_id.as_str(),
        ) {
            return Err(ApiError::new(
                ProblemType::FORBIDDEN,
                "a session token may only send its session's heartbeats, checkpoints, assets and completion",
            ));
        }
        let caller = Caller {
            actor: format!("session-token:{}", token.id),
            bootstrap: false,
            scopes: vec!["read".to_owned(), "write".to_owned()],
            attempt: Some(token.attempt),
            project: None,
            credential: Credential::SessionToken,
        };
        (token.tenant, caller)
    } else if presented.starts_with(PROJECT_TOKEN_PREFIX) {
        let Some(token) = state
            .lifeboat
            .authenticate_project_token(&presented)
            .await?
        else {
            return Err(ApiError::new(
                ProblemType::UNAUTHORIZED,
                "the project token is not valid: unknown, revoked or expired",
            ));
        };
        let access = project_token_may(
            request.method(),
            request.uri().path(),
            request.uri().query().unwrap_or_default(),
            token.project_id.as_str(),
        );
        if !project_request_allowed(&state, &token, access).await? {
            return Err(ApiError::new(
                ProblemType::FORBIDDEN,
                "a project token may only read and save its project, its revisions and assets, \
                 its sessions' recovery and its events (/events?project_id=)",
            ));
        }
        let caller = Caller {
            actor: format!("project-token:{}", token.id),
            bootstrap: false,
            scopes: token.scopes,
            attempt: None,
            project: Some(token.project_id),
            credential: Credential::ProjectToken(token.id),
        };
        (token.tenant, caller)
    } else {
        let Some(found) = key_caller(&state, &presented).await? else {
            return Err(ApiError::new(
                ProblemType::UNAUTHORIZED,
                "the bearer token is not a valid key (unknown, revoked or mistyped)",
            ));
        };
        found
    };
    if let Some(limit) = &state.write_limit
        && !matches!(*request.method(), Method::GET | Method::HEAD)
        && let Err(wait) = limit.take(caller_key(&presented))
    {
        let seconds = wait.as_secs_f64().ceil().max(1.0) as u64;
        return Err(ApiError::new(
            ProblemType::RATE_LIMITED,
            format!(
                "this key may write {} times a second; retry in {seconds} s",
                limit.per_second
            ),
        )
        .with_header(
            axum::http::header::RETRY_AFTER,
            axum::http::HeaderValue::from(seconds),
        ));
    }
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

/// The tenant and caller of the bootstrap admin key or a live API key; `None` for anything
/// else (unknown, revoked, mistyped), session and project tokens included. The one rule for
/// keys, used by the API's bearer check and the dashboard's sign-in and cookie.
pub(crate) async fn key_caller(
    state: &AppState,
    presented: &str,
) -> Result<Option<(TenantId, Caller)>, ApiError> {
    if presented.starts_with(SESSION_TOKEN_PREFIX) || presented.starts_with(PROJECT_TOKEN_PREFIX) {
        return Ok(None);
    }
    if state.admin_token.matches(presented) {
        let caller = Caller {
            actor: "bootstrap".to_owned(),
            bootstrap: true,
            scopes: vec!["admin".to_owned()],
            attempt: None,
            project: None,
            credential: Credential::Bootstrap,
        };
        return Ok(Some((TenantId::default(), caller)));
    }
    Ok(state.lifeboat.authenticate(presented).await?.map(|key| {
        let caller = Caller {
            credential: Credential::Key(key.id.clone()),
            actor: key.id,
            bootstrap: false,
            scopes: key.scopes,
            attempt: None,
            project: None,
        };
        (key.tenant, caller)
    }))
}

/// Records an audited action that succeeded. The action already committed, so a failure
/// to record it is logged, not answered.
pub(crate) async fn audit(
    state: &AppState,
    tenant: &TenantId,
    caller: &Caller,
    action: &str,
    resource: String,
    detail: serde_json::Value,
) {
    if let Err(error) = state
        .lifeboat
        .audit(tenant, &caller.actor, action, &resource, detail)
        .await
    {
        tracing::error!(%error, action, resource, "cannot record an audit entry");
    }
}
