//! The HTTP client: requests with a bearer token, RFC 9457 problems as errors, and the
//! retry policy every write uses.

use std::time::Duration;

use rand::Rng;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use reqwest::{Method, StatusCode};
use serde_json::Value;

/// Why an SDK call did not succeed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The server refused the request (an RFC 9457 problem): `slug` is its stable kind,
    /// e.g. `attempt-mismatch`.
    #[error("{status} {slug}: {detail}")]
    Problem {
        /// HTTP status.
        status: u16,
        /// The problem type's slug (the last segment of `type`).
        slug: String,
        /// What the server said.
        detail: String,
        /// For `offset-mismatch`: the asset's current size.
        current_size: Option<u64>,
    },
    /// The server could not be reached, or kept failing, until the retries ran out.
    #[error("the server is unreachable: {0}")]
    Unreachable(String),
    /// This worker no longer holds the session: it was recovered by another worker, its
    /// lease expired, or it ended. Stop working on it.
    #[error("the lease on session {0} was lost; stop working on it")]
    LeaseLost(String),
    /// The server's answer was not what the API promises.
    #[error("unexpected answer: {0}")]
    Protocol(String),
    /// The local journal could not be read or written.
    #[error("journal: {0}")]
    Journal(String),
}

impl Error {
    /// The problem slug, if the server refused.
    pub fn slug(&self) -> Option<&str> {
        match self {
            Error::Problem { slug, .. } => Some(slug),
            _ => None,
        }
    }
}

/// The SDK's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Attempts per request before giving up (about a minute of backoff in all).
const ATTEMPTS: u32 = 12;
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(8);

/// A Lifeboat server and the key to use with it — over HTTP, or embedded in this process
/// ([`Client::embedded`]) with the same API. Cloning is cheap.
#[derive(Clone)]
pub struct Client {
    transport: Transport,
    token: String,
}

#[derive(Clone)]
enum Transport {
    Http {
        http: reqwest::Client,
        base: String,
    },
    /// The server's own router, called in-process: the same rules, errors and
    /// idempotency as over HTTP, without a socket.
    #[cfg(feature = "embedded")]
    Embedded(axum::Router),
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.transport {
            Transport::Http { base, .. } => f.debug_struct("Client").field("base", base).finish(),
            #[cfg(feature = "embedded")]
            Transport::Embedded(_) => f.debug_struct("Client").field("embedded", &true).finish(),
        }
    }
}

/// A request to send, re-built for each attempt.
pub(crate) struct Call<'a> {
    pub(crate) method: Method,
    pub(crate) path: String,
    pub(crate) headers: Vec<(HeaderName, String)>,
    pub(crate) body: Option<Body<'a>>,
}

/// A request body.
pub(crate) enum Body<'a> {
    Json(&'a Value),
    MergePatch(&'a Value),
    Bytes(&'a [u8]),
}

/// A successful answer.
pub(crate) struct Answer {
    pub(crate) body: Vec<u8>,
}

impl Answer {
    pub(crate) fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_slice(&self.body).map_err(|e| Error::Protocol(e.to_string()))
    }
}

impl<'a> Call<'a> {
    pub(crate) fn new(method: Method, path: impl Into<String>) -> Call<'a> {
        Call {
            method,
            path: path.into(),
            headers: Vec::new(),
            body: None,
        }
    }

    pub(crate) fn json(mut self, body: &'a Value) -> Call<'a> {
        self.body = Some(Body::Json(body));
        self
    }

    pub(crate) fn body(mut self, body: Body<'a>) -> Call<'a> {
        self.body = Some(body);
        self
    }

    pub(crate) fn header(mut self, name: HeaderName, value: impl Into<String>) -> Call<'a> {
        self.headers.push((name, value.into()));
        self
    }

    /// Makes the call safe to retry: one fresh `Idempotency-Key` for all its attempts.
    pub(crate) fn idempotent(self) -> Call<'a> {
        self.idempotency_key(&uuid::Uuid::now_v7().to_string())
    }

    pub(crate) fn idempotency_key(self, key: &str) -> Call<'a> {
        self.header(
            HeaderName::from_static("idempotency-key"),
            format!("\"{key}\""),
        )
    }
}

/// How long to wait before attempt `attempt` (1-based): full jitter over an exponential
/// window, or what the server asked for in `Retry-After`.
pub(crate) fn backoff(attempt: u32, retry_after: Option<Duration>) -> Duration {
    if let Some(wait) = retry_after {
        return wait.min(BACKOFF_MAX * 4);
    }
    let window = BACKOFF_FIRST
        .saturating_mul(1 << attempt.min(10))
        .min(BACKOFF_MAX);
    let millis = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
    Duration::from_millis(rand::rng().random_range(millis / 2..=millis))
}

fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let seconds: u64 = headers
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(seconds))
}

/// Whether a status is worth another attempt: the server may answer differently soon.
fn transient(status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
        || status.is_server_error()
}

/// The problem in a refusal's body.
fn problem(status: StatusCode, body: &[u8]) -> Error {
    let parsed: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let text = |field: &str| parsed[field].as_str().unwrap_or_default().to_owned();
    Error::Problem {
        status: status.as_u16(),
        slug: text("type")
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_owned(),
        detail: text("detail"),
        current_size: parsed["current_size"].as_u64(),
    }
}

impl Client {
    /// A client of the server at `base_url` (e.g. `http://127.0.0.1:7433`) using `token`
    /// (an API key, or a session token for one session's work).
    pub fn new(base_url: impl Into<String>, token: impl Into<String>) -> Client {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap_or_default();
        Client::with_http_client(base_url, token, http)
    }

