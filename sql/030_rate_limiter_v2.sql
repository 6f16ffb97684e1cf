-- The shared OpenAI rate limiter, v2: a per-second window of the tokens charged, beside the tokens used (issue 10).
-- Applied by Alembic revision 0010_openai_output_stats and runnable by hand:
--   psql -v ON_ERROR_STOP=1 -f sql/030_rate_limiter_v2.sql
-- Idempotent (ADD COLUMN IF NOT EXISTS). Never edit this file once released: add a _v3 file instead.
-- Locks: ACCESS EXCLUSIVE on rate_limiter (one row per limiter) for an instant; a constant default is stored in the
-- catalog, no row is rewritten. Reservations and settlements wait that instant.
--
-- Why: a call is charged what OpenAI counts when it arrives (the larger of its output cap and its input estimate)
-- and nothing is given back, so what counts against OPENAI_TPM is the charge, not the answer's usage. The stats
-- (GET /rate-limiter/stats: tokens_charged, tokens_utilisation_pct) read this window; window_tokens keeps the usage.
SET lock_timeout = '10s';
SET statement_timeout = '60s';

ALTER TABLE rate_limiter ADD COLUMN IF NOT EXISTS window_charged bigint[] NOT NULL DEFAULT '{}';

RESET lock_timeout;
RESET statement_timeout;
