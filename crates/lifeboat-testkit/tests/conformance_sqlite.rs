//! The SQLite backend passes the store conformance suite.
//!
//! SQLite allows one process per data directory (the directory lock refuses a second),
//! so its two handles are clones of one `SqliteStore`: one writer, shared. The two
//! engines over them are separate (their own caches, arrivals and sweeps), which is what
//! the concurrency checks exercise here; a backend with real connections per handle
//! (PostgreSQL) exercises the database's own concurrency as well.

use std::sync::Arc;

use lifeboat::Store;
use lifeboat_store::sqlite::SqliteStore;
use lifeboat_testkit::conformance::Handles;

async fn open() -> Handles {
    let dir = Arc::new(tempfile::tempdir().expect("a temp dir"));
    let path = dir.path().to_path_buf();
    let store = tokio::task::spawn_blocking(move || SqliteStore::open(&path))
        .await
        .expect("the open task ran")
        .expect("open the store");
    let first: Arc<dyn Store> = Arc::new(store.clone());
    let second: Arc<dyn Store> = Arc::new(store);
    Handles { first, second, dir }
}

lifeboat_testkit::conformance_suite!(open);
