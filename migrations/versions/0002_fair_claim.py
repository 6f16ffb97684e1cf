"""fair claiming across stores: jobs_fair_idx, jobs_fair_type_idx, job_store_turns, jobs_fair_claim()
(sql/020_jobs_fair_idx_v1.sql, sql/021_jobs_fair_type_idx_v1.sql, sql/022_fair_claim_v1.sql)

Revision ID: 0002_fair_claim
Revises: 0001_jobs
"""
from alembic import op

from jobprocessor.sqlfiles import execute_sql_file, execute_sql_file_statements

revision = "0002_fair_claim"
down_revision = "0001_jobs"
branch_labels = None
depends_on = None


def upgrade():
    # CREATE INDEX CONCURRENTLY cannot run in a transaction: the index files run statement by statement, autocommit
    with op.get_context().autocommit_block():
        execute_sql_file_statements(op.get_bind(), "020_jobs_fair_idx_v1.sql")
        execute_sql_file_statements(op.get_bind(), "021_jobs_fair_type_idx_v1.sql")
    execute_sql_file(op.get_bind(), "022_fair_claim_v1.sql")


def downgrade():
    op.execute("DROP FUNCTION IF EXISTS jobs_fair_claim(integer, text, integer, bigint[])")
    op.execute("DROP FUNCTION IF EXISTS jobs_fair_claim_probe(smallint, text, bigint[], integer[], text[], "
               "timestamptz[], bigint[], integer[])")
    op.execute("DROP TABLE IF EXISTS job_store_turns")
    with op.get_context().autocommit_block():
        op.execute("DROP INDEX CONCURRENTLY IF EXISTS jobs_fair_type_idx")
        op.execute("DROP INDEX CONCURRENTLY IF EXISTS jobs_fair_idx")
