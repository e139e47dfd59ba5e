"""Undeploying an application releases its claims on a shared resource instead of failing.

Two applications whose Score files claim a postgres resource with the same `id` share one
instance in the environment. `apps delete` of the first releases its claim (the undeploy step's
outputs say "released"; database and role stay, the second application keeps working with its
credentials); `apps delete` of the second, the last claimer, deprovisions it. Plus the
DeprovisionResource `application` field at the RPC level: a private instance, another
application's instance, two workloads of one application, force, a retry, bad input. Runs
against the real PostgreSQL and Redis that scripts/test starts.
"""

from __future__ import annotations

import json
import uuid

import grpc
import psycopg
import pytest

from innominatus.engine.executors.resource import ResourceExecutor
from innominatus.engine.model import StepFailed
from innominatus.engine.workflows import undeploy_workflow
from innominatus.identity.v1 import identity_pb2
from innominatus.resources.v1 import resources_pb2, resources_pb2_grpc
from tests.helpers.real_resources import resource_env
from tests.helpers.runs import deploy, steps_by_id, wait_for_run
from tests.helpers.resource_steps import RecordingResourcesStub, resource_step

S = resources_pb2.ResourceState

SCORE = """\
apiVersion: score.dev/v1b1
metadata:
  name: {app}
containers:
  api:
    image: registry.example.com/shop/{app}:1.0.0
    variables:
      DB_HOST: ${{resources.db.host}}
      DB_NAME: ${{resources.db.name}}
      DB_USER: ${{resources.db.username}}
resources:
  db:
    type: postgres
    id: {shared}
"""


@pytest.fixture
def platform(resource_platform):
    return resource_platform


async def _exists(database: str, role: str) -> tuple[bool, bool]:
    admin_url = resource_env()["INNOMINATUS_POSTGRES_ADMIN_URL"]
    async with await psycopg.AsyncConnection.connect(admin_url, connect_timeout=10) as conn:
        db_row = await (await conn.execute("select 1 from pg_database where datname = %s", (database,))).fetchone()
        role_row = await (await conn.execute("select 1 from pg_roles where rolname = %s", (role,))).fetchone()
    return db_row is not None, role_row is not None


async def _deploy(http, app: str, shared: str) -> dict:
    """Deploy ``app`` claiming the postgres instance ``shared``; the run's steps."""
    return steps_by_id((await deploy(http, SCORE.format(app=app, shared=shared)))["run"])


async def _undeploy(http, app: str) -> dict:
    """`apps delete APP --env dev`; the outputs of its run's `deprovision-db` step."""
    deleted = await http.delete(f"/api/v1/applications/{app}", params={"environment": "dev"})
    assert deleted.status_code == 200, deleted.text
    run = await wait_for_run(http, deleted.json()["run"]["name"])
    assert run["state"] == "RUN_STATE_SUCCEEDED", json.dumps(run, indent=1)
    steps = steps_by_id(run)
    assert all(s["state"] in ("STEP_STATE_SUCCEEDED", "STEP_STATE_SKIPPED") for s in steps.values()), steps
    if "deprovision-db" in steps:  # the built-in undeploy workflow is the run
        assert steps["deprovision-db"]["type"] == "resource"
        return steps["deprovision-db"]["outputs"]
    # the built-in undeploy workflow runs as a sub-workflow step: its steps' outputs are in that step's
    nested = [s["outputs"]["steps"]["deprovision-db"] for s in steps.values()
              if s["type"] == "workflow" and "deprovision-db" in (s.get("outputs") or {}).get("steps", {})]
    assert len(nested) == 1, json.dumps(run, indent=1)
    return nested[0]


# -- the undeploy workflow and the `resource` step ------------------------------------------


def test_undeploy_steps_release_the_runs_application():
    wf = undeploy_workflow({"claims": [{"ref": "db", "resource": "resources/d", "depends_on": []}]})
    steps = {s.id: s for s in wf.steps}
    assert steps["deprovision-db"].with_ == {"name": "resources/d", "action": "deprovision",
                                             "release": "${workflow.application}"}
    assert steps["deprovision-db"].retry.max_attempts == 3  # retries kept


