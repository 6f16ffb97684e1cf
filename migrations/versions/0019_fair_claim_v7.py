"""fair claim v7: cheaper flow plan, head probes and locked read of heads (sql/032_fair_claim_v7.sql)

Revision ID: 0019_fair_claim_v7
Revises: 0018_fair_claim_v6
"""
from alembic import op

from jobprocessor.sqlfiles import execute_sql_file

revision = "0019_fair_claim_v7"
down_revision = "0018_fair_claim_v6"
branch_labels = None
depends_on = None


def upgrade():
    execute_sql_file(op.get_bind(), "032_fair_claim_v7.sql")


def downgrade():
    execute_sql_file(op.get_bind(), "029_fair_claim_v6.sql")
