//! Checks of writes: sequence numbers and revisions across handles, fencing, pruning,
//! atomicity, event order, idempotent outcomes.

use std::collections::BTreeSet;
use std::sync::Arc;

use lifeboat::{
    Change, CheckpointKind, Error, EventFilter, IdempotencyKey, NewSession, Outcome, Preconditions,
    ProjectEdit, RecoveryOption, SessionFilter,
};
use lifeboat_store::rows::{Subject, Tx};
use lifeboat_store::{Ack, WriteJob};
use serde_json::json;

use super::{Handles, T0, all, checkpoint, engines, id, pages, session, tenant};

/// Writes from two engines to one session interleave: `seq` is 1..=n with no gap and no
/// repeat, and the list read in small pages by cursor yields each once, in order.
pub async fn seq_is_gap_free_across_handles(handles: Handles) {
    let (a, b, _) = engines(&handles).await;
    let s = session(&a, "seq", 60_000).await;
    let mut writes = Vec::new();
    for n in 0..40 {
        let engine = if n % 2 == 0 { a.clone() } else { b.clone() };
        let s = s.clone();
        writes.push(tokio::spawn(async move {
            engine
                .checkpoint(&tenant(), &s, 1, checkpoint(CheckpointKind::Stage, n))
                .await
                .expect("a checkpoint")
                .seq
        }));
    }
    let mut seqs = BTreeSet::new();
    for write in writes {
        assert!(
            seqs.insert(write.await.expect("the write ran")),
            "a repeated seq"
        );
    }
    assert_eq!(seqs, (1..=40).collect::<BTreeSet<u64>>());
    let listed = pages(7, |page| {
        let b = b.clone();
        let s = s.clone();
        async move { b.checkpoints(&tenant(), &s, &page).await }
    })
    .await;
    let listed: Vec<u64> = listed.iter().map(|c| c.seq).collect();
    assert_eq!(listed, (1..=40).collect::<Vec<u64>>());
}

/// Saves from two engines without preconditions: revisions 1..=n, none lost, the history
/// paged by cursor complete and newest first; a save against a stale `If-Match` is
/// refused and changes nothing.
pub async fn revisions_are_gap_free_across_handles(handles: Handles) {
    let (a, b, _) = engines(&handles).await;
    let p = id("doc");
    let first = json!({ "title": "t", "edits": 0 });
    let create = ProjectEdit::Change(Change::Replace {
        state: first,
        title: None,
        schema: None,
    });
    a.save_project(&tenant(), &p, create, Preconditions::default(), None)
        .await
        .expect("create the project");
    let mut saves = Vec::new();
    for n in 1..=30 {
        let engine = if n % 2 == 0 { a.clone() } else { b.clone() };
        let p = p.clone();
        saves.push(tokio::spawn(async move {
            let edit = ProjectEdit::Change(Change::Merge(json!({ format!("f{n}"): n })));
            engine
                .save_project(&tenant(), &p, edit, Preconditions::default(), None)
                .await
                .expect("a save")
                .into_inner()
                .revision
        }));
    }
    let mut revisions = BTreeSet::new();
    for save in saves {
        assert!(revisions.insert(save.await.expect("the save ran")));
    }
    assert_eq!(revisions, (2..=31).collect::<BTreeSet<u64>>());
    let project = b.project(&tenant(), &p, None).await.expect("read");
    assert_eq!(project.revision, 31);
    for n in 1..=30 {
        assert_eq!(
            project.state[format!("f{n}")],
            json!(n),
            "save {n} is in the state"
        );
    }
    let history = pages(4, |page| {
        let a = a.clone();
        let p = p.clone();
        async move { a.revisions(&tenant(), &p, &page).await }
    })
    .await;
    let history: Vec<u64> = history.iter().map(|r| r.revision).collect();
    assert_eq!(history, (1..=31).rev().collect::<Vec<u64>>());
    let stale = Preconditions {
        if_match: Some(Some(vec![5])),
        if_none_match_any: false,
    };
    let edit = ProjectEdit::Change(Change::Merge(json!({ "late": true })));
    let refused = b.save_project(&tenant(), &p, edit, stale, None).await;
    assert!(refused.is_err(), "a stale If-Match is refused");
    let after = a.project(&tenant(), &p, None).await.expect("read");
    assert_eq!((after.revision, after.state.get("late")), (31, None));
}

