//! `Idempotency-Key` over HTTP: retries replay, reuse with another body is refused, a key
//! in flight is refused, and nothing is written twice.

use std::time::Duration;

use serde_json::json;
use tokio::io::AsyncWriteExt;

use crate::harness::{TOKEN, TestServer};

const JSON: &str = "application/json";

#[tokio::test]
async fn retried_checkpoint_create_returns_the_same_seq() {
    let server = TestServer::start().await;
    server.session(json!({"id": "job", "kind": "batch"})).await;
    let body = json!({"attempt": 1, "kind": "item", "data": {"n": 1}}).to_string();
    let key = [("idempotency-key", "\"ckpt-0001\"")];
    let first = server
        .send(
            "POST",
            "/sessions/job/checkpoints",
            &key,
            Some((JSON, body.clone())),
        )
        .await;
    assert_eq!(first.status, 201, "{}", first.body);
    for _ in 0..3 {
        let retry = server
            .send(
                "POST",
                "/sessions/job/checkpoints",
                &key,
                Some((JSON, body.clone())),
            )
            .await;
        assert_eq!(retry.status, 201);
        assert_eq!(
            retry.body, first.body,
            "the original response, byte for byte"
        );
    }
    let (_, listed) = server.get("/sessions/job/checkpoints").await;
    assert_eq!(
        listed["items"].as_array().expect("items").len(),
        1,
        "one checkpoint, not four"
    );

    // The bare (unquoted) form is the same key.
    let bare = server
        .send(
            "POST",
            "/sessions/job/checkpoints",
            &[("idempotency-key", "ckpt-0001")],
            Some((JSON, body.clone())),
        )
        .await;
    assert_eq!(bare.body["seq"], first.body["seq"]);

    let other_body = json!({"attempt": 1, "kind": "item", "data": {"n": 2}}).to_string();
    let reused = server
        .send(
            "POST",
            "/sessions/job/checkpoints",
            &key,
            Some((JSON, other_body)),
        )
        .await;
    assert_eq!(
        (reused.status, reused.slug()),
        (422, "idempotency-key-reused")
    );

    // A new key is a new checkpoint.
    let next = server
        .send(
            "POST",
            "/sessions/job/checkpoints",
            &[("idempotency-key", "ckpt-0002")],
            Some((JSON, body)),
        )
        .await;
    assert_eq!(
        next.body["seq"],
        json!(first.body["seq"].as_u64().expect("seq") + 1)
    );

    let blank = server
        .send(
            "POST",
            "/sessions/job/heartbeat",
            &[("idempotency-key", "\"\"")],
            Some((JSON, json!({"attempt": 1}).to_string())),
        )
        .await;
    assert_eq!((blank.status, blank.slug()), (400, "malformed-request"));
}

#[tokio::test]
async fn retried_creates_and_saves_do_not_write_twice() {
    let server = TestServer::start().await;
    let session = json!({"id": "once", "kind": "render"}).to_string();
    let key = [("idempotency-key", "create-once")];
    let first = server
        .send("POST", "/sessions", &key, Some((JSON, session.clone())))
        .await;
    let retry = server
        .send("POST", "/sessions", &key, Some((JSON, session.clone())))
        .await;
    assert_eq!(
        (first.status, retry.status),
        (201, 201),
        "a retry is not already-exists"
    );
    assert_eq!(first.body, retry.body);
    let without_key = server
        .send("POST", "/sessions", &[], Some((JSON, session)))
        .await;
    assert_eq!(without_key.slug(), "already-exists");

    let save = json!({"state": {"a": 1}}).to_string();
    let key = [("idempotency-key", "save-1")];
    let saved = server
        .send("PUT", "/projects/p", &key, Some((JSON, save.clone())))
        .await;
    let again = server
        .send("PUT", "/projects/p", &key, Some((JSON, save)))
        .await;
    assert_eq!((saved.status, again.status), (201, 201));
    assert_eq!(
        again.header("etag"),
        Some("\"1\""),
        "the replay carries the original ETag"
    );
    let patch = json!({"b": 2}).to_string();
    let key = [("idempotency-key", "patch-1")];
    for _ in 0..3 {
        let reply = server
            .send(
                "PATCH",
                "/projects/p",
                &key,
                Some(("application/merge-patch+json", patch.clone())),
            )
            .await;
        assert_eq!(
            (reply.status, reply.body["revision"].as_u64()),
            (200, Some(2))
        );
    }
    let (_, project) = server.get("/projects/p").await;
    assert_eq!(
        project["revision"],
        json!(2),
        "three PATCH retries made one revision"
    );

    // The same key on another route is another key.
    let recovered = server
        .send(
            "POST",
            "/sessions/once/pause",
            &[("idempotency-key", "patch-1")],
            None,
        )
        .await;
    assert_eq!(recovered.status, 200, "{}", recovered.body);
}

