//! The dashboard's live updates: `/live/events` (the API's event stream, signed in by the
//! cookie) and `/live.js` (the one script, loaded by the sessions page only).

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::harness::{TOKEN, TestServer};

/// A browser without a cookie jar that follows no redirect.
fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

/// Signs in with `key` and answers the `name=value` cookie to send back.
async fn sign_in(server: &TestServer, key: &str) -> String {
    let response = browser()
        .post(format!("{}/sign-in", server.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("key={key}"))
        .send()
        .await
        .expect("sign in");
    assert_eq!(response.status(), 303);
    let set = response.headers()["set-cookie"].to_str().expect("cookie");
    set.split(';').next().expect("a cookie").to_owned()
}

/// An API key of `tenant` with `scopes`: (id, key).
async fn key(server: &TestServer, tenant: &str, scopes: &[&str]) -> (String, String) {
    let (status, created) = server
        .post("/keys", json!({"tenant": tenant, "scopes": scopes}))
        .await;
    assert_eq!(status, 201, "{created}");
    let text = |field: &str| created[field].as_str().expect(field).to_owned();
    (text("id"), text("key"))
}

/// `GET` of a dashboard path, with the cookie if any.
async fn get(server: &TestServer, path: &str, cookie: Option<&str>) -> reqwest::Response {
    let mut request = browser().get(format!("{}{path}", server.base));
    if let Some(cookie) = cookie {
        request = request.header("cookie", cookie);
    }
    request.send().await.expect("request")
}

/// `POST` of the API as `key`.
async fn api_post(server: &TestServer, key: &str, path: &str, body: Value) -> u16 {
    let response = server
        .http
        .post(server.url(path))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .expect("request");
    response.status().as_u16()
}

/// The `(event, data)` frames of a stream until it has `count` of them.
async fn frames<B: AsRef<[u8]>>(
    stream: &mut (impl futures_util::Stream<Item = reqwest::Result<B>> + Unpin),
    count: usize,
) -> Vec<(String, Value)> {
    let mut buffer = String::new();
    let mut found = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while found.len() < count {
        let chunk = tokio::time::timeout_at(deadline, stream.next())
            .await
            .expect("events arrive in time")
            .expect("stream open")
            .expect("chunk");
        buffer.push_str(&String::from_utf8_lossy(chunk.as_ref()));
        while let Some(end) = buffer.find("\n\n") {
            let frame: String = buffer.drain(..end + 2).collect();
            let kind = frame.lines().find_map(|l| l.strip_prefix("event:"));
            let data = frame.lines().find_map(|l| l.strip_prefix("data:"));
            if let (Some(kind), Some(data)) = (kind, data) {
                let data = serde_json::from_str(data.trim()).expect("JSON data");
                found.push((kind.trim().to_owned(), data));
            }
        }
    }
    found
}

/// Signed out, `/live/events` is the pages' 303 to the sign-in form (never a stream).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_route_needs_the_cookie() {
    let server = TestServer::start().await;
    let response = get(&server, "/live/events", None).await;
    assert_eq!(response.status(), 303);
    assert_eq!(response.headers()["location"], "../");
    let forged = get(&server, "/live/events", Some("lifeboat_key=lb_nope")).await;
    assert_eq!(forged.status(), 303);
}

/// Signed in, it streams the key's tenant's `session.status` events, never another
/// tenant's, and ends within ~2 s of the key's revocation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_its_tenant_only_and_ends_on_revocation() {
    let server = TestServer::start().await;
    let (id, mine) = key(&server, "default", &["read", "write"]).await;
    let (_, theirs) = key(&server, "acme", &["read", "write"]).await;
    let cookie = sign_in(&server, &mine).await;
    let response = get(&server, "/live/events", Some(&cookie)).await;
    assert_eq!(response.status(), 200);
    let kind = response.headers()["content-type"].to_str().expect("type");
    assert!(kind.starts_with("text/event-stream"), "{kind}");
    let mut stream = response.bytes_stream();
    let other = json!({"id": "theirs", "kind": "render"});
    assert_eq!(api_post(&server, &theirs, "/sessions", other).await, 201);
    let body = json!({"id": "ours", "kind": "render"});
    assert_eq!(api_post(&server, &mine, "/sessions", body).await, 201);
    assert_eq!(
        api_post(&server, &mine, "/sessions/ours/complete", json!({})).await,
        200
    );
    let seen = frames(&mut stream, 2).await;
    let statuses: Vec<_> = seen
        .iter()
        .map(|(kind, e)| {
            (
                kind.as_str(),
                e["data"]["session_id"].as_str(),
                e["data"]["status"].as_str(),
            )
        })
        .collect();
    assert_eq!(
        statuses,
        [
            ("session.status", Some("ours"), Some("active")),
            ("session.status", Some("ours"), Some("completed"))
        ],
        "the key's tenant's events only"
    );
    let revoked = server
        .send("DELETE", &format!("/keys/{id}"), &[], None)
        .await;
    assert!(revoked.status < 300, "{}", revoked.body);
    let started = tokio::time::Instant::now();
    let ended = tokio::time::timeout(Duration::from_secs(3), async {
        while let Some(Ok(_)) = stream.next().await {}
    })
    .await;
    assert!(
        ended.is_ok(),
        "the stream went on after the key's revocation"
    );
    let took = started.elapsed();
    println!("the live stream ended {took:?} after the key's revocation");
    assert!(took <= Duration::from_millis(2_100), "{took:?}");
}

/// `/live.js` is JavaScript; the sessions page (only) loads it, and its CSP allows scripts
/// from the dashboard itself and nothing inline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_script_is_served_and_loaded_by_the_sessions_page_only() {
    let server = TestServer::start().await;
    let script = get(&server, "/live.js", None).await;
    assert_eq!(script.status(), 200);
    let kind = script.headers()["content-type"].to_str().expect("type");
    assert!(kind.starts_with("text/javascript"), "{kind}");
    let text = script.text().await.expect("script");
    assert!(text.contains("EventSource") && !text.contains("innerHTML"));
    let cookie = sign_in(&server, TOKEN).await;
    let page = get(&server, "/sessions", Some(&cookie)).await;
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .expect("csp")
        .to_owned();
    let html = page.text().await.expect("page");
    assert!(
        html.contains(r#"<script src="./live.js" defer></script>"#),
        "{html}"
    );
    assert_eq!(html.matches("<script").count(), 1, "no inline script");
    let directives: Vec<_> = csp.split(';').map(str::trim).collect();
    assert!(directives.contains(&"script-src 'self'"), "{csp}");
    assert!(directives.contains(&"connect-src 'self'"), "{csp}");
    assert!(
        !csp.contains("unsafe-inline") && !csp.contains("nonce-"),
        "{csp}"
    );
    let stats = get(&server, "/stats", Some(&cookie)).await;
    assert!(!stats.text().await.expect("page").contains("<script"));
}
