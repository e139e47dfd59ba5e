"""Resource instances end to end: claim, provision through the engine's `resource` step over
mTLS, reveal, health / drift, deprovision, shared instances, failures.

Runs against the real PostgreSQL and Redis that scripts/test starts: the platform's built-in
`postgres` / `redis` definitions get the test servers' admin URLs (set before it starts).
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid

import grpc
from google.protobuf import json_format
import psycopg
import pytest
from psycopg import sql
from sqlalchemy.engine import make_url
from structlog.testing import capture_logs

from innominatus.engine.executors import default_registry
from innominatus.engine.executors.resource import ResourceExecutor
from innominatus.engine.model import StepContext, StepFailed
from innominatus.identity.v1 import identity_pb2
from innominatus.resources import lifecycle
from innominatus.resources.secrets import encode_master_key, generate_master_key
from innominatus.resources.v1 import resources_pb2, resources_pb2_grpc
from tests.helpers.database import test_database_url
from tests.helpers.mesh import running_platform

S = resources_pb2.ResourceState


def _pg_admin_url() -> str:
    return make_url(test_database_url()).set(drivername="postgresql").render_as_string(hide_password=False)


def _redis_url() -> str:
    url = os.environ.get("INNOMINATUS_TEST_REDIS_URL", "").strip()
    if not url:
        pytest.fail("INNOMINATUS_TEST_REDIS_URL is not set: run the suite with scripts/test", pytrace=False)
    return url


@pytest.fixture
async def platform(tmp_path, monkeypatch):
    monkeypatch.setenv("INNOMINATUS_POSTGRES_ADMIN_URL", _pg_admin_url())
    monkeypatch.setenv("INNOMINATUS_REDIS_ADMIN_URL", _redis_url())
    # a shared database needs a configured master key for the envelope secret store
    monkeypatch.setenv("INNOMINATUS_SECRETS_KEY", encode_master_key(generate_master_key()))
    async with running_platform(tmp_path / "data") as running:
        yield running


class Client:
    """The resources service as the specs service (claims), the engine (provision) and users."""

    def __init__(self, platform, admin: str) -> None:
        self.platform = platform
        self.admin = admin
        self.channels = {i: platform.channel("resources", identity=i) for i in ("specs", "engine", "cli")}

    def stub(self, identity: str):
        return resources_pb2_grpc.ResourcesServiceStub(self.channels[identity])

    def auth(self, token: str | None = None):
        return [("authorization", f"Bearer {token or self.admin}")]

    async def claim(self, app: str, env: str, workload: str, *claims) -> list:
        response = await self.stub("specs").ClaimResources(
            resources_pb2.ClaimResourcesRequest(application=app, environment=env, workload=workload, claims=list(claims)),
            metadata=self.auth(),
        )
        return list(response.resources)

    async def provision(self, name: str, force: bool = False):
        return await self.stub("engine").ProvisionResource(resources_pb2.ProvisionResourceRequest(name=name, force=force))

    async def deprovision(self, name: str, force: bool = False):
        return await self.stub("engine").DeprovisionResource(resources_pb2.DeprovisionResourceRequest(name=name, force=force))

    async def check(self, name: str):
        return await self.stub("cli").CheckResource(resources_pb2.CheckResourceRequest(name=name), metadata=self.auth())

    async def reveal(self, name: str, token: str | None = None) -> dict:
        response = await self.stub("cli").RevealResourceSecrets(
            resources_pb2.RevealResourceSecretsRequest(name=name), metadata=self.auth(token)
        )
        return dict(response.secrets)

    async def get(self, name: str):
        return (await self.stub("cli").GetResource(resources_pb2.GetResourceRequest(name=name), metadata=self.auth())).resource

    async def close(self) -> None:
        for channel in self.channels.values():
            await channel.close()


@pytest.fixture
async def client(platform):
    c = Client(platform, await platform.login_admin())
    try:
        yield c
    finally:
        await c.close()


def _claim(ref: str, type_: str, id_: str = "", class_: str = "") -> resources_pb2.ResourceClaim:
    return resources_pb2.ResourceClaim(ref=ref, type=type_, id=id_, **{"class": class_})


def _step(services: dict, inputs: dict, tmp_path) -> StepContext:
    lines: list[str] = []

    async def log(line: str) -> None:
        lines.append(line)

    ctx = StepContext(
        run_id="run-" + uuid.uuid4().hex[:8], step_id="db", attempt=1, idempotency_key=uuid.uuid4().hex,
        inputs=inputs, workdir=str(tmp_path), cancelled=asyncio.Event(), log=log, services=services,
    )
    ctx.lines = lines  # type: ignore[attr-defined]
    return ctx


def _transitions(resource) -> list[tuple[str, str]]:
    return [(S.Name(getattr(t, "from")).removeprefix("RESOURCE_STATE_"), S.Name(t.to).removeprefix("RESOURCE_STATE_"))
            for t in resource.transitions]


def _admin_conn():
    return psycopg.connect(_pg_admin_url(), autocommit=True)


def _exists(database: str, role: str) -> tuple[bool, bool]:
    with _admin_conn() as conn:
        db_row = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone()
        role_row = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
    return db_row is not None, role_row is not None


def _platform_rows_containing(platform, needle: str) -> list[str]:
    """Every row of every table of the platform's database whose text contains ``needle``."""
    url = make_url(platform.platform.settings.database_url).set(drivername="postgresql").render_as_string(hide_password=False)
    hits = []
    with psycopg.connect(url, autocommit=True) as conn:
        tables = conn.execute(
            "SELECT table_schema, table_name FROM information_schema.tables "
            "WHERE table_schema NOT IN ('pg_catalog', 'information_schema') AND table_type = 'BASE TABLE'"
        ).fetchall()
        for schema, table in tables:
            rows = conn.execute(
                sql.SQL("SELECT t::text FROM {}.{} t").format(sql.Identifier(schema), sql.Identifier(table))
            ).fetchall()
            hits += [f"{schema}.{table}" for (text,) in rows if needle in text]
    return hits


