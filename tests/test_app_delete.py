"""`innominatus apps delete NAME --env ENV`: DeleteApplication starts the `undeploy-app` golden
path, whose `plan` step asks specs (PlanUndeploy) what the application holds, whose `approve`
step gates a production environment, and whose `undeploy` step runs the built-in `undeploy`
workflow as a child run: the application's resources deprovisioned in reverse dependency order
(real PostgreSQL database and role dropped), then its directory removed from the environment's
GitOps repository in one commit. Runs against the servers scripts/test starts."""

from __future__ import annotations

import asyncio
import json
import subprocess
import uuid
from datetime import datetime
from pathlib import Path

import psycopg
import pytest

from innominatus.engine.workflows import undeploy_workflow
from innominatus.identity.v1 import identity_pb2
from tests.helpers.mesh import running_platform
from tests.helpers.real_resources import resource_env
from tests.helpers.runs import awaits_approval, deploy, get_run, start_deployment, steps_by_id, wait_for_run

SCORE = """\
apiVersion: score.dev/v1b1
metadata:
  name: {app}
containers:
  api:
    image: registry.example.com/shop/orders:1.0.0
    variables:
      DB_HOST: ${{resources.db.host}}
      DB_NAME: ${{resources.db.name}}
      DB_USER: ${{resources.db.username}}
      HOST: ${{resources.web.host}}
resources:
  db:
    type: postgres
  web:
    type: dns
    params:
      # uses db's outputs: provisioned after db, so deprovisioned before it
      upstream: ${{resources.db.host}}
"""


def test_undeploy_workflow_deprovisions_in_reverse_dependency_order():
    # app -> db (app's params use db's outputs), cache independent
    wf = undeploy_workflow({"claims": [
        {"ref": "app", "resource": "resources/a", "depends_on": ["db"]},
        {"ref": "cache", "resource": "resources/c", "depends_on": []},
        {"ref": "db", "resource": "resources/d", "depends_on": []},
    ]})
    steps = {s.id: s for s in wf.steps}
    assert list(steps) == ["deprovision-app", "deprovision-cache", "deprovision-db", "remove"]
    assert steps["deprovision-db"].depends_on == ("deprovision-app",)  # only after the one using it
    assert steps["deprovision-app"].depends_on == () and steps["deprovision-cache"].depends_on == ()
    assert all(steps[s].type == "resource" and steps[s].with_["action"] == "deprovision"
               for s in steps if s != "remove")
    assert steps["deprovision-db"].with_["name"] == "resources/d"
    assert set(steps["remove"].depends_on) == {"deprovision-app", "deprovision-cache", "deprovision-db"}
    assert [s.id for s in undeploy_workflow({}).steps] == ["remove"]


@pytest.fixture
def platform(resource_platform):
    return resource_platform


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


def _interval(step: dict) -> tuple[datetime, datetime]:
    return (datetime.fromisoformat(step["startTime"].replace("Z", "+00:00")),
            datetime.fromisoformat(step["endTime"].replace("Z", "+00:00")))


async def _pg_exists(database: str, role: str) -> tuple[bool, bool]:
    async with await psycopg.AsyncConnection.connect(resource_env()["INNOMINATUS_POSTGRES_ADMIN_URL"],
                                                     connect_timeout=10) as conn:
        db_row = await (await conn.execute("select 1 from pg_database where datname = %s", (database,))).fetchone()
        role_row = await (await conn.execute("select 1 from pg_roles where rolname = %s", (role,))).fetchone()
    return db_row is not None, role_row is not None


