"""The REST gateway against a real grpc.aio backend over mTLS.

The fake backend implements EngineService, IdentityService and AuditService with canned
answers and fails with the kit's typed errors (``context.abort_with_status(err.to_status())``),
so the problem+json mapping is checked against real ``google.rpc.Status`` details.
"""

from __future__ import annotations

import asyncio
import json
import re

import grpc
import httpx
import pytest
from google.protobuf import struct_pb2, timestamp_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from innominatus.audit.v1 import audit_pb2, audit_pb2_grpc
from innominatus.common.v1 import audit_event_pb2
from innominatus.engine.v1 import engine_pb2, engine_pb2_grpc
from innominatus.gateway import transcoding
from innominatus.gateway.app import create_app, split_listen, start_in_loop, stop_in_loop
from innominatus.gateway.ratelimit import TokenBucketLimiter
from innominatus.identity.v1 import identity_pb2, identity_pb2_grpc
from innominatus.kit import errors
from innominatus.kit.clients import PeerChannels
from innominatus.kit.config import Settings
from innominatus.kit.pki import ensure_dev_pki

BACKENDS = ["gateway", "specs", "engine", "resources", "identity", "audit"]
PROBLEM = "application/problem+json"


# --------------------------------------------------------------------------- fake backend


def _metadata(context: grpc.aio.ServicerContext) -> dict[str, str]:
    return {k: v for k, v in context.invocation_metadata() or ()}


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, object, dict[str, str]]] = []

    def record(self, name: str, request, context) -> None:
        self.calls.append((name, request, _metadata(context)))

    def last(self, name: str):
        for call in reversed(self.calls):
            if call[0] == name:
                return call
        raise AssertionError(f"{name} was not called; calls: {[c[0] for c in self.calls]}")


class FakeEngine(engine_pb2_grpc.EngineServiceServicer):
    def __init__(self, rec: Recorder) -> None:
        self.rec = rec

    async def StartRun(self, request, context):
        self.rec.record("StartRun", request, context)
        if request.workflow == "denied":
            err = errors.PolicyDenied(["developers may not deploy to prod"], "dec-1", "runs.start")
            await context.abort_with_status(err.to_status())
        if request.workflow == "invalid":
            err = errors.InvalidArgument(
                "workflow is not known",
                violations=[errors.FieldViolation("workflow", "no workflow named 'invalid'")],
            )
            await context.abort_with_status(err.to_status())
        if request.workflow == "crash":
            raise RuntimeError("secret internal detail")
        run = engine_pb2.Run(
            name="runs/r-1",
            workflow=request.workflow,
            application=request.application,
            environment=request.environment,
            state=engine_pb2.RUN_STATE_PENDING,
            create_time=timestamp_pb2.Timestamp(seconds=1_700_000_000),
        )
        return engine_pb2.StartRunResponse(run=run)

    async def GetRun(self, request, context):
        self.rec.record("GetRun", request, context)
        if request.name == "runs/missing":
            await context.abort_with_status(errors.NotFound("run runs/missing does not exist").to_status())
        if request.name == "runs/expired":
            err = errors.Unauthenticated("token expired", reason="TOKEN_EXPIRED")
            await context.abort_with_status(err.to_status())
        return engine_pb2.GetRunResponse(run=engine_pb2.Run(name=request.name, state=engine_pb2.RUN_STATE_RUNNING))

    async def ListRuns(self, request, context):
        self.rec.record("ListRuns", request, context)
        runs = [engine_pb2.Run(name=f"runs/r-{i}", application=request.application) for i in range(2)]
        return engine_pb2.ListRunsResponse(runs=runs, next_page_token="next" if request.page_size == 2 else "")


