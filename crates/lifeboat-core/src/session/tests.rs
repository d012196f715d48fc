//! The lifecycle table of SPEC §2 as data: every (operation, from-state) pair is run and
//! the resulting state, or the refusal, is compared with the table.

use super::*;
use crate::{AssetCounts, CheckpointKind, assess};

const T0: Timestamp = Timestamp(1_000_000);

fn session_in(status: Status) -> Session {
    let new = NewSession {
        kind: "render".to_owned(),
        heartbeat_timeout_ms: Some(10_000),
        ..NewSession::default()
    };
    let mut s =
        Session::create(Id::parse("s1").expect("valid id"), new, T0).expect("valid session");
    let now = T0.plus_ms(1);
    match status {
        Status::Active => {}
        Status::Paused => s.pause(Some(1), now).expect("pause"),
        Status::Incomplete => assert!(s.observe(T0.plus_ms(10_000))),
        Status::Failed => drop(s.fail(1, "boom".to_owned(), None, now).expect("fail")),
        Status::Completed => s.complete(Some(1), now).expect("complete"),
        Status::Cancelled => s.cancel(None, now).expect("cancel"),
    }
    assert_eq!(s.status, status);
    s
}

#[derive(Debug, Clone, Copy)]
enum Op {
    Heartbeat,
    Checkpoint,
    Pause,
    Fail,
    Recover,
    Complete,
    Cancel,
}

fn apply(s: &mut Session, op: Op) -> Result<(), Error> {
    let now = T0.plus_ms(2);
    let attempt = s.attempt;
    match op {
        Op::Heartbeat => s.heartbeat(attempt, None, None, now),
        Op::Checkpoint => s
            .checkpoint(
                attempt,
                NewCheckpoint::new(CheckpointKind::Item),
                Vec::new(),
                now,
            )
            .map(drop),
        Op::Pause => s.pause(Some(attempt), now),
        Op::Fail => s.fail(attempt, "boom".to_owned(), None, now).map(drop),
        Op::Recover => {
            let assessment = assess(s, &[], &|_| true, AssetCounts::default());
            s.recover(RecoveryOption::Continue, false, &assessment, now)
                .map(drop)
        }
        Op::Complete => s.complete(Some(attempt), now),
        Op::Cancel => s.cancel(Some(attempt), now),
    }
}

/// Each row: operation, from-state, expected state (None = refused).
#[test]
fn lifecycle_table() {
    use Status::*;
    let table: &[(Op, Status, Option<Status>)] = &[
        (Op::Heartbeat, Active, Some(Active)),
        (Op::Checkpoint, Active, Some(Active)),
        (Op::Pause, Active, Some(Paused)),
        (Op::Fail, Active, Some(Failed)),
        (Op::Fail, Paused, Some(Failed)),
        (Op::Recover, Incomplete, Some(Active)),
        (Op::Recover, Failed, Some(Active)),
        (Op::Recover, Paused, Some(Active)),
        (Op::Complete, Active, Some(Completed)),
        (Op::Complete, Paused, Some(Completed)),
        (Op::Complete, Incomplete, Some(Completed)),
        (Op::Complete, Failed, Some(Completed)),
        (Op::Cancel, Active, Some(Cancelled)),
        (Op::Cancel, Paused, Some(Cancelled)),
        (Op::Cancel, Incomplete, Some(Cancelled)),
        (Op::Cancel, Failed, Some(Cancelled)),
    ];
    let ops = [
        Op::Heartbeat,
        Op::Checkpoint,
        Op::Pause,
        Op::Fail,
        Op::Recover,
        Op::Complete,
        Op::Cancel,
    ];
    for op in ops {
        for from in Status::ALL {
            let expected = table
                .iter()
                .find(|(o, f, _)| {
                    std::mem::discriminant(o) == std::mem::discriminant(&op) && *f == from
                })
                .and_then(|(_, _, to)| *to);
            let mut s = session_in(from);
            let before = s.clone();
            let result = apply(&mut s, op);
            match expected {
                Some(to) => {
                    assert!(result.is_ok(), "{op:?} from {from:?}: {result:?}");
                    assert_eq!(s.status, to, "{op:?} from {from:?}");
                }
                None => {
                    assert!(result.is_err(), "{op:?} from {from:?} should be refused");
                    // A refusal changes nothing, except the late-signal crash refinement.
                    if !matches!(result, Err(Error::LeaseExpired { .. })) {
                        assert_eq!(s, before, "{op:?} from {from:?} changed the session");
                    }
                }
            }
        }
    }
}

