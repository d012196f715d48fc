//! The PostgreSQL backend: writes in group commits on a writer thread with a connection
//! of its own (`writer.rs`), reads and the store's own work on a pool of
//! connections (`deadpool-postgres`), and the asset bytes in a local blob directory or a
//! bucket.
//!
//! Jobs are synchronous scripts over [`crate::rows`]; each blocks on the async client
//! statement by statement. Writes run at READ COMMITTED, and
//! the rows a write job reads in order to change them are locked (`FOR UPDATE`, see
//! [`PgConn::for_update`]), so that two servers on one database never both act on the
//! same old row. Reads run on a REPEATABLE READ, read-only snapshot.

mod assets;
mod cleanup;
mod cluster;
mod conn;
mod events;
mod files;
mod held;
mod keys;
mod outcomes;
mod passes;
mod projects;
mod rows;
mod schema;
mod sessions;
mod transfer;
mod tx;
mod writer;

use std::any::Any;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio::runtime::Handle;
use tokio::sync::{Notify, watch};
use tokio_postgres::{IsolationLevel, NoTls};
use tokio_postgres_rustls::MakeRustlsConnect;

use lifeboat_core::{Id, TenantId};

use crate::blobs::BlobStore;
use crate::{Ack, Cluster, Error, MaintenanceGuard, ReadJob, Result, Store, WriteJob};
use conn::{PgConn, Pooled, connect_error, translate};
use tx::PgTx;
use writer::About;

/// Connections in the pool.
const POOL_SIZE: usize = 16;
/// Writer threads, each with a connection of its own (`writer.rs`). A session's writes
/// all go to one of them (`Store::write_about`); writes about nothing in particular go to
/// the first. One: since a batch writes its rows set-based, one writer's larger batches
/// do more with the same CPU than two writers' smaller ones (BENCHMARKS.md, 2026-12-04),
/// and a server's batches never meet on a row lock.
const WRITERS: usize = 1;
/// The longest a statement waits for a lock, and a job for a connection, before the write
/// is answered 503 (retry).
const LOCK_WAIT: Duration = Duration::from_secs(10);
/// A connection idle inside a transaction this long is ended by the database, releasing
/// its locks (a server cut off from the network mid-write).
const IDLE_IN_TRANSACTION: Duration = Duration::from_secs(60);
/// A server whose clock is further than this from the database's is not ready
/// (`/readyz`): fix its time synchronization.
const SKEW_LIMIT_MS: i64 = 1_000;
/// How often a store looks for events other servers committed (their commits do not
/// wake this one's event feed otherwise).
const EVENT_POLL: Duration = Duration::from_millis(250);
/// The least time between two passes of a server's [`sequencer`]: one pass numbers what
/// every server committed meanwhile.
const PASS_PACE: Duration = Duration::from_millis(10);

/// A Lifeboat store in one PostgreSQL database (the schema of the connection's
/// `search_path`).
#[derive(Clone)]
pub struct PgStore {
    shared: Arc<Shared>,
    blobs: BlobStore,
}

/// What the store's clones and its poller share.
struct Shared {
    pool: Pool,
    /// Bumped when new events may be readable (after a sequencer pass numbered some, or
    /// the poll saw another server's): the engine's event feed wakes on it.
    commits: watch::Sender<u64>,
    /// Sequencer passes, run by [`sequencer`] and by readers of the log (coalesced: one
    /// pass serves every caller that asked before it started).
    passes: passes::Passes,
    /// Wakes [`sequencer`]: a write committed events.
    committed_events: Arc<Notify>,
    /// This server among the others on the database (`cluster.rs`).
    membership: cluster::Membership,
    /// Times a connection could not be had or was found closed (see `Store::outages`).
    outages: AtomicU64,
    /// The writer threads' queues (set once they started, right after this).
    writers: std::sync::OnceLock<Vec<writer::Writer>>,
}

