"""Tables of the golden-path catalog and of ephemeral environments (engine schema).

``golden_path_versions`` keeps every version of every golden path ever published -- from the
catalog directory at start or through PublishGoldenPath -- with its YAML source, so a run can
ask for an older version after the file changed. A published version is immutable: the same
(name, version) with other content is refused.

``ephemeral_environments`` records each run of an ephemeral golden path and when it expires;
the sweeper (``ephemeral.py``) starts the teardown run once ``expires_at`` has passed. Both
the expiry and the teardown's run id are in the database, so a restarted engine (or another
engine process) still cleans up, exactly once.

The tables live on the engine's ``metadata`` (``models.py``) so its migrations see them.
"""

from sqlalchemy import JSON, Column, DateTime, Index, String, Table, Text, func

from innominatus.engine.models import metadata

golden_path_versions = Table(
    "golden_path_versions",
    metadata,
    Column("name", String(63), primary_key=True),
    Column("version", String(64), primary_key=True),
    Column("content_hash", String(64), nullable=False),  # sha256 hex of the source
    Column("source", Text, nullable=False),  # the YAML as published
    # "catalog:<file>" (loaded from the catalog directory) or "api:<user>" (PublishGoldenPath)
    Column("origin", String(300), nullable=False, default=""),
    Column("published_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

ephemeral_environments = Table(
    "ephemeral_environments",
    metadata,
    Column("run_id", String(64), primary_key=True),  # the run that created the environment
    Column("golden_path", String(63), nullable=False),
    Column("version", String(64), nullable=False),
    Column("application", String(128), nullable=False, default=""),
    Column("environment", String(128), nullable=False, default=""),
    Column("params", JSON, nullable=False, default=dict),  # the run's bound params
    Column("teardown", String(63), nullable=False),  # the golden path that tears it down
    Column("expires_at", DateTime(timezone=True), nullable=False),
    # active -> tearing_down (teardown run started) -> torn_down | teardown_failed
    Column("state", String(32), nullable=False, default="active"),
    Column("teardown_run_id", String(64), nullable=True),
    Column("error", Text, nullable=False, default=""),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("ix_ephemeral_due", "state", "expires_at"),
)
