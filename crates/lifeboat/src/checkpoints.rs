//! Reads of checkpoints, and the quarantine of those whose bytes no longer match their
//! hash. Checkpoints are written by the session scripts (`sessions.rs`), in the same
//! transaction as the session they belong to.

use lifeboat_core::{AssetCounts, Checkpoint, Id, TenantId};
use lifeboat_store::{Ack, Error, PAGE_BYTES_MAX, Page, PageRequest, Result, Tx};

use crate::sessions::load;
use crate::{Lifeboat, Verification, page};

/// Checkpoints read at a time while a page fills.
const CHUNK: u32 = 64;

/// The bytes a checkpoint adds to a list page.
pub(crate) fn bytes(c: &Checkpoint) -> usize {
    c.data.len() + c.position.as_ref().map_or(0, String::len) + 128 * c.assets.len()
}

impl Lifeboat {
    /// A session's checkpoints in seq order.
    pub async fn checkpoints(
        &self,
        tenant: &TenantId,
        id: &Id,
        page: &PageRequest,
    ) -> Result<Page<Checkpoint>> {
        let after = page::decode(page.cursor.as_deref())?.unwrap_or(0);
        let after = u64::try_from(after).map_err(|_| Error::BadCursor)?;
        let (tenant, id, limit) = (tenant.clone(), id.clone(), page.limit);
        let fetched = self
            .read(move |tx| {
                let (row, _) = load(tx, &tenant, &id)?;
                fetch_within(tx, row, after, limit)
            })
            .await?;
        let rows = fetched
            .into_iter()
            .map(|c| (page::encode(i64::try_from(c.seq).unwrap_or(i64::MAX)), c));
        Ok(page::within(rows, bytes, limit))
    }

    /// Checkpoint `seq`, or the newest valid one with `None`.
    pub async fn checkpoint_at(
        &self,
        tenant: &TenantId,
        id: &Id,
        seq: Option<u64>,
    ) -> Result<Checkpoint> {
        let (tenant, id) = (tenant.clone(), id.clone());
        self.read(move |tx| {
            let (row, _) = load(tx, &tenant, &id)?;
            // One row at a time: the newest valid one is almost always the newest.
            let found = match seq {
                Some(seq) => tx.checkpoint(row, seq)?,
                None => {
                    let mut before = u64::MAX;
                    loop {
                        match tx.checkpoint_before(row, before)? {
                            Some(c) if c.valid => break Some(c),
                            Some(c) => before = c.seq,
                            None => break None,
                        }
                    }
                }
            };
            found.ok_or_else(|| Error::NotFound {
                what: "checkpoint",
                id: seq.map_or_else(|| "latest valid".to_owned(), |s| s.to_string()),
            })
        })
        .await
    }

    /// Re-hashes a session's checkpoints on a read snapshot, then quarantines for good
    /// those whose bytes no longer match (the writer only marks what was found).
    pub(crate) async fn verify_checkpoints(
        &self,
        tenant: &TenantId,
        id: &Id,
    ) -> Result<Verification> {
        let about = (tenant, id);
        let (tenant, id) = (tenant.clone(), id.clone());
        let (row, checkpoints) = self
            .read(move |tx| {
                let (row, _) = load(tx, &tenant, &id)?;
                Ok((row, tx.checkpoints(row)?))
            })
            .await?;
        let invalid: Vec<u64> = checkpoints
            .iter()
            .filter(|c| !c.valid)
            .map(|c| c.seq)
            .collect();
        if !invalid.is_empty() {
            let seqs = invalid.clone();
            self.write_about(about.0, about.1, Ack::AfterCommit, move |tx| {
                for &seq in &seqs {
                    tx.quarantine(row, seq)?;
                }
                Ok(Ok(()))
            })
            .await?;
        }
        let issues = invalid
            .iter()
            .map(|seq| format!("checkpoint {seq}: stored data does not match its sha256"))
            .collect();
        Ok(Verification {
            total: checkpoints.len() as u64,
            valid: (checkpoints.len() - invalid.len()) as u64,
            invalid,
            assets: AssetCounts::default(),
            issues,
        })
    }
}

/// Up to `limit.saturating_add(1)` checkpoints after `after`, read in chunks that stop one checkpoint
/// past a page's byte budget (so the page knows there is more): a page of 1,000
/// checkpoints of 16 MiB each is never read whole.
fn fetch_within(tx: &mut dyn Tx, row: i64, after: u64, limit: u32) -> Result<Vec<Checkpoint>> {
    let mut fetched: Vec<Checkpoint> = Vec::new();
    let mut read = 0;
    let mut after = after;
    let wanted = limit.saturating_add(1);
    loop {
        let want = CHUNK.min(wanted.saturating_sub(fetched.len() as u32));
        if want == 0 {
            return Ok(fetched);
        }
        let chunk = tx.checkpoints_after(row, after, want)?;
        let exhausted = chunk.len() < want as usize;
        for checkpoint in chunk {
            let full = read >= PAGE_BYTES_MAX;
            read += bytes(&checkpoint);
            after = checkpoint.seq;
            fetched.push(checkpoint);
            if full {
                return Ok(fetched);
            }
        }
        if exhausted || fetched.len() > limit as usize {
            return Ok(fetched);
        }
    }
}
