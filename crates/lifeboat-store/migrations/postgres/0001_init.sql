-- Lifeboat's schema on PostgreSQL: the SQLite schema after its migration 0009, with
-- PostgreSQL's types. Times are milliseconds since the Unix epoch (BIGINT), JSON is TEXT
-- (hashed and returned byte for byte), flags are BIGINT 0/1 as in SQLite. Keys and names
-- compare byte for byte (COLLATE "C"), as SQLite's do, so lists page in the same order
-- whatever the database's locale. There are no
-- gauge counters: the gauges are counted from the rows (one hot counter row would make
-- every session write of every node wait on it).

CREATE TABLE sessions (
    pk BIGSERIAL PRIMARY KEY,
    tenant TEXT COLLATE "C" NOT NULL,
    id TEXT COLLATE "C" NOT NULL,
    project_id TEXT COLLATE "C",
    kind TEXT NOT NULL,
    title TEXT,
    status TEXT NOT NULL,
    attempt BIGINT NOT NULL,
    max_attempts BIGINT NOT NULL,
    heartbeat_timeout_ms BIGINT NOT NULL,
    stall_timeout_ms BIGINT,
    checkpoint_retention BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    last_heartbeat_at BIGINT,
    lease_expires_at BIGINT,
    lease_ran_out_while_down BIGINT NOT NULL DEFAULT 0,
    progress_percent DOUBLE PRECISION,
    progress_stage TEXT,
    progress_completed_units BIGINT,
    progress_total_units BIGINT,
    progress_changed_at BIGINT NOT NULL,
    stalled BIGINT NOT NULL DEFAULT 0,
    metrics TEXT,
    metadata TEXT,
    error TEXT,
    crash_type TEXT,
    crash_detected_at BIGINT,
    crash_attempt BIGINT,
    crash_lease_expires_at BIGINT,
    crash_work_lost_ms BIGINT,
    latest_seq BIGINT,
    latest_kind TEXT,
    latest_stage TEXT,
    latest_created_at BIGINT,
    last_seq BIGINT NOT NULL DEFAULT 0,
    completed_at BIGINT,
    UNIQUE (tenant, id)
) WITH (fillfactor = 80);
CREATE INDEX sessions_lease ON sessions (lease_expires_at) WHERE status = 'active';
CREATE INDEX sessions_open ON sessions (tenant, pk)
    WHERE status <> 'completed' AND status <> 'cancelled';
CREATE INDEX sessions_tenant ON sessions (tenant, pk);

CREATE TABLE checkpoints (
    session_pk BIGINT NOT NULL REFERENCES sessions (pk) ON DELETE CASCADE,
    seq BIGINT NOT NULL,
    attempt BIGINT NOT NULL,
    kind TEXT NOT NULL,
    stage TEXT,
    position TEXT,
    completed_units BIGINT,
    total_units BIGINT,
    data TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    assets TEXT NOT NULL DEFAULT '[]',
    created_at BIGINT NOT NULL,
    quarantined BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (session_pk, seq)
);

CREATE TABLE crashes (
    tenant TEXT COLLATE "C" NOT NULL,
    session_pk BIGINT NOT NULL REFERENCES sessions (pk) ON DELETE CASCADE,
    attempt BIGINT NOT NULL,
    type TEXT NOT NULL,
    detected_at BIGINT NOT NULL,
    lease_expires_at BIGINT,
    work_lost_ms BIGINT NOT NULL,
    PRIMARY KEY (session_pk, attempt)
);
CREATE INDEX crashes_tenant ON crashes (tenant);

CREATE TABLE recoveries (
    tenant TEXT COLLATE "C" NOT NULL,
    session_pk BIGINT NOT NULL REFERENCES sessions (pk) ON DELETE CASCADE,
    attempt BIGINT NOT NULL,
    option TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    outcome TEXT,
    PRIMARY KEY (session_pk, attempt)
);
CREATE INDEX recoveries_tenant ON recoveries (tenant);

CREATE TABLE projects (
    pk BIGSERIAL PRIMARY KEY,
    tenant TEXT COLLATE "C" NOT NULL,
    id TEXT COLLATE "C" NOT NULL,
    title TEXT,
    schema_name TEXT,
    schema_version TEXT,
    revision BIGINT NOT NULL,
    state TEXT NOT NULL,
    size_bytes BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    deleted_at BIGINT,
    chain_deltas BIGINT NOT NULL DEFAULT 0,
    chain_bytes BIGINT NOT NULL DEFAULT 0,
    UNIQUE (tenant, id)
);

