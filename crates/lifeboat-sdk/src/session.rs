//! Sessions from a worker's side: start or resume, heartbeat in the background,
//! checkpoint, finish — and stop as soon as the lease is lost.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use lifeboat_api::{CheckpointBody, CheckpointCreated, Recovered, RecoveryBody, SessionBody};
use reqwest::Method;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::client::{Body, Call, Client, Error, Result};

/// How a crashed session continues (SPEC §2 "recover").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecoveryOption {
    /// From the newest checkpoint that verifies.
    Continue,
    /// From the start of the current batch or stage.
    RestartBatch,
    /// From nothing (the session's checkpoints stay as evidence).
    FreshStart,
}

impl RecoveryOption {
    fn as_str(self) -> &'static str {
        match self {
            RecoveryOption::Continue => "continue",
            RecoveryOption::RestartBatch => "restart_batch",
            RecoveryOption::FreshStart => "fresh_start",
        }
    }
}

/// A session to create: `kind` and whatever else `POST /sessions` takes.
#[derive(Debug, Clone)]
pub struct NewSession {
    body: serde_json::Map<String, Value>,
}

impl NewSession {
    /// A session of this kind (`render`, `recording`, …).
    pub fn new(kind: &str) -> NewSession {
        let mut body = serde_json::Map::new();
        body.insert("kind".to_owned(), json!(kind));
        NewSession { body }
    }

    fn set(mut self, field: &str, value: Value) -> NewSession {
        self.body.insert(field.to_owned(), value);
        self
    }

    /// Its id (the server makes one if none is given; resuming needs one).
    pub fn id(self, id: &str) -> NewSession {
        self.set("id", json!(id))
    }

    /// The project it works for.
    pub fn project_id(self, id: &str) -> NewSession {
        self.set("project_id", json!(id))
    }

    /// A label for people.
    pub fn title(self, title: &str) -> NewSession {
        self.set("title", json!(title))
    }

    /// How long without a heartbeat before it counts as crashed (default 30 s).
    pub fn heartbeat_timeout_ms(self, ms: u64) -> NewSession {
        self.set("heartbeat_timeout_ms", json!(ms))
    }

    /// The total units of work, for progress and work-lost figures.
    pub fn total_units(self, units: u64) -> NewSession {
        self.set("total_units", json!(units))
    }

    /// Any other `POST /sessions` field (`stall_timeout_ms`, `max_attempts`, `metadata`, …).
    pub fn field(self, name: &str, value: Value) -> NewSession {
        self.set(name, value)
    }

    fn id_str(&self) -> Option<&str> {
        self.body.get("id").and_then(Value::as_str)
    }
}

/// A checkpoint to write: its kind and data, and optionally where the work stands.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    body: serde_json::Map<String, Value>,
}

impl Checkpoint {
    fn of(kind: &str, data: &impl Serialize) -> Result<Checkpoint> {
        let data = serde_json::to_value(data).map_err(|e| Error::Protocol(e.to_string()))?;
        let mut body = serde_json::Map::new();
        body.insert("kind".to_owned(), json!(kind));
        body.insert("data".to_owned(), data);
        Ok(Checkpoint { body })
    }

    /// A checkpoint after an item (kept within the session's retention).
    pub fn item(data: &impl Serialize) -> Result<Checkpoint> {
        Checkpoint::of("item", data)
    }

    /// A checkpoint at the end of a batch: where `restart_batch` restarts.
    pub fn batch(data: &impl Serialize) -> Result<Checkpoint> {
        Checkpoint::of("batch", data)
    }

    /// A checkpoint at the end of a named stage (kept for the session's life).
    pub fn stage(stage: &str, data: &impl Serialize) -> Result<Checkpoint> {
        let mut checkpoint = Checkpoint::of("stage", data)?;
        checkpoint.body.insert("stage".to_owned(), json!(stage));
        Ok(checkpoint)
    }

    /// Units of work finished at this point.
    pub fn completed_units(mut self, units: u64) -> Checkpoint {
        self.body.insert("completed_units".to_owned(), json!(units));
        self
    }

    /// Where in the input the work stands (a cursor, an offset…).
    pub fn position(mut self, position: Value) -> Checkpoint {
        self.body.insert("position".to_owned(), position);
        self
    }

