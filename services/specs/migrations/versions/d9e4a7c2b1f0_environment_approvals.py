"""approval settings per environment

Revision ID: d9e4a7c2b1f0
Revises: c5d82f1a6e39
Create Date: 2026-11-30 04:00:00.000000
"""
from alembic import op
import sqlalchemy as sa


revision = 'd9e4a7c2b1f0'
down_revision = 'c5d82f1a6e39'
branch_labels = None
depends_on = None

# What deploy_workflow's production gate required before environments carried their own
# settings; existing production environments keep exactly that.
_PRODUCTION_APPROVERS = ["role:platform-engineer", "role:admin"]


def _schema():
    return op.get_context().version_table_schema


def upgrade() -> None:
    # Whether a deployment to the environment waits at an approval gate, who may decide it
    # (entries in the engine's approver form: role:<r>, user:<u>, team:<t>), and when the
    # settings last changed (the etag is derived from the settings, not stored).
    with op.batch_alter_table('environments', schema=_schema()) as batch_op:
        batch_op.add_column(sa.Column('requires_approval', sa.Boolean(), nullable=False,
                                      server_default=sa.false()))
        batch_op.add_column(sa.Column('approvers', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('updated_at', sa.DateTime(timezone=True), nullable=True))

    # Backfill: production environments keep today's gate; the others keep having none.
    # op.execute is not schema-translated: name the service's schema (None on SQLite).
    environments = sa.table(
        'environments',
        sa.column('type', sa.String),
        sa.column('requires_approval', sa.Boolean),
        sa.column('approvers', sa.JSON),
        schema=_schema(),
    )
    op.execute(environments.update().where(environments.c.type == 'production')
               .values(requires_approval=True, approvers=_PRODUCTION_APPROVERS))
    op.execute(environments.update().where(environments.c.type != 'production')
               .values(requires_approval=False, approvers=[]))


def downgrade() -> None:
    with op.batch_alter_table('environments', schema=_schema()) as batch_op:
        batch_op.drop_column('updated_at')
        batch_op.drop_column('approvers')
        batch_op.drop_column('requires_approval')
