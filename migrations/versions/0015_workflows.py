"""light workflows: waiting status, dependencies, batch callbacks, steps, singleton keys
(sql/013_jobs_workflows_v1.sql, sql/014_jobs_workflow_indexes_v1.sql, sql/059_queue_health_v3.sql)

Revision ID: 0015_workflows
Revises: 0014_dashboard
"""
from alembic import op

from jobprocessor.sqlfiles import execute_sql_file, execute_sql_file_statements

revision = "0015_workflows"
down_revision = "0014_dashboard"
branch_labels = None
depends_on = None


def upgrade():
    # statement by statement, each its own transaction: the new status CHECK is added NOT VALID (an instant) and
    # validated in a later transaction (a scan that lets reads and writes go on); the indexes are built CONCURRENTLY
    with op.get_context().autocommit_block():
        execute_sql_file_statements(op.get_bind(), "013_jobs_workflows_v1.sql")
        execute_sql_file_statements(op.get_bind(), "014_jobs_workflow_indexes_v1.sql")
    execute_sql_file(op.get_bind(), "059_queue_health_v3.sql")


def downgrade():
    # waiting jobs cannot stay under the old CHECK: they are cancelled (their parents' ends would never come)
    # the health view of v1 (052 also brings back v1 of the alerts view, which 058 then replaces again)
    execute_sql_file(op.get_bind(), "052_queue_health_v1.sql")
    execute_sql_file(op.get_bind(), "058_queue_health_v2.sql")
    op.execute("DROP TRIGGER IF EXISTS jobs_workflow_after_delete ON jobs")
    op.execute("DROP TRIGGER IF EXISTS jobs_workflow_after_update ON jobs")
    op.execute("DROP TRIGGER IF EXISTS jobs_workflow_on_end ON jobs")
    op.execute("DROP FUNCTION IF EXISTS jobs_workflow_after_delete()")
    op.execute("DROP FUNCTION IF EXISTS jobs_workflow_after_update()")
    op.execute("DROP FUNCTION IF EXISTS jobs_workflow_note_end()")
    op.execute("DROP FUNCTION IF EXISTS jobs_workflow_resolve(bigint[])")
    op.execute("DROP FUNCTION IF EXISTS job_batch_summary(text)")
    op.execute("DROP TABLE IF EXISTS job_steps")
    op.execute("DROP TABLE IF EXISTS job_batch_callbacks")
    op.execute("DROP TABLE IF EXISTS job_dependencies")
    op.execute("UPDATE jobs SET status = 'cancelled', completed_at = now(), "
               "last_error = 'cancelled: workflows were removed (downgrade)' WHERE status = 'waiting'")
    op.execute("ALTER TABLE jobs DROP CONSTRAINT IF EXISTS jobs_status_check")
    op.execute("ALTER TABLE jobs ADD CONSTRAINT jobs_status_check "
               "CHECK (status IN ('pending', 'running', 'completed', 'failed', 'cancelled'))")
    op.execute("DROP INDEX IF EXISTS jobs_singleton_key_idx")
    op.execute("DROP INDEX IF EXISTS jobs_waiting_idx")
    op.execute("ALTER TABLE jobs DROP CONSTRAINT IF EXISTS jobs_on_parent_failure_check")
    op.execute("ALTER TABLE jobs DROP COLUMN IF EXISTS singleton_key, DROP COLUMN IF EXISTS has_dependents, "
               "DROP COLUMN IF EXISTS on_parent_failure, DROP COLUMN IF EXISTS waits_for")
