"""mTLS between services: who may connect, and which peer may call which RPC."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from innominatus.audit.v1 import audit_pb2, audit_pb2_grpc
from innominatus.common.v1 import audit_event_pb2
from innominatus.identity.v1 import identity_pb2, identity_pb2_grpc
from innominatus.kit.clients import secure_channel
from innominatus.kit.errors import decode_rpc_error
from innominatus.kit.pki import create_ca, issue
from innominatus.resources.v1 import resources_pb2, resources_pb2_grpc

pytestmark = pytest.mark.postgres


async def test_every_service_reports_serving_under_its_full_name(platform):
    names = {
        "identity": "innominatus.identity.v1.IdentityService",
        "specs": "innominatus.specs.v1.SpecsService",
        "engine": "innominatus.engine.v1.EngineService",
        "resources": "innominatus.resources.v1.ResourcesService",
        "audit": "innominatus.audit.v1.AuditService",
    }
    for service, full_name in names.items():
        async with platform.channel(service) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            for name in ("", full_name):
                response = await stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
                assert response.status == health_pb2.HealthCheckResponse.SERVING, (service, name)


async def test_client_without_certificate_is_refused(platform):
    ca = platform.tls("cli").ca.read_bytes()
    credentials = grpc.ssl_channel_credentials(root_certificates=ca)  # no client certificate
    async with grpc.aio.secure_channel(platform.address("identity"), credentials) as channel:
        stub = identity_pb2_grpc.IdentityServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            await stub.GetJwks(identity_pb2.GetJwksRequest(), timeout=5)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_client_with_certificate_from_another_ca_is_refused(platform, tmp_path):
    other_ca = create_ca(tmp_path / "other", common_name="someone else's CA")
    intruder = issue(other_ca, tmp_path / "other", "gateway")  # claims to be the gateway
    # Trust the real platform CA for the server, but present the foreign client certificate.
    credentials = grpc.ssl_channel_credentials(
        root_certificates=platform.tls("cli").ca.read_bytes(),
        private_key=intruder.key.read_bytes(),
        certificate_chain=intruder.cert.read_bytes(),
    )
    async with grpc.aio.secure_channel(platform.address("identity"), credentials) as channel:
        stub = identity_pb2_grpc.IdentityServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            await stub.GetJwks(identity_pb2.GetJwksRequest(), timeout=5)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_peer_not_allowed_to_call_an_rpc_is_refused_before_the_handler(platform):
    token = await platform.login_admin()
    # Only the specs service may claim resources, even for an admin.
    async with secure_channel(platform.address("resources"), platform.tls("gateway")) as channel:
        stub = resources_pb2_grpc.ResourcesServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            await stub.ClaimResources(
                resources_pb2.ClaimResourcesRequest(application="a1", environment="dev", workload="w1"),
                metadata=[("authorization", f"Bearer {token}")],
                timeout=5,
            )
    error = decode_rpc_error(caught.value)
    assert error.code == grpc.StatusCode.PERMISSION_DENIED
    assert error.reason == "PEER_NOT_ALLOWED"
    assert "spiffe://innominatus.local/service/gateway" in error.message


async def test_only_platform_services_may_append_audit_events(platform):
    event = audit_event_pb2.AuditEvent(id="forged-1", service="specs", method="/x/Y", actor="mallory")
    async with secure_channel(platform.address("audit"), platform.tls("cli")) as channel:
        stub = audit_pb2_grpc.AuditServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            await stub.AppendEvents(audit_pb2.AppendEventsRequest(events=[event]), timeout=5)
    assert decode_rpc_error(caught.value).reason == "PEER_NOT_ALLOWED"


async def test_reflection_lists_the_service(platform):
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    async with platform.channel("engine") as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)

        async def one_request():
            yield reflection_pb2.ServerReflectionRequest(list_services="")

        names = []
        async for response in stub.ServerReflectionInfo(one_request()):
            names = [s.name for s in response.list_services_response.service]
            break
    assert "innominatus.engine.v1.EngineService" in names
    assert "grpc.health.v1.Health" in names
