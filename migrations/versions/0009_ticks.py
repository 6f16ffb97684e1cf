"""ticks that use their budget: deferral columns on jobs, tick history, runtime estimates, alerts v2
(sql/012_jobs_deferrals_v1.sql, 056_job_ticks_v1.sql, 057_job_type_runtimes_v1.sql, 058_queue_health_v2.sql)

Revision ID: 0009_ticks
Revises: 0008_ops_flat_claim
"""
from alembic import op

from jobprocessor.sqlfiles import execute_sql_file

revision = "0009_ticks"
down_revision = "0008_ops_flat_claim"
branch_labels = None
depends_on = None

FILES = ("012_jobs_deferrals_v1.sql", "056_job_ticks_v1.sql", "057_job_type_runtimes_v1.sql",
         "058_queue_health_v2.sql")


def upgrade():
    for name in FILES:
        execute_sql_file(op.get_bind(), name)


def downgrade():
    # the view selects the settings' columns, so it goes first and v1's comes back after them
    op.execute("DROP VIEW IF EXISTS job_queue_alerts")
    op.execute("ALTER TABLE job_queue_alert_settings DROP COLUMN IF EXISTS no_tick_after_s, "
               "DROP COLUMN IF EXISTS stuck_handler_after_s")
    execute_sql_file(op.get_bind(), "052_queue_health_v1.sql")
    op.execute("DROP TABLE IF EXISTS job_type_runtimes")
    op.execute("DROP TABLE IF EXISTS job_ticks")
    op.execute("ALTER TABLE jobs DROP COLUMN IF EXISTS deferred_since, DROP COLUMN IF EXISTS deferrals")
