//! Projects (SPEC §4): durable JSON documents a person works on. Every save makes a new
//! revision; history is kept as deltas with periodic full snapshots, so a revision costs
//! what changed and any revision can be rebuilt.

use std::fmt;

use json_patch::{Patch, PatchOperation};
use serde_json::Value;

use crate::{Error, FieldError, Id, Name, Timestamp};

/// The largest serialized state by default: 16 MiB.
pub const STATE_BYTES_MAX_DEFAULT: usize = 16 * 1024 * 1024;
/// The deepest nesting of a state by default.
pub const DEPTH_MAX_DEFAULT: usize = 64;
/// A snapshot is taken at least this often, so rebuilding a revision never replays more.
const CHAIN_MAX: u64 = 1_000;
/// Small documents are snapshotted only after this many delta bytes.
const SNAPSHOT_BYTES_MIN: u64 = 4_096;

/// How big and how deep a state may be, and how much history is kept.
#[derive(Debug, Clone, PartialEq)]
pub struct ProjectRules {
    /// `max_state_bytes`: the serialized state's limit (413 beyond).
    pub max_state_bytes: usize,
    /// Nesting depth limit (422 beyond).
    pub max_depth: usize,
    /// Which revisions are kept.
    pub retention: RevisionRetention,
}

impl Default for ProjectRules {
    fn default() -> Self {
        ProjectRules {
            max_state_bytes: STATE_BYTES_MAX_DEFAULT,
            max_depth: DEPTH_MAX_DEFAULT,
            retention: RevisionRetention::default(),
        }
    }
}

/// Revision retention: every revision younger than `max_age_ms`, and at least the newest
/// `min_revisions`, are kept; older ones may be pruned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RevisionRetention {
    /// Revisions younger than this are kept (default 30 days).
    pub max_age_ms: u64,
    /// At least this many newest revisions are kept (default 100).
    pub min_revisions: u64,
}

impl Default for RevisionRetention {
    fn default() -> Self {
        RevisionRetention {
            max_age_ms: 30 * 24 * 3_600_000,
            min_revisions: 100,
        }
    }
}

impl RevisionRetention {
    /// The oldest revision that must be kept when the newest is `newest`.
    /// `oldest_young` is the oldest revision made at or after `now − max_age_ms`, if any.
    pub fn oldest_kept(&self, newest: u64, oldest_young: Option<u64>) -> u64 {
        let by_count = newest
            .saturating_sub(self.min_revisions.saturating_sub(1))
            .max(1);
        oldest_young.map_or(by_count, |young| young.min(by_count))
    }
}

/// `name@version` of a registered schema.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SchemaRef {
    /// The schema's name.
    pub name: Name,
    /// The registered version.
    pub version: Name,
}

impl SchemaRef {
    /// Parses `name@version`.
    pub fn parse(raw: &str) -> Result<SchemaRef, Error> {
        let (name, version) = raw.split_once('@').ok_or_else(|| Error::Invalid {
            field: "schema",
            message: format!("{raw:?} is not of the form name@version"),
        })?;
        Ok(SchemaRef {
            name: Name::parse(name)?,
            version: Name::parse(version)?,
        })
    }
}

impl fmt::Display for SchemaRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.name, self.version)
    }
}

/// A project at one revision.
#[derive(Debug, Clone, PartialEq)]
pub struct Project {
    /// Chosen by the client.
    pub id: Id,
    /// A label for people.
    pub title: Option<String>,
    /// The schema every save is validated against.
    pub schema: Option<SchemaRef>,
    /// 1 for the first save, +1 for every save since.
    pub revision: u64,
    /// The document: always a JSON object.
    pub state: Value,
    /// Bytes of the serialized state.
    pub size_bytes: u64,
    /// When revision 1 was saved.
    pub created_at: Timestamp,
    /// When this revision was saved.
    pub updated_at: Timestamp,
    /// Set by a soft delete; a deleted project reads as absent.
    pub deleted_at: Option<Timestamp>,
}

/// What a save asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// `PUT`: replace the state; `title` and `schema` are kept when `None`.
    Replace {
        /// The new state (a JSON object).
        state: Value,
        /// A new title, if given.
        title: Option<String>,
        /// A new schema, if given.
        schema: Option<SchemaRef>,
    },
    /// `PATCH` with `application/merge-patch+json` (RFC 7396).
    Merge(Value),
    /// `PATCH` with `application/json-patch+json` (RFC 6902).
    JsonPatch(Patch),
    /// `POST …/restore`: the state of an earlier revision, as a new revision.
    Restore {
        /// The revision restored.
        revision: u64,
        /// Its state, rebuilt by the store.
        state: Value,
    },
}

