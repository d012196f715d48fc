//! The auto-saver: edits (merge patches of a project's state) are coalesced and saved
//! after a quiet spell (`debounce`, 2 s) or at the latest `max_wait` (10 s) after the
//! first unsaved edit. Each save carries an `Idempotency-Key` and `If-Match`; a save in
//! flight keeps its body and key until it is acknowledged, so a retry can never make a
//! second revision. An optional journal file keeps unacknowledged edits across a crash
//! of the application; they are sent at the next start.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::Method;
use reqwest::header::{HeaderName, IF_MATCH};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::client::{Body, Call, Client, Error, Result, backoff};

/// How an [`AutoSaver`] saves.
#[derive(Debug, Clone)]
pub struct AutoSaveOptions {
    /// Save after this long without a new edit.
    pub debounce: Duration,
    /// Save at the latest this long after the first unsaved edit, even while edits
    /// keep coming.
    pub max_wait: Duration,
    /// A file that keeps edits until the server acknowledged them.
    pub journal: Option<PathBuf>,
}

impl Default for AutoSaveOptions {
    fn default() -> AutoSaveOptions {
        AutoSaveOptions {
            debounce: Duration::from_secs(2),
            max_wait: Duration::from_secs(10),
            journal: None,
        }
    }
}

/// What the auto-saver is doing.
#[derive(Debug, Clone, PartialEq)]
pub enum SaveState {
    /// Nothing to save.
    Idle,
    /// A save is on its way.
    Saving,
    /// Everything is saved.
    Saved,
    /// The server refused a save (the text says why); the refused edits are dropped.
    Error(String),
    /// The server cannot be reached; saving goes on trying.
    Offline,
}

/// The auto-saver's status, as a stream ([`AutoSaver::status`]).
#[derive(Debug, Clone, PartialEq)]
pub struct SaveStatus {
    /// What it is doing.
    pub state: SaveState,
    /// Edits not yet acknowledged by the server.
    pending_edits: usize,
    /// The project's revision after the newest acknowledged save.
    pub revision: u64,
    /// JSON Pointers of fields that another writer changed while this one had unsaved
    /// edits to them: this writer's edit was applied on top, and the application may
    /// want to tell the user.
    pub conflicts: Vec<String>,
}

impl SaveStatus {
    /// Edits not yet acknowledged by the server.
    pub fn pending_edits(&self) -> usize {
        self.pending_edits
    }
}

enum Command {
    Edit(u64, Value),
    Flush(oneshot::Sender<Result<()>>),
    Close(oneshot::Sender<Result<()>>),
}

/// Auto-saves one project. Dropping it asks the background task to save what is
/// pending; [`AutoSaver::close`] waits for that.
///
/// ```no_run
/// use lifeboat_sdk::{AutoSaveOptions, AutoSaver, Client, SaveState};
/// use serde_json::json;
///
/// # async fn run() -> Result<(), lifeboat_sdk::Error> {
/// let client = Client::new("http://127.0.0.1:7433", "lb_…");
/// let options = AutoSaveOptions { journal: Some("essay.journal".into()), ..Default::default() };
/// let saver = AutoSaver::open(&client, "essay-7", options).await?;
/// saver.edit(json!({"title": "Draft 2", "body": {"p1": "It was a dark night"}}))?;
/// let mut status = saver.status();
/// while status.changed().await.is_ok() {
///     if status.borrow().state == SaveState::Saved {
///         break;
///     }
/// }
/// saver.close().await?;
/// # Ok(())
/// # }
/// ```
pub struct AutoSaver {
    commands: mpsc::UnboundedSender<Command>,
    status: watch::Receiver<SaveStatus>,
    journal: Option<Arc<Journal>>,
    /// The number of the newest edit.
    edits: Arc<AtomicU64>,
}

