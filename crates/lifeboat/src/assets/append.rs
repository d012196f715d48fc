//! Appends to an appendable asset: resumable by offset, idempotent for a retried chunk,
//! hashed incrementally (the running hash of each file is kept in memory).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use lifeboat_core::{
    Asset, AssetName, AssetStatus, Error as DomainError, Owner, RunningSha256, Storage, TenantId,
};
use lifeboat_store::{Error, Result};

use futures_util::StreamExt;
use lifeboat_store::objects::{Objects, Uploaded};

use super::{Appended, blocking, io_error, lock_key};
use crate::Lifeboat;

/// How many times an append starts over when another server changed the asset between
/// its read and its record (each time it reads the asset again, so a retried chunk that
/// the other server wrote is then recognized).
const APPEND_TRIES: usize = 8;

impl Lifeboat {
    /// Appends `chunk` at `offset`. The offset must be the asset's size (offset 0 creates
    /// it), or the chunk must already be there byte for byte (a retry: nothing is
    /// written); anything else is refused with the current size.
    ///
    /// Several servers may append to one asset at once: the bytes of an appendable file are
    /// written only while holding an exclusive lock on that file (`flock`, which the shared
    /// file system carries between servers), and the record is a compare-and-set on the
    /// asset's storage and size, so of two appends at one offset exactly one is recorded and
    /// its bytes are the ones kept.
    pub async fn append_asset(
        &self,
        tenant: &TenantId,
        owner: &Owner,
        name: &AssetName,
        offset: u64,
        chunk: Vec<u8>,
        fence: Option<u32>,
    ) -> Result<Appended> {
        self.check_fence(tenant, owner, fence).await?;
        let key = lock_key(tenant, owner, name);
        let _guard = self.inner.assets.lock_for(key).lock_owned().await;
        for _ in 0..APPEND_TRIES {
            if let Some(appended) = self
                .try_append(tenant, owner, name, offset, &chunk, fence)
                .await?
            {
                return Ok(appended);
            }
        }
        Err(Error::Unavailable(format!(
            "{name} kept changing through other servers during this append; retry it"
        )))
    }