impl PgStore {
    /// Connects to `url` (`postgres://…`), checks that commits are durable
    /// (`synchronous_commit`), applies migrations under a lock, and keeps asset bytes
    /// under `data_dir`. Must run inside a tokio runtime.
    pub async fn connect(url: &str, data_dir: &Path) -> Result<PgStore> {
        let mut config = tokio_postgres::Config::from_str(url)
            .map_err(|e| Error::Unavailable(format!("bad database URL: {e}")))?;
        // A write never waits long for a row another server holds (it answers 503), and a
        // server cut off inside a transaction does not keep its rows locked for long.
        let options = format!(
            "{} -c lock_timeout={} -c idle_in_transaction_session_timeout={}",
            config.get_options().unwrap_or_default(),
            LOCK_WAIT.as_millis(),
            IDLE_IN_TRANSACTION.as_millis()
        );
        config.options(options.trim());
        // A connection whose peer vanished (a network cut, a host gone) is found dead within
        // about 11 s instead of the system's two hours, so its write fails and is counted
        // as an outage.
        config
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(5))
            .keepalives_interval(Duration::from_secs(2))
            .keepalives_retries(3)
            .connect_timeout(LOCK_WAIT);
        let listener = config.clone();
        let tls = tls_for(&config)?;
        let connect = writer::Connect {
            config: config.clone(),
            tls: tls.clone(),
        };
        let recycling = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = match tls.clone() {
            Some(tls) => Manager::from_config(config, tls, recycling),
            None => Manager::from_config(config, NoTls, recycling),
        };
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(LOCK_WAIT))
            .create_timeout(Some(LOCK_WAIT))
            .build()
            .map_err(|e| Error::Internal(format!("cannot build the connection pool: {e}")))?;
        let mut client = pool.get().await.map_err(pool_error)?;
        schema::check_durability(&client).await?;
        schema::migrate(&mut client).await?;
        drop(client);
        crate::blobs::create_dir_durably(data_dir).map_err(|e| {
            Error::Unavailable(format!(
                "cannot create data dir {}: {e}",
                data_dir.display()
            ))
        })?;
        let blobs = BlobStore::open(data_dir).map_err(|e| {
            Error::Unavailable(format!(
                "cannot open the blob store in {}: {e}",
                data_dir.display()
            ))
        })?;
        let (commits, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            pool,
            commits,
            passes: passes::Passes::default(),
            committed_events: Arc::new(Notify::new()),
            membership: cluster::Membership::new(),
            outages: AtomicU64::new(0),
            writers: std::sync::OnceLock::new(),
        });
        let writers = (0..WRITERS)
            .map(|_| writer::Writer::spawn(&connect, Arc::downgrade(&shared)))
            .collect::<Result<Vec<_>>>()?;
        let _ = shared.writers.set(writers);
        shared.beat().await?;
        tokio::spawn(sequencer(
            Arc::downgrade(&shared),
            Arc::clone(&shared.committed_events),
        ));
        tokio::spawn(cluster::beat_loop(Arc::downgrade(&shared)));
        tokio::spawn(listen(listener, tls, Arc::downgrade(&shared)));
        Ok(PgStore { shared, blobs })
    }
}

