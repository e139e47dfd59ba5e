"""users: when UpdateUser last changed them

Revision ID: 5c2e8a41d7b3
Revises: 11554378ab8f
Create Date: 2026-11-30 07:00:00.000000
"""
from alembic import op
import sqlalchemy as sa


revision = '5c2e8a41d7b3'
down_revision = '11554378ab8f'
branch_labels = None
depends_on = None


def _schema():
    return op.get_context().version_table_schema


def upgrade() -> None:
    # Nullable: users that were never updated have no update time (and their etag is derived
    # from their settings alone).
    with op.batch_alter_table('users', schema=_schema()) as batch_op:
        batch_op.add_column(sa.Column('updated_at', sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('users', schema=_schema()) as batch_op:
        batch_op.drop_column('updated_at')
