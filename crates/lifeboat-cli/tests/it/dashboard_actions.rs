//! The dashboard's bulk actions, its Verify button and a session's history of attempts
//! and crashes, without a browser: what the review lists is exactly what was selected and
//! reviewing changes nothing; applying acts on exactly those sessions (checked through the
//! API); read keys and other sites are refused; Verify finds a file gone behind the
//! server's back.

use serde_json::json;

use crate::dashboard::{Page, attempt_of, get, key, post, seed, sign_in};
use crate::harness::{TOKEN, TestServer, sha256_hex};

/// Failed sessions `x1`, `x2` and `x3`, each at attempt 1.
async fn three_failed(server: &TestServer) {
    for id in ["x1", "x2", "x3"] {
        server.session(json!({"id": id, "kind": "batch"})).await;
        let (status, body) = server
            .post(
                &format!("/sessions/{id}/fail"),
                json!({"attempt": 1, "error": "disk full"}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
}

/// The ids in the rows (`data-session-id`) of the table with `table_id`.
fn rows_of(page: &Page, table_id: &str) -> Vec<String> {
    let start = page
        .text
        .find(&format!("<table id=\"{table_id}\""))
        .unwrap_or_else(|| panic!("no table {table_id}: {}", page.text));
    let end = start + page.text[start..].find("</table>").expect("the table ends");
    page.text[start..end]
        .split("data-session-id=\"")
        .skip(1)
        .map(|rest| rest.split('"').next().expect("an id").to_owned())
        .collect()
}

/// The review page's form, url-encoded as a browser posts it: its hidden fields in order.
fn review_form(page: &Page) -> String {
    page.text
        .split("<input type=\"hidden\" ")
        .skip(1)
        .map(|input| {
            let attribute = |name: &str| {
                let from = input.find(&format!("{name}=\"")).expect(name) + name.len() + 2;
                input[from..].split('"').next().expect("a value").to_owned()
            };
            format!("{}={}", attribute("name"), attribute("value"))
        })
        .collect::<Vec<_>>()
        .join("&")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_acts_on_exactly_the_selected_sessions() {
    let server = TestServer::start().await;
    three_failed(&server).await;
    let cookie = sign_in(&server, TOKEN).await;

    let list = get(&server, "/sessions", Some(&cookie), &[]).await;
    for id in ["x1", "x2", "x3"] {
        let checkbox = format!("name=\"id\" value=\"{id}\" form=\"bulk\"");
        assert!(list.text.contains(&checkbox), "{id}: {}", list.text);
    }

    let review = get(
        &server,
        "/bulk?action=continue&id=x1&id=x3",
        Some(&cookie),
        &[],
    )
    .await;
    assert_eq!(review.status, 200, "{}", review.text);
    assert_eq!(rows_of(&review, "targets"), ["x1", "x3"]);
    assert!(
        review.text.contains("Resume 2 sessions?"),
        "{}",
        review.text
    );
    for id in ["x1", "x2", "x3"] {
        assert_eq!(
            attempt_of(&server, id).await,
            (1, "failed".to_owned()),
            "the review changes nothing"
        );
    }

    let form = review_form(&review);
    assert_eq!(
        form,
        "action=continue&confirm=yes&session=x1@1&session=x3@1"
    );
    let applied = post(&server, "/bulk", Some(&cookie), &form, &[]).await;
    assert_eq!(applied.status, 200, "{}", applied.text);
    assert_eq!(rows_of(&applied, "results"), ["x1", "x3"]);
    assert!(
        !applied.text.contains("class=\"error\""),
        "{}",
        applied.text
    );
    assert_eq!(attempt_of(&server, "x1").await, (2, "active".to_owned()));
    assert_eq!(attempt_of(&server, "x2").await, (1, "failed".to_owned()));
    assert_eq!(attempt_of(&server, "x3").await, (2, "active".to_owned()));

    // A discard without its confirmation changes nothing.
    let unconfirmed = post(
        &server,
        "/bulk",
        Some(&cookie),
        "action=cancel&session=x2@1",
        &[],
    )
    .await;
    assert_eq!(unconfirmed.status, 422, "{}", unconfirmed.text);
    assert_eq!(attempt_of(&server, "x2").await, (1, "failed".to_owned()));

    // A review of x1 at attempt 1 cannot discard the attempt 2 it has become; x2 is
    // discarded, and the outcome of each is listed.
    let stale = "action=cancel&confirm=yes&session=x1@1&session=x2@1";
    let applied = post(&server, "/bulk", Some(&cookie), stale, &[]).await;
    assert_eq!(applied.status, 200, "{}", applied.text);
    assert_eq!(rows_of(&applied, "results"), ["x1", "x2"]);
    assert_eq!(
        outcomes(&applied),
        ["x1: error", "x2: done"],
        "{}",
        applied.text
    );
    assert_eq!(attempt_of(&server, "x1").await, (2, "active".to_owned()));
    assert_eq!(attempt_of(&server, "x2").await, (1, "cancelled".to_owned()));

    // Nor can it resume a session resumed since: x3 is at attempt 2.
    let stale = "action=continue&confirm=yes&session=x3@1";
    let applied = post(&server, "/bulk", Some(&cookie), stale, &[]).await;
    assert_eq!(outcomes(&applied), ["x3: error"], "{}", applied.text);
    assert!(
        applied.text.contains("Attempt mismatch"),
        "{}",
        applied.text
    );
    assert_eq!(attempt_of(&server, "x3").await, (2, "active".to_owned()));

    let none = get(&server, "/bulk?action=continue", Some(&cookie), &[]).await;
    assert_eq!(none.status, 422, "nothing selected: {}", none.text);
    let unknown = get(&server, "/bulk?action=explode&id=x3", Some(&cookie), &[]).await;
    assert_eq!(unknown.status, 400, "{}", unknown.text);
}

/// What the review and apply refuse, changing nothing: more than 100 sessions, one
/// session at two attempts, a session without its attempt; a session that is gone is
/// named on the review and left out of its form.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_refuses_what_it_cannot_do_exactly() {
    let server = TestServer::start().await;
    three_failed(&server).await;
    let cookie = sign_in(&server, TOKEN).await;

    let many: String = (0..101).map(|n| format!("&id=s{n}")).collect();
    let review = get(
        &server,
        &format!("/bulk?action=continue{many}"),
        Some(&cookie),
        &[],
    )
    .await;
    assert_eq!(review.status, 400, "{}", review.text);

    let twice = "action=cancel&confirm=yes&session=x1@1&session=x1@2";
    let applied = post(&server, "/bulk", Some(&cookie), twice, &[]).await;
    assert_eq!(applied.status, 400, "{}", applied.text);
    let unattempted = "action=cancel&confirm=yes&id=x1";
    let applied = post(&server, "/bulk", Some(&cookie), unattempted, &[]).await;
    assert_eq!(
        applied.status, 422,
        "an id without its attempt is not a target: {}",
        applied.text
    );
    assert_eq!(attempt_of(&server, "x1").await, (1, "failed".to_owned()));

    let review = get(
        &server,
        "/bulk?action=cancel&id=x1&id=gone&id=x1",
        Some(&cookie),
        &[],
    )
    .await;
    assert_eq!(review.status, 200, "{}", review.text);
    assert_eq!(rows_of(&review, "targets"), ["x1"]);
    assert!(review.text.contains("<code>gone</code>"), "{}", review.text);
    assert_eq!(
        review_form(&review),
        "action=cancel&confirm=yes&session=x1@1"
    );
}

/// `id: done` or `id: error` for each row of the outcome table.
fn outcomes(page: &Page) -> Vec<String> {
    let start = page.text.find("<table id=\"results\"").expect("results");
    let end = start + page.text[start..].find("</table>").expect("their end");
    page.text[start..end]
        .split("<tr data-session-id=\"")
        .skip(1)
        .map(|row| {
            let id = row.split('"').next().expect("an id");
            let failed = row.contains("class=\"error\"");
            format!("{id}: {}", if failed { "error" } else { "done" })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_is_refused_to_a_read_key_and_from_another_site() {
    let server = TestServer::start().await;
    three_failed(&server).await;
    let (_, read) = key(&server, &["read"]).await;
    let reader = sign_in(&server, &read).await;
    let list = get(&server, "/sessions", Some(&reader), &[]).await;
    assert!(
        !list.text.contains("form=\"bulk\""),
        "no selection for a read key"
    );
    let review = get(&server, "/bulk?action=continue&id=x1", Some(&reader), &[]).await;
    assert_eq!(review.status, 403, "{}", review.text);
    let form = "action=continue&confirm=yes&session=x1@1";
    let applied = post(&server, "/bulk", Some(&reader), form, &[]).await;
    assert_eq!(applied.status, 403, "{}", applied.text);

    let writer = sign_in(&server, TOKEN).await;
    let cross = [("sec-fetch-site", "cross-site")];
    let applied = post(&server, "/bulk", Some(&writer), form, &cross).await;
    assert_eq!(applied.status, 403, "{}", applied.text);
    assert_eq!(attempt_of(&server, "x1").await, (1, "failed".to_owned()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_finds_a_file_gone_behind_the_servers_back() {
    let server = TestServer::start_on_disk(|_| {}).await;
    seed(&server).await;
    let hash = sha256_hex(b"frame");
    let blob = server
        .dir
        .path()
        .join("blobs/sha256")
        .join(&hash[..2])
        .join(&hash);
    std::fs::remove_file(&blob).expect("remove the blob");

    let (_, read) = key(&server, &["read"]).await;
    let reader = sign_in(&server, &read).await;
    let page = get(&server, "/sessions/f1", Some(&reader), &[]).await;
    assert!(!page.text.contains("/verify\""), "no Verify for a read key");
    let refused = post(&server, "/sessions/f1/verify", Some(&reader), "", &[]).await;
    assert_eq!(refused.status, 403, "{}", refused.text);

    let cookie = sign_in(&server, TOKEN).await;
    let page = get(&server, "/sessions/f1", Some(&cookie), &[]).await;
    assert!(
        page.decoded().contains("action=\"../sessions/f1/verify\""),
        "{}",
        page.text
    );
    let page = post(&server, "/sessions/f1/verify", Some(&cookie), "", &[]).await;
    assert_eq!(
        page.status, 200,
        "the answer is the page with what was found"
    );
    assert!(
        page.text
            .contains("2 of 2 checkpoints valid; 0 of 1 assets ok, 1 missing, 0 corrupt"),
        "{}",
        page.text
    );
    assert!(
        page.text
            .contains("<span class=\"status missing\">missing</span>"),
        "{}",
        page.text
    );
    let (_, assets) = server.get("/sessions/f1/assets").await;
    assert_eq!(assets["items"][0]["status"], "missing", "{assets}");
    let later = get(&server, "/sessions/f1", Some(&cookie), &[]).await;
    assert!(
        !later.text.contains("Verified just now"),
        "only the Verify answer says it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sessions_history_lists_its_attempts_and_crashes() {
    let server = TestServer::start().await;
    seed(&server).await;
    let (status, body) = server
        .post("/sessions/f1/recover", json!({"option": "continue"}))
        .await;
    assert_eq!(status, 200, "{body}");
    let cookie = sign_in(&server, TOKEN).await;
    let page = get(&server, "/sessions/f1", Some(&cookie), &[]).await;
    let start = page.text.find("<table id=\"history\"").expect("a history");
    let end = start + page.text[start..].find("</table>").expect("its end");
    let rows: Vec<String> = page.text[start..end]
        .split("<tr>")
        .skip(2)
        .map(|row| {
            let cells: Vec<&str> = row
                .split("<td data-label=\"")
                .skip(2)
                .map(|cell| {
                    let text = cell.split_once('>').expect("a cell").1;
                    text.split("</td>").next().expect("its end")
                })
                .collect();
            cells.join(" | ")
        })
        .collect();
    assert_eq!(
        rows,
        [
            "1 | <span class=\"status active\">active</span> | ",
            "1 | active → <span class=\"status failed\">failed</span> | out_of_memory",
            "2 | failed → <span class=\"status active\">active</span> | ",
        ],
        "{}",
        page.text
    );
}
