"""fair claim v3: the directory of store queues learns job types (sql/025_job_store_queues_v2.sql), jobs_fair_claim()
v3 with a set of types (sql/026_fair_claim_v3.sql)

Revision ID: 0012_fair_claim_v3
Revises: 0010_openai_output_stats
"""
from alembic import op

from jobprocessor.sqlfiles import execute_sql_file, execute_sql_file_statements

revision = "0012_fair_claim_v3"
down_revision = "0010_openai_output_stats"
branch_labels = None
depends_on = None

V3_ONLY = (
    "DROP FUNCTION IF EXISTS jobs_fair_claim(integer, text[], integer, bigint[])",
    "DROP FUNCTION IF EXISTS jobs_fair_head(smallint, text, text[], text[], bigint[])",
    "DROP TYPE IF EXISTS jobs_fair_ask",
    "DROP TYPE IF EXISTS jobs_fair_queue",
    "DROP FUNCTION IF EXISTS job_store_arrivals_merge()",
    "DROP FUNCTION IF EXISTS job_store_queues_serve(text[], integer[])",
    "DROP FUNCTION IF EXISTS job_store_queues_tighten(smallint[], text[])",
    "DROP FUNCTION IF EXISTS job_store_queues_exact(smallint, text, text[])",
    "DROP FUNCTION IF EXISTS job_store_queues_cover(smallint[], text[], text[], timestamptz[])",
    "DROP FUNCTION IF EXISTS job_store_queues_create(smallint[], text[], text[], timestamptz[])",
    "DROP FUNCTION IF EXISTS job_store_queues_widen(smallint[], text[], text[], timestamptz[])",
    "DROP FUNCTION IF EXISTS jobs_pending_types()",
    "DROP FUNCTION IF EXISTS job_store_queues_pairs(smallint[], text[], text[], timestamptz[])",
    "DROP FUNCTION IF EXISTS job_store_queues_covers(timestamptz, text[], timestamptz[], text, timestamptz)",
    "ALTER TABLE job_store_arrivals DROP COLUMN IF EXISTS type",
    "ALTER TABLE job_store_queues DROP COLUMN IF EXISTS type_heads",
    "ALTER TABLE job_store_queues DROP COLUMN IF EXISTS types",
)


def upgrade():
    # statement by statement, each its own transaction: the fill of the directory's types commits batch by batch,
    # and each DDL statement holds its lock for an instant only
    with op.get_context().autocommit_block():
        execute_sql_file_statements(op.get_bind(), "025_job_store_queues_v2.sql")
    execute_sql_file(op.get_bind(), "026_fair_claim_v3.sql")


def downgrade():
    # back to v2: v1's probe and claim (022), v1's directory functions and triggers (023: its fill only lowers), v2's
    # claim (024) -- after the v3 wrapper of the old signature is gone, which 022 and 024 would otherwise replace --
    # then the objects only v3 has
    op.execute("DROP FUNCTION IF EXISTS jobs_fair_claim(integer, text, integer, bigint[])")
    execute_sql_file(op.get_bind(), "022_fair_claim_v1.sql")
    with op.get_context().autocommit_block():
        execute_sql_file_statements(op.get_bind(), "023_job_store_queues_v1.sql")
    execute_sql_file(op.get_bind(), "024_fair_claim_v2.sql")
    for statement in V3_ONLY:
        op.execute(statement)
