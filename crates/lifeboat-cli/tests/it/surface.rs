//! The API's surface: OpenAPI generated from the handlers, a docs page per problem slug,
//! unauthenticated probes, and the CLI's output and exit codes against a real server.

use std::process::Command;

use lifeboat_api::ProblemType;
use serde_json::{Value, json};

use crate::harness::{TOKEN, TestServer};

/// `docs/openapi.json` is exactly the document the server serves: a handler that changes
/// without it fails here. `LIFEBOAT_UPDATE_OPENAPI=1` writes the served one there instead
/// (then review the diff).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_committed_openapi_document_is_the_served_one() {
    let server = TestServer::start().await;
    let served: Value = reqwest::get(format!("{}/api/v1/openapi.json", server.base))
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    let served = serde_json::to_string_pretty(&served).expect("render") + "\n";
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json");
    if std::env::var("LIFEBOAT_UPDATE_OPENAPI").as_deref() == Ok("1") {
        std::fs::write(&path, &served).expect("write docs/openapi.json");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == served,
        "docs/openapi.json differs from what the handlers serve; run \
         LIFEBOAT_UPDATE_OPENAPI=1 cargo test -p lifeboat-cli --test it the_committed_openapi \
         and commit the result"
    );
}

/// Every endpoint is described in `/api/v1/openapi.json`, which needs no token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_describes_every_endpoint() {
    let server = TestServer::start().await;
    let spec: Value = reqwest::get(format!("{}/api/v1/openapi.json", server.base))
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(spec["openapi"], "3.1.0");
    for (path, method) in [
        ("/api/v1/sessions", "post"),
        ("/api/v1/sessions", "get"),
        ("/api/v1/sessions/{id}", "get"),
        ("/api/v1/sessions/{id}", "delete"),
        ("/api/v1/sessions/{id}/heartbeat", "post"),
        ("/api/v1/sessions/{id}/checkpoints", "post"),
        ("/api/v1/sessions/{id}/checkpoints", "get"),
        ("/api/v1/sessions/{id}/checkpoints/latest", "get"),
        ("/api/v1/sessions/{id}/checkpoints/{seq}", "get"),
        ("/api/v1/sessions/{id}/pause", "post"),
        ("/api/v1/sessions/{id}/complete", "post"),
        ("/api/v1/sessions/{id}/cancel", "post"),
        ("/api/v1/sessions/{id}/fail", "post"),
        ("/api/v1/recovery", "get"),
        ("/api/v1/sessions/{id}/recovery", "get"),
        ("/api/v1/sessions/{id}/recover", "post"),
        ("/api/v1/sessions/{id}/verify", "post"),
        ("/api/v1/stats", "get"),
        ("/api/v1/admin/sweep", "post"),
        ("/api/v1/projects", "get"),
        ("/api/v1/projects/{id}", "put"),
        ("/api/v1/projects/{id}", "patch"),
        ("/api/v1/projects/{id}", "get"),
        ("/api/v1/projects/{id}", "delete"),
        ("/api/v1/projects/{id}/revisions", "get"),
        ("/api/v1/projects/{id}/restore", "post"),
        ("/api/v1/schemas/{name}/{version}", "put"),
        ("/api/v1/schemas/{name}/{version}", "get"),
        ("/api/v1/events", "get"),
        ("/api/v1/admin/cleanup", "post"),
        ("/api/v1/admin/verify", "post"),
        ("/api/v1/keys", "post"),
        ("/api/v1/keys", "get"),
        ("/api/v1/keys/{id}", "delete"),
        ("/api/v1/audit", "get"),
        ("/api/v1/sessions/{id}/token", "post"),
        ("/api/v1/sessions/{id}/assets", "get"),
        ("/api/v1/sessions/{id}/assets/register", "post"),
        ("/api/v1/sessions/{id}/assets/{name}", "put"),
        ("/api/v1/sessions/{id}/assets/{name}", "post"),
        ("/api/v1/sessions/{id}/assets/{name}", "get"),
        ("/api/v1/sessions/{id}/assets/{name}", "delete"),
    ] {
        assert!(
            spec["paths"][path][method].is_object(),
            "{method} {path} missing from the OpenAPI document"
        );
    }
}

