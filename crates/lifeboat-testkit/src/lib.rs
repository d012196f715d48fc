//! Lifeboat's one test harness, shared by the CLI's integration tests, the SDK's tests and
//! the benchmark: servers in this process over a temp data directory ([`TestServer`]),
//! the real binary as a child process ([`Binary`]: free port, kill -9, failpoints, fault
//! wrappers), and small HTTP helpers. Every server it starts takes [`TOKEN`] as its
//! bootstrap admin key. [`conformance`] is the suite every storage backend must pass.

mod binary;
pub mod conformance;
pub mod postgres;
pub mod s3;
mod server;

pub use binary::{Binary, all_checkpoints, files_under, lifeboat_binary};
pub use server::{Reply, TestServer, get_json, manual_clock, millis, now_ms, serve_forever};

/// The bootstrap admin key of every server the harness starts.
pub const TOKEN: &str = "test-admin-token";
