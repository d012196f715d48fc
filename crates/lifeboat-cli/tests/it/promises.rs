//! SPEC revision 2, tried as a new user would: each test here is one broken promise of the
//! issue that filed it (a stale worker overwriting the recovered attempt's files, a resume
//! point whose bytes change under it, an external file swapped for the database, a second
//! server on one data directory, an expiry that un-happens), shown to hold now.

use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{Binary, TOKEN, TestServer, millis, sha256_hex};

/// A request with any bearer token and raw bytes; answers the status and the JSON body.
async fn with_token(
    server: &TestServer,
    token: &str,
    method: &str,
    path: &str,
    body: Option<(&str, Vec<u8>)>,
) -> (u16, Value) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut request = server
        .http
        .request(method, server.url(path))
        .bearer_auth(token);
    if let Some((content_type, body)) = body {
        request = request.header("content-type", content_type).body(body);
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// What replaces an external file: a label, how, and the status a read then records.
type Swap<'a> = (&'static str, Box<dyn Fn() + 'a>, &'static str);

fn json_body(value: Value) -> Option<(&'static str, Vec<u8>)> {
    Some(("application/json", value.to_string().into_bytes()))
}

fn bytes(value: &[u8]) -> Option<(&'static str, Vec<u8>)> {
    Some(("application/octet-stream", value.to_vec()))
}

/// After `recover`, the old worker — by its attempt or by its session token — can no
/// longer replace, append to, delete or register the session's assets, nor write
/// checkpoints; the new attempt's files stay as it wrote them. The token dies when the
/// session is final, and never comes back for a later session that reuses the id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_worker_cannot_touch_the_recovered_attempts_files() {
    let roots = tempfile::tempdir().expect("roots");
    std::fs::write(roots.path().join("ref.txt"), b"registered").expect("file");
    let root = roots.path().to_path_buf();
    let server = TestServer::start_configured(move |config| {
        config.asset_roots = vec![root];
        config.cleanup.finished_session_age_ms = 0;
    })
    .await;
    server
        .session(json!({"id": "render", "kind": "render", "heartbeat_timeout_ms": 60_000}))
        .await;
    let (status, created) = server.post("/sessions/render/token", json!({})).await;
    assert_eq!(status, 201, "{created}");
    let old_token = created["token"].as_str().expect("token").to_owned();
    let put = |name: &str, attempt: &str| format!("/sessions/render/assets/{name}{attempt}");

    // The first worker writes with its attempt, and with its token (no ?attempt needed).
    let reply = server
        .send_bytes("PUT", &put("out.bin", "?attempt=1"), &[], b"first".to_vec())
        .await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    let (status, _) =
        with_token(&server, &old_token, "PUT", &put("log.txt", ""), bytes(b"a")).await;
    assert_eq!(status, 201);

    // The session is recovered: attempt 2 writes out.bin.
    let (status, _) = server
        .post("/sessions/render/pause", json!({"attempt": 1}))
        .await;
    assert_eq!(status, 200);
    let (status, recovered) = server
        .post("/sessions/render/recover", json!({"option": "continue"}))
        .await;
    assert_eq!(status, 200, "{recovered}");
    assert_eq!(recovered["session"]["attempt"], json!(2));
    let reply = server
        .send_bytes(
            "PUT",
            &put("out.bin", "?attempt=2"),
            &[],
            b"second".to_vec(),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);

    // Every write of the old worker is refused and changes nothing.
    for (method, path, body) in [
        ("PUT", put("out.bin", "?attempt=1"), b"stale".to_vec()),
        ("POST", put("log.txt", "?offset=1&attempt=1"), b"b".to_vec()),
        ("DELETE", put("out.bin", "?attempt=1"), Vec::new()),
    ] {
        let reply = server.send_bytes(method, &path, &[], body).await;
        assert_eq!(reply.status, 409, "{method} {path}: {}", reply.body);
        assert_eq!(reply.slug(), "attempt-mismatch");
    }
    let (status, problem) = server
        .call(
            "POST",
            "/sessions/render/assets/register?attempt=1",
            Some(json!({"name": "ref.txt", "path": roots.path().join("ref.txt")})),
        )
        .await;
    assert_eq!(status, 409, "{problem}");
    for (method, path, body) in [
        ("PUT", put("out.bin", ""), bytes(b"stale")),
        ("POST", put("log.txt", "?offset=1"), bytes(b"b")),
        ("DELETE", put("out.bin", ""), None),
        (
            "POST",
            "/sessions/render/checkpoints".to_owned(),
            json_body(json!({"attempt": 1, "kind": "item"})),
        ),
        (
            "POST",
            "/sessions/render/checkpoints".to_owned(),
            json_body(json!({"attempt": 2, "kind": "item"})),
        ),
        (
            "POST",
            "/sessions/render/heartbeat".to_owned(),
            json_body(json!({"attempt": 2})),
        ),
    ] {
        let (status, problem) = with_token(&server, &old_token, method, &path, body).await;
        assert_eq!(status, 409, "token {method} {path}: {problem}");
        assert_eq!(problem["type"], json!("/problems/attempt-mismatch"));
    }
    let (status, _, stored) = server
        .get_bytes("/sessions/render/assets/out.bin", &[])
        .await;
    assert_eq!((status, stored.as_slice()), (200, b"second".as_slice()));
    let (_, checkpoints) = server.get("/sessions/render/checkpoints").await;
    assert_eq!(checkpoints["items"], json!([]), "no checkpoint was written");

    // A token made now acts for attempt 2; it dies with the session.
    let (_, created) = server.post("/sessions/render/token", json!({})).await;
    let new_token = created["token"].as_str().expect("token").to_owned();
    let (status, _) = with_token(
        &server,
        &new_token,
        "POST",
        "/sessions/render/heartbeat",
        json_body(json!({"attempt": 2})),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = server
        .post("/sessions/render/cancel", json!({"attempt": 2}))
        .await;
    assert_eq!(status, 200);
    let (status, _) = with_token(&server, &new_token, "GET", "/sessions/render", None).await;
    assert_eq!(status, 401, "a final session's token is dead");

    // Purged, then a new session under the same id: neither token is revived.
    let (status, report) = server.post("/admin/cleanup", json!({})).await;
    assert_eq!((status, report["sessions_purged"].as_u64()), (200, Some(1)));
    server
        .session(json!({"id": "render", "kind": "render", "heartbeat_timeout_ms": 60_000}))
        .await;
    for token in [&old_token, &new_token] {
        let (status, _) = with_token(
            &server,
            token,
            "POST",
            "/sessions/render/heartbeat",
            json_body(json!({"attempt": 1})),
        )
        .await;
        assert_eq!(status, 401, "a token never works for a later session");
    }
}

