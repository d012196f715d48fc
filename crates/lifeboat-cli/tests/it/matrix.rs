//! The tenancy matrix: every endpoint of the OpenAPI document × {no token, a revoked
//! key, a read-only key, another tenant's key, another tenant's admin key, a session token
//! of another session, a project token of another project}, each with the status it must
//! answer — and no answer, to anyone,
//! carries the owner's data.

use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::TestServer;

/// Written into the owner's session, checkpoint, project and asset: it must never show.
const MARKER: &str = "acme-secret-7f3a";

#[derive(Debug, Clone, Copy, PartialEq)]
enum Caller {
    NoToken,
    Revoked,
    ReadOnly,
    OtherTenant,
    OtherTenantAdmin,
    OtherSessionToken,
    OtherProjectToken,
}

struct Request {
    method: Method,
    template: String,
    path: String,
    content_type: &'static str,
    body: Option<Vec<u8>>,
}

/// The concrete request for an endpoint, against the owner's resources.
fn request(method: &str, template: &str, key_id: &str, token_id: &str) -> Request {
    let path = template
        .trim_start_matches("/api/v1")
        .replace("/sessions/{id}/assets/{name}", "/sessions/s1/assets/a.bin")
        .replace("/projects/{id}/assets/{name}", "/projects/p1/assets/c.bin")
        .replace("{seq}/assets/{name}", "2/assets/a.bin")
        .replace("/sessions/{id}", "/sessions/s1")
        .replace("/projects/{id}", "/projects/p1")
        .replace("/keys/{id}", &format!("/keys/{key_id}"))
        .replace("{token_id}", token_id)
        .replace("/schemas/{name}/{version}", "/schemas/doc/1")
        .replace("{seq}", "1");
    assert!(!path.contains('{'), "no fixture for {template}");
    let method = Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
    let json = |value: Value| Some(value.to_string().into_bytes());
    let is_asset = path.contains("/assets/") && !path.ends_with("/register");
    let (path, content_type, body) = match (method.as_str(), template) {
        ("PUT", _) if is_asset => (path, "application/octet-stream", Some(b"bytes".to_vec())),
        ("POST", _) if is_asset => (
            format!("{path}?offset=0"),
            "application/octet-stream",
            Some(b"bytes".to_vec()),
        ),
        ("PATCH", _) => (path, "application/merge-patch+json", json(json!({"x": 2}))),
        ("POST", "/api/v1/admin/import") => (path, "application/x-tar", Some(vec![0; 1024])),
        ("GET" | "DELETE", _) => (path, "application/json", None),
        (_, template) => {
            let body = match template.rsplit('/').next().unwrap_or("") {
                "sessions" => json!({"id": "s9", "kind": "k"}),
                "heartbeat" | "complete" | "pause" => json!({"attempt": 1}),
                "checkpoints" => json!({"attempt": 1, "kind": "item", "data": {}}),
                "fail" => json!({"attempt": 1, "error": "x"}),
                "recover" => json!({"option": "continue"}),
                "register" => json!({"name": "r.bin", "path": "/etc/hostname"}),
                "restore" => json!({"revision": 1}),
                "{id}" => json!({"state": {"x": 1}}),
                "{version}" => json!({"type": "object"}),
                "keys" => json!({"tenant": "acme", "scopes": ["read"]}),
                _ => json!({}),
            };
            (path, "application/json", json(body))
        }
    };
    Request {
        method,
        template: template.to_owned(),
        path,
        content_type,
        body,
    }
}

fn is_admin(template: &str) -> bool {
    let path = template.trim_start_matches("/api/v1");
    path.starts_with("/keys") || path.starts_with("/admin/") || path.starts_with("/audit")
}

/// Creates a resource of the caller's own tenant under a name of its choosing.
fn creates_own(method: &Method, template: &str) -> bool {
    matches!(
        (method.as_str(), template),
        ("POST", "/api/v1/sessions")
            | ("PUT", "/api/v1/projects/{id}")
            | ("POST", "/api/v1/projects/{id}/token")
            | ("PUT", "/api/v1/schemas/{name}/{version}")
    )
}

/// Names the owner's session, project, schema or key.
fn names_a_resource(template: &str) -> bool {
    template.contains('{')
}

