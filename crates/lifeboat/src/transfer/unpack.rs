//! Reading an archive for import: the manifest, every entry hashed against it, asset bytes
//! parked in `tmp/` until the whole archive checked out, then placed.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use lifeboat_core::Sha256;
use lifeboat_store::blobs::BlobStore;
use lifeboat_store::objects::Objects;
use lifeboat_store::{Error, Result};
use serde_json::Value;

use super::{
    ARCHIVE_FORMAT, ARCHIVE_VERSION, BLOBS, Hashing, JSON_ENTRY_MAX, MANIFEST, RECORDS, asset_rows,
    pins, store_pins,
};

/// What an archive held, checked: its records, and its blobs in `tmp/` files.
pub(super) struct Unpacked {
    records: Value,
    temps: Temps,
}

/// Files in `tmp/`, removed when dropped unless taken.
#[derive(Default)]
struct Temps(BTreeMap<Sha256, (PathBuf, u64)>);

impl Drop for Temps {
    fn drop(&mut self) {
        for (path, _) in self.0.values() {
            let _ = std::fs::remove_file(path);
        }
    }
}

fn damaged(what: impl std::fmt::Display) -> Error {
    Error::InvalidArchive(format!(
        "the archive is damaged: {what}; nothing was imported"
    ))
}

/// One entry of the manifest's file list.
struct Listed {
    sha256: Sha256,
    size: u64,
}

fn parse_manifest(bytes: &[u8]) -> Result<BTreeMap<String, Listed>> {
    let manifest: Value = serde_json::from_slice(bytes)
        .map_err(|e| damaged(format!("{MANIFEST} does not parse: {e}")))?;
    if manifest.get("format").and_then(Value::as_str) != Some(ARCHIVE_FORMAT) {
        return Err(Error::InvalidArchive(format!(
            "not a Lifeboat export: {MANIFEST} has no \"format\": \"{ARCHIVE_FORMAT}\""
        )));
    }
    let version = manifest.get("version").and_then(Value::as_u64);
    if version != Some(ARCHIVE_VERSION) {
        return Err(Error::InvalidArchive(format!(
            "archive version {version:?} is not {ARCHIVE_VERSION}, the one this Lifeboat reads"
        )));
    }
    let mut files = BTreeMap::new();
    let list = manifest.get("files").and_then(Value::as_array);
    for file in list.into_iter().flatten() {
        let (Some(path), Some(sha256), Some(size)) = (
            file.get("path").and_then(Value::as_str),
            file.get("sha256").and_then(Value::as_str),
            file.get("size").and_then(Value::as_u64),
        ) else {
            return Err(damaged(format!(
                "{MANIFEST} lists a file without path, sha256 or size"
            )));
        };
        let sha256 = Sha256::parse("sha256", sha256)
            .map_err(|_| damaged(format!("{path}: invalid sha256")))?;
        files.insert(path.to_owned(), Listed { sha256, size });
    }
    if !files.contains_key(RECORDS) {
        return Err(damaged(format!("{MANIFEST} does not list {RECORDS}")));
    }
    Ok(files)
}

