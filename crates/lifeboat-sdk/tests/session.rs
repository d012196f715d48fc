//! `SessionHandle` and `resume_or_start` against a real server: each recovery option
//! hands back the right checkpoint, a fenced worker learns it lost its lease (and can no
//! longer write the session's files), and an append conflict is never taken for success.

mod common;

use std::time::Duration;

use common::{TOKEN, server};
use lifeboat_sdk::{Checkpoint, Client, Error, NewSession, RecoveryOption, Resumed};
use serde_json::json;

fn new() -> NewSession {
    NewSession::new("batch").id("s").heartbeat_timeout_ms(1_000)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_recovery_option_resumes_from_its_point() {
    let dir = tempfile::tempdir().expect("dir");
    let client = Client::new(server(dir.path()).await, TOKEN);
    let Resumed::Started(session) = client
        .resume_or_start(new(), RecoveryOption::Continue)
        .await
        .expect("start")
    else {
        panic!("a new session starts");
    };
    for n in 1..=3 {
        session
            .checkpoint(Checkpoint::item(&json!({"n": n})).expect("item"))
            .await
            .expect("item");
    }
    let batch = session
        .checkpoint(
            Checkpoint::batch(&json!({"batch": 1}))
                .expect("batch")
                .completed_units(3),
        )
        .await
        .expect("batch");
    let newest = session
        .checkpoint(Checkpoint::item(&json!({"n": 4})).expect("item"))
        .await
        .expect("item");
    drop(session); // the worker dies: heartbeats stop

    let expectations = [
        (RecoveryOption::Continue, Some(newest), 2),
        (RecoveryOption::RestartBatch, Some(batch), 3),
        (RecoveryOption::FreshStart, None, 4),
    ];
    for (option, from, attempt) in expectations {
        match client.resume_or_start(new(), option).await.expect("resume") {
            Resumed::Recovered {
                session,
                resume_from,
                assessment,
            } => {
                assert_eq!(resume_from.map(|c| c.seq), from, "{option:?}");
                assert_eq!(session.attempt(), attempt, "{option:?}");
                assert!(assessment.options.is_some(), "the assessment comes along");
                assert!(
                    assessment.crash.is_some(),
                    "{option:?}: the crash was recorded"
                );
            }
            other => panic!("{option:?}: {other:?}"),
        }
        // Each recovered worker dies in turn; its lease runs out before the next resume.
    }
    let Resumed::Recovered { session, .. } = client
        .resume_or_start(new(), RecoveryOption::Continue)
        .await
        .expect("resume")
    else {
        panic!("recovered");
    };
    session.complete().await.expect("complete");
    assert!(matches!(
        client
            .resume_or_start(new(), RecoveryOption::Continue)
            .await
            .expect("finished"),
        Resumed::Finished(_)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_worker_learns_it_lost_the_lease() {
    let dir = tempfile::tempdir().expect("dir");
    let base = server(dir.path()).await;
    let client = Client::new(&base, TOKEN);
    let worker = client.start_session(new()).await.expect("start");
    // Heartbeats keep the lease: well past the timeout, it still holds.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert!(!worker.is_lease_lost());
    worker
        .checkpoint(Checkpoint::item(&json!({"n": 1})).expect("item"))
        .await
        .expect("checkpoint");

    // An operator pauses the session and another worker recovers it (attempt 2).
    let http = reqwest::Client::new();
    for (path, body) in [
        ("pause", json!({})),
        ("recover", json!({"option": "continue"})),
    ] {
        let response = http
            .post(format!("{base}/api/v1/sessions/s/{path}"))
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
            .await
            .expect("request");
        assert!(
            response.status().is_success(),
            "{path}: {}",
            response.status()
        );
    }
    tokio::time::timeout(Duration::from_secs(2), worker.lease_lost())
        .await
        .expect("the old worker learns within a heartbeat");
    let refused = worker
        .checkpoint(Checkpoint::item(&json!({"n": 2})).expect("item"))
        .await;
    assert!(matches!(refused, Err(Error::LeaseLost(_))), "{refused:?}");
    // Its asset writes are fenced too (SPEC §5 r2): nothing of the new attempt's changes.
    let refused = worker.upload("out.bin", b"stale").await;
    assert!(matches!(refused, Err(Error::LeaseLost(_))), "{refused:?}");
    let refused = worker.append("take.raw", 0, b"stale").await;
    assert!(matches!(refused, Err(Error::LeaseLost(_))), "{refused:?}");
    let assets = common::get(&base, "/sessions/s/assets").await;
    assert_eq!(assets["items"], json!([]), "{assets}");
}

/// A 409 whose `current_size` happens to equal `offset + len` is not proof that the chunk
/// is there: the server sends it exactly when the stored bytes differ. `append` returns
/// the conflict; a true retry (the same bytes again) is answered as done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_whose_bytes_differ_is_an_error_not_a_success() {
    let dir = tempfile::tempdir().expect("dir");
    let base = server(dir.path()).await;
    let client = Client::new(&base, TOKEN);
    let worker = client.start_session(new()).await.expect("start");
    assert_eq!(
        worker.append("take.raw", 0, b"AAAA").await.expect("first"),
        4
    );
    assert_eq!(
        worker.append("take.raw", 4, b"BBBB").await.expect("second"),
        8
    );
    // A retry of the second chunk: the same bytes at the same offset.
    assert_eq!(
        worker.append("take.raw", 4, b"BBBB").await.expect("retry"),
        8
    );
    // Other bytes at that offset: the stored chunk differs, so this is a conflict.
    let conflict = worker.append("take.raw", 4, b"CCCC").await;
    assert!(
        matches!(&conflict, Err(Error::Problem { status: 409, slug, .. }) if slug == "offset-mismatch"),
        "{conflict:?}"
    );
    let stored = reqwest::Client::new()
        .get(format!("{base}/api/v1/sessions/s/assets/take.raw"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("read")
        .bytes()
        .await
        .expect("bytes");
    assert_eq!(stored.as_ref(), b"AAAABBBB");
}
