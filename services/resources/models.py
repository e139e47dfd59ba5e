"""Tables of the resources service (schema ``resources`` on PostgreSQL)."""

from sqlalchemy import JSON, Column, DateTime, MetaData, String, Table, UniqueConstraint, func

from innominatus.kit.outbox import outbox_table

metadata = MetaData()

resources = Table(
    "resources",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("application", String(128), nullable=False),
    Column("environment", String(128), nullable=False),
    Column("workload", String(128), nullable=False),
    Column("ref", String(128), nullable=False),
    Column("type", String(128), nullable=False),
    Column("class", String(128), nullable=False, default=""),
    Column("shared_id", String(256), nullable=False, default=""),
    Column("params", JSON, nullable=False, default=dict),
    Column("state", String(32), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    UniqueConstraint("application", "environment", "workload", "ref", name="uq_resources_claim"),
)

outbox = outbox_table(metadata)
