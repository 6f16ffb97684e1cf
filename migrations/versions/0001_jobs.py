"""jobs table, claim/lease/batch indexes (sql/010_jobs_v1.sql)

Revision ID: 0001_jobs
Revises:
"""
from alembic import op

from jobprocessor.sqlfiles import execute_sql_file

revision = "0001_jobs"
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    execute_sql_file(op.get_bind(), "010_jobs_v1.sql")


def downgrade():
    op.execute("DROP TABLE IF EXISTS jobs")
