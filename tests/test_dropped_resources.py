"""A resource a workload's new version no longer declares is released once that version is committed.

Deploying `api` with `db` (postgres) and `cache` (redis), then a version declaring only `db`:
ClaimResources answers `cache` as dropped (its claim kept), the deploy run gets a `release-cache`
step after `render` (the commit) that releases only this workload's claim, and the instance --
claimed by nobody else -- is deprovisioned (the Redis ACL user is gone); `db` is untouched. A
deployment that fails before its commit releases nothing; a shared instance another workload of
the application still claims lives on; a rollback to the version declaring `cache` provisions it
again; `apps delete` afterwards leaves nothing of the application on the servers. Plus the
`workload` field of DeprovisionResource and the `dropped` answer of ClaimResources at the RPC
level, and the deploy workflow's DAG. Runs against the real PostgreSQL and Redis that
scripts/test starts.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from datetime import datetime

import grpc
import psycopg
import pytest

from innominatus.engine.executors.resource import ResourceExecutor
from innominatus.engine.model import StepFailed
from innominatus.engine.workflows import deploy_workflow
from innominatus.identity.v1 import identity_pb2
from innominatus.resources.v1 import resources_pb2, resources_pb2_grpc
from tests.helpers.mesh import running_platform
from tests.helpers.real_resources import resource_env
from tests.helpers.runs import deploy, steps_by_id, wait_for_run
from tests.helpers.resource_steps import RecordingResourcesStub, resource_step

S = resources_pb2.ResourceState
OK = ("STEP_STATE_SUCCEEDED",)


@pytest.fixture
async def platform(tmp_path, monkeypatch):
    """The platform whose built-in postgres / redis definitions provision for real on the servers
    scripts/test starts, each environment's GitOps repository a local one."""
    env = resource_env()
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("INNOMINATUS_GITOPS_URL_TEMPLATE", raising=False)
    async with running_platform(tmp_path / "data") as running:
        running.admin_urls = env
        yield running


def _score(workload: str, *, db: bool = True, cache: bool = True, shared_cache: str = "", extra: str = "") -> str:
    """A Score file of ``workload``: a postgres `db` and/or a redis `cache` (shared under
    ``shared_cache`` when given), each used by a variable; ``extra`` more variable lines."""
    variables, resources = [], []
    if db:
        variables.append("      DB_USER: ${resources.db.username}")
        resources.append("  db:\n    type: postgres")
    if cache:
        variables.append("      CACHE_USER: ${resources.cache.username}")
        resources.append("  cache:\n    type: redis" + (f"\n    id: {shared_cache}" if shared_cache else ""))
    if extra:
        variables.append(extra)
    return (
        "apiVersion: score.dev/v1b1\n"
        f"metadata:\n  name: {workload}\n"
        "containers:\n  main:\n"
        f"    image: registry.example.com/shop/{workload}:1.0.0\n"
        "    variables:\n" + "\n".join(variables) + "\n"
        "resources:\n" + "\n".join(resources) + "\n"
    )


async def _acl_user_exists(platform, username: str) -> bool:
    import redis.asyncio as aioredis

    admin = aioredis.from_url(platform.admin_urls["INNOMINATUS_REDIS_ADMIN_URL"])
    try:
        return await admin.acl_getuser(username) is not None
    finally:
        await admin.aclose()


async def _pg_exists(platform, database: str, role: str) -> tuple[bool, bool]:
    url = platform.admin_urls["INNOMINATUS_POSTGRES_ADMIN_URL"]
    async with await psycopg.AsyncConnection.connect(url, connect_timeout=10) as conn:
        db_row = await (await conn.execute("select 1 from pg_database where datname = %s", (database,))).fetchone()
        role_row = await (await conn.execute("select 1 from pg_roles where rolname = %s", (role,))).fetchone()
    return db_row is not None, role_row is not None