CREATE TABLE revisions (
    project_pk BIGINT NOT NULL REFERENCES projects (pk) ON DELETE CASCADE,
    revision BIGINT NOT NULL,
    kind TEXT NOT NULL,
    body TEXT NOT NULL,
    size_bytes BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (project_pk, revision)
);
CREATE INDEX revisions_snapshots ON revisions (project_pk, revision) WHERE kind = 'snapshot';
CREATE INDEX revisions_age ON revisions (project_pk, created_at);

CREATE TABLE schemas (
    tenant TEXT COLLATE "C" NOT NULL,
    name TEXT COLLATE "C" NOT NULL,
    version TEXT COLLATE "C" NOT NULL,
    body TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (tenant, name, version)
);

-- An event is inserted with `seq` NULL, by its write's transaction; a sequencer (any
-- server, after its commits, one at a time under an advisory lock) gives committed events
-- their `seq` in `id` order. Readers read `seq > n` only: `seq` is gap-free and increases
-- in the order events became visible, so a reader that has seen n never later finds a
-- smaller one, and no write waits for another's commit to record its event.
CREATE TABLE events (
    id BIGSERIAL PRIMARY KEY,
    seq BIGINT UNIQUE,
    tenant TEXT COLLATE "C" NOT NULL,
    type TEXT NOT NULL,
    session_id TEXT COLLATE "C",
    project_id TEXT COLLATE "C",
    data TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX events_unsequenced ON events (id) WHERE seq IS NULL;
CREATE INDEX events_tenant ON events (tenant, seq);

CREATE TABLE assets (
    pk BIGSERIAL PRIMARY KEY,
    tenant TEXT COLLATE "C" NOT NULL,
    owner_kind TEXT COLLATE "C" NOT NULL,
    owner_id TEXT COLLATE "C" NOT NULL,
    name TEXT COLLATE "C" NOT NULL,
    storage TEXT COLLATE "C" NOT NULL,
    location TEXT,
    size BIGINT NOT NULL,
    sha256 TEXT NOT NULL,
    kind TEXT,
    status TEXT NOT NULL,
    verified_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    UNIQUE (tenant, owner_kind, owner_id, name)
);
CREATE INDEX assets_blob ON assets (sha256) WHERE storage = 'blob';
CREATE INDEX assets_location ON assets (location) WHERE storage <> 'blob';

CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    tenant TEXT COLLATE "C" NOT NULL,
    secret_sha256 TEXT NOT NULL,
    scopes TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);
CREATE INDEX api_keys_tenant ON api_keys (tenant);

CREATE TABLE session_tokens (
    id TEXT PRIMARY KEY,
    tenant TEXT COLLATE "C" NOT NULL,
    session_id TEXT COLLATE "C" NOT NULL,
    secret_sha256 TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    session_pk BIGINT REFERENCES sessions (pk) ON DELETE CASCADE,
    attempt BIGINT
);
CREATE INDEX session_tokens_session ON session_tokens (session_pk);

CREATE TABLE audit (
    seq BIGSERIAL PRIMARY KEY,
    tenant TEXT COLLATE "C" NOT NULL,
    at BIGINT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    resource TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX audit_tenant ON audit (tenant, seq);

CREATE TABLE pinned_files (
    session_pk BIGINT NOT NULL,
    seq BIGINT NOT NULL,
    storage TEXT COLLATE "C" NOT NULL,
    key TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (session_pk, seq, storage, key)
);
CREATE INDEX pinned_files_key ON pinned_files (storage, key);

CREATE TABLE damaged_files (
    storage TEXT COLLATE "C" NOT NULL,
    key TEXT COLLATE "C" NOT NULL,
    size BIGINT NOT NULL,
    found_at BIGINT NOT NULL,
    PRIMARY KEY (storage, key, size)
);

CREATE TABLE outcomes (
    tenant TEXT COLLATE "C" NOT NULL,
    route TEXT COLLATE "C" NOT NULL,
    key TEXT COLLATE "C" NOT NULL,
    fingerprint TEXT NOT NULL,
    outcome BYTEA NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (tenant, key, route)
);

CREATE TABLE project_tokens (
    id TEXT PRIMARY KEY,
    tenant TEXT COLLATE "C" NOT NULL,
    project_id TEXT COLLATE "C" NOT NULL,
    secret_sha256 TEXT NOT NULL,
    scopes TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    revoked_at BIGINT
);
CREATE INDEX project_tokens_expiry ON project_tokens (expires_at);
