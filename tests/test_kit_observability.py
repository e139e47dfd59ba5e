"""What operators follow a request with: one trace across gateway -> specs -> resources /
engine, JSON logs carrying request id, trace id, peer and user, Prometheus metrics per
method and error reason, and no secret in any log line."""

from __future__ import annotations

import asyncio
import io
import json
import re
import uuid
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families

from innominatus.identity.v1 import identity_pb2
from innominatus.kit.telemetry import tracer_provider
from tests.helpers.audit import list_records
from tests.helpers.polling import eventually

pytestmark = pytest.mark.postgres

SCORE = (Path(__file__).parent / "fixtures" / "score" / "checkout.yaml").read_text()
HEX32 = re.compile(r"[0-9a-f]{32}")

CREATE_DEPLOYMENT = "/innominatus.specs.v1.SpecsService/CreateDeployment"
CLAIM_RESOURCES = "/innominatus.resources.v1.ResourcesService/ClaimResources"
START_RUN = "/innominatus.engine.v1.EngineService/StartRun"

class _Recorder(InMemorySpanExporter):
    """Keeps finished spans only while a test that asked for them runs."""

    recording = False

    def export(self, spans):
        if not self.recording:
            return SpanExportResult.SUCCESS
        return super().export(spans)


_recorder: _Recorder | None = None


@pytest.fixture
def spans():
    """Finished spans of this test. Requested before ``platform`` so the exporter is in
    place (on the process's tracer provider) before any service starts."""
    global _recorder
    if _recorder is None:
        _recorder = _Recorder()
        tracer_provider().add_span_processor(SimpleSpanProcessor(_recorder))
    _recorder.clear()
    _recorder.recording = True
    try:
        yield _recorder
    finally:
        _recorder.recording = False
        _recorder.clear()


def _events(buffer: io.StringIO) -> list[dict]:
    text = buffer.getvalue()
    events = []
    for line in text.splitlines():
        if line.strip():
            events.append(json.loads(line))  # every line is one JSON object
    return events


async def _deploy(client, request_id: str, env: str = "dev"):
    return await client.post(
        "/api/v1/deployments",
        json={"scoreYaml": SCORE, "environment": env},
        headers={"X-Request-Id": request_id},
    )


