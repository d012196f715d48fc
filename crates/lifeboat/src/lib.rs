//! Embeddable Lifeboat: open a data directory and keep long-running work safe, in-process,
//! with the same rules as the HTTP server (which is a thin layer over this crate).
//!
//! ```
//! use lifeboat::{CheckpointKind, Config, Lifeboat, NewCheckpoint, NewSession, RecoveryOption, TenantId};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), lifeboat::Error> {
//! # let dir = tempfile::tempdir().expect("temp dir");
//! let lifeboat = Lifeboat::open(Config::new(dir.path())).await?;
//! let tenant = TenantId::default();
//!
//! // A worker starts a render and checkpoints its progress.
//! let new = NewSession { kind: "render".into(), ..NewSession::default() };
//! let session = lifeboat.create_session(&tenant, new).await?;
//! let mut checkpoint = NewCheckpoint::new(CheckpointKind::Stage);
//! checkpoint.stage = Some("tts".into());
//! checkpoint.data = r#"{"scene": 3}"#.into();
//! lifeboat.checkpoint(&tenant, &session.id, session.attempt, checkpoint).await?;
//!
//! // The worker dies; a person pauses the session and later continues it.
//! lifeboat.pause(&tenant, &session.id, None).await?;
//! let recovered = lifeboat.recover(&tenant, &session.id, RecoveryOption::Continue, false).await?;
//! assert_eq!(recovered.session.attempt, 2);
//! assert_eq!(recovered.resume_from.map(|c| c.data), Some(r#"{"scene": 3}"#.to_owned()));
//! # Ok(())
//! # }
//! ```

mod apply;
mod assets;
mod checkpoints;
mod cleanup;
mod clock;
mod events;
mod expiry;
mod external;
mod failpoint;
mod keys;
mod ops;
mod page;
mod projects;
mod recovery;
mod schemas;
mod sessions;
mod store;
mod transfer;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::Duration;

pub use assets::{Appended, OpenAsset, StoreVerification, Upload};
pub use clock::{Clock, ManualClock, SystemClock};
pub use events::{FeedBatch, FeedEvent, FellBehind, Subscription};
pub use failpoint::FAILPOINT_VAR;
pub use keys::{
    API_KEY_PREFIX, PROJECT_TOKEN_PREFIX, PROJECT_TOKEN_SCOPES, PROJECT_TOKEN_TTL_DEFAULT_MS,
    PROJECT_TOKEN_TTL_MAX_MS, SCOPES, SESSION_TOKEN_PREFIX, split_token,
};
pub use lifeboat_core::Error as DomainError;
pub use lifeboat_core::{
    Assessment, Asset, AssetCounts, AssetName, AssetStatus, Change, Checkpoint, CheckpointKind,
    CheckpointRef, Crash, CrashType, FieldError, Id, Metrics, Name, NewCheckpoint, NewSession,
    Offer, Owner, PinnedAsset, Preconditions, Progress, Project, ProjectRules, RecoveryOption,
    ResumePoint, RevisionRetention, Saved, SchemaRef, Session, SessionLimits, Sha256, Status,
    Storage, TenantId, Timestamp, parse_json_patch,
};
pub use lifeboat_core::{DEPTH_MAX_DEFAULT, STATE_BYTES_MAX_DEFAULT};
pub use lifeboat_store::blobs::{Blob, BlobStore, BlobWriter};
use lifeboat_store::objects::{Objects, UPLOAD_BYTES_MAX};
use lifeboat_store::postgres::PgStore;
use lifeboat_store::sqlite::SqliteStore;
pub use lifeboat_store::{
    ApiKey, AuditEntry, CleanupReport, CleanupRules, Cluster, Distribution, Error, Event,
    EventFilter, Gauges, IDEMPOTENCY_KEY_TTL_MS, IdempotencyKey, Page, PageRequest, ProjectInfo,
    ProjectToken, Result, RevisionInfo, Selection, SessionFilter, SessionToken, Stats, Store,
    TransferCounts,
};
pub use ops::{
    Applied, Outcome, ProjectEdit, Recovery, SaveOutcome, SchemaPut, SessionOp, Verification,
};
pub use recovery::FileChecks;
pub use transfer::{ARCHIVE_FORMAT, ARCHIVE_VERSION, Export};

/// The largest asset upload by default: 10 GiB.
pub const ASSET_BYTES_MAX_DEFAULT: u64 = 10 * 1024 * 1024 * 1024;