async def _leftovers(platform, app: str) -> dict[str, list[str]]:
    """Every database, role and Redis ACL user whose name holds ``app`` (names derive from the
    application, or from the shared id, which the tests make hold it too)."""
    import redis.asyncio as aioredis

    url = platform.admin_urls["INNOMINATUS_POSTGRES_ADMIN_URL"]
    pattern = f"%{app}%"
    async with await psycopg.AsyncConnection.connect(url, connect_timeout=10) as conn:
        dbs = await (await conn.execute("select datname from pg_database where datname like %s", (pattern,))).fetchall()
        roles = await (await conn.execute("select rolname from pg_roles where rolname like %s", (pattern,))).fetchall()
    admin = aioredis.from_url(platform.admin_urls["INNOMINATUS_REDIS_ADMIN_URL"])
    try:
        users = [u.decode() if isinstance(u, bytes) else u for u in await admin.acl_users()]
    finally:
        await admin.aclose()
    return {"databases": [r[0] for r in dbs], "roles": [r[0] for r in roles],
            "acl_users": [u for u in users if app in u]}


async def _resource(http, name: str) -> dict:
    got = await http.get(f"/api/v1/{name}")
    assert got.status_code == 200, got.text
    return got.json()["resource"]


async def _password(http, name: str) -> str:
    revealed = await http.post(f"/api/v1/{name}:reveal", json={})
    assert revealed.status_code == 200, revealed.text
    return revealed.json()["secrets"]["password"]


def _git(platform, *args: str) -> str:
    repo = platform.data_dir / "specs" / "gitops" / "dev.git"
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


async def _delete_app(http, app: str) -> dict:
    """`apps delete APP --env dev`, waited for; the ended run."""
    deleted = await http.delete(f"/api/v1/applications/{app}", params={"environment": "dev"})
    assert deleted.status_code == 200, deleted.text
    run = await wait_for_run(http, deleted.json()["run"]["name"], what="undeploy run ended")
    assert run["state"] == "RUN_STATE_SUCCEEDED", json.dumps(run, indent=1)
    return run


async def _users(platform) -> tuple[str, str]:
    admin = await platform.login_admin()
    developer = await platform.create_user(admin, f"dev{uuid.uuid4().hex[:6]}", identity_pb2.ROLE_DEVELOPER)
    return admin, developer


# -- end to end ------------------------------------------------------------------------------


