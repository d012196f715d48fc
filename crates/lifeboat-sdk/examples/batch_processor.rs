//! A batch of 1,000 items: an item checkpoint every 10 and a batch checkpoint every 100.
//! Kill it at any moment (SIGKILL) and run it again: it shows the recovery options with
//! their confidence and work lost, then carries on from the last checkpoint.
//!
//! `cargo run -p lifeboat-sdk --example batch_processor -- --url URL --token KEY`, or
//! `… -- --data-dir DIR` for Lifeboat embedded in the process (the same SDK calls).

use std::io::Write;
use std::time::Duration;

use clap::Parser;
use lifeboat_sdk::{Checkpoint, Client, NewSession, RecoveryOption, Resumed};
use serde_json::json;

#[derive(Parser)]
struct Args {
    /// The Lifeboat server.
    #[arg(long, default_value = "http://127.0.0.1:7433")]
    url: String,
    /// An API key with write scope.
    #[arg(long, env = "LIFEBOAT_TOKEN", required_unless_present = "data_dir")]
    token: Option<String>,
    /// Run Lifeboat embedded over this data dir instead of talking to a server.
    #[arg(long, conflicts_with = "url")]
    data_dir: Option<std::path::PathBuf>,
    /// The session id (the same id resumes the same batch).
    #[arg(long, default_value = "batch-1")]
    id: String,
    /// Items in the batch.
    #[arg(long, default_value_t = 1_000)]
    items: u64,
    /// Milliseconds of work per item.
    #[arg(long, default_value_t = 5)]
    item_ms: u64,
    /// A file each processed item is appended to (to see any work done twice).
    #[arg(long)]
    log: Option<std::path::PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let client = match (&args.data_dir, &args.token) {
        #[cfg(feature = "embedded")]
        (Some(dir), _) => Client::embedded(dir).await?,
        #[cfg(not(feature = "embedded"))]
        (Some(_), _) => anyhow::bail!(
            "--data-dir needs the SDK's `embedded` feature: cargo run -p lifeboat-sdk --features embedded --example batch_processor"
        ),
        (None, Some(token)) => Client::new(&args.url, token),
        (None, None) => anyhow::bail!("--token (or --data-dir) is needed"),
    };
    let new = NewSession::new("batch")
        .id(&args.id)
        .heartbeat_timeout_ms(3_000)
        .total_units(args.items);
    let (session, mut next) = match client
        .resume_or_start(new, RecoveryOption::Continue)
        .await?
    {
        Resumed::Started(session) => {
            println!("started session {} (attempt 1)", session.id());
            (session, 0)
        }
        Resumed::Recovered {
            session,
            resume_from,
            assessment,
        } => {
            println!(
                "crash: {}; confidence {:.2}, work lost {} ms",
                assessment
                    .crash
                    .as_ref()
                    .map_or("none", |c| c.kind.as_str()),
                assessment.confidence,
                assessment.work_lost_ms
            );
            for option in assessment.options.iter().flatten() {
                println!(
                    "  option {}: from seq {}",
                    option.option,
                    option
                        .resume_from
                        .as_ref()
                        .map_or("-".to_owned(), |c| c.seq.to_string())
                );
            }
            let next = match &resume_from {
                Some(checkpoint) => {
                    println!("resumed from checkpoint seq={}", checkpoint.seq);
                    let data: serde_json::Value = serde_json::from_str(checkpoint.data.get())?;
                    data["next"].as_u64().unwrap_or(0)
                }
                None => 0,
            };
            (session, next)
        }
        Resumed::Finished(session) => {
            println!("session {} is already {}", session.id, session.status);
            return Ok(());
        }
    };
    let mut log = match &args.log {
        Some(path) => Some(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)?,
        ),
        None => None,
    };
    println!("processing items {next}..{}", args.items);
    while next < args.items {
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(args.item_ms)) => {}
            () = session.lease_lost() => anyhow::bail!("lost the lease: another worker has this batch"),
        }
        if let Some(log) = &mut log {
            writeln!(log, "{next}")?;
        }
        next += 1;
        session.set_progress(next, None);
        if next % 100 == 0 {
            let seq = session
                .checkpoint(Checkpoint::batch(&json!({"next": next}))?.completed_units(next))
                .await?;
            println!("batch checkpoint seq={seq} at item {next}");
        } else {
            session
                .checkpoint_every(10, next, || Checkpoint::item(&json!({"next": next})))
                .await?;
        }
    }
    session.complete().await?;
    println!("done: {} items", args.items);
    Ok(())
}
