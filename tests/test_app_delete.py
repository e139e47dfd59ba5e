"""`innominatus apps delete NAME --env ENV`: DeleteApplication starts the engine's `undeploy`
workflow, which deprovisions the application's resources in reverse dependency order (real
PostgreSQL database and role dropped) and removes the application's directory from the
environment's GitOps repository in one commit. Runs against the servers scripts/test starts."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
import uuid
from pathlib import Path

import psycopg
import pytest

from innominatus.engine.workflows import undeploy_workflow
from innominatus.identity.v1 import identity_pb2
from tests.helpers.mesh import running_platform
from tests.helpers.real_resources import resource_env

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
async def platform(tmp_path, monkeypatch):
    for name, value in resource_env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("INNOMINATUS_GITOPS_URL_TEMPLATE", raising=False)
    async with running_platform(tmp_path / "data") as running:
        yield running


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


async def _finish(http, run_name: str) -> dict:
    deadline = time.monotonic() + 90
    while True:
        run = (await http.get(f"/api/v1/{run_name}")).json()["run"]
        if run["state"] in ("RUN_STATE_SUCCEEDED", "RUN_STATE_FAILED", "RUN_STATE_CANCELLED"):
            return run
        assert time.monotonic() < deadline, run
        await asyncio.sleep(0.2)


@pytest.mark.postgres
async def test_delete_application_deprovisions_and_removes_it_from_gitops(platform):
    app = f"shop{uuid.uuid4().hex[:6]}"
    admin = await platform.login_admin()
    dev_name = f"dev{uuid.uuid4().hex[:6]}"
    developer = await platform.create_user(admin, dev_name, identity_pb2.ROLE_DEVELOPER)
    viewer = await platform.create_user(admin, f"view{uuid.uuid4().hex[:6]}", identity_pb2.ROLE_VIEWER)

    async with platform.http(developer) as http:
        created = await http.post("/api/v1/deployments", json={"scoreYaml": SCORE.format(app=app),
                                                               "environment": "dev"})
        assert created.status_code == 200, created.text
        run = await _finish(http, created.json()["run"]["name"])
    assert run["state"] == "RUN_STATE_SUCCEEDED", json.dumps(run, indent=1)
    db_out = {s["name"]: s for s in run["steps"]}["provision-db"]["outputs"]["outputs"]
    database, role = db_out["database"], db_out["username"]

    admin_url = resource_env()["INNOMINATUS_POSTGRES_ADMIN_URL"]

    async def exists() -> tuple[bool, bool]:
        async with await psycopg.AsyncConnection.connect(admin_url, connect_timeout=10) as conn:
            db_row = await (await conn.execute("select 1 from pg_database where datname = %s", (database,))).fetchone()
            role_row = await (await conn.execute("select 1 from pg_roles where rolname = %s", (role,))).fetchone()
        return db_row is not None, role_row is not None

    assert await exists() == (True, True)

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

        deleted = await http.delete(f"/api/v1/applications/{app}", params={"environment": "dev"})
        assert deleted.status_code == 200, deleted.text
        undeploy = await _finish(http, deleted.json()["run"]["name"])
        got = (await http.get(f"/api/v1/applications/{app}")).json()

    assert undeploy["state"] == "RUN_STATE_SUCCEEDED", json.dumps(undeploy, indent=1)
    steps = {s["name"]: s for s in undeploy["steps"]}
    assert set(steps) == {"deprovision-db", "deprovision-web", "remove"}
    assert all(s["state"] == "STEP_STATE_SUCCEEDED" for s in steps.values())
    assert {steps[n]["type"] for n in ("deprovision-db", "deprovision-web")} == {"resource"}
    assert await exists() == (False, False)

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
