"""fair claim v5: a store held back by its limits and passed over loses its place in the wait order
(sql/029_fair_claim_v5.sql)

Revision ID: 0017_fair_claim_v5
Revises: 0013_ops_hardening
"""
from alembic import op

from jobprocessor.sqlfiles import execute_sql_file

revision = "0017_fair_claim_v5"
down_revision = "0013_ops_hardening"
branch_labels = None
depends_on = None


def upgrade():
    execute_sql_file(op.get_bind(), "029_fair_claim_v5.sql")


def downgrade():
    execute_sql_file(op.get_bind(), "028_fair_claim_v4.sql")