/// After a recovery, the old attempt's heartbeat and checkpoint are refused and write
/// nothing; the new attempt writes, from the other engine too.
pub async fn a_recovered_session_fences_the_old_attempt(handles: Handles) {
    let (a, b, _) = engines(&handles).await;
    let s = session(&a, "fenced", 60_000).await;
    a.checkpoint(&tenant(), &s, 1, checkpoint(CheckpointKind::Stage, 1))
        .await
        .expect("attempt 1 writes");
    a.pause(&tenant(), &s, None).await.expect("pause");
    let recovered = b
        .recover(&tenant(), &s, RecoveryOption::Continue, false)
        .await
        .expect("recover");
    assert_eq!(recovered.session.attempt, 2);
    assert_eq!(recovered.resume_from.map(|c| c.seq), Some(1));
    let stale = a
        .checkpoint(&tenant(), &s, 1, checkpoint(CheckpointKind::Stage, 2))
        .await;
    assert!(stale.is_err(), "attempt 1 may not checkpoint: {stale:?}");
    let stale = a.heartbeat(&tenant(), &s, 1, None, None).await;
    assert!(stale.is_err(), "attempt 1 may not heartbeat: {stale:?}");
    let seqs: Vec<u64> = b
        .checkpoints(&tenant(), &s, &all())
        .await
        .expect("list")
        .items
        .iter()
        .map(|c| c.seq)
        .collect();
    assert_eq!(seqs, vec![1], "the refused write left nothing");
    let next = a
        .checkpoint(&tenant(), &s, 2, checkpoint(CheckpointKind::Stage, 3))
        .await
        .expect("attempt 2 writes");
    assert_eq!((next.seq, next.attempt), (2, 2));
}

/// Retention is applied in the write's transaction: after each write, at most
/// `checkpoint_retention` prunable checkpoints remain, and kept-for-life kinds all stay.
pub async fn pruning_happens_in_the_write(handles: Handles) {
    let (a, b, _) = engines(&handles).await;
    let s = session(&a, "pruned", 60_000).await;
    for n in 0..10 {
        let engine = if n % 2 == 0 { &a } else { &b };
        let kind = if n % 5 == 0 {
            CheckpointKind::Milestone
        } else {
            CheckpointKind::Item
        };
        engine
            .checkpoint(&tenant(), &s, 1, checkpoint(kind, n))
            .await
            .expect("write");
        let listed = a.checkpoints(&tenant(), &s, &all()).await.expect("list");
        let prunable = listed
            .items
            .iter()
            .filter(|c| c.kind == CheckpointKind::Item)
            .count();
        assert!(prunable <= 3, "{prunable} item checkpoints after write {n}");
    }
    let listed = b.checkpoints(&tenant(), &s, &all()).await.expect("list");
    let seqs: Vec<u64> = listed.items.iter().map(|c| c.seq).collect();
    // Milestones at 1 and 6 stay; items keep the newest three (8, 9, 10).
    assert_eq!(seqs, vec![1, 6, 8, 9, 10]);
}

/// A write job that fails leaves nothing behind: neither its rows nor its events.
pub async fn a_failed_write_leaves_nothing(handles: Handles) {
    let (a, _, _) = engines(&handles).await;
    a.number_events().await;
    let newest = a.newest_event().await.expect("newest event");
    let store = Arc::clone(&handles.first);
    let job: WriteJob = Box::new(|tx: &mut dyn Tx| {
        let session = lifeboat::Session::create(
            id("rolled-back"),
            NewSession {
                kind: "k".to_owned(),
                ..NewSession::default()
            },
            T0,
        )?;
        tx.insert_session(&tenant(), &session)?;
        tx.record_event(
            &tenant(),
            "session.status",
            Subject::default(),
            &json!({}),
            T0,
        )?;
        Err(Error::Internal("the job fails after writing".to_owned()))
    });
    let failed = store.write(Ack::AfterCommit, job).await;
    assert!(failed.is_err());
    let read = a.session(&tenant(), &id("rolled-back")).await;
    assert!(
        matches!(read, Err(Error::NotFound { .. })),
        "the session is not there: {read:?}"
    );
    a.number_events().await;
    assert_eq!(a.newest_event().await.expect("newest event"), newest);
}