class FakeIdentity(identity_pb2_grpc.IdentityServiceServicer):
    def __init__(self, rec: Recorder) -> None:
        self.rec = rec

    async def Login(self, request, context):
        self.rec.record("Login", request, context)
        if request.api_key == "inn_good":
            return identity_pb2.LoginResponse(access_token="access-from-key", token_type="Bearer", expires_in=900)
        if request.api_key == "inn_revoked":
            err = errors.Unauthenticated("API key was revoked", reason="API_KEY_REVOKED")
            await context.abort_with_status(err.to_status())
        await context.abort_with_status(errors.Unauthenticated("bad credentials", reason="INVALID_CREDENTIALS").to_status())

    async def GetCurrentUser(self, request, context):
        self.rec.record("GetCurrentUser", request, context)
        return identity_pb2.GetCurrentUserResponse(user=identity_pb2.User(name="users/alice", username="alice"))

    async def CreateUser(self, request, context):
        self.rec.record("CreateUser", request, context)
        user = identity_pb2.User()
        user.CopyFrom(request.user)
        user.name = f"users/{request.user.username}"
        user.password = ""
        return identity_pb2.CreateUserResponse(user=user)

    async def AddTeamMember(self, request, context):
        self.rec.record("AddTeamMember", request, context)
        return identity_pb2.AddTeamMemberResponse(team=identity_pb2.Team(name=request.team, members=[request.user]))


def _record(seq: int, actor: str) -> audit_pb2.AuditRecord:
    return audit_pb2.AuditRecord(
        sequence=seq,
        hash=f"h{seq}",
        event=audit_event_pb2.AuditEvent(id=f"e{seq}", actor=actor, outcome=audit_event_pb2.AUDIT_OUTCOME_SUCCEEDED),
    )


class FakeAudit(audit_pb2_grpc.AuditServiceServicer):
    def __init__(self, rec: Recorder) -> None:
        self.rec = rec

    async def ListRecords(self, request, context):
        self.rec.record("ListRecords", request, context)
        return audit_pb2.ListRecordsResponse(records=[_record(1, request.filter.actor)])

    async def ExportRecords(self, request, context):
        self.rec.record("ExportRecords", request, context)
        if request.filter.actor == "nobody":
            await context.abort_with_status(errors.PermissionDenied("not an auditor").to_status())
        for seq in range(1, 4):
            yield audit_pb2.ExportRecordsResponse(record=_record(seq, request.filter.actor or "alice"))
            if request.filter.actor == "breaks":
                await context.abort_with_status(errors.Unavailable("audit store went away").to_status())


