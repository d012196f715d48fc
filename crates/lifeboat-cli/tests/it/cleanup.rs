//! Cleanup removes exactly what is eligible: old finished sessions with their checkpoints
//! and assets, old deleted projects, unreferenced old files — and nothing else, not even
//! a blob an old session shared with a young one.

use std::process::Command;
use std::sync::Arc;

use serde_json::{Value, json};

use crate::harness::{Binary, TestServer, files_under, manual_clock};

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
    // A mistyped flag is refused, not taken for a real run.
    let (status, refused) = server.post("/admin/cleanup?dryrun=true", json!({})).await;
    assert_eq!(status, 400, "{refused}");
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

/// A byte changed behind the server's back is reported by `verify` (HTTP and CLI, exit 1),
/// quarantined by `--repair` (nothing deleted), and skipped by recovery.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_reports_and_repair_quarantines() {
    let server = TestServer::start_on_disk(|_| {}).await;
    server.session(json!({"id": "v", "kind": "k"})).await;
    for n in 0..3 {
        server
            .checkpoint("v", json!({"attempt": 1, "kind": "item", "data": {"n": n}}))
            .await;
    }
    server
        .send_bytes(
            "PUT",
            "/sessions/v/assets/out.bin",
            &[],
            b"rendered".to_vec(),
        )
        .await;
    let (_, clean) = server.post("/admin/verify", json!({})).await;
    assert_eq!(clean["ok"], json!(true), "{clean}");
    assert_eq!(clean["checkpoints_checked"], json!(3));
    assert_eq!(clean["assets_checked"], json!(1));

    crate::recovery::corrupt(&server, "v", 3).await;
    let blob = files_under(&server.dir.path().join("blobs/sha256"));
    std::fs::write(&blob[0], b"tampered").expect("tamper the asset");
    let (_, found) = server.post("/admin/verify", json!({})).await;
    assert_eq!(found["ok"], json!(false));
    assert_eq!(
        found["damaged_checkpoints"],
        json!([{"tenant": "default", "session_id": "v", "seq": 3}])
    );
    assert_eq!(
        found["corrupt_assets"],
        json!(["default/session/v/out.bin"])
    );
    assert_eq!(found["quarantined"], json!(0), "no repair without --repair");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_lifeboat"))
        .args([
            "verify",
            "--url",
            &server.base,
            "--token",
            crate::harness::TOKEN,
        ])
        .output()
        .expect("run lifeboat verify");
    assert_eq!(output.status.code(), Some(1), "problems exit 1");
    assert!(String::from_utf8_lossy(&output.stdout).contains("damaged checkpoint default/v seq 3"));

    let (_, repaired) = server.post("/admin/verify?repair=true", json!({})).await;
    assert_eq!(repaired["quarantined"], json!(1));
    let (_, listed) = server.get("/sessions/v/checkpoints").await;
    assert_eq!(
        listed["items"].as_array().expect("items").len(),
        3,
        "evidence is never deleted"
    );
    assert_eq!(listed["items"][2]["valid"], json!(false));
    let (_, recovery) = server.get("/sessions/v/recovery").await;
    assert_eq!(recovery["resume_from"]["seq"], json!(2));
    let (_, assets) = server.get("/sessions/v/assets").await;
    assert_eq!(assets["items"][0]["status"], json!("corrupt"));
    let (_, after) = server.post("/admin/verify", json!({})).await;
    assert!(
        after["damaged_checkpoints"]
            .as_array()
            .expect("list")
            .is_empty(),
        "quarantined ones are known"
    );
}

/// JSON over HTTP to the real binary.
async fn call(http: &reqwest::Client, base: &str, method: &str, path: &str, body: Value) -> Value {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let response = http
        .request(method, format!("{base}/api/v1{path}"))
        .bearer_auth(crate::harness::TOKEN)
        .json(&body)
        .send()
        .await
        .expect("request");
    assert!(
        response.status().is_success(),
        "{path}: {}",
        response.status()
    );
    response.json().await.unwrap_or(Value::Null)
}

