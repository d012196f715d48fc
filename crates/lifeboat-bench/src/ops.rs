//! Operations: how fast `lifeboat verify` hashes against `sha256sum` of the same bytes,
//! and what 100 connected event-stream subscribers cost writers.

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::StreamExt;
use serde_json::json;

use crate::load::{self, Op};
use crate::{TOKEN, server_at};

const CHECKPOINTS: u64 = 20_000;
const DATA_BYTES: usize = 4_096;
const ASSET_BYTES: usize = 256 << 20;
const SUBSCRIBERS: usize = 100;

pub(crate) struct OpsResult {
    pub(crate) verify_bytes: u64,
    pub(crate) verify_checkpoints_s: f64,
    pub(crate) verify_mb_s: f64,
    pub(crate) sha256sum_mb_s: f64,
    pub(crate) writes_alone: f64,
    pub(crate) writes_following: f64,
    pub(crate) followed_events: u64,
    pub(crate) writes_with_subscribers: f64,
    pub(crate) events_received: u64,
    pub(crate) writes_bootstrap_key: f64,
    pub(crate) writes_tenant_key: f64,
}

/// Checkpoint writes at 16 clients while `SUBSCRIBERS` event streams (with the query
/// `query(n)`) read along; answers writes/s and the events the streams received.
pub(crate) async fn with_subscribers(
    base: &str,
    query: impl Fn(usize) -> String,
    window: Duration,
) -> anyhow::Result<(f64, u64)> {
    let http = reqwest::Client::new();
    let received = Arc::new(AtomicU64::new(0));
    let mut subscribers = Vec::new();
    for n in 0..SUBSCRIBERS {
        let response = http
            .get(format!("{base}/api/v1/events{}", query(n)))
            .bearer_auth(TOKEN)
            .send()
            .await?;
        if response.status() != 200 {
            bail!("subscribing: {}", response.status());
        }
        let received = Arc::clone(&received);
        subscribers.push(tokio::spawn(async move {
            let mut stream = response.bytes_stream();
            while let Some(Ok(chunk)) = stream.next().await {
                let events = chunk.windows(3).filter(|w| w == b"id:").count() as u64;
                received.fetch_add(events, Ordering::Relaxed);
            }
        }));
    }
    let writes = load::run(base, Op::Checkpoint, 16, window).await?;
    for subscriber in &subscribers {
        subscriber.abort();
    }
    Ok((writes.ops_per_second, received.load(Ordering::Relaxed)))
}

