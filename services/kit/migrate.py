"""Alembic migrations, one history per service, applied on start and by `innominatus migrate`.

Each service keeps its history in ``innominatus/<service>/migrations``; that directory's
``env.py`` calls :func:`run_env`. On PostgreSQL the service's schema is created first and
the alembic version table lives inside it, so histories never collide.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url


def _config(service: str, url: str) -> Config:
    package = importlib.import_module(f"innominatus.{service}")
    location = Path(package.__file__).parent / "migrations"
    cfg = Config()
    cfg.set_main_option("script_location", str(location))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    cfg.attributes["service"] = service
    return cfg


def upgrade(service: str, url: str, revision: str = "head") -> None:
    engine = create_engine(url)
    schema = service if make_url(url).get_backend_name() == "postgresql" else None
    try:
        with engine.begin() as connection:
            if schema:
                # Several processes may start at once; the advisory lock serialises their
                # migrations of this schema.
                connection.execute(text("SELECT pg_advisory_xact_lock(hashtext(:s))"), {"s": f"migrate:{schema}"})
                exists = connection.execute(
                    text("SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = :s"), {"s": schema}
                ).first()
                if not exists:
                    # Only the first start needs CREATE on the database; a role that owns its
                    # schema already can migrate without it.
                    connection.execute(text(f'CREATE SCHEMA "{schema}"'))
                connection = connection.execution_options(schema_translate_map={None: schema})
            cfg = _config(service, url)
            cfg.attributes["connection"] = connection
            cfg.attributes["schema"] = schema
            command.upgrade(cfg, revision)
    finally:
        engine.dispose()


def run_env(target_metadata) -> None:
    """Body of every service's migrations/env.py."""
    from alembic import context

    cfg = context.config
    connection = cfg.attributes.get("connection")
    schema = cfg.attributes.get("schema")
    if connection is None:
        # Offline / autogenerate from the alembic CLI: connect with the configured URL.
        engine = create_engine(cfg.get_main_option("sqlalchemy.url"))
        with engine.begin() as conn:
            context.configure(connection=conn, target_metadata=target_metadata, render_as_batch=True)
            with context.begin_transaction():
                context.run_migrations()
        return
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        version_table_schema=schema,
        render_as_batch=not schema,
    )
    with context.begin_transaction():
        context.run_migrations()
