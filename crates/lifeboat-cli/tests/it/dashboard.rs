//! The dashboard at `/`, without a browser: pages rendered from a seeded store, the
//! cookie and its flags, sign-out on revocation, CSRF refusals, CSP, read-only keys, and
//! the recovery forms acting through the engine (checked through the API).

use reqwest::header::HeaderMap;
use serde_json::json;

use crate::harness::{TOKEN, TestServer};

/// The dashboard's Content-Security-Policy.
const CSP: &str = "default-src 'none'; script-src 'self'; connect-src 'self'; \
                   style-src 'self'; img-src 'self' data:; \
                   form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// A dashboard answer: status, headers, body text.
pub(crate) struct Page {
    pub(crate) status: u16,
    pub(crate) headers: HeaderMap,
    pub(crate) text: String,
}

impl Page {
    pub(crate) fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    /// The text with the entities minijinja writes for `/` and `&` decoded, as a browser
    /// reads attribute values.
    pub(crate) fn decoded(&self) -> String {
        self.text.replace("&#x2f;", "/").replace("&amp;", "&")
    }
}

/// A browser without JavaScript or a cookie jar: it follows no redirect and sends the
/// headers it is given.
fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

async fn page_of(response: reqwest::Response) -> Page {
    Page {
        status: response.status().as_u16(),
        headers: response.headers().clone(),
        text: response.text().await.expect("body"),
    }
}

