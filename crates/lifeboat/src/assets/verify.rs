//! Looking at asset bytes: whether the files recovery needs are there (bounded in time),
//! and verification (re-hashing a session's or the whole store's files, recording what
//! was found).

use std::collections::HashMap;
use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lifeboat_core::{AssetStatus, FileLook, FileVersion, Id, Owner, Sha256, TenantId};
use lifeboat_store::Result;
use lifeboat_store::blobs::hash_file;
use lifeboat_store::objects::Objects;

use super::{blocking, hash_reader};
use crate::external::Changed;
use crate::{FileChecks, Lifeboat, Verification};

/// How long one look at the files (recovery's existence and size checks) may take before
/// the files it did not reach count as absent: a hung mount must not hang a recovery.
const FILE_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

impl Lifeboat {
    /// Looks at the files of `versions` (existence, type, size) off the async runtime,
    /// for at most [`FILE_CHECK_TIMEOUT`]: those not reached in time count as absent.
    pub(crate) async fn check_files(&self, versions: Vec<FileVersion>) -> FileChecks {
        if let Some(objects) = self.inner.assets.objects.clone() {
            return self.check_objects(objects, versions).await;
        }
        let blobs = self.inner.store.blobs().clone();
        let roots = self.inner.assets.roots.clone();
        let checks = Arc::new(Mutex::new(FileChecks::default()));
        let found = Arc::clone(&checks);
        let look = tokio::task::spawn_blocking(move || {
            for version in versions {
                let look = match version.storage {
                    "external" => roots.look(&version.key, version.size),
                    _ => blobs.look(&version),
                };
                if let Ok(mut found) = found.lock() {
                    found.insert(version, look);
                }
            }
        });
        if tokio::time::timeout(FILE_CHECK_TIMEOUT, look)
            .await
            .is_err()
        {
            tracing::warn!(
                timeout_ms = FILE_CHECK_TIMEOUT.as_millis() as u64,
                "file checks did not finish in time (a hung mount?); the rest count as absent"
            );
        }
        checks.lock().map(|c| c.clone()).unwrap_or_default()
    }

    /// [`Lifeboat::check_files`] when the bytes are in a bucket: each file's objects are
    /// listed once, eight files at a time, and every version asked about is looked for in
    /// its listing (external files and older whole uploads are looked at on this host),
    /// within the same time bound.
    async fn check_objects(&self, objects: Objects, versions: Vec<FileVersion>) -> FileChecks {
        use futures_util::StreamExt;
        let mut checks = FileChecks::default();
        let deadline = tokio::time::Instant::now() + FILE_CHECK_TIMEOUT;
        let (in_bucket, on_host): (Vec<FileVersion>, Vec<FileVersion>) = versions
            .into_iter()
            .partition(|version| version.storage == "appendable");
        let mut by_key: HashMap<String, Vec<FileVersion>> = HashMap::new();
        for version in in_bucket {
            by_key.entry(version.key.clone()).or_default().push(version);
        }
        let listings = futures_util::stream::iter(by_key)
            .map(|(key, versions)| {
                let objects = objects.clone();
                async move { (objects.listing(&key).await, versions) }
            })
            .buffer_unordered(8)
            .collect::<Vec<_>>();
        let listed = tokio::time::timeout_at(deadline, listings).await;
        if listed.is_err() {
            tracing::warn!(
                timeout_ms = FILE_CHECK_TIMEOUT.as_millis() as u64,
                "listing the bucket did not finish in time; those files count as absent"
            );
        }
        for (listing, versions) in listed.unwrap_or_default() {
            for version in versions {
                let present = listing
                    .as_ref()
                    .is_ok_and(|listing| listing.chain(version.size, None).is_some());
                let look = if present {
                    FileLook::Present
                } else {
                    FileLook::Absent
                };
                checks.insert(version, look);
            }
        }
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        if !on_host.is_empty() && !remaining.is_zero() {
            let blobs = self.inner.store.blobs().clone();
            let roots = self.inner.assets.roots.clone();
            let look = tokio::task::spawn_blocking(move || {
                on_host
                    .into_iter()
                    .map(|version| {
                        let look = match version.storage {
                            "external" => roots.look(&version.key, version.size),
                            _ => blobs.look(&version),
                        };
                        (version, look)
                    })
                    .collect::<Vec<_>>()
            });
            if let Ok(Ok(found)) = tokio::time::timeout(remaining, look).await {
                for (version, present) in found {
                    checks.insert(version, present);
                }
            }
        }
        checks
    }

