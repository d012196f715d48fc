//! Every row of the lifecycle table (SPEC §2) over HTTP, fencing, lease expiry within 1 s,
//! restart grace, stalls, retention.

use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{TestServer, manual_clock, millis, now_ms};

async fn status_of(server: &TestServer, id: &str) -> Value {
    let (code, session) = server.get(&format!("/sessions/{id}")).await;
    assert_eq!(code, 200, "{session}");
    session
}

/// Puts a fresh session `id` into `status` through the API.
async fn session_in(server: &TestServer, id: &str, status: &str) {
    server
        .session(json!({"id": id, "kind": "batch", "heartbeat_timeout_ms": 1000}))
        .await;
    let path = |verb: &str| format!("/sessions/{id}/{verb}");
    match status {
        "active" => {}
        "paused" => assert_eq!(
            server.post(&path("pause"), json!({"attempt": 1})).await.0,
            200
        ),
        "failed" => assert_eq!(
            server
                .post(&path("fail"), json!({"attempt": 1, "error": "boom"}))
                .await
                .0,
            200
        ),
        "completed" => assert_eq!(
            server
                .post(&path("complete"), json!({"attempt": 1}))
                .await
                .0,
            200
        ),
        "cancelled" => assert_eq!(server.post(&path("cancel"), json!({})).await.0, 200),
        // The caller waits out the 1 s lease once for all such sessions.
        "incomplete" => return,
        other => panic!("no recipe for {other}"),
    }
    assert_eq!(status_of(server, id).await["status"], json!(status));
}

/// Each (event, from) pair of the table is allowed or refused with 409, and lands in the
/// state the table names. Refusals leave the session unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_table_over_http() {
    let server = TestServer::start().await;
    let events: &[(&str, Value)] = &[
        ("heartbeat", json!({"attempt": 1})),
        ("checkpoints", json!({"attempt": 1, "kind": "item"})),
        ("pause", json!({"attempt": 1})),
        (
            "fail",
            json!({"attempt": 1, "error": "disk quota exceeded"}),
        ),
        ("recover", json!({"option": "continue"})),
        ("complete", json!({"attempt": 1})),
        ("cancel", json!({"attempt": 1})),
    ];
    let allowed = |event: &str, from: &str| -> Option<&'static str> {
        match (event, from) {
            ("heartbeat" | "checkpoints", "active") => Some("active"),
            ("pause", "active") => Some("paused"),
            ("fail", "active" | "paused") => Some("failed"),
            ("recover", "incomplete" | "failed" | "paused") => Some("active"),
            ("complete", "active" | "paused" | "incomplete" | "failed") => Some("completed"),
            ("cancel", "active" | "paused" | "incomplete" | "failed") => Some("cancelled"),
            _ => None,
        }
    };
    let states = [
        "active",
        "paused",
        "incomplete",
        "failed",
        "completed",
        "cancelled",
    ];
    let mut rows = 0;
    for from in states {
        // One session per event, all set up before any event is sent.
        let ids: Vec<String> = (0..events.len()).map(|i| format!("{from}-{i}")).collect();
        for id in &ids {
            session_in(&server, id, from).await;
        }
        if from == "incomplete" {
            tokio::time::sleep(Duration::from_millis(1_100)).await;
        }
        for ((event, body), id) in events.iter().zip(&ids) {
            let before = status_of(&server, id).await;
            let (code, answer) = server
                .post(&format!("/sessions/{id}/{event}"), body.clone())
                .await;
            let after = status_of(&server, id).await;
            match allowed(event, from) {
                Some(to) => {
                    assert!(
                        code == 200 || code == 201,
                        "{event} from {from}: {code} {answer}"
                    );
                    assert_eq!(after["status"], json!(to), "{event} from {from}");
                }
                None => {
                    assert_eq!(code, 409, "{event} from {from} must be refused: {answer}");
                    assert_eq!(after["status"], before["status"], "{event} from {from}");
                    assert_eq!(after["attempt"], before["attempt"], "{event} from {from}");
                    assert_eq!(after["latest_checkpoint"], before["latest_checkpoint"]);
                }
            }
            rows += 1;
        }
    }
    assert_eq!(rows, 42);
    // Create is the first row of the table: active, attempt 1, lease = now + timeout.
    let created = server.session(json!({"kind": "render"})).await;
    assert_eq!(created["status"], "active");
    assert_eq!(created["attempt"], 1);
    let lease = millis(&created["lease_expires_at"]) - millis(&created["created_at"]);
    assert_eq!(lease, 30_000);
    // Paused sessions hold no lease; recovery increments the attempt.
    let (_, paused) = server
        .post(
            &format!("/sessions/{}/pause", created["id"].as_str().expect("id")),
            json!({}),
        )
        .await;
    assert_eq!(paused["lease_expires_at"], Value::Null);
}

