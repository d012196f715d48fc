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

/// Two servers whose writes lock two sessions in opposite orders deadlock; PostgreSQL
/// cancels one of them after `deadlock_timeout` (1 s), and that server runs the write
/// again after its transaction rolled back: both writes succeed, and the canceled one
/// ran twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_canceled_by_a_deadlock_runs_again() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use lifeboat::Id;
    use lifeboat_store::{Ack, WriteJob, rows::Tx};

    let handles = open().await;
    let (tenant, x, y) = sessions_x_and_y(&handles).await;
    let runs = Arc::new(AtomicUsize::new(0));
    let locked = Arc::new(AtomicUsize::new(0));
    // Locks `first`, waits until the other write holds its own first session (however
    // late the other handle's writer starts), then wants `second`.
    let crossing = |first: &Id, second: &Id| -> WriteJob {
        let (tenant, first, second, runs, locked) = (
            tenant.clone(),
            first.clone(),
            second.clone(),
            Arc::clone(&runs),
            Arc::clone(&locked),
        );
        Box::new(move |tx: &mut dyn Tx| {
            runs.fetch_add(1, Ordering::SeqCst);
            tx.session(&tenant, &first)?;
            locked.fetch_add(1, Ordering::SeqCst);
            let waited = std::time::Instant::now();
            while locked.load(Ordering::SeqCst) < 2 && waited.elapsed() < Duration::from_secs(10) {
                std::thread::sleep(Duration::from_millis(10));
            }
            tx.session(&tenant, &second)?;
            Ok(Ok(Box::new(()) as Box<dyn std::any::Any + Send>))
        })
    };
    let (one, other) = tokio::join!(
        handles.first.write(Ack::AfterCommit, crossing(&x, &y)),
        handles.second.write(Ack::AfterCommit, crossing(&y, &x)),
    );
    assert!(
        one.is_ok() && other.is_ok(),
        "both writes succeed: {:?} / {:?}",
        one.err(),
        other.err()
    );
    assert_eq!(
        runs.load(Ordering::SeqCst),
        3,
        "the write PostgreSQL canceled ran again, once"
    );
}

/// A write that PostgreSQL canceled runs again before the later writes of its key that
/// shared its batch: they keep the order in which they came.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_run_again_keeps_its_place_before_later_writes_of_its_key() {
    use std::sync::Mutex;
    use std::time::Duration;

    use lifeboat::Id;
    use lifeboat_store::{Ack, WriteJob, rows::Tx};

    let handles = open().await;
    let (tenant, x, y) = sessions_x_and_y(&handles).await;
    let runs: Arc<Mutex<Vec<&'static str>>> = Arc::default();
    fn done() -> lifeboat_store::JobResult<Box<dyn std::any::Any + Send>> {
        Ok(Ok(Box::new(())))
    }
    // Notes its run; with `lock`, locks one session, pauses that many ms, then wants the
    // other.
    let job = |name: &'static str, lock: Option<(&Id, &Id, u64)>| -> WriteJob {
        let (tenant, runs) = (tenant.clone(), Arc::clone(&runs));
        let lock = lock.map(|(a, b, pause)| (a.clone(), b.clone(), pause));
        Box::new(move |tx: &mut dyn Tx| {
            runs.lock().expect("runs").push(name);
            if let Some((first, second, pause)) = &lock {
                tx.session(&tenant, first)?;
                std::thread::sleep(Duration::from_millis(*pause));
                tx.session(&tenant, second)?;
            }
            done()
        })
    };
    // The first handle's writer is busy for 200 ms, so that `a` and `b` (about one session) share
    // its next batch. `a` waits for `y` from about 500 ms, `c` for `x` from about 1,050 ms:
    // `a`'s deadlock check comes first (after `deadlock_timeout`, 1 s), so PostgreSQL
    // cancels `a`, with half a second to spare.
    let busy = handles.first.write_about(
        &tenant,
        &x,
        Ack::AfterCommit,
        Box::new(|_: &mut dyn Tx| {
            std::thread::sleep(Duration::from_millis(200));
            done()
        }),
    );
    let a = handles
        .first
        .write_about(&tenant, &x, Ack::AfterCommit, job("a", Some((&x, &y, 300))));
    let b = handles
        .first
        .write_about(&tenant, &x, Ack::AfterCommit, job("b", None));
    let crossing = job("c", Some((&y, &x, 800)));
    let other = async {
        tokio::time::sleep(Duration::from_millis(250)).await;
        handles.second.write(Ack::AfterCommit, crossing).await
    };
    let (busy, a, b, other) = tokio::join!(busy, a, b, other);
    for (name, answer) in [("busy", busy), ("a", a), ("b", b), ("c", other)] {
        assert!(answer.is_ok(), "{name}: {:?}", answer.err());
    }
    let runs = runs.lock().expect("runs").clone();
    let order: Vec<&str> = runs.into_iter().filter(|name| *name != "c").collect();
    assert_eq!(order, ["a", "a", "b"], "a ran twice, and b after it");
}

