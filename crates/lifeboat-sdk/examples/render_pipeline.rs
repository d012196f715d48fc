//! A five-stage render pipeline — Script, TTS, Images, Composition, Render — with a stage
//! checkpoint and an output asset per stage. Kill it (SIGKILL) and run it again: it
//! continues after the last finished stage, whose outputs recovery has checked.
//!
//! `cargo run -p lifeboat-sdk --example render_pipeline -- --url URL --token KEY`

use std::io::Write;
use std::time::Duration;

use clap::Parser;
use lifeboat_sdk::{Checkpoint, Client, NewSession, RecoveryOption, Resumed};
use serde_json::json;

const STAGES: [&str; 5] = ["script", "tts", "images", "composition", "render"];

#[derive(Parser)]
struct Args {
    /// The Lifeboat server.
    #[arg(long, default_value = "http://127.0.0.1:7433")]
    url: String,
    /// An API key with write scope.
    #[arg(long, env = "LIFEBOAT_TOKEN")]
    token: String,
    /// The session id (the same id continues the same render).
    #[arg(long, default_value = "render-1")]
    id: String,
    /// Milliseconds of work per stage.
    #[arg(long, default_value_t = 1_000)]
    stage_ms: u64,
    /// A file each stage's start is appended to (to see any stage run twice).
    #[arg(long)]
    log: Option<std::path::PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let client = Client::new(&args.url, &args.token);
    let new = NewSession::new("render")
        .id(&args.id)
        .heartbeat_timeout_ms(2_000)
        .total_units(STAGES.len() as u64);
    let (session, mut next) = match client
        .resume_or_start(new, RecoveryOption::Continue)
        .await?
    {
        Resumed::Started(session) => (session, 0),
        Resumed::Recovered {
            session,
            resume_from,
            assessment,
        } => {
            println!(
                "recovering: confidence {:.2}, assets ok {}/{}",
                assessment.confidence, assessment.assets.ok, assessment.assets.total
            );
            let next = match resume_from {
                Some(checkpoint) => {
                    println!("resumed from checkpoint seq={}", checkpoint.seq);
                    checkpoint.completed_units.unwrap_or(0)
                }
                None => 0,
            };
            (session, next)
        }
        Resumed::Finished(_) => {
            println!("render {} is already done", args.id);
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
    while (next as usize) < STAGES.len() {
        let stage = STAGES[next as usize];
        if let Some(log) = &mut log {
            writeln!(log, "{stage}")?;
        }
        println!("stage {stage}…");
        session.set_progress(next, Some(stage));
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(args.stage_ms)) => {}
            () = session.lease_lost() => anyhow::bail!("lost the lease"),
        }
        let output = format!(
            "{stage} output of {} (attempt {})",
            args.id,
            session.attempt()
        );
        let name = format!("out/{stage}.txt");
        session.upload(&name, output.as_bytes()).await?;
        next += 1;
        let seq = session
            .checkpoint(
                Checkpoint::stage(stage, &json!({"output": name}))?
                    .completed_units(next)
                    .assets(&[name.as_str()]),
            )
            .await?;
        println!("stage {stage} done: checkpoint seq={seq}");
    }
    session.complete().await?;
    println!("done: rendered");
    Ok(())
}