async def test_resource_step_passes_release_and_reports_the_outcome(tmp_path):
    released = resources_pb2.DeprovisionResourceResponse(
        resource=resources_pb2.Resource(name="resources/d", state=S.RESOURCE_STATE_ACTIVE),
        released=True, remaining_claims=["billing/billing"],
    )
    stub = RecordingResourcesStub(released)
    out = await ResourceExecutor().run(resource_step(stub, {"name": "resources/d", "action": "deprovision",
                                                              "release": "shop"}, tmp_path))
    assert stub.requests[0].application == "shop" and not stub.requests[0].force
    assert (out["result"], out["released"], out["remaining_claims"], out["state"]) == (
        "released", True, ["billing/billing"], "active")

    stub = RecordingResourcesStub(resources_pb2.DeprovisionResourceResponse(
        resource=resources_pb2.Resource(name="resources/d", state=S.RESOURCE_STATE_DELETED)))
    out = await ResourceExecutor().run(resource_step(stub, {"name": "resources/d", "action": "deprovision"}, tmp_path))
    assert stub.requests[0].application == ""  # without `release`, no claim is released
    assert (out["result"], out["released"], out["state"]) == ("deprovisioned", False, "deleted")

    for inputs, text in (
        ({"name": "resources/d", "release": "shop"}, "`release` applies to `action: deprovision` only"),
        ({"name": "resources/d", "action": "deprovision", "release": 3}, "`release` must be an application name"),
        ({"name": "resources/d", "action": "deprovision", "release": "a/b"}, "`release` must be an application name"),
    ):
        with pytest.raises(StepFailed, match=text) as bad:
            await ResourceExecutor().run(resource_step(RecordingResourcesStub(released), inputs, tmp_path))
        assert bad.value.kind == "invalid_input" and not bad.value.retryable


# -- end to end: two applications, one shared database ---------------------------------------


@pytest.mark.postgres
async def test_undeploying_one_of_two_applications_releases_the_shared_database(platform):
    first, second = f"shop{uuid.uuid4().hex[:6]}", f"bill{uuid.uuid4().hex[:6]}"
    shared = f"orders{uuid.uuid4().hex[:6]}"
    admin = await platform.login_admin()
    developer = await platform.create_user(admin, f"dev{uuid.uuid4().hex[:6]}", identity_pb2.ROLE_DEVELOPER)

    async with platform.http(developer) as http:
        one = (await _deploy(http, first, shared))["provision-db"]["outputs"]
        two = (await _deploy(http, second, shared))["provision-db"]["outputs"]
    # one instance, provisioned once: the second deploy found it active and unchanged
    assert one["resource"] == two["resource"]
    assert (one["provisioned"], two["provisioned"]) == (True, False)
    assert one["outputs"] == two["outputs"] and one["secrets"] == two["secrets"]
    database, role = one["outputs"]["database"], one["outputs"]["username"]
    assert await _exists(database, role) == (True, True)
    rid = one["resource"].removeprefix("resources/")

    async with platform.http(developer) as http:
        out = await _undeploy(http, first)
    assert (out["result"], out["released"], out["state"]) == ("released", True, "active")
    assert out["remaining_claims"] == [f"{second}/{second}"]
    assert await _exists(database, role) == (True, True)

    async with platform.http(admin) as http:
        resource = (await http.get(f"/api/v1/resources/{rid}")).json()["resource"]
        assert resource["state"] == "RESOURCE_STATE_ACTIVE"
        assert resource["workloads"] == [f"{second}/{second}"]
        note = resource["transitions"][-1]
        assert note["from"] == note["to"] == "RESOURCE_STATE_ACTIVE"
        assert note["reason"] == f"claim released by {first}/{first}; still claimed by {second}/{second}"
        assert note["actor"] == "service:engine"
        assert sum(1 for t in resource["transitions"] if t["to"] == "RESOURCE_STATE_PROVISIONING") == 1
        revealed = await http.post(f"/api/v1/resources/{rid}:reveal", json={})
        assert revealed.status_code == 200, revealed.text
        password = revealed.json()["secrets"]["password"]

    # the second application still connects with its credentials, to the shared database
    conninfo = dict(host=two["outputs"]["host"], port=int(two["outputs"]["port"]), user=role,
                    password=password, dbname=database)
    async with await psycopg.AsyncConnection.connect(**conninfo, connect_timeout=10) as conn:
        row = await (await conn.execute("select current_database(), current_user")).fetchone()
    assert row == (database, role)

    # the last claimer's undeploy deprovisions it
    async with platform.http(developer) as http:
        out = await _undeploy(http, second)
    assert (out["result"], out["released"], out["state"], out["remaining_claims"]) == (
        "deprovisioned", False, "deleted", [])
    assert await _exists(database, role) == (False, False)
    async with platform.http(admin) as http:
        resource = (await http.get(f"/api/v1/resources/{rid}")).json()["resource"]
    assert resource["state"] == "RESOURCE_STATE_DELETED"
    # the history: the release, then the deprovisioning
    assert [(t["to"], t["reason"]) for t in resource["transitions"][-3:-1]] == [
        ("RESOURCE_STATE_ACTIVE", f"claim released by {second}/{second}; no claims remain"),
        ("RESOURCE_STATE_DEPROVISIONING", "deprovisioning"),
    ]


# -- DeprovisionResource with `application`, at the RPC level --------------------------------