async fn upload(http: &reqwest::Client, base: &str, path: &str, bytes: Vec<u8>) {
    let response = http
        .request(reqwest::Method::PUT, format!("{base}/api/v1{path}"))
        .bearer_auth(crate::harness::TOKEN)
        .body(bytes)
        .send()
        .await
        .expect("upload");
    assert!(
        response.status().is_success(),
        "{path}: {}",
        response.status()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_during_cleanup_leaves_a_consistent_store() {
    // Everything finished is eligible at once, so one cleanup has records and files to
    // remove; the process is SIGKILLed at each failpoint in turn.
    let flags = [
        "--cleanup-session-days",
        "0",
        "--cleanup-project-days",
        "0",
        "--cleanup-orphan-hours",
        "0",
        "--cleanup-interval-hours",
        "0",
    ];
    for failpoint in ["cleanup.after_records", "cleanup.after_first_file"] {
        let dir = tempfile::tempdir().expect("temp dir");
        let http = reqwest::Client::new();
        let mut server = Binary::start_at_failpoint(dir.path(), &flags, failpoint);
        let base = server.base.clone();
        let long = json!(3_600_000);
        for id in ["keeper", "gone"] {
            call(
                &http,
                &base,
                "POST",
                "/sessions",
                json!({"id": id, "kind": "k", "heartbeat_timeout_ms": long}),
            )
            .await;
            for n in 0..3 {
                call(
                    &http,
                    &base,
                    "POST",
                    &format!("/sessions/{id}/checkpoints"),
                    json!({"attempt": 1, "kind": "item", "data": {"n": n}}),
                )
                .await;
            }
        }
        let shared = b"bytes both sessions uploaded".to_vec();
        upload(
            &http,
            &base,
            "/sessions/keeper/assets/kept.bin",
            shared.clone(),
        )
        .await;
        upload(
            &http,
            &base,
            "/sessions/gone/assets/shared.bin",
            shared.clone(),
        )
        .await;
        for (n, name) in ["a.bin", "b.bin", "c.bin"].iter().enumerate() {
            upload(
                &http,
                &base,
                &format!("/sessions/gone/assets/{name}"),
                vec![n as u8; 10_000],
            )
            .await;
        }
        call(&http, &base, "POST", "/sessions/gone/cancel", json!({})).await;

        let cleanup = tokio::spawn({
            let (http, base) = (http.clone(), base.clone());
            async move {
                http.post(format!("{base}/api/v1/admin/cleanup"))
                    .bearer_auth(crate::harness::TOKEN)
                    .send()
                    .await
            }
        });
        tokio::task::spawn_blocking(move || {
            server.wait_for_failpoint();
            server.kill_9();
        })
        .await
        .expect("kill at the failpoint");
        assert!(
            cleanup.await.expect("join").is_err(),
            "{failpoint}: the cleanup never answered"
        );

        let server = Binary::start_with(dir.path(), &flags);
        let base = server.base.clone();
        // Three orphans (a, b, c) were due: the kill left all three, or two.
        let left_over = files_under(&dir.path().join("blobs")).len() - 1;
        let due = if failpoint == "cleanup.after_records" {
            3
        } else {
            2
        };
        assert_eq!(left_over, due, "{failpoint}");
        let verify = Command::new(env!("CARGO_BIN_EXE_lifeboat"))
            .args(["verify", "--url", &base, "--token", crate::harness::TOKEN])
            .output()
            .expect("run lifeboat verify");
        assert!(
            verify.status.success(),
            "{failpoint}: {}",
            String::from_utf8_lossy(&verify.stdout)
        );
        let gone = http
            .get(format!("{base}/api/v1/sessions/gone"))
            .bearer_auth(crate::harness::TOKEN)
            .send()
            .await
            .expect("request");
        assert_eq!(gone.status(), 404, "{failpoint}: the purge committed");
        let recovery = call(
            &http,
            &base,
            "GET",
            "/sessions/keeper/recovery",
            Value::Null,
        )
        .await;
        assert_eq!(recovery["resume_from"]["seq"], json!(3), "{failpoint}");
        let kept = http
            .get(format!("{base}/api/v1/sessions/keeper/assets/kept.bin"))
            .bearer_auth(crate::harness::TOKEN)
            .send()
            .await
            .expect("request");
        assert_eq!(
            kept.bytes().await.expect("body").to_vec(),
            shared,
            "{failpoint}"
        );

        // The next run finishes the job: only the keeper's blob is left.
        let report = call(&http, &base, "POST", "/admin/cleanup", Value::Null).await;
        assert_eq!(report["sessions_purged"], json!(0), "{failpoint}: {report}");
        let left = files_under(&dir.path().join("blobs"));
        assert_eq!(left.len(), 1, "{failpoint}: {left:?}");
        assert_eq!(
            report["orphan_files_deleted"],
            json!(left_over),
            "{failpoint}"
        );
    }
}

/// `GET /admin/cluster` names the server that answered, which holds the maintenance term
/// (on SQLite there is no term: the one server always runs cleanup), and is refused to a
/// tenant's admin key (it describes the whole store).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_view_names_this_server_and_who_runs_cleanup() {
    let server = TestServer::start().await;
    let (status, cluster) = server.get("/admin/cluster").await;
    assert_eq!(status, 200, "{cluster}");
    let node = cluster["node"].clone();
    let nodes = cluster["nodes"].as_array().expect("nodes");
    assert_eq!(nodes.len(), 1, "{cluster}");
    assert_eq!(nodes[0]["id"], node);
    assert_eq!(nodes[0]["alive"], json!(true));
    assert_eq!(nodes[0]["maintenance"], json!(true), "{cluster}");
    match cluster["store"].as_str() {
        Some("sqlite") => assert_eq!(cluster["maintenance"], Value::Null),
        Some("postgres") => assert_eq!(cluster["maintenance"]["holder"], node),
        other => panic!("store {other:?}"),
    }
    let (_, made) = server
        .post("/keys", json!({"tenant": "acme", "scopes": ["admin"]}))
        .await;
    let refused = server
        .http
        .get(server.url("/admin/cluster"))
        .bearer_auth(made["key"].as_str().expect("a key"))
        .send()
        .await
        .expect("GET");
    assert_eq!(refused.status(), 403);
}
