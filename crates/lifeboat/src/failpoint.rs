//! Crash-test failpoints. With `LIFEBOAT_FAILPOINT=<name>` in the environment, the
//! process stops at the point of that name: it says `failpoint <name> reached` on stderr
//! and blocks there for good, so a test can SIGKILL it at exactly that moment. Unset
//! (always, outside crash tests) a point costs one comparison.
//!
//! Points: `cleanup.after_records` (the record deletions committed, no file deleted yet),
//! `cleanup.after_first_file` (one unreferenced file deleted).

use std::sync::OnceLock;

/// The environment variable that names the failpoint to stop at.
pub const FAILPOINT_VAR: &str = "LIFEBOAT_FAILPOINT";

static CONFIGURED: OnceLock<Option<String>> = OnceLock::new();

/// Stops here for good if this is the configured failpoint.
pub(crate) fn reached(name: &str) {
    let configured = CONFIGURED.get_or_init(|| std::env::var(FAILPOINT_VAR).ok());
    if configured.as_deref() == Some(name) {
        eprintln!("failpoint {name} reached");
        loop {
            std::thread::park();
        }
    }
}
