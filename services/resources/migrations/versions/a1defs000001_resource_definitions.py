"""resource definitions

Revision ID: a1defs000001
Revises: 2920018ef0b8
Create Date: 2026-11-30 03:00:00.000000
"""
from alembic import op
import sqlalchemy as sa


revision = 'a1defs000001'
down_revision = '2920018ef0b8'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('resource_definitions',
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('type', sa.String(length=128), nullable=False),
    sa.Column('class', sa.String(length=128), nullable=False),
    sa.Column('shared_id', sa.String(length=256), nullable=False),
    sa.Column('criteria', sa.JSON(), nullable=False),
    sa.Column('provisioner', sa.JSON(), nullable=False),
    sa.Column('params_schema', sa.JSON(), nullable=False),
    sa.Column('outputs', sa.JSON(), nullable=False),
    sa.Column('secret_outputs', sa.JSON(), nullable=False),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('creator', sa.String(length=256), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('(CURRENT_TIMESTAMP)'), nullable=False),
    sa.Column('deleted_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('name', 'version', name='pk_resource_definitions')
    )
    op.create_index('ix_resource_definitions_type', 'resource_definitions', ['type'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_resource_definitions_type', table_name='resource_definitions')
    op.drop_table('resource_definitions')
