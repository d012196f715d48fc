//! Uploads into an S3-compatible bucket (moto's server, started here): a 1 GiB file
//! through `lifeboat serve --blob-store s3://…` against `aws s3 cp` of the same file to the
//! same moto, the server's peak memory meanwhile, and 64 KiB appends into the bucket.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::StreamExt;
use lifeboat_testkit::Binary;
use lifeboat_testkit::s3::Moto;
use serde_json::json;
use tokio::io::AsyncReadExt;

use crate::TOKEN;
use crate::uploads::peak_rss_kib;

const CHUNK: usize = 1 << 20;
const APPEND_CHUNK: usize = 64 * 1024;
const ROUNDS: usize = 3;

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// One `PUT` of `file` through the server, streamed from disk: MB/s.
async fn put(
    http: &reqwest::Client,
    api: &str,
    file: &Path,
    size: u64,
    round: usize,
) -> anyhow::Result<f64> {
    let reader = tokio::fs::File::open(file).await?;
    let body = futures_util::stream::unfold(reader, |mut reader| async move {
        let mut buffer = vec![0u8; CHUNK];
        match reader.read(&mut buffer).await {
            Ok(0) => None,
            Ok(n) => {
                buffer.truncate(n);
                Some((Ok::<_, std::io::Error>(buffer), reader))
            }
            Err(e) => Some((Err(e), reader)),
        }
    })
    .boxed();
    let started = Instant::now();
    let response = http
        .put(format!("{api}/sessions/uploads/assets/big-{round}.bin"))
        .bearer_auth(TOKEN)
        .header("content-length", size)
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await?;
    if response.status() != 201 {
        bail!("the upload: {}", response.status());
    }
    Ok(size as f64 / 1e6 / started.elapsed().as_secs_f64())
}

pub(crate) fn section(
    runtime: &tokio::runtime::Runtime,
    dir: &Path,
    bytes: u64,
    window: Duration,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let moto = Moto::start();
    let file = dir.join("upload.bin");
    {
        use std::io::Write;
        let mut out = std::fs::File::create(&file)?;
        let mut written = 0u64;
        let mut block = vec![0u8; CHUNK];
        while written < bytes {
            // Bytes that differ from block to block (no store may dedupe them).
            for (i, b) in block.iter_mut().enumerate() {
                *b = (i as u64 ^ written.rotate_left(17)).wrapping_mul(0x9e37_79b9) as u8;
            }
            out.write_all(&block)?;
            written += CHUNK as u64;
        }
        out.sync_all()?;
    }
    let size = std::fs::metadata(&file)?.len();

    let bucket = moto.fresh_url();
    let server = Binary::start_with_env(
        &dir.join("server"),
        &["--blob-store", bucket.as_str()],
        &moto.env(),
    );
    let http = reqwest::Client::new();
    let api = format!("{}/api/v1", server.base);
    runtime.block_on(async {
        let created = http
            .post(format!("{api}/sessions"))
            .bearer_auth(TOKEN)
            .json(&json!({"id": "uploads", "kind": "bench", "heartbeat_timeout_ms": 3_600_000}))
            .send()
            .await?;
        if created.status() != 201 {
            bail!("creating the session: {}", created.status());
        }
        Ok(())
    })?;
    // moto's speed varies from run to run: the two uploads alternate, and the medians of
    // three rounds are compared.
    let (mut baseline, mut through) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let started = Instant::now();
        let status = Command::new("aws")
            .args(["s3", "cp", "--only-show-errors"])
            .arg(&file)
            .arg(format!(
                "s3://{}/baseline/{round}.bin",
                lifeboat_testkit::s3::BUCKET
            ))
            .envs(moto.env())
            .status()
            .context("run `aws s3 cp` (pip install awscli)")?;
        if !status.success() {
            bail!("aws s3 cp failed: {status}");
        }
        baseline.push(size as f64 / 1e6 / started.elapsed().as_secs_f64());
        through.push(runtime.block_on(put(&http, &api, &file, size, round))?);
    }
    let (baseline_mb_s, upload_mb_s) = (median(&mut baseline), median(&mut through));
    let appends_per_s = runtime.block_on(async {
        let chunk = vec![0xa5u8; APPEND_CHUNK];
        let started = Instant::now();
        let (mut offset, mut appends) = (0u64, 0u64);
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
        Ok(appends as f64 / started.elapsed().as_secs_f64())
    })?;
    let peak_rss_mib = peak_rss_kib(server.pid()).unwrap_or(0) as f64 / 1024.0;
    server.stop();
    std::fs::remove_file(&file)?;

    println!(
        "## S3-compatible bucket (moto on loopback): one upload of {} MiB",
        size >> 20
    );
    println!(
        "aws s3 cp:              {baseline_mb_s:>10.0} MB/s (median of {ROUNDS}: {baseline:.0?})"
    );
    println!(
        "PUT through lifeboat:   {upload_mb_s:>10.0} MB/s ({:.2}x aws s3 cp; median of {ROUNDS}: {through:.0?})",
        upload_mb_s / baseline_mb_s
    );
    println!("server peak RSS:        {peak_rss_mib:>10.1} MiB");
    println!("appends into the bucket (64 KiB, 1 client): {appends_per_s:.0}/s");
    Ok(())
}
