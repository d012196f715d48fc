-- Projects with their revision history, schemas, idempotency keys and the event log.

-- The open-sessions index of 0001 tested `status IN (…)`: SQLite evaluates that with a
-- temporary b-tree on every write of a session row, the largest cost of a heartbeat.
-- The same set, written as inequalities (queries repeat these terms to use the index).
DROP INDEX sessions_open;
CREATE INDEX sessions_open ON sessions (tenant, pk)
    WHERE status <> 'completed' AND status <> 'cancelled';

CREATE TABLE projects (
    pk INTEGER PRIMARY KEY,
    tenant TEXT NOT NULL,
    id TEXT NOT NULL,
    title TEXT,
    schema_name TEXT,
    schema_version TEXT,
    revision INTEGER NOT NULL,
    -- The current state, serialized; older revisions are rebuilt from `revisions`.
    state TEXT NOT NULL,
    size_bytes INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    deleted_at INTEGER,
    -- Deltas stored since the newest snapshot, and their bytes: when to snapshot next.
    chain_deltas INTEGER NOT NULL DEFAULT 0,
    chain_bytes INTEGER NOT NULL DEFAULT 0,
    UNIQUE (tenant, id)
);

-- One row per revision: a full snapshot, or a delta from the revision before
-- ('merge': RFC 7396 merge patch; 'patch': RFC 6902 JSON Patch).
CREATE TABLE revisions (
    project_pk INTEGER NOT NULL REFERENCES projects (pk) ON DELETE CASCADE,
    revision INTEGER NOT NULL,
    kind TEXT NOT NULL,
    body TEXT NOT NULL,
    size_bytes INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (project_pk, revision)
);
-- Rebuilding revision N starts at the newest snapshot at or before N.
CREATE INDEX revisions_snapshots ON revisions (project_pk, revision) WHERE kind = 'snapshot';
-- Retention's question: the oldest revision younger than the age limit.
CREATE INDEX revisions_age ON revisions (project_pk, created_at);

CREATE TABLE schemas (
    tenant TEXT NOT NULL,
    name TEXT NOT NULL,
    version TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (tenant, name, version)
);

-- A write's response, stored in the write's own transaction; remembered for 24 hours.
CREATE TABLE idempotency_keys (
    tenant TEXT NOT NULL,
    route TEXT NOT NULL,
    key TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    status INTEGER NOT NULL,
    headers TEXT NOT NULL,
    body BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (tenant, route, key)
);

-- Domain events (project.saved, session.status, …) in commit order: the event stream
-- and its replay window. `seq` is the stream's `id:`.
CREATE TABLE events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant TEXT NOT NULL,
    type TEXT NOT NULL,
    session_id TEXT,
    project_id TEXT,
    data TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX events_tenant ON events (tenant, seq);
