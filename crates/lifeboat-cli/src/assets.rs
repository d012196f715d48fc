//! `lifeboat assets list|get|put`: asset files over HTTP, streamed, with a progress bar
//! on stderr when it is a terminal.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::anyhow;
use clap::{Args, Subcommand};
use futures_util::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::Method;
use tokio::io::AsyncWriteExt;

use crate::Failure;
use crate::client::{Connection, print_json, text};

#[derive(Subcommand)]
pub(crate) enum AssetsCommand {
    /// Lists a session's (or with --project, a project's) assets with their status.
    List {
        #[command(flatten)]
        owner: OwnerArgs,
        #[command(flatten)]
        connection: Connection,
    },
    /// Downloads an asset to FILE (or stdout).
    Get {
        #[command(flatten)]
        owner: OwnerArgs,
        /// The asset name.
        name: String,
        /// Where to write it (default: stdout).
        file: Option<PathBuf>,
        #[command(flatten)]
        connection: Connection,
    },
    /// Uploads FILE (or stdin) as an asset, replacing any asset of that name.
    Put {
        #[command(flatten)]
        owner: OwnerArgs,
        /// The asset name.
        name: String,
        /// What to upload (default: stdin).
        file: Option<PathBuf>,
        #[command(flatten)]
        connection: Connection,
    },
}

#[derive(Args)]
pub(crate) struct OwnerArgs {
    /// The session id (a project id with --project).
    owner: String,
    /// The id is a project's.
    #[arg(long)]
    project: bool,
}

impl OwnerArgs {
    fn path(&self) -> String {
        let kind = if self.project { "projects" } else { "sessions" };
        format!("/{kind}/{}/assets", self.owner)
    }
}

pub(crate) fn progress(length: Option<u64>, quiet: bool) -> ProgressBar {
    if quiet || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = length.map_or_else(ProgressBar::new_spinner, ProgressBar::new);
    let style =
        ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar
}

/// Checks a name before any byte is sent (the server would refuse it anyway).
fn checked(name: &str) -> Result<&str, Failure> {
    lifeboat::AssetName::parse(name)
        .map(|_| name)
        .map_err(|e| Failure::new(Failure::DATA, anyhow!("{e}")))
}

fn local(context: &str, e: std::io::Error) -> Failure {
    Failure::new(Failure::NO_INPUT, anyhow!("{context}: {e}"))
}

pub(crate) async fn assets(command: AssetsCommand) -> Result<(), Failure> {
    match command {
        AssetsCommand::List { owner, connection } => {
            let list = connection.api()?.all(&owner.path()).await?;
            if connection.json {
                print_json(&list);
                return Ok(());
            }
            println!(
                "{:<40} {:>12} {:<8} {:<9} SHA-256",
                "NAME", "BYTES", "STATUS", "SOURCE"
            );
            for a in list["items"].as_array().into_iter().flatten() {
                println!(
                    "{:<40} {:>12} {:<8} {:<9} {}",
                    text(&a["name"]),
                    text(&a["size"]),
                    text(&a["status"]),
                    text(&a["source"]),
                    text(&a["sha256"]),
                );
            }
            Ok(())
        }
        AssetsCommand::Get {
            owner,
            name,
            file,
            connection,
        } => {
            let api = connection.api()?;
            let path = format!("{}/{}", owner.path(), checked(&name)?);
            let response = api.send(api.request(Method::GET, &path)).await?;
            let bar = progress(response.content_length(), file.is_none());
            let mut out: Box<dyn tokio::io::AsyncWrite + Unpin> = match &file {
                Some(file) => Box::new(
                    tokio::fs::File::create(file)
                        .await
                        .map_err(|e| local(&format!("cannot create {}", file.display()), e))?,
                ),
                None => Box::new(tokio::io::stdout()),
            };
            let mut stream = response.bytes_stream();
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| {
                    Failure::new(Failure::UNAVAILABLE, anyhow!("the download broke off: {e}"))
                })?;
                out.write_all(&chunk)
                    .await
                    .map_err(|e| local("cannot write", e))?;
                bar.inc(chunk.len() as u64);
            }
            out.flush().await.map_err(|e| local("cannot write", e))?;
            bar.finish_and_clear();
            Ok(())
        }
        AssetsCommand::Put {
            owner,
            name,
            file,
            connection,
        } => {
            let api = connection.api()?;
            checked(&name)?;
            let (reader, length): (Box<dyn tokio::io::AsyncRead + Send + Unpin>, Option<u64>) =
                match &file {
                    Some(file) => {
                        let opened = tokio::fs::File::open(file)
                            .await
                            .map_err(|e| local(&format!("cannot read {}", file.display()), e))?;
                        let length = opened.metadata().await.ok().map(|m| m.len());
                        (Box::new(opened), length)
                    }
                    None => (Box::new(tokio::io::stdin()), None),
                };
            let bar = progress(length, connection.json);
            let counter = bar.clone();
            let stream = tokio_util::io::ReaderStream::new(reader).inspect(move |chunk| {
                if let Ok(chunk) = chunk {
                    counter.inc(chunk.len() as u64);
                }
            });
            let mut request = api
                .request(Method::PUT, &format!("{}/{name}", owner.path()))
                .header("content-type", "application/octet-stream")
                .body(reqwest::Body::wrap_stream(stream));
            if let Some(length) = length {
                request = request.header("content-length", length);
            }
            let stored: serde_json::Value =
                api.send(request).await?.json().await.unwrap_or_default();
            bar.finish_and_clear();
            if connection.json {
                print_json(&stored);
            } else {
                println!(
                    "{} stored: {} bytes, sha256 {}",
                    text(&stored["name"]),
                    text(&stored["size"]),
                    text(&stored["sha256"])
                );
            }
            Ok(())
        }
    }
}