/// How often cleanup runs by default: every 6 hours.
pub const CLEANUP_INTERVAL_DEFAULT: Duration = Duration::from_secs(6 * 3_600);

/// How long an upload may send nothing before it is abandoned, by default.
pub const UPLOAD_IDLE_TIMEOUT_DEFAULT: Duration = Duration::from_secs(60);

/// How often the sweeper persists expired leases and stall flags. Reads observe expiry
/// themselves, so this bounds only how stale the stored state is.
const SWEEP_INTERVAL_DEFAULT: Duration = Duration::from_millis(250);

/// How to open Lifeboat.
#[derive(Clone)]
pub struct Config {
    /// Where the SQLite database (unless `database_url` is set) and the asset files live.
    pub data_dir: PathBuf,
    /// `postgres://…`: the store is this PostgreSQL database instead of SQLite.
    pub database_url: Option<String>,
    /// `s3://bucket/prefix`: uploaded and appended asset bytes go to this S3-compatible
    /// bucket (endpoint and credentials from the `AWS_*` environment) instead of files
    /// under `data_dir`.
    pub blob_store: Option<String>,
    /// Settings of the bucket over the environment's (`aws_endpoint`,
    /// `aws_access_key_id`, …, as `object_store` names them).
    pub blob_store_options: Vec<(String, String)>,
    /// How often the sweeper runs.
    pub sweep_interval: Duration,
    /// The source of `now`; tests inject a [`ManualClock`].
    pub clock: Arc<dyn Clock>,
    /// Project limits and revision retention.
    pub projects: ProjectRules,
    /// Directories external assets may be registered from.
    pub asset_roots: Vec<PathBuf>,
    /// The largest asset upload, in bytes (413 beyond).
    pub max_asset_bytes: u64,
    /// An upload that sends no byte for this long is abandoned (a slow but live upload
    /// is never cut).
    pub upload_idle_timeout: Duration,
    /// What cleanup removes, and when.
    pub cleanup: CleanupRules,
    /// How often cleanup runs in the background (`None`: never; run it by hand).
    pub cleanup_interval: Option<Duration>,
}

impl Config {
    /// Defaults: the system clock and a 250 ms sweep.
    pub fn new(data_dir: impl AsRef<Path>) -> Config {
        Config {
            data_dir: data_dir.as_ref().to_path_buf(),
            database_url: None,
            blob_store: None,
            blob_store_options: Vec::new(),
            sweep_interval: SWEEP_INTERVAL_DEFAULT,
            clock: Arc::new(SystemClock),
            projects: ProjectRules::default(),
            asset_roots: Vec::new(),
            max_asset_bytes: ASSET_BYTES_MAX_DEFAULT,
            upload_idle_timeout: UPLOAD_IDLE_TIMEOUT_DEFAULT,
            cleanup: CleanupRules::default(),
            cleanup_interval: Some(CLEANUP_INTERVAL_DEFAULT),
        }
    }
}

struct Inner {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    ready_at: Timestamp,
    assets: assets::AssetState,
    cleanup: CleanupRules,
    hub: events::Hub,
    keys: keys::KeyCache,
    arrivals: expiry::Arrivals,
    projects: ProjectRules,
    schemas: schemas::SchemaCache,
    documents: projects::Documents,
    /// The store's outage count when the last grace for one was given (see
    /// `expiry::after_outage`), and the lock held while one is given.
    outages_graced: std::sync::atomic::AtomicU64,
    outage_grace: tokio::sync::Mutex<()>,
}

/// An open Lifeboat. Cheap to clone; the sweeper stops when the last clone is dropped.
#[derive(Clone)]
pub struct Lifeboat {
    inner: Arc<Inner>,
}

impl Lifeboat {
    /// Opens the store (the PostgreSQL database of `config.database_url`, else SQLite in
    /// `config.data_dir`), starts the restart grace for sessions that were active, and
    /// starts the sweeper. Must run inside a tokio runtime.
    pub async fn open(config: Config) -> Result<Lifeboat> {
        let data_dir = config.data_dir.clone();
        let store: Arc<dyn Store> = match &config.database_url {
            Some(url) => Arc::new(PgStore::connect(url, &data_dir).await?),
            None => Arc::new(
                tokio::task::spawn_blocking(move || SqliteStore::open(&data_dir))
                    .await
                    .map_err(|e| Error::Internal(format!("open task failed: {e}")))??,
            ),
        };
        Lifeboat::with_store(store, config).await
    }

