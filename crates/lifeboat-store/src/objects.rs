//! Asset bytes in an S3-compatible bucket (`--blob-store s3://bucket/prefix`), shared by
//! every server. Endpoint and credentials come from the environment (`AWS_ENDPOINT_URL`,
//! `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, …).
//!
//! Every stored file has a key of its own (a UUID v7), so no two uploads or appends ever
//! write the same object, and cleanup deleting an old file can never meet a new upload of
//! the same bytes. A file is a chain of immutable chunk objects under `<prefix>/files/<key>/`:
//!
//! - `0000000000000000.upload`: a whole upload, streamed as a multipart upload;
//! - `<start>.<before>.<after>`: an appended chunk, `start` its offset (16 hex digits),
//!   `before` the SHA-256 of the file's first `start` bytes and `after` of the bytes through
//!   the chunk's end.
//!
//! The asset record holds the file's size and SHA-256 (as a checkpoint's pin does for the
//! version it pins), and that pair names the chain: the chunk ending at that size with that
//! hash, then the one ending at its start with its `before` hash, back to offset 0. Two
//! servers racing an append at one offset write two different chunks; the record's
//! compare-and-set picks the one that counts, and the other is never read.
//!
//! A multipart upload in progress is tracked by a marker object
//! `<prefix>/multipart/<key>` holding its upload id; cleanup aborts the uploads whose
//! marker is older than the orphan age (a server that died mid-upload leaves one).

use std::collections::HashMap;
use std::io;
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream::{self, BoxStream, StreamExt, TryStreamExt};
use lifeboat_core::{RunningSha256, Sha256};
use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey};
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path;
use object_store::{GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutPayload, PutPayloadMut};
use tokio::task::JoinHandle;

/// Bytes buffered per part of a multipart upload (S3's smallest part is 5 MiB).
const PART_BYTES: usize = 5 << 20;
/// Parts of one upload in flight at once: together with the part being filled, an upload
/// holds at most `(PARTS_IN_FLIGHT + 1) * PART_BYTES` in memory.
const PARTS_IN_FLIGHT: usize = 3;
/// The largest file a whole upload can make: S3 takes at most 10,000 parts.
pub const UPLOAD_BYTES_MAX: u64 = 10_000 * PART_BYTES as u64;
/// The name of a whole upload's (only) chunk.
const UPLOAD_CHUNK: &str = "0000000000000000.upload";

/// An S3-compatible bucket and the prefix under which Lifeboat keeps its objects.
#[derive(Debug, Clone)]
pub struct Objects {
    store: Arc<AmazonS3>,
    prefix: Path,
}

/// What a stored file's objects add up to, for cleanup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredObjectFile {
    /// The file's key.
    pub key: String,
    /// Bytes in all its objects.
    pub bytes: u64,
    /// When its newest object was written (ms since the epoch).
    pub newest_ms: i64,
}

/// A multipart upload that was started and never finished or aborted.
#[derive(Debug, Clone)]
pub struct PendingUpload {
    key: String,
    /// When it was started (ms since the epoch).
    pub started_ms: i64,
}

/// One version of a file, located: its chunks in order, and its size.
#[derive(Debug, Clone)]
pub struct Chain {
    store: Arc<AmazonS3>,
    pieces: Vec<(Path, u64, u64)>,
    size: u64,
    /// The hash state at the version's end, when its last chunk carries it.
    resume: Option<RunningSha256>,
}

fn other(e: object_store::Error) -> io::Error {
    match e {
        object_store::Error::NotFound { .. } => io::Error::new(io::ErrorKind::NotFound, e),
        e => io::Error::other(e),
    }
}

