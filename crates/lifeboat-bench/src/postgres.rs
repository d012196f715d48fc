//! Durable checkpoints on PostgreSQL (issue 16): the real binary with `--database-url` on a
//! fresh schema of the local server, against `pgbench` inserting one ~1 KiB row with its
//! SHA-256 per transaction into the same server, at the same client counts, in the same run.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::StreamExt;
use hdrhistogram::Histogram;
use lifeboat_testkit::{Binary, TOKEN};

use crate::load::{self, LoadResult, Op, WriterTotals};

/// How long three servers carry the load before it is measured (the two started last
/// fill their pools and plan their statements meanwhile).
const WARM_UP: Duration = Duration::from_secs(1);

/// The baseline's transaction: one INSERT of ~1 KiB and its SHA-256.
const INSERT_1K: &str = "\\set r random(1, 1000000000)\n\
INSERT INTO bench_rows (data, sha256) VALUES (repeat(md5(:r::text), 32), \
encode(sha256(repeat(md5(:r::text), 32)::bytea), 'hex'));\n";

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
    rounds: usize,
) -> anyhow::Result<()> {
    let database = runtime.block_on(lifeboat_testkit::postgres::fresh_schema());
    let script = root.join("insert1k.sql");
    std::fs::write(&script, INSERT_1K)?;
    psql(&format!(
        "CREATE TABLE {}.bench_rows (id BIGSERIAL PRIMARY KEY, data TEXT NOT NULL, sha256 TEXT NOT NULL)",
        database.schema
    ))
    .context("cannot create the pgbench table")?;
    let node_flags = ["--database-url", &database.url, "--streams-per-key", "1000"];
    let server = Binary::start_with(&root.join("postgres-node"), &node_flags);
    runtime.block_on(load::prepare(&server.base))?;

    println!("\n## Durable checkpoints on PostgreSQL (one server), 16 clients, against pgbench");
    println!(
        "| clients | pgbench insert1k tps | Lifeboat checkpoints/s | ratio | Lifeboat p50 ms | p99 ms | writer |"
    );
    println!("|---|---|---|---|---|---|---|");
    let baseline = pgbench(&database.schema, &script, 16, window)?;
    let before = runtime.block_on(WriterTotals::of(&server.base))?;
    let result = runtime.block_on(load::run(&server.base, Op::Checkpoint, 16, window))?;
    let writer = runtime
        .block_on(WriterTotals::of(&server.base))?
        .since(before);
    println!(
        "| 16 | {baseline:.0} | {:.0} | {:.2}× | {:.2} | {:.2} | {writer} |",
        result.ops_per_second,
        result.ops_per_second / baseline,
        result.p50_ms,
        result.p99_ms
    );

    // Heartbeats: a lease-only one commits without waiting for the WAL flush (SPEC §6; the
    // outage grace covers its loss), one that moves progress waits for it.
    for op in [Op::LeaseHeartbeat, Op::ProgressHeartbeat] {
        let result = runtime.block_on(load::run(&server.base, op, 64, window))?;
        let what = match op {
            Op::LeaseHeartbeat => {
                "lease-only heartbeats (committed without waiting for the WAL flush)"
            }
            _ => "progress-changing heartbeats (durable)",
        };
        println!(
            "{what}, 64 clients: {:.0}/s, p50 {:.2} ms, p99 {:.2} ms",
            result.ops_per_second, result.p50_ms, result.p99_ms
        );
    }

    // Rounds at 64 clients, each within about 20 s: pgbench, one server, and three (two
    // more started on the same schema and asset directory, ready and warmed up before
    // they are measured, the clients spread over them, stopped after), while a probe
    // measures how long an event written through server 1 takes to reach a stream on
    // server 2. The ratios are taken within each round, since this machine's speed drifts
    // between rounds (pgbench alone moved by a third), and the three loads take turns at
    // going first, so that a drift within a round favours none of them.
    println!(
        "\n## 64 clients, {rounds} rounds: pgbench, one server, three servers on one PostgreSQL database"
    );
    println!(
        "| round | pgbench insert1k tps | 1 server checkpoints/s | ratio | p50 ms | p99 ms | 3 servers checkpoints/s | 3 / 1 | p99 ms | event lag p99 ms |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let mut columns: [Vec<f64>; 4] = Default::default();
    for round in 1..=rounds {
        let (mut baseline, mut one, mut three) = (None, None, None);
        for turn in 0..3 {
            match (round - 1 + turn) % 3 {
                0 => baseline = Some(pgbench(&database.schema, &script, 64, window)?),
                1 => one = Some(one_server(runtime, &server.base, window)?),
                _ => {
                    three = Some(three_servers(
                        runtime,
                        root,
                        &node_flags,
                        &server.base,
                        window,
                        &format!("lag-probe-{round}"),
                    )?);
                }
            }
        }
        let (Some(baseline), Some((one, one_writer)), Some((three, lag_p99, writers))) =
            (baseline, one, three)
        else {
            bail!("a round missed a load");
        };
        println!(
            "| {round} | {baseline:.0} | {:.0} | {:.2}× | {:.2} | {:.2} | {:.0} | {:.2}× | {:.2} | {lag_p99:.1} |",
            one.ops_per_second,
            one.ops_per_second / baseline,
            one.p50_ms,
            one.p99_ms,
            three.ops_per_second,
            three.ops_per_second / one.ops_per_second,
            three.p99_ms
        );
        println!("  one server's writer: {one_writer}");
        for (n, writer) in writers.iter().enumerate() {
            println!("  with three, server {}'s writer: {writer}", n + 1);
        }
        let figures = [
            one.ops_per_second / baseline,
            one.p99_ms,
            three.ops_per_second / one.ops_per_second,
            lag_p99,
        ];
        for (column, figure) in columns.iter_mut().zip(figures) {
            column.push(figure);
        }
    }
    let [ratio, p99, three_to_one, lag] = columns.map(|column| crate::median(&column));
    println!(
        "medians over {rounds} rounds: 1 server / pgbench {ratio:.2}× (goal ≥ 0.5×), p99 {p99:.2} ms (goal ≤ 30), 3 servers / 1 server {three_to_one:.2}× (goal ≥ 0.8×), event lag p99 {lag:.1} ms (goal ≤ 250)"
    );
    let (updates, in_place) = session_updates(&database.schema)?;
    println!(
        "session row updates over these loads (as PostgreSQL's statistics have them so far): {updates}, of which in place (HOT, no index entry written): {:.1}%",
        100.0 * in_place as f64 / updates.max(1) as f64
    );
    drop(server);
    Ok(())
}

/// 64 clients on the one server: the load, and its writer's commits meanwhile.
fn one_server(
    runtime: &tokio::runtime::Runtime,
    base: &str,
    window: Duration,
) -> anyhow::Result<(LoadResult, String)> {
    let before = runtime.block_on(WriterTotals::of(base))?;
    let result = runtime.block_on(load::run(base, Op::Checkpoint, 64, window))?;
    let writer = runtime.block_on(WriterTotals::of(base))?.since(before);
    Ok((result, writer))
}

/// 64 clients spread over `base` and two more servers started with `flags` (stopped
/// after), with the event lag probe on session `probe`: the load, the probe's p99 in ms,
/// and each server's writer.
fn three_servers(
    runtime: &tokio::runtime::Runtime,
    root: &Path,
    flags: &[&str],
    base: &str,
    window: Duration,
    probe: &str,
) -> anyhow::Result<(LoadResult, f64, Vec<String>)> {
    let others: Vec<Binary> = (0..2)
        .map(|_| Binary::start_with(&root.join("postgres-node"), flags))
        .collect();
    let bases: Vec<String> = std::iter::once(base.to_owned())
        .chain(others.iter().map(|node| node.base.clone()))
        .collect();
    runtime.block_on(async {
        for base in &bases {
            load::wait_ready(base).await?;
        }
        load::run_spread(&bases, TOKEN, Op::Checkpoint, 64, WARM_UP).await?;
        anyhow::Ok(())
    })?;
    let mut before = Vec::new();
    for base in &bases {
        before.push(runtime.block_on(WriterTotals::of(base))?);
    }
    let (three, lag) = runtime.block_on(async {
        let probe = tokio::spawn(lag_probe(
            bases[0].clone(),
            bases[1].clone(),
            window,
            probe.to_owned(),
        ));
        let load = load::run_spread(&bases, TOKEN, Op::Checkpoint, 64, window).await;
        (load, probe.await)
    });
    let mut writers = Vec::new();
    for (base, before) in bases.iter().zip(before) {
        writers.push(runtime.block_on(WriterTotals::of(base))?.since(before));
    }
    for other in others {
        other.stop();
    }
    let lag = lag.context("the lag probe")??;
    Ok((three?, lag.value_at_quantile(0.99) as f64 / 1000.0, writers))
}

/// Runs `sql` with `psql` on the local server's `postgres` database (where `fresh_schema`
/// makes its schemas); answers what it printed, unaligned.
fn psql(sql: &str) -> anyhow::Result<String> {
    let output = Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-q",
            "-At",
            "-c",
            sql,
            "postgres",
        ])
        .output()
        .context("run psql")?;
    if !output.status.success() {
        bail!("psql failed: {}", String::from_utf8_lossy(&output.stderr));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// How many updates of `schema`'s session rows PostgreSQL counted, and how many of them
/// were HOT (as the statistics have them: each backend reports at most once a second).
fn session_updates(schema: &str) -> anyhow::Result<(u64, u64)> {
    let text = psql(&format!(
        "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables \
         WHERE schemaname = '{schema}' AND relname = 'sessions'"
    ))?;
    let mut counts = text.trim().split('|').map(str::parse::<u64>);
    match (counts.next(), counts.next()) {
        (Some(Ok(updates)), Some(Ok(hot))) => Ok((updates, hot)),
        _ => bail!("no update counts for {schema}.sessions: {text}"),
    }
}

/// Every 20 ms for `window`, a checkpoint through `writer`; a stream on `reader` follows
/// them. Answers, per checkpoint, the time from its acknowledgement to its event's arrival
/// (0 when the event came first), in µs.
async fn lag_probe(
    writer: String,
    reader: String,
    window: Duration,
    session: String,
) -> anyhow::Result<Histogram<u64>> {
    let http = reqwest::Client::new();
    let created = http
        .post(format!("{writer}/api/v1/sessions"))
        .bearer_auth(TOKEN)
        .json(
            &serde_json::json!({"id": session, "kind": "bench", "heartbeat_timeout_ms": 3_600_000}),
        )
        .send()
        .await?;
    if created.status() != 201 {
        bail!("creating the probe's session: {}", created.status());
    }
    let arrivals: Arc<Mutex<HashMap<u64, Instant>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let follower = {
        let (arrivals, stop, http) = (Arc::clone(&arrivals), Arc::clone(&stop), http.clone());
        let url = format!("{reader}/api/v1/events?session_id={session}");
        tokio::spawn(async move {
            let response = http.get(url).bearer_auth(TOKEN).send().await?;
            let mut stream = response.bytes_stream();
            let mut buffer = String::new();
            while !stop.load(Ordering::Relaxed) {
                let chunk =
                    match tokio::time::timeout(Duration::from_millis(100), stream.next()).await {
                        Ok(Some(chunk)) => chunk,
                        Ok(None) => bail!("the probe's event stream ended"),
                        Err(_) => continue,
                    };
                let now = Instant::now();
                buffer.push_str(&String::from_utf8_lossy(&chunk?));
                while let Some(end) = buffer.find("\n\n") {
                    let frame: String = buffer.drain(..end + 2).collect();
                    let created = frame.lines().any(|line| {
                        line.strip_prefix("event:").map(str::trim) == Some("checkpoint.created")
                    });
                    let seq = frame
                        .lines()
                        .find_map(|line| line.strip_prefix("data:"))
                        .and_then(|data| {
                            serde_json::from_str::<serde_json::Value>(data.trim()).ok()
                        })
                        .filter(|_| created)
                        .and_then(|event| event["data"]["seq"].as_u64());
                    if let Some(seq) = seq {
                        arrivals
                            .lock()
                            .map_err(|_| anyhow::anyhow!("lock"))?
                            .insert(seq, now);
                    }
                }
            }
            anyhow::Ok(())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut acknowledged = HashMap::new();
    let deadline = Instant::now() + window;
    let mut ticks = tokio::time::interval(Duration::from_millis(20));
    while Instant::now() < deadline {
        ticks.tick().await;
        let response = http
            .post(format!("{writer}/api/v1/sessions/{session}/checkpoints"))
            .bearer_auth(TOKEN)
            .json(&serde_json::json!({"attempt": 1, "kind": "item", "data": {}}))
            .send()
            .await?;
        let at = Instant::now();
        let answer: serde_json::Value = response.json().await?;
        if let Some(seq) = answer["seq"].as_u64() {
            acknowledged.insert(seq, at);
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    follower.await??;
    let arrivals = arrivals.lock().map_err(|_| anyhow::anyhow!("lock"))?;
    let mut lags = Histogram::<u64>::new(3)?;
    for (seq, at) in &acknowledged {
        let arrived = arrivals
            .get(seq)
            .with_context(|| format!("the event of checkpoint {seq} never arrived"))?;
        let lag = arrived.saturating_duration_since(*at);
        lags.record(u64::try_from(lag.as_micros()).unwrap_or(u64::MAX))?;
    }
    Ok(lags)
}
