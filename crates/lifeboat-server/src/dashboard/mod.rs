//! The dashboard at `/` (SPEC §8 r2): server-rendered pages over the same engine calls
//! as the API, signed in with an API key (or the admin token) kept in a cookie.
//!
//! It is not part of the OpenAPI document and needs no JavaScript: every action is a form
//! that posts and redirects; one small script (`live`) only keeps the sessions list live. Templates are compiled into the binary (`include_str!`) and
//! rendered by minijinja with HTML autoescaping. Every page carries its own strict CSP;
//! every POST must come from the same origin (`same_origin`). Links are relative to the
//! request, or under `X-Forwarded-Prefix` when a proxy sends one (`base`).

mod actions;
mod auth;
mod bulk;
mod live;
mod pages;
mod projects;
mod stats;

use std::sync::LazyLock;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, HOST, ORIGIN, REFERRER_POLICY,
};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::{Next, from_fn};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use minijinja::Environment;
use minijinja::value::{Serde, Value};
use serde::Serialize;
use tower_http::set_header::SetResponseHeaderLayer;

use crate::AppState;
use crate::error::ApiError;

/// The dashboard's pages: scripts, styles and connections only from itself (no inline
/// script), forms only to itself, never framed.
const CSP: &str = "default-src 'none'; script-src 'self'; connect-src 'self'; \
                   style-src 'self'; img-src 'self' data:; \
                   form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The stylesheet, served at `/dashboard.css`.
const CSS: &str = include_str!("templates/dashboard.css");

/// Every template, parsed once; `.html` names turn autoescaping on.
static TEMPLATES: LazyLock<Environment<'static>> = LazyLock::new(|| {
    let mut env = Environment::new();
    let sources = [
        ("layout.html", include_str!("templates/layout.html")),
        ("sign_in.html", include_str!("templates/sign_in.html")),
        ("sessions.html", include_str!("templates/sessions.html")),
        ("session.html", include_str!("templates/session.html")),
        ("error.html", include_str!("templates/error.html")),
        ("projects.html", include_str!("templates/projects.html")),
        ("project.html", include_str!("templates/project.html")),
        ("diff.html", include_str!("templates/diff.html")),
        ("stats.html", include_str!("templates/stats.html")),
        ("bulk.html", include_str!("templates/bulk.html")),
    ];
    for (name, source) in sources {
        env.add_template(name, source)
            .expect("the dashboard's templates are compiled in and parse");
    }
    env
});

/// The dashboard's routes; the API's router is merged beside them.
pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(auth::home))
        .route("/sign-in", post(auth::sign_in))
        .route("/sign-out", post(auth::sign_out))
        .route("/sessions", get(pages::sessions))
        .route("/sessions/{id}", get(pages::session))
        .route("/sessions/{id}/recover", post(actions::recover))
        .route("/sessions/{id}/complete", post(actions::complete))
        .route("/sessions/{id}/cancel", post(actions::cancel))
        .route("/sessions/{id}/verify", post(actions::verify))
        .route(
            "/bulk",
            get(bulk::review)
                .post(bulk::apply)
                .layer(DefaultBodyLimit::max(bulk::BULK_BODY_MAX)),
        )
        .route("/projects", get(projects::projects))
        .route("/projects/{id}", get(projects::project))
        .route("/projects/{id}/diff", get(projects::diff))
        .route("/projects/{id}/restore", post(projects::restore))
        .route("/stats", get(stats::stats))
        .route("/dashboard.css", get(stylesheet))
        .route("/live.js", get(live::script))
        .route("/live/events", get(live::events))
        .route_layer(from_fn(same_origin))
        .layer(SetResponseHeaderLayer::overriding(
            CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        ))
        // The API's `no-referrer` would make browsers send `Origin: null` with the
        // dashboard's own forms, which `same_origin` refuses.
        .layer(SetResponseHeaderLayer::overriding(
            REFERRER_POLICY,
            HeaderValue::from_static("same-origin"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        ))
}

async fn stylesheet() -> Response {
    ([(CONTENT_TYPE, "text/css; charset=utf-8")], CSS).into_response()
}

/// Refuses a POST that a browser says came from another site (`Sec-Fetch-Site`), or whose
/// `Origin` names another host than `Host`: with `SameSite=Strict` cookies this is the
/// CSRF defence, and it holds for browsers that send either header.
async fn same_origin(request: Request, next: Next) -> Response {
    if request.method() != Method::POST || is_same_origin(request.headers()) {
        return next.run(request).await;
    }
    let base = base(request.headers(), request.uri());
    Fail::new(
        StatusCode::FORBIDDEN,
        "Refused",
        "This form was sent from another site; nothing was changed.",
    )
    .page(&base)
}

