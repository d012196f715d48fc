//! Recovery over HTTP: byte-exact hashes, each recovery option, damaged checkpoints,
//! verification, max_attempts, and the stats that follow.

use serde_json::{Value, json};

use crate::harness::{TestServer, sha256_hex};

/// A `data` member with odd spacing and key order is hashed as sent and read back
/// byte for byte; `data_sha256` is checked (either case) and a mismatch uses no seq.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_is_stored_and_hashed_byte_for_byte() {
    let server = TestServer::start().await;
    server.session(json!({"id": "h1", "kind": "render"})).await;
    let data = "{ \"z\" : 1,\n\t\"a\":[ 1,2 ,{\"k\":\"\\u00e9\"}],  \"m\": 1.50 }";
    let body = format!("{{\"attempt\": 1, \"kind\": \"item\", \"data\":   {data}   }}");
    let response = server
        .http
        .post(server.url("/sessions/h1/checkpoints"))
        .bearer_auth(crate::harness::TOKEN)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 201);
    let created: Value = response.json().await.expect("json");
    assert_eq!(created["sha256"], json!(sha256_hex(data.as_bytes())));

    let text = server
        .http
        .get(server.url("/sessions/h1/checkpoints/1"))
        .bearer_auth(crate::harness::TOKEN)
        .send()
        .await
        .expect("send")
        .text()
        .await
        .expect("text");
    assert!(
        text.contains(&format!("\"data\":{data}")),
        "stored bytes come back unchanged: {text}"
    );
    let read: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(read["valid"], true);
    assert_eq!(read["sha256"], created["sha256"]);

    let upper = sha256_hex(b"[1,2]").to_uppercase();
    let seq = server
        .checkpoint(
            "h1",
            json!({"attempt": 1, "kind": "item", "data": [1, 2], "data_sha256": upper}),
        )
        .await;
    assert_eq!(seq, 2);
}

/// The hash check refuses a mismatch with 422 and stores nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_sha256_mismatch_is_refused() {
    let server = TestServer::start().await;
    server.session(json!({"id": "h2", "kind": "render"})).await;
    let good = sha256_hex(b"[1,2]");
    let bad = sha256_hex(b"something else");
    server
        .expect_problem(
            "POST",
            "/sessions/h2/checkpoints",
            Some(json!({"attempt": 1, "kind": "item", "data": [1, 2], "data_sha256": bad})),
            422,
            "hash-mismatch",
        )
        .await;
    let (_, session) = server.get("/sessions/h2").await;
    assert_eq!(session["latest_checkpoint"], Value::Null);
    let seq = server
        .checkpoint("h2", json!({"attempt": 1, "kind": "item", "data": [1, 2], "data_sha256": good.to_uppercase()}))
        .await;
    assert_eq!(seq, 1, "the refused checkpoint used no seq");
}

/// Flips the stored bytes of checkpoint `seq` of session `id`, behind the server's back
/// (in its SQLite file, or its PostgreSQL schema).
pub(crate) async fn corrupt(server: &TestServer, id: &str, seq: u64) {
    let tampered = "UPDATE checkpoints SET data = '{\"tampered\":true}' WHERE seq = $1 AND \
                    session_pk = (SELECT pk FROM sessions WHERE id = $2)";
    let seq = i64::try_from(seq).expect("a seq");
    let changed =
        match lifeboat_testkit::postgres::execute_behind(server.dir.path(), tampered, &[&seq, &id])
            .await
        {
            Some(changed) => changed,
            None => {
                let conn = rusqlite::Connection::open(server.dir.path().join("lifeboat.sqlite3"))
                    .expect("open");
                let changed = conn
                    .execute(&tampered.replace('$', "?"), rusqlite::params![seq, id])
                    .expect("update");
                u64::try_from(changed).expect("a count")
            }
        };
    assert_eq!(changed, 1);
}

