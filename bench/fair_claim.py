"""Fair claim vs FIFO claim (issues 3 and 11). Prints figures; docs/BENCHMARKS.md keeps them with the command.

    .venv/bin/python bench/fair_claim.py latency    [--jobs 1000000] [--stores 10,100,1000] [--limits 100,10]
                                                    [--reps 40]
    .venv/bin/python bench/fair_claim.py explain    [--jobs 1000000] [--stores 1000] [--limit 100]
    .venv/bin/python bench/fair_claim.py first-job  [--limit 100] [--job-ms 20] [--concurrency 8]
    .venv/bin/python bench/fair_claim.py profile    [--jobs 1000000] [--stores 1000] [--limit 100] [--reps 40]
    .venv/bin/python bench/fair_claim.py enqueue    [--jobs 1000000] [--stores 1000] [--reps 40]
    .venv/bin/python bench/fair_claim.py flow       [--jobs 1000000] [--stores 1000] [--limits 100,10] [--reps 40]
                                                    [--steady-claims 12]
    .venv/bin/python bench/fair_claim.py flow-settle [--jobs 1000000] [--stores 1000] [--limit 100] [--reps 40]
                                                    [--steady-claims 12]
    .venv/bin/python bench/fair_claim.py flow-explain [--jobs 1000000] [--stores 1000] [--limit 100]
                                                    [--steady-claims 12]
    .venv/bin/python bench/fair_claim.py flow-ab    [--jobs 1000000] [--stores 1000] [--limit 100] [--reps 40]
                                                    [--steady-claims 12]

latency:   the whole claim statement (rescue + selection + UPDATE ... RETURNING), `--reps` times per variant,
           interleaved, each in a transaction that is rolled back so every rep sees the same queue: `--jobs`
           pending jobs of four types (at random), one store holding half of them, the other half spread
           over the other stores, every store already served once before (its turn in job_store_queues: the
           steady state). Variants: the FIFO claim (claim_fifo); v2 of the fair claim (sql/024, installed
           beside v3 under another name) untyped and `?type=`; v3 (queries.claim, sql/026) untyped, typed (one
           type), with the types of a process's handlers (the four queued types and three more), and with three
           of the four queued types. At the largest store count also: a queue with 1,000 more stores holding only
           a fifth type nobody asks for, which have waited longest (what a type filter can cost), and a queue with
           nothing due yet (all run_at in the future), and the queue of the first line with every store served in the
           last 10 minutes instead (the steady state of a drained backlog). For each claim size in `--limits`.
           Wall time is measured by the client; server CPU time (from /proc, for a server on this machine) is
           steadier on a shared machine; `pk` is the server CPU time of 1,000 primary-key probes in the same run,
           to scale the figures to other hardware.
explain:   EXPLAIN (ANALYZE, BUFFERS) of the claim statement on that queue, untyped, of one type and of three of the
           four types, and, through auto_explain, of the statements jobs_fair_claim() runs inside; and of the FIFO
           claim.
profile:   where the fair claim's cost goes: server CPU per call of jobs_fair_claim() v3 alone (untyped, typed, the
           handlers' types, three of four types), of v2's function (untyped, typed) and of FIFO's locked read, on
           that queue, interleaved.
enqueue:   what the directory's triggers cost an enqueue: server CPU per job of queries.enqueue, one job per
           transaction and in batches of 1000, with the insert trigger (sql/025) on and off, alternating.
first-job: 1 store with 5,000 jobs enqueued first, then 99 stores with 50 each; process_pending() (the real
           pipeline: claim, run handlers on `--concurrency` threads, record outcomes) called back to back with
           `--limit`, each job sleeping `--job-ms`; reports when each store's first job started (jobs.started_at),
           FIFO vs fair. Then the same queue with the defaults of a cron deployment (limit 10, one call a minute):
           the call in which each store's first job starts, counted by claiming only.

flow:      what tenant flow control (sql/027; the claims v4 of sql/028, v5 and v6 of sql/029, v7 of sql/032, v8 of
           sql/033, v9 of sql/034) costs the claim, on `latency`'s queue at the largest store count: first with nothing
           configured -- the FIFO claim, v2 (sql/024, untyped and `?type=`: the issue's yardstick, blind to flow
           control), v3 (sql/026's function), v4 (sql/028's), v5 and v6 (sql/029's), v7 (sql/032's), v8 (sql/033's),
           each installed beside v9 under another name, and v9 (queries.claim), untyped, typed and with a process's
           handler types -- then with
           controls configured (configure_controls(): 10 pauses, limits on 100 stores, per-type limits on 20, weights
           on 101, 600 live leases and 400 recent claims of the limited stores) for the same variants: right after
           they are set (the stores at their limits wait longest, in front: every claim of v4 meets them, the first
           claim of v5 too), and "steady": after `--steady-claims` committed claims of v5 (their jobs left running),
           which passed over the stores at their limits as they met them; and the same two with one queued type paused
           everywhere too. Server CPU per claim and its difference from FIFO's, measured as in `latency`; the recent
           claims are made recent again before each CPU round.
flow-settle: what a deployment pays right after its controls are set, where `flow` rolls every claim back (so each
           of its claims "right after" is a first claim): `--steady-claims` claims of `--limit` committed one after
           another after configure_controls() (and with a type pause too), the wall time of each, median of `--reps`
           trials (each on a queue filled anew), beside FIFO's.
flow-explain: EXPLAIN (ANALYZE, BUFFERS) of v5's claim statement with those controls (untyped and one type), in
           the steady state (`--steady-claims`; 0: right after the controls are set), and through auto_explain the
           statements inside jobs_fair_claim() and jobs_fair_flow_plan().
flow-ab:   v8 (sql/033, installed beside v9 under another name) against v9 (queries.claim), and v2 (sql/024, the
           issue's reference) beside them, untyped and of one type, with nothing configured, right after the
           controls are set and in their steady state (as `flow`): the server CPU of each claim from
           /proc/<pid>/schedstat (ns: one claim can be timed, where /proc/stat counts 10 ms ticks), the variants
           interleaved claim by claim, `--reps` claims each; median, mean of the middle 80 %, and the median less
           FIFO's. Finer than `flow` for a difference of a few tenths of a millisecond. Beside them "v9 no flow":
           v9 with flow control cut out (section 0 answers "nothing is configured"), so v9 less it is what the
           controls cost v9, configured or not; "v9 no turns" and "v9 no turns no flow" (not run unless named):
           v9 without its turns, what they cost inside a claim. `--variants a,b,..` runs only those (FIFO
           always); the live claim answers to its printed name too ("v9", "v9 typed") and to its old key "v3".

Uses the database jobprocessor_bench on the embedded server (or BENCH_DATABASE_URL), rebuilt by the migrations.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import create_engine, text  # noqa: E402

from bench.fifo_claim import FIFO_CLAIM, claim_fifo  # noqa: E402
from jobprocessor import create_app, queries  # noqa: E402
from jobprocessor.config import Settings, normalise_database_url  # noqa: E402
from jobprocessor.handlers import handler  # noqa: E402
from jobprocessor.pgarray import array_literal  # noqa: E402

WORKER = "bench"


@handler("bench.work", max_attempts=3, timeout_s=30)
def work(job):
    time.sleep(job.payload.get("ms", 20) / 1000)
    return None


def database_url() -> str:
    from jobprocessor import devdb

    return devdb.database_url("BENCH_DATABASE_URL", "jobprocessor_bench")


def fresh_schema(url: str):
    engine = create_engine(normalise_database_url(url))
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    from flask_migrate import upgrade

    app = create_app(Settings.from_env({}, DATABASE_URL=normalise_database_url(url)))
    with app.app_context():
        upgrade()
        from jobprocessor.extensions import db

        db.engine.dispose()
    return engine


# the queue's job types, and what the claims ask for
QUEUED_TYPES = ("bench.work", "bench.import", "bench.translate", "bench.rewrite")
HANDLER_TYPES = sorted(QUEUED_TYPES + ("product.optimize", "system.cleanup", "demo.echo"))  # a process's handlers
UNHANDLED_TYPE = "bench.unhandled"


def fill(engine, n_jobs: int, n_stores: int, due: bool = True, unhandled_stores: int = 0,
         served_lately: bool = False) -> None:
    """n_jobs pending jobs of the four QUEUED_TYPES (at random, by a hash of the id): even ids to store 'big', odd ids
    spread over n_stores - 1 others; run_at over the last 3 hours (or the next 3 hours), interleaved; every store served
    once before (a turn an hour before its oldest job). With unhandled_stores, that many more stores with 10 jobs each
    of UNHANDLED_TYPE, older than every other job and never served (nobody asks for their type). served_lately: every
    store was served in the last 10 minutes instead, in a random order (the steady state of a backlog being drained:
    each store's wait is its turn, not its oldest job)."""
    when = "now() - interval '3 hours'" if due else "now() + interval '1 hour'"
    step = 3 * 3600 * 1000 // n_jobs or 1
    with engine.begin() as conn:
        conn.execute(text("TRUNCATE jobs, job_store_queues, job_store_arrivals RESTART IDENTITY"))
        conn.execute(text(f"""
            INSERT INTO jobs (type, store_id, priority, run_at, payload)
            SELECT (CAST(:types AS text[]))[1 + (hashint4(g) & 3)],  -- independent of the store
                   CASE WHEN g % 2 = 0 OR :others = 0 THEN 'big' ELSE 'store-' || ((g / 2) % :others) END,
                   5, {when} + g * make_interval(secs => :step / 1000.0), '{{}}'
            FROM generate_series(1, :n) AS g"""),
                     {"n": n_jobs, "others": n_stores - 1, "step": step, "types": list(QUEUED_TYPES)})
        # every store's turn (in the directory of store queues): an hour before its oldest job, or lately
        if served_lately:
            conn.execute(text("UPDATE job_store_queues SET served_at = now() - random() * interval '10 minutes', "
                              "served_pos = 1 + (random() * 99)::int"))
        else:
            conn.execute(text("UPDATE job_store_queues SET served_at = now() - interval '4 hours', served_pos = 1"))
        if unhandled_stores:
            conn.execute(text("""
                INSERT INTO jobs (type, store_id, priority, run_at, payload)
                SELECT :type, 'unhandled-' || (g % :stores), 5, now() - interval '5 hours', '{}'
                FROM generate_series(1, :stores * 10) AS g"""), {"type": UNHANDLED_TYPE, "stores": unhandled_stores})
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE jobs"))
        conn.execute(text("VACUUM ANALYZE job_store_queues"))


def install_v2(engine) -> None:
    """v2 of the fair claim (sql/024) beside v3, as bench_fair_claim_v2(), with v1's probe it calls (sql/022) as
    bench_fair_claim_probe_v1(). It reads the same directory (v3's column of types is ignored by it); it calls v1's
    directory writes only to merge arrivals, and the benchmark's queue has none."""
    v1_sql = (ROOT / "sql" / "022_fair_claim_v1.sql").read_text()
    v2_sql = (ROOT / "sql" / "024_fair_claim_v2.sql").read_text()

    def function(sql: str, name: str) -> str:
        start = sql.index(f"CREATE OR REPLACE FUNCTION {name}(")
        return sql[start:sql.index("$fn$;", start) + len("$fn$;")]

    probe = function(v1_sql, "jobs_fair_claim_probe").replace("FUNCTION jobs_fair_claim_probe(",
                                                               "FUNCTION bench_fair_claim_probe_v1(", 1)
    claim = (function(v2_sql, "jobs_fair_claim")
             .replace("FUNCTION jobs_fair_claim(", "FUNCTION bench_fair_claim_v2(", 1)
             .replace("jobs_fair_claim_probe(", "bench_fair_claim_probe_v1("))
    with engine.begin() as conn:
        conn.exec_driver_sql(probe.replace("%", "%%"))
        conn.exec_driver_sql(claim.replace("%", "%%"))


# v2's claim statement: the same rescue and tail as queries.CLAIM around v2's function
CLAIM_V2 = ("WITH " + queries._RESCUE_CTE + """,
due AS (
    SELECT f.job_id AS id, f.claim_order
    FROM bench_fair_claim_v2(CAST(:limit AS integer), CAST(:job_type AS text), CAST(:max_per_store AS integer),
                             ARRAY(SELECT id FROM rescued)) AS f
    LIMIT :limit
),""" + queries._CLAIM_TAIL)

# name -> how one claim of `limit` runs on a connection (inside the caller's transaction)
VARIANTS = {
    "fifo": lambda conn, limit: claim_fifo(conn, limit=limit, worker=WORKER, lease_s=300),
    "v2": lambda conn, limit: _claim_v2(conn, limit, None),
    "v2 typed": lambda conn, limit: _claim_v2(conn, limit, QUEUED_TYPES[0]),
    "v3": lambda conn, limit: queries.claim(conn, limit=limit, worker=WORKER, lease_s=300),
    "v3 typed": lambda conn, limit: queries.claim(conn, limit=limit, worker=WORKER, lease_s=300,
                                                  job_types=[QUEUED_TYPES[0]]),
    "v3 handlers": lambda conn, limit: queries.claim(conn, limit=limit, worker=WORKER, lease_s=300,
                                                     job_types=HANDLER_TYPES),
    "v3 3 of 4": lambda conn, limit: queries.claim(conn, limit=limit, worker=WORKER, lease_s=300,
                                                   job_types=list(QUEUED_TYPES[:3])),
}
LATENCY_VARIANTS = list(VARIANTS)  # (`flow` adds its own below)


def install_v3(engine) -> None:
    """v3 of the fair claim (sql/026) beside v4, as bench_fair_claim_v3(), with the two row types it uses (v4 drops
    them under their names; they come back here as bench_fair_queue_v3 and bench_fair_ask_v3). Its head probe,
    jobs_fair_head(), is live and shared."""
    v3_sql = (ROOT / "sql" / "026_fair_claim_v3.sql").read_text()
    start = v3_sql.index("DO $$\nBEGIN\n    IF to_regtype('jobs_fair_queue') IS NULL")
    end = v3_sql.index("$$;", v3_sql.index("IF to_regtype('jobs_fair_ask') IS NULL")) + len("$$;")
    fn_start = v3_sql.index("CREATE OR REPLACE FUNCTION jobs_fair_claim(")
    fn = v3_sql[fn_start:v3_sql.index("$fn$;", fn_start) + len("$fn$;")]

    def renamed(sql: str) -> str:
        return (sql.replace("jobs_fair_queue", "bench_fair_queue_v3").replace("jobs_fair_ask", "bench_fair_ask_v3")
                .replace("FUNCTION jobs_fair_claim(", "FUNCTION bench_fair_claim_v3(", 1))

    with engine.begin() as conn:
        conn.exec_driver_sql(renamed(v3_sql[start:end]).replace("%", "%%"))
        conn.exec_driver_sql(renamed(fn).replace("%", "%%"))


# v3's claim statement: queries.CLAIM with v3's function in its `due` step
def claim_through(function: str) -> str:
    """queries.CLAIM with `function`() (an older or edited claim installed beside the live one) in its `due` step."""
    return queries.CLAIM.replace("FROM jobs_fair_claim(", f"FROM {function}(", 1)


CLAIM_V3 = claim_through("bench_fair_claim_v3")
assert CLAIM_V3 != queries.CLAIM


def _claim_with(statement: str, conn, limit: int, job_types) -> queries.ClaimResult:
    """One claim through `statement` (queries.CLAIM around an installed older function), as queries.claim runs it."""
    return queries._claim(conn, statement, limit=limit, worker=WORKER, lease_s=300,
                          job_types=None if job_types is None else array_literal(sorted(job_types)),
                          rescue_limit=1000, max_per_store=None, start_types="{}")


def _variants_of(name: str, statement: str) -> dict:
    """`name` untyped, of one type, and with a process's handler types."""
    return {name: lambda conn, limit: _claim_with(statement, conn, limit, None),
            f"{name} typed": lambda conn, limit: _claim_with(statement, conn, limit, [QUEUED_TYPES[0]]),
            f"{name} hand.": lambda conn, limit: _claim_with(statement, conn, limit, HANDLER_TYPES)}


VARIANTS.update(_variants_of("v3 (026)", CLAIM_V3))


def install_older_claim(engine, sql_file: str, name: str, edit=None) -> None:
    """An older jobs_fair_claim() (its sql/ file) beside the live one, as `name`(): the types, jobs_fair_flow_plan()
    and the head probe it calls are live and shared (v5 to v9 replaced only the function). `edit`: a change to
    the function's text first."""
    text_ = (ROOT / "sql" / sql_file).read_text()
    fn_start = text_.index("CREATE OR REPLACE FUNCTION jobs_fair_claim(")
    fn = text_[fn_start:text_.index("$fn$;", fn_start) + len("$fn$;")]
    if edit is not None:
        fn = edit(fn)
    with engine.begin() as conn:
        conn.exec_driver_sql(fn.replace("FUNCTION jobs_fair_claim(", f"FUNCTION {name}(", 1).replace("%", "%%"))


# v9 with tenant flow control cut out: section 0's statement (what is configured) replaced by "nothing is", so the
# claim never looks at a pause, a limit or a quota. On a queue with nothing configured, v9 less this is what the
# controls cost when none are set (issue 11: "nothing measurable"); on a configured queue, what they cost in all
# (this variant claims paused and limited stores as if nothing were set).
FLOW_CONFIG_START = "    SELECT ARRAY(SELECT p.type FROM job_pauses p WHERE coalesce(p.store_id, '') = ''),"
FLOW_CONFIG_END = "          OFFSET 0) AS s;\n"
NO_FLOW = ("    paused_types := '{}'; flow_stores := false; flow_pauses := false; flow_holds := false;"
           " flow_keys := NULL;\n")


def _without_flow(fn: str) -> str:
    start = fn.index(FLOW_CONFIG_START)
    end = fn.index(FLOW_CONFIG_END, start) + len(FLOW_CONFIG_END)
    return fn[:start] + NO_FLOW + fn[end:]


def install_v9_without_flow(engine) -> None:
    install_older_claim(engine, "034_fair_claim_v9.sql", "bench_fair_claim_v9_no_flow", edit=_without_flow)


# v9 without its turns (job_store_queues_serve() not called): what the turns cost inside a claim, with the controls
# and without them. A measure for a design of the directory whose turns are not an indexed update per store served;
# a claim through it never moves a turn, so only rolled-back claims (flow-ab's) measure anything with it.
SERVE_TURNS = "    PERFORM job_store_queues_serve(turn_stores, turn_poss);\n    RETURN QUERY"


def _without_turns(fn: str) -> str:
    if fn.count(SERVE_TURNS) != 1:
        raise ValueError("v9's turns are no longer where this edit expects them")
    return fn.replace(SERVE_TURNS, "    RETURN QUERY")


def install_v9_without_turns(engine) -> None:
    install_older_claim(engine, "034_fair_claim_v9.sql", "bench_fair_claim_v9_no_turns", edit=_without_turns)
    install_older_claim(engine, "034_fair_claim_v9.sql", "bench_fair_claim_v9_no_turns_no_flow",
                        edit=lambda fn: _without_turns(_without_flow(fn)))


def install_v4(engine) -> None:
    install_older_claim(engine, "028_fair_claim_v4.sql", "bench_fair_claim_v4")
    install_older_claim(engine, "029_fair_claim_v5.sql", "bench_fair_claim_v5")
    install_older_claim(engine, "029_fair_claim_v6.sql", "bench_fair_claim_v6")
    install_older_claim(engine, "032_fair_claim_v7.sql", "bench_fair_claim_v7")
    install_older_claim(engine, "033_fair_claim_v8.sql", "bench_fair_claim_v8")


CLAIM_V4 = claim_through("bench_fair_claim_v4")
CLAIM_V5 = claim_through("bench_fair_claim_v5")
CLAIM_V6 = claim_through("bench_fair_claim_v6")
CLAIM_V7 = claim_through("bench_fair_claim_v7")
CLAIM_V8 = claim_through("bench_fair_claim_v8")
VARIANTS.update(_variants_of("v4 (028)", CLAIM_V4))
VARIANTS.update(_variants_of("v5 (029)", CLAIM_V5))
VARIANTS.update(_variants_of("v6 (029)", CLAIM_V6))
VARIANTS.update(_variants_of("v7 (032)", CLAIM_V7))
VARIANTS.update(_variants_of("v8 (033)", CLAIM_V8))
VARIANTS.update(_variants_of("v9 no flow", claim_through("bench_fair_claim_v9_no_flow")))
VARIANTS.update(_variants_of("v9 no turns", claim_through("bench_fair_claim_v9_no_turns")))
VARIANTS.update(_variants_of("v9 no turns no flow", claim_through("bench_fair_claim_v9_no_turns_no_flow")))
FLOW_VARIANTS = ["fifo", "v2", "v3 (026)", "v4 (028)", "v5 (029)", "v6 (029)", "v7 (032)", "v8 (033)", "v3",
                 "v2 typed", "v3 (026) typed", "v4 (028) typed", "v5 (029) typed", "v6 (029) typed", "v7 (032) typed",
                 "v8 (033) typed", "v3 typed",
                 "v3 (026) hand.", "v4 (028) hand.", "v5 (029) hand.", "v6 (029) hand.", "v7 (032) hand.",
                 "v8 (033) hand.", "v3 handlers"]
# queries.claim runs v9 now (sql/034_fair_claim_v9.sql): the `flow` report names it so
FLOW_NAMES = {"v3": "v9", "v3 typed": "v9 typed", "v3 handlers": "v9 handlers", "v3 (026) hand.": "v3 (026) handl.",
              "v4 (028) hand.": "v4 (028) handl.", "v5 (029) hand.": "v5 (029) handl.",
              "v6 (029) hand.": "v6 (029) handl.", "v7 (032) hand.": "v7 (032) handl.",
              "v8 (033) hand.": "v8 (033) handl."}
FLOW_KEYS = {FLOW_NAMES[key]: key for key in ("v3", "v3 typed", "v3 handlers")}  # the live claim by its printed name


def configure_controls(engine, n_stores: int, type_pause: bool = False) -> None:
    """Tenant flow control as a busy deployment has it, on latency's queue (stores 'big', 'store-0'..): 5 stores
    paused, 5 store/type pauses; max_running 5 on 50 stores and max_starts_per_minute 30 on 50 more, 'big' with
    max_running 400 and 2,000 starts a minute, max_running 2 of bench.import on 20 stores; weights 2-5 on 100
    stores and 3 on 'big'; 600 live leases and 400 claims of the last minute at the limited stores (so the counts
    have rows to count). type_pause: bench.rewrite paused everywhere too (an untyped claim becomes one of 3 types)."""
    assert n_stores >= 400, "the controls name stores store-1 .. store-399"
    with engine.begin() as conn:
        conn.execute(text("TRUNCATE job_pauses, job_store_limits, job_store_starts, job_store_quota_holds"))
        conn.execute(text("DELETE FROM jobs WHERE status = 'running'"))
        # every store's turn as fill() left it (a steady state measured before moved some)
        conn.execute(text("UPDATE job_store_queues SET served_at = now() - interval '4 hours', served_pos = 1"))
        conn.execute(text("INSERT INTO job_pauses (store_id) SELECT 'store-' || g FROM generate_series(1, 5) g"))
        conn.execute(text("INSERT INTO job_pauses (store_id, type) "
                          "SELECT 'store-' || g, 'bench.import' FROM generate_series(6, 10) g"))
        if type_pause:
            conn.execute(text("INSERT INTO job_pauses (type) VALUES ('bench.rewrite')"))
        conn.execute(text("INSERT INTO job_store_limits (store_id, max_running) "
                          "SELECT 'store-' || g, 5 FROM generate_series(100, 149) g"))
        conn.execute(text("INSERT INTO job_store_limits (store_id, max_starts_per_minute) "
                          "SELECT 'store-' || g, 30 FROM generate_series(150, 199) g"))
        conn.execute(text("INSERT INTO job_store_limits (store_id, type, max_running) "
                          "SELECT 'store-' || g, 'bench.import', 2 FROM generate_series(300, 319) g"))
        conn.execute(text("INSERT INTO job_store_limits (store_id, weight) "
                          "SELECT 'store-' || g, 2 + g % 4 FROM generate_series(200, 299) g"))
        conn.execute(text("INSERT INTO job_store_limits (store_id, max_running, max_starts_per_minute, weight) "
                          "VALUES ('big', 400, 2000, 3)"))
        conn.execute(text("""
            INSERT INTO jobs (type, store_id, priority, status, locked_by, locked_until, started_at, attempts, payload)
            SELECT 'bench.work', CASE WHEN g % 3 = 0 THEN 'big' ELSE 'store-' || (100 + g % 50) END, 5, 'running',
                   'other', now() + interval '1 hour', now(), 1, '{}'
            FROM generate_series(1, 600) g"""))
        conn.execute(text("""
            INSERT INTO job_store_starts (store_key, type, claimed_at, jobs)
            SELECT CASE WHEN g % 4 = 0 THEN 'big' ELSE 'store-' || (150 + g % 50) END, 'bench.work',
                   now() - make_interval(secs => g % 50), 1 + g % 3
            FROM generate_series(1, 400) g"""))
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        for table in ("job_pauses", "job_store_limits", "job_store_starts", "jobs", "job_store_queues"):
            conn.execute(text(f"VACUUM ANALYZE {table}"))


def refresh_recent_starts(engine) -> None:
    """configure_controls()' claims of the last minute made recent again (they age out of the window as a run goes
    on), so every round of every variant counts the same starts."""
    with engine.begin() as conn:
        conn.execute(text("UPDATE job_store_starts SET claimed_at = now() - make_interval(secs => id % 50)"))


def reach_steady_state(engine, claims: int, limit: int) -> int:
    """`claims` claims of `limit` by queries.claim (v5), committed, as a cron's calls would make them: the jobs
    stay running under long leases (their stores' counts include them), and the stores served -- and the stores at
    their limits that v5 passed over -- have their new turns. Returns the jobs claimed."""
    claimed = 0
    for _ in range(claims):
        with engine.begin() as conn:
            claimed += len(queries.claim(conn, limit=limit, worker="steady", lease_s=300).jobs)
    with engine.begin() as conn:
        conn.execute(text("UPDATE jobs SET locked_until = now() + interval '1 hour' WHERE locked_by = 'steady'"))
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        for table in ("jobs", "job_store_queues", "job_store_starts"):
            conn.execute(text(f"VACUUM ANALYZE {table}"))
    return claimed


def flow_states(engine, args, n_stores: int, steady_limit: int, states):
    """Set up flow's states in turn -- `states`: (label, the controls to set or None, steady) -- yielding each once
    it is set up. The queue is filled again before controls are set after a steady state: configure_controls()
    resets the turns, and the lower bounds the steady state's claims left loose would then slow every fair variant."""
    refill = False
    for label, setup, steady in states:
        if setup is not None:
            if refill:
                fill(engine, args.jobs, n_stores)
            configure_controls(engine, n_stores, **setup)
        refill = refill or steady
        if steady:
            reach_steady_state(engine, args.steady_claims, steady_limit)
        yield label, setup, steady


def cmd_flow(args) -> None:
    engine = fresh_schema(database_url())
    install_v2(engine)
    install_v3(engine)
    install_v4(engine)
    n_stores = args.stores[-1]
    print(f"{args.jobs:,} pending jobs of {len(QUEUED_TYPES)} types over {n_stores} stores, one holding half. wall: "
          f"median / p90 of {args.reps} interleaved reps (ms); cpu: server CPU per claim (ms) and its difference "
          "from FIFO's; pk: server CPU of 1000 primary-key probes; jobs / stores: in the claim")
    print(f"{'controls':<22} {'limit':>5}  {'variant':<15} {'wall':>15} {'cpu':>7} {'- fifo':>7} {'pk':>5} "
          f"{'jobs':>5} {'stores':>6}")
    fill(engine, args.jobs, n_stores)
    states = (("none", None, False), ("configured", dict(type_pause=False), False),
              ("configured + type pause", dict(type_pause=True), False), ("conf. + type pause, st.", None, True),
              ("configured, steady", dict(type_pause=False), True))
    for label, setup, steady in flow_states(engine, args, n_stores, max(args.limits), states):
        for limit in args.limits:
            res = measure(engine, FLOW_VARIANTS, limit, args.reps,
                          before_round=None if setup is None and not steady else refresh_recent_starts)
            fifo_cpu = res["fifo"][3]
            for variant in FLOW_VARIANTS:
                wall_med, wall_p90, jobs, cpu_ms = res[variant]
                served = stores_in(engine, variant, limit) if jobs else 0
                print(f"{label:<22} {limit:>5}  {FLOW_NAMES.get(variant, variant):<15} {wall_med:>7.2f} / "
                      f"{wall_p90:>5.2f} {cpu_ms:>7.2f} "
                      f"{cpu_ms - fifo_cpu:>7.2f} {res['pk']:>5.2f} {jobs:>5} {served:>6}", flush=True)


def cmd_flow_explain(args) -> None:
    import psycopg2

    url = database_url()
    engine = fresh_schema(url)
    fill(engine, args.jobs, args.stores[-1])
    configure_controls(engine, args.stores[-1])
    if args.steady_claims:
        reach_steady_state(engine, args.steady_claims, args.limit)
    refresh_recent_starts(engine)
    for _ in range(5):
        for variant in ("v3", "v3 typed"):
            timed_claim(engine, variant, args.limit)
    base = {"limit": args.limit, "worker": WORKER, "lease_s": 300, "rescue_limit": 1000, "max_per_store": None,
            "start_types": "{}"}
    conn = psycopg2.connect(url)
    conn.notices = []
    cur = conn.cursor()
    for title, extra in (("untyped", dict(job_types=None)),
                         (f"one type ({QUEUED_TYPES[0]!r})", dict(job_types=array_literal([QUEUED_TYPES[0]])))):
        sql = text(queries.CLAIM).compile(engine, compile_kwargs={}).string
        cur.execute("LOAD 'auto_explain'")
        for name, value in (("log_min_duration", "0"), ("log_analyze", "on"), ("log_buffers", "on"),
                            ("log_timing", "on"), ("log_nested_statements", "on"), ("log_level", "notice")):
            cur.execute(f"SET auto_explain.{name} = '{value}'")
        del conn.notices[:]
        cur.execute("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + sql, dict(base, **extra))
        plan = [row[0] for row in cur.fetchall()]
        notices = list(conn.notices)
        conn.rollback()
        cur.execute("SET auto_explain.log_min_duration = -1")
        conn.commit()
        print(f"=== fair claim v9 with controls, {title}, {args.stores[-1]} stores, {args.jobs:,} pending, "
              f"limit {args.limit}, after {args.steady_claims} committed claims")
        print("\n".join(plan))
        for notice in notices:
            if "Query Text: EXPLAIN" in notice:
                continue
            print("--- inside:", notice.strip())
    conn.close()


def schedstat_ms(pid: int) -> float:
    """CPU time the process has run, from /proc/<pid>/schedstat (nanoseconds, not the 10 ms ticks of /proc/stat):
    fine enough to time one claim."""
    return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0]) / 1e6


