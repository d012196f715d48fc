//! Asset uploads: a 1 GiB `PUT` against a plain write+fsync of the same size on the same
//! disk, the server's peak memory meanwhile, and appends of 64 KiB chunks.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::bail;
use serde_json::json;

use crate::{TOKEN, server_at};

const CHUNK: usize = 1 << 20;
const APPEND_CHUNK: usize = 64 * 1024;

pub(crate) struct UploadResult {
    pub(crate) bytes: u64,
    pub(crate) baseline_mb_s: f64,
    pub(crate) upload_mb_s: f64,
    pub(crate) peak_rss_mib: f64,
    pub(crate) appends_per_s: f64,
    pub(crate) append_mb_s: f64,
}

/// Writes `bytes` in 1 MiB pieces and fsyncs: what any durable store must at least do.
fn plain_write(path: &Path, bytes: u64) -> anyhow::Result<f64> {
    let piece = vec![0x5au8; CHUNK];
    let started = Instant::now();
    let mut file = std::fs::File::create(path)?;
    let mut written = 0u64;
    while written < bytes {
        file.write_all(&piece)?;
        written += CHUNK as u64;
    }
    file.sync_all()?;
    let elapsed = started.elapsed().as_secs_f64();
    std::fs::remove_file(path)?;
    Ok(bytes as f64 / 1e6 / elapsed)
}

/// The high-water mark of a process's resident memory, from /proc.
pub(crate) fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

pub(crate) async fn run(dir: &Path, bytes: u64, window: Duration) -> anyhow::Result<UploadResult> {
    std::fs::create_dir_all(dir)?;
    let baseline_mb_s = plain_write(&dir.join("baseline.bin"), bytes)?;

    let server = server_at(&dir.join("server"));
    let http = reqwest::Client::new();
    let api = format!("{}/api/v1", server.base);
    let created = http
        .post(format!("{api}/sessions"))
        .bearer_auth(TOKEN)
        .json(&json!({"id": "uploads", "kind": "bench", "heartbeat_timeout_ms": 3_600_000}))
        .send()
        .await?;
    if created.status() != 201 {
        bail!("creating the session: {}", created.status());
    }
    let pieces = bytes / CHUNK as u64;
    let body = futures_util::stream::iter(
        (0..pieces).map(|_| Ok::<_, std::io::Error>(vec![0x5au8; CHUNK])),
    );
    let started = Instant::now();
    let response = http
        .put(format!("{api}/sessions/uploads/assets/big.bin"))
        .bearer_auth(TOKEN)
        .header("content-length", pieces * CHUNK as u64)
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await?;
    if response.status() != 201 {
        bail!("the upload: {}", response.status());
    }
    let upload_mb_s = (pieces * CHUNK as u64) as f64 / 1e6 / started.elapsed().as_secs_f64();
    let peak_rss_mib = peak_rss_kib(server.pid()).unwrap_or(0) as f64 / 1024.0;

    let chunk = vec![0xa5u8; APPEND_CHUNK];
    let started = Instant::now();
    let mut offset = 0u64;
    let mut appends = 0u64;
    while started.elapsed() < window {
        let response = http
            .post(format!(
                "{api}/sessions/uploads/assets/recording.pcm?offset={offset}"
            ))
            .bearer_auth(TOKEN)
            .body(chunk.clone())
            .send()
            .await?;
        if !response.status().is_success() {
            bail!("append at {offset}: {}", response.status());
        }
        offset += APPEND_CHUNK as u64;
        appends += 1;
    }
    let elapsed = started.elapsed().as_secs_f64();
    Ok(UploadResult {
        bytes: pieces * CHUNK as u64,
        baseline_mb_s,
        upload_mb_s,
        peak_rss_mib,
        appends_per_s: appends as f64 / elapsed,
        append_mb_s: offset as f64 / 1e6 / elapsed,
    })
}
