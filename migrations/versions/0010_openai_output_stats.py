"""OpenAI token accounting as OpenAI documents it: the limiter's window of tokens charged
(sql/030_rate_limiter_v2.sql); what answers use per job type and model, and the caps of rescheduled cut-off answers
(sql/031_openai_output_stats_v1.sql)

Revision ID: 0010_openai_output_stats
Revises: 0011_trigger_replays
"""
from alembic import op

from jobprocessor.sqlfiles import execute_sql_file

revision = "0010_openai_output_stats"
down_revision = "0011_trigger_replays"
branch_labels = None
depends_on = None


def upgrade():
    execute_sql_file(op.get_bind(), "030_rate_limiter_v2.sql")
    execute_sql_file(op.get_bind(), "031_openai_output_stats_v1.sql")


def downgrade():
    op.execute("DROP TABLE IF EXISTS openai_output_retry_caps")
    op.execute("DROP TABLE IF EXISTS openai_output_stats")
    op.execute("ALTER TABLE rate_limiter DROP COLUMN IF EXISTS window_charged")