impl AutoSaver {
    /// Opens the auto-saver of project `id` (created empty if it does not exist), and
    /// resends what its journal holds from an earlier run.
    pub async fn open(client: &Client, id: &str, options: AutoSaveOptions) -> Result<AutoSaver> {
        let path = format!("/projects/{id}");
        let (base, revision) = match read_project(client, &path).await? {
            (Some(base), revision) => (base, revision),
            (None, _) => create_project(client, &path).await?,
        };
        let journal = options
            .journal
            .clone()
            .map(|path| Arc::new(Journal::new(path)));
        let replayed = match &journal {
            Some(journal) => journal.read()?,
            None => Replayed::default(),
        };
        let edits = Arc::new(AtomicU64::new(replayed.newest));
        let inflight_edits = usize::from(replayed.inflight.is_some());
        let pending: VecDeque<Pending> = replayed
            .pending
            .into_iter()
            .map(|(upto, patch)| Pending {
                patch,
                edits: 1,
                upto,
            })
            .collect();
        let (status_tx, status) = watch::channel(SaveStatus {
            state: SaveState::Idle,
            pending_edits: inflight_edits + pending.len(),
            revision,
            conflicts: Vec::new(),
        });
        let (commands, receiver) = mpsc::unbounded_channel();
        let saver = Saver {
            client: client.clone(),
            path,
            options,
            base,
            revision,
            inflight: replayed.inflight,
            inflight_edits,
            pending,
            newest: replayed.newest,
            first_edit: None,
            last_edit: None,
            tries: 0,
            retry_at: None,
            journal: journal.clone(),
            received: Arc::clone(&edits),
            status: status_tx,
            conflicts: Vec::new(),
            waiters: Vec::new(),
        };
        tokio::spawn(saver.run(receiver));
        Ok(AutoSaver {
            commands,
            status,
            journal,
            edits,
        })
    }

    /// Records an edit: a merge patch (RFC 7396) of the project's state. With a journal,
    /// the edit is in it (fsynced) when this returns, so it survives a crash of the
    /// application; without one this only queues it.
    pub fn edit(&self, patch: Value) -> Result<()> {
        let number = match &self.journal {
            Some(journal) => journal.append_edit(&self.edits, &patch)?,
            None => self.edits.fetch_add(1, Ordering::AcqRel) + 1,
        };
        self.commands
            .send(Command::Edit(number, patch))
            .map_err(|_| stopped())
    }

    /// Saves now what is pending and waits until the server acknowledged it.
    pub async fn flush(&self) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Flush(tx))
            .map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }

    /// Saves what is pending, waits for it, and stops.
    pub async fn close(self) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Close(tx))
            .map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }

    /// The status stream: idle / saving / saved / error / offline, pending edits, revision.
    pub fn status(&self) -> watch::Receiver<SaveStatus> {
        self.status.clone()
    }
}

fn stopped() -> Error {
    Error::Protocol("the auto-saver has stopped".to_owned())
}

impl Drop for AutoSaver {
    fn drop(&mut self) {
        let (tx, _) = oneshot::channel();
        let _ = self.commands.send(Command::Close(tx));
    }
}

/// Creates the project empty (`If-None-Match: *`), or reads it if someone was first.
async fn create_project(client: &Client, path: &str) -> Result<(Value, u64)> {
    let body = json!({"state": {}});
    let created = client
        .send(
            Call::new(Method::PUT, path)
                .json(&body)
                .header(HeaderName::from_static("if-none-match"), "*")
                .idempotent(),
        )
        .await;
    match created {
        Ok(answer) => {
            let revision = answer.json::<Value>()?["revision"].as_u64().unwrap_or(1);
            Ok((json!({}), revision))
        }
        Err(e) if e.slug() == Some("precondition-failed") => {
            let (base, revision) = read_project(client, path).await?;
            Ok((base.unwrap_or_else(|| json!({})), revision))
        }
        Err(e) => Err(e),
    }
}

/// The project's state and revision (`None` if it does not exist).
async fn read_project(client: &Client, path: &str) -> Result<(Option<Value>, u64)> {
    match client.send(Call::new(Method::GET, path)).await {
        Ok(answer) => {
            let project: Value = answer.json()?;
            let revision = project["revision"].as_u64().unwrap_or(0);
            Ok((Some(project["state"].clone()), revision))
        }
        Err(e) if e.slug() == Some("not-found") => Ok((None, 0)),
        Err(e) => Err(e),
    }
}

/// Merges merge patch `next` into `into` so that applying the result equals applying
/// `into` then `next`; `false` (nothing changed) when no single patch can say that.
fn coalesce(into: &mut Value, next: &Value) -> bool {
    fn fits(into: &Value, next: &Value) -> bool {
        let (Some(into), Some(next)) = (into.as_object(), next.as_object()) else {
            return false;
        };
        next.iter()
            .all(|(key, value)| match (into.get(key), value) {
                (Some(Value::Object(_)), Value::Object(_)) => fits(&into[key], value),
                (Some(_), Value::Object(_)) => false,
                _ => true,
            })
    }
    fn merge(into: &mut Value, next: &Value) {
        let (Some(into), Some(next)) = (into.as_object_mut(), next.as_object()) else {
            return;
        };
        for (key, value) in next {
            match (into.get_mut(key), value) {
                (Some(existing @ Value::Object(_)), Value::Object(_)) => merge(existing, value),
                _ => {
                    into.insert(key.clone(), value.clone());
                }
            }
        }
    }
    if !fits(into, next) {
        return false;
    }
    merge(into, next);
    true
}

