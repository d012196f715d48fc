//! `lifeboat projects …` and `lifeboat schemas …`: the project commands, over HTTP.

use std::io::Read;
use std::path::PathBuf;

use anyhow::anyhow;
use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{Value, json};

use crate::Failure;
use crate::client::{Connection, print_json, text};

#[derive(Subcommand)]
pub(crate) enum ProjectsCommand {
    /// Lists projects, most recently created first.
    List {
        /// How many to list (1–1000).
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[command(flatten)]
        connection: Connection,
    },
    /// Shows a project and its state (now, or at --revision).
    Show {
        /// The project id.
        id: String,
        /// Show this revision instead of the current one.
        #[arg(long)]
        revision: Option<u64>,
        #[command(flatten)]
        connection: Connection,
    },
    /// Lists a project's revisions, newest first.
    History {
        /// The project id.
        id: String,
        /// How many to list (1–1000).
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[command(flatten)]
        connection: Connection,
    },
    /// Makes an earlier revision's state the newest revision.
    Restore {
        /// The project id.
        id: String,
        /// The revision to restore.
        revision: u64,
        #[command(flatten)]
        connection: Connection,
    },
}

#[derive(Subcommand)]
pub(crate) enum SchemasCommand {
    /// Registers a JSON Schema (Draft 2020-12) version from a file (`-` reads stdin).
    Put(PutSchema),
    /// Prints a registered schema version.
    Get {
        /// The schema name.
        name: String,
        /// The version.
        version: String,
        #[command(flatten)]
        connection: Connection,
    },
}

#[derive(Args)]
pub(crate) struct PutSchema {
    /// The schema name.
    name: String,
    /// The version (immutable once registered).
    version: String,
    /// The schema file, or `-` for stdin.
    file: PathBuf,
    #[command(flatten)]
    connection: Connection,
}

pub(crate) async fn projects(command: ProjectsCommand) -> Result<(), Failure> {
    match command {
        ProjectsCommand::List { limit, connection } => {
            let page = connection
                .api()?
                .call(Method::GET, &format!("/projects?limit={limit}"), None)
                .await?;
            if connection.json {
                print_json(&page);
                return Ok(());
            }
            println!(
                "{:<30} {:>8} {:>10} {:<20} {:<24} TITLE",
                "ID", "REVISION", "BYTES", "SCHEMA", "UPDATED"
            );
            for p in page["items"].as_array().into_iter().flatten() {
                println!(
                    "{:<30} {:>8} {:>10} {:<20} {:<24} {}",
                    text(&p["id"]),
                    text(&p["revision"]),
                    text(&p["size_bytes"]),
                    text(&p["schema"]),
                    text(&p["updated_at"]),
                    text(&p["title"]),
                );
            }
            Ok(())
        }
        ProjectsCommand::Show {
            id,
            revision,
            connection,
        } => {
            let path = match revision {
                Some(revision) => format!("/projects/{id}?revision={revision}"),
                None => format!("/projects/{id}"),
            };
            let project = connection.api()?.call(Method::GET, &path, None).await?;
            if connection.json {
                print_json(&project);
                return Ok(());
            }
            for key in [
                "id",
                "revision",
                "title",
                "schema",
                "created_at",
                "updated_at",
            ] {
                println!("{key:<11} {}", text(&project[key]));
            }
            println!("state");
            print_json(&project["state"]);
            Ok(())
        }
        ProjectsCommand::History {
            id,
            limit,
            connection,
        } => {
            let page = connection
                .api()?
                .call(
                    Method::GET,
                    &format!("/projects/{id}/revisions?limit={limit}"),
                    None,
                )
                .await?;
            if connection.json {
                print_json(&page);
                return Ok(());
            }
            println!("{:>8} {:<26} {:>10}", "REVISION", "SAVED", "BYTES");
            for r in page["items"].as_array().into_iter().flatten() {
                println!(
                    "{:>8} {:<26} {:>10}",
                    text(&r["revision"]),
                    text(&r["created_at"]),
                    text(&r["size_bytes"]),
                );
            }
            Ok(())
        }
        ProjectsCommand::Restore {
            id,
            revision,
            connection,
        } => {
            let saved = connection
                .api()?
                .call(
                    Method::POST,
                    &format!("/projects/{id}/restore"),
                    Some(json!({"revision": revision})),
                )
                .await?;
            if connection.json {
                print_json(&saved);
                return Ok(());
            }
            println!(
                "project {} restored revision {revision} as revision {}",
                text(&saved["id"]),
                text(&saved["revision"]),
            );
            Ok(())
        }
    }
}

pub(crate) async fn schemas(command: SchemasCommand) -> Result<(), Failure> {
    match command {
        SchemasCommand::Put(put) => {
            let mut raw = String::new();
            let read = if put.file.as_os_str() == "-" {
                std::io::stdin().read_to_string(&mut raw).map(drop)
            } else {
                std::fs::read_to_string(&put.file).map(|text| raw = text)
            };
            read.map_err(|e| {
                Failure::new(
                    Failure::NO_INPUT,
                    anyhow!("cannot read {}: {e}", put.file.display()),
                )
            })?;
            let schema: Value = serde_json::from_str(&raw).map_err(|e| {
                Failure::new(
                    Failure::DATA,
                    anyhow!("{} is not JSON: {e}", put.file.display()),
                )
            })?;
            let path = format!("/schemas/{}/{}", put.name, put.version);
            let stored = put
                .connection
                .api()?
                .call(Method::PUT, &path, Some(schema))
                .await?;
            if put.connection.json {
                print_json(&stored);
            } else {
                println!("schema {}@{} registered", put.name, put.version);
            }
            Ok(())
        }
        SchemasCommand::Get {
            name,
            version,
            connection,
        } => {
            let schema = connection
                .api()?
                .call(Method::GET, &format!("/schemas/{name}/{version}"), None)
                .await?;
            print_json(&schema);
            Ok(())
        }
    }
}
