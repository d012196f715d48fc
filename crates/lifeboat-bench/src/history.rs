//! History that costs what changed: a 1 MiB document receives 1,000 merge patches of
//! about 100 bytes; the data on disk grows by the deltas, not by 1,000 copies, and any
//! old revision still reads back quickly.

use std::path::Path;
use std::time::Instant;

use anyhow::bail;
use hdrhistogram::Histogram;
use serde_json::{Map, Value, json};

use crate::{TOKEN, server_at};

/// Blocks of about 105 bytes each: about 1 MiB in all.
const BLOCKS: usize = 10_000;
const PATCHES: u64 = 1_000;
const READS: u64 = 300;

pub(crate) struct HistoryResult {
    pub(crate) state_bytes: u64,
    pub(crate) growth_bytes: u64,
    pub(crate) full_copies_bytes: u64,
    pub(crate) save_p50_ms: f64,
    pub(crate) save_p99_ms: f64,
    pub(crate) read_p50_ms: f64,
    pub(crate) read_p99_ms: f64,
}

/// Bytes of the database files after folding the WAL back in (as SQLite does on its own
/// every 1,000 pages), so the figure is the data, not a transient log.
fn on_disk(dir: &Path) -> anyhow::Result<u64> {
    let conn = rusqlite::Connection::open(dir.join("lifeboat.sqlite3"))?;
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    drop(conn);
    Ok(["lifeboat.sqlite3", "lifeboat.sqlite3-wal"]
        .iter()
        .filter_map(|name| std::fs::metadata(dir.join(name)).ok())
        .map(|m| m.len())
        .sum())
}

fn ms(histogram: &Histogram<u64>, quantile: f64) -> f64 {
    histogram.value_at_quantile(quantile) as f64 / 1000.0
}

pub(crate) async fn run(dir: &Path) -> anyhow::Result<HistoryResult> {
    let http = reqwest::Client::new();
    let mut blocks = Map::new();
    for i in 0..BLOCKS {
        blocks.insert(
            format!("b{i:05}"),
            json!(format!("{i:05} {}", "text of a paragraph ".repeat(4))),
        );
    }
    let document = json!({"state": {"blocks": blocks}});

    let server = server_at(dir);
    let url = format!("{}/api/v1/projects/big", server.base);
    let created = http
        .put(&url)
        .bearer_auth(TOKEN)
        .json(&document)
        .send()
        .await?;
    if created.status() != 201 {
        bail!("creating the document: {}", created.status());
    }
    let state_bytes = created.json::<Value>().await?["size_bytes"]
        .as_u64()
        .unwrap_or(0);
    server.stop();
    let before = on_disk(dir)?;

    let server = server_at(dir);
    let url = format!("{}/api/v1/projects/big", server.base);
    let mut saves = Histogram::<u64>::new(3)?;
    for n in 0..PATCHES {
        let block = format!("b{:05}", (n * 7_919) % BLOCKS as u64);
        let patch =
            json!({"blocks": {block: format!("edit {n:04}: a sentence a person typed just now")}});
        let sent = Instant::now();
        let response = http
            .patch(&url)
            .bearer_auth(TOKEN)
            .header("content-type", "application/merge-patch+json")
            .body(patch.to_string())
            .send()
            .await?;
        if !response.status().is_success() {
            bail!("patch {n}: {}", response.status());
        }
        response.bytes().await?;
        saves.record(u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX))?;
    }
    let mut reads = Histogram::<u64>::new(3)?;
    for n in 0..READS {
        let revision = (n * 7_907) % PATCHES + 1;
        let sent = Instant::now();
        let response = http
            .get(format!("{url}?revision={revision}"))
            .bearer_auth(TOKEN)
            .send()
            .await?;
        if !response.status().is_success() {
            bail!("reading revision {revision}: {}", response.status());
        }
        response.bytes().await?;
        reads.record(u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX))?;
    }
    server.stop();
    let after = on_disk(dir)?;
    Ok(HistoryResult {
        state_bytes,
        growth_bytes: after.saturating_sub(before),
        full_copies_bytes: state_bytes * PATCHES,
        save_p50_ms: ms(&saves, 0.5),
        save_p99_ms: ms(&saves, 0.99),
        read_p50_ms: ms(&reads, 0.5),
        read_p99_ms: ms(&reads, 0.99),
    })
}
