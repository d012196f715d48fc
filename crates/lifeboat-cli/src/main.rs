//! The `lifeboat` binary: `serve` runs the server; the other commands talk HTTP to one.
//!
//! Exit codes: 0 ok, 1 failure (refused by the server), 2 usage error, 65 bad data,
//! 66 input file unreadable, 69 server unavailable, 77 permission denied, 78 configuration
//! error.

mod assets;
mod client;
mod projects;
mod serve;
mod transfer;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Keeps long-running user work safe: sessions, checkpoints, verified recovery.
#[derive(Parser)]
#[command(name = "lifeboat", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the server (SQLite under ./lifeboat-data, listening on 127.0.0.1:7433).
    Serve(serve::ServeArgs),
    /// Lists or shows sessions.
    Sessions {
        #[command(subcommand)]
        command: client::SessionsCommand,
    },
    /// Lists recoverable sessions.
    Recovery {
        #[command(subcommand)]
        command: client::RecoveryCommand,
    },
    /// Recovers a session with an option.
    Recover(client::RecoverArgs),
    /// Lists, shows and restores projects (auto-saved documents).
    Projects {
        #[command(subcommand)]
        command: projects::ProjectsCommand,
    },
    /// Lists, downloads and uploads asset files.
    Assets {
        #[command(subcommand)]
        command: assets::AssetsCommand,
    },
    /// Creates, lists and revokes API keys.
    Keys {
        #[command(subcommand)]
        command: client::KeysCommand,
    },
    /// The audit trail: who did what to which resource.
    Audit(client::Connection),
    /// Counts: sessions by status, crashes, recoveries, detection delay, work lost.
    Stats(client::Connection),
    /// Verifies the whole store: every checkpoint and asset hash, counters, SQLite's check.
    Verify(client::VerifyArgs),
    /// Removes old finished sessions, deleted projects, old revisions and orphan files.
    Cleanup(client::CleanupArgs),
    /// Writes projects and sessions (state, revisions, checkpoints, assets) to an archive.
    Export(transfer::ExportArgs),
    /// Imports an archive from `lifeboat export`, checking every hash first.
    Import(transfer::ImportArgs),
    /// Registers and shows JSON Schemas for projects.
    Schemas {
        #[command(subcommand)]
        command: projects::SchemasCommand,
    },
}

/// Failure with the exit code it maps to.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) code: u8,
    pub(crate) error: anyhow::Error,
}

impl Failure {
    pub(crate) const REFUSED: u8 = 1;
    pub(crate) const DATA: u8 = 65;
    pub(crate) const NO_INPUT: u8 = 66;
    pub(crate) const UNAVAILABLE: u8 = 69;
    /// Another process owns the data directory (EX_TEMPFAIL: try again once it stopped).
    pub(crate) const IN_USE: u8 = 75;
    pub(crate) const PERMISSION: u8 = 77;
    pub(crate) const CONFIG: u8 = 78;

    pub(crate) fn new(code: u8, error: impl Into<anyhow::Error>) -> Failure {
        Failure {
            code,
            error: error.into(),
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(Failure::UNAVAILABLE);
        }
    };
    let outcome = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve::run(args).await,
            Command::Sessions { command } => client::sessions(command).await,
            Command::Recovery { command } => client::recovery(command).await,
            Command::Recover(args) => client::recover(args).await,
            Command::Projects { command } => projects::projects(command).await,
            Command::Schemas { command } => projects::schemas(command).await,
            Command::Assets { command } => assets::assets(command).await,
            Command::Cleanup(args) => client::cleanup(args).await,
            Command::Verify(args) => client::verify(args).await,
            Command::Stats(connection) => client::stats(connection).await,
            Command::Keys { command } => client::keys(command).await,
            Command::Audit(connection) => client::audit(connection).await,
            Command::Export(args) => transfer::export(args).await,
            Command::Import(args) => transfer::import(args).await,
        }
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("error: {:#}", failure.error);
            ExitCode::from(failure.code)
        }
    }
}