@pytest.mark.postgres
async def test_delete_application_deprovisions_and_removes_it_from_gitops(platform):
    app = f"shop{uuid.uuid4().hex[:6]}"
    admin = await platform.login_admin()
    dev_name = f"dev{uuid.uuid4().hex[:6]}"
    developer = await platform.create_user(admin, dev_name, identity_pb2.ROLE_DEVELOPER)
    viewer = await platform.create_user(admin, f"view{uuid.uuid4().hex[:6]}", identity_pb2.ROLE_VIEWER)

    async with platform.http(developer) as http:
        created = await deploy(http, SCORE.format(app=app))
    db_out = steps_by_id(created["run"])["provision-db"]["outputs"]["outputs"]
    database, role = db_out["database"], db_out["username"]

    assert await _pg_exists(database, role) == (True, True)

    # a viewer may not; an unknown application / environment is NOT_FOUND
    async with platform.http(viewer) as http:
        denied = await http.delete(f"/api/v1/applications/{app}", params={"environment": "dev"})
    assert denied.status_code == 403, denied.text
    async with platform.http(developer) as http:
        missing = await http.delete(f"/api/v1/applications/{app}x", params={"environment": "dev"})
        assert missing.status_code == 404, missing.text
        missing = await http.delete(f"/api/v1/applications/{app}", params={"environment": "staging"})
        assert missing.status_code == 404, missing.text
        no_env = await http.delete(f"/api/v1/applications/{app}")
        assert no_env.status_code == 400, no_env.text

        # Claims come from the platform only: naming them to the golden path (or starting the
        # built-in undeploy workflow) is refused, and nothing is deprovisioned.
        claims = [{"ref": "db", "resource": "resources/someone-elses", "dependsOn": []}]
        named = await http.post("/api/v1/goldenPaths/undeploy-app:run", json={
            "params": {"app": app, "environment": "dev"}, "paramValues": {"claims": claims}})
        assert named.status_code == 400 and "params.claims" in {v["field"] for v in named.json()["violations"]}
        started = await http.post("/api/v1/runs", json={
            "workflow": "undeploy-app", "inputs": {"app": app, "environment": "dev", "claims": claims}})
        assert started.status_code == 400 and "params.claims" in {v["field"] for v in started.json()["violations"]}
        builtin = await http.post("/api/v1/runs", json={
            "workflow": "undeploy", "application": app, "environment": "dev", "inputs": {"claims": claims}})
        assert builtin.status_code == 403 and builtin.json()["reason"] == "BUILTIN_WORKFLOW", builtin.text
        assert await _pg_exists(database, role) == (True, True)

        deleted = await http.delete(f"/api/v1/applications/{app}", params={"environment": "dev"})
        assert deleted.status_code == 200, deleted.text
        assert deleted.json()["run"]["workflow"] == "undeploy-app"
        undeploy = await wait_for_run(http, deleted.json()["run"]["name"])
        assert undeploy["state"] == "RUN_STATE_SUCCEEDED", json.dumps(undeploy, indent=1)
        path_steps = steps_by_id(undeploy)
        child = await get_run(http, f"runs/{path_steps['undeploy']['outputs']['run']}")
        got = (await http.get(f"/api/v1/applications/{app}")).json()

    # the golden path: plan (from specs) -> no approval (development) -> the undeploy child run
    assert dev_name in undeploy["creator"]  # started on the developer's behalf
    assert {n: s["state"] for n, s in path_steps.items()} == {
        "plan": "STEP_STATE_SUCCEEDED", "nothing-to-remove": "STEP_STATE_SKIPPED", "approve": "STEP_STATE_SKIPPED",
        "undeploy": "STEP_STATE_SUCCEEDED", "remove": "STEP_STATE_SKIPPED", "verify": "STEP_STATE_SKIPPED"}
    plan = path_steps["plan"]["outputs"]
    assert plan["deployed"] is True and plan["environment_type"] == "development"
    by_ref = {c["ref"]: c for c in plan["claims"]}
    assert set(by_ref) == {"db", "web"} and by_ref["web"]["depends_on"] == ["db"] and by_ref["db"]["depends_on"] == []
    assert {c["resource"] for c in plan["claims"]} == set(created["deployment"]["resources"])
    assert plan["deployments"] == [created["deployment"]["name"]]

    # the child: one deprovision step per resource, in reverse dependency order, then remove
    assert child["workflow"] == "undeploy" and child["state"] == "RUN_STATE_SUCCEEDED", json.dumps(child, indent=1)
    steps = steps_by_id(child)
    assert list(steps) == ["deprovision-db", "deprovision-web", "remove"]
    assert all(s["state"] == "STEP_STATE_SUCCEEDED" for s in steps.values())
    assert {steps[n]["type"] for n in ("deprovision-db", "deprovision-web")} == {"resource"}
    assert steps["deprovision-db"]["dependsOn"] == ["deprovision-web"]  # db only once web, which uses it, is gone
    assert steps["deprovision-web"].get("dependsOn", []) == []
    assert _interval(steps["deprovision-db"])[0] >= _interval(steps["deprovision-web"])[1]
    assert sorted(steps["remove"]["dependsOn"]) == ["deprovision-db", "deprovision-web"]
    assert await _pg_exists(database, role) == (False, False)

    # the GitOps repository's last commit removes the application's directory
    repo = platform.data_dir / "specs" / "gitops" / "dev.git"
    head = _git(repo, "log", "-1", "--format=%H%n%B", "main")
    assert head.splitlines()[0] == steps["remove"]["outputs"]["commit"]
    assert f"undeploy {app} from dev" in head and "\nby " in head and dev_name in head
    assert _git(repo, "ls-tree", "-r", "--name-only", "main", "--", f"environments/dev/{app}/") == ""
    changed = _git(repo, "show", "--name-status", "--format=", "main").split("\n")
    assert changed and all(line.startswith("D\t") for line in changed if line)

    # GetApplication: dev is no longer among its environments; its deployments are history
    assert "dev" not in got["application"].get("environments", [])
    assert got["deployments"] and all(d.get("removed") for d in got["deployments"])