/// A checkpoint pins the version of each asset it names: a later `PUT` (or append) of the
/// name does not change what the old resume point refers to, its pinned bytes stay
/// readable, cleanup keeps them, a damaged pinned blob disqualifies the checkpoint until
/// good bytes are uploaded again, and `DELETE` of the asset disqualifies it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_pins_the_bytes_it_names() {
    let server = TestServer::start_on_disk(|config| {
        config.cleanup.orphan_age_ms = 0;
    })
    .await;
    server
        .session(json!({"id": "s", "kind": "render", "heartbeat_timeout_ms": 60_000}))
        .await;
    let v1 = b"scene one, first render".to_vec();
    let v2 = b"scene one, second render, longer".to_vec();
    let reply = server
        .send_bytes("PUT", "/sessions/s/assets/out.bin", &[], v1.clone())
        .await;
    assert_eq!(reply.status, 201);
    let reply = server
        .send_bytes(
            "POST",
            "/sessions/s/assets/take.raw?offset=0",
            &[],
            b"AAAA".to_vec(),
        )
        .await;
    assert_eq!(reply.status, 201, "an append at offset 0 makes the asset");
    let stage = server
        .checkpoint(
            "s",
            json!({"attempt": 1, "kind": "stage", "stage": "one", "assets": ["out.bin", "take.raw"]}),
        )
        .await;
    // Later writes to both names.
    let reply = server
        .send_bytes("PUT", "/sessions/s/assets/out.bin", &[], v2.clone())
        .await;
    assert_eq!(reply.status, 200);
    let reply = server
        .send_bytes(
            "POST",
            "/sessions/s/assets/take.raw?offset=4",
            &[],
            b"BBBB".to_vec(),
        )
        .await;
    assert_eq!(reply.status, 200);

    let (_, checkpoint) = server
        .get(&format!("/sessions/s/checkpoints/{stage}"))
        .await;
    assert_eq!(
        checkpoint["assets"],
        json!([
            {"name": "out.bin", "size": v1.len(), "sha256": sha256_hex(&v1)},
            {"name": "take.raw", "size": 4, "sha256": sha256_hex(b"AAAA")},
        ]),
        "{checkpoint}"
    );
    let pinned = |name: &str| format!("/sessions/s/checkpoints/{stage}/assets/{name}");
    let (status, _, body) = server.get_bytes(&pinned("out.bin"), &[]).await;
    assert_eq!((status, body), (200, v1.clone()));
    let (status, _, body) = server.get_bytes(&pinned("take.raw"), &[]).await;
    assert_eq!((status, body.as_slice()), (200, b"AAAA".as_slice()));
    let (status, headers, body) = server
        .get_bytes(&pinned("out.bin"), &[("range", "bytes=6-8")])
        .await;
    assert_eq!((status, body.as_slice()), (206, &v1[6..9]));
    assert_eq!(
        headers["content-range"].to_str().expect("header"),
        format!("bytes 6-8/{}", v1.len())
    );
    let (status, _, body) = server.get_bytes("/sessions/s/assets/out.bin", &[]).await;
    assert_eq!((status, body), (200, v2.clone()));

    // The stage checkpoint is still a verified resume point.
    let (status, _) = server
        .post("/sessions/s/pause", json!({"attempt": 1}))
        .await;
    assert_eq!(status, 200);
    let restart_point = |recovery: &Value| {
        recovery["options"]
            .as_array()
            .expect("options")
            .iter()
            .find(|o| o["option"] == "restart_batch")
            .map(|o| o["resume_from"]["seq"].clone())
    };
    let (_, recovery) = server.get("/sessions/s/recovery").await;
    assert_eq!(recovery["resume_from"]["seq"], json!(stage), "{recovery}");
    assert_eq!(restart_point(&recovery), Some(json!(stage)));

    // Cleanup keeps the pinned blob, which no asset names any more.
    let (status, report) = server.post("/admin/cleanup", json!({})).await;
    assert_eq!(status, 200, "{report}");
    let blob = server
        .dir
        .path()
        .join("blobs/sha256")
        .join(&sha256_hex(&v1)[..2])
        .join(sha256_hex(&v1));
    assert!(blob.exists(), "cleanup deleted pinned bytes: {report}");

    // A flipped byte in the pinned blob: verify finds it, the checkpoint no longer qualifies.
    let mut damaged = v1.clone();
    damaged[0] ^= 0xff;
    std::fs::write(&blob, &damaged).expect("damage the blob");
    let (status, verified) = server.post("/sessions/s/verify", json!({})).await;
    assert_eq!(status, 200, "{verified}");
    let issues = verified["issues"].to_string();
    assert!(issues.contains("pinned asset out.bin"), "{verified}");
    let (_, recovery) = server.get("/sessions/s/recovery").await;
    assert_eq!(restart_point(&recovery), None, "{recovery}");
    assert_eq!(recovery["can_recover"], json!(false), "{recovery}");

    // Uploading the good bytes again (under any name) heals the blob.
    let reply = server
        .send_bytes("PUT", "/sessions/s/assets/copy.bin", &[], v1.clone())
        .await;
    assert_eq!(reply.status, 201);
    assert_eq!(std::fs::read(&blob).expect("blob"), v1);
    let (_, recovery) = server.get("/sessions/s/recovery").await;
    assert_eq!(restart_point(&recovery), Some(json!(stage)), "{recovery}");

    // Deleting a pinned asset disqualifies the checkpoint; its pinned bytes stay readable.
    let reply = server
        .send_bytes("DELETE", "/sessions/s/assets/take.raw", &[], Vec::new())
        .await;
    assert_eq!(reply.status, 204);
    let (_, recovery) = server.get("/sessions/s/recovery").await;
    assert_eq!(restart_point(&recovery), None, "{recovery}");
    let (status, _, body) = server.get_bytes(&pinned("take.raw"), &[]).await;
    assert_eq!((status, body.as_slice()), (200, b"AAAA".as_slice()));
    let reply = server.send("GET", &pinned("nothing.bin"), &[], None).await;
    assert_eq!(reply.status, 404);
}

