"""A service's life as operators see it: ready only when it can serve, graceful shutdown
(NOT_SERVING first, in-flight calls finish, then nothing more is accepted), SIGTERM on
`innominatus serve`, one PostgreSQL schema per service and `innominatus migrate`."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
import psycopg
import pytest
from alembic.script import ScriptDirectory
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy.engine import make_url

from innominatus.kit.clients import secure_channel
from innominatus.kit.config import SERVICES, Settings
from innominatus.kit.pki import ensure_dev_pki
from innominatus.kit.server import ServiceHost, load_definition
from tests.helpers.database import drop_database, fresh_database

pytestmark = pytest.mark.postgres

ENGINE = "innominatus.engine.v1.EngineService"
SLOW_METHOD = "/innominatus.test.v1.Slow/Sleep"
NOWHERE = "127.0.0.1:1"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING

# A table each service is known to own, and the schema it must live in.
OWNED_TABLES = {
    "identity": "users",
    "audit": "records",
    "engine": "runs",
    "specs": "deployments",
    "resources": "resources",
}


def _conninfo(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _query(url: str, statement: str, *params) -> list[tuple]:
    with psycopg.connect(_conninfo(url), autocommit=True) as conn:
        return conn.execute(statement, params).fetchall()


def _tables(url: str) -> set[tuple[str, str]]:
    return set(
        _query(
            url,
            "SELECT table_schema, table_name FROM information_schema.tables "
            "WHERE table_schema NOT IN ('pg_catalog', 'information_schema')",
        )
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Slow:
    """A tiny extra handler on a real service that runs until the test releases it, and a
    probe that checks the service's health over the wire the moment the stop begins."""

    def __init__(self, tls) -> None:
        self.tls = tls
        self.address = ""
        self.started = asyncio.Event()
        self.release = asyncio.Event()
        self.finished = False
        self.seen_at_stop: dict = {}

    async def sleep(self, request: bytes, context) -> bytes:
        self.started.set()
        await asyncio.wait_for(self.release.wait(), timeout=30)
        self.finished = True
        return b"done:" + request

    def definition(self, base):
        slow = self

        def register(server, runtime) -> None:
            base.register(server, runtime)
            handler = grpc.method_handlers_generic_handler(
                "innominatus.test.v1.Slow", {"Sleep": grpc.unary_unary_rpc_method_handler(slow.sleep)}
            )
            server.add_generic_rpc_handlers((handler,))

        async def on_stop(runtime) -> None:
            # What a health probe sees once the stop has begun (before the drain).
            for name in ("", ENGINE):
                slow.seen_at_stop[name] = await _check(slow.address, slow.tls, name)
            slow.seen_at_stop["call finished"] = slow.finished
            await base.on_stop(runtime)

        return dataclasses.replace(base, register=register, on_stop=on_stop)


@pytest.fixture
def engine_settings(tmp_path):
    pki = ensure_dev_pki(tmp_path / "tls", ["engine"])
    url = fresh_database("lifecycle")
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=url,
        tls=pki["engine"],
        addresses={"identity": NOWHERE, "audit": NOWHERE},
        relay_interval_seconds=0.2,
    )
    try:
        yield settings, pki
    finally:
        drop_database(url)


async def _check(address: str, tls, service: str = "", timeout: float = 3):
    async with secure_channel(address, tls) as channel:
        return (await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)).status


async def test_graceful_stop_reports_not_serving_and_drains_in_flight_calls(engine_settings):
    settings, pki = engine_settings
    slow = _Slow(pki["cli"])
    host = ServiceHost(slow.definition(load_definition("engine")), settings)
    port = await host.start("127.0.0.1:0")
    address = slow.address = f"127.0.0.1:{port}"
    stopped = False
    try:
        assert await _check(address, pki["cli"]) == SERVING
        assert await _check(address, pki["cli"], ENGINE) == SERVING
        channel = secure_channel(address, pki["cli"])
        call = channel.unary_unary(SLOW_METHOD)(b"in-flight", timeout=30)
        await asyncio.wait_for(slow.started.wait(), 5)

        grace = 10.0
        started = time.monotonic()
        stopping = asyncio.create_task(host.stop(grace=grace))
        while "call finished" not in slow.seen_at_stop and not stopping.done():
            await asyncio.sleep(0.01)
        # Health said NOT_SERVING while the call was still running.
        assert slow.seen_at_stop == {"": NOT_SERVING, ENGINE: NOT_SERVING, "call finished": False}
        await asyncio.sleep(0.5)
        assert not stopping.done(), "the server stopped before its in-flight call finished"
        assert not call.done()

        slow.release.set()
        assert await asyncio.wait_for(call, 10) == b"done:in-flight"
        assert (await call.code()) == grpc.StatusCode.OK
        await asyncio.wait_for(stopping, grace + 5)
        stopped = True
        # The stop ended because the call finished, not because the grace period ran out.
        assert time.monotonic() - started < grace
        await channel.close()

        # Nothing is accepted any more: neither health checks nor calls.
        with pytest.raises(grpc.RpcError) as caught:
            await _check(address, pki["cli"], timeout=2)
        assert caught.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
        async with secure_channel(address, pki["cli"]) as late:
            with pytest.raises(grpc.RpcError) as caught:
                await late.unary_unary(SLOW_METHOD)(b"late", timeout=2)
        assert caught.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
    finally:
        slow.release.set()
        if not stopped:
            await host.stop(grace=0)


