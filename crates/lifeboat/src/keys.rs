//! API keys: `lb_<id>_<secret>`, 256 random bits of secret, stored only as a SHA-256,
//! compared in constant time, revocable at once. Each acts for one tenant with scopes.

use std::collections::HashMap;
use std::sync::RwLock;

use lifeboat_core::{Error as DomainError, Name, Sha256, TenantId};
use lifeboat_store::{ApiKey, AuditEntry, Error, Page, PageRequest, Result, SessionToken};
use rand::RngCore;
use subtle::ConstantTimeEq;

use crate::Lifeboat;

/// The scopes a key may hold.
pub const SCOPES: [&str; 3] = ["read", "write", "admin"];

/// API keys read `lb_<id>_<secret>`.
pub const API_KEY_PREFIX: &str = "lb_";
/// Session tokens read `lbs_<id>_<secret>`.
pub const SESSION_TOKEN_PREFIX: &str = "lbs_";

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

/// Whether `secret` hashes to `stored`, compared in constant time.
fn secret_matches(secret: &str, stored: &str) -> bool {
    Sha256::of(secret.as_bytes())
        .as_str()
        .as_bytes()
        .ct_eq(stored.as_bytes())
        .into()
}

/// Keys seen so far, by id. This process is the only writer of keys, so the cache is
/// updated on every change and a revocation takes effect at once.
#[derive(Default)]
pub(crate) struct KeyCache(RwLock<HashMap<String, ApiKey>>);

impl Lifeboat {
    /// Makes a key for `tenant` with `scopes`; answers its record and the whole key,
    /// which is shown this once and stored only as a hash.
    pub async fn create_key(&self, tenant: &str, scopes: &[String]) -> Result<(ApiKey, String)> {
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
        let record = ApiKey {
            id: id.clone(),
            tenant: TenantId::new(tenant.as_str()),
            secret_sha256: Sha256::of(secret.as_bytes()).as_str().to_owned(),
            scopes,
            created_at: self.now(),
            revoked_at: None,
        };
        self.inner.store.create_key(record.clone()).await?;
        Ok((record, format!("{API_KEY_PREFIX}{id}_{secret}")))
    }

    /// Keys of `tenant`, or of every tenant, by id.
    pub async fn keys(
        &self,
        tenant: Option<&TenantId>,
        page: &PageRequest,
    ) -> Result<Page<ApiKey>> {
        self.inner.store.keys(tenant, page).await
    }

    /// Revokes a key at once (in `tenant`, when given).
    pub async fn revoke_key(&self, id: &str, tenant: Option<&TenantId>) -> Result<ApiKey> {
        let revoked = self
            .inner
            .store
            .revoke_key(id, tenant, self.now())
            .await?
            .ok_or_else(|| Error::NotFound {
                what: "key",
                id: id.to_owned(),
            })?;
        if let Ok(mut cache) = self.inner.keys.0.write() {
            cache.insert(revoked.id.clone(), revoked.clone());
        }
        Ok(revoked)
    }

    /// The live key a bearer token names, if the token is one.
    pub async fn authenticate(&self, token: &str) -> Result<Option<ApiKey>> {
        let Some((id, secret)) = split_token(token, API_KEY_PREFIX) else {
            return Ok(None);
        };
        let cached = self
            .inner
            .keys
            .0
            .read()
            .ok()
            .and_then(|cache| cache.get(id).cloned());
        let key = match cached {
            Some(key) => key,
            None => match self.inner.store.key(id).await? {
                Some(key) => {
                    if let Ok(mut cache) = self.inner.keys.0.write() {
                        cache.insert(key.id.clone(), key.clone());
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
        self.inner.store.audit(entry).await
    }

    /// The audit trail, newest first: of `tenant`, or of every tenant.
    pub async fn audit_trail(
        &self,
        tenant: Option<&TenantId>,
        page: &PageRequest,
    ) -> Result<Page<AuditEntry>> {
        self.inner.store.audit_trail(tenant, page).await
    }
}

impl Lifeboat {
    /// Makes a token that may act only on `session` (its heartbeats, checkpoints, assets
    /// and completion) — for a browser or worker that must not hold a tenant key. Answers
    /// its record and the whole token, shown this once.
    pub async fn create_session_token(
        &self,
        tenant: &TenantId,
        session: &lifeboat_core::Id,
    ) -> Result<(SessionToken, String)> {
        let (id, secret) = new_credential();
        let record = SessionToken {
            id: id.clone(),
            tenant: tenant.clone(),
            session_id: session.clone(),
            secret_sha256: Sha256::of(secret.as_bytes()).as_str().to_owned(),
            created_at: self.now(),
            attempt: 0,
        };
        let record = self.inner.store.create_session_token(record).await?;
        Ok((record, format!("{SESSION_TOKEN_PREFIX}{id}_{secret}")))
    }

    /// The session token a bearer token names, if it is one and the session it was made
    /// for has not ended (completed, cancelled or purged). A later session that reuses the
    /// id is another session: the token never works for it.
    pub async fn authenticate_session_token(&self, token: &str) -> Result<Option<SessionToken>> {
        let Some((id, secret)) = split_token(token, SESSION_TOKEN_PREFIX) else {
            return Ok(None);
        };
        let Some((record, status)) = self.inner.store.session_token(id).await? else {
            return Ok(None);
        };
        let live = secret_matches(secret, &record.secret_sha256) && !status.is_final();
        Ok(live.then_some(record))
    }
}
