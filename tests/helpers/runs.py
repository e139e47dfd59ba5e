"""Deployments and engine runs over the REST gateway, as the platform tests drive them.

`http` is a client of the gateway as a user (``TestPlatform.http(token)``). A run is the JSON of
GetRun (``{"name", "state", "steps": [...], ...}``); a step's ``name`` is its id in the workflow
(``id[i]`` for a for_each item).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable

import httpx

TERMINAL = ("RUN_STATE_SUCCEEDED", "RUN_STATE_FAILED", "RUN_STATE_CANCELLED")
"""The states a run ends in: nothing changes it after one of these."""


def ended(run: dict) -> bool:
    """Whether the run is in one of the TERMINAL states."""
    return run["state"] in TERMINAL


async def get_run(http: httpx.AsyncClient, name: str) -> dict:
    """GetRun of ``name`` (``runs/<id>``)."""
    return (await http.get(f"/api/v1/{name}")).json()["run"]


async def wait_for_run(
    http: httpx.AsyncClient,
    name: str,
    until: Callable[[dict], bool] | None = None,
    timeout: float = 90,
    what: str = "",
) -> dict:
    """Poll the run every 0.2 s until ``until(run)`` holds (by default: until it has ended) and
    return it. Fails the test after ``timeout`` seconds with ``what`` and the run as last seen, so
    a stuck run shows which step it is stuck at."""
    until = until or ended
    deadline = time.monotonic() + timeout
    while True:
        run = await get_run(http, name)
        if until(run):
            return run
        assert time.monotonic() < deadline, (
            f"{what or 'run ended'}: not within {timeout:g}s; {name} as last seen: {json.dumps(run, indent=1)}"
        )
        await asyncio.sleep(0.2)


def steps_by_id(run: dict) -> dict[str, dict]:
    """The run's steps by name (their id), in the run's order."""
    return {s["name"]: s for s in run.get("steps", [])}


def awaits_approval(step_id: str = "approve") -> Callable[[dict], bool]:
    """A ``wait_for_run`` condition: the run's step ``step_id`` waits for an approval decision."""
    return lambda run: steps_by_id(run).get(step_id, {}).get("state") == "STEP_STATE_WAITING_APPROVAL"


async def create_deployment(http: httpx.AsyncClient, score: str, environment: str = "dev", **fields) -> httpx.Response:
    """POST /api/v1/deployments (CreateDeployment) with the Score file and the other request
    ``fields`` (``application``, ``team``, ...; an empty one is left out, as proto JSON would);
    the response as it came, a refusal included."""
    body = {"scoreYaml": score, "environment": environment, **{k: v for k, v in fields.items() if v}}
    return await http.post("/api/v1/deployments", json=body)


async def start_deployment(http: httpx.AsyncClient, score: str, environment: str = "dev", **fields) -> dict:
    """CreateDeployment that must be accepted; its answer (``deployment``, ``run`` as started,
    ``findings``). The run is not waited for."""
    created = await create_deployment(http, score, environment, **fields)
    assert created.status_code == 200, created.text
    return created.json()


async def deploy(
    http: httpx.AsyncClient,
    score: str,
    environment: str = "dev",
    *,
    expect: str | None = "RUN_STATE_SUCCEEDED",
    timeout: float = 90,
    **fields,
) -> dict:
    """Deploy and wait for the run to end: CreateDeployment's answer with ``run`` the ended run.
    Fails with the run unless it ended in ``expect`` (None: whichever way it ended)."""
    created = await start_deployment(http, score, environment, **fields)
    run = await wait_for_run(http, created["run"]["name"], timeout=timeout, what="deploy run ended")
    if expect is not None:
        assert run["state"] == expect, json.dumps(run, indent=1)
    return {**created, "run": run}
