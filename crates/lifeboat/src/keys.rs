//! API keys: `lb_<id>_<secret>`, 256 random bits of secret, stored only as a SHA-256,
//! compared in constant time, revocable at once. Each acts for one tenant with scopes.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use lifeboat_core::{Error as DomainError, Id, Name, Sha256, TenantId, Timestamp};
use lifeboat_store::{
    Ack, ApiKey, AuditEntry, Error, Page, PageRequest, ProjectToken, Result, SessionToken, Tx,
};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::sessions::load;
use crate::store::{Undecodable, once_with};
use crate::{IdempotencyKey, Lifeboat, Outcome, page};

/// The scopes a key may hold.
pub const SCOPES: [&str; 3] = ["read", "write", "admin"];

/// API keys read `lb_<id>_<secret>`.
pub const API_KEY_PREFIX: &str = "lb_";
/// Session tokens read `lbs_<id>_<secret>`.
pub const SESSION_TOKEN_PREFIX: &str = "lbs_";
/// Project tokens read `lbp_<id>_<secret>`.
pub const PROJECT_TOKEN_PREFIX: &str = "lbp_";

/// The scopes a project token may hold.
pub const PROJECT_TOKEN_SCOPES: [&str; 2] = ["read", "write"];
/// How long a project token lives unless asked otherwise: a day.
pub const PROJECT_TOKEN_TTL_DEFAULT_MS: u64 = 24 * 3_600_000;
/// The longest a project token may live: 30 days.
pub const PROJECT_TOKEN_TTL_MAX_MS: u64 = 30 * 24 * 3_600_000;

/// The `(id, secret)` of a bearer token with `prefix`, if it has that shape.
pub fn split_token<'t>(token: &'t str, prefix: &str) -> Option<(&'t str, &'t str)> {
    token.strip_prefix(prefix)?.split_once('_')
}

/// A new credential: a 64-bit public id and a 256-bit secret, both hex.
fn new_credential() -> (String, String) {
    let mut id = [0u8; 8];
    let mut secret = [0u8; 32];
    rand::rng().fill_bytes(&mut id);
    rand::rng().fill_bytes(&mut secret);
    (hex::encode(id), hex::encode(secret))
}

/// A credential just made, as the stored outcome of its write with an `Idempotency-Key`:
/// its id and the whole token, so that a retry answers the same credential (SPEC §4) for
/// the 24 h the key is remembered, after which cleanup removes it. It is the one place a
/// secret is kept other than as a hash.
#[derive(Serialize, Deserialize)]
struct Made {
    id: String,
    token: String,
}

fn encode_made(id: &str, token: &str) -> serde_json::Result<Vec<u8>> {
    serde_json::to_vec(&Made {
        id: id.to_owned(),
        token: token.to_owned(),
    })
}

/// The credential a stored outcome names, its record read again with `find`.
fn decode_made<R>(
    tx: &mut dyn Tx,
    stored: &[u8],
    find: impl FnOnce(&mut dyn Tx, &str) -> Result<Option<R>>,
) -> std::result::Result<(R, String), Undecodable> {
    let made: Made = serde_json::from_slice(stored)?;
    let record = find(tx, &made.id)
        .map_err(Undecodable::Store)?
        .ok_or_else(|| {
            Undecodable::Store(Error::NotFound {
                what: "credential",
                id: made.id.clone(),
            })
        })?;
    Ok((record, made.token))
}

/// Whether `secret` hashes to `stored`, compared in constant time.
fn secret_matches(secret: &str, stored: &str) -> bool {
    Sha256::of(secret.as_bytes())
        .as_str()
        .as_bytes()
        .ct_eq(stored.as_bytes())
        .into()
}

/// Keys seen so far, by id, with when they were read. A revocation through this process
/// updates it at once; one through another server on the same database (a shared store)
/// is seen when the entry is older than `KEY_CACHE_TTL` and read again (a revoked key is
/// final, so it stays). A store only this process writes never needs the re-read.
#[derive(Default)]
pub(crate) struct KeyCache(RwLock<HashMap<String, (ApiKey, Instant)>>);

/// How long a live key is trusted from the cache: a revocation made on another server
/// takes effect here within this.
const KEY_CACHE_TTL: Duration = Duration::from_millis(500);

impl Lifeboat {
    /// Makes a key for `tenant` with `scopes`; answers its record and the whole key,
    /// which is shown this once and stored only as a hash.
    pub async fn create_key(&self, tenant: &str, scopes: &[String]) -> Result<(ApiKey, String)> {
        let made = self
            .create_key_with(&TenantId::default(), tenant, scopes, None)
            .await?;
        Ok(made.into_inner())
    }