impl Objects {
    /// Opens `s3://bucket[/prefix]`, with the endpoint, region and credentials from the
    /// environment, overridden by `options` (`object_store`'s names: `aws_endpoint`,
    /// `aws_access_key_id`, …; how an embedding program configures it without the
    /// environment). Plain HTTP is allowed when the endpoint says `http://` (a local
    /// S3-compatible server). Nothing is asked of the bucket yet: see [`Objects::check`].
    pub fn open(url: &str, options: &[(String, String)]) -> Result<Objects, String> {
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| format!("--blob-store {url}: only s3://bucket/prefix is supported"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(format!("--blob-store {url}: the bucket name is missing"));
        }
        let mut endpoint = ["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_ENDPOINT"]
            .iter()
            .find_map(|name| std::env::var(name).ok());
        let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
        // The payload is not hashed for the signature (TLS protects it in transit, and the
        // upload is hashed once, here, for its record): one SHA-256 pass per byte, not two.
        if std::env::var("AWS_UNSIGNED_PAYLOAD").is_err() {
            builder = builder.with_unsigned_payload(true);
        }
        if std::env::var("AWS_REGION").is_err() && std::env::var("AWS_DEFAULT_REGION").is_err() {
            builder = builder.with_region("us-east-1");
        }
        for (key, value) in options {
            let key: AmazonS3ConfigKey = key
                .parse()
                .map_err(|e| format!("--blob-store option {key}: {e}"))?;
            if key == AmazonS3ConfigKey::Endpoint {
                endpoint = Some(value.clone());
            }
            builder = builder.with_config(key, value);
        }
        if endpoint
            .as_deref()
            .is_some_and(|e| e.starts_with("http://"))
        {
            builder = builder.with_allow_http(true);
        }
        let store = builder
            .build()
            .map_err(|e| format!("--blob-store {url}: {e}"))?;
        Ok(Objects {
            store: Arc::new(store),
            prefix: Path::from(prefix.trim_matches('/')),
        })
    }

    /// Lists one object: answers whether the bucket is reachable with these credentials.
    pub async fn check(&self) -> io::Result<()> {
        let mut listing = self.store.list(Some(&self.prefix));
        match listing.next().await {
            Some(Err(e)) => Err(other(e)),
            _ => Ok(()),
        }
    }

    /// Every object under `prefix`.
    async fn list(&self, prefix: &Path) -> io::Result<Vec<object_store::ObjectMeta>> {
        self.store
            .list(Some(prefix))
            .try_collect()
            .await
            .map_err(other)
    }

    fn dir(&self, key: &str) -> Path {
        self.prefix.clone().join("files").join(key)
    }

    fn marker(&self, key: &str) -> Path {
        self.prefix.clone().join("multipart").join(key)
    }

    /// Starts a whole upload into a new file.
    pub fn upload(&self) -> ObjectUpload {
        let key = uuid::Uuid::now_v7().to_string();
        ObjectUpload {
            objects: self.clone(),
            path: self.dir(&key).join(UPLOAD_CHUNK),
            key,
            hasher: RunningSha256::new(),
            size: 0,
            buffer: PutPayloadMut::new(),
            multipart: None,
            parts: Vec::new(),
        }
    }

    /// Writes the chunk of file `key` that starts at `start`, after bytes hashing to
    /// `before`, and brings the file's hash state to `after` (whose state goes into the
    /// name, so that any server can append next without reading the file). Durable when
    /// this returns.
    pub async fn put_chunk(
        &self,
        key: &str,
        start: u64,
        before: &Sha256,
        after: &RunningSha256,
        bytes: Vec<u8>,
    ) -> io::Result<()> {
        let name = format!(
            "{start:016x}.{}.{}.{}",
            before.as_str(),
            after.finish().as_str(),
            after.state()
        );
        self.store
            .put(&self.dir(key).join(name), PutPayload::from(bytes))
            .await
            .map(drop)
            .map_err(other)
    }

    /// The version of file `key` of `size` bytes hashing to `sha256` (any complete chain
    /// of that size with `None`): its chunks, or `None` when they are not all there.
    pub async fn chain(
        &self,
        key: &str,
        size: u64,
        sha256: Option<&Sha256>,
    ) -> io::Result<Option<Chain>> {
        Ok(self.listing(key).await?.chain(size, sha256))
    }

    /// The objects of file `key`, listed once, to find any number of its versions in.
    pub async fn listing(&self, key: &str) -> io::Result<Listing> {
        let listed = self.list(&self.dir(key)).await?;
        // end → the chunks ending there
        let mut by_end: HashMap<u64, Vec<Link>> = HashMap::new();
        for meta in listed {
            let Some(name) = meta.location.filename() else {
                continue;
            };
            let Some(link) = Link::parse(name, meta.size, meta.location.clone()) else {
                continue;
            };
            by_end.entry(link.start + link.len).or_default().push(link);
        }
        Ok(Listing {
            store: Arc::clone(&self.store),
            by_end,
        })
    }

