//! Project writes and reads, each once as a script over the store's rows: register a
//! schema, save (`PUT`, `PATCH`, restore) a new revision, delete, read now or at a
//! revision, list projects and revisions.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use lifeboat_core::{
    Chain, Change, Delta, Error as DomainError, Id, Preconditions, Project, SchemaRef, TenantId,
    Timestamp, save_project as save,
};
use lifeboat_store::rows::{ProjectRow, Subject};
use lifeboat_store::{
    Ack, Error, IdempotencyKey, Page, PageRequest, ProjectInfo, Result, RevisionInfo, Tx,
};
use serde_json::{Value, json};

use crate::schemas::SchemaCache;
use crate::store::once;
use crate::{Lifeboat, Outcome, ProjectEdit, SaveOutcome, SchemaPut, page};

/// Revision retention is applied on every this-many-th save of a project: pruning can
/// only ever free whole stretches before a snapshot, so checking each save buys nothing.
const PRUNE_EVERY: u64 = 16;

impl Lifeboat {
    /// Registers a JSON Schema version (immutable once registered).
    pub async fn put_schema(
        &self,
        tenant: &TenantId,
        schema: &SchemaRef,
        body: Value,
        key: Option<IdempotencyKey>,
    ) -> Result<Outcome<SchemaPut>> {
        SchemaCache::compile(&body)?;
        let (tenant, schema, now) = (tenant.clone(), schema.clone(), self.now());
        self.write(Ack::AfterCommit, move |tx| {
            let body = body.clone();
            once(tx, &tenant, key.as_ref(), now, |tx| {
                if let Some(existing) = tx.schema(&tenant, &schema)? {
                    if existing != body {
                        return Ok(Err(DomainError::SchemaConflict(schema.to_string()).into()));
                    }
                    return Ok(Ok(SchemaPut {
                        created: false,
                        body: existing,
                    }));
                }
                tx.insert_schema(&tenant, &schema, &body, now)?;
                Ok(Ok(SchemaPut {
                    created: true,
                    body,
                }))
            })
        })
        .await
    }

    /// A registered schema.
    pub async fn schema(&self, tenant: &TenantId, schema: &SchemaRef) -> Result<Value> {
        let (tenant, schema) = (tenant.clone(), schema.clone());
        self.read(move |tx| {
            tx.schema(&tenant, &schema)?.ok_or_else(|| Error::NotFound {
                what: "schema",
                id: schema.to_string(),
            })
        })
        .await
    }

    /// Saves a project (`PUT`, `PATCH`, restore): a new revision, atomically.
    pub async fn save_project(
        &self,
        tenant: &TenantId,
        id: &Id,
        edit: ProjectEdit,
        preconditions: Preconditions,
        key: Option<IdempotencyKey>,
    ) -> Result<Outcome<SaveOutcome>> {
        let (tenant, id, now) = (tenant.clone(), id.clone(), self.now());
        let this = self.clone();
        let (outcome, fresh) = self
            .write(Ack::AfterCommit, move |tx| {
                let mut fresh = None;
                let outcome = once(tx, &tenant, key.as_ref(), now, |tx| {
                    let saved =
                        this.save_script(tx, &tenant, &id, edit.clone(), &preconditions, now)?;
                    Ok(saved.map(|(outcome, state)| {
                        let version = (outcome.revision, outcome.updated_at);
                        let size = outcome.size_bytes;
                        fresh = Some(((tenant.clone(), id.clone()), version, size, state));
                        outcome
                    }))
                })?;
                Ok(outcome.map(|outcome| (outcome, fresh)))
            })
            .await?;
        // Committed: the new state is kept parsed for the next save.
        if let Some((key, version, size, state)) = fresh {
            self.inner.documents.keep(key, version, size, state);
        }
        Ok(outcome)
    }

