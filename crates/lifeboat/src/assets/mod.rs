//! Asset operations: durable uploads, resumable appends, external files, pinned
//! versions. Records are written in `records.rs`, bytes are verified in `verify.rs`.
//!
//! Bytes are made durable first (see `lifeboat_store::blobs`), the record second, so a
//! crash can leave an unreferenced file but never a record without its bytes. Session
//! asset writes may be fenced by attempt (SPEC §5 r2): the fence is checked again in the
//! record's transaction, so a worker that lost its session can never replace what the
//! recovered attempt relies on.

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{BoxStream, StreamExt};
use lifeboat_core::{
    Asset, AssetName, AssetStatus, Error as DomainError, FileVersion, Id, Owner, PinnedAsset,
    RunningSha256, Sha256, Storage, TenantId,
};
use lifeboat_store::blobs::BlobWriter;
use lifeboat_store::objects::{Chain, ObjectUpload, Objects};
use lifeboat_store::{Error, Result};
use sha2::Digest;

use crate::Lifeboat;
use crate::external::{Changed, Roots};

mod append;
mod records;
mod verify;

pub use verify::StoreVerification;

/// Append locks kept at most; idle ones are dropped beyond this (an asset that is not
/// being appended to needs no lock).
const APPEND_LOCKS_MAX: usize = 4_096;
/// Running hashes of appendable files kept at most; one that is dropped is rebuilt from
/// the file by the next append.
const RUNNING_HASHES_MAX: usize = 4_096;

/// The in-process state of assets: locks that serialize appends to one asset, the running
/// hash of each appendable file (so an append hashes only its chunk), and the blobs being
/// put in place (cleanup leaves those alone).
pub(crate) struct AssetState {
    roots: Roots,
    /// The bucket that holds uploaded and appended bytes, when one is configured
    /// (`--blob-store`); else they are files under the data directory.
    pub(crate) objects: Option<Objects>,
    max_bytes: u64,
    idle_timeout: Duration,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    hashers: Mutex<HashMap<String, (u64, RunningSha256)>>,
    /// SHA-256 of blobs between "bytes renamed into place" and "record committed", with a
    /// count of uploads doing so. Cleanup deletes a blob only while holding this lock and
    /// only if it is not here, so it never deletes bytes an upload is about to record.
    placing: Mutex<HashMap<String, usize>>,
}

impl AssetState {
    pub(crate) fn new(
        roots: Vec<PathBuf>,
        objects: Option<Objects>,
        max_bytes: u64,
        idle_timeout: Duration,
    ) -> AssetState {
        AssetState {
            roots: Roots::new(roots),
            objects,
            max_bytes,
            idle_timeout,
            locks: Mutex::default(),
            hashers: Mutex::default(),
            placing: Mutex::default(),
        }
    }

    fn lock_for(&self, key: String) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        if locks.len() >= APPEND_LOCKS_MAX {
            // Only this map holds an idle lock.
            locks.retain(|_, lock| Arc::strong_count(lock) > 1);
        }
        Arc::clone(locks.entry(key).or_default())
    }

    fn remember_hash(&self, key: String, size: u64, hasher: RunningSha256) {
        let mut hashers = self.hashers.lock().unwrap_or_else(|e| e.into_inner());
        if hashers.len() >= RUNNING_HASHES_MAX
            && let Some(evicted) = hashers.keys().next().cloned()
        {
            hashers.remove(&evicted);
        }
        hashers.insert(key, (size, hasher));
    }

    /// The hash state of the first `size` bytes of file `key`, if it is kept.
    fn take_hash(&self, key: &str, size: u64) -> Option<RunningSha256> {
        let mut hashers = self.hashers.lock().unwrap_or_else(|e| e.into_inner());
        hashers
            .remove(key)
            .filter(|(at, _)| *at == size)
            .map(|(_, hasher)| hasher)
    }

    /// Runs `delete` unless an upload is placing the blob `sha256` now (see `placing`).
    pub(crate) fn unless_placing<T>(&self, sha256: &str, delete: impl FnOnce() -> T) -> Option<T> {
        let placing = self.placing.lock().unwrap_or_else(|e| e.into_inner());
        if placing.contains_key(sha256) {
            return None;
        }
        Some(delete())
    }

    fn start_placing(&self, sha256: &str) {
        let mut placing = self.placing.lock().unwrap_or_else(|e| e.into_inner());
        *placing.entry(sha256.to_owned()).or_default() += 1;
    }

    fn done_placing(&self, sha256: &str) {
        let mut placing = self.placing.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = placing.get_mut(sha256) {
            *count -= 1;
            if *count == 0 {
                placing.remove(sha256);
            }
        }
    }
}

