//! Lifeboat's HTTP server: [`app`] builds the axum router over an open [`Lifeboat`].
//!
//! Handlers parse ids and bodies into domain types at the boundary, call the embeddable
//! library, and render wire types from `lifeboat-api`. Every error is rendered as RFC 9457
//! problem+json from the one table in `lifeboat_api::ProblemType` (see `error.rs`).

mod auth;
mod convert;
mod dashboard;
mod error;
mod extract;
mod idempotency;
mod routes;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, HeaderValue, Method, header};
use lifeboat::Lifeboat;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::set_header::SetResponseHeaderLayer;

pub use auth::{AdminToken, WriteLimit};
pub use error::ApiError;
pub use idempotency::InFlight;

/// The largest request body accepted: a checkpoint's `data` may be a sizeable document,
/// but anything bigger belongs in an asset.
pub const BODY_BYTES_MAX: usize = 16 * 1024 * 1024;

/// Event streams a key may hold open at once, by default.
pub const STREAMS_PER_KEY_DEFAULT: usize = 32;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// The embedded Lifeboat.
    pub lifeboat: Lifeboat,
    /// The bootstrap admin key; acts for tenant `default`.
    pub admin_token: Arc<AdminToken>,
    /// Renders `/metrics` when the host installed a Prometheus recorder.
    pub metrics: Option<PrometheusHandle>,
    /// `Idempotency-Key`s of requests in flight.
    pub in_flight: Arc<InFlight>,
    /// Becomes `true` when the server starts shutting down: long-lived responses (event
    /// streams) end, so the graceful shutdown does not wait for them forever.
    pub closing: Arc<tokio::sync::watch::Sender<bool>>,
    /// Origins browsers may call the API from (CORS); empty: none (the default).
    pub cors_origins: Vec<HeaderValue>,
    /// Writes per second per key (`None`: unlimited, the default).
    pub write_limit: Option<Arc<WriteLimit>>,
    /// Event streams each key may hold open at once.
    pub streams_per_key: usize,
    /// Event streams open now, per key.
    pub open_streams: Arc<std::sync::Mutex<std::collections::HashMap<String, usize>>>,
}

impl AppState {
    /// State over an open Lifeboat.
    pub fn new(
        lifeboat: Lifeboat,
        admin_token: AdminToken,
        metrics: Option<PrometheusHandle>,
    ) -> AppState {
        AppState {
            lifeboat,
            admin_token: Arc::new(admin_token),
            metrics,
            in_flight: Arc::default(),
            closing: Arc::new(tokio::sync::watch::Sender::new(false)),
            cors_origins: Vec::new(),
            write_limit: None,
            streams_per_key: STREAMS_PER_KEY_DEFAULT,
            open_streams: Arc::default(),
        }
    }

    /// Lets each key hold at most `limit` event streams open (429 beyond).
    pub fn with_streams_per_key(mut self, limit: usize) -> AppState {
        self.streams_per_key = limit.max(1);
        self
    }

    /// Limits each key to `per_second` writes a second, in bursts of up to `burst`
    /// (429 with `Retry-After` beyond).
    pub fn with_write_limit(mut self, per_second: u32, burst: u32) -> AppState {
        self.write_limit = Some(Arc::new(WriteLimit::new(per_second, burst)));
        self
    }

    /// Allows browsers on these origins (e.g. `https://app.example.com`) to call the API.
    /// Answers the first origin that is not a valid header value.
    pub fn with_cors_origins(mut self, origins: &[String]) -> Result<AppState, String> {
        self.cors_origins = origins
            .iter()
            .map(|origin| HeaderValue::from_str(origin).map_err(|_| origin.clone()))
            .collect::<Result<_, _>>()?;
        Ok(self)
    }
}

/// The whole HTTP API: `/api/v1/*`, `/healthz`, `/readyz`, `/metrics`, and the dashboard
/// at `/` (not in the OpenAPI document).
pub fn app(state: AppState) -> Router {
    let cors = cors(&state.cors_origins);
    let router = routes::router(state.clone())
        .merge(dashboard::router())
        .layer(DefaultBodyLimit::max(BODY_BYTES_MAX));
    let router = match cors {
        Some(cors) => router.layer(cors),
        None => router,
    };
    security_headers(router)
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            error::panic_response,
        ))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}

/// Headers that keep a browser from sniffing, framing or leaking what it is shown: no
/// response of this API is a page to render. The dashboard sets its own CSP, which these
/// layers leave in place (`if_not_present`).
const SECURITY_HEADERS: [(&str, &str); 4] = [
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "no-referrer"),
    (
        "content-security-policy",
        "default-src 'none'; frame-ancestors 'none'",
    ),
];

fn security_headers(mut router: Router<AppState>) -> Router<AppState> {
    for (name, value) in SECURITY_HEADERS {
        router = router.layer(SetResponseHeaderLayer::if_not_present(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        ));
    }
    router
}

/// How long a browser may reuse a CORS preflight answer.
const CORS_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(7_200);

/// The CORS policy for `origins`: none at all when empty (browsers then refuse
/// cross-origin calls), else those origins with the methods and headers the API uses.
fn cors(origins: &[HeaderValue]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let header = |name: &'static str| HeaderName::from_static(name);
    Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins.iter().cloned()))
            .allow_methods([
                Method::GET,
                Method::HEAD,
                Method::POST,
                Method::PUT,
                Method::PATCH,
                Method::DELETE,
            ])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                header::IF_MATCH,
                header::IF_NONE_MATCH,
                header::RANGE,
                header("idempotency-key"),
                header("last-event-id"),
                header("x-content-sha256"),
            ])
            .expose_headers([
                header::ETAG,
                header::CONTENT_RANGE,
                header::RETRY_AFTER,
                header::LOCATION,
            ])
            // Browsers cache a preflight this long (Chromium at most 2 h): a page's
            // `pagehide` save goes out without waiting for one.
            .max_age(CORS_MAX_AGE),
    )
}

/// Serves [`app`] on `listener` until `shutdown` resolves, then drains open requests.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let closing = Arc::clone(&state.closing);
    let shutdown = async move {
        shutdown.await;
        closing.send_replace(true);
    };
    axum::serve(listener, app(state))
        .with_graceful_shutdown(shutdown)
        .await
}
