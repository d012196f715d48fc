//! The auto-saver: edits (merge patches of a project's state) are coalesced and saved
//! after a quiet spell (`debounce`, 2 s) or at the latest `max_wait` (10 s) after the
//! first unsaved edit. Each save carries an `Idempotency-Key` and `If-Match`; a save in
//! flight keeps its body and key until it is acknowledged, so a retry can never make a
//! second revision. An optional journal file keeps unacknowledged edits across a crash
//! of the application; they are sent at the next start.

use std::collections::VecDeque;
use std::path::PathBuf;
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
    Edit(Value),
    Flush(oneshot::Sender<Result<()>>),
    Close(oneshot::Sender<Result<()>>),
}

/// Auto-saves one project. Dropping it asks the background task to save what is
/// pending; [`AutoSaver::close`] waits for that.
pub struct AutoSaver {
    commands: mpsc::UnboundedSender<Command>,
    status: watch::Receiver<SaveStatus>,
}

impl AutoSaver {
    /// Opens the auto-saver of project `id` (created empty if it does not exist), and
    /// resends what its journal holds from an earlier run.
    pub async fn open(client: &Client, id: &str, options: AutoSaveOptions) -> Result<AutoSaver> {
        let path = format!("/projects/{id}");
        let (base, revision) = read_project(client, &path).await?;
        let (base, revision) = match (base, revision) {
            (Some(base), revision) => (base, revision),
            (None, _) => {
                let body = json!({"state": {}});
                let created = client
                    .send(
                        Call::new(Method::PUT, path.as_str())
                            .json(&body)
                            .header(HeaderName::from_static("if-none-match"), "*")
                            .idempotent(),
                    )
                    .await;
                match created {
                    Ok(answer) => (
                        json!({}),
                        answer.json::<Value>()?["revision"].as_u64().unwrap_or(1),
                    ),
                    // Someone else created it first: read theirs.
                    Err(e) if e.slug() == Some("precondition-failed") => {
                        let (base, revision) = read_project(client, &path).await?;
                        (base.unwrap_or_else(|| json!({})), revision)
                    }
                    Err(e) => return Err(e),
                }
            }
        };
        let journal = options.journal.clone().map(Journal);
        let (inflight, pending) = match &journal {
            Some(journal) => journal.read()?,
            None => (None, VecDeque::new()),
        };
        let inflight_edits = usize::from(inflight.is_some());
        let pending: VecDeque<(Value, usize)> = pending.into_iter().map(|p| (p, 1)).collect();
        let pending_edits = inflight_edits + pending.len();
        let (status_tx, status) = watch::channel(SaveStatus {
            state: SaveState::Idle,
            pending_edits,
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
            inflight,
            inflight_edits,
            pending,
            first_edit: None,
            last_edit: None,
            tries: 0,
            retry_at: None,
            journal,
            status: status_tx,
            conflicts: Vec::new(),
            waiters: Vec::new(),
        };
        tokio::spawn(saver.run(receiver));
        Ok(AutoSaver { commands, status })
    }

    /// Records an edit: a merge patch (RFC 7396) of the project's state. Never blocks.
    pub fn edit(&self, patch: Value) {
        let _ = self.commands.send(Command::Edit(patch));
    }

    /// Saves now what is pending and waits until the server acknowledged it.
    pub async fn flush(&self) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Flush(tx))
            .map_err(|_| Error::Protocol("the auto-saver has stopped".to_owned()))?;
        rx.await
            .map_err(|_| Error::Protocol("the auto-saver has stopped".to_owned()))?
    }

    /// Saves what is pending, waits for it, and stops.
    pub async fn close(self) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Close(tx))
            .map_err(|_| Error::Protocol("the auto-saver has stopped".to_owned()))?;
        rx.await
            .map_err(|_| Error::Protocol("the auto-saver has stopped".to_owned()))?
    }

    /// The status stream: idle / saving / saved / error / offline, pending edits, revision.
    pub fn status(&self) -> watch::Receiver<SaveStatus> {
        self.status.clone()
    }
}

