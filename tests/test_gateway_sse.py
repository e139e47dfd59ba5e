"""The run event stream through the REST gateway: Server-Sent Events (authenticated,
keep-alives, Last-Event-ID resumes without duplicates), NDJSON, the REST custom methods and
`innominatus runs logs --follow`."""

from __future__ import annotations

import asyncio
import json

import pytest

from innominatus.cli import main as cli
from innominatus.gateway import app as gateway_app
from innominatus.identity.v1 import identity_pb2
from tests.test_run_operations import ops_platform, wait_step

pytestmark = pytest.mark.postgres


@pytest.fixture
async def platform(tmp_path, monkeypatch):
    async with ops_platform(tmp_path, monkeypatch) as running:
        yield running


async def _start(http, workflow: str) -> str:
    response = await http.post("/api/v1/runs", json={"workflow": workflow, "application": "shop", "environment": "dev"})
    assert response.status_code == 200, response.text
    return response.json()["run"]["name"]


async def _sse(response, *, until=None, comments: list | None = None):
    """Yield parsed SSE messages ({id, event, data}) until the stream ends or ``until(msg)``
    is true; comment lines are collected in ``comments`` and passed to ``until`` as
    ``{"comment": line}``."""
    fields: dict = {}
    async for line in response.aiter_lines():
        if line.startswith(":"):
            if comments is not None:
                comments.append(line)
            if until is not None and until({"comment": line}):
                return
            continue
        if line == "":
            if fields:
                message = {"id": fields.get("id"), "event": fields.get("event"), "data": json.loads(fields["data"])}
                fields = {}
                yield message
                if until is not None and until(message):
                    return
            continue
        key, _, value = line.partition(":")
        fields[key] = value[1:] if value.startswith(" ") else value


async def test_sse_stream_keepalive_and_reconnect_with_last_event_id(platform, monkeypatch):
    monkeypatch.setattr(gateway_app, "SSE_KEEPALIVE_SECONDS", 0.3)
    admin = await platform.login_admin()
    developer = await platform.create_user(admin, "dana", identity_pb2.ROLE_DEVELOPER)
    async with platform.http(developer) as http:
        name = await _start(http, "ops-gate")
        path = f"/api/v1/{name}:streamEvents"
        first: list[dict] = []
        comments: list[str] = []
        async with http.stream("GET", path, headers={"Accept": "text/event-stream"}) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            waiting = []

            def done(message: dict) -> bool:
                # Read until the gate waits, then until a keep-alive comment shows the stream
                # stays open while nothing happens.
                if message.get("event") == "step.waiting_approval":
                    waiting.append(message)
                return bool(waiting) and "keep-alive" in message.get("comment", "")

            async for message in _sse(response, until=done, comments=comments):
                first.append(message)
        assert any("keep-alive" in c for c in comments)
        assert all(m["id"] == str(m["data"]["seq"]) and m["event"] == m["data"]["kind"] for m in first)
        assert first[0]["event"] == "run.created" and first[0]["data"]["state"] == "RUN_STATE_PENDING"
        last_id = first[-1]["id"]

    await wait_step(platform, name, "gate", "WAITING_APPROVAL")
    async with platform.http(admin) as http:
        approved = await http.post(f"/api/v1/{name}/steps/gate:approve", json={"reason": "go"})
        assert approved.status_code == 200, approved.text
        assert approved.json()["run"]["name"] == name

    async with platform.http(developer) as http:
        rest: list[dict] = []
        headers = {"Accept": "text/event-stream", "Last-Event-ID": last_id}
        async with http.stream("GET", f"/api/v1/{name}:streamEvents", headers=headers) as response:
            assert response.status_code == 200
            async for message in _sse(response):
                rest.append(message)
        # NDJSON replay of the whole log, for comparison.
        async with http.stream("GET", f"/api/v1/{name}:streamEvents") as response:
            assert response.headers["content-type"].startswith("application/x-ndjson")
            everything = [json.loads(line) async for line in response.aiter_lines() if line.strip()]

    seen = [int(m["id"]) for m in first] + [int(m["id"]) for m in rest]
    assert int(rest[0]["id"]) == int(last_id) + 1
    assert len(seen) == len(set(seen))  # no duplicates across the reconnect
    assert seen == [int(e["seq"]) for e in everything][: len(seen)]
    assert "run.succeeded" in [m["event"] for m in rest]
    assert rest[-1]["data"]["state"] == "RUN_STATE_SUCCEEDED"
    assert any(m["event"] == "step.approved" and "go" in m["data"]["message"] for m in rest)


async def test_sse_requires_authentication_and_a_numeric_last_event_id(platform):
    admin = await platform.login_admin()
    async with platform.http(admin) as http:
        name = await _start(http, "ops-quick")
        bad = await http.get(f"/api/v1/{name}:streamEvents",
                             headers={"Accept": "text/event-stream", "Last-Event-ID": "abc"})
        assert bad.status_code == 400 and "Last-Event-ID" in bad.json()["detail"]
        missing = await http.get("/api/v1/runs/nope:streamEvents", headers={"Accept": "text/event-stream"})
        assert missing.status_code == 404
    async with platform.http() as anonymous:
        response = await anonymous.get(f"/api/v1/{name}:streamEvents", headers={"Accept": "text/event-stream"})
        assert response.status_code == 401
        assert response.headers["content-type"].startswith("application/problem+json")


async def test_rest_custom_methods_cancel_and_policy(platform):
    admin = await platform.login_admin()
    viewer = await platform.create_user(admin, "victor", identity_pb2.ROLE_VIEWER)
    async with platform.http(admin) as http:
        name = await _start(http, "ops-hold")
    await wait_step(platform, name, "hold", "RUNNING")
    async with platform.http(viewer) as http:
        denied = await http.post(f"/api/v1/{name}:cancel", json={})
        assert denied.status_code == 403 and denied.json()["reason"] == "POLICY_DENIED"
    async with platform.http(admin) as http:
        paused = await http.post(f"/api/v1/{name}:pause", json={})
        assert paused.status_code == 200 and paused.json()["run"]["paused"] is True
        cancelled = await http.post(f"/api/v1/{name}:cancel", json={})
        assert cancelled.status_code == 200
        await wait_step(platform, name, "hold", "CANCELLED")
        again = await http.post(f"/api/v1/{name}:cancel", json={})
        assert again.status_code == 400 or again.status_code == 409, again.text
        assert again.json()["reason"] == "RUN_ALREADY_ENDED"


async def test_cli_runs_logs_follow_exits_0_when_the_run_succeeds(platform, monkeypatch, tmp_path, capsys):
    admin = await platform.login_admin()
    async with platform.http(admin) as http:
        name = await _start(http, "ops-quick")
    monkeypatch.setenv("INNOMINATUS_SERVER", platform.gateway)
    monkeypatch.setenv("INNOMINATUS_TOKEN", admin)
    monkeypatch.setenv("INNOMINATUS_CONFIG_DIR", str(tmp_path / "config"))
    code = await asyncio.to_thread(cli.main, ["runs", "logs", name, "--follow"])
    out = capsys.readouterr().out
    assert code == 0, out
    lines = out.strip().splitlines()
    assert "run.created" in lines[0]
    assert any("run.succeeded" in line for line in lines)
    assert any("step.log" in line and "two" in line and "hello from two" in line for line in lines)

    code = await asyncio.to_thread(cli.main, ["runs", "logs", name.removeprefix("runs/")])
    assert code == 0 and capsys.readouterr().out.strip().splitlines() == lines
