"""an operator's first hour: the traceback of a job's last failure (sql/015_jobs_last_traceback_v1.sql)

Revision ID: 0013_ops_hardening
Revises: 0016_flow_control
"""
from alembic import op

from jobprocessor.sqlfiles import execute_sql_file

revision = "0013_ops_hardening"
down_revision = "0016_flow_control"
branch_labels = None
depends_on = None


def upgrade():
    execute_sql_file(op.get_bind(), "015_jobs_last_traceback_v1.sql")


def downgrade():
    op.execute("ALTER TABLE jobs DROP COLUMN IF EXISTS last_traceback")
