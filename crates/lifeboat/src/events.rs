//! The live event feed: one task reads each commit's new events from the log once and
//! hands each subscriber only the events it wants, so a hundred subscribers cost one
//! query per commit, not a hundred, and a subscriber wakes only for a commit that holds
//! one of its events (subscribers are indexed by tenant, session and project). With no
//! subscriber, nothing is read. A subscriber that falls behind its buffer is dropped from
//! the feed and reads the log itself (it never holds up anyone).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use lifeboat_core::TenantId;
use lifeboat_store::{Event, EventFilter, Result};
use tokio::sync::mpsc;

use crate::{Inner, Lifeboat};

/// Events buffered per subscriber before it must catch up from the log.
const SUBSCRIBER_CAPACITY: usize = 4_096;
/// Events read from the log per query.
const BATCH: u32 = 1_000;
/// The pause after a log read before the next, while anyone listens.
const FEED_GATHER: std::time::Duration = std::time::Duration::from_millis(5);

/// An event on the live feed. `rendered` holds its wire form, made by the first
/// subscriber that sends it and shared by all the others.
#[derive(Debug)]
pub struct FeedEvent {
    /// The event.
    pub event: Event,
    /// The event as an event stream sends it.
    pub rendered: OnceLock<String>,
}

/// The events of one commit a subscriber wants, in `seq` order.
pub type FeedBatch = Vec<Arc<FeedEvent>>;

/// What a subscriber is indexed by: the most specific part of its filter.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Tenant(TenantId),
    Session(TenantId, String),
    Project(TenantId, String),
}

impl Key {
    fn of(tenant: &TenantId, filter: &EventFilter) -> Key {
        match (&filter.session_id, &filter.project_id) {
            (Some(session), _) => Key::Session(tenant.clone(), session.to_string()),
            (None, Some(project)) => Key::Project(tenant.clone(), project.to_string()),
            (None, None) => Key::Tenant(tenant.clone()),
        }
    }
}

struct Subscriber {
    key: Key,
    filter: EventFilter,
    after: i64,
    sender: mpsc::UnboundedSender<FeedBatch>,
    /// Events sent and not yet received.
    pending: Arc<AtomicUsize>,
}

/// Who listens to what.
#[derive(Default)]
pub(crate) struct Hub(Mutex<Registry>);

#[derive(Default)]
struct Registry {
    next_id: u64,
    subscribers: HashMap<u64, Subscriber>,
    by_key: HashMap<Key, Vec<u64>>,
}

impl Registry {
    fn remove(&mut self, id: u64) {
        let Some(subscriber) = self.subscribers.remove(&id) else {
            return;
        };
        if let Some(ids) = self.by_key.get_mut(&subscriber.key) {
            ids.retain(|other| *other != id);
            if ids.is_empty() {
                self.by_key.remove(&subscriber.key);
            }
        }
    }
}

impl Hub {
    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn add(
        &self,
        tenant: &TenantId,
        filter: &EventFilter,
        after: i64,
    ) -> (u64, mpsc::UnboundedReceiver<FeedBatch>, Arc<AtomicUsize>) {
        let (sender, receiver) = mpsc::unbounded_channel();
        let pending = Arc::new(AtomicUsize::new(0));
        let key = Key::of(tenant, filter);
        let mut registry = self.lock();
        let id = registry.next_id;
        registry.next_id += 1;
        registry.by_key.entry(key.clone()).or_default().push(id);
        let subscriber = Subscriber {
            key,
            filter: filter.clone(),
            after,
            sender,
            pending: Arc::clone(&pending),
        };
        registry.subscribers.insert(id, subscriber);
        (id, receiver, pending)
    }

    /// The oldest position a subscriber needs events after, if anyone listens.
    fn oldest_after(&self) -> Option<i64> {
        self.lock().subscribers.values().map(|s| s.after).min()
    }

