-- Project tokens (SPEC §9 r2): a bearer token for a browser that acts only on one project
-- (its state, revisions, assets, its sessions' recovery and its events), with scopes and
-- an expiry. Only a hash of the secret is kept. The project need not exist yet: a page may
-- create it with PUT. Expired tokens are purged by cleanup.
CREATE TABLE project_tokens (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    project_id TEXT NOT NULL,
    secret_sha256 TEXT NOT NULL,
    -- Comma-separated: read, write.
    scopes TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    revoked_at INTEGER
);
CREATE INDEX project_tokens_expiry ON project_tokens (expires_at);
