//! Closed-loop HTTP load: N clients, each sending its next request when the last answered.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, header};
use hyper_util::rt::TokioIo;
use serde_json::json;

use crate::TOKEN;

/// One measured load.
pub(crate) struct LoadResult {
    pub(crate) name: &'static str,
    pub(crate) clients: usize,
    pub(crate) ops_per_second: f64,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
}

/// Latency of repeated reads.
pub(crate) struct ReadLatency {
    pub(crate) requests: u64,
    pub(crate) items: usize,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) max_ms: f64,
}

#[derive(Clone, Copy)]
pub(crate) enum Op {
    Checkpoint,
    /// A heartbeat that changes nothing but the lease: acknowledged as soon as it ran,
    /// before its commit (SPEC §6).
    LeaseHeartbeat,
    /// A heartbeat that moves progress: acknowledged after its commit.
    ProgressHeartbeat,
    Patch,
}

async fn create_sessions(base: &str) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    for client in 0..64 {
        let response = http
            .post(format!("{base}/api/v1/sessions"))
            .bearer_auth(TOKEN)
            .json(&json!({"id": format!("bench-{client}"), "kind": "bench", "heartbeat_timeout_ms": 3_600_000}))
            .send()
            .await?;
        if response.status() != 201 {
            bail!("creating a session: {}", response.status());
        }
    }
    Ok(())
}

pub(crate) async fn run_all(base: &str, window: Duration) -> anyhow::Result<Vec<LoadResult>> {
    prepare(base).await?;
    let mut results = Vec::new();
    for clients in [1, 16, 64] {
        results.push(run(base, Op::Checkpoint, clients, window).await?);
    }
    results.push(run(base, Op::LeaseHeartbeat, 64, window).await?);
    results.push(run(base, Op::ProgressHeartbeat, 64, window).await?);
    results.push(run(base, Op::Patch, 64, window).await?);
    print_writer_figures(base).await?;
    Ok(results)
}

/// The 64 sessions and 64 projects (~2 KiB each) the loads write to.
pub(crate) async fn prepare(base: &str) -> anyhow::Result<()> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(128)
        .build()?;
    create_sessions(base).await?;
    for client in 0..64 {
        let document = json!({"state": {"title": format!("Document {client}"), "body": "lorem ipsum ".repeat(170)}});
        let response = http
            .put(format!("{base}/api/v1/projects/bench-{client}"))
            .bearer_auth(TOKEN)
            .json(&document)
            .send()
            .await?;
        if response.status() != 201 {
            bail!("creating a project: {}", response.status());
        }
    }
    Ok(())
}

/// The writer's totals so far, from `/metrics`: commits, writes committed together, and
/// seconds spent committing.
#[derive(Clone, Copy, Default)]
pub(crate) struct WriterTotals {
    commits: f64,
    writes: f64,
    seconds: f64,
}

impl WriterTotals {
    pub(crate) async fn of(base: &str) -> anyhow::Result<WriterTotals> {
        let metrics = reqwest::Client::new()
            .get(format!("{base}/metrics"))
            .send()
            .await?
            .text()
            .await?;
        let value = |name: &str| {
            metrics
                .lines()
                .find_map(|line| line.strip_prefix(name)?.trim().parse::<f64>().ok())
                // A server that has not committed yet has no figures: none so far.
                .unwrap_or(0.0)
        };
        Ok(WriterTotals {
            commits: value("lifeboat_commit_batch_size_count "),
            writes: value("lifeboat_commit_batch_size_sum "),
            seconds: value("lifeboat_commit_duration_seconds_sum "),
        })
    }

    /// What happened between `earlier` and `self`, as "N commits, W writes per commit on
    /// average, T ms per commit on average".
    pub(crate) fn since(&self, earlier: WriterTotals) -> String {
        let commits = self.commits - earlier.commits;
        format!(
            "{commits:.0} commits, {:.1} writes per commit on average, {:.2} ms per commit on average",
            (self.writes - earlier.writes) / commits,
            (self.seconds - earlier.seconds) * 1000.0 / commits
        )
    }
}

/// Prints the writer's commits, writes per commit and time per commit since the server
/// started.
pub(crate) async fn print_writer_figures(base: &str) -> anyhow::Result<()> {
    let totals = WriterTotals::of(base).await?;
    println!("writer: {}", totals.since(WriterTotals::default()));
    Ok(())
}

pub(crate) async fn run(
    base: &str,
    op: Op,
    clients: usize,
    window: Duration,
) -> anyhow::Result<LoadResult> {
    run_as(base, TOKEN, op, clients, window).await
}

/// [`run`] with another bearer token.
pub(crate) async fn run_as(
    base: &str,
    token: &str,
    op: Op,
    clients: usize,
    window: Duration,
) -> anyhow::Result<LoadResult> {
    run_spread(&[base.to_owned()], token, op, clients, window).await
}