    /// Starts Lifeboat over any [`Store`].
    pub async fn with_store(store: Arc<dyn Store>, config: Config) -> Result<Lifeboat> {
        let clock: Arc<dyn Clock> =
            Arc::new(clock::StoreClock::new(config.clock, Arc::clone(&store)));
        let ready_at = clock.now();
        let outages = store.outages();
        let objects = match &config.blob_store {
            None => None,
            Some(url) => {
                let objects =
                    Objects::open(url, &config.blob_store_options).map_err(Error::Unavailable)?;
                if config.max_asset_bytes > UPLOAD_BYTES_MAX {
                    return Err(Error::Unavailable(format!(
                        "--max-asset-bytes {} is more than an upload into the bucket can hold ({UPLOAD_BYTES_MAX} bytes: 10,000 parts)",
                        config.max_asset_bytes
                    )));
                }
                objects.check().await.map_err(|e| {
                    Error::Unavailable(format!("--blob-store {url}: cannot list the bucket: {e}"))
                })?;
                Some(objects)
            }
        };
        let inner = Arc::new(Inner {
            store,
            clock,
            ready_at,
            assets: assets::AssetState::new(
                config.asset_roots,
                objects,
                config.max_asset_bytes,
                config.upload_idle_timeout,
            ),
            cleanup: config.cleanup,
            hub: events::Hub::default(),
            keys: keys::KeyCache::default(),
            arrivals: expiry::Arrivals::default(),
            projects: config.projects,
            schemas: schemas::SchemaCache::default(),
            documents: projects::Documents::default(),
            outages_graced: std::sync::atomic::AtomicU64::new(outages),
            outage_grace: tokio::sync::Mutex::default(),
        });
        let lifeboat = Lifeboat { inner };
        // The restart grace makes up for an outage of the whole service. When another
        // server on the same database is running, only this one restarted: the sessions
        // were served all along and keep their leases as they are.
        let others = lifeboat.other_servers_running().await?;
        if others > 0 {
            tracing::info!(
                running = others,
                "other servers are running on this database: no restart grace"
            );
        } else {
            let graced = lifeboat.begin_restart_grace(ready_at).await?;
            if graced > 0 {
                tracing::info!(
                    sessions = graced,
                    "restart grace started for active sessions"
                );
            }
        }
        let newest_event = lifeboat.newest_event().await?;
        let inner = lifeboat.inner;
        tokio::spawn(events::feed_loop(Arc::downgrade(&inner), newest_event));
        tokio::spawn(sweep_loop(Arc::downgrade(&inner), config.sweep_interval));
        if let Some(every) = config.cleanup_interval {
            tokio::spawn(cleanup_loop(Arc::downgrade(&inner), every));
        }
        Ok(Lifeboat { inner })
    }

    /// The current time of this instance's clock: the wall clock corrected to the store's
    /// (so every server on one database times leases by the database's clock).
    pub fn now(&self) -> Timestamp {
        self.inner.clock.now()
    }

    /// How many other servers on this store were running before this one started:
    /// beating now (which a second look two beat intervals later tells from the row a
    /// stopped or killed server left behind), and started earlier (of servers that start
    /// together after an outage, the first gives the grace).
    async fn other_servers_running(&self) -> Result<usize> {
        let seen = |cluster: lifeboat_store::Cluster| -> Vec<(String, Timestamp)> {
            let me = cluster.nodes.iter().find(|node| node.id == cluster.node);
            let started = me.map_or(Timestamp(i64::MAX), |me| me.started_at);
            cluster
                .nodes
                .into_iter()
                .filter(|node| node.alive && node.id != cluster.node && node.started_at < started)
                .map(|node| (node.id, node.last_seen))
                .collect()
        };
        let first = seen(self.cluster().await?);
        if first.is_empty() {
            return Ok(0);
        }
        tokio::time::sleep(2 * lifeboat_store::BEAT_INTERVAL).await;
        let second = seen(self.cluster().await?);
        Ok(second
            .iter()
            .filter(|(id, last)| first.iter().any(|(was, before)| was == id && before < last))
            .count())
    }

    /// Whether other servers may share this store (PostgreSQL).
    pub fn is_shared(&self) -> bool {
        self.inner.store.shared()
    }

    /// The servers on this store, the maintenance term and the events not yet numbered.
    pub async fn cluster(&self) -> Result<Cluster> {
        self.inner.store.cluster().await
    }