/// Reads the whole archive, checking each entry against the manifest; asset bytes go to
/// `tmp/` files (fsynced), nothing else is touched.
pub(super) fn unpack(store: &BlobStore, reader: impl Read, limit: u64) -> Result<Unpacked> {
    let mut archive = tar::Archive::new(reader);
    let mut manifest: Option<BTreeMap<String, Listed>> = None;
    let unreadable = |e: io::Error, manifest: &Option<_>| match manifest {
        None => Error::InvalidArchive(
            "not a Lifeboat export, or truncated before its manifest.json; nothing was imported"
                .to_owned(),
        ),
        Some(_) => damaged(format!("it is truncated or not a tar file ({e})")),
    };
    let entries = archive.entries().map_err(|e| unreadable(e, &manifest))?;
    let mut seen = BTreeSet::new();
    let mut records = None;
    let mut temps = Temps::default();
    for entry in entries {
        let entry = entry.map_err(|e| unreadable(e, &manifest))?;
        let path = String::from_utf8(entry.path_bytes().into_owned())
            .map_err(|_| damaged("an entry's name is not UTF-8"))?;
        if entry.header().entry_type() != tar::EntryType::Regular {
            return Err(damaged(format!("{path} is not a regular file")));
        }
        let size = entry.size();
        let Some(files) = &manifest else {
            if path != MANIFEST || size > JSON_ENTRY_MAX {
                return Err(Error::InvalidArchive(format!(
                    "not a Lifeboat export: its first entry is {path}, not {MANIFEST}; \
                     nothing was imported"
                )));
            }
            let (bytes, _) = read_json_entry(entry, size, &path)?;
            manifest = Some(parse_manifest(&bytes)?);
            continue;
        };
        let Some(listed) = files.get(&path) else {
            return Err(damaged(format!("{path} is not listed in {MANIFEST}")));
        };
        if !seen.insert(path.clone()) {
            return Err(damaged(format!("{path} appears twice")));
        }
        if size != listed.size {
            return Err(damaged(format!(
                "{path} holds {size} bytes, {MANIFEST} says {}",
                listed.size
            )));
        }
        let sha256 = if path == RECORDS {
            let (bytes, sha256) = read_json_entry(entry, size, &path)?;
            records = Some(bytes);
            sha256
        } else if path.strip_prefix(BLOBS) == Some(listed.sha256.as_str()) {
            if size > limit {
                return Err(Error::TooLarge(format!(
                    "{path} is {size} bytes, more than this server's asset limit of {limit}"
                )));
            }
            let temp = store.temp_path();
            temps.0.insert(listed.sha256.clone(), (temp.clone(), size));
            copy_entry(entry, size, &temp, &path)?
        } else {
            return Err(damaged(format!("unexpected entry {path}")));
        };
        if sha256 != listed.sha256 {
            return Err(damaged(format!(
                "{path} does not match its SHA-256 in {MANIFEST}"
            )));
        }
    }
    let Some(files) = manifest else {
        return Err(Error::InvalidArchive(format!(
            "not a Lifeboat export: it has no {MANIFEST}; nothing was imported"
        )));
    };
    if let Some(missing) = files.keys().find(|path| !seen.contains(*path)) {
        return Err(damaged(format!("it is truncated: {missing} is missing")));
    }
    let Some(records) = records else {
        return Err(damaged(format!("{RECORDS} is missing")));
    };
    let records = serde_json::from_slice(&records)
        .map_err(|e| damaged(format!("{RECORDS} does not parse: {e}")))?;
    Ok(Unpacked { records, temps })
}