/// The result of an append.
#[derive(Debug, Clone, PartialEq)]
pub struct Appended {
    /// The asset after the append.
    pub asset: Asset,
    /// True when this append made the asset (SPEC §9: an append at offset 0 creates it).
    pub created: bool,
}

/// An asset's bytes, opened for reading and checked.
#[derive(Debug)]
pub struct OpenAsset {
    source: Source,
    /// How many bytes are the asset's.
    pub size: u64,
    /// Their SHA-256.
    pub sha256: Sha256,
}

/// Where an opened asset's bytes are read from.
#[derive(Debug)]
enum Source {
    /// A file on this host (the asset's bytes are its first `size`).
    File(File),
    /// The chunks of a file in the bucket.
    Chain(Chain),
}

impl OpenAsset {
    /// Streams the asset's bytes `range` (within `0..size`).
    pub async fn stream(
        self,
        range: std::ops::Range<u64>,
    ) -> std::io::Result<BoxStream<'static, std::io::Result<Bytes>>> {
        match self.source {
            Source::File(file) => {
                use tokio::io::{AsyncReadExt, AsyncSeekExt};
                let mut file = tokio::fs::File::from_std(file);
                file.seek(std::io::SeekFrom::Start(range.start)).await?;
                let length = range.end.saturating_sub(range.start);
                Ok(tokio_util::io::ReaderStream::new(file.take(length)).boxed())
            }
            Source::Chain(chain) => Ok(chain.stream(range)),
        }
    }

    /// Reads the asset's bytes whole into memory.
    pub async fn read_all(self) -> std::io::Result<Vec<u8>> {
        let size = self.size;
        let mut pieces = self.stream(0..size).await?;
        let mut out = Vec::new();
        while let Some(piece) = pieces.next().await {
            out.extend_from_slice(&piece?);
        }
        Ok(out)
    }
}

/// An upload in progress: into a file under the data directory, or into the bucket.
pub enum Upload {
    /// A file under `<data-dir>/blobs/tmp`.
    Disk(BlobWriter),
    /// A (multipart) upload into the bucket.
    Bucket(ObjectUpload),
}

