//! Three `lifeboat serve` processes on one PostgreSQL schema, each with a data directory of
//! its own and all with their asset bytes in one bucket of moto's S3-compatible server, as
//! three nodes behind a load balancer, under load from checkpoint writers, recorders
//! appending chunks and event subscribers; the node holding the maintenance term is
//! SIGKILLed while silent sessions should expire. Every client keeps a ledger of what was
//! acknowledged (2xx) and the test checks it against what the survivors serve.
//!
//! The "load balancer" is the clients': each request goes to the next node in turn, and a
//! request that gets no answer (the node is dead) is sent again, with the same
//! Idempotency-Key or at the same offset, to the next node.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{Value, json};
use sha2::Digest;

use lifeboat_testkit::s3::Moto;

use crate::harness::{Binary, TOKEN, all_checkpoints};

const WRITERS: usize = 6;
const RECORDERS: usize = 2;
const SILENT: usize = 3;
/// The silent sessions' lease.
const SILENT_LEASE_MS: u64 = 2_000;

/// The nodes' addresses, and which of them are known dead.
#[derive(Clone)]
struct Balancer {
    bases: Arc<Vec<String>>,
    dead: Arc<Mutex<BTreeSet<usize>>>,
    /// Requests sent again to another node after one gave no answer.
    resent: Arc<AtomicUsize>,
}

impl Balancer {
    /// Sends `build(base)` to node `turn` (mod 3), or the next live one when a node gives no
    /// answer; 503 is retried after a pause. Panics after 20 s without an answer.
    async fn send(
        &self,
        turn: usize,
        build: impl Fn(&str) -> reqwest::RequestBuilder,
    ) -> reqwest::Response {
        let started = Instant::now();
        let mut at = turn;
        loop {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "no node answered"
            );
            let index = at % self.bases.len();
            at += 1;
            if self.dead.lock().expect("lock").contains(&index) {
                continue;
            }
            match build(&self.bases[index]).send().await {
                Ok(response) if response.status() == 503 => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Ok(response) => return response,
                Err(_) => {
                    self.resent.fetch_add(1, Ordering::Relaxed);
                    self.dead.lock().expect("lock").insert(index);
                }
            }
        }
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client")
}

/// Writes checkpoints until `stop`; answers (seq → (n, SHA-256)) of every 201.
async fn writer(lb: Balancer, w: usize, stop: Arc<AtomicBool>) -> BTreeMap<u64, (u64, String)> {
    let http = client();
    let mut acked = BTreeMap::new();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let data = json!({"writer": w, "n": n}).to_string();
        let body = format!("{{\"attempt\":1,\"kind\":\"item\",\"data\":{data}}}");
        let key = format!("w{w}-{n}");
        let response = lb
            .send(w + n as usize, |base| {
                http.post(format!("{base}/api/v1/sessions/w{w}/checkpoints"))
                    .bearer_auth(TOKEN)
                    .header("idempotency-key", &key)
                    .header("content-type", "application/json")
                    .body(body.clone())
            })
            .await;
        assert!(
            response.status() == 201 || response.status() == 200,
            "{response:?}"
        );
        let answer: Value = response.json().await.expect("JSON");
        let sha = answer["sha256"].as_str().expect("sha256").to_owned();
        assert_eq!(sha, hex::encode(sha2::Sha256::digest(data.as_bytes())));
        let seq = answer["seq"].as_u64().expect("seq");
        assert!(
            acked.insert(seq, (n, sha)).is_none(),
            "seq {seq} answered twice"
        );
        n += 1;
        assert!(n < 1_000, "more checkpoints than the session keeps");
    }
    acked
}

/// Appends 16 KiB chunks until `stop`; answers the bytes acknowledged, in order.
async fn recorder(lb: Balancer, r: usize, stop: Arc<AtomicBool>) -> Vec<u8> {
    let http = client();
    let mut acked: Vec<u8> = Vec::new();
    let mut n = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let chunk: Vec<u8> = (0..16 * 1024).map(|i| (i * 7 + n * 13 + r) as u8).collect();
        let offset = acked.len();
        let response = lb
            .send(r + n, |base| {
                http.post(format!(
                    "{base}/api/v1/sessions/rec{r}/assets/take.pcm?offset={offset}"
                ))
                .bearer_auth(TOKEN)
                .body(chunk.clone())
            })
            .await;
        // The first append makes the asset (201); sent again to another node, it finds the
        // chunk there (200).
        let status = response.status().as_u16();
        assert!(
            status == 200 || offset == 0 && status == 201,
            "{response:?}"
        );
        let answer: Value = response.json().await.expect("JSON");
        acked.extend_from_slice(&chunk);
        assert_eq!(answer["size"], json!(acked.len()));
        n += 1;
    }
    acked
}

