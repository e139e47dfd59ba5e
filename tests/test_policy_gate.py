"""Every mutation is decided by the policy engine; reads are not, and survive its outage."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from innominatus.engine.v1 import engine_pb2, engine_pb2_grpc
from innominatus.identity.v1 import identity_pb2
from innominatus.kit.clients import secure_channel
from innominatus.kit.errors import decode_rpc_error
from innominatus.kit.policy import default_policy_dir
from innominatus.specs.v1 import specs_pb2, specs_pb2_grpc
from tests.helpers.mesh import running_platform
from tests.helpers.opa import OpaServer

pytestmark = pytest.mark.postgres

SCORE = (Path(__file__).parent / "fixtures" / "score" / "checkout.yaml").read_text()


def _deploy_request(env: str = "dev") -> specs_pb2.CreateDeploymentRequest:
    return specs_pb2.CreateDeploymentRequest(score_yaml=SCORE, environment=env)


async def _deploy(platform, token: str):
    async with secure_channel(platform.address("specs"), platform.tls("gateway")) as channel:
        stub = specs_pb2_grpc.SpecsServiceStub(channel)
        return await stub.CreateDeployment(_deploy_request(), metadata=[("authorization", f"Bearer {token}")], timeout=20)


async def test_developer_may_deploy_and_viewer_is_denied_with_reasons(platform):
    admin = await platform.login_admin()
    developer = await platform.create_user(admin, "dana", identity_pb2.ROLE_DEVELOPER)
    viewer = await platform.create_user(admin, "victor", identity_pb2.ROLE_VIEWER)

    response = await _deploy(platform, developer)
    assert response.deployment.application == "applications/checkout"
    assert response.run.name.startswith("runs/")
    assert sorted(r.split("/")[0] for r in response.deployment.resources) == ["resources", "resources"]

    with pytest.raises(grpc.RpcError) as caught:
        await _deploy(platform, viewer)
    error = decode_rpc_error(caught.value)
    assert error.code == grpc.StatusCode.PERMISSION_DENIED
    assert error.reason == "POLICY_DENIED"
    assert "viewer" in error.metadata["reasons"] and "deployments.create" in error.metadata["reasons"]
    assert error.metadata["decision_id"]


async def test_viewer_deploying_over_rest_gets_403_problem_with_reasons(platform):
    admin = await platform.login_admin()
    viewer = await platform.create_user(admin, "vera", identity_pb2.ROLE_VIEWER)
    async with platform.http(viewer) as http:
        response = await http.post("/api/v1/deployments", json={"scoreYaml": SCORE, "environment": "dev"})
    assert response.status_code == 403
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["reason"] == "POLICY_DENIED"
    assert "viewer" in problem["metadata"]["reasons"]
    # Nothing was deployed.
    async with platform.http(admin) as http:
        apps = (await http.get("/api/v1/applications")).json()
    assert apps.get("applications", []) == []


async def test_opa_down_denies_mutations_but_reads_still_work(tmp_path):
    with OpaServer(default_policy_dir()) as opa:
        async with running_platform(tmp_path / "data", opa_url=opa.url) as platform:
            admin = await platform.login_admin()
            developer = await platform.create_user(admin, "dora", identity_pb2.ROLE_DEVELOPER)
            first = await _deploy(platform, developer)  # allowed while OPA answers

            opa.stop()
            with pytest.raises(grpc.RpcError) as caught:
                await _deploy(platform, developer)
            error = decode_rpc_error(caught.value)
            assert error.code == grpc.StatusCode.PERMISSION_DENIED
            assert error.reason == "POLICY_ENGINE_UNAVAILABLE"
            assert "policy engine unavailable" in error.message

            # Reads do not ask the policy engine.
            async with secure_channel(platform.address("engine"), platform.tls("gateway")) as channel:
                stub = engine_pb2_grpc.EngineServiceStub(channel)
                run = await stub.GetRun(
                    engine_pb2.GetRunRequest(name=first.run.name), metadata=[("authorization", f"Bearer {developer}")]
                )
            assert run.run.name == first.run.name
            async with platform.http(developer) as http:
                response = await http.get("/api/v1/applications")
                assert response.status_code == 200
                assert [a["name"] for a in response.json()["applications"]] == ["applications/checkout"]
                denied = await http.post("/api/v1/deployments", json={"scoreYaml": SCORE, "environment": "dev"})
                assert denied.status_code == 403
                assert denied.json()["reason"] == "POLICY_ENGINE_UNAVAILABLE"

            opa.start()  # back: mutations flow again
            second = await _deploy(platform, developer)
            assert second.deployment.name != first.deployment.name