impl Shared {
    /// Runs `job` on a pooled connection, off the async runtime, in a REPEATABLE READ,
    /// read-only snapshot (every write goes through `writer.rs`).
    async fn read<T, F>(&self, job: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&PgConn<'_>) -> Result<T> + Send + 'static,
    {
        let pool = self.pool.clone();
        let handle = Handle::current();
        let answer = tokio::task::spawn_blocking(move || {
            let mut client = match handle.block_on(pool.get()) {
                Ok(client) => client,
                // Every connection busy is not an outage; no connection to be had is.
                Err(error) => {
                    let busy = matches!(
                        error,
                        deadpool_postgres::PoolError::Timeout(deadpool_postgres::TimeoutType::Wait)
                    );
                    return Err((pool_error(error), !busy));
                }
            };
            let run = |client: &mut deadpool_postgres::Client| {
                let tx = handle
                    .block_on(
                        client
                            .build_transaction()
                            .isolation_level(IsolationLevel::RepeatableRead)
                            .read_only(true)
                            .start(),
                    )
                    .map_err(translate)?;
                let link = Pooled {
                    handle: handle.clone(),
                    tx: &tx,
                };
                job(&PgConn::new(&link, false))
            };
            run(&mut client).map_err(|error| (error, client.is_closed()))
        })
        .await
        .map_err(|e| Error::Internal(format!("store task failed: {e}")))?;
        answer.map_err(|(error, lost)| {
            if lost {
                self.outages.fetch_add(1, Ordering::SeqCst);
            }
            error
        })
    }

    /// Numbers the events committed so far (see `events::sequence`), coalescing: a caller
    /// waits for a pass that started after it asked, and one pass serves every caller
    /// waiting when it starts.
    async fn sequence(&self) -> Result<()> {
        let pool = self.pool.clone();
        let numbered = self
            .passes
            .run(|| async move {
                // On a task of its own, so that it ends its transaction even when the
                // caller (a request whose client went away) stops waiting: a connection
                // left inside a failed transaction would go back to the pool.
                tokio::spawn(async move {
                    let client = pool.get().await.map_err(pool_error)?;
                    events::sequence(&client).await
                })
                .await
                .map_err(|e| Error::Internal(format!("a sequencer pass panicked: {e}")))?
            })
            .await?;
        if numbered.is_some_and(|numbered| numbered > 0) {
            self.commits.send_modify(|n| *n += 1);
        }
        Ok(())
    }
}

/// Numbers committed events in the background: soon after a write of this server
/// committed some, and every [`EVENT_POLL`] whatever happened, which numbers the events of a
/// server that died between its commit and its pass; after a pass it waits [`PASS_PACE`].
/// Every `EVENT_POLL` it also wakes this store's subscribers when the newest event changed,
/// whoever committed it. It holds the store only while it works, so that the store closes
/// when its last handle goes.
///
/// A write is answered without waiting for a pass: a pass per write's batch, each a
/// transaction of its own taking the lock that passes of every server take in turn, cost
/// three servers more than the writes (`BENCHMARKS.md`). A reader of the log waits for a
/// pass first (`Store::number_events`), so it finds what was written before it asked.
async fn sequencer(shared: std::sync::Weak<Shared>, committed_events: Arc<Notify>) {
    let mut newest = None;
    let mut failing = false;
    let mut ticks = tokio::time::interval(EVENT_POLL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let woken = tokio::select! {
            () = committed_events.notified() => true,
            _ = ticks.tick() => false,
        };
        let Some(shared) = shared.upgrade() else {
            return;
        };
        match shared.sequence().await {
            Ok(()) if failing => {
                tracing::info!("numbering new events again");
                failing = false;
            }
            Ok(()) => {}
            // Said once, not at every pass while the database is away.
            Err(error) if !failing => {
                tracing::warn!(%error, "cannot number new events; trying again");
                failing = true;
            }
            Err(_) => {}
        }
        if !woken
            && !failing
            && let Ok(seen) = shared.read(events::newest).await
        {
            if newest.is_some_and(|before| before != seen) {
                shared.commits.send_modify(|n| *n += 1);
            }
            newest = Some(seen);
        }
        drop(shared);
        tokio::time::sleep(PASS_PACE).await;
    }
}

/// Reads the listening connection's messages: each notification wakes the feed.
fn drive<S, T>(
    mut connection: tokio_postgres::Connection<S, T>,
    feed: std::sync::Weak<Shared>,
) -> tokio::task::JoinHandle<()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        while let Some(Ok(message)) = std::future::poll_fn(|cx| connection.poll_message(cx)).await {
            if let tokio_postgres::AsyncMessage::Notification(_) = message {
                let Some(shared) = feed.upgrade() else {
                    return;
                };
                shared.commits.send_modify(|n| *n += 1);
            }
        }
    })
}