/// Sessions `x` and `y` of the default tenant, written through the first handle.
async fn sessions_x_and_y(handles: &Handles) -> (lifeboat::TenantId, lifeboat::Id, lifeboat::Id) {
    use lifeboat::{Id, NewSession, Session, TenantId, Timestamp};
    use lifeboat_store::{Ack, WriteJob, rows::Tx};

    let tenant = TenantId::default();
    let (x, y) = (Id::parse("x").expect("id"), Id::parse("y").expect("id"));
    for id in [&x, &y] {
        let (tenant, id) = (tenant.clone(), id.clone());
        let job: WriteJob = Box::new(move |tx: &mut dyn Tx| {
            let new = NewSession {
                kind: "k".to_owned(),
                ..NewSession::default()
            };
            let session = Session::create(id.clone(), new, Timestamp(1_800_000_000_000))?;
            tx.insert_session(&tenant, &session)?;
            Ok(Ok(Box::new(()) as Box<dyn std::any::Any + Send>))
        });
        handles
            .first
            .write(Ack::AfterCommit, job)
            .await
            .expect("a session");
    }
    (tenant, x, y)
}

/// Connects to the schema of `url`, made by a server, and takes it from the newest version
/// back to version 3: the lease indexed, no `due_second`, no `purged_counts`.
async fn back_to_version_3(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect to the test schema");
    tokio::spawn(connection);
    client
        .batch_execute(
            "DROP INDEX sessions_due; ALTER TABLE sessions DROP COLUMN due_second; \
             CREATE INDEX sessions_lease ON sessions (lease_expires_at) WHERE status = 'active'; \
             DROP TABLE purged_counts; DELETE FROM lifeboat_migrations WHERE version >= 4",
        )
        .await
        .expect("back to version 3");
    client
}

/// The newest migration applied to the schema `client` is on.
async fn schema_version(client: &tokio_postgres::Client) -> i64 {
    client
        .query_one("SELECT max(version) FROM lifeboat_migrations", &[])
        .await
        .expect("the schema version")
        .get(0)
}

