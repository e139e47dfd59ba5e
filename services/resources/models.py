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
    UniqueConstraint("application", "environment", "workload", "ref", name="uq_resources_claim"),
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