# ---------------------------------------------------------------------------------------------


def test_state_machine_table():
    assert lifecycle.allowed("REQUESTED", "PROVISIONING")
    assert lifecycle.allowed("ACTIVE", "UPDATING") and lifecycle.allowed("UPDATING", "ACTIVE")
    assert lifecycle.allowed("ACTIVE", "DEGRADED") and lifecycle.allowed("DEGRADED", "ACTIVE")
    assert lifecycle.allowed("DEPROVISIONING", "DELETED")
    for working in ("PROVISIONING", "UPDATING", "DEPROVISIONING", "ACTIVE", "DEGRADED"):
        assert lifecycle.allowed(working, "FAILED"), working
    assert not lifecycle.allowed("REQUESTED", "ACTIVE")
    assert not lifecycle.allowed("DELETED", "ACTIVE")
    with pytest.raises(lifecycle.IllegalTransition, match="cannot go from DELETED to ACTIVE"):
        lifecycle.check("x", "DELETED", "ACTIVE")
    # the engine's registry runs `resource` steps with the real executor now
    assert not default_registry().is_placeholder("resource")


async def test_postgres_lifecycle_through_the_resource_step(platform, client, tmp_path):
    app, env = f"shop{uuid.uuid4().hex[:6]}", "dev"
    developer = await platform.create_user(client.admin, "dana", identity_pb2.ROLE_DEVELOPER)
    (claimed,) = await client.claim(app, env, "api", _claim("db", "postgres"))
    assert claimed.state == S.RESOURCE_STATE_REQUESTED
    name = claimed.name

    engine_channel = platform.channel("resources", identity="engine")
    services = {"resources": resources_pb2_grpc.ResourcesServiceStub(engine_channel)}
    try:
        with capture_logs() as logs:
            step = _step(services, {"name": name, "action": "provision"}, tmp_path)
            outputs = await ResourceExecutor().run(step)
            assert outputs["state"] == "active" and outputs["provisioned"] is True
            assert outputs["definition"] == "default-postgres@0"
            assert {"host", "port", "username", "database"} <= set(outputs["outputs"])
            assert set(outputs["secrets"]) == {"password", "url"}
            assert outputs["secrets"]["password"].startswith(f"secret://db/apps/{app}/{env}/api-db?version=1#password")

            secrets = await client.reveal(name)
            password = secrets["password"]
            assert len(password) == 32

            # the password reaches only the revealing caller
            assert password not in json.dumps(outputs) and password not in " ".join(step.lines)
            resource = await client.get(name)
            assert password not in str(resource)
            database, role = resource.outputs["database"], resource.outputs["username"]
            assert resource.secret_refs["url"].startswith("secret://db/")

            # it really works with the revealed credentials
            with psycopg.connect(secrets["url"]) as conn:
                assert conn.execute("SELECT current_database(), current_user").fetchone() == (database, role)

            # again, unchanged: not provisioned a second time
            again = await client.provision(name)
            assert again.provisioned is False

            checked = await client.check(name)
            assert checked.healthy and not checked.drifted
            assert checked.resource.state == S.RESOURCE_STATE_ACTIVE

        # a developer may not reveal
        with pytest.raises(grpc.aio.AioRpcError) as denied:
            await client.reveal(name, token=developer)
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "resources.reveal" in denied.value.details()
        # nor may anyone provision except the engine's certificate
        with pytest.raises(grpc.aio.AioRpcError) as peer:
            await client.stub("cli").ProvisionResource(resources_pb2.ProvisionResourceRequest(name=name), metadata=client.auth())
        assert peer.value.code() == grpc.StatusCode.PERMISSION_DENIED

        # dropped behind our back -> DEGRADED, with the reason
        with _admin_conn() as conn:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(database)))
        checked = await client.check(name)
        assert not checked.healthy and checked.drifted
        assert checked.resource.state == S.RESOURCE_STATE_DEGRADED
        assert f"database {database} was dropped" in checked.resource.status_reason

        # provisioning again repairs it: DEGRADED -> UPDATING -> ACTIVE, same password
        repaired = await client.provision(name)
        assert repaired.provisioned and repaired.resource.state == S.RESOURCE_STATE_ACTIVE
        assert (await client.reveal(name))["password"] == password
        assert (await client.check(name)).healthy

        # deprovision through the step: DEPROVISIONING -> DELETED, database, role and secrets gone
        outputs = await ResourceExecutor().run(_step(services, {"name": name, "action": "deprovision"}, tmp_path))
        assert outputs["state"] == "deleted" and outputs["secrets"] == {}
        assert _exists(database, role) == (False, False)
        with pytest.raises(grpc.aio.AioRpcError) as gone:
            await client.reveal(name)
        assert gone.value.code() == grpc.StatusCode.FAILED_PRECONDITION

        resource = await client.get(name)
        assert _transitions(resource) == [
            ("UNSPECIFIED", "REQUESTED"),
            ("REQUESTED", "PROVISIONING"),
            ("PROVISIONING", "ACTIVE"),
            ("ACTIVE", "DEGRADED"),
            ("DEGRADED", "UPDATING"),
            ("UPDATING", "ACTIVE"),
            ("ACTIVE", "DEPROVISIONING"),
            ("DEPROVISIONING", "DELETED"),
        ]
        assert resource.transitions[1].actor == "service:engine"
        assert "was dropped" in resource.transitions[3].reason

        # nowhere in the platform's database (audit records, outbox, resource rows): the
        # secret store only keeps ciphertext
        await asyncio.sleep(1.0)  # let the audit relay ship the events
        assert _platform_rows_containing(platform, password) == []
        audited = _platform_rows_containing(platform, "RevealResourceSecrets")
        assert audited, "the reveal was not audited"
        # no log line either
        assert logs, "structlog capture saw nothing"
        assert any(e.get("event") == "resource.provisioned" for e in logs)
        assert password not in repr(logs)
    finally:
        await engine_channel.close()