impl Upload {
    /// Appends a piece of the upload; `Err` with `ErrorKind::FileTooLarge` past `limit`.
    pub async fn write(&mut self, chunk: Bytes, limit: u64) -> std::io::Result<()> {
        match self {
            Upload::Disk(writer) => writer.write(&chunk, limit).await,
            Upload::Bucket(upload) => upload.write(chunk, limit).await,
        }
    }

    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        match self {
            Upload::Disk(writer) => writer.size(),
            Upload::Bucket(upload) => upload.size(),
        }
    }

    /// Abandons the upload; nothing of it is kept.
    pub async fn abort(self) {
        match self {
            Upload::Disk(writer) => writer.abort().await,
            Upload::Bucket(upload) => upload.abort().await,
        }
    }
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
    /// The largest upload accepted.
    pub fn max_asset_bytes(&self) -> u64 {
        self.inner.assets.max_bytes
    }

    /// How long an upload may send nothing before it is abandoned.
    pub fn upload_idle_timeout(&self) -> Duration {
        self.inner.assets.idle_timeout
    }

    /// Opens an asset's bytes for reading. An external file is checked again first
    /// (SPEC §5 r2): if it no longer resolves inside a root to a regular file of its
    /// registered size, the read is refused with `asset-changed` and the asset's status
    /// becomes `missing` or `corrupt`.
    pub async fn open_asset(
        &self,
        tenant: &TenantId,
        owner: &Owner,
        name: &AssetName,
    ) -> Result<(Asset, OpenAsset)> {
        let asset = self.asset(tenant, owner, name).await?;
        let opened = self
            .open_version(&asset.storage, &asset.sha256, asset.size, name)
            .await;
        match opened {
            Ok(open) => Ok((asset, open)),
            Err(OpenError::Changed(changed)) => {
                self.note_changed(tenant, owner, name, &changed).await?;
                Err(changed.into_error(name))
            }
            Err(OpenError::Other(error)) => Err(error),
        }
    }

    /// Records what a read found of an external file that changed: the asset is `missing`
    /// or `corrupt` from now on (SPEC §5 r2).
    async fn note_changed(
        &self,
        tenant: &TenantId,
        owner: &Owner,
        name: &AssetName,
        changed: &Changed,
    ) -> Result<()> {
        let status = match changed {
            Changed::Missing(_) => AssetStatus::Missing,
            Changed::Corrupt(_) => AssetStatus::Corrupt,
        };
        self.set_asset_status(tenant, owner, name, status, self.now())
            .await
    }

    /// Opens the bytes of asset `name` as checkpoint `seq` of session `id` pinned them.
    pub async fn open_pinned(
        &self,
        tenant: &TenantId,
        id: &Id,
        seq: u64,
        name: &AssetName,
    ) -> Result<(PinnedAsset, OpenAsset)> {
        let checkpoint = self.checkpoint_at(tenant, id, Some(seq)).await?;
        let Some(pin) = checkpoint.assets.into_iter().find(|p| p.name == *name) else {
            return Err(Error::NotFound {
                what: "pinned asset",
                id: format!("{name} of checkpoint {seq}"),
            });
        };
        match self
            .open_version(&pin.storage, &pin.sha256, pin.size, name)
            .await
        {
            Ok(open) => Ok((pin, open)),
            Err(OpenError::Changed(changed)) => {
                // The asset's status changes too while it still names the pinned file.
                let owner = Owner::Session(id.clone());
                let current = self.asset(tenant, &owner, name).await;
                if current.is_ok_and(|asset| asset.version() == pin.version()) {
                    self.note_changed(tenant, &owner, name, &changed).await?;
                }
                Err(changed.into_error(name))
            }
            Err(OpenError::Other(error)) => Err(error),
        }
    }

    /// Opens the bytes an asset record names (an external file checked as on every read).
    async fn open_stored(&self, asset: &Asset) -> Result<OpenAsset> {
        match self
            .open_version(&asset.storage, &asset.sha256, asset.size, &asset.name)
            .await
        {
            Ok(open) => Ok(open),
            Err(OpenError::Changed(changed)) => Err(changed.into_error(&asset.name)),
            Err(OpenError::Other(error)) => Err(error),
        }
    }

    async fn open_version(
        &self,
        storage: &Storage,
        sha256: &Sha256,
        size: u64,
        name: &AssetName,
    ) -> Result<OpenAsset, OpenError> {
        let open = |file: File| OpenAsset {
            source: Source::File(file),
            size,
            sha256: sha256.clone(),
        };
        if let Storage::External(path) = storage {
            let (roots, path) = (self.inner.assets.roots.clone(), path.clone());
            let checked = blocking(move || Ok(roots.open(&path, size))).await;
            return match checked {
                Ok(Ok(file)) => Ok(open(file)),
                Ok(Err(changed)) => Err(OpenError::Changed(changed)),
                Err(error) => Err(OpenError::Other(error)),
            };
        }
        if let (Some(objects), Storage::Appendable(key)) = (&self.inner.assets.objects, storage) {
            let chain = objects
                .chain(key, size, Some(sha256))
                .await
                .map_err(|e| OpenError::Other(io_error("cannot read the bucket", e)))?;
            return chain
                .map(|chain| OpenAsset {
                    source: Source::Chain(chain),
                    size,
                    sha256: sha256.clone(),
                })
                .ok_or_else(|| OpenError::Other(missing_bytes(name)));
        }
        let path = self
            .inner
            .store
            .blobs()
            .version_path(&FileVersion::of(storage, sha256, size))
            .ok_or_else(|| OpenError::Other(Error::Internal("no path for stored bytes".into())))?;
        let appendable = matches!(storage, Storage::Appendable(_));
        let file = File::open(&path).ok().filter(|file| {
            file.metadata()
                .is_ok_and(|m| m.is_file() && (m.len() == size || appendable && m.len() >= size))
        });
        file.map(open)
            .ok_or_else(|| OpenError::Other(missing_bytes(name)))
    }

    /// Starts an upload for `owner` (404, or 409 for a stale `fence`, before any byte is
    /// written).
    pub async fn upload(
        &self,
        tenant: &TenantId,
        owner: &Owner,
        fence: Option<u32>,
    ) -> Result<Upload> {
        self.check_fence(tenant, owner, fence).await?;
        if let Some(objects) = &self.inner.assets.objects {
            return Ok(Upload::Bucket(objects.upload()));
        }
        self.inner
            .store
            .blobs()
            .writer()
            .await
            .map(Upload::Disk)
            .map_err(|e| io_error("cannot start the upload", e))
    }

    /// Finishes an upload and records it as `name` (replacing any asset of that name).
    /// Answers the asset and whether it is new. On an `expected` hash mismatch, or a
    /// stale `fence`, no record changes.
    pub async fn put_asset(
        &self,
        tenant: &TenantId,
        owner: &Owner,
        name: &AssetName,
        upload: Upload,
        expected: Option<Sha256>,
        fence: Option<u32>,
    ) -> Result<(Asset, bool)> {
        let upload = match upload {
            Upload::Disk(writer) => writer,
            Upload::Bucket(upload) => {
                return self
                    .put_object(tenant, owner, name, upload, expected, fence)
                    .await;
            }
        };
        let hashed = upload
            .finish(expected.as_ref())
            .await
            .map_err(|e| io_error("cannot store the upload", e))?
            .map_err(|actual| hash_mismatch(expected.as_ref(), &actual))?;
        let sha256 = hashed.sha256.as_str().to_owned();
        let _guard = self
            .inner
            .assets
            .lock_for(lock_key(tenant, owner, name))
            .lock_owned()
            .await;
        self.inner.assets.start_placing(&sha256);
        let recorded = self
            .place_and_record(tenant, owner, name, hashed, fence)
            .await;
        self.inner.assets.done_placing(&sha256);
        recorded
    }

    /// Finishes an upload into the bucket and records it: a new file of its own, which
    /// appends may extend (its hash state is kept for them).
    async fn put_object(
        &self,
        tenant: &TenantId,
        owner: &Owner,
        name: &AssetName,
        upload: ObjectUpload,
        expected: Option<Sha256>,
        fence: Option<u32>,
    ) -> Result<(Asset, bool)> {
        let uploaded = upload
            .finish(expected.as_ref())
            .await
            .map_err(|e| io_error("cannot store the upload", e))?
            .map_err(|actual| hash_mismatch(expected.as_ref(), &actual))?;
        let _guard = self
            .inner
            .assets
            .lock_for(lock_key(tenant, owner, name))
            .lock_owned()
            .await;
        let now = self.now();
        let asset = Asset {
            name: name.clone(),
            storage: Storage::Appendable(uploaded.key.clone()),
            size: uploaded.size,
            sha256: uploaded.sha256,
            kind: None,
            status: AssetStatus::Ok,
            verified_at: now,
            created_at: now,
            updated_at: now,
        };
        let recorded = self.record_asset(tenant, owner, asset, fence).await?;
        self.inner
            .assets
            .remember_hash(uploaded.key, uploaded.size, uploaded.hasher);
        Ok(recorded)
    }

    async fn place_and_record(
        &self,
        tenant: &TenantId,
        owner: &Owner,
        name: &AssetName,
        hashed: lifeboat_store::blobs::Hashed,
        fence: Option<u32>,
    ) -> Result<(Asset, bool)> {
        let blob = hashed
            .keep(self.inner.store.blobs())
            .await
            .map_err(|e| io_error("cannot store the upload", e))?;
        let now = self.now();
        let asset = Asset {
            name: name.clone(),
            storage: Storage::Blob,
            size: blob.size,
            sha256: blob.sha256,
            kind: None,
            status: AssetStatus::Ok,
            verified_at: now,
            created_at: now,
            updated_at: now,
        };
        self.record_asset(tenant, owner, asset, fence).await
    }

    /// Registers a file on the server host. It must resolve, after symlinks, inside one
    /// of the configured asset roots (403 otherwise, whether or not it exists); it must
    /// exist there (422) as a regular file; size and SHA-256 are recorded now.
    pub async fn register_asset(
        &self,
        tenant: &TenantId,
        owner: &Owner,
        name: &AssetName,
        path: &str,
        kind: Option<String>,
        fence: Option<u32>,
    ) -> Result<(Asset, bool)> {
        self.check_fence(tenant, owner, fence).await?;
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
            let resolved = match roots.resolve_for_registration(&requested) {
                Err(()) => {
                    return Err(Error::Forbidden(format!(
                        "{display} is not inside a configured asset root (--asset-root)"
                    )));
                }
                Ok(None) => {
                    return Err(DomainError::Invalid {
                        field: "path",
                        message: format!("{display} does not exist"),
                    }
                    .into());
                }
                Ok(Some(resolved)) => resolved.to_string_lossy().into_owned(),
            };
            let (file, _) = roots.open_checked(&resolved).map_err(|changed| {
                Error::from(DomainError::Invalid {
                    field: "path",
                    message: match changed {
                        Changed::Missing(why) | Changed::Corrupt(why) => why,
                    },
                })
            })?;
            let (sha256, size) =
                hash_reader(file).map_err(|e| io_error("cannot read the file", e))?;
            Ok((resolved, sha256, size))
        })
        .await?;
        let now = self.now();
        let asset = Asset {
            name: name.clone(),
            storage: Storage::External(resolved),
            size,
            sha256,
            kind,
            status: AssetStatus::Ok,
            verified_at: now,
            created_at: now,
            updated_at: now,
        };
        self.record_asset(tenant, owner, asset, fence).await
    }

    /// Removes an asset. Its bytes stay until cleanup (a blob may be shared, a checkpoint
    /// may pin them); an appendable file nothing else names is removed at once.
    pub async fn delete_asset(
        &self,
        tenant: &TenantId,
        owner: &Owner,
        name: &AssetName,
        fence: Option<u32>,
    ) -> Result<()> {
        let _guard = self
            .inner
            .assets
            .lock_for(lock_key(tenant, owner, name))
            .lock_owned()
            .await;
        let (removed, still_named) = self.remove_asset(tenant, owner, name, fence).await?;
        if let Storage::Appendable(key) = &removed.storage
            && !still_named
        {
            match &self.inner.assets.objects {
                Some(objects) => {
                    if let Err(error) = objects.delete_file(key).await {
                        tracing::warn!(%error, key, "cannot delete a file's objects; cleanup will");
                    }
                }
                None => {
                    let path = self.inner.store.blobs().appendable_path(key);
                    let _ = tokio::fs::remove_file(path).await;
                }
            }
        }
        Ok(())
    }
}