    /// [`Lifeboat::create_key`] asked by a caller of tenant `scope`, idempotent with `key`
    /// (a retry answers the same key: the stored outcome keeps it for the key's 24 h).
    pub async fn create_key_with(
        &self,
        scope: &TenantId,
        tenant: &str,
        scopes: &[String],
        key: Option<IdempotencyKey>,
    ) -> Result<Outcome<(ApiKey, String)>> {
        let tenant = Name::parse(tenant).map_err(|_| DomainError::Invalid {
            field: "tenant",
            message: format!(
                "{tenant:?} is not a tenant name (^[A-Za-z0-9][A-Za-z0-9._-]{{0,63}}$)"
            ),
        })?;
        if scopes.is_empty() || scopes.iter().any(|s| !SCOPES.contains(&s.as_str())) {
            return Err(DomainError::Invalid {
                field: "scopes",
                message: "one or more of read, write, admin".to_owned(),
            }
            .into());
        }
        let mut scopes: Vec<String> = scopes.to_vec();
        scopes.sort();
        scopes.dedup();
        let (id, secret) = new_credential();
        let now = self.now();
        let record = ApiKey {
            id: id.clone(),
            tenant: TenantId::new(tenant.as_str()),
            secret_sha256: Sha256::of(secret.as_bytes()).as_str().to_owned(),
            scopes,
            created_at: now,
            revoked_at: None,
        };
        let made = (record, format!("{API_KEY_PREFIX}{id}_{secret}"));
        let scope = scope.clone();
        self.write(Ack::AfterCommit, move |tx| {
            once_with(
                tx,
                &scope,
                key.as_ref(),
                now,
                |(record, token): &(ApiKey, String)| encode_made(&record.id, token),
                |tx, stored| decode_made(tx, stored, |tx, id| tx.key(id)),
                |tx| {
                    tx.insert_key(&made.0)?;
                    Ok(Ok(made.clone()))
                },
            )
        })
        .await
    }

    /// Keys of `tenant`, or of every tenant, by id.
    pub async fn keys(
        &self,
        tenant: Option<&TenantId>,
        page: &PageRequest,
    ) -> Result<Page<ApiKey>> {
        let after = page::decode_text_or_start(page.cursor.as_deref())?;
        let (tenant, limit) = (tenant.cloned(), page.limit);
        let found = self
            .read(move |tx| tx.keys_after(tenant.as_ref(), &after, limit.saturating_add(1)))
            .await?;
        let rows = found
            .into_iter()
            .map(|key| (page::encode_text(&key.id), key));
        Ok(page::within(rows, |_| 0, limit))
    }

    /// Revokes a key at once (in `tenant`, when given).
    pub async fn revoke_key(&self, id: &str, tenant: Option<&TenantId>) -> Result<ApiKey> {
        let (key_id, tenant, now) = (id.to_owned(), tenant.cloned(), self.now());
        let revoked = self
            .write(Ack::AfterCommit, move |tx| {
                let found = tx
                    .key(&key_id)?
                    .filter(|k| tenant.as_ref().is_none_or(|t| *t == k.tenant));
                let Some(found) = found else {
                    return Ok(Err(Error::NotFound {
                        what: "key",
                        id: key_id.clone(),
                    }));
                };
                tx.revoke_key(&key_id, now)?;
                Ok(Ok(tx.key(&key_id)?.unwrap_or(found)))
            })
            .await?;
        if let Ok(mut cache) = self.inner.keys.0.write() {
            cache.insert(revoked.id.clone(), (revoked.clone(), Instant::now()));
        }
        Ok(revoked)
    }

    /// The live key a bearer token names, if the token is one.
    pub async fn authenticate(&self, token: &str) -> Result<Option<ApiKey>> {
        let Some((id, secret)) = split_token(token, API_KEY_PREFIX) else {
            return Ok(None);
        };
        let key = match self.cached_key(id) {
            Some(key) => key,
            None => match self.stored_key(id).await? {
                Some(key) => {
                    if let Ok(mut cache) = self.inner.keys.0.write() {
                        cache.insert(key.id.clone(), (key.clone(), Instant::now()));
                    }
                    key
                }
                None => return Ok(None),
            },
        };
        let matches = secret_matches(secret, &key.secret_sha256);
        Ok((matches && key.revoked_at.is_none()).then_some(key))
    }
}

impl Lifeboat {
    /// Key `id` from the cache, unless it is live, the store is shared and it was read more
    /// than `KEY_CACHE_TTL` ago.
    fn cached_key(&self, id: &str) -> Option<ApiKey> {
        let cache = self.inner.keys.0.read().ok()?;
        let (key, read) = cache.get(id)?;
        let fresh = !self.inner.store.shared() || read.elapsed() < KEY_CACHE_TTL;
        (key.revoked_at.is_some() || fresh).then(|| key.clone())
    }