/// `GET` of a dashboard path with the cookie (if any) and extra headers.
pub(crate) async fn get(
    server: &TestServer,
    path: &str,
    cookie: Option<&str>,
    headers: &[(&str, &str)],
) -> Page {
    let mut request = browser().get(format!("{}{path}", server.base));
    if let Some(cookie) = cookie {
        request = request.header("cookie", cookie);
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    page_of(request.send().await.expect("request")).await
}

/// A form `POST` (already url-encoded) with the cookie and extra headers.
pub(crate) async fn post(
    server: &TestServer,
    path: &str,
    cookie: Option<&str>,
    form: &str,
    headers: &[(&str, &str)],
) -> Page {
    let mut request = browser()
        .post(format!("{}{path}", server.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form.to_owned());
    if let Some(cookie) = cookie {
        request = request.header("cookie", cookie);
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    page_of(request.send().await.expect("request")).await
}

/// Signs in with `key` and answers the `name=value` cookie to send back.
pub(crate) async fn sign_in(server: &TestServer, key: &str) -> String {
    let page = post(server, "/sign-in", None, &format!("key={key}"), &[]).await;
    assert_eq!(page.status, 303, "{}", page.text);
    assert_eq!(page.header("location"), "./sessions");
    let set = page.header("set-cookie");
    set.split(';').next().expect("a cookie").to_owned()
}

/// An API key of tenant `default` with `scopes`: (id, key).
pub(crate) async fn key(server: &TestServer, scopes: &[&str]) -> (String, String) {
    let (status, created) = server
        .post("/keys", json!({"tenant": "default", "scopes": scopes}))
        .await;
    assert_eq!(status, 201, "{created}");
    let text = |field: &str| created[field].as_str().expect(field).to_owned();
    (text("id"), text("key"))
}

/// Seeds an active session `a1`, a completed `c1`, and a failed `f1` (titled with a
/// script) with two checkpoints (the newest pinning an asset) and that asset.
pub(crate) async fn seed(server: &TestServer) {
    server.session(json!({"id": "a1", "kind": "render"})).await;
    server.session(json!({"id": "c1", "kind": "import"})).await;
    let (status, _) = server.post("/sessions/c1/complete", json!({})).await;
    assert_eq!(status, 200);
    let title = "<script>alert(1)</script>";
    let body = json!({"id": "f1", "kind": "batch", "title": title, "project_id": "p1"});
    server.session(body).await;
    server
        .checkpoint(
            "f1",
            json!({"attempt": 1, "kind": "batch", "stage": "first", "data": {"n": 1}}),
        )
        .await;
    let reply = server
        .send_bytes(
            "PUT",
            "/sessions/f1/assets/out/frame.bin",
            &[],
            b"frame".to_vec(),
        )
        .await;
    assert!(reply.status < 300, "{}", reply.body);
    let pinned =
        json!({"attempt": 1, "kind": "item", "data": {"n": 2}, "assets": ["out/frame.bin"]});
    server.checkpoint("f1", pinned).await;
    let (status, failed) = server
        .post(
            "/sessions/f1/fail",
            json!({"attempt": 1, "error": "out of memory"}),
        )
        .await;
    assert_eq!(status, 200, "{failed}");
}

pub(crate) async fn attempt_of(server: &TestServer, id: &str) -> (u64, String) {
    let (status, session) = server.get(&format!("/sessions/{id}")).await;
    assert_eq!(status, 200, "{session}");
    let attempt = session["attempt"].as_u64().expect("attempt");
    (
        attempt,
        session["status"].as_str().expect("status").to_owned(),
    )
}

/// Every page renders from a seeded store: signed out `/` is the form, signed in it
/// redirects to the list, which names every session; a session's page shows its
/// checkpoints, pinned and stored assets and the recovery panel; the stylesheet is CSS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_renders_from_a_seeded_store() {
    let server = TestServer::start().await;
    seed(&server).await;
    let form = get(&server, "/", None, &[]).await;
    assert_eq!(form.status, 200);
    assert!(form.text.contains("name=\"key\""), "{}", form.text);
    let cookie = sign_in(&server, TOKEN).await;
    let home = get(&server, "/", Some(&cookie), &[]).await;
    assert_eq!((home.status, home.header("location")), (303, "./sessions"));

    let list = get(&server, "/sessions", Some(&cookie), &[]).await;
    assert_eq!(list.status, 200);
    for id in ["a1", "c1", "f1"] {
        assert!(
            list.text.contains(&format!("href=\"./sessions/{id}\"")),
            "{id}: {}",
            list.text
        );
    }
    assert!(
        list.text.contains("out_of_memory"),
        "the crash type is listed"
    );

    let one = get(&server, "/sessions/f1", Some(&cookie), &[]).await;
    assert_eq!(one.status, 200, "{}", one.text);
    for shown in [
        "Recovery",
        "first",
        "out&#x2f;frame.bin",
        "value=\"continue\"",
        "value=\"fresh_start\"",
    ] {
        assert!(one.text.contains(shown), "{shown}: {}", one.text);
    }
    let active = get(&server, "/sessions/a1", Some(&cookie), &[]).await;
    assert_eq!(active.status, 200);
    assert!(
        !active.text.contains("Recovery"),
        "no panel for a running session"
    );
    let missing = get(&server, "/sessions/nope", Some(&cookie), &[]).await;
    assert_eq!(missing.status, 404);

    let css = get(&server, "/dashboard.css", None, &[]).await;
    assert_eq!(css.status, 200);
    assert!(css.header("content-type").starts_with("text/css"));
    assert!(css.text.contains("prefers-color-scheme: dark"));
}

/// The counts by status on `/sessions` are exactly those of `/api/v1/stats`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_equal_the_stats() {
    let server = TestServer::start().await;
    seed(&server).await;
    server.session(json!({"id": "a2", "kind": "render"})).await;
    let cookie = sign_in(&server, TOKEN).await;
    let list = get(&server, "/sessions", Some(&cookie), &[]).await;
    let (_, stats) = server.get("/stats").await;
    let counts = stats["sessions"].as_object().expect("sessions by status");
    assert!(counts.values().any(|n| n.as_u64() == Some(2)), "{stats}");
    for (status, n) in counts {
        let shown = format!("{status} <b>{n}</b>");
        assert!(list.text.contains(&shown), "{shown}: {}", list.text);
    }
}

/// A title of `<script>alert(1)</script>` is shown as text on both pages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_title_is_escaped() {
    let server = TestServer::start().await;
    seed(&server).await;
    let cookie = sign_in(&server, TOKEN).await;
    for path in ["/sessions", "/sessions/f1"] {
        let page = get(&server, path, Some(&cookie), &[]).await;
        assert!(
            page.text
                .contains("&lt;script&gt;alert(1)&lt;&#x2f;script&gt;"),
            "{path}: {}",
            page.text
        );
        assert!(!page.text.contains("<script>"), "{path}");
    }
}

