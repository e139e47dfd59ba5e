"""applications owned by teams

Revision ID: e1b7c3f5a2d8
Revises: d9e4a7c2b1f0
Create Date: 2026-11-30 05:00:00.000000
"""
from alembic import op
import sqlalchemy as sa


revision = 'e1b7c3f5a2d8'
down_revision = 'd9e4a7c2b1f0'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # create_table is mapped into the service's schema by schema_translate_map.
    # One row per application: the team that owns it ("" = no team) and who deployed it first.
    op.create_table(
        'applications',
        sa.Column('name', sa.String(length=128), nullable=False),
        sa.Column('team', sa.String(length=128), nullable=False, server_default=''),
        sa.Column('created_by', sa.String(length=128), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('(CURRENT_TIMESTAMP)'),
                  nullable=False),
        sa.PrimaryKeyConstraint('name'),
    )
    op.create_index('ix_applications_team', 'applications', ['team'], unique=False)

    # Backfill: applications deployed before teams owned them stay unowned ("" team), created by
    # whoever deployed them first. Plain SQL qualified by hand: on PostgreSQL the service's
    # tables live in its schema (the version table's).
    schema = op.get_context().version_table_schema
    prefix = f'"{schema}".' if schema else ''
    op.execute(
        f"INSERT INTO {prefix}applications (name, team, created_by, created_at) "
        f"SELECT d.application, '', "
        f"(SELECT e.creator FROM {prefix}deployments e WHERE e.application = d.application "
        f"ORDER BY e.created_at LIMIT 1), MIN(d.created_at) "
        f"FROM {prefix}deployments d GROUP BY d.application"
    )


def downgrade() -> None:
    op.drop_index('ix_applications_team', table_name='applications')
    op.drop_table('applications')
