//! Servers in this process, over a temp data directory, with an injectable clock.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use lifeboat::{Clock, Config, Lifeboat, ManualClock, ProjectRules, SystemClock, Timestamp};
use lifeboat_server::{AdminToken, AppState};
use serde_json::{Value, json};
use tempfile::TempDir;

use crate::TOKEN;

/// A server on 127.0.0.1:0 in this process, over its own data dir.
pub struct TestServer {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// A client with connection reuse, for requests of this server.
    pub http: reqwest::Client,
    task: tokio::task::JoinHandle<()>,
    shutdown: tokio::sync::oneshot::Sender<()>,
    /// The data directory; it outlives a stop, for a restart.
    pub dir: Arc<TempDir>,
}

impl TestServer {
    /// Starts a server over a fresh data dir, with the system clock.
    pub async fn start() -> TestServer {
        TestServer::start_in(
            Arc::new(tempfile::tempdir().expect("temp dir")),
            Arc::new(SystemClock),
        )
        .await
    }

    /// Starts (or restarts) a server over `dir` with `clock`.
    pub async fn start_in(dir: Arc<TempDir>, clock: Arc<dyn Clock>) -> TestServer {
        TestServer::start_with(dir, clock, ProjectRules::default()).await
    }

    /// Starts a server over a fresh data dir with a configuration of its own.
    pub async fn start_configured(configure: impl FnOnce(&mut Config)) -> TestServer {
        let dir = Arc::new(tempfile::tempdir().expect("temp dir"));
        let mut config = Config::new(dir.path());
        config.sweep_interval = Duration::from_millis(100);
        configure(&mut config);
        TestServer::serve(dir, config).await
    }

    /// Starts (or restarts) a server over `dir` with `config` (whose data dir is `dir`).
    pub async fn start_configured_in(dir: Arc<TempDir>, config: Config) -> TestServer {
        TestServer::serve(dir, config).await
    }

    /// Starts a server over a fresh data dir whose asset bytes are files in it, whatever
    /// `LIFEBOAT_TEST_BLOBS` says: for tests of what happens to those files.
    pub async fn start_on_disk(configure: impl FnOnce(&mut Config)) -> TestServer {
        let dir = Arc::new(tempfile::tempdir().expect("temp dir"));
        let mut config = Config::new(dir.path());
        config.sweep_interval = Duration::from_millis(100);
        configure(&mut config);
        TestServer::serve_with(dir, config, false).await
    }

    /// Starts a server with project limits and retention of its own.
    pub async fn start_with(
        dir: Arc<TempDir>,
        clock: Arc<dyn Clock>,
        projects: ProjectRules,
    ) -> TestServer {
        let mut config = Config::new(dir.path());
        config.clock = clock;
        config.projects = projects;
        config.sweep_interval = Duration::from_millis(100);
        TestServer::serve(dir, config).await
    }

    async fn serve(dir: Arc<TempDir>, config: Config) -> TestServer {
        TestServer::serve_with(dir, config, true).await
    }

