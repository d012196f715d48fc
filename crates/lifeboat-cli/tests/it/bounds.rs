//! Bounded work per request (issue "Promises that hold under pressure", scope 8): a list
//! page stops at a byte budget and still says where to go on, every list pages, inputs
//! that would make every later read heavy are refused, and asset routes never buffer a
//! body for `Idempotency-Key`.

use serde_json::{Value, json};

use crate::harness::TestServer;

/// Follows `next_cursor` from `path` (which has no query yet); answers every page.
async fn pages(server: &TestServer, path: &str, limit: u32) -> Vec<Value> {
    let mut pages = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut url = format!("{path}?limit={limit}");
        if let Some(cursor) = &cursor {
            url.push_str(&format!("&cursor={cursor}"));
        }
        let (status, page) = server.get(&url).await;
        assert_eq!(status, 200, "{url}: {page}");
        cursor = page["next_cursor"].as_str().map(str::to_owned);
        pages.push(page);
        if cursor.is_none() {
            return pages;
        }
    }
}

/// Twelve checkpoints of 1 MiB each, asked for 1,000 at a time: the first page stops at
/// 8 MiB with a cursor, and the pages together hold all twelve, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_page_stops_at_its_byte_budget() {
    let server = TestServer::start().await;
    server
        .session(
            json!({"id": "big", "kind": "k", "checkpoint_retention": 100,
            "heartbeat_timeout_ms": 600_000}),
        )
        .await;
    let pad = "x".repeat(1 << 20);
    for n in 0..12 {
        server
            .checkpoint(
                "big",
                json!({"attempt": 1, "kind": "item", "data": {"n": n, "pad": pad}}),
            )
            .await;
    }
    let pages = pages(&server, "/sessions/big/checkpoints", 1_000).await;
    let first = pages[0]["items"].as_array().expect("items").len();
    assert!((1..12).contains(&first), "first page holds {first} of 12");
    assert!(pages.len() >= 2);
    let seqs: Vec<u64> = pages
        .iter()
        .flat_map(|p| p["items"].as_array().expect("items").clone())
        .map(|c| c["seq"].as_u64().expect("seq"))
        .collect();
    assert_eq!(seqs, (1..=12).collect::<Vec<_>>());
}

/// Assets and keys page like every other list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asset_and_key_lists_page() {
    let server = TestServer::start().await;
    server
        .session(json!({"id": "s", "kind": "k", "heartbeat_timeout_ms": 600_000}))
        .await;
    for name in ["a.bin", "b.bin", "c.bin"] {
        let reply = server
            .send_bytes(
                "PUT",
                &format!("/sessions/s/assets/{name}"),
                &[],
                b"x".to_vec(),
            )
            .await;
        assert_eq!(reply.status, 201);
    }
    let pages_of_assets = pages(&server, "/sessions/s/assets", 2).await;
    let names: Vec<Vec<Value>> = pages_of_assets
        .iter()
        .map(|p| {
            p["items"]
                .as_array()
                .expect("items")
                .iter()
                .map(|a| a["name"].clone())
                .collect()
        })
        .collect();
    assert_eq!(
        names,
        vec![vec![json!("a.bin"), json!("b.bin")], vec![json!("c.bin")]]
    );

    for _ in 0..3 {
        let (status, _) = server
            .post("/keys", json!({"tenant": "acme", "scopes": ["read"]}))
            .await;
        assert_eq!(status, 201);
    }
    let pages_of_keys = pages(&server, "/keys", 2).await;
    assert_eq!(pages_of_keys.len(), 2);
    let total: usize = pages_of_keys
        .iter()
        .map(|p| p["items"].as_array().expect("items").len())
        .sum();
    assert_eq!(total, 3);
}

/// `metadata` over 64 KiB is 413 and a checkpoint naming over 1,000 assets is 422; neither
/// changes anything (no session, no seq used).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_metadata_and_asset_lists_are_refused() {
    let server = TestServer::start().await;
    let metadata = json!({"blob": "m".repeat(70 * 1024)});
    server
        .expect_problem(
            "POST",
            "/sessions",
            Some(json!({"id": "meta", "kind": "k", "metadata": metadata})),
            413,
            "payload-too-large",
        )
        .await;
    assert_eq!(server.get("/sessions/meta").await.0, 404);

    server
        .session(json!({"id": "s", "kind": "k", "heartbeat_timeout_ms": 600_000}))
        .await;
    let names: Vec<String> = (0..1_001).map(|n| format!("a{n}.bin")).collect();
    server
        .expect_problem(
            "POST",
            "/sessions/s/checkpoints",
            Some(json!({"attempt": 1, "kind": "item", "assets": names})),
            422,
            "validation-failed",
        )
        .await;
    let seq = server
        .checkpoint("s", json!({"attempt": 1, "kind": "item"}))
        .await;
    assert_eq!(seq, 1, "the refused checkpoint used no seq");
}

/// An upload larger than any JSON body, sent with an `Idempotency-Key`, is streamed and
/// stored (the key is ignored on asset routes, SPEC §5 r2), and the same key on other
/// bytes is not a reused key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asset_writes_ignore_idempotency_keys() {
    let server = TestServer::start().await;
    server
        .session(json!({"id": "s", "kind": "k", "heartbeat_timeout_ms": 600_000}))
        .await;
    let big = vec![7u8; lifeboat_server::BODY_BYTES_MAX + (1 << 20)];
    let key = [("idempotency-key", "\"upload-1\"")];
    let reply = server
        .send_bytes("PUT", "/sessions/s/assets/big.bin", &key, big.clone())
        .await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    assert_eq!(reply.body["size"], json!(big.len()));
    let reply = server
        .send_bytes("PUT", "/sessions/s/assets/big.bin", &key, b"other".to_vec())
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.body["size"], json!(5));
}
