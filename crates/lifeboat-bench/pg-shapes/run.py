#!/usr/bin/env python3
"""What Lifeboat's durable checkpoint costs PostgreSQL, in raw SQL, against pgbench's
`insert1k` (the same baseline as `lifeboat-bench --only-postgres`), on a fresh schema made
by Lifeboat's own migrations. No Lifeboat process runs: this is the ceiling of each shape.

  python3 crates/lifeboat-bench/pg-shapes/run.py [seconds]

Shapes, each a pgbench transaction of 48 checkpoints (one batch of the writer thread) on
48 sessions of its own per client, run by 4 clients:
- `per-write`: what the writer sent before e20afd2: per checkpoint a savepoint, the session
  locked and read, its update, the checkpoint's insert, the pruning of the one it pushed
  out and the event's insert; then the sequencer's pass numbering the events.
- `per-write` with the pruning of 20f8463 (`seq <= cut`, which walks the index entries of
  every checkpoint pruned before, until vacuum).
- `per-write` without the savepoints.
- each session locked and read by a statement of its own (after a savepoint each, or
  not), the rest set-based as below: what the writer sends when its lock ahead fails.
- `set-based`: the design note's batched path, what the writer sends since e20afd2: the
  48 sessions locked in one statement, one UPDATE, one INSERT of the checkpoints, one
  pruning, one INSERT of the events; then the same sequencer pass.
Needs PostgreSQL on 127.0.0.1:5432 (trust auth) and Debian's postgresql-client.
"""

import os
import subprocess
import sys
import tempfile

SECONDS = int(sys.argv[1]) if len(sys.argv) > 1 else 10
BATCH = 48
HERE = os.path.dirname(os.path.abspath(__file__))
MIGRATIONS = os.path.join(HERE, "..", "..", "lifeboat-store", "migrations", "postgres")
SESSION_COLUMNS = ("pk, id, project_id, kind, title, status, attempt, max_attempts, heartbeat_timeout_ms, "
                   "stall_timeout_ms, checkpoint_retention, created_at, updated_at, last_heartbeat_at, "
                   "lease_expires_at, lease_ran_out_while_down, progress_percent, progress_stage, "
                   "progress_completed_units, progress_total_units, progress_changed_at, stalled, metrics, metadata, "
                   "error, crash_type, crash_detected_at, crash_attempt, crash_lease_expires_at, crash_work_lost_ms, "
                   "latest_seq, latest_kind, latest_stage, latest_created_at, last_seq, completed_at, tenant")
PRUNABLE = "kind <> 'stage' AND kind <> 'milestone'"
SEQUENCER = """BEGIN ISOLATION LEVEL READ COMMITTED;
SET LOCAL enable_bitmapscan = off; SET LOCAL enable_seqscan = off;
SELECT pg_advisory_xact_lock(7305656075935817844);
WITH head AS (SELECT coalesce(max(seq), 0) AS h FROM events), todo AS (SELECT id, row_number() OVER (ORDER BY id) AS n FROM events WHERE seq IS NULL ORDER BY id LIMIT 10000), numbered AS (UPDATE events SET seq = head.h + todo.n FROM todo, head WHERE events.id = todo.id RETURNING events.seq) SELECT count(*), (SELECT h FROM head) FROM numbered;
COMMIT;
"""
SESSION_SET = ("status = 'active', attempt = 1, updated_at = {q}, last_heartbeat_at = {q}, "
               "lease_expires_at = {q} + 30000, lease_ran_out_while_down = 0, progress_percent = NULL, "
               "progress_stage = NULL, progress_completed_units = NULL, progress_total_units = NULL, "
               "progress_changed_at = 0, stalled = 0, metrics = NULL, error = NULL, crash_type = NULL, "
               "crash_detected_at = NULL, crash_attempt = NULL, crash_lease_expires_at = NULL, "
               "crash_work_lost_ms = NULL, latest_seq = {q}, latest_kind = 'item', latest_stage = NULL, "
               "latest_created_at = {q}, last_seq = {q}, completed_at = NULL")

