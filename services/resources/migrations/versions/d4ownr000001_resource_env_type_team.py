"""resource instances: environment type and owning team (definition matching, reveal policy)

Revision ID: d4ownr000001
Revises: c3hlth000001
Create Date: 2026-12-10 03:00:00
"""
from alembic import op
import sqlalchemy as sa


revision = "d4ownr000001"
down_revision = "c3hlth000001"
branch_labels = None
depends_on = None


def _schema():
    # ALTER TABLE is not mapped by schema_translate_map: name the schema (None on SQLite).
    return op.get_context().version_table_schema


def upgrade() -> None:
    with op.batch_alter_table("resources", schema=_schema()) as batch:
        # "" for instances claimed before the specs service sent them: unknown, so they match
        # only definitions without an env_type / team criterion (as before) and no team owns
        # them, until their application's next deployment claims them again and fills them in.
        batch.add_column(sa.Column("environment_type", sa.String(length=32), nullable=False, server_default=""))
        batch.add_column(sa.Column("team", sa.String(length=128), nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("resources", schema=_schema()) as batch:
        batch.drop_column("team")
        batch.drop_column("environment_type")
