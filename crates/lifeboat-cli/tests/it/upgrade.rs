//! Migrations we can trust: a data directory written by an earlier release (the fixture
//! `tests/fixtures/schema-6`, never edited) opens with today's binary, migrates, passes
//! `lifeboat verify`, and reads back as it was written — with its checkpoints' asset
//! names turned into pinned versions and /metrics counting what is there.

use std::path::Path;

use serde_json::{Value, json};
use sha2::Digest;

use crate::harness::{Binary, TOKEN};

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("dir");
    for entry in std::fs::read_dir(from).expect("read fixture") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

async fn get(http: &reqwest::Client, base: &str, path: &str) -> Value {
    let response = http
        .get(format!("{base}/api/v1{path}"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("request");
    assert!(
        response.status().is_success(),
        "{path}: {}",
        response.status()
    );
    response.json().await.expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_6_data_directory_migrates_and_verifies() {
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path().join("data");
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/schema-6"),
        &data,
    );
    let server = Binary::start(&data);
    let base = server.base.clone();
    let verify = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_lifeboat"))
            .args(["verify", "--url", &base, "--token", TOKEN])
            .output()
            .expect("run verify")
    })
    .await
    .expect("verify task");
    assert_eq!(
        verify.status.code(),
        Some(0),
        "verify: {}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );

    let http = reqwest::Client::new();
    let base = &server.base;
    let project = get(&http, base, "/projects/doc-1").await;
    assert_eq!(project["revision"], json!(3));
    assert_eq!(
        project["state"],
        json!({"title": "hello", "n": 3, "extra": [1, 2]})
    );
    let first = get(&http, base, "/projects/doc-1?revision=1").await;
    assert_eq!(first["state"], json!({"title": "hello", "n": 1}));

    let render = get(&http, base, "/sessions/render-1").await;
    assert_eq!(render["attempt"], json!(2));
    assert_eq!(render["crash"]["type"], json!("network"));
    let checkpoints = get(&http, base, "/sessions/render-1/checkpoints").await;
    let sha = |bytes: &[u8]| hex::encode(sha2::Sha256::digest(bytes));
    assert_eq!(
        checkpoints["items"][0]["assets"],
        json!([{"name": "out/scene1.bin", "size": 15, "sha256": sha(b"scene one bytes")}])
    );
    assert_eq!(
        checkpoints["items"][1]["assets"],
        json!([{"name": "audio.raw", "size": 8, "sha256": sha(b"AAAABBBB")}])
    );
    for (seq, name, bytes) in [
        (1, "out/scene1.bin", &b"scene one bytes"[..]),
        (2, "audio.raw", b"AAAABBBB"),
    ] {
        let response = http
            .get(format!(
                "{base}/api/v1/sessions/render-1/checkpoints/{seq}/assets/{name}"
            ))
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("pinned");
        assert_eq!(response.status(), 200);
        assert_eq!(response.bytes().await.expect("bytes").as_ref(), bytes);
    }
    for (id, status) in [
        ("batch-1", "completed"),
        ("rec-1", "paused"),
        ("old-1", "cancelled"),
    ] {
        assert_eq!(
            get(&http, base, &format!("/sessions/{id}")).await["status"],
            json!(status)
        );
    }
    let keys = get(&http, base, "/keys").await;
    assert!(
        keys["items"]
            .as_array()
            .expect("keys")
            .iter()
            .any(|k| k["tenant"] == "acme"),
        "{keys}"
    );
    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    for line in [
        "lifeboat_sessions{status=\"active\"} 1",
        "lifeboat_sessions{status=\"paused\"} 1",
        "lifeboat_sessions{status=\"completed\"} 1",
        "lifeboat_sessions{status=\"cancelled\"} 1",
        // cover.png (7) + out/scene1.bin (15) + audio.raw (8).
        "lifeboat_asset_bytes 30",
    ] {
        assert!(metrics.contains(line), "{line} not in\n{metrics}");
    }
}