    /// The script of one save: load, check the preconditions, let the core apply the
    /// change, write the revision, prune now and then, record `project.saved`. Answers
    /// the outcome and the new state.
    fn save_script(
        &self,
        tx: &mut dyn Tx,
        tenant: &TenantId,
        id: &Id,
        edit: ProjectEdit,
        preconditions: &Preconditions,
        now: Timestamp,
    ) -> lifeboat_store::JobResult<(SaveOutcome, Value)> {
        let rules = &self.inner.projects;
        let mut stored = tx.project(tenant, id)?;
        if let Some(stored) = stored.as_mut() {
            let key = (tenant.clone(), id.clone());
            let version = (stored.project.revision, stored.project.updated_at);
            match self.inner.documents.take(&key, version) {
                Some(state) => stored.project.state = state,
                None => stored.parse_state()?,
            }
        }
        let live = stored.as_ref().filter(|s| s.project.deleted_at.is_none());
        if let Err(refusal) = preconditions.check(live.map(|s| s.project.revision)) {
            return Ok(Err(refusal.into()));
        }
        let change = match edit {
            ProjectEdit::Change(change) => change,
            ProjectEdit::Restore(revision) => {
                let Some(live) = live else {
                    return Ok(Err(not_found(id)));
                };
                let (state, _) = tx.state_at(live.row, id, revision)?;
                Change::Restore { revision, state }
            }
        };
        if matches!(change, Change::Merge(_) | Change::JsonPatch(_)) && live.is_none() {
            return Ok(Err(not_found(id)));
        }
        let chain = stored.as_ref().map(|s| s.chain).unwrap_or_default();
        let saved = {
            // The core asks for schemas while it decides; they are read in this transaction.
            let rows = RefCell::new(&mut *tx);
            let validate = |schema: &SchemaRef, state: &Value| {
                self.inner
                    .schemas
                    .validate(tenant, schema, state, || {
                        rows.borrow_mut().schema(tenant, schema)
                    })
                    .map_err(|e| match e {
                        Error::Domain(domain) => domain,
                        other => DomainError::Invalid {
                            field: "schema",
                            message: other.to_string(),
                        },
                    })
            };
            let current = stored.as_ref().map(|s| &s.project);
            match save(current, id, change, rules, chain, now, &validate) {
                Ok(saved) => saved,
                Err(refusal) => return Ok(Err(refusal.into())),
            }
        };
        let chain = match &saved.delta {
            Delta::Snapshot(_) => Chain::default(),
            delta => Chain {
                deltas: chain.deltas + 1,
                delta_bytes: chain.delta_bytes + delta.body().len() as u64,
            },
        };
        let row = tx.write_project(tenant, stored.as_ref().map(|s| s.row), &saved, chain)?;
        let project = &saved.project;
        if project.revision % PRUNE_EVERY == 0 {
            tx.prune_revisions(row, project.revision, rules.retention, now)?;
        }
        let subject = Subject {
            session_id: None,
            project_id: Some(id.as_str()),
        };
        let data = json!({
            "project_id": id.as_str(),
            "revision": project.revision,
            "size_bytes": project.size_bytes,
        });
        tx.record_event(tenant, "project.saved", subject, &data, now)?;
        let outcome = SaveOutcome {
            id: project.id.clone(),
            revision: project.revision,
            updated_at: project.updated_at,
            size_bytes: project.size_bytes,
            created: saved.created,
        };
        Ok(Ok((outcome, saved.project.state)))
    }

    /// A project, now or at `revision`.
    pub async fn project(
        &self,
        tenant: &TenantId,
        id: &Id,
        revision: Option<u64>,
    ) -> Result<Project> {
        let (tenant, id) = (tenant.clone(), id.clone());
        self.read(move |tx| {
            let mut stored = load_live(tx, &tenant, &id)?;
            match revision {
                Some(revision) if revision != stored.project.revision => {
                    let (state, info) = tx.state_at(stored.row, &id, revision)?;
                    let mut project = stored.project;
                    project.state = state;
                    project.revision = revision;
                    project.size_bytes = info.size_bytes;
                    project.updated_at = info.created_at;
                    Ok(project)
                }
                _ => {
                    stored.parse_state()?;
                    Ok(stored.project)
                }
            }
        })
        .await
    }

