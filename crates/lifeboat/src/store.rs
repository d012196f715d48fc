//! The engine's typed view of a [`Store`]: run a write or a read job over [`Tx`] and get
//! its result back, and make a write idempotent by storing its outcome with it.

use std::any::Any;

use lifeboat_core::{Id, Owner, TenantId, Timestamp};
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

/// `job` as a [`lifeboat_store::WriteJob`].
fn erase<T, F>(mut job: F) -> lifeboat_store::WriteJob
where
    T: Send + 'static,
    F: FnMut(&mut dyn Tx) -> JobResult<T> + Send + 'static,
{
    Box::new(move |tx: &mut dyn Tx| {
        job(tx).map(|answer| answer.map(|value| Box::new(value) as Box<dyn Any + Send>))
    })
}

impl Lifeboat {
    /// Runs `job` in a write transaction; answers once its fate is durable (see [`Ack`]).
    /// The store may run `job` again after a run that a concurrent write rolled back (see
    /// [`lifeboat_store::WriteJob`]).
    pub(crate) async fn write<T, F>(&self, ack: Ack, job: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnMut(&mut dyn Tx) -> JobResult<T> + Send + 'static,
    {
        unbox(self.inner.store.write(ack, erase(job)).await?)
    }

    /// [`Lifeboat::write_about`] the session that owns an asset, or [`Lifeboat::write`] for
    /// a project's.
    pub(crate) async fn write_for<T, F>(
        &self,
        tenant: &TenantId,
        owner: &Owner,
        ack: Ack,
        job: F,
    ) -> Result<T>
    where
        T: Send + 'static,
        F: FnMut(&mut dyn Tx) -> JobResult<T> + Send + 'static,
    {
        match owner {
            Owner::Session(id) => self.write_about(tenant, id, ack, job).await,
            Owner::Project(_) => self.write(ack, job).await,
        }
    }

    /// [`Lifeboat::write`] for a job about session `id` of `tenant`, touching no other
    /// session's rows: a store with several writers runs every write of one session on the
    /// same one, and may lock the session before the job runs (`Store::write_about`).
    pub(crate) async fn write_about<T, F>(
        &self,
        tenant: &TenantId,
        id: &Id,
        ack: Ack,
        job: F,
    ) -> Result<T>
    where
        T: Send + 'static,
        F: FnMut(&mut dyn Tx) -> JobResult<T> + Send + 'static,
    {
        unbox(
            self.inner
                .store
                .write_about(tenant, id, ack, erase(job))
                .await?,
        )
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
    let encode = |done: &T| serde_json::to_vec(done);
    let decode = |_: &mut dyn Tx, stored: &[u8]| Ok(serde_json::from_slice(stored)?);
    once_with(tx, tenant, key, now, encode, decode, work)
}

/// [`once`], storing the outcome as `encode` writes it and reading it back with `decode`
/// (in the retry's transaction): for outcomes of which a retry needs less than all.
pub(crate) fn once_with<T>(
    tx: &mut dyn Tx,
    tenant: &TenantId,
    key: Option<&IdempotencyKey>,
    now: Timestamp,
    encode: impl FnOnce(&T) -> serde_json::Result<Vec<u8>>,
    decode: impl FnOnce(&mut dyn Tx, &[u8]) -> Result<T, Undecodable>,
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
        let value = decode(tx, &stored).map_err(|e| match e {
            Undecodable::Json(e) => {
                Error::Internal(format!("the stored outcome of a write cannot be read: {e}"))
            }
            Undecodable::Store(e) => e,
        })?;
        return Ok(Ok(Outcome::Replayed(value)));
    }
    let done = match work(tx)? {
        Ok(done) => done,
        Err(refusal) => return Ok(Err(refusal)),
    };
    let encoded = encode(&done)
        .map_err(|e| Error::Internal(format!("cannot encode a write's outcome: {e}")))?;
    tx.store_outcome(tenant, key, &encoded, now)?;
    Ok(Ok(Outcome::Done(done)))
}

/// Why a stored outcome could not be read back.
pub(crate) enum Undecodable {
    /// It is not what was stored.
    Json(serde_json::Error),
    /// The rows it refers to could not be read.
    Store(Error),
}

impl From<serde_json::Error> for Undecodable {
    fn from(e: serde_json::Error) -> Undecodable {
        Undecodable::Json(e)
    }
}

impl From<Error> for Undecodable {
    fn from(e: Error) -> Undecodable {
        Undecodable::Store(e)
    }
}
