"""Tables of the engine service (schema ``engine`` on PostgreSQL)."""

from sqlalchemy import JSON, Column, DateTime, ForeignKey, Integer, MetaData, String, Table, Text, func

from innominatus.kit.outbox import outbox_table

metadata = MetaData()

runs = Table(
    "runs",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("workflow", String(128), nullable=False),
    Column("application", String(128), nullable=False, default=""),
    Column("environment", String(128), nullable=False, default=""),
    Column("inputs", JSON, nullable=False, default=dict),
    Column("state", String(32), nullable=False, index=True),
    Column("error", Text, nullable=False, default=""),
    Column("creator", String(128), nullable=False, default=""),
    # The token of the user who started the run is not stored; steps act as the engine.
    Column("request_id", String(128), nullable=True, unique=True),
    Column("version", Integer, nullable=False, default=1),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

steps = Table(
    "steps",
    metadata,
    Column("run_id", String(64), ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    Column("position", Integer, primary_key=True),
    Column("name", String(128), nullable=False),
    Column("type", String(64), nullable=False),
    Column("state", String(32), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("message", Text, nullable=False, default=""),
    Column("outputs", JSON, nullable=False, default=dict),
    Column("started_at", DateTime(timezone=True), nullable=True),
    Column("ended_at", DateTime(timezone=True), nullable=True),
)

outbox = outbox_table(metadata)
