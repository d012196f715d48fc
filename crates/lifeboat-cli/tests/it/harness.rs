//! Test servers: in-process (with an injectable clock) and as the real binary.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use lifeboat::{Clock, Config, Lifeboat, ManualClock, ProjectRules, SystemClock, Timestamp};
use lifeboat_server::{AdminToken, AppState};
use serde_json::{Value, json};
use tempfile::TempDir;

pub const TOKEN: &str = "test-admin-token";

/// A server on 127.0.0.1:0 in this process, over its own data dir.
pub struct TestServer {
    pub base: String,
    pub http: reqwest::Client,
    task: tokio::task::JoinHandle<()>,
    shutdown: tokio::sync::oneshot::Sender<()>,
    pub dir: Arc<TempDir>,
}

impl TestServer {
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

    pub fn url(&self, path: &str) -> String {
        format!("{}/api/v1{path}", self.base)
    }

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

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.call("GET", path, None).await
    }

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
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
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

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

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

/// The real `lifeboat serve` binary over `data_dir`.
pub struct Binary {
    pub child: Child,
    pub base: String,
}

impl Binary {
    pub fn start(data_dir: &Path) -> Binary {
        Binary::start_with(data_dir, &[])
    }

    /// Starts the binary with extra `serve` flags.
    pub fn start_with(data_dir: &Path, flags: &[&str]) -> Binary {
        Binary::spawn(
            Command::new(env!("CARGO_BIN_EXE_lifeboat")),
            data_dir,
            flags,
        )
    }

    /// Starts the binary through a wrapper command (`fiu-run -x`, say), which must exec it
    /// in the same process.
    pub fn start_under(wrapper: &[&str], data_dir: &Path, flags: &[&str]) -> Binary {
        let mut command = Command::new(wrapper[0]);
        command
            .args(&wrapper[1..])
            .arg(env!("CARGO_BIN_EXE_lifeboat"));
        Binary::spawn(command, data_dir, flags)
    }

    /// Starts the binary set to stop dead at `failpoint` (see `lifeboat::FAILPOINT_VAR`);
    /// its stderr is kept for [`Binary::wait_for_failpoint`].
    pub fn start_at_failpoint(data_dir: &Path, flags: &[&str], failpoint: &str) -> Binary {
        let mut command = Command::new(env!("CARGO_BIN_EXE_lifeboat"));
        command
            .env(lifeboat::FAILPOINT_VAR, failpoint)
            .stderr(Stdio::piped());
        Binary::spawn(command, data_dir, flags)
    }

    /// Blocks until the process says it reached its failpoint (panics after 30 s).
    pub fn wait_for_failpoint(&mut self) {
        let stderr = self.child.stderr.take().expect("stderr is piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { return };
                if line.starts_with("failpoint ") {
                    let _ = tx.send(line);
                }
            }
        });
        rx.recv_timeout(Duration::from_secs(30))
            .expect("the failpoint is reached");
    }

    fn spawn(mut command: Command, data_dir: &Path, flags: &[&str]) -> Binary {
        let mut child = command
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(flags)
            .env("LIFEBOAT_ADMIN_TOKEN", TOKEN)
            .env("LIFEBOAT_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn lifeboat");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the listening line");
        let base = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_owned();
        Binary { child, base }
    }

    /// SIGKILL: no shutdown, no flush.
    pub fn kill_9(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reap");
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every checkpoint of a session of the server at `base`, following `next_cursor`.
pub async fn all_checkpoints(base: &str, session: &str) -> Vec<Value> {
    let http = reqwest::Client::new();
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut url = format!("{base}/api/v1/sessions/{session}/checkpoints?limit=1000");
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let page: Value = http
            .get(url)
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("list")
            .json()
            .await
            .expect("json");
        items.extend(page["items"].as_array().expect("items").iter().cloned());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return items,
        }
    }
}

/// Every file below `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(files_under(&path));
        } else {
            found.push(path);
        }
    }
    found
}
