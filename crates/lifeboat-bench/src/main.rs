//! `lifeboat-bench`: prints, in one run on one disk, the raw SQLite ceilings and what the
//! real `lifeboat serve` binary achieves over HTTP, with the ratios between them.
//!
//! 1. Raw SQLite (WAL, `synchronous=FULL`): one 1 KiB row per fsync'd transaction, and
//!    100 rows per transaction. These are the baselines.
//! 2. Durable checkpoint writes (1 KiB of `data`) over HTTP at 1, 16 and 64 clients,
//!    with p50/p99 latency; heartbeats at 64 clients.
//! 3. Project history: a 1 MiB document, 1,000 merge patches; growth on disk and the time
//!    to read an old revision. (Project saves under load are part of 2.)
//! 4. Assets: a 1 GiB upload against a plain write+fsync on the same disk, the server's
//!    peak RSS meanwhile, and 64 KiB appends.
//! 5. Operations: `POST /admin/verify` against `sha256sum` of the same bytes, and
//!    checkpoint writes with 100 event-stream subscribers against none.
//! 6. A store of 1,000,000 sessions (10,000 recoverable, 10,000 active): time until
//!    `/readyz` answers 200 after start (the restart grace of the active ones included),
//!    and p99 of `GET /recovery?limit=50` (`--only-large` alone).
//! 7. A busy server: a cleanup of 100,000 asset records and files while 64 sessions with a
//!    1 s lease heartbeat every 250 ms (`--only-busy` alone).
//!
//! `--only-writes` runs only the write loads (checkpoints at 1/16/64 clients, lease-only
//! and progress-changing heartbeats, project saves, checkpoints with 100 event streams)
//! against the one-row ceiling of the same round; `--compare-with <older lifeboat
//! binary>` runs them against that binary and this build's in turn (`--rounds`, 3 by
//! default; medians), for a before/after.
//!
//! `--only-postgres` runs durable checkpoints on the local PostgreSQL against `pgbench`
//! in the same run: 16 clients, heartbeats, then `--rounds` rounds of pgbench, one server
//! and three servers at 64 clients, with each round's ratios and their medians.
//!
//! Run: `cargo build --release -p lifeboat-cli -p lifeboat-bench && target/release/lifeboat-bench`.

mod bucket;
mod busy;
mod fixture;
mod history;
mod load;
mod ops;
mod postgres;
mod sdk;
mod uploads;
mod writes;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Parser;
use lifeboat_testkit::Binary;
use rusqlite::Connection;

const TOKEN: &str = lifeboat_testkit::TOKEN;