fn expected(caller: Caller, request: &Request) -> &'static [u16] {
    let read = request.method == Method::GET;
    match caller {
        Caller::NoToken | Caller::Revoked => &[401],
        Caller::OtherSessionToken => &[403],
        // `/recovery` answers, with the token's own project's sessions only.
        Caller::OtherProjectToken if request.path == "/recovery" => &[200],
        Caller::OtherProjectToken => &[403],
        Caller::ReadOnly if read && !is_admin(&request.template) => &[200],
        Caller::ReadOnly => &[403],
        Caller::OtherTenant if is_admin(&request.template) => &[403],
        Caller::OtherTenantAdmin if is_admin(&request.template) => {
            match (request.method.as_str(), request.template.as_str()) {
                // Keys for another tenant, and whole-store work, need the bootstrap key.
                ("POST", "/api/v1/keys" | "/api/v1/admin/cleanup" | "/api/v1/admin/verify")
                | ("GET", "/api/v1/admin/cluster") => &[403],
                ("DELETE", _) => &[404],
                ("POST", "/api/v1/admin/import") => &[422],
                _ => &[200],
            }
        }
        Caller::OtherTenantAdmin => expected(Caller::OtherTenant, request),
        Caller::OtherTenant if creates_own(&request.method, &request.template) => &[201],
        Caller::OtherTenant if names_a_resource(&request.template) => &[404],
        Caller::OtherTenant => &[200],
    }
}