/// The cookie is HttpOnly, SameSite=Strict, Path=/, and Secure only over https (as a
/// proxy reports it); a bad key is 401 with the form again and no cookie.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookie_flags_follow_the_scheme() {
    let server = TestServer::start().await;
    let form = format!("key={TOKEN}");
    let plain = post(&server, "/sign-in", None, &form, &[]).await;
    let flags = plain.header("set-cookie");
    assert!(
        flags.starts_with(&format!("lifeboat_key={TOKEN};")),
        "{flags}"
    );
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(flags.contains(flag), "{flag}: {flags}");
    }
    assert!(!flags.contains("Secure"), "{flags}");
    let https = [("x-forwarded-proto", "https")];
    let secure = post(&server, "/sign-in", None, &form, &https).await;
    assert_eq!(secure.status, 303);
    assert!(
        secure.header("set-cookie").contains("; Secure"),
        "{}",
        secure.header("set-cookie")
    );

    let bad = post(&server, "/sign-in", None, "key=lb_nope_0000", &[]).await;
    assert_eq!(bad.status, 401);
    assert_eq!(bad.header("www-authenticate"), "Bearer realm=\"lifeboat\"");
    assert!(bad.headers.get("set-cookie").is_none());
    assert!(bad.text.contains("not valid"), "{}", bad.text);
}

/// Project (`lbp_`) and session (`lbs_`) tokens cannot sign in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_cannot_sign_in() {
    let server = TestServer::start().await;
    let (status, project) = server.post("/projects/doc/token", json!({})).await;
    assert_eq!(status, 201, "{project}");
    server.session(json!({"id": "s1", "kind": "editor"})).await;
    let (status, session) = server.post("/sessions/s1/token", json!({})).await;
    assert_eq!(status, 201, "{session}");
    for token in [&project["token"], &session["token"]] {
        let token = token.as_str().expect("token");
        assert!(
            token.starts_with("lbp_") || token.starts_with("lbs_"),
            "{token}"
        );
        let refused = post(&server, "/sign-in", None, &format!("key={token}"), &[]).await;
        assert_eq!(refused.status, 401, "{token}");
        assert!(refused.headers.get("set-cookie").is_none());
    }
}

/// A POST from another site (`Sec-Fetch-Site: cross-site`, or a foreign `Origin`) is 403
/// and changes nothing; the same form from the same origin acts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_site_posts_are_refused() {
    let server = TestServer::start().await;
    seed(&server).await;
    let cookie = sign_in(&server, TOKEN).await;
    let host = server.base.trim_start_matches("http://").to_owned();
    let foreign: [&[(&str, &str)]; 4] = [
        &[("sec-fetch-site", "cross-site")],
        &[("sec-fetch-site", "same-site")],
        &[("origin", "http://evil.example")],
        &[("origin", "null")],
    ];
    for headers in foreign {
        let refused = post(
            &server,
            "/sessions/f1/recover",
            Some(&cookie),
            "option=continue",
            headers,
        )
        .await;
        assert_eq!(refused.status, 403, "{headers:?}");
        assert_eq!(refused.header("content-security-policy"), CSP);
        assert_eq!(attempt_of(&server, "f1").await, (1, "failed".to_owned()));
        let sign_in = post(&server, "/sign-in", None, &format!("key={TOKEN}"), headers).await;
        assert_eq!(sign_in.status, 403, "{headers:?}");
    }
    let origin = format!("http://{host}");
    let same = [
        ("sec-fetch-site", "same-origin"),
        ("origin", origin.as_str()),
    ];
    let done = post(
        &server,
        "/sessions/f1/recover",
        Some(&cookie),
        "option=continue",
        &same,
    )
    .await;
    assert_eq!(done.status, 303, "{}", done.text);
    assert_eq!(attempt_of(&server, "f1").await, (2, "active".to_owned()));
}