fn is_same_origin(headers: &HeaderMap) -> bool {
    let text = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    if let Some(site) = headers.get("sec-fetch-site")
        && !matches!(site.to_str(), Ok("same-origin" | "none"))
    {
        return false;
    }
    match headers.get(ORIGIN) {
        None => true,
        Some(origin) => {
            let host = origin
                .to_str()
                .ok()
                .and_then(|o| o.split_once("://"))
                .map(|(_, host)| host);
            host.is_some() && host == text(HOST)
        }
    }
}

/// Where the dashboard's links start: `X-Forwarded-Prefix` (when it is a plain path) or
/// the way up from this request's path to the root, so links work behind a proxy that
/// mounts the dashboard under a prefix. Never ends with `/`.
pub(crate) fn base(headers: &HeaderMap, uri: &Uri) -> String {
    let prefix = headers
        .get("x-forwarded-prefix")
        .and_then(|v| v.to_str().ok())
        // `//host` would make every link and redirect leave for another site.
        .filter(|p| p.starts_with('/') && !p.starts_with("//"))
        .filter(|p| {
            p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"/-._~".contains(&b))
        });
    if let Some(prefix) = prefix {
        return prefix.trim_end_matches('/').to_owned();
    }
    let depth = uri.path().matches('/').count().saturating_sub(1);
    if depth == 0 {
        ".".to_owned()
    } else {
        vec![".."; depth].join("/")
    }
}

/// Renders a template with `context` (any `Serialize`), plus `section`: which link of the
/// navigation is the current page's (empty: no navigation). A 401 page names the scheme
/// the API takes, as every 401 must (RFC 9110 §11.6.1).
fn render(template: &str, status: StatusCode, context: impl Serialize) -> Response {
    // The sign-in and error pages have none: an error page may be shown to a visitor who
    // is not signed in (a refused cross-site post).
    let section = match template {
        "sessions.html" | "session.html" | "bulk.html" => "sessions",
        "projects.html" | "project.html" | "diff.html" => "projects",
        "stats.html" => "stats",
        _ => "",
    };
    let context = minijinja::context! { section, ..Value::from(Serde(context)) };
    let rendered = TEMPLATES
        .get_template(template)
        .and_then(|t| t.render(context));
    match rendered {
        Ok(html) if status == StatusCode::UNAUTHORIZED => (
            status,
            [(
                axum::http::header::WWW_AUTHENTICATE,
                crate::error::CHALLENGE,
            )],
            Html(html),
        )
            .into_response(),
        Ok(html) => (status, Html(html)).into_response(),
        Err(error) => {
            tracing::error!(%error, template, "cannot render a dashboard page");
            (StatusCode::INTERNAL_SERVER_ERROR, "cannot render this page").into_response()
        }
    }
}

/// A page that could not be shown or an action that was refused, as a small HTML page.
#[derive(Debug)]
pub(crate) struct Fail {
    status: StatusCode,
    title: String,
    detail: String,
}

impl Fail {
    pub(crate) fn new(status: StatusCode, title: &str, detail: impl Into<String>) -> Fail {
        Fail {
            status,
            title: title.to_owned(),
            detail: detail.into(),
        }
    }

    /// `Title: detail`, for a list of outcomes.
    pub(crate) fn summary(&self) -> String {
        format!("{}: {}", self.title, self.detail)
    }

    /// The page, with links under `base`.
    pub(crate) fn page(self, base: &str) -> Response {
        #[derive(Serialize)]
        struct Context<'a> {
            base: &'a str,
            title: &'a str,
            detail: &'a str,
            status: u16,
        }
        let context = Context {
            base,
            title: &self.title,
            detail: &self.detail,
            status: self.status.as_u16(),
        };
        render("error.html", self.status, context)
    }
}

/// An engine error as the API would answer it: the same status, title and detail (a 5xx's
/// detail is already withheld and logged by `ApiError::from`).
impl From<lifeboat::Error> for Fail {
    fn from(error: lifeboat::Error) -> Fail {
        Fail::from(ApiError::from(error))
    }
}

impl From<ApiError> for Fail {
    fn from(error: ApiError) -> Fail {
        let status =
            StatusCode::from_u16(error.problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        Fail::new(status, &error.problem.title, error.problem.detail.clone())
    }
}
