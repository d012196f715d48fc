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

    // The same in writes whose changes go out with later statements (a heartbeat's stage,
    // a failure's error), raced with other sessions' checkpoints that may share their
    // commit: only the writes with the NUL are refused.
    for n in 0..6 {
        server
            .session(json!({"id": format!("s{n}"), "kind": "render"}))
            .await;
    }
    let server = std::sync::Arc::new(server);
    let mut writes = Vec::new();
    for n in 0..6 {
        for round in 0..4 {
            let server = std::sync::Arc::clone(&server);
            writes.push(tokio::spawn(async move {
                let (path, body, nul) = match (n, round) {
                    (0, 0) => (
                        "heartbeat",
                        json!({"attempt": 1, "progress": {"stage": "a\u{0}b"}}),
                        true,
                    ),
                    (1, 0) => ("fail", json!({"attempt": 1, "error": "a\u{0}b"}), true),
                    _ => (
                        "checkpoints",
                        json!({"attempt": 1, "kind": "item", "data": {"round": round}}),
                        false,
                    ),
                };
                let (status, body) = server.post(&format!("/sessions/s{n}/{path}"), body).await;
                (nul, status, body)
            }));
        }
    }
    for write in writes {
        let (nul, status, body) = write.await.expect("the write ran");
        if nul {
            assert_eq!(status, 422, "{body}");
        } else {
            assert_eq!(status, 201, "an innocent checkpoint: {body}");
        }
    }
    let (status, body) = server.get("/sessions/s1").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["status"], "active",
        "the refused failure changed nothing: {body}"
    );

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
        // The first append makes the asset: 201.
        let won = if offset == 0 { 201 } else { 200 };
        let winner = match (sa, sb) {
            (status, 409) if status == won => from_a,
            (409, status) if status == won => from_b,
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

    // A project's new asset: no row exists to lock, and still one first append wins.
    let made = http
        .put(format!("{}/api/v1/projects/doc", a.base))
        .bearer_auth(TOKEN)
        .json(&json!({"state": {}}))
        .send()
        .await
        .expect("create a project");
    assert_eq!(made.status(), 201);
    for round in 0..12u8 {
        let url =
            |base: &str| format!("{base}/api/v1/projects/doc/assets/new-{round}.bin?offset=0");
        let (ra, rb) = tokio::join!(
            http.post(url(&a.base))
                .bearer_auth(TOKEN)
                .body(vec![round; 4096])
                .send(),
            http.post(url(&b.base))
                .bearer_auth(TOKEN)
                .body(vec![!round; 4096])
                .send()
        );
        let statuses = (
            ra.expect("via A").status().as_u16(),
            rb.expect("via B").status().as_u16(),
        );
        let winner = match statuses {
            (201, 409) => round,
            (409, 201) => !round,
            other => panic!("project round {round}: one winner expected, got {other:?}"),
        };
        let stored = http
            .get(format!(
                "{}/api/v1/projects/doc/assets/new-{round}.bin",
                b.base
            ))
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("read")
            .bytes()
            .await
            .expect("bytes");
        assert!(
            stored[..] == vec![winner; 4096][..],
            "project round {round}: the winner's bytes"
        );
    }
    a.stop();
    b.stop();
}

async fn get_json(http: &reqwest::Client, url: String) -> Value {
    let response = http
        .get(url)
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("a GET");
    assert_eq!(response.status(), 200);
    response.json().await.expect("JSON")
}

