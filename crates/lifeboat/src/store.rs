//! The engine's typed view of a [`Store`]: run a write or a read job over [`Tx`] and get
//! its result back, and make a write idempotent by storing its outcome with it.

use std::any::Any;

use lifeboat_core::{TenantId, Timestamp};
use lifeboat_store::{Ack, Error, IDEMPOTENCY_KEY_TTL_MS, IdempotencyKey, JobResult, Result, Tx};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{Lifeboat, Outcome};

fn unbox<T: 'static>(answer: Box<dyn Any + Send>) -> Result<T> {
    answer
        .downcast::<T>()
        .map(|value| *value)
        .map_err(|_| Error::Internal("a store job answered another type than its own".to_owned()))
}

impl Lifeboat {
    /// Runs `job` in a write transaction; answers once its fate is durable (see [`Ack`]).
    pub(crate) async fn write<T, F>(&self, ack: Ack, job: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut dyn Tx) -> JobResult<T> + Send + 'static,
    {
        let job = Box::new(move |tx: &mut dyn Tx| {
            job(tx).map(|answer| answer.map(|value| Box::new(value) as Box<dyn Any + Send>))
        });
        unbox(self.inner.store.write(ack, job).await?)
    }

    /// Runs `job` on a consistent snapshot.
    pub(crate) async fn read<T, F>(&self, job: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut dyn Tx) -> Result<T> + Send + 'static,
    {
        let job = Box::new(move |tx: &mut dyn Tx| {
            job(tx).map(|value| Box::new(value) as Box<dyn Any + Send>)
        });
        unbox(self.inner.store.read(job).await?)
    }
}

/// Runs `work` once per `Idempotency-Key`, inside the write's transaction: a retry with the
/// same request gets the outcome stored the first time, the same key on another request is
/// refused, and otherwise `work` runs and its outcome is stored with it. Refusals are not
/// stored: a retried refusal is evaluated again (it changed nothing).
pub(crate) fn once<T: Serialize + DeserializeOwned>(
    tx: &mut dyn Tx,
    tenant: &TenantId,
    key: Option<&IdempotencyKey>,
    now: Timestamp,
    work: impl FnOnce(&mut dyn Tx) -> JobResult<T>,
) -> JobResult<Outcome<T>> {
    let Some(key) = key else {
        return Ok(work(tx)?.map(Outcome::Done));
    };
    let fresh_after = now.minus_ms(IDEMPOTENCY_KEY_TTL_MS);
    if let Some((fingerprint, stored)) = tx.outcome(tenant, key, fresh_after)? {
        if fingerprint != key.fingerprint {
            return Ok(Err(Error::IdempotencyKeyReused(key.key.clone())));
        }
        let value = serde_json::from_slice(&stored).map_err(|e| {
            Error::Internal(format!("the stored outcome of a write cannot be read: {e}"))
        })?;
        return Ok(Ok(Outcome::Replayed(value)));
    }
    let done = match work(tx)? {
        Ok(done) => done,
        Err(refusal) => return Ok(Err(refusal)),
    };
    let encoded = serde_json::to_vec(&done)
        .map_err(|e| Error::Internal(format!("cannot encode a write's outcome: {e}")))?;
    tx.store_outcome(tenant, key, &encoded, now)?;
    Ok(Ok(Outcome::Done(done)))
}
