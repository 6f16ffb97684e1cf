"""operators' indexes, built CONCURRENTLY (sql/050_ops_indexes_v1.sql)

Revision ID: 0004_ops_indexes
Revises: 0002_fair_claim
"""
from alembic import op

from jobprocessor.sqlfiles import execute_sql_file_statements

revision = "0004_ops_indexes"
down_revision = "0002_fair_claim"
branch_labels = None
depends_on = None

INDEXES = ("jobs_type_status_idx", "jobs_store_status_idx", "jobs_user_store_status_idx", "jobs_finished_idx")


def upgrade():
    # CONCURRENTLY cannot run in a transaction: step out of the revision's one, statement by statement as psql does
    with op.get_context().autocommit_block():
        execute_sql_file_statements(op.get_bind(), "050_ops_indexes_v1.sql")


def downgrade():
    with op.get_context().autocommit_block():
        for name in INDEXES:
            op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")
