-- The second at which an active session next needs the sweep: its lease passing or its
-- stall falling due, whichever comes first. The sweep finds due sessions through this
-- column's index, which replaces the index on the lease itself (`sessions_lease`).
--
-- An update that changes no indexed column is a HOT update: PostgreSQL writes no index
-- entry for it and reclaims the old version within its page, without a vacuum. With the
-- lease indexed, every write that moved a lease wrote five index entries and left a dead
-- version for the sweep's search to visit. This column changes only when a lease or a
-- stall deadline crosses into another second, so a session written to several times a
-- second is mostly updated in place. The sweep's search also no longer scans every
-- active session when stalls are watched (an `OR` kept it off the lease index).
-- A stall timeout too large to add to a time (one never due) leaves the stall out.
ALTER TABLE sessions ADD COLUMN due_second BIGINT GENERATED ALWAYS AS (
    least(
        lease_expires_at,
        CASE WHEN stalled = 0
                  AND stall_timeout_ms <= 9223372036854775807 - greatest(progress_changed_at, 0)
             THEN progress_changed_at + stall_timeout_ms END
    ) / 1000
) STORED;
DROP INDEX sessions_lease;
CREATE INDEX sessions_due ON sessions (due_second) WHERE status = 'active';