    /// Assets this checkpoint needs. The server pins their versions as they are when the
    /// checkpoint is written (later writes to the names do not change what it refers to,
    /// [`SessionHandle::pinned_asset`] reads them back), and a recovery offers the
    /// checkpoint only while those bytes are intact.
    pub fn assets(mut self, names: &[&str]) -> Checkpoint {
        self.body.insert("assets".to_owned(), json!(names));
        self
    }
}

/// What [`Client::resume_or_start`] found.
// Made once per run and matched at once: boxing the checkpoint would only cost readers.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Resumed {
    /// There was no such session: it is started, at attempt 1.
    Started(SessionHandle),
    /// It had crashed (or was paused or failed): it is recovered with the option asked
    /// for, at a new attempt. `resume_from` is the checkpoint to continue from (`None`:
    /// from the beginning); `assessment` is what the server offered (confidence, work lost,
    /// the options).
    Recovered {
        /// The session, heartbeating.
        session: SessionHandle,
        /// Where to continue.
        resume_from: Option<CheckpointBody>,
        /// The recovery assessment before recovering.
        assessment: Box<RecoveryBody>,
    },
    /// It is already completed or cancelled: nothing to do.
    Finished(Box<SessionBody>),
}

struct Shared {
    client: Client,
    id: String,
    attempt: u32,
    progress: Mutex<Value>,
    lost: watch::Sender<bool>,
}

/// A session this worker holds. It heartbeats every `heartbeat_timeout / 4` in the
/// background (a failed heartbeat is simply sent again at the next tick, always with the
/// latest progress) until it is completed, failed or dropped. When the server fences
/// this worker (409: another attempt took over, or the lease ran out), every call answers
/// [`Error::LeaseLost`] and [`SessionHandle::lease_lost`] resolves: stop working.
///
/// ```no_run
/// use lifeboat_sdk::{Checkpoint, Client, NewSession};
/// use serde_json::json;
///
/// # async fn run() -> Result<(), lifeboat_sdk::Error> {
/// let client = Client::new("http://127.0.0.1:7433", "lb_…");
/// let session = client.start_session(NewSession::new("render").heartbeat_timeout_ms(10_000)).await?;
/// for stage in ["script", "tts", "images"] {
///     tokio::select! {
///         () = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
///         () = session.lease_lost() => return Ok(()), // another worker has it now
///     }
///     session.checkpoint(Checkpoint::stage(stage, &json!({"done": stage}))?).await?;
/// }
/// session.complete().await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct SessionHandle {
    shared: Arc<Shared>,
    heartbeat: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.id)
            .field("attempt", &self.attempt)
            .finish()
    }
}

/// Fencing refusals: this worker's attempt no longer owns the session.
fn fenced(error: &Error) -> bool {
    matches!(
        error.slug(),
        Some("attempt-mismatch" | "lease-expired" | "session-not-active")
    )
}