/// A stale attempt is fenced out of every write, and changes nothing.
#[test]
fn fencing() {
    let mut s = session_in(Status::Active);
    let before = s.clone();
    let now = T0.plus_ms(5);
    assert!(matches!(
        s.heartbeat(2, None, None, now),
        Err(Error::AttemptMismatch {
            sent: 2,
            current: 1
        })
    ));
    assert!(
        s.checkpoint(0, NewCheckpoint::new(CheckpointKind::Item), Vec::new(), now)
            .is_err()
    );
    assert!(s.pause(Some(7), now).is_err());
    assert!(s.complete(Some(2), now).is_err());
    assert!(s.cancel(Some(2), now).is_err());
    assert!(s.fail(3, "x".to_owned(), None, now).is_err());
    assert_eq!(s, before);
}

/// Crash type order on expiry: server_restart, then out_of_memory, then client_lost;
/// a late heartbeat refines client_lost to network.
#[test]
fn crash_types_on_expiry() {
    let mut s = session_in(Status::Active);
    s.metrics = Some(Metrics {
        memory_bytes: Some(900),
        memory_limit_bytes: Some(1000),
        ..Metrics::default()
    });
    s.observe(T0.plus_ms(10_000));
    assert_eq!(
        s.crash.as_ref().map(|c| c.kind),
        Some(CrashType::OutOfMemory)
    );

    let mut s = session_in(Status::Active);
    s.begin_restart_grace(T0.plus_ms(20_000), T0.plus_ms(1_000));
    assert_eq!(s.lease_expires_at, Some(T0.plus_ms(30_000)));
    s.metrics = Some(Metrics {
        memory_bytes: Some(1000),
        memory_limit_bytes: Some(1000),
        ..Metrics::default()
    });
    s.observe(T0.plus_ms(30_000));
    assert_eq!(
        s.crash.as_ref().map(|c| c.kind),
        Some(CrashType::ServerRestart)
    );

    let mut s = session_in(Status::Active);
    s.observe(T0.plus_ms(10_000));
    assert_eq!(
        s.crash.as_ref().map(|c| c.kind),
        Some(CrashType::ClientLost)
    );
    assert!(matches!(
        s.heartbeat(1, None, None, T0.plus_ms(10_500)),
        Err(Error::LeaseExpired { .. })
    ));
    assert_eq!(s.crash.as_ref().map(|c| c.kind), Some(CrashType::Network));
    assert_eq!(s.status, Status::Incomplete);
}

/// Crash type order on fail: out_of_memory, then network, then application_error.
#[test]
fn crash_types_on_fail() {
    let cases = [
        ("java.lang.OutOfMemoryError", CrashType::OutOfMemory),
        ("Cannot allocate memory", CrashType::OutOfMemory),
        ("OOM killed; connection reset", CrashType::OutOfMemory),
        ("Connection refused by upstream", CrashType::Network),
        ("request timed out", CrashType::Network),
        ("ECONNRESET", CrashType::Network),
        ("division by zero", CrashType::ApplicationError),
    ];
    for (text, kind) in cases {
        assert_eq!(crash_type_for_error(text), kind, "{text}");
    }
}

/// max_attempts = 2 refuses the recovery that would make attempt 3, unless confirmed.
#[test]
fn max_attempts() {
    let mut s = session_in(Status::Active);
    s.max_attempts = 2;
    s.fail(1, "x".to_owned(), None, T0.plus_ms(3))
        .expect("fail");
    let a = assess(&s, &[], &|_| true, AssetCounts::default());
    s.recover(RecoveryOption::Continue, false, &a, T0.plus_ms(4))
        .expect("attempt 2");
    s.fail(2, "x".to_owned(), None, T0.plus_ms(5))
        .expect("fail");
    let before = s.clone();
    assert!(matches!(
        s.recover(RecoveryOption::Continue, false, &a, T0.plus_ms(6)),
        Err(Error::AttemptsExhausted {
            attempt: 2,
            max_attempts: 2
        })
    ));
    assert_eq!(s, before);
    s.recover(RecoveryOption::Continue, true, &a, T0.plus_ms(6))
        .expect("confirmed");
    assert_eq!(s.attempt, 3);
}