async def test_shared_resource_is_one_instance_provisioned_once(client):
    app, env, shared = f"shop{uuid.uuid4().hex[:6]}", "dev", f"orders{uuid.uuid4().hex[:6]}"
    (a,) = await client.claim(app, env, "api", _claim("db", "postgres", shared))
    (b,) = await client.claim(app, env, "worker", _claim("orders", "postgres", shared))
    (c,) = await client.claim("billing", env, "billing", _claim("orders", "postgres", shared))
    assert a.name == b.name == c.name
    assert c.shared_key == f"postgres.default#{shared}"
    assert list(c.workloads) == sorted([f"{app}/api", f"{app}/worker", "billing/billing"])

    # the same id with another type in the environment is refused
    with pytest.raises(grpc.aio.AioRpcError) as conflict:
        await client.claim(app, env, "api", _claim("cache", "redis", shared))
    assert conflict.value.code() == grpc.StatusCode.FAILED_PRECONDITION

    # two workloads' steps at once: one provisions, the other finds it active
    first, second = await asyncio.gather(client.provision(a.name), client.provision(b.name))
    assert sorted([first.provisioned, second.provisioned]) == [False, True]
    resource = await client.get(a.name)
    assert resource.state == S.RESOURCE_STATE_ACTIVE
    assert [t for t in _transitions(resource) if t[1] == "PROVISIONING"] == [("REQUESTED", "PROVISIONING")]
    assert resource.secret_refs["password"].startswith(f"secret://db/shared/{env}/{shared}")
    database = resource.outputs["database"]
    assert _exists(database, database) == (True, True)

    # still claimed by others: not removed by accident
    with pytest.raises(grpc.aio.AioRpcError) as claimed:
        await client.deprovision(a.name)
    assert claimed.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "still claimed" in claimed.value.details()
    done = await client.deprovision(a.name, force=True)
    assert done.resource.state == S.RESOURCE_STATE_DELETED
    assert _exists(database, database) == (False, False)


