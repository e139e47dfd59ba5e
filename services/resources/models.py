"""Tables of the resources service (schema ``resources`` on PostgreSQL)."""

from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
    func,
)

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
    # Lifecycle (innominatus.resources.lifecycle): why the instance is in its state, what the
    # last successful provision produced (non-secret outputs, secret *references* only, the
    # driver's own bookkeeping, which holds no secrets), and which definition made it.
    Column("state_reason", Text, nullable=False, default=""),
    Column("outputs", JSON, nullable=False, default=dict),
    Column("secret_refs", JSON, nullable=False, default=dict),
    Column("driver_state", JSON, nullable=False, default=dict),
    Column("definition", String(256), nullable=False, default=""),
    # Hash of (definition, type, class, params) of the last successful provision: an active
    # instance whose claim did not change is not provisioned again unless forced.
    Column("applied_hash", String(64), nullable=False, default=""),
    # "<type>.<class>#<id>" for shared resources (a claim with an id); NULL otherwise.
    Column("shared_key", String(512), nullable=True),
    # When the last health and drift check of the instance started or ended (CheckResource or
    # the health monitor, innominatus.resources.monitor); the monitor checks the instances
    # whose last check is older than its interval, so replicas share the work.
    Column("last_checked_at", DateTime(timezone=True), nullable=True),
    # What the specs service said when the instance was claimed: the environment's type
    # ("development", "staging", "production") and the bare name of the team owning the
    # claiming application ("payments"); "" = unknown / no team. Both are matching criteria of
    # resource definitions; the team also decides who may reveal the secrets (authz.rego). A
    # shared instance keeps the team of the application that claimed it first.
    Column("environment_type", String(32), nullable=False, default="", server_default=""),
    Column("team", String(128), nullable=False, default="", server_default=""),
    UniqueConstraint("application", "environment", "workload", "ref", name="uq_resources_claim"),
    UniqueConstraint("environment", "shared_key", name="uq_resources_shared"),
)

# Which workload claims which instance under which name. A shared instance has several rows.
resource_claims = Table(
    "resource_claims",
    metadata,
    Column("application", String(128), nullable=False),
    Column("environment", String(128), nullable=False),
    Column("workload", String(128), nullable=False),
    Column("ref", String(128), nullable=False),
    Column("resource_id", String(64), nullable=False, index=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("application", "environment", "workload", "ref", name="pk_resource_claims"),
)

# Every state change of an instance, written in the same transaction as the change.
resource_transitions = Table(
    "resource_transitions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("resource_id", String(64), nullable=False, index=True),
    Column("from_state", String(32), nullable=False),
    Column("to_state", String(32), nullable=False),
    Column("reason", Text, nullable=False, default=""),
    Column("actor", String(256), nullable=False, default=""),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

# Envelope-encrypted secret store of the embedded default (innominatus.resources.secrets).
# One row per secret version: the values' JSON sealed with AES-GCM under a fresh data key, and
# that data key wrapped with AES-GCM under the master key named by key_id. Never plaintext.
# delete() keeps the rows as tombstones (deleted_at set, key material and ciphertext erased),
# so version numbers of a path are never reused.
secret_versions = Table(
    "secret_versions",
    metadata,
    Column("path", String(512), nullable=False),
    Column("version", Integer, nullable=False),
    Column("key_id", String(16), nullable=False),
    Column("key_nonce", LargeBinary, nullable=False),
    Column("wrapped_key", LargeBinary, nullable=False),
    Column("nonce", LargeBinary, nullable=False),
    Column("ciphertext", LargeBinary, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("deleted_at", DateTime(timezone=True), nullable=True),
    PrimaryKeyConstraint("path", "version", name="pk_secret_versions"),
)

outbox = outbox_table(metadata)