    /// Hands each subscriber the events of `batch` it wants; one that cannot keep up is
    /// dropped (its stream then reads the log).
    fn deliver(&self, batch: &[Arc<FeedEvent>]) {
        let mut registry = self.lock();
        let mut wanted: HashMap<u64, FeedBatch> = HashMap::new();
        for fed in batch {
            let event = &fed.event;
            let keys = [
                Some(Key::Tenant(event.tenant.clone())),
                event
                    .session_id
                    .as_ref()
                    .map(|s| Key::Session(event.tenant.clone(), s.clone())),
                event
                    .project_id
                    .as_ref()
                    .map(|p| Key::Project(event.tenant.clone(), p.clone())),
            ];
            for key in keys.iter().flatten() {
                for id in registry.by_key.get(key).into_iter().flatten() {
                    let wants = registry
                        .subscribers
                        .get(id)
                        .is_some_and(|s| s.filter.matches(event));
                    if wants {
                        wanted.entry(*id).or_default().push(Arc::clone(fed));
                    }
                }
            }
        }
        for (id, events) in wanted {
            let delivered = registry.subscribers.get(&id).is_some_and(|s| {
                let count = events.len();
                let room = s.pending.load(Ordering::Acquire) + count <= SUBSCRIBER_CAPACITY;
                room && {
                    s.pending.fetch_add(count, Ordering::AcqRel);
                    s.sender.send(events).is_ok()
                }
            });
            if !delivered {
                registry.remove(id);
            }
        }
    }
}

/// The feed dropped a subscriber that could not keep up (or stopped): read the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FellBehind;

/// Live deliveries to one subscriber; it leaves the feed when dropped.
pub struct Subscription {
    id: u64,
    receiver: mpsc::UnboundedReceiver<FeedBatch>,
    pending: Arc<AtomicUsize>,
    hub: Weak<Inner>,
}

impl Subscription {
    /// The events of the next commit this subscriber wants. `None` when it fell behind
    /// (or the feed stopped): read the log from where it stands, with a new subscription
    /// taken first so that nothing committed meanwhile is missed.
    pub async fn next(&mut self) -> Option<FeedBatch> {
        let batch = self.receiver.recv().await?;
        self.pending.fetch_sub(batch.len(), Ordering::AcqRel);
        Some(batch)
    }

    /// The next batch if one is waiting: `Ok(None)` when none is, `Err(FellBehind)` when
    /// the subscriber fell behind (see [`Subscription::next`]).
    pub fn try_next(&mut self) -> Result<Option<FeedBatch>, FellBehind> {
        match self.receiver.try_recv() {
            Ok(batch) => {
                self.pending.fetch_sub(batch.len(), Ordering::AcqRel);
                Ok(Some(batch))
            }
            Err(mpsc::error::TryRecvError::Empty) => Ok(None),
            Err(mpsc::error::TryRecvError::Disconnected) => Err(FellBehind),
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Some(inner) = self.hub.upgrade() {
            inner.hub.lock().remove(self.id);
        }
    }
}

impl Lifeboat {
    /// Subscribes to `tenant`'s events that pass `filter` as they commit, after position
    /// `after`: one batch per commit that holds any. Take it before reading the log with
    /// [`Lifeboat::events`], so that nothing committed in between is missed (a batch may
    /// repeat what the log read showed: skip positions already seen).
    pub fn subscribe_events(
        &self,
        tenant: &TenantId,
        filter: &EventFilter,
        after: i64,
    ) -> Subscription {
        let (id, receiver, pending) = self.inner.hub.add(tenant, filter, after);
        Subscription {
            id,
            receiver,
            pending,
            hub: Arc::downgrade(&self.inner),
        }
    }

    /// A tenant's events after `after`, oldest first, at most `limit`: the log as numbered
    /// so far (call [`Lifeboat::number_events`] first to find every event committed before).
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

    /// The newest event's position, as numbered so far: where a stream without
    /// `Last-Event-ID` starts.
    pub async fn newest_event(&self) -> Result<i64> {
        self.read(|tx| tx.newest_event()).await
    }

    /// Waits until every event committed before this call is numbered
    /// (`Store::number_events`), so that a reader of the log who was told of a write finds
    /// its events: once per read of the log, before its first page. Should that fail, the
    /// read finds the events numbered so far; the store numbers the rest when it can.
    pub async fn number_events(&self) {
        if let Err(error) = self.inner.store.number_events().await {
            tracing::warn!(%error, "cannot number new events yet; reading those numbered");
        }
    }

