//! Asset records, each write once as a script over the store's rows: record an upload,
//! an append or a registration (fenced by attempt), remove one, note a verification's
//! verdict. The bytes themselves are placed and checked outside any transaction (see
//! `mod.rs` and `verify.rs`).

use lifeboat_core::{
    Asset, AssetName, AssetStatus, Error as DomainError, FileVersion, Owner, Storage, TenantId,
    Timestamp,
};
use lifeboat_store::{Ack, Error, FileRef, Page, PageRequest, Result, StoreCheck, Tx};

use crate::{Lifeboat, page};

impl Lifeboat {
    /// An owner's assets with their last verification status, by name.
    pub async fn assets(
        &self,
        tenant: &TenantId,
        owner: &Owner,
        page: &PageRequest,
    ) -> Result<Page<Asset>> {
        let after = page::decode_text_or_start(page.cursor.as_deref())?;
        let (tenant, owner, limit) = (tenant.clone(), owner.clone(), page.limit);
        let found = self
            .read(move |tx| {
                require_owner(tx, &tenant, &owner)?;
                tx.assets_after(&tenant, &owner, &after, limit.saturating_add(1))
            })
            .await?;
        let rows = found
            .into_iter()
            .map(|asset| (page::encode_text(asset.name.as_str()), asset));
        Ok(page::within(rows, |_| 0, limit))
    }

    /// One asset's record.
    pub async fn asset(&self, tenant: &TenantId, owner: &Owner, name: &AssetName) -> Result<Asset> {
        let (tenant, owner, name) = (tenant.clone(), owner.clone(), name.clone());
        self.read(move |tx| {
            require_owner(tx, &tenant, &owner)?;
            tx.asset(&tenant, &owner, name.as_str())?
                .ok_or_else(|| Error::NotFound {
                    what: "asset",
                    id: name.to_string(),
                })
        })
        .await
    }

    /// Whether `owner` exists and, for a session, `fence` names its current attempt: an
    /// early refusal before any byte is written (checked again when the record is written).
    pub(crate) async fn check_fence(
        &self,
        tenant: &TenantId,
        owner: &Owner,
        fence: Option<u32>,
    ) -> Result<()> {
        let (tenant, owner) = (tenant.clone(), owner.clone());
        self.read(move |tx| check_owner(tx, &tenant, &owner, fence))
            .await?
    }

    /// Records `asset` (replacing one of its name) if `fence` still names the session's
    /// current attempt; answers it as recorded (a replaced name keeps its first
    /// `created_at`) and whether it is new.
    pub(crate) async fn record_asset(
        &self,
        tenant: &TenantId,
        owner: &Owner,
        asset: Asset,
        fence: Option<u32>,
    ) -> Result<(Asset, bool)> {
        self.record_asset_if(tenant, owner, asset, fence, None)
            .await?
            .ok_or_else(|| Error::Internal("an unconditional record was refused".into()))
    }

    /// [`Lifeboat::record_asset`], with a compare-and-set when `before` is given: the
    /// record is written only while the stored one still has that storage and size
    /// (`None` in `before`: while there is none). Answers `None`, changing nothing, when
    /// another write (through another server) changed the asset since it was read.
    pub(crate) async fn record_asset_if(
        &self,
        tenant: &TenantId,
        owner: &Owner,
        asset: Asset,
        fence: Option<u32>,
        before: Option<Option<(Storage, u64)>>,
    ) -> Result<Option<(Asset, bool)>> {
        let about = (tenant, owner);
        let (tenant, owner) = (tenant.clone(), owner.clone());
        let recorded = self
            .write_for(about.0, about.1, Ack::AfterCommit, move |tx| {
                if let Err(refusal) = check_owner(tx, &tenant, &owner, fence)? {
                    return Ok(Err(refusal));
                }
                let stored = tx.asset(&tenant, &owner, asset.name.as_str())?;
                if let Some(before) = &before
                    && stored.as_ref().map(|s| (s.storage.clone(), s.size)) != *before
                {
                    return Ok(Ok(None));
                }
                let created = tx.save_asset(&tenant, &owner, &asset)?;
                if before == Some(None) && !created {
                    // No row to lock was read: another server inserted this asset after the
                    // read above. Roll back, so that its record stays.
                    return Err(Error::AlreadyExists {
                        what: "asset record",
                        id: asset.name.to_string(),
                    });
                }
                if asset.storage == Storage::Blob {
                    // These bytes were just written to the blob's path (see `BlobStore::keep`):
                    // whatever a verification found there is gone.
                    tx.heal_blob(asset.sha256.as_str(), asset.updated_at)?;
                }
                // A record written over another keeps when the name was first recorded.
                let recorded = Asset {
                    created_at: stored.map_or(asset.created_at, |s| s.created_at),
                    ..asset.clone()
                };
                Ok(Ok(Some((recorded, created))))
            })
            .await;
        match recorded {
            Err(Error::AlreadyExists {
                what: "asset record",
                ..
            }) => Ok(None),
            other => other,
        }
    }

