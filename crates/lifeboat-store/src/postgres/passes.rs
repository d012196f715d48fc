//! Coalesced sequencer passes: the store's sequencer task (after writes recorded events)
//! and readers of the event log ask for a pass, and one pass serves every caller that
//! asked before it started.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::Result;

/// Passes asked for, and how many of those asks the passes that ended well served.
#[derive(Default)]
pub(super) struct Passes {
    asked: AtomicU64,
    /// The asks counted when the last pass that ended well started (held while a pass
    /// runs, so passes run one at a time).
    served: tokio::sync::Mutex<u64>,
}

impl Passes {
    /// Runs `pass`, unless a pass that started after this call asked ended well meanwhile
    /// (then answers `None`): once this answers `Ok`, a pass that started after the call
    /// has ended.
    ///
    /// A pass counts as serving the callers that asked before it started only once it
    /// ended well: should the caller running it stop waiting (its request went away), or
    /// the pass fail, the callers it would have served run one of their own, rather than
    /// answer before the events they asked about have numbers.
    pub(super) async fn run<T, F>(&self, pass: impl FnOnce() -> F) -> Result<Option<T>>
    where
        F: Future<Output = Result<T>>,
    {
        let asked = self.asked.fetch_add(1, Ordering::SeqCst) + 1;
        let mut served = self.served.lock().await;
        if *served >= asked {
            return Ok(None);
        }
        let covers = self.asked.load(Ordering::SeqCst);
        let done = pass().await?;
        *served = covers;
        Ok(Some(done))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    use tokio::sync::Semaphore;
    use tokio::task::JoinHandle;

    use super::Passes;
    use crate::{Error, Result};

    /// Passes that wait for a permit each, counted as they start; the `fail`th fails.
    struct Harness {
        passes: Arc<Passes>,
        gate: Arc<Semaphore>,
        started: Arc<AtomicU64>,
        fail: u64,
    }

    impl Harness {
        fn new(fail: u64) -> Harness {
            Harness {
                passes: Arc::new(Passes::default()),
                gate: Arc::new(Semaphore::new(0)),
                started: Arc::new(AtomicU64::new(0)),
                fail,
            }
        }

        fn call(&self) -> JoinHandle<Result<Option<u64>>> {
            let (passes, gate, started, fail) = (
                self.passes.clone(),
                self.gate.clone(),
                self.started.clone(),
                self.fail,
            );
            tokio::spawn(async move {
                passes
                    .run(|| async move {
                        let number = started.fetch_add(1, Ordering::SeqCst) + 1;
                        gate.acquire()
                            .await
                            .map_err(|e| Error::Internal(e.to_string()))?
                            .forget();
                        if number == fail {
                            return Err(Error::Unavailable("the pass failed".to_owned()));
                        }
                        Ok(number)
                    })
                    .await
            })
        }

        /// Lets the spawned callers run until `passes` passes have started.
        async fn until_started(&self, passes: u64) {
            while self.started.load(Ordering::SeqCst) < passes {
                tokio::task::yield_now().await;
            }
        }
    }

    async fn settle() {
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn one_pass_serves_every_caller_that_asked_before_it_started() {
        let harness = Harness::new(0);
        let first = harness.call();
        harness.until_started(1).await;
        let waiting: Vec<_> = (0..3).map(|_| harness.call()).collect();
        settle().await;
        harness.gate.add_permits(10);
        assert_eq!(first.await.ok().and_then(Result::ok), Some(Some(1)));
        let mut answers = Vec::new();
        for caller in waiting {
            answers.push(caller.await.ok().and_then(Result::ok));
        }
        // The first waiter ran the second pass, which served the other two.
        assert_eq!(answers, vec![Some(Some(2)), Some(None), Some(None)]);
        assert_eq!(harness.started.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_caller_that_stops_waiting_leaves_the_others_a_pass_of_their_own() {
        let harness = Harness::new(0);
        let first = harness.call();
        harness.until_started(1).await;
        let leaving = harness.call();
        settle().await;
        let staying = harness.call();
        settle().await;
        // The first pass ends; the leaving caller starts the next, which would serve the
        // staying one too, and goes away before it ends.
        harness.gate.add_permits(1);
        assert!(matches!(first.await, Ok(Ok(Some(1)))));
        harness.until_started(2).await;
        leaving.abort();
        settle().await;
        assert!(
            !staying.is_finished(),
            "a caller was answered before a pass that started after it asked had ended"
        );
        harness.gate.add_permits(10);
        assert!(matches!(staying.await, Ok(Ok(Some(3)))));
    }

    #[tokio::test]
    async fn a_failed_pass_serves_no_one() {
        let harness = Harness::new(2);
        let first = harness.call();
        harness.until_started(1).await;
        let failing = harness.call();
        settle().await;
        let after = harness.call();
        settle().await;
        harness.gate.add_permits(10);
        assert!(matches!(first.await, Ok(Ok(Some(1)))));
        assert!(matches!(failing.await, Ok(Err(Error::Unavailable(_)))));
        assert!(matches!(after.await, Ok(Ok(Some(3)))));
    }
}