async def test_grace_period_bounds_the_drain(engine_settings):
    """A call that outlives the grace period is cut off; the stop does not hang on it."""
    settings, pki = engine_settings
    slow = _Slow(pki["cli"])
    host = ServiceHost(slow.definition(load_definition("engine")), settings)
    port = await host.start("127.0.0.1:0")
    slow.address = f"127.0.0.1:{port}"
    try:
        async with secure_channel(slow.address, pki["cli"]) as channel:
            call = channel.unary_unary(SLOW_METHOD)(b"too-slow", timeout=30)
            await asyncio.wait_for(slow.started.wait(), 5)
            started = time.monotonic()
            await asyncio.wait_for(host.stop(grace=1.0), 10)
            assert time.monotonic() - started < 5
            with pytest.raises(grpc.RpcError):
                await asyncio.wait_for(call, 5)
            assert not slow.finished
    finally:
        slow.release.set()
        await host.stop(grace=0)


async def test_health_watch_streams_serving_then_not_serving_on_stop(engine_settings):
    settings, pki = engine_settings
    host = ServiceHost(load_definition("engine"), settings)
    port = await host.start("127.0.0.1:0")
    try:
        async with secure_channel(f"127.0.0.1:{port}", pki["cli"]) as channel:
            watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=ENGINE))
            assert (await asyncio.wait_for(watch.read(), 5)).status == SERVING
            stopping = asyncio.create_task(host.stop(grace=5))
            assert (await asyncio.wait_for(watch.read(), 5)).status == NOT_SERVING
            watch.cancel()
            await stopping
    finally:
        await host.stop(grace=0)


async def test_not_serving_until_start_up_work_is_done(engine_settings):
    settings, pki = engine_settings
    base = load_definition("engine")
    gate = asyncio.Event()
    entered = asyncio.Event()

    async def on_start(runtime):
        entered.set()
        await asyncio.wait_for(gate.wait(), 30)
        await base.on_start(runtime)

    port = _free_port()
    host = ServiceHost(dataclasses.replace(base, on_start=on_start), settings)
    starting = asyncio.create_task(host.start(f"127.0.0.1:{port}"))
    try:
        await asyncio.wait_for(entered.wait(), 30)
        # Start-up work is still running: the service must not tell anyone it is ready
        # (refusing the probe would do as well as answering NOT_SERVING).
        try:
            status = await _check(f"127.0.0.1:{port}", pki["cli"])
        except grpc.RpcError as exc:
            status = exc.code()
        assert status != SERVING
    finally:
        gate.set()
        await starting
        await host.stop(grace=0)


def _serve_env(tmp_path: Path, url: str, pki) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INNOMINATUS_")}
    env.update(
        INNOMINATUS_TLS_CA=str(pki["engine"].ca),
        INNOMINATUS_TLS_CERT=str(pki["engine"].cert),
        INNOMINATUS_TLS_KEY=str(pki["engine"].key),
        INNOMINATUS_DATA_DIR=str(tmp_path / "data"),
        INNOMINATUS_DATABASE_URL=url,
        INNOMINATUS_IDENTITY_ADDR=NOWHERE,
        INNOMINATUS_AUDIT_ADDR=NOWHERE,
        INNOMINATUS_SHUTDOWN_GRACE_SECONDS="8",
        INNOMINATUS_LOG_LEVEL="INFO",
    )
    return env


def _json_lines(text: str) -> list[dict]:
    lines = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                lines.append(json.loads(line))
            except ValueError:
                pass
    return lines