# (FIFO runs too, always: every figure is read against it)
FLOW_AB_VARIANTS = ["v2", "v8 (033)", "v9 no flow", "v3", "v2 typed", "v8 (033) typed", "v9 no flow typed", "v3 typed"]


def cmd_flow_ab(args) -> None:
    """v9 (queries.claim) beside v2 (sql/024), v8 (sql/033) and v9 without flow control (or its turns, when named),
    untyped and of one type, in flow's states: server CPU of each claim (schedstat), the variants interleaved claim
    by claim (ABBA), FIFO beside them."""
    # (the live claim's key is still "v3", from when v3 was live; the name it is printed under, "v9", is taken too)
    args.variants = args.variants and [FLOW_KEYS.get(v, v) for v in args.variants]
    unknown = [v for v in args.variants or () if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"--variants: no variant {', '.join(map(repr, unknown))}; known: {', '.join(VARIANTS)}")
    engine = fresh_schema(database_url())
    install_v2(engine)
    install_v4(engine)
    install_v9_without_flow(engine)
    install_v9_without_turns(engine)
    n_stores, limit = args.stores[-1], args.limit
    # v2 (sql/024, no flow control: it claims paused and limited stores alike) is issue 11's reference: "within
    # +6 ms of FIFO, as v2 does now" -- beside it in the same run, the target can be read on a machine faster or
    # slower than the one it was set on
    # and v9 with flow control cut out (install_v9_without_flow): what the controls cost v9, set or not
    variants = ["fifo"] + [v for v in args.variants or FLOW_AB_VARIANTS if v != "fifo"]
    print(f"{args.jobs:,} pending jobs over {n_stores} stores, claims of {limit}: server CPU per claim (ms, "
          f"/proc/<pid>/schedstat), median and mean of the middle 80 % of {args.reps} claims per variant, "
          "interleaved claim by claim; - fifo: the median less FIFO's")
    print(f"{'controls':<22} {'variant':<15} {'median':>7} {'mean80':>7} {'- fifo':>7}")
    fill(engine, args.jobs, n_stores)
    states = (("none", None, False), ("configured", dict(type_pause=False), False),
              ("configured, steady", dict(type_pause=False), True))
    for label, setup, steady in flow_states(engine, args, n_stores, limit, states):
        out: dict = {variant: [] for variant in variants}
        with engine.connect() as conn:
            pid = conn.execute(text("SELECT pg_backend_pid()")).scalar()
            conn.rollback()
            for _ in range(3):
                for variant in variants:
                    _timed_claim(conn, variant, limit)
            for rep in range(args.reps):
                if rep % TIDY_EVERY == 0:
                    tidy(engine)
                if setup is not None and rep % 40 == 0:
                    conn.rollback()
                    refresh_recent_starts(engine)
                for variant in (variants if rep % 2 == 0 else variants[::-1]):
                    before = schedstat_ms(pid)
                    _timed_claim(conn, variant, limit)
                    out[variant].append(schedstat_ms(pid) - before)
        fifo_ms = statistics.median(out["fifo"])
        for variant in variants:
            t = sorted(out[variant])
            mid = t[len(t) // 10:len(t) - len(t) // 10]
            print(f"{label:<22} {FLOW_NAMES.get(variant, variant):<15} {statistics.median(t):>7.3f} "
                  f"{statistics.mean(mid):>7.3f} {statistics.median(t) - fifo_ms:>+7.3f}", flush=True)


def cmd_flow_settle(args) -> None:
    """What a deployment pays right after its controls are set: `flow` measures rolled-back claims, so every claim
    of its "right after" state meets the stores at their limits in front, as only the first committed claim does.
    Here the claims commit, one after another (their jobs left running), as a cron's calls would: the wall time of
    each, median over `--reps` trials, each on a queue filled anew (a trial's claims move turns and leave the
    directory's bounds loose, which the next one would pay for), beside the FIFO claim's, rolled back."""
    engine = fresh_schema(database_url())
    n_stores = args.stores[-1]
    claims = args.steady_claims
    print(f"{args.jobs:,} pending jobs over {n_stores} stores; {claims} committed claims of {args.limit} right after "
          f"configure_controls(), wall ms, median of {args.reps} trials (FIFO: rolled back, 10 per trial)")
    for type_pause in (False, True):
        walls: list = [[] for _ in range(claims)]
        fifo: list = []
        for _ in range(args.reps):
            fill(engine, args.jobs, n_stores)
            configure_controls(engine, n_stores, type_pause=type_pause)
            for nth in range(claims):
                with engine.begin() as conn:
                    started = time.perf_counter()
                    queries.claim(conn, limit=args.limit, worker="settle", lease_s=3600)
                walls[nth].append((time.perf_counter() - started) * 1000)
            with engine.connect() as conn:
                fifo += [_timed_claim(conn, "fifo", args.limit)[0] for _ in range(10)]
        label = "configured + type pause" if type_pause else "configured"
        print(f"{label:<24} " + " ".join(f"{statistics.median(w):5.1f}" for w in walls)
              + f"   | FIFO {statistics.median(fifo):.1f}", flush=True)


def _claim_v2(conn, limit: int, job_type: Optional[str]) -> queries.ClaimResult:
    return queries._claim(conn, CLAIM_V2, limit=limit, worker=WORKER, lease_s=300, job_type=job_type,
                          rescue_limit=1000, max_per_store=None, start_types="{}")


def timed_claim(engine, variant: str, limit: int) -> tuple[float, int]:
    with engine.connect() as conn:
        return _timed_claim(conn, variant, limit)


def _timed_claim(conn, variant: str, limit: int) -> tuple[float, int]:
    tx = conn.begin()
    started = time.perf_counter()
    result = VARIANTS[variant](conn, limit)
    elapsed = (time.perf_counter() - started) * 1000
    tx.rollback()
    return elapsed, len(result.jobs)


class ServerCpu:
    """CPU time of the connection's server process (from /proc: only for a server on this machine): steadier than
    wall time on a shared machine, where waiting for a core inflates wall time."""

    def __init__(self, conn):
        pid = conn.execute(text("SELECT pg_backend_pid()")).scalar()
        conn.rollback()
        self.path = Path(f"/proc/{pid}/stat")
        self.tick = os.sysconf("SC_CLK_TCK")

    def ms(self) -> Optional[float]:
        try:
            fields = self.path.read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) * 1000 / self.tick


