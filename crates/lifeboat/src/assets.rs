//! Asset operations: durable uploads, resumable appends, external files, verification.
//!
//! Bytes are made durable first (see `lifeboat_store::blobs`), the record second, so a
//! crash can leave an unreferenced file but never a record without its bytes.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lifeboat_core::{
    Asset, AssetName, AssetStatus, Error as DomainError, Id, Owner, Sha256, Storage, TenantId,
};
use lifeboat_store::blobs::{BlobWriter, hash_file};
use lifeboat_store::{Error, Result, Verification};
use sha2::Digest;

use crate::Lifeboat;

/// The in-process state of assets: locks that serialize appends to one asset, and the
/// running hash of each appendable file (so an append hashes only its chunk).
pub(crate) struct AssetState {
    roots: Vec<PathBuf>,
    max_bytes: u64,
    idle_timeout: Duration,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    hashers: Mutex<HashMap<String, (u64, sha2::Sha256)>>,
}

impl AssetState {
    pub(crate) fn new(roots: Vec<PathBuf>, max_bytes: u64, idle_timeout: Duration) -> AssetState {
        // Roots are compared after resolving symlinks, like the paths registered in them.
        let roots = roots
            .into_iter()
            .filter_map(|root| std::fs::canonicalize(root).ok())
            .collect();
        AssetState {
            roots,
            max_bytes,
            idle_timeout,
            locks: Mutex::default(),
            hashers: Mutex::default(),
        }
    }

    fn lock_for(&self, key: String) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        Arc::clone(locks.entry(key).or_default())
    }
}

/// The result of an append.
#[derive(Debug, Clone, PartialEq)]
pub struct Appended {
    /// The asset after the append.
    pub asset: Asset,
    /// False when the chunk was already there (a retry): nothing was written.
    pub wrote: bool,
}

fn io_error(context: &str, e: std::io::Error) -> Error {
    if e.kind() == std::io::ErrorKind::StorageFull {
        Error::Full(format!("{context}: {e}"))
    } else {
        Error::Unavailable(format!("{context}: {e}"))
    }
}

/// Runs file work off the async runtime.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Error::Internal(format!("file task failed: {e}")))?
}

impl Lifeboat {
    /// An owner's assets with their last verification status.
    pub async fn assets(&self, tenant: &TenantId, owner: &Owner) -> Result<Vec<Asset>> {
        self.inner.store.assets(tenant, owner).await
    }

    /// One asset's record.
    pub async fn asset(&self, tenant: &TenantId, owner: &Owner, name: &AssetName) -> Result<Asset> {
        self.inner.store.asset(tenant, owner, name).await
    }

    /// The file holding an asset's bytes.
    pub fn asset_path(&self, asset: &Asset) -> PathBuf {
        self.inner.store.blobs().path_of(asset)
    }

    /// The largest upload accepted.
    pub fn max_asset_bytes(&self) -> u64 {
        self.inner.assets.max_bytes
    }

    /// How long an upload may send nothing before it is abandoned.
    pub fn upload_idle_timeout(&self) -> Duration {
        self.inner.assets.idle_timeout
    }

    /// Starts an upload for `owner` (404 before any byte is written if it does not exist).
    pub async fn upload(&self, tenant: &TenantId, owner: &Owner) -> Result<BlobWriter> {
        self.inner.store.assets(tenant, owner).await?;
        self.inner
            .store
            .blobs()
            .writer()
            .await
            .map_err(|e| io_error("cannot start the upload", e))
    }

    /// Finishes an upload and records it as `name` (replacing any asset of that name).
    /// Answers the asset and whether it is new. On an `expected` hash mismatch nothing
    /// is kept.
    pub async fn put_asset(
        &self,
        tenant: &TenantId,
        owner: &Owner,
        name: &AssetName,
        upload: BlobWriter,
        expected: Option<Sha256>,
    ) -> Result<(Asset, bool)> {
        let blob = upload
            .finish(self.inner.store.blobs(), expected.as_ref())
            .await
            .map_err(|e| io_error("cannot store the upload", e))?
            .map_err(|actual| DomainError::HashMismatch {
                sent: expected
                    .as_ref()
                    .map(|e| e.as_str().to_owned())
                    .unwrap_or_default(),
                actual: actual.as_str().to_owned(),
            })?;
        let now = self.now();
        let _guard = self
            .inner
            .assets
            .lock_for(lock_key(tenant, owner, name))
            .lock_owned()
            .await;
        let created_at = match self.inner.store.asset(tenant, owner, name).await {
            Ok(previous) => previous.created_at,
            Err(Error::NotFound { .. }) => now,
            Err(other) => return Err(other),
        };
        let asset = Asset {
            name: name.clone(),
            storage: Storage::Blob,
            size: blob.size,
            sha256: blob.sha256,
            kind: None,
            status: AssetStatus::Ok,
            verified_at: now,
            created_at,
            updated_at: now,
        };
        let created = self
            .inner
            .store
            .save_asset(tenant, owner, asset.clone())
            .await?;
        Ok((asset, created))
    }

