//! The live event feed: one task reads each commit's new events from the log once and
//! broadcasts them in memory to every subscriber, so a hundred subscribers cost one
//! query per commit, not a hundred. A subscriber that falls behind the broadcast buffer
//! reads the log itself (and never holds up anyone).

use std::sync::{Arc, OnceLock, Weak};

use lifeboat_core::TenantId;
use lifeboat_store::{Event, EventFilter, Result};
use tokio::sync::broadcast;

use crate::{Inner, Lifeboat};

/// Commits buffered per subscriber before it must catch up from the log.
pub(crate) const FEED_CAPACITY: usize = 4_096;
/// Events read from the log per query.
const BATCH: u32 = 1_000;

/// An event on the live feed. `rendered` holds its wire form, made by the first
/// subscriber that sends it and shared by all the others.
#[derive(Debug)]
pub struct FeedEvent {
    /// The event.
    pub event: Event,
    /// The event as an event stream sends it.
    pub rendered: OnceLock<String>,
}

/// The events of one commit (at most a log read's worth), in `seq` order: a subscriber
/// wakes once per commit, not once per event.
pub type FeedBatch = Arc<[FeedEvent]>;

impl Lifeboat {
    /// A receiver of every tenant's events as they commit, a batch per commit (filter by
    /// tenant yourself). On `Lagged`, read the missed events with [`Lifeboat::events`].
    pub fn feed(&self) -> broadcast::Receiver<FeedBatch> {
        self.inner.feed.subscribe()
    }

    /// A tenant's events after `after`, oldest first, at most `limit`.
    pub async fn events(
        &self,
        tenant: &TenantId,
        after: i64,
        filter: &EventFilter,
        limit: u32,
    ) -> Result<Vec<Event>> {
        let (tenant, filter) = (tenant.clone(), filter.clone());
        self.read(move |tx| tx.events(Some((&tenant, &filter)), after, limit))
            .await
    }

    /// The newest event's position: where a stream without `Last-Event-ID` starts.
    pub async fn newest_event(&self) -> Result<i64> {
        self.read(|tx| tx.newest_event()).await
    }

    /// Every tenant's events after `after`, oldest first, at most `limit`.
    async fn all_events(&self, after: i64, limit: u32) -> Result<Vec<Event>> {
        self.read(move |tx| tx.events(None, after, limit)).await
    }
}

pub(crate) async fn feed_loop(inner: Weak<Inner>, sender: broadcast::Sender<FeedBatch>) {
    let (mut commits, mut after) = match inner.upgrade() {
        Some(inner) => {
            let lifeboat = Lifeboat { inner };
            let newest = match lifeboat.newest_event().await {
                Ok(newest) => newest,
                Err(error) => {
                    tracing::warn!(%error, "the event feed cannot read the log; it starts empty");
                    0
                }
            };
            (lifeboat.subscribe(), newest)
        }
        None => return,
    };
    loop {
        {
            let Some(inner) = inner.upgrade() else {
                return;
            };
            let lifeboat = Lifeboat { inner };
            commits.borrow_and_update();
            loop {
                match lifeboat.all_events(after, BATCH).await {
                    Ok(events) => {
                        let full = events.len() == BATCH as usize;
                        if let Some(last) = events.last() {
                            after = last.seq;
                            let batch: FeedBatch = events
                                .into_iter()
                                .map(|event| FeedEvent {
                                    event,
                                    rendered: OnceLock::new(),
                                })
                                .collect();
                            // No receivers is fine: nobody is listening.
                            let _ = sender.send(batch);
                        }
                        if !full {
                            break;
                        }
                    }
                    Err(error) => {
                        tracing::warn!(%error, "the event feed cannot read the log");
                        break;
                    }
                }
            }
        }
        if commits.changed().await.is_err() {
            return;
        }
    }
}
