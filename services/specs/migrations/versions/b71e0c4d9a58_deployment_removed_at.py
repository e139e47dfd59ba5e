"""deployments removed from their environment

Revision ID: b71e0c4d9a58
Revises: a3c91e5b7d20
Create Date: 2026-11-30 03:40:00.000000
"""
from alembic import op
import sqlalchemy as sa


revision = 'b71e0c4d9a58'
down_revision = 'a3c91e5b7d20'
branch_labels = None
depends_on = None


def _schema():
    return op.get_context().version_table_schema


def upgrade() -> None:
    # When the application was removed from the environment (DeleteApplication / undeploy).
    with op.batch_alter_table('deployments', schema=_schema()) as batch_op:
        batch_op.add_column(sa.Column('removed_at', sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('deployments', schema=_schema()) as batch_op:
        batch_op.drop_column('removed_at')
