//! Asset bytes on the local file system, under `<data-dir>/blobs/`:
//!
//! - `tmp/<uuid>`: an upload in progress. Never referenced by a record.
//! - `sha256/<aa>/<hex>`: a whole upload, named by its SHA-256 (content-addressed, so
//!   identical uploads share one file). Written to `tmp/`, fsynced, renamed into place,
//!   and the directory fsynced — before any record names it.
//! - `open/<key>`: an asset built by appends, one file per asset.
//!
//! External assets stay where they are; their records hold the resolved host path.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use lifeboat_core::{Asset, FileLook, FileVersion, Sha256, Storage};
use sha2::Digest;
use tokio::io::AsyncWriteExt;

/// The blob directory of a data dir.
#[derive(Debug, Clone)]
pub struct BlobStore {
    root: PathBuf,
}

/// An upload being written to `tmp/`, hashed as it goes.
pub struct BlobWriter {
    file: tokio::fs::File,
    path: PathBuf,
    hasher: sha2::Sha256,
    size: u64,
}

/// A finished upload still in `tmp/`: fsynced and hashed, not yet in place.
#[derive(Debug)]
pub struct Hashed {
    path: PathBuf,
    /// Its SHA-256.
    pub sha256: Sha256,
    /// Bytes.
    pub size: u64,
}

/// A finished, durable upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    /// Its SHA-256 (and so its name).
    pub sha256: Sha256,
    /// Bytes.
    pub size: u64,
}

fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Creates `dir` if it is missing, and fsyncs its parent so that the new entry survives a
/// power cut (a file fsynced inside a directory whose own entry was lost is lost too).
pub fn create_dir_durably(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::create_dir_all(dir)?;
    match dir.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => fsync_dir(parent),
        _ => Ok(()),
    }
}

impl BlobStore {
    /// Opens (creating) `<data_dir>/blobs`.
    pub fn open(data_dir: &Path) -> io::Result<BlobStore> {
        let root = data_dir.join("blobs");
        create_dir_durably(&root)?;
        for dir in ["tmp", "sha256", "open"] {
            create_dir_durably(&root.join(dir))?;
        }
        Ok(BlobStore { root })
    }

    /// Where a content-addressed blob lives.
    pub fn blob_path(&self, sha256: &Sha256) -> PathBuf {
        let hex = sha256.as_str();
        self.root.join("sha256").join(&hex[..2]).join(hex)
    }

    /// Where an appendable asset's file lives.
    pub fn appendable_path(&self, key: &str) -> PathBuf {
        self.root.join("open").join(key)
    }

    /// The file holding an asset's bytes.
    pub fn path_of(&self, asset: &Asset) -> PathBuf {
        match &asset.storage {
            Storage::Blob => self.blob_path(&asset.sha256),
            Storage::Appendable(key) => self.appendable_path(key),
            Storage::External(path) => PathBuf::from(path),
        }
    }

    /// The directory of appendable files (fsynced after one is created).
    pub fn open_dir(&self) -> PathBuf {
        self.root.join("open")
    }

    /// Every stored file, for cleanup: uploads in progress, whole uploads (with their
    /// SHA-256), and appendable files (with their key).
    pub fn files(&self) -> io::Result<Vec<StoredFile>> {
        let mut files = Vec::new();
        let list = |dir: &Path| -> io::Result<Vec<(PathBuf, String)>> {
            let mut found = Vec::new();
            if let Ok(entries) = std::fs::read_dir(dir) {
                for entry in entries {
                    let entry = entry?;
                    found.push((
                        entry.path(),
                        entry.file_name().to_string_lossy().into_owned(),
                    ));
                }
            }
            Ok(found)
        };
        for (path, _) in list(&self.root.join("tmp"))? {
            files.push(StoredFile::Temporary(path));
        }
        for (dir, _) in list(&self.root.join("sha256"))? {
            for (path, name) in list(&dir)? {
                files.push(StoredFile::Blob(path, name));
            }
        }
        for (path, key) in list(&self.root.join("open"))? {
            files.push(StoredFile::Appendable(path, key));
        }
        Ok(files)
    }
}

/// A file under the blob store, as cleanup sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoredFile {
    /// `tmp/…`: never referenced.
    Temporary(PathBuf),
    /// `sha256/…/<hex>`, with its hex name.
    Blob(PathBuf, String),
    /// `open/<key>`, with its key.
    Appendable(PathBuf, String),
}

impl StoredFile {
    /// Its path.
    pub fn path(&self) -> &Path {
        match self {
            StoredFile::Temporary(path)
            | StoredFile::Blob(path, _)
            | StoredFile::Appendable(path, _) => path,
        }
    }
}

impl BlobStore {
    /// Starts an upload in `tmp/`.
    pub async fn writer(&self) -> io::Result<BlobWriter> {
        let path = self.temp_path();
        let file = tokio::fs::File::create(&path).await?;
        Ok(BlobWriter {
            file,
            path,
            hasher: sha2::Sha256::new(),
            size: 0,
        })
    }

    /// A fresh path under `tmp/` for a file being written.
    pub fn temp_path(&self) -> PathBuf {
        self.root.join("tmp").join(uuid::Uuid::now_v7().to_string())
    }

