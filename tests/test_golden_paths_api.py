"""Golden paths through the gateway and the interceptors: listed, run by a developer,
refused for a viewer by policy, bad params refused with every problem named."""

from __future__ import annotations

import asyncio
import subprocess

import pytest

from innominatus.identity.v1 import identity_pb2

pytestmark = pytest.mark.postgres


async def _wait_for_run(http, name: str, timeout: float = 60) -> dict:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        run = (await http.get(f"/api/v1/{name}")).json()["run"]
        if run["state"] in ("RUN_STATE_SUCCEEDED", "RUN_STATE_FAILED", "RUN_STATE_CANCELLED"):
            return run
        assert asyncio.get_running_loop().time() < deadline, run
        await asyncio.sleep(0.2)


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
        run = await _wait_for_run(http, started.json()["run"]["name"])
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
        run = await _wait_for_run(http, started.json()["run"]["name"])
    assert run["state"] == "RUN_STATE_SUCCEEDED", run