    /// Appends `chunk` at `offset`. The offset must be the asset's size (offset 0 creates
    /// it), or the chunk must already be there byte for byte (a retry: nothing is
    /// written); anything else is refused with the current size.
    pub async fn append_asset(
        &self,
        tenant: &TenantId,
        owner: &Owner,
        name: &AssetName,
        offset: u64,
        chunk: Vec<u8>,
    ) -> Result<Appended> {
        let key = lock_key(tenant, owner, name);
        let _guard = self.inner.assets.lock_for(key.clone()).lock_owned().await;
        let current = match self.inner.store.asset(tenant, owner, name).await {
            Ok(asset) => Some(asset),
            Err(Error::NotFound { what: "asset", .. }) => None,
            Err(other) => return Err(other),
        };
        let size = current.as_ref().map_or(0, |a| a.size);
        let end = offset + chunk.len() as u64;
        let blobs = self.inner.store.blobs().clone();
        if let Some(asset) = &current
            && offset < size
        {
            // A retry of bytes already stored is a no-op; anything else conflicts.
            let path = blobs.path_of(asset);
            let length = chunk.len();
            let sent = chunk.clone();
            let same = end <= size
                && blocking(move || {
                    let mut file = std::fs::File::open(&path)
                        .map_err(|e| io_error("cannot read the asset", e))?;
                    file.seek(SeekFrom::Start(offset))
                        .map_err(|e| io_error("cannot read the asset", e))?;
                    let mut stored = vec![0u8; length];
                    file.read_exact(&mut stored)
                        .map_err(|e| io_error("cannot read the asset", e))?;
                    Ok(stored == sent)
                })
                .await?;
            if same {
                return Ok(Appended {
                    asset: asset.clone(),
                    wrote: false,
                });
            }
        }
        if offset != size {
            return Err(DomainError::OffsetMismatch {
                offset,
                current_size: size,
            }
            .into());
        }
        if end > self.inner.assets.max_bytes {
            return Err(Error::TooLarge(format!(
                "the asset would be {end} bytes, over the limit of {}",
                self.inner.assets.max_bytes
            )));
        }
        // Appends go to the asset's own file; a whole upload or an external file is first
        // copied into one.
        let (file_key, copy_from) = match current.as_ref().map(|a| &a.storage) {
            Some(Storage::Appendable(file_key)) => (file_key.clone(), None),
            Some(_) => (
                uuid::Uuid::now_v7().to_string(),
                current.as_ref().map(|a| blobs.path_of(a)),
            ),
            None => (uuid::Uuid::now_v7().to_string(), None),
        };
        let path = blobs.appendable_path(&file_key);
        let open_dir = blobs.open_dir();
        let hashed = copy_from.clone().unwrap_or_else(|| path.clone());
        let running = self.running_hash(&file_key, &hashed, size).await?;
        let written = chunk.clone();
        blocking(move || {
            if let Some(source) = copy_from {
                std::fs::copy(&source, &path).map_err(|e| io_error("cannot copy the asset", e))?;
            }
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(false)
                .open(&path)
                .map_err(|e| io_error("cannot open the asset", e))?;
            file.seek(SeekFrom::Start(offset))
                .and_then(|_| file.write_all(&written))
                // Bytes past the recorded size (an append that never committed) go.
                .and_then(|()| file.set_len(end))
                .and_then(|()| file.sync_all())
                .map_err(|e| io_error("cannot write the asset", e))?;
            if offset == 0 {
                std::fs::File::open(&open_dir)
                    .and_then(|dir| dir.sync_all())
                    .map_err(|e| io_error("cannot sync the asset directory", e))?;
            }
            Ok(())
        })
        .await?;
        let mut hasher = running;
        hasher.update(&chunk);
        let sha256 = Sha256::from_stored(hex::encode(hasher.clone().finalize()));
        let now = self.now();
        let asset = Asset {
            name: name.clone(),
            storage: Storage::Appendable(file_key.clone()),
            size: end,
            sha256,
            kind: current.as_ref().and_then(|a| a.kind.clone()),
            status: AssetStatus::Ok,
            verified_at: now,
            created_at: current.as_ref().map_or(now, |a| a.created_at),
            updated_at: now,
        };
        self.inner
            .store
            .save_asset(tenant, owner, asset.clone())
            .await?;
        if let Ok(mut hashers) = self.inner.assets.hashers.lock() {
            hashers.insert(file_key, (end, hasher));
        }
        Ok(Appended { asset, wrote: true })
    }

