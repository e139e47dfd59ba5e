"""Tables of the identity service (schema ``identity`` on PostgreSQL).

Secrets are never stored: passwords as argon2id hashes, API keys as the SHA-256 of the
key (the key is 256 bits of randomness, so a fast hash is enough). The token signing key
is a file, not a row (see :mod:`innominatus.identity.tokens`).
"""

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    func,
)

from innominatus.kit.outbox import outbox_table

metadata = MetaData()

users = Table(
    "users",
    metadata,
    Column("username", String(63), primary_key=True),
    Column("display_name", String(256), nullable=False, default=""),
    Column("password_hash", String(256), nullable=False),
    # Role names: "admin", "platform-engineer", "developer", "viewer".
    Column("roles", JSON, nullable=False, default=list),
    Column("disabled", Boolean, nullable=False, default=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    # When UpdateUser last changed the user (part of the etag); NULL if never.
    Column("updated_at", DateTime(timezone=True), nullable=True),
)

teams = Table(
    "teams",
    metadata,
    # The slug: the team's resource name is "teams/<name>".
    Column("name", String(63), primary_key=True),
    Column("display_name", String(256), nullable=False, default=""),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

team_members = Table(
    "team_members",
    metadata,
    Column("team", String(63), ForeignKey("teams.name", ondelete="CASCADE"), nullable=False),
    Column("username", String(63), ForeignKey("users.username", ondelete="CASCADE"), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("team", "username", name="pk_team_members"),
    Index("ix_team_members_username", "username"),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("display_name", String(256), nullable=False, default=""),
    Column("owner", String(63), ForeignKey("users.username", ondelete="CASCADE"), nullable=False, index=True),
    # The first characters of the key, so a user can tell their keys apart.
    Column("prefix", String(16), nullable=False),
    # Hex SHA-256 of the whole key; the key itself is never stored.
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
)

outbox = outbox_table(metadata)
