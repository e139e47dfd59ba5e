"""Database access shared by every service.

Each service owns its tables: on PostgreSQL they live in a schema named after the service
(the same table metadata is mapped there with ``schema_translate_map``); in the embedded
default each service has its own SQLite file. No service ever opens another's tables.

The unit of work of an RPC is one transaction, opened by the audit interceptor; handlers
reach it with :func:`session`.
"""

from __future__ import annotations

import contextvars
from contextlib import asynccontextmanager
from pathlib import Path
from typing import AsyncIterator

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

_session: contextvars.ContextVar[AsyncSession | None] = contextvars.ContextVar("innominatus_session", default=None)


def session() -> AsyncSession:
    """The transaction of the current RPC."""
    current = _session.get()
    if current is None:
        raise RuntimeError("no database session: the call is not running inside a unit of work")
    return current


def async_url(url: str) -> str:
    parsed = make_url(url)
    if parsed.drivername in ("sqlite", "sqlite+pysqlite"):
        return parsed.set(drivername="sqlite+aiosqlite").render_as_string(hide_password=False)
    if parsed.drivername in ("postgresql", "postgres", "postgresql+psycopg2"):
        return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    return url


def sync_url(url: str) -> str:
    parsed = make_url(url)
    if parsed.drivername == "sqlite+aiosqlite":
        return parsed.set(drivername="sqlite").render_as_string(hide_password=False)
    if parsed.drivername in ("postgresql", "postgres", "postgresql+psycopg2"):
        return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    return url


class Database:
    def __init__(self, service: str, url: str) -> None:
        self.service = service
        self.url = sync_url(url)
        self.is_postgres = make_url(self.url).get_backend_name() == "postgresql"
        self.schema = service if self.is_postgres else None
        options = {"schema_translate_map": {None: self.schema}} if self.is_postgres else {}
        kwargs: dict = {"execution_options": options, "pool_pre_ping": True}
        if self.is_postgres:
            # Room for an RPC's unit of work plus the extra connections some handlers take
            # (locks, outbox relay, workers) under concurrent load.
            kwargs.update(pool_size=10, max_overflow=20, pool_timeout=60)
        if not self.is_postgres:
            database = make_url(self.url).database
            if database and database != ":memory:":
                Path(database).parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {"timeout": 30}
        self.engine: AsyncEngine = create_async_engine(async_url(self.url), **kwargs)
        if not self.is_postgres:
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
        self._sessions = async_sessionmaker(self.engine, expire_on_commit=False)

    def migrate(self) -> None:
        from innominatus.kit.migrate import upgrade

        upgrade(self.service, self.url)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A new transaction, committed on success and rolled back on any exception."""
        async with self._sessions() as s:
            async with s.begin():
                token = _session.set(s)
                try:
                    yield s
                finally:
                    _session.reset(token)

    async def close(self) -> None:
        await self.engine.dispose()


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
