"""deployment rollbacks

Revision ID: a3c91e5b7d20
Revises: eaf5d4d63212
Create Date: 2026-11-30 03:25:00.000000
"""
from alembic import op
import sqlalchemy as sa


revision = 'a3c91e5b7d20'
down_revision = 'eaf5d4d63212'
branch_labels = None
depends_on = None


def _schema():
    return op.get_context().version_table_schema


def upgrade() -> None:
    # A rollback deploys an earlier deployment's set again: which one, and why.
    with op.batch_alter_table('deployments', schema=_schema()) as batch_op:
        batch_op.add_column(sa.Column('rollback_of', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('reason', sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('deployments', schema=_schema()) as batch_op:
        batch_op.drop_column('reason')
        batch_op.drop_column('rollback_of')
