//! A busy server never breaks live leases (SPEC §2 r2): a cleanup of 100,000 asset records
//! and 100,000 unreferenced files runs while 64 sessions with a 1 s lease heartbeat every
//! 250 ms. Counts the sessions that expired, and the heartbeat latency before and during
//! the cleanup.
//!
//! The store is prepared as a long-running deployment would leave it: 1,000 cancelled
//! sessions made over HTTP, aged past the 7-day purge; 100 asset records each (written
//! into the database directly, with the server stopped) naming 100,000 distinct blob files
//! that are two days old. Cleanup purges the sessions with their records, after which
//! every file is an orphan.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use rusqlite::{Connection, params};
use serde_json::{Value, json};

use crate::{TOKEN, server_at};

/// Cancelled sessions, and asset records (and files) of each.
const OLD_SESSIONS: u64 = 1_000;
const ASSETS_PER_SESSION: u64 = 100;
/// Live sessions, their lease, and how often they heartbeat.
const LIVE_SESSIONS: usize = 64;
const LEASE_MS: u64 = 1_000;
const HEARTBEAT_EVERY: Duration = Duration::from_millis(250);
/// Heartbeats measured before the cleanup starts (the baseline), and after it ends.
const QUIET: Duration = Duration::from_secs(3);

/// What the run measured.
pub(crate) struct Busy {
    pub(crate) asset_rows: u64,
    pub(crate) files: u64,
    pub(crate) cleanup: Value,
    pub(crate) cleanup_s: f64,
    pub(crate) quiet: Latency,
    pub(crate) during: Latency,
    pub(crate) failed_heartbeats: u64,
    pub(crate) expired: usize,
}

/// Heartbeat acknowledgement latency in a window (a lease-only heartbeat is acknowledged
/// before its commit, SPEC §6; this is how long a worker waits for that answer).
pub(crate) struct Latency {
    pub(crate) count: u64,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) max_ms: f64,
}

impl Latency {
    fn of(samples: &[(Instant, Duration)], from: Instant, to: Instant) -> anyhow::Result<Latency> {
        let mut histogram = Histogram::<u64>::new(3)?;
        for (_, took) in samples.iter().filter(|(at, _)| *at >= from && *at <= to) {
            histogram.record(u64::try_from(took.as_micros()).unwrap_or(u64::MAX))?;
        }
        Ok(Latency {
            count: histogram.len(),
            p50_ms: histogram.value_at_quantile(0.50) as f64 / 1000.0,
            p99_ms: histogram.value_at_quantile(0.99) as f64 / 1000.0,
            max_ms: histogram.max() as f64 / 1000.0,
        })
    }
}