/// Each problem slug has its page in docs/problems/, and each page names a real slug.
#[test]
fn every_problem_slug_has_a_docs_page() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/problems");
    for kind in ProblemType::ALL {
        let page = dir.join(format!("{}.md", kind.slug));
        let text = std::fs::read_to_string(&page)
            .unwrap_or_else(|_| panic!("{} is missing", page.display()));
        assert!(
            text.contains(&kind.status.to_string()),
            "{} does not give the status",
            page.display()
        );
    }
    let pages = std::fs::read_dir(&dir).expect("docs/problems").count();
    assert_eq!(
        pages,
        ProblemType::ALL.len(),
        "a page in docs/problems names no slug"
    );
}

/// Health, readiness and metrics need no token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_need_no_token() {
    let server = TestServer::start().await;
    for path in ["/healthz", "/readyz", "/metrics"] {
        let response = reqwest::get(format!("{}{path}", server.base))
            .await
            .expect("get");
        assert_eq!(response.status(), 200, "{path}");
    }
    let metrics = reqwest::get(format!("{}/metrics", server.base))
        .await
        .expect("get")
        .text()
        .await
        .expect("text");
    assert!(metrics.contains("lifeboat_build_info"));
    assert!(
        metrics.contains("lifeboat_sessions{status=\"active\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("lifeboat_database_bytes "), "{metrics}");
    // One server, which runs cleanup (on either store).
    assert!(
        metrics.contains("lifeboat_cluster_nodes_alive 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("lifeboat_maintenance_holder 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("lifeboat_event_lag_milliseconds "),
        "{metrics}"
    );
}

fn lifeboat(server: &TestServer, token: &str, args: &[&str]) -> (i32, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_lifeboat"))
        .args(args)
        .env("LIFEBOAT_URL", &server.base)
        .env("LIFEBOAT_TOKEN", token)
        .output()
        .expect("run lifeboat");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

/// The CLI reads and recovers over HTTP, prints `--json`, and exits with documented codes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_commands_and_exit_codes() {
    let server = TestServer::start().await;
    server
        .session(json!({"id": "cli1", "kind": "render"}))
        .await;
    server
        .checkpoint(
            "cli1",
            json!({"attempt": 1, "kind": "stage", "stage": "tts", "data": {"k": 1}}),
        )
        .await;
    server
        .post(
            "/sessions/cli1/fail",
            json!({"attempt": 1, "error": "boom"}),
        )
        .await;

    let (code, out) = lifeboat(&server, TOKEN, &["sessions", "list", "--json"]);
    assert_eq!(code, 0);
    let list: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(list["items"][0]["id"], "cli1");

    let (code, out) = lifeboat(&server, TOKEN, &["sessions", "show", "cli1"]);
    assert_eq!(code, 0);
    assert!(out.contains("failed"), "{out}");

    let (code, out) = lifeboat(&server, TOKEN, &["recovery", "list", "--json"]);
    assert_eq!(code, 0);
    let list: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(list["items"][0]["resume_from"]["seq"], 1);

    let (code, out) = lifeboat(
        &server,
        TOKEN,
        &["recover", "cli1", "--option", "continue", "--json"],
    );
    assert_eq!(code, 0, "{out}");
    let recovered: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(recovered["session"]["attempt"], 2);

    assert_eq!(lifeboat(&server, TOKEN, &["sessions", "show", "nope"]).0, 1);
    server.post("/sessions/cli1/pause", json!({})).await;
    assert_eq!(
        lifeboat(
            &server,
            TOKEN,
            &["recover", "cli1", "--option", "fresh_start"]
        )
        .0,
        65
    );
    assert_eq!(lifeboat(&server, "wrong", &["sessions", "list"]).0, 77);
    assert_eq!(
        lifeboat(&server, TOKEN, &["recover", "cli1", "--option", "rewind"]).0,
        2
    );
    let output = Command::new(env!("CARGO_BIN_EXE_lifeboat"))
        .args([
            "sessions",
            "list",
            "--url",
            "http://127.0.0.1:9",
            "--token",
            "t",
        ])
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(69));
}

/// `lifeboat projects …` and `lifeboat schemas put` over HTTP, with `--json`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_projects_and_schemas() {
    let server = TestServer::start().await;
    let schema = server.dir.path().join("note.schema.json");
    std::fs::write(&schema, r#"{"type": "object", "required": ["text"]}"#).expect("schema file");
    let schema = schema.to_str().expect("utf-8 path");
    let (code, out) = lifeboat(&server, TOKEN, &["schemas", "put", "note", "1", schema]);
    assert_eq!((code, out.trim()), (0, "schema note@1 registered"));
    let (code, _) = lifeboat(
        &server,
        TOKEN,
        &["schemas", "put", "note", "2", "/nonexistent/file.json"],
    );
    assert_eq!(code, 66, "an unreadable file");

    for text in ["one", "two", "three"] {
        let (status, body) = server
            .call(
                "PUT",
                "/projects/note-7",
                Some(json!({"state": {"text": text}, "schema": "note@1"})),
            )
            .await;
        assert!(status == 200 || status == 201, "{body}");
    }
    let (code, out) = lifeboat(&server, TOKEN, &["projects", "list", "--json"]);
    assert_eq!(code, 0);
    let listed: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(listed["items"][0]["id"], json!("note-7"));
    assert_eq!(listed["items"][0]["schema"], json!("note@1"));

    let (code, out) = lifeboat(&server, TOKEN, &["projects", "history", "note-7"]);
    assert_eq!(code, 0);
    assert_eq!(
        out.lines().count(),
        4,
        "a header and three revisions:\n{out}"
    );

    let (code, out) = lifeboat(&server, TOKEN, &["projects", "restore", "note-7", "1"]);
    assert_eq!(
        (code, out.trim()),
        (0, "project note-7 restored revision 1 as revision 4")
    );
    let (code, out) = lifeboat(&server, TOKEN, &["projects", "show", "note-7", "--json"]);
    assert_eq!(code, 0);
    let shown: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(
        (shown["revision"].clone(), shown["state"].clone()),
        (json!(4), json!({"text": "one"}))
    );
    let (code, out) = lifeboat(
        &server,
        TOKEN,
        &["projects", "show", "note-7", "--revision", "2"],
    );
    assert_eq!(code, 0);
    assert!(out.contains("\"text\": \"two\""), "{out}");
    assert_eq!(
        lifeboat(&server, TOKEN, &["projects", "show", "missing"]).0,
        1
    );
}

/// `lifeboat assets put|get|list` stream files over HTTP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_assets() {
    let server = TestServer::start().await;
    server.session(json!({"id": "job", "kind": "render"})).await;
    let source = server.dir.path().join("scene.bin");
    let bytes: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&source, &bytes).expect("source file");
    let source = source.to_str().expect("utf-8");
    let (code, out) = lifeboat(
        &server,
        TOKEN,
        &["assets", "put", "job", "scenes/1.bin", source],
    );
    assert_eq!(code, 0);
    assert!(
        out.starts_with("scenes/1.bin stored: 200000 bytes"),
        "{out}"
    );
    let target = server.dir.path().join("back.bin");
    let target_text = target.to_str().expect("utf-8");
    let (code, _) = lifeboat(
        &server,
        TOKEN,
        &["assets", "get", "job", "scenes/1.bin", target_text],
    );
    assert_eq!(code, 0);
    assert_eq!(std::fs::read(&target).expect("downloaded"), bytes);
    let (code, out) = lifeboat(&server, TOKEN, &["assets", "list", "job", "--json"]);
    assert_eq!(code, 0);
    let listed: Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(listed["items"][0]["size"], json!(200_000));
    assert_eq!(
        lifeboat(&server, TOKEN, &["assets", "get", "job", "nope"]).0,
        1
    );
    assert_eq!(
        lifeboat(&server, TOKEN, &["assets", "put", "job", "../x", source]).0,
        65,
        "a bad name is refused before any byte is sent"
    );
}

/// Every answer — data, problems, probes — tells a browser not to sniff, frame or leak it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_carries_security_headers() {
    let server = TestServer::start().await;
    for (path, token) in [
        ("/api/v1/sessions", true),
        ("/api/v1/sessions/nope", true),
        ("/api/v1/sessions", false),
        ("/healthz", false),
        ("/api/v1/openapi.json", false),
    ] {
        let mut request = server.http.get(format!("{}{path}", server.base));
        if token {
            request = request.bearer_auth(crate::harness::TOKEN);
        }
        let response = request.send().await.expect("request");
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        assert_eq!(
            header("x-content-type-options").as_deref(),
            Some("nosniff"),
            "{path}"
        );
        assert_eq!(header("x-frame-options").as_deref(), Some("DENY"), "{path}");
        assert_eq!(
            header("referrer-policy").as_deref(),
            Some("no-referrer"),
            "{path}"
        );
        assert!(
            header("content-security-policy").is_some_and(|v| v.contains("default-src 'none'")),
            "{path}"
        );
    }
}
