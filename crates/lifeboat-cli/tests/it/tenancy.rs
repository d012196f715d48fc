//! Tenants and keys: another tenant's resources answer 404 and never appear in lists or
//! event streams; a missing scope is 403; a revoked or unknown key is 401.

use serde_json::{Value, json};

use crate::events::read_events_as;
use crate::harness::TestServer;

async fn as_key(
    server: &TestServer,
    token: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut request = server
        .http
        .request(method, server.url(path))
        .bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// The token with its last character changed.
fn tampered(token: &str) -> String {
    let last = if token.ends_with('0') { '1' } else { '0' };
    format!("{}{last}", &token[..token.len() - 1])
}

async fn key(server: &TestServer, tenant: &str, scopes: &[&str]) -> String {
    let (status, created) = server
        .post("/keys", json!({"tenant": tenant, "scopes": scopes}))
        .await;
    assert_eq!(status, 201, "{created}");
    let key = created["key"].as_str().expect("key").to_owned();
    assert!(key.starts_with(&format!("lb_{}_", created["id"].as_str().expect("id"))));
    assert!(
        key.len() >= 3 + 16 + 1 + 64,
        "at least 256 bits of secret: {key}"
    );
    key
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_are_isolated_and_scopes_enforced() {
    let server = TestServer::start().await;
    let acme = key(&server, "acme", &["read", "write"]).await;
    let other = key(&server, "other", &["read", "write"]).await;
    let reader = key(&server, "acme", &["read"]).await;
    let acme_admin = key(&server, "acme", &["admin"]).await;

    assert_eq!(
        as_key(
            &server,
            &acme,
            "POST",
            "/sessions",
            Some(json!({"id": "s1", "kind": "k"}))
        )
        .await
        .0,
        201
    );
    assert_eq!(
        as_key(
            &server,
            &acme,
            "PUT",
            "/projects/p1",
            Some(json!({"state": {"secret": 1}}))
        )
        .await
        .0,
        201
    );

    // Another tenant: 404 for every resource, nothing in lists; the same ids are free there.
    for (method, path, body) in [
        ("GET", "/sessions/s1", None),
        ("GET", "/sessions/s1/checkpoints", None),
        ("GET", "/sessions/s1/recovery", None),
        (
            "POST",
            "/sessions/s1/heartbeat",
            Some(json!({"attempt": 1})),
        ),
        (
            "POST",
            "/sessions/s1/checkpoints",
            Some(json!({"attempt": 1, "kind": "item"})),
        ),
        ("POST", "/sessions/s1/cancel", Some(json!({}))),
        ("GET", "/projects/p1", None),
        ("GET", "/projects/p1/revisions", None),
        ("DELETE", "/projects/p1", None),
        ("GET", "/sessions/s1/assets", None),
    ] {
        let (status, body) = as_key(&server, &other, method, path, body).await;
        assert_eq!(status, 404, "{method} {path} as another tenant: {body}");
    }
    let (_, sessions) = as_key(&server, &other, "GET", "/sessions", None).await;
    assert_eq!(sessions["items"], json!([]));
    let (_, projects) = as_key(&server, &other, "GET", "/projects", None).await;
    assert_eq!(projects["items"], json!([]));
    let (_, recovery) = as_key(&server, &other, "GET", "/recovery", None).await;
    assert_eq!(recovery["items"], json!([]));
    assert_eq!(
        as_key(
            &server,
            &other,
            "POST",
            "/sessions",
            Some(json!({"id": "s1", "kind": "k"}))
        )
        .await
        .0,
        201
    );
    let events = read_events_as(&server, &other, "", Some(0), 1).await;
    assert_eq!(events[0].data["data"]["session_id"], json!("s1"));
    assert!(
        events
            .iter()
            .all(|e| e.data["data"]["project_id"] != json!("p1"))
    );
    let (_, theirs) = as_key(&server, &acme, "GET", "/sessions/s1", None).await;
    assert_eq!(theirs["kind"], json!("k"));

    // Scopes.
    assert_eq!(
        as_key(&server, &reader, "GET", "/sessions/s1", None)
            .await
            .0,
        200
    );
    let (status, problem) = as_key(
        &server,
        &reader,
        "POST",
        "/sessions/s1/heartbeat",
        Some(json!({"attempt": 1})),
    )
    .await;
    assert_eq!(
        (status, problem["type"].clone()),
        (403, json!("/problems/forbidden"))
    );
    assert_eq!(as_key(&server, &acme, "GET", "/keys", None).await.0, 403);
    assert_eq!(
        as_key(&server, &acme, "POST", "/admin/cleanup", None)
            .await
            .0,
        403
    );
    let (status, _) = as_key(
        &server,
        &acme_admin,
        "POST",
        "/keys",
        Some(json!({"tenant": "other", "scopes": ["read"]})),
    )
    .await;
    assert_eq!(
        status, 403,
        "a tenant admin cannot make keys for another tenant"
    );
    let (status, _) = as_key(
        &server,
        &acme_admin,
        "POST",
        "/keys",
        Some(json!({"tenant": "acme", "scopes": ["read"]})),
    )
    .await;
    assert_eq!(status, 201);
    let (_, listed) = as_key(&server, &acme_admin, "GET", "/keys", None).await;
    let tenants: Vec<&Value> = listed["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|k| &k["tenant"])
        .collect();
    assert!(tenants.iter().all(|t| **t == json!("acme")), "{listed}");
    assert!(
        listed["items"]
            .as_array()
            .expect("items")
            .iter()
            .all(|k| k.get("key").is_none()),
        "no secrets"
    );
    assert_eq!(
        as_key(&server, &acme_admin, "POST", "/admin/verify", None)
            .await
            .0,
        403
    );
    let (status, _) = server
        .post("/keys", json!({"tenant": "acme", "scopes": ["root"]}))
        .await;
    assert_eq!(status, 422);

    // Revocation takes effect at once; unknown and missing tokens are 401.
    let id = acme.split('_').nth(1).expect("id").to_owned();
    assert_eq!(
        server
            .send("DELETE", &format!("/keys/{id}"), &[], None)
            .await
            .status,
        204
    );
    assert_eq!(
        as_key(&server, &acme, "GET", "/sessions", None).await.0,
        401
    );
    assert_eq!(
        as_key(&server, "lb_0000_ffff", "GET", "/sessions", None)
            .await
            .0,
        401
    );
    assert_eq!(
        as_key(&server, &tampered(&reader), "GET", "/sessions", None)
            .await
            .0,
        401
    );
    let response = server
        .http
        .get(server.url("/sessions"))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 401);
    assert_eq!(
        response.headers()["www-authenticate"],
        "Bearer realm=\"lifeboat\"",
        "a 401 names the scheme it wants (RFC 9110)"
    );
    assert_eq!(
        server.send("DELETE", "/keys/nope", &[], None).await.status,
        404
    );
    let (_, all) = server.get("/keys").await;
    let revoked = all["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|k| k["id"] == json!(id))
        .expect("listed");
    assert!(revoked["revoked_at"].is_string());
}

/// CORS is off unless origins are configured; then only those origins get it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_only_for_configured_origins() {
    let http = reqwest::Client::new();
    let preflight = |base: String, origin: &'static str| {
        let http = http.clone();
        async move {
            http.request(
                reqwest::Method::OPTIONS,
                format!("{base}/api/v1/projects/p"),
            )
            .header("origin", origin)
            .header("access-control-request-method", "PATCH")
            .header(
                "access-control-request-headers",
                "authorization,if-match,idempotency-key",
            )
            .send()
            .await
            .expect("preflight")
        }
    };
    let dir = tempfile::tempdir().expect("dir");
    let closed = crate::harness::Binary::start(dir.path());
    let answer = preflight(closed.base.clone(), "https://app.example").await;
    assert!(
        answer
            .headers()
            .get("access-control-allow-origin")
            .is_none(),
        "off by default"
    );
    drop(closed);

    let dir = tempfile::tempdir().expect("dir");
    let open =
        crate::harness::Binary::start_with(dir.path(), &["--cors-origin", "https://app.example"]);
    let answer = preflight(open.base.clone(), "https://app.example").await;
    assert_eq!(
        answer.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    let allowed = answer.headers()["access-control-allow-headers"]
        .to_str()
        .expect("text")
        .to_owned();
    assert!(
        allowed.contains("idempotency-key") && allowed.contains("if-match"),
        "{allowed}"
    );
    assert_eq!(
        answer.headers()["access-control-max-age"],
        "7200",
        "a preflight is cached, so a save on pagehide needs none"
    );
    let other = preflight(open.base.clone(), "https://evil.example").await;
    assert!(other.headers().get("access-control-allow-origin").is_none());
    let read = http
        .get(format!("{}/api/v1/projects", open.base))
        .header("origin", "https://app.example")
        .bearer_auth(crate::harness::TOKEN)
        .send()
        .await
        .expect("get");
    assert_eq!(read.status(), 200);
    assert_eq!(
        read.headers()["access-control-allow-origin"],
        "https://app.example"
    );
}

/// A key over its write rate gets 429 with Retry-After; reads are not limited; the bucket
/// refills.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_per_key_are_rate_limited() {
    let dir = tempfile::tempdir().expect("dir");
    let server = crate::harness::Binary::start_with(
        dir.path(),
        &["--write-rate-per-key", "1", "--write-burst-per-key", "3"],
    );
    let http = reqwest::Client::new();
    let api = format!("{}/api/v1", server.base);
    let write = |n: u32| {
        http.put(format!("{api}/projects/p{n}"))
            .bearer_auth(crate::harness::TOKEN)
            .json(&json!({"state": {}}))
            .send()
    };
    for n in 0..3 {
        assert_eq!(
            write(n).await.expect("write").status(),
            201,
            "within the burst"
        );
    }
    let limited = write(3).await.expect("write");
    assert_eq!(limited.status(), 429);
    let wait: u64 = limited.headers()["retry-after"]
        .to_str()
        .expect("text")
        .parse()
        .expect("seconds");
    assert!(wait >= 1);
    let problem: Value = limited.json().await.expect("problem");
    assert_eq!(problem["type"], json!("/problems/rate-limited"));
    let read = http
        .get(format!("{api}/projects"))
        .bearer_auth(crate::harness::TOKEN)
        .send()
        .await
        .expect("read");
    assert_eq!(read.status(), 200, "reads are not limited");
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    assert_eq!(
        write(4).await.expect("write").status(),
        201,
        "the bucket refills"
    );
    let (_, listed): (u16, Value) = {
        let response = http
            .get(format!("{api}/projects"))
            .bearer_auth(crate::harness::TOKEN)
            .send()
            .await
            .expect("list");
        (
            response.status().as_u16(),
            response.json().await.expect("json"),
        )
    };
    assert_eq!(
        listed["items"].as_array().expect("items").len(),
        4,
        "the refused write changed nothing"
    );
}

/// Recover, cancel, restore, deletes, key changes and cleanup are in the audit trail, with
/// the key that did them; a tenant's admin sees only its tenant's entries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_trail_names_who_did_what() {
    let server = TestServer::start().await;
    let admin = key(&server, "acme", &["admin"]).await;
    let admin_id = admin.split('_').nth(1).expect("id").to_owned();
    as_key(
        &server,
        &admin,
        "POST",
        "/sessions",
        Some(json!({"id": "s", "kind": "k"})),
    )
    .await;
    as_key(
        &server,
        &admin,
        "POST",
        "/sessions/s/pause",
        Some(json!({})),
    )
    .await;
    let (status, _) = as_key(
        &server,
        &admin,
        "POST",
        "/sessions/s/recover",
        Some(json!({"option": "continue"})),
    )
    .await;
    assert_eq!(status, 200);
    as_key(
        &server,
        &admin,
        "POST",
        "/sessions/s/cancel",
        Some(json!({})),
    )
    .await;
    as_key(
        &server,
        &admin,
        "PUT",
        "/projects/p",
        Some(json!({"state": {"v": 1}})),
    )
    .await;
    as_key(
        &server,
        &admin,
        "PUT",
        "/projects/p",
        Some(json!({"state": {"v": 2}})),
    )
    .await;
    as_key(
        &server,
        &admin,
        "POST",
        "/projects/p/restore",
        Some(json!({"revision": 1})),
    )
    .await;
    as_key(&server, &admin, "DELETE", "/projects/p", None).await;
    server.post("/admin/cleanup", json!({})).await;

    let (status, trail) = as_key(&server, &admin, "GET", "/audit", None).await;
    assert_eq!(status, 200, "{trail}");
    let actions: Vec<(&str, &str, &str)> = trail["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|e| {
            (
                e["action"].as_str().expect("action"),
                e["resource"].as_str().expect("resource"),
                e["actor"].as_str().expect("actor"),
            )
        })
        .collect();
    assert_eq!(
        actions,
        [
            ("project.delete", "project:p", admin_id.as_str()),
            ("project.restore", "project:p", admin_id.as_str()),
            ("session.cancel", "session:s", admin_id.as_str()),
            ("session.recover", "session:s", admin_id.as_str()),
        ],
        "newest first, only this tenant's"
    );
    assert_eq!(trail["items"][3]["detail"]["option"], json!("continue"));
    let (_, everything) = server.get("/audit").await;
    let all: Vec<&str> = everything["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|e| e["action"].as_str().expect("a"))
        .collect();
    assert_eq!(all.first(), Some(&"cleanup"));
    assert!(all.contains(&"key.create"), "{all:?}");
    let user = key(&server, "acme", &["read", "write"]).await;
    assert_eq!(as_key(&server, &user, "GET", "/audit", None).await.0, 403);
}