/// JSON Pointers of the values a merge patch sets or deletes.
fn touched(patch: &Value, prefix: &str, out: &mut Vec<String>) {
    let Some(object) = patch.as_object() else {
        return;
    };
    for (key, value) in object {
        let pointer = format!("{prefix}/{}", key.replace('~', "~0").replace('/', "~1"));
        match value {
            Value::Object(inner) if !inner.is_empty() => touched(value, &pointer, out),
            _ => out.push(pointer),
        }
    }
}

/// The journal: an append-only file of JSON lines, each fsynced — `{"edit": n, "patch"}`
/// as the application edits, `{"inflight": n, "patch", "key"}` before a save of the edits
/// up to `n` is sent, `{"acked": n}` once the server acknowledged it. Emptied whenever
/// everything is acknowledged. What follows the newest acknowledgement is replayed at the
/// next start (an in-flight save again with its key, so a save that did land is not made
/// twice).
struct Journal {
    path: PathBuf,
    file: Mutex<Option<std::fs::File>>,
}

/// What a journal held.
#[derive(Default)]
struct Replayed {
    inflight: Option<InFlight>,
    /// Edits after the in-flight save (or the newest acknowledgement), with their numbers.
    pending: Vec<(u64, Value)>,
    /// The newest edit number.
    newest: u64,
}

/// A save being sent: its patch, its Idempotency-Key, the newest edit it holds.
#[derive(Clone)]
struct InFlight {
    patch: Value,
    key: String,
    upto: u64,
}

/// Edits not yet sent: coalesced into one patch, how many, the newest one's number.
struct Pending {
    patch: Value,
    edits: usize,
    upto: u64,
}

impl Journal {
    fn new(path: PathBuf) -> Journal {
        Journal {
            path,
            file: Mutex::new(None),
        }
    }

    fn failed(&self, e: impl std::fmt::Display) -> Error {
        Error::Journal(format!("{}: {e}", self.path.display()))
    }

    fn read(&self) -> Result<Replayed> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Replayed::default()),
            Err(e) => return Err(self.failed(e)),
        };
        let mut edits = Vec::new();
        let mut acked = 0;
        let mut inflight: Option<InFlight> = None;
        // A torn last line (a crash mid-write) was never fsynced, so never promised.
        for record in text
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        {
            if let Some(n) = record["edit"].as_u64() {
                edits.push((n, record["patch"].clone()));
            } else if let (Some(upto), Some(key)) =
                (record["inflight"].as_u64(), record["key"].as_str())
            {
                inflight = Some(InFlight {
                    patch: record["patch"].clone(),
                    key: key.to_owned(),
                    upto,
                });
            } else if let Some(n) = record["acked"].as_u64() {
                acked = acked.max(n);
            }
        }
        let inflight = inflight.filter(|i| i.upto > acked);
        let after = inflight.as_ref().map_or(acked, |i| i.upto);
        let newest = edits.iter().map(|(n, _)| *n).max().unwrap_or(0).max(after);
        Ok(Replayed {
            inflight,
            pending: edits.into_iter().filter(|(n, _)| *n > after).collect(),
            newest,
        })
    }

    fn append(&self, file: &mut Option<std::fs::File>, record: &Value) -> Result<()> {
        use std::io::Write;
        let handle = match file {
            Some(handle) => handle,
            None => file.insert(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.path)
                    .map_err(|e| self.failed(e))?,
            ),
        };
        let mut line = record.to_string();
        line.push('\n');
        handle
            .write_all(line.as_bytes())
            .map_err(|e| self.failed(e))?;
        handle.sync_data().map_err(|e| self.failed(e))
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Option<std::fs::File>>> {
        self.file
            .lock()
            .map_err(|_| self.failed("a writer panicked"))
    }

    /// Numbers and appends an edit (the application's side).
    fn append_edit(&self, counter: &AtomicU64, patch: &Value) -> Result<u64> {
        let mut file = self.lock()?;
        let number = counter.load(Ordering::Acquire) + 1;
        self.append(&mut file, &json!({"edit": number, "patch": patch}))?;
        counter.store(number, Ordering::Release);
        Ok(number)
    }

    /// Appends a record of the saver's.
    fn record(&self, record: &Value) -> Result<()> {
        let mut file = self.lock()?;
        self.append(&mut file, record)
    }

    /// Empties the journal — unless an edit newer than `received` was appended meanwhile.
    fn clear_up_to(&self, received: u64, counter: &AtomicU64) -> Result<()> {
        let mut file = self.lock()?;
        if counter.load(Ordering::Acquire) != received {
            return Ok(());
        }
        *file = None;
        match std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&self.path)
        {
            Ok(emptied) => emptied.sync_all().map_err(|e| self.failed(e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.failed(e)),
        }
    }
}

