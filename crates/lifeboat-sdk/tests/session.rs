//! `SessionHandle` and `resume_or_start` against a real server: each recovery option
//! hands back the right checkpoint, and a fenced worker learns it lost its lease.

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
}
