//! Rows of assets, and of the file versions records name.

use std::collections::HashSet;

use lifeboat_core::{Asset, AssetName, AssetStatus, FileVersion, Id, Owner, TenantId, Timestamp};

use crate::{FileRef, Result};

/// Assets and file versions.
pub trait AssetRows {
    /// Whether the owner exists (a session, or a project that is not deleted).
    fn owner_exists(&mut self, tenant: &TenantId, owner: &Owner) -> Result<bool>;
    /// A session's current attempt, if the session exists.
    fn session_attempt(&mut self, tenant: &TenantId, id: &Id) -> Result<Option<u32>>;
    /// One asset's record.
    fn asset(&mut self, tenant: &TenantId, owner: &Owner, name: &str) -> Result<Option<Asset>>;
    /// All of an owner's assets, by name.
    fn assets(&mut self, tenant: &TenantId, owner: &Owner) -> Result<Vec<Asset>>;
    /// Up to `limit` of an owner's assets with a name after `after`, by name.
    fn assets_after(
        &mut self,
        tenant: &TenantId,
        owner: &Owner,
        after: &str,
        limit: u32,
    ) -> Result<Vec<Asset>>;
    /// Every asset of every tenant, with its owner.
    fn all_assets(&mut self) -> Result<Vec<(TenantId, Owner, Asset)>>;
    /// Inserts or replaces an asset record; answers whether it is new.
    fn save_asset(&mut self, tenant: &TenantId, owner: &Owner, asset: &Asset) -> Result<bool>;
    /// Removes an asset record; answers whether there was one.
    fn delete_asset(&mut self, tenant: &TenantId, owner: &Owner, name: &str) -> Result<bool>;
    /// Records a verification verdict of one asset.
    fn set_asset_status(
        &mut self,
        tenant: &TenantId,
        owner: &Owner,
        name: &AssetName,
        status: AssetStatus,
        at: Timestamp,
    ) -> Result<()>;
    /// Of `versions`, those a verification found damaged.
    fn damaged(&mut self, versions: &[FileVersion]) -> Result<HashSet<FileVersion>>;
    /// Remembers a version as damaged, or forgets it.
    fn record_damage(&mut self, version: &FileVersion, damaged: bool, now: Timestamp)
    -> Result<()>;
    /// A whole upload's good bytes were stored again: no record of that blob is damaged.
    fn heal_blob(&mut self, sha256: &str, now: Timestamp) -> Result<()>;
    /// Whether an asset record or a retained checkpoint's pin names `file`; with
    /// `purged = (sessions_before, projects_before)`, records a cleanup would purge at
    /// those cutoffs do not count.
    fn file_named(&mut self, file: &FileRef, purged: Option<(i64, i64)>) -> Result<bool>;
}
