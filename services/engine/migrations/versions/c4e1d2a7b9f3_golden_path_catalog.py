"""golden path catalog and ephemeral environments

Every published version of every golden path (name, version, content hash, source, origin,
published_at), and the ephemeral environments the TTL sweeper tears down.

Revision ID: c4e1d2a7b9f3
Revises: 91512354675e
Create Date: 2026-11-30 03:10:00.000000
"""
from alembic import op
import sqlalchemy as sa

revision = 'c4e1d2a7b9f3'
down_revision = '91512354675e'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('golden_path_versions',
    sa.Column('name', sa.String(length=63), nullable=False),
    sa.Column('version', sa.String(length=64), nullable=False),
    sa.Column('content_hash', sa.String(length=64), nullable=False),
    sa.Column('source', sa.Text(), nullable=False),
    sa.Column('origin', sa.String(length=300), nullable=False),
    sa.Column('published_at', sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    sa.PrimaryKeyConstraint('name', 'version')
    )
    op.create_table('ephemeral_environments',
    sa.Column('run_id', sa.String(length=64), nullable=False),
    sa.Column('golden_path', sa.String(length=63), nullable=False),
    sa.Column('version', sa.String(length=64), nullable=False),
    sa.Column('application', sa.String(length=128), nullable=False),
    sa.Column('environment', sa.String(length=128), nullable=False),
    sa.Column('params', sa.JSON(), nullable=False),
    sa.Column('teardown', sa.String(length=63), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('state', sa.String(length=32), nullable=False),
    sa.Column('teardown_run_id', sa.String(length=64), nullable=True),
    sa.Column('error', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    sa.PrimaryKeyConstraint('run_id')
    )
    op.create_index('ix_ephemeral_due', 'ephemeral_environments', ['state', 'expires_at'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_ephemeral_due', table_name='ephemeral_environments')
    op.drop_table('ephemeral_environments')
    op.drop_table('golden_path_versions')
