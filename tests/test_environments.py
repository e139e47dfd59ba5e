"""Environments with a type: CreateEnvironment / ListEnvironments, implicit development
environments, and the approval gate of a deployment to a production environment (the deploy
workflow's `approve` step; deciding it needs "runs.approve" and being one of its approvers).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path

import pytest

from innominatus.identity.v1 import identity_pb2

pytestmark = pytest.mark.postgres

HELLO = (Path(__file__).resolve().parent.parent / "deploy" / "examples" / "hello.yaml").read_text()
TERMINAL = ("RUN_STATE_SUCCEEDED", "RUN_STATE_FAILED", "RUN_STATE_CANCELLED")


async def _run(http, name: str) -> dict:
    return (await http.get(f"/api/v1/{name}")).json()["run"]


async def _wait(http, name: str, predicate, what: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        run = await _run(http, name)
        if predicate(run):
            return run
        assert time.monotonic() < deadline, f"{what}: {json.dumps(run, indent=1)}"
        await asyncio.sleep(0.2)


def _step(run: dict, step_id: str) -> dict:
    return next(s for s in run.get("steps", []) if s["name"].rsplit("/", 1)[-1] == step_id)


def _step_ids(run: dict) -> list[str]:
    return [s["name"].rsplit("/", 1)[-1] for s in run.get("steps", [])]


async def test_production_deployments_wait_for_a_platform_engineers_approval(platform):
    admin = await platform.login_admin()
    suffix = uuid.uuid4().hex[:6]
    developer = await platform.create_user(admin, f"dev{suffix}", identity_pb2.ROLE_DEVELOPER)
    engineer = await platform.create_user(admin, f"pe{suffix}", identity_pb2.ROLE_PLATFORM_ENGINEER)
    production = {"environment": {"name": "production", "type": "ENVIRONMENT_TYPE_PRODUCTION"}}

    async with platform.http(developer) as dev, platform.http(admin) as root, platform.http(engineer) as pe:
        # Deploying to an unknown environment named like production is refused.
        refused = await dev.post("/api/v1/deployments", json={"scoreYaml": HELLO, "environment": "production"})
        assert refused.status_code == 400, refused.text
        assert "create it first" in refused.text and "ENVIRONMENT_NOT_FOUND" in refused.text

        # Creating environments: admin and platform engineer, not developers (policy).
        denied = await dev.post("/api/v1/environments", json=production)
        assert denied.status_code == 403, denied.text
        assert "environments.create" in denied.text
        created = await root.post("/api/v1/environments", json=production)
        assert created.status_code == 200, created.text
        assert created.json()["environment"]["type"] == "ENVIRONMENT_TYPE_PRODUCTION"
        again = await root.post("/api/v1/environments", json=production)
        assert again.status_code == 409, again.text
        untyped = await pe.post("/api/v1/environments", json={"environment": {"name": "qa"}})
        assert untyped.status_code == 400, untyped.text

        # A developer's deploy to production waits at `approve`; nothing is committed yet.
        started = await dev.post("/api/v1/deployments", json={"scoreYaml": HELLO, "environment": "production"})
        assert started.status_code == 200, started.text
        run_name = started.json()["run"]["name"]
        deployment = started.json()["deployment"]["name"]
        run = await _wait(dev, run_name, lambda r: _step(r, "approve")["state"] == "STEP_STATE_WAITING_APPROVAL",
                          "approve waiting")
        assert _step_ids(run).index("approve") < _step_ids(run).index("render")
        assert _step(run, "render")["state"] not in ("STEP_STATE_RUNNING", "STEP_STATE_SUCCEEDED")
        assert "gitopsCommit" not in (await dev.get(f"/api/v1/{deployment}")).json()["deployment"]

        # The developer may not approve (policy: runs.approve); a platform engineer does.
        gate = f"/api/v1/{run_name}/steps/approve:approve"
        no = await dev.post(gate, json={"reason": "me"})
        assert no.status_code == 403, no.text
        yes = await pe.post(gate, json={"reason": "release window"})
        assert yes.status_code == 200, yes.text
        run = await _wait(dev, run_name, lambda r: r["state"] in TERMINAL, "run ended")
        assert run["state"] == "RUN_STATE_SUCCEEDED", json.dumps(run, indent=1)
        assert (await dev.get(f"/api/v1/{deployment}")).json()["deployment"]["gitopsCommit"]

        # A deploy to an unknown `dev` creates it as development and needs no approval.
        started = await dev.post("/api/v1/deployments", json={"scoreYaml": HELLO, "environment": "dev"})
        assert started.status_code == 200, started.text
        run = await _wait(dev, started.json()["run"]["name"], lambda r: r["state"] in TERMINAL, "dev run ended")
        assert run["state"] == "RUN_STATE_SUCCEEDED", json.dumps(run, indent=1)
        assert "approve" not in _step_ids(run)

        listed = (await dev.get("/api/v1/environments")).json()["environments"]
        assert [(e["name"], e["type"]) for e in listed] == [
            ("dev", "ENVIRONMENT_TYPE_DEVELOPMENT"), ("production", "ENVIRONMENT_TYPE_PRODUCTION")]
