//! The source of `now`. The core takes time as a parameter; this is where it comes from.

use std::sync::atomic::{AtomicI64, Ordering};

use std::sync::Arc;

use lifeboat_core::Timestamp;
use lifeboat_store::Store;

/// Tells the current time.
pub trait Clock: Send + Sync + 'static {
    /// Now, in milliseconds since the Unix epoch.
    fn now(&self) -> Timestamp;

    /// Whether this is the machine's wall clock, which Lifeboat then corrects to the
    /// store's clock (on PostgreSQL, lease times are the database's: see
    /// `Store::clock_offset_ms`). A test's clock is used as it is.
    fn is_wall_clock(&self) -> bool {
        false
    }
}

/// The wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        lifeboat_store::wall_clock()
    }

    fn is_wall_clock(&self) -> bool {
        true
    }
}

/// A clock that moves only when told to: for deterministic tests of leases and grace.
#[derive(Debug, Default)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    /// A clock showing `start`.
    pub fn new(start: Timestamp) -> ManualClock {
        ManualClock(AtomicI64::new(start.0))
    }

    /// The time shown, in milliseconds since the epoch.
    pub fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }

    /// Moves the clock forward by `ms`.
    pub fn advance_ms(&self, ms: i64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.0.load(Ordering::SeqCst))
    }
}

/// The clock Lifeboat times everything by: the wall clock corrected to the store's (on
/// PostgreSQL, the database's: see `Store::clock_offset_ms`), or a test's clock as it is.
pub(crate) struct StoreClock {
    base: Arc<dyn Clock>,
    store: Arc<dyn Store>,
}

impl StoreClock {
    pub(crate) fn new(base: Arc<dyn Clock>, store: Arc<dyn Store>) -> StoreClock {
        StoreClock { base, store }
    }
}

impl Clock for StoreClock {
    fn now(&self) -> Timestamp {
        let now = self.base.now();
        if self.base.is_wall_clock() {
            Timestamp(now.0.saturating_add(self.store.clock_offset_ms()))
        } else {
            now
        }
    }

    fn is_wall_clock(&self) -> bool {
        self.base.is_wall_clock()
    }
}