/// `If-Match` / `If-None-Match` of a save or delete.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Preconditions {
    /// `If-Match`: `None` when absent; `Some(None)` for `*`; `Some(Some(list))` for ETags
    /// (an ETag that is not a revision never matches and is left out of the list).
    pub if_match: Option<Option<Vec<u64>>>,
    /// `If-None-Match: *`: only create.
    pub if_none_match_any: bool,
}

impl Preconditions {
    /// Checks the preconditions against the current revision (`None`: no project).
    pub fn check(&self, current: Option<u64>) -> Result<(), Error> {
        if self.if_none_match_any && current.is_some() {
            return Err(Error::PreconditionFailed(
                "If-None-Match: * but the project exists".to_owned(),
                current,
            ));
        }
        match (&self.if_match, current) {
            (None, _) => Ok(()),
            (Some(_), None) => Err(Error::PreconditionFailed(
                "If-Match but the project does not exist".to_owned(),
                None,
            )),
            (Some(None), Some(_)) => Ok(()),
            (Some(Some(revisions)), Some(current)) if revisions.contains(&current) => Ok(()),
            (Some(Some(_)), Some(current)) => Err(Error::PreconditionFailed(
                format!("If-Match does not match the current revision \"{current}\""),
                Some(current),
            )),
        }
    }
}

/// How a revision is stored.
#[derive(Debug, Clone, PartialEq)]
pub enum Delta {
    /// The whole state.
    Snapshot(Value),
    /// A merge patch from the previous revision.
    Merge(Value),
    /// A JSON Patch from the previous revision.
    Patch(Patch),
}

impl Delta {
    /// The storage kind name.
    pub fn kind(&self) -> &'static str {
        match self {
            Delta::Snapshot(_) => "snapshot",
            Delta::Merge(_) => "merge",
            Delta::Patch(_) => "patch",
        }
    }

    /// The stored body.
    pub fn body(&self) -> String {
        match self {
            Delta::Snapshot(value) | Delta::Merge(value) => value.to_string(),
            Delta::Patch(patch) => serde_json::to_string(patch).unwrap_or_default(),
        }
    }

    /// Reads a stored delta back; `None` if the row is damaged.
    pub fn load(kind: &str, body: &str) -> Option<Delta> {
        match kind {
            "snapshot" => serde_json::from_str(body).ok().map(Delta::Snapshot),
            "merge" => serde_json::from_str(body).ok().map(Delta::Merge),
            "patch" => serde_json::from_str(body).ok().map(Delta::Patch),
            _ => None,
        }
    }
}

/// Where the store's delta chain stands before a save.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Chain {
    /// Deltas stored since the newest snapshot.
    pub deltas: u64,
    /// Their total size in bytes.
    pub delta_bytes: u64,
}

/// The result of a save: the new revision and how to store it.
#[derive(Debug, Clone, PartialEq)]
pub struct Saved {
    /// The project at its new revision.
    pub project: Project,
    /// What to store for the revision.
    pub delta: Delta,
    /// The new state, serialized once (what the store keeps as the current state).
    pub state_json: String,
    /// True when the save created the project (or brought a deleted one back).
    pub created: bool,
}

