//! The dashboard's stats page (`/stats`), without a browser: every figure it shows is the
//! API's `GET /api/v1/stats` for the same key, each chart is one inline SVG with a title,
//! no style attribute or script, signed out goes to sign-in, and tenants stay apart.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::harness::{TOKEN, TestServer, manual_clock};

/// The dashboard's Content-Security-Policy.
const CSP: &str = "default-src 'none'; script-src 'self'; connect-src 'self'; \
                   style-src 'self'; img-src 'self' data:; \
                   form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The charts the page draws.
const CHARTS: usize = 8;

/// A dashboard answer: status, headers, body text.
struct Page {
    status: u16,
    headers: reqwest::header::HeaderMap,
    text: String,
}

impl Page {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }
}

/// A browser without JavaScript or a cookie jar: it follows no redirect.
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

async fn get(server: &TestServer, path: &str, cookie: Option<&str>) -> Page {
    let mut request = browser().get(format!("{}{path}", server.base));
    if let Some(cookie) = cookie {
        request = request.header("cookie", cookie);
    }
    page_of(request.send().await.expect("request")).await
}

/// Signs in with `key` and answers the `name=value` cookie to send back.
async fn sign_in(server: &TestServer, key: &str) -> String {
    let response = browser()
        .post(format!("{}/sign-in", server.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("key={key}"))
        .send()
        .await
        .expect("request");
    let page = page_of(response).await;
    assert_eq!(page.status, 303, "{}", page.text);
    let set = page.header("set-cookie");
    set.split(';').next().expect("a cookie").to_owned()
}

/// `GET /api/v1/stats` with `key`.
async fn api_stats(server: &TestServer, key: &str) -> Value {
    let response = server
        .http
        .get(server.url("/stats"))
        .bearer_auth(key)
        .send()
        .await
        .expect("request");
    assert_eq!(response.status().as_u16(), 200);
    response.json().await.expect("stats")
}

/// Every number of a stats body by its dotted path (`crashes.by_type.network`).
fn leaves(value: &Value, prefix: &str, into: &mut BTreeMap<String, u64>) {
    match value {
        Value::Object(fields) => {
            for (name, field) in fields {
                let path = if prefix.is_empty() {
                    name.clone()
                } else {
                    format!("{prefix}.{name}")
                };
                leaves(field, &path, into);
            }
        }
        other => {
            let n = other
                .as_u64()
                .unwrap_or_else(|| panic!("{prefix}: {other}"));
            into.insert(prefix.to_owned(), n);
        }
    }
}

/// A figure on the page: its `data-value` and the text shown.
#[derive(Debug)]
struct Shown {
    value: u64,
    text: String,
}

/// Every `data-stat="…" data-value="…">text<` on the page; a path shown twice fails.
fn shown(html: &str) -> BTreeMap<String, Shown> {
    let mut found = BTreeMap::new();
    for piece in html.split("data-stat=\"").skip(1) {
        let (stat, rest) = piece.split_once('"').expect("a closed data-stat");
        let rest = rest
            .strip_prefix(" data-value=\"")
            .expect("data-value next");
        let (value, rest) = rest.split_once("\">").expect("a closed data-value");
        let (text, _) = rest.split_once('<').expect("the shown text");
        let figure = Shown {
            value: value.parse().expect("a number"),
            text: text.to_owned(),
        };
        assert!(
            found.insert(stat.to_owned(), figure).is_none(),
            "{stat} twice"
        );
    }
    found
}

/// Active `a1` and `a2`, paused `p1`, completed `c1`; `f1` failed (a crash) and resumed
/// (a pending recovery); `k1`, with a 1 s heartbeat timeout, checkpointed, heartbeated
/// 600 ms later and left to expire 1.5 s ago (a crash persisted by the sweep: 1.5 s
/// detection delay, 600 ms of work lost), then resumed and completed (a recovery that
/// succeeded). Nothing is incomplete, failed or cancelled now: those show 0.
async fn seed() -> TestServer {
    let clock = manual_clock();
    let dir = std::sync::Arc::new(tempfile::tempdir().expect("dir"));
    let server = TestServer::start_in(dir, clock.clone()).await;
    let long = 3_600_000;
    for id in ["a1", "a2", "p1", "c1", "f1"] {
        let body = json!({"id": id, "kind": "render", "heartbeat_timeout_ms": long});
        server.session(body).await;
    }
    let posts = [
        ("/sessions/p1/pause", json!({"attempt": 1})),
        ("/sessions/c1/complete", json!({"attempt": 1})),
        ("/sessions/f1/fail", json!({"attempt": 1, "error": "boom"})),
    ];
    for (path, body) in posts {
        let (status, answer) = server.post(path, body).await;
        assert_eq!(status, 200, "{path}: {answer}");
    }
    let body = json!({"id": "k1", "kind": "render", "heartbeat_timeout_ms": 1_000});
    server.session(body).await;
    server
        .checkpoint(
            "k1",
            json!({"attempt": 1, "kind": "item", "data": {"n": 1}}),
        )
        .await;
    clock.advance_ms(600);
    let (status, beat) = server
        .post("/sessions/k1/heartbeat", json!({"attempt": 1}))
        .await;
    assert_eq!(status, 200, "{beat}");
    clock.advance_ms(2_500);
    let (status, swept) = server.post("/admin/sweep", json!({})).await;
    assert_eq!(status, 200, "{swept}");
    let recoveries = [
        ("/sessions/k1/recover", json!({"option": "continue"})),
        ("/sessions/k1/complete", json!({"attempt": 2})),
        ("/sessions/f1/recover", json!({"option": "continue"})),
    ];
    for (path, body) in recoveries {
        let (status, answer) = server.post(path, body).await;
        assert_eq!(status, 200, "{path}: {answer}");
    }
    server
}

/// Every number of `/api/v1/stats` is on `/stats` once, marked with its path, with the
/// same value; counts are shown as they are (zeros as 0), durations humanised with the
/// exact milliseconds as their tooltip; bars are proportional to the chart's largest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_figure_equals_the_api() {
    let server = seed().await;
    let cookie = sign_in(&server, TOKEN).await;
    let page = get(&server, "/stats", Some(&cookie)).await;
    assert_eq!(page.status, 200, "{}", page.text);
    let api = api_stats(&server, TOKEN).await;
    let mut expected = BTreeMap::new();
    leaves(&api, "", &mut expected);
    assert_eq!(expected["sessions.active"], 3, "{api}");
    assert_eq!(expected["crashes.total"], 2, "{api}");
    assert_eq!(expected["recoveries.succeeded"], 1, "{api}");
    assert_eq!(expected["detection_delay_ms.max"], 1_500, "{api}");
    assert_eq!(expected["work_lost_ms.max"], 600, "{api}");
    let figures = shown(&page.text);
    let values: BTreeMap<&String, u64> = figures.iter().map(|(k, f)| (k, f.value)).collect();
    let wanted: BTreeMap<&String, u64> = expected.iter().map(|(k, v)| (k, *v)).collect();
    assert_eq!(values, wanted);
    for (stat, figure) in &figures {
        if stat.ends_with("_ms.p50") || stat.ends_with("_ms.p99") || stat.ends_with("_ms.max") {
            continue;
        }
        assert_eq!(figure.text, figure.value.to_string(), "{stat}");
    }
    assert_eq!(figures["sessions.cancelled"].text, "0");
    assert_eq!(figures["detection_delay_ms.max"].text, "1.5 s");
    assert_eq!(figures["work_lost_ms.max"].text, "600 ms");
    assert!(
        page.text.contains("<title>max: 1500 ms</title>"),
        "{}",
        page.text
    );

    // The sessions chart, in status order: each bar is its share of the largest (of 250
    // units, rounded up), 0 is no bar.
    let statuses = [
        "active",
        "paused",
        "incomplete",
        "failed",
        "completed",
        "cancelled",
    ];
    let counts: Vec<u64> = statuses
        .iter()
        .map(|s| expected[&format!("sessions.{s}")])
        .collect();
    let largest = counts.iter().copied().max().expect("counts");
    let proportional: Vec<String> = counts
        .iter()
        .map(|n| (n * 250).div_ceil(largest).to_string())
        .collect();
    let sessions = chart(&page.text, "sessions");
    let widths: Vec<&str> = sessions
        .split("<rect class=\"bar\"")
        .skip(1)
        .map(|rect| attribute(rect, "width"))
        .collect();
    assert_eq!(widths, proportional, "{sessions}");
    assert!(
        widths.contains(&"250") && widths.contains(&"0"),
        "{widths:?}"
    );
}

