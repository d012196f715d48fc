//! The one test harness (`lifeboat-testkit`), under the name these tests use: servers in
//! this process, and the real binary (this build's `target/<profile>/lifeboat`).

pub use lifeboat_testkit::{
    Binary, Reply, TOKEN, TestServer, all_checkpoints, files_under, manual_clock, millis, now_ms,
};

/// The SHA-256 of `bytes`, as lowercase hex (how the API names a file's content).
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}
