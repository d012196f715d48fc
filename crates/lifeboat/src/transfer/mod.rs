//! Export and import archives: one tar file that moves projects and sessions (state,
//! revisions, checkpoints, assets) between servers. Entries, in this order:
//!
//! - `manifest.json`: the format and version, what it holds, and the SHA-256 and size of
//!   every other entry;
//! - `records.json`: the store's rows (see `MaintenanceRows::export`);
//! - `blobs/<sha256>`: each asset's bytes, once per distinct content.
//!
//! Import checks every entry against the manifest while it reads, and the records
//! against the bytes, before anything is placed: a truncated, altered or foreign archive
//! is refused with nothing imported.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::path::PathBuf;

use lifeboat_core::{Sha256, TenantId};
use lifeboat_store::objects::Chain;
use lifeboat_store::{Ack, Error, Result, Selection, TransferCounts};
use serde_json::{Value, json};
use sha2::Digest;

use crate::Lifeboat;
use unpack::{place, place_in_bucket, unpack};

mod unpack;

/// The `format` of an archive's manifest.
pub const ARCHIVE_FORMAT: &str = "lifeboat-archive";
/// The archive version this build writes and reads.
pub const ARCHIVE_VERSION: u64 = 1;
const MANIFEST: &str = "manifest.json";
const RECORDS: &str = "records.json";
const BLOBS: &str = "blobs/";
/// The largest `manifest.json` or `records.json` an import reads into memory.
const JSON_ENTRY_MAX: u64 = 1 << 30;
/// Bytes of a tar header, and the unit entries are padded to.
const TAR_BLOCK: u64 = 512;

/// An export, ready to be written: the records in memory, the asset bytes still on disk.
pub struct Export {
    manifest: Vec<u8>,
    records: Vec<u8>,
    blobs: Vec<ExportedBlob>,
    counts: TransferCounts,
    created_at: u64,
}

struct ExportedBlob {
    sha256: Sha256,
    size: u64,
    source: Source,
}

/// Where an exported asset's bytes are read from.
enum Source {
    /// A file on this host.
    File(PathBuf),
    /// A file in the bucket, read from the blocking writer through the runtime.
    Bucket(Chain, tokio::runtime::Handle),
}

impl Source {
    fn open(&self, size: u64) -> io::Result<Box<dyn Read + '_>> {
        match self {
            Source::File(path) => Ok(Box::new(std::fs::File::open(path)?.take(size))),
            Source::Bucket(chain, runtime) => Ok(Box::new(BucketReader {
                pieces: chain.stream(0..size),
                runtime,
                piece: bytes::Bytes::new(),
            })),
        }
    }
}

/// A blocking reader over a file in the bucket.
struct BucketReader<'a> {
    pieces: futures_util::stream::BoxStream<'static, io::Result<bytes::Bytes>>,
    runtime: &'a tokio::runtime::Handle,
    piece: bytes::Bytes,
}

impl Read for BucketReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use futures_util::StreamExt;
        while self.piece.is_empty() {
            match self.runtime.block_on(self.pieces.next()) {
                None => return Ok(0),
                Some(piece) => self.piece = piece?,
            }
        }
        let n = buf.len().min(self.piece.len());
        buf[..n].copy_from_slice(&self.piece.split_to(n));
        Ok(n)
    }
}

/// Every asset row of an exported (or imported) document, mutable.
fn asset_rows(records: &mut Value) -> Vec<&mut serde_json::Map<String, Value>> {
    let mut rows = Vec::new();
    let Some(object) = records.as_object_mut() else {
        return rows;
    };
    for (field, owners) in object.iter_mut() {
        if field != "projects" && field != "sessions" {
            continue;
        }
        for owner in owners.as_array_mut().into_iter().flatten() {
            let assets = owner.get_mut("assets").and_then(Value::as_array_mut);
            rows.extend(
                assets
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_object_mut),
            );
        }
    }
    rows
}

/// Every checkpoint's pinned assets (`[{"name","size","sha256","storage","location"}]`,
/// the stored form of `assets`), each pin as a JSON object.
fn pins(records: &mut Value) -> Vec<&mut serde_json::Map<String, Value>> {
    let sessions = records
        .get_mut("sessions")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten();
    let checkpoints = sessions
        .filter_map(|session| session.get_mut("checkpoints").and_then(Value::as_array_mut))
        .flatten();
    let mut found = Vec::new();
    for checkpoint in checkpoints {
        let Some(assets) = checkpoint.get_mut("assets") else {
            continue;
        };
        // Stored as JSON text in the row; an earlier archive's names-only list is left be.
        let Some(text) = assets.as_str() else {
            continue;
        };
        let Ok(parsed) = serde_json::from_str::<Value>(text) else {
            continue;
        };
        *assets = parsed;
        found.extend(
            assets
                .as_array_mut()
                .into_iter()
                .flatten()
                .filter_map(Value::as_object_mut),
        );
    }
    found
}