/// Many writes at once, so that a store that commits them in groups runs them together:
/// each that fails — after writing, or on a statement the database refused — leaves
/// nothing, and each that succeeds is all there, with its event.
pub async fn failed_writes_among_many_at_once_spoil_nothing(handles: Handles) {
    let (a, _, _) = engines(&handles).await;
    a.number_events().await;
    let newest = a.newest_event().await.expect("newest event");
    session(&a, "taken", 60_000).await;
    let store = Arc::clone(&handles.first);
    let mut writes = Vec::new();
    for n in 0..60 {
        let store = Arc::clone(&store);
        writes.push(tokio::spawn(async move {
            let name = match n % 3 {
                0 => format!("kept-{n}"),
                1 => format!("failed-{n}"),
                // Already there: the database refuses the insert.
                _ => "taken".to_owned(),
            };
            let job: WriteJob = Box::new(move |tx: &mut dyn Tx| {
                let session = lifeboat::Session::create(
                    id(&name),
                    NewSession {
                        kind: "k".to_owned(),
                        ..NewSession::default()
                    },
                    T0,
                )?;
                tx.record_event(
                    &tenant(),
                    "session.status",
                    Subject::default(),
                    &json!({ "n": n }),
                    T0,
                )?;
                tx.insert_session(&tenant(), &session)?;
                if n % 3 == 1 {
                    return Err(Error::Internal("the job fails after writing".to_owned()));
                }
                Ok(Ok(Box::new(()) as Box<dyn std::any::Any + Send>))
            });
            (n, store.write(Ack::AfterCommit, job).await.is_ok())
        }));
    }
    for write in writes {
        let (n, ok) = write.await.expect("the write ran");
        assert_eq!(ok, n % 3 == 0, "write {n} answered ok = {ok}");
    }
    for n in 0..60 {
        let read = a.session(&tenant(), &id(&format!("kept-{n}"))).await;
        assert_eq!(read.is_ok(), n % 3 == 0, "session kept-{n}: {read:?}");
        let read = a.session(&tenant(), &id(&format!("failed-{n}"))).await;
        assert!(
            matches!(read, Err(Error::NotFound { .. })),
            "session failed-{n} is not there: {read:?}"
        );
    }
    a.number_events().await;
    let events = a
        .events(&tenant(), newest, &EventFilter::default(), 1_000)
        .await
        .expect("events");
    let mut numbered: Vec<u64> = events
        .iter()
        .filter_map(|event| event.data["n"].as_u64())
        .collect();
    numbered.sort_unstable();
    assert_eq!(numbered, (0..60).step_by(3).collect::<Vec<u64>>());
}

/// Writes sent at once, so that a store that commits them in groups runs them together,
/// each reading a session and changing it (the last round also reading it back): each
/// reads what every earlier write about that session changed, whether it is about that
/// session (`Store::write_about`) or about none (`Store::write`), and its own change. No
/// change is lost.
pub async fn writes_read_what_earlier_writes_changed(handles: Handles) {
    let (a, _, _) = engines(&handles).await;
    let sessions: Vec<lifeboat::Id> = (0..8).map(|n| id(&format!("read-back-{n}"))).collect();
    for s in &sessions {
        session(&a, s.as_str(), 60_000).await;
    }
    let store = Arc::clone(&handles.first);
    let mut writes = Vec::new();
    for round in 0..5 {
        for s in &sessions {
            let mark = if round == 2 {
                "any".to_owned()
            } else {
                format!("w{round}")
            };
            let (store, s) = (Arc::clone(&store), s.clone());
            writes.push(tokio::spawn(async move {
                let (t, about) = (tenant(), s.clone());
                let job: WriteJob = Box::new(move |tx: &mut dyn Tx| {
                    // Slow, so that the writes sent meanwhile queue and share batches.
                    std::thread::sleep(std::time::Duration::from_millis(5));
                    let (row, mut session) = tx.session(&t, &s)?.expect("the session");
                    let stage = session.progress.stage.take().unwrap_or_default();
                    session.progress.stage = Some(format!("{stage}|{mark}"));
                    tx.update_session(row, &session)?;
                    if round == 4 {
                        let (_, read) = tx.session(&t, &s)?.expect("the session");
                        assert_eq!(read.progress.stage, session.progress.stage, "read back");
                    }
                    Ok(Ok(Box::new(()) as Box<dyn std::any::Any + Send>))
                });
                // The third round is of writes about no one session.
                if round == 2 {
                    store.write(Ack::AfterCommit, job).await
                } else {
                    store
                        .write_about(&tenant(), &about, Ack::AfterCommit, job)
                        .await
                }
            }));
        }
    }
    for write in writes {
        write.await.expect("the write ran").expect("the write");
    }
    for s in &sessions {
        let stage = a
            .session(&tenant(), s)
            .await
            .expect("read")
            .progress
            .stage
            .unwrap_or_default();
        let mut marks: Vec<&str> = stage.split('|').filter(|m| !m.is_empty()).collect();
        marks.sort_unstable();
        assert_eq!(marks, ["any", "w0", "w1", "w3", "w4"], "{s}: {stage}");
    }
}