@pytest.mark.postgres
async def test_a_dropped_resource_is_released_after_the_commit_and_a_rollback_claims_it_again(platform):
    app = f"shop{uuid.uuid4().hex[:8]}"
    admin, developer = await _users(platform)

    # v1: db + cache, both provisioned
    async with platform.http(developer) as http:
        v1 = await deploy(http, _score("api"), application=app)
    steps = steps_by_id(v1["run"])
    assert not [s for s in steps if s.startswith("release-")]
    db, cache = steps["provision-db"]["outputs"], steps["provision-cache"]["outputs"]
    assert (db["state"], cache["state"]) == ("active", "active")
    database, role = db["outputs"]["database"], db["outputs"]["username"]
    acl_user = cache["outputs"]["username"]
    assert await _acl_user_exists(platform, acl_user)
    assert await _pg_exists(platform, database, role) == (True, True)
    async with platform.http(admin) as http:
        db_password = await _password(http, db["resource"])

    # v2: only db. The run releases `cache` after the commit; db is verified, not re-made.
    async with platform.http(developer) as http:
        v2 = await deploy(http, _score("api", cache=False), application=app)
    steps = steps_by_id(v2["run"])
    assert "provision-cache" not in steps
    assert all(s["state"] in OK for s in steps.values()), json.dumps(v2["run"], indent=1)
    released = steps["release-cache"]
    assert released["type"] == "resource" and released["dependsOn"] == ["render"]
    assert _time(released["startTime"]) >= _time(steps["render"]["endTime"])
    out = released["outputs"]
    assert (out["resource"], out["result"], out["released"], out["state"], out["remaining_claims"]) == (
        cache["resource"], "deprovisioned", False, "deleted", [])
    assert not await _acl_user_exists(platform, acl_user)
    assert steps["provision-db"]["outputs"]["resource"] == db["resource"]
    assert steps["provision-db"]["outputs"]["provisioned"] is False
    assert steps["provision-db"]["outputs"]["outputs"] == db["outputs"]

    async with platform.http(admin) as http:
        gone = await _resource(http, cache["resource"])
        assert gone["state"] == "RESOURCE_STATE_DELETED"
        assert [(t["to"], t["reason"]) for t in gone["transitions"][-3:-1]] == [
            ("RESOURCE_STATE_ACTIVE", f"claim released by {app}/api; no claims remain"),
            ("RESOURCE_STATE_DEPROVISIONING", "deprovisioning"),
        ]
        assert gone["transitions"][-1]["to"] == "RESOURCE_STATE_DELETED"
        assert gone["transitions"][-1]["actor"] == "service:engine"
        kept = await _resource(http, db["resource"])
        assert kept["state"] == "RESOURCE_STATE_ACTIVE" and kept["workloads"] == [f"{app}/api"]
        assert await _password(http, db["resource"]) == db_password
    # same database, same password: the running workload's credentials still work
    conninfo = dict(host=db["outputs"]["host"], port=int(db["outputs"]["port"]), user=role, password=db_password,
                    dbname=database)
    async with await psycopg.AsyncConnection.connect(**conninfo, connect_timeout=10) as conn:
        assert await (await conn.execute("select current_database(), current_user")).fetchone() == (database, role)

    # a third deploy of the same version: nothing dropped any more, no release step
    async with platform.http(developer) as http:
        v3 = await deploy(http, _score("api", cache=False), application=app)
    assert not [s for s in steps_by_id(v3["run"]) if s.startswith("release-")]

    # rollback to v1: `cache` is claimed again, the DELETED instance provisioned again
    async with platform.http(developer) as http:
        rolled = await http.post(f"/api/v1/{v1['deployment']['name']}:rollback", json={"reason": "cache back"})
        assert rolled.status_code == 200, rolled.text
        run = await wait_for_run(http, rolled.json()["run"]["name"], what="rollback run ended")
    assert run["state"] == "RUN_STATE_SUCCEEDED", json.dumps(run, indent=1)
    steps = steps_by_id(run)
    assert not [s for s in steps if s.startswith("release-")]
    again = steps["provision-cache"]["outputs"]
    assert (again["resource"], again["provisioned"], again["state"]) == (cache["resource"], True, "active")
    assert again["outputs"]["username"] == acl_user
    assert await _acl_user_exists(platform, acl_user)
    async with platform.http(admin) as http:
        back = await _resource(http, cache["resource"])
        assert back["state"] == "RESOURCE_STATE_ACTIVE" and back["workloads"] == [f"{app}/api"]
        assert f"claimed again by {app}/api" in [t["reason"] for t in back["transitions"]]
        assert await _password(http, db["resource"]) == db_password
    # The committed set points at the cache's new secrets, not at v1's deleted ones: v1's set is
    # rendered anew rather than re-committed as it was.
    assert again["secrets"] != cache["secrets"]
    committed = json.loads(_git(platform, "show", f"{steps['render']['outputs']['commit']}:"
                                                   f"environments/dev/{app}/deployment-set.json"))
    assert committed["resources"]["api.cache"]["secret_refs"] == again["secrets"]
    assert committed["resources"]["api.db"]["secret_refs"] == db["secrets"]
    assert committed["content_hash"] != steps_by_id(v1["run"])["render"]["outputs"]["set_hash"]
    assert "rendered anew: api.cache provisioned anew since" in (
        _git(platform, "log", "-1", "--format=%B", steps["render"]["outputs"]["commit"]))

    # and a deploy dropping it again after the rollback releases it again
    async with platform.http(developer) as http:
        v4 = await deploy(http, _score("api", cache=False), application=app)
    assert steps_by_id(v4["run"])["release-cache"]["outputs"]["result"] == "deprovisioned"
    assert not await _acl_user_exists(platform, acl_user)

    async with platform.http(developer) as http:
        await _delete_app(http, app)
    assert await _leftovers(platform, app) == {"databases": [], "roles": [], "acl_users": []}