@pytest.fixture
async def resources(platform):
    """The resources service as the specs service (claims), the engine (provision, deprovision)
    and an admin (get)."""
    admin = await platform.login_admin()
    channels = {i: platform.channel("resources", identity=i) for i in ("specs", "engine", "cli")}
    stubs = {i: resources_pb2_grpc.ResourcesServiceStub(c) for i, c in channels.items()}
    auth = [("authorization", f"Bearer {admin}")]

    class Calls:
        async def claim(self, app: str, workload: str, ref: str, shared: str = "") -> str:
            claim = resources_pb2.ResourceClaim(ref=ref, type="postgres", id=shared)
            answer = await stubs["specs"].ClaimResources(resources_pb2.ClaimResourcesRequest(
                application=app, environment="dev", workload=workload, claims=[claim]), metadata=auth)
            return answer.resources[0].name

        async def provision(self, name: str) -> resources_pb2.Resource:
            return (await stubs["engine"].ProvisionResource(resources_pb2.ProvisionResourceRequest(name=name))).resource

        async def deprovision(self, name: str, application: str = "", force: bool = False):
            return await stubs["engine"].DeprovisionResource(
                resources_pb2.DeprovisionResourceRequest(name=name, application=application, force=force))

        async def get(self, name: str) -> resources_pb2.Resource:
            return (await stubs["cli"].GetResource(resources_pb2.GetResourceRequest(name=name), metadata=auth)).resource

    try:
        yield Calls()
    finally:
        for channel in channels.values():
            await channel.close()


def _notes(resource) -> list[str]:
    return [t.reason for t in resource.transitions if getattr(t, "from") == t.to]


@pytest.mark.postgres
async def test_release_of_a_private_instance_deprovisions_it_and_never_touches_another_apps(resources):
    app, other = f"shop{uuid.uuid4().hex[:6]}", f"bill{uuid.uuid4().hex[:6]}"
    name = await resources.claim(app, "api", "db")
    made = await resources.provision(name)
    database, role = made.outputs["database"], made.outputs["username"]

    # another application's name releases nothing of it: the instance is left as it is
    kept = await resources.deprovision(name, application=other)
    assert kept.released and list(kept.remaining_claims) == [f"{app}/api"]
    assert kept.resource.state == S.RESOURCE_STATE_ACTIVE and _notes(kept.resource) == []
    assert await _exists(database, role) == (True, True)

    done = await resources.deprovision(name, application=f"applications/{app}")
    assert not done.released and list(done.remaining_claims) == []
    assert done.resource.state == S.RESOURCE_STATE_DELETED
    assert _notes(done.resource) == [f"claim released by {app}/api; no claims remain"]
    assert await _exists(database, role) == (False, False)

    # a retry (the step's answer was lost) is a no-op
    again = await resources.deprovision(name, application=app)
    assert not again.released and again.resource.state == S.RESOURCE_STATE_DELETED
    assert len(again.resource.transitions) == len(done.resource.transitions)


@pytest.mark.postgres
async def test_release_of_a_shared_instance_by_two_workloads_of_one_application_then_force(resources):
    app, other, shared = f"shop{uuid.uuid4().hex[:6]}", f"bill{uuid.uuid4().hex[:6]}", f"o{uuid.uuid4().hex[:8]}"
    name = await resources.claim(app, "api", "db", shared)
    assert await resources.claim(app, "worker", "orders", shared) == name
    assert await resources.claim(other, "billing", "orders", shared) == name
    made = await resources.provision(name)
    database, role = made.outputs["database"], made.outputs["username"]

    # without `application` a still-claimed shared instance is refused, as before
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await resources.deprovision(name)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "still claimed" in refused.value.details() and "pass application" in refused.value.details()

    # releasing the application releases both of its workloads' claims at once
    released = await resources.deprovision(name, application=app)
    assert released.released and list(released.remaining_claims) == [f"{other}/billing"]
    assert list(released.resource.workloads) == [f"{other}/billing"]
    assert released.resource.state == S.RESOURCE_STATE_ACTIVE
    assert _notes(released.resource) == [f"claim released by {app}/api, {app}/worker; still claimed by {other}/billing"]
    assert await _exists(database, role) == (True, True)
    retried = await resources.deprovision(name, application=app)  # idempotent: nothing more to release
    assert retried.released and len(_notes(retried.resource)) == 1

    # force deprovisions although another application still claims it; its claim stays recorded
    # (deploying it again claims the instance back)
    assert await resources.claim(app, "api", "db", shared) == name
    forced = await resources.deprovision(name, application=other, force=True)
    assert not forced.released and list(forced.remaining_claims) == [f"{app}/api"]
    assert forced.resource.state == S.RESOURCE_STATE_DELETED
    assert await _exists(database, role) == (False, False)


@pytest.mark.postgres
async def test_release_with_a_bad_application_name_is_refused(resources):
    name = await resources.claim(f"shop{uuid.uuid4().hex[:6]}", "api", "db")
    for bad in ("a/b", "applications/", "applications/x/y", " "):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await resources.deprovision(name, application=bad)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, bad
        assert "is not an application name" in refused.value.details()
    assert (await resources.get(name)).state == S.RESOURCE_STATE_REQUESTED