    /// Projects, newest first.
    pub async fn projects(
        &self,
        tenant: &TenantId,
        page: &PageRequest,
    ) -> Result<Page<ProjectInfo>> {
        let before = page::decode(page.cursor.as_deref())?.unwrap_or(i64::MAX);
        let (tenant, limit) = (tenant.clone(), page.limit);
        let rows = self
            .read(move |tx| tx.projects_page(&tenant, before, limit.saturating_add(1)))
            .await?;
        Ok(page::numbered(rows, limit))
    }

    /// Soft-deletes a project.
    pub async fn delete_project(
        &self,
        tenant: &TenantId,
        id: &Id,
        preconditions: Preconditions,
    ) -> Result<()> {
        let key = (tenant.clone(), id.clone());
        let (tenant, id, now) = (tenant.clone(), id.clone(), self.now());
        self.write(Ack::AfterCommit, move |tx| {
            let stored = load_live(tx, &tenant, &id)?;
            if let Err(refusal) = preconditions.check(Some(stored.project.revision)) {
                return Ok(Err(refusal.into()));
            }
            tx.mark_project_deleted(stored.row, now)?;
            Ok(Ok(()))
        })
        .await?;
        self.inner.documents.forget(&key);
        Ok(())
    }

    /// A project's revisions, newest first.
    pub async fn revisions(
        &self,
        tenant: &TenantId,
        id: &Id,
        page: &PageRequest,
    ) -> Result<Page<RevisionInfo>> {
        let before = page::decode(page.cursor.as_deref())?.unwrap_or(i64::MAX);
        let (tenant, id, limit) = (tenant.clone(), id.clone(), page.limit);
        let rows = self
            .read(move |tx| {
                let stored = load_live(tx, &tenant, &id)?;
                tx.revisions_page(stored.row, before, limit.saturating_add(1))
            })
            .await?;
        Ok(page::numbered(rows, limit))
    }
}

/// Documents kept parsed between saves, so that a save of a hot document does not parse
/// its whole state again: the state of a revision that committed, by `(tenant, id)`.
///
/// A save takes its document's entry (if it is of the stored revision) and the entry
/// comes back, as the new revision's state, only after that save committed: a save whose
/// transaction rolls back leaves no entry, and an entry of another revision than the
/// stored one (another server saved since) is never used.
#[derive(Default)]
pub(crate) struct Documents(Mutex<DocumentsInner>);

#[derive(Default)]
struct DocumentsInner {
    /// When it was kept (a counter), revision, serialized size, and the parsed state.
    states: HashMap<(TenantId, Id), Kept>,
    /// Keys in the order they were kept, oldest first, with when; an entry whose state
    /// was taken or kept again since is stale.
    order: VecDeque<(u64, (TenantId, Id))>,
    /// Serialized bytes of the states kept.
    bytes: u64,
    /// Counts `keep` calls.
    clock: u64,
}

struct Kept {
    at: u64,
    /// The revision and when it was saved: a project deleted, purged and imported again
    /// may come back with the same revision, never also saved at the same millisecond.
    version: (u64, Timestamp),
    size: u64,
    state: Value,
}

/// Serialized bytes of the states kept at most (a parsed state takes a few times that).
const DOCUMENTS_BYTES_MAX: u64 = 32 << 20;
/// A state larger than this is not kept: parsing it once per save is the smaller cost
/// next to writing it.
const DOCUMENT_BYTES_MAX: u64 = 1 << 20;

impl Documents {
    fn lock(&self) -> std::sync::MutexGuard<'_, DocumentsInner> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The parsed state of `version`, taken out of the cache.
    fn take(&self, key: &(TenantId, Id), version: (u64, Timestamp)) -> Option<Value> {
        let mut inner = self.lock();
        let kept = inner.states.remove(key)?;
        inner.bytes -= kept.size;
        (kept.version == version).then_some(kept.state)
    }

    /// Forgets a document (deleted).
    fn forget(&self, key: &(TenantId, Id)) {
        let mut inner = self.lock();
        if let Some(kept) = inner.states.remove(key) {
            inner.bytes -= kept.size;
        }
    }