async def _wait_for(predicate, timeout: float = 10.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = predicate()
        if result:
            return result
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def test_one_trace_spans_gateway_specs_resources_and_engine(spans, platform):
    admin = await platform.login_admin()
    developer = await platform.create_user(admin, "tracer", identity_pb2.ROLE_DEVELOPER)
    request_id = f"trace-{uuid.uuid4().hex}"
    spans.clear()
    async with platform.http(developer) as client:
        response = await _deploy(client, request_id)
    assert response.status_code == 200, response.text

    def gateway_span():
        return [
            s
            for s in spans.get_finished_spans()
            if s.kind == trace.SpanKind.SERVER and s.attributes.get("innominatus.request_id") == request_id
        ]

    [gateway] = await _wait_for(gateway_span)
    assert gateway.name == "POST /api/v1/deployments"
    assert gateway.parent is None  # the gateway starts the trace
    finished = spans.get_finished_spans()
    by_id = {s.context.span_id: s for s in finished}

    def server_span(method: str):
        found = [s for s in finished if s.name == method and s.kind == trace.SpanKind.SERVER and s.context.trace_id == gateway.context.trace_id]
        assert len(found) == 1, (method, [(s.name, s.kind, format(s.context.trace_id, "032x")) for s in finished])
        return found[0]

    def ancestors(span) -> list:
        chain = []
        while span.parent is not None and span.parent.span_id in by_id:
            span = by_id[span.parent.span_id]
            chain.append(span)
        return chain

    specs = server_span(CREATE_DEPLOYMENT)
    claim = server_span(CLAIM_RESOURCES)
    start = server_span(START_RUN)
    trace_ids = {s.context.trace_id for s in (gateway, specs, claim, start)}
    assert trace_ids == {gateway.context.trace_id}
    # Each hop is a child of the one that made the call (through its client span).
    assert gateway in ancestors(specs)
    assert specs in ancestors(claim) and gateway in ancestors(claim)
    assert specs in ancestors(start) and gateway in ancestors(start)
    client_spans = [s for s in ancestors(claim) if s.kind == trace.SpanKind.CLIENT]
    assert client_spans and client_spans[0].name == CLAIM_RESOURCES


async def test_logs_of_a_request_carry_request_id_trace_id_peer_and_user(spans, platform, json_logs):
    admin = await platform.login_admin()
    viewer = await platform.create_user(admin, "looker", identity_pb2.ROLE_VIEWER)
    request_id = f"logs-{uuid.uuid4().hex}"
    async with platform.http(viewer) as client:
        response = await _deploy(client, request_id)
    assert response.status_code == 403, response.text
    assert response.headers["X-Request-Id"] == request_id

    def refused():
        return [e for e in _events(json_logs) if e.get("event") == "rpc refused" and e.get("request_id") == request_id]

    [event] = await _wait_for(refused)
    assert event["reason"] == "POLICY_DENIED"
    assert event["method"] == CREATE_DEPLOYMENT
    assert event["peer"] == "gateway"
    assert event["user"] == "looker"
    assert event["level"] == "info"
    assert HEX32.fullmatch(event["trace_id"]) and int(event["trace_id"], 16) != 0

    def access_log():
        return [e for e in _events(json_logs) if e.get("event") == "http request" and e.get("request_id") == request_id]

    [access] = await _wait_for(access_log)
    assert access["status"] == 403 and access["route"] == "/api/v1/deployments"
    # The gateway and the service log the same trace for the same request.
    assert access["trace_id"] == event["trace_id"]
    [gateway_span] = await _wait_for(
        lambda: [s for s in spans.get_finished_spans() if s.attributes.get("innominatus.request_id") == request_id]
    )
    assert format(gateway_span.context.trace_id, "032x") == event["trace_id"]


def _samples(text: str) -> dict[tuple[str, frozenset], float]:
    values = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            values[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return values


def _value(samples, name: str, **labels) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def test_metrics_count_requests_latency_and_errors_by_reason(platform):
    admin = await platform.login_admin()
    developer = await platform.create_user(admin, "metered-dev", identity_pb2.ROLE_DEVELOPER)
    viewer = await platform.create_user(admin, "metered-viewer", identity_pb2.ROLE_VIEWER)
    async with platform.http() as anonymous:
        before_response = await anonymous.get("/metrics")
        assert before_response.status_code == 200
        assert before_response.headers["content-type"].startswith("text/plain")
        before = _samples(before_response.text)

        async with platform.http(developer) as dev:
            assert (await _deploy(dev, uuid.uuid4().hex)).status_code == 200
        async with platform.http(viewer) as view:
            for _ in range(2):
                denied = await _deploy(view, uuid.uuid4().hex)
                assert denied.status_code == 403
                assert denied.json()["reason"] == "POLICY_DENIED"

        after = _samples((await anonymous.get("/metrics")).text)

    def delta(name: str, **labels) -> float:
        return _value(after, name, **labels) - _value(before, name, **labels)

    create = {"service": "specs", "method": "CreateDeployment"}
    assert delta("innominatus_rpc_requests_total", code="OK", **create) == 1
    assert delta("innominatus_rpc_requests_total", code="PERMISSION_DENIED", **create) == 2
    assert delta("innominatus_rpc_errors_total", reason="POLICY_DENIED", **create) == 2
    assert delta("innominatus_rpc_duration_seconds_count", **create) == 3
    assert delta("innominatus_rpc_duration_seconds_bucket", le="+Inf", **create) == 3
    assert delta("innominatus_rpc_duration_seconds_bucket", le="10.0", **create) == 3
    # The hops behind the one allowed deploy, counted by the services that served them.
    assert delta("innominatus_rpc_requests_total", service="resources", method="ClaimResources", code="OK") == 1
    assert delta("innominatus_rpc_requests_total", service="engine", method="StartRun", code="OK") == 1
    # Denied deploys never reached resources or engine.
    assert delta("innominatus_rpc_requests_total", service="resources", method="ClaimResources", code="PERMISSION_DENIED") == 0
    assert delta("innominatus_policy_decisions_total", permission="deployments.create", result="deny") == 2
    assert delta("innominatus_policy_decisions_total", permission="deployments.create", result="allow") == 1


async def test_secrets_never_reach_the_logs(platform, json_logs):
    admin_creds = platform.admin_credentials()
    password = f"pw-{uuid.uuid4().hex}"
    async with platform.http() as client:
        login = await client.post(
            "/api/v1/auth:login", json={"username": admin_creds["username"], "password": admin_creds["password"]}
        )
        assert login.status_code == 200, login.text
        admin_token = login.json()["accessToken"]
        created = await client.post(
            "/api/v1/users",
            json={"username": "secretive", "password": password, "roles": ["ROLE_DEVELOPER"]},
            headers={"Authorization": f"Bearer {admin_token}"},
        )
        assert created.status_code == 200, created.text
        login = await client.post("/api/v1/auth:login", json={"username": "secretive", "password": password})
        assert login.status_code == 200, login.text
        user_token = login.json()["accessToken"]
        key = await client.post(
            "/api/v1/apikeys", json={"displayName": "ci"}, headers={"Authorization": f"Bearer {user_token}"}
        )
        assert key.status_code == 200, key.text
        api_key = key.json()["key"]
        assert api_key.startswith("inn_")
        # Use the key once, so it travels through the gateway's exchange too.
        me = await client.get("/api/v1/users:me", headers={"Authorization": f"Bearer {api_key}"})
        assert me.status_code == 200, me.text
        # And a failed login with a wrong password, which is logged as refused.
        wrong = f"wrong-{uuid.uuid4().hex}"
        refused = await client.post("/api/v1/auth:login", json={"username": "secretive", "password": wrong})
        assert refused.status_code == 401

    # Audit events are shipped by the relays in the background: let them run too, until the
    # key's creation is in the audit chain (so the shipping itself was logged, if it logs).
    async def shipped():
        records = await list_records(platform, admin_token, method="CreateApiKey")
        return [r for r in records if r.event.actor == "secretive"]

    await eventually(shipped, timeout=30)
    text = json_logs.getvalue()
    events = _events(json_logs)
    routes = {e.get("route") for e in events if e.get("event") == "http request"}
    assert {"/api/v1/auth:login", "/api/v1/users", "/api/v1/apikeys", "/api/v1/users:me"} <= routes, routes
    secrets = {
        "admin password": admin_creds["password"],
        "new user's password": password,
        "wrong password": wrong,
        "admin access token": admin_token,
        "user access token": user_token,
        "API key": api_key,
        "API key secret part": api_key[len("inn_") :],
    }
    for what, secret in secrets.items():
        assert secret not in text, f"the {what} appears in the logs"