    /// Every tenant's events after `after`, oldest first, at most `limit`.
    async fn all_events(&self, after: i64, limit: u32) -> Result<Vec<Event>> {
        self.read(move |tx| tx.events(None, after, limit)).await
    }
}

/// Forwards committed events to subscribers, starting after position `after` (the log's
/// newest when the engine started, read before anyone could subscribe).
pub(crate) async fn feed_loop(inner: Weak<Inner>, mut after: i64) {
    let mut idle = false;
    let mut commits = match inner.upgrade() {
        Some(inner) => (Lifeboat { inner }).subscribe(),
        None => return,
    };
    loop {
        {
            let Some(inner) = inner.upgrade() else {
                return;
            };
            commits.borrow_and_update();
            // Nobody listens: nothing to read. A subscriber needs only what came after the
            // position it subscribed at (it reads the log up to there itself).
            if let Some(oldest) = inner.hub.oldest_after() {
                let lifeboat = Lifeboat { inner };
                if idle {
                    // Back from reading nothing: skip what came before the oldest position
                    // a subscriber asked for, never past the log's newest event (a stream
                    // may name a position the log has not reached).
                    if let Ok(newest) = lifeboat.newest_event().await {
                        after = after.max(oldest.min(newest));
                    }
                    idle = false;
                }
                after = forward(&lifeboat, after).await;
                // One log read covers the commits of the next few milliseconds, not one
                // read per commit (streams gather 20 ms of events per write anyway).
                drop(lifeboat);
                tokio::time::sleep(FEED_GATHER).await;
            } else {
                idle = true;
            }
        }
        if commits.changed().await.is_err() {
            return;
        }
    }
}

/// Reads the events after `after` from the log and delivers them; answers where it
/// stopped.
async fn forward(lifeboat: &Lifeboat, mut after: i64) -> i64 {
    loop {
        match lifeboat.all_events(after, BATCH).await {
            Ok(events) => {
                let full = events.len() == BATCH as usize;
                if let Some(last) = events.last() {
                    after = last.seq;
                    let batch: Vec<Arc<FeedEvent>> = events
                        .into_iter()
                        .map(|event| {
                            Arc::new(FeedEvent {
                                event,
                                rendered: OnceLock::new(),
                            })
                        })
                        .collect();
                    lifeboat.inner.hub.deliver(&batch);
                }
                if !full {
                    return after;
                }
            }
            Err(error) => {
                tracing::warn!(%error, "the event feed cannot read the log");
                return after;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use lifeboat_core::{CheckpointKind, Id, NewCheckpoint, NewSession, TenantId};
    use lifeboat_store::EventFilter;

    use super::SUBSCRIBER_CAPACITY;
    use crate::{Config, Lifeboat};

    async fn open(dir: &std::path::Path) -> Lifeboat {
        let mut config = Config::new(dir);
        config.cleanup_interval = None;
        Lifeboat::open(config).await.expect("open")
    }

    async fn session(lifeboat: &Lifeboat, tenant: &TenantId, id: &str) -> Id {
        let new = NewSession {
            id: Some(Id::parse(id).expect("id")),
            kind: "k".to_owned(),
            heartbeat_timeout_ms: Some(3_600_000),
            ..NewSession::default()
        };
        lifeboat
            .create_session(tenant, new)
            .await
            .expect("create")
            .id
    }

    async fn checkpoint(lifeboat: &Lifeboat, tenant: &TenantId, id: &Id) {
        let new = NewCheckpoint::new(CheckpointKind::Stage);
        lifeboat
            .checkpoint(tenant, id, 1, new)
            .await
            .expect("checkpoint");
    }

    /// Each subscriber gets exactly the events of its tenant and filter, in order.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn each_subscriber_gets_only_what_it_asked_for() {
        let dir = tempfile::tempdir().expect("dir");
        let lifeboat = open(dir.path()).await;
        let (ours, theirs) = (TenantId::default(), TenantId::new("other"));
        let after = lifeboat.newest_event().await.expect("newest");
        let only_a = EventFilter {
            session_id: Some(Id::parse("a").expect("id")),
            project_id: None,
        };
        let mut one = lifeboat.subscribe_events(&ours, &only_a, after);
        let mut all = lifeboat.subscribe_events(&ours, &EventFilter::default(), after);
        let a = session(&lifeboat, &ours, "a").await;
        let b = session(&lifeboat, &ours, "b").await;
        let elsewhere = session(&lifeboat, &theirs, "a").await;
        checkpoint(&lifeboat, &ours, &a).await;
        checkpoint(&lifeboat, &ours, &b).await;
        checkpoint(&lifeboat, &theirs, &elsewhere).await;
        checkpoint(&lifeboat, &ours, &a).await;
        let mut seen_one = Vec::new();
        while seen_one.len() < 3 {
            let batch = tokio::time::timeout(Duration::from_secs(5), one.next())
                .await
                .expect("in time")
                .expect("open");
            seen_one.extend(
                batch
                    .iter()
                    .map(|f| (f.event.kind.clone(), f.event.tenant.clone())),
            );
        }
        assert!(seen_one.iter().all(|(_, t)| *t == ours));
        let mut seen_all = 0;
        while seen_all < 5 {
            let batch = tokio::time::timeout(Duration::from_secs(5), all.next())
                .await
                .expect("in time")
                .expect("open");
            assert!(batch.iter().all(|f| f.event.tenant == ours));
            assert!(batch.windows(2).all(|w| w[0].event.seq < w[1].event.seq));
            seen_all += batch.len();
        }
        assert_eq!(seen_all, 5, "two sessions created, three checkpoints");
        let nothing_more = tokio::time::timeout(Duration::from_millis(300), one.next()).await;
        assert!(
            nothing_more.is_err(),
            "nothing of another session or tenant"
        );
    }

    /// A subscriber that never reads is dropped from the feed once its buffer is full: it
    /// gets what was buffered, then `None` (its cue to read the log), and never slows the
    /// writes; what it missed is in the log.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_subscriber_that_falls_behind_is_told_so() {
        let dir = tempfile::tempdir().expect("dir");
        let lifeboat = open(dir.path()).await;
        let tenant = TenantId::default();
        let s = session(&lifeboat, &tenant, "s").await;
        let after = lifeboat.newest_event().await.expect("newest");
        let mut slow = lifeboat.subscribe_events(&tenant, &EventFilter::default(), after);
        let written = SUBSCRIBER_CAPACITY + 200;
        for _ in 0..written {
            checkpoint(&lifeboat, &tenant, &s).await;
        }
        let mut received = 0;
        let mut last = after;
        loop {
            match tokio::time::timeout(Duration::from_secs(5), slow.next()).await {
                Ok(Some(batch)) => {
                    for fed in &batch {
                        assert!(fed.event.seq > last, "in order, no repeats");
                        last = fed.event.seq;
                    }
                    received += batch.len();
                }
                Ok(None) => break,
                Err(_) => panic!("a subscriber that fell behind is told so"),
            }
        }
        assert!(
            received > 0 && received <= SUBSCRIBER_CAPACITY,
            "{received} buffered"
        );
        let missed = lifeboat
            .events(&tenant, last, &EventFilter::default(), 10_000)
            .await
            .expect("the log has the rest");
        assert_eq!(received + missed.len(), written);
    }

    /// A stream that names a position past the log's newest event does not stop the feed
    /// for anyone: a later subscriber still gets what is written.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_position_past_the_log_stops_nobody() {
        let dir = tempfile::tempdir().expect("dir");
        let lifeboat = open(dir.path()).await;
        let tenant = TenantId::default();
        let s = session(&lifeboat, &tenant, "s").await;
        let bogus = lifeboat.subscribe_events(&tenant, &EventFilter::default(), i64::MAX);
        checkpoint(&lifeboat, &tenant, &s).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(bogus);
        let after = lifeboat.newest_event().await.expect("newest");
        let mut fine = lifeboat.subscribe_events(&tenant, &EventFilter::default(), after);
        checkpoint(&lifeboat, &tenant, &s).await;
        let batch = tokio::time::timeout(Duration::from_secs(5), fine.next())
            .await
            .expect("the event arrives")
            .expect("open");
        assert_eq!(
            batch.iter().map(|f| f.event.seq).collect::<Vec<_>>(),
            [after + 1]
        );
    }
}
