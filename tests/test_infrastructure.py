"""The servers and tools scripts/test provides are really there (so CI proves its setup, not just its code)."""

from __future__ import annotations

import os
import socket
import subprocess
from urllib.parse import urlsplit

import psycopg
import pytest
from _pytest.outcomes import Failed
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from tests.helpers.database import drop_database, fresh_database, test_database_url
from tests.helpers.shared import shared_reference


@pytest.mark.postgres
def test_fresh_database_round_trip() -> None:
    url = fresh_database("infra")
    name = make_url(url).database
    assert name and name != make_url(test_database_url()).database
    try:
        engine = create_engine(url)
        try:
            with engine.begin() as conn:
                conn.execute(text("CREATE TABLE probe (id integer PRIMARY KEY, note text NOT NULL)"))
                conn.execute(text("INSERT INTO probe VALUES (1, 'hello')"))
            with engine.connect() as conn:
                assert conn.execute(text("SELECT note FROM probe WHERE id = 1")).scalar_one() == "hello"
                assert conn.execute(text("SELECT current_database()")).scalar_one() == name
        finally:
            engine.dispose()
    finally:
        drop_database(url)
    admin = make_url(test_database_url()).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(admin) as conn:
        assert conn.execute("SELECT count(*) FROM pg_database WHERE datname = %s", (name,)).fetchone() == (0,)


def test_database_url_missing_fails_clearly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("INNOMINATUS_TEST_DATABASE_URL", raising=False)
    with pytest.raises(Failed, match="INNOMINATUS_TEST_DATABASE_URL is not set: run the suite with scripts/test"):
        test_database_url()


def test_redis_answers_ping() -> None:
    url = os.environ.get("INNOMINATUS_TEST_REDIS_URL")
    if not url:
        pytest.fail("INNOMINATUS_TEST_REDIS_URL is not set: run the suite with scripts/test, which starts Redis")
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port or 6379), timeout=5) as sock:
        sock.sendall(b"PING\r\n")
        assert sock.recv(64).startswith(b"+PONG")


@pytest.mark.opa
def test_opa_binary_runs() -> None:
    opa = os.environ.get("INNOMINATUS_OPA_BIN")
    if not opa:
        pytest.fail("INNOMINATUS_OPA_BIN is not set: run the suite with scripts/test, which installs opa")
    out = subprocess.run([opa, "version"], capture_output=True, text=True, check=True, timeout=60).stdout
    assert out.startswith("Version: ")


def test_shared_reference_found_and_missing_named(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    assert shared_reference("score-spec", "score-v1b1.json").is_file()
    monkeypatch.setenv("INNOMINATUS_SHARED_DIR", str(tmp_path))
    with pytest.raises(Failed, match=r"reference/score-spec/nope\.json does not exist"):
        shared_reference("score-spec", "nope.json")
