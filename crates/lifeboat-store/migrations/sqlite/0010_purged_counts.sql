-- Crash and recovery counts are historical (SPEC §9): when cleanup purges a session, what
-- its crash and recovery rows counted is added here, per tenant, in the purge's own
-- transaction, and /stats adds these to the rows that are left.
CREATE TABLE purged_counts (
    tenant TEXT NOT NULL,
    -- 'crash' (key: the crash type), 'recovery' (key: the option) or 'outcome' (key:
    -- succeeded, failed or pending).
    what TEXT NOT NULL,
    key TEXT NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (tenant, what, key)
) WITHOUT ROWID;
