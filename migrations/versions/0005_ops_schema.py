"""archive + cleanup_old_jobs, health and alerts views, job_schedules, jobs storage settings (sql/051-054)

Revision ID: 0005_ops_schema
Revises: 0004_ops_indexes
"""
from alembic import op

from jobprocessor.sqlfiles import execute_sql_file

revision = "0005_ops_schema"
down_revision = "0004_ops_indexes"
branch_labels = None
depends_on = None

FILES = ("051_jobs_archive_cleanup_v1.sql", "052_queue_health_v1.sql", "053_job_schedules_v1.sql",
         "054_jobs_storage_v1.sql")


def upgrade():
    for name in FILES:
        execute_sql_file(op.get_bind(), name)


def downgrade():
    op.execute("ALTER TABLE jobs RESET (fillfactor, autovacuum_vacuum_threshold, autovacuum_vacuum_scale_factor, "
               "autovacuum_vacuum_insert_threshold, autovacuum_vacuum_insert_scale_factor, "
               "autovacuum_analyze_threshold, autovacuum_analyze_scale_factor, vacuum_index_cleanup, "
               "autovacuum_vacuum_cost_delay)")
    op.execute("DROP TABLE IF EXISTS job_schedules")
    op.execute("DROP VIEW IF EXISTS job_queue_alerts")
    op.execute("DROP VIEW IF EXISTS job_queue_health")
    op.execute("DROP TABLE IF EXISTS job_queue_alert_settings")
    op.execute("DROP FUNCTION IF EXISTS cleanup_old_jobs(interval, interval, integer, integer)")
    op.execute("DROP TABLE IF EXISTS jobs_archive")