    /// One key's record by id (revoked ones too).
    async fn stored_key(&self, id: &str) -> Result<Option<ApiKey>> {
        let id = id.to_owned();
        self.read(move |tx| tx.key(&id)).await
    }

    /// Appends to the audit trail: `actor` (a key id or `bootstrap`) did `action` to
    /// `resource`.
    pub async fn audit(
        &self,
        tenant: &TenantId,
        actor: &str,
        action: &str,
        resource: &str,
        detail: serde_json::Value,
    ) -> Result<()> {
        let entry = AuditEntry {
            seq: 0,
            tenant: tenant.clone(),
            at: self.now(),
            actor: actor.to_owned(),
            action: action.to_owned(),
            resource: resource.to_owned(),
            detail,
        };
        self.write(Ack::AfterCommit, move |tx| Ok(Ok(tx.insert_audit(&entry)?)))
            .await
    }

    /// The audit trail, newest first: of `tenant`, or of every tenant.
    pub async fn audit_trail(
        &self,
        tenant: Option<&TenantId>,
        page: &PageRequest,
    ) -> Result<Page<AuditEntry>> {
        let before = page::decode(page.cursor.as_deref())?.unwrap_or(i64::MAX);
        let (tenant, limit) = (tenant.cloned(), page.limit);
        let rows = self
            .read(move |tx| tx.audit_before(tenant.as_ref(), before, limit.saturating_add(1)))
            .await?;
        Ok(page::numbered(rows, limit))
    }
}

impl Lifeboat {
    /// Makes a token that may act only on `session` (its heartbeats, checkpoints, assets
    /// and completion) — for a browser or worker that must not hold a tenant key — unless
    /// the session has ended (completed or cancelled). Answers its record and the whole
    /// token, shown this once — and with `key` to its retries too: the stored outcome keeps
    /// the token for the key's 24 h.
    pub async fn create_session_token_with(
        &self,
        tenant: &TenantId,
        session: &lifeboat_core::Id,
        key: Option<IdempotencyKey>,
    ) -> Result<Outcome<(SessionToken, String)>> {
        let (id, secret) = new_credential();
        let now = self.now();
        let record = SessionToken {
            id: id.clone(),
            tenant: tenant.clone(),
            session_id: session.clone(),
            secret_sha256: Sha256::of(secret.as_bytes()).as_str().to_owned(),
            created_at: now,
            attempt: 0,
        };
        let token = format!("{SESSION_TOKEN_PREFIX}{id}_{secret}");
        self.write_about(tenant, session, Ack::AfterCommit, move |tx| {
            once_with(
                tx,
                &record.tenant,
                key.as_ref(),
                now,
                |(record, token): &(SessionToken, String)| encode_made(&record.id, token),
                |tx, stored| {
                    decode_made(tx, stored, |tx, id| {
                        Ok(tx.session_token(id)?.map(|(record, _)| record))
                    })
                },
                |tx| {
                    let (row, session) = load(tx, &record.tenant, &record.session_id)?;
                    // A token of an ended session could never act (it would answer 401).
                    if session.status.is_final() {
                        return Ok(Err(DomainError::InvalidState {
                            operation: "making a session token",
                            status: session.status.as_str(),
                            allowed: "not completed or cancelled",
                        }
                        .into()));
                    }
                    // The token acts for the session's current attempt, read in this write.
                    let record = SessionToken {
                        attempt: session.attempt,
                        ..record.clone()
                    };
                    tx.insert_session_token(row, &record)?;
                    Ok(Ok((record, token.clone())))
                },
            )
        })
        .await
    }

    /// The session token a bearer token names, if it is one and the session it was made
    /// for has not ended (completed, cancelled or purged). A later session that reuses the
    /// id is another session: the token never works for it.
    pub async fn authenticate_session_token(&self, token: &str) -> Result<Option<SessionToken>> {
        let Some((id, secret)) = split_token(token, SESSION_TOKEN_PREFIX) else {
            return Ok(None);
        };
        let id_owned = id.to_owned();
        let found = self.read(move |tx| tx.session_token(&id_owned)).await?;
        let Some((record, status)) = found else {
            return Ok(None);
        };
        let live = secret_matches(secret, &record.secret_sha256) && !status.is_final();
        Ok(live.then_some(record))
    }
}