/// A server with one asset root (the directory answered) and a session `s` in it.
async fn serving_an_asset_root() -> (TestServer, tempfile::TempDir) {
    let roots = tempfile::tempdir().expect("roots");
    let configured = roots.path().to_path_buf();
    let server = TestServer::start_configured(move |config| {
        config.asset_roots = vec![configured];
    })
    .await;
    server
        .session(json!({"id": "s", "kind": "k", "heartbeat_timeout_ms": 60_000}))
        .await;
    (server, roots)
}

/// An external file is checked again on every read: replaced by a symlink to the database,
/// a FIFO, a directory or a file of another size, it is not served (409 `asset-changed`,
/// status `missing` or `corrupt`), and no read hangs. Registering a path outside the roots
/// is 403 whether or not it exists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_external_file_that_was_swapped_is_never_served() {
    let (server, roots) = serving_an_asset_root().await;
    let root = roots.path().to_path_buf();
    let file = root.join("ref.txt");
    std::fs::write(&file, b"registered bytes").expect("file");
    let (status, registered) = server
        .post(
            "/sessions/s/assets/register",
            json!({"name": "ref.txt", "path": file}),
        )
        .await;
    assert_eq!(status, 201, "{registered}");
    let read = || server.get_bytes("/sessions/s/assets/ref.txt", &[]);
    let (status, _, body) = read().await;
    assert_eq!(
        (status, body.as_slice()),
        (200, b"registered bytes".as_slice())
    );

    let database = server.dir.path().join("lifeboat.sqlite3");
    let swaps: [Swap; 4] = [
        (
            "a symlink to the database",
            Box::new(|| std::os::unix::fs::symlink(&database, &file).expect("symlink")),
            "missing",
        ),
        (
            "a FIFO",
            Box::new(|| {
                let made = std::process::Command::new("mkfifo")
                    .arg(&file)
                    .status()
                    .expect("mkfifo");
                assert!(made.success());
            }),
            "missing",
        ),
        (
            "a directory",
            Box::new(|| std::fs::create_dir(&file).expect("dir")),
            "missing",
        ),
        (
            "a file of another size",
            Box::new(|| std::fs::write(&file, b"other").expect("write")),
            "corrupt",
        ),
    ];
    for (what, swap, status_after) in swaps {
        if file.is_dir() {
            std::fs::remove_dir(&file).expect("remove");
        } else {
            std::fs::remove_file(&file).expect("remove");
        }
        swap();
        let (status, _, body) = tokio::time::timeout(Duration::from_secs(10), read())
            .await
            .unwrap_or_else(|_| panic!("the read of {what} hung"));
        let text = String::from_utf8_lossy(&body);
        assert_eq!(status, 409, "{what}: {text}");
        assert!(text.contains("/problems/asset-changed"), "{what}: {text}");
        assert!(!text.contains("SQLite format"), "{what} was served: {text}");
        let (_, list) = server.get("/sessions/s/assets").await;
        assert_eq!(
            list["items"][0]["status"],
            json!(status_after),
            "{what}: {list}"
        );
    }
    std::fs::remove_file(&file).expect("remove");
    std::fs::write(&file, b"registered bytes").expect("restore");
    let (status, _, _) = read().await;
    assert_eq!(status, 200, "the original file is served again");

    let outside = tempfile::tempdir().expect("outside");
    let existing = outside.path().join("exists.txt");
    std::fs::write(&existing, b"x").expect("file");
    for path in [existing.clone(), outside.path().join("missing.txt")] {
        let (status, problem) = server
            .post(
                "/sessions/s/assets/register",
                json!({"name": "x.txt", "path": path}),
            )
            .await;
        assert_eq!(status, 403, "{}: {problem}", path.display());
    }
    let (status, problem) = server
        .post(
            "/sessions/s/assets/register",
            json!({"name": "x.txt", "path": root.join("missing.txt")}),
        )
        .await;
    assert_eq!(status, 422, "{problem}");
}