    /// Re-reads one version of stored or external bytes whole: its status, and how many
    /// bytes were read.
    async fn rehash(&self, version: FileVersion, sha256: Sha256) -> Result<(AssetStatus, u64)> {
        if let (Some(objects), "appendable") = (&self.inner.assets.objects, version.storage) {
            let chain = match objects
                .chain(&version.key, version.size, Some(&sha256))
                .await
            {
                Ok(Some(chain)) => chain,
                Ok(None) => return Ok((AssetStatus::Missing, 0)),
                Err(e) => return Err(super::io_error("cannot read the bucket", e)),
            };
            return Ok(match chain.hasher().await {
                // Gone between the listing and the read; any other failure says nothing
                // about the bytes, so nothing is recorded.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => (AssetStatus::Missing, 0),
                Err(e) => return Err(super::io_error("cannot read the bucket", e)),
                Ok((hasher, read)) => {
                    let hash = hasher.finish();
                    if hash == sha256 && read == version.size {
                        (AssetStatus::Ok, read)
                    } else {
                        (AssetStatus::Corrupt, read)
                    }
                }
            });
        }
        let blobs = self.inner.store.blobs().clone();
        let roots = self.inner.assets.roots.clone();
        blocking(move || {
            let found = match version.storage {
                "external" => match roots.open_checked(&version.key) {
                    Err(Changed::Missing(_)) => return Ok((AssetStatus::Missing, 0)),
                    Err(Changed::Corrupt(_)) => return Ok((AssetStatus::Corrupt, 0)),
                    Ok((_, len)) if len != version.size => return Ok((AssetStatus::Corrupt, 0)),
                    Ok((file, _)) => hash_reader(file.take(version.size)),
                },
                _ => match blobs.version_path(&version) {
                    Some(path) => hash_file(&path, Some(version.size)),
                    None => return Ok((AssetStatus::Missing, 0)),
                },
            };
            Ok(match found {
                Err(_) => (AssetStatus::Missing, 0),
                Ok((hash, read)) if hash == sha256 && read == version.size => {
                    (AssetStatus::Ok, read)
                }
                Ok((_, read)) => (AssetStatus::Corrupt, read),
            })
        })
        .await
    }

    /// Re-hashes a session's checkpoints, its assets and every asset version its
    /// checkpoints pin: damaged checkpoints are quarantined, each asset's status is
    /// recorded, and damaged versions are remembered (recovery never resumes from them).
    pub async fn verify(&self, tenant: &TenantId, id: &Id) -> Result<Verification> {
        let mut verification = self.verify_checkpoints(tenant, id).await?;
        let facts = self.recovery_facts(tenant, id).await?;
        let owner = Owner::Session(id.clone());
        let now = self.now();
        let mut found = Vec::new();
        let mut checked: HashMap<FileVersion, AssetStatus> = HashMap::new();
        for asset in &facts.assets {
            let (status, _) = self.rehash(asset.version(), asset.sha256.clone()).await?;
            checked.insert(asset.version(), status);
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
            self.set_asset_status(tenant, &owner, &asset.name, status, now)
                .await?;
        }
        for checkpoint in &facts.checkpoints {
            for pin in &checkpoint.assets {
                let version = pin.version();
                let status = match checked.get(&version) {
                    Some(status) => *status,
                    None => {
                        let (status, _) = self.rehash(version.clone(), pin.sha256.clone()).await?;
                        checked.insert(version.clone(), status);
                        status
                    }
                };
                if status != AssetStatus::Ok {
                    verification.issues.push(format!(
                        "checkpoint {}: pinned asset {} is {}",
                        checkpoint.seq,
                        pin.name,
                        status.as_str()
                    ));
                }
            }
        }
        for (version, status) in checked {
            match status {
                AssetStatus::Ok => found.push((version, false)),
                AssetStatus::Corrupt => found.push((version, true)),
                AssetStatus::Missing => {}
            }
        }
        self.record_file_checks(found, now).await?;
        Ok(verification)
    }
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
        let check = self.check_store(repair).await?;
        let mut verification = StoreVerification {
            check,
            ..StoreVerification::default()
        };
        let now = self.now();
        let mut found = Vec::new();
        for (tenant, owner, asset) in self.all_assets().await? {
            let (status, bytes) = self.rehash(asset.version(), asset.sha256.clone()).await?;
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
                self.set_asset_status(&tenant, &owner, &asset.name, status, now)
                    .await?;
            }
            if repair && status != AssetStatus::Missing {
                found.push((asset.version(), status == AssetStatus::Corrupt));
            }
        }
        if repair {
            self.record_file_checks(found, now).await?;
        }
        Ok(verification)
    }
}
