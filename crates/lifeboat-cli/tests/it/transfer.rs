//! Export on one server, import on a fresh one: the same projects (every revision), the
//! same sessions, checkpoints and recovery, the same asset bytes. A truncated or altered
//! archive, or one whose ids already exist, is refused with nothing imported.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::{Value, json};

use crate::harness::{TOKEN, TestServer};

const JSON: &str = "application/json";
const MERGE: &str = "application/merge-patch+json";

fn lifeboat(server: &TestServer, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lifeboat"))
        .args(args)
        .args(["--url", &server.base, "--token", TOKEN])
        .output()
        .expect("run lifeboat")
}

fn export(server: &TestServer, file: &Path, selection: &[&str]) {
    let mut args = vec!["export", "--output", file.to_str().expect("utf-8 path")];
    args.extend_from_slice(selection);
    let output = lifeboat(server, &args);
    assert!(
        output.status.success(),
        "export: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn import(server: &TestServer, file: &Path) -> Output {
    lifeboat(
        server,
        &["import", file.to_str().expect("utf-8 path"), "--json"],
    )
}

/// Fills a server with a project (a schema, several revisions, an asset) and two
/// sessions (checkpoints, a crash, a blob and an appendable asset).
async fn fill(server: &TestServer) {
    let schema = json!({"type": "object", "properties": {"step": {"type": "integer"}}});
    let reply = server
        .send(
            "PUT",
            "/schemas/doc/1",
            &[],
            Some((JSON, schema.to_string())),
        )
        .await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    let first = json!({"state": {"step": 1, "text": "hello"}, "schema": "doc@1", "title": "Doc"});
    let reply = server
        .send("PUT", "/projects/doc", &[], Some((JSON, first.to_string())))
        .await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    for step in 2..=6 {
        let patch = json!({"step": step, "text": format!("hello {step}")});
        let reply = server
            .send(
                "PATCH",
                "/projects/doc",
                &[],
                Some((MERGE, patch.to_string())),
            )
            .await;
        assert_eq!(reply.status, 200, "{}", reply.body);
    }
    let reply = server
        .send_bytes("PUT", "/projects/doc/assets/cover.png", &[], vec![7; 5_000])
        .await;
    assert_eq!(reply.status, 201, "{}", reply.body);

    let long = json!(3_600_000);
    server
        .session(json!({"id": "render", "kind": "render", "project_id": "doc", "heartbeat_timeout_ms": long}))
        .await;
    for (seq, stage) in ["script", "tts", "images"].iter().enumerate() {
        server
            .checkpoint(
                "render",
                json!({"attempt": 1, "kind": "stage", "stage": stage, "data": {"done": seq}}),
            )
            .await;
    }
    let reply = server
        .send_bytes(
            "PUT",
            "/sessions/render/assets/out/tts.wav",
            &[],
            vec![1; 70_000],
        )
        .await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    let (status, body) = server
        .post(
            "/sessions/render/fail",
            json!({"attempt": 1, "error": "worker crashed"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    server
        .session(json!({"id": "rec", "kind": "recording", "heartbeat_timeout_ms": long}))
        .await;
    for offset in [0usize, 4_096] {
        let reply = server
            .send_bytes(
                "POST",
                &format!("/sessions/rec/assets/take.pcm?offset={offset}"),
                &[],
                vec![offset as u8 + 3; 4_096],
            )
            .await;
        let made = if offset == 0 { 201 } else { 200 };
        assert_eq!(reply.status, made, "{}", reply.body);
    }
    server
        .checkpoint(
            "rec",
            json!({"attempt": 1, "kind": "item", "data": {"bytes": 8192}}),
        )
        .await;
}

/// Everything a user could compare between two servers.
async fn snapshot(server: &TestServer) -> Value {
    let (_, project) = server.get("/projects/doc").await;
    let mut revisions = Vec::new();
    for revision in 1..=6 {
        let (status, old) = server
            .get(&format!("/projects/doc?revision={revision}"))
            .await;
        assert_eq!(status, 200, "{old}");
        revisions.push(old["state"].clone());
    }
    let mut sessions = Vec::new();
    for id in ["render", "rec"] {
        let (_, session) = server.get(&format!("/sessions/{id}")).await;
        let (_, checkpoints) = server.get(&format!("/sessions/{id}/checkpoints")).await;
        let (_, recovery) = server.get(&format!("/sessions/{id}/recovery")).await;
        sessions.push(json!({
            "status": session["status"],
            "attempt": session["attempt"],
            "crash": session["crash"],
            "checkpoints": checkpoints["items"].as_array().expect("items").iter()
                .map(|c| json!([c["seq"], c["stage"], c["data_sha256"], c["data"], c["valid"]]))
                .collect::<Vec<_>>(),
            "resume_from": recovery["resume_from"]["seq"],
            "can_recover": recovery["can_recover"],
        }));
    }
    let mut assets = Vec::new();
    for path in [
        "/projects/doc/assets/cover.png",
        "/sessions/render/assets/out/tts.wav",
        "/sessions/rec/assets/take.pcm",
    ] {
        let (status, _, bytes) = server.get_bytes(path, &[]).await;
        assert_eq!(status, 200, "{path}");
        assets.push(json!([path, hex_sha256(&bytes)]));
    }
    let (_, listed) = server.get("/sessions/rec/assets").await;
    json!({
        "project": [project["state"], project["revision"], project["schema"], project["title"]],
        "revisions": revisions,
        "sessions": sessions,
        "assets": assets,
        "rec_assets": listed["items"].as_array().expect("items").iter()
            .map(|a| json!([a["name"], a["size"], a["sha256"], a["status"]]))
            .collect::<Vec<_>>(),
    })
}

fn hex_sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

async fn is_empty(server: &TestServer) -> bool {
    let (_, projects) = server.get("/projects").await;
    let (_, sessions) = server.get("/sessions").await;
    projects["items"].as_array().is_some_and(Vec::is_empty)
        && sessions["items"].as_array().is_some_and(Vec::is_empty)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_then_import_gives_identical_work() {
    let source = TestServer::start().await;
    fill(&source).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let archive = dir.path().join("work.tar");
    export(&source, &archive, &[]);
    let before = snapshot(&source).await;

    let target = TestServer::start().await;
    let output = import(&target, &archive);
    assert!(
        output.status.success(),
        "import: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let counts: Value = serde_json::from_slice(&output.stdout).expect("import --json");
    assert_eq!(
        counts,
        json!({"projects": 1, "revisions": 6, "schemas": 1, "sessions": 2,
               "checkpoints": 4, "assets": 3})
    );
    assert_eq!(snapshot(&target).await, before);

    // The imported work goes on: the recording appends at its offset, the failed render
    // recovers from its last stage.
    let reply = target
        .send_bytes(
            "POST",
            "/sessions/rec/assets/take.pcm?offset=8192",
            &[],
            vec![9; 100],
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.body["size"], json!(8292));
    let (status, recovered) = target
        .post("/sessions/render/recover", json!({"option": "continue"}))
        .await;
    assert_eq!(status, 200, "{recovered}");
    assert_eq!(recovered["resume_from"]["stage"], json!("images"));

    // The same archive again: every id exists now, so nothing is imported twice.
    let again = import(&target, &archive);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
    let (_, revisions) = target.get("/projects/doc/revisions").await;
    assert_eq!(revisions["items"].as_array().expect("items").len(), 6);
}

/// Moving up: work exported from a SQLite server (PostgreSQL too under
/// `LIFEBOAT_TEST_STORE=postgres`) and imported into a PostgreSQL one reads the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_moves_from_sqlite_and_files_to_postgres_and_a_bucket_unchanged() {
    let source = TestServer::start_on_disk(|_| {}).await;
    fill(&source).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let archive = dir.path().join("work.tar");
    export(&source, &archive, &[]);
    let url = lifeboat_testkit::postgres::fresh_schema().await.url;
    let moto = lifeboat_testkit::s3::Moto::shared();
    let (bucket, options) = (moto.fresh_url(), moto.options());
    let target = TestServer::start_configured(move |config| {
        config.database_url = Some(url);
        config.blob_store = Some(bucket);
        config.blob_store_options = options;
    })
    .await;
    let output = import(&target, &archive);
    assert!(
        output.status.success(),
        "import: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(snapshot(&target).await, snapshot(&source).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_selection_exports_only_what_it_names() {
    let source = TestServer::start().await;
    fill(&source).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let archive = dir.path().join("rec.tar");
    export(&source, &archive, &["--session", "rec"]);
    let target = TestServer::start().await;
    let output = import(&target, &archive);
    assert!(output.status.success());
    let (_, sessions) = target.get("/sessions").await;
    let ids: Vec<&Value> = sessions["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|s| &s["id"])
        .collect();
    assert_eq!(ids, [&json!("rec")]);
    assert_eq!(target.get("/projects/doc").await.0, 404);

    let unused = dir.path().join("unused.tar");
    let missing = lifeboat(
        &source,
        &[
            "export",
            "--output",
            unused.to_str().expect("utf-8 path"),
            "--project",
            "nope",
        ],
    );
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("project nope not found"));
    assert!(!unused.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_archive_is_refused_with_nothing_imported() {
    let source = TestServer::start().await;
    fill(&source).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let archive = dir.path().join("work.tar");
    export(&source, &archive, &[]);
    let good = std::fs::read(&archive).expect("read the archive");
    let target = TestServer::start().await;

    let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
    for cut in [100, 700, good.len() / 2, good.len() - 1_100] {
        cases.push(("truncated", good[..cut].to_vec()));
    }
    // One byte of the 70 kB asset, deep inside the archive.
    let at = good
        .windows(64)
        .position(|w| w.iter().all(|b| *b == 1))
        .expect("the asset's bytes are in the archive");
    let mut altered = good.clone();
    altered[at + 10] ^= 0x40;
    cases.push(("damaged", altered));
    // One byte of a checkpoint inside records.json.
    let text = String::from_utf8_lossy(&good);
    let at = text.find("{\\\"done\\\":1}").expect("a checkpoint's data");
    let mut altered = good.clone();
    altered[at + 10] = b'7';
    cases.push(("damaged", altered));
    cases.push(("not a Lifeboat export", b"just some text".repeat(100)));

    for (expected, bytes) in cases {
        let file = dir.path().join("bad.tar");
        std::fs::write(&file, &bytes).expect("write the bad archive");
        let output = import(&target, &file);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(65), "{stderr}");
        assert!(stderr.contains(expected), "{stderr}");
        assert!(stderr.contains("nothing was imported"), "{stderr}");
        assert!(
            is_empty(&target).await,
            "{expected}: something was imported"
        );
    }
    let blobs = crate::harness::files_under(&target.dir.path().join("blobs"));
    assert!(blobs.is_empty(), "left behind: {blobs:?}");
    // The good archive still imports.
    assert!(import(&target, &archive).status.success());
}

/// Pinned versions travel: a checkpoint that pinned a whole upload since replaced, the
/// first bytes of an appendable file since grown, and an external file, serves the same
/// pinned bytes after export and import, and recovery resumes from the same checkpoints.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinned_versions_survive_export_and_import() {
    let roots = tempfile::tempdir().expect("roots");
    let external = roots.path().join("ref.bin");
    std::fs::write(&external, b"external bytes").expect("file");
    let root = roots.path().to_path_buf();
    let source = TestServer::start_configured(move |config| {
        config.asset_roots = vec![root];
    })
    .await;
    source
        .session(json!({"id": "s", "kind": "k", "heartbeat_timeout_ms": 600_000}))
        .await;
    let reply = source
        .send_bytes(
            "PUT",
            "/sessions/s/assets/out.bin",
            &[],
            b"first render".to_vec(),
        )
        .await;
    assert_eq!(reply.status, 201);
    let reply = source
        .send_bytes(
            "POST",
            "/sessions/s/assets/take.raw?offset=0",
            &[],
            b"AAAA".to_vec(),
        )
        .await;
    assert_eq!(reply.status, 201);
    let (status, _) = source
        .post(
            "/sessions/s/assets/register",
            json!({"name": "ref.bin", "path": external}),
        )
        .await;
    assert_eq!(status, 201);
    let seq = source
        .checkpoint(
            "s",
            json!({"attempt": 1, "kind": "stage", "stage": "one",
                "assets": ["out.bin", "take.raw", "ref.bin"]}),
        )
        .await;
    let reply = source
        .send_bytes(
            "PUT",
            "/sessions/s/assets/out.bin",
            &[],
            b"second render".to_vec(),
        )
        .await;
    assert_eq!(reply.status, 200);
    let reply = source
        .send_bytes(
            "POST",
            "/sessions/s/assets/take.raw?offset=4",
            &[],
            b"BBBB".to_vec(),
        )
        .await;
    assert_eq!(reply.status, 200);
    let (status, _) = source
        .post("/sessions/s/pause", json!({"attempt": 1}))
        .await;
    assert_eq!(status, 200);
    let (_, recovery_before) = source.get("/sessions/s/recovery").await;
    assert_eq!(
        recovery_before["resume_from"]["seq"],
        json!(seq),
        "{recovery_before}"
    );

    let dir = tempfile::tempdir().expect("temp dir");
    let archive = dir.path().join("pins.tar");
    export(&source, &archive, &[]);
    let target = TestServer::start().await;
    let output = import(&target, &archive);
    assert!(
        output.status.success(),
        "import: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    for (name, bytes) in [
        ("out.bin", &b"first render"[..]),
        ("take.raw", b"AAAA"),
        ("ref.bin", b"external bytes"),
    ] {
        let (status, _, body) = target
            .get_bytes(&format!("/sessions/s/checkpoints/{seq}/assets/{name}"), &[])
            .await;
        assert_eq!(
            (status, String::from_utf8_lossy(&body).into_owned()),
            (200, String::from_utf8_lossy(bytes).into_owned()),
            "{name}"
        );
    }
    let (_, checkpoint) = source.get(&format!("/sessions/s/checkpoints/{seq}")).await;
    let (_, imported) = target.get(&format!("/sessions/s/checkpoints/{seq}")).await;
    assert_eq!(imported["assets"], checkpoint["assets"]);
    let (_, recovery_after) = target.get("/sessions/s/recovery").await;
    assert_eq!(
        recovery_after["resume_from"],
        recovery_before["resume_from"]
    );
    assert_eq!(recovery_after["options"], recovery_before["options"]);
}
