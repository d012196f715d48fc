-- SPEC revision 2: session tokens bound to one session and attempt, checkpoints that pin
-- the versions of their assets, damaged versions remembered, indexes cleanup looks files
-- up by, and the counters /metrics reads instead of scanning tables.

-- A session token belongs to one session row (it dies with it: a later session that
-- reuses the id is another row) and to the attempt that was current when it was made.
ALTER TABLE session_tokens ADD COLUMN session_pk INTEGER REFERENCES sessions (pk) ON DELETE CASCADE;
ALTER TABLE session_tokens ADD COLUMN attempt INTEGER;
UPDATE session_tokens SET (session_pk, attempt) = (
    SELECT s.pk, s.attempt FROM sessions s
    WHERE s.tenant = session_tokens.tenant AND s.id = session_tokens.session_id
);
DELETE FROM session_tokens WHERE session_pk IS NULL;
CREATE INDEX session_tokens_session ON session_tokens (session_pk);

-- A checkpoint's `assets` becomes a list of pinned versions:
-- [{"name", "size", "sha256", "storage", "location"}]. Checkpoints written before this
-- named assets only; they pin the version recorded now. A name whose asset is gone pins
-- a version that cannot exist (size 0 of a blob no file is named after), so such a
-- checkpoint stays disqualified, as it was.
UPDATE checkpoints SET assets = (
    SELECT json_group_array(json_object(
        'name', j.value,
        'size', coalesce(a.size, 0),
        'sha256', coalesce(a.sha256, '0000000000000000000000000000000000000000000000000000000000000000'),
        'storage', coalesce(a.storage, 'blob'),
        'location', a.location))
    FROM json_each(checkpoints.assets) j
    JOIN sessions s ON s.pk = checkpoints.session_pk
    LEFT JOIN assets a ON a.tenant = s.tenant AND a.owner_kind = 'session'
        AND a.owner_id = s.id AND a.name = j.value
)
WHERE assets <> '[]';

-- The files retained checkpoints pin, for cleanup's "may this file go?" (never, while a
-- checkpoint pins it). Deleted with the checkpoint row by the code that deletes it
-- (retention, cleanup): pruning a checkpoint unpins. Not a foreign key on purpose: a
-- cascading delete into a WITHOUT ROWID table builds a temporary b-tree for every pruned
-- checkpoint, pins or not (a tenth of a checkpoint write, measured with callgrind).
-- `key` is the blob's SHA-256, the appendable file's key, or the external path.
CREATE TABLE pinned_files (
    session_pk INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    storage TEXT NOT NULL,
    key TEXT NOT NULL,
    PRIMARY KEY (session_pk, seq, storage, key)
) WITHOUT ROWID;
CREATE INDEX pinned_files_key ON pinned_files (storage, key);
INSERT OR IGNORE INTO pinned_files (session_pk, seq, storage, key)
    SELECT c.session_pk, c.seq, j.value ->> 'storage',
        CASE j.value ->> 'storage' WHEN 'blob' THEN j.value ->> 'sha256' ELSE j.value ->> 'location' END
    FROM checkpoints c, json_each(c.assets) j
    WHERE c.assets <> '[]';

-- Versions a verification found damaged (`key` as in pinned_files; `size` is the bytes
-- that did not hash to their SHA-256). Re-uploading a blob's good bytes removes its row.
CREATE TABLE damaged_files (
    storage TEXT NOT NULL,
    key TEXT NOT NULL,
    size INTEGER NOT NULL,
    found_at INTEGER NOT NULL,
    PRIMARY KEY (storage, key, size)
) WITHOUT ROWID;
INSERT OR IGNORE INTO damaged_files (storage, key, size, found_at)
    SELECT storage, CASE storage WHEN 'blob' THEN sha256 ELSE location END, size, verified_at
    FROM assets WHERE status = 'corrupt';

-- Cleanup asks, for each old file, whether a record names it: an index probe, not a scan.
CREATE INDEX assets_blob ON assets (sha256) WHERE storage = 'blob';
CREATE INDEX assets_location ON assets (location) WHERE storage <> 'blob';

-- /metrics reads these counters; triggers keep them in step with the rows they count.
CREATE TABLE gauges (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO gauges (name, value) VALUES
    ('sessions.active', 0), ('sessions.paused', 0), ('sessions.incomplete', 0),
    ('sessions.failed', 0), ('sessions.completed', 0), ('sessions.cancelled', 0),
    ('asset_bytes', 0);
UPDATE gauges SET value = (SELECT count(*) FROM sessions WHERE 'sessions.' || status = gauges.name)
    WHERE name LIKE 'sessions.%';
UPDATE gauges SET value = (SELECT coalesce(sum(size), 0) FROM assets) WHERE name = 'asset_bytes';

CREATE TRIGGER gauges_session_insert AFTER INSERT ON sessions BEGIN
    UPDATE gauges SET value = value + 1 WHERE name = 'sessions.' || new.status;
END;
CREATE TRIGGER gauges_session_delete AFTER DELETE ON sessions BEGIN
    UPDATE gauges SET value = value - 1 WHERE name = 'sessions.' || old.status;
END;
CREATE TRIGGER gauges_session_status AFTER UPDATE OF status ON sessions
    WHEN old.status <> new.status BEGIN
    UPDATE gauges SET value = value - 1 WHERE name = 'sessions.' || old.status;
    UPDATE gauges SET value = value + 1 WHERE name = 'sessions.' || new.status;
END;
CREATE TRIGGER gauges_asset_insert AFTER INSERT ON assets BEGIN
    UPDATE gauges SET value = value + new.size WHERE name = 'asset_bytes';
END;
CREATE TRIGGER gauges_asset_delete AFTER DELETE ON assets BEGIN
    UPDATE gauges SET value = value - old.size WHERE name = 'asset_bytes';
END;
CREATE TRIGGER gauges_asset_size AFTER UPDATE OF size ON assets
    WHEN old.size <> new.size BEGIN
    UPDATE gauges SET value = value + new.size - old.size WHERE name = 'asset_bytes';
END;
