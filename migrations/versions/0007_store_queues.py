"""the directory of store queues for the fair claim: job_store_queues + triggers, jobs_fair_claim() v2
(sql/023_job_store_queues_v1.sql, sql/024_fair_claim_v2.sql)

Revision ID: 0007_store_queues
Revises: 0006_rate_limiter
"""
from alembic import op

from jobprocessor.sqlfiles import execute_sql_file, execute_sql_file_statements

revision = "0007_store_queues"
down_revision = "0006_rate_limiter"
branch_labels = None
depends_on = None


def upgrade():
    # statement by statement, each its own transaction: a CREATE TRIGGER holds its lock on jobs for an instant, not
    # until the fill of the directory (which reads every pending job) has committed
    with op.get_context().autocommit_block():
        execute_sql_file_statements(op.get_bind(), "023_job_store_queues_v1.sql")
    execute_sql_file(op.get_bind(), "024_fair_claim_v2.sql")


def downgrade():
    # back to v1 of the claim (it does not read the directory), then the directory and its triggers
    execute_sql_file(op.get_bind(), "022_fair_claim_v1.sql")
    op.execute("DROP TRIGGER IF EXISTS jobs_store_queues_on_update ON jobs")
    op.execute("DROP TRIGGER IF EXISTS jobs_store_queues_on_insert ON jobs")
    op.execute("DROP FUNCTION IF EXISTS jobs_note_updated_pending()")
    op.execute("DROP FUNCTION IF EXISTS jobs_note_inserted_pending()")
    op.execute("DROP FUNCTION IF EXISTS job_store_queues_note(smallint[], text[], timestamptz[])")
    op.execute("DROP FUNCTION IF EXISTS job_store_queues_add(smallint[], text[], timestamptz[])")
    op.execute("DROP FUNCTION IF EXISTS job_store_queues_lower(smallint[], text[], timestamptz[])")
    op.execute("DROP TABLE IF EXISTS job_store_arrivals")
    op.execute("DROP TABLE IF EXISTS job_store_queues")