impl SessionHandle {
    fn start(client: &Client, session: &SessionBody) -> SessionHandle {
        let (lost, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            client: client.clone(),
            id: session.id.clone(),
            attempt: session.attempt,
            progress: Mutex::new(Value::Null),
            lost,
        });
        let every = Duration::from_millis((session.heartbeat_timeout_ms / 4).max(50));
        let heartbeat = tokio::spawn(heartbeat_loop(Arc::downgrade(&shared), every));
        SessionHandle { shared, heartbeat }
    }

    /// The session id.
    pub fn id(&self) -> &str {
        &self.shared.id
    }

    /// The attempt this worker holds (every write names it).
    pub fn attempt(&self) -> u32 {
        self.shared.attempt
    }

    /// Whether the server has fenced this worker.
    pub fn is_lease_lost(&self) -> bool {
        *self.shared.lost.borrow()
    }

    /// Resolves when the server fences this worker: another worker recovered the session,
    /// or its lease ran out. Select on it next to the work.
    pub async fn lease_lost(&self) {
        let mut lost = self.shared.lost.subscribe();
        let _ = lost.wait_for(|lost| *lost).await;
    }

    /// The progress the next heartbeat reports.
    pub fn set_progress(&self, completed_units: u64, stage: Option<&str>) {
        let mut progress = json!({"completed_units": completed_units});
        if let Some(stage) = stage {
            progress["stage"] = json!(stage);
        }
        if let Ok(mut current) = self.shared.progress.lock() {
            *current = progress;
        }
    }

    fn lose(&self, error: Error) -> Error {
        if fenced(&error) {
            self.shared.lost.send_replace(true);
            return Error::LeaseLost(self.shared.id.clone());
        }
        error
    }

    fn path(&self, rest: &str) -> String {
        format!("/sessions/{}{rest}", self.shared.id)
    }

    /// Writes a checkpoint (it is also a heartbeat); answers its `seq`. Retried safely.
    pub async fn checkpoint(&self, checkpoint: Checkpoint) -> Result<u64> {
        if self.is_lease_lost() {
            return Err(Error::LeaseLost(self.shared.id.clone()));
        }
        let mut body = checkpoint.body;
        body.insert("attempt".to_owned(), json!(self.shared.attempt));
        let body = Value::Object(body);
        let answer = self
            .shared
            .client
            .send(
                Call::new(Method::POST, self.path("/checkpoints"))
                    .json(&body)
                    .idempotent(),
            )
            .await
            .map_err(|e| self.lose(e))?;
        Ok(answer.json::<CheckpointCreated>()?.seq)
    }

    /// Checkpoints when `completed` is a multiple of `every` ("an item checkpoint every 10
    /// items"); answers the `seq` if it wrote one.
    pub async fn checkpoint_every(
        &self,
        every: u64,
        completed: u64,
        checkpoint: impl FnOnce() -> Result<Checkpoint>,
    ) -> Result<Option<u64>> {
        if every == 0 || !completed.is_multiple_of(every) {
            return Ok(None);
        }
        let checkpoint = checkpoint()?.completed_units(completed);
        self.checkpoint(checkpoint).await.map(Some)
    }

    /// Completes the session; the heartbeat stops.
    pub async fn complete(self) -> Result<()> {
        let body = json!({"attempt": self.shared.attempt});
        self.shared
            .client
            .send(
                Call::new(Method::POST, self.path("/complete"))
                    .json(&body)
                    .idempotent(),
            )
            .await
            .map_err(|e| self.lose(e))?;
        Ok(())
    }

    /// Fails the session with `error` (recorded as its crash); the heartbeat stops.
    pub async fn fail(self, error: &str) -> Result<()> {
        let body = json!({"attempt": self.shared.attempt, "error": error});
        self.shared
            .client
            .send(
                Call::new(Method::POST, self.path("/fail"))
                    .json(&body)
                    .idempotent(),
            )
            .await
            .map_err(|e| self.lose(e))?;
        Ok(())
    }

    /// Uploads a whole asset (replacing one of that name), fenced by this attempt: once
    /// the session is recovered by another worker it answers [`Error::LeaseLost`].
    pub async fn upload(&self, name: &str, bytes: &[u8]) -> Result<Value> {
        let path = self.path(&format!("/assets/{name}?attempt={}", self.shared.attempt));
        let answer = self
            .shared
            .client
            .send(Call::new(Method::PUT, path).body(Body::Bytes(bytes)))
            .await
            .map_err(|e| self.lose(e))?;
        answer.json()
    }

    /// The bytes of asset `name` as checkpoint `seq` pinned them: what a resumed worker
    /// continues from, whatever was written to that name since.
    pub async fn pinned_asset(&self, seq: u64, name: &str) -> Result<Vec<u8>> {
        let path = self.path(&format!("/checkpoints/{seq}/assets/{name}"));
        let answer = self
            .shared
            .client
            .send(Call::new(Method::GET, path))
            .await?;
        Ok(answer.body)
    }

    /// The size of an asset so far (0 if it does not exist yet): where appends resume.
    pub async fn asset_size(&self, name: &str) -> Result<u64> {
        let mut cursor: Option<String> = None;
        loop {
            let mut path = self.path("/assets?limit=1000");
            if let Some(cursor) = &cursor {
                path.push_str(&format!("&cursor={cursor}"));
            }
            let list: Value = self
                .shared
                .client
                .send(Call::new(Method::GET, path))
                .await?
                .json()?;
            let found = list["items"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|a| a["name"] == json!(name));
            if let Some(asset) = found {
                return Ok(asset["size"].as_u64().unwrap_or(0));
            }
            match list["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => return Ok(0),
            }
        }
    }

    /// Appends `bytes` at `offset` of an appendable asset, fenced by this attempt;
    /// answers its new size. A retry whose first try already landed is answered 200 by
    /// the server (the bytes are there, byte for byte), so a 409 `offset-mismatch` always
    /// means the stored bytes differ: it is returned, never taken for success.
    pub async fn append(&self, name: &str, offset: u64, bytes: &[u8]) -> Result<u64> {
        let attempt = self.shared.attempt;
        let path = self.path(&format!("/assets/{name}?offset={offset}&attempt={attempt}"));
        let answer = self
            .shared
            .client
            .send(Call::new(Method::POST, path).body(Body::Bytes(bytes)))
            .await
            .map_err(|e| self.lose(e))?;
        answer.json::<Value>()?["size"]
            .as_u64()
            .ok_or_else(|| Error::Protocol("an append answer without `size`".to_owned()))
    }
}