async def test_provisioner_failure_is_failed_with_reason_and_retryable(platform, client, monkeypatch, tmp_path):
    app = f"shop{uuid.uuid4().hex[:6]}"
    (claimed,) = await client.claim(app, "dev", "api", _claim("db", "postgres"))
    # the built-in definition reads the admin URL when it is matched: point it at a closed port
    bad = make_url(test_database_url()).set(drivername="postgresql", port=1, password="hunter2-admin-secret")
    monkeypatch.setenv("INNOMINATUS_POSTGRES_ADMIN_URL", bad.render_as_string(hide_password=False))

    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await client.provision(claimed.name)
    assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "cannot connect to the admin PostgreSQL server" in failed.value.details()
    resource = await client.get(claimed.name)
    assert resource.state == S.RESOURCE_STATE_FAILED
    assert "cannot connect to the admin PostgreSQL server 127.0.0.1:1" in resource.status_reason
    assert "hunter2-admin-secret" not in resource.status_reason + failed.value.details()

    # through the step: a retryable StepFailed, so the engine retries it per policy
    engine_channel = platform.channel("resources", identity="engine")
    try:
        services = {"resources": resources_pb2_grpc.ResourcesServiceStub(engine_channel)}
        with pytest.raises(StepFailed) as step_failed:
            await ResourceExecutor().run(_step(services, {"name": claimed.name}, tmp_path))
        assert step_failed.value.retryable and step_failed.value.kind == "unavailable"

        # the server is back: the retry succeeds (FAILED -> PROVISIONING -> ACTIVE)
        monkeypatch.setenv("INNOMINATUS_POSTGRES_ADMIN_URL", _pg_admin_url())
        outputs = await ResourceExecutor().run(_step(services, {"name": claimed.name}, tmp_path))
        assert outputs["state"] == "active"
    finally:
        await engine_channel.close()
    resource = await client.get(claimed.name)
    assert _transitions(resource)[-2:] == [("FAILED", "PROVISIONING"), ("PROVISIONING", "ACTIVE")]
    await client.deprovision(claimed.name)
    assert _exists(resource.outputs["database"], resource.outputs["username"]) == (False, False)


