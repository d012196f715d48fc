-- API keys: each acts for one tenant with scopes. Only a hash of the secret is kept.

CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    -- SHA-256 (hex) of the secret part of `lb_<id>_<secret>`.
    secret_sha256 TEXT NOT NULL,
    -- Comma-separated: read, write, admin.
    scopes TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
);
CREATE INDEX api_keys_tenant ON api_keys (tenant);

-- Session tokens: a bearer token that may act only on one session (its heartbeats,
-- checkpoints, assets and completion), for a browser or worker that must not hold a
-- tenant key. Only a hash of the secret is kept; it dies when the session ends.
CREATE TABLE session_tokens (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    session_id TEXT NOT NULL,
    secret_sha256 TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
