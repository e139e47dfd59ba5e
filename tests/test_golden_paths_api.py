"""Golden paths through the gateway and the interceptors: listed, run by a developer,
refused for a viewer by policy, bad params refused with every problem named."""

from __future__ import annotations

import asyncio
import subprocess

import pytest

from innominatus.identity.v1 import identity_pb2
from tests.helpers.runs import steps_by_id, wait_for_run

pytestmark = pytest.mark.postgres


async def test_developer_runs_a_golden_path_end_to_end(platform, tmp_path):
    admin = await platform.login_admin()
    developer = await platform.create_user(admin, "gp-dev", identity_pb2.ROLE_DEVELOPER)
    repository = tmp_path / "team-payments.git"
    async with platform.http(developer) as http:
        listed = (await http.get("/api/v1/goldenPaths")).json()
        names = {p["name"] for p in listed["goldenPaths"]}
        assert {"goldenPaths/deploy-app", "goldenPaths/undeploy-app", "goldenPaths/ephemeral-env",
                "goldenPaths/db-lifecycle", "goldenPaths/onboard-team"} <= names

        started = await http.post("/api/v1/goldenPaths/onboard-team:run", json={
            "params": {"team": "payments", "owner": "payments@example.com", "repository": str(repository)},
        })
        assert started.status_code == 200, started.text
        run = await wait_for_run(http, started.json()["run"]["name"], timeout=60)
    assert run["state"] == "RUN_STATE_SUCCEEDED", run
    log = subprocess.run(["git", "--git-dir", str(repository), "log", "--oneline"], capture_output=True, text=True,
                         check=True).stdout
    assert log.strip(), "the skeleton was not committed"


async def test_viewer_is_denied_and_bad_params_are_all_named(platform, tmp_path):
    admin = await platform.login_admin()
    viewer = await platform.create_user(admin, "gp-viewer", identity_pb2.ROLE_VIEWER)
    async with platform.http(viewer) as http:
        denied = await http.post("/api/v1/goldenPaths/onboard-team:run", json={
            "params": {"team": "x1", "owner": "x@example.com", "repository": str(tmp_path / "r.git")},
        })
    assert denied.status_code == 403 and denied.json()["reason"] == "POLICY_DENIED"

    async with platform.http(admin) as http:
        bad = await http.post("/api/v1/goldenPaths/onboard-team:run", json={
            "params": {"team": "Not A Name", "owner": "not-an-email", "colour": "blue"},
        })
        assert bad.status_code == 400, bad.text
        fields = {v["field"] for v in bad.json()["violations"]}
        assert {"params.team", "params.owner", "params.repository", "params.colour"} <= fields, fields
        runs = (await http.get("/api/v1/runs")).json().get("runs", [])
    assert runs == []


async def test_start_run_accepts_catalog_workflows_with_typed_params(platform, tmp_path):
    admin = await platform.login_admin()
    async with platform.http(admin) as http:
        unknown = await http.post("/api/v1/runs", json={"workflow": "onboard-tema", "inputs": {}})
        assert unknown.status_code == 400 and unknown.json()["reason"] == "UNKNOWN_WORKFLOW"
        assert "goldenpaths list" in unknown.json()["detail"]

        missing = await http.post("/api/v1/runs", json={"workflow": "onboard-team", "inputs": {"team": "ops"}})
        assert missing.status_code == 400, missing.text
        assert {"params.owner", "params.repository"} <= {v["field"] for v in missing.json()["violations"]}

        repository = tmp_path / "ops.git"
        started = await http.post("/api/v1/runs", json={
            "workflow": "onboard-team", "requestId": "onboard-ops-1",
            "inputs": {"team": "ops", "owner": "ops@example.com", "repository": str(repository)},
        })
        assert started.status_code == 200, started.text
        again = await http.post("/api/v1/runs", json={
            "workflow": "onboard-team", "requestId": "onboard-ops-1",
            "inputs": {"team": "ops", "owner": "ops@example.com", "repository": str(repository)},
        })
        assert again.json()["run"]["name"] == started.json()["run"]["name"]  # idempotent per request id
        run = await wait_for_run(http, started.json()["run"]["name"], timeout=60)
    assert run["state"] == "RUN_STATE_SUCCEEDED", run


# -- undeploy-app through the real services ---------------------------------------------------


@pytest.fixture
async def sweeping_platform(tmp_path, monkeypatch):
    """The platform with a fast TTL sweeper (ephemeral-env teardowns within a second)."""
    from tests.helpers.mesh import running_platform

    monkeypatch.setenv("INNOMINATUS_EPHEMERAL_SWEEP_SECONDS", "0.2")
    async with running_platform(tmp_path / "data") as running:
        yield running


