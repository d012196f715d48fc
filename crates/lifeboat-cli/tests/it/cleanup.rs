//! Cleanup removes exactly what is eligible: old finished sessions with their checkpoints
//! and assets, old deleted projects, unreferenced old files — and nothing else, not even
//! a blob an old session shared with a young one.

use std::sync::Arc;

use serde_json::json;

use crate::harness::{TestServer, manual_clock};

const DAY_MS: i64 = 24 * 3_600_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleanup_removes_exactly_what_is_eligible() {
    let clock = manual_clock();
    let server = TestServer::start_configured({
        let clock = Arc::clone(&clock);
        move |config| {
            config.clock = clock;
            config.cleanup_interval = None;
        }
    })
    .await;
    let long = json!(86_400_000);
    for id in ["old-failed", "old-cancelled", "old-completed", "keeper"] {
        server
            .session(json!({"id": id, "kind": "k", "heartbeat_timeout_ms": long}))
            .await;
    }
    for seq in 0..2 {
        server
            .checkpoint(
                "old-failed",
                json!({"attempt": 1, "kind": "item", "data": {"n": seq}}),
            )
            .await;
    }
    let shared = b"bytes both sessions uploaded".to_vec();
    server
        .send_bytes("PUT", "/sessions/keeper/assets/a.bin", &[], shared.clone())
        .await;
    server
        .send_bytes(
            "PUT",
            "/sessions/old-failed/assets/shared.bin",
            &[],
            shared.clone(),
        )
        .await;
    server
        .send_bytes(
            "PUT",
            "/sessions/old-failed/assets/own.bin",
            &[],
            b"only the old session".to_vec(),
        )
        .await;
    server
        .send_bytes(
            "PUT",
            "/sessions/keeper/assets/dropped.bin",
            &[],
            b"deleted by its owner".to_vec(),
        )
        .await;
    assert_eq!(
        server
            .send("DELETE", "/sessions/keeper/assets/dropped.bin", &[], None)
            .await
            .status,
        204
    );
    std::fs::write(
        server.dir.path().join("blobs/tmp/abandoned-upload"),
        b"partial",
    )
    .expect("tmp file");
    server
        .post(
            "/sessions/old-failed/fail",
            json!({"attempt": 1, "error": "boom"}),
        )
        .await;
    server
        .post("/sessions/old-cancelled/cancel", json!({}))
        .await;
    server
        .post("/sessions/old-completed/complete", json!({}))
        .await;
    server
        .call("PUT", "/projects/old-deleted", Some(json!({"state": {}})))
        .await;
    server
        .send("DELETE", "/projects/old-deleted", &[], None)
        .await;
    server
        .call("PUT", "/projects/live", Some(json!({"state": {}})))
        .await;

    clock.advance_ms(8 * DAY_MS);
    server
        .session(json!({"id": "young-failed", "kind": "k"}))
        .await;
    server
        .post(
            "/sessions/young-failed/fail",
            json!({"attempt": 1, "error": "x"}),
        )
        .await;
    server
        .call("PUT", "/projects/young-deleted", Some(json!({"state": {}})))
        .await;
    server
        .send("DELETE", "/projects/young-deleted", &[], None)
        .await;
    server
        .post("/sessions/keeper/heartbeat", json!({"attempt": 1}))
        .await;

    let expected = json!({
        "orphan_files_deleted": 3, "sessions_purged": 2, "checkpoints_pruned": 2,
        "revisions_pruned": 0, "projects_purged": 1, "idempotency_keys_expired": 0,
    });
    let (status, dry) = server.post("/admin/cleanup?dry_run=true", json!({})).await;
    assert_eq!(status, 200, "{dry}");
    for (key, value) in expected.as_object().expect("object") {
        assert_eq!(&dry[key], value, "dry run {key}: {dry}");
    }
    assert_eq!(dry["dry_run"], json!(true));
    assert_eq!(
        server.get("/sessions/old-failed").await.0,
        200,
        "a dry run changes nothing"
    );

    let (_, done) = server.post("/admin/cleanup", json!({})).await;
    for (key, value) in expected.as_object().expect("object") {
        assert_eq!(&done[key], value, "{key}: {done}");
    }
    assert!(done["bytes_freed"].as_u64().expect("bytes") > 0);
    for gone in ["old-failed", "old-cancelled"] {
        assert_eq!(
            server.get(&format!("/sessions/{gone}")).await.0,
            404,
            "{gone}"
        );
    }
    for kept in ["old-completed", "young-failed", "keeper"] {
        assert_eq!(
            server.get(&format!("/sessions/{kept}")).await.0,
            200,
            "{kept}"
        );
    }
    let (status, _, bytes) = server.get_bytes("/sessions/keeper/assets/a.bin", &[]).await;
    assert_eq!(
        (status, bytes),
        (200, shared),
        "the blob the young session shares is kept"
    );
    assert_eq!(server.get("/projects/live").await.0, 200);
    let back = server
        .send(
            "PUT",
            "/projects/young-deleted",
            &[],
            Some(("application/json", json!({"state": {}}).to_string())),
        )
        .await;
    assert_eq!(
        back.header("etag"),
        Some("\"2\""),
        "the young deleted project was kept"
    );
    let back = server
        .send(
            "PUT",
            "/projects/old-deleted",
            &[],
            Some(("application/json", json!({"state": {}}).to_string())),
        )
        .await;
    assert_eq!(
        back.header("etag"),
        Some("\"1\""),
        "the old deleted project was purged"
    );

    let (_, again) = server.post("/admin/cleanup", json!({})).await;
    assert_eq!(
        (
            again["sessions_purged"].clone(),
            again["orphan_files_deleted"].clone()
        ),
        (json!(0), json!(0))
    );
}
