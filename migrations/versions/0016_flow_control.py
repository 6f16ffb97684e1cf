"""tenant flow control: pauses, per-store limits, weights and token-quota holds (sql/027_job_flow_control_v1.sql),
the fair claim v4 that honours them (sql/028_fair_claim_v4.sql), per-store lag alerts (sql/061_queue_health_v4.sql)
and why a job waits (sql/060_job_wait_v1.sql)

Revision ID: 0016_flow_control
Revises: 0015_workflows
"""
from alembic import op

from jobprocessor.sqlfiles import execute_sql_file

revision = "0016_flow_control"
down_revision = "0015_workflows"
branch_labels = None
depends_on = None

FILES = ("027_job_flow_control_v1.sql", "028_fair_claim_v4.sql", "061_queue_health_v4.sql", "060_job_wait_v1.sql")


def upgrade():
    for name in FILES:
        execute_sql_file(op.get_bind(), name)


def downgrade():
    # why a job waits; the alerts view of v2 (its settings' new columns after the view that reads them); the claim
    # of v3 (sql/026 replaces the function and makes its types again); then what only flow control has
    op.execute("DROP FUNCTION IF EXISTS jobs_wait_reasons(bigint, text[])")
    op.execute("DROP VIEW IF EXISTS job_queue_alerts")
    op.execute("DROP FUNCTION IF EXISTS job_store_lag(double precision, integer)")
    op.execute("ALTER TABLE job_queue_alert_settings DROP COLUMN IF EXISTS store_lag_warning_s, "
               "DROP COLUMN IF EXISTS store_lag_critical_s")
    execute_sql_file(op.get_bind(), "058_queue_health_v2.sql")
    execute_sql_file(op.get_bind(), "026_fair_claim_v3.sql")
    for statement in ("DROP FUNCTION IF EXISTS jobs_fair_flow_plan(jobs_fair_queue_v4[], text[])",
                      "DROP TYPE IF EXISTS jobs_fair_flow",
                      "DROP TYPE IF EXISTS jobs_fair_ask_v4",
                      "DROP TYPE IF EXISTS jobs_fair_queue_v4",
                      "DROP FUNCTION IF EXISTS jobs_flow_usage(text[])",
                      "DROP FUNCTION IF EXISTS jobs_flow_limits(text[])",
                      "DROP TABLE IF EXISTS job_store_quota_holds",
                      "DROP TABLE IF EXISTS job_store_starts",
                      "DROP TABLE IF EXISTS job_store_limits",
                      "DROP TABLE IF EXISTS job_pauses"):
        op.execute(statement)