    /// Deletes every object of file `key`.
    pub async fn delete_file(&self, key: &str) -> io::Result<()> {
        let listed = self.list(&self.dir(key)).await?;
        for meta in listed {
            match self.store.delete(&meta.location).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(other(e)),
            }
        }
        Ok(())
    }

    /// Every stored file, with its bytes and the time of its newest object.
    pub async fn files(&self) -> io::Result<Vec<StoredObjectFile>> {
        let base = self.prefix.clone().join("files");
        let mut listing = self.store.list(Some(&base));
        let mut files: HashMap<String, StoredObjectFile> = HashMap::new();
        let depth = base.parts().count();
        while let Some(meta) = listing.next().await {
            let meta = meta.map_err(other)?;
            let Some(key) = meta.location.parts().nth(depth) else {
                continue;
            };
            let key = key.as_ref().to_owned();
            let modified = meta.last_modified.timestamp_millis();
            let file = files.entry(key.clone()).or_insert(StoredObjectFile {
                key,
                bytes: 0,
                newest_ms: modified,
            });
            file.bytes += meta.size;
            file.newest_ms = file.newest_ms.max(modified);
        }
        Ok(files.into_values().collect())
    }

    /// Multipart uploads started and neither finished nor aborted (their markers).
    pub async fn pending_uploads(&self) -> io::Result<Vec<PendingUpload>> {
        let base = self.prefix.clone().join("multipart");
        let listed = self.list(&base).await?;
        Ok(listed
            .into_iter()
            .filter_map(|meta| {
                Some(PendingUpload {
                    key: meta.location.filename()?.to_owned(),
                    started_ms: meta.last_modified.timestamp_millis(),
                })
            })
            .collect())
    }

    /// Aborts an abandoned multipart upload and forgets its marker.
    pub async fn abort_pending(&self, pending: &PendingUpload) -> io::Result<()> {
        let marker = self.marker(&pending.key);
        let id = match self.store.get(&marker).await {
            Ok(found) => found.bytes().await.map_err(other)?,
            Err(object_store::Error::NotFound { .. }) => return Ok(()),
            Err(e) => return Err(other(e)),
        };
        let id = String::from_utf8_lossy(&id).into_owned();
        let path = self.dir(&pending.key).join(UPLOAD_CHUNK);
        match self.store.abort_multipart(&path, &id).await {
            // Finished after all, or aborted already: only the marker is left.
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => {
                tracing::warn!(error = %e, key = pending.key, "cannot abort an abandoned upload")
            }
        }
        match self.store.delete(&marker).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(other(e)),
        }
    }
}

/// A file's objects, as listed.
#[derive(Debug)]
pub struct Listing {
    store: Arc<AmazonS3>,
    by_end: HashMap<u64, Vec<Link>>,
}

impl Listing {
    /// The version of `size` bytes hashing to `sha256` (any complete chain of that size
    /// with `None`): its chunks, or `None` when they are not all there.
    pub fn chain(&self, size: u64, sha256: Option<&Sha256>) -> Option<Chain> {
        let mut pieces = Vec::new();
        let mut resume = None;
        let (mut end, mut hash) = (size, sha256.map(|s| s.as_str().to_owned()));
        loop {
            let ending_here = self.by_end.get(&end).and_then(|links| {
                // A chunk of no bytes past offset 0 would lead back to itself.
                let usable = || links.iter().filter(|link| link.len > 0 || link.start == 0);
                usable()
                    .find(|link| match (&hash, &link.after) {
                        (Some(wanted), Some(after)) => wanted == after,
                        (None, _) => true,
                        (Some(_), None) => false,
                    })
                    // A whole upload's chunk carries no hash in its name; it is the only
                    // chunk at offset 0 of its file, so it is taken when no hashed one is.
                    .or_else(|| usable().find(|link| link.after.is_none()))
            });
            // A version that ends inside a whole upload is a prefix of it (a file imported
            // whole, which a checkpoint pinned at an earlier size).
            let link = ending_here.or_else(|| {
                self.by_end
                    .values()
                    .flatten()
                    .find(|link| link.after.is_none() && link.len >= end)
            })?;
            if pieces.is_empty() && link.start + link.len == size {
                resume = link
                    .state
                    .as_deref()
                    .and_then(|state| RunningSha256::resume(state, size))
                    .filter(|state| link.after.as_deref() == Some(state.finish().as_str()));
            }
            pieces.push((
                link.path.clone(),
                link.start,
                link.len.min(end - link.start),
            ));
            if link.start == 0 {
                break;
            }
            end = link.start;
            hash = sha256.and(link.before.clone());
        }
        pieces.reverse();
        Some(Chain {
            store: Arc::clone(&self.store),
            pieces,
            size,
            resume,
        })
    }
}