/// What a subscriber saw: event ids in order, the (session, seq) of every
/// `checkpoint.created`, and how many times its stream ended and it reconnected.
#[derive(Default)]
struct Seen {
    ids: Vec<i64>,
    created: BTreeSet<(String, u64)>,
    reconnects: usize,
}

/// Follows `/events` on one node from the start until `stop`, reconnecting with
/// `Last-Event-ID` when the stream ends (as an SSE client does).
async fn subscriber(base: String, stop: Arc<AtomicBool>) -> Seen {
    let mut seen = Seen::default();
    while !stop.load(Ordering::Relaxed) {
        let last = seen.ids.last().copied().unwrap_or(0);
        let response = reqwest::Client::new()
            .get(format!("{base}/api/v1/events"))
            .bearer_auth(TOKEN)
            .header("last-event-id", last.to_string())
            .send()
            .await;
        match response {
            Ok(response) if response.status() == 200 => {
                follow(response, &stop, &mut seen).await;
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
        if !stop.load(Ordering::Relaxed) {
            seen.reconnects += 1;
        }
    }
    seen
}

/// Reads one stream until it ends or `stop`.
async fn follow(response: reqwest::Response, stop: &AtomicBool, seen: &mut Seen) {
    let mut stream = response.bytes_stream();
    let mut buffer = String::new();
    while !stop.load(Ordering::Relaxed) {
        let Ok(next) = tokio::time::timeout(Duration::from_millis(200), stream.next()).await else {
            continue;
        };
        let Some(Ok(chunk)) = next else {
            return;
        };
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find("\n\n") {
            let frame: String = buffer.drain(..end + 2).collect();
            let (mut id, mut kind, mut data) = (None, "", Value::Null);
            for line in frame.lines() {
                if let Some(v) = line.strip_prefix("id:") {
                    id = v.trim().parse::<i64>().ok();
                } else if let Some(v) = line.strip_prefix("event:") {
                    kind = v.trim();
                } else if let Some(v) = line.strip_prefix("data:") {
                    data = serde_json::from_str(v.trim()).expect("JSON data");
                }
            }
            if let Some(id) = id {
                seen.ids.push(id);
                if kind == "checkpoint.created" {
                    seen.created.insert((
                        data["data"]["session_id"]
                            .as_str()
                            .unwrap_or_default()
                            .to_owned(),
                        data["data"]["seq"].as_u64().unwrap_or_default(),
                    ));
                }
            }
        }
    }
}

async fn cluster(http: &reqwest::Client, base: &str) -> Value {
    http.get(format!("{base}/api/v1/admin/cluster"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("cluster")
        .json()
        .await
        .expect("JSON")
}

async fn post(http: &reqwest::Client, url: String, body: Value) -> u16 {
    http.post(url)
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await
        .expect("POST")
        .status()
        .as_u16()
}

/// Heartbeats a session every `SILENT_LEASE_MS / 4` until `stop`; answers the statuses
/// other than 200 it got (a 409 is a false crash: the session was declared dead while its
/// worker was beating).
async fn heartbeater(lb: Balancer, id: String, stop: Arc<AtomicBool>) -> Vec<u16> {
    let http = client();
    let mut refused = Vec::new();
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        let response = lb
            .send(n, |base| {
                http.post(format!("{base}/api/v1/sessions/{id}/heartbeat"))
                    .bearer_auth(TOKEN)
                    .json(&json!({"attempt": 1}))
            })
            .await;
        if response.status() != 200 {
            refused.push(response.status().as_u16());
        }
        n += 1;
        tokio::time::sleep(Duration::from_millis(SILENT_LEASE_MS / 4)).await;
    }
    refused
}

/// Checkpoint writers, recorders and subscribers running against the nodes.
struct Load {
    stop_writes: Arc<AtomicBool>,
    stop_reading: Arc<AtomicBool>,
    writers: Vec<tokio::task::JoinHandle<BTreeMap<u64, (u64, String)>>>,
    recorders: Vec<tokio::task::JoinHandle<Vec<u8>>>,
    subscribers: Vec<tokio::task::JoinHandle<Seen>>,
}

impl Load {
    /// Creates the writers' and recorders' sessions, starts subscribers on `watched`, then
    /// the writers and recorders.
    async fn start(lb: &Balancer, watched: Vec<String>) -> Load {
        let http = client();
        let sessions = (0..WRITERS)
            .map(|w| format!("w{w}"))
            .chain((0..RECORDERS).map(|r| format!("rec{r}")));
        for id in sessions {
            let created = post(
                &http,
                format!("{}/api/v1/sessions", lb.bases[0]),
                json!({"id": id, "kind": "load", "heartbeat_timeout_ms": 3_600_000, "checkpoint_retention": 1000}),
            )
            .await;
            assert_eq!(created, 201);
        }
        let stop_writes = Arc::new(AtomicBool::new(false));
        let stop_reading = Arc::new(AtomicBool::new(false));
        let subscribers = watched
            .into_iter()
            .map(|base| tokio::spawn(subscriber(base, Arc::clone(&stop_reading))))
            .collect();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let writers = (0..WRITERS)
            .map(|w| tokio::spawn(writer(lb.clone(), w, Arc::clone(&stop_writes))))
            .collect();
        let recorders = (0..RECORDERS)
            .map(|r| tokio::spawn(recorder(lb.clone(), r, Arc::clone(&stop_writes))))
            .collect();
        Load {
            stop_writes,
            stop_reading,
            writers,
            recorders,
            subscribers,
        }
    }

    /// Stops the load and checks every ledger against what `survivor` serves: every
    /// acknowledged checkpoint with its SHA-256 and none twice, each recording exactly its
    /// acknowledged chunks, each subscriber every event in order without a gap. Answers a
    /// summary line.
    async fn finish(self, survivor: &str) -> String {
        self.stop_writes.store(true, Ordering::Relaxed);
        let mut ledgers = Vec::new();
        for w in self.writers {
            ledgers.push(w.await.expect("writer"));
        }
        let mut recordings = Vec::new();
        for r in self.recorders {
            recordings.push(r.await.expect("recorder"));
        }
        // Every event written is numbered and streamed within the poll interval.
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        self.stop_reading.store(true, Ordering::Relaxed);

        let (mut acknowledged, mut lost, mut duplicates) = (0, Vec::new(), 0);
        for (w, acked) in ledgers.iter().enumerate() {
            let stored = all_checkpoints(survivor, &format!("w{w}")).await;
            let mut ns = BTreeSet::new();
            for c in &stored {
                if !ns.insert(c["data"]["n"].as_u64().expect("n")) {
                    duplicates += 1;
                }
            }
            let by_seq: BTreeMap<u64, String> = stored
                .iter()
                .map(|c| {
                    (
                        c["seq"].as_u64().expect("seq"),
                        c["sha256"].as_str().expect("sha").to_owned(),
                    )
                })
                .collect();
            for (seq, (_, sha)) in acked {
                acknowledged += 1;
                if by_seq.get(seq) != Some(sha) {
                    lost.push((w, *seq));
                }
            }
        }
        assert!(
            lost.is_empty(),
            "acknowledged checkpoints lost, the first: {:?}",
            &lost[..lost.len().min(10)]
        );
        assert_eq!(duplicates, 0, "a checkpoint stored twice");
        assert!(acknowledged > WRITERS, "the writers wrote");
        let http = client();
        let mut recorded_bytes = 0;
        for (r, acked) in recordings.iter().enumerate() {
            let read = http
                .get(format!("{survivor}/api/v1/sessions/rec{r}/assets/take.pcm"))
                .bearer_auth(TOKEN)
                .send()
                .await
                .expect("read");
            let bytes = read.bytes().await.expect("bytes");
            assert!(
                bytes[..] == acked[..],
                "recording {r} differs from its acknowledged chunks"
            );
            recorded_bytes += acked.len();
        }
        let mut reconnects = 0;
        for subscriber in self.subscribers {
            let seen = subscriber.await.expect("subscriber");
            reconnects += seen.reconnects;
            assert!(!seen.ids.is_empty());
            assert!(
                seen.ids.windows(2).all(|w| w[1] == w[0] + 1),
                "a subscriber's event ids have a gap or go back"
            );
            for (w, acked) in ledgers.iter().enumerate() {
                for seq in acked.keys() {
                    assert!(
                        seen.created.contains(&(format!("w{w}"), *seq)),
                        "a subscriber missed checkpoint {seq} of w{w}"
                    );
                }
            }
        }
        format!(
            "{acknowledged} checkpoints and {recorded_bytes} recorded bytes acknowledged, 0 lost, 0 duplicates; subscribers missed nothing ({reconnects} reconnections)"
        )
    }
}

/// Three nodes on `database`, each over a data directory of its own (kept in `dirs`), with
/// their asset bytes under one fresh prefix in `moto`.
fn start_nodes(database: &str, moto: &Moto, dirs: &mut Vec<tempfile::TempDir>) -> Vec<Binary> {
    let bucket = moto.fresh_url();
    let flags = ["--database-url", database, "--blob-store", bucket.as_str()];
    (0..3)
        .map(|_| {
            let dir = tempfile::tempdir().expect("dir");
            let node = Binary::start_with_env(dir.path(), &flags, &moto.env());
            dirs.push(dir);
            node
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_lose_nothing_when_the_maintenance_holder_is_killed() {
    let url = lifeboat_testkit::postgres::fresh_schema().await.url;
    let mut dirs = Vec::new();
    let mut nodes: Vec<Option<Binary>> = start_nodes(&url, Moto::shared(), &mut dirs)
        .into_iter()
        .map(Some)
        .collect();
    let bases: Vec<String> = nodes.iter().flatten().map(|n| n.base.clone()).collect();
    let http = client();
    let lb = Balancer {
        bases: Arc::new(bases.clone()),
        dead: Arc::default(),
        resent: Arc::default(),
    };
    let before = cluster(&http, &bases[1]).await;
    let holder = before["maintenance"]["holder"].clone();
    let term = before["maintenance"]["term"].as_u64().expect("a term");
    let holder_index = {
        let mut found = None;
        for (i, base) in bases.iter().enumerate() {
            if cluster(&http, base).await["node"] == holder {
                found = Some(i);
            }
        }
        found.expect("one of the three holds the term")
    };
    // Subscribers on the two nodes that survive.
    let watched = bases
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != holder_index)
        .map(|(_, base)| base.clone())
        .collect();
    let load = Load::start(&lb, watched).await;
    tokio::time::sleep(Duration::from_millis(1_000)).await;

    // Silent sessions: one heartbeat each, then nothing; then the holder dies.
    let mut silent_since = Vec::new();
    for s in 0..SILENT {
        let id = format!("silent{s}");
        let created = post(
            &http,
            format!("{}/api/v1/sessions", bases[s % 3]),
            json!({"id": id, "kind": "quiet", "heartbeat_timeout_ms": SILENT_LEASE_MS}),
        )
        .await;
        assert_eq!(created, 201);
        let beat = post(
            &http,
            format!("{}/api/v1/sessions/{id}/heartbeat", bases[(s + 1) % 3]),
            json!({"attempt": 1}),
        )
        .await;
        assert_eq!(beat, 200);
        silent_since.push((id, Instant::now()));
    }
    nodes[holder_index].take().expect("the holder").kill_9();
    let killed = Instant::now();
    let survivor = &bases[(holder_index + 1) % 3];

    // The silent sessions are found incomplete through the survivors within lease + 2 s.
    let mut expired_after = Vec::new();
    for (id, since) in &silent_since {
        loop {
            let session: Value = http
                .get(format!("{survivor}/api/v1/sessions/{id}"))
                .bearer_auth(TOKEN)
                .send()
                .await
                .expect("read")
                .json()
                .await
                .expect("JSON");
            if session["status"] == "incomplete" {
                expired_after.push(since.elapsed());
                break;
            }
            assert!(
                since.elapsed() < Duration::from_millis(SILENT_LEASE_MS + 2_000),
                "{id} is still {} {:?} after its last heartbeat",
                session["status"],
                since.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // A new term, on a survivor, within 6 s of the kill.
    let taken = loop {
        let now = cluster(&http, survivor).await;
        if now["maintenance"]["holder"] != holder {
            break killed.elapsed();
        }
        assert!(killed.elapsed() < Duration::from_secs(8), "{now}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let after = cluster(&http, survivor).await;
    assert_eq!(after["maintenance"]["term"], json!(term + 1));
    let alive = after["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .filter(|n| n["alive"] == json!(true))
        .count();
    assert_eq!(alive, 2, "{after}");

    tokio::time::sleep(Duration::from_millis(500)).await;
    let summary = load.finish(survivor).await;
    println!(
        "three nodes, holder killed: {summary}; {} requests sent again to another node after the kill; silent sessions incomplete after {expired_after:?} (lease {SILENT_LEASE_MS} ms); term {term} → {} after {taken:?}",
        lb.resent.load(Ordering::Relaxed),
        term + 1
    );
    for node in nodes.into_iter().flatten() {
        node.stop();
    }
}

/// The same load on three nodes while their PostgreSQL (a throwaway server of the test's
/// own) is stopped as in a crash (`pg_ctl -m immediate`) for longer than a lease and
/// started again: every acknowledged write is there, the subscribers missed nothing, and
/// sessions whose workers kept beating through the outage are not declared crashed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_lose_nothing_when_postgres_restarts_under_load() {
    let Some(database) = lifeboat_testkit::postgres::Throwaway::start() else {
        if crate::faults::unavailable("PostgreSQL's programs (initdb, pg_ctl)") {
            return;
        }
        unreachable!("unavailable panics when the programs are required");
    };
    let mut dirs = Vec::new();
    let nodes = start_nodes(&database.url, Moto::shared(), &mut dirs);
    let bases: Vec<String> = nodes.iter().map(|n| n.base.clone()).collect();
    let http = client();
    let lb = Balancer {
        bases: Arc::new(bases.clone()),
        dead: Arc::default(),
        resent: Arc::default(),
    };
    let stop_beats = Arc::new(AtomicBool::new(false));
    let mut heartbeaters = Vec::new();
    for s in 0..SILENT {
        let id = format!("beating{s}");
        let created = post(
            &http,
            format!("{}/api/v1/sessions", bases[s % 3]),
            json!({"id": id, "kind": "busy", "heartbeat_timeout_ms": SILENT_LEASE_MS}),
        )
        .await;
        assert_eq!(created, 201);
        heartbeaters.push(tokio::spawn(heartbeater(
            lb.clone(),
            id,
            Arc::clone(&stop_beats),
        )));
    }
    let load = Load::start(&lb, bases[1..].to_vec()).await;
    tokio::time::sleep(Duration::from_millis(1_000)).await;

    let down = Duration::from_millis(SILENT_LEASE_MS + 1_000);
    let restarted = Instant::now();
    let database = Arc::new(database);
    let restarting = Arc::clone(&database);
    tokio::task::spawn_blocking(move || restarting.restart_immediate(down))
        .await
        .expect("restart");
    println!("PostgreSQL down and back in {:?}", restarted.elapsed());
    tokio::time::sleep(Duration::from_millis(2_000)).await;

    let summary = load.finish(&bases[0]).await;
    stop_beats.store(true, Ordering::Relaxed);
    let mut false_crashes = Vec::new();
    for beats in heartbeaters {
        false_crashes.extend(beats.await.expect("heartbeater"));
    }
    for s in 0..SILENT {
        let session: Value = http
            .get(format!("{}/api/v1/sessions/beating{s}", bases[0]))
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("read")
            .json()
            .await
            .expect("JSON");
        assert_eq!(session["status"], "active", "a false crash: {session}");
    }
    println!(
        "three nodes, PostgreSQL restarted (pg_ctl -m immediate, {down:?} down): {summary}; heartbeats refused: {false_crashes:?}"
    );
    assert!(
        false_crashes.is_empty(),
        "heartbeats refused: {false_crashes:?}"
    );
    for node in nodes {
        node.stop();
    }
    drop(database);
}
