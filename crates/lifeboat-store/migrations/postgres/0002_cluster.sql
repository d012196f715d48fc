-- The servers on this database, each seen by its own beat every second (times are the
-- database's clock, in ms since the epoch), and the maintenance lease: one row, held by
-- one server for a term until it expires unless renewed.
CREATE TABLE lifeboat_nodes (
    id TEXT COLLATE "C" PRIMARY KEY,
    version TEXT NOT NULL,
    started_at BIGINT NOT NULL,
    last_seen BIGINT NOT NULL,
    clock_skew_ms BIGINT NOT NULL
);

CREATE TABLE lifeboat_maintenance (
    id INT PRIMARY KEY CHECK (id = 1),
    holder TEXT COLLATE "C" NOT NULL,
    term BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
