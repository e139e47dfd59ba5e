"""The ``resource_definitions`` table (resources service, schema ``resources`` on PostgreSQL).

One row per stored version of a resource definition; versions are never rewritten. Deleting a
definition stamps ``deleted_at`` on its versions (they stay on record, so resources provisioned
with an old version can still say which one); creating it again continues the numbering.
Lives on the resources service's ``metadata``; migration ``a1defs000001``.
"""

from sqlalchemy import JSON, Column, DateTime, Index, Integer, PrimaryKeyConstraint, String, Table, Text, func

from innominatus.resources.models import metadata

resource_definitions = Table(
    "resource_definitions",
    metadata,
    Column("name", String(128), nullable=False),
    Column("version", Integer, nullable=False),
    Column("type", String(128), nullable=False),
    Column("class", String(128), nullable=False, default=""),
    Column("shared_id", String(256), nullable=False, default=""),
    Column("criteria", JSON, nullable=False, default=dict),
    Column("provisioner", JSON, nullable=False, default=dict),
    Column("params_schema", JSON, nullable=False, default=dict),
    Column("outputs", JSON, nullable=False, default=list),
    Column("secret_outputs", JSON, nullable=False, default=list),
    Column("description", Text, nullable=False, default=""),
    Column("creator", String(256), nullable=False, default=""),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("deleted_at", DateTime(timezone=True), nullable=True),
    PrimaryKeyConstraint("name", "version", name="pk_resource_definitions"),
    Index("ix_resource_definitions_type", "type"),
)
