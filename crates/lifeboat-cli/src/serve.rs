//! `lifeboat serve`: configuration from flags and `LIFEBOAT_*` variables, the bootstrap
//! admin token, logging, metrics, and graceful shutdown.

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use lifeboat::{Config, Lifeboat, ProjectRules, RevisionRetention};
use lifeboat_server::{AdminToken, AppState};
use metrics_exporter_prometheus::PrometheusBuilder;
use rand::RngCore;

use crate::Failure;

/// The file the generated admin token is written to, inside the data directory.
pub(crate) const ADMIN_TOKEN_FILE: &str = "admin-token";
/// How often the Prometheus recorder drains its histograms.
const METRICS_UPKEEP: Duration = Duration::from_secs(5);

#[derive(Args)]
pub(crate) struct ServeArgs {
    /// Where the SQLite store (unless --database-url is given) and asset files live.
    #[arg(long, env = "LIFEBOAT_DATA_DIR", default_value = "lifeboat-data")]
    data_dir: PathBuf,
    /// Address to listen on (port 0 picks a free port and prints it).
    #[arg(long, env = "LIFEBOAT_LISTEN", default_value = "127.0.0.1:7433")]
    listen: SocketAddr,
    /// `postgres://user@host:port/database`: store in PostgreSQL instead of SQLite (asset
    /// files stay under --data-dir); needs LIFEBOAT_ADMIN_TOKEN.
    #[arg(long, env = "LIFEBOAT_DATABASE_URL")]
    database_url: Option<String>,
    /// A directory external assets may be registered from (repeatable).
    #[arg(
        long = "asset-root",
        env = "LIFEBOAT_ASSET_ROOT",
        value_delimiter = ','
    )]
    asset_roots: Vec<PathBuf>,
    /// Where uploaded and appended asset bytes are stored: `s3://bucket/prefix`, an
    /// S3-compatible bucket every server shares (endpoint and credentials from AWS_ENDPOINT_URL,
    /// AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION); default: files inside the data dir.
    #[arg(long, env = "LIFEBOAT_BLOB_STORE")]
    blob_store: Option<String>,
    /// An origin browsers may call the API from, e.g. `https://app.example.com`
    /// (repeatable; none by default: no CORS headers at all).
    #[arg(
        long = "cors-origin",
        env = "LIFEBOAT_CORS_ORIGINS",
        value_delimiter = ','
    )]
    cors_origins: Vec<String>,
    /// Writes a second each key may make (0: unlimited, the default); 429 beyond.
    #[arg(long, env = "LIFEBOAT_WRITE_RATE_PER_KEY", default_value_t = 0)]
    write_rate_per_key: u32,
    /// Writes a key may make in a burst (default: twice the rate).
    #[arg(long, env = "LIFEBOAT_WRITE_BURST_PER_KEY")]
    write_burst_per_key: Option<u32>,
    /// Event streams each key may hold open at once (429 beyond).
    #[arg(long, env = "LIFEBOAT_STREAMS_PER_KEY", default_value_t = lifeboat_server::STREAMS_PER_KEY_DEFAULT)]
    streams_per_key: usize,
    /// Largest asset upload, in bytes (413 beyond).
    #[arg(long, env = "LIFEBOAT_MAX_ASSET_BYTES", default_value_t = lifeboat::ASSET_BYTES_MAX_DEFAULT)]
    max_asset_bytes: u64,
    /// Seconds an upload may send nothing before it is abandoned (408).
    #[arg(long, env = "LIFEBOAT_UPLOAD_IDLE_TIMEOUT_SECS", default_value_t = 60)]
    upload_idle_timeout_secs: u64,
    /// Hours between background cleanups (0: never; run `lifeboat cleanup` by hand).
    #[arg(long, env = "LIFEBOAT_CLEANUP_INTERVAL_HOURS", default_value_t = 6)]
    cleanup_interval_hours: u64,
    /// Days after which failed and cancelled sessions are purged.
    #[arg(long, env = "LIFEBOAT_CLEANUP_SESSION_DAYS", default_value_t = 7)]
    cleanup_session_days: u64,
    /// Days after which soft-deleted projects are purged.
    #[arg(long, env = "LIFEBOAT_CLEANUP_PROJECT_DAYS", default_value_t = 7)]
    cleanup_project_days: u64,
    /// Hours after which unreferenced asset files are deleted.
    #[arg(long, env = "LIFEBOAT_CLEANUP_ORPHAN_HOURS", default_value_t = 24)]
    cleanup_orphan_hours: u64,
    /// Largest project state, in bytes of serialized JSON (413 beyond).
    #[arg(long, env = "LIFEBOAT_MAX_STATE_BYTES", default_value_t = lifeboat::STATE_BYTES_MAX_DEFAULT)]
    max_state_bytes: usize,
    /// Deepest nesting of a project state (422 beyond).
    #[arg(long, env = "LIFEBOAT_MAX_STATE_DEPTH", default_value_t = lifeboat::DEPTH_MAX_DEFAULT)]
    max_state_depth: usize,
    /// Project revisions younger than this many days are all kept.
    #[arg(long, env = "LIFEBOAT_REVISION_KEEP_DAYS", default_value_t = 30)]
    revision_keep_days: u64,
    /// At least this many newest revisions of each project are kept.
    #[arg(long, env = "LIFEBOAT_REVISION_KEEP_MIN", default_value_t = 100)]
    revision_keep_min: u64,
    /// Log filter, e.g. `info` or `lifeboat=debug`.
    #[arg(long, env = "LIFEBOAT_LOG", default_value = "info")]
    log: String,
}

