//! A multi-step workflow (an onboarding chat): on every step its step number, chat history
//! and form data are merged into a project and saved before the next step, with a stage
//! checkpoint per step. Kill it (SIGKILL) and run it again: the workflow is restored
//! exactly — step, history, form — and goes on with the next step.
//!
//! `cargo run -p lifeboat-sdk --example chat_workflow -- --url URL --token KEY`

use std::time::Duration;

use clap::Parser;
use lifeboat_sdk::{
    AutoSaveOptions, AutoSaver, Checkpoint, Client, NewSession, RecoveryOption, Resumed,
};
use serde_json::{Value, json};

const STEPS: u64 = 8;
const QUESTIONS: [(&str, &str, &str); STEPS as usize] = [
    ("name", "What is your name?", "Ada"),
    ("company", "Where do you work?", "Analytical Engines Ltd"),
    ("role", "What is your role?", "Engineer"),
    ("team", "How large is your team?", "7"),
    ("goal", "What do you want to build?", "a render farm"),
    ("deadline", "By when?", "next quarter"),
    ("budget", "What is the budget?", "modest"),
    ("contact", "How can we reach you?", "ada@example.com"),
];

#[derive(Parser)]
struct Args {
    /// The Lifeboat server.
    #[arg(long, default_value = "http://127.0.0.1:7433")]
    url: String,
    /// An API key with write scope.
    #[arg(long, env = "LIFEBOAT_TOKEN")]
    token: String,
    /// The workflow id (project and session).
    #[arg(long, default_value = "onboarding-1")]
    id: String,
    /// Milliseconds per step (the person typing).
    #[arg(long, default_value_t = 500)]
    step_ms: u64,
}

/// The workflow's state after `steps` steps: the same whichever run made them.
fn state_after(steps: u64) -> Value {
    let mut history = Vec::new();
    let mut form = serde_json::Map::new();
    for (field, question, answer) in QUESTIONS.iter().take(steps as usize) {
        history.push(json!({"role": "assistant", "text": question}));
        history.push(json!({"role": "user", "text": answer}));
        form.insert((*field).to_owned(), json!(answer));
    }
    json!({"step": steps, "history": history, "form": form})
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let client = Client::new(&args.url, &args.token);
    let new = NewSession::new("workflow")
        .id(&args.id)
        .project_id(&args.id)
        .heartbeat_timeout_ms(2_000)
        .total_units(STEPS);
    let (session, resumed) = match client
        .resume_or_start(new, RecoveryOption::Continue)
        .await?
    {
        Resumed::Started(session) => (session, false),
        Resumed::Recovered {
            session,
            resume_from,
            ..
        } => {
            if let Some(checkpoint) = resume_from {
                println!("resumed from checkpoint seq={}", checkpoint.seq);
            }
            (session, true)
        }
        Resumed::Finished(_) => {
            println!("workflow {} is already finished", args.id);
            return Ok(());
        }
    };
    let saver = AutoSaver::open(&client, &args.id, AutoSaveOptions::default()).await?;
    let project: Value = reqwest::Client::new()
        .get(format!("{}/api/v1/projects/{}", args.url, args.id))
        .bearer_auth(&args.token)
        .send()
        .await?
        .json()
        .await?;
    let mut step = project["state"]["step"].as_u64().unwrap_or(0);
    if resumed {
        anyhow::ensure!(
            project["state"] == state_after(step),
            "the saved workflow does not match step {step}"
        );
        println!(
            "restored step {step}: {} messages, form {}",
            project["state"]["history"].as_array().map_or(0, Vec::len),
            project["state"]["form"]
        );
    }
    while step < STEPS {
        tokio::time::sleep(Duration::from_millis(args.step_ms)).await;
        step += 1;
        let next = state_after(step);
        // Arrays are replaced whole by a merge patch: the history goes as it now stands.
        saver.edit(json!({"step": step, "history": next["history"], "form": next["form"]}))?;
        saver.flush().await?;
        session
            .checkpoint(
                Checkpoint::stage(&format!("step-{step}"), &json!({"step": step}))?
                    .completed_units(step),
            )
            .await?;
        println!("step {step} saved");
    }
    saver.close().await?;
    session.complete().await?;
    println!("done: {STEPS} steps");
    Ok(())
}