@pytest.mark.postgres
async def test_a_deployment_failing_before_its_commit_releases_nothing_and_apps_delete_still_removes_it(platform):
    app = f"shop{uuid.uuid4().hex[:8]}"
    admin, developer = await _users(platform)
    async with platform.http(developer) as http:
        v1 = await deploy(http, _score("api"), application=app)
        cache = steps_by_id(v1["run"])["provision-cache"]["outputs"]
        # v2 drops cache but cannot be rendered (db has no output `nosuch`): the commit never happens
        broken = _score("api", cache=False, extra="      BROKEN: ${resources.db.nosuch}")
        v2 = await deploy(http, broken, application=app, expect="RUN_STATE_FAILED")
    steps = steps_by_id(v2["run"])
    assert steps["render"]["state"] == "STEP_STATE_FAILED"
    assert "nosuch" in steps["render"]["message"]
    assert "release-cache" in steps  # planned, never run
    assert steps["release-cache"]["state"] not in ("STEP_STATE_SUCCEEDED", "STEP_STATE_RUNNING", "STEP_STATE_FAILED")
    assert not steps["release-cache"].get("outputs")
    assert await _acl_user_exists(platform, cache["outputs"]["username"])
    async with platform.http(admin) as http:
        kept = await _resource(http, cache["resource"])
    assert kept["state"] == "RESOURCE_STATE_ACTIVE" and kept["workloads"] == [f"{app}/api"]

    # apps delete plans from the running (last committed) version too: cache is deprovisioned
    async with platform.http(developer) as http:
        run = await _delete_app(http, app)
    undeploy = [s for s in run["steps"] if s["type"] == "workflow"]
    assert len(undeploy) == 1
    assert sorted(c["ref"] for c in steps_by_id(run)["plan"]["outputs"]["claims"]) == ["cache", "db"]
    assert not await _acl_user_exists(platform, cache["outputs"]["username"])
    assert await _leftovers(platform, app) == {"databases": [], "roles": [], "acl_users": []}


@pytest.mark.postgres
async def test_a_deployment_rejected_at_its_approval_gate_releases_nothing(platform):
    app = f"shop{uuid.uuid4().hex[:8]}"
    admin, developer = await _users(platform)
    engineer = await platform.create_user(admin, f"pe{uuid.uuid4().hex[:6]}", identity_pb2.ROLE_PLATFORM_ENGINEER)
    staging = {"name": "staging", "type": "ENVIRONMENT_TYPE_STAGING", "requiresApproval": True,
               "approvers": ["role:platform-engineer"]}
    async with platform.http(engineer) as pe, platform.http(developer) as dev:
        created = await pe.post("/api/v1/environments", json={"environment": staging})
        assert created.status_code == 200, created.text

        async def started(score: str) -> str:
            answer = await dev.post("/api/v1/deployments", json={"scoreYaml": score, "environment": "staging",
                                                                 "application": app})
            assert answer.status_code == 200, answer.text
            name = answer.json()["run"]["name"]
            await wait_for_run(dev, name, lambda r: steps_by_id(r).get("approve", {}).get("state")
                               == "STEP_STATE_WAITING_APPROVAL", what="approve waiting")
            return name

        first = await started(_score("api"))
        assert (await pe.post(f"/api/v1/{first}/steps/approve:approve", json={"reason": "ok"})).status_code == 200
        run = await wait_for_run(dev, first)
        assert run["state"] == "RUN_STATE_SUCCEEDED", json.dumps(run, indent=1)
        cache = steps_by_id(run)["provision-cache"]["outputs"]

        second = await started(_score("api", cache=False))
        rejected = await pe.post(f"/api/v1/{second}/steps/approve:reject", json={"reason": "not now"})
        assert rejected.status_code == 200, rejected.text
        run = await wait_for_run(dev, second)
    assert run["state"] == "RUN_STATE_FAILED", json.dumps(run, indent=1)
    steps = steps_by_id(run)
    assert steps["release-cache"]["state"] not in ("STEP_STATE_SUCCEEDED", "STEP_STATE_RUNNING")
    assert "render" in steps and steps["render"]["state"] != "STEP_STATE_SUCCEEDED"
    assert await _acl_user_exists(platform, cache["outputs"]["username"])
    async with platform.http(admin) as http:
        kept = await _resource(http, cache["resource"])
    assert kept["state"] == "RESOURCE_STATE_ACTIVE" and kept["workloads"] == [f"{app}/api"]


