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

/// Maintenance (cleanup) runs on one server at a time, under a lease with terms: while one
/// store holds the term, the other is refused and sees who holds it; when the holder stops
/// beating (its process dies), its guard stops answering `held`, and the other takes the
/// next term within lease + beat (6 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_server_at_a_time_holds_the_maintenance_term() {
    use std::time::{Duration, Instant};
    let handles = open().await;
    let turn = handles
        .first
        .maintenance()
        .await
        .expect("ask for the term")
        .expect("the first store to start holds it");
    assert!(turn.held());
    assert!(
        handles.second.maintenance().await.expect("ask").is_none(),
        "the second store is refused while the first holds the term"
    );
    let seen = handles.second.cluster().await.expect("the cluster view");
    let first_node = handles.first.cluster().await.expect("view").node;
    let before = seen.maintenance.expect("a term");
    assert_eq!(before.holder, first_node);
    assert_eq!(
        seen.nodes.iter().filter(|node| node.alive).count(),
        2,
        "both servers beat: {:?}",
        seen.nodes
    );

    let Handles { first, second, dir } = handles;
    drop(first);
    let dropped = Instant::now();
    // Its beat or event poll may hold the store a moment longer.
    while turn.held() {
        assert!(
            dropped.elapsed() < Duration::from_secs(2),
            "a stopped holder still acts on its term"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    while second.maintenance().await.expect("ask").is_none() {
        assert!(
            dropped.elapsed() < Duration::from_secs(10),
            "the term was never taken over"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let after = second
        .cluster()
        .await
        .expect("view")
        .maintenance
        .expect("a term");
    println!(
        "maintenance term {} taken over as term {} {:?} after its holder stopped",
        before.term,
        after.term,
        dropped.elapsed()
    );
    assert_eq!(after.holder, second.cluster().await.expect("view").node);
    assert_eq!(after.term, before.term + 1);

    // Inside a transaction, only the current term holds: a cleanup step of the old holder
    // would delete nothing.
    let old_term = turn.term().expect("a leased term");
    let new_term = second
        .maintenance()
        .await
        .expect("ask")
        .expect("held")
        .term()
        .expect("a leased term");
    assert_eq!(old_term, (before.holder.clone(), before.term));
    for ((holder, term), holds) in [(old_term, false), (new_term, true)] {
        let answer = second
            .write(
                lifeboat_store::Ack::AfterCommit,
                Box::new(move |tx| {
                    let held = tx.hold_term(&holder, term)?;
                    Ok(Ok(Box::new(held) as Box<dyn std::any::Any + Send>))
                }),
            )
            .await
            .expect("a transaction");
        assert_eq!(*answer.downcast::<bool>().expect("a bool"), holds);
    }
    drop(dir);
}