pub(crate) async fn run(dir: &Path, window: Duration) -> anyhow::Result<OpsResult> {
    std::fs::create_dir_all(dir)?;
    let server = server_at(&dir.join("server"));
    let http = reqwest::Client::new();
    let api = format!("{}/api/v1", server.base);
    for client in 0..64 {
        let created = http
            .post(format!("{api}/sessions"))
            .bearer_auth(TOKEN)
            .json(&json!({"id": format!("bench-{client}"), "kind": "bench",
                "heartbeat_timeout_ms": 3_600_000}))
            .send()
            .await?;
        if created.status() != 201 {
            bail!("creating a session: {}", created.status());
        }
    }

    // The cost of tenant keys: the same load with a tenant's key (its own sessions).
    let created: serde_json::Value = http
        .post(format!("{api}/keys"))
        .bearer_auth(TOKEN)
        .json(&json!({"tenant": "bench", "scopes": ["read", "write"]}))
        .send()
        .await?
        .json()
        .await?;
    let tenant_key = created["key"]
        .as_str()
        .context("no key created")?
        .to_owned();
    for client in 0..16 {
        let created = http
            .post(format!("{api}/sessions"))
            .bearer_auth(&tenant_key)
            .json(&json!({"id": format!("bench-{client}"), "kind": "bench",
                "heartbeat_timeout_ms": 3_600_000}))
            .send()
            .await?;
        if created.status() != 201 {
            bail!("creating a tenant session: {}", created.status());
        }
    }
    // Alternated three times and the medians compared: this VM drifts by ±30 % within
    // a minute, which a single pair cannot tell from the cost of a key.
    let (mut bootstrap, mut tenant) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        bootstrap.push(
            load::run(&server.base, Op::Checkpoint, 16, window)
                .await?
                .ops_per_second,
        );
        tenant.push(
            load::run_as(&server.base, &tenant_key, Op::Checkpoint, 16, window)
                .await?
                .ops_per_second,
        );
    }
    let median = |mut runs: Vec<f64>| {
        runs.sort_by(f64::total_cmp);
        runs[runs.len() / 2]
    };
    let (bootstrap, tenant) = (median(bootstrap), median(tenant));

    // Writes with nobody listening; with 100 subscribers each following one of the 16
    // written sessions (a browser tab per document); with 100 reading every event.
    let alone = load::run(&server.base, Op::Checkpoint, 16, window).await?;
    let (following, followed_events) = with_subscribers(
        &server.base,
        |n| format!("?session_id=bench-{}", n % 16),
        window,
    )
    .await?;
    let (listened, events_received) =
        with_subscribers(&server.base, |_| String::new(), window).await?;
    server.stop();

    // A store of 20,000 checkpoints of 4 KiB and one 256 MiB asset, verified whole.
    let server = server_at(&dir.join("verify"));
    let api = format!("{}/api/v1", server.base);
    http.post(format!("{api}/sessions"))
        .bearer_auth(TOKEN)
        // `stage` checkpoints are kept for life: all 20,000 stay.
        .json(&json!({"id": "v", "kind": "bench", "heartbeat_timeout_ms": 3_600_000}))
        .send()
        .await?;
    let mut same_bytes = std::fs::File::create(dir.join("checkpoints.bin"))?;
    let data = format!("\"{}\"", "d".repeat(DATA_BYTES - 2));
    let body = format!(r#"{{"attempt": 1, "kind": "stage", "data": {data}}}"#);
    for _ in 0..CHECKPOINTS {
        let response = http
            .post(format!("{api}/sessions/v/checkpoints"))
            .bearer_auth(TOKEN)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await?;
        if response.status() != 201 {
            bail!("checkpoint: {}", response.status());
        }
        same_bytes.write_all(data.as_bytes())?;
    }
    same_bytes.sync_all()?;
    let asset = vec![0x42u8; ASSET_BYTES];
    std::fs::write(dir.join("asset.bin"), &asset)?;
    http.put(format!("{api}/sessions/v/assets/big.bin"))
        .bearer_auth(TOKEN)
        .body(asset)
        .send()
        .await?;
    let verify_bytes = CHECKPOINTS * DATA_BYTES as u64 + ASSET_BYTES as u64;
    let started = Instant::now();
    let report: serde_json::Value = http
        .post(format!("{api}/admin/verify"))
        .bearer_auth(TOKEN)
        .send()
        .await?
        .json()
        .await?;
    let verify_s = started.elapsed().as_secs_f64();
    if report["ok"] != json!(true) || report["checkpoints_checked"] != json!(CHECKPOINTS) {
        bail!("unexpected verification: {report}");
    }
    drop(server);
    let started = Instant::now();
    let status = Command::new("sha256sum")
        .arg(dir.join("checkpoints.bin"))
        .arg(dir.join("asset.bin"))
        .stdout(std::process::Stdio::null())
        .status()
        .context("running sha256sum")?;
    if !status.success() {
        bail!("sha256sum failed: {status}");
    }
    let sha256sum_s = started.elapsed().as_secs_f64();
    Ok(OpsResult {
        verify_bytes,
        verify_checkpoints_s: CHECKPOINTS as f64 / verify_s,
        verify_mb_s: verify_bytes as f64 / 1e6 / verify_s,
        sha256sum_mb_s: verify_bytes as f64 / 1e6 / sha256sum_s,
        writes_alone: alone.ops_per_second,
        writes_following: following,
        followed_events,
        writes_with_subscribers: listened,
        events_received,
        writes_bootstrap_key: bootstrap,
        writes_tenant_key: tenant,
    })
}