    /// Blocking: moves a fsynced file from `tmp/` into place under `sha256` and fsyncs the
    /// directories. The same bytes already stored are replaced, not kept: the file there
    /// may be the one a verification found damaged, and these bytes hash right (so a
    /// re-upload heals it). The new file's modification time is now, so cleanup, which
    /// deletes only old files, leaves it alone.
    pub fn keep(&self, temp: &Path, sha256: &Sha256) -> io::Result<()> {
        let target = self.blob_path(sha256);
        let dir = target.parent().map(Path::to_path_buf).unwrap_or_default();
        create_dir_durably(&dir)?;
        File::options()
            .append(true)
            .open(temp)?
            .set_modified(std::time::SystemTime::now())?;
        std::fs::rename(temp, &target)?;
        fsync_dir(&dir)?;
        if let Some(parent) = dir.parent() {
            fsync_dir(parent)?;
        }
        Ok(())
    }

    /// Blocking: copies a file from `tmp/` to a new appendable file `open/<key>`, durable
    /// (file and directory fsynced) when this returns.
    pub fn copy_to_appendable(&self, temp: &Path, key: &str) -> io::Result<()> {
        let target = self.appendable_path(key);
        std::fs::copy(temp, &target)?;
        File::open(&target)?.sync_all()?;
        fsync_dir(&self.open_dir())
    }
}

impl BlobWriter {
    /// Appends a piece of the upload; `Err` with `ErrorKind::FileTooLarge` past `limit`.
    pub async fn write(&mut self, chunk: &[u8], limit: u64) -> io::Result<()> {
        self.size += chunk.len() as u64;
        if self.size > limit {
            return Err(io::Error::new(
                io::ErrorKind::FileTooLarge,
                format!("the upload is larger than {limit} bytes"),
            ));
        }
        self.hasher.update(chunk);
        self.file.write_all(chunk).await
    }

    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Finishes the upload: fsyncs and hashes it. `expected` is the client's
    /// `X-Content-SHA256`; on a mismatch nothing is kept and the actual hash is returned
    /// as the error. [`Hashed::keep`] then puts it in place.
    pub async fn finish(mut self, expected: Option<&Sha256>) -> io::Result<Result<Hashed, Sha256>> {
        self.file.flush().await?;
        self.file.sync_all().await?;
        let sha256 = Sha256::from_stored(hex::encode(self.hasher.finalize()));
        drop(self.file);
        if expected.is_some_and(|e| *e != sha256) {
            tokio::fs::remove_file(&self.path).await?;
            return Ok(Err(sha256));
        }
        Ok(Ok(Hashed {
            path: self.path,
            sha256,
            size: self.size,
        }))
    }

    /// Abandons the upload and removes its temporary file.
    pub async fn abort(self) {
        drop(self.file);
        let _ = tokio::fs::remove_file(&self.path).await;
    }
}

impl Hashed {
    /// Stores the upload under its hash, durably (see [`BlobStore::keep`]).
    pub async fn keep(self, blobs: &BlobStore) -> io::Result<Blob> {
        let blobs = blobs.clone();
        let (path, sha256) = (self.path, self.sha256.clone());
        tokio::task::spawn_blocking(move || blobs.keep(&path, &sha256))
            .await
            .map_err(io::Error::other)??;
        Ok(Blob {
            sha256: self.sha256,
            size: self.size,
        })
    }

    /// Abandons the upload and removes its temporary file.
    pub async fn discard(self) {
        let _ = tokio::fs::remove_file(&self.path).await;
    }
}

/// SHA-256 and size of the first `len` bytes of a file (all of it with `None`).
pub fn hash_file(path: &Path, len: Option<u64>) -> io::Result<(Sha256, u64)> {
    let file = File::open(path)?;
    let mut reader: Box<dyn Read> = match len {
        Some(len) => Box::new(file.take(len)),
        None => Box::new(file),
    };
    let mut hasher = sha2::Sha256::new();
    let mut buffer = vec![0u8; 1 << 16];
    let mut size = 0u64;
    loop {
        let read = reader.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
        size += read as u64;
    }
    Ok((Sha256::from_stored(hex::encode(hasher.finalize())), size))
}

impl BlobStore {
    /// Where the bytes of a stored version are (`None` for an external file).
    pub fn version_path(&self, version: &FileVersion) -> Option<PathBuf> {
        match version.storage {
            "blob" => Some(self.blob_path(&Sha256::from_stored(version.key.clone()))),
            "appendable" => Some(self.appendable_path(&version.key)),
            _ => None,
        }
    }

    /// The cheap check recovery makes every time of a stored version: its file exists,
    /// is a regular file, and holds its bytes (a blob exactly, an appendable file at
    /// least as many: a prefix stays a prefix as the file grows).
    pub fn look(&self, version: &FileVersion) -> FileLook {
        let Some(meta) = self
            .version_path(version)
            .and_then(|path| std::fs::metadata(path).ok())
            .filter(std::fs::Metadata::is_file)
        else {
            return FileLook::Absent;
        };
        let holds = match version.storage {
            "appendable" => meta.len() >= version.size,
            _ => meta.len() == version.size,
        };
        if holds {
            FileLook::Present
        } else {
            FileLook::Differs
        }
    }
}
