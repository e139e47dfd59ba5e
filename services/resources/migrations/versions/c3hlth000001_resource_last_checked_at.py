"""resource instances: last_checked_at for the health monitor

Revision ID: c3hlth000001
Revises: b2inst000001
Create Date: 2026-12-07 03:00:00
"""
from alembic import op
import sqlalchemy as sa


revision = "c3hlth000001"
down_revision = "b2inst000001"
branch_labels = None
depends_on = None


def _schema():
    # ALTER TABLE is not mapped by schema_translate_map: name the schema (None on SQLite).
    return op.get_context().version_table_schema


def upgrade() -> None:
    with op.batch_alter_table("resources", schema=_schema()) as batch:
        # NULL: never checked, so the health monitor checks it first.
        batch.add_column(sa.Column("last_checked_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("resources", schema=_schema()) as batch:
        batch.drop_column("last_checked_at")