@pytest.mark.postgres
async def test_a_shared_instance_dropped_by_one_workload_stays_for_the_other(platform):
    app = f"shop{uuid.uuid4().hex[:8]}"
    shared = f"{app}cache"
    admin, developer = await _users(platform)
    async with platform.http(developer) as http:
        api = steps_by_id((await deploy(http, _score("api", shared_cache=shared), application=app))["run"])
        worker = steps_by_id((await deploy(http, _score("worker", db=False, shared_cache=shared),
                                           application=app))["run"])
    cache = api["provision-cache"]["outputs"]
    assert worker["provision-cache"]["outputs"]["resource"] == cache["resource"]
    acl_user = cache["outputs"]["username"]
    async with platform.http(admin) as http:
        password = await _password(http, cache["resource"])

    # api's next version no longer uses the cache: only api's claim goes, the instance stays
    async with platform.http(developer) as http:
        v2 = await deploy(http, _score("api", cache=False), application=app)
    out = steps_by_id(v2["run"])["release-cache"]["outputs"]
    assert (out["result"], out["released"], out["state"], out["remaining_claims"]) == (
        "released", True, "active", [f"{app}/worker"])
    assert await _acl_user_exists(platform, acl_user)
    async with platform.http(admin) as http:
        kept = await _resource(http, cache["resource"])
        assert kept["state"] == "RESOURCE_STATE_ACTIVE" and kept["workloads"] == [f"{app}/worker"]
        assert kept["transitions"][-1]["reason"] == f"claim released by {app}/api; still claimed by {app}/worker"
        assert await _password(http, cache["resource"]) == password
    # the worker still connects with its credentials
    import redis.asyncio as aioredis

    r = aioredis.from_url(await _reveal_url(platform, admin, cache["resource"]))
    try:
        await r.set(f"{cache['outputs']['key_prefix']}k", "v")
        assert await r.get(f"{cache['outputs']['key_prefix']}k") == b"v"
    finally:
        await r.aclose()

    # removing the application removes everything, the shared instance included
    async with platform.http(developer) as http:
        await _delete_app(http, app)
    assert not await _acl_user_exists(platform, acl_user)
    assert await _leftovers(platform, app) == {"databases": [], "roles": [], "acl_users": []}


async def _reveal_url(platform, token: str, name: str) -> str:
    async with platform.http(token) as http:
        revealed = await http.post(f"/api/v1/{name}:reveal", json={})
    assert revealed.status_code == 200, revealed.text
    return revealed.json()["secrets"]["url"]


# -- ClaimResources' `dropped` and DeprovisionResource's `workload`, at the RPC level ----------