    /// The hash state of the first `size` bytes of an appendable file: from memory, or
    /// rebuilt by reading them (after a restart, or after an append that did not commit).
    async fn running_hash(&self, key: &str, path: &Path, size: u64) -> Result<sha2::Sha256> {
        let cached = self
            .inner
            .assets
            .hashers
            .lock()
            .ok()
            .and_then(|mut hashers| hashers.remove(key))
            .filter(|(at, _)| *at == size)
            .map(|(_, hasher)| hasher);
        if let Some(hasher) = cached {
            return Ok(hasher);
        }
        if size == 0 {
            return Ok(sha2::Sha256::new());
        }
        let path = path.to_path_buf();
        blocking(move || {
            let mut file = std::fs::File::open(&path)
                .map_err(|e| io_error("cannot read the asset", e))?
                .take(size);
            let mut hasher = sha2::Sha256::new();
            std::io::copy(&mut file, &mut hasher)
                .map_err(|e| io_error("cannot read the asset", e))?;
            Ok(hasher)
        })
        .await
    }

    /// Registers a file on the server host. It must resolve, after symlinks, inside one
    /// of the configured asset roots (403 otherwise); size and SHA-256 are recorded now.
    pub async fn register_asset(
        &self,
        tenant: &TenantId,
        owner: &Owner,
        name: &AssetName,
        path: &str,
        kind: Option<String>,
    ) -> Result<(Asset, bool)> {
        self.inner.store.assets(tenant, owner).await?;
        let requested = PathBuf::from(path);
        if !requested.is_absolute() {
            return Err(DomainError::Invalid {
                field: "path",
                message: "the path must be absolute".to_owned(),
            }
            .into());
        }
        let roots = self.inner.assets.roots.clone();
        let display = path.to_owned();
        let (resolved, sha256, size) = blocking(move || {
            let resolved = std::fs::canonicalize(&requested).map_err(|_| {
                Error::from(DomainError::Invalid {
                    field: "path",
                    message: format!("{display} does not exist"),
                })
            })?;
            if !roots.iter().any(|root| resolved.starts_with(root)) {
                return Err(Error::Forbidden(format!(
                    "{display} is not inside a configured asset root (--asset-root)"
                )));
            }
            if !resolved.is_file() {
                return Err(DomainError::Invalid {
                    field: "path",
                    message: format!("{display} is not a regular file"),
                }
                .into());
            }
            let (sha256, size) =
                hash_file(&resolved, None).map_err(|e| io_error("cannot read the file", e))?;
            Ok((resolved, sha256, size))
        })
        .await?;
        let now = self.now();
        let asset = Asset {
            name: name.clone(),
            storage: Storage::External(resolved.to_string_lossy().into_owned()),
            size,
            sha256,
            kind,
            status: AssetStatus::Ok,
            verified_at: now,
            created_at: now,
            updated_at: now,
        };
        let created = self
            .inner
            .store
            .save_asset(tenant, owner, asset.clone())
            .await?;
        Ok((asset, created))
    }

    /// Removes an asset. Its bytes stay until cleanup (a blob may be shared); an
    /// appendable file is removed at once.
    pub async fn delete_asset(
        &self,
        tenant: &TenantId,
        owner: &Owner,
        name: &AssetName,
    ) -> Result<()> {
        let _guard = self
            .inner
            .assets
            .lock_for(lock_key(tenant, owner, name))
            .lock_owned()
            .await;
        let removed = self.inner.store.delete_asset(tenant, owner, name).await?;
        if let Storage::Appendable(key) = &removed.storage {
            let path = self.inner.store.blobs().appendable_path(key);
            let _ = tokio::fs::remove_file(path).await;
        }
        Ok(())
    }

