"""deployment sets

Revision ID: eaf5d4d63212
Revises: f827980e7fe2
Create Date: 2026-11-30 03:06:00.569599
"""
from alembic import op
import sqlalchemy as sa


revision = 'eaf5d4d63212'
down_revision = 'f827980e7fe2'
branch_labels = None
depends_on = None


def _schema():
    # create_table is mapped into the service's schema by schema_translate_map; ALTER TABLE is
    # not, so name the schema (the one the version table lives in; None on SQLite).
    return op.get_context().version_table_schema


def upgrade() -> None:
    # The deployment set a deployment produced and the GitOps commit holding it.
    with op.batch_alter_table('deployments', schema=_schema()) as batch_op:
        batch_op.add_column(sa.Column('set_hash', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('gitops_commit', sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('deployments', schema=_schema()) as batch_op:
        batch_op.drop_column('gitops_commit')
        batch_op.drop_column('set_hash')

