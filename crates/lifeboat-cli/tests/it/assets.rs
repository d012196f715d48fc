//! Assets over HTTP: byte-identical round trips, ranges, appends and their retries,
//! hostile names, external files and asset roots, recovery that knows which files
//! survived, and an upload killed with SIGKILL.

use std::io::{Read, Write};
use std::time::Duration;

use rand::RngCore;
use serde_json::{Value, json};

use crate::harness::{Binary, TOKEN, TestServer, files_under, sha256_hex};

fn random_bytes(len: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; len];
    rand::rng().fill_bytes(&mut bytes);
    bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_round_trip_byte_for_byte() {
    let server = TestServer::start().await;
    server
        .session(json!({"id": "rec", "kind": "recording"}))
        .await;
    let audio = random_bytes(300_000);
    let put = server
        .send_bytes(
            "PUT",
            "/sessions/rec/assets/audio/take-1.wav",
            &[],
            audio.clone(),
        )
        .await;
    assert_eq!(put.status, 201, "{}", put.body);
    assert_eq!(put.body["sha256"], json!(sha256_hex(&audio)));
    assert_eq!(
        (put.body["size"].clone(), put.body["status"].clone()),
        (json!(300_000), json!("ok"))
    );

    let (status, headers, bytes) = server
        .get_bytes("/sessions/rec/assets/audio/take-1.wav", &[])
        .await;
    assert_eq!(status, 200);
    assert_eq!(bytes, audio, "byte-identical");
    assert_eq!(headers["content-length"], "300000");

    let (status, headers, bytes) = server
        .get_bytes(
            "/sessions/rec/assets/audio/take-1.wav",
            &[("range", "bytes=10-19")],
        )
        .await;
    assert_eq!((status, bytes.as_slice()), (206, &audio[10..20]));
    assert_eq!(headers["content-range"], "bytes 10-19/300000");
    let (status, _, bytes) = server
        .get_bytes(
            "/sessions/rec/assets/audio/take-1.wav",
            &[("range", "bytes=-5")],
        )
        .await;
    assert_eq!((status, bytes.as_slice()), (206, &audio[300_000 - 5..]));
    let (status, headers, body) = server
        .get_bytes(
            "/sessions/rec/assets/audio/take-1.wav",
            &[("range", "bytes=400000-")],
        )
        .await;
    assert_eq!(status, 416);
    assert_eq!(headers["content-range"], "bytes */300000");
    assert_eq!(headers["content-type"], "application/problem+json");
    let problem: Value = serde_json::from_slice(&body).expect("a problem");
    assert_eq!(
        problem["type"], "/problems/range-not-satisfiable",
        "{problem}"
    );
    // A range this server does not read is ignored (RFC 9110 §14.2): all the bytes.
    let etag = etag_of_take(&server).await;
    for (range, if_range) in [
        ("bytes=20-10", None),
        ("items=0-9", None),
        ("bytes=0-1,5-6", None),
        ("bytes=0-9", Some("\"not-these-bytes\"")),
    ] {
        let mut ask = vec![("range", range)];
        ask.extend(if_range.map(|tag| ("if-range", tag)));
        let (status, _, bytes) = server
            .get_bytes("/sessions/rec/assets/audio/take-1.wav", &ask)
            .await;
        assert_eq!(status, 200, "{range} {if_range:?}");
        assert_eq!(bytes, audio, "{range} {if_range:?}: all the bytes");
    }
    let (status, _, bytes) = server
        .get_bytes(
            "/sessions/rec/assets/audio/take-1.wav",
            &[("range", "bytes=0-9"), ("if-range", &etag)],
        )
        .await;
    assert_eq!((status, bytes.as_slice()), (206, &audio[..10]));

    // A wrong X-Content-SHA256 keeps nothing; the old bytes are still served.
    let other = random_bytes(1_000);
    let wrong = server
        .send_bytes(
            "PUT",
            "/sessions/rec/assets/audio/take-1.wav",
            &[("x-content-sha256", &sha256_hex(b"nope"))],
            other.clone(),
        )
        .await;
    assert_eq!((wrong.status, wrong.slug()), (422, "hash-mismatch"));
    let (_, _, bytes) = server
        .get_bytes("/sessions/rec/assets/audio/take-1.wav", &[])
        .await;
    assert_eq!(bytes, audio);
    let right = server
        .send_bytes(
            "PUT",
            "/sessions/rec/assets/audio/take-1.wav",
            &[("x-content-sha256", &sha256_hex(&other).to_uppercase())],
            other.clone(),
        )
        .await;
    assert_eq!(right.status, 200, "a replacement is 200: {}", right.body);
    assert_eq!(
        right.body["created_at"], put.body["created_at"],
        "a replacement answers the record, made when the name was first stored"
    );
    let (_, listed) = server.get("/sessions/rec/assets/").await;
    assert_eq!(
        listed["items"][0], right.body,
        "the answer is what is stored"
    );
    let malformed = server
        .send_bytes(
            "PUT",
            "/sessions/rec/assets/x",
            &[("x-content-sha256", "abc")],
            vec![1],
        )
        .await;
    assert_eq!(malformed.status, 400);

    // The same bytes under another name share one blob; both read back.
    assert_eq!(
        server
            .send_bytes("PUT", "/sessions/rec/assets/copy.wav", &[], other.clone())
            .await
            .status,
        201
    );
    let (status, listed) = server.get("/sessions/rec/assets").await;
    assert_eq!(status, 200);
    let names: Vec<&str> = listed["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|a| a["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["audio/take-1.wav", "copy.wav"]);
    assert!(
        listed["items"]
            .as_array()
            .expect("items")
            .iter()
            .all(|a| a["status"] == "ok")
    );

    assert_eq!(
        server
            .send("DELETE", "/sessions/rec/assets/copy.wav", &[], None)
            .await
            .status,
        204
    );
    server
        .expect_problem(
            "GET",
            "/sessions/rec/assets/copy.wav",
            None,
            404,
            "not-found",
        )
        .await;
    let (_, _, bytes) = server
        .get_bytes("/sessions/rec/assets/audio/take-1.wav", &[])
        .await;
    assert_eq!(
        bytes, other,
        "deleting one name leaves the shared blob for the other"
    );

    // Projects have assets too; a missing owner is 404 before any byte is stored.
    server
        .call("PUT", "/projects/deck", Some(json!({"state": {}})))
        .await;
    assert_eq!(
        server
            .send_bytes("PUT", "/projects/deck/assets/cover.png", &[], vec![7; 10])
            .await
            .status,
        201
    );
    let missing = server
        .send_bytes("PUT", "/sessions/nobody/assets/a", &[], vec![1, 2, 3])
        .await;
    assert_eq!((missing.status, missing.slug()), (404, "not-found"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_continue_and_retries_are_safe() {
    let server = TestServer::start().await;
    server
        .session(json!({"id": "rec", "kind": "recording"}))
        .await;
    let chunks: Vec<Vec<u8>> = (0..5).map(|_| random_bytes(64 * 1024)).collect();
    let mut offset = 0usize;
    let path = "/sessions/rec/assets/take.pcm";
    for chunk in &chunks {
        let reply = server
            .send_bytes(
                "POST",
                &format!("{path}?offset={offset}"),
                &[],
                chunk.clone(),
            )
            .await;
        // The first append makes the asset (SPEC §9: 201), the others extend it.
        let made = if offset == 0 { 201 } else { 200 };
        assert_eq!(reply.status, made, "{}", reply.body);
        offset += chunk.len();
        assert_eq!(reply.body["size"], json!(offset));
    }
    // A retry of an earlier chunk changes nothing.
    let retry = server
        .send_bytes(
            "POST",
            &format!("{path}?offset={}", 64 * 1024),
            &[],
            chunks[1].clone(),
        )
        .await;
    assert_eq!(
        (retry.status, retry.body["size"].clone()),
        (200, json!(offset))
    );
    // Other bytes at an old offset, or a gap, are refused with the current size.
    let clash = server
        .send_bytes("POST", &format!("{path}?offset=0"), &[], vec![0; 10])
        .await;
    assert_eq!((clash.status, clash.slug()), (409, "offset-mismatch"));
    assert_eq!(clash.body["current_size"], json!(offset));
    let gap = server
        .send_bytes(
            "POST",
            &format!("{path}?offset={}", offset + 1),
            &[],
            vec![1],
        )
        .await;
    assert_eq!(
        (gap.status, gap.body["current_size"].clone()),
        (409, json!(offset))
    );
    let overlap = server
        .send_bytes(
            "POST",
            &format!("{path}?offset={}", offset - 10),
            &[],
            vec![0; 20],
        )
        .await;
    assert_eq!(
        overlap.status, 409,
        "a chunk that runs past the end is not a retry"
    );
    assert_eq!(
        server.send_bytes("POST", path, &[], vec![1]).await.status,
        400,
        "offset is required"
    );

    let whole: Vec<u8> = chunks.concat();
    let (_, _, bytes) = server.get_bytes(path, &[]).await;
    assert_eq!(bytes, whole);
    let (_, listed) = server.get("/sessions/rec/assets").await;
    assert_eq!(listed["items"][0]["sha256"], json!(sha256_hex(&whole)));

    // Appending to an uploaded asset continues it.
    server
        .send_bytes(
            "PUT",
            "/sessions/rec/assets/log.txt",
            &[],
            b"hello ".to_vec(),
        )
        .await;
    let more = server
        .send_bytes(
            "POST",
            "/sessions/rec/assets/log.txt?offset=6",
            &[],
            b"world".to_vec(),
        )
        .await;
    assert_eq!(more.body["sha256"], json!(sha256_hex(b"hello world")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_size_limit() {
    let server = TestServer::start_configured(|config| config.max_asset_bytes = 1_000).await;
    server.session(json!({"id": "s", "kind": "k"})).await;
    let big = server
        .send_bytes("PUT", "/sessions/s/assets/big", &[], vec![0; 1_001])
        .await;
    assert_eq!((big.status, big.slug()), (413, "asset-too-large"));
    assert_eq!(
        server
            .send_bytes(
                "POST",
                "/sessions/s/assets/grow?offset=0",
                &[],
                vec![0; 900]
            )
            .await
            .status,
        201
    );
    let past = server
        .send_bytes(
            "POST",
            "/sessions/s/assets/grow?offset=900",
            &[],
            vec![0; 200],
        )
        .await;
    assert_eq!(past.status, 413);
    let (_, listed) = server.get("/sessions/s/assets").await;
    assert_eq!(
        listed["items"].as_array().expect("items").len(),
        1,
        "the refused upload left nothing"
    );
}

/// Sends one request with exactly this path (no URL normalisation) and answers the status.
fn raw_status(base: &str, method: &str, path: &str) -> u16 {
    let address = base.strip_prefix("http://").expect("http");
    let mut stream = std::net::TcpStream::connect(address).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nhost: {address}\r\nauthorization: Bearer {TOKEN}\r\n\
         content-type: application/octet-stream\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello"
    );
    stream.write_all(request.as_bytes()).expect("send");
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_names_are_refused_and_touch_nothing() {
    let server = TestServer::start().await;
    server.session(json!({"id": "s", "kind": "k"})).await;
    let hostile = [
        "..",
        ".",
        "../../../etc/passwd",
        "a/../../b",
        "a/./b",
        "%2e%2e",
        "%2e%2e/%2e%2e/etc/passwd",
        "a/%2e%2e/%2e%2e/b",
        "%2E%2E%2Fetc",
        "..%2f..%2fetc%2fpasswd",
        "/etc/passwd",
        "a//b",
        "a/",
        "a%5cb",
        "..%5c..%5cwindows",
        "a%00b",
        "a%20b",
        "%C3%A4",
        "a:b",
        "~user",
        &"x".repeat(513),
    ];
    for name in hostile {
        for method in ["PUT", "POST", "GET", "DELETE"] {
            let path = if method == "POST" {
                format!("/api/v1/sessions/s/assets/{name}?offset=0")
            } else {
                format!("/api/v1/sessions/s/assets/{name}")
            };
            let status = raw_status(&server.base, method, &path);
            assert!(
                (400..500).contains(&status),
                "{method} {name:?} answered {status}"
            );
        }
    }
    let (_, listed) = server.get("/sessions/s/assets").await;
    assert_eq!(listed["items"], json!([]), "nothing was stored");
    let blobs = server.dir.path().join("blobs");
    let stray: Vec<_> = files_under(&blobs);
    assert!(
        stray.iter().all(|p| p.starts_with(blobs.join("tmp"))),
        "{stray:?}"
    );
    assert!(!server.dir.path().join("etc").exists());
    let register = server
        .call(
            "POST",
            "/sessions/s/assets/register",
            Some(json!({"name": "../x", "path": "/etc/hostname"})),
        )
        .await;
    assert_eq!(register.0, 422);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_files_must_resolve_inside_an_asset_root() {
    let outside = tempfile::tempdir().expect("outside");
    let root = tempfile::tempdir().expect("root");
    std::fs::write(root.path().join("scene.png"), b"png bytes").expect("inside file");
    std::fs::write(outside.path().join("secret"), b"secret").expect("outside file");
    std::os::unix::fs::symlink(outside.path().join("secret"), root.path().join("link"))
        .expect("symlink");
    std::os::unix::fs::symlink(outside.path(), root.path().join("door")).expect("dir symlink");
    let root_path = root.path().to_path_buf();
    let server =
        TestServer::start_configured(move |config| config.asset_roots = vec![root_path]).await;
    server.session(json!({"id": "r", "kind": "render"})).await;
    let register = |name: &str, path: std::path::PathBuf| json!({"name": name, "path": path.to_str().expect("utf-8"), "kind": "image"});

    let (status, asset) = server
        .call(
            "POST",
            "/sessions/r/assets/register",
            Some(register("scene.png", root.path().join("scene.png"))),
        )
        .await;
    assert_eq!(status, 201, "{asset}");
    assert_eq!(asset["sha256"], json!(sha256_hex(b"png bytes")));
    assert_eq!(
        (asset["source"].clone(), asset["kind"].clone()),
        (json!("external"), json!("image"))
    );
    let (_, _, bytes) = server.get_bytes("/sessions/r/assets/scene.png", &[]).await;
    assert_eq!(bytes, b"png bytes");

    for (name, path) in [
        ("escape", outside.path().join("secret")),
        ("link", root.path().join("link")),
        ("door", root.path().join("door").join("secret")),
        (
            "dots",
            root.path()
                .join("..")
                .join(outside.path().file_name().expect("name"))
                .join("secret"),
        ),
    ] {
        let (status, problem) = server
            .call(
                "POST",
                "/sessions/r/assets/register",
                Some(register(name, path)),
            )
            .await;
        assert_eq!(
            (status, problem["type"].clone()),
            (403, json!("/problems/forbidden")),
            "{name}: {problem}"
        );
    }
    let (status, _) = server
        .call(
            "POST",
            "/sessions/r/assets/register",
            Some(register("ghost", root.path().join("ghost"))),
        )
        .await;
    assert_eq!(status, 422, "a path that does not exist");
    let (status, _) = server
        .call(
            "POST",
            "/sessions/r/assets/register",
            Some(json!({"name": "rel", "path": "scene.png"})),
        )
        .await;
    assert_eq!(status, 422, "a relative path");
    let (_, listed) = server.get("/sessions/r/assets").await;
    assert_eq!(listed["items"].as_array().expect("items").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_skips_a_checkpoint_whose_asset_is_gone() {
    let server = TestServer::start_on_disk(|_| {}).await;
    server
        .session(json!({"id": "job", "kind": "render", "heartbeat_timeout_ms": 60000}))
        .await;
    let first = random_bytes(2_000);
    let second = random_bytes(3_000);
    server
        .send_bytes("PUT", "/sessions/job/assets/scene-1.mp4", &[], first)
        .await;
    let one = server
        .checkpoint("job", json!({"attempt": 1, "kind": "stage", "stage": "scene-1", "data": {}, "assets": ["scene-1.mp4"]}))
        .await;
    server
        .send_bytes(
            "PUT",
            "/sessions/job/assets/scene-2.mp4",
            &[],
            second.clone(),
        )
        .await;
    let two = server
        .checkpoint("job", json!({"attempt": 1, "kind": "stage", "stage": "scene-2", "data": {}, "assets": ["scene-2.mp4"]}))
        .await;
    server
        .expect_problem(
            "POST",
            "/sessions/job/checkpoints",
            Some(json!({"attempt": 1, "kind": "item", "data": {}, "assets": ["nope.mp4"]})),
            422,
            "unknown-asset",
        )
        .await;
    let (_, healthy) = server.get("/sessions/job/recovery").await;
    assert_eq!(healthy["resume_from"]["seq"], json!(two));

    // The file of scene 2 disappears behind the server's back.
    let blob = server
        .dir
        .path()
        .join("blobs/sha256")
        .join(&sha256_hex(&second)[..2])
        .join(sha256_hex(&second));
    std::fs::remove_file(&blob).expect("remove the blob");
    let (_, damaged) = server.get("/sessions/job/recovery").await;
    assert_eq!(damaged["resume_from"]["seq"], json!(one), "{damaged}");
    assert_eq!(damaged["missing_assets"], json!(["scene-2.mp4"]));
    assert_eq!(
        damaged["assets"],
        json!({"total": 2, "ok": 1, "missing": 1, "corrupt": 0})
    );
    assert!(damaged["confidence"].as_f64().expect("confidence") < 1.0);

    let (_, verified) = server.post("/sessions/job/verify", json!({})).await;
    assert_eq!(verified["assets"]["missing"], json!(1), "{verified}");
    let (_, listed) = server.get("/sessions/job/assets").await;
    let statuses: Vec<&Value> = listed["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|a| &a["status"])
        .collect();
    assert_eq!(statuses, [&json!("ok"), &json!("missing")]);
    let (_, stats) = server.get("/stats").await;
    assert_eq!(
        stats["assets"],
        json!({"total": 2, "ok": 1, "missing": 1, "corrupt": 0})
    );

    server.post("/sessions/job/pause", json!({})).await;
    let (status, recovered) = server
        .post("/sessions/job/recover", json!({"option": "continue"}))
        .await;
    assert_eq!(status, 200, "{recovered}");
    assert_eq!(recovered["resume_from"]["seq"], json!(one));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_killed_with_sigkill_leaves_nothing_ok_and_the_retry_completes() {
    let dir = tempfile::tempdir().expect("dir");
    let server = Binary::start(dir.path());
    let http = reqwest::Client::new();
    let api = format!("{}/api/v1", server.base);
    let created = http
        .post(format!("{api}/sessions"))
        .bearer_auth(TOKEN)
        .json(&json!({"id": "up", "kind": "upload"}))
        .send()
        .await
        .expect("create");
    assert_eq!(created.status(), 201);
    let bytes = random_bytes(4 * 1024 * 1024);

    // Half the body, then SIGKILL while the server waits for the rest.
    let address = server
        .base
        .strip_prefix("http://")
        .expect("http")
        .to_owned();
    let mut stream = std::net::TcpStream::connect(&address).expect("connect");
    let head = format!(
        "PUT /api/v1/sessions/up/assets/big.bin HTTP/1.1\r\nhost: {address}\r\nauthorization: Bearer {TOKEN}\r\n\
         content-length: {}\r\n\r\n",
        bytes.len()
    );
    stream.write_all(head.as_bytes()).expect("head");
    stream.write_all(&bytes[..bytes.len() / 2]).expect("half");
    std::thread::sleep(Duration::from_millis(300));
    server.kill_9();
    drop(stream);

    let server = Binary::start(dir.path());
    let api = format!("{}/api/v1", server.base);
    let listed: Value = http
        .get(format!("{api}/sessions/up/assets"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    assert_eq!(
        listed["items"],
        json!([]),
        "no asset, let alone one reported ok with partial bytes"
    );

    let retry = http
        .put(format!("{api}/sessions/up/assets/big.bin"))
        .bearer_auth(TOKEN)
        .header("x-content-sha256", sha256_hex(&bytes))
        .body(bytes.clone())
        .send()
        .await
        .expect("retry");
    assert_eq!(retry.status(), 201);
    let read = http
        .get(format!("{api}/sessions/up/assets/big.bin"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("get")
        .bytes()
        .await
        .expect("bytes");
    assert!(
        read.as_ref() == bytes.as_slice(),
        "the retry stored every byte"
    );
}

/// A slow upload that keeps sending is never cut; one that stalls is abandoned (408).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_uploads_live_and_stalled_ones_time_out() {
    let server = TestServer::start_configured(|config| {
        config.upload_idle_timeout = Duration::from_millis(1_500);
    })
    .await;
    server.session(json!({"id": "s", "kind": "k"})).await;
    let address = server
        .base
        .strip_prefix("http://")
        .expect("http")
        .to_owned();
    let upload = |name: &str, pause_after: usize, pause: Duration| {
        let address = address.clone();
        let name = name.to_owned();
        std::thread::spawn(move || {
            let mut stream = std::net::TcpStream::connect(&address).expect("connect");
            let head = format!(
                "PUT /api/v1/sessions/s/assets/{name} HTTP/1.1\r\nhost: {address}\r\n\
                 authorization: Bearer {TOKEN}\r\ncontent-length: 10\r\nconnection: close\r\n\r\n"
            );
            stream.write_all(head.as_bytes()).expect("head");
            for byte in 0..10u8 {
                if usize::from(byte) == pause_after {
                    std::thread::sleep(pause);
                }
                // Ignore errors: the server may have given up on a stalled upload.
                let _ = stream.write_all(&[byte]);
                std::thread::sleep(Duration::from_millis(250));
            }
            let mut answer = String::new();
            let _ = stream.read_to_string(&mut answer);
            answer
        })
    };
    // 2.5 s in all, but never more than 250 ms without a byte.
    let slow = upload("slow.bin", usize::MAX, Duration::ZERO);
    let stalled = upload("stalled.bin", 3, Duration::from_millis(3_500));
    let slow = tokio::task::spawn_blocking(move || slow.join().expect("slow"))
        .await
        .expect("join");
    let stalled = tokio::task::spawn_blocking(move || stalled.join().expect("stalled"))
        .await
        .expect("join");
    assert!(slow.starts_with("HTTP/1.1 201"), "{slow}");
    assert!(stalled.starts_with("HTTP/1.1 408"), "{stalled}");
    let (_, listed) = server.get("/sessions/s/assets").await;
    let names: Vec<&Value> = listed["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|a| &a["name"])
        .collect();
    assert_eq!(names, [&json!("slow.bin")]);
}

/// The `ETag` of the whole take (the bytes' SHA-256).
async fn etag_of_take(server: &TestServer) -> String {
    let (status, headers, _) = server
        .get_bytes("/sessions/rec/assets/audio/take-1.wav", &[])
        .await;
    assert_eq!(status, 200);
    headers["etag"].to_str().expect("an ETag").to_owned()
}
