//! Simulated typing into a document with the AutoSaver: every keystroke is a merge patch,
//! journaled before `edit` returns, saved after a quiet spell or at the latest every
//! `max_wait`. The save status is printed as it changes. Kill it at any moment (SIGKILL)
//! and run it again: the journal is replayed, nothing typed is lost, and typing goes on
//! where it stopped. An editing session records each acknowledged save as a checkpoint.
//!
//! `cargo run -p lifeboat-sdk --example document_autosave -- --url URL --token KEY`

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use lifeboat_sdk::{
    AutoSaveOptions, AutoSaver, Checkpoint, Client, NewSession, RecoveryOption, Resumed,
};
use serde_json::json;

#[derive(Parser)]
struct Args {
    /// The Lifeboat server.
    #[arg(long, default_value = "http://127.0.0.1:7433")]
    url: String,
    /// An API key with write scope.
    #[arg(long, env = "LIFEBOAT_TOKEN")]
    token: String,
    /// The document (project) id.
    #[arg(long, default_value = "essay")]
    id: String,
    /// The journal file (edits not yet acknowledged survive a crash here).
    #[arg(long, default_value = "essay.journal")]
    journal: PathBuf,
    /// Keystrokes to type in all.
    #[arg(long, default_value_t = 2_000)]
    edits: u64,
    /// Keystrokes per second.
    #[arg(long, default_value_t = 100)]
    rate: u64,
    /// Milliseconds of quiet before a save.
    #[arg(long, default_value_t = 2_000)]
    debounce_ms: u64,
    /// Milliseconds at most between saves while typing goes on.
    #[arg(long, default_value_t = 10_000)]
    max_wait_ms: u64,
    /// A file each keystroke's number is appended to once `edit` returned.
    #[arg(long)]
    typed: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let client = Client::new(&args.url, &args.token);
    let new = NewSession::new("editing")
        .id(&format!("editing-{}", args.id))
        .project_id(&args.id)
        .heartbeat_timeout_ms(3_000);
    let session = match client
        .resume_or_start(new, RecoveryOption::Continue)
        .await?
    {
        Resumed::Started(session) => session,
        Resumed::Recovered {
            session,
            resume_from,
            ..
        } => {
            if let Some(checkpoint) = resume_from {
                println!("resumed from checkpoint seq={}", checkpoint.seq);
            }
            session
        }
        Resumed::Finished(_) => {
            println!("document {} is already finished", args.id);
            return Ok(());
        }
    };
    let options = AutoSaveOptions {
        debounce: Duration::from_millis(args.debounce_ms),
        max_wait: Duration::from_millis(args.max_wait_ms),
        journal: Some(args.journal.clone()),
    };
    let saver = AutoSaver::open(&client, &args.id, options).await?;
    // What a previous run typed is in the document (or on its way from the journal).
    saver.flush().await?;
    let document: serde_json::Value = reqwest::Client::new()
        .get(format!("{}/api/v1/projects/{}", args.url, args.id))
        .bearer_auth(&args.token)
        .send()
        .await?
        .json()
        .await?;
    let typed_before = document["state"]["chars"]
        .as_object()
        .map_or(0, |c| c.len() as u64);
    println!("document has {typed_before} characters; typing on");

    let mut status = saver.status();
    let printer = tokio::spawn(async move {
        while status.changed().await.is_ok() {
            let now = status.borrow().clone();
            println!(
                "status: {:?}, {} pending, revision {}",
                now.state,
                now.pending_edits(),
                now.revision
            );
        }
    });
    let checkpointer = {
        let mut status = saver.status();
        tokio::spawn(async move {
            let mut saved = 0;
            while status.changed().await.is_ok() {
                let revision = status.borrow().revision;
                if revision > saved {
                    saved = revision;
                    if session
                        .checkpoint(Checkpoint::item(&json!({"revision": revision}))?)
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            }
            Ok::<_, lifeboat_sdk::Error>(session)
        })
    };

    let mut typed = match &args.typed {
        Some(path) => Some(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)?,
        ),
        None => None,
    };
    let pause = Duration::from_micros(1_000_000 / args.rate.max(1));
    let text = "Lifeboat keeps long-running work safe. ";
    for n in typed_before..args.edits {
        let letter = text.chars().nth((n as usize) % text.len()).unwrap_or(' ');
        saver.edit(json!({"chars": {format!("c{n:06}"): letter.to_string()}}))?;
        if let Some(log) = &mut typed {
            writeln!(log, "{n}")?;
        }
        tokio::time::sleep(pause).await;
    }
    saver.close().await?;
    printer.abort();
    let session = checkpointer.await??;
    session.complete().await?;
    println!("done: {} characters saved", args.edits);
    Ok(())
}