async def test_unknown_type_fails_with_known_types(client):
    (claimed,) = await client.claim(f"shop{uuid.uuid4().hex[:6]}", "dev", "api", _claim("db", "postgress"))
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await client.provision(claimed.name)
    assert failed.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "did you mean 'postgres'?" in failed.value.details()
    assert "known types:" in failed.value.details() and "redis" in failed.value.details()
    resource = await client.get(claimed.name)
    assert resource.state == S.RESOURCE_STATE_FAILED
    assert "did you mean 'postgres'" in resource.status_reason


async def test_redis_resource_and_reveal_over_the_gateway(platform, client):
    import redis.asyncio as aioredis

    (claimed,) = await client.claim(f"shop{uuid.uuid4().hex[:6]}", "dev", "api", _claim("cache", "redis"))
    provisioned = await client.provision(claimed.name)
    resource = provisioned.resource
    assert resource.state == S.RESOURCE_STATE_ACTIVE and "password" in resource.secret_refs

    rid = claimed.name.removeprefix("resources/")
    async with platform.http(client.admin) as http:
        got = await http.get(f"/api/v1/resources/{rid}")
        assert got.status_code == 200, got.text
        revealed = await http.post(f"/api/v1/resources/{rid}:reveal", json={})
        assert revealed.status_code == 200, revealed.text
        secrets = revealed.json()["secrets"]
        assert secrets["password"] not in got.text
        checked = await http.post(f"/api/v1/resources/{rid}:check", json={})
        assert checked.status_code == 200 and checked.json()["healthy"] is True, checked.text

    prefix = resource.outputs["key_prefix"]
    r = aioredis.from_url(secrets["url"])
    try:
        await r.set(f"{prefix}k", "v")
        assert await r.get(f"{prefix}k") == b"v"
    finally:
        await r.aclose()

    await client.deprovision(claimed.name)
    admin = aioredis.from_url(_redis_url())
    try:
        assert resource.outputs["username"] not in [u.decode() if isinstance(u, bytes) else u for u in await admin.acl_users()]
    finally:
        await admin.aclose()


RESOURCE_WORKFLOW = """apiVersion: innominatus.dev/v1
kind: Workflow
metadata: {name: res-lifecycle, version: "1.0.0", description: provision then deprovision, owner: team-test}
spec:
  params:
    resource: {type: string, required: true}
  steps:
    - id: provision
      type: resource
      with: {name: "${params.resource}", action: provision}
      retry: {max_attempts: 3}
    - id: deprovision
      type: resource
      depends_on: [provision]
      with: {name: "${params.resource}", action: deprovision}
"""


async def test_resource_steps_run_on_the_engine(platform, client):
    from google.protobuf import struct_pb2

    from innominatus.engine.v1 import engine_pb2, engine_pb2_grpc, golden_paths_pb2, golden_paths_pb2_grpc

    (claimed,) = await client.claim(f"shop{uuid.uuid4().hex[:6]}", "dev", "api", _claim("db", "postgres"))
    auth = client.auth()
    channel = platform.channel("engine", identity="gateway")
    try:
        await golden_paths_pb2_grpc.GoldenPathServiceStub(channel).PublishGoldenPath(
            golden_paths_pb2.PublishGoldenPathRequest(source_yaml=RESOURCE_WORKFLOW), metadata=auth, timeout=20
        )
        engine = engine_pb2_grpc.EngineServiceStub(channel)
        inputs = struct_pb2.Struct()
        inputs.update({"resource": claimed.name})
        started = await engine.StartRun(
            engine_pb2.StartRunRequest(workflow="res-lifecycle", application="shop", environment="dev", inputs=inputs),
            metadata=auth, timeout=20,
        )
        deadline = asyncio.get_running_loop().time() + 60
        while True:
            run = (await engine.GetRun(engine_pb2.GetRunRequest(name=started.run.name), metadata=auth)).run
            if run.state in (engine_pb2.RUN_STATE_SUCCEEDED, engine_pb2.RUN_STATE_FAILED, engine_pb2.RUN_STATE_CANCELLED):
                break
            assert asyncio.get_running_loop().time() < deadline, "run did not finish"
            await asyncio.sleep(0.2)
    finally:
        await channel.close()
    assert run.state == engine_pb2.RUN_STATE_SUCCEEDED, str(run)
    steps = {s.step_id: s for s in run.steps}
    provisioned = json_format.MessageToDict(steps["provision"].outputs)
    assert provisioned["state"] == "active" and provisioned["provisioned"] is True
    assert provisioned["secrets"]["password"].startswith("secret://db/")
    assert set(provisioned["outputs"]) >= {"host", "port", "username"}
    resource = await client.get(claimed.name)
    assert resource.state == S.RESOURCE_STATE_DELETED
    assert ("PROVISIONING", "ACTIVE") in _transitions(resource)
    assert all(t.actor == "service:engine" for t in resource.transitions[1:])