/// An external file of another size than registered is `corrupt` (SPEC §5: size or
/// SHA-256 differs), one that is gone is `missing`: so says a read of the version a
/// checkpoint pinned, which records it on the asset as a read of the asset does, and so
/// says recovery's look at the files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_external_file_of_another_size_is_corrupt_and_a_gone_one_missing() {
    let (server, roots) = serving_an_asset_root().await;
    let root = roots.path().to_path_buf();
    for name in ["shorter.bin", "longer.bin", "gone.bin"] {
        std::fs::write(root.join(name), b"four").expect("file");
        let register = json!({"name": name, "path": root.join(name)});
        let (status, registered) = server
            .post("/sessions/s/assets/register", register.clone())
            .await;
        assert_eq!(status, 201, "{registered}");
        tokio::time::sleep(Duration::from_millis(5)).await;
        let (status, again) = server.post("/sessions/s/assets/register", register).await;
        assert_eq!(status, 200, "registered again: {again}");
        assert_eq!(
            again["created_at"], registered["created_at"],
            "registered again, it answers the record made when the name was first stored"
        );
    }
    server
        .checkpoint(
            "s",
            json!({"attempt": 1, "kind": "item", "assets": ["shorter.bin", "longer.bin", "gone.bin"]}),
        )
        .await;
    std::fs::write(root.join("shorter.bin"), b"fo").expect("shorten");
    std::fs::write(root.join("longer.bin"), b"fourty").expect("lengthen");
    std::fs::remove_file(root.join("gone.bin")).expect("remove");
    let status_of = |list: &Value, name: &str| {
        list["items"]
            .as_array()
            .and_then(|items| items.iter().find(|item| item["name"] == name))
            .map(|item| item["status"].clone())
    };

    let (status, _, body) = server
        .get_bytes("/sessions/s/checkpoints/1/assets/shorter.bin", &[])
        .await;
    let text = String::from_utf8_lossy(&body);
    assert_eq!(status, 409, "{text}");
    assert!(text.contains("/problems/asset-changed"), "{text}");
    let (_, list) = server.get("/sessions/s/assets").await;
    assert_eq!(
        status_of(&list, "shorter.bin"),
        Some(json!("corrupt")),
        "the pinned read recorded it: {list}"
    );
    assert_eq!(
        status_of(&list, "longer.bin"),
        Some(json!("ok")),
        "not read yet: {list}"
    );

    let (status, failed) = server
        .post(
            "/sessions/s/fail",
            json!({"attempt": 1, "error": "render died"}),
        )
        .await;
    assert_eq!(status, 200, "{failed}");
    let (status, recovery) = server.get("/sessions/s/recovery").await;
    assert_eq!(status, 200, "{recovery}");
    assert_eq!(
        recovery["assets"],
        json!({"total": 3, "ok": 0, "missing": 1, "corrupt": 2}),
        "{recovery}"
    );
    let mut named: Vec<&str> = recovery["missing_assets"]
        .as_array()
        .expect("missing_assets")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    named.sort_unstable();
    assert_eq!(named, ["gone.bin", "longer.bin", "shorter.bin"]);
}