#[derive(Parser)]
#[command(about = "Lifeboat benchmarks against raw SQLite ceilings on the same disk")]
struct Args {
    /// Seconds per measured load.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Sessions in the large store.
    #[arg(long, default_value_t = 1_000_000)]
    sessions: u64,
    /// Of which recoverable.
    #[arg(long, default_value_t = 10_000)]
    recoverable: u64,
    /// Of which active (their leases get the restart grace at start).
    #[arg(long, default_value_t = 10_000)]
    active: u64,
    /// Run only the large-store section.
    #[arg(long)]
    only_large: bool,
    /// Bytes of the large upload (1 GiB).
    #[arg(long, default_value_t = 1 << 30)]
    upload_bytes: u64,
    /// Seconds of the AutoSaver run (100 edits a second).
    #[arg(long, default_value_t = 60)]
    autosave_seconds: u64,
    /// Run only the SDK section.
    #[arg(long)]
    only_sdk: bool,
    /// Run only the busy-server section.
    #[arg(long)]
    only_busy: bool,
    /// Run only durable checkpoints on PostgreSQL against pgbench (the local server).
    #[arg(long)]
    only_postgres: bool,
    /// Run only the upload into an S3-compatible bucket (moto) against `aws s3 cp`.
    #[arg(long)]
    only_s3: bool,
    /// Run only the write loads (checkpoints, heartbeats, saves, with event streams).
    #[arg(long)]
    only_writes: bool,
    /// Run only the write loads, against this (older) `lifeboat` binary and this
    /// build's in turn.
    #[arg(long)]
    compare_with: Option<PathBuf>,
    /// Rounds of the write loads and of the PostgreSQL section's 64-client loads (medians
    /// are reported).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Where to put the temporary data (default: a folder in the current directory, so
    /// that the baselines and the server use the same disk).
    #[arg(long)]
    dir: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.rounds == 0 {
        anyhow::bail!("--rounds must be at least 1");
    }
    let root = match &args.dir {
        Some(dir) => tempfile::tempdir_in(dir)?,
        None => tempfile::tempdir_in(".")?,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let window = Duration::from_secs(args.seconds);
    if args.only_sdk {
        return sdk_section(&runtime, root.path(), window, args.autosave_seconds);
    }
    if args.only_postgres {
        return postgres::section(&runtime, root.path(), window, args.rounds);
    }
    if args.only_s3 {
        return bucket::section(&runtime, root.path(), args.upload_bytes, window);
    }
    if args.only_busy {
        return busy_section(&runtime, root.path());
    }
    if args.only_large {
        return large_section(&runtime, root.path(), &args);
    }
    if args.only_writes || args.compare_with.is_some() {
        let baseline = args.compare_with.as_deref();
        return writes::section(&runtime, root.path(), baseline, window, args.rounds);
    }

    println!("## Raw SQLite ceilings (WAL, synchronous=FULL, 1 KiB rows)");
    let one = raw_ceiling(&root.path().join("raw1.sqlite3"), 1, window)?;
    let hundred = raw_ceiling(&root.path().join("raw100.sqlite3"), 100, window)?;
    println!("one row per commit:     {one:>10.0} rows/s");
    println!("100 rows per commit:    {hundred:>10.0} rows/s");

    println!("\n## Lifeboat over HTTP (the real binary, loopback)");
    let data_dir = root.path().join("server");
    let server = server_at(&data_dir);
    let results = runtime.block_on(load::run_all(&server.base, window))?;
    drop(server);
    println!("| load | clients | ops/s | p50 ms | p99 ms | ops/s ÷ one-row ceiling |");
    println!("|---|---|---|---|---|---|");
    for r in &results {
        println!(
            "| {} | {} | {:.0} | {:.2} | {:.2} | {:.1}× |",
            r.name,
            r.clients,
            r.ops_per_second,
            r.p50_ms,
            r.p99_ms,
            r.ops_per_second / one
        );
    }

    println!("\n## Project history: a 1 MiB document, 1,000 merge patches of ~100 bytes");
    let history = runtime.block_on(history::run(&root.path().join("history")))?;
    let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
    println!(
        "document:               {:>10.2} MiB",
        mib(history.state_bytes)
    );
    println!(
        "data on disk grew by:   {:>10.2} MiB (1,000 full copies: {:.0} MiB; {:.0}x less)",
        mib(history.growth_bytes),
        mib(history.full_copies_bytes),
        history.full_copies_bytes as f64 / history.growth_bytes.max(1) as f64
    );
    println!(
        "PATCH (1 client):       p50 {:.2} ms, p99 {:.2} ms",
        history.save_p50_ms, history.save_p99_ms
    );
    println!(
        "GET ?revision=N (old):  p50 {:.2} ms, p99 {:.2} ms",
        history.read_p50_ms, history.read_p99_ms
    );

    println!(
        "\n## Assets: one upload of {} MiB, then 64 KiB appends",
        args.upload_bytes >> 20
    );
    let uploads = runtime.block_on(uploads::run(
        &root.path().join("uploads"),
        args.upload_bytes,
        window,
    ))?;
    println!(
        "plain write + fsync:    {:>10.0} MB/s",
        uploads.baseline_mb_s
    );
    println!(
        "PUT over HTTP:          {:>10.0} MB/s ({:.2}x the plain write; {} bytes)",
        uploads.upload_mb_s,
        uploads.upload_mb_s / uploads.baseline_mb_s,
        uploads.bytes
    );
    println!("server peak RSS:        {:>10.1} MiB", uploads.peak_rss_mib);
    println!(
        "appends (64 KiB, 1 client): {:.0}/s, {:.1} MB/s",
        uploads.appends_per_s, uploads.append_mb_s
    );

    println!("\n## Operations: verify speed, and writers with 100 event subscribers");
    let ops = runtime.block_on(ops::run(&root.path().join("ops"), window))?;
    println!(
        "checkpoint writes, 16 clients: {:.0}/s alone; {:.0}/s with 100 SSE subscribers each following one written session ({:.2}x; {} events delivered); {:.0}/s with 100 following everything ({:.2}x; {} events delivered)",
        ops.writes_alone,
        ops.writes_following,
        ops.writes_following / ops.writes_alone,
        ops.followed_events,
        ops.writes_with_subscribers,
        ops.writes_with_subscribers / ops.writes_alone,
        ops.events_received
    );
    println!(
        "checkpoint writes, 16 clients, median of 3 alternating runs: {:.0}/s with the bootstrap key, {:.0}/s with a tenant key ({:.2}x)",
        ops.writes_bootstrap_key,
        ops.writes_tenant_key,
        ops.writes_tenant_key / ops.writes_bootstrap_key
    );
    println!(
        "verify: {:.0} checkpoints/s, {:.0} MB/s over {} bytes; sha256sum of the same bytes: {:.0} MB/s ({:.2}x)",
        ops.verify_checkpoints_s,
        ops.verify_mb_s,
        ops.verify_bytes,
        ops.sha256sum_mb_s,
        ops.verify_mb_s / ops.sha256sum_mb_s
    );

    sdk_section(&runtime, root.path(), window, args.autosave_seconds)?;
    busy_section(&runtime, root.path())?;

    large_section(&runtime, root.path(), &args)
}

/// A large store: time to ready (restart grace included) and recovery reads (also alone,
/// with `--only-large`).
fn large_section(
    runtime: &tokio::runtime::Runtime,
    root: &Path,
    args: &Args,
) -> anyhow::Result<()> {
    println!(
        "\n## {} sessions stored, {} recoverable, {} active",
        args.sessions, args.recoverable, args.active
    );
    let big = root.join("big");
    let built = Instant::now();
    fixture::build(&big, args.sessions, args.recoverable, args.active)?;
    println!("fixture built in {:.1} s", built.elapsed().as_secs_f64());
    let started = Instant::now();
    let server = server_at(&big);
    runtime.block_on(load::wait_ready(&server.base))?;
    let ready_s = started.elapsed().as_secs_f64();
    println!("ready after start:      {ready_s:>10.3} s");
    let recovery = runtime.block_on(load::recovery_latency(&server.base, 1_000))?;
    println!(
        "GET /recovery?limit=50: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms over {} requests ({} items each)",
        recovery.p50_ms, recovery.p99_ms, recovery.max_ms, recovery.requests, recovery.items
    );
    Ok(())
}

/// A cleanup while leases are live (also alone, with `--only-busy`).
fn busy_section(runtime: &tokio::runtime::Runtime, root: &Path) -> anyhow::Result<()> {
    println!(
        "\n## A busy server: cleanup of 100,000 asset records and files, 64 live 1 s leases heartbeating every 250 ms"
    );
    let busy = runtime.block_on(busy::run(&root.join("busy")))?;
    println!(
        "cleanup: {:.1} s, {} asset records and {} files to go; report {}",
        busy.cleanup_s, busy.asset_rows, busy.files, busy.cleanup
    );
    for (window, latency) in [("before", &busy.quiet), ("during", &busy.during)] {
        println!(
            "heartbeat acknowledgement {window} the cleanup: {} heartbeats, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            latency.count, latency.p50_ms, latency.p99_ms, latency.max_ms
        );
    }
    println!(
        "sessions expired: {} of 64; heartbeats refused or failed: {}",
        busy.expired, busy.failed_heartbeats
    );
    Ok(())
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied().unwrap_or(f64::NAN)
}

fn list(values: &[f64]) -> String {
    values
        .iter()
        .map(|v| format!("{v:.0}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The SDK's figures (also alone, with `--only-sdk`).
fn sdk_section(
    runtime: &tokio::runtime::Runtime,
    root: &Path,
    window: Duration,
    autosave_seconds: u64,
) -> anyhow::Result<()> {
    println!("\n## The Rust SDK: checkpoints through SessionHandle, and the AutoSaver");
    let sdk = runtime.block_on(sdk::run(
        &root.join("sdk"),
        window,
        Duration::from_secs(autosave_seconds),
    ))?;
    println!(
        "checkpoints, 16 clients: {:.0}/s bare reqwest, {:.0}/s bare reqwest with Idempotency-Key, {:.0}/s through the SDK ({:.2}x the keyed calls, {:.2}x the plain ones)",
        sdk.raw_plain,
        sdk.raw_keyed,
        sdk.sdk,
        sdk.sdk / sdk.raw_keyed,
        sdk.sdk / sdk.raw_plain
    );
    println!(
        "AutoSaver, 100 edits/s for {} s, 2 s debounce, 10 s max wait: {} edits, {} saves sent, {} edits lost",
        autosave_seconds, sdk.edits, sdk.saves, sdk.lost
    );

    Ok(())
}

/// Rows per second inserting 1 KiB rows, `per_commit` rows per fsync'd transaction.
fn raw_ceiling(path: &Path, per_commit: usize, window: Duration) -> anyhow::Result<f64> {
    let conn = Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, body BLOB NOT NULL)")?;
    let body = vec![7u8; 1024];
    let started = Instant::now();
    let mut rows = 0u64;
    while started.elapsed() < window {
        conn.execute_batch("BEGIN")?;
        {
            let mut insert = conn.prepare_cached("INSERT INTO t (body) VALUES (?1)")?;
            for _ in 0..per_commit {
                insert.execute([&body])?;
            }
        }
        conn.execute_batch("COMMIT")?;
        rows += per_commit as u64;
    }
    Ok(rows as f64 / started.elapsed().as_secs_f64())
}

/// The real `lifeboat serve` next to this binary (the testkit's [`Binary`]), on a port of
/// its choosing, with room for the benchmark's 100 event streams.
pub(crate) fn server_at(data_dir: &Path) -> Binary {
    Binary::start_with(data_dir, &["--streams-per-key", "1000"])
}
