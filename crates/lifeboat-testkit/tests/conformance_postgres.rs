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

/// Cleanup runs on one server at a time: while one store holds the turn, the other is
/// refused; when the holder's connection goes (dropped, or its process killed), the other
/// gets it at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_server_at_a_time_holds_the_cleanup_turn() {
    let handles = open().await;
    let turn = handles
        .first
        .maintenance()
        .await
        .expect("ask for the turn")
        .expect("the first store gets it");
    assert!(
        handles.second.maintenance().await.expect("ask").is_none(),
        "the second store is refused while the first holds it"
    );
    drop(turn);
    let mut waited = std::time::Duration::ZERO;
    loop {
        if handles.second.maintenance().await.expect("ask").is_some() {
            break;
        }
        assert!(
            waited < std::time::Duration::from_secs(5),
            "the turn was never released"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        waited += std::time::Duration::from_millis(20);
    }
    println!("cleanup turn taken over {waited:?} after its holder's connection closed");
}
