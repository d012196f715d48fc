//! The one test harness (`lifeboat-testkit`), under the name these tests use: servers in
//! this process, and the real binary (this build's `target/<profile>/lifeboat`).

pub use lifeboat_testkit::{
    Binary, Reply, TOKEN, TestServer, all_checkpoints, files_under, manual_clock, millis, now_ms,
};
