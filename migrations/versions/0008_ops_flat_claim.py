"""claim cost flat with history: dashboard indexes split into live and finished halves, built CONCURRENTLY
(sql/055_ops_dashboard_indexes_v1.sql); autovacuum of jobs after a fixed number of dead rows
(sql/054_jobs_storage_v2.sql)

Revision ID: 0008_ops_flat_claim
Revises: 0007_store_queues
"""
from alembic import op

from jobprocessor.sqlfiles import execute_sql_file, execute_sql_file_statements

revision = "0008_ops_flat_claim"
down_revision = "0007_store_queues"
branch_labels = None
depends_on = None

SPLIT_INDEXES = ("jobs_type_status_live_idx", "jobs_type_status_finished_idx", "jobs_store_status_live_idx",
                 "jobs_store_status_finished_idx", "jobs_user_store_status_live_idx",
                 "jobs_user_store_status_finished_idx")


def upgrade():
    execute_sql_file(op.get_bind(), "054_jobs_storage_v2.sql")
    # CONCURRENTLY cannot run in a transaction: step out of the revision's one, statement by statement as psql does
    with op.get_context().autocommit_block():
        execute_sql_file_statements(op.get_bind(), "055_ops_dashboard_indexes_v1.sql")


def downgrade():
    # back to the whole-history indexes of sql/050 (idempotent: it builds the three that are missing) before the
    # split ones go, so the listings always have an index; then the v1 vacuum trigger
    with op.get_context().autocommit_block():
        execute_sql_file_statements(op.get_bind(), "050_ops_indexes_v1.sql")
        for name in SPLIT_INDEXES:
            op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")
    execute_sql_file(op.get_bind(), "054_jobs_storage_v1.sql")