struct Saver {
    client: Client,
    path: String,
    options: AutoSaveOptions,
    /// The server's state at `revision`, as far as this writer knows.
    base: Value,
    revision: u64,
    /// The save being sent, kept until acknowledged, and how many edits it holds.
    inflight: Option<InFlight>,
    inflight_edits: usize,
    /// Edits not yet sent, coalesced where possible.
    pending: VecDeque<Pending>,
    /// The newest edit received from the application.
    newest: u64,
    first_edit: Option<Instant>,
    last_edit: Option<Instant>,
    tries: u32,
    retry_at: Option<Instant>,
    journal: Option<Arc<Journal>>,
    /// The application's edit counter: the journal is emptied only when it holds no edit
    /// this saver has not received.
    received: Arc<AtomicU64>,
    status: watch::Sender<SaveStatus>,
    conflicts: Vec<String>,
    waiters: Vec<oneshot::Sender<Result<()>>>,
}

impl Saver {
    fn pending_edits(&self) -> usize {
        self.inflight_edits + self.pending.iter().map(|p| p.edits).sum::<usize>()
    }

    fn publish(&self, state: SaveState) {
        self.status.send_replace(SaveStatus {
            state,
            pending_edits: self.pending_edits(),
            revision: self.revision,
            conflicts: self.conflicts.clone(),
        });
    }

    /// Appends a record to the journal, if there is one. A failure is logged: the edits
    /// are still held in memory and saved.
    fn note(&self, record: &Value) {
        if let Some(journal) = &self.journal
            && let Err(error) = journal.record(record)
        {
            tracing::error!(%error, "cannot write the auto-save journal");
        }
    }

    fn idle(&self) -> bool {
        self.inflight.is_none() && self.pending.is_empty()
    }

