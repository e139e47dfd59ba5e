"""Tables of the specs service (schema ``specs`` on PostgreSQL)."""

from sqlalchemy import JSON, Boolean, Column, DateTime, Integer, MetaData, String, Table, Text, UniqueConstraint, false, func

from innominatus.kit.outbox import outbox_table

metadata = MetaData()

# Every submitted version of a workload, content-addressed.
workload_versions = Table(
    "workload_versions",
    metadata,
    Column("workload", String(128), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("content_hash", String(64), nullable=False),
    Column("source", Text, nullable=False),
    Column("creator", String(128), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

deployments = Table(
    "deployments",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("application", String(128), nullable=False, index=True),
    Column("environment", String(128), nullable=False),
    Column("workload", String(128), nullable=False),
    Column("workload_version", Integer, nullable=False),
    Column("content_hash", String(64), nullable=False),
    Column("run", String(128), nullable=False),
    Column("resources", JSON, nullable=False, default=list),
    Column("creator", String(128), nullable=False),
    Column("request_id", String(128), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    # Set by FinalizeDeployment once the run rendered and committed the deployment set.
    Column("set_hash", String(64), nullable=True),
    Column("gitops_commit", String(64), nullable=True),
    # A rollback: the id of the earlier deployment whose set this one deploys again, and why.
    Column("rollback_of", String(64), nullable=True),
    Column("reason", Text, nullable=True),
    # Set when the application was removed from the environment (DeleteApplication).
    Column("removed_at", DateTime(timezone=True), nullable=True),
    UniqueConstraint("creator", "request_id", name="uq_deployments_request"),
)

# Environments deployments go to, with their type ("development", "staging", "production").
# CreateEnvironment adds one; a deployment to an unknown environment adds it as "development"
# (except one named "production" or "prod", which must be created first).
environments = Table(
    "environments",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("type", String(32), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    # Whether a deployment here waits at an approval gate and who decides it (entries in the
    # engine's approver form: role:<r>, user:<u>, team:<t>); see docs/deployments.md.
    Column("requires_approval", Boolean, nullable=False, server_default=false()),
    Column("approvers", JSON, nullable=True),
    Column("updated_at", DateTime(timezone=True), nullable=True),
)

# Applications and the team that owns each ("" = no team: deployed by a user in no team, or
# before applications had owners). Written by the first CreateDeployment of an application; the
# team is kept for good (see docs/deployments.md). Team quotas count per team from here.
applications = Table(
    "applications",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("team", String(128), nullable=False, server_default="", index=True),
    Column("created_by", String(128), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

outbox = outbox_table(metadata)