pub(crate) async fn run(dir: &Path) -> anyhow::Result<Busy> {
    prepare(dir).await?;
    let server = server_at(dir);
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(LIVE_SESSIONS * 2)
        .build()?;
    let base = server.base.clone();
    for n in 0..LIVE_SESSIONS {
        let created = http
            .post(format!("{base}/api/v1/sessions"))
            .bearer_auth(TOKEN)
            .json(&json!({"id": format!("live-{n}"), "kind": "worker", "heartbeat_timeout_ms": LEASE_MS}))
            .send()
            .await?;
        if created.status() != 201 {
            bail!("creating a live session: {}", created.status());
        }
    }
    let samples: Arc<Mutex<Vec<(Instant, Duration)>>> = Arc::default();
    let failed = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let stop = Arc::new(tokio::sync::Notify::new());
    let workers: Vec<_> = (0..LIVE_SESSIONS)
        .map(|n| {
            let (http, base) = (http.clone(), base.clone());
            let (samples, failed, stop) = (samples.clone(), failed.clone(), stop.clone());
            tokio::spawn(async move {
                let mut ticks = tokio::time::interval(HEARTBEAT_EVERY);
                let stopped = stop.notified();
                tokio::pin!(stopped);
                loop {
                    tokio::select! {
                        _ = ticks.tick() => {}
                        () = &mut stopped => return,
                    }
                    let sent = Instant::now();
                    let answer = http
                        .post(format!("{base}/api/v1/sessions/live-{n}/heartbeat"))
                        .bearer_auth(TOKEN)
                        .json(&json!({"attempt": 1}))
                        .send()
                        .await;
                    match answer {
                        Ok(response) if response.status() == 200 => {
                            if let Ok(mut samples) = samples.lock() {
                                samples.push((sent, sent.elapsed()));
                            }
                        }
                        _ => {
                            failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect();

    let quiet_from = Instant::now();
    tokio::time::sleep(QUIET).await;
    let cleanup_from = Instant::now();
    let response = http
        .post(format!("{base}/api/v1/admin/cleanup"))
        .bearer_auth(TOKEN)
        .timeout(Duration::from_secs(3_600))
        .send()
        .await?;
    let status = response.status();
    let cleanup: Value = response.json().await?;
    let cleanup_to = Instant::now();
    if !status.is_success() {
        bail!("cleanup: {status}: {cleanup}");
    }
    tokio::time::sleep(QUIET).await;
    stop.notify_waiters();
    for worker in workers {
        worker.await?;
    }
    let mut expired = 0;
    for n in 0..LIVE_SESSIONS {
        let session: Value = http
            .get(format!("{base}/api/v1/sessions/live-{n}"))
            .bearer_auth(TOKEN)
            .send()
            .await?
            .json()
            .await?;
        if session["status"] != "active" || !session["crash"].is_null() {
            expired += 1;
        }
    }
    let samples = samples.lock().map(|s| s.clone()).unwrap_or_default();
    Ok(Busy {
        asset_rows: OLD_SESSIONS * ASSETS_PER_SESSION,
        files: OLD_SESSIONS * ASSETS_PER_SESSION,
        cleanup,
        cleanup_s: cleanup_to.duration_since(cleanup_from).as_secs_f64(),
        quiet: Latency::of(&samples, quiet_from, cleanup_from)?,
        during: Latency::of(&samples, cleanup_from, cleanup_to)?,
        failed_heartbeats: failed.load(std::sync::atomic::Ordering::Relaxed),
        expired,
    })
}

/// Makes the old sessions over HTTP, stops the server, then ages them and adds their
/// asset records and files.
async fn prepare(dir: &Path) -> anyhow::Result<()> {
    let server = server_at(dir);
    let http = reqwest::Client::new();
    let base = server.base.clone();
    for n in 0..OLD_SESSIONS {
        for (path, body) in [
            (
                "/sessions".to_owned(),
                json!({"id": format!("old-{n}"), "kind": "render"}),
            ),
            (format!("/sessions/old-{n}/cancel"), json!({})),
        ] {
            let response = http
                .post(format!("{base}/api/v1{path}"))
                .bearer_auth(TOKEN)
                .json(&body)
                .send()
                .await?;
            if !response.status().is_success() {
                bail!("{path}: {}", response.status());
            }
        }
    }
    server.stop();

    let day_ms = 24 * 3_600_000_i64;
    let now_ms = i64::try_from(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)?
            .as_millis(),
    )?;
    let mut conn = Connection::open(dir.join("lifeboat.sqlite3"))?;
    let tx = conn.transaction()?;
    tx.execute(
        "UPDATE sessions SET updated_at = ?1 WHERE id LIKE 'old-%'",
        [now_ms - 8 * day_ms],
    )?;
    let two_days_ago = SystemTime::now() - Duration::from_secs(2 * 86_400);
    let blobs = dir.join("blobs/sha256");
    {
        let mut insert = tx.prepare(
            "INSERT INTO assets (tenant, owner_kind, owner_id, name, storage, location, size, \
             sha256, kind, status, verified_at, created_at, updated_at) \
             VALUES ('default', 'session', ?1, ?2, 'blob', NULL, 16, ?3, NULL, 'ok', ?4, ?4, ?4)",
        )?;
        for n in 0..OLD_SESSIONS * ASSETS_PER_SESSION {
            let bytes = format!("{n:016}");
            let sha256 = lifeboat::Sha256::of(bytes.as_bytes());
            let hex = sha256.as_str();
            insert.execute(params![
                format!("old-{}", n / ASSETS_PER_SESSION),
                format!("frame-{n}.png"),
                hex,
                now_ms - 8 * day_ms
            ])?;
            let shard = blobs.join(&hex[..2]);
            std::fs::create_dir_all(&shard)?;
            let path = shard.join(hex);
            std::fs::write(&path, bytes.as_bytes())?;
            std::fs::File::options()
                .append(true)
                .open(&path)?
                .set_modified(two_days_ago)
                .context("age a file")?;
        }
    }
    tx.commit()?;
    Ok(())
}