impl Drop for AutoSaver {
    fn drop(&mut self) {
        let (tx, _) = oneshot::channel();
        let _ = self.commands.send(Command::Close(tx));
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

/// The journal: what is not yet acknowledged, rewritten (fsynced, renamed) on each change.
struct Journal(PathBuf);

type InFlight = (Value, String);

impl Journal {
    fn read(&self) -> Result<(Option<InFlight>, VecDeque<Value>)> {
        let text = match std::fs::read_to_string(&self.0) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok((None, VecDeque::new()));
            }
            Err(e) => return Err(Error::Journal(e.to_string())),
        };
        let saved: Value = serde_json::from_str(&text)
            .map_err(|e| Error::Journal(format!("{}: {e}", self.0.display())))?;
        let inflight = match (&saved["inflight"], saved["key"].as_str()) {
            (Value::Null, _) | (_, None) => None,
            (patch, Some(key)) => Some((patch.clone(), key.to_owned())),
        };
        let pending = saved["pending"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into();
        Ok((inflight, pending))
    }

    fn write(&self, inflight: Option<&InFlight>, pending: &[&Value]) -> Result<()> {
        let failed = |e: std::io::Error| Error::Journal(format!("{}: {e}", self.0.display()));
        if inflight.is_none() && pending.is_empty() {
            return match std::fs::remove_file(&self.0) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(failed(e)),
                _ => Ok(()),
            };
        }
        let body = json!({
            "inflight": inflight.map(|(patch, _)| patch.clone()),
            "key": inflight.map(|(_, key)| key.clone()),
            "pending": pending,
        });
        let mut temp = self.0.clone().into_os_string();
        temp.push(".tmp");
        let temp = PathBuf::from(temp);
        {
            use std::io::Write;
            let mut file = std::fs::File::create(&temp).map_err(failed)?;
            file.write_all(body.to_string().as_bytes())
                .map_err(failed)?;
            file.sync_data().map_err(failed)?;
        }
        std::fs::rename(&temp, &self.0).map_err(failed)
    }
}

struct Saver {
    client: Client,
    path: String,
    options: AutoSaveOptions,
    /// The server's state at `revision`, as far as this writer knows.
    base: Value,
    revision: u64,
    /// The save being sent: its patch and Idempotency-Key, kept until acknowledged, and
    /// how many edits it holds.
    inflight: Option<InFlight>,
    inflight_edits: usize,
    /// Edits not yet sent, coalesced where possible, each with how many edits it holds.
    pending: VecDeque<(Value, usize)>,
    first_edit: Option<Instant>,
    last_edit: Option<Instant>,
    tries: u32,
    retry_at: Option<Instant>,
    journal: Option<Journal>,
    status: watch::Sender<SaveStatus>,
    conflicts: Vec<String>,
    waiters: Vec<oneshot::Sender<Result<()>>>,
}

impl Saver {
    fn pending_edits(&self) -> usize {
        self.inflight_edits + self.pending.iter().map(|(_, edits)| edits).sum::<usize>()
    }

    fn publish(&self, state: SaveState) {
        self.status.send_replace(SaveStatus {
            state,
            pending_edits: self.pending_edits(),
            revision: self.revision,
            conflicts: self.conflicts.clone(),
        });
    }

    fn journal(&self) -> Result<()> {
        match &self.journal {
            Some(journal) => {
                let patches: Vec<&Value> = self.pending.iter().map(|(patch, _)| patch).collect();
                journal.write(self.inflight.as_ref(), &patches)
            }
            None => Ok(()),
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
                    Some(Command::Edit(patch)) => self.edit(patch),
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

    fn edit(&mut self, patch: Value) {
        let now = Instant::now();
        self.first_edit.get_or_insert(now);
        self.last_edit = Some(now);
        let coalesced = match self.pending.back_mut() {
            Some((last, edits)) => {
                coalesce(last, &patch) && {
                    *edits += 1;
                    true
                }
            }
            None => false,
        };
        if !coalesced {
            self.pending.push_back((patch, 1));
        }
        if let Err(error) = self.journal() {
            tracing::error!(%error, "cannot write the auto-save journal");
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
            let Some((patch, edits)) = self.pending.pop_front() else {
                return;
            };
            self.inflight = Some((patch, uuid::Uuid::now_v7().to_string()));
            self.inflight_edits = edits;
            self.first_edit = None;
            self.last_edit = None;
            if let Err(error) = self.journal() {
                tracing::error!(%error, "cannot write the auto-save journal");
            }
        }
        let Some((patch, key)) = self.inflight.clone() else {
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
                self.inflight = None;
                self.inflight_edits = 0;
                self.tries = 0;
                self.retry_at = None;
                if let Err(error) = self.journal() {
                    tracing::error!(%error, "cannot write the auto-save journal");
                }
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
            Err((error, true)) | Err((error @ Error::Unreachable(_), _)) => {
                self.tries += 1;
                self.retry_at = Some(Instant::now() + backoff(self.tries, None));
                let state = match error {
                    Error::Unreachable(_) => SaveState::Offline,
                    other => SaveState::Error(other.to_string()),
                };
                self.publish(state);
            }
            Err((error, false)) => {
                // Refused for good (422, 413, …): these edits cannot be saved as they are.
                tracing::warn!(%error, "auto-save refused");
                self.inflight = None;
                self.inflight_edits = 0;
                let _ = self.journal();
                for waiter in self.waiters.drain(..) {
                    let _ = waiter.send(Err(error.clone()));
                }
                self.publish(SaveState::Error(error.to_string()));
            }
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
                if let Some((_, key)) = &mut self.inflight {
                    *key = uuid::Uuid::now_v7().to_string();
                }
                let _ = self.journal();
                self.retry_at = None;
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