/// A chunk object, parsed from its name.
#[derive(Debug)]
struct Link {
    start: u64,
    len: u64,
    before: Option<String>,
    after: Option<String>,
    state: Option<String>,
    path: Path,
}

impl Link {
    fn parse(name: &str, len: u64, path: Path) -> Option<Link> {
        if name == UPLOAD_CHUNK {
            return Some(Link {
                start: 0,
                len,
                before: None,
                after: None,
                state: None,
                path,
            });
        }
        let mut parts = name.split('.');
        let start = u64::from_str_radix(parts.next()?, 16).ok()?;
        let before = parts.next()?.to_owned();
        let after = parts.next()?.to_owned();
        let state = parts.next().map(str::to_owned);
        Some(Link {
            start,
            len,
            before: Some(before),
            after: Some(after),
            state,
            path,
        })
    }
}

impl Chain {
    /// Streams bytes `range` of the version, chunk by chunk, each read with a ranged GET.
    pub fn stream(&self, range: Range<u64>) -> BoxStream<'static, io::Result<Bytes>> {
        let store = Arc::clone(&self.store);
        let reads: Vec<(Path, Range<u64>)> = self
            .pieces
            .iter()
            .filter_map(|(path, start, len)| {
                let (from, to) = (range.start.max(*start), range.end.min(start + len));
                (from < to).then(|| (path.clone(), from - start..to - start))
            })
            .collect();
        stream::iter(reads)
            .then(move |(path, range)| {
                let store = Arc::clone(&store);
                async move {
                    let options = GetOptions {
                        range: Some(GetRange::Bounded(range)),
                        ..GetOptions::default()
                    };
                    store
                        .get_opts(&path, options)
                        .await
                        .map(|found| found.into_stream().map_err(other))
                        .map_err(other)
                }
            })
            .try_flatten()
            .boxed()
    }

    /// The hash state at the version's end as its last chunk's name gives it (`None` for a
    /// whole upload: [`Chain::hasher`] reads it).
    pub fn resumable(&self) -> Option<RunningSha256> {
        self.resume.clone()
    }

    /// The hash state of the version's bytes, read whole.
    pub async fn hasher(&self) -> io::Result<(RunningSha256, u64)> {
        let mut hasher = RunningSha256::new();
        let mut read = 0u64;
        let mut pieces = self.stream(0..self.size);
        while let Some(piece) = pieces.next().await {
            let piece = piece?;
            read += piece.len() as u64;
            hasher.update(&piece);
        }
        Ok((hasher, read))
    }
}

/// A whole upload streaming into a new file: parts of [`PART_BYTES`] go up while the next
/// one fills, hashed as they pass.
pub struct ObjectUpload {
    objects: Objects,
    key: String,
    path: Path,
    hasher: RunningSha256,
    size: u64,
    buffer: PutPayloadMut,
    multipart: Option<String>,
    parts: Vec<Part>,
}

/// A part of a multipart upload: being sent, or sent.
enum Part {
    Sending(JoinHandle<object_store::Result<PartId>>),
    Sent(PartId),
}

impl Part {
    /// Waits for the part to be sent (once), and answers its id.
    async fn settle(&mut self) -> io::Result<PartId> {
        if let Part::Sending(sending) = self {
            let id = sending.await.map_err(io::Error::other)?.map_err(other)?;
            *self = Part::Sent(id);
        }
        match self {
            Part::Sent(id) => Ok(id.clone()),
            Part::Sending(_) => Err(io::Error::other("a part was not sent")),
        }
    }
}

/// A finished whole upload.
#[derive(Debug)]
pub struct Uploaded {
    /// The new file's key.
    pub key: String,
    /// Its SHA-256.
    pub sha256: Sha256,
    /// Its hash state (for the appends that may follow).
    pub hasher: RunningSha256,
    /// Bytes.
    pub size: u64,
}

