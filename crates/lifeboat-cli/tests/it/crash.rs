//! The crash test: the real binary, 16 concurrent checkpoint writers, `kill -9` at three
//! random moments, restart on the same data dir (or PostgreSQL schema); every acknowledged
//! checkpoint must be there with the same SHA-256.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use serde_json::{Value, json};
use sha2::Digest;

use crate::harness::{Binary, TOKEN, all_checkpoints};

const WRITERS: usize = 16;
const KILLS: usize = 3;

/// (session, seq) → the SHA-256 the server acknowledged.
type Acknowledged = Arc<Mutex<BTreeMap<(usize, u64), String>>>;

async fn write_until_refused(base: String, writer: usize, acked: Acknowledged) -> u64 {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    let mut written = 0;
    loop {
        let data = json!({"writer": writer, "n": written, "payload": "x".repeat(200 + written as usize % 800)});
        let text = data.to_string();
        let response = http
            .post(format!("{base}/api/v1/sessions/w{writer}/checkpoints"))
            .bearer_auth(TOKEN)
            .header("content-type", "application/json")
            .body(format!(
                "{{\"attempt\":1,\"kind\":\"stage\",\"stage\":\"s{written}\",\"data\":{text}}}"
            ))
            .send()
            .await;
        let Ok(response) = response else {
            return written;
        };
        if response.status() != 201 {
            return written;
        }
        let Ok(body) = response.json::<Value>().await else {
            return written;
        };
        let sha = body["sha256"].as_str().expect("sha256").to_owned();
        assert_eq!(sha, hex::encode(sha2::Sha256::digest(text.as_bytes())));
        let seq = body["seq"].as_u64().expect("seq");
        acked.lock().expect("lock").insert((writer, seq), sha);
        written += 1;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_checkpoints_survive_kill_9() {
    let dir = tempfile::tempdir().expect("dir");
    kill_9_rounds(dir.path(), &[], "SQLite").await;
}

/// The same on PostgreSQL (a fresh schema): a server killed mid-COMMIT loses no
/// acknowledged checkpoint, and the restarted one finds them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_checkpoints_survive_kill_9_on_postgres() {
    let dir = tempfile::tempdir().expect("dir");
    let url = lifeboat_testkit::postgres::fresh_schema().await.url;
    kill_9_rounds(dir.path(), &["--database-url", &url], "PostgreSQL").await;
}

/// `KILLS` rounds of `WRITERS` writers against the binary started with `flags`, each
/// ended by `kill -9` at a random moment; then every acknowledged checkpoint must be there.
async fn kill_9_rounds(dir: &std::path::Path, flags: &[&str], store: &str) {
    let acked: Acknowledged = Arc::default();
    let mut rng = rand::rng();

    for round in 0..KILLS {
        let server = Binary::start_with(dir, flags);
        let http = reqwest::Client::new();
        if round == 0 {
            for writer in 0..WRITERS {
                let response = http
                    .post(format!("{}/api/v1/sessions", server.base))
                    .bearer_auth(TOKEN)
                    .json(&json!({"id": format!("w{writer}"), "kind": "crash-test", "heartbeat_timeout_ms": 3_600_000}))
                    .send()
                    .await
                    .expect("create");
                assert_eq!(response.status(), 201);
            }
        }
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                tokio::spawn(write_until_refused(
                    server.base.clone(),
                    w,
                    Arc::clone(&acked),
                ))
            })
            .collect();
        // The kill lands at a random moment once writes flow (a loaded machine can take
        // a while to answer the first one).
        let before = acked.lock().expect("lock").len();
        let started = std::time::Instant::now();
        while acked.lock().expect("lock").len() == before
            && started.elapsed() < Duration::from_secs(20)
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let kill_after = Duration::from_millis(rng.random_range(150..900));
        tokio::time::sleep(kill_after).await;
        server.kill_9();
        let mut written = 0;
        for w in writers {
            written += w.await.expect("writer");
        }
        eprintln!(
            "round {round}: kill -9 after {kill_after:?}; {written} checkpoints acknowledged this round"
        );
    }

    let server = Binary::start_with(dir, flags);
    let acked = acked.lock().expect("lock").clone();
    let mut present = 0;
    let mut lost = Vec::new();
    for writer in 0..WRITERS {
        let mut stored = BTreeMap::new();
        for c in all_checkpoints(&server.base, &format!("w{writer}")).await {
            assert_eq!(c["valid"], true, "{c}");
            stored.insert(
                c["seq"].as_u64().expect("seq"),
                c["sha256"].as_str().expect("sha").to_owned(),
            );
        }
        for ((w, seq), sha) in acked.range((writer, 0)..(writer + 1, 0)) {
            match stored.get(seq) {
                Some(found) if found == sha => present += 1,
                other => lost.push((*w, *seq, other.cloned())),
            }
        }
    }
    eprintln!(
        "crash test ({store}): {} acknowledged, {present} present with the same SHA-256, {} lost, after {KILLS} kill -9s",
        acked.len(),
        lost.len()
    );
    assert!(
        acked.len() > WRITERS,
        "the writers must have written something"
    );
    assert!(lost.is_empty(), "acknowledged checkpoints lost: {lost:?}");
}
