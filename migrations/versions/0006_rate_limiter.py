"""shared OpenAI rate limiter: rate_limiter and rate_limiter_waits (sql/030_rate_limiter_v1.sql)

Revision ID: 0006_rate_limiter
Revises: 0005_ops_schema
"""
from alembic import op

from jobprocessor.sqlfiles import execute_sql_file

revision = "0006_rate_limiter"
down_revision = "0005_ops_schema"
branch_labels = None
depends_on = None


def upgrade():
    execute_sql_file(op.get_bind(), "030_rate_limiter_v1.sql")


def downgrade():
    op.execute("DROP TABLE IF EXISTS rate_limiter_waits")
    op.execute("DROP TABLE IF EXISTS rate_limiter")
