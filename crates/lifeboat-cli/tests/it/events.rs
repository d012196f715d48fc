//! The event stream over HTTP: a scripted session and project arrive in order, with ids;
//! `Last-Event-ID` resumes; filters select one session or project.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::harness::{TOKEN, TestServer};

/// One parsed SSE event: id, type, data.
#[derive(Debug)]
pub(crate) struct Sse {
    pub(crate) id: i64,
    pub(crate) kind: String,
    pub(crate) data: Value,
}

/// Reads `count` events from `GET /events?{query}` (after `last_id` if given).
async fn read_events(
    server: &TestServer,
    query: &str,
    last_id: Option<i64>,
    count: usize,
) -> Vec<Sse> {
    read_events_as(server, TOKEN, query, last_id, count).await
}

/// [`read_events`] with another key.
pub(crate) async fn read_events_as(
    server: &TestServer,
    token: &str,
    query: &str,
    last_id: Option<i64>,
    count: usize,
) -> Vec<Sse> {
    let url = server.url(&format!("/events?{query}"));
    read_stream(&server.http, url, token, last_id, count).await
}

/// Reads `count` events from the event stream at `url` (after `last_id` if given), within
/// 10 s.
pub(crate) async fn read_stream(
    http: &reqwest::Client,
    url: String,
    token: &str,
    last_id: Option<i64>,
    count: usize,
) -> Vec<Sse> {
    let mut request = http.get(url).bearer_auth(token);
    if let Some(id) = last_id {
        request = request.header("last-event-id", id.to_string());
    }
    let response = request.send().await.expect("subscribe");
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .expect("type")
            .starts_with("text/event-stream")
    );
    let mut stream = response.bytes_stream();
    let mut buffer = String::new();
    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while events.len() < count {
        let chunk = tokio::time::timeout_at(deadline, stream.next())
            .await
            .expect("events arrive in time")
            .expect("stream open")
            .expect("chunk");
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find("\n\n") {
            let frame: String = buffer.drain(..end + 2).collect();
            let (mut id, mut kind, mut data) = (None, String::new(), Value::Null);
            for line in frame.lines() {
                if let Some(v) = line.strip_prefix("id:") {
                    id = v.trim().parse().ok();
                } else if let Some(v) = line.strip_prefix("event:") {
                    kind = v.trim().to_owned();
                } else if let Some(v) = line.strip_prefix("data:") {
                    data = serde_json::from_str(v.trim()).expect("JSON data");
                }
            }
            if let Some(id) = id {
                events.push(Sse { id, kind, data });
            }
        }
    }
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scripted_session_streams_in_order_and_resumes() {
    let server = TestServer::start().await;
    // Something before the subscription, which a new stream does not replay.
    server.session(json!({"id": "before", "kind": "k"})).await;

    let script = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        server
            .call("PUT", "/projects/p1", Some(json!({"state": {"step": 1}})))
            .await;
        server
            .session(json!({"id": "s1", "kind": "render", "project_id": "p1"}))
            .await;
        server
            .checkpoint(
                "s1",
                json!({"attempt": 1, "kind": "stage", "stage": "tts", "data": {}}),
            )
            .await;
        server.session(json!({"id": "other", "kind": "k"})).await;
        server
            .post("/sessions/s1/complete", json!({"attempt": 1}))
            .await;
    };
    let (events, ()) = tokio::join!(read_events(&server, "", None, 5), script);
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "project.saved",
            "session.status",
            "checkpoint.created",
            "session.status",
            "session.status"
        ]
    );
    assert!(events.windows(2).all(|w| w[0].id < w[1].id), "ids increase");
    assert_eq!(events[0].data["data"]["project_id"], json!("p1"));
    assert_eq!(
        events[1].data["data"],
        json!({"session_id": "s1", "project_id": "p1", "status": "active", "previous": null, "attempt": 1, "crash_type": null})
    );
    assert_eq!(events[2].data["data"]["seq"], json!(1));
    assert_eq!(events[3].data["data"]["session_id"], json!("other"));
    assert_eq!(events[4].data["data"]["status"], json!("completed"));

    // Resume after the second event: the third and fourth come again, in order.
    let resumed = read_events(&server, "", Some(events[1].id), 2).await;
    assert_eq!((resumed[0].id, resumed[1].id), (events[2].id, events[3].id));

    // Filters: one session; one project (its save and its session's events).
    let session = read_events(&server, "session_id=s1", Some(0), 3).await;
    assert!(
        session
            .iter()
            .all(|e| e.data["data"]["session_id"] == json!("s1"))
    );
    let project = read_events(&server, "project_id=p1", Some(0), 4).await;
    let kinds: Vec<&str> = project.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "project.saved",
            "session.status",
            "checkpoint.created",
            "session.status"
        ]
    );
    server
        .expect_problem(
            "GET",
            "/events?session_id=bad%20id",
            None,
            400,
            "invalid-id",
        )
        .await;
}

/// A graceful stop (SIGTERM) ends open event streams instead of waiting for them forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_open_streams() {
    let dir = tempfile::tempdir().expect("dir");
    let mut server = crate::harness::Binary::start(dir.path());
    let response = reqwest::Client::new()
        .get(format!("{}/api/v1/events", server.base))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("subscribe");
    assert_eq!(response.status(), 200);
    let pid = server.child.id().to_string();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(status.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(exit) = server.child.try_wait().expect("wait") {
            assert!(exit.success(), "{exit}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the server did not stop with a stream open"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut stream = response.bytes_stream();
    while let Some(Ok(_)) = stream.next().await {}
}

/// Each key may hold a limited number of open streams; closing one frees its place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_streams_per_key_are_limited() {
    let dir = tempfile::tempdir().expect("dir");
    let server = crate::harness::Binary::start_with(dir.path(), &["--streams-per-key", "2"]);
    let http = reqwest::Client::new();
    let open = || {
        http.get(format!("{}/api/v1/events", server.base))
            .bearer_auth(TOKEN)
            .send()
    };
    let first = open().await.expect("first");
    let second = open().await.expect("second");
    assert_eq!(
        (first.status().as_u16(), second.status().as_u16()),
        (200, 200)
    );
    let third = open().await.expect("third");
    assert_eq!(third.status(), 429);
    assert!(third.headers().contains_key("retry-after"));
    drop(first);
    let mut reopened = open().await.expect("reopen");
    for _ in 0..50 {
        if reopened.status() == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        reopened = open().await.expect("reopen");
    }
    assert_eq!(reopened.status(), 200, "a closed stream frees its place");
    drop(second);
}