    async fn serve_with(dir: Arc<TempDir>, mut config: Config, bucket: bool) -> TestServer {
        if config.database_url.is_none() {
            config.database_url = crate::postgres::database_for(dir.path()).await;
        }
        if bucket
            && config.blob_store.is_none()
            && let Some((url, options)) = crate::s3::blob_store_for(dir.path())
        {
            config.blob_store = Some(url);
            config.blob_store_options = options;
        }
        let lifeboat = Lifeboat::open(config).await.expect("open lifeboat");
        let state = AppState::new(lifeboat, AdminToken::new(TOKEN.to_owned()), None);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let (shutdown, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let stopped = async move {
                let _ = stopped.await;
            };
            let _ = lifeboat_server::serve(listener, state, stopped).await;
        });
        TestServer {
            base,
            http: reqwest::Client::new(),
            task,
            shutdown,
            dir,
        }
    }

    /// Stops serving; the data dir stays for a restart.
    /// Closes the client's connections first, so the graceful shutdown ends at once and
    /// the old instance (and its sweeper) is gone before a restart.
    pub async fn stop(self) -> Arc<TempDir> {
        drop(self.http);
        let _ = self.shutdown.send(());
        let _ = self.task.await;
        // Let the writer thread see its channel close and release the database.
        tokio::time::sleep(Duration::from_millis(50)).await;
        self.dir
    }

    /// The URL of an API path (`/sessions` → `<base>/api/v1/sessions`).
    pub fn url(&self, path: &str) -> String {
        format!("{}/api/v1{path}", self.base)
    }

    /// A JSON request as the admin: the status and the JSON body (`null` if none).
    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut request = self.http.request(method, self.url(path)).bearer_auth(TOKEN);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        let text = response.text().await.expect("body");
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// A request with headers and a body of any content type.
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<(&str, String)>,
    ) -> Reply {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut request = self.http.request(method, self.url(path)).bearer_auth(TOKEN);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some((content_type, body)) = body {
            request = request.header("content-type", content_type).body(body);
        }
        Reply::of(request.send().await.expect("request")).await
    }

    /// A request with raw bytes as its body.
    pub async fn send_bytes(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Reply {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut request = self.http.request(method, self.url(path)).bearer_auth(TOKEN);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        Reply::of(request.body(body).send().await.expect("request")).await
    }

    /// GET of raw bytes.
    pub async fn get_bytes(
        &self,
        path: &str,
        headers: &[(&str, &str)],
    ) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
        let mut request = self.http.get(self.url(path)).bearer_auth(TOKEN);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.expect("body").to_vec();
        (status, headers, bytes)
    }

    /// `GET` as the admin.
    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.call("GET", path, None).await
    }

    /// `POST` of JSON as the admin.
    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.call("POST", path, Some(body)).await
    }

    /// Creates a session and answers its body.
    pub async fn session(&self, body: Value) -> Value {
        let (status, session) = self.post("/sessions", body).await;
        assert_eq!(status, 201, "{session}");
        session
    }

    /// Writes a checkpoint and answers its seq.
    pub async fn checkpoint(&self, id: &str, body: Value) -> u64 {
        let (status, created) = self
            .post(&format!("/sessions/{id}/checkpoints"), body)
            .await;
        assert_eq!(status, 201, "{created}");
        created["seq"].as_u64().expect("seq")
    }

    /// Asserts a problem answer: status and slug.
    pub async fn expect_problem(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        status: u16,
        slug: &str,
    ) {
        let (got, problem) = self.call(method, path, body).await;
        assert_eq!(got, status, "{method} {path}: {problem}");
        assert_eq!(
            problem["type"],
            json!(format!("/problems/{slug}")),
            "{method} {path}: {problem}"
        );
        assert_eq!(problem["status"], json!(status));
    }
}

/// A response with its headers.
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// Response headers.
    pub headers: reqwest::header::HeaderMap,
    /// The JSON body (`null` if none or not JSON).
    pub body: Value,
}

impl Reply {
    async fn of(response: reqwest::Response) -> Reply {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.expect("body");
        Reply {
            status,
            headers,
            body: serde_json::from_str(&text).unwrap_or(Value::Null),
        }
    }

    /// A header's value, if present and text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The problem slug of an error answer (`""` otherwise).
    pub fn slug(&self) -> &str {
        self.body["type"]
            .as_str()
            .and_then(|t| t.strip_prefix("/problems/"))
            .unwrap_or_default()
    }
}

/// A manual clock starting now, for tests that move time.
pub fn manual_clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(SystemClock.now()))
}

/// Parses an RFC 3339 time of a response into milliseconds since the epoch.
pub fn millis(value: &Value) -> i64 {
    let text = value.as_str().expect("a time string");
    let format = time::format_description::well_known::Rfc3339;
    let at = time::OffsetDateTime::parse(text, &format).expect("RFC 3339");
    i64::try_from(at.unix_timestamp_nanos() / 1_000_000).expect("fits")
}

/// Now, as the server's system clock sees it.
pub fn now_ms() -> Timestamp {
    SystemClock.now()
}

/// A server over `dir` in this process that serves until the test ends; answers its base
/// URL. For tests that only need somewhere to send requests.
pub async fn serve_forever(dir: &Path) -> String {
    let lifeboat = Lifeboat::open(Config::new(dir)).await.expect("open");
    let state = AppState::new(lifeboat, AdminToken::new(TOKEN.to_owned()), None);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        let _ = lifeboat_server::serve(listener, state, std::future::pending::<()>()).await;
    });
    base
}

/// `GET` of an API path of the server at `base` as the admin, as JSON.
pub async fn get_json(base: &str, path: &str) -> Value {
    reqwest::Client::new()
        .get(format!("{base}/api/v1{path}"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json")
}
