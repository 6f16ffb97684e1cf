"""fair claim v8: the claim order computed once, the turns inlined, fewer loops per step (sql/033_fair_claim_v8.sql)

Revision ID: 0020_fair_claim_v8
Revises: 0019_fair_claim_v7
"""
from alembic import op

from jobprocessor.sqlfiles import execute_sql_file

revision = "0020_fair_claim_v8"
down_revision = "0019_fair_claim_v7"
branch_labels = None
depends_on = None


def upgrade():
    execute_sql_file(op.get_bind(), "033_fair_claim_v8.sql")


def downgrade():
    execute_sql_file(op.get_bind(), "032_fair_claim_v7.sql")
