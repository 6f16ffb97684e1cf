-- The replay record of signed triggers, v1. Applied by Alembic revision 0011_trigger_replays and runnable by hand:
--   psql -v ON_ERROR_STOP=1 -f sql/070_trigger_replays_v1.sql
-- Idempotent (IF NOT EXISTS everywhere). Never edit this file once released: add a _v2 file instead.
-- Locks: creates one new table; touches no existing table.

SET lock_timeout = '10s';
SET statement_timeout = '60s';

-- One row per signed trigger admitted recently (jobprocessor/triggers/replay_store.py): a QStash message's jti or
-- a timestamped HMAC signature, kept until `expires_at`, after which that credential could no longer verify
-- anyway. Written only after the signature verified; each write first deletes a bounded batch of rows past their
-- time, so the table holds about the triggers of the last few minutes.
CREATE TABLE IF NOT EXISTS trigger_replays (
    method      text        NOT NULL CONSTRAINT trigger_replays_method_check CHECK (method IN ('qstash', 'hmac')),
    key         text        NOT NULL CONSTRAINT trigger_replays_key_check CHECK (length(key) BETWEEN 1 AND 256),
    expires_at  timestamptz NOT NULL,
    CONSTRAINT trigger_replays_pkey PRIMARY KEY (method, key)
);

-- Serves the prune (rows past expires_at, oldest first).
CREATE INDEX IF NOT EXISTS trigger_replays_expires_idx ON trigger_replays (expires_at);

RESET lock_timeout;
RESET statement_timeout;
