//! Asset bytes in an S3-compatible bucket (`--blob-store s3://…`), against moto's server:
//! multipart uploads and appended chunks read back whole and by `Range`, servers with data
//! directories of their own sharing one bucket, damage found, cleanup of unnamed files and
//! of the multipart uploads a killed server left behind.

use std::time::Duration;

use lifeboat_testkit::s3::Moto;
use serde_json::json;
use sha2::Digest;

use crate::harness::{Binary, TestServer, files_under, sha256_hex};

/// `len` bytes that never repeat within a test (SHA-256 blocks of a seed and a counter).
fn bytes(seed: u8, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 32);
    let mut block = 0u64;
    while out.len() < len {
        let mut hasher = sha2::Sha256::new();
        hasher.update([seed]);
        hasher.update(block.to_le_bytes());
        out.extend_from_slice(&hasher.finalize());
        block += 1;
    }
    out.truncate(len);
    out
}

/// A server whose asset bytes go to `url` in `moto` (its store as the run chooses).
async fn in_bucket(moto: &Moto, url: &str, database_url: Option<String>) -> TestServer {
    let (url, options) = (url.to_owned(), moto.options());
    TestServer::start_configured(move |config| {
        config.blob_store = Some(url);
        config.blob_store_options = options;
        if database_url.is_some() {
            config.database_url = database_url;
        }
    })
    .await
}

/// The objects under `url`'s prefix.
async fn objects(moto: &Moto, url: &str) -> Vec<lifeboat_testkit::s3::Listed> {
    let prefix = url
        .trim_start_matches("s3://")
        .split_once('/')
        .map_or("", |(_, p)| p);
    moto.list(&format!("{prefix}/")).await
}