/// Turns the parsed pins of [`pins`] back into the JSON text the rows store.
fn store_pins(records: &mut Value) {
    let sessions = records
        .get_mut("sessions")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten();
    for session in sessions {
        for checkpoint in session
            .get_mut("checkpoints")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            if let Some(assets) = checkpoint.get_mut("assets")
                && assets.is_array()
            {
                *assets = Value::String(assets.to_string());
            }
        }
    }
}

fn counts_json(counts: &TransferCounts) -> Value {
    json!({
        "projects": counts.projects,
        "revisions": counts.revisions,
        "schemas": counts.schemas,
        "sessions": counts.sessions,
        "checkpoints": counts.checkpoints,
        "assets": counts.assets,
    })
}

fn padded(size: u64) -> u64 {
    size.div_ceil(TAR_BLOCK) * TAR_BLOCK
}

/// Reads through, hashing and counting what passes.
struct Hashing<R> {
    inner: R,
    hasher: sha2::Sha256,
    read: u64,
}

impl<R: Read> Hashing<R> {
    fn new(inner: R) -> Hashing<R> {
        Hashing {
            inner,
            hasher: sha2::Sha256::new(),
            read: 0,
        }
    }

    fn finish(self) -> (Sha256, u64) {
        (
            Sha256::from_stored(hex::encode(self.hasher.finalize())),
            self.read,
        )
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let read = self.inner.read(buf)?;
        self.hasher.update(&buf[..read]);
        self.read += read as u64;
        Ok(read)
    }
}

impl Lifeboat {
    /// Collects an export of `selection` (empty: the whole tenant). Write it with
    /// [`Export::write_to`].
    pub async fn export(&self, tenant: &TenantId, selection: &Selection) -> Result<Export> {
        let (tenant_id, chosen) = (tenant.clone(), selection.clone());
        let (mut records, counts) = self.read(move |tx| tx.export(&tenant_id, &chosen)).await?;
        let store = self.inner.store.blobs();
        let mut blobs = BTreeMap::new();
        for row in asset_rows(&mut records) {
            let text = |column: &str| row.get(column).and_then(Value::as_str).unwrap_or("");
            let sha256 = Sha256::from_stored(text("sha256").to_owned());
            let size = row.get("size").and_then(Value::as_u64).unwrap_or(0);
            if blobs.contains_key(&sha256) {
                continue;
            }
            let source = match (
                text("storage"),
                text("location"),
                &self.inner.assets.objects,
            ) {
                ("appendable", key, Some(objects)) => {
                    let chain = objects
                        .chain(key, size, Some(&sha256))
                        .await
                        .map_err(|e| Error::Unavailable(format!("cannot read the bucket: {e}")))?
                        .ok_or_else(|| {
                            Error::Unavailable(format!(
                                "the bytes of asset {} are missing (run `lifeboat verify`); nothing was exported",
                                text("name")
                            ))
                        })?;
                    Source::Bucket(chain, tokio::runtime::Handle::current())
                }
                ("appendable", key, None) => Source::File(store.appendable_path(key)),
                ("external", path, _) => Source::File(PathBuf::from(path)),
                _ => Source::File(store.blob_path(&sha256)),
            };
            blobs.insert(
                sha256.clone(),
                ExportedBlob {
                    sha256,
                    size,
                    source,
                },
            );
        }
        // Whole uploads a checkpoint pins that no asset names any more travel too, so the
        // checkpoint means the same bytes after an import.
        // So do the versions of files in a bucket that a checkpoint pins when no exported
        // asset holds those bytes (a replaced upload there is a file of its own).
        for pin in pins(&mut records) {
            let text = |column: &str| pin.get(column).and_then(Value::as_str).unwrap_or("");
            let sha256 = Sha256::from_stored(text("sha256").to_owned());
            let size = pin.get("size").and_then(Value::as_u64).unwrap_or(0);
            if blobs.contains_key(&sha256) {
                continue;
            }
            let source = match (text("storage"), &self.inner.assets.objects) {
                ("blob", _) => {
                    let path = store.blob_path(&sha256);
                    path.is_file().then_some(Source::File(path))
                }
                ("appendable", Some(objects)) => objects
                    .chain(text("location"), size, Some(&sha256))
                    .await
                    .map_err(|e| Error::Unavailable(format!("cannot read the bucket: {e}")))?
                    .map(|chain| Source::Bucket(chain, tokio::runtime::Handle::current())),
                _ => None,
            };
            if let Some(source) = source {
                blobs.insert(
                    sha256.clone(),
                    ExportedBlob {
                        sha256,
                        size,
                        source,
                    },
                );
            }
        }
        store_pins(&mut records);
        let blobs: Vec<ExportedBlob> = blobs.into_values().collect();
        let records = serde_json::to_vec(&records)
            .map_err(|e| Error::Internal(format!("cannot encode the records: {e}")))?;
        let mut files = vec![json!({
            "path": RECORDS,
            "sha256": Sha256::of(&records).as_str(),
            "size": records.len(),
        })];
        files.extend(blobs.iter().map(|blob| {
            json!({
                "path": format!("{BLOBS}{}", blob.sha256.as_str()),
                "sha256": blob.sha256.as_str(),
                "size": blob.size,
            })
        }));
        let created_at = u64::try_from(self.now().0).unwrap_or(0);
        let manifest = serde_json::to_vec_pretty(&json!({
            "format": ARCHIVE_FORMAT,
            "version": ARCHIVE_VERSION,
            "created_at_ms": created_at,
            "contents": counts_json(&counts),
            "files": files,
        }))
        .map_err(|e| Error::Internal(format!("cannot encode the manifest: {e}")))?;
        Ok(Export {
            manifest,
            records,
            blobs,
            counts,
            created_at: created_at / 1000,
        })
    }

