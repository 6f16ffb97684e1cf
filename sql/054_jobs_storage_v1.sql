-- Storage and autovacuum settings for the hot jobs table (issue 5), v1. Applied by Alembic revision 0005 and
-- runnable by hand:  psql -v ON_ERROR_STOP=1 -f sql/054_jobs_storage_v1.sql
-- Idempotent: setting the same storage parameters again changes nothing. Never edit this file once released: add a
-- _v2 file instead. Why these values, and what they cost, is in sql/README.md ("Autovacuum") and docs/SCALING.md.
--
-- Every job is written three times (insert pending, update to running, update to finished) and status is in the
-- claim index's predicate, so those updates are never HOT: each leaves a dead heap tuple AND a dead entry in
-- jobs_claim_idx that every claim walks over until VACUUM removes it. Defaults (vacuum at 20% dead rows, i.e. 2M
-- dead rows at 10M) let those entries pile up; these settings vacuum jobs after a small, fixed amount of churn.
SET lock_timeout = '10s';
SET statement_timeout = '60s';

-- (squawk's prefer-robust-stmts: setting storage parameters is idempotent, a re-run sets the same values)
-- squawk-ignore prefer-robust-stmts
ALTER TABLE jobs SET (
    -- leave 10% of each heap page free, so the new version of an updated job usually stays on its page
    -- (one page touched per transition, fewer pages for VACUUM to visit)
    fillfactor = 90,
    -- vacuum after 1000 + 1% dead rows (default 50 + 20%)
    autovacuum_vacuum_threshold = 1000,
    autovacuum_vacuum_scale_factor = 0.01,
    -- also vacuum after inserts (1000 + 1%), so pages become all-visible and counts can use index-only scans
    autovacuum_vacuum_insert_threshold = 1000,
    autovacuum_vacuum_insert_scale_factor = 0.01,
    -- keep planner statistics fresh: the pending/running share of the table changes by the minute
    autovacuum_analyze_threshold = 1000,
    autovacuum_analyze_scale_factor = 0.01,
    -- always clean the indexes: with the default (auto) VACUUM skips index cleanup when few heap pages have dead
    -- rows, which on a big table leaves exactly the dead jobs_claim_idx entries the claim walks over
    vacuum_index_cleanup = on,
    -- do not throttle this table's vacuum (default 2 ms): it runs often, on a small amount of work each time
    autovacuum_vacuum_cost_delay = 0
);

RESET lock_timeout;
RESET statement_timeout;