/// A write naming another attempt is refused with 409 attempt-mismatch and changes
/// nothing, on every write endpoint; the recovered attempt's work is never overwritten.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fencing_by_attempt() {
    let server = TestServer::start().await;
    server.session(json!({"id": "f1", "kind": "render"})).await;
    assert_eq!(
        server
            .checkpoint(
                "f1",
                json!({"attempt": 1, "kind": "item", "data": {"n": 1}})
            )
            .await,
        1
    );
    server
        .post("/sessions/f1/pause", json!({"attempt": 1}))
        .await;
    let (code, _) = server
        .post("/sessions/f1/recover", json!({"option": "continue"}))
        .await;
    assert_eq!(code, 200);
    let before = status_of(&server, "f1").await;
    assert_eq!(before["attempt"], 2);
    for (verb, body) in [
        (
            "heartbeat",
            json!({"attempt": 1, "progress": {"completed_units": 99}}),
        ),
        (
            "checkpoints",
            json!({"attempt": 1, "kind": "item", "data": {"stale": true}}),
        ),
        ("pause", json!({"attempt": 1})),
        ("fail", json!({"attempt": 1, "error": "stale worker"})),
        ("complete", json!({"attempt": 1})),
        ("cancel", json!({"attempt": 3})),
    ] {
        server
            .expect_problem(
                "POST",
                &format!("/sessions/f1/{verb}"),
                Some(body),
                409,
                "attempt-mismatch",
            )
            .await;
    }
    let after = status_of(&server, "f1").await;
    assert_eq!(after["status"], "active");
    assert_eq!(after["progress"], before["progress"]);
    assert_eq!(after["latest_checkpoint"], before["latest_checkpoint"]);
    // The refused checkpoint used no seq.
    assert_eq!(
        server
            .checkpoint("f1", json!({"attempt": 2, "kind": "item"}))
            .await,
        2
    );
}

/// With a 1 s lease and no heartbeat, a read right after the lease passes already shows
/// `incomplete` with a `client_lost` crash; the sweeper persists it (stats count it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_expiry_is_visible_within_one_second() {
    let server = TestServer::start().await;
    let created = server
        .session(json!({"id": "e1", "kind": "upload", "heartbeat_timeout_ms": 1000}))
        .await;
    let lease = millis(&created["lease_expires_at"]);
    // A heartbeat extends the lease.
    let (code, ack) = server
        .post("/sessions/e1/heartbeat", json!({"attempt": 1}))
        .await;
    assert_eq!(code, 200);
    assert_eq!(ack["status"], "active");
    let lease = lease.max(millis(&ack["lease_expires_at"]));
    let wait = lease - now_ms().as_millis() + 20;
    tokio::time::sleep(Duration::from_millis(
        u64::try_from(wait.max(0)).expect("positive"),
    ))
    .await;
    let seen = status_of(&server, "e1").await;
    assert_eq!(
        seen["status"],
        "incomplete",
        "read {} ms after the lease",
        now_ms().as_millis() - lease
    );
    assert_eq!(seen["crash"]["type"], "client_lost");
    assert_eq!(seen["lease_expires_at"], Value::Null);
    let (_, list) = server.get("/sessions?status=active").await;
    assert!(list["items"].as_array().expect("items").is_empty());
    // The sweeper (every 100 ms here) persists the crash the read observed; on a busy
    // machine that can take a few of its rounds.
    let mut stats = Value::Null;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        stats = server.get("/stats").await.1;
        if stats["crashes"]["by_type"]["client_lost"] == 1 {
            break;
        }
    }
    assert_eq!(stats["crashes"]["by_type"]["client_lost"], 1, "{stats}");
    assert_eq!(stats["sessions"]["incomplete"], 1);
    // A late heartbeat from the expired attempt is refused and refines the crash type.
    server
        .expect_problem(
            "POST",
            "/sessions/e1/heartbeat",
            Some(json!({"attempt": 1})),
            409,
            "lease-expired",
        )
        .await;
    assert_eq!(status_of(&server, "e1").await["crash"]["type"], "network");
    let (_, stats) = server.get("/stats").await;
    assert_eq!(stats["crashes"]["by_type"]["network"], 1, "{stats}");
}