async fn send(server: &TestServer, token: Option<&str>, request: &Request) -> (u16, String) {
    let mut builder = server
        .http
        .request(request.method.clone(), server.url(&request.path))
        .header("content-type", request.content_type)
        .header("last-event-id", "0");
    if let Some(token) = token {
        builder = builder.bearer_auth(token);
    }
    if let Some(body) = &request.body {
        builder = builder.body(body.clone());
    }
    let response = builder.send().await.expect("request");
    let status = response.status().as_u16();
    // An event stream never ends: read what it sent at once, then hang up.
    let text = if request.path.starts_with("/events") {
        let mut response = response;
        let mut text = String::new();
        while let Ok(Ok(Some(chunk))) =
            tokio::time::timeout(std::time::Duration::from_millis(300), response.chunk()).await
        {
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
        text
    } else {
        response.text().await.unwrap_or_default()
    };
    (status, text)
}

async fn make_key(server: &TestServer, tenant: &str, scopes: &[&str]) -> (String, String) {
    let (status, created) = server
        .post("/keys", json!({"tenant": tenant, "scopes": scopes}))
        .await;
    assert_eq!(status, 201, "{created}");
    let text = |field: &str| created[field].as_str().expect(field).to_owned();
    (text("key"), text("id"))
}

async fn as_owner(server: &TestServer, owner: &str, method: &str, path: &str, body: Value) {
    let method = Method::from_bytes(method.as_bytes()).expect("method");
    let response = server
        .http
        .request(method, server.url(path))
        .bearer_auth(owner)
        .json(&body)
        .send()
        .await
        .expect("request");
    assert!(
        response.status().is_success(),
        "{path}: {}",
        response.status()
    );
}

/// What the owner sees of its own resources.
async fn owner_view(server: &TestServer, owner: &str) -> Vec<String> {
    let mut seen = Vec::new();
    for path in [
        "/sessions/s1",
        "/sessions/s1/checkpoints",
        "/sessions/s2",
        "/projects/p1",
        "/projects/p1/revisions",
        "/sessions/s1/assets",
        "/projects/p1/assets",
        "/schemas/doc/1",
    ] {
        let response = server
            .http
            .get(server.url(path))
            .bearer_auth(owner)
            .send()
            .await
            .expect("request");
        let mut body: Value = response.json().await.unwrap_or(Value::Null);
        // Reading moves nothing but the lease clock; leave out what time changes.
        if let Some(object) = body.as_object_mut() {
            for volatile in ["lease_expires_at", "updated_at"] {
                object.remove(volatile);
            }
        }
        seen.push(format!("{path}: {body}"));
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_refuses_whoever_does_not_belong() {
    let server = TestServer::start().await;
    let (owner, _) = make_key(&server, "acme", &["read", "write", "admin"]).await;
    let (reader, _) = make_key(&server, "acme", &["read"]).await;
    let (revoked, revoked_id) = make_key(&server, "acme", &["read", "write", "admin"]).await;
    let (other, _) = make_key(&server, "other", &["read", "write"]).await;
    let (other_admin, _) = make_key(&server, "third", &["read", "write", "admin"]).await;
    let (_, victim_id) = make_key(&server, "acme", &["read"]).await;
    assert_eq!(
        server
            .send("DELETE", &format!("/keys/{revoked_id}"), &[], None)
            .await
            .status,
        204
    );

    let long = json!(3_600_000);
    as_owner(
        &server,
        &owner,
        "PUT",
        "/schemas/doc/1",
        json!({"type": "object"}),
    )
    .await;
    as_owner(
        &server,
        &owner,
        "PUT",
        "/projects/p1",
        json!({"state": {"note": MARKER}, "title": MARKER, "schema": "doc@1"}),
    )
    .await;
    for id in ["s1", "s2"] {
        as_owner(&server, &owner, "POST", "/sessions",
            json!({"id": id, "kind": "k", "title": MARKER, "project_id": "p1", "heartbeat_timeout_ms": long})).await;
    }
    as_owner(
        &server,
        &owner,
        "POST",
        "/sessions/s1/checkpoints",
        json!({"attempt": 1, "kind": "item", "data": {"note": MARKER}}),
    )
    .await;
    for path in ["/sessions/s1/assets/a.bin", "/projects/p1/assets/c.bin"] {
        let response = server
            .http
            .put(server.url(path))
            .bearer_auth(&owner)
            .body(MARKER)
            .send()
            .await
            .expect("upload");
        assert_eq!(response.status(), 201);
    }
    as_owner(
        &server,
        &owner,
        "POST",
        "/sessions/s1/checkpoints",
        json!({"attempt": 1, "kind": "item", "data": {}, "assets": ["a.bin"]}),
    )
    .await;
    let token = {
        let response = server
            .http
            .post(server.url("/sessions/s2/token"))
            .bearer_auth(&owner)
            .json(&json!({}))
            .send()
            .await
            .expect("token");
        let body: Value = response.json().await.expect("json");
        body["token"].as_str().expect("token").to_owned()
    };
    let project_token = |project: &'static str| {
        let (http, url, owner) = (
            server.http.clone(),
            server.url(&format!("/projects/{project}/token")),
            owner.clone(),
        );
        async move {
            let response = http
                .post(url)
                .bearer_auth(&owner)
                .json(&json!({}))
                .send()
                .await
                .expect("token");
            let body: Value = response.json().await.expect("json");
            let text = |field: &str| body[field].as_str().expect(field).to_owned();
            (text("token"), text("id"))
        }
    };
    // A stopped session, so that `/recovery` has something to show (or to leak).
    as_owner(&server, &owner, "POST", "/sessions/s1/pause", json!({})).await;
    let (_, owner_token_id) = project_token("p1").await;
    let (other_project_token, _) = project_token("p2").await;
    let before = owner_view(&server, &owner).await;

    let spec: Value = reqwest::get(format!("{}/api/v1/openapi.json", server.base))
        .await
        .expect("openapi")
        .json()
        .await
        .expect("json");
    let mut requests = Vec::new();
    for (template, operations) in spec["paths"].as_object().expect("paths") {
        for method in operations.as_object().expect("operations").keys() {
            requests.push(request(method, template, &victim_id, &owner_token_id));
        }
    }
    // Another tenant's creations come last: they take the owner's names in its own
    // tenant, after which those names are no longer 404 there.
    requests.sort_by_key(|r| creates_own(&r.method, &r.template));
    assert!(requests.len() >= 40, "only {} endpoints", requests.len());

    let mut checked = 0;
    for caller in [
        Caller::NoToken,
        Caller::Revoked,
        Caller::ReadOnly,
        Caller::OtherSessionToken,
        Caller::OtherProjectToken,
        Caller::OtherTenant,
        Caller::OtherTenantAdmin,
    ] {
        let token = match caller {
            Caller::NoToken => None,
            Caller::Revoked => Some(revoked.as_str()),
            Caller::ReadOnly => Some(reader.as_str()),
            Caller::OtherTenant => Some(other.as_str()),
            Caller::OtherTenantAdmin => Some(other_admin.as_str()),
            Caller::OtherSessionToken => Some(token.as_str()),
            Caller::OtherProjectToken => Some(other_project_token.as_str()),
        };
        for request in &requests {
            let (status, body) = send(&server, token, request).await;
            let allowed = expected(caller, request);
            assert!(
                allowed.contains(&status),
                "{caller:?} {} {}: {status}, expected {allowed:?}: {body}",
                request.method,
                request.path
            );
            if caller != Caller::ReadOnly {
                assert!(
                    !body.contains(MARKER),
                    "{caller:?} {} {} leaked the owner's data: {body}",
                    request.method,
                    request.path
                );
            }
            checked += 1;
        }
    }
    assert_eq!(
        owner_view(&server, &owner).await,
        before,
        "nothing of the owner's changed"
    );
    println!("tenancy matrix: {checked} requests checked");
}