/// The part of the page from chart `id`'s heading to the end of its `<svg>`.
fn chart<'a>(html: &'a str, id: &str) -> &'a str {
    let start = html
        .find(&format!("id=\"{id}-heading\""))
        .unwrap_or_else(|| panic!("chart {id}"));
    let end = html[start..].find("</svg>").expect("its svg ends");
    &html[start..start + end]
}

fn attribute<'a>(tag: &'a str, name: &str) -> &'a str {
    let (_, rest) = tag
        .split_once(&format!(" {name}=\""))
        .unwrap_or_else(|| panic!("{name} in {tag}"));
    rest.split_once('"').expect("closed").0
}

/// One `<svg role="img">` per chart, each naming itself with a `<title>`; no `style`
/// attribute and no `<script>`; the CSP header; a Stats link in the navigation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn charts_are_titled_svg_without_style_or_script() {
    let server = seed().await;
    let cookie = sign_in(&server, TOKEN).await;
    let page = get(&server, "/stats", Some(&cookie)).await;
    assert_eq!(page.status, 200);
    assert_eq!(page.header("content-security-policy"), CSP);
    let svgs: Vec<&str> = page.text.split("<svg").skip(1).collect();
    assert_eq!(svgs.len(), CHARTS, "{}", page.text);
    assert_eq!(page.text.matches("class=\"card chart\"").count(), CHARTS);
    for svg in svgs {
        assert!(svg.contains("role=\"img\""), "{svg}");
        let label = attribute(svg, "aria-labelledby");
        let title = format!("<title id=\"{label}\">");
        let body = svg.split_once('>').expect("svg open tag").1.trim_start();
        assert!(body.starts_with(&title), "{svg}");
    }
    assert!(!page.text.contains("style="), "{}", page.text);
    assert!(
        !page.text.to_lowercase().contains("<script"),
        "{}",
        page.text
    );
    for path in ["/stats", "/sessions"] {
        let shown = get(&server, path, Some(&cookie)).await;
        assert!(shown.text.contains("href=\"./stats\""), "{path}");
    }
}