#[tokio::test]
async fn a_key_in_flight_is_refused_until_the_first_request_ends() {
    let server = TestServer::start().await;
    server
        .session(json!({"id": "slow", "kind": "upload"}))
        .await;
    let body = json!({"attempt": 1, "kind": "item", "data": {"big": "x".repeat(1000)}}).to_string();
    let address = server
        .base
        .strip_prefix("http://")
        .expect("http")
        .to_owned();
    let mut slow = tokio::net::TcpStream::connect(&address)
        .await
        .expect("connect");
    let head = format!(
        "POST /api/v1/sessions/slow/checkpoints HTTP/1.1\r\nhost: {address}\r\nauthorization: Bearer {TOKEN}\r\n\
         content-type: application/json\r\nidempotency-key: same\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    slow.write_all(head.as_bytes()).await.expect("head");
    slow.write_all(&body.as_bytes()[..10])
        .await
        .expect("part of the body");
    tokio::time::sleep(Duration::from_millis(500)).await;

    let second = server
        .send(
            "POST",
            "/sessions/slow/checkpoints",
            &[("idempotency-key", "same")],
            Some((JSON, body.clone())),
        )
        .await;
    assert_eq!(
        (second.status, second.slug()),
        (409, "idempotency-key-in-use")
    );

    slow.write_all(&body.as_bytes()[10..])
        .await
        .expect("rest of the body");
    let mut answer = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut slow, &mut answer)
        .await
        .expect("answer");
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");

    let retry = server
        .send(
            "POST",
            "/sessions/slow/checkpoints",
            &[("idempotency-key", "same")],
            Some((JSON, body)),
        )
        .await;
    assert_eq!((retry.status, retry.body["seq"].as_u64()), (201, Some(1)));
}

/// A key or token made with an `Idempotency-Key` is made once: a retry answers the same
/// credential (the same token, which works), the credential is listed and audited once,
/// and the same key with another body is refused.
#[tokio::test]
async fn retried_keys_and_tokens_are_made_once() {
    let server = TestServer::start().await;
    server.session(json!({"id": "job", "kind": "batch"})).await;
    let made = [
        (
            "/keys",
            json!({"tenant": "acme", "scopes": ["read"]}),
            json!({"tenant": "acme", "scopes": ["write"]}),
            "key",
        ),
        (
            "/sessions/job/token",
            json!({}),
            json!({"again": 1}),
            "token",
        ),
        (
            "/projects/doc/token",
            json!({"scopes": ["read"]}),
            json!({"scopes": ["write"]}),
            "token",
        ),
    ];
    for (path, body, other, field) in made {
        let key = [("idempotency-key", "made-once")];
        let send = |body: String| server.send("POST", path, &key, Some((JSON, body)));
        let first = send(body.to_string()).await;
        assert_eq!(first.status, 201, "{path}: {}", first.body);
        let retry = send(body.to_string()).await;
        assert_eq!(retry.status, 201, "{path}: {}", retry.body);
        assert_eq!(retry.body, first.body, "{path}: the same credential");
        let token = first.body[field]
            .as_str()
            .expect("the credential")
            .to_owned();
        let works = server
            .http
            .get(server.url("/stats"))
            .bearer_auth(&token)
            .send()
            .await
            .expect("a request with the credential");
        assert_ne!(works.status(), 401, "{path}: the replayed credential works");
        let other = send(other.to_string()).await;
        assert_eq!(other.status, 422, "{path}: {}", other.body);
        assert_eq!(other.slug(), "idempotency-key-reused");
    }
    let (_, keys) = server.get("/keys").await;
    let acme = keys["items"]
        .as_array()
        .expect("keys")
        .iter()
        .filter(|key| key["tenant"] == "acme")
        .count();
    assert_eq!(acme, 1, "one key made: {keys}");
    let (_, audit) = server.get("/audit").await;
    let created = |action: &str| {
        audit["items"]
            .as_array()
            .expect("audit")
            .iter()
            .filter(|entry| entry["action"] == action)
            .count()
    };
    assert_eq!(created("key.create"), 1, "{audit}");
    assert_eq!(created("project.token.create"), 1, "{audit}");
}