/// Why a version's bytes could not be opened.
enum OpenError {
    /// An external file changed (SPEC §5 r2).
    Changed(Changed),
    /// Anything else.
    Other(Error),
}

impl Changed {
    fn into_error(self, name: &AssetName) -> Error {
        let why = match self {
            Changed::Missing(why) | Changed::Corrupt(why) => why,
        };
        DomainError::AssetChanged {
            name: name.to_string(),
            why,
        }
        .into()
    }
}

/// An upload whose bytes do not hash to the client's `X-Content-SHA256`.
fn hash_mismatch(expected: Option<&Sha256>, actual: &Sha256) -> DomainError {
    DomainError::HashMismatch {
        sent: expected.map(|e| e.as_str().to_owned()).unwrap_or_default(),
        actual: actual.as_str().to_owned(),
    }
}

fn missing_bytes(name: &AssetName) -> Error {
    Error::NotFound {
        what: "asset bytes",
        id: format!("{name} (POST …/verify records it as missing)"),
    }
}

/// SHA-256 and size of everything `reader` yields.
fn hash_reader(mut reader: impl Read) -> std::io::Result<(Sha256, u64)> {
    let mut hasher = sha2::Sha256::new();
    let size = std::io::copy(&mut reader, &mut hasher)?;
    Ok((Sha256::from_stored(hex::encode(hasher.finalize())), size))
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