@pytest.fixture
async def resources(platform):
    """The resources service as the specs service (claims), the engine (deprovision) and an admin."""
    admin = await platform.login_admin()
    channels = {i: platform.channel("resources", identity=i) for i in ("specs", "engine", "cli")}
    stubs = {i: resources_pb2_grpc.ResourcesServiceStub(c) for i, c in channels.items()}
    auth = [("authorization", f"Bearer {admin}")]

    class Calls:
        async def claim(self, app: str, workload: str, *claims: tuple[str, str, str]):
            request = resources_pb2.ClaimResourcesRequest(
                application=app, environment="dev", workload=workload,
                claims=[resources_pb2.ResourceClaim(ref=ref, type=type_, id=shared) for ref, type_, shared in claims])
            return await stubs["specs"].ClaimResources(request, metadata=auth)

        async def deprovision(self, name: str, application: str = "", workload: str = ""):
            return await stubs["engine"].DeprovisionResource(
                resources_pb2.DeprovisionResourceRequest(name=name, application=application, workload=workload))

        async def get(self, name: str) -> resources_pb2.Resource:
            return (await stubs["cli"].GetResource(resources_pb2.GetResourceRequest(name=name), metadata=auth)).resource

    try:
        yield Calls()
    finally:
        for channel in channels.values():
            await channel.close()


@pytest.mark.postgres
async def test_claim_answers_the_dropped_claims_and_keeps_them(resources):
    app, shared = f"shop{uuid.uuid4().hex[:6]}", f"o{uuid.uuid4().hex[:8]}"
    first = await resources.claim(app, "api", ("db", "postgres", ""), ("cache", "redis", ""), ("orders", "postgres", shared))
    assert list(first.dropped) == []
    db, cache, orders = (r.name for r in first.resources)

    # cache dropped; `orders` renamed `sales` (the same shared instance): not dropped
    second = await resources.claim(app, "api", ("db", "postgres", ""), ("sales", "postgres", shared))
    assert [(r.name, r.claim.ref, r.state) for r in second.dropped] == [(cache, "cache", S.RESOURCE_STATE_REQUESTED)]
    assert [r.name for r in second.resources] == [db, orders]
    assert list((await resources.get(cache)).workloads) == [f"{app}/api"]  # the claim is kept
    # asking again answers the same: the claim is there until released
    again = await resources.claim(app, "api", ("db", "postgres", ""), ("sales", "postgres", shared))
    assert [r.claim.ref for r in again.dropped] == ["cache"]
    # another workload's claims are never this workload's dropped ones
    other = await resources.claim(app, "worker", ("db", "postgres", ""))
    assert list(other.dropped) == [] and other.resources[0].name != db

    # nothing declared: every claim of the workload is dropped, the shared one under its new ref
    empty = await resources.claim(app, "api")
    assert sorted((r.claim.ref, r.name) for r in empty.dropped) == sorted(
        [("cache", cache), ("db", db), ("sales", orders)])

    # releasing the dropped cache claim of api: nobody else claims it, so it goes
    done = await resources.deprovision(cache, application=app, workload="api")
    assert (done.released, list(done.remaining_claims), done.resource.state) == (False, [], S.RESOURCE_STATE_DELETED)
    assert [r.claim.ref for r in (await resources.claim(app, "api")).dropped] == ["db", "sales"]