/// What a rolling restart and a whole outage each do to leases, and the maintenance term
/// changing hands, through real processes on one database:
/// - `/admin/cluster` on either node shows both, alive, and one term;
/// - SIGKILL of the node holding the term: the other takes the next term within 6 s;
/// - a node restarted while another runs gives no restart grace (a session's lease is
///   unchanged, and a silent session still expires on time);
/// - a node started when none runs gives the grace (the lease is extended).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restarts_keep_leases_and_the_maintenance_term_moves() {
    let url = lifeboat_testkit::postgres::fresh_schema().await.url;
    let shared = tempfile::tempdir().expect("dir");
    let flags = ["--database-url", url.as_str()];
    let a = Binary::start_with(shared.path(), &flags);
    let b = Binary::start_with(shared.path(), &flags);
    let http = reqwest::Client::new();
    for (id, timeout) in [("silent", 4_000), ("long", 120_000)] {
        let created = http
            .post(format!("{}/api/v1/sessions", a.base))
            .bearer_auth(TOKEN)
            .json(&json!({"id": id, "kind": "render", "heartbeat_timeout_ms": timeout}))
            .send()
            .await
            .expect("create");
        assert_eq!(created.status(), 201);
    }
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let cluster = get_json(&http, format!("{}/api/v1/admin/cluster", b.base)).await;
    assert_eq!(cluster["store"], "postgres");
    let alive: Vec<&Value> = cluster["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .filter(|node| node["alive"] == json!(true))
        .collect();
    assert_eq!(alive.len(), 2, "{cluster}");
    let term = cluster["maintenance"]["term"].as_u64().expect("a term");
    let holder = cluster["maintenance"]["holder"].clone();
    let a_node = get_json(&http, format!("{}/api/v1/admin/cluster", a.base)).await["node"].clone();
    assert_eq!(holder, a_node, "the first node to start holds the term");
    let lease_before = |body: &Value| body["lease_expires_at"].clone();
    let silent_before = get_json(&http, format!("{}/api/v1/sessions/silent", b.base)).await;

    // The holder dies and is restarted at once while B runs: no grace. The next term goes
    // to a running node within 6 s.
    a.kill_9();
    let killed = Instant::now();
    let a2 = Binary::start_with(shared.path(), &flags);
    let silent_after = get_json(&http, format!("{}/api/v1/sessions/silent", a2.base)).await;
    assert_eq!(
        lease_before(&silent_after),
        lease_before(&silent_before),
        "a node restarted while another runs gives no grace"
    );
    let silent_due = killed + Duration::from_secs(4 + 2);
    loop {
        let silent = get_json(&http, format!("{}/api/v1/sessions/silent", b.base)).await;
        if silent["status"] == "incomplete" {
            break;
        }
        assert!(
            Instant::now() < silent_due,
            "the silent session never expired: {silent}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let taken = loop {
        let now = get_json(&http, format!("{}/api/v1/admin/cluster", b.base)).await;
        if now["maintenance"]["holder"] != holder {
            break now;
        }
        assert!(killed.elapsed() < Duration::from_secs(10), "{now}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!(
        "rolling restart: term {term} → {} after the holder's SIGKILL, {:?}",
        taken["maintenance"]["term"],
        killed.elapsed()
    );
    assert_eq!(taken["maintenance"]["term"], json!(term + 1));

    // The whole service goes down; the first node back gives the outage grace.
    let long_before = get_json(&http, format!("{}/api/v1/sessions/long", b.base)).await;
    a2.kill_9();
    b.kill_9();
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    let c = Binary::start_with(shared.path(), &flags);
    let long_after = get_json(&http, format!("{}/api/v1/sessions/long", c.base)).await;
    assert_eq!(long_after["status"], "active");
    assert!(
        long_after["lease_expires_at"].as_str() > long_before["lease_expires_at"].as_str(),
        "after an outage the first node back extends leases: {long_before} → {long_after}"
    );
    c.stop();
}

/// A node whose clock runs 3 s fast (libfaketime) times leases by the database's clock
/// anyway, shows its skew in `/admin/cluster`, and is not ready (`/readyz` 503) until its
/// clock is fixed; a node with a good clock stays ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_a_skewed_clock_times_leases_by_the_database_and_is_not_ready() {
    // libfaketime preloaded into the server itself (`env` execs it, so the test's handle
    // is the server's process; the `faketime` wrapper forks, which would leave it running).
    let library = ["/usr/lib", "/usr/lib64"]
        .iter()
        .filter_map(|dir| std::fs::read_dir(dir).ok())
        .flatten()
        .flatten()
        .map(|entry| entry.path().join("faketime/libfaketime.so.1"))
        .chain([std::path::PathBuf::from(
            "/usr/lib/faketime/libfaketime.so.1",
        )])
        .find(|path| path.exists());
    let Some(library) = library else {
        if crate::faults::unavailable("libfaketime (Debian: faketime)") {
            return;
        }
        unreachable!("unavailable panics when the library is required");
    };
    let url = lifeboat_testkit::postgres::fresh_schema().await.url;
    let shared = tempfile::tempdir().expect("dir");
    let flags = ["--database-url", url.as_str()];
    let good = Binary::start_with(shared.path(), &flags);
    let preload = format!("LD_PRELOAD={}", library.display());
    let fast = Binary::start_under(
        &[
            "env",
            &preload,
            "FAKETIME=+3s",
            "FAKETIME_DONT_FAKE_MONOTONIC=1",
        ],
        shared.path(),
        &flags,
    );
    let http = reqwest::Client::new();
    let mut leases = Vec::new();
    for (node, id) in [(&good, "via-good"), (&fast, "via-fast")] {
        let created: Value = http
            .post(format!("{}/api/v1/sessions", node.base))
            .bearer_auth(TOKEN)
            .json(&json!({"id": id, "kind": "render", "heartbeat_timeout_ms": 60_000}))
            .send()
            .await
            .expect("create")
            .json()
            .await
            .expect("JSON");
        let lease = time::OffsetDateTime::parse(
            created["lease_expires_at"].as_str().expect("a lease"),
            &time::format_description::well_known::Rfc3339,
        )
        .expect("RFC 3339");
        leases.push(lease);
    }
    let apart = (leases[1] - leases[0]).whole_milliseconds();
    println!(
        "skewed clock: leases set through a node 3 s fast and a good one are {apart} ms apart"
    );
    assert!(
        apart.abs() < 1_000,
        "the fast node's lease was set by its own clock ({apart} ms later)"
    );
    let ready = |base: String| {
        let http = http.clone();
        async move {
            http.get(format!("{base}/readyz"))
                .send()
                .await
                .expect("readyz")
                .status()
                .as_u16()
        }
    };
    assert_eq!(ready(good.base.clone()).await, 200);
    assert_eq!(ready(fast.base.clone()).await, 503);
    let cluster = get_json(&http, format!("{}/api/v1/admin/cluster", good.base)).await;
    let skews: Vec<i64> = cluster["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .filter_map(|node| node["clock_skew_ms"].as_i64())
        .collect();
    assert!(
        skews.iter().any(|skew| (2_500..3_500).contains(skew)),
        "{cluster}"
    );
    good.stop();
    fast.stop();
}

/// Two servers creating one session id, or one project with `If-None-Match: *`, at the
/// same moment: it is made once, and the other gets the normal refusal (409 or 412) at
/// once, never a 503 (the two inserts meet on the unique key, and the loser's server runs
/// its write again, which then finds the winner's row).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_creating_one_id_at_once_make_it_once() {
    let url = lifeboat_testkit::postgres::fresh_schema().await.url;
    let on = |url: String| move |config: &mut lifeboat::Config| config.database_url = Some(url);
    let a = TestServer::start_configured(on(url.clone())).await;
    let b = TestServer::start_configured(on(url)).await;
    for round in 0..20 {
        let session = json!({"id": format!("s-{round}"), "kind": "render"});
        let (x, y) = tokio::join!(
            a.post("/sessions", session.clone()),
            b.post("/sessions", session.clone())
        );
        let mut statuses = vec![x.0, y.0];
        statuses.sort_unstable();
        assert_eq!(
            statuses,
            [201, 409],
            "round {round}: sessions: {} / {}",
            x.1,
            y.1
        );

        let path = format!("/projects/p-{round}");
        let (x, y) = tokio::join!(create(&a, &path, 1), create(&b, &path, 2));
        let mut statuses = vec![x.status, y.status];
        statuses.sort_unstable();
        assert_eq!(statuses, [201, 412], "round {round}: projects");
        let (_, project) = b.get(&path).await;
        assert_eq!(project["revision"], json!(1), "round {round}: {project}");
    }
    let (_, sessions) = a.get("/sessions?limit=100").await;
    assert_eq!(sessions["items"].as_array().map(Vec::len), Some(20));
}

/// `PUT` of a new project, create-only.
async fn create(server: &TestServer, path: &str, v: u32) -> crate::harness::Reply {
    let body = json!({"state": {"v": v}}).to_string();
    server
        .send(
            "PUT",
            path,
            &[("if-none-match", "*")],
            Some(("application/json", body)),
        )
        .await
}

/// With `?sslmode=require` a server talks to PostgreSQL over TLS and checks its
/// certificate: without the CA that signed it, the server refuses to start and says why;
/// with it (`PGSSLROOTCERT`), it serves, and PostgreSQL sees its connections encrypted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_reaches_postgres_over_tls_when_the_url_asks() {
    let Some((database, ca)) = lifeboat_testkit::postgres::Throwaway::start_with_tls() else {
        if crate::faults::unavailable("PostgreSQL's programs (initdb, pg_ctl) and openssl") {
            return;
        }
        unreachable!("unavailable panics when the programs are required");
    };
    let url = format!("{}?sslmode=require", database.url);
    let dir = tempfile::tempdir().expect("dir");

    let refused = std::process::Command::new(lifeboat_testkit::lifeboat_binary())
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--database-url",
            &url,
            "--data-dir",
        ])
        .arg(dir.path())
        .env("LIFEBOAT_ADMIN_TOKEN", TOKEN)
        .env_remove("PGSSLROOTCERT")
        .output()
        .expect("run lifeboat");
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success(),
        "started without trusting the certificate"
    );
    assert!(said.contains("certificate"), "{said}");

    let ca = ca.display().to_string();
    let node = Binary::start_with_env(
        dir.path(),
        &["--database-url", &url],
        &[("PGSSLROOTCERT", ca)],
    );
    let http = reqwest::Client::new();
    let created = http
        .post(format!("{}/api/v1/sessions", node.base))
        .bearer_auth(TOKEN)
        .json(&json!({"id": "tls", "kind": "render"}))
        .send()
        .await
        .expect("create");
    assert_eq!(created.status(), 201);
    let (client, connection) = tokio_postgres::connect(&database.url, tokio_postgres::NoTls)
        .await
        .expect("connect without TLS");
    tokio::spawn(connection);
    let row = client
        .query_one(
            "SELECT count(*) FILTER (WHERE s.ssl), count(*) FILTER (WHERE NOT s.ssl)
             FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
             WHERE a.backend_type = 'client backend' AND a.pid <> pg_backend_pid()",
            &[],
        )
        .await
        .expect("pg_stat_ssl");
    let (encrypted, plain): (i64, i64) = (row.get(0), row.get(1));
    assert!(encrypted >= 1, "no connection over TLS");
    assert_eq!(plain, 0, "a connection without TLS");
    println!("over TLS: {encrypted} connections encrypted, {plain} plain");
}