/// The three options: continue from the newest good checkpoint (skipping a damaged one),
/// restart_batch from the newest good batch/stage/milestone, fresh_start only with confirm.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_recovery_option() {
    let server = TestServer::start().await;
    for id in ["c", "b", "f"] {
        server
            .session(json!({"id": id, "kind": "batch", "total_units": 30}))
            .await;
        server
            .checkpoint(
                id,
                json!({"attempt": 1, "kind": "batch", "completed_units": 0, "data": {"batch": 1}}),
            )
            .await;
        server
            .checkpoint(
                id,
                json!({"attempt": 1, "kind": "item", "completed_units": 10, "data": {"i": 10}}),
            )
            .await;
        server
            .checkpoint(
                id,
                json!({"attempt": 1, "kind": "item", "completed_units": 20, "data": {"i": 20}}),
            )
            .await;
        let (code, _) = server
            .post(
                &format!("/sessions/{id}/fail"),
                json!({"attempt": 1, "error": "GPU fell off the bus"}),
            )
            .await;
        assert_eq!(code, 200);
    }
    corrupt(&server, "c", 3).await;

    let (code, assessed) = server.get("/sessions/c/recovery").await;
    assert_eq!(code, 200);
    assert_eq!(
        assessed["resume_from"]["seq"], 2,
        "the damaged newest checkpoint is skipped: {assessed}"
    );
    assert_eq!(assessed["can_recover"], true);
    assert!(assessed["confidence"].as_f64().expect("confidence") < 1.0);
    assert_eq!(assessed["crash"]["type"], "application_error");
    let options: Vec<&str> = assessed["options"]
        .as_array()
        .expect("options")
        .iter()
        .map(|o| o["option"].as_str().expect("name"))
        .collect();
    assert_eq!(options, ["continue", "restart_batch", "fresh_start"]);
    assert_eq!(assessed["options"][2]["requires_confirmation"], true);

    let (code, recovered) = server
        .post("/sessions/c/recover", json!({"option": "continue"}))
        .await;
    assert_eq!(code, 200, "{recovered}");
    assert_eq!(recovered["resume_from"]["seq"], 2);
    assert_eq!(recovered["resume_from"]["data"], json!({"i": 10}));
    assert_eq!(recovered["session"]["attempt"], 2);
    assert_eq!(recovered["session"]["status"], "active");
    assert_eq!(recovered["session"]["progress"]["completed_units"], 10);

    let (code, recovered) = server
        .post("/sessions/b/recover", json!({"option": "restart_batch"}))
        .await;
    assert_eq!(code, 200, "{recovered}");
    assert_eq!(recovered["resume_from"]["seq"], 1);
    assert_eq!(recovered["resume_from"]["kind"], "batch");

    server
        .expect_problem(
            "POST",
            "/sessions/f/recover",
            Some(json!({"option": "fresh_start"})),
            422,
            "confirmation-required",
        )
        .await;
    let (code, recovered) = server
        .post(
            "/sessions/f/recover",
            json!({"option": "fresh_start", "confirm": true}),
        )
        .await;
    assert_eq!(code, 200, "{recovered}");
    assert_eq!(recovered["resume_from"], Value::Null);
    assert_eq!(
        recovered["session"]["progress"]["completed_units"],
        Value::Null
    );

    // Not recoverable any more: they are active.
    server
        .expect_problem(
            "POST",
            "/sessions/c/recover",
            Some(json!({"option": "continue"})),
            409,
            "not-recoverable",
        )
        .await;

    let (_, stats) = server.get("/stats").await;
    assert_eq!(
        stats["recoveries"]["by_option"],
        json!({"continue": 1, "restart_batch": 1, "fresh_start": 1})
    );
    assert_eq!(stats["recoveries"]["pending"], 3);
    server
        .post("/sessions/c/complete", json!({"attempt": 2}))
        .await;
    server
        .post(
            "/sessions/b/fail",
            json!({"attempt": 2, "error": "Cannot allocate memory"}),
        )
        .await;
    let (_, stats) = server.get("/stats").await;
    assert_eq!(stats["recoveries"]["succeeded"], 1, "{stats}");
    assert_eq!(stats["recoveries"]["failed"], 1, "{stats}");
    assert_eq!(stats["crashes"]["by_type"]["out_of_memory"], 1, "{stats}");
}

/// Verify re-hashes every checkpoint, reports the damaged one, and marks it invalid on
/// every later read; recovery never offers it; stats count it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_reports_damage() {
    let server = TestServer::start().await;
    server.session(json!({"id": "v", "kind": "render"})).await;
    for i in 0..3 {
        server
            .checkpoint(
                "v",
                json!({"attempt": 1, "kind": "stage", "stage": format!("s{i}"), "data": i}),
            )
            .await;
    }
    corrupt(&server, "v", 2).await;
    let (_, read) = server.get("/sessions/v/checkpoints/2").await;
    assert_eq!(read["valid"], false, "reads recompute the hash");
    let (code, report) = server.post("/sessions/v/verify", json!({})).await;
    assert_eq!(code, 200);
    assert_eq!(
        report["checkpoints"],
        json!({"total": 3, "valid": 2, "invalid": [2]})
    );
    assert_eq!(report["issues"].as_array().expect("issues").len(), 1);
    let (_, stats) = server.get("/stats").await;
    assert_eq!(stats["checkpoints"], json!({"total": 3, "invalid": 1}));
}