@pytest.mark.postgres
async def test_release_of_one_workloads_claim(resources):
    app, other, shared = f"shop{uuid.uuid4().hex[:6]}", f"bill{uuid.uuid4().hex[:6]}", f"o{uuid.uuid4().hex[:8]}"
    name = (await resources.claim(app, "api", ("orders", "postgres", shared))).resources[0].name
    assert (await resources.claim(app, "worker", ("orders", "postgres", shared))).resources[0].name == name
    assert (await resources.claim(other, "billing", ("orders", "postgres", shared))).resources[0].name == name

    # only api's claim goes; worker's (same application) and billing's stay
    out = await resources.deprovision(name, application=f"applications/{app}", workload="api")
    assert out.released and list(out.remaining_claims) == sorted([f"{app}/worker", f"{other}/billing"])
    assert out.resource.state == S.RESOURCE_STATE_REQUESTED
    assert out.resource.transitions[-1].reason == (
        f"claim released by {app}/api; still claimed by {', '.join(sorted([f'{app}/worker', f'{other}/billing']))}")
    # a retry, or a workload that does not claim it: nothing released, nothing changes
    for workload in ("api", "nosuch"):
        same = await resources.deprovision(name, application=app, workload=workload)
        assert same.released and len(same.resource.transitions) == len(out.resource.transitions)

    await resources.deprovision(name, application=app, workload="worker")
    last = await resources.deprovision(name, application=other, workload="billing")
    assert (last.released, list(last.remaining_claims), last.resource.state) == (False, [], S.RESOURCE_STATE_DELETED)


