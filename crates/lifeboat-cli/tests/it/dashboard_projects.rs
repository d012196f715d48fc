//! The dashboard's projects pages, without a browser: the list, a project's state and
//! revisions, the JSON Patch between two revisions (exactly the changed pointers), and
//! restore through the engine (checked through the API), refused for a read key, without
//! confirmation and from another site.

use serde_json::{Value, json};

use crate::harness::{TOKEN, TestServer};

/// A dashboard answer: status, `Location`, body text.
struct Page {
    status: u16,
    location: String,
    text: String,
}

/// A form `POST` (url-encoded) or a `GET` (no form) with the cookie and extra headers,
/// as a browser without JavaScript that follows no redirect.
async fn send(
    server: &TestServer,
    path: &str,
    cookie: Option<&str>,
    form: Option<&str>,
    headers: &[(&str, &str)],
) -> Page {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let url = format!("{}{path}", server.base);
    let mut request = match form {
        Some(form) => client
            .post(url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form.to_owned()),
        None => client.get(url),
    };
    if let Some(cookie) = cookie {
        request = request.header("cookie", cookie);
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("request");
    let location = response
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    Page {
        status: response.status().as_u16(),
        location,
        text: response.text().await.expect("body"),
    }
}

async fn get(server: &TestServer, path: &str, cookie: &str) -> Page {
    send(server, path, Some(cookie), None, &[]).await
}

/// Signs in with `key` and answers the `name=value` cookie to send back.
async fn sign_in(server: &TestServer, key: &str) -> String {
    let url = format!("{}/sign-in", server.base);
    let response = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("key={key}"))
        .send()
        .await
        .expect("sign in");
    assert_eq!(response.status().as_u16(), 303);
    let cookie = response.headers().get("set-cookie").expect("a cookie");
    let cookie = cookie.to_str().expect("text").split(';').next();
    cookie.expect("name=value").to_owned()
}

/// Saves each state in turn as project `p1`'s next revision.
async fn seed(server: &TestServer, states: &[Value]) {
    for state in states {
        let body = json!({"title": "Plan", "state": state});
        let (status, saved) = server.call("PUT", "/projects/p1", Some(body)).await;
        assert!(status == 200 || status == 201, "{saved}");
    }
}

/// Project `p1` through the API: (revision, state), now or at `revision`.
async fn project(server: &TestServer, revision: Option<u64>) -> (u64, Value) {
    let path = match revision {
        Some(r) => format!("/projects/p1?revision={r}"),
        None => "/projects/p1".to_owned(),
    };
    let (status, body) = server.get(&path).await;
    assert_eq!(status, 200, "{body}");
    (
        body["revision"].as_u64().expect("revision"),
        body["state"].clone(),
    )
}

/// Three revisions of `p1`.
fn three() -> Vec<Value> {
    vec![json!({"n": 1}), json!({"n": 2}), json!({"n": 3, "m": true})]
}

/// Undoes the entities minijinja writes.
fn decode(html: &str) -> String {
    html.replace("&#x2f;", "/")
        .replace("&quot;", "\"")
        .replace("&#x27;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projects_pages_render_from_a_seeded_project() {
    let server = TestServer::start().await;
    seed(&server, &three()).await;
    let cookie = sign_in(&server, TOKEN).await;

    let list = get(&server, "/projects", &cookie).await;
    assert_eq!(list.status, 200, "{}", list.text);
    assert!(
        list.text.contains("href=\"./projects/p1\""),
        "{}",
        list.text
    );
    assert!(list.text.contains("Plan"));
    let sessions = get(&server, "/sessions", &cookie).await;
    assert!(sessions.text.contains("href=\"./projects\">Projects</a>"));

    let page = get(&server, "/projects/p1", &cookie).await;
    assert_eq!(page.status, 200, "{}", page.text);
    let text = decode(&page.text);
    assert!(text.contains("<dd id=\"revision\">3</dd>"), "{text}");
    assert!(text.contains("\"m\": true"), "the current state: {text}");
    let newest_first = ["3 (current)", ">2</td>", ">1</td>"].map(|r| text.find(r));
    assert!(
        newest_first
            .windows(2)
            .all(|w| w[0].is_some() && w[0] < w[1]),
        "{newest_first:?}: {text}"
    );
    assert!(text.contains("action=\"../projects/p1/diff\""));
    assert!(text.contains("name=\"from\" type=\"number\" min=\"1\" max=\"3\" value=\"2\""));
    assert_eq!(text.matches("action=\"../projects/p1/restore\"").count(), 2);

    let diff = get(&server, "/projects/p1/diff", &cookie).await;
    assert_eq!(diff.status, 200, "{}", diff.text);
    assert!(
        decode(&diff.text).contains("revision 2 → 3"),
        "{}",
        diff.text
    );
    for missing in ["/projects/nope", "/projects/p1/diff?from=9"] {
        assert_eq!(
            get(&server, missing, &cookie).await.status,
            404,
            "{missing}"
        );
    }
    let bad = get(&server, "/projects/p1/diff?from=zero", &cookie).await;
    assert_eq!(bad.status, 400);
}

/// The diff from revision 1 to 2 is exactly: `/a` replaced, `/b` removed, `/c/d` added;
/// `/e`, unchanged, is not in it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_diff_lists_exactly_the_changed_pointers() {
    let server = TestServer::start().await;
    let before = json!({"a": 1, "b": 2, "c": {}, "e": 5});
    let after = json!({"a": 10, "c": {"d": "x"}, "e": 5});
    seed(&server, &[before, after]).await;
    let cookie = sign_in(&server, TOKEN).await;
    let page = get(&server, "/projects/p1/diff?from=1&to=2", &cookie).await;
    assert_eq!(page.status, 200, "{}", page.text);
    let text = decode(&page.text);

    let mut listed: Vec<(String, String)> = text
        .split("<td data-label=\"Op\">")
        .skip(1)
        .map(|row| {
            let (op, rest) = row.split_once("</td>").expect("an op cell");
            let path = rest.split("<code>").nth(1).expect("a path cell");
            let path = path.split_once("</code>").expect("a path").0;
            (op.to_owned(), path.to_owned())
        })
        .collect();
    listed.sort();
    let expected = [("add", "/c/d"), ("remove", "/b"), ("replace", "/a")]
        .map(|(op, path)| (op.to_owned(), path.to_owned()));
    assert_eq!(listed, expected, "{text}");

    let raw = text
        .rsplit("<pre class=\"json\">")
        .next()
        .expect("the raw patch");
    let raw: Value = serde_json::from_str(raw.split("</pre>").next().expect("pre"))
        .expect("the raw patch is JSON");
    let expected = json!([
        {"op": "replace", "path": "/a", "value": 10},
        {"op": "remove", "path": "/b"},
        {"op": "add", "path": "/c/d", "value": "x"},
    ]);
    let mut ops = raw.as_array().expect("an array").clone();
    ops.sort_by_key(|op| op["path"].to_string());
    let mut want = expected.as_array().expect("an array").clone();
    want.sort_by_key(|op| op["path"].to_string());
    assert_eq!(ops, want, "{raw}");
    assert!(!text.contains("<code>/e</code>"), "{text}");
}

