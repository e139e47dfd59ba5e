"""The resources health monitor: instances are checked on their own, without CheckResource.

Against the real PostgreSQL of scripts/test: the built-in `postgres` definition provisions on
the test server, and databases are dropped and re-created behind the platform's back. The
monitor runs every 0.2 s here; every wait polls against a deadline.
"""

from __future__ import annotations

import asyncio
import inspect
import uuid

import psycopg
import pytest
from prometheus_client import REGISTRY
from psycopg import sql
from sqlalchemy.engine import make_url
from structlog.testing import capture_logs

from innominatus.audit.v1 import audit_pb2, audit_pb2_grpc
from innominatus.common.v1 import audit_event_pb2
from innominatus.kit.clients import secure_channel
from innominatus.resources import monitor
from innominatus.resources.drivers.postgres import PostgresDriver
from innominatus.resources.secrets import encode_master_key, generate_master_key
from innominatus.resources.v1 import resources_pb2, resources_pb2_grpc
from tests.helpers.database import test_database_url
from tests.helpers.mesh import running_platform

pytestmark = pytest.mark.postgres

S = resources_pb2.ResourceState
INTERVAL = "0.2"
DEADLINE = 30.0


def _pg_admin_url() -> str:
    return make_url(test_database_url()).set(drivername="postgresql").render_as_string(hide_password=False)


def _admin_conn():
    return psycopg.connect(_pg_admin_url(), autocommit=True)


def _env(monkeypatch, interval: str | None) -> None:
    monkeypatch.setenv("INNOMINATUS_POSTGRES_ADMIN_URL", _pg_admin_url())
    monkeypatch.setenv("INNOMINATUS_SECRETS_KEY", encode_master_key(generate_master_key()))
    if interval is None:
        monkeypatch.delenv(monitor.ENV_INTERVAL, raising=False)
    else:
        monkeypatch.setenv(monitor.ENV_INTERVAL, interval)


@pytest.fixture
async def platform(tmp_path, monkeypatch):
    _env(monkeypatch, INTERVAL)
    async with running_platform(tmp_path / "data") as running:
        yield running


class Resources:
    """The resources service as specs (claims), the engine (provision) and an admin (reads)."""

    def __init__(self, platform, admin: str) -> None:
        self.admin = admin
        self.channels = {i: platform.channel("resources", identity=i) for i in ("specs", "engine", "cli")}

    def stub(self, identity: str):
        return resources_pb2_grpc.ResourcesServiceStub(self.channels[identity])

    async def postgres(self, app: str, workload: str = "api"):
        """A claimed and provisioned postgres instance."""
        response = await self.stub("specs").ClaimResources(
            resources_pb2.ClaimResourcesRequest(
                application=app, environment="dev", workload=workload,
                claims=[resources_pb2.ResourceClaim(ref="db", type="postgres")],
            ),
            metadata=[("authorization", f"Bearer {self.admin}")],
        )
        (claimed,) = response.resources
        provisioned = await self.stub("engine").ProvisionResource(resources_pb2.ProvisionResourceRequest(name=claimed.name))
        assert provisioned.resource.state == S.RESOURCE_STATE_ACTIVE, provisioned.resource.status_reason
        return provisioned.resource

    async def get(self, name: str):
        request = resources_pb2.GetResourceRequest(name=name)
        return (await self.stub("cli").GetResource(request, metadata=[("authorization", f"Bearer {self.admin}")])).resource

    async def close(self) -> None:
        for channel in self.channels.values():
            await channel.close()


@pytest.fixture
async def resources(platform):
    client = Resources(platform, await platform.login_admin())
    try:
        yield client
    finally:
        await client.close()