INSERT_1K = """\\set r random(1, 1000000000)
INSERT INTO bench_rows (data, sha256) VALUES (repeat(md5(:r::text), 32), encode(sha256(repeat(md5(:r::text), 32)::bytea), 'hex'));
"""


def per_write(prune_upto=False, savepoints=True):
    out = ["BEGIN;"]
    for i in range(BATCH):
        pk, q = f":pk{i}::bigint", f":q{i}::bigint"
        out.append(f"\\set s{i} :client_id * {BATCH} + {i + 1}")
        if savepoints:
            out.append("SAVEPOINT job;")
        out.append(f"SELECT pk AS pk{i}, last_seq + 1 AS q{i} FROM sessions WHERE tenant = 'default' "
                   f"AND id = 'bench-' || :s{i}::text FOR UPDATE \\gset")
        out.append(f"UPDATE sessions SET {SESSION_SET.format(q=q)} WHERE pk = {pk};")
        out.append("INSERT INTO checkpoints (session_pk, seq, attempt, kind, stage, position, completed_units, "
                   f"total_units, data, sha256, assets, created_at) VALUES ({pk}, {q}, 1, 'item', NULL, NULL, "
                   f"NULL, NULL, repeat('x', 1012), repeat('a', 64), '[]', {q});")
        cut = f"{PRUNABLE} AND seq <=" if prune_upto else "seq ="
        out.append(f"WITH doomed AS (DELETE FROM checkpoints WHERE session_pk = {pk} AND {cut} (SELECT seq FROM "
                   f"checkpoints WHERE session_pk = {pk} AND {PRUNABLE} ORDER BY seq DESC OFFSET 5 LIMIT 1) "
                   f"RETURNING seq, assets <> '[]' AS pins) DELETE FROM pinned_files WHERE session_pk = {pk} "
                   "AND seq IN (SELECT seq FROM doomed WHERE pins);")
        out.append("INSERT INTO events (tenant, type, session_id, project_id, data, created_at) VALUES "
                   f"('default', 'checkpoint.created', 'bench-' || :s{i}::text, NULL, repeat('e', 170), {q});")
    out.append("COMMIT;")
    return "\n".join(out) + "\n" + SEQUENCER


def set_based(locks="batch"):
    """`locks`: "batch" locks the 48 sessions in one statement; "job" locks each in a
    statement of its own, as a job loading its session does, after a savepoint of its own
    ("job-savepoint") or not ("job")."""
    pks = f"(SELECT array_agg(:base::bigint + g) FROM generate_series(1, {BATCH}) g)"
    if locks == "batch":
        lock = [f"SELECT pk FROM sessions WHERE pk = ANY(ARRAY(SELECT :base::bigint + g FROM generate_series(1, "
                f"{BATCH}) g)) ORDER BY pk FOR UPDATE;"]
    else:
        lock = []
        for i in range(BATCH):
            if locks == "job-savepoint":
                lock.append("SAVEPOINT job;")
            lock.append(f"SELECT {SESSION_COLUMNS} FROM sessions WHERE tenant = 'default' AND id = 'bench-' || "
                        f"(:base::bigint + {i + 1})::text FOR UPDATE;")
    return "\n".join([
        f"\\set base :client_id * {BATCH}",
        "BEGIN;",
        *lock,
        f"UPDATE sessions SET {SESSION_SET.format(q='last_seq + 1')} FROM unnest({pks}) AS v(pk) "
        "WHERE sessions.pk = v.pk;",
        "INSERT INTO checkpoints (session_pk, seq, attempt, kind, stage, position, completed_units, total_units, "
        "data, sha256, assets, created_at) SELECT v.pk, s.last_seq, 1, 'item', NULL, NULL, NULL, NULL, "
        f"repeat('x', 1012), repeat('a', 64), '[]', s.last_seq FROM unnest({pks}) AS v(pk) "
        "JOIN sessions s ON s.pk = v.pk;",
        f"WITH v AS (SELECT unnest({pks}) AS pk), doomed AS (DELETE FROM checkpoints c USING v, LATERAL "
        f"(SELECT seq FROM checkpoints WHERE session_pk = v.pk AND {PRUNABLE} ORDER BY seq DESC OFFSET 5 "
        "LIMIT 1) cut WHERE c.session_pk = v.pk AND c.seq = cut.seq RETURNING c.session_pk, c.seq, "
        "c.assets <> '[]' AS pins) DELETE FROM pinned_files p USING doomed d WHERE p.session_pk = d.session_pk "
        "AND p.seq = d.seq AND d.pins;",
        "INSERT INTO events (tenant, type, session_id, project_id, data, created_at) SELECT 'default', "
        f"'checkpoint.created', 'bench-' || (:base::bigint + g), NULL, repeat('e', 170), 0 "
        f"FROM generate_series(1, {BATCH}) g;",
        "COMMIT;",
    ]) + "\n" + SEQUENCER


