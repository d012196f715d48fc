//! The store conformance suite: every behaviour the engine relies on from a backend,
//! written once and run against each backend (see [`conformance_suite!`]).
//!
//! Each check runs the real engine ([`Lifeboat::with_store`]) over the backend, the way
//! the server does, and asserts what a user would notice: gap-free `seq` and revisions,
//! fencing, pruning in the write's transaction, cursors, event order, idempotent
//! outcomes, asset and key records, cleanup, import atomicity. The concurrency checks run
//! two engines over two handles on one database — the shape several servers on one
//! PostgreSQL database have. A backend passes when every check passes.
//!
//! [`conformance_suite!`]: crate::conformance_suite

use std::sync::Arc;
use std::time::Duration;

use lifeboat::{
    CheckpointKind, Config, Id, Lifeboat, ManualClock, NewCheckpoint, NewSession, PageRequest,
    Store, TenantId, Timestamp,
};
use serde_json::json;
use tempfile::TempDir;

/// When every check starts.
pub(super) const T0: Timestamp = Timestamp(1_800_000_000_000);

/// Two handles on one fresh, empty database of the backend under test, and the
/// directory its files (asset bytes, and the database if it is a file) live in.
pub struct Handles {
    /// The first handle.
    pub first: Arc<dyn Store>,
    /// A second handle on the same database (another connection, another process's view
    /// as far as the backend allows).
    pub second: Arc<dyn Store>,
    /// Kept until the check ends.
    pub dir: Arc<TempDir>,
}

/// An engine over `store` with a manual clock at `T0` and no background sweeps or
/// cleanup (the checks run them when they mean to).
pub(super) async fn engine(
    store: Arc<dyn Store>,
    dir: &TempDir,
    clock: Arc<ManualClock>,
) -> Lifeboat {
    let mut config = Config::new(dir.path());
    config.clock = clock;
    config.sweep_interval = Duration::from_secs(3_600);
    config.cleanup_interval = None;
    Lifeboat::with_store(store, config)
        .await
        .expect("the engine starts over the store")
}

/// Two engines, one per handle, on one clock.
pub(super) async fn engines(handles: &Handles) -> (Lifeboat, Lifeboat, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(T0));
    let a = engine(Arc::clone(&handles.first), &handles.dir, Arc::clone(&clock)).await;
    let b = engine(
        Arc::clone(&handles.second),
        &handles.dir,
        Arc::clone(&clock),
    )
    .await;
    (a, b, clock)
}

pub(super) fn tenant() -> TenantId {
    TenantId::default()
}

pub(super) fn id(text: &str) -> Id {
    Id::parse(text).expect("a valid id")
}

pub(super) fn all() -> PageRequest {
    PageRequest {
        limit: 1_000,
        cursor: None,
    }
}

pub(super) async fn session(lifeboat: &Lifeboat, name: &str, timeout_ms: u64) -> Id {
    let new = NewSession {
        id: Some(id(name)),
        kind: "conformance".to_owned(),
        heartbeat_timeout_ms: Some(timeout_ms),
        checkpoint_retention: Some(3),
        ..NewSession::default()
    };
    lifeboat
        .create_session(&tenant(), new)
        .await
        .expect("create a session")
        .id
}

pub(super) fn checkpoint(kind: CheckpointKind, marker: usize) -> NewCheckpoint {
    let mut new = NewCheckpoint::new(kind);
    new.data = json!({ "marker": marker }).to_string();
    new
}

/// Every page of a list, following `next_cursor` with pages of `limit`.
pub(super) async fn pages<T, F, Fut>(limit: u32, mut page: F) -> Vec<T>
where
    F: FnMut(PageRequest) -> Fut,
    Fut: Future<Output = lifeboat::Result<lifeboat::Page<T>>>,
{
    let mut items = Vec::new();
    let mut cursor = None;
    loop {
        let got = page(PageRequest { limit, cursor }).await.expect("a page");
        assert!(
            got.items.len() <= limit as usize,
            "a page holds at most `limit`"
        );
        items.extend(got.items);
        match got.next_cursor {
            Some(next) => cursor = Some(next),
            None => return items,
        }
    }
}

mod records;
mod writes;

pub use records::{
    a_key_revoked_through_one_engine_is_refused_by_the_other,
    a_session_created_again_after_its_purge_is_written_anew, an_import_is_all_or_nothing,
    an_import_keeps_each_session_within_its_retention, appends_at_one_offset_have_one_winner,
    asset_records, cleanup_from_two_engines_leaves_no_record_without_its_bytes,
    cleanup_purges_only_what_is_due, key_records, sweeps_from_two_handles_count_each_crash_once,
};
pub use writes::{
    a_failed_write_leaves_nothing, a_recovered_session_fences_the_old_attempt,
    events_come_in_commit_order, failed_writes_among_many_at_once_spoil_nothing,
    idempotent_outcomes_across_handles, one_new_session_raced_through_both_handles_is_created_once,
    pruning_happens_in_the_write, retried_session_writes_answer_the_first_outcome,
    revisions_are_gap_free_across_handles, seq_is_gap_free_across_handles,
    writes_read_what_earlier_writes_changed,
};

/// Expands to one `#[tokio::test]` per conformance check, each over fresh handles from
/// `$open` (an `async fn() -> Handles`).
#[macro_export]
macro_rules! conformance_suite {
    ($open:path) => {
        $crate::conformance_suite!(@each $open;
            seq_is_gap_free_across_handles,
            revisions_are_gap_free_across_handles,
            a_recovered_session_fences_the_old_attempt,
            pruning_happens_in_the_write,
            writes_read_what_earlier_writes_changed,
            a_failed_write_leaves_nothing,
            failed_writes_among_many_at_once_spoil_nothing,
            events_come_in_commit_order,
            idempotent_outcomes_across_handles,
            one_new_session_raced_through_both_handles_is_created_once,
            retried_session_writes_answer_the_first_outcome,
            asset_records,
            key_records,
            sweeps_from_two_handles_count_each_crash_once,
            cleanup_purges_only_what_is_due,
            cleanup_from_two_engines_leaves_no_record_without_its_bytes,
            a_session_created_again_after_its_purge_is_written_anew,
            an_import_is_all_or_nothing,
            an_import_keeps_each_session_within_its_retention,
            appends_at_one_offset_have_one_winner,
            a_key_revoked_through_one_engine_is_refused_by_the_other,
        );
    };
    (@each $open:path; $($check:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                $crate::conformance::$check($open().await).await;
            }
        )*
    };
}