async def _eventually(probe, what: str, timeout: float = DEADLINE):
    """Poll ``probe`` (returns, or awaits to, a truthy value when done) until then or the deadline."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        found = probe()
        if inspect.isawaitable(found):
            found = await found
        if found:
            return found
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def _until_state(resources: Resources, name: str, state: int):
    async def probe():
        resource = await resources.get(name)
        return resource if resource.state == state else None

    return await _eventually(probe, f"{name} to become {S.Name(state)}")


def _checks(trigger: str, outcome: str) -> float:
    return REGISTRY.get_sample_value(
        "innominatus_resource_health_checks_total", {"trigger": trigger, "outcome": outcome}
    ) or 0.0


def _instances(state: str) -> float | None:
    return REGISTRY.get_sample_value("innominatus_resource_instances", {"state": state})


def _name(state: int) -> str:
    return S.Name(state).removeprefix("RESOURCE_STATE_")


def _drop(database: str) -> None:
    with _admin_conn() as conn:
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(database)))


def _recreate(database: str, role: str) -> None:
    """Put the database back as the platform made it: owned by the role, marked, not PUBLIC."""
    with _admin_conn() as conn:
        (marker,) = conn.execute(
            "SELECT shobj_description(oid, 'pg_authid') FROM pg_roles WHERE rolname = %s", (role,)
        ).fetchone()
        conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(database), sql.Identifier(role)))
        conn.execute(sql.SQL("COMMENT ON DATABASE {} IS {}").format(sql.Identifier(database), sql.Literal(marker)))
        conn.execute(sql.SQL("REVOKE CONNECT, TEMPORARY ON DATABASE {} FROM PUBLIC").format(sql.Identifier(database)))


async def _audit_records(platform, token: str, method: str, resource_name: str) -> list:
    async with secure_channel(platform.address("audit"), platform.tls("gateway")) as channel:
        response = await audit_pb2_grpc.AuditServiceStub(channel).ListRecords(
            audit_pb2.ListRecordsRequest(page_size=1000, filter=audit_pb2.RecordFilter(method=method)),
            metadata=[("authorization", f"Bearer {token}")],
        )
    return [r for r in response.records if r.event.resource_name == resource_name]


def _monitor_tasks() -> list[asyncio.Task]:
    return [t for t in asyncio.all_tasks() if t.get_name() == monitor.TASK_NAME and not t.done()]


# ---------------------------------------------------------------------------------------------


def test_settings_defaults_and_valid_values():
    assert monitor.settings_from_env({}) == monitor.MonitorSettings(interval=60.0, concurrency=4)
    assert monitor.settings_from_env({monitor.ENV_INTERVAL: ""}).interval == 60.0  # empty counts as unset
    off = monitor.settings_from_env({monitor.ENV_INTERVAL: "0"})
    assert off.interval == 0 and not off.enabled
    fast = monitor.settings_from_env({monitor.ENV_INTERVAL: " 0.2 ", monitor.ENV_CONCURRENCY: "8"})
    assert fast == monitor.MonitorSettings(interval=0.2, concurrency=8) and fast.enabled


@pytest.mark.parametrize("value", ["soon", "-1", "nan", "inf", "1e400", "60s"])
def test_an_invalid_interval_is_refused_with_what_to_set(value):
    with pytest.raises(SystemExit) as refused:
        monitor.settings_from_env({monitor.ENV_INTERVAL: value})
    message = str(refused.value)
    assert message.startswith(f"configuration error: INNOMINATUS_RESOURCES_HEALTH_INTERVAL={value!r}"), message
    assert "seconds" in message and "0 to turn the health monitor off" in message


@pytest.mark.parametrize("value", ["0", "-2", "two", "1.5"])
def test_an_invalid_concurrency_is_refused(value):
    with pytest.raises(SystemExit, match=rf"configuration error: INNOMINATUS_RESOURCES_HEALTH_CONCURRENCY='{value}' is not a whole number ≥ 1"):
        monitor.settings_from_env({monitor.ENV_CONCURRENCY: value})


async def test_the_platform_refuses_to_start_with_an_invalid_interval(tmp_path, monkeypatch):
    _env(monkeypatch, "every minute")
    with pytest.raises(SystemExit, match="INNOMINATUS_RESOURCES_HEALTH_INTERVAL='every minute' is not a number"):
        async with running_platform(tmp_path / "data"):
            pytest.fail("the platform started with an invalid health interval")
    assert _monitor_tasks() == []


async def test_interval_zero_starts_no_monitor(tmp_path, monkeypatch):
    _env(monkeypatch, "0")
    async with running_platform(tmp_path / "data") as platform:
        runtime = platform.platform.hosts["resources"].runtime
        assert monitor.STATE_KEY not in runtime.state
        assert _monitor_tasks() == []


async def test_drift_degrades_and_recovery_restores_without_anyone_checking(platform, resources):
    runtime = platform.platform.hosts["resources"].runtime
    assert runtime.state[monitor.STATE_KEY].running and len(_monitor_tasks()) == 1
    api_checks = sum(_checks("api", o) for o in ("healthy", "unhealthy", "error", "skipped"))
    healthy_before, unhealthy_before = _checks("monitor", "healthy"), _checks("monitor", "unhealthy")

    resource = await resources.postgres(f"shop{uuid.uuid4().hex[:6]}")
    database, role = resource.outputs["database"], resource.outputs["username"]
    # checked while healthy: nothing changes, the gauge counts it
    await _eventually(
        lambda: _checks("monitor", "healthy") > healthy_before and _instances("ACTIVE") == 1,
        "a healthy check and the instance gauge",
    )
    assert (await resources.get(resource.name)).state == S.RESOURCE_STATE_ACTIVE

    # dropped behind the platform's back -> DEGRADED with the reason, by the monitor alone
    _drop(database)
    degraded = await _until_state(resources, resource.name, S.RESOURCE_STATE_DEGRADED)
    assert f"database {database} was dropped" in degraded.status_reason
    last = degraded.transitions[-1]
    assert (_name(getattr(last, "from")), _name(last.to)) == ("ACTIVE", "DEGRADED")
    assert last.actor == monitor.TRANSITION_ACTOR and f"database {database} was dropped" in last.reason
    assert _checks("monitor", "unhealthy") > unhealthy_before
    await _eventually(lambda: _instances("DEGRADED") == 1 and _instances("ACTIVE") == 0, "the gauge")

    # re-created as it was -> ACTIVE again, "healthy again"
    _recreate(database, role)
    recovered = await _until_state(resources, resource.name, S.RESOURCE_STATE_ACTIVE)
    last = recovered.transitions[-1]
    assert (_name(getattr(last, "from")), _name(last.to)) == ("DEGRADED", "ACTIVE")
    assert last.actor == monitor.TRANSITION_ACTOR
    assert last.reason.startswith(f"healthy again: connected to database {database} as {role}"), last.reason
    assert [(_name(getattr(t, "from")), _name(t.to)) for t in recovered.transitions] == [
        ("UNSPECIFIED", "REQUESTED"), ("REQUESTED", "PROVISIONING"), ("PROVISIONING", "ACTIVE"),
        ("ACTIVE", "DEGRADED"), ("DEGRADED", "ACTIVE"),
    ]

    # both changes are in the audit chain, as the service acting on its own
    token = resources.admin
    for method, reason in (("resource.degraded", f"database {database} was dropped"), ("resource.recovered", "healthy again")):
        (record,) = await _eventually(
            lambda m=method: _audit_records(platform, token, m, resource.name), f"the {method} audit record"
        )
        event = record.event
        assert (event.service, event.actor, event.permission) == ("resources", "service:resources", "resources.check")
        assert event.outcome == audit_event_pb2.AUDIT_OUTCOME_SUCCEEDED and event.resource_type == "resource"
        assert reason in event.reasons[0]
        assert event.details["trigger"] == "health monitor"

    # nobody called CheckResource
    assert sum(_checks("api", o) for o in ("healthy", "unhealthy", "error", "skipped")) == api_checks

    # stopping the service stops the monitor
    await platform.stop_service("resources")
    assert monitor.STATE_KEY not in runtime.state
    assert _monitor_tasks() == []


async def test_the_monitor_works_on_the_embedded_sqlite_default(tmp_path, monkeypatch):
    """`innominatus up` without a database URL: SQLite files, no row locks to skip, the
    process-local instance lock instead of the advisory lock."""
    _env(monkeypatch, INTERVAL)
    async with running_platform(tmp_path / "data", database_url=None) as platform:
        assert not platform.platform.hosts["resources"].runtime.db.is_postgres
        resources = Resources(platform, await platform.login_admin())
        try:
            resource = await resources.postgres(f"shop{uuid.uuid4().hex[:6]}")
            database, role = resource.outputs["database"], resource.outputs["username"]
            _drop(database)
            degraded = await _until_state(resources, resource.name, S.RESOURCE_STATE_DEGRADED)
            assert f"database {database} was dropped" in degraded.status_reason
            assert degraded.transitions[-1].actor == monitor.TRANSITION_ACTOR
            _recreate(database, role)
            recovered = await _until_state(resources, resource.name, S.RESOURCE_STATE_ACTIVE)
            assert recovered.transitions[-1].reason.startswith("healthy again: ")
            await resources.stub("engine").DeprovisionResource(resources_pb2.DeprovisionResourceRequest(name=resource.name))
        finally:
            await resources.close()


async def test_a_check_that_raises_does_not_stop_the_others(platform, resources, monkeypatch):
    app = f"shop{uuid.uuid4().hex[:6]}"
    crashing = await resources.postgres(app, "api")
    other = await resources.postgres(app, "worker")
    crashing_db = crashing.outputs["database"]
    real_health = PostgresDriver.health

    async def health(self, ctx, state, secrets):
        if state.get("database") == crashing_db:
            raise RuntimeError("driver exploded holding password=hunter2-not-for-logs")
        return await real_health(self, ctx, state, secrets)

    monkeypatch.setattr(PostgresDriver, "health", health)
    errors_before = _checks("monitor", "error")
    with capture_logs() as logs:
        _drop(other.outputs["database"])
        degraded = await _until_state(resources, other.name, S.RESOURCE_STATE_DEGRADED)
        # the loop went on past the crash, pass after pass
        await _eventually(lambda: _checks("monitor", "error") >= errors_before + 3, "more passes")
    assert f"database {other.outputs['database']} was dropped" in degraded.status_reason
    untouched = await resources.get(crashing.name)
    assert untouched.state == S.RESOURCE_STATE_ACTIVE
    assert [_name(t.to) for t in untouched.transitions] == ["REQUESTED", "PROVISIONING", "ACTIVE"]
    crashed = [e for e in logs if e.get("event") == "resource.health_check_crashed"]
    assert crashed and crashed[0]["error_type"] == "RuntimeError"
    assert crashed[0]["resource"] == crashing.name.removeprefix("resources/")
    assert "hunter2" not in repr(logs)
    assert platform.platform.hosts["resources"].runtime.state[monitor.STATE_KEY].running


async def test_two_monitors_never_check_one_instance_at_once(platform, resources, monkeypatch):
    """A second monitor on the same database stands for a second resources replica: the
    advisory lock is per database connection, so it contends exactly like another process."""
    app = f"shop{uuid.uuid4().hex[:6]}"
    instances = [await resources.postgres(app, w) for w in ("api", "worker")]
    real_health = PostgresDriver.health
    in_flight: dict[str, int] = {}
    most: dict[str, int] = {}
    done: list[str] = []
    held: list[str] = []
    skipped_before = _checks("monitor", "skipped")

    async def slow_health(self, ctx, state, secrets):
        database = state.get("database")
        in_flight[database] = in_flight.get(database, 0) + 1
        most[database] = max(most.get(database, 0), in_flight[database])
        try:
            if not held:
                # Hold the first check until the other monitor has come for this instance and
                # found it locked: the contention is certain, not left to the timing of passes
                # (the holding monitor's pass cannot end, so only the other one can claim it).
                held.append(database)
                await _eventually(lambda: _checks("monitor", "skipped") > skipped_before, "a locked instance skipped")
            else:
                await asyncio.sleep(0.3)  # longer than the interval: the instance is due again meanwhile
            return await real_health(self, ctx, state, secrets)
        finally:
            in_flight[database] -= 1
            done.append(database)

    monkeypatch.setattr(PostgresDriver, "health", slow_health)
    runtime = platform.platform.hosts["resources"].runtime
    replica = monitor.HealthMonitor(runtime, runtime.state["resources.servicer"], monitor.settings_from_env())
    replica.start()
    try:
        await _eventually(lambda: len(done) >= 8, "eight checks")
    finally:
        await replica.stop()
    assert not replica.running
    assert set(most) == {i.outputs["database"] for i in instances}
    assert max(most.values()) == 1, most
    # the other monitor found the held instance locked instead of checking it twice
    assert _checks("monitor", "skipped") > skipped_before
    for instance in instances:
        assert (await resources.get(instance.name)).state == S.RESOURCE_STATE_ACTIVE