    /// Keeps the state of a committed `revision`, `size` bytes serialized (unless a newer
    /// one is kept), evicting the oldest kept beyond the budget.
    fn keep(&self, key: (TenantId, Id), version: (u64, Timestamp), size: u64, state: Value) {
        if size > DOCUMENT_BYTES_MAX {
            return;
        }
        let mut inner = self.lock();
        if let Some(kept) = inner.states.get(&key) {
            if kept.version.0 >= version.0 {
                return;
            }
            let old = kept.size;
            inner.bytes -= old;
        }
        inner.clock += 1;
        let at = inner.clock;
        inner.order.push_back((at, key.clone()));
        let kept = Kept {
            at,
            version,
            size,
            state,
        };
        inner.states.insert(key, kept);
        inner.bytes += size;
        while inner.bytes > DOCUMENTS_BYTES_MAX {
            let Some((at, oldest)) = inner.order.pop_front() else {
                break;
            };
            if inner.states.get(&oldest).is_some_and(|kept| kept.at == at)
                && let Some(kept) = inner.states.remove(&oldest)
            {
                inner.bytes -= kept.size;
            }
        }
        if inner.order.len() > 2 * inner.states.len() + 64 {
            let DocumentsInner { states, order, .. } = &mut *inner;
            order.retain(|(at, key)| states.get(key).is_some_and(|kept| kept.at == *at));
        }
    }
}

/// A live (not deleted) project, or 404.
fn load_live(tx: &mut dyn Tx, tenant: &TenantId, id: &Id) -> Result<ProjectRow> {
    tx.project(tenant, id)?
        .filter(|s| s.project.deleted_at.is_none())
        .ok_or_else(|| not_found(id))
}

fn not_found(id: &Id) -> Error {
    Error::NotFound {
        what: "project",
        id: id.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use lifeboat_core::{Id, TenantId, Timestamp};
    use serde_json::json;

    use super::{DOCUMENT_BYTES_MAX, DOCUMENTS_BYTES_MAX, Documents};

    fn v(revision: u64) -> (u64, Timestamp) {
        (revision, Timestamp(revision as i64))
    }

    fn key(n: u64) -> (TenantId, Id) {
        (
            TenantId::default(),
            Id::parse(&format!("d{n}")).expect("id"),
        )
    }

    /// A kept state serves only its own revision, once; an older revision never replaces
    /// a newer one; oversized states are not kept.
    #[test]
    fn a_kept_state_serves_its_own_revision_once() {
        let documents = Documents::default();
        documents.keep(key(1), v(5), 10, json!({"v": 5}));
        documents.keep(key(1), v(4), 10, json!({"v": 4}));
        assert_eq!(documents.take(&key(1), v(5)), Some(json!({"v": 5})));
        assert_eq!(documents.take(&key(1), v(5)), None, "taken");
        documents.keep(key(1), v(6), 10, json!({"v": 6}));
        assert_eq!(
            documents.take(&key(1), v(7)),
            None,
            "another server saved since"
        );
        assert_eq!(
            documents.take(&key(1), v(6)),
            None,
            "a stale entry is dropped"
        );
        documents.keep(key(2), v(1), DOCUMENT_BYTES_MAX + 1, json!({}));
        assert_eq!(documents.take(&key(2), v(1)), None);
    }

    /// Past the byte budget the oldest kept go first; the count of bytes stays exact.
    #[test]
    fn the_cache_stays_within_its_budget() {
        let documents = Documents::default();
        let size = DOCUMENT_BYTES_MAX;
        let fits = DOCUMENTS_BYTES_MAX / size;
        for n in 0..fits + 10 {
            documents.keep(key(n), v(1), size, json!({"n": n}));
            documents.keep(key(n), v(2), size, json!({"n": n}));
        }
        assert!(documents.lock().bytes <= DOCUMENTS_BYTES_MAX);
        assert_eq!(documents.take(&key(0), v(2)), None, "the oldest went first");
        assert_eq!(
            documents.take(&key(fits + 9), v(2)),
            Some(json!({"n": fits + 9}))
        );
        let inner = documents.lock();
        assert_eq!(
            inner.bytes,
            inner.states.values().map(|k| k.size).sum::<u64>()
        );
    }
}