/// A read key sees the session but no action forms, and its recover is 403 and changes
/// nothing; the admin's page of the same session offers them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_key_cannot_act() {
    let server = TestServer::start().await;
    seed(&server).await;
    let (_, reader) = key(&server, &["read"]).await;
    let cookie = sign_in(&server, &reader).await;
    let page = get(&server, "/sessions/f1", Some(&cookie), &[]).await;
    assert_eq!(page.status, 200);
    assert!(page.text.contains("Recovery"));
    assert!(
        !page
            .text
            .contains("<form method=\"post\" action=\"../sessions/f1/"),
        "{}",
        page.text
    );
    let admin = sign_in(&server, TOKEN).await;
    let offered = get(&server, "/sessions/f1", Some(&admin), &[]).await;
    assert!(
        offered
            .text
            .contains("<form method=\"post\" action=\"../sessions/f1/recover\">")
    );

    for (path, form) in [
        ("/sessions/f1/recover", "option=continue"),
        ("/sessions/f1/cancel", "confirm=yes"),
        ("/sessions/f1/complete", ""),
    ] {
        let refused = post(&server, path, Some(&cookie), form, &[]).await;
        assert_eq!(refused.status, 403, "{path}");
        assert_eq!(attempt_of(&server, "f1").await, (1, "failed".to_owned()));
    }
}

/// Revoking the key signs its browser out: the next page redirects to `/` and clears the
/// cookie.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_key_is_signed_out() {
    let server = TestServer::start().await;
    let (id, writer) = key(&server, &["read", "write"]).await;
    let cookie = sign_in(&server, &writer).await;
    assert_eq!(
        get(&server, "/sessions", Some(&cookie), &[]).await.status,
        200
    );
    let revoked = server
        .send("DELETE", &format!("/keys/{id}"), &[], None)
        .await;
    assert!(revoked.status < 300, "{}", revoked.body);
    let out = get(&server, "/sessions", Some(&cookie), &[]).await;
    assert_eq!((out.status, out.header("location")), (303, "./"));
    assert!(out.header("set-cookie").starts_with("lifeboat_key=;"));
    assert!(out.header("set-cookie").contains("Max-Age=0"));
    let unsigned = get(&server, "/sessions", None, &[]).await;
    assert_eq!(unsigned.status, 303);
}

/// Every dashboard answer carries the dashboard's CSP and `Referrer-Policy: same-origin`;
/// the API's answers keep theirs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csp_on_every_page_and_the_api_keeps_its_own() {
    let server = TestServer::start().await;
    seed(&server).await;
    let cookie = sign_in(&server, TOKEN).await;
    for path in [
        "/",
        "/sessions",
        "/sessions/f1",
        "/sessions/a1",
        "/sessions/nope",
        "/dashboard.css",
    ] {
        let page = get(&server, path, Some(&cookie), &[]).await;
        assert_eq!(page.header("content-security-policy"), CSP, "{path}");
        // With the API's `no-referrer`, browsers send `Origin: null` with the dashboard's
        // own forms, which are then refused.
        assert_eq!(page.header("referrer-policy"), "same-origin", "{path}");
        assert_eq!(page.header("x-frame-options"), "DENY", "{path}");
    }
    let signed_out = get(&server, "/", None, &[]).await;
    assert_eq!(signed_out.header("content-security-policy"), CSP);
    let refused = post(&server, "/sign-in", None, "key=wrong", &[]).await;
    assert_eq!(refused.header("content-security-policy"), CSP);
    for path in ["/api/v1/sessions", "/healthz", "/api/v1/openapi.json"] {
        let response = reqwest::Client::new()
            .get(format!("{}{path}", server.base))
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("request");
        let csp = response
            .headers()
            .get("content-security-policy")
            .expect("csp");
        assert_eq!(csp, "default-src 'none'; frame-ancestors 'none'", "{path}");
        let referrer = response.headers().get("referrer-policy").expect("referrer");
        assert_eq!(referrer, "no-referrer", "{path}");
    }
    let (_, openapi) = server.get("/openapi.json").await;
    let paths = openapi["paths"].as_object().expect("paths");
    assert!(
        paths.keys().all(|p| p.starts_with("/api/v1/")),
        "the dashboard is not in the OpenAPI document"
    );
}