    /// One attempt at an append; `None` when another server changed the asset meanwhile.
    async fn try_append(
        &self,
        tenant: &TenantId,
        owner: &Owner,
        name: &AssetName,
        offset: u64,
        chunk: &[u8],
        fence: Option<u32>,
    ) -> Result<Option<Appended>> {
        if let Some(objects) = self.inner.assets.objects.clone() {
            return self
                .try_append_object(&objects, tenant, owner, name, offset, chunk, fence)
                .await;
        }
        let blobs = self.inner.store.blobs().clone();
        let mut current = self.current_asset(tenant, owner, name).await?;
        // Held until the record is written: no other server writes this file meanwhile.
        let mut _file_lock = None;
        if let Some(Storage::Appendable(file_key)) = current.as_ref().map(|a| &a.storage) {
            let path = blobs.appendable_path(file_key);
            let locked = blocking(move || {
                // Opened for writing: an exclusive lock on NFS needs it (flock(2)).
                let file = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&path)
                    .map_err(|e| io_error("cannot open the asset", e))?;
                file.lock()
                    .map_err(|e| io_error("cannot lock the asset", e))?;
                Ok(file)
            })
            .await?;
            let before = current.map(|a| a.storage);
            current = self.current_asset(tenant, owner, name).await?;
            if current.as_ref().map(|a| &a.storage) != before.as_ref() {
                return Ok(None);
            }
            _file_lock = Some(locked);
        }
        let size = current.as_ref().map_or(0, |a| a.size);
        let end = offset + chunk.len() as u64;
        if let Some(asset) = &current
            && offset < size
        {
            // A retry of bytes already stored is a no-op; anything else conflicts.
            let path = blobs.path_of(asset);
            let sent = chunk.to_vec();
            let same = end <= size
                && blocking(move || {
                    let mut file =
                        File::open(&path).map_err(|e| io_error("cannot read the asset", e))?;
                    file.seek(SeekFrom::Start(offset))
                        .map_err(|e| io_error("cannot read the asset", e))?;
                    let mut stored = vec![0u8; sent.len()];
                    file.read_exact(&mut stored)
                        .map_err(|e| io_error("cannot read the asset", e))?;
                    Ok(stored == sent)
                })
                .await?;
            if same {
                return Ok(Some(Appended {
                    asset: asset.clone(),
                    created: false,
                }));
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
        // copied into a new one (the old bytes stay where they are, for the checkpoints
        // that pinned them).
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
        let written = chunk.to_vec();
        // A file made by this append (at offset 0, or copied from a whole upload) has a new
        // directory entry, which is durable only once the directory is fsynced.
        let new_file = offset == 0 || copy_from.is_some();
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
            if new_file {
                File::open(&open_dir)
                    .and_then(|dir| dir.sync_all())
                    .map_err(|e| io_error("cannot sync the asset directory", e))?;
            }
            Ok(())
        })
        .await?;
        let mut hasher = running;
        hasher.update(chunk);
        self.record_append(tenant, owner, name, current, file_key, end, hasher, fence)
            .await
    }

    /// Records an append whose bytes are durable: the asset, now the first `end` bytes of
    /// file `file_key`, hashing as `hasher` says, as a compare-and-set on what `current`
    /// was (`None` when another server changed it meanwhile); the hash state is kept for
    /// the next append.
    #[allow(clippy::too_many_arguments)]
    async fn record_append(
        &self,
        tenant: &TenantId,
        owner: &Owner,
        name: &AssetName,
        current: Option<Asset>,
        file_key: String,
        end: u64,
        hasher: RunningSha256,
        fence: Option<u32>,
    ) -> Result<Option<Appended>> {
        let now = self.now();
        let asset = Asset {
            name: name.clone(),
            storage: Storage::Appendable(file_key.clone()),
            size: end,
            sha256: hasher.finish(),
            kind: current.as_ref().and_then(|a| a.kind.clone()),
            status: AssetStatus::Ok,
            verified_at: now,
            created_at: current.as_ref().map_or(now, |a| a.created_at),
            updated_at: now,
        };
        let before = current.map(|a| (a.storage, a.size));
        let Some((asset, created)) = self
            .record_asset_if(tenant, owner, asset, fence, Some(before))
            .await?
        else {
            return Ok(None);
        };
        self.inner.assets.remember_hash(file_key, end, hasher);
        Ok(Some(Appended { asset, created }))
    }

    /// One attempt at an append when the bytes are in a bucket: the chunk becomes an object
    /// of its own, named by its offset and the hashes before and after it (see
    /// `lifeboat_store::objects`), so a racing server's chunk at the same offset is another
    /// object and the record's compare-and-set alone decides which one counts. No lock
    /// spans servers. `None` when another server changed the asset meanwhile.
    #[allow(clippy::too_many_arguments)]
    async fn try_append_object(
        &self,
        objects: &Objects,
        tenant: &TenantId,
        owner: &Owner,
        name: &AssetName,
        offset: u64,
        chunk: &[u8],
        fence: Option<u32>,
    ) -> Result<Option<Appended>> {
        let current = self.current_asset(tenant, owner, name).await?;
        let size = current.as_ref().map_or(0, |a| a.size);
        let end = offset + chunk.len() as u64;
        if let Some(asset) = &current
            && offset < size
        {
            // A retry of bytes already stored is a no-op; anything else conflicts.
            let same = end <= size && self.read_range(asset, offset..end).await? == chunk;
            if same {
                return Ok(Some(Appended {
                    asset: asset.clone(),
                    created: false,
                }));
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
        // Appends extend the asset's own file; a file of another kind (an external one)
        // is first copied into a new one, whose hash state the copy leaves.
        let (file_key, mut hasher) = match &current {
            None => (uuid::Uuid::now_v7().to_string(), RunningSha256::new()),
            Some(asset) => match &asset.storage {
                Storage::Appendable(key) => {
                    let hasher = match self.inner.assets.take_hash(key, size) {
                        Some(hasher) => hasher,
                        None => self.object_hasher(objects, asset).await?,
                    };
                    (key.clone(), hasher)
                }
                _ => {
                    let copied = self.copy_into_bucket(objects, asset).await?;
                    (copied.key, copied.hasher)
                }
            },
        };
        let before = hasher.finish();
        hasher.update(chunk);
        objects
            .put_chunk(&file_key, offset, &before, &hasher, chunk.to_vec())
            .await
            .map_err(|e| io_error("cannot write the asset", e))?;
        self.record_append(tenant, owner, name, current, file_key, end, hasher, fence)
            .await
    }

    /// Bytes `range` of an asset's current version.
    async fn read_range(&self, asset: &Asset, range: std::ops::Range<u64>) -> Result<Vec<u8>> {
        let open = self.open_stored(asset).await?;
        let mut pieces = open
            .stream(range)
            .await
            .map_err(|e| io_error("cannot read the asset", e))?;
        let mut read = Vec::new();
        while let Some(piece) = pieces.next().await {
            read.extend_from_slice(&piece.map_err(|e| io_error("cannot read the asset", e))?);
        }
        Ok(read)
    }

    /// The hash state of an asset's file in the bucket when this server does not have it
    /// (after a restart, or when another server appended last): from the name of the
    /// file's last chunk, or, for a whole upload, by reading the file.
    async fn object_hasher(&self, objects: &Objects, asset: &Asset) -> Result<RunningSha256> {
        let Storage::Appendable(key) = &asset.storage else {
            return Err(Error::Internal("not a file in the bucket".into()));
        };
        let chain = objects
            .chain(key, asset.size, Some(&asset.sha256))
            .await
            .map_err(|e| io_error("cannot read the asset", e))?
            .ok_or_else(|| super::missing_bytes(&asset.name))?;
        if let Some(resumed) = chain.resumable() {
            return Ok(resumed);
        }
        let (hasher, read) = chain
            .hasher()
            .await
            .map_err(|e| io_error("cannot read the asset", e))?;
        if read != asset.size {
            return Err(super::missing_bytes(&asset.name));
        }
        Ok(hasher)
    }

    /// Copies an asset's bytes (an external file's) into a new file in the bucket.
    async fn copy_into_bucket(&self, objects: &Objects, asset: &Asset) -> Result<Uploaded> {
        let open = self.open_stored(asset).await?;
        let mut pieces = open
            .stream(0..asset.size)
            .await
            .map_err(|e| io_error("cannot read the asset", e))?;
        let mut upload = objects.upload();
        while let Some(piece) = pieces.next().await {
            let piece = piece.map_err(|e| io_error("cannot read the asset", e))?;
            upload
                .write(piece, u64::MAX)
                .await
                .map_err(|e| io_error("cannot copy the asset", e))?;
        }
        upload
            .finish(Some(&asset.sha256))
            .await
            .map_err(|e| io_error("cannot copy the asset", e))?
            .map_err(|_| {
                Error::from(DomainError::AssetChanged {
                    name: asset.name.to_string(),
                    why: "its bytes changed while they were copied".to_owned(),
                })
            })
    }

    /// The asset's record, or `None` when it has none.
    async fn current_asset(
        &self,
        tenant: &TenantId,
        owner: &Owner,
        name: &AssetName,
    ) -> Result<Option<Asset>> {
        match self.asset(tenant, owner, name).await {
            Ok(asset) => Ok(Some(asset)),
            Err(Error::NotFound { what: "asset", .. }) => Ok(None),
            Err(other) => Err(other),
        }
    }

    /// The hash state of the first `size` bytes of an appendable file: from memory, or
    /// rebuilt by reading them (after a restart, or after an append that did not commit).
    async fn running_hash(&self, key: &str, path: &Path, size: u64) -> Result<RunningSha256> {
        if let Some(hasher) = self.inner.assets.take_hash(key, size) {
            return Ok(hasher);
        }
        if size == 0 {
            return Ok(RunningSha256::new());
        }
        let path = path.to_path_buf();
        blocking(move || {
            let mut file = File::open(&path)
                .map_err(|e| io_error("cannot read the asset", e))?
                .take(size);
            let mut hasher = RunningSha256::new();
            let mut buffer = vec![0u8; 1 << 16];
            loop {
                let read = file
                    .read(&mut buffer)
                    .map_err(|e| io_error("cannot read the asset", e))?;
                if read == 0 {
                    return Ok(hasher);
                }
                hasher.update(&buffer[..read]);
            }
        })
        .await
    }
}
