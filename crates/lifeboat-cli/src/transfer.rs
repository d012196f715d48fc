//! `lifeboat export` and `lifeboat import`: archives of projects and sessions, streamed
//! to and from a file with a progress bar on terminals.

use std::path::PathBuf;

use anyhow::anyhow;
use clap::Args;
use futures_util::StreamExt;
use reqwest::Method;
use tokio::io::AsyncWriteExt;

use crate::Failure;
use crate::assets::progress;
use crate::client::{Connection, print_json, text};

#[derive(Args)]
pub(crate) struct ExportArgs {
    /// Where to write the archive (a tar file).
    #[arg(short, long)]
    output: PathBuf,
    /// A project to export, with its sessions (repeatable).
    #[arg(long = "project", value_name = "ID")]
    projects: Vec<String>,
    /// A session to export (repeatable). Without --project or --session: everything the
    /// tenant holds.
    #[arg(long = "session", value_name = "ID")]
    sessions: Vec<String>,
    #[command(flatten)]
    connection: Connection,
}

#[derive(Args)]
pub(crate) struct ImportArgs {
    /// The archive `lifeboat export` wrote.
    file: PathBuf,
    #[command(flatten)]
    connection: Connection,
}

fn local(context: String, e: std::io::Error) -> Failure {
    Failure::new(Failure::NO_INPUT, anyhow!("{context}: {e}"))
}

const CONTENTS: [&str; 6] = [
    "projects",
    "revisions",
    "schemas",
    "sessions",
    "checkpoints",
    "assets",
];

/// Downloads to `<output>.partial`, then renames: a broken-off export never leaves a file
/// under the name asked for.
pub(crate) async fn export(args: ExportArgs) -> Result<(), Failure> {
    let api = args.connection.api()?;
    let mut query = Vec::new();
    if !args.projects.is_empty() {
        query.push(format!("projects={}", args.projects.join(",")));
    }
    if !args.sessions.is_empty() {
        query.push(format!("sessions={}", args.sessions.join(",")));
    }
    let path = format!("/admin/export?{}", query.join("&"));
    let response = api.send(api.request(Method::GET, &path)).await?;
    let bar = progress(response.content_length(), args.connection.json);
    let partial = args.output.with_extension("partial");
    let mut file = tokio::fs::File::create(&partial)
        .await
        .map_err(|e| local(format!("cannot create {}", partial.display()), e))?;
    let mut stream = response.bytes_stream();
    let mut written = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = match chunk {
            Ok(chunk) => chunk,
            Err(e) => {
                let _ = tokio::fs::remove_file(&partial).await;
                return Err(Failure::new(
                    Failure::UNAVAILABLE,
                    anyhow!("the export broke off (the server's log says why): {e}"),
                ));
            }
        };
        file.write_all(&chunk)
            .await
            .map_err(|e| local(format!("cannot write {}", partial.display()), e))?;
        written += chunk.len() as u64;
        bar.inc(chunk.len() as u64);
    }
    file.sync_all()
        .await
        .map_err(|e| local(format!("cannot write {}", partial.display()), e))?;
    tokio::fs::rename(&partial, &args.output)
        .await
        .map_err(|e| local(format!("cannot rename to {}", args.output.display()), e))?;
    bar.finish_and_clear();
    if args.connection.json {
        print_json(&serde_json::json!({"file": args.output, "bytes": written}));
    } else {
        println!("exported {written} bytes to {}", args.output.display());
    }
    Ok(())
}

pub(crate) async fn import(args: ImportArgs) -> Result<(), Failure> {
    let api = args.connection.api()?;
    let opened = tokio::fs::File::open(&args.file)
        .await
        .map_err(|e| local(format!("cannot read {}", args.file.display()), e))?;
    let length = opened.metadata().await.ok().map(|m| m.len());
    let bar = progress(length, args.connection.json);
    let counter = bar.clone();
    let stream = tokio_util::io::ReaderStream::new(opened).inspect(move |chunk| {
        if let Ok(chunk) = chunk {
            counter.inc(chunk.len() as u64);
        }
    });
    let mut request = api
        .request(Method::POST, "/admin/import")
        .header("content-type", "application/x-tar")
        .body(reqwest::Body::wrap_stream(stream));
    if let Some(length) = length {
        request = request.header("content-length", length);
    }
    let outcome = api.send(request).await;
    bar.finish_and_clear();
    let imported: serde_json::Value = outcome?.json().await.unwrap_or_default();
    if args.connection.json {
        print_json(&imported);
        return Ok(());
    }
    println!("imported {}:", args.file.display());
    for key in CONTENTS {
        println!("  {key:<12} {}", text(&imported[key]));
    }
    Ok(())
}