/// Resume makes attempt 2 (checked through the API), redirects back to the session, and
/// is audited as the API's recover is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_makes_attempt_two() {
    let server = TestServer::start().await;
    seed(&server).await;
    let cookie = sign_in(&server, TOKEN).await;
    let done = post(
        &server,
        "/sessions/f1/recover",
        Some(&cookie),
        "option=continue",
        &[],
    )
    .await;
    assert_eq!(
        (done.status, done.header("location")),
        (303, "../../sessions/f1")
    );
    assert_eq!(attempt_of(&server, "f1").await, (2, "active".to_owned()));
    let (_, audit) = server.get("/audit").await;
    let recorded = audit["items"]
        .as_array()
        .expect("items")
        .iter()
        .any(|entry| entry["action"] == "session.recover" && entry["resource"] == "session:f1");
    assert!(recorded, "{audit}");
}

/// Fresh start and Discard without the confirmation box change nothing (422); with it
/// they act.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unconfirmed_fresh_start_and_discard_change_nothing() {
    let server = TestServer::start().await;
    seed(&server).await;
    let cookie = sign_in(&server, TOKEN).await;
    let fresh = post(
        &server,
        "/sessions/f1/recover",
        Some(&cookie),
        "option=fresh_start",
        &[],
    )
    .await;
    assert_eq!(fresh.status, 422, "{}", fresh.text);
    let discard = post(
        &server,
        "/sessions/f1/cancel",
        Some(&cookie),
        "attempt=1",
        &[],
    )
    .await;
    assert_eq!(discard.status, 422, "{}", discard.text);
    assert_eq!(attempt_of(&server, "f1").await, (1, "failed".to_owned()));

    let form = "option=fresh_start&confirm=yes";
    let fresh = post(&server, "/sessions/f1/recover", Some(&cookie), form, &[]).await;
    assert_eq!(fresh.status, 303, "{}", fresh.text);
    assert_eq!(attempt_of(&server, "f1").await, (2, "active".to_owned()));
    let stale = post(
        &server,
        "/sessions/f1/cancel",
        Some(&cookie),
        "attempt=1&confirm=yes",
        &[],
    )
    .await;
    assert_eq!(
        stale.status, 409,
        "a form of attempt 1 cannot discard attempt 2"
    );
    let discard = post(
        &server,
        "/sessions/f1/cancel",
        Some(&cookie),
        "attempt=2&confirm=yes",
        &[],
    )
    .await;
    assert_eq!(discard.status, 303, "{}", discard.text);
    assert_eq!(attempt_of(&server, "f1").await, (2, "cancelled".to_owned()));
}