/// The key of the object under `url` whose bytes are `content`.
async fn object_holding(moto: &Moto, url: &str, content: &[u8]) -> String {
    for object in objects(moto, url).await {
        if object.size == content.len() as u64 && moto.get(&object.key).await == content {
            return object.key;
        }
    }
    panic!(
        "no object holds those {} bytes: {:?}",
        content.len(),
        objects(moto, url).await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_and_appends_live_in_the_bucket_and_read_back_by_range() {
    let moto = Moto::shared();
    let url = moto.fresh_url();
    let server = in_bucket(moto, &url, None).await;
    server.session(json!({"id": "s", "kind": "render"})).await;

    // 20 MiB: a multipart upload of four 5 MiB parts.
    let big = bytes(1, 20 << 20);
    let reply = server
        .send_bytes("PUT", "/sessions/s/assets/big.bin", &[], big.clone())
        .await;
    assert_eq!(reply.status, 201, "{:?}", reply.body);
    assert_eq!(reply.body["sha256"], json!(sha256_hex(&big)));
    let (status, _, read) = server.get_bytes("/sessions/s/assets/big.bin", &[]).await;
    assert_eq!(status, 200);
    assert!(read == big, "the upload read back differs");
    let boundary = 5 << 20;
    let (status, headers, part) = server
        .get_bytes(
            "/sessions/s/assets/big.bin",
            &[(
                "range",
                &format!("bytes={}-{}", boundary - 100, boundary + 99),
            )],
        )
        .await;
    assert_eq!(status, 206);
    assert_eq!(part, big[boundary - 100..boundary + 100]);
    assert_eq!(
        headers["content-range"],
        format!("bytes {}-{}/{}", boundary - 100, boundary + 99, big.len())
    );

    // Appends: one object per chunk; a retried chunk is a no-op, a different one refused.
    let chunks: Vec<Vec<u8>> = (0..5).map(|i| bytes(10 + i, 1_000)).collect();
    let mut offset = 0;
    for chunk in &chunks {
        let reply = server
            .send_bytes(
                "POST",
                &format!("/sessions/s/assets/rec.raw?offset={offset}"),
                &[],
                chunk.clone(),
            )
            .await;
        let made = if offset == 0 { 201 } else { 200 };
        assert_eq!(reply.status, made, "{:?}", reply.body);
        offset += chunk.len();
        if offset == 3_000 {
            server
                .checkpoint(
                    "s",
                    json!({"attempt": 1, "kind": "stage", "stage": "three", "assets": ["rec.raw"]}),
                )
                .await;
        }
    }
    let retried = server
        .send_bytes(
            "POST",
            "/sessions/s/assets/rec.raw?offset=2000",
            &[],
            chunks[2].clone(),
        )
        .await;
    assert_eq!(
        (retried.status, retried.body["size"].clone()),
        (200, json!(5_000))
    );
    let other = server
        .send_bytes(
            "POST",
            "/sessions/s/assets/rec.raw?offset=2000",
            &[],
            chunks[0].clone(),
        )
        .await;
    assert_eq!(other.status, 409, "{:?}", other.body);
    let all: Vec<u8> = chunks.concat();
    let (_, _, read) = server.get_bytes("/sessions/s/assets/rec.raw", &[]).await;
    assert_eq!(read, all);
    let (status, _, across) = server
        .get_bytes(
            "/sessions/s/assets/rec.raw",
            &[("range", "bytes=1500-3499")],
        )
        .await;
    assert_eq!((status, across), (206, all[1_500..3_500].to_vec()));
    // The checkpoint's version is the first 3,000 bytes, whatever came after.
    let (status, _, pinned) = server
        .get_bytes("/sessions/s/checkpoints/1/assets/rec.raw", &[])
        .await;
    assert_eq!((status, pinned), (200, all[..3_000].to_vec()));

    // Every byte is in the bucket: none under the data directory, no upload left open.
    let stored = objects(moto, &url).await;
    assert_eq!(stored.len(), 1 + chunks.len(), "{stored:?}");
    assert!(
        stored.iter().all(|o| o.key.contains("/files/")),
        "{stored:?}"
    );
    let dir = server.dir.path().join("blobs");
    let local: Vec<_> = files_under(&dir)
        .into_iter()
        .filter(|path| !path.starts_with(dir.join("tmp")))
        .collect();
    assert!(local.is_empty(), "asset files on local disk: {local:?}");
    let (_, verified) = server.post("/sessions/s/verify", json!({})).await;
    assert_eq!(verified["assets"]["ok"], json!(2), "{verified}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_with_data_directories_of_their_own_share_one_bucket() {
    let moto = Moto::shared();
    let url = moto.fresh_url();
    let database = lifeboat_testkit::postgres::fresh_schema().await.url;
    let a = in_bucket(moto, &url, Some(database.clone())).await;
    let b = in_bucket(moto, &url, Some(database)).await;
    assert_ne!(a.dir.path(), b.dir.path());
    a.session(json!({"id": "s", "kind": "render"})).await;

    let frame = bytes(2, 100_000);
    let reply = a
        .send_bytes("PUT", "/sessions/s/assets/frame.png", &[], frame.clone())
        .await;
    assert_eq!(reply.status, 201);
    let (status, _, read) = b.get_bytes("/sessions/s/assets/frame.png", &[]).await;
    assert_eq!((status, read == frame), (200, true));

    // Two servers race an append at each offset: one wins, and its bytes are kept.
    let mut kept = Vec::new();
    for round in 0..12u8 {
        let offset = kept.len();
        let path = format!("/sessions/s/assets/take.raw?offset={offset}");
        let (x, y) = (bytes(100 + round, 4_096), bytes(200 - round, 4_096));
        let (rx, ry) = tokio::join!(
            a.send_bytes("POST", &path, &[], x.clone()),
            b.send_bytes("POST", &path, &[], y.clone()),
        );
        // The first append makes the asset: 201.
        let won = if offset == 0 { 201 } else { 200 };
        let winner = match (rx.status, ry.status) {
            (status, 409) if status == won => x,
            (409, status) if status == won => y,
            other => panic!("round {round}: one winner expected, got {other:?}"),
        };
        kept.extend(winner);
        for server in [&a, &b] {
            let (_, _, read) = server.get_bytes("/sessions/s/assets/take.raw", &[]).await;
            assert!(
                read == kept,
                "round {round}: the file differs from the winners' chunks"
            );
        }
    }
    let (_, asset) = b.get("/sessions/s/assets").await;
    let take = asset["items"]
        .as_array()
        .and_then(|items| items.iter().find(|i| i["name"] == json!("take.raw")))
        .cloned()
        .expect("take.raw listed");
    assert_eq!(take["sha256"], json!(sha256_hex(&kept)));
    let (_, verified) = a.post("/sessions/s/verify", json!({})).await;
    assert_eq!(verified["assets"]["ok"], json!(2), "{verified}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_and_verify_find_objects_gone_or_changed_behind_the_servers_back() {
    let moto = Moto::shared();
    let url = moto.fresh_url();
    let server = in_bucket(moto, &url, None).await;
    server.session(json!({"id": "job", "kind": "render"})).await;
    let (first, second) = (bytes(3, 5_000), bytes(4, 6_000));
    for (name, content, stage) in [
        ("scene-1.mp4", &first, "scene-1"),
        ("scene-2.mp4", &second, "scene-2"),
    ] {
        let reply = server
            .send_bytes(
                "PUT",
                &format!("/sessions/job/assets/{name}"),
                &[],
                content.clone(),
            )
            .await;
        assert_eq!(reply.status, 201);
        server
            .checkpoint(
                "job",
                json!({"attempt": 1, "kind": "stage", "stage": stage, "assets": [name]}),
            )
            .await;
    }
    let (_, healthy) = server.get("/sessions/job/recovery").await;
    assert_eq!(healthy["resume_from"]["seq"], json!(2), "{healthy}");

    moto.delete(&object_holding(moto, &url, &second).await)
        .await;
    let (_, damaged) = server.get("/sessions/job/recovery").await;
    assert_eq!(damaged["resume_from"]["seq"], json!(1), "{damaged}");
    assert_eq!(damaged["missing_assets"], json!(["scene-2.mp4"]));

    let mut changed = first.clone();
    changed[0] ^= 0xff;
    moto.put(&object_holding(moto, &url, &first).await, changed)
        .await;
    let (status, verified) = server.post("/sessions/job/verify", json!({})).await;
    assert_eq!(status, 200, "{verified}");
    assert_eq!(verified["assets"]["corrupt"], json!(1), "{verified}");
    assert_eq!(verified["assets"]["missing"], json!(1), "{verified}");
    let (_, after) = server.get("/sessions/job/recovery").await;
    assert_eq!(after["can_recover"], json!(false), "{after}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleanup_deletes_unnamed_files_and_aborts_uploads_a_killed_server_left() {
    // A moto of its own: this test counts every multipart upload in it.
    let moto = Moto::start();
    let url = moto.fresh_url();
    let dir = std::sync::Arc::new(tempfile::tempdir().expect("temp dir"));
    let database = lifeboat_testkit::postgres::database_for(dir.path()).await;
    let mut flags = vec!["--blob-store", url.as_str()];
    if let Some(database) = &database {
        flags.extend(["--database-url", database.as_str()]);
    }
    let binary = Binary::start_with_env(dir.path(), &flags, &moto.env());
    let http = reqwest::Client::new();
    let created = http
        .post(format!("{}/api/v1/sessions", binary.base))
        .bearer_auth(crate::harness::TOKEN)
        .json(&json!({"id": "s", "kind": "render"}))
        .send()
        .await
        .expect("create");
    assert_eq!(created.status(), 201);

    // An upload that sends 12 MiB and then hangs: its first part is in moto when the
    // server is killed.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    let body = reqwest::Body::wrap_stream(futures_util::stream::unfold(rx, |mut rx| async {
        rx.recv().await.map(|chunk| (chunk, rx))
    }));
    let upload = tokio::spawn(
        http.put(format!("{}/api/v1/sessions/s/assets/big.bin", binary.base))
            .bearer_auth(crate::harness::TOKEN)
            .body(body)
            .send(),
    );
    for piece in 0..12u8 {
        tx.send(Ok(bytes(piece, 1 << 20))).await.expect("send");
    }
    let started = tokio::time::Instant::now();
    while moto.multipart_uploads().await == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no multipart upload started"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    binary.kill_9();
    drop(tx);
    let _ = upload.await;
    assert_eq!(moto.multipart_uploads().await, 1);

    let mut config = lifeboat::Config::new(dir.path());
    config.blob_store = Some(url.clone());
    config.blob_store_options = moto.options();
    config.database_url = database;
    config.cleanup.orphan_age_ms = 0;
    let server = TestServer::start_configured_in(dir, config).await;
    // v1 stays pinned by a checkpoint after v2 replaces it; an object no record names
    // (an upload whose record never committed) goes.
    let (v1, v2) = (bytes(20, 3_000), bytes(21, 3_000));
    let reply = server
        .send_bytes("PUT", "/sessions/s/assets/out.bin", &[], v1.clone())
        .await;
    assert_eq!(reply.status, 201);
    server
        .checkpoint(
            "s",
            json!({"attempt": 1, "kind": "stage", "stage": "one", "assets": ["out.bin"]}),
        )
        .await;
    let reply = server
        .send_bytes("PUT", "/sessions/s/assets/out.bin", &[], v2.clone())
        .await;
    assert_eq!(reply.status, 200);
    let prefix = url
        .trim_start_matches("s3://")
        .split_once('/')
        .map_or("", |(_, p)| p);
    let orphan = format!(
        "{prefix}/files/{}/0000000000000000.upload",
        uuid::Uuid::now_v7()
    );
    moto.put(&orphan, b"never recorded".to_vec()).await;
    tokio::time::sleep(Duration::from_millis(1_100)).await;

    // On PostgreSQL the killed server held the maintenance term: cleanup waits for its
    // lease to lapse (503 until then).
    let started = tokio::time::Instant::now();
    let report = loop {
        let (status, report) = server.post("/admin/cleanup", json!({})).await;
        if status == 200 {
            break report;
        }
        assert_eq!(status, 503, "{report}");
        assert!(started.elapsed() < Duration::from_secs(10), "{report}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(report["orphan_files_deleted"], json!(2), "{report}");
    assert_eq!(
        moto.multipart_uploads().await,
        0,
        "the abandoned upload was not aborted"
    );
    let left = objects(&moto, &url).await;
    assert!(left.iter().all(|o| o.key != orphan), "{left:?}");
    assert!(
        left.iter().all(|o| !o.key.contains("/multipart/")),
        "{left:?}"
    );
    object_holding(&moto, &url, &v1).await;
    object_holding(&moto, &url, &v2).await;
    let (_, _, pinned) = server
        .get_bytes("/sessions/s/checkpoints/1/assets/out.bin", &[])
        .await;
    assert_eq!(pinned, v1);
}

/// A server that did not make the last append to a file continues it from the hash state
/// the file's last chunk carries, without reading the file: the record's SHA-256 after its
/// append is that of the bytes as sent, even though an earlier chunk was changed in the
/// bucket meanwhile (a server that re-read the file would hash the changed bytes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_server_continues_a_file_from_its_last_chunk_without_reading_it() {
    let moto = Moto::shared();
    let url = moto.fresh_url();
    let database = lifeboat_testkit::postgres::fresh_schema().await.url;
    let a = in_bucket(moto, &url, Some(database.clone())).await;
    let b = in_bucket(moto, &url, Some(database)).await;
    a.session(json!({"id": "s", "kind": "record"})).await;
    let chunks: Vec<Vec<u8>> = (0..3).map(|i| bytes(40 + i, 70_000)).collect();
    for (i, chunk) in chunks.iter().enumerate().take(2) {
        let reply = a
            .send_bytes(
                "POST",
                &format!("/sessions/s/assets/take.raw?offset={}", i * 70_000),
                &[],
                chunk.clone(),
            )
            .await;
        assert_eq!(
            reply.status,
            if i == 0 { 201 } else { 200 },
            "{:?}",
            reply.body
        );
    }
    let first = object_holding(moto, &url, &chunks[0]).await;
    moto.put(&first, bytes(99, 70_000)).await;

    let reply = b
        .send_bytes(
            "POST",
            "/sessions/s/assets/take.raw?offset=140000",
            &[],
            chunks[2].clone(),
        )
        .await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(reply.body["sha256"], json!(sha256_hex(&chunks.concat())));
    // Verify reads the file and finds the changed chunk.
    let (_, verified) = b.post("/sessions/s/verify", json!({})).await;
    assert_eq!(verified["assets"]["corrupt"], json!(1), "{verified}");
}
