-- Idempotent writes store their outcome (the operation's result, as JSON the engine
-- writes and reads), not an HTTP response: the server renders the outcome the same way
-- the first time and on every replay. Same key order as migration 0006.
--
-- Responses stored by earlier releases (at most the last 24 hours) are not carried over:
-- a retry with such a key after the upgrade is done again. Upgrade while no client is
-- retrying, or accept that window.
CREATE TABLE outcomes (
    tenant TEXT NOT NULL,
    route TEXT NOT NULL,
    key TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    outcome BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (tenant, key, route)
) WITHOUT ROWID;
DROP TABLE idempotency_keys;
