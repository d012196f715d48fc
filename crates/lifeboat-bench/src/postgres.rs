//! Durable checkpoints on PostgreSQL (issue 16): the real binary with `--database-url` on a
//! fresh schema of the local server, against `pgbench` inserting one ~1 KiB row with its
//! SHA-256 per transaction into the same server, at the same client counts, in the same run.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};
use lifeboat_testkit::Binary;

use crate::load::{self, Op};

/// The baseline's transaction: one INSERT of ~1 KiB and its SHA-256.
const INSERT_1K: &str = "\\set r random(1, 1000000000)\n\
INSERT INTO bench_rows (data, sha256) VALUES (repeat(md5(:r::text), 32), \
encode(sha256(repeat(md5(:r::text), 32)::bytea), 'hex'));\n";

/// Clients of each load.
const CLIENTS: [usize; 2] = [16, 64];

/// pgbench's transactions per second at `clients` against `schema`.
fn pgbench(schema: &str, script: &Path, clients: usize, window: Duration) -> anyhow::Result<f64> {
    let output = Command::new("pgbench")
        .args([
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-n",
            "-M",
            "prepared",
            "-j",
            "2",
        ])
        .args([
            "-c",
            &clients.to_string(),
            "-T",
            &window.as_secs().to_string(),
            "-f",
        ])
        .arg(script)
        .arg("postgres")
        .env("PGOPTIONS", format!("-c search_path={schema}"))
        .output()
        .context("run pgbench (Debian's postgresql-client)")?;
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "pgbench failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    text.lines()
        .find_map(|line| line.strip_prefix("tps = "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|tps| tps.parse().ok())
        .context("pgbench printed no tps")
}

/// Prints one table: Lifeboat's durable checkpoints and pgbench, per client count.
pub(crate) fn section(
    runtime: &tokio::runtime::Runtime,
    root: &Path,
    window: Duration,
) -> anyhow::Result<()> {
    let database = runtime.block_on(lifeboat_testkit::postgres::fresh_schema());
    let script = root.join("insert1k.sql");
    std::fs::write(&script, INSERT_1K)?;
    let create = Command::new("psql")
        .args(["-h", "127.0.0.1", "-U", "postgres", "-q", "-c"])
        .arg(format!(
            "CREATE TABLE {}.bench_rows (id BIGSERIAL PRIMARY KEY, data TEXT NOT NULL, sha256 TEXT NOT NULL)",
            database.schema
        ))
        .arg("postgres")
        .status()
        .context("run psql")?;
    if !create.success() {
        bail!("cannot create the pgbench table");
    }
    let server = Binary::start_with(
        &root.join("postgres-node"),
        &["--database-url", &database.url, "--streams-per-key", "1000"],
    );
    runtime.block_on(load::prepare(&server.base))?;
    println!(
        "\n## Durable checkpoints on PostgreSQL (one server), against pgbench in the same run"
    );
    println!(
        "| clients | pgbench insert1k tps | Lifeboat checkpoints/s | ratio | Lifeboat p50 ms | p99 ms |"
    );
    println!("|---|---|---|---|---|---|");
    for clients in CLIENTS {
        let baseline = pgbench(&database.schema, &script, clients, window)?;
        let result = runtime.block_on(load::run(&server.base, Op::Checkpoint, clients, window))?;
        println!(
            "| {clients} | {baseline:.0} | {:.0} | {:.2}× | {:.2} | {:.2} |",
            result.ops_per_second,
            result.ops_per_second / baseline,
            result.p50_ms,
            result.p99_ms
        );
    }
    drop(server);
    Ok(())
}