/// Filters narrow the list and stay in the form; paging follows the store's cursor with
/// the filters kept; links sit under `X-Forwarded-Prefix` when a proxy sends one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_paging_and_prefix() {
    let server = TestServer::start().await;
    seed(&server).await;
    for n in 0..55 {
        server
            .session(json!({"id": format!("bulk-{n:02}"), "kind": "bulk"}))
            .await;
    }
    let cookie = sign_in(&server, TOKEN).await;
    let failed = get(&server, "/sessions?status=failed", Some(&cookie), &[]).await;
    assert!(failed.text.contains("./sessions/f1\"") && !failed.text.contains("./sessions/a1\""));
    assert!(failed.text.contains("<option value=\"failed\" selected>"));
    let text = get(&server, "/sessions?q=ALERT", Some(&cookie), &[]).await;
    assert!(text.text.contains("./sessions/f1\"") && !text.text.contains("./sessions/c1\""));
    let project = get(
        &server,
        "/sessions?project=p1&kind=batch",
        Some(&cookie),
        &[],
    )
    .await;
    assert!(project.text.contains("./sessions/f1\"") && !project.text.contains("./sessions/a1\""));
    assert!(project.text.contains("name=\"kind\" value=\"batch\""));

    let first = get(&server, "/sessions?kind=bulk", Some(&cookie), &[]).await;
    assert_eq!(first.text.matches("href=\"./sessions/bulk-").count(), 50);

    let first = first.decoded();
    let next = first
        .split("<a href=\"")
        .filter_map(|s| s.split_once("\">Next page"))
        .next();
    let (next, _) = next.expect("a next page link");
    assert!(next.starts_with("./sessions?kind=bulk&cursor="), "{next}");
    let second = get(&server, &next[1..], Some(&cookie), &[]).await;
    assert_eq!(
        second.text.matches("href=\"./sessions/bulk-").count(),
        5,
        "{}",
        second.text
    );
    assert!(!second.text.contains("Next page"));

    let prefixed = get(
        &server,
        "/sessions/f1",
        Some(&cookie),
        &[("x-forwarded-prefix", "/lb/")],
    )
    .await
    .decoded();
    assert!(
        prefixed.contains("href=\"/lb/dashboard.css\""),
        "{prefixed}"
    );
    assert!(prefixed.contains("action=\"/lb/sessions/f1/recover\""));
    let relative = get(&server, "/sessions/f1", Some(&cookie), &[]).await;
    assert!(relative.text.contains("href=\"../dashboard.css\""));
    let done = post(
        &server,
        "/sessions/f1/recover",
        Some(&cookie),
        "option=continue",
        &[("x-forwarded-prefix", "/lb")],
    )
    .await;
    assert_eq!(done.header("location"), "/lb/sessions/f1");
    let offsite = get(
        &server,
        "/sessions/f1",
        Some(&cookie),
        &[("x-forwarded-prefix", "//evil.example")],
    )
    .await
    .decoded();
    assert!(
        offsite.contains("href=\"../dashboard.css\"") && !offsite.contains("evil.example"),
        "a prefix that names another host is ignored: {offsite}"
    );
}

/// Everything the dashboard serves besides its HTML (its stylesheet and `live.js`)
/// stays small: at most 15 KiB gzipped (`gzip -9`, printed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn served_css_and_script_fit_15_kib_gzipped() {
    use std::io::Write;
    let server = TestServer::start().await;
    let mut raw = 0;
    let mut gzipped = 0;
    for asset in ["/dashboard.css", "/live.js"] {
        let page = get(&server, asset, None, &[]).await;
        assert_eq!(page.status, 200, "{asset}");
        let mut gzip = std::process::Command::new("gzip")
            .args(["-9", "-c"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("gzip");
        gzip.stdin
            .take()
            .expect("stdin")
            .write_all(page.text.as_bytes())
            .expect("write");
        raw += page.text.len();
        gzipped += gzip.wait_with_output().expect("gzip output").stdout.len();
    }
    println!("dashboard JS + CSS served: {raw} B, {gzipped} B gzipped (goal 15,360 B)");
    assert!(gzipped <= 15 * 1024, "{gzipped} B gzipped");
    let sign_in = get(&server, "/", None, &[]).await;
    assert!(
        !sign_in.text.contains("<script"),
        "the sign-in page loads no script (only the sessions list loads live.js)"
    );
}
