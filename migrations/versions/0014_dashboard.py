"""operator dashboard: the action log job_actions and the sign-in throttle dashboard_signin_failures
(sql/080_dashboard_v1.sql)

Revision ID: 0014_dashboard
Revises: 0012_fair_claim_v3
"""
from alembic import op

from jobprocessor.sqlfiles import execute_sql_file

revision = "0014_dashboard"
down_revision = "0012_fair_claim_v3"
branch_labels = None
depends_on = None


def upgrade():
    execute_sql_file(op.get_bind(), "080_dashboard_v1.sql")


def downgrade():
    op.execute("DROP TABLE IF EXISTS dashboard_signin_failures")
    op.execute("DROP TABLE IF EXISTS job_actions")