    /// When this instance became ready (the start of the restart grace).
    pub fn ready_at(&self) -> Timestamp {
        self.inner.ready_at
    }

    /// Extends the lease of `attempt`, merging progress and metrics.
    pub async fn heartbeat(
        &self,
        tenant: &TenantId,
        id: &Id,
        attempt: u32,
        progress: Option<Progress>,
        metrics: Option<Metrics>,
    ) -> Result<Session> {
        let op = SessionOp::Heartbeat {
            attempt,
            progress,
            metrics,
        };
        Ok(self.update(tenant, id, op).await?.session)
    }

    /// Writes a checkpoint of `attempt`; answers it with its `seq` and `sha256`.
    pub async fn checkpoint(
        &self,
        tenant: &TenantId,
        id: &Id,
        attempt: u32,
        checkpoint: NewCheckpoint,
    ) -> Result<Checkpoint> {
        let op = SessionOp::Checkpoint {
            attempt,
            checkpoint,
        };
        self.update(tenant, id, op)
            .await?
            .checkpoint
            .ok_or_else(|| Error::Internal("checkpoint write returned no checkpoint".to_owned()))
    }

    /// Pauses an active session.
    pub async fn pause(&self, tenant: &TenantId, id: &Id, attempt: Option<u32>) -> Result<Session> {
        Ok(self
            .update(tenant, id, SessionOp::Pause { attempt })
            .await?
            .session)
    }

    /// Completes a session.
    pub async fn complete(
        &self,
        tenant: &TenantId,
        id: &Id,
        attempt: Option<u32>,
    ) -> Result<Session> {
        Ok(self
            .update(tenant, id, SessionOp::Complete { attempt })
            .await?
            .session)
    }

    /// Cancels a session.
    pub async fn cancel(
        &self,
        tenant: &TenantId,
        id: &Id,
        attempt: Option<u32>,
    ) -> Result<Session> {
        Ok(self
            .update(tenant, id, SessionOp::Cancel { attempt })
            .await?
            .session)
    }

    /// Fails a session with an error and an optional emergency checkpoint.
    pub async fn fail(
        &self,
        tenant: &TenantId,
        id: &Id,
        attempt: u32,
        error: String,
        checkpoint: Option<NewCheckpoint>,
    ) -> Result<Session> {
        let op = SessionOp::Fail {
            attempt,
            error,
            checkpoint,
        };
        Ok(self.update(tenant, id, op).await?.session)
    }

    /// Recovers a session with `option`: a new attempt and where to resume from.
    pub async fn recover(
        &self,
        tenant: &TenantId,
        id: &Id,
        option: RecoveryOption,
        confirm: bool,
    ) -> Result<Applied> {
        let op = SessionOp::Recover {
            option,
            confirm,
            files: FileChecks::default(),
        };
        self.update(tenant, id, op).await
    }

    /// Persists expired leases now; answers how many sessions timed out.
    pub async fn sweep(&self) -> Result<u64> {
        self.after_outage().await?;
        let (now, spared) = self.inner.arrivals.snapshot(self.inner.clock.as_ref());
        // Looked for first on a snapshot, off the writer: most sweeps find nothing, and in
        // a write's batch the search would hold up every write batched with it.
        let due = self
            .read(move |tx| Ok(!tx.due_sessions(now, 1)?.is_empty()))
            .await?;
        if !due {
            return Ok(0);
        }
        self.sweep_at(now, spared).await
    }

    /// Whether storage can serve.
    pub async fn ready(&self) -> Result<()> {
        self.inner.store.ready().await
    }

    /// Changes after every commit: wait on it, then read new events.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.store.subscribe()
    }
}

async fn cleanup_loop(inner: Weak<Inner>, every: Duration) {
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let lifeboat = Lifeboat { inner };
        match lifeboat.inner.store.maintenance().await {
            Ok(Some(_)) => {}
            Ok(None) => {
                tracing::debug!("another server holds the maintenance term: no cleanup here");
                continue;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot tell who holds the maintenance term");
                continue;
            }
        }
        if let Err(error) = lifeboat.cleanup(false).await {
            tracing::warn!(%error, "cleanup failed");
        }
    }
}

async fn sweep_loop(inner: Weak<Inner>, every: Duration) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        match (Lifeboat { inner }).sweep().await {
            Ok(0) => {}
            Ok(timed_out) => tracing::info!(timed_out, "sweeper persisted expired leases"),
            Err(error) => tracing::warn!(%error, "sweep failed"),
        }
    }
}
