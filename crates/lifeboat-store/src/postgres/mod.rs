//! The PostgreSQL backend: a pool of connections (`deadpool-postgres`), one database
//! transaction per store job, and the asset bytes in a local blob directory.
//!
//! Jobs are synchronous scripts over [`crate::rows`]; each runs on a blocking thread and
//! blocks on the async client statement by statement. Writes run at READ COMMITTED, and
//! the rows a write job reads in order to change them are locked (`FOR UPDATE`, see
//! [`PgConn::for_update`]), so that two servers on one database never both act on the
//! same old row. Reads run on a REPEATABLE READ, read-only snapshot.

mod assets;
mod cleanup;
mod conn;
mod events;
mod files;
mod keys;
mod outcomes;
mod projects;
mod rows;
mod schema;
mod sessions;
mod transfer;
mod tx;

use std::any::Any;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio::runtime::Handle;
use tokio::sync::watch;
use tokio_postgres::{IsolationLevel, NoTls};

use crate::blobs::BlobStore;
use crate::{Ack, Error, ReadJob, Result, Store, WriteJob};
use conn::{PgConn, translate};
use tx::PgTx;

/// Connections in the pool.
const POOL_SIZE: usize = 16;
/// The longest a statement waits for a lock, and a job for a connection, before the write
/// is answered 503 (retry).
const LOCK_WAIT: Duration = Duration::from_secs(10);
/// A connection idle inside a transaction this long is ended by the database, releasing
/// its locks (a server cut off from the network mid-write).
const IDLE_IN_TRANSACTION: Duration = Duration::from_secs(60);
/// How often a store looks for events other servers committed (their commits do not
/// wake this one's event feed otherwise).
const EVENT_POLL: Duration = Duration::from_millis(250);

/// A Lifeboat store in one PostgreSQL database (the schema of the connection's
/// `search_path`).
#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
    blobs: BlobStore,
    commits: Arc<watch::Sender<u64>>,
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
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
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
        let store = PgStore {
            pool,
            blobs,
            commits: Arc::new(commits),
        };
        tokio::spawn(poll_events(
            store.pool.clone(),
            Arc::downgrade(&store.commits),
        ));
        Ok(store)
    }
}

/// Wakes this store's subscribers when the newest event changed, whoever committed it.
async fn poll_events(pool: Pool, commits: std::sync::Weak<watch::Sender<u64>>) {
    let mut newest = None;
    let mut ticks = tokio::time::interval(EVENT_POLL);
    loop {
        ticks.tick().await;
        let Some(commits) = commits.upgrade() else {
            return;
        };
        let Ok(client) = pool.get().await else {
            continue;
        };
        let Ok(row) = client
            .query_one("SELECT coalesce(max(seq), 0) FROM events", &[])
            .await
        else {
            continue;
        };
        let seen: i64 = row.get(0);
        if newest.is_some_and(|before| before != seen) {
            commits.send_modify(|n| *n += 1);
        }
        newest = Some(seen);
    }
}

fn pool_error(error: deadpool_postgres::PoolError) -> Error {
    match error {
        deadpool_postgres::PoolError::Backend(e) => translate(e),
        other => Error::Unavailable(format!("no database connection: {other}")),
    }
}

/// A commit whose answer did not arrive may or may not have happened.
fn commit_error(error: tokio_postgres::Error) -> Error {
    if error.code().is_some() {
        translate(error)
    } else {
        Error::Unavailable(format!(
            "the database connection was lost during COMMIT, so the outcome is unknown; retry with the same Idempotency-Key: {error}"
        ))
    }
}

#[async_trait]
impl Store for PgStore {
    /// Every write is answered after its durable commit: `Ack::EarlyIf` (a lease-only
    /// heartbeat) is not answered early here, since the restart grace that makes that safe
    /// on SQLite does not run when PostgreSQL alone restarts.
    async fn write(&self, _ack: Ack, job: WriteJob) -> Result<Box<dyn Any + Send>> {
        let pool = self.pool.clone();
        let handle = Handle::current();
        let answer = tokio::task::spawn_blocking(move || {
            let mut client = handle.block_on(pool.get()).map_err(pool_error)?;
            let tx = handle
                .block_on(
                    client
                        .build_transaction()
                        .isolation_level(IsolationLevel::ReadCommitted)
                        .start(),
                )
                .map_err(translate)?;
            let conn = PgConn::new(handle.clone(), &tx, true);
            let outcome = job(&mut PgTx(&conn))?;
            drop(conn);
            handle.block_on(tx.commit()).map_err(commit_error)?;
            Ok::<_, Error>(outcome)
        })
        .await
        .map_err(|e| Error::Internal(format!("write task failed: {e}")))??;
        self.commits.send_modify(|n| *n += 1);
        answer
    }

    async fn read(&self, job: ReadJob) -> Result<Box<dyn Any + Send>> {
        let pool = self.pool.clone();
        let handle = Handle::current();
        tokio::task::spawn_blocking(move || {
            let mut client = handle.block_on(pool.get()).map_err(pool_error)?;
            let tx = handle
                .block_on(
                    client
                        .build_transaction()
                        .isolation_level(IsolationLevel::RepeatableRead)
                        .read_only(true)
                        .start(),
                )
                .map_err(translate)?;
            let conn = PgConn::new(handle.clone(), &tx, false);
            job(&mut PgTx(&conn))
        })
        .await
        .map_err(|e| Error::Internal(format!("read task failed: {e}")))?
    }

    fn subscribe(&self) -> watch::Receiver<u64> {
        self.commits.subscribe()
    }

    fn blobs(&self) -> &BlobStore {
        &self.blobs
    }

    async fn ready(&self) -> Result<()> {
        let client = self.pool.get().await.map_err(pool_error)?;
        client
            .query_one("SELECT 1", &[])
            .await
            .map(drop)
            .map_err(translate)
    }
}