async def test_resource_step_inputs_and_wiring(tmp_path):
    with pytest.raises(StepFailed) as no_service:
        await ResourceExecutor().run(_step({}, {"name": "resources/x"}, tmp_path))
    assert no_service.value.kind == "not_wired" and not no_service.value.retryable
    fake = object()
    for inputs, text in (
        ({}, "`name` must be a resource name"),
        ({"name": "resources/x", "action": "backup"}, "`action` must be one of provision, deprovision"),
        ({"name": "shop-db", "type": "postgres", "application": "shop"}, "give `name: resources/<id>`"),
        ({"name": "resources/x", "force": "yes"}, "`force` must be true or false"),
    ):
        with pytest.raises(StepFailed, match=text) as bad:
            await ResourceExecutor().run(_step({"resources": fake}, inputs, tmp_path))
        assert bad.value.kind == "invalid_input" and not bad.value.retryable


async def test_params_using_other_resources_outputs_are_resolved_or_refused(client):
    """A route whose host is ${resources.web.host} gets the dns resource's hostname; a dependency
    not provisioned yet, a name the workload does not claim and a missing output are refused
    with what to do, and leave the instance FAILED with that reason."""
    from google.protobuf import struct_pb2

    def route(ref: str, host: str) -> resources_pb2.ResourceClaim:
        params = struct_pb2.Struct()
        params.update({"host": host, "path": "/", "port": 8080})
        return resources_pb2.ResourceClaim(ref=ref, type="route", params=params)

    app = f"shop{uuid.uuid4().hex[:6]}"
    web, good, typo, orphan = await client.claim(
        app, "dev", "api", _claim("web", "dns"), route("route", "${resources.web.host}"),
        route("typo", "${resources.web.hostname}"), route("orphan", "${resources.cdn.host}"),
    )

    with pytest.raises(grpc.aio.AioRpcError) as early:
        await client.provision(good.name)
    assert early.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "resources.web" in early.value.details() and "provision it first" in early.value.details()
    assert (await client.get(good.name)).state == S.RESOURCE_STATE_FAILED

    host = dict((await client.provision(web.name)).resource.outputs)["host"]
    provisioned = await client.provision(good.name)
    assert provisioned.provisioned
    assert dict(provisioned.resource.outputs)["host"] == host
    # the stored params keep the placeholder; the provisioner got the value
    assert dict(provisioned.resource.claim.params)["host"] == "${resources.web.host}"
    again = await client.provision(good.name)
    assert not again.provisioned  # nothing changed: not provisioned twice

    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await client.provision(typo.name)
    assert missing.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "hostname" in missing.value.details() and "host" in missing.value.details()
    with pytest.raises(grpc.aio.AioRpcError) as unclaimed:
        await client.provision(orphan.name)
    assert "resources cdn" in unclaimed.value.details() and f"{app}/api does not claim" in unclaimed.value.details()
    failed = await client.get(orphan.name)
    assert failed.state == S.RESOURCE_STATE_FAILED and "cdn" in failed.status_reason