/// TLS for the connections when the URL asks for it (`sslmode=require`): the server's
/// certificate is checked against the system's roots and the PEM file `PGSSLROOTCERT`
/// names (libpq's variable), and its name against the URL's host. Any other `sslmode`
/// connects without TLS.
fn tls_for(config: &tokio_postgres::Config) -> Result<Option<MakeRustlsConnect>> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    if config.get_ssl_mode() != tokio_postgres::config::SslMode::Require {
        return Ok(None);
    }
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        // A system certificate rustls cannot use is skipped, as libpq's OpenSSL would.
        let _ = roots.add(cert);
    }
    if let Ok(path) = std::env::var("PGSSLROOTCERT") {
        let bad =
            |e: &dyn std::fmt::Display| Error::Unavailable(format!("PGSSLROOTCERT {path}: {e}"));
        for cert in CertificateDer::pem_file_iter(&path).map_err(|e| bad(&e))? {
            roots.add(cert.map_err(|e| bad(&e))?).map_err(|e| bad(&e))?;
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Internal(format!("TLS setup: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Some(MakeRustlsConnect::new(tls)))
}

/// Wakes this store's event feed as soon as another server's sequencer numbered events
/// (`LISTEN` on a connection of its own: a notification only wakes; the poll above stays
/// the fallback when the connection is down), reconnecting after a second when it drops.
async fn listen(
    config: tokio_postgres::Config,
    tls: Option<MakeRustlsConnect>,
    shared: std::sync::Weak<Shared>,
) {
    loop {
        if shared.strong_count() == 0 {
            return;
        }
        let connected = match &tls {
            Some(tls) => config
                .connect(tls.clone())
                .await
                .map(|(client, connection)| (client, drive(connection, shared.clone()))),
            None => config
                .connect(NoTls)
                .await
                .map(|(client, connection)| (client, drive(connection, shared.clone()))),
        };
        if let Ok((client, mut driver)) = connected {
            let listening = async {
                let channel: String = conn::column(
                    &client
                        .query_one(&format!("SELECT {}", events::CHANNEL), &[])
                        .await
                        .map_err(translate)?,
                    0,
                )?;
                client
                    .batch_execute(&format!("LISTEN \"{channel}\""))
                    .await
                    .map_err(translate)
            };
            match listening.await {
                // Until the connection drops, or the store is closed (then the connection
                // goes with the driver).
                Ok(()) => loop {
                    tokio::select! {
                        _ = &mut driver => break,
                        () = tokio::time::sleep(EVENT_POLL) => {
                            if shared.strong_count() == 0 {
                                driver.abort();
                                return;
                            }
                        }
                    }
                },
                Err(error) => {
                    tracing::warn!(%error, "cannot listen for other servers' events");
                    driver.abort();
                }
            }
            drop(client);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

fn pool_error(error: deadpool_postgres::PoolError) -> Error {
    match error {
        deadpool_postgres::PoolError::Backend(e) => connect_error(e),
        other => Error::Unavailable(format!("no database connection: {other}")),
    }
}

/// A commit whose answer did not arrive may or may not have happened.
pub(super) fn commit_error(error: tokio_postgres::Error) -> Error {
    if error.code().is_some() {
        translate(error)
    } else {
        Error::OutcomeUnknown(error.to_string())
    }
}

impl PgStore {
    /// Runs `job` on a writer (the one of `key`, or the first), answered after its batch's
    /// commit; see `Store::write`.
    async fn write_to(
        &self,
        about: Option<About>,
        ack: Ack,
        mut job: WriteJob,
    ) -> Result<Box<dyn Any + Send>> {
        let early = match ack {
            Ack::EarlyIf(early) => Some(early),
            Ack::AfterCommit => None,
        };
        let writers = self
            .shared
            .writers
            .get()
            .ok_or_else(|| Error::Internal("the writers did not start".to_owned()))?;
        let key = about.as_ref().map_or(0, |about| about.key);
        let writer = usize::try_from(key % writers.len() as u64)
            .ok()
            .and_then(|index| writers.get(index))
            .ok_or_else(|| Error::Internal("no writer for a write".to_owned()))?;
        let (answer, recorded) = writer
            .write(about, move |conn| {
                // What a run that did not end in a commit allowed is not this run's.
                if let Some(early) = &early {
                    early.take();
                }
                let answer = job(&mut PgTx(conn));
                let relaxed =
                    answer.is_ok() && early.as_ref().is_some_and(|early| early.take().is_some());
                (answer, relaxed)
            })
            .await?;
        // Committed: its events are numbered soon, in the background (see [`sequencer`]).
        if recorded {
            self.shared.committed_events.notify_one();
        }
        answer
    }
}

#[async_trait]
impl Store for PgStore {
    /// Every write is answered after its batch's commit (`writer.rs`). The commit is
    /// durable (waits for the WAL flush) except for a batch of nothing but lease-only
    /// heartbeats — jobs under `Ack::EarlyIf` that allowed the early answer — which commits
    /// with `synchronous_commit = off`, as SPEC §6 allows: if PostgreSQL crashes before the
    /// flush, the lease extensions are lost, and the grace every server gives after an
    /// outage (`Store::outages`) makes up for it.
    async fn write(&self, ack: Ack, job: WriteJob) -> Result<Box<dyn Any + Send>> {
        self.write_to(None, ack, job).await
    }

    /// A write about a session goes to writer `hash % WRITERS`, so that the writes of one
    /// session queue behind each other on one writer rather than meet on its row lock; the
    /// writer locks the sessions of a batch before its writes about them run (`writer.rs`).
    async fn write_about(
        &self,
        tenant: &TenantId,
        id: &Id,
        ack: Ack,
        job: WriteJob,
    ) -> Result<Box<dyn Any + Send>> {
        let about = About::new(tenant, id);
        self.write_to(Some(about), ack, job).await
    }

    async fn read(&self, job: ReadJob) -> Result<Box<dyn Any + Send>> {
        self.shared.read(move |conn| job(&mut PgTx(conn))).await
    }

    fn subscribe(&self) -> watch::Receiver<u64> {
        self.shared.commits.subscribe()
    }

    async fn number_events(&self) -> Result<()> {
        self.shared.sequence().await
    }

    fn blobs(&self) -> &BlobStore {
        &self.blobs
    }

    async fn ready(&self) -> Result<()> {
        let client = self.shared.pool.get().await.map_err(pool_error)?;
        client.query_one("SELECT 1", &[]).await.map_err(translate)?;
        let skew = self.shared.membership.skew_ms.load(Ordering::Relaxed);
        if skew.abs() > SKEW_LIMIT_MS {
            return Err(Error::Unavailable(format!(
                "this server's clock is {skew} ms off the database's (more than {SKEW_LIMIT_MS} ms): fix its time synchronization"
            )));
        }
        Ok(())
    }

    fn shared(&self) -> bool {
        true
    }

    /// Granted while this server holds the maintenance term (`cluster.rs`); the guard
    /// answers `held` only while that same term is still this server's.
    async fn maintenance(&self) -> Result<Option<MaintenanceGuard>> {
        let Some(term) = self.shared.membership.term() else {
            return Ok(None);
        };
        let holder = self.shared.membership.node.clone();
        let shared = Arc::downgrade(&self.shared);
        Ok(Some(MaintenanceGuard::leased(holder, term, move || {
            shared
                .upgrade()
                .is_some_and(|shared| shared.membership.term() == Some(term))
        })))
    }

    async fn cluster(&self) -> Result<Cluster> {
        self.shared.cluster().await
    }

    fn outages(&self) -> u64 {
        self.shared.outages.load(Ordering::SeqCst)
    }

    fn clock_offset_ms(&self) -> i64 {
        self.shared.membership.offset_ms.load(Ordering::Relaxed)
    }
}