/// Signed out, `/stats` redirects to sign-in; another tenant's key sees its own figures
/// (all zero, equal to its API's), never the default tenant's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_out_redirects_and_tenants_stay_apart() {
    let server = seed().await;
    let out = get(&server, "/stats", None).await;
    assert_eq!((out.status, out.header("location")), (303, "./"));
    assert!(!out.text.contains("data-stat"));

    let (status, created) = server
        .post("/keys", json!({"tenant": "other", "scopes": ["read"]}))
        .await;
    assert_eq!(status, 201, "{created}");
    let other = created["key"].as_str().expect("key");
    let cookie = sign_in(&server, other).await;
    let page = get(&server, "/stats", Some(&cookie)).await;
    assert_eq!(page.status, 200, "{}", page.text);
    let figures = shown(&page.text);
    let mut theirs = BTreeMap::new();
    leaves(&api_stats(&server, other).await, "", &mut theirs);
    let values: BTreeMap<String, u64> = figures.iter().map(|(k, f)| (k.clone(), f.value)).collect();
    assert_eq!(values, theirs);
    assert!(
        values.values().all(|n| *n == 0),
        "nothing of the default tenant: {values:?}"
    );
    let mut ours = BTreeMap::new();
    leaves(&api_stats(&server, TOKEN).await, "", &mut ours);
    assert_ne!(values, ours, "the default tenant has figures");
}
