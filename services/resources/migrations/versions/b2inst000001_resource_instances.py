"""resource instances: lifecycle columns, claims of shared instances, transitions

Revision ID: b2inst000001
Revises: a1defs000001
Create Date: 2026-11-30 03:00:00
"""
from alembic import op
import sqlalchemy as sa


revision = "b2inst000001"
down_revision = "a1defs000001"
branch_labels = None
depends_on = None


def _schema():
    # create_table is mapped into the service's schema by schema_translate_map; ALTER TABLE is
    # not, so name the schema (the one the version table lives in; None on SQLite).
    return op.get_context().version_table_schema


def upgrade() -> None:
    with op.batch_alter_table("resources", schema=_schema()) as batch:
        batch.add_column(sa.Column("state_reason", sa.Text(), nullable=False, server_default=""))
        batch.add_column(sa.Column("outputs", sa.JSON(), nullable=False, server_default="{}"))
        batch.add_column(sa.Column("secret_refs", sa.JSON(), nullable=False, server_default="{}"))
        batch.add_column(sa.Column("driver_state", sa.JSON(), nullable=False, server_default="{}"))
        batch.add_column(sa.Column("definition", sa.String(length=256), nullable=False, server_default=""))
        batch.add_column(sa.Column("applied_hash", sa.String(length=64), nullable=False, server_default=""))
        batch.add_column(sa.Column("shared_key", sa.String(length=512), nullable=True))
        batch.create_unique_constraint("uq_resources_shared", ["environment", "shared_key"])
    op.create_table(
        "resource_claims",
        sa.Column("application", sa.String(length=128), nullable=False),
        sa.Column("environment", sa.String(length=128), nullable=False),
        sa.Column("workload", sa.String(length=128), nullable=False),
        sa.Column("ref", sa.String(length=128), nullable=False),
        sa.Column("resource_id", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("(CURRENT_TIMESTAMP)"), nullable=False),
        sa.PrimaryKeyConstraint("application", "environment", "workload", "ref", name="pk_resource_claims"),
    )
    op.create_index("ix_resource_claims_resource_id", "resource_claims", ["resource_id"])
    op.create_table(
        "resource_transitions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("resource_id", sa.String(length=64), nullable=False),
        sa.Column("from_state", sa.String(length=32), nullable=False),
        sa.Column("to_state", sa.String(length=32), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False, server_default=""),
        sa.Column("actor", sa.String(length=256), nullable=False, server_default=""),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("(CURRENT_TIMESTAMP)"), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_resource_transitions_resource_id", "resource_transitions", ["resource_id"])


def downgrade() -> None:
    op.drop_index("ix_resource_transitions_resource_id", table_name="resource_transitions")
    op.drop_table("resource_transitions")
    op.drop_index("ix_resource_claims_resource_id", table_name="resource_claims")
    op.drop_table("resource_claims")
    with op.batch_alter_table("resources", schema=_schema()) as batch:
        batch.drop_constraint("uq_resources_shared", type_="unique")
        for column in ("shared_key", "applied_hash", "definition", "driver_state", "secret_refs", "outputs", "state_reason"):
            batch.drop_column(column)
