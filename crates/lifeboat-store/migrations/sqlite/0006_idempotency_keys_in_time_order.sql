-- Idempotency keys are stored in the order of the key, not of the route: keys made the
-- recommended way (UUIDv7, as the SDK does) are time-ordered, so each new response is
-- appended at the end of one b-tree instead of dirtying a page per route (one per
-- session) in every commit. WITHOUT ROWID: the key is the row, one b-tree, not two.
CREATE TABLE idempotency_keys_new (
    tenant TEXT NOT NULL,
    route TEXT NOT NULL,
    key TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    status INTEGER NOT NULL,
    headers TEXT NOT NULL,
    body BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (tenant, key, route)
) WITHOUT ROWID;
INSERT INTO idempotency_keys_new
    SELECT tenant, route, key, fingerprint, status, headers, body, created_at
    FROM idempotency_keys;
DROP TABLE idempotency_keys;
ALTER TABLE idempotency_keys_new RENAME TO idempotency_keys;