/// A session token acts only on its session's heartbeats, checkpoints, assets and
/// completion, and dies with the session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_tokens_act_on_one_session_only() {
    let server = TestServer::start().await;
    server
        .session(json!({"id": "mine", "kind": "recording"}))
        .await;
    server
        .session(json!({"id": "other", "kind": "recording"}))
        .await;
    let (status, created) = server.post("/sessions/mine/token", json!({})).await;
    assert_eq!(status, 201, "{created}");
    let token = created["token"].as_str().expect("token").to_owned();
    assert!(token.starts_with("lbs_"));

    assert_eq!(
        as_key(
            &server,
            &token,
            "POST",
            "/sessions/mine/heartbeat",
            Some(json!({"attempt": 1}))
        )
        .await
        .0,
        200
    );
    assert_eq!(
        as_key(
            &server,
            &token,
            "POST",
            "/sessions/mine/checkpoints",
            Some(json!({"attempt": 1, "kind": "item", "data": {}}))
        )
        .await
        .0,
        201
    );
    assert_eq!(
        as_key(&server, &token, "GET", "/sessions/mine", None)
            .await
            .0,
        200
    );
    let upload = server
        .http
        .put(server.url("/sessions/mine/assets/chunk.bin"))
        .bearer_auth(&token)
        .body(vec![1u8; 10])
        .send()
        .await
        .expect("upload");
    assert_eq!(upload.status(), 201);
    for (method, path, body) in [
        (
            "POST",
            "/sessions/other/heartbeat",
            Some(json!({"attempt": 1})),
        ),
        ("GET", "/sessions/other", None),
        ("GET", "/sessions", None),
        ("POST", "/sessions", Some(json!({"kind": "k"}))),
        (
            "POST",
            "/sessions/mine/recover",
            Some(json!({"option": "continue"})),
        ),
        ("POST", "/sessions/mine/token", None),
        ("GET", "/projects", None),
        ("GET", "/keys", None),
    ] {
        assert_eq!(
            as_key(&server, &token, method, path, body).await.0,
            403,
            "{method} {path}"
        );
    }
    assert_eq!(
        as_key(
            &server,
            &token,
            "POST",
            "/sessions/mine/complete",
            Some(json!({"attempt": 1}))
        )
        .await
        .0,
        200
    );
    assert_eq!(
        as_key(&server, &token, "GET", "/sessions/mine", None)
            .await
            .0,
        401,
        "it died with its session"
    );
    let (status, refused) = server.post("/sessions/mine/token", json!({})).await;
    assert_eq!(status, 409, "no token for an ended session: {refused}");
    assert_eq!(refused["type"], "/problems/session-not-active");
    let forged = tampered(&token);
    assert_eq!(
        as_key(&server, &forged, "GET", "/sessions/mine", None)
            .await
            .0,
        401
    );
}