/// A database at schema version 2 with events in its log, numbered and waiting, upgraded
/// by a server that starts: migration 0003 moves the indexes on `seq`, the numbers already
/// given stay, and the events waiting are numbered after them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgraded_event_log_keeps_its_numbers_and_numbers_what_waited() {
    use std::time::{Duration, Instant};
    let database = fresh_schema().await;
    let dir = tempfile::tempdir().expect("a temp dir");
    drop(
        PgStore::connect(&database.url, dir.path())
            .await
            .expect("the schema is made"),
    );
    // Back to version 2, as 0002 left the events table, with a log in it.
    let client = back_to_version_3(&database.url).await;
    client
        .batch_execute(
            "DROP INDEX events_seq; ALTER TABLE events ADD CONSTRAINT events_seq_key UNIQUE (seq); \
             DROP INDEX events_tenant; CREATE INDEX events_tenant ON events (tenant, seq); \
             DELETE FROM lifeboat_migrations WHERE version = 3; \
             INSERT INTO events (seq, tenant, type, data, created_at) \
             VALUES (1, 'default', 'numbered', '{}', 0), (2, 'default', 'numbered', '{}', 0); \
             INSERT INTO events (tenant, type, data, created_at) \
             VALUES ('default', 'waiting', '{}', 0), ('default', 'waiting', '{}', 0)",
        )
        .await
        .expect("the version 2 schema with a log");

    let store = PgStore::connect(&database.url, dir.path())
        .await
        .expect("the server upgrades the schema and starts");
    let started = Instant::now();
    let numbers = loop {
        let rows = client
            .query("SELECT seq, type FROM events ORDER BY id", &[])
            .await
            .expect("read the log");
        let numbers: Vec<(Option<i64>, String)> =
            rows.iter().map(|row| (row.get(0), row.get(1))).collect();
        if numbers.iter().all(|(seq, _)| seq.is_some()) {
            break numbers;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the waiting events were never numbered: {numbers:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let expected: Vec<(Option<i64>, String)> = [
        (1, "numbered"),
        (2, "numbered"),
        (3, "waiting"),
        (4, "waiting"),
    ]
    .iter()
    .map(|(seq, kind)| (Some(*seq), (*kind).to_owned()))
    .collect();
    assert_eq!(numbers, expected);
    assert_eq!(schema_version(&client).await, 5);
    let duplicate = client
        .execute(
            "INSERT INTO events (seq, tenant, type, data, created_at) VALUES (4, 'default', 'again', '{}', 0)",
            &[],
        )
        .await;
    assert!(duplicate.is_err(), "a number is still given once");
    drop(store);
}

/// A reader of the log finds every event committed before it asked, numbered or not:
/// here events committed by a server that died before numbering them (inserted without a
/// number), read at once through an engine. No write of this store woke its sequencer, so
/// only the wait for a pass before the read (`Lifeboat::number_events`) numbers them in
/// time; without it the read finds none, unless the store's 250 ms poll happens to fall
/// between the insert and the read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_finds_the_events_a_server_committed_without_numbering() {
    use lifeboat::{Config, EventFilter, Lifeboat, TenantId};
    let database = fresh_schema().await;
    let dir = tempfile::tempdir().expect("a temp dir");
    let store: Arc<dyn Store> = Arc::new(
        PgStore::connect(&database.url, dir.path())
            .await
            .expect("the store connects"),
    );
    let mut config = Config::new(dir.path());
    config.cleanup_interval = None;
    let engine = Lifeboat::with_store(store, config)
        .await
        .expect("the engine starts");
    let tenant = TenantId::default();
    engine.number_events().await;
    let start = engine.newest_event().await.expect("the newest event");
    let (client, connection) = tokio_postgres::connect(&database.url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    client
        .batch_execute(
            "INSERT INTO events (tenant, type, data, created_at) \
             VALUES ('default', 'left', '{\"n\": 1}', 0), ('default', 'left', '{\"n\": 2}', 0)",
        )
        .await
        .expect("events committed without their numbers");
    engine.number_events().await;
    let read = engine
        .events(&tenant, start, &EventFilter::default(), 10)
        .await
        .expect("the log");
    let found: Vec<(i64, u64)> = read
        .iter()
        .map(|event| (event.seq, event.data["n"].as_u64().unwrap_or(0)))
        .collect();
    assert_eq!(found, vec![(start + 1, 1), (start + 2, 2)]);
}

/// A database at schema version 3 with active sessions in it, upgraded by a server that
/// starts: migration 0004 gives each its `due_second`, and the sweep's search (which goes
/// through it) finds each session when its lease passes or its stall falls due, the
/// longest due first, and none before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgraded_session_table_finds_what_is_due() {
    use lifeboat::Timestamp;
    use lifeboat_store::rows::Tx;

    let database = fresh_schema().await;
    let dir = Arc::new(tempfile::tempdir().expect("a temp dir"));
    let store: Arc<dyn Store> = Arc::new(
        PgStore::connect(&database.url, dir.path())
            .await
            .expect("the schema is made"),
    );
    let handles = Handles {
        first: Arc::clone(&store),
        second: store,
        dir,
    };
    let (_, x, y) = sessions_x_and_y(&handles).await;
    let client = back_to_version_3(&database.url).await;
    // x's lease passes 10 s before y's; y's stall falls due 5 s before x's lease.
    let row = client
        .query_one(
            "UPDATE sessions SET lease_expires_at = lease_expires_at - 10000 WHERE id = 'x' \
             RETURNING lease_expires_at",
            &[],
        )
        .await
        .expect("move x's lease");
    let x_lease: i64 = row.get(0);
    client
        .execute(
            "UPDATE sessions SET stall_timeout_ms = $1::bigint - 5000 - progress_changed_at \
             WHERE id = 'y'",
            &[&x_lease],
        )
        .await
        .expect("watch y for stalls");
    let upgraded: Arc<dyn Store> = Arc::new(
        PgStore::connect(&database.url, handles.dir.path())
            .await
            .expect("the server upgrades the schema and starts"),
    );
    let due_at = |at: i64| {
        let store = Arc::clone(&upgraded);
        async move {
            let job: lifeboat_store::ReadJob = Box::new(move |tx: &mut dyn Tx| {
                let due = tx.due_sessions(Timestamp(at), 10)?;
                let ids: Vec<String> = due.iter().map(|(_, _, s)| s.id.to_string()).collect();
                Ok(Box::new(ids) as Box<dyn std::any::Any + Send>)
            });
            *store
                .read(job)
                .await
                .expect("the sweep's search")
                .downcast::<Vec<String>>()
                .expect("ids")
        }
    };
    let (x, y) = (x.to_string(), y.to_string());
    assert_eq!(due_at(x_lease - 5001).await, Vec::<String>::new());
    assert_eq!(due_at(x_lease - 5000).await, vec![y.clone()]);
    assert_eq!(due_at(x_lease - 1).await, vec![y.clone()]);
    assert_eq!(due_at(x_lease).await, vec![y.clone(), x.clone()]);
    assert_eq!(schema_version(&client).await, 5);
}