impl Drop for SessionHandle {
    fn drop(&mut self) {
        self.heartbeat.abort();
    }
}

async fn heartbeat_loop(shared: std::sync::Weak<Shared>, every: Duration) {
    let mut ticks = tokio::time::interval(every);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let progress = shared
            .progress
            .lock()
            .map(|p| p.clone())
            .unwrap_or(Value::Null);
        let mut body = json!({"attempt": shared.attempt});
        if !progress.is_null() {
            body["progress"] = progress;
        }
        let path = format!("/sessions/{}/heartbeat", shared.id);
        match shared
            .client
            .send_once(Call::new(Method::POST, path).json(&body))
            .await
        {
            Ok(_) => {}
            Err((error, _)) if fenced(&error) => {
                tracing::warn!(session = %shared.id, %error, "lease lost");
                shared.lost.send_replace(true);
                return;
            }
            // A blip: the next tick tries again, with the latest progress.
            Err((error, _)) => tracing::debug!(session = %shared.id, %error, "heartbeat failed"),
        }
    }
}

impl Client {
    /// Starts a session.
    pub async fn start_session(&self, new: NewSession) -> Result<SessionHandle> {
        let body = Value::Object(new.body);
        let answer = self
            .send(
                Call::new(Method::POST, "/sessions")
                    .json(&body)
                    .idempotent(),
            )
            .await?;
        Ok(SessionHandle::start(self, &answer.json()?))
    }

    /// Reads a session.
    pub async fn session(&self, id: &str) -> Result<SessionBody> {
        self.send(Call::new(Method::GET, format!("/sessions/{id}")))
            .await?
            .json()
    }

    /// Continues the session `new` names if it exists, or starts it. A session still
    /// `active` (its worker just died) is waited for until its lease runs out — the
    /// server then records the crash — and recovered with `option`. `continue` with no
    /// checkpoint that verifies falls back to a fresh start.
    pub async fn resume_or_start(
        &self,
        new: NewSession,
        option: RecoveryOption,
    ) -> Result<Resumed> {
        let Some(id) = new.id_str().map(str::to_owned) else {
            return self.start_session(new).await.map(Resumed::Started);
        };
        let mut session = match self.session(&id).await {
            Ok(session) => session,
            Err(e) if e.slug() == Some("not-found") => {
                return self.start_session(new).await.map(Resumed::Started);
            }
            Err(e) => return Err(e),
        };
        let deadline = tokio::time::Instant::now()
            + Duration::from_millis(session.heartbeat_timeout_ms)
            + Duration::from_secs(5);
        while session.status == "active" && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
            session = self.session(&id).await?;
        }
        match session.status.as_str() {
            "completed" | "cancelled" => return Ok(Resumed::Finished(Box::new(session))),
            "active" => {
                return Err(Error::Protocol(format!(
                    "session {id} is still active: another worker holds it"
                )));
            }
            _ => {}
        }
        let assessment: RecoveryBody = self
            .send(Call::new(Method::GET, format!("/sessions/{id}/recovery")))
            .await?
            .json()?;
        let option = if option == RecoveryOption::Continue && !assessment.can_recover {
            RecoveryOption::FreshStart
        } else {
            option
        };
        let body =
            json!({"option": option.as_str(), "confirm": option == RecoveryOption::FreshStart});
        let recovered: Recovered = self
            .send(
                Call::new(Method::POST, format!("/sessions/{id}/recover"))
                    .json(&body)
                    .idempotent(),
            )
            .await?
            .json()?;
        Ok(Resumed::Recovered {
            session: SessionHandle::start(self, &recovered.session),
            resume_from: recovered.resume_from,
            assessment: Box::new(assessment),
        })
    }
}