/// The same new session id created through both engines at once, again and again: each
/// time one creates it and the other is told it exists (409), never "retry" (on
/// PostgreSQL the two inserts meet on the unique key, and the loser runs again).
pub async fn one_new_session_raced_through_both_handles_is_created_once(handles: Handles) {
    let (a, b, _) = engines(&handles).await;
    let new = |name: &str| NewSession {
        id: Some(id(name)),
        kind: "k".to_owned(),
        ..NewSession::default()
    };
    for n in 0..16 {
        let name = format!("raced-{n}");
        let t = tenant();
        let (first, second) = tokio::join!(
            a.create_session(&t, new(&name)),
            b.create_session(&t, new(&name)),
        );
        let created = [&first, &second].iter().filter(|r| r.is_ok()).count();
        let refused = [&first, &second]
            .iter()
            .filter(|r| matches!(r, Err(Error::AlreadyExists { .. })))
            .count();
        assert_eq!(
            (created, refused),
            (1, 1),
            "{name}: one created, one told it exists: {first:?} / {second:?}"
        );
    }
}

/// Events come in commit order with increasing positions, across both engines; a filter
/// by session sees only that session's; paging by `after` misses none.
pub async fn events_come_in_commit_order(handles: Handles) {
    let (a, b, _) = engines(&handles).await;
    a.number_events().await;
    let start = a.newest_event().await.expect("newest event");
    let x = session(&a, "x", 60_000).await;
    let y = session(&b, "y", 60_000).await;
    for n in 0..6 {
        let (engine, s) = if n % 2 == 0 { (&a, &x) } else { (&b, &y) };
        engine
            .checkpoint(&tenant(), s, 1, checkpoint(CheckpointKind::Stage, n))
            .await
            .expect("write");
    }
    b.number_events().await;
    let mut seen = Vec::new();
    let mut after = start;
    loop {
        let got = b
            .events(&tenant(), after, &EventFilter::default(), 3)
            .await
            .expect("events");
        let Some(last) = got.last() else { break };
        after = last.seq;
        seen.extend(got);
    }
    let positions: Vec<i64> = seen.iter().map(|e| e.seq).collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{positions:?}");
    let kinds: Vec<&str> = seen.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds.len(),
        8,
        "two session.status and six checkpoint.created: {kinds:?}"
    );
    let markers: Vec<u64> = seen
        .iter()
        .filter(|e| e.kind == "checkpoint.created")
        .map(|e| e.data["seq"].as_u64().unwrap_or(0))
        .collect();
    assert_eq!(markers, vec![1, 1, 2, 2, 3, 3]);
    let only_x = EventFilter {
        session_id: Some(x.clone()),
        project_id: None,
    };
    let xs = a
        .events(&tenant(), start, &only_x, 100)
        .await
        .expect("events");
    assert_eq!(xs.len(), 4);
    assert!(xs.iter().all(|e| e.session_id.as_deref() == Some("x")));
    assert_eq!(
        a.newest_event().await.expect("newest"),
        *positions.last().unwrap_or(&start)
    );
}