@pytest.mark.postgres
async def test_deleting_from_a_production_environment_waits_for_an_approval(platform):
    app = f"live{uuid.uuid4().hex[:6]}"
    env = f"prod{uuid.uuid4().hex[:6]}"  # production by its type, not its name
    admin = await platform.login_admin()
    developer = await platform.create_user(admin, f"dev{uuid.uuid4().hex[:6]}", identity_pb2.ROLE_DEVELOPER)

    async with platform.http(admin) as root, platform.http(developer) as dev:
        made = await root.post("/api/v1/environments",
                               json={"environment": {"name": env, "type": "ENVIRONMENT_TYPE_PRODUCTION"}})
        assert made.status_code == 200, made.text
        deploy_run = (await start_deployment(dev, SCORE.format(app=app), env))["run"]["name"]
        await wait_for_run(dev, deploy_run, awaits_approval("approve"))
        assert (await root.post(f"/api/v1/{deploy_run}/steps/approve:approve", json={})).status_code == 200
        run = await wait_for_run(dev, deploy_run)
        assert run["state"] == "RUN_STATE_SUCCEEDED", json.dumps(run, indent=1)
        db_out = steps_by_id(run)["provision-db"]["outputs"]["outputs"]
        database, role = db_out["database"], db_out["username"]

        deleted = await dev.delete(f"/api/v1/applications/{app}", params={"environment": env})
        assert deleted.status_code == 200, deleted.text
        name = deleted.json()["run"]["name"]
        run = await wait_for_run(dev, name, awaits_approval("approve"))
        steps = steps_by_id(run)
        assert steps["plan"]["outputs"]["environment_type"] == "production"
        assert steps["approve"]["approvers"] == ["platform-engineer", "admin"]
        await asyncio.sleep(1.0)  # nothing moves while the gate waits
        steps = steps_by_id(await get_run(dev, name))
        assert steps["undeploy"]["state"] == "STEP_STATE_PENDING"
        assert await _pg_exists(database, role) == (True, True)

        # the developer may not decide it (runs.approve); an admin does
        no = await dev.post(f"/api/v1/{name}/steps/approve:approve", json={"reason": "mine"})
        assert no.status_code == 403, no.text
        yes = await root.post(f"/api/v1/{name}/steps/approve:approve", json={"reason": "decommission"})
        assert yes.status_code == 200, yes.text
        run = await wait_for_run(dev, name)
    assert run["state"] == "RUN_STATE_SUCCEEDED", json.dumps(run, indent=1)
    assert steps_by_id(run)["undeploy"]["outputs"]["run"]
    assert await _pg_exists(database, role) == (False, False)


@pytest.mark.postgres
async def test_plan_undeploy_answers_only_the_engine(platform):
    import grpc

    from innominatus.specs.v1 import specs_pb2, specs_pb2_grpc

    admin = await platform.login_admin()
    request = specs_pb2.PlanUndeployRequest(name="applications/nothing-here", environment="dev")
    engine = platform.channel("specs", identity="engine")
    cli = platform.channel("specs", identity="cli")
    try:
        # the engine, on its own behalf (no user token): an application not deployed is an empty plan
        plan = await specs_pb2_grpc.SpecsServiceStub(engine).PlanUndeploy(request, timeout=20)
        assert not plan.deployed and list(plan.claims) == [] and list(plan.deployments) == []
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await specs_pb2_grpc.SpecsServiceStub(engine).PlanUndeploy(
                specs_pb2.PlanUndeployRequest(name="applications/a/b", environment="dev"), timeout=20)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        # anyone else, even an admin through operator tooling, is refused by the peer check
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await specs_pb2_grpc.SpecsServiceStub(cli).PlanUndeploy(
                request, metadata=[("authorization", f"Bearer {admin}")], timeout=20)
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED and "allowed callers: engine" in info.value.details()
    finally:
        await engine.close()
        await cli.close()


@pytest.mark.postgres
async def test_an_engine_without_the_undeploy_path_refuses_the_delete_saying_why(tmp_path, monkeypatch):
    # A catalog directory that ships no undeploy-app (INNOMINATUS_GOLDEN_PATHS_DIR).
    from innominatus.engine.catalog import default_directory

    catalog = tmp_path / "catalog"
    catalog.mkdir()
    (catalog / "deploy-app.yaml").write_text((default_directory() / "deploy-app.yaml").read_text())
    monkeypatch.setenv("INNOMINATUS_GOLDEN_PATHS_DIR", str(catalog))
    monkeypatch.delenv("INNOMINATUS_GITOPS_URL_TEMPLATE", raising=False)
    app = f"bare{uuid.uuid4().hex[:6]}"
    score = f"apiVersion: score.dev/v1b1\nmetadata:\n  name: {app}\ncontainers:\n  api:\n    image: nginx:1.27\n"
    async with running_platform(tmp_path / "data") as platform:
        admin = await platform.login_admin()
        async with platform.http(admin) as http:
            await deploy(http, score)
            refused = await http.delete(f"/api/v1/applications/{app}", params={"environment": "dev"})
            assert refused.status_code == 400, refused.text
            problem = refused.json()
            assert problem["reason"] == "UNDEPLOY_PATH_UNAVAILABLE", problem
            assert "undeploy-app" in problem["detail"] and "goldenpaths show undeploy-app" in problem["detail"]
            # nothing was started and the application is still deployed there
            runs = (await http.get("/api/v1/runs", params={"application": app})).json()["runs"]
            got = (await http.get(f"/api/v1/applications/{app}")).json()
    assert [r["workflow"] for r in runs] == ["deploy"]
    assert "dev" in got["application"]["environments"]
