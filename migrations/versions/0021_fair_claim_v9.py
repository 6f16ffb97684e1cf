"""fair claim v9: flow control in fewer statements, and one store in one read (sql/034_fair_claim_v9.sql)

Revision ID: 0021_fair_claim_v9
Revises: 0020_fair_claim_v8
"""
from alembic import op

from jobprocessor.sqlfiles import execute_sql_file

revision = "0021_fair_claim_v9"
down_revision = "0020_fair_claim_v8"
branch_labels = None
depends_on = None


def upgrade():
    execute_sql_file(op.get_bind(), "034_fair_claim_v9.sql")


def downgrade():
    execute_sql_file(op.get_bind(), "033_fair_claim_v8.sql")
    op.execute("DROP FUNCTION IF EXISTS jobs_fair_claim_one_store(integer, text[], integer, bigint[])")