/// Restore of revision 1 makes revision 4 with revision 1's state, audited with
/// `"via": "dashboard"`; without the box ticked it changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_makes_a_new_revision_equal_to_the_restored_one() {
    let server = TestServer::start().await;
    seed(&server, &three()).await;
    let cookie = sign_in(&server, TOKEN).await;

    let path = "/projects/p1/restore";
    let unconfirmed = send(&server, path, Some(&cookie), Some("revision=1"), &[]).await;
    assert_eq!(unconfirmed.status, 422, "{}", unconfirmed.text);
    assert_eq!(project(&server, None).await.0, 3);

    let form = Some("revision=1&confirm=yes");
    let done = send(&server, path, Some(&cookie), form, &[]).await;
    assert_eq!(
        (done.status, done.location.as_str()),
        (303, "../../projects/p1")
    );
    let (revision, state) = project(&server, None).await;
    assert_eq!(revision, 4);
    assert_eq!(state, project(&server, Some(1)).await.1);
    assert_eq!(state, json!({"n": 1}));

    let (_, audit) = server.get("/audit").await;
    let recorded = audit["items"].as_array().expect("items").iter().any(|e| {
        e["action"] == "project.restore"
            && e["resource"] == "project:p1"
            && e["detail"]["via"] == "dashboard"
    });
    assert!(recorded, "{audit}");
}

/// A read key sees the revisions but no restore form, and its restore is 403 and makes
/// no revision.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_key_cannot_restore() {
    let server = TestServer::start().await;
    seed(&server, &three()).await;
    let body = json!({"tenant": "default", "scopes": ["read"]});
    let (status, created) = server.post("/keys", body).await;
    assert_eq!(status, 201, "{created}");
    let cookie = sign_in(&server, created["key"].as_str().expect("key")).await;

    let page = get(&server, "/projects/p1", &cookie).await;
    assert_eq!(page.status, 200);
    assert!(page.text.contains("3 (current)"));
    assert!(!page.text.contains("/restore"), "{}", page.text);
    let form = Some("revision=1&confirm=yes");
    let refused = send(&server, "/projects/p1/restore", Some(&cookie), form, &[]).await;
    assert_eq!(refused.status, 403, "{}", refused.text);
    assert_eq!(project(&server, None).await.0, 3);
}

/// A restore sent from another site is 403 and makes no revision; from the same origin
/// it is done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cross_site_restore_is_refused() {
    let server = TestServer::start().await;
    seed(&server, &three()).await;
    let cookie = sign_in(&server, TOKEN).await;
    let form = Some("revision=1&confirm=yes");
    let path = "/projects/p1/restore";
    let foreign: [&[(&str, &str)]; 3] = [
        &[("sec-fetch-site", "cross-site")],
        &[("origin", "http://evil.example")],
        &[("origin", "null")],
    ];
    for headers in foreign {
        let refused = send(&server, path, Some(&cookie), form, headers).await;
        assert_eq!(refused.status, 403, "{headers:?}");
        assert_eq!(project(&server, None).await.0, 3, "{headers:?}");
    }
    let same = [("sec-fetch-site", "same-origin")];
    let done = send(&server, path, Some(&cookie), form, &same).await;
    assert_eq!(done.status, 303, "{}", done.text);
    assert_eq!(project(&server, None).await.0, 4);
}

/// A `<script>` in the state and the title is shown as text on every projects page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_value_is_escaped() {
    let server = TestServer::start().await;
    let script = "<script>alert(1)</script>";
    seed(
        &server,
        &[json!({"note": "plain"}), json!({"note": script})],
    )
    .await;
    let title = json!({"title": script, "state": {"note": script}});
    let (status, _) = server.call("PUT", "/projects/p1", Some(title)).await;
    assert_eq!(status, 200);
    let cookie = sign_in(&server, TOKEN).await;
    for path in ["/projects", "/projects/p1", "/projects/p1/diff?from=1&to=2"] {
        let page = get(&server, path, &cookie).await;
        assert_eq!(page.status, 200, "{path}");
        assert!(!page.text.contains("<script"), "{path}: {}", page.text);
        assert!(
            page.text.contains("&lt;script&gt;"),
            "{path}: {}",
            page.text
        );
    }
}