def _server_credentials(tls) -> grpc.ServerCredentials:
    ca, cert, key = tls.read()
    return grpc.ssl_server_credentials([(key, cert)], root_certificates=ca, require_client_auth=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return ensure_dev_pki(tmp_path_factory.mktemp("pki"), BACKENDS)


@pytest.fixture(scope="module")
async def backend(pki):
    rec = Recorder()
    server = grpc.aio.server()
    engine_pb2_grpc.add_EngineServiceServicer_to_server(FakeEngine(rec), server)
    identity_pb2_grpc.add_IdentityServiceServicer_to_server(FakeIdentity(rec), server)
    audit_pb2_grpc.add_AuditServiceServicer_to_server(FakeAudit(rec), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    port = server.add_secure_port("127.0.0.1:0", _server_credentials(pki["engine"]))
    await server.start()
    yield f"127.0.0.1:{port}", rec, health_servicer
    await server.stop(None)


@pytest.fixture(scope="module")
def free_address():
    """An address nothing listens on (a port we bound and released)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


def _settings(pki, addresses, **changes) -> Settings:
    base = Settings(tls=pki["gateway"], addresses=addresses, gateway_max_body_bytes=1024)
    return base.with_changes(**changes)


@pytest.fixture(scope="module")
async def gateway(pki, backend):
    address, rec, _ = backend
    addresses = {name: address for name in transcoding.BACKENDS}
    channels = PeerChannels(addresses, pki["gateway"])
    app = create_app(_settings(pki, addresses, gateway_rate_limit_burst=10_000), channels)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client:
        yield client, rec
    await channels.close()


# --------------------------------------------------------------------------- route table


def test_route_table_comes_from_annotations():
    routes = transcoding.build_routes()
    table = {(r.http_method, r.template.template): r.full_method for r in routes}
    assert table[("GET", "/api/v1/{name=runs/*}")] == "/innominatus.engine.v1.EngineService/GetRun"
    assert table[("POST", "/api/v1/{team=teams/*}:addMember")] == "/innominatus.identity.v1.IdentityService/AddTeamMember"
    assert table[("GET", "/api/v1/audit:export")] == "/innominatus.audit.v1.AuditService/ExportRecords"
    # Methods without an http rule are internal.
    exposed = set(table.values())
    assert "/innominatus.audit.v1.AuditService/AppendEvents" not in exposed
    assert "/innominatus.resources.v1.ResourcesService/ClaimResources" not in exposed
    by_method = {r.full_method: r for r in routes}
    assert by_method["/innominatus.identity.v1.IdentityService/CreateUser"].body == "user"
    assert by_method["/innominatus.engine.v1.EngineService/StartRun"].body == "*"
    assert by_method["/innominatus.audit.v1.AuditService/ExportRecords"].server_streaming


@pytest.mark.parametrize(
    ("template", "path", "expected"),
    [
        ("/api/v1/{name=runs/*}", "/api/v1/runs/abc", {"name": "runs/abc"}),
        ("/api/v1/{name=runs/*}", "/api/v1/runs/a%20b", {"name": "runs/a b"}),
        ("/api/v1/{name=runs/*}", "/api/v1/runs/abc/steps", None),
        ("/api/v1/{name=runs/*}", "/api/v1/users/abc", None),
        ("/api/v1/{team=teams/*}:addMember", "/api/v1/teams/core:addMember", {"team": "teams/core"}),
        ("/api/v1/{team=teams/*}:addMember", "/api/v1/teams/core", None),
        ("/api/v1/users:me", "/api/v1/users:me", {}),
        ("/v1/{parent}/things", "/v1/p1/things", {"parent": "p1"}),
        ("/v1/{a.b=shelves/*/books/*}", "/v1/shelves/s/books/b", {"a.b": "shelves/s/books/b"}),
        ("/v1/{path=files/**}:get", "/v1/files/x/y/z:get", {"path": "files/x/y/z"}),
        ("/v1/*/literal", "/v1/anything/literal", {}),
    ],
)
def test_path_templates(template, path, expected):
    assert transcoding.parse_template(template).match(path) == expected


@pytest.mark.parametrize("bad", ["api/v1", "/api/{name=runs/*", "/api/{1x}", "/a/**/b/**", "/a:"])
def test_bad_templates_rejected(bad):
    with pytest.raises(transcoding.TemplateError):
        transcoding.parse_template(bad)


def test_router_method_mismatch_and_verbs():
    router = transcoding.Router(transcoding.build_routes())
    found, allowed = router.match("DELETE", "/api/v1/runs/x")
    assert found is None and allowed == ["GET"]
    found, _ = router.match("GET", "/api/v1/users:me")
    assert found.route.method.name == "GetCurrentUser"
    found, _ = router.match("GET", "/api/v1/users/alice")
    assert found.route.method.name == "GetUser" and found.path_params == {"name": "users/alice"}
    assert router.match("GET", "/api/v1/nothing/here") == (None, [])


def _route(method: str) -> transcoding.HttpRoute:
    return next(r for r in transcoding.build_routes() if r.method.name == method)


def test_build_request_query_params_nested_enum_repeated_timestamp():
    req = transcoding.build_request(
        _route("ListRecords"),
        {},
        [
            ("pageSize", "5"),
            ("page_token", "t"),
            ("filter.actor", "alice"),
            ("filter.outcome", "AUDIT_OUTCOME_DENIED"),
            ("filter.startTime", "2024-01-01T00:00:00Z"),
        ],
        None,
    )
    assert req.page_size == 5 and req.page_token == "t"
    assert req.filter.actor == "alice"
    assert req.filter.outcome == audit_event_pb2.AUDIT_OUTCOME_DENIED
    assert req.filter.start_time.seconds == 1704067200


def test_build_request_body_star_and_path_override():
    route = _route("AddTeamMember")
    body = json.dumps({"user": "users/bob", "team": "teams/ignored"}).encode()
    req = transcoding.build_request(route, {"team": "teams/core"}, [], body)
    assert req.team == "teams/core" and req.user == "users/bob"


def test_build_request_body_field_and_repeated_enum():
    body = json.dumps({"username": "bob", "roles": ["ROLE_DEVELOPER", "ROLE_VIEWER"]}).encode()
    req = transcoding.build_request(_route("CreateUser"), {}, [], body)
    assert req.user.username == "bob"
    assert list(req.user.roles) == [identity_pb2.ROLE_DEVELOPER, identity_pb2.ROLE_VIEWER]


def test_build_request_errors():
    with pytest.raises(transcoding.RequestError) as info:
        transcoding.build_request(_route("ListRuns"), {}, [("pageSize", "1"), ("pageSize", "2")], None)
    assert "not repeated" in info.value.message
    with pytest.raises(transcoding.RequestError) as info:
        transcoding.build_request(_route("ListRuns"), {}, [("bogus", "1")], None)
    assert info.value.violations[0][0] == "bogus"
    with pytest.raises(transcoding.RequestError) as info:
        transcoding.build_request(_route("ListRecords"), {}, [("filter", "x")], None)
    assert "message field" in info.value.message
    with pytest.raises(transcoding.RequestError) as info:
        transcoding.build_request(_route("ListRuns"), {}, [("pageSize", "many")], None)
    assert "pageSize" in info.value.message
    with pytest.raises(transcoding.RequestError) as info:
        transcoding.build_request(_route("StartRun"), {}, [("workflow", "x")], b"{}")
    assert "query parameters are not accepted" in info.value.message


# --------------------------------------------------------------------------- over HTTP


async def test_post_body_star_round_trip(gateway):
    client, rec = gateway
    body = {"workflow": "deploy", "application": "shop", "environment": "dev", "inputs": {"replicas": 2}}
    resp = await client.post(
        "/api/v1/runs", json=body, headers={"Authorization": "Bearer tok-1", "X-Request-Id": "req-123"}
    )
    assert resp.status_code == 200, resp.text
    assert resp.headers["x-request-id"] == "req-123"
    run = resp.json()["run"]
    assert run["name"] == "runs/r-1" and run["workflow"] == "deploy"
    assert run["state"] == "RUN_STATE_PENDING"
    assert run["createTime"] == "2023-11-14T22:13:20Z"
    _, request, metadata = rec.last("StartRun")
    assert request.inputs == struct_pb2.Struct(fields={"replicas": struct_pb2.Value(number_value=2)})
    assert metadata["authorization"] == "Bearer tok-1"
    assert metadata["x-request-id"] == "req-123"


async def test_get_with_path_template(gateway):
    client, rec = gateway
    resp = await client.get("/api/v1/runs/r-9")
    assert resp.status_code == 200
    assert resp.json() == {"run": {"name": "runs/r-9", "state": "RUN_STATE_RUNNING"}}
    rid = resp.headers["x-request-id"]
    assert rid and rec.last("GetRun")[2]["x-request-id"] == rid
    assert "authorization" not in rec.last("GetRun")[2]
    # The request's span is propagated to the service (W3C trace context).
    assert re.fullmatch(r"00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}", rec.last("GetRun")[2]["traceparent"])


async def test_custom_verb_and_body_field(gateway):
    client, rec = gateway
    resp = await client.post("/api/v1/teams/core:addMember", json={"user": "users/bob"})
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"team": {"name": "teams/core", "members": ["users/bob"]}}
    resp = await client.post("/api/v1/users", json={"username": "bob", "displayName": "Bob", "roles": ["ROLE_VIEWER"]})
    assert resp.status_code == 200, resp.text
    assert resp.json()["user"] == {"name": "users/bob", "username": "bob", "displayName": "Bob", "roles": ["ROLE_VIEWER"]}
    resp = await client.get("/api/v1/users:me")
    assert resp.json()["user"]["username"] == "alice"


async def test_query_params_nested_and_enum(gateway):
    client, rec = gateway
    resp = await client.get("/api/v1/runs", params={"pageSize": 2, "application": "shop"})
    assert resp.json()["nextPageToken"] == "next"
    assert [r["application"] for r in resp.json()["runs"]] == ["shop", "shop"]
    resp = await client.get(
        "/api/v1/audit/records", params={"filter.actor": "alice", "filter.outcome": "AUDIT_OUTCOME_FAILED"}
    )
    assert resp.status_code == 200, resp.text
    record = resp.json()["records"][0]
    assert record["sequence"] == "1"  # int64 is a string in proto3 JSON
    assert record["event"]["actor"] == "alice"
    request = rec.last("ListRecords")[1]
    assert request.filter.outcome == audit_event_pb2.AUDIT_OUTCOME_FAILED


async def test_unknown_field_and_bad_values_are_400(gateway):
    client, _ = gateway
    resp = await client.post("/api/v1/runs", json={"workflow": "x", "colour": "red"})
    assert resp.status_code == 400
    assert resp.headers["content-type"].startswith(PROBLEM)
    problem = resp.json()
    assert problem["reason"] == "INVALID_ARGUMENT"
    assert "colour" in problem["detail"]
    assert problem["violations"][0]["field"] == "colour"
    resp = await client.post("/api/v1/users", json={"username": "x", "nested": {"a": 1}})
    assert resp.status_code == 400 and resp.json()["violations"][0]["field"] == "user.nested"
    resp = await client.get("/api/v1/audit/records", params={"filter.outcome": "SOMETIMES"})
    assert resp.status_code == 400 and "filter.outcome" in resp.json()["detail"]
    resp = await client.get("/api/v1/runs", params={"color": "red"})
    assert resp.status_code == 400 and "color" in resp.json()["detail"]
    resp = await client.post("/api/v1/runs", json={"workflow": 5})
    assert resp.status_code == 400


async def test_malformed_json_and_non_object(gateway):
    client, _ = gateway
    resp = await client.post("/api/v1/runs", content=b'{"workflow": "x",}', headers={"content-type": "application/json"})
    assert resp.status_code == 400
    problem = resp.json()
    assert problem["reason"] == "MALFORMED_JSON"
    assert problem["type"] == "https://innominatus.dev/problems/malformed-json"
    assert "line 1 column 18" in problem["detail"] and problem["metadata"]["position"] == "17"
    resp = await client.post("/api/v1/runs", content=b"[1, 2]")
    assert resp.status_code == 400 and "JSON object" in resp.json()["detail"]
    resp = await client.post("/api/v1/runs", content=b"\xff\xfe")
    assert resp.status_code == 400 and resp.json()["reason"] == "MALFORMED_JSON"
    resp = await client.post("/api/v1/runs", content=b"[" * 100_000 + b"]" * 100_000)
    assert resp.status_code in (400, 413)


async def test_empty_body_is_an_empty_request(gateway):
    client, rec = gateway
    resp = await client.post("/api/v1/runs")
    assert resp.status_code == 200
    assert rec.last("StartRun")[1] == engine_pb2.StartRunRequest()


async def test_oversized_body_is_413(gateway):
    client, _ = gateway
    resp = await client.post("/api/v1/runs", content=b'{"workflow": "' + b"x" * 2000 + b'"}')
    assert resp.status_code == 413
    assert resp.json()["reason"] == "REQUEST_TOO_LARGE"

    async def chunks():  # no Content-Length: counted while streaming
        for _ in range(10):
            yield b" " * 200

    resp = await client.post("/api/v1/runs", content=chunks())
    assert "content-length" not in resp.request.headers
    assert resp.status_code == 413 and resp.json()["reason"] == "REQUEST_TOO_LARGE"


async def test_typed_errors_become_problems(gateway):
    client, _ = gateway
    resp = await client.post("/api/v1/runs", json={"workflow": "denied"}, headers={"X-Request-Id": "r-deny"})
    assert resp.status_code == 403
    problem = resp.json()
    assert problem["type"] == "https://innominatus.dev/problems/policy-denied"
    assert problem["reason"] == "POLICY_DENIED" and problem["status"] == 403
    assert problem["metadata"]["reasons"] == "developers may not deploy to prod"
    assert problem["metadata"]["decision_id"] == "dec-1"
    assert problem["requestId"] == "r-deny"
    assert "denied by policy" in problem["detail"]

    resp = await client.post("/api/v1/runs", json={"workflow": "invalid"})
    assert resp.status_code == 400
    assert resp.json()["violations"] == [{"field": "workflow", "description": "no workflow named 'invalid'"}]

    resp = await client.get("/api/v1/runs/missing")
    assert resp.status_code == 404 and resp.json()["reason"] == "NOT_FOUND"
    resp = await client.get("/api/v1/runs/expired")
    assert resp.status_code == 401 and resp.json()["reason"] == "TOKEN_EXPIRED"

    resp = await client.post("/api/v1/runs", json={"workflow": "crash"})
    assert resp.status_code == 500
    assert resp.headers["content-type"].startswith(PROBLEM)
    assert "Traceback" not in resp.text and "secret internal detail" not in resp.text
    assert resp.json()["reason"] == "UNKNOWN"


async def test_unknown_route_and_wrong_method(gateway):
    client, _ = gateway
    resp = await client.get("/api/v1/nope")
    assert resp.status_code == 404 and resp.headers["content-type"].startswith(PROBLEM)
    assert resp.json()["reason"] == "NOT_FOUND"
    resp = await client.get("/elsewhere")
    assert resp.status_code == 404 and resp.json()["reason"] == "NOT_FOUND"
    resp = await client.delete("/api/v1/runs/r-1")
    assert resp.status_code == 405 and resp.headers["allow"] == "GET"
    assert resp.json()["reason"] == "METHOD_NOT_ALLOWED"
    resp = await client.post("/healthz")
    assert resp.status_code == 405 and resp.headers["content-type"].startswith(PROBLEM)


async def test_api_key_is_exchanged_every_time(gateway):
    client, rec = gateway
    before = sum(1 for c in rec.calls if c[0] == "Login")
    for _ in range(2):
        resp = await client.get("/api/v1/runs/r-1", headers={"Authorization": "Bearer inn_good"})
        assert resp.status_code == 200
        assert rec.last("GetRun")[2]["authorization"] == "Bearer access-from-key"
    assert sum(1 for c in rec.calls if c[0] == "Login") == before + 2
    assert rec.last("Login")[1].api_key == "inn_good"
    assert "authorization" not in rec.last("Login")[2]
    calls = len(rec.calls)
    resp = await client.get("/api/v1/runs/r-1", headers={"Authorization": "Bearer inn_revoked"})
    assert resp.status_code == 401 and resp.json()["reason"] == "API_KEY_REVOKED"
    assert [c[0] for c in rec.calls[calls:]] == ["Login"]  # the RPC itself was never called


async def test_server_streaming_is_ndjson(gateway):
    client, rec = gateway
    resp = await client.get("/api/v1/audit:export", params={"filter.actor": "carol"})
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in resp.text.splitlines()]
    assert [r["sequence"] for r in lines] == ["1", "2", "3"]
    assert all(r["event"]["actor"] == "carol" for r in lines)
    # Failing before the first message: a real problem response.
    resp = await client.get("/api/v1/audit:export", params={"filter.actor": "nobody"})
    assert resp.status_code == 403 and resp.json()["reason"] == "PERMISSION_DENIED"
    # Failing mid-stream: the stream ends with an error line.
    resp = await client.get("/api/v1/audit:export", params={"filter.actor": "breaks"})
    lines = [json.loads(line) for line in resp.text.splitlines()]
    assert lines[0]["sequence"] == "1"
    assert lines[-1]["error"]["reason"] == "UNAVAILABLE"


async def test_backend_down_is_503(pki, free_address, backend):
    address, _, _ = backend
    addresses = {name: address for name in transcoding.BACKENDS}
    addresses["engine"] = free_address
    del addresses["specs"]  # a service without an address at all
    channels = PeerChannels(addresses, pki["gateway"])
    app = create_app(_settings(pki, addresses), channels)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client:
            resp = await client.get("/api/v1/runs/r-1")
            assert resp.status_code == 503
            problem = resp.json()
            assert problem["reason"] == "SERVICE_UNAVAILABLE"
            assert "engine" in problem["detail"] and problem["metadata"]["service"] == "engine"
            resp = await client.get("/readyz")
            assert resp.status_code == 503
            assert resp.json()["services"]["engine"] == "UNREACHABLE"
            assert resp.json()["services"]["identity"] == "SERVING"
            assert resp.json()["services"]["specs"] == "UNCONFIGURED"
            resp = await client.get("/api/v1/applications")
            assert resp.status_code == 503 and resp.json()["metadata"]["service"] == "specs"
    finally:
        await channels.close()


async def test_rate_limit(pki, backend):
    address, _, _ = backend
    addresses = {name: address for name in transcoding.BACKENDS}
    channels = PeerChannels(addresses, pki["gateway"])
    # One token back per 100 s: however slowly a loaded machine serves these requests, none
    # refills between them.
    app = create_app(_settings(pki, addresses, gateway_rate_limit_per_second=0.01, gateway_rate_limit_burst=2), channels)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client:
            alice = {"Authorization": "Bearer alice"}
            assert (await client.get("/api/v1/runs/a", headers=alice)).status_code == 200
            assert (await client.get("/api/v1/runs/a", headers=alice)).status_code == 200
            resp = await client.get("/api/v1/runs/a", headers=alice)
            assert resp.status_code == 429
            assert resp.json()["reason"] == "RATE_LIMITED"
            assert resp.headers["content-type"].startswith(PROBLEM)
            assert 90 <= int(resp.headers["retry-after"]) <= 100
            # Another client has its own bucket; health and metrics are exempt.
            assert (await client.get("/api/v1/runs/a", headers={"Authorization": "Bearer bob"})).status_code == 200
            for _ in range(5):
                assert (await client.get("/healthz")).status_code == 200
                assert (await client.get("/metrics")).status_code == 200
    finally:
        await channels.close()


def test_token_bucket_refills():
    now = [0.0]
    limiter = TokenBucketLimiter(2.0, 3, clock=lambda: now[0])
    assert [limiter.acquire("k") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.acquire("k") == pytest.approx(0.5)
    now[0] += 0.5
    assert limiter.acquire("k") == 0.0
    assert limiter.acquire("other") == 0.0
    assert TokenBucketLimiter(0, 1).acquire("k") == 0.0  # rate 0 disables the limit


async def test_health_ready_metrics(gateway, backend):
    client, _ = gateway
    _, _, health_servicer = backend
    resp = await client.get("/healthz")
    assert resp.status_code == 200 and resp.json() == {"status": "ok"}
    resp = await client.get("/readyz")
    assert resp.status_code == 200, resp.text
    assert set(resp.json()["services"].values()) == {"SERVING"}
    await health_servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    try:
        resp = await client.get("/readyz")
        assert resp.status_code == 503 and resp.json()["services"]["engine"] == "NOT_SERVING"
    finally:
        await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    await client.get("/api/v1/runs/r-1")
    text = (await client.get("/metrics")).text
    assert 'innominatus_gateway_http_requests_total{method="GET",route="/api/v1/{name=runs/*}",status="200"}' in text
    assert "innominatus_gateway_http_request_duration_seconds_bucket" in text


async def test_openapi_served(gateway):
    client, _ = gateway
    resp = await client.get("/api/v1/openapi.json")
    assert resp.status_code == 200
    assert resp.json()["openapi"].startswith("3.1")


def test_split_listen():
    assert split_listen("127.0.0.1:8080") == ("127.0.0.1", 8080)
    assert split_listen("[::1]:0") == ("::1", 0)
    assert split_listen(":9000") == ("0.0.0.0", 9000)


async def test_start_in_loop_binds_port_zero(pki, backend):
    address, _, _ = backend
    addresses = {name: address for name in transcoding.BACKENDS}
    settings = _settings(pki, addresses, gateway_listen="127.0.0.1:0", shutdown_grace_seconds=1)
    channels = PeerChannels(addresses, pki["gateway"])
    server, port = await start_in_loop(settings, channels)
    try:
        assert port > 0
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            assert (await client.get("/healthz")).json() == {"status": "ok"}
            resp = await client.get("/api/v1/runs/r-7")
            assert resp.json()["run"]["name"] == "runs/r-7"
            resp = await client.post("/api/v1/runs", content=b"x" * 5000)
            assert resp.status_code == 413
    finally:
        await asyncio.wait_for(stop_in_loop(server), 10)
        await channels.close()


def _synthetic_service():
    """A service (built at run time) using the rule features our protos don't: PUT, PATCH,
    DELETE, additional_bindings, response_body and a body naming a message field."""
    from google.api import annotations_pb2, http_pb2
    from google.protobuf import descriptor_pb2, descriptor_pool

    pool = descriptor_pool.Default()
    name = "innominatus/test/v1/synthetic.proto"
    try:
        return pool.FindFileByName(name).services_by_name["ShelfService"]
    except KeyError:
        pass
    fdp = descriptor_pb2.FileDescriptorProto(
        name=name, package="innominatus.test.v1", syntax="proto3", dependency=["google/api/annotations.proto"]
    )
    shelf = fdp.message_type.add(name="Shelf")
    shelf.field.add(name="name", number=1, type=9, label=1)
    shelf.field.add(name="theme", number=2, type=9, label=1)
    shelf.field.add(name="labels", number=3, type=9, label=3)
    update = fdp.message_type.add(name="UpdateShelfRequest")
    update.field.add(name="shelf", number=1, type=11, label=1, type_name=".innominatus.test.v1.Shelf")
    update.field.add(name="validate_only", number=2, type=8, label=1)
    delete = fdp.message_type.add(name="DeleteShelfRequest")
    delete.field.add(name="name", number=1, type=9, label=1)
    service = fdp.service.add(name="ShelfService")
    m = service.method.add(
        name="UpdateShelf",
        input_type=".innominatus.test.v1.UpdateShelfRequest",
        output_type=".innominatus.test.v1.UpdateShelfRequest",
    )
    rule = http_pb2.HttpRule(patch="/v1/{shelf.name=shelves/*}", body="shelf", response_body="shelf")
    rule.additional_bindings.add(put="/v1/{shelf.name=shelves/*}:replace", body="*")
    m.options.Extensions[annotations_pb2.http].CopyFrom(rule)
    m = service.method.add(
        name="DeleteShelf",
        input_type=".innominatus.test.v1.DeleteShelfRequest",
        output_type=".innominatus.test.v1.Shelf",
    )
    m.options.Extensions[annotations_pb2.http].CopyFrom(http_pb2.HttpRule(delete="/v1/{name=shelves/*}"))
    service.method.add(
        name="Internal", input_type=".innominatus.test.v1.Shelf", output_type=".innominatus.test.v1.Shelf"
    )
    pool.Add(fdp)
    return pool.FindFileByName(name).services_by_name["ShelfService"]


def test_synthetic_rules_patch_put_delete_bindings_response_body():
    service = _synthetic_service()
    routes = transcoding.build_routes([("engine", service)])
    assert sorted((r.http_method, r.template.template) for r in routes) == [
        ("DELETE", "/v1/{name=shelves/*}"),
        ("PATCH", "/v1/{shelf.name=shelves/*}"),
        ("PUT", "/v1/{shelf.name=shelves/*}:replace"),
    ]
    router = transcoding.Router(routes)
    patch, _ = router.match("PATCH", "/v1/shelves/s1")
    req = transcoding.build_request(
        patch.route, patch.path_params, [("validateOnly", "true")], b'{"theme": "sf", "labels": ["a", "b"]}'
    )
    assert req.shelf.name == "shelves/s1" and req.shelf.theme == "sf" and list(req.shelf.labels) == ["a", "b"]
    assert req.validate_only is True
    assert transcoding.response_payload(patch.route, req) == {"name": "shelves/s1", "theme": "sf", "labels": ["a", "b"]}
    put, _ = router.match("PUT", "/v1/shelves/s2:replace")
    req = transcoding.build_request(put.route, put.path_params, [], b'{"shelf": {"name": "x"}, "validateOnly": true}')
    assert req.shelf.name == "shelves/s2" and req.validate_only
    delete, _ = router.match("DELETE", "/v1/shelves/s3")
    assert transcoding.build_request(delete.route, delete.path_params, [], None).name == "shelves/s3"
    with pytest.raises(transcoding.RequestError):
        transcoding.build_request(patch.route, patch.path_params, [], b'"not an object"')

    from innominatus.gateway.openapi import build_openapi

    doc = build_openapi(routes)
    assert set(doc["paths"]) == {"/v1/shelves/{name}", "/v1/shelves/{shelf.name}", "/v1/shelves/{shelf.name}:replace"}
    patch_op = doc["paths"]["/v1/shelves/{shelf.name}"]["patch"]
    assert patch_op["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/innominatus.test.v1.Shelf"
    }
    assert [p["name"] for p in patch_op["parameters"]] == ["shelf.name", "validateOnly"]
