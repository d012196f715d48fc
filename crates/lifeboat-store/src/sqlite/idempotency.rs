//! `Idempotency-Key` inside the write's transaction: look the key up before the write,
//! store the response with it. A retry finds the response or, if the write never
//! committed, nothing.

use lifeboat_core::{TenantId, Timestamp};
use rusqlite::{Connection, OptionalExtension, params};

use super::translate;
use crate::{Error, IDEMPOTENCY_KEY_TTL_MS, Idempotency, Outcome, Result, StoredResponse};

/// Runs `work` once per key: answers the stored response for a retry with the same
/// fingerprint, refuses a reuse with another one, and otherwise runs `work` and stores
/// its rendered response. Refusals are not stored: a retried refusal is evaluated again.
pub(super) fn once<T>(
    conn: &Connection,
    tenant: &TenantId,
    idempotency: Option<Idempotency<T>>,
    now: Timestamp,
    work: impl FnOnce() -> Result<Result<T>>,
) -> Result<Result<Outcome<T>>> {
    let Some(idempotency) = idempotency else {
        return Ok(work()?.map(Outcome::Done));
    };
    let key = &idempotency.key;
    let fresh_after = now.minus_ms(IDEMPOTENCY_KEY_TTL_MS).0;
    let stored = conn
        .prepare_cached(
            "SELECT fingerprint, status, headers, body FROM idempotency_keys \
             WHERE tenant = ?1 AND route = ?2 AND key = ?3 AND created_at > ?4",
        )
        .map_err(translate)?
        .query_row(
            params![tenant.as_str(), key.route, key.key, fresh_after],
            |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, u16>(1)?,
                    row.get::<_, String>(2)?,
                    row.get::<_, Vec<u8>>(3)?,
                ))
            },
        )
        .optional()
        .map_err(translate)?;
    if let Some((fingerprint, status, headers, body)) = stored {
        if fingerprint != key.fingerprint {
            return Ok(Err(Error::IdempotencyKeyReused(key.key.clone())));
        }
        let headers = serde_json::from_str(&headers).map_err(|e| {
            Error::Internal(format!("a stored response's headers are not readable: {e}"))
        })?;
        return Ok(Ok(Outcome::Replayed(StoredResponse {
            status,
            headers,
            body,
        })));
    }
    let done = match work()? {
        Ok(done) => done,
        Err(refusal) => return Ok(Err(refusal)),
    };
    let Idempotency { key, render } = idempotency;
    let response = render(&done);
    let headers = serde_json::to_string(&response.headers).unwrap_or_else(|_| "[]".to_owned());
    conn.prepare_cached(
        "INSERT OR REPLACE INTO idempotency_keys \
         (tenant, route, key, fingerprint, status, headers, body, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )
    .map_err(translate)?
    .execute(params![
        tenant.as_str(),
        key.route,
        key.key,
        key.fingerprint,
        response.status,
        headers,
        response.body,
        now.0,
    ])
    .map_err(translate)?;
    Ok(Ok(Outcome::Done(done)))
}
