"""fair claim v6: the jobs a step gets are taken in one statement, not one at a time (sql/029_fair_claim_v6.sql)

Revision ID: 0018_fair_claim_v6
Revises: 0017_fair_claim_v5
"""
from alembic import op

from jobprocessor.sqlfiles import execute_sql_file

revision = "0018_fair_claim_v6"
down_revision = "0017_fair_claim_v5"
branch_labels = None
depends_on = None


def upgrade():
    execute_sql_file(op.get_bind(), "029_fair_claim_v6.sql")


def downgrade():
    execute_sql_file(op.get_bind(), "029_fair_claim_v5.sql")