/// A database that refuses this server's connections (`ALLOW_CONNECTIONS false`, the
/// connections it had ended) is an outage, not a failure of the server: reads and writes
/// answer 503 with `Retry-After` and change nothing, `/readyz` says not ready, and once
/// the database accepts connections again the server serves without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_refusing_connections_is_answered_503_until_it_accepts_them() {
    let lifeboat_testkit::postgres::OwnDatabase {
        name: database,
        url,
        admin,
    } = lifeboat_testkit::postgres::fresh_database().await;
    let server = TestServer::start_configured(move |config| config.database_url = Some(url)).await;
    let saved = create(&server, "/projects/kept", 1).await;
    assert_eq!(saved.status, 201, "{}", saved.body);
    server
        .session(json!({"id": "worker", "kind": "render", "heartbeat_timeout_ms": 3_600_000}))
        .await;

    // Committed first, so no connection is made after the others are ended; each ended
    // connection is waited for.
    admin
        .batch_execute(&format!(
            "ALTER DATABASE {database} ALLOW_CONNECTIONS false"
        ))
        .await
        .expect("refuse connections");
    admin
        .batch_execute(&format!(
            "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity \
             WHERE datname = '{database}'"
        ))
        .await
        .expect("end the server's connections");
    let body = || Some(("application/json", json!({"state": {"v": 2}}).to_string()));
    for round in 0..3 {
        for reply in [
            server.send("PUT", "/projects/kept", &[], body()).await,
            server.send("GET", "/projects/kept", &[], None).await,
            server
                .send(
                    "POST",
                    "/sessions/worker/heartbeat",
                    &[],
                    Some(("application/json", json!({"attempt": 1}).to_string())),
                )
                .await,
            server.send("GET", "/stats", &[], None).await,
        ] {
            assert_eq!(reply.status, 503, "round {round}: {}", reply.body);
            assert_eq!(reply.slug(), "storage-unavailable", "{}", reply.body);
            assert!(reply.header("retry-after").is_some(), "{:?}", reply.headers);
        }
    }
    let ready = reqwest::get(format!("{}/readyz", server.base))
        .await
        .expect("readyz");
    assert_eq!(ready.status(), 503);

    admin
        .batch_execute(&format!("ALTER DATABASE {database} ALLOW_CONNECTIONS true"))
        .await
        .expect("accept connections again");
    let back = Instant::now();
    let saved = loop {
        let reply = server.send("PUT", "/projects/kept", &[], body()).await;
        if reply.status != 503 {
            break reply;
        }
        assert!(
            back.elapsed() < Duration::from_secs(20),
            "still 503 after the database came back: {}",
            reply.body
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(saved.status, 200, "{}", saved.body);
    assert_eq!(
        saved.body["revision"],
        json!(2),
        "the refused writes changed nothing: {}",
        saved.body
    );
    let (status, session) = server.get("/sessions/worker").await;
    assert_eq!((status, &session["status"]), (200, &json!("active")));
    server.stop().await;
    admin
        .batch_execute(&format!("DROP DATABASE {database} WITH (FORCE)"))
        .await
        .expect("drop the test's database");
}
