-- Sessions, checkpoints, and the history tables behind /stats.
-- Every table carries the tenant, so that tenants need no schema change later.
-- Times are milliseconds since the Unix epoch (UTC).

CREATE TABLE sessions (
    pk INTEGER PRIMARY KEY,
    tenant TEXT NOT NULL,
    id TEXT NOT NULL,
    project_id TEXT,
    kind TEXT NOT NULL,
    title TEXT,
    status TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    max_attempts INTEGER NOT NULL,
    heartbeat_timeout_ms INTEGER NOT NULL,
    stall_timeout_ms INTEGER,
    checkpoint_retention INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    last_heartbeat_at INTEGER,
    lease_expires_at INTEGER,
    lease_ran_out_while_down INTEGER NOT NULL DEFAULT 0,
    progress_percent REAL,
    progress_stage TEXT,
    progress_completed_units INTEGER,
    progress_total_units INTEGER,
    progress_changed_at INTEGER NOT NULL,
    stalled INTEGER NOT NULL DEFAULT 0,
    metrics TEXT,
    metadata TEXT,
    error TEXT,
    crash_type TEXT,
    crash_detected_at INTEGER,
    crash_attempt INTEGER,
    crash_lease_expires_at INTEGER,
    crash_work_lost_ms INTEGER,
    latest_seq INTEGER,
    latest_kind TEXT,
    latest_stage TEXT,
    latest_created_at INTEGER,
    last_seq INTEGER NOT NULL DEFAULT 0,
    completed_at INTEGER,
    UNIQUE (tenant, id)
);

-- Non-final sessions, newest first: /recovery and the status filters scan only these.
CREATE INDEX sessions_open ON sessions (tenant, pk)
    WHERE status IN ('active', 'paused', 'incomplete', 'failed');
-- The sweeper's question: which active leases have run out.
CREATE INDEX sessions_lease ON sessions (lease_expires_at) WHERE status = 'active';

CREATE TABLE checkpoints (
    session_pk INTEGER NOT NULL REFERENCES sessions (pk) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    kind TEXT NOT NULL,
    stage TEXT,
    position TEXT,
    completed_units INTEGER,
    total_units INTEGER,
    data TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    assets TEXT NOT NULL DEFAULT '[]',
    created_at INTEGER NOT NULL,
    -- Set by a verification that found the bytes no longer match: never offered again.
    quarantined INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (session_pk, seq)
);

CREATE TABLE crashes (
    tenant TEXT NOT NULL,
    session_pk INTEGER NOT NULL REFERENCES sessions (pk) ON DELETE CASCADE,
    attempt INTEGER NOT NULL,
    type TEXT NOT NULL,
    detected_at INTEGER NOT NULL,
    lease_expires_at INTEGER,
    work_lost_ms INTEGER NOT NULL,
    PRIMARY KEY (session_pk, attempt)
);
CREATE INDEX crashes_tenant ON crashes (tenant);

CREATE TABLE recoveries (
    tenant TEXT NOT NULL,
    session_pk INTEGER NOT NULL REFERENCES sessions (pk) ON DELETE CASCADE,
    -- The attempt the recovery started.
    attempt INTEGER NOT NULL,
    option TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    -- NULL while pending, then 'succeeded' or 'failed'.
    outcome TEXT,
    PRIMARY KEY (session_pk, attempt)
);
CREATE INDEX recoveries_tenant ON recoveries (tenant);