    /// When the next save is due, if one is.
    fn due(&self) -> Option<Instant> {
        if self.inflight.is_some() {
            return Some(self.retry_at.unwrap_or_else(Instant::now));
        }
        if self.pending.is_empty() {
            return None;
        }
        if !self.waiters.is_empty() || self.first_edit.is_none() {
            return Some(Instant::now());
        }
        let quiet = self.last_edit.map(|t| t + self.options.debounce);
        let latest = self.first_edit.map(|t| t + self.options.max_wait);
        quiet.into_iter().chain(latest).min()
    }

    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        let mut closing: Option<oneshot::Sender<Result<()>>> = None;
        loop {
            if self.idle() {
                for waiter in self.waiters.drain(..) {
                    let _ = waiter.send(Ok(()));
                }
                if let Some(done) = closing.take() {
                    let _ = done.send(Ok(()));
                    return;
                }
            }
            let due = self.due();
            tokio::select! {
                command = commands.recv(), if closing.is_none() => match command {
                    Some(Command::Edit(number, patch)) => self.edit(number, patch),
                    Some(Command::Flush(done)) => self.waiters.push(done),
                    Some(Command::Close(done)) => closing = Some(done),
                    None => closing = Some(oneshot::channel().0),
                },
                () = tokio::time::sleep_until(due.unwrap_or_else(Instant::now)), if due.is_some() => {
                    self.save().await;
                }
            }
        }
    }

    fn edit(&mut self, number: u64, patch: Value) {
        let now = Instant::now();
        self.first_edit.get_or_insert(now);
        self.last_edit = Some(now);
        self.newest = self.newest.max(number);
        let coalesced = match self.pending.back_mut() {
            Some(last) => {
                coalesce(&mut last.patch, &patch) && {
                    last.edits += 1;
                    last.upto = number;
                    true
                }
            }
            None => false,
        };
        if !coalesced {
            self.pending.push_back(Pending {
                patch,
                edits: 1,
                upto: number,
            });
        }
        let state = if self.inflight.is_some() {
            SaveState::Saving
        } else {
            SaveState::Idle
        };
        self.publish(state);
    }

    /// One save attempt of the patch in flight (taking the next one if none is).
    async fn save(&mut self) {
        if self.inflight.is_none() {
            let Some(next) = self.pending.pop_front() else {
                return;
            };
            let inflight = InFlight {
                patch: next.patch,
                key: uuid::Uuid::now_v7().to_string(),
                upto: next.upto,
            };
            self.note(
                &json!({"inflight": inflight.upto, "patch": inflight.patch, "key": inflight.key}),
            );
            self.inflight = Some(inflight);
            self.inflight_edits = next.edits;
            self.first_edit = None;
            self.last_edit = None;
        }
        let Some(InFlight { patch, key, upto }) = self.inflight.clone() else {
            return;
        };
        self.publish(SaveState::Saving);
        let call = Call::new(Method::PATCH, self.path.as_str())
            .body(Body::MergePatch(&patch))
            .header(IF_MATCH, format!("\"{}\"", self.revision))
            .idempotency_key(&key);
        match self.client.send_once(call).await {
            Ok(answer) => {
                let saved: Value = answer.json().unwrap_or_default();
                self.revision = saved["revision"].as_u64().unwrap_or(self.revision + 1);
                json_patch::merge(&mut self.base, &patch);
                self.acknowledged(upto);
                let state = if self.idle() {
                    SaveState::Saved
                } else {
                    SaveState::Saving
                };
                self.publish(state);
            }
            Err((error, _)) if error.slug() == Some("precondition-failed") => {
                self.rebase(&patch).await;
            }
            Err((error, Some(retry_after))) => {
                self.tries += 1;
                self.retry_at = Some(Instant::now() + backoff(self.tries, retry_after));
                let state = match error {
                    Error::Unreachable(_) => SaveState::Offline,
                    other => SaveState::Error(other.to_string()),
                };
                self.publish(state);
            }
            Err((error, None)) => {
                // Refused for good (422, 413, …): these edits cannot be saved as they are.
                tracing::warn!(%error, "auto-save refused");
                self.acknowledged(upto);
                for waiter in self.waiters.drain(..) {
                    let _ = waiter.send(Err(error.clone()));
                }
                self.publish(SaveState::Error(error.to_string()));
            }
        }
    }

    /// The save of the edits up to `upto` is settled: forget it, here and in the journal.
    fn acknowledged(&mut self, upto: u64) {
        self.inflight = None;
        self.inflight_edits = 0;
        self.tries = 0;
        self.retry_at = None;
        self.note(&json!({"acked": upto}));
        if self.pending.is_empty()
            && let Some(journal) = &self.journal
            && let Err(error) = journal.clear_up_to(self.newest, &self.received)
        {
            tracing::error!(%error, "cannot empty the auto-save journal");
        }
    }

    /// Another writer saved first (412): read their state, note the fields both changed,
    /// and send the same patch again on top of theirs, under a new key.
    async fn rebase(&mut self, patch: &Value) {
        match read_project(&self.client, &self.path).await {
            Ok((Some(current), revision)) => {
                let mut fields = Vec::new();
                touched(patch, "", &mut fields);
                for field in fields {
                    if self.base.pointer(&field) != current.pointer(&field)
                        && !self.conflicts.contains(&field)
                    {
                        self.conflicts.push(field);
                    }
                }
                self.base = current;
                self.revision = revision;
                self.retry_at = None;
                if let Some(inflight) = &mut self.inflight {
                    inflight.key = uuid::Uuid::now_v7().to_string();
                }
                if let Some(inflight) = &self.inflight {
                    let record = json!({"inflight": inflight.upto, "patch": inflight.patch, "key": inflight.key});
                    self.note(&record);
                }
            }
            Ok((None, _)) | Err(_) => {
                self.tries += 1;
                self.retry_at = Some(Instant::now() + backoff(self.tries, None));
                self.publish(SaveState::Offline);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn coalesced_patches_equal_applying_both() {
        let doc = json!({"a": {"x": 1, "y": 2}, "b": 1, "c": [1]});
        for (first, second) in [
            (json!({"a": {"x": 5}}), json!({"a": {"y": null}, "b": 2})),
            (json!({"b": null}), json!({"b": 3})),
            (json!({"c": [2]}), json!({"a": {"z": {"deep": true}}})),
        ] {
            let mut both = doc.clone();
            json_patch::merge(&mut both, &first);
            json_patch::merge(&mut both, &second);
            let mut coalesced = first.clone();
            assert!(coalesce(&mut coalesced, &second));
            let mut once = doc.clone();
            json_patch::merge(&mut once, &coalesced);
            assert_eq!(once, both, "{first} then {second}");
        }
        // Deleting a field, then merging an object into it, is not one merge patch.
        let mut first = json!({"a": null});
        assert!(!coalesce(&mut first, &json!({"a": {"x": 1}})));
        assert_eq!(first, json!({"a": null}), "unchanged when refused");
    }
}