pub(crate) async fn run(args: ServeArgs) -> Result<(), Failure> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&args.log))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
        .init();
    if let Some(url) = &args.database_url {
        let scheme = url.split(':').next().unwrap_or_default();
        if !matches!(scheme, "postgres" | "postgresql") {
            return Err(Failure::new(
                Failure::CONFIG,
                anyhow::anyhow!(
                    "--database-url with scheme {scheme:?} is not supported: use postgres://user@host:port/database, or leave it out for SQLite under --data-dir"
                ),
            ));
        }
        // Servers that share a database must share their admin token: one generated
        // into each node's data directory would differ.
        if std::env::var("LIFEBOAT_ADMIN_TOKEN").map_or(true, |t| t.trim().is_empty()) {
            return Err(Failure::new(
                Failure::CONFIG,
                anyhow::anyhow!(
                    "--database-url needs LIFEBOAT_ADMIN_TOKEN: every server on one database must use the same admin token"
                ),
            ));
        }
    }
    if let Some(blob) = &args.blob_store
        && !blob.starts_with("s3://")
        && !blob.starts_with("file://")
    {
        return Err(Failure::new(
            Failure::CONFIG,
            anyhow::anyhow!(
                "--blob-store {blob:?} is not supported: use s3://bucket/prefix, or leave it out for files inside --data-dir"
            ),
        ));
    }
    if !args.asset_roots.is_empty() {
        tracing::info!(roots = ?args.asset_roots, "asset roots configured");
    }
    let prometheus = PrometheusBuilder::new()
        .install_recorder()
        .map_err(|e| Failure::new(Failure::CONFIG, anyhow::anyhow!("metrics recorder: {e}")))?;
    let upkeep = prometheus.clone();
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(METRICS_UPKEEP);
        loop {
            ticks.tick().await;
            upkeep.run_upkeep();
        }
    });

    let mut config = Config::new(&args.data_dir);
    config.database_url = args.database_url.clone();
    config.blob_store = args
        .blob_store
        .clone()
        .filter(|blob| blob.starts_with("s3://"));
    config.projects = ProjectRules {
        max_state_bytes: args.max_state_bytes,
        max_depth: args.max_state_depth,
        retention: RevisionRetention {
            max_age_ms: args.revision_keep_days.saturating_mul(24 * 3_600_000),
            min_revisions: args.revision_keep_min.max(1),
        },
    };
    config.asset_roots = args.asset_roots.clone();
    config.max_asset_bytes = args.max_asset_bytes;
    config.upload_idle_timeout = Duration::from_secs(args.upload_idle_timeout_secs.max(1));
    const HOUR_MS: u64 = 3_600_000;
    config.cleanup = lifeboat::CleanupRules {
        orphan_age_ms: args.cleanup_orphan_hours.saturating_mul(HOUR_MS),
        finished_session_age_ms: args.cleanup_session_days.saturating_mul(24 * HOUR_MS),
        deleted_project_age_ms: args.cleanup_project_days.saturating_mul(24 * HOUR_MS),
    };
    config.cleanup_interval = (args.cleanup_interval_hours > 0)
        .then(|| Duration::from_secs(args.cleanup_interval_hours.saturating_mul(3_600)));
    // Opening takes the data directory's lock: a second process stops here, having
    // changed nothing (not even the admin token file).
    let lifeboat = Lifeboat::open(config).await.map_err(|e| match e {
        lifeboat::Error::Locked { .. } => Failure::new(Failure::IN_USE, e),
        other => Failure::new(Failure::UNAVAILABLE, other),
    })?;
    let token = admin_token(&args.data_dir).map_err(|e| Failure::new(Failure::CONFIG, e))?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))
        .map_err(|e| Failure::new(Failure::UNAVAILABLE, e))?;
    let address = listener
        .local_addr()
        .map_err(|e| Failure::new(Failure::UNAVAILABLE, e))?;
    tracing::info!(%address, data_dir = %args.data_dir.display(), "lifeboat is ready");
    // Scripts and tests read this line to find a port chosen by the OS.
    println!("listening on http://{address}");
    let _ = std::io::stdout().flush();
    let state = AppState::new(lifeboat, AdminToken::new(token), Some(prometheus))
        .with_cors_origins(&args.cors_origins)
        .map_err(|origin| {
            Failure::new(
                Failure::CONFIG,
                anyhow::anyhow!("--cors-origin {origin:?} is not a valid origin"),
            )
        })?;
    let state = state.with_streams_per_key(args.streams_per_key);
    let state = if args.write_rate_per_key > 0 {
        let burst = args
            .write_burst_per_key
            .unwrap_or(args.write_rate_per_key.saturating_mul(2));
        state.with_write_limit(args.write_rate_per_key, burst)
    } else {
        state
    };
    lifeboat_server::serve(listener, state, shutdown_signal())
        .await
        .map_err(|e| Failure::new(Failure::UNAVAILABLE, e))?;
    tracing::info!("stopped");
    Ok(())
}

/// `LIFEBOAT_ADMIN_TOKEN` if set; else the token in `<data-dir>/admin-token`, generated
/// (256 random bits, mode 0600) on first start.
fn admin_token(data_dir: &Path) -> anyhow::Result<String> {
    if let Ok(token) = std::env::var("LIFEBOAT_ADMIN_TOKEN")
        && !token.trim().is_empty()
    {
        return Ok(token.trim().to_owned());
    }
    let path = data_dir.join(ADMIN_TOKEN_FILE);
    if path.exists() {
        let token = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        tracing::info!(path = %path.display(), "admin token");
        return Ok(token.trim().to_owned());
    }
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create {}", data_dir.display()))?;
    let mut secret = [0u8; 32];
    rand::rng().fill_bytes(&mut secret);
    let token = format!(
        "lb_admin_{}",
        secret
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    write_private(&path, &token)?;
    tracing::info!(path = %path.display(), "generated the admin token");
    Ok(token)
}

fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()?;
    // The file's directory entry is durable only once its directory is fsynced.
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)
            .and_then(|dir| dir.sync_all())
            .with_context(|| format!("cannot sync {}", dir.display()))?;
    }
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down: draining open requests");
}