/// Stalls: alive but not moving is flagged; progress clears the flag.
#[test]
fn stall() {
    let mut s = session_in(Status::Active);
    s.stall_timeout_ms = Some(2_000);
    s.heartbeat(1, None, None, T0.plus_ms(1_000)).expect("hb");
    assert!(!s.stalled);
    let mut seen = s.clone();
    assert!(seen.observe(T0.plus_ms(2_400)));
    assert!(seen.stalled);
    assert_eq!(
        seen.updated_at,
        T0.plus_ms(2_000),
        "it changed when progress had not moved for 2 s, not when that was seen"
    );
    s.heartbeat(1, None, None, T0.plus_ms(2_500)).expect("hb");
    assert!(s.stalled);
    let moved = Progress {
        completed_units: Some(3),
        ..Progress::default()
    };
    s.heartbeat(1, Some(moved), None, T0.plus_ms(3_000))
        .expect("hb");
    assert!(!s.stalled);
}

/// Confidence is 1.0 for a fresh newest checkpoint, lower when a damaged one is skipped
/// or the checkpoint is old, and 0 with nothing to resume.
#[test]
fn confidence() {
    let mut s = session_in(Status::Active);
    let c1 = s
        .checkpoint(
            1,
            NewCheckpoint::new(CheckpointKind::Batch),
            Vec::new(),
            T0.plus_ms(100),
        )
        .expect("c1");
    let c2 = s
        .checkpoint(
            1,
            NewCheckpoint::new(CheckpointKind::Item),
            Vec::new(),
            T0.plus_ms(200),
        )
        .expect("c2");
    s.heartbeat(1, None, None, T0.plus_ms(1_000)).expect("hb");
    let a = assess(
        &s,
        &[c1.clone(), c2.clone()],
        &|_| true,
        AssetCounts::default(),
    );
    assert_eq!(a.confidence, 1.0);
    assert_eq!(a.resume_from.as_ref().map(|p| p.seq), Some(2));
    assert_eq!(a.work_lost_ms, 800);

    let mut damaged = c2.clone();
    damaged.valid = false;
    let a = assess(
        &s,
        &[c1.clone(), damaged.clone()],
        &|_| true,
        AssetCounts::default(),
    );
    assert_eq!(a.resume_from.as_ref().map(|p| p.seq), Some(1));
    assert_eq!(a.confidence, 0.8);
    assert_eq!(a.restart_batch_from.as_ref().map(|p| p.seq), Some(1));

    s.heartbeat(1, None, None, T0.plus_ms(10_200)).expect("hb");
    let a = assess(&s, &[c1.clone(), c2], &|_| true, AssetCounts::default());
    assert_eq!(a.confidence, 0.25);

    let mut bad1 = c1;
    bad1.valid = false;
    let a = assess(&s, &[bad1, damaged], &|_| true, AssetCounts::default());
    assert!(!a.can_recover);
    assert_eq!(a.confidence, 0.0);
    assert!(
        a.offers
            .iter()
            .all(|o| o.option == RecoveryOption::FreshStart)
    );
}

/// A lease that passed before the server's last commit gets no restart grace: the
/// session expires at the restart as `client_lost` (SPEC §2 r2), while one whose lease
/// passed after the last commit (the server was down) gets the grace.
#[test]
fn no_grace_for_a_lease_that_passed_while_the_server_was_up() {
    let mut s = session_in(Status::Active);
    let lease = s.lease_expires_at.expect("active session has a lease");
    s.begin_restart_grace(lease.plus_ms(60_000), lease.plus_ms(5));
    assert_eq!(s.status, Status::Incomplete);
    let crash = s.crash.as_ref().expect("crash recorded");
    assert_eq!(crash.kind, CrashType::ClientLost);
    assert_eq!(crash.detected_at, lease.plus_ms(60_000));

    let mut s = session_in(Status::Active);
    let lease = s.lease_expires_at.expect("active session has a lease");
    s.begin_restart_grace(lease.plus_ms(60_000), lease.minus_ms(5));
    assert_eq!(s.status, Status::Active);
    assert!(s.lease_ran_out_while_down);
}