def psql(*args):
    subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-q", "-v", "ON_ERROR_STOP=1", *args,
                    "postgres"], check=True, env={**os.environ, "PGOPTIONS": "-c search_path=lifeboat_shapes"})


def fresh():
    subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-q", "-c", "DROP SCHEMA IF EXISTS lifeboat_shapes CASCADE",
                    "-c", "CREATE SCHEMA lifeboat_shapes", "postgres"], check=True, capture_output=True)
    for migration in sorted(os.listdir(MIGRATIONS)):
        psql("-f", os.path.join(MIGRATIONS, migration))
    psql("-c", "INSERT INTO sessions (tenant, id, kind, status, attempt, max_attempts, heartbeat_timeout_ms, "
               "checkpoint_retention, created_at, updated_at, last_heartbeat_at, lease_expires_at, "
               "progress_changed_at) SELECT 'default', 'bench-' || g, 'job', 'active', 1, 3, 30000, 5, 0, 0, 0, "
               "30000, 0 FROM generate_series(1, 400) g",
         "-c", "CREATE TABLE bench_rows (id BIGSERIAL PRIMARY KEY, data TEXT NOT NULL, sha256 TEXT NOT NULL)")


def pgbench(script, clients):
    with tempfile.NamedTemporaryFile("w", suffix=".sql") as f:
        f.write(script)
        f.flush()
        out = subprocess.run(["pgbench", "-h", "127.0.0.1", "-U", "postgres", "-n", "-M", "prepared", "-j", "2",
                              "-c", str(clients), "-T", str(SECONDS), "-f", f.name, "postgres"],
                             check=True, capture_output=True, text=True,
                             env={**os.environ, "PGOPTIONS": "-c search_path=lifeboat_shapes"})
    for line in out.stdout.splitlines():
        if line.startswith("tps = "):
            return float(line.split()[2])
    raise SystemExit("pgbench printed no tps:\n" + out.stdout + out.stderr)


def main():
    results = []
    fresh()
    baseline = pgbench(INSERT_1K, 64)
    results.append(("pgbench insert1k, 64 clients", baseline))
    for name, script in [("per-write (the writer before e20afd2)", per_write()),
                         ("per-write, pruning every older prunable one (20f8463)", per_write(True)),
                         ("per-write without savepoints", per_write(savepoints=False)),
                         ("locked per write after a savepoint each, the rest set-based", set_based("job-savepoint")),
                         ("locked per write, the rest set-based (lock ahead failed)", set_based("job")),
                         ("set-based (the writer since e20afd2)", set_based())]:
        fresh()
        results.append((f"{name}, 4 clients x {BATCH} per transaction", pgbench(script, 4) * BATCH))
    print(f"| shape | rows or checkpoints/s | ratio to insert1k |\n|---|---|---|")
    for name, rate in results:
        print(f"| {name} | {rate:,.0f} | {rate / baseline:.2f}x |")
    subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-q", "-c", "DROP SCHEMA lifeboat_shapes CASCADE",
                    "postgres"], check=True, capture_output=True)


if __name__ == "__main__":
    main()