    /// Reads an asset's bytes whole: its status, and how many bytes were read.
    async fn rehash(&self, asset: &Asset) -> Result<(AssetStatus, u64)> {
        let path = self.asset_path(asset);
        let recorded = (asset.sha256.clone(), asset.size);
        blocking(move || {
            Ok(match hash_file(&path, None) {
                Err(_) => (AssetStatus::Missing, 0),
                Ok(found) if found == recorded => (AssetStatus::Ok, found.1),
                Ok(found) => (AssetStatus::Corrupt, found.1),
            })
        })
        .await
    }

    /// Re-hashes a session's checkpoints and assets; damaged checkpoints are quarantined
    /// and every asset's status is recorded.
    pub async fn verify(&self, tenant: &TenantId, id: &Id) -> Result<Verification> {
        let mut verification = self.inner.store.verify(tenant, id).await?;
        let owner = Owner::Session(id.clone());
        let now = self.now();
        for asset in self.inner.store.assets(tenant, &owner).await? {
            let (status, _) = self.rehash(&asset).await?;
            verification.assets.total += 1;
            match status {
                AssetStatus::Ok => verification.assets.ok += 1,
                AssetStatus::Missing => {
                    verification.assets.missing += 1;
                    verification
                        .issues
                        .push(format!("asset {}: missing", asset.name));
                }
                AssetStatus::Corrupt => {
                    verification.assets.corrupt += 1;
                    verification
                        .issues
                        .push(format!("asset {}: size or SHA-256 differs", asset.name));
                }
            }
            self.inner
                .store
                .set_asset_status(tenant, &owner, &asset.name, status, now)
                .await?;
        }
        Ok(verification)
    }
}

fn lock_key(tenant: &TenantId, owner: &Owner, name: &AssetName) -> String {
    format!(
        "{}\n{}\n{}\n{}",
        tenant.as_str(),
        owner.kind(),
        owner.id(),
        name
    )
}

/// A whole-store verification: the store's own check plus every asset re-hashed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StoreVerification {
    /// Integrity check, checkpoint hashes, counters.
    pub check: lifeboat_store::StoreCheck,
    /// Assets re-hashed.
    pub assets_checked: u64,
    /// Their bytes.
    pub asset_bytes: u64,
    /// `tenant/owner/name` of assets whose file is gone.
    pub missing: Vec<String>,
    /// `tenant/owner/name` of assets whose size or SHA-256 differs.
    pub corrupt: Vec<String>,
}

impl StoreVerification {
    /// Whether nothing is wrong.
    pub fn is_clean(&self) -> bool {
        self.check.integrity.is_empty()
            && self.check.damaged.is_empty()
            && self.check.inconsistencies.is_empty()
            && self.missing.is_empty()
            && self.corrupt.is_empty()
    }
}

impl Lifeboat {
    /// Verifies the whole store, all tenants: SQLite's integrity check, every checkpoint's
    /// hash, per-session counters, every asset's bytes. With `repair`, damaged
    /// checkpoints are quarantined and asset statuses recorded; nothing is deleted.
    pub async fn verify_store(&self, repair: bool) -> Result<StoreVerification> {
        let check = self.inner.store.check_store(repair).await?;
        let mut verification = StoreVerification {
            check,
            ..StoreVerification::default()
        };
        let now = self.now();
        for (tenant, owner, asset) in self.inner.store.all_assets().await? {
            let (status, bytes) = self.rehash(&asset).await?;
            verification.assets_checked += 1;
            verification.asset_bytes += bytes;
            let label = format!(
                "{}/{}/{}/{}",
                tenant.as_str(),
                owner.kind(),
                owner.id(),
                asset.name
            );
            match status {
                AssetStatus::Ok => {}
                AssetStatus::Missing => verification.missing.push(label),
                AssetStatus::Corrupt => verification.corrupt.push(label),
            }
            if repair && status != asset.status {
                self.inner
                    .store
                    .set_asset_status(&tenant, &owner, &asset.name, status, now)
                    .await?;
            }
        }
        Ok(verification)
    }
}
