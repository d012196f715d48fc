//! The Rust SDK for Lifeboat: the right thing in a few lines.
//!
//! - [`SessionHandle`]: a session that heartbeats by itself (every timeout / 4, riding out
//!   network blips), checkpoints, and tells the application when it lost its lease.
//! - [`Client::resume_or_start`]: after a crash, hands back where to continue.
//! - [`AutoSaver`]: debounced, coalesced, idempotent auto-saves of a project, with an
//!   optional local journal so that no edit is lost to a crash of the application.
//!
//! Every write carries an `Idempotency-Key` and is retried with jittered exponential
//! backoff on network errors, 5xx and 429 (honouring `Retry-After`), so a retry never
//! writes twice.
//!
//! By default the SDK is an HTTP client only. The `embedded` feature adds
//! [`Client::embedded`]`(data_dir)`: Lifeboat in the application's own process, with the same
//! calls (it compiles the server and SQLite in).
//!
//! ```no_run
//! use lifeboat_sdk::{Checkpoint, Client, NewSession, RecoveryOption, Resumed};
//!
//! # async fn run() -> Result<(), lifeboat_sdk::Error> {
//! let client = Client::new("http://127.0.0.1:7433", "lb_…");
//! let new = NewSession::new("batch").id("nightly-42").heartbeat_timeout_ms(10_000);
//! let (session, mut next) = match client.resume_or_start(new, RecoveryOption::Continue).await? {
//!     Resumed::Started(session) => (session, 0),
//!     Resumed::Recovered { session, resume_from, .. } => {
//!         let done = resume_from.and_then(|c| c.completed_units).unwrap_or(0);
//!         (session, done)
//!     }
//!     Resumed::Finished(_) => return Ok(()),
//! };
//! while next < 1_000 {
//!     // … process item `next` …
//!     next += 1;
//!     session.set_progress(next, None);
//!     if next % 10 == 0 {
//!         session.checkpoint(Checkpoint::item(&next)?.completed_units(next)).await?;
//!     }
//! }
//! session.complete().await?;
//! # Ok(())
//! # }
//! ```

mod autosave;
mod client;
mod session;

pub use autosave::{AutoSaveOptions, AutoSaver, SaveState, SaveStatus};
pub use client::{Client, Error, Result};
pub use lifeboat_api::{CheckpointBody, RecoveryBody, SessionBody};
pub use session::{Checkpoint, NewSession, RecoveryOption, Resumed, SessionHandle};
