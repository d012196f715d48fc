//! An expiry is a fact (SPEC §2 r2), at the store: a sweep spares a session whose write
//! arrived before its lease passed (the write then lands, not refused as late), and the
//! restart grace is not given to a session whose lease passed before the store's last
//! commit. A real SQLite file, times passed in.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use lifeboat_core::{
    CrashType, Error as DomainError, Id, NewSession, ProjectRules, Session, Status, TenantId,
    Timestamp,
};
use lifeboat_store::sqlite::SqliteStore;
use lifeboat_store::{Error, SessionOp, Spared, Store};

const T0: Timestamp = Timestamp(1_800_000_000_000);

fn open(dir: &Path) -> SqliteStore {
    // A store just dropped releases the directory when its writer thread ends.
    for _ in 0..200 {
        match SqliteStore::open(dir, ProjectRules::default()) {
            Err(Error::Locked { .. }) => std::thread::sleep(Duration::from_millis(10)),
            opened => return opened.expect("open the store"),
        }
    }
    panic!("the data directory stayed locked");
}

async fn create(store: &SqliteStore, id: &str, timeout_ms: u64) -> Id {
    let id = Id::parse(id).expect("id");
    let new = NewSession {
        kind: "k".to_owned(),
        heartbeat_timeout_ms: Some(timeout_ms),
        ..NewSession::default()
    };
    let session = Session::create(id.clone(), new, T0).expect("session");
    store
        .create_session(&TenantId::default(), session, None)
        .await
        .expect("create");
    id
}

async fn heartbeat(store: &SqliteStore, id: &Id, now: Timestamp) -> Result<Session, Error> {
    let op = SessionOp::Heartbeat {
        attempt: 1,
        progress: None,
        metrics: None,
    };
    let outcome = store
        .update_session(&TenantId::default(), id, op, now, None)
        .await?;
    Ok(outcome.done().expect("not a replay").session)
}

/// A heartbeat that arrived 100 ms before the lease passed, but reaches the writer after a
/// sweep that runs 500 ms after it: the sweep leaves the session alone, and the heartbeat
/// extends the lease from when it arrived. One that arrived after the lease is late.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_spares_a_session_whose_heartbeat_is_on_its_way() {
    let dir = tempfile::tempdir().expect("dir");
    let store = open(dir.path());
    let id = create(&store, "s", 1_000).await;
    let arrived = T0.plus_ms(900);
    let spared: Spared = HashMap::from([((TenantId::default(), id.clone()), arrived)]);
    assert_eq!(
        store
            .sweep(T0.plus_ms(1_500), &spared)
            .await
            .expect("sweep"),
        0
    );
    let stored = store
        .session(&TenantId::default(), &id)
        .await
        .expect("read");
    assert_eq!(stored.status, Status::Active);
    let session = heartbeat(&store, &id, arrived).await.expect("in time");
    assert_eq!(session.lease_expires_at, Some(arrived.plus_ms(1_000)));

    let late = create(&store, "late", 1_000).await;
    let spared: Spared = HashMap::from([((TenantId::default(), late.clone()), T0.plus_ms(1_200))]);
    assert_eq!(
        store
            .sweep(T0.plus_ms(1_500), &spared)
            .await
            .expect("sweep"),
        1
    );
    let refused = heartbeat(&store, &late, T0.plus_ms(1_200)).await;
    assert!(
        matches!(
            refused,
            Err(Error::Domain(DomainError::LeaseExpired { .. }))
        ),
        "{refused:?}"
    );
}

/// Session `a`'s lease passed at T0+1 s; `b` heartbeated at T0+1.5 s, so the server was up
/// and committing after `a` expired. After a restart `a` gets no grace (incomplete,
/// `client_lost`, detected at the restart); `b` gets it. A lease that passed only after the
/// last commit (the server was down) still gets the grace, and its expiry is then
/// `server_restart`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_restart_grace_for_a_lease_that_passed_while_the_server_was_up() {
    let dir = tempfile::tempdir().expect("dir");
    let store = open(dir.path());
    let a = create(&store, "a", 1_000).await;
    let b = create(&store, "b", 60_000).await;
    heartbeat(&store, &b, T0.plus_ms(1_500))
        .await
        .expect("b lives");
    let c = create(&store, "c", 2_000).await;
    drop(store);

    let store = open(dir.path());
    let ready = T0.plus_ms(10_000);
    assert_eq!(store.begin_restart_grace(ready).await.expect("grace"), 2);
    let tenant = TenantId::default();
    let a = store.session(&tenant, &a).await.expect("a");
    assert_eq!(a.status, Status::Incomplete);
    let crash = a.crash.expect("a crashed");
    assert_eq!(
        (crash.kind, crash.detected_at),
        (CrashType::ClientLost, ready)
    );
    let b = store.session(&tenant, &b).await.expect("b");
    assert_eq!(b.status, Status::Active);
    let mut c = store.session(&tenant, &c).await.expect("c");
    assert_eq!(c.status, Status::Active);
    assert!(c.lease_ran_out_while_down);
    c.observe(ready.plus_ms(2_000));
    assert_eq!(c.crash.map(|c| c.kind), Some(CrashType::ServerRestart));
}