    /// [`Client::new`] with an HTTP client of your own (proxies, TLS roots, pooling).
    pub fn with_http_client(
        base_url: impl Into<String>,
        token: impl Into<String>,
        http: reqwest::Client,
    ) -> Client {
        Client {
            transport: Transport::Http {
                http,
                base: base_url.into().trim_end_matches('/').to_owned(),
            },
            token: token.into(),
        }
    }

    /// Lifeboat embedded in this process over the SQLite store in `data_dir`, with the
    /// same API as over HTTP: every call goes through the server's own router, without a
    /// socket. It acts for tenant `default`. Must run inside a tokio runtime.
    #[cfg(feature = "embedded")]
    pub async fn embedded(data_dir: impl AsRef<std::path::Path>) -> Result<Client> {
        let config = lifeboat::Config::new(data_dir.as_ref());
        let lifeboat = lifeboat::Lifeboat::open(config)
            .await
            .map_err(|e| Error::Unreachable(format!("cannot open the data dir: {e}")))?;
        Ok(Client::over(lifeboat))
    }

    /// A client of an already opened embedded [`lifeboat::Lifeboat`].
    #[cfg(feature = "embedded")]
    pub fn over(lifeboat: lifeboat::Lifeboat) -> Client {
        // A token that only this client ever sees: the router still authenticates.
        let token: String = (0..4)
            .map(|_| format!("{:016x}", rand::rng().random::<u64>()))
            .collect();
        let state = lifeboat_server::AppState::new(
            lifeboat,
            lifeboat_server::AdminToken::new(token.clone()),
            None,
        );
        Client {
            transport: Transport::Embedded(lifeboat_server::app(state)),
            token,
        }
    }

    /// Sends the request over the transport: status, headers and body.
    async fn exchange(
        &self,
        call: &Call<'_>,
    ) -> std::result::Result<(StatusCode, HeaderMap, Vec<u8>), Error> {
        let (content_type, body): (Option<&str>, Vec<u8>) = match &call.body {
            Some(Body::Json(value)) => (Some("application/json"), value.to_string().into_bytes()),
            Some(Body::MergePatch(value)) => (
                Some("application/merge-patch+json"),
                value.to_string().into_bytes(),
            ),
            Some(Body::Bytes(bytes)) => (Some("application/octet-stream"), bytes.to_vec()),
            None => (None, Vec::new()),
        };
        match &self.transport {
            Transport::Http { http, base } => {
                let mut request = http
                    .request(call.method.clone(), format!("{base}/api/v1{}", call.path))
                    .bearer_auth(&self.token);
                for (name, value) in &call.headers {
                    if let Ok(value) = HeaderValue::from_str(value) {
                        request = request.header(name.clone(), value);
                    }
                }
                if let Some(content_type) = content_type {
                    request = request.header("content-type", content_type).body(body);
                }
                let response = request
                    .send()
                    .await
                    .map_err(|e| Error::Unreachable(e.to_string()))?;
                let (status, headers) = (response.status(), response.headers().clone());
                let body = response
                    .bytes()
                    .await
                    .map_err(|e| Error::Unreachable(e.to_string()))?;
                Ok((status, headers, body.to_vec()))
            }
            #[cfg(feature = "embedded")]
            Transport::Embedded(router) => {
                use tower::ServiceExt;
                let mut request = axum::http::Request::builder()
                    .method(call.method.clone())
                    .uri(format!("/api/v1{}", call.path))
                    .header("authorization", format!("Bearer {}", self.token));
                for (name, value) in &call.headers {
                    request = request.header(name.clone(), value.as_str());
                }
                if let Some(content_type) = content_type {
                    request = request.header("content-type", content_type);
                }
                let request = request
                    .body(axum::body::Body::from(body))
                    .map_err(|e| Error::Protocol(e.to_string()))?;
                let response = router
                    .clone()
                    .oneshot(request)
                    .await
                    .map_err(|e| Error::Unreachable(e.to_string()))?;
                let (status, headers) = (response.status(), response.headers().clone());
                let body = axum::body::to_bytes(response.into_body(), usize::MAX)
                    .await
                    .map_err(|e| Error::Unreachable(e.to_string()))?;
                Ok((status, headers, body.to_vec()))
            }
        }
    }

    /// Sends once; `Ok` for 2xx, `Err(Some(wait))` when worth retrying, the problem otherwise.
    async fn attempt(&self, call: &Call<'_>) -> Result<Answer, (Error, Option<Option<Duration>>)> {
        let (status, headers, body) = self
            .exchange(call)
            .await
            .map_err(|error| (error, Some(None)))?;
        if status.is_success() || status == StatusCode::NOT_MODIFIED {
            return Ok(Answer { body });
        }
        let wait = transient(status).then(|| retry_after(&headers));
        Err((problem(status, &body), wait))
    }

    /// Sends `call`, retrying transient failures with backoff. Only calls that are safe
    /// to repeat (reads, and writes with an `Idempotency-Key`) go through here.
    pub(crate) async fn send(&self, call: Call<'_>) -> Result<Answer> {
        let mut tries = 0;
        loop {
            tries += 1;
            match self.attempt(&call).await {
                Ok(answer) => return Ok(answer),
                Err((error, Some(wait))) if tries < ATTEMPTS => {
                    let pause = backoff(tries, wait);
                    tracing::debug!(%error, ?pause, path = %call.path, "retrying");
                    tokio::time::sleep(pause).await;
                }
                Err((error, _)) => return Err(error),
            }
        }
    }

    /// Sends `call` once, without retries (the caller has its own schedule). A refusal
    /// comes with `Some(retry_after)` when it is worth retrying (the server's
    /// `Retry-After`, if it sent one), `None` when it is final.
    pub(crate) async fn send_once(
        &self,
        call: Call<'_>,
    ) -> Result<Answer, (Error, Option<Option<Duration>>)> {
        self.attempt(&call).await
    }
}