async def test_sigterm_on_serve_exits_cleanly_within_the_grace_period(tmp_path):
    pki = ensure_dev_pki(tmp_path / "tls", ["engine"])
    url = fresh_database("serve")
    port = _free_port()
    address = f"127.0.0.1:{port}"
    stderr_path = tmp_path / "stderr.log"
    grace = 8.0
    with stderr_path.open("wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "innominatus.cli.main", "serve", "engine", "--listen", address],
            env=_serve_env(tmp_path, url, pki),
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, f"serve exited early ({process.returncode}):\n{stderr_path.read_text()[-3000:]}"
            try:
                if await _check(address, pki["cli"], timeout=1) == SERVING:
                    break
            except grpc.RpcError:
                pass
            assert time.monotonic() < deadline, "never became SERVING:\n" + stderr_path.read_text()[-3000:]
            await asyncio.sleep(0.2)

        async with secure_channel(address, pki["cli"]) as channel:
            watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=ENGINE))
            assert (await asyncio.wait_for(watch.read(), 5)).status == SERVING
            started = time.monotonic()
            process.send_signal(signal.SIGTERM)
            # Watchers (load balancers) are told before the server goes away.
            assert (await asyncio.wait_for(watch.read(), 5)).status == NOT_SERVING
            watch.cancel()
        code = await asyncio.to_thread(process.wait, grace + 10)
        elapsed = time.monotonic() - started
        log = stderr_path.read_text()
        assert code == 0, log[-3000:]
        assert elapsed < grace, f"took {elapsed:.1f}s to exit"
        events = _json_lines(log)
        assert events, log[-3000:]
        names = [e.get("event") for e in events]
        assert "shutting down" in names, names
        assert "service stopped" in names, names
        assert names.index("shutting down") < names.index("service stopped")
        stopped = events[names.index("service stopped")]
        assert stopped.get("service") == "engine" and stopped.get("level") == "info"
        # Every log line is one JSON object.
        assert all(line.strip().startswith("{") for line in log.splitlines() if line.strip()), log[-3000:]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        drop_database(url)


async def test_each_service_keeps_its_tables_in_its_own_schema(platform):
    url = platform.platform.settings.database_url
    tables = _tables(url)
    schemas = {schema for schema, _ in tables}
    assert schemas == set(SERVICES), sorted(tables)
    for service, table in OWNED_TABLES.items():
        assert (service, table) in tables, (service, table)
        assert (service, "alembic_version") in tables, service
        assert not any(name == table for schema, name in tables if schema != service), (table, sorted(tables))
    assert not [t for t in tables if t[0] == "public"]
    for service in SERVICES:
        [(version,)] = _query(url, f'SELECT version_num FROM "{service}".alembic_version')
        assert version == _head(service)


def _head(service: str) -> str:
    import importlib

    package = importlib.import_module(f"innominatus.{service}")
    return ScriptDirectory(str(Path(package.__file__).parent / "migrations")).get_current_head()


def _snapshot(url: str) -> tuple:
    columns = _query(
        url,
        "SELECT table_schema, table_name, column_name, data_type, is_nullable FROM information_schema.columns "
        "WHERE table_schema NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2, 3",
    )
    indexes = _query(
        url,
        "SELECT schemaname, tablename, indexname, indexdef FROM pg_indexes "
        "WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2, 3",
    )
    versions = [
        (service, _query(url, f'SELECT version_num FROM "{service}".alembic_version')) for service in SERVICES
    ]
    return columns, indexes, versions


def _migrate(url: str, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INNOMINATUS_")}
    env["INNOMINATUS_DATABASE_URL"] = url
    env["INNOMINATUS_DATA_DIR"] = str(tmp_path / "data")
    return subprocess.run(
        [sys.executable, "-m", "innominatus.cli.main", "migrate"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_migrate_creates_every_schema_and_is_idempotent(tmp_path):
    url = fresh_database("migrate")
    try:
        assert _tables(url) == set()
        first = _migrate(url, tmp_path)
        assert first.returncode == 0, first.stderr[-3000:]
        for service in SERVICES:
            assert f"{service}: migrated" in first.stdout, first.stdout
        tables = _tables(url)
        assert {schema for schema, _ in tables} == set(SERVICES), sorted(tables)
        for service, table in OWNED_TABLES.items():
            assert (service, table) in tables and (service, "alembic_version") in tables
        before = _snapshot(url)
        for service, rows in before[2]:
            assert rows == [(_head(service),)], service
        # No SQLite fallback: with a database URL no service writes a database file.
        assert not list(tmp_path.rglob("*.db"))

        second = _migrate(url, tmp_path)
        assert second.returncode == 0, second.stderr[-3000:]
        assert _snapshot(url) == before
        assert _tables(url) == tables
    finally:
        drop_database(url)