/// One key, two engines, the same request at once: one does the write, the other gets
/// the same outcome; the key with another request is refused; one session exists.
pub async fn idempotent_outcomes_across_handles(handles: Handles) {
    let (a, b, _) = engines(&handles).await;
    let key = IdempotencyKey {
        route: "POST /api/v1/sessions".to_owned(),
        key: "k-1".to_owned(),
        fingerprint: "f-1".to_owned(),
    };
    let new = || NewSession {
        id: Some(id("once")),
        kind: "k".to_owned(),
        ..NewSession::default()
    };
    let t = tenant();
    let (first, second) = tokio::join!(
        a.create_session_with(&t, new(), Some(key.clone())),
        b.create_session_with(&t, new(), Some(key.clone())),
    );
    let (first, second) = (first.expect("first"), second.expect("second"));
    assert_eq!(
        [first.is_done(), second.is_done()]
            .iter()
            .filter(|d| **d)
            .count(),
        1,
        "exactly one did the write"
    );
    let (first, second) = (first.into_inner(), second.into_inner());
    assert_eq!(first, second, "both answer the same session");
    let again = a
        .create_session_with(&tenant(), new(), Some(key.clone()))
        .await
        .expect("a retry");
    assert!(matches!(again, Outcome::Replayed(ref s) if *s == first));
    let other = IdempotencyKey {
        fingerprint: "f-2".to_owned(),
        ..key
    };
    let reused = b.create_session_with(&tenant(), new(), Some(other)).await;
    assert!(
        matches!(reused, Err(Error::IdempotencyKeyReused(_))),
        "{reused:?}"
    );
    let listed = a
        .sessions(&tenant(), &SessionFilter::default(), &all())
        .await
        .expect("list");
    assert_eq!(listed.items.len(), 1);
}

/// A retried checkpoint answers what the first write answered — the same `seq`, hash and
/// time — from either engine, also once retention has pruned that checkpoint; it never
/// writes a second one. A retried heartbeat answers the lease the first one set.
pub async fn retried_session_writes_answer_the_first_outcome(handles: Handles) {
    let (a, b, clock) = engines(&handles).await;
    let s = session(&a, "retried", 60_000).await;
    let key = |n: u32| IdempotencyKey {
        route: "POST /api/v1/sessions/retried/checkpoints".to_owned(),
        key: format!("k-{n}"),
        fingerprint: format!("f-{n}"),
    };
    let op = |n: usize| lifeboat::SessionOp::Checkpoint {
        attempt: 1,
        checkpoint: checkpoint(CheckpointKind::Item, n),
    };
    let first = a
        .update_with(&tenant(), &s, op(0), Some(key(0)))
        .await
        .expect("write");
    assert!(first.is_done());
    let first = first.into_inner().checkpoint.expect("a checkpoint");
    let again = b
        .update_with(&tenant(), &s, op(0), Some(key(0)))
        .await
        .expect("retry");
    assert!(!again.is_done(), "a retry is a replay");
    let again = again.into_inner().checkpoint.expect("a checkpoint");
    assert_eq!(
        (again.seq, &again.sha256, again.created_at),
        (first.seq, &first.sha256, first.created_at)
    );
    assert_eq!(
        again.data, first.data,
        "still stored: answered from its row"
    );
    for n in 1..=5 {
        a.update_with(&tenant(), &s, op(n), Some(key(n as u32)))
            .await
            .expect("write");
    }
    let pruned = a
        .update_with(&tenant(), &s, op(0), Some(key(0)))
        .await
        .expect("retry")
        .into_inner()
        .checkpoint
        .expect("a checkpoint");
    assert_eq!(
        (pruned.seq, &pruned.sha256, pruned.created_at),
        (first.seq, &first.sha256, first.created_at)
    );
    let listed = b.checkpoints(&tenant(), &s, &all()).await.expect("list");
    let seqs: Vec<u64> = listed.items.iter().map(|c| c.seq).collect();
    assert_eq!(
        seqs,
        vec![4, 5, 6],
        "six writes, retention 3, no second write"
    );
    let beat = lifeboat::SessionOp::Heartbeat {
        attempt: 1,
        progress: None,
        metrics: None,
    };
    let beat_key = IdempotencyKey {
        route: "POST /api/v1/sessions/retried/heartbeat".to_owned(),
        key: "h".to_owned(),
        fingerprint: "h".to_owned(),
    };
    let lease = a
        .update_with(&tenant(), &s, beat.clone(), Some(beat_key.clone()))
        .await
        .expect("heartbeat")
        .into_inner()
        .session
        .lease_expires_at;
    clock.advance_ms(1_000);
    let replayed = b
        .update_with(&tenant(), &s, beat, Some(beat_key))
        .await
        .expect("retry")
        .into_inner()
        .session
        .lease_expires_at;
    assert_eq!(replayed, lease, "the lease the first heartbeat set");
}
