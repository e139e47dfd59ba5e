"""Bad input through the REST gateway: a clear, specific error, never a 5xx, nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest

from innominatus.identity.tokens import TokenIssuer
from innominatus.identity.v1 import identity_pb2
from innominatus.kit.config import Settings

pytestmark = pytest.mark.postgres

SCORE = (Path(__file__).parent / "fixtures" / "score" / "checkout.yaml").read_text()
BROKEN = (Path(__file__).parent / "fixtures" / "score" / "broken-keys.yaml").read_text()


async def _nothing_deployed(platform, token: str) -> None:
    async with platform.http(token) as http:
        apps = (await http.get("/api/v1/applications")).json()
        runs = (await http.get("/api/v1/runs")).json()
    assert apps.get("applications", []) == []
    assert runs.get("runs", []) == []


def _problem(response, status: int, reason: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["reason"] == reason, body
    assert body["status"] == status and body["detail"] and body["requestId"]
    return body


async def test_invalid_score_is_refused_with_findings_and_nothing_is_written(platform):
    admin = await platform.login_admin()
    async with platform.http(admin) as http:
        response = await http.post("/api/v1/deployments", json={"scoreYaml": BROKEN, "environment": "dev"})
        body = _problem(response, 400, "SCORE_INVALID")
        [violation] = body["violations"]
        assert violation["field"] == "score_yaml/containers/web/varaibles"
        assert "did you mean 'variables'" in violation["description"] and "line 7" in violation["description"]

        not_yaml = await http.post("/api/v1/deployments", json={"scoreYaml": "a: [unclosed", "environment": "dev"})
        assert "SCORE-1000" in _problem(not_yaml, 400, "SCORE_INVALID")["violations"][0]["description"]
        no_env = await http.post("/api/v1/deployments", json={"scoreYaml": SCORE})
        assert _problem(no_env, 400, "INVALID_ARGUMENT")["violations"][0]["field"] == "environment"
        bad_env = await http.post("/api/v1/deployments", json={"scoreYaml": SCORE, "environment": "Prod Env!"})
        _problem(bad_env, 400, "INVALID_ARGUMENT")
    await _nothing_deployed(platform, admin)


async def test_malformed_json_unknown_fields_and_oversized_bodies(platform):
    admin = await platform.login_admin()
    async with platform.http(admin) as http:
        malformed = await http.post(
            "/api/v1/deployments", content=b'{"scoreYaml": "x", ', headers={"content-type": "application/json"}
        )
        _problem(malformed, 400, "MALFORMED_JSON")
        unknown = await http.post(
            "/api/v1/deployments", json={"scoreYaml": SCORE, "environment": "dev", "enviroment": "dev"}
        )
        assert "enviroment" in _problem(unknown, 400, "INVALID_ARGUMENT")["detail"]
        huge = await http.post(
            "/api/v1/deployments", json={"scoreYaml": "x" * (2 * 1024 * 1024), "environment": "dev"}
        )
        _problem(huge, 413, "REQUEST_TOO_LARGE")
        wrong_type = await http.post("/api/v1/deployments", json={"scoreYaml": 42, "environment": "dev"})
        assert wrong_type.status_code == 400
    await _nothing_deployed(platform, admin)


async def test_bad_expired_and_revoked_credentials_are_refused(platform):
    admin = await platform.login_admin()
    async with platform.http("not-a-token") as http:
        _problem(await http.post("/api/v1/deployments", json={"scoreYaml": SCORE, "environment": "dev"}), 401,
                 "TOKEN_MALFORMED")
    async with platform.http() as http:
        _problem(await http.get("/api/v1/applications"), 401, "TOKEN_MISSING")
        wrong = await http.post("/api/v1/auth:login", json={"username": "admin", "password": "wrong-password-123"})
        _problem(wrong, 401, "INVALID_CREDENTIALS")

    # A token signed by the platform's own key but already expired.
    issuer = TokenIssuer.from_settings(Settings(data_dir=platform.data_dir))
    expired, _ = issuer.issue({"username": "admin", "roles": ["admin"]}, ttl=-60)
    async with platform.http(expired) as http:
        _problem(await http.post("/api/v1/deployments", json={"scoreYaml": SCORE, "environment": "dev"}), 401,
                 "TOKEN_EXPIRED")

    # A token signed by someone else's key.
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    forged, _ = TokenIssuer(Ed25519PrivateKey.generate()).issue({"username": "admin", "roles": ["admin"]})
    async with platform.http(forged) as http:
        _problem(await http.get("/api/v1/applications"), 401, "TOKEN_INVALID")

    # An API key works until it is revoked, then fails at once.
    developer = await platform.create_user(admin, "keyholder", identity_pb2.ROLE_DEVELOPER)
    async with platform.http(developer) as http:
        created = (await http.post("/api/v1/apikeys", json={"displayName": "ci"})).json()
    key = created["key"]
    async with platform.http(key) as http:
        assert (await http.get("/api/v1/users:me")).json()["user"]["username"] == "keyholder"
    async with platform.http(developer) as http:
        revoked = await http.post(f"/api/v1/{created['apiKey']['name']}:revoke", json={})
        assert revoked.status_code == 200, revoked.text
    async with platform.http(key) as http:
        _problem(await http.post("/api/v1/deployments", json={"scoreYaml": SCORE, "environment": "dev"}), 401,
                 "API_KEY_REVOKED")
    await _nothing_deployed(platform, admin)


async def test_unknown_routes_and_methods_are_problems_not_crashes(platform):
    admin = await platform.login_admin()
    async with platform.http(admin) as http:
        _problem(await http.get("/api/v1/nothing-here"), 404, "NOT_FOUND")
        assert (await http.delete("/api/v1/deployments")).status_code == 405
        _problem(await http.get("/api/v1/runs/does-not-exist"), 404, "RUN_NOT_FOUND")
        _problem(await http.get("/api/v1/runs", params={"pageToken": "garbage!"}), 400, "INVALID_PAGE_TOKEN")


# -- over gRPC: what only a typed client can send --------------------------------------------


async def test_a_camel_case_update_mask_over_grpc_names_the_proto_spelling_and_changes_nothing(platform):
    """JSON clients write "requiresApproval" (the gateway converts it); a gRPC FieldMask takes
    the proto field name. The refusal says which path and how to write it."""
    import grpc
    from google.protobuf import field_mask_pb2

    from innominatus.kit.errors import decode_rpc_error
    from innominatus.specs.v1 import specs_pb2, specs_pb2_grpc

    admin = await platform.login_admin()
    metadata = [("authorization", f"Bearer {admin}")]
    async with platform.channel("specs", identity="gateway") as channel:
        specs = specs_pb2_grpc.SpecsServiceStub(channel)
        await specs.CreateEnvironment(specs_pb2.CreateEnvironmentRequest(environment=specs_pb2.Environment(
            name="qa", type=specs_pb2.ENVIRONMENT_TYPE_STAGING, requires_approval=False)), metadata=metadata)
        request = specs_pb2.UpdateEnvironmentRequest(
            environment=specs_pb2.Environment(name="qa", requires_approval=True),
            update_mask=field_mask_pb2.FieldMask(paths=["approvers", "requiresApproval"]),
        )
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await specs.UpdateEnvironment(request, metadata=metadata)
        error = decode_rpc_error(caught.value)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT and error.reason == "INVALID_FIELD_MASK"
        assert "update_mask.paths[1]" in error.message and "'requires_approval'" in error.message
        got = await specs.GetEnvironment(specs_pb2.GetEnvironmentRequest(name="qa"), metadata=metadata)
        assert got.environment.requires_approval is False


async def test_a_number_json_cannot_hold_is_refused_over_grpc(platform):
    """NaN in a Struct is valid protobuf but no JSON: the policy input and the audit record
    could not hold it, so the request is refused before anything runs."""
    import grpc
    from google.protobuf import struct_pb2

    from innominatus.engine.v1 import engine_pb2, engine_pb2_grpc
    from innominatus.kit.errors import decode_rpc_error

    admin = await platform.login_admin()
    inputs = struct_pb2.Struct()
    inputs.update({"replicas": float("nan")})
    async with platform.channel("engine", identity="gateway") as channel:
        engine = engine_pb2_grpc.EngineServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await engine.StartRun(engine_pb2.StartRunRequest(workflow="deploy", application="shop", environment="dev",
                                                             inputs=inputs),
                                  metadata=[("authorization", f"Bearer {admin}")])
    error = decode_rpc_error(caught.value)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT and error.reason == "INVALID_NUMBER"
    assert "cannot be represented as JSON" in error.message
    await _nothing_deployed(platform, admin)