@pytest.mark.postgres
async def test_release_with_a_bad_workload_is_refused(resources):
    app = f"shop{uuid.uuid4().hex[:6]}"
    name = (await resources.claim(app, "api", ("db", "postgres", ""))).resources[0].name
    for application, workload, text in (
        (app, "a/b", "is not a workload name"),
        (app, " ", "is not a workload name"),
        ("", "api", "needs application"),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await resources.deprovision(name, application=application, workload=workload)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, workload
        assert text in refused.value.details()
    got = await resources.get(name)
    assert got.state == S.RESOURCE_STATE_REQUESTED and list(got.workloads) == [f"{app}/api"]


# -- the deploy workflow and the `resource` step ---------------------------------------------


def _inputs(**more) -> dict:
    return {"workload": "api", "application": "shop", "environment": "dev",
            "claims": [{"ref": "db", "resource": "resources/d", "depends_on": []}], **more}


def test_deploy_workflow_releases_dropped_claims_after_render():
    wf = deploy_workflow(_inputs(dropped=[{"ref": "cache", "resource": "resources/c"},
                                          {"ref": "auth", "resource": "resources/a"}]))
    steps = {s.id: s for s in wf.steps}
    assert list(steps) == ["validate", "provision-db", "render", "release", "release-auth", "release-cache"]
    for ref, rid in (("cache", "resources/c"), ("auth", "resources/a")):
        step = steps[f"release-{ref}"]
        assert step.type == "resource" and step.depends_on == ("render",)  # in parallel with `release`
        assert step.with_ == {"name": rid, "action": "deprovision", "release": "${workflow.application}",
                              "workload": "${params.workload}"}
        assert step.retry == steps["provision-db"].retry
    assert steps["release"].depends_on == ("render",)


def test_deploy_workflow_releases_dropped_claims_in_reverse_dependency_order():
    # the old version's `app` used `db`'s outputs and `db` used `net`'s; `cache` stood alone
    wf = deploy_workflow(_inputs(claims=[], dropped=[
        {"ref": "app", "resource": "resources/a", "depends_on": ["db"]},
        {"ref": "cache", "resource": "resources/c", "depends_on": []},
        {"ref": "db", "resource": "resources/d", "depends_on": ["net", "gone", "db"]},
        {"ref": "net", "resource": "resources/n"},
    ]))
    steps = {s.id: s.depends_on for s in wf.steps if s.id.startswith("release-")}
    assert steps == {"release-app": ("render",), "release-cache": ("render",),
                     "release-db": ("render", "release-app"), "release-net": ("render", "release-db")}


def test_deploy_workflow_with_an_approval_gate_and_no_claims_left():
    wf = deploy_workflow(_inputs(claims=[], approval={"required": True, "approvers": ["role:admin"]},
                                 dropped=[{"ref": "db", "resource": "resources/d"}]))
    assert [(s.id, s.depends_on) for s in wf.steps] == [
        ("validate", ()), ("approve", ("validate",)), ("render", ("approve",)), ("release", ("render",)),
        ("release-db", ("render",))]


def test_deploy_workflow_ignores_malformed_dropped_entries_and_needs_the_workload():
    dropped = [{"ref": "cache", "resource": "resources/c"}, {"ref": "cache", "resource": "resources/x"},
               {"ref": "", "resource": "resources/y"}, {"ref": "q"}, "cache", {"ref": 3, "resource": "resources/z"}]
    steps = {s.id: s for s in deploy_workflow(_inputs(dropped=dropped)).steps}
    assert [i for i in steps if i.startswith("release-")] == ["release-cache"]
    assert steps["release-cache"].with_["name"] == "resources/c"
    # without the run's workload a release would release every workload of the application
    for workload in (None, "", "a/b", 3):
        ids = [s.id for s in deploy_workflow(_inputs(workload=workload, dropped=dropped)).steps]
        assert not [i for i in ids if i.startswith("release-")], workload
    assert [s.id for s in deploy_workflow(_inputs(dropped="cache")).steps][-1] == "release"


async def test_resource_step_passes_the_workload(tmp_path):
    answer = resources_pb2.DeprovisionResourceResponse(
        resource=resources_pb2.Resource(name="resources/c", state=S.RESOURCE_STATE_ACTIVE),
        released=True, remaining_claims=["shop/worker"])
    stub = RecordingResourcesStub(answer)
    out = await ResourceExecutor().run(resource_step(stub, {"name": "resources/c", "action": "deprovision",
                                                              "release": "shop", "workload": "api"}, tmp_path, "release-cache"))
    assert (stub.requests[0].application, stub.requests[0].workload) == ("shop", "api")
    assert (out["result"], out["remaining_claims"]) == ("released", ["shop/worker"])

    for inputs, text in (
        ({"name": "resources/c", "action": "deprovision", "workload": "api"}, "`workload` needs `release`"),
        ({"name": "resources/c", "action": "deprovision", "release": "shop", "workload": "a/b"},
         "`workload` must be a workload name"),
        ({"name": "resources/c", "action": "deprovision", "release": "shop", "workload": 3},
         "`workload` must be a workload name"),
        ({"name": "resources/c", "release": "shop", "workload": "api"}, "`release` applies to `action: deprovision`"),
    ):
        with pytest.raises(StepFailed, match=text) as bad:
            await ResourceExecutor().run(resource_step(RecordingResourcesStub(answer), inputs, tmp_path, "release-cache"))
        assert bad.value.kind == "invalid_input" and not bad.value.retryable


ROUTED = """\
apiVersion: score.dev/v1b1
metadata:
  name: {workload}
containers:
  main:
    image: registry.example.com/shop/{workload}:1.0.0
    variables:
      URL: https://${{resources.route.host}}/
resources:
  web:
    type: dns
  route:
    type: route
    params:
      host: ${{resources.web.host}}
      path: /
      port: 8080
"""

BARE = """\
apiVersion: score.dev/v1b1
metadata:
  name: {workload}
containers:
  main:
    image: registry.example.com/shop/{workload}:1.0.1
"""


async def test_dropped_resources_are_released_in_reverse_dependency_order(platform):
    """v1's route uses the dns name's outputs; v2 declares neither: the route is released first."""
    admin, _developer = await _users(platform)
    app = f"ord{uuid.uuid4().hex[:6]}"
    async with platform.http(admin) as http:
        first = await deploy(http, ROUTED.format(workload=app))
        steps = steps_by_id(first["run"])
        assert sorted(steps["provision-route"]["dependsOn"]) == ["provision-web", "validate"]
        second = await deploy(http, BARE.format(workload=app))
    steps = steps_by_id(second["run"])
    assert steps["release-web"]["state"] in OK and steps["release-route"]["state"] in OK
    assert "release-route" in steps["release-web"]["dependsOn"]
    assert _time(steps["release-web"]["startTime"]) >= _time(steps["release-route"]["endTime"])
