//! Project tokens (SPEC §9 r2): a page holds a token for one project, never a tenant key.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::{TOKEN, TestServer, millis, now_ms};

/// A request with `token`: its status and JSON body (`null` if none).
async fn as_token(
    server: &TestServer,
    token: &str,
    method: &str,
    path: &str,
    body: Option<(&str, Vec<u8>)>,
) -> (u16, Value) {
    let method = Method::from_bytes(method.as_bytes()).expect("method");
    let mut request = server
        .http
        .request(method, server.url(path))
        .bearer_auth(token);
    if let Some((content_type, body)) = body {
        request = request.header("content-type", content_type).body(body);
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    // An event stream never ends: its status is all this needs.
    if path.starts_with("/events") {
        return (status, Value::Null);
    }
    (status, response.json().await.unwrap_or(Value::Null))
}

fn json_body(value: Value) -> Option<(&'static str, Vec<u8>)> {
    Some(("application/json", value.to_string().into_bytes()))
}

async fn project_token(server: &TestServer, project: &str, body: Value) -> (String, String) {
    let (status, created) = server
        .post(&format!("/projects/{project}/token"), body)
        .await;
    assert_eq!(status, 201, "{created}");
    let text = |field: &str| created[field].as_str().expect(field).to_owned();
    let token = text("token");
    assert!(
        token.starts_with(&format!("lbp_{}_", text("id"))),
        "{token}"
    );
    (token, text("id"))
}

/// A page's token saves, reads and recovers its project — even creating it — and is
/// refused (403) everything else, including another project's sessions and events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn project_tokens_act_on_one_project_only() {
    let server = TestServer::start().await;
    let (status, created) = server.post("/projects/doc/token", json!({})).await;
    assert_eq!(status, 201, "{created}");
    let token = created["token"].as_str().expect("token").to_owned();
    assert_eq!(created["scopes"], json!(["read", "write"]));
    let lives = millis(&created["expires_at"]) - now_ms().0;
    assert!(
        (86_390_000..=86_400_000).contains(&lives),
        "a day by default: {lives} ms"
    );

    // The project did not exist: the page creates it, saves and reads it.
    let put = json_body(json!({"state": {"title": "draft"}}));
    assert_eq!(
        as_token(&server, &token, "PUT", "/projects/doc", put)
            .await
            .0,
        201
    );
    let patch = Some((
        "application/merge-patch+json",
        br#"{"body":"hello"}"#.to_vec(),
    ));
    let (status, saved) = as_token(&server, &token, "PATCH", "/projects/doc", patch).await;
    assert_eq!(status, 200, "{saved}");
    assert_eq!(saved["revision"], 2);
    let (status, read) = as_token(&server, &token, "GET", "/projects/doc", None).await;
    assert_eq!(status, 200);
    assert_eq!(read["state"], json!({"title": "draft", "body": "hello"}));
    for path in ["/projects/doc/revisions", "/projects/doc/assets"] {
        assert_eq!(as_token(&server, &token, "GET", path, None).await.0, 200);
    }
    let restore = json_body(json!({"revision": 1}));
    assert_eq!(
        as_token(&server, &token, "POST", "/projects/doc/restore", restore)
            .await
            .0,
        200
    );
    let bytes = Some(("application/octet-stream", b"cover".to_vec()));
    assert_eq!(
        as_token(
            &server,
            &token,
            "PUT",
            "/projects/doc/assets/cover.png",
            bytes
        )
        .await
        .0,
        201
    );
    assert_eq!(
        as_token(&server, &token, "GET", "/events?project_id=doc", None)
            .await
            .0,
        200
    );

    // Its sessions' recovery, and no one else's.
    for (id, project) in [("mine", "doc"), ("theirs", "other")] {
        server
            .session(json!({"id": id, "kind": "editor", "project_id": project}))
            .await;
        let (status, _) = server
            .post(&format!("/sessions/{id}/pause"), json!({}))
            .await;
        assert_eq!(status, 200);
    }
    let (status, listed) = as_token(&server, &token, "GET", "/recovery", None).await;
    assert_eq!(status, 200);
    let ids: Vec<&str> = listed["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|r| r["session"]["id"].as_str())
        .collect();
    assert_eq!(ids, ["mine"], "only its project's sessions");
    assert_eq!(
        as_token(&server, &token, "GET", "/sessions/mine/recovery", None)
            .await
            .0,
        200
    );
    let recover = json_body(json!({"option": "continue"}));
    let (status, recovered) =
        as_token(&server, &token, "POST", "/sessions/mine/recover", recover).await;
    assert_eq!(status, 200, "{recovered}");
    assert_eq!(recovered["session"]["attempt"], 2);

    for (method, path, body) in [
        ("DELETE", "/projects/doc", None),
        ("GET", "/projects", None),
        ("GET", "/projects/other", None),
        ("PUT", "/projects/other", json_body(json!({"state": {}}))),
        ("GET", "/sessions/mine", None),
        ("GET", "/sessions", None),
        ("POST", "/sessions", json_body(json!({"kind": "k"}))),
        ("GET", "/sessions/theirs/recovery", None),
        ("GET", "/sessions/nobody/recovery", None),
        (
            "POST",
            "/sessions/theirs/recover",
            json_body(json!({"option": "continue"})),
        ),
        ("POST", "/sessions/theirs/cancel", None),
        ("GET", "/recovery?project_id=other", None),
        ("GET", "/events", None),
        ("GET", "/events?project_id=other", None),
        ("GET", "/events?project_id=doc&project_id=other", None),
        ("POST", "/projects/doc/token", json_body(json!({}))),
        (
            "POST",
            "/projects/doc/assets/register",
            json_body(json!({"name": "x", "path": "/etc/hostname"})),
        ),
        ("GET", "/stats", None),
        ("GET", "/keys", None),
        ("POST", "/admin/sweep", None),
    ] {
        let (status, problem) = as_token(&server, &token, method, path, body).await;
        assert_eq!(status, 403, "{method} {path}: {problem}");
    }
    let (_, theirs) = server.get("/sessions/theirs").await;
    assert_eq!(
        theirs["status"], "paused",
        "a refused request changed nothing"
    );

    // Discard (cancel) of its project's sessions that stopped, never of live work.
    server
        .session(json!({"id": "live", "kind": "editor", "project_id": "doc"}))
        .await;
    let (status, _) = as_token(&server, &token, "POST", "/sessions/live/cancel", None).await;
    assert_eq!(
        status, 403,
        "an active session is not the prompt's to discard"
    );
    assert_eq!(server.get("/sessions/live").await.1["status"], "active");
    server
        .session(json!({"id": "stopped", "kind": "editor", "project_id": "doc"}))
        .await;
    server.post("/sessions/stopped/pause", json!({})).await;
    let cancel = json_body(json!({"attempt": 1}));
    let (status, cancelled) =
        as_token(&server, &token, "POST", "/sessions/stopped/cancel", cancel).await;
    assert_eq!(status, 200, "{cancelled}");
    assert_eq!(cancelled["status"], "cancelled");
    assert_eq!(
        server.get("/projects/other").await.0,
        404,
        "a refused PUT made nothing"
    );
}

/// Scopes, lifetime, revocation, and bad requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn project_tokens_have_scopes_expire_and_are_revoked_at_once() {
    let server = TestServer::start().await;
    server
        .call("PUT", "/projects/doc", Some(json!({"state": {"a": 1}})))
        .await;

    let (reader, _) = project_token(&server, "doc", json!({"scopes": ["read"]})).await;
    assert_eq!(
        as_token(&server, &reader, "GET", "/projects/doc", None)
            .await
            .0,
        200
    );
    let patch = Some(("application/merge-patch+json", br#"{"a":2}"#.to_vec()));
    assert_eq!(
        as_token(&server, &reader, "PATCH", "/projects/doc", patch)
            .await
            .0,
        403
    );

    let (short, _) = project_token(&server, "doc", json!({"ttl_ms": 1})).await;
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let (status, problem) = as_token(&server, &short, "GET", "/projects/doc", None).await;
    assert_eq!(status, 401, "expired: {problem}");

    // No body at all is the defaults.
    let response = server
        .http
        .post(server.url("/projects/doc/token"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 201);

    let (token, id) = project_token(&server, "doc", json!({"ttl_ms": 3_600_000})).await;
    assert_eq!(
        as_token(&server, &token, "GET", "/projects/doc", None)
            .await
            .0,
        200
    );
    assert_eq!(
        server
            .send("DELETE", &format!("/projects/other/token/{id}"), &[], None)
            .await
            .status,
        404,
        "a token is revoked through its own project"
    );
    assert_eq!(
        server
            .send("DELETE", "/projects/doc/token/0123456789abcdef", &[], None)
            .await
            .status,
        404
    );
    assert_eq!(
        server
            .send("DELETE", &format!("/projects/doc/token/{id}"), &[], None)
            .await
            .status,
        204
    );
    assert_eq!(
        as_token(&server, &token, "GET", "/projects/doc", None)
            .await
            .0,
        401,
        "revoked at once"
    );

    let thirty_days: u64 = 30 * 24 * 3_600_000;
    for body in [
        json!({"ttl_ms": 0}),
        json!({"ttl_ms": thirty_days + 1}),
        json!({"ttl_ms": -5}),
        json!({"scopes": []}),
        json!({"scopes": ["admin"]}),
        json!({"lifetime": 5}),
    ] {
        let (status, problem) = server.post("/projects/doc/token", body.clone()).await;
        assert_eq!(status, 422, "{body}: {problem}");
    }
    let (longest, _) = project_token(&server, "doc", json!({"ttl_ms": thirty_days})).await;
    assert_eq!(
        as_token(&server, &longest, "GET", "/projects/doc", None)
            .await
            .0,
        200
    );
    assert_eq!(
        as_token(&server, &longest, "HEAD", "/projects/doc", None)
            .await
            .0,
        200
    );
    let last = longest.chars().last().expect("a token");
    let forged = format!(
        "{}{}",
        &longest[..longest.len() - 1],
        if last == '0' { '1' } else { '0' }
    );
    assert_eq!(
        as_token(&server, &forged, "GET", "/projects/doc", None)
            .await
            .0,
        401,
        "a live token with one character changed"
    );
    let (status, _) = server.post("/projects/bad%20id/token", json!({})).await;
    assert_eq!(status, 400);

    // Only a key that may write makes them; another tenant cannot revoke them.
    let (_, read_key) = server
        .post("/keys", json!({"tenant": "default", "scopes": ["read"]}))
        .await;
    let read_key = read_key["key"].as_str().expect("key").to_owned();
    let (status, _) = as_token(
        &server,
        &read_key,
        "POST",
        "/projects/doc/token",
        json_body(json!({})),
    )
    .await;
    assert_eq!(status, 403);
    let (_, other) = server
        .post(
            "/keys",
            json!({"tenant": "other", "scopes": ["read", "write"]}),
        )
        .await;
    let other = other["key"].as_str().expect("key").to_owned();
    let (_, id) = project_token(&server, "doc", json!({})).await;
    let (status, _) = as_token(
        &server,
        &other,
        "DELETE",
        &format!("/projects/doc/token/{id}"),
        None,
    )
    .await;
    assert_eq!(status, 404);
}

/// An event stream opened with a token ends within about a second of the token's
/// revocation or expiry, and one opened with a key when the key is revoked: a long-lived
/// answer does not outlive its credential.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_streams_end_when_their_token_or_key_stops_working() {
    let server = TestServer::start().await;
    let (token, id) = project_token(&server, "doc", json!({})).await;
    let (expiring, _) = project_token(&server, "doc", json!({"ttl_ms": 1_500})).await;
    let (_, key) = server
        .post("/keys", json!({"tenant": "default", "scopes": ["read"]}))
        .await;
    let (key_id, key) = (
        key["id"].as_str().expect("id").to_owned(),
        key["key"].as_str().expect("key").to_owned(),
    );
    let open = |bearer: String| {
        let (http, url) = (server.http.clone(), server.url("/events?project_id=doc"));
        async move {
            let response = http
                .get(url)
                .bearer_auth(bearer)
                .send()
                .await
                .expect("stream");
            assert_eq!(response.status(), 200);
            response
        }
    };
    let revoked_stream = open(token).await;
    let expiring_stream = open(expiring).await;
    let key_stream = open(key).await;
    let kept_stream = open(TOKEN.to_owned()).await;

    assert_eq!(
        server
            .send("DELETE", &format!("/projects/doc/token/{id}"), &[], None)
            .await
            .status,
        204
    );
    assert_eq!(
        server
            .send("DELETE", &format!("/keys/{key_id}"), &[], None)
            .await
            .status,
        204
    );
    let limit = Duration::from_secs(5);
    let (revoked, expired, key_revoked, kept) = tokio::join!(
        ends_within(revoked_stream, limit),
        ends_within(expiring_stream, limit),
        ends_within(key_stream, limit),
        ends_within(kept_stream, Duration::from_secs(3)),
    );
    println!(
        "streams ended: revoked token {revoked:?}, expired token {expired:?}, revoked key {key_revoked:?}"
    );
    assert!(revoked.is_some(), "the revoked token's stream went on");
    assert!(expired.is_some(), "the expired token's stream went on");
    assert!(key_revoked.is_some(), "the revoked key's stream went on");
    assert!(kept.is_none(), "a stream whose key still works goes on");
}

/// Reads an event stream until it ends: how long that took, or `None` if it had not
/// ended within `limit`.
async fn ends_within(mut response: reqwest::Response, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    loop {
        let left = limit.checked_sub(started.elapsed())?;
        match tokio::time::timeout(left, response.chunk()).await {
            Ok(Ok(Some(_))) => {}
            Ok(Ok(None) | Err(_)) => return Some(started.elapsed()),
            Err(_) => return None,
        }
    }
}

/// Making and revoking a token is in the audit trail; cleanup deletes expired tokens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn project_tokens_are_audited_and_purged_once_expired() {
    let server = TestServer::start().await;
    let (_, kept) = project_token(&server, "doc", json!({})).await;
    let (_, expired) = project_token(&server, "doc", json!({"ttl_ms": 1})).await;
    let revoke = |id: String| {
        let server = &server;
        async move {
            server
                .send("DELETE", &format!("/projects/doc/token/{id}"), &[], None)
                .await
                .status
        }
    };
    assert_eq!(revoke(kept.clone()).await, 204);
    let (status, audit) = server.get("/audit").await;
    assert_eq!(status, 200);
    let entries: Vec<(String, String)> = audit["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|e| {
            let text = |f: &str| e[f].as_str().unwrap_or_default().to_owned();
            (text("action"), text("resource"))
        })
        .collect();
    for (action, token) in [
        ("project.token.create", &kept),
        ("project.token.create", &expired),
        ("project.token.revoke", &kept),
    ] {
        let entry = (action.to_owned(), format!("project-token:{token}"));
        assert!(
            entries.contains(&entry),
            "{entry:?} missing from {entries:?}"
        );
    }

    tokio::time::sleep(Duration::from_millis(20)).await;
    let (status, _) = server.post("/admin/cleanup?dry_run=false", json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(revoke(expired).await, 404, "the expired token was purged");
    assert_eq!(
        revoke(kept).await,
        204,
        "a revoked but unexpired token is kept"
    );
}
