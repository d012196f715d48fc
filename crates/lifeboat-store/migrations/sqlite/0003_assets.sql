-- Assets of sessions and projects. The bytes live under <data-dir>/blobs (see
-- docs/durability.md); a record is written only after its bytes are durable.

CREATE TABLE assets (
    pk INTEGER PRIMARY KEY,
    tenant TEXT NOT NULL,
    owner_kind TEXT NOT NULL,
    owner_id TEXT NOT NULL,
    name TEXT NOT NULL,
    -- 'blob' (content-addressed by sha256), 'appendable' (location = its file key),
    -- 'external' (location = the resolved host path).
    storage TEXT NOT NULL,
    location TEXT,
    size INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    kind TEXT,
    status TEXT NOT NULL,
    verified_at INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    UNIQUE (tenant, owner_kind, owner_id, name)
);
