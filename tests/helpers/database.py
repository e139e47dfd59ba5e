"""Helpers for tests that need PostgreSQL.

scripts/test starts a throwaway server and exports INNOMINATUS_TEST_DATABASE_URL (an SQLAlchemy URL,
``postgresql+psycopg://postgres@127.0.0.1:PORT/innominatus_test``). Tests that need a database of
their own take one with fresh_database() and drop it with drop_database().
"""

from __future__ import annotations

import os
import re
import uuid

import psycopg
import pytest
from psycopg import sql
from sqlalchemy.engine import URL, make_url

ENV = "INNOMINATUS_TEST_DATABASE_URL"


def test_database_url() -> str:
    """The SQLAlchemy URL of the test server's database; fails the test when it is not configured."""
    url = os.environ.get(ENV, "").strip()
    if not url:
        pytest.fail(f"{ENV} is not set: run the suite with scripts/test, which starts PostgreSQL", pytrace=False)
    return url


test_database_url.__test__ = False  # a helper, not a test, even when imported into a test module


def _conninfo(url: URL) -> str:
    """The libpq connection string psycopg wants for an SQLAlchemy URL."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def _admin_url(target: URL) -> URL:
    """A database on the same server to run CREATE/DROP DATABASE from (never the target itself)."""
    base = make_url(test_database_url())
    admin_db = base.database if base.database and base.database != target.database else "postgres"
    return target.set(database=admin_db)


def fresh_database(prefix: str = "t") -> str:
    """Create a new, uniquely named database on the test server and return its SQLAlchemy URL."""
    base = make_url(test_database_url())
    stem = re.sub(r"[^a-z0-9_]+", "_", prefix.lower()).strip("_") or "t"
    name = f"{stem[:40]}_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(_conninfo(base), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return base.set(drivername="postgresql+psycopg", database=name).render_as_string(hide_password=False)


def drop_database(url: str) -> None:
    """Drop the database a fresh_database() URL names, disconnecting anyone still using it."""
    target = make_url(url)
    if not target.database:
        raise ValueError(f"no database name in {target!r}")
    with psycopg.connect(_conninfo(_admin_url(target)), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(target.database)))