impl Lifeboat {
    /// Makes a token that may act only on project `project` of `tenant` (SPEC §9 r2), for
    /// a page that must not hold a tenant key: `ttl_ms` (default a day, at most 30 days),
    /// `scopes` of `read` and `write` (default both). The project need not exist yet: the
    /// page may create it. Answers its record and the whole token, shown this once — and
    /// with `key` to its retries too: the stored outcome keeps the token for the key's 24 h.
    pub async fn create_project_token_with(
        &self,
        tenant: &TenantId,
        project: &Id,
        ttl_ms: Option<u64>,
        scopes: Option<&[String]>,
        key: Option<IdempotencyKey>,
    ) -> Result<Outcome<(ProjectToken, String)>> {
        let ttl_ms = ttl_ms.unwrap_or(PROJECT_TOKEN_TTL_DEFAULT_MS);
        if ttl_ms == 0 || ttl_ms > PROJECT_TOKEN_TTL_MAX_MS {
            return Err(DomainError::Invalid {
                field: "ttl_ms",
                message: format!("between 1 and {PROJECT_TOKEN_TTL_MAX_MS} (30 days)"),
            }
            .into());
        }
        let mut scopes: Vec<String> = match scopes {
            Some(scopes) => scopes.to_vec(),
            None => PROJECT_TOKEN_SCOPES.map(str::to_owned).to_vec(),
        };
        if scopes.is_empty()
            || scopes
                .iter()
                .any(|s| !PROJECT_TOKEN_SCOPES.contains(&s.as_str()))
        {
            return Err(DomainError::Invalid {
                field: "scopes",
                message: "one or both of read, write".to_owned(),
            }
            .into());
        }
        scopes.sort();
        scopes.dedup();
        let (id, secret) = new_credential();
        let now = self.now();
        let record = ProjectToken {
            id: id.clone(),
            tenant: tenant.clone(),
            project_id: project.clone(),
            scopes,
            secret_sha256: Sha256::of(secret.as_bytes()).as_str().to_owned(),
            created_at: now,
            expires_at: Timestamp(now.0.saturating_add_unsigned(ttl_ms)),
            revoked_at: None,
        };
        let made = (record, format!("{PROJECT_TOKEN_PREFIX}{id}_{secret}"));
        let tenant = tenant.clone();
        self.write(Ack::AfterCommit, move |tx| {
            once_with(
                tx,
                &tenant,
                key.as_ref(),
                now,
                |(record, token): &(ProjectToken, String)| encode_made(&record.id, token),
                |tx, stored| decode_made(tx, stored, |tx, id| tx.project_token(id)),
                |tx| {
                    tx.insert_project_token(&made.0)?;
                    Ok(Ok(made.clone()))
                },
            )
        })
        .await
    }

    /// Revokes token `token` of project `project` in `tenant` at once; 404 if there is no
    /// such token of that project.
    pub async fn revoke_project_token(
        &self,
        tenant: &TenantId,
        project: &Id,
        token: &str,
    ) -> Result<ProjectToken> {
        let (tenant, project, id, now) = (
            tenant.clone(),
            project.clone(),
            token.to_owned(),
            self.now(),
        );
        self.write(Ack::AfterCommit, move |tx| {
            let found = tx
                .project_token(&id)?
                .filter(|t| t.tenant == tenant && t.project_id == project);
            let Some(found) = found else {
                return Ok(Err(Error::NotFound {
                    what: "project token",
                    id: id.clone(),
                }));
            };
            tx.revoke_project_token(&id, now)?;
            Ok(Ok(ProjectToken {
                revoked_at: found.revoked_at.or(Some(now)),
                ..found
            }))
        })
        .await
    }

    /// Whether project token `id` still works (stored, not revoked, not expired): what a
    /// long-lived answer, an event stream, asks again while it lasts.
    pub async fn project_token_live(&self, id: &str) -> Result<bool> {
        let id = id.to_owned();
        let record = self.read(move |tx| tx.project_token(&id)).await?;
        let now = self.now();
        Ok(record.is_some_and(|t| t.revoked_at.is_none() && now < t.expires_at))
    }

    /// Whether API key `id` is still live (not revoked), from the key cache when it can.
    pub async fn key_live(&self, id: &str) -> Result<bool> {
        let key = match self.cached_key(id) {
            Some(key) => Some(key),
            None => self.stored_key(id).await?,
        };
        Ok(key.is_some_and(|k| k.revoked_at.is_none()))
    }

    /// The live project token a bearer token names: the secret matches, it is not
    /// revoked and has not expired.
    pub async fn authenticate_project_token(&self, token: &str) -> Result<Option<ProjectToken>> {
        let Some((id, secret)) = split_token(token, PROJECT_TOKEN_PREFIX) else {
            return Ok(None);
        };
        let id = id.to_owned();
        let Some(record) = self.read(move |tx| tx.project_token(&id)).await? else {
            return Ok(None);
        };
        let live = secret_matches(secret, &record.secret_sha256)
            && record.revoked_at.is_none()
            && self.now() < record.expires_at;
        Ok(live.then_some(record))
    }
}