/// A second `lifeboat serve` on a data directory in use exits at once with its own exit
/// code, naming the directory and the owner's pid, and changes nothing; the first keeps
/// serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_server_on_the_same_data_directory_is_refused() {
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path().join("data");
    let first = Binary::start(&data);
    let http = reqwest::Client::new();
    let session = |id: &str| {
        http.post(format!("{}/api/v1/sessions", first.base))
            .bearer_auth(TOKEN)
            .json(&json!({"id": id, "kind": "k"}))
            .send()
    };
    assert_eq!(session("before").await.expect("create").status(), 201);
    let token_file = data.join("admin-token");

    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_lifeboat"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .env_remove("LIFEBOAT_ADMIN_TOKEN")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run a second server");
    // It must stop at once; one that starts serving is stopped here and fails the test.
    let mut exited = false;
    for _ in 0..100 {
        if child.try_wait().expect("wait").is_some() {
            exited = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if !exited {
        child.kill().expect("stop the second server");
    }
    let second = child.wait_with_output().expect("second server's output");
    assert!(exited, "a second server started on a data directory in use");
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(75), "{stderr}");
    assert!(stderr.contains(&data.display().to_string()), "{stderr}");
    assert!(
        stderr.contains(&format!("pid {}", first.child.id())),
        "{stderr}"
    );
    assert!(
        !token_file.exists(),
        "the second server wrote an admin token"
    );
    assert_eq!(session("after").await.expect("create").status(), 201);
}

