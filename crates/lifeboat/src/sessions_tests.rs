//! An expiry is a fact (SPEC §2 r2), at the engine with a real SQLite file and times passed
//! in: a sweep spares a session whose write arrived before its lease passed (the write then
//! lands, not refused as late), and the restart grace is not given to a session whose lease
//! passed before the store's last commit.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use lifeboat_core::{CrashType, Error as DomainError, Id, NewSession, Session, Status, TenantId};
use lifeboat_store::rows::EarlyAck;
use lifeboat_store::{Ack, Error, Result};

use super::update_script;
use crate::expiry::Spared;
use crate::{Config, Lifeboat, ManualClock, SessionOp, Timestamp};

const T0: Timestamp = Timestamp(1_800_000_000_000);

/// Lifeboat on `dir` at `now`, with no sweeper running on its own.
async fn open(dir: &Path, now: Timestamp) -> Lifeboat {
    let mut config = Config::new(dir);
    config.clock = Arc::new(ManualClock::new(now));
    config.sweep_interval = Duration::from_secs(3_600);
    config.cleanup_interval = None;
    // One just dropped releases the directory when its writer thread ends.
    for _ in 0..200 {
        match Lifeboat::open(config.clone()).await {
            Err(Error::Locked { .. }) => tokio::time::sleep(Duration::from_millis(10)).await,
            opened => return opened.expect("open"),
        }
    }
    panic!("the data directory stayed locked");
}

async fn create(lifeboat: &Lifeboat, id: &str, timeout_ms: u64) -> Id {
    let new = NewSession {
        id: Some(Id::parse(id).expect("id")),
        kind: "k".to_owned(),
        heartbeat_timeout_ms: Some(timeout_ms),
        ..NewSession::default()
    };
    lifeboat
        .create_session(&TenantId::default(), new)
        .await
        .expect("create")
        .id
}

/// A heartbeat that arrived at `arrived`, however late it reaches the writer.
async fn heartbeat(lifeboat: &Lifeboat, id: &Id, arrived: Timestamp) -> Result<Session> {
    let op = SessionOp::Heartbeat {
        attempt: 1,
        progress: None,
        metrics: None,
    };
    let id = id.clone();
    let applied = lifeboat
        .write(Ack::AfterCommit, move |tx| {
            update_script(
                tx,
                &TenantId::default(),
                &id,
                op.clone(),
                arrived,
                &EarlyAck::default(),
            )
        })
        .await?;
    Ok(applied.session)
}

/// A heartbeat that arrived 100 ms before the lease passed, but reaches the writer after a
/// sweep that runs 500 ms after it: the sweep leaves the session alone, and the heartbeat
/// extends the lease from when it arrived. One that arrived after the lease is late.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_spares_a_session_whose_heartbeat_is_on_its_way() {
    let dir = tempfile::tempdir().expect("dir");
    let lifeboat = open(dir.path(), T0).await;
    let id = create(&lifeboat, "s", 1_000).await;
    let arrived = T0.plus_ms(900);
    let spared: Spared = HashMap::from([((TenantId::default(), id.clone()), arrived)]);
    let timed_out = lifeboat.sweep_at(T0.plus_ms(1_500), spared).await;
    assert_eq!(timed_out.expect("sweep"), 0);
    let stored = lifeboat
        .stored_session(&TenantId::default(), &id)
        .await
        .expect("read");
    assert_eq!(stored.status, Status::Active);
    let session = heartbeat(&lifeboat, &id, arrived).await.expect("in time");
    assert_eq!(session.lease_expires_at, Some(arrived.plus_ms(1_000)));

    let late = create(&lifeboat, "late", 1_000).await;
    let spared: Spared = HashMap::from([((TenantId::default(), late.clone()), T0.plus_ms(1_200))]);
    let timed_out = lifeboat.sweep_at(T0.plus_ms(1_500), spared).await;
    assert_eq!(timed_out.expect("sweep"), 1);
    let refused = heartbeat(&lifeboat, &late, T0.plus_ms(1_200)).await;
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
    let lifeboat = open(dir.path(), T0).await;
    let a = create(&lifeboat, "a", 1_000).await;
    let b = create(&lifeboat, "b", 60_000).await;
    heartbeat(&lifeboat, &b, T0.plus_ms(1_500))
        .await
        .expect("b lives");
    let c = create(&lifeboat, "c", 2_000).await;
    drop(lifeboat);

    let ready = T0.plus_ms(10_000);
    let lifeboat = open(dir.path(), ready).await;
    let tenant = TenantId::default();
    let a = lifeboat.stored_session(&tenant, &a).await.expect("a");
    assert_eq!(a.status, Status::Incomplete);
    let crash = a.crash.expect("a crashed");
    assert_eq!(
        (crash.kind, crash.detected_at),
        (CrashType::ClientLost, ready)
    );
    let b = lifeboat.stored_session(&tenant, &b).await.expect("b");
    assert_eq!(b.status, Status::Active);
    let mut c = lifeboat.stored_session(&tenant, &c).await.expect("c");
    assert_eq!(c.status, Status::Active);
    assert!(c.lease_ran_out_while_down);
    c.observe(ready.plus_ms(2_000));
    assert_eq!(c.crash.map(|c| c.kind), Some(CrashType::ServerRestart));
}