/// After a restart, active sessions get one full timeout from the restart; one whose lease
/// ran out while the server was down and that sends nothing expires as `server_restart`,
/// while one whose worker heartbeats during the grace carries on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_grace() {
    let clock = manual_clock();
    let server = TestServer::start_in(
        std::sync::Arc::new(tempfile::tempdir().expect("dir")),
        clock.clone(),
    )
    .await;
    server
        .session(json!({"id": "quiet", "kind": "render", "heartbeat_timeout_ms": 10000}))
        .await;
    server
        .session(json!({"id": "alive", "kind": "render", "heartbeat_timeout_ms": 10000}))
        .await;
    server
        .session(json!({"id": "long", "kind": "render", "heartbeat_timeout_ms": 600000}))
        .await;
    let dir = server.stop().await;

    // Down for 60 s: the 10 s leases ran out meanwhile, the 10 min one did not.
    clock.advance_ms(60_000);
    let restarted_at = clock.now_ms();
    let server = TestServer::start_in(dir, clock.clone()).await;
    let quiet = status_of(&server, "quiet").await;
    assert_eq!(quiet["status"], "active", "{quiet}");
    assert_eq!(millis(&quiet["lease_expires_at"]), restarted_at + 10_000);
    let long = status_of(&server, "long").await;
    assert!(
        millis(&long["lease_expires_at"]) > restarted_at + 500_000,
        "the grace never shortens a lease"
    );

    clock.advance_ms(5_000);
    let (code, _) = server
        .post("/sessions/alive/heartbeat", json!({"attempt": 1}))
        .await;
    assert_eq!(
        code, 200,
        "a worker that reconnects within the grace keeps its session"
    );
    // A heartbeat that only extends a lease is acknowledged before its commit (see
    // docs/durability.md); a write answered after its commit orders the clock jump
    // below after it.
    server.post("/admin/sweep", json!({})).await;

    clock.advance_ms(5_000);
    let quiet = status_of(&server, "quiet").await;
    assert_eq!(quiet["status"], "incomplete");
    assert_eq!(quiet["crash"]["type"], "server_restart");
    assert_eq!(status_of(&server, "alive").await["status"], "active");
    // The background sweeper (every 100 ms here) may have persisted it already; either
    // way exactly one crash is recorded, and only once.
    let (code, swept) = server.post("/admin/sweep", json!({})).await;
    assert_eq!(code, 200);
    assert!(
        swept["timed_out"].as_u64().is_some_and(|n| n <= 1),
        "{swept}"
    );
    let (_, stats) = server.get("/stats").await;
    assert_eq!(stats["crashes"]["by_type"]["server_restart"], 1, "{stats}");
    assert_eq!(stats["crashes"]["total"], 1, "{stats}");
}

/// A session whose heartbeats keep coming but whose progress does not move is flagged
/// `stalled` (and stays active); moving progress clears the flag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stall_detection() {
    let clock = manual_clock();
    let server = TestServer::start_in(
        std::sync::Arc::new(tempfile::tempdir().expect("dir")),
        clock.clone(),
    )
    .await;
    server
        .session(json!({"id": "s1", "kind": "batch", "stall_timeout_ms": 2000, "heartbeat_timeout_ms": 60000}))
        .await;
    for _ in 0..3 {
        clock.advance_ms(1_000);
        let (code, _) = server
            .post(
                "/sessions/s1/heartbeat",
                json!({"attempt": 1, "progress": {"percent": 10}}),
            )
            .await;
        assert_eq!(code, 200);
    }
    let seen = status_of(&server, "s1").await;
    assert_eq!(seen["status"], "active");
    assert_eq!(seen["stalled"], true, "{seen}");
    server
        .post(
            "/sessions/s1/heartbeat",
            json!({"attempt": 1, "progress": {"percent": 11}}),
        )
        .await;
    let moved = status_of(&server, "s1").await;
    assert_eq!(moved["stalled"], false);

    // Seen late, a stall is dated when it began: 2 s after progress last moved.
    clock.advance_ms(2_500);
    let seen = status_of(&server, "s1").await;
    assert_eq!(seen["stalled"], true, "{seen}");
    assert_eq!(
        millis(&seen["updated_at"]),
        millis(&moved["updated_at"]) + 2_000,
        "{seen}"
    );
}

/// Retention keeps the newest `checkpoint_retention` item/batch/manual/emergency
/// checkpoints and every stage and milestone; seqs are never reused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_prunes_in_the_write() {
    let server = TestServer::start().await;
    server
        .session(json!({"id": "r1", "kind": "batch", "checkpoint_retention": 2}))
        .await;
    let kinds = [
        "item",
        "stage",
        "batch",
        "item",
        "milestone",
        "manual",
        "emergency",
        "item",
    ];
    for (i, kind) in kinds.iter().enumerate() {
        let seq = server
            .checkpoint("r1", json!({"attempt": 1, "kind": kind, "data": i}))
            .await;
        assert_eq!(seq, i as u64 + 1);
    }
    let (_, list) = server.get("/sessions/r1/checkpoints").await;
    let kept: Vec<u64> = list["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|c| c["seq"].as_u64().expect("seq"))
        .collect();
    assert_eq!(
        kept,
        vec![2, 5, 7, 8],
        "stage 2 and milestone 5 kept for life; the two newest others"
    );
    server
        .expect_problem("GET", "/sessions/r1/checkpoints/1", None, 404, "not-found")
        .await;
    let (code, latest) = server.get("/sessions/r1/checkpoints/latest").await;
    assert_eq!(code, 200);
    assert_eq!(latest["seq"], 8);
    // Pagination over what is kept.
    let (_, page1) = server.get("/sessions/r1/checkpoints?limit=3").await;
    assert_eq!(page1["items"].as_array().expect("items").len(), 3);
    let cursor = page1["next_cursor"].as_str().expect("a next page");
    let (_, page2) = server
        .get(&format!("/sessions/r1/checkpoints?limit=3&cursor={cursor}"))
        .await;
    assert_eq!(page2["items"][0]["seq"], 8);
    assert_eq!(page2["next_cursor"], Value::Null);
}
