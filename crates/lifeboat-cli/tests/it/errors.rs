//! Every client error status of SPEC §6 that this API can produce, as RFC 9457 problems,
//! and that a refused request changes nothing.

use serde_json::{Value, json};

use crate::harness::{TOKEN, TestServer};

/// 400, 401, 404, 405, 409, 413, 415 and 422 with their slugs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_statuses() {
    let server = TestServer::start().await;
    server.session(json!({"id": "e", "kind": "render"})).await;

    // 400: malformed JSON, bad ids in the path, limit out of range, bad cursor, bad seq.
    let malformed = server
        .http
        .post(server.url("/sessions"))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body("{\"kind\": ")
        .send()
        .await
        .expect("send");
    assert_eq!(malformed.status(), 400);
    assert_eq!(
        malformed.headers()["content-type"],
        "application/problem+json"
    );
    let problem: Value = malformed.json().await.expect("json");
    assert_eq!(problem["type"], "/problems/malformed-request");
    for field in ["type", "title", "status", "detail"] {
        assert!(
            problem.get(field).is_some(),
            "{field} missing from {problem}"
        );
    }
    server
        .expect_problem("GET", "/sessions/.bad", None, 400, "invalid-id")
        .await;
    server
        .expect_problem("GET", "/sessions/a%20b", None, 400, "invalid-id")
        .await;
    server
        .expect_problem(
            "GET",
            &format!("/sessions/{}", "x".repeat(129)),
            None,
            400,
            "invalid-id",
        )
        .await;
    server
        .expect_problem("GET", "/sessions?limit=0", None, 400, "malformed-request")
        .await;
    server
        .expect_problem(
            "GET",
            "/sessions?limit=1001",
            None,
            400,
            "malformed-request",
        )
        .await;
    server
        .expect_problem("GET", "/recovery?limit=abc", None, 400, "malformed-request")
        .await;
    server
        .expect_problem(
            "GET",
            "/sessions?cursor=!!!",
            None,
            400,
            "malformed-request",
        )
        .await;
    server
        .expect_problem(
            "GET",
            "/sessions?status=running",
            None,
            400,
            "malformed-request",
        )
        .await;
    server
        .expect_problem(
            "GET",
            "/sessions/e/checkpoints/first",
            None,
            400,
            "malformed-request",
        )
        .await;
    let (code, _) = server.get("/sessions?limit=1000").await;
    assert_eq!(code, 200);

    // 401: no token, wrong token, wrong scheme.
    for auth in [None, Some("Bearer wrong"), Some("Basic dGVzdA==")] {
        let mut request = server.http.get(server.url("/sessions"));
        if let Some(auth) = auth {
            request = request.header("authorization", auth);
        }
        let response = request.send().await.expect("send");
        assert_eq!(response.status(), 401, "{auth:?}");
        let problem: Value = response.json().await.expect("json");
        assert_eq!(problem["type"], "/problems/unauthorized");
    }

    // 404: unknown session, checkpoint, endpoint.
    server
        .expect_problem("GET", "/sessions/nope", None, 404, "not-found")
        .await;
    server
        .expect_problem(
            "POST",
            "/sessions/nope/heartbeat",
            Some(json!({"attempt": 1})),
            404,
            "not-found",
        )
        .await;
    server
        .expect_problem("GET", "/sessions/e/checkpoints/7", None, 404, "not-found")
        .await;
    server
        .expect_problem(
            "GET",
            "/sessions/e/checkpoints/latest",
            None,
            404,
            "not-found",
        )
        .await;
    server
        .expect_problem("GET", "/nothing-here", None, 404, "not-found")
        .await;

    // 405.
    server
        .expect_problem(
            "PUT",
            "/sessions/e/heartbeat",
            Some(json!({})),
            405,
            "method-not-allowed",
        )
        .await;

    // 409: id taken, state conflict.
    server
        .expect_problem(
            "POST",
            "/sessions",
            Some(json!({"id": "e", "kind": "render"})),
            409,
            "already-exists",
        )
        .await;
    server.post("/sessions/e/complete", json!({})).await;
    server
        .expect_problem(
            "POST",
            "/sessions/e/heartbeat",
            Some(json!({"attempt": 1})),
            409,
            "session-not-active",
        )
        .await;

    // 413: a body over the limit, by one byte: the server reads all of it before it
    // knows, so it has nothing unread when it answers (with more, it answered before
    // reading the rest, closed, and the client could meet a broken pipe while still
    // writing instead of the answer).
    let (head, tail) = ("{\"attempt\":1,\"kind\":\"item\",\"data\":\"", "\"}");
    let filler = lifeboat_server::BODY_BYTES_MAX + 1 - head.len() - tail.len();
    let huge = format!("{head}{}{tail}", "x".repeat(filler));
    assert_eq!(huge.len(), lifeboat_server::BODY_BYTES_MAX + 1);
    // On a connection of its own, all the same: the server may close it after answering,
    // and a pooled client could pick it up for the next request.
    let response = reqwest::Client::new()
        .post(server.url("/sessions/e/checkpoints"))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 413);
    let problem: Value = response.json().await.expect("json");
    assert_eq!(problem["type"], "/problems/payload-too-large");

    // 415: not JSON.
    let response = server
        .http
        .post(server.url("/sessions"))
        .bearer_auth(TOKEN)
        .header("content-type", "text/plain")
        .body("{\"kind\":\"render\"}")
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 415);

    // 422: unknown fields, bad values, unknown enum names, unknown asset names.
    for body in [
        json!({"kind": "render", "colour": "red"}),
        json!({"kind": "render", "heartbeat_timeout_ms": 999}),
        json!({"kind": "render", "heartbeat_timeout_ms": 86_400_001}),
        json!({"kind": "render", "stall_timeout_ms": 10}),
        json!({"kind": "render", "checkpoint_retention": 0}),
        json!({"kind": "render", "max_attempts": 0}),
        json!({"kind": ""}),
        json!({"kind": "render", "id": "not/ok"}),
        json!({"title": "no kind"}),
        json!({"kind": 5}),
    ] {
        server
            .expect_problem("POST", "/sessions", Some(body), 422, "validation-failed")
            .await;
    }
    server.session(json!({"id": "v", "kind": "render"})).await;
    for body in [
        json!({"attempt": 1, "kind": "snapshot"}),
        json!({"attempt": 1}),
        json!({"kind": "item"}),
        json!({"attempt": 1, "kind": "item", "data_sha256": "xyz"}),
        json!({"attempt": 1, "kind": "item", "extra": 1}),
    ] {
        server
            .expect_problem(
                "POST",
                "/sessions/v/checkpoints",
                Some(body),
                422,
                "validation-failed",
            )
            .await;
    }
    server
        .expect_problem(
            "POST",
            "/sessions/v/checkpoints",
            Some(json!({"attempt": 1, "kind": "item", "assets": ["a.wav"]})),
            422,
            "unknown-asset",
        )
        .await;
    server
        .expect_problem(
            "POST",
            "/sessions/v/heartbeat",
            Some(json!({"attempt": 1, "progress": {"percent": 101}})),
            422,
            "validation-failed",
        )
        .await;
    server
        .expect_problem(
            "POST",
            "/sessions/v/recover",
            Some(json!({"option": "rewind"})),
            422,
            "validation-failed",
        )
        .await;

    // None of the refusals changed anything.
    let (_, v) = server.get("/sessions/v").await;
    assert_eq!(v["latest_checkpoint"], Value::Null);
    assert_eq!(v["progress"]["percent"], Value::Null);
    let (_, all) = server.get("/sessions").await;
    assert_eq!(all["items"].as_array().expect("items").len(), 2);
}