impl ObjectUpload {
    /// Appends a piece of the upload; `Err` with `ErrorKind::FileTooLarge` past `limit`.
    /// The pieces are kept as they came (no copy into a part-sized buffer: large
    /// allocations freed on other threads stay in the allocator's arenas) until a part's
    /// worth goes up.
    pub async fn write(&mut self, mut chunk: Bytes, limit: u64) -> io::Result<()> {
        self.size += chunk.len() as u64;
        if self.size > limit {
            return Err(io::Error::new(
                io::ErrorKind::FileTooLarge,
                format!("the upload is larger than {limit} bytes"),
            ));
        }
        self.hasher.update(&chunk);
        while !chunk.is_empty() {
            let room = PART_BYTES - self.buffer.content_length();
            let now = chunk.split_to(room.min(chunk.len()));
            self.buffer.push(now);
            if self.buffer.content_length() == PART_BYTES {
                self.send_part().await?;
            }
        }
        Ok(())
    }

    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    async fn send_part(&mut self) -> io::Result<()> {
        let id = match &self.multipart {
            Some(id) => id.clone(),
            None => {
                let id = self
                    .objects
                    .store
                    .create_multipart(&self.path)
                    .await
                    .map_err(other)?;
                // Known before the marker is written, so that a failed marker still gets the
                // upload aborted; the marker is written before any part: a crash from here
                // on leaves something cleanup can find and abort.
                self.multipart = Some(id.clone());
                self.objects
                    .store
                    .put(
                        &self.objects.marker(&self.key),
                        PutPayload::from(id.clone()),
                    )
                    .await
                    .map_err(other)?;
                id
            }
        };
        // At most PARTS_IN_FLIGHT parts are sent at once: wait for the oldest first.
        while self
            .parts
            .iter()
            .filter(|part| matches!(part, Part::Sending(_)))
            .count()
            >= PARTS_IN_FLIGHT
        {
            if let Some(part) = self
                .parts
                .iter_mut()
                .find(|part| matches!(part, Part::Sending(_)))
            {
                part.settle().await?;
            }
        }
        let data = std::mem::take(&mut self.buffer).freeze();
        let (store, path, index) = (
            Arc::clone(&self.objects.store),
            self.path.clone(),
            self.parts.len(),
        );
        self.parts.push(Part::Sending(tokio::spawn(async move {
            store.put_part(&path, &id, index, data).await
        })));
        Ok(())
    }

    /// Finishes the upload. `expected` is the client's `X-Content-SHA256`; on a mismatch
    /// nothing is kept and the actual hash is returned as the error.
    pub async fn finish(
        mut self,
        expected: Option<&Sha256>,
    ) -> io::Result<Result<Uploaded, Sha256>> {
        let sha256 = self.hasher.finish();
        if expected.is_some_and(|e| *e != sha256) {
            self.abort().await;
            return Ok(Err(sha256));
        }
        let finished = match self.multipart.clone() {
            None => {
                let data = std::mem::take(&mut self.buffer).freeze();
                self.objects
                    .store
                    .put(&self.path, data)
                    .await
                    .map(drop)
                    .map_err(other)
            }
            Some(id) => self.complete(&id).await,
        };
        if let Err(e) = finished {
            self.abort().await;
            return Err(e);
        }
        self.multipart = None;
        Ok(Ok(Uploaded {
            key: std::mem::take(&mut self.key),
            sha256,
            hasher: self.hasher.clone(),
            size: self.size,
        }))
    }

    async fn complete(&mut self, id: &String) -> io::Result<()> {
        if self.buffer.content_length() > 0 {
            self.send_part().await?;
        }
        let mut parts = Vec::with_capacity(self.parts.len());
        for mut part in self.parts.drain(..) {
            parts.push(part.settle().await?);
        }
        let store = &self.objects.store;
        store
            .complete_multipart(&self.path, id, parts)
            .await
            .map_err(other)?;
        match store.delete(&self.objects.marker(&self.key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(other(e)),
        }
    }

    /// Abandons the upload: its parts are aborted and nothing is kept.
    pub async fn abort(mut self) {
        self.stop_parts();
        let store = &self.objects.store;
        if let Some(id) = self.multipart.take() {
            let _ = store.abort_multipart(&self.path, &id).await;
            let _ = store.delete(&self.objects.marker(&self.key)).await;
        }
        let _ = store.delete(&self.path).await;
    }

    fn stop_parts(&mut self) {
        for part in self.parts.drain(..) {
            if let Part::Sending(sending) = part {
                sending.abort();
            }
        }
    }
}

impl Drop for ObjectUpload {
    /// An upload dropped unfinished (its request cancelled, an error on the way) is
    /// aborted in the background; if that fails too, its marker leads cleanup to it.
    fn drop(&mut self) {
        self.stop_parts();
        let Some(id) = self.multipart.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (store, path, marker) = (
            Arc::clone(&self.objects.store),
            self.path.clone(),
            self.objects.marker(&self.key),
        );
        runtime.spawn(async move {
            if store.abort_multipart(&path, &id).await.is_ok() {
                let _ = store.delete(&marker).await;
            }
        });
    }
}