/// An expiry is a fact: the first answer that shows a session `incomplete` fixes its crash;
/// later reads, `/stats`, `/events`, `/recovery` and a restart agree. The sweeper is slowed
/// to once an hour here, so the reads are what find the expiry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expiry_a_read_has_shown_survives_a_restart() {
    let configure = |config: &mut lifeboat::Config| {
        config.sweep_interval = Duration::from_secs(3_600);
    };
    let server = TestServer::start_configured(configure).await;
    server
        .session(json!({"id": "gone", "kind": "k", "heartbeat_timeout_ms": 1_000}))
        .await;
    tokio::time::sleep(Duration::from_millis(1_300)).await;
    let (_, first) = server.get("/sessions/gone").await;
    assert_eq!(first["status"], json!("incomplete"), "{first}");
    let detected = first["crash"]["detected_at"].clone();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (_, again) = server.get("/sessions/gone").await;
    assert_eq!(
        again["crash"], first["crash"],
        "the crash moved between two reads"
    );
    let (_, stats) = server.get("/stats").await;
    assert_eq!(
        stats["crashes"]["by_type"]["client_lost"],
        json!(1),
        "{stats}"
    );
    assert_eq!(stats["sessions"]["incomplete"], json!(1), "{stats}");
    let (_, recovery) = server.get("/sessions/gone/recovery").await;
    assert_eq!(recovery["crash"], first["crash"], "{recovery}");

    let dir = server.dir.clone();
    let mut config = lifeboat::Config::new(dir.path());
    configure(&mut config);
    let _ = server.stop().await;
    let server = TestServer::start_configured_in(dir, config).await;
    let (_, after) = server.get("/sessions/gone").await;
    assert_eq!(after["status"], json!("incomplete"), "{after}");
    assert_eq!(after["crash"]["detected_at"], detected, "{after}");
    assert_eq!(after["crash"]["type"], json!("client_lost"));
    let events = server
        .http
        .get(server.url("/events?session_id=gone"))
        .bearer_auth(TOKEN)
        .header("last-event-id", "0")
        .send()
        .await
        .expect("events");
    let mut events = events;
    let mut text = String::new();
    while let Ok(Ok(Some(chunk))) =
        tokio::time::timeout(Duration::from_millis(300), events.chunk()).await
    {
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(text.contains("\"incomplete\""), "{text}");
    assert!(millis(&detected) > 0);
}

/// Pins go with their checkpoint: once retention prunes the only checkpoint that pinned a
/// blob no asset names any more, cleanup deletes it (and `lifeboat verify` finds nothing
/// amiss); a stage checkpoint, kept for life, keeps its pinned blob.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pruning_a_checkpoint_unpins_its_bytes() {
    let server = TestServer::start_on_disk(|config| {
        config.cleanup.orphan_age_ms = 0;
    })
    .await;
    server
        .session(json!({"id": "s", "kind": "k", "checkpoint_retention": 1,
            "heartbeat_timeout_ms": 600_000}))
        .await;
    let blob = |bytes: &[u8]| {
        let hex = sha256_hex(bytes);
        server
            .dir
            .path()
            .join("blobs/sha256")
            .join(&hex[..2])
            .join(hex)
    };
    for (name, bytes, kind) in [
        ("item.bin", &b"item v1"[..], "item"),
        ("stage.bin", b"stage v1", "stage"),
    ] {
        let reply = server
            .send_bytes(
                "PUT",
                &format!("/sessions/s/assets/{name}"),
                &[],
                bytes.to_vec(),
            )
            .await;
        assert_eq!(reply.status, 201);
        server
            .checkpoint(
                "s",
                json!({"attempt": 1, "kind": kind, "stage": "one", "assets": [name]}),
            )
            .await;
        let reply = server
            .send_bytes(
                "PUT",
                &format!("/sessions/s/assets/{name}"),
                &[],
                b"v2".to_vec(),
            )
            .await;
        assert_eq!(reply.status, 200);
    }
    // Two more items: retention 1 prunes the item checkpoint that pinned "item v1".
    for _ in 0..2 {
        server
            .checkpoint("s", json!({"attempt": 1, "kind": "item"}))
            .await;
    }
    let (status, report) = server.post("/admin/cleanup", json!({})).await;
    assert_eq!(status, 200, "{report}");
    assert!(
        !blob(b"item v1").exists(),
        "a pruned checkpoint still pins: {report}"
    );
    assert!(
        blob(b"stage v1").exists(),
        "a stage checkpoint lost its bytes: {report}"
    );
    let (status, verified) = server.post("/admin/verify", json!({})).await;
    assert_eq!(status, 200, "{verified}");
    assert_eq!(verified["ok"], json!(true), "{verified}");
}