    /// Removes an asset's record if `fence` still names the session's current attempt;
    /// answers the record and whether anything else (a pin) still names its file.
    pub(crate) async fn remove_asset(
        &self,
        tenant: &TenantId,
        owner: &Owner,
        name: &AssetName,
        fence: Option<u32>,
    ) -> Result<(Asset, bool)> {
        let about = (tenant, owner);
        let (tenant, owner, name) = (tenant.clone(), owner.clone(), name.clone());
        self.write_for(about.0, about.1, Ack::AfterCommit, move |tx| {
            if let Err(refusal) = check_owner(tx, &tenant, &owner, fence)? {
                return Ok(Err(refusal));
            }
            let Some(asset) = tx.asset(&tenant, &owner, name.as_str())? else {
                return Ok(Err(Error::NotFound {
                    what: "asset",
                    id: name.to_string(),
                }));
            };
            tx.delete_asset(&tenant, &owner, name.as_str())?;
            let still_named = match &asset.storage {
                Storage::Appendable(key) => {
                    tx.file_named(&FileRef::Appendable(key.clone()), None)?
                }
                _ => true,
            };
            Ok(Ok((asset, still_named)))
        })
        .await
    }

    /// Records a verification verdict of one asset.
    pub(crate) async fn set_asset_status(
        &self,
        tenant: &TenantId,
        owner: &Owner,
        name: &AssetName,
        status: AssetStatus,
        at: Timestamp,
    ) -> Result<()> {
        let about = (tenant, owner);
        let (tenant, owner, name) = (tenant.clone(), owner.clone(), name.clone());
        self.write_for(about.0, about.1, Ack::AfterCommit, move |tx| {
            tx.set_asset_status(&tenant, &owner, &name, status, at)?;
            Ok(Ok(()))
        })
        .await
    }

    /// Remembers which file versions a verification found damaged, and forgets those it
    /// found good.
    pub(crate) async fn record_file_checks(
        &self,
        found: Vec<(FileVersion, bool)>,
        now: Timestamp,
    ) -> Result<()> {
        self.write(Ack::AfterCommit, move |tx| {
            for (version, damaged) in &found {
                tx.record_damage(version, *damaged, now)?;
            }
            Ok(Ok(()))
        })
        .await
    }

    /// Every asset of every tenant, with its owner.
    pub(crate) async fn all_assets(&self) -> Result<Vec<(TenantId, Owner, Asset)>> {
        self.read(|tx| tx.all_assets()).await
    }

    /// The record half of a whole-store verification; with `repair`, damaged checkpoints
    /// are quarantined.
    pub(crate) async fn check_store(&self, repair: bool) -> Result<StoreCheck> {
        let mut check = self.read(|tx| tx.check()).await?;
        if repair && !check.damaged.is_empty() {
            let damaged = check.damaged.clone();
            check.quarantined = self
                .write(Ack::AfterCommit, move |tx| {
                    let mut quarantined = 0;
                    for (tenant, id, seq) in &damaged {
                        let tenant = TenantId::new(tenant.as_str());
                        let id = lifeboat_core::Id::parse(id)?;
                        if let Some((row, _)) = tx.session(&tenant, &id)? {
                            tx.quarantine(row, *seq)?;
                            quarantined += 1;
                        }
                    }
                    Ok(Ok(quarantined))
                })
                .await?;
        }
        Ok(check)
    }
}

/// 404 unless the owner exists (a session, or a project that is not deleted).
fn require_owner(tx: &mut dyn Tx, tenant: &TenantId, owner: &Owner) -> Result<()> {
    if tx.owner_exists(tenant, owner)? {
        Ok(())
    } else {
        Err(not_found(owner))
    }
}

fn not_found(owner: &Owner) -> Error {
    Error::NotFound {
        what: owner.kind(),
        id: owner.id().to_string(),
    }
}

/// Whether the owner exists and, for a session's asset written by a worker, `fence` still
/// names its current attempt (SPEC §9 r2: a stale worker cannot touch the files of the
/// attempt that replaced it). A refusal changes nothing.
fn check_owner(
    tx: &mut dyn Tx,
    tenant: &TenantId,
    owner: &Owner,
    fence: Option<u32>,
) -> Result<Result<()>> {
    let Owner::Session(id) = owner else {
        if fence.is_some() {
            return Ok(Err(DomainError::Invalid {
                field: "attempt",
                message: "only a session's assets are fenced by attempt".to_owned(),
            }
            .into()));
        }
        return Ok(if tx.owner_exists(tenant, owner)? {
            Ok(())
        } else {
            Err(not_found(owner))
        });
    };
    Ok(match (tx.session_attempt(tenant, id)?, fence) {
        (None, _) => Err(not_found(owner)),
        (Some(current), Some(sent)) if sent != current => {
            Err(DomainError::AttemptMismatch { sent, current }.into())
        }
        _ => Ok(()),
    })
}
