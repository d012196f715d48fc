//! `GET /admin/cluster`: the servers on one store, the maintenance term, and how far the
//! event streams are behind the writes.

use serde::{Deserialize, Serialize};

/// The servers sharing this store, as the store sees them now.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ClusterBody {
    /// `sqlite` (one server) or `postgres` (any number).
    pub store: String,
    /// The id of the server that answered.
    pub node: String,
    /// The store's clock now (the database's, on PostgreSQL): leases are timed by it.
    pub now: String,
    /// Servers seen in the last 10 minutes, oldest first, the one that answered included.
    pub nodes: Vec<ClusterNode>,
    /// The maintenance term: which server runs cleanup (`null` on SQLite, where the one
    /// server always does).
    pub maintenance: Option<MaintenanceTermBody>,
    /// Events committed but not yet numbered, so not yet sent to event streams.
    pub unsequenced_events: u64,
    /// How long the oldest of those has waited, in ms (0 when there is none).
    pub event_lag_ms: u64,
}

/// One server.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ClusterNode {
    /// Its id, new at each start.
    pub id: String,
    /// Its Lifeboat version.
    pub version: String,
    /// When it started.
    pub started_at: String,
    /// Its last beat (every second while it runs).
    pub last_seen_at: String,
    /// Whether it beat in the last 3 seconds.
    pub alive: bool,
    /// How far its clock was ahead of the store's at its last beat, in ms (negative:
    /// behind). A server more than 1,000 ms off answers 503 on `/readyz`.
    pub clock_skew_ms: i64,
    /// Whether it holds the maintenance term now.
    pub maintenance: bool,
}

/// The maintenance lease.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MaintenanceTermBody {
    /// The server holding it.
    pub holder: String,
    /// One more each time the lease changes hands or lapses and is taken again.
    pub term: u64,
    /// When it lapses unless its holder renews it (each second).
    pub expires_at: String,
}