/// [`run_as`] with the clients spread over several servers (client `i` talks to
/// `bases[i % n]`), as a load balancer would spread them.
pub(crate) async fn run_spread(
    bases: &[String],
    token: &str,
    op: Op,
    clients: usize,
    window: Duration,
) -> anyhow::Result<LoadResult> {
    let authorization = format!("Bearer {token}");
    let authorities = bases
        .iter()
        .map(|base| {
            base.strip_prefix("http://")
                .map(str::to_owned)
                .context("the server URL is not http://")
        })
        .collect::<anyhow::Result<Vec<String>>>()?;
    let data = "x".repeat(1000);
    let started = Instant::now();
    let deadline = started + window;
    let tasks: Vec<_> = (0..clients)
        .map(|client| {
            let (method, content_type, path, body) = match op {
                Op::Checkpoint => (
                    Method::POST,
                    "application/json",
                    format!("/api/v1/sessions/bench-{client}/checkpoints"),
                    json!({"attempt": 1, "kind": "item", "data": {"blob": data}}),
                ),
                Op::LeaseHeartbeat | Op::ProgressHeartbeat => (
                    Method::POST,
                    "application/json",
                    format!("/api/v1/sessions/bench-{client}/heartbeat"),
                    json!({"attempt": 1}),
                ),
                // About 100 bytes: what an editor sends when a person types a sentence.
                Op::Patch => (
                    Method::PATCH,
                    "application/merge-patch+json",
                    format!("/api/v1/projects/bench-{client}"),
                    json!({"cursor": {"line": 12, "column": 40}, "draft": "The quick brown fox jumps over it."}),
                ),
            };
            let body = Bytes::from(serde_json::to_vec(&body).unwrap_or_default());
            let authority = authorities[client % authorities.len()].clone();
            let authorization = authorization.clone();
            tokio::spawn(async move {
                let stream = tokio::net::TcpStream::connect(&authority).await?;
                stream.set_nodelay(true)?;
                let (mut sender, connection) =
                    hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
                tokio::spawn(connection);
                let mut latencies = Histogram::<u64>::new(3).context("histogram")?;
                let mut sent_count: u64 = 0;
                while Instant::now() < deadline {
                    sent_count += 1;
                    let body = match op {
                        // Progress that moves with every heartbeat: each one is durable.
                        Op::ProgressHeartbeat => Bytes::from(
                            json!({"attempt": 1, "progress": {"completed_units": sent_count}})
                                .to_string(),
                        ),
                        _ => body.clone(),
                    };
                    let request = Request::builder()
                        .method(method.clone())
                        .uri(&path)
                        .header(header::HOST, &authority)
                        .header(header::AUTHORIZATION, &authorization)
                        .header(header::CONTENT_TYPE, content_type)
                        .body(Full::new(body))?;
                    let sent = Instant::now();
                    let response = sender.send_request(request).await?;
                    let status = response.status();
                    response.into_body().collect().await?;
                    if !status.is_success() {
                        bail!("{path}: {status}");
                    }
                    latencies
                        .record(u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX))?;
                }
                anyhow::Ok(latencies)
            })
        })
        .collect();
    let mut all = Histogram::<u64>::new(3)?;
    for task in tasks {
        all.add(task.await??)?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    Ok(LoadResult {
        name: name(op),
        clients,
        ops_per_second: all.len() as f64 / elapsed,
        p50_ms: all.value_at_quantile(0.50) as f64 / 1000.0,
        p99_ms: all.value_at_quantile(0.99) as f64 / 1000.0,
    })
}

/// What a load is called in the tables.
pub(crate) fn name(op: Op) -> &'static str {
    match op {
        Op::Checkpoint => "durable checkpoint (1 KiB data)",
        Op::LeaseHeartbeat => "lease-only heartbeat (acknowledged before its commit)",
        Op::ProgressHeartbeat => "progress-changing heartbeat (durable)",
        Op::Patch => "project merge-patch save (~100 B into ~2 KiB)",
    }
}

/// Polls `/readyz` until it answers 200.
pub(crate) async fn wait_ready(base: &str) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    for _ in 0..6_000 {
        if let Ok(response) = http.get(format!("{base}/readyz")).send().await
            && response.status().is_success()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    bail!("the server did not become ready within 30 s")
}

/// Latency of `GET /recovery?limit=50`, one request at a time.
pub(crate) async fn recovery_latency(base: &str, requests: u64) -> anyhow::Result<ReadLatency> {
    let http = reqwest::Client::new();
    let mut latencies = Histogram::<u64>::new(3)?;
    let mut items = 0;
    for _ in 0..requests {
        let sent = Instant::now();
        let response = http
            .get(format!("{base}/api/v1/recovery?limit=50"))
            .bearer_auth(TOKEN)
            .send()
            .await?;
        let body: serde_json::Value = response.json().await?;
        latencies.record(u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX))?;
        items = body["items"].as_array().map_or(0, Vec::len);
    }
    Ok(ReadLatency {
        requests,
        items,
        p50_ms: latencies.value_at_quantile(0.50) as f64 / 1000.0,
        p99_ms: latencies.value_at_quantile(0.99) as f64 / 1000.0,
        max_ms: latencies.max() as f64 / 1000.0,
    })
}