/// Reads a JSON entry whole, with its hash; a short read is a truncated archive.
fn read_json_entry(entry: impl Read, size: u64, path: &str) -> Result<(Vec<u8>, Sha256)> {
    if size > JSON_ENTRY_MAX {
        return Err(damaged(format!(
            "{path} is larger than {JSON_ENTRY_MAX} bytes"
        )));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    let mut reader = Hashing::new(entry);
    reader.read_to_end(&mut bytes).map_err(damaged)?;
    let (sha256, read) = reader.finish();
    if read != size {
        return Err(damaged(format!("it is truncated inside {path}")));
    }
    Ok((bytes, sha256))
}

/// Copies an entry to `temp` and fsyncs it; answers its hash.
fn copy_entry(entry: impl Read, size: u64, temp: &Path, path: &str) -> Result<Sha256> {
    let unavailable =
        |e: io::Error| Error::Unavailable(format!("cannot write {}: {e}", temp.display()));
    let mut file = std::fs::File::create(temp).map_err(unavailable)?;
    let mut reader = Hashing::new(entry);
    io::copy(&mut reader, &mut file).map_err(|e| {
        if e.kind() == io::ErrorKind::StorageFull {
            Error::Full(e.to_string())
        } else {
            damaged(format!("{path}: {e}"))
        }
    })?;
    file.sync_all().map_err(unavailable)?;
    let (sha256, read) = reader.finish();
    if read != size {
        return Err(damaged(format!("it is truncated inside {path}")));
    }
    Ok(sha256)
}

/// Checks the asset records against the blobs, then puts the bytes in place (where no
/// record names them yet): content-addressed blobs under `sha256/`, appendable assets in
/// new files of their own. External assets arrive as blobs, since the path they named
/// is on the old machine. Answers the records to commit and the appendable keys made.
pub(super) fn place(store: &BlobStore, unpacked: Unpacked) -> Result<(Value, Vec<String>)> {
    let Unpacked {
        mut records,
        mut temps,
    } = unpacked;
    let mut appendables = Vec::new();
    let mut as_blobs = BTreeSet::new();
    // Where each appendable file (by its old key) and each external file (by path and
    // hash) went, for the pins that name them.
    let mut moved: BTreeMap<(String, String), Option<String>> = BTreeMap::new();
    for row in asset_rows(&mut records) {
        let name = row
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("?")
            .to_owned();
        let sha256 = row
            .get("sha256")
            .and_then(Value::as_str)
            .and_then(|s| Sha256::parse("sha256", s).ok())
            .ok_or_else(|| damaged(format!("asset {name} has no valid sha256")))?;
        let size = row.get("size").and_then(Value::as_u64);
        let Some((temp, stored)) = temps.0.get(&sha256) else {
            return Err(damaged(format!("the bytes of asset {name} are missing")));
        };
        if size != Some(*stored) {
            return Err(damaged(format!(
                "asset {name}: its size does not match its bytes"
            )));
        }
        let old_location = row
            .get("location")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        if row.get("storage").and_then(Value::as_str) == Some("appendable") {
            let key = uuid::Uuid::now_v7().to_string();
            store
                .copy_to_appendable(temp, &key)
                .map_err(|e| Error::Unavailable(format!("cannot place asset {name}: {e}")))?;
            row.insert("location".to_owned(), Value::String(key.clone()));
            moved.insert((old_location, String::new()), Some(key.clone()));
            appendables.push(key);
        } else {
            if row.get("storage").and_then(Value::as_str) == Some("external") {
                moved.insert((old_location, sha256.as_str().to_owned()), None);
            }
            row.insert("storage".to_owned(), Value::String("blob".to_owned()));
            row.insert("location".to_owned(), Value::Null);
            as_blobs.insert(sha256);
        }
    }
    // Pins follow their bytes: an appendable file's prefix to its new file, an external
    // file's version to the blob it arrived as; a pinned whole upload is placed as is.
    for pin in pins(&mut records) {
        let text = |column: &str| {
            pin.get(column)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        match text("storage").as_str() {
            "appendable" => {
                if let Some(Some(key)) = moved.get(&(text("location"), String::new())) {
                    pin.insert("location".to_owned(), Value::String(key.clone()));
                }
            }
            "external" => {
                if moved.contains_key(&(text("location"), text("sha256"))) {
                    pin.insert("storage".to_owned(), Value::String("blob".to_owned()));
                    pin.insert("location".to_owned(), Value::Null);
                }
            }
            _ => {
                if let Ok(sha256) = Sha256::parse("sha256", &text("sha256"))
                    && temps.0.contains_key(&sha256)
                {
                    as_blobs.insert(sha256);
                }
            }
        }
    }
    store_pins(&mut records);
    for sha256 in as_blobs {
        if let Some((temp, _)) = temps.0.remove(&sha256) {
            store
                .keep(&temp, &sha256)
                .map_err(|e| Error::Unavailable(format!("cannot place a blob: {e}")))?;
        }
    }
    Ok((records, appendables))
}

/// [`place`] when asset bytes go to a bucket: every asset gets a new file of its own there
/// (whatever its kind was: content addressing is for local disks), and pins follow their
/// bytes to it; bytes only a pin names get a file too. Answers the records to commit and
/// the keys of the files made.
pub(super) async fn place_in_bucket(
    objects: &Objects,
    unpacked: Unpacked,
) -> Result<(Value, Vec<String>)> {
    let Unpacked { mut records, temps } = unpacked;
    let mut made = Vec::new();
    // Old (storage, location, sha256) → the new file; and sha256 → a file holding them.
    let mut moved: BTreeMap<(String, String, String), String> = BTreeMap::new();
    let mut by_hash: BTreeMap<Sha256, String> = BTreeMap::new();
    let text = |row: &serde_json::Map<String, Value>, column: &str| {
        row.get(column)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    for row in asset_rows(&mut records) {
        let name = text(row, "name");
        let sha256 = Sha256::parse("sha256", &text(row, "sha256"))
            .map_err(|_| damaged(format!("asset {name} has no valid sha256")))?;
        let Some((temp, stored)) = temps.0.get(&sha256) else {
            return Err(damaged(format!("the bytes of asset {name} are missing")));
        };
        if row.get("size").and_then(Value::as_u64) != Some(*stored) {
            return Err(damaged(format!(
                "asset {name}: its size does not match its bytes"
            )));
        }
        let key = upload_file(objects, temp, &sha256).await?;
        made.push(key.clone());
        let old = (
            text(row, "storage"),
            text(row, "location"),
            sha256.as_str().to_owned(),
        );
        moved.insert(old, key.clone());
        by_hash.entry(sha256).or_insert_with(|| key.clone());
        row.insert("storage".to_owned(), Value::String("appendable".to_owned()));
        row.insert("location".to_owned(), Value::String(key));
    }
    for pin in pins(&mut records) {
        let (storage, location) = (text(pin, "storage"), text(pin, "location"));
        let Ok(sha256) = Sha256::parse("sha256", &text(pin, "sha256")) else {
            continue;
        };
        // An appendable file's prefix follows the file, whatever its hash now.
        let followed = moved
            .iter()
            .find(|((s, l, h), _)| {
                *s == storage
                    && *l == location
                    && (storage == "appendable" || *h == sha256.as_str())
            })
            .map(|(_, key)| key.clone());
        let key = match (followed, by_hash.get(&sha256), temps.0.get(&sha256)) {
            (Some(key), _, _) => key,
            (None, Some(key), _) => key.clone(),
            (None, None, Some((temp, _))) => {
                let key = upload_file(objects, temp, &sha256).await?;
                made.push(key.clone());
                by_hash.insert(sha256.clone(), key.clone());
                key
            }
            (None, None, None) => continue,
        };
        pin.insert("storage".to_owned(), Value::String("appendable".to_owned()));
        pin.insert("location".to_owned(), Value::String(key));
    }
    store_pins(&mut records);
    Ok((records, made))
}

/// Uploads a checked file from `tmp/` as a new file in the bucket.
async fn upload_file(objects: &Objects, temp: &Path, sha256: &Sha256) -> Result<String> {
    use tokio::io::AsyncReadExt;
    let failed =
        |e: io::Error| Error::Unavailable(format!("cannot place a file in the bucket: {e}"));
    let mut file = tokio::fs::File::open(temp).await.map_err(failed)?;
    let mut upload = objects.upload();
    loop {
        let mut buffer = bytes::BytesMut::with_capacity(1 << 20);
        let read = file.read_buf(&mut buffer).await.map_err(failed)?;
        if read == 0 {
            break;
        }
        upload
            .write(buffer.freeze(), u64::MAX)
            .await
            .map_err(failed)?;
    }
    match upload.finish(Some(sha256)).await.map_err(failed)? {
        Ok(uploaded) => Ok(uploaded.key),
        Err(actual) => Err(damaged(format!(
            "a file changed while it was placed ({} became {})",
            sha256.as_str(),
            actual.as_str()
        ))),
    }
}