def _files(repository) -> set[str]:
    listed = subprocess.run(["git", "--git-dir", str(repository), "ls-tree", "-r", "--name-only", "main"],
                            capture_output=True, text=True)
    return set(listed.stdout.split()) if listed.returncode == 0 else set()


async def test_undeploy_app_removes_a_gitops_only_app_and_tears_down_ephemeral_envs(sweeping_platform, tmp_path):
    platform = sweeping_platform
    admin = await platform.login_admin()
    developer = await platform.create_user(admin, "gp-undeploy", identity_pb2.ROLE_DEVELOPER)
    repository = tmp_path / "gitops.git"
    subprocess.run(["git", "init", "-q", "--bare", "--initial-branch=main", str(repository)], check=True)
    async with platform.http(developer) as http:
        shown = (await http.get("/api/v1/goldenPaths/undeploy-app")).json()["goldenPath"]
        assert shown["version"] == "2.1.0" and [v["version"] for v in shown["versions"]] == ["2.1.0", "2.0.0", "1.0.0"]

        # deploy-app writes apps/<app>/<env>/deployment.yaml; undeploy-app (given the repository)
        # deletes it. The platform's plan (specs' PlanUndeploy, asked by the engine) is empty.
        started = await http.post("/api/v1/goldenPaths/deploy-app:run", json={"params": {
            "app": "shop", "image": "registry.example/shop:1.0.0", "gitops_repo": str(repository)}})
        assert started.status_code == 200, started.text
        run = await wait_for_run(http, started.json()["run"]["name"], timeout=60)
        assert run["state"] == "RUN_STATE_SUCCEEDED", run
        assert "apps/shop/development/deployment.yaml" in _files(repository)
        started = await http.post("/api/v1/goldenPaths/undeploy-app:run", json={"params": {
            "app": "shop", "gitops_repo": str(repository)}})
        assert started.status_code == 200, started.text
        assert started.json()["version"] == "2.1.0"
        run = await wait_for_run(http, started.json()["run"]["name"], timeout=60)
        assert run["state"] == "RUN_STATE_SUCCEEDED", run
        steps = steps_by_id(run)
        assert steps["plan"]["outputs"]["deployed"] is False and steps["plan"]["outputs"]["claims"] == []
        assert steps["undeploy"]["state"] == "STEP_STATE_SKIPPED" and steps["remove"]["state"] == "STEP_STATE_SUCCEEDED"
        assert "apps/shop/development/deployment.yaml" not in _files(repository)

        # Without the repository and with nothing deployed there is nothing to remove: it says so.
        started = await http.post("/api/v1/goldenPaths/undeploy-app:run", json={"params": {"app": "ghost"}})
        run = await wait_for_run(http, started.json()["run"]["name"], timeout=60)
        assert run["state"] == "RUN_STATE_FAILED"
        assert "nothing to remove" in steps_by_id(run)["nothing-to-remove"]["message"]

        # ephemeral-env: torn down by undeploy-app when the TTL passes
        started = await http.post("/api/v1/goldenPaths/ephemeral-env:run", json={"params": {
            "app": "web", "environment": "pr-9", "image": "web:1.0.0", "gitops_repo": str(repository), "ttl": "1s"}})
        assert started.status_code == 200, started.text
        run = await wait_for_run(http, started.json()["run"]["name"], timeout=60)
        assert run["state"] == "RUN_STATE_SUCCEEDED", run
        assert "apps/web/pr-9/deployment.yaml" in _files(repository)

    async with platform.http(admin) as http:  # the teardown is the engine's run
        deadline = asyncio.get_running_loop().time() + 60
        while True:
            runs = (await http.get("/api/v1/runs", params={"pageSize": 100})).json().get("runs", [])
            teardowns = [r for r in runs if r["workflow"] == "undeploy-app" and r["creator"] == "engine:ephemeral-ttl"]
            if teardowns and teardowns[0]["state"] in ("RUN_STATE_SUCCEEDED", "RUN_STATE_FAILED"):
                break
            assert asyncio.get_running_loop().time() < deadline, runs
            await asyncio.sleep(0.2)
    [teardown] = teardowns
    assert teardown["state"] == "RUN_STATE_SUCCEEDED", teardown
    assert (teardown["application"], teardown["environment"]) == ("web", "pr-9")
    assert steps_by_id(teardown)["undeploy"]["state"] == "STEP_STATE_SKIPPED"
    assert "apps/web/pr-9/deployment.yaml" not in _files(repository)
