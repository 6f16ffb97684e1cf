"""What light workflows (issue 16) cost. Prints figures; docs/BENCHMARKS.md keeps them with the command.

    .venv/bin/python bench/workflows.py enqueue  [--reps 40]
    .venv/bin/python bench/workflows.py release  [--children 1000] [--reps 20]
    .venv/bin/python bench/workflows.py claim    [--jobs 100000] [--waiting 100000] [--limit 100] [--reps 40]
    .venv/bin/python bench/workflows.py cleanup  [--rows 10000] [--reps 5]

enqueue:  server CPU (and client wall time) per job of enqueue.write() -- the API's own path after validation -- for
          plain jobs (one per transaction, and batches of 1000) and with each workflow field: a parent by id, a
          singleton key, a debounced key hit again (the update path), 1,000 children of one parent, a fan-in over a
          batch of 1,000. The plain rows take queries.ENQUEUE as before (the plain path is unchanged); the others
          take workflows/write.py.
release:  the FINISH statement (queries.finish, the processor's own) that completes a parent with `--children`
          waiting children (they become pending in that statement), that completes the `--children` parents of one
          fan-in child, and, to compare, that completes `--children` jobs nobody waits for with the workflow
          triggers of sql/013 enabled and disabled. Each rep in a transaction rolled back.
claim:    the claim statement (queries.claim, limit `--limit`) over `--jobs` pending jobs in 100 stores, with 0 and
          with `--waiting` waiting jobs in the table, and with the workflow triggers enabled and disabled (the claim's
          UPDATE fires the statement trigger once): interleaved, each rolled back. The claim's plans, through
          auto_explain, name the indexes it reads.
cleanup:  cleanup_old_jobs() deleting `--rows` failed jobs in one batch, with the DELETE trigger of sql/013 (its
          transition table: steps and edges go with their jobs) enabled and disabled.

Uses the database jobprocessor_bench on the embedded server (or BENCH_DATABASE_URL), rebuilt by the migrations.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import text  # noqa: E402

from bench.fair_claim import ServerCpu, database_url, fresh_schema  # noqa: E402 - also registers bench.work
from jobprocessor import queries  # noqa: E402
from jobprocessor.config import Settings, normalise_database_url  # noqa: E402
from jobprocessor.enqueue import validate_jobs, write  # noqa: E402
from jobprocessor.queries import Outcome  # noqa: E402

WORKER = "bench"
WORKFLOW_TRIGGERS = ("jobs_workflow_on_end", "jobs_workflow_after_update", "jobs_workflow_after_delete")


def settings() -> Settings:
    return Settings.from_env({}, DATABASE_URL=normalise_database_url(database_url()))


def triggers(conn, enabled: bool) -> None:
    for name in WORKFLOW_TRIGGERS:
        conn.execute(text(f"ALTER TABLE jobs {'ENABLE' if enabled else 'DISABLE'} TRIGGER {name}"))
    conn.commit()


def insert_jobs(conn, n: int, **columns) -> list[int]:
    names = ["type"] + list(columns)
    values = ["'bench.work'"] + list(columns.values())
    ids = [row[0] for row in conn.execute(text(
        f"INSERT INTO jobs ({', '.join(names)}) SELECT {', '.join(values)} FROM generate_series(1, :n) AS g "
        "RETURNING id"), {"n": n})]
    conn.commit()
    return ids


def vacuum(engine) -> None:
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        for table in ("jobs", "job_dependencies", "job_store_queues"):
            conn.execute(text(f"VACUUM ANALYZE {table}"))


def cmd_enqueue(args) -> None:
    engine = fresh_schema(database_url())
    config = settings()
    with engine.connect() as conn:
        parent = insert_jobs(conn, 1, store_id="'s0'")[0]
        batch_parents = insert_jobs(conn, 1000, store_id="'s' || (g % 100)", batch_id="'fan-in'")
        insert_jobs(conn, 100, store_id="'s' || g")  # every store has a directory row: the common case
    assert batch_parents

    def job(i: int, **fields) -> dict:
        return {"type": "bench.work", "store_id": f"s{i % 100}", **fields}

    counter = iter(range(10**9))
    cases = {
        "plain, 1 per transaction": (1, lambda: [job(next(counter))]),
        "depends_on an id, 1 per transaction": (1, lambda: [job(next(counter), depends_on=[parent])]),
        "singleton_key (new), 1 per transaction": (1, lambda: [job(0, singleton_key=f"k{next(counter)}")]),
        "debounce_s, same key (update)": (1, lambda: [job(0, singleton_key="burst", debounce_s=60,
                                                          payload={"n": next(counter)})]),
        "plain, batch of 1000": (1000, lambda: [job(next(counter)) for _ in range(1000)]),
        "1000 children of one parent": (1000, lambda: [job(next(counter), depends_on=[parent])
                                                       for _ in range(1000)]),
        "depends_on_batch of 1000 (fan-in), 1 job": (1, lambda: [job(0, depends_on_batch="fan-in")]),
    }
    print("per job: server CPU (us) | client wall (us), median over blocks; rows validated before the clock starts")
    with engine.connect() as conn:
        cpu = ServerCpu(conn)
        results = {name: ([], []) for name in cases}
        for _ in range(3):
            for name, (per, make) in cases.items():
                reps = args.reps * 5 if per == 1 else max(args.reps // 8, 3)
                batches = [validate_jobs(make(), config) for _ in range(reps)]
                write(conn, batches[0])  # warm
                conn.commit()
                before, started = cpu.ms(), time.perf_counter()
                for rows in batches:
                    write(conn, rows)
                    conn.commit()
                wall = (time.perf_counter() - started) / (reps * per) * 1e6
                after = cpu.ms()
                results[name][0].append((after - before) / (reps * per) * 1000 if before is not None else float("nan"))
                results[name][1].append(wall)
        for name, (cpus, walls) in results.items():
            print(f"  {name:42s} {statistics.median(cpus):8.1f} | {statistics.median(walls):8.1f}")


def _leased(conn, ids) -> None:
    conn.execute(text("UPDATE jobs SET status = 'running', locked_by = :w, locked_until = now() + interval '1 hour', "
                      "started_at = now(), attempts = 1 WHERE id = ANY(:ids)"), {"w": WORKER, "ids": list(ids)})
    conn.commit()


def _timed_finish(conn, cpu, ids, reps) -> tuple[float, float]:
    walls = []
    before = cpu.ms()
    for _ in range(reps):
        started = time.perf_counter()
        queries.finish(conn, WORKER, [Outcome(i, "completed", result_json="{}") for i in ids])
        walls.append(time.perf_counter() - started)
        conn.rollback()
    after = cpu.ms()
    return statistics.median(walls) * 1000, ((after - before) / reps if before is not None else float("nan"))


def cmd_release(args) -> None:
    engine = fresh_schema(database_url())
    config = settings()
    n = args.children
    with engine.connect() as conn:
        parent = insert_jobs(conn, 1, store_id="'s0'")[0]
        write(conn, validate_jobs([{"type": "bench.work", "store_id": f"s{i % 100}", "depends_on": [parent]}
                                   for i in range(n)], config))
        conn.commit()
        fan_in_parents = insert_jobs(conn, n, store_id="'s' || (g % 100)", batch_id="'fan'")
        write(conn, validate_jobs([{"type": "bench.work", "depends_on_batch": "fan"}], config))
        conn.commit()
        plain = insert_jobs(conn, n, store_id="'s' || (g % 100)")
        _leased(conn, [parent] + fan_in_parents + plain)
    vacuum(engine)
    print(f"FINISH statement, median wall (ms) | server CPU per statement (ms), {args.reps} reps each, rolled back")
    with engine.connect() as conn:
        cpu = ServerCpu(conn)
        for _ in range(2):
            for label, ids in ((f"1 parent, {n} waiting children -> pending", [parent]),
                               (f"{n} parents of 1 fan-in child", fan_in_parents),
                               (f"{n} jobs nobody waits for, triggers on", plain)):
                wall, spent = _timed_finish(conn, cpu, ids, args.reps)
                print(f"  {label:48s} {wall:8.2f} | {spent:8.2f}")
            triggers(conn, False)
            wall, spent = _timed_finish(conn, cpu, plain, args.reps)
            print(f"  {f'{n} jobs nobody waits for, triggers off':48s} {wall:8.2f} | {spent:8.2f}")
            wall, spent = _timed_finish(conn, cpu, [plain[0]], args.reps * 5)
            print(f"  {'1 job, triggers off':48s} {wall:8.2f} | {spent:8.2f}")
            triggers(conn, True)
            wall, spent = _timed_finish(conn, cpu, [plain[0]], args.reps * 5)
            print(f"  {'1 job, triggers on':48s} {wall:8.2f} | {spent:8.2f}")
        # what the release statement did: every child pending, each covered by its store's directory row
        queries.finish(conn, WORKER, [Outcome(parent, "completed", result_json="{}")])
        released = conn.execute(text("SELECT count(*) FROM jobs WHERE status = 'pending' AND waits_for = 0 "
                                     "AND id IN (SELECT child_id FROM job_dependencies WHERE parent_id = :p)"),
                                {"p": parent}).scalar()
        conn.rollback()
        print(f"  (children pending after the parent's FINISH: {released} of {n})")


def cmd_claim(args) -> None:
    engine = fresh_schema(database_url())
    with engine.connect() as conn:
        insert_jobs(conn, args.jobs, store_id="'s' || (g % 100)", run_at="now() - make_interval(secs => g % 3600)")
        holder = insert_jobs(conn, 1, status="'running'", locked_by="'elsewhere'",
                             locked_until="now() + interval '1 day'")[0]
    vacuum(engine)

    def add_waiting(conn):
        conn.execute(text("""
            INSERT INTO jobs (type, store_id, status, waits_for, on_parent_failure, run_at)
            SELECT 'bench.work', 's' || (g % 100), 'waiting', 1, 'cancel', now() - interval '2 hours'
            FROM generate_series(1, :n) AS g"""), {"n": args.waiting})
        conn.execute(text("INSERT INTO job_dependencies (parent_id, child_id) "
                          "SELECT :p, id FROM jobs WHERE status = 'waiting'"), {"p": holder})
        conn.execute(text("UPDATE jobs SET has_dependents = true WHERE id = :p"), {"p": holder})
        conn.commit()

    def timed(conn, cpu, reps):
        walls = []
        before = cpu.ms()
        for _ in range(reps):
            started = time.perf_counter()
            rows = queries.claim(conn, limit=args.limit, worker=WORKER, lease_s=60).jobs
            walls.append(time.perf_counter() - started)
            conn.rollback()
            assert len(rows) == args.limit
        after = cpu.ms()
        return statistics.median(walls) * 1000, ((after - before) / reps if before is not None else float("nan"))

    print(f"claim of {args.limit} over {args.jobs} pending jobs in 100 stores: median wall (ms) | server CPU (ms)")
    with engine.connect() as conn:
        cpu = ServerCpu(conn)
        for waiting in (0, args.waiting):
            if waiting:
                add_waiting(conn)
                vacuum(engine)
            scans, buffers = claim_plans(engine, conn, args.limit)
            print(f"  waiting jobs {waiting:7d}: the claim's scans of jobs (all its plans): {'; '.join(scans)}")
            print(f"  waiting jobs {waiting:7d}: the claim statement's {buffers}; reads jobs_waiting_idx: "
                  f"{'jobs_waiting_idx' in ' '.join(scans)}")
            for _ in range(2):
                for enabled in (True, False):
                    triggers(conn, enabled)
                    timed(conn, cpu, 5)
                    wall, spent = timed(conn, cpu, args.reps)
                    print(f"  waiting jobs {waiting:7d}, workflow triggers {'on ' if enabled else 'off'}  "
                          f"{wall:7.2f} | {spent:7.2f}")
        triggers(conn, True)


def claim_plans(engine, conn, limit: int) -> tuple[list[str], str]:
    """The claim statement as sent, run again on the raw connection with every plan logged (SQLAlchemy's psycopg2
    dialect clears the notices of its own executions): the scans of jobs in all its plans (the fair claim
    function's own statements included), and the buffers of the whole statement."""
    from sqlalchemy import event

    sent = []

    def record(c, cursor, statement, parameters, *rest):
        sent.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", record)
    queries.claim(conn, limit=limit, worker=WORKER, lease_s=60)
    conn.rollback()
    event.remove(engine, "before_cursor_execute", record)
    statement, parameters = next((st, p) for st, p in sent if "jobs_fair_claim" in st)
    dbapi = conn.connection.dbapi_connection
    cursor = dbapi.cursor()
    cursor.execute("LOAD 'auto_explain'")
    for setting in ("log_min_duration = 0", "log_nested_statements = on", "log_level = notice", "log_analyze = on",
                    "log_buffers = on", "log_timing = off"):
        cursor.execute(f"SET auto_explain.{setting}")
    dbapi.notices = []
    cursor.execute(statement, parameters)
    dbapi.rollback()
    cursor.execute("SET auto_explain.log_min_duration = -1")
    plans = "".join(dbapi.notices)
    scans = sorted({line.strip().lstrip("->").strip().split("  (")[0] for line in plans.splitlines()
                    if " on jobs" in line and "Scan" in line})
    last = plans.split("Query Text: WITH ")[-1]
    buffers = next(line.strip() for line in last.splitlines() if "Buffers:" in line)
    return scans, buffers


def cmd_cleanup(args) -> None:
    engine = fresh_schema(database_url())
    print(f"cleanup_old_jobs deleting {args.rows} failed jobs in one batch: wall (ms) | server CPU (ms), median")
    with engine.connect() as conn:
        cpu = ServerCpu(conn)
        for _ in range(2):
            for enabled in (True, False):
                triggers(conn, enabled)
                walls, cpus = [], []
                for _ in range(args.reps):
                    conn.execute(text("TRUNCATE jobs"))
                    conn.commit()
                    insert_jobs(conn, args.rows, status="'failed'", completed_at="now() - interval '200 days'",
                                payload="jsonb_build_object('product', repeat('x', 400))")
                    before, started = cpu.ms(), time.perf_counter()
                    conn.execute(text("SELECT * FROM cleanup_old_jobs('30 days', '90 days', :n, 1)"),
                                 {"n": args.rows})
                    conn.commit()
                    walls.append((time.perf_counter() - started) * 1000)
                    after = cpu.ms()
                    cpus.append(after - before if before is not None else float("nan"))
                print(f"  DELETE trigger {'on ' if enabled else 'off'}  {statistics.median(walls):8.1f} | "
                      f"{statistics.median(cpus):8.1f}")
        triggers(conn, True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("enqueue", "release", "claim", "cleanup"))
    parser.add_argument("--reps", type=int, default=40)
    parser.add_argument("--children", type=int, default=1000)
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--waiting", type=int, default=100_000)
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--rows", type=int, default=10_000)
    args = parser.parse_args()
    {"enqueue": cmd_enqueue, "release": cmd_release, "claim": cmd_claim, "cleanup": cmd_cleanup}[args.command](args)


if __name__ == "__main__":
    main()