/// When checkpoints exist but none verifies, continue and restart_batch are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_to_resume_from() {
    let server = TestServer::start().await;
    server.session(json!({"id": "n", "kind": "render"})).await;
    server
        .checkpoint("n", json!({"attempt": 1, "kind": "item", "data": 1}))
        .await;
    server.post("/sessions/n/pause", json!({})).await;
    corrupt(&server, "n", 1).await;
    let (_, assessed) = server.get("/sessions/n/recovery").await;
    assert_eq!(assessed["can_recover"], false);
    assert_eq!(assessed["confidence"], 0.0);
    server
        .expect_problem(
            "POST",
            "/sessions/n/recover",
            Some(json!({"option": "continue"})),
            409,
            "cannot-recover",
        )
        .await;
    server
        .expect_problem(
            "POST",
            "/sessions/n/recover",
            Some(json!({"option": "restart_batch"})),
            409,
            "cannot-recover",
        )
        .await;

    // Continue with no checkpoints at all is allowed: the work starts over in the session.
    server
        .session(json!({"id": "empty", "kind": "render"}))
        .await;
    server.post("/sessions/empty/pause", json!({})).await;
    let (code, recovered) = server
        .post("/sessions/empty/recover", json!({"option": "continue"}))
        .await;
    assert_eq!(code, 200);
    assert_eq!(recovered["resume_from"], Value::Null);
}

/// max_attempts = 2 refuses the recovery that would make attempt 3, unless confirmed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_attempts_parks_a_crash_loop() {
    let server = TestServer::start().await;
    server
        .session(json!({"id": "loop", "kind": "render", "max_attempts": 2}))
        .await;
    server
        .post(
            "/sessions/loop/fail",
            json!({"attempt": 1, "error": "segfault"}),
        )
        .await;
    assert_eq!(
        server
            .post("/sessions/loop/recover", json!({"option": "continue"}))
            .await
            .0,
        200
    );
    server
        .post(
            "/sessions/loop/fail",
            json!({"attempt": 2, "error": "segfault"}),
        )
        .await;
    server
        .expect_problem(
            "POST",
            "/sessions/loop/recover",
            Some(json!({"option": "continue"})),
            409,
            "attempts-exhausted",
        )
        .await;
    let (code, recovered) = server
        .post(
            "/sessions/loop/recover",
            json!({"option": "continue", "confirm": true}),
        )
        .await;
    assert_eq!(code, 200);
    assert_eq!(recovered["session"]["attempt"], 3);
}

/// `GET /recovery` lists recoverable sessions only, with the SPEC's item shape, paged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_list() {
    let server = TestServer::start().await;
    for i in 0..5 {
        let id = format!("r{i}");
        server.session(json!({"id": id, "kind": "render"})).await;
        server
            .checkpoint(&id, json!({"attempt": 1, "kind": "item", "data": i}))
            .await;
        if i % 2 == 0 {
            server
                .post(
                    &format!("/sessions/{id}/fail"),
                    json!({"attempt": 1, "error": "connection reset by peer"}),
                )
                .await;
        }
    }
    let (code, page) = server.get("/recovery?limit=2").await;
    assert_eq!(code, 200);
    let items = page["items"].as_array().expect("items");
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["session"]["id"], "r4");
    for key in [
        "session",
        "last_saved_at",
        "resume_from",
        "can_recover",
        "confidence",
        "work_lost_ms",
        "crash",
        "assets",
        "missing_assets",
    ] {
        assert!(items[0].get(key).is_some(), "missing {key}: {}", items[0]);
    }
    assert_eq!(items[0]["crash"]["type"], "network");
    let cursor = page["next_cursor"].as_str().expect("cursor");
    let (_, rest) = server
        .get(&format!("/recovery?limit=2&cursor={cursor}"))
        .await;
    assert_eq!(rest["items"].as_array().expect("items").len(), 1);
    assert_eq!(rest["items"][0]["session"]["id"], "r0");
    assert_eq!(rest["next_cursor"], Value::Null);
}