CALIBRATION = "SELECT count(*) FROM generate_series(1, 1000) AS g, LATERAL (SELECT id FROM jobs WHERE id = g * 97) AS x"


# What a claim writes and a rollback leaves dead: the directory's turns (100 non-HOT row versions for a claim of 100
# from 100 stores) and the starts record. In production the claims commit, and autovacuum, with the directory's
# settings (sql/025: a threshold of 500 rows + 5 %), cleans them every few claims; here hundreds of claims are
# rolled back in a minute, faster than autovacuum comes round, and the dead versions (38 MB for 1,000 rows after
# some 400 claims) slowed every fair variant alike, not the FIFO claim. So they are vacuumed every TIDY_EVERY claims,
# outside the CPU measured (another connection).
TIDY_EVERY = 5
TIDIED_TABLES = ("job_store_queues", "job_store_starts")


def tidy(engine) -> None:
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        for table in TIDIED_TABLES:
            conn.execute(text(f"VACUUM {table}"))


def measure(engine, variants: list[str], limit: int, reps: int, before_round=None) -> dict:
    """Per variant: wall-time median and p90 over `reps` interleaved claims, jobs claimed, and server CPU per claim.
    The CPU clock ticks in 10 ms, so one claim is too short to time: it is summed over 8 rounds that each run a block
    of reps / 4 claims of every variant in turn (and of the calibration), so a slower minute on the shared machine
    falls on every variant alike. What the rolled-back claims leave dead is vacuumed every TIDY_EVERY claims."""
    out = {}
    block = max(reps // 4, 5)
    with engine.connect() as conn:
        cpu = ServerCpu(conn)
        for _ in range(5):  # warm: plans prepared, pages cached
            for variant in variants:
                _timed_claim(conn, variant, limit)
            tidy(engine)
        walls: dict = {variant: [] for variant in variants}
        counts = {}
        for rep in range(reps):
            for variant in variants:
                if rep % TIDY_EVERY == 0:
                    tidy(engine)
                ms, counts[variant] = _timed_claim(conn, variant, limit)
                walls[variant].append(ms)
        spent: dict = {variant: 0.0 for variant in variants + ["pk"]}
        runs = 0
        for _ in range(8):
            if before_round is not None:
                conn.rollback()
                before_round(engine)
            for variant in variants + ["pk"]:
                spent_now = 0.0
                for first in range(0, block, TIDY_EVERY):
                    tidy(engine)
                    before = cpu.ms()
                    for _ in range(min(TIDY_EVERY, block - first)):
                        if variant == "pk":
                            conn.execute(text(CALIBRATION)).all()
                            conn.rollback()
                        else:
                            _timed_claim(conn, variant, limit)
                    after = cpu.ms()
                    if before is not None and after is not None:
                        spent_now += after - before
                spent[variant] += spent_now
            runs += block
    for variant in variants:
        t = sorted(walls[variant])
        out[variant] = (statistics.median(t), t[int(len(t) * 0.9)], counts[variant], spent[variant] / runs)
    out["pk"] = spent["pk"] / runs
    return out


def stores_in(engine, variant: str, limit: int) -> int:
    with engine.connect() as conn:
        tx = conn.begin()
        rows = VARIANTS[variant](conn, limit).jobs
        tx.rollback()
    return len({row["store_id"] for row in rows})


def cmd_latency(args) -> None:
    engine = fresh_schema(database_url())
    install_v2(engine)
    print(f"{args.jobs:,} pending jobs of {len(QUEUED_TYPES)} types, one store holding half. wall: median / p90 of "
          f"{args.reps} interleaved reps (client side, ms); cpu: server CPU per claim (ms), and its difference from "
          "the FIFO claim's; pk: server CPU of 1000 primary-key probes (this machine's speed); jobs: claimed; "
          "stores: in the claim")
    print(f"{'stores':>7} {'queue':>10} {'limit':>5}  {'variant':<12} {'wall':>15} {'cpu':>7} {'- fifo':>7} "
          f"{'pk':>5} {'jobs':>5} {'stores':>6}")
    largest = max(args.stores)
    for n_stores in args.stores:
        queues = [("due", dict(due=True))]
        if n_stores == largest:
            queues += [("served lately", dict(due=True, served_lately=True)),
                       ("+unhandled", dict(due=True, unhandled_stores=1000)), ("none due", dict(due=False))]
        for label, fill_args in queues:
            fill(engine, args.jobs, n_stores, **fill_args)
            variants = list(LATENCY_VARIANTS) if label != "none due" else ["fifo", "v2", "v3", "v3 handlers"]
            if label == "+unhandled":
                variants = ["fifo", "v2", "v3", "v3 handlers", "v3 3 of 4"]
            for limit in args.limits:
                res = measure(engine, variants, limit, args.reps)
                fifo_cpu = res["fifo"][3]
                for variant in variants:
                    wall_med, wall_p90, jobs, cpu_ms = res[variant]
                    served = stores_in(engine, variant, limit) if jobs else 0
                    print(f"{n_stores:>7} {label:>10} {limit:>5}  {variant:<12} {wall_med:>7.2f} / {wall_p90:>5.2f} "
                          f"{cpu_ms:>7.2f} {cpu_ms - fifo_cpu:>7.2f} {res['pk']:>5.2f} {jobs:>5} {served:>6}",
                          flush=True)


def cmd_explain(args) -> None:
    import psycopg2

    url = database_url()
    engine = fresh_schema(url)
    fill(engine, args.jobs, args.stores[-1])
    for _ in range(5):  # warm, as in `latency` (and, as there, every rolled-back claim leaves its pages not
        for variant in ("v3", "v3 3 of 4", "fifo"):  # all-visible: the store heads need heap checks, as in production)
            timed_claim(engine, variant, args.limit)
    base = {"limit": args.limit, "worker": WORKER, "lease_s": 300, "rescue_limit": 1000, "max_per_store": None,
            "start_types": "{}"}
    conn = psycopg2.connect(url)
    conn.notices = []  # every notice (psycopg2 keeps the last 50 by default)
    cur = conn.cursor()
    cases = (("fair claim v3, untyped (queries.CLAIM)", queries.CLAIM, dict(job_types=None), True),
             (f"fair claim v3, one type ({QUEUED_TYPES[0]!r}, `?type=`)", queries.CLAIM,
              dict(job_types=array_literal([QUEUED_TYPES[0]])), True),
             (f"fair claim v3, types {list(QUEUED_TYPES[:3])} (3 of the 4 queued)", queries.CLAIM,
              dict(job_types=array_literal(sorted(QUEUED_TYPES[:3]))), True),
             ("FIFO claim (FIFO_CLAIM)", FIFO_CLAIM, dict(job_types=None), False))
    for title, statement, extra, nested in cases:
        sql = text(statement).compile(engine, compile_kwargs={}).string  # :name -> %(name)s
        if nested:
            cur.execute("LOAD 'auto_explain'")
            for name, value in (("log_min_duration", "0"), ("log_analyze", "on"), ("log_buffers", "on"),
                                ("log_timing", "on"), ("log_nested_statements", "on"), ("log_level", "notice")):
                cur.execute(f"SET auto_explain.{name} = '{value}'")
        del conn.notices[:]
        cur.execute("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + sql, dict(base, **extra))
        plan = [row[0] for row in cur.fetchall()]
        notices = list(conn.notices)
        conn.rollback()
        if nested:
            cur.execute("SET auto_explain.log_min_duration = -1")
            conn.commit()
        print(f"=== {title}, {args.stores[-1]} stores, {args.jobs:,} pending, limit {args.limit}")
        print("\n".join(plan))
        for notice in notices:
            if "Query Text: EXPLAIN" in notice:
                continue  # the outer statement again
            print("--- inside jobs_fair_claim(), auto_explain:")
            print(notice.strip())
        print()
    conn.close()


def enqueue_scenario(engine, job_ms: int) -> None:
    with engine.begin() as conn:
        conn.execute(text("TRUNCATE jobs, job_store_queues RESTART IDENTITY"))
    with engine.begin() as conn:  # the big store first ...
        conn.execute(text("INSERT INTO jobs (type, store_id, payload) SELECT 'bench.work', 'big', "
                          "jsonb_build_object('ms', :ms) FROM generate_series(1, 5000)"), {"ms": job_ms})
    time.sleep(0.01)
    with engine.begin() as conn:  # ... then 99 stores x 50
        conn.execute(text("INSERT INTO jobs (type, store_id, payload) SELECT 'bench.work', 'small-' || (g / 50), "
                          "jsonb_build_object('ms', :ms) FROM generate_series(0, 99 * 50 - 1) AS g"), {"ms": job_ms})
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE jobs"))


def first_starts(engine, since=None) -> dict:
    with engine.connect() as conn:
        return {r[0]: r[1] for r in conn.execute(text(
            "SELECT store_id, min(started_at) FROM jobs WHERE started_at IS NOT NULL GROUP BY store_id"))}


def summary(values: list, fmt: str = "8.3f") -> str:
    values = sorted(values)
    return (f"median {statistics.median(values):{fmt}}  p90 {values[int(len(values) * 0.9)]:{fmt}}  "
            f"max {values[-1]:{fmt}}")


def cmd_first_job(args) -> None:
    import logging

    from jobprocessor import processor

    logging.getLogger("jobprocessor").setLevel(logging.WARNING)  # one log line per call: not what is measured

    url = database_url()
    engine = fresh_schema(url)
    settings = Settings.from_env({}, DATABASE_URL=normalise_database_url(url), JOBS_CONCURRENCY=args.concurrency)
    fair_claim = queries.claim

    def fifo_claim(conn, **kwargs):
        kwargs.pop("max_per_store", None)
        kwargs.pop("tick", None)  # the baseline records no tick
        return claim_fifo(conn, **kwargs)

    print(f"1 store x 5,000 jobs enqueued first, then 99 stores x 50; process_pending(limit={args.limit}) back to "
          f"back, {args.concurrency} threads, jobs of {args.job_ms} ms")
    print("seconds from the first call until each store's first job started (jobs.started_at):")
    for name, claim in (("fifo", fifo_claim), ("fair", fair_claim)):
        enqueue_scenario(engine, args.job_ms)
        with engine.connect() as conn:
            t0 = conn.execute(text("SELECT clock_timestamp()")).scalar()
        queries.claim = claim  # the pipeline is the same; only the claim differs
        try:
            calls = 0
            while len(first_starts(engine)) < 100:
                processor.process_pending(engine, settings, limit=args.limit, budget_s=60)
                calls += 1
        finally:
            queries.claim = fair_claim
        starts = {store: (at - t0).total_seconds() for store, at in first_starts(engine).items()}
        small = [s for store, s in starts.items() if store != "big"]
        print(f"  {name}: big store {starts['big']:6.3f}   small stores: {summary(small)}   ({calls} calls)")

    print("cron defaults (limit 10, one call a minute): the call in which each store's first job starts "
          "(claims only):")
    for name, fair in (("fifo", False), ("fair", True)):
        enqueue_scenario(engine, args.job_ms)
        first_call: dict = {}
        calls = 0
        while len(first_call) < 100:
            calls += 1
            with engine.begin() as conn:
                claim = queries.claim if fair else claim_fifo
                for row in claim(conn, limit=10, worker=WORKER, lease_s=300).jobs:
                    first_call.setdefault(row["store_id"], calls)
        small = [c for store, c in first_call.items() if store != "big"]
        print(f"  {name}: big store call {first_call['big']}   small stores: {summary(small, '4.0f')}   "
              f"=> the last store starts after {max(small) - 1} minutes")


def cmd_profile(args) -> None:
    """Where the fair claim's cost goes: server CPU per call of the selection alone (v3 with each kind of type set,
    v2), against FIFO's locked read, on the `latency` queue at the largest store count."""
    engine = fresh_schema(database_url())
    fill(engine, args.jobs, args.stores[-1])
    install_v2(engine)
    handlers = array_literal(HANDLER_TYPES)
    three = array_literal(sorted(QUEUED_TYPES[:3]))
    statements = {
        "v3 jobs_fair_claim(limit)": "SELECT count(*) FROM jobs_fair_claim(:limit)",
        "v3 typed": f"SELECT count(*) FROM jobs_fair_claim(:limit, ARRAY['{QUEUED_TYPES[0]}'])",
        "v3 handlers' types": f"SELECT count(*) FROM jobs_fair_claim(:limit, CAST('{handlers}' AS text[]))",
        "v3 3 of 4 types": f"SELECT count(*) FROM jobs_fair_claim(:limit, CAST('{three}' AS text[]))",
        "v2 (sql/024), same queue": "SELECT count(*) FROM bench_fair_claim_v2(:limit)",
        "v2 typed": f"SELECT count(*) FROM bench_fair_claim_v2(:limit, '{QUEUED_TYPES[0]}')",
        "FIFO locked read": "SELECT count(*) FROM (SELECT id FROM jobs WHERE status = 'pending' AND run_at <= now() "
                            "ORDER BY priority, run_at, id LIMIT :limit FOR UPDATE SKIP LOCKED) AS x",
        "1000 primary-key probes": CALIBRATION,
    }
    print(f"{args.stores[-1]} stores, {args.jobs:,} pending of {len(QUEUED_TYPES)} types; server CPU per call (ms) "
          f"over {args.reps * 5} calls each rolled back, two rounds")
    with engine.connect() as conn:
        cpu = ServerCpu(conn)
        for _ in range(2):
            for name, sql in statements.items():
                for _ in range(5):
                    conn.execute(text(sql), {"limit": args.limit})
                    conn.rollback()
                before = cpu.ms()
                for _ in range(args.reps * 5):
                    rows = conn.execute(text(sql), {"limit": args.limit}).scalar()
                    conn.rollback()
                after = cpu.ms()
                spent = "n/a" if before is None or after is None else f"{(after - before) / (args.reps * 5):.2f}"
                print(f"  {name:26s} rows {rows:5d}  cpu {spent}")


def cmd_enqueue(args) -> None:
    """What the directory's triggers cost an enqueue: queries.enqueue (the real INSERT), one job per transaction and
    batches of 1000 over 1000 stores, with the insert trigger of the directory (sql/025) enabled and disabled,
    alternating."""
    engine = fresh_schema(database_url())
    fill(engine, args.jobs, args.stores[-1])  # the directory holds a row for every store: the common case

    def job(i: int) -> dict:
        return {"type": "bench.work", "payload": {}, "priority": 5, "store_id": f"store-{i % (args.stores[-1] - 1)}",
                "user_id": None, "run_at": None, "max_attempts": 3, "idempotency_key": None, "batch_id": None}

    singles, batches = args.reps * 50, max(args.reps // 4, 5)
    print(f"server CPU per job (us), {singles} single-job transactions and {batches} batches of 1000 per round")
    with engine.connect() as conn:
        cpu = ServerCpu(conn)
        for _ in range(3):
            for enabled in (True, False):
                conn.execute(text("ALTER TABLE jobs {} TRIGGER jobs_store_queues_on_insert".format(
                    "ENABLE" if enabled else "DISABLE")))
                conn.commit()
                for i in range(20):  # warm: plans and the trigger function compiled in this session
                    queries.enqueue(conn, [job(i)])
                    conn.commit()
                before = cpu.ms()
                for i in range(singles):
                    queries.enqueue(conn, [job(i)])
                    conn.commit()
                single = cpu.ms()
                for b in range(batches):
                    queries.enqueue(conn, [job(b * 1000 + i) for i in range(1000)])
                    conn.commit()
                done = cpu.ms()
                if before is None or done is None:
                    print("  (no /proc for the server: CPU not measurable)")
                    return
                print(f"  triggers {'on ' if enabled else 'off'}  single job {(single - before) / singles * 1000:6.0f}"
                      f"   in a batch of 1000 {(done - single) / (batches * 1000) * 1000:6.1f}")
        conn.execute(text("ALTER TABLE jobs ENABLE TRIGGER jobs_store_queues_on_insert"))
        conn.commit()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("latency", "explain", "first-job", "profile", "enqueue", "flow",
                                            "flow-explain", "flow-settle", "flow-ab"))
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--stores", type=lambda s: [int(x) for x in s.split(",")], default=[10, 100, 1000])
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--limits", type=lambda s: [int(x) for x in s.split(",")], default=[100, 10])
    parser.add_argument("--reps", type=int, default=40)
    parser.add_argument("--steady-claims", type=int, default=12,
                        help="flow: committed claims before a 'steady' state is measured; flow-settle: claims "
                             "measured")
    parser.add_argument("--job-ms", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--variants", type=lambda s: s.split(","), default=None,
                        help=f"flow-ab: the variants to interleave (default: {','.join(FLOW_AB_VARIANTS)})")
    args = parser.parse_args()
    {"latency": cmd_latency, "explain": cmd_explain, "first-job": cmd_first_job,
     "profile": cmd_profile, "enqueue": cmd_enqueue, "flow": cmd_flow,
     "flow-explain": cmd_flow_explain, "flow-settle": cmd_flow_settle, "flow-ab": cmd_flow_ab}[args.command](args)


if __name__ == "__main__":
    main()
