-- Autovacuum of the hot jobs table, v2: a fixed number of dead rows, whatever the table's size (issue 5). Applied
-- by Alembic revision 0008 and runnable by hand:  psql -v ON_ERROR_STOP=1 -f sql/054_jobs_storage_v2.sql
-- Idempotent: setting the same storage parameters again changes nothing. Never edit this file once released: add a
-- _v3 file instead. Changes only the vacuum trigger of 054_jobs_storage_v1.sql; its other settings stay.
--
-- Why: v1 vacuumed after 1000 + 1% dead rows. What a dead row costs the claim does not depend on the table's size:
-- its dead entry in the pending-only indexes (jobs_claim_idx, jobs_fair_idx) sits in front of the live jobs and
-- every claim walks past it. A share of the table lets that pile grow with the history: 1% of 12M rows is 120k dead
-- rows, which a burst leaves behind for good (measured: the claim stays at 2.1x its fresh latency, 3,040 buffers
-- instead of 1,421, until more churn comes; docs/BENCHMARKS.md). A fixed threshold keeps the pile as small at 12M
-- rows as at 1M. The price is more frequent vacuums of a big table (each one reads every index): about one per
-- 5,000 jobs through the queue (each job leaves two dead rows), a few seconds each at 10M rows.
SET lock_timeout = '10s';
SET statement_timeout = '60s';

-- (squawk's prefer-robust-stmts: setting storage parameters is idempotent, a re-run sets the same values)
-- squawk-ignore prefer-robust-stmts
ALTER TABLE jobs SET (
    -- vacuum after 10000 dead rows, at any table size (v1: 1000 + 1%)
    autovacuum_vacuum_threshold = 10000,
    autovacuum_vacuum_scale_factor = 0
);

RESET lock_timeout;
RESET statement_timeout;
