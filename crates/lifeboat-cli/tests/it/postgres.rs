//! Two `lifeboat serve` processes on one PostgreSQL schema, as two nodes behind a load
//! balancer: checkpoints written through both at once get gap-free `seq`s, one
//! Idempotency-Key raced through both is written once, each node reads what the other
//! wrote, an event stream on one node sees every event written through the other, and a
//! key revoked on one is refused by the other within about a second.

use std::time::{Duration, Instant};

use futures_util::future::join_all;
use serde_json::{Value, json};

use crate::events::read_stream;
use crate::harness::{Binary, TOKEN, TestServer, all_checkpoints};

/// Checkpoints written through each node.
const PER_NODE: usize = 20;

async fn checkpoint(http: &reqwest::Client, base: &str, key: &str, n: usize) -> (u16, Value) {
    let response = http
        .post(format!("{base}/api/v1/sessions/shared/checkpoints"))
        .bearer_auth(TOKEN)
        .header("idempotency-key", key)
        .json(&json!({"attempt": 1, "kind": "item", "data": {"n": n}}))
        .send()
        .await
        .expect("a checkpoint request");
    let status = response.status().as_u16();
    (status, response.json().await.expect("a JSON answer"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_on_one_database_act_as_one() {
    let url = lifeboat_testkit::postgres::fresh_schema().await.url;
    let (dir_a, dir_b) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let a = Binary::start_with(dir_a.path(), &["--database-url", &url]);
    let b = Binary::start_with(dir_b.path(), &["--database-url", &url]);
    let http = reqwest::Client::new();
    let created = http
        .post(format!("{}/api/v1/sessions", a.base))
        .bearer_auth(TOKEN)
        .json(&json!({"id": "shared", "kind": "render", "heartbeat_timeout_ms": 3_600_000, "checkpoint_retention": 1000}))
        .send()
        .await
        .expect("create");
    assert_eq!(created.status(), 201);

    // A stream on B, opened before the writes: every checkpoint written through A or B.
    let stream_url = format!("{}/api/v1/events?session_id=shared", b.base);
    let expected = 2 * PER_NODE + 1;
    let stream_http = http.clone();
    let stream = tokio::spawn(async move {
        read_stream(&stream_http, stream_url, TOKEN, Some(0), expected + 1).await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;

    let started = Instant::now();
    let writes = (0..PER_NODE).flat_map(|n| {
        let http = &http;
        [
            (a.base.clone(), format!("a-{n}"), n),
            (b.base.clone(), format!("b-{n}"), PER_NODE + n),
        ]
        .into_iter()
        .map(move |(base, key, n)| async move { checkpoint(http, &base, &key, n).await })
    });
    let mut answers = join_all(writes).await;
    // One key raced through both nodes: one write, one replay of the same answer.
    let raced = join_all([
        checkpoint(&http, &a.base, "raced", 999),
        checkpoint(&http, &b.base, "raced", 999),
    ])
    .await;
    println!(
        "two nodes: {} checkpoints through A and B at once in {:?}",
        answers.len() + 2,
        started.elapsed()
    );
    assert_eq!(raced[0].1["seq"], raced[1].1["seq"], "{raced:?}");
    assert!(
        raced
            .iter()
            .all(|(status, _)| *status == 201 || *status == 200),
        "{raced:?}"
    );
    answers.push(raced[0].clone());
    assert!(
        answers.iter().all(|(status, _)| *status == 201),
        "{answers:?}"
    );
    let mut seqs: Vec<u64> = answers
        .iter()
        .map(|(_, body)| body["seq"].as_u64().expect("seq"))
        .collect();
    seqs.sort_unstable();
    assert_eq!(
        seqs,
        (1..=expected as u64).collect::<Vec<_>>(),
        "gap-free, no duplicate"
    );

    let through_a = all_checkpoints(&a.base, "shared").await;
    let through_b = all_checkpoints(&b.base, "shared").await;
    assert_eq!(through_a.len(), expected);
    assert_eq!(through_a, through_b, "both nodes read the same checkpoints");

    let events = stream.await.expect("the stream task");
    let created: Vec<u64> = events
        .iter()
        .filter(|e| e.kind == "checkpoint.created")
        .filter_map(|e| e.data["data"]["seq"].as_u64())
        .collect();
    let mut sorted = created.clone();
    sorted.sort_unstable();
    assert_eq!(
        sorted,
        (1..=expected as u64).collect::<Vec<_>>(),
        "B's stream saw every checkpoint"
    );
    assert!(
        events.windows(2).all(|w| w[0].id < w[1].id),
        "event ids increase"
    );

    // A key made and revoked through A stops working on B within about a second.
    let made: Value = http
        .post(format!("{}/api/v1/keys", a.base))
        .bearer_auth(TOKEN)
        .json(&json!({"tenant": "default", "scopes": ["read"]}))
        .send()
        .await
        .expect("make a key")
        .json()
        .await
        .expect("the key");
    let key = made["key"].as_str().expect("key");
    let read_on_b = || {
        http.get(format!("{}/api/v1/sessions/shared", b.base))
            .bearer_auth(key)
            .send()
    };
    assert_eq!(read_on_b().await.expect("read").status(), 200);
    let revoked = http
        .delete(format!(
            "{}/api/v1/keys/{}",
            a.base,
            made["id"].as_str().expect("id")
        ))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("revoke");
    assert!(revoked.status().is_success(), "{revoked:?}");
    let revoked_at = Instant::now();
    while read_on_b().await.expect("read").status() != 401 {
        assert!(
            revoked_at.elapsed() < Duration::from_secs(3),
            "B still accepts the revoked key"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "two nodes: a key revoked on A refused on B after {:?}",
        revoked_at.elapsed()
    );
    a.stop();
    b.stop();
}

/// What PostgreSQL stores differently from SQLite is answered as a client error or
/// handled, never a 500: a title with U+0000 (PostgreSQL text cannot hold it) is refused
/// with 422 and nothing stored; the largest stall timeout does not overflow the sweep.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_limits_are_client_errors_not_failures() {
    let url = lifeboat_testkit::postgres::fresh_schema().await.url;
    let server = TestServer::start_configured(move |config| config.database_url = Some(url)).await;
    let (status, body) = server
        .post(
            "/sessions",
            json!({"id": "nul", "kind": "render", "title": "a\u{0}b"}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    let (status, _) = server.get("/sessions/nul").await;
    assert_eq!(status, 404, "nothing was stored");

    let (status, body) = server
        .post(
            "/sessions",
            json!({"id": "patient", "kind": "render", "stall_timeout_ms": i64::MAX}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, body) = server.get("/sessions").await;
    assert_eq!(status, 200, "the sweep and the list still work: {body}");
    let (status, body) = server.get("/stats").await;
    assert_eq!(status, 200, "{body}");
}

/// One append raced through two nodes that share the asset directory, at the same offset
/// with different bytes, round after round: one is acknowledged, the other refused with
/// `offset-mismatch`, and the recording read back through either node is exactly the
/// acknowledged chunks in order (no acknowledged byte overwritten by the loser).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_raced_through_two_nodes_have_one_winner() {
    use sha2::Digest;
    const ROUNDS: usize = 24;
    let url = lifeboat_testkit::postgres::fresh_schema().await.url;
    let shared = tempfile::tempdir().expect("dir");
    let a = Binary::start_with(shared.path(), &["--database-url", &url]);
    let b = Binary::start_with(shared.path(), &["--database-url", &url]);
    let http = reqwest::Client::new();
    let created = http
        .post(format!("{}/api/v1/sessions", a.base))
        .bearer_auth(TOKEN)
        .json(&json!({"id": "rec", "kind": "recording", "heartbeat_timeout_ms": 3_600_000}))
        .send()
        .await
        .expect("create");
    assert_eq!(created.status(), 201);
    let append = |base: &str, offset: usize, bytes: Vec<u8>| {
        http.post(format!(
            "{base}/api/v1/sessions/rec/assets/take.pcm?offset={offset}"
        ))
        .bearer_auth(TOKEN)
        .body(bytes)
        .send()
    };
    let mut acknowledged: Vec<u8> = Vec::new();
    for round in 0..ROUNDS {
        let size = 32 * 1024 + round * 997;
        let (from_a, from_b) = (vec![round as u8; size], vec![!(round as u8); size]);
        let offset = acknowledged.len();
        let (ra, rb) = tokio::join!(
            append(&a.base, offset, from_a.clone()),
            append(&b.base, offset, from_b.clone())
        );
        let (ra, rb) = (ra.expect("append via A"), rb.expect("append via B"));
        let (sa, sb) = (ra.status().as_u16(), rb.status().as_u16());
        let winner = match (sa, sb) {
            (200, 409) => from_a,
            (409, 200) => from_b,
            other => panic!("round {round}: one winner expected, got {other:?}"),
        };
        let loser: Value = if sa == 409 { ra } else { rb }
            .json()
            .await
            .expect("a problem");
        assert_eq!(
            loser["type"]
                .as_str()
                .map(|t| t.ends_with("offset-mismatch")),
            Some(true),
            "{loser}"
        );
        acknowledged.extend_from_slice(&winner);
    }
    for node in [&a, &b] {
        let read = http
            .get(format!("{}/api/v1/sessions/rec/assets/take.pcm", node.base))
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("read");
        assert_eq!(read.status(), 200);
        let bytes = read.bytes().await.expect("bytes");
        assert!(
            bytes[..] == acknowledged[..],
            "the recording is the acknowledged chunks"
        );
    }
    let described: Value = http
        .get(format!("{}/api/v1/sessions/rec/assets", b.base))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    assert_eq!(
        described["items"][0]["sha256"],
        json!(hex::encode(sha2::Sha256::digest(&acknowledged)))
    );
    a.stop();
    b.stop();
}