    /// Imports an archive into `tenant`. Blocking reads run off the async runtime. The
    /// archive is checked whole before anything is placed; a damaged one is
    /// `InvalidArchive`, an id that already exists here `AlreadyExists` — either way
    /// nothing is imported.
    pub async fn import<R: Read + Send + 'static>(
        &self,
        tenant: &TenantId,
        reader: R,
    ) -> Result<TransferCounts> {
        let store = self.inner.store.blobs().clone();
        let limit = self.max_asset_bytes();
        let unpacked = tokio::task::spawn_blocking({
            let store = store.clone();
            move || {
                let mut reader = reader;
                let unpacked = unpack(&store, &mut reader, limit);
                if unpacked.is_err() {
                    // Read what is left of a refused archive, so that a client still
                    // sending gets the refusal, not a connection reset.
                    let _ = io::copy(&mut reader, &mut io::sink());
                }
                unpacked
            }
        })
        .await
        .map_err(|e| Error::Internal(format!("import task failed: {e}")))??;
        let objects = self.inner.assets.objects.clone();
        let (records, appendables) = match &objects {
            Some(objects) => place_in_bucket(objects, unpacked).await?,
            None => tokio::task::spawn_blocking({
                let store = store.clone();
                move || place(&store, unpacked)
            })
            .await
            .map_err(|e| Error::Internal(format!("import task failed: {e}")))??,
        };
        let into = tenant.clone();
        let imported = self
            .write(Ack::AfterCommit, move |tx| {
                tx.import(&into, &records).map(Ok)
            })
            .await;
        if imported.is_err() {
            // Nothing names these files; content-addressed blobs stay for cleanup, since
            // other records may share them.
            for key in appendables {
                match &objects {
                    Some(objects) => {
                        let _ = objects.delete_file(&key).await;
                    }
                    None => {
                        let _ = std::fs::remove_file(store.appendable_path(&key));
                    }
                }
            }
        }
        imported
    }
}

impl Export {
    /// What the archive holds.
    pub fn counts(&self) -> TransferCounts {
        self.counts
    }

    /// The exact size of the archive [`Export::write_to`] writes, in bytes.
    pub fn archive_size(&self) -> u64 {
        let entries = [self.manifest.len() as u64, self.records.len() as u64]
            .into_iter()
            .chain(self.blobs.iter().map(|blob| blob.size));
        entries.map(|size| TAR_BLOCK + padded(size)).sum::<u64>() + 2 * TAR_BLOCK
    }

    /// Writes the archive (blocking). Asset bytes are hashed as they are copied: if one no
    /// longer matches its record, this fails and what was written must be discarded.
    /// With asset bytes in a bucket it reads them through the runtime the export was made
    /// in, so call it off that runtime's async threads (`spawn_blocking`), or it panics.
    pub fn write_to<W: Write>(&self, out: W) -> io::Result<W> {
        let mut tar = tar::Builder::new(out);
        let header = |size: u64| {
            let mut header = tar::Header::new_gnu();
            header.set_size(size);
            header.set_mode(0o644);
            header.set_mtime(self.created_at);
            header.set_entry_type(tar::EntryType::Regular);
            header
        };
        tar.append_data(
            &mut header(self.manifest.len() as u64),
            MANIFEST,
            self.manifest.as_slice(),
        )?;
        tar.append_data(
            &mut header(self.records.len() as u64),
            RECORDS,
            self.records.as_slice(),
        )?;
        for blob in &self.blobs {
            let file = blob.source.open(blob.size).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!(
                        "cannot read the bytes of asset {}: {e}",
                        blob.sha256.as_str()
                    ),
                )
            })?;
            let mut reader = Hashing::new(file);
            let path = format!("{BLOBS}{}", blob.sha256.as_str());
            tar.append_data(&mut header(blob.size), &path, &mut reader)?;
            let (sha256, size) = reader.finish();
            if sha256 != blob.sha256 || size != blob.size {
                return Err(io::Error::other(format!(
                    "the stored bytes of asset {} no longer match their record \
                     (run `lifeboat verify`); the export is incomplete",
                    blob.sha256.as_str()
                )));
            }
        }
        tar.into_inner()
    }
}
