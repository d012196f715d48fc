//! The SQLite backend: one file in WAL mode with `synchronous=FULL`, one writer thread
//! with group commit (see `writer.rs`), and a small pool of read connections.

mod assets;
mod cleanup;
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
mod writer;

use std::any::Any;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::config::DbConfig;
use rusqlite::{Connection, ErrorCode, OpenFlags};

use crate::blobs::BlobStore;
use crate::lock::DirLock;
use crate::{Ack, Cluster, Error, MaintenanceGuard, Node, ReadJob, Result, Store, WriteJob};
use tx::SqliteTx;
use writer::Writer;

/// The database file inside the data directory.
pub const DATABASE_FILE: &str = "lifeboat.sqlite3";
/// Read connections kept open for reuse; more are opened under load and then dropped.
const READERS_KEPT: usize = 8;
/// Prepared statements kept per connection: more than the writer uses, so none is
/// evicted and prepared again under load.
const STATEMENT_CACHE: usize = 64;
/// Translates a SQLite error into a storage error kind. The one place that knows codes.
pub(crate) fn translate(error: rusqlite::Error) -> Error {
    match &error {
        rusqlite::Error::SqliteFailure(failure, _) => match failure.code {
            ErrorCode::DiskFull => Error::Full(error.to_string()),
            ErrorCode::SystemIoFailure
            | ErrorCode::CannotOpen
            | ErrorCode::NotADatabase
            | ErrorCode::DatabaseCorrupt
            | ErrorCode::ReadOnly
            | ErrorCode::PermissionDenied => Error::Unavailable(error.to_string()),
            _ => Error::Internal(error.to_string()),
        },
        _ => Error::Internal(error.to_string()),
    }
}

/// A Lifeboat store in one SQLite file.
#[derive(Clone)]
pub struct SqliteStore {
    /// This process, as `cluster` names it.
    node: Arc<Node>,
    blobs: BlobStore,
    writer: Writer,
    readers: Arc<Readers>,
}

struct Readers {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl Readers {
    fn open(&self) -> Result<Connection> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(translate)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(translate)?;
        stable_plans(&conn)?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        Ok(conn)
    }

    /// Runs `read` on a pooled connection inside one read transaction, off the async runtime.
    async fn read<T, F>(self: &Arc<Self>, read: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let readers = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let pooled = readers.idle.lock().ok().and_then(|mut idle| idle.pop());
            let mut conn = match pooled {
                Some(conn) => conn,
                None => readers.open()?,
            };
            let tx = conn.transaction().map_err(translate)?;
            let result = read(&tx);
            drop(tx);
            if let Ok(mut idle) = readers.idle.lock()
                && idle.len() < READERS_KEPT
            {
                idle.push(conn);
            }
            result
        })
        .await
        .map_err(|e| Error::Internal(format!("read task failed: {e}")))?
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the store in `data_dir`, applying migrations.
    pub fn open(data_dir: &Path) -> Result<SqliteStore> {
        crate::blobs::create_dir_durably(data_dir).map_err(|e| {
            Error::Unavailable(format!(
                "cannot create data dir {}: {e}",
                data_dir.display()
            ))
        })?;
        // Before anything is opened: a second process must change nothing.
        let lock = DirLock::acquire(data_dir)?;
        let path = data_dir.join(DATABASE_FILE);
        let mut conn = Connection::open(&path).map_err(translate)?;
        // WAL + FULL: a commit has fsynced the WAL before COMMIT returns.
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(translate)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(translate)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(translate)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(translate)?;
        schema::migrate(&mut conn)?;
        stable_plans(&conn)?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        let blobs = BlobStore::open(data_dir).map_err(|e| {
            Error::Unavailable(format!(
                "cannot open the blob store in {}: {e}",
                data_dir.display()
            ))
        })?;
        let now = crate::wall_clock();
        Ok(SqliteStore {
            node: Arc::new(Node {
                id: uuid::Uuid::now_v7().to_string(),
                version: env!("CARGO_PKG_VERSION").to_owned(),
                started_at: now,
                last_seen: now,
                alive: true,
                clock_skew_ms: 0,
            }),
            blobs,
            writer: Writer::spawn(conn, path.clone(), lock)?,
            readers: Arc::new(Readers {
                path,
                idle: Mutex::new(Vec::new()),
            }),
        })
    }
}

/// Turns on SQLite's query planner stability guarantee: a plan never depends on the values
/// bound to a statement. Without it, SQLite looks at bound values (an `?2 IS NULL OR …`
/// term, a `LIMIT ?`) and prepares the statement again whenever they change: the event
/// feed's read after every commit was re-parsed each time (about 120,000 instructions,
/// a fifth of a checkpoint write's total, measured with callgrind).
fn stable_plans(conn: &Connection) -> Result<()> {
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)
        .map(drop)
        .map_err(translate)
}

#[async_trait]
impl Store for SqliteStore {
    async fn write(&self, ack: Ack, mut job: WriteJob) -> Result<Box<dyn Any + Send>> {
        self.writer
            .write(ack, move |conn| job(&mut SqliteTx(conn)))
            .await
    }

    async fn read(&self, job: ReadJob) -> Result<Box<dyn Any + Send>> {
        self.readers
            .read(move |conn| job(&mut SqliteTx(conn)))
            .await
    }

    fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.writer.commits()
    }

    fn blobs(&self) -> &BlobStore {
        &self.blobs
    }

    async fn ready(&self) -> Result<()> {
        if self.writer.is_poisoned() {
            return Err(Error::Poisoned);
        }
        self.readers
            .read(|conn| {
                conn.query_row("SELECT 1", [], |_| Ok(()))
                    .map_err(translate)
            })
            .await
    }

    fn shared(&self) -> bool {
        // The data directory's lock makes this process its only writer.
        false
    }

    async fn maintenance(&self) -> Result<Option<MaintenanceGuard>> {
        // The data directory's lock already makes this process the only one.
        Ok(Some(MaintenanceGuard::always()))
    }

    async fn cluster(&self) -> Result<Cluster> {
        let now = crate::wall_clock();
        Ok(Cluster {
            node: self.node.id.clone(),
            now,
            nodes: vec![Node {
                last_seen: now,
                ..Node::clone(&self.node)
            }],
            maintenance: None,
            unsequenced_events: 0,
            oldest_unsequenced_ms: 0,
        })
    }

    fn outages(&self) -> u64 {
        0
    }

    fn clock_offset_ms(&self) -> i64 {
        0
    }
}
