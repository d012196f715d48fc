//! The PostgreSQL backend passes the store conformance suite, with two store handles (two
//! connection pools, as two servers would have) on one fresh schema per check.
//!
//! The database is `LIFEBOAT_TEST_DATABASE_URL` (default: the local server,
//! `postgres://postgres@127.0.0.1:5432/postgres`); without a reachable server the checks
//! fail, saying so.

use std::sync::Arc;

use lifeboat::Store;
use lifeboat_store::postgres::PgStore;
use lifeboat_testkit::conformance::Handles;
use lifeboat_testkit::postgres::fresh_schema;

async fn open() -> Handles {
    let url = fresh_schema().await.url;
    let dir = Arc::new(tempfile::tempdir().expect("a temp dir"));
    let first = PgStore::connect(&url, dir.path())
        .await
        .expect("the first handle connects");
    let second = PgStore::connect(&url, dir.path())
        .await
        .expect("the second handle connects");
    let first: Arc<dyn Store> = Arc::new(first);
    let second: Arc<dyn Store> = Arc::new(second);
    Handles { first, second, dir }
}

lifeboat_testkit::conformance_suite!(open);
