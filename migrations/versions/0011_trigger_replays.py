"""replay record of signed triggers: trigger_replays (sql/070_trigger_replays_v1.sql)

Revision ID: 0011_trigger_replays
Revises: 0009_ticks
"""
from alembic import op

from jobprocessor.sqlfiles import execute_sql_file

revision = "0011_trigger_replays"
down_revision = "0009_ticks"
branch_labels = None
depends_on = None


def upgrade():
    execute_sql_file(op.get_bind(), "070_trigger_replays_v1.sql")


def downgrade():
    op.execute("DROP TABLE IF EXISTS trigger_replays")