/// Applies `change` to `current` (`None`: no such project; a deleted project is passed
/// with `deleted_at` set) and decides how to store the new revision.
///
/// `validate` checks a state against a schema. A refusal changes nothing.
pub fn save(
    current: Option<&Project>,
    id: &Id,
    change: Change,
    rules: &ProjectRules,
    chain: Chain,
    now: Timestamp,
    validate: &dyn Fn(&SchemaRef, &Value) -> Result<(), Error>,
) -> Result<Saved, Error> {
    let live = current.filter(|p| p.deleted_at.is_none());
    let (state, title, schema, delta) = match change {
        Change::Replace {
            state,
            title,
            schema,
        } => {
            let title = title.or_else(|| current.and_then(|p| p.title.clone()));
            let schema = schema.or_else(|| current.and_then(|p| p.schema.clone()));
            let delta = current.map(|p| Delta::Patch(json_patch::diff(&p.state, &state)));
            (state, title, schema, delta)
        }
        Change::Restore { state, .. } => {
            let live = live.ok_or_else(|| not_found(id))?;
            let delta = Delta::Patch(json_patch::diff(&live.state, &state));
            (state, live.title.clone(), live.schema.clone(), Some(delta))
        }
        Change::Merge(patch) => {
            let live = live.ok_or_else(|| not_found(id))?;
            let mut state = live.state.clone();
            json_patch::merge(&mut state, &patch);
            (
                state,
                live.title.clone(),
                live.schema.clone(),
                Some(Delta::Merge(patch)),
            )
        }
        Change::JsonPatch(patch) => {
            let live = live.ok_or_else(|| not_found(id))?;
            let mut state = live.state.clone();
            json_patch::patch(&mut state, &patch).map_err(|e| Error::PatchConflict {
                revision: live.revision,
                message: e.to_string(),
            })?;
            (
                state,
                live.title.clone(),
                live.schema.clone(),
                Some(Delta::Patch(patch)),
            )
        }
    };
    if !state.is_object() {
        return Err(Error::Invalid {
            field: "state",
            message: "the state must be a JSON object".to_owned(),
        });
    }
    let depth = depth(&state);
    if depth > rules.max_depth {
        return Err(Error::Invalid {
            field: "state",
            message: format!(
                "nesting depth {depth} is over the limit of {}",
                rules.max_depth
            ),
        });
    }
    let state_json = state.to_string();
    let size = state_json.len();
    if size > rules.max_state_bytes {
        return Err(Error::StateTooLarge {
            size,
            limit: rules.max_state_bytes,
        });
    }
    if let Some(schema) = &schema {
        validate(schema, &state)?;
    }
    let size_bytes = size as u64;
    let delta = match delta {
        Some(delta) if !snapshot_due(chain, &delta, size_bytes) => delta,
        _ => Delta::Snapshot(state.clone()),
    };
    let project = Project {
        id: id.clone(),
        title,
        schema,
        revision: current.map_or(1, |p| p.revision + 1),
        state,
        size_bytes,
        created_at: live.map_or(now, |p| p.created_at),
        updated_at: now,
        deleted_at: None,
    };
    Ok(Saved {
        project,
        delta,
        state_json,
        created: live.is_none(),
    })
}

/// Whether the next revision should be a full snapshot: when the deltas since the last
/// snapshot weigh as much as the state itself (so snapshots cost at most as much as the
/// deltas), or when the chain is long.
fn snapshot_due(chain: Chain, next: &Delta, state_bytes: u64) -> bool {
    let bytes = chain.delta_bytes + next.body().len() as u64;
    chain.deltas + 1 >= CHAIN_MAX || bytes >= state_bytes.max(SNAPSHOT_BYTES_MIN)
}

/// Rebuilds a state from a snapshot and the deltas after it, in order.
pub fn rebuild(snapshot: Value, deltas: impl IntoIterator<Item = Delta>) -> Result<Value, String> {
    let mut state = snapshot;
    for delta in deltas {
        match delta {
            Delta::Snapshot(full) => state = full,
            Delta::Merge(patch) => json_patch::merge(&mut state, &patch),
            Delta::Patch(patch) => {
                json_patch::patch(&mut state, &patch).map_err(|e| e.to_string())?;
            }
        }
    }
    Ok(state)
}

/// Parses a JSON Patch document; 422 material when it is not one.
pub fn parse_json_patch(value: Value) -> Result<Patch, Error> {
    serde_json::from_value::<Vec<PatchOperation>>(value)
        .map(Patch)
        .map_err(|e| Error::Invalid {
            field: "patch",
            message: format!("not a JSON Patch (RFC 6902) document: {e}"),
        })
}

/// The nesting depth of a value: 1 for a scalar, +1 per array or object level.
pub fn depth(value: &Value) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(value, 1usize)];
    while let Some((value, level)) = stack.pop() {
        deepest = deepest.max(level);
        match value {
            Value::Array(items) => stack.extend(items.iter().map(|v| (v, level + 1))),
            Value::Object(members) => stack.extend(members.values().map(|v| (v, level + 1))),
            _ => {}
        }
    }
    deepest
}

/// A violation list as a refusal.
pub fn schema_violation(schema: &SchemaRef, errors: Vec<FieldError>) -> Error {
    Error::SchemaViolation {
        schema: schema.to_string(),
        errors,
    }
}

fn not_found(id: &Id) -> Error {
    Error::ProjectNotFound(id.to_string())
}

#[cfg(test)]
mod tests;
