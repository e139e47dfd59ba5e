"""environments with a type

Revision ID: c5d82f1a6e39
Revises: b71e0c4d9a58
Create Date: 2026-11-30 03:50:00.000000
"""
from alembic import op
import sqlalchemy as sa


revision = 'c5d82f1a6e39'
down_revision = 'b71e0c4d9a58'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # create_table is mapped into the service's schema by schema_translate_map.
    # The environments deployments go to and their type (development, staging, production).
    op.create_table(
        'environments',
        sa.Column('name', sa.String(length=128), nullable=False),
        sa.Column('type', sa.String(length=32), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('(CURRENT_TIMESTAMP)'),
                  nullable=False),
        sa.PrimaryKeyConstraint('name'),
    )


def downgrade() -> None:
    op.drop_table('environments')
