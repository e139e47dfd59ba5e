"""Per-RPC facts read from the proto descriptors: the one source of truth for how the kit
treats a method (who may call it, whether it is a mutation, which permission it needs)."""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf import descriptor, message_factory
from google.protobuf.message import Message

from innominatus.common.v1 import method_policy_pb2

# The external surface: the REST gateway and operator tooling holding a `tool/cli`
# certificate (grpcurl, scripts).
EXTERNAL_CALLERS = frozenset({"gateway", "tool/cli"})


@dataclass(frozen=True)
class MethodInfo:
    full_name: str  # "/innominatus.specs.v1.SpecsService/CreateDeployment"
    service_name: str  # "innominatus.specs.v1.SpecsService"
    name: str  # "CreateDeployment"
    descriptor: descriptor.MethodDescriptor
    request_type: type[Message]
    response_type: type[Message]
    server_streaming: bool
    mutation: bool
    permission: str
    resource_type: str
    callers: frozenset[str]
    anonymous: bool
    service_subject: bool
    read_roles: frozenset[str]
    omit_request_from_policy: bool


def method_policy(method: descriptor.MethodDescriptor) -> method_policy_pb2.MethodPolicy:
    return method.GetOptions().Extensions[method_policy_pb2.method_policy]


def describe_service(service: descriptor.ServiceDescriptor) -> dict[str, MethodInfo]:
    table: dict[str, MethodInfo] = {}
    for method in service.methods:
        policy = method_policy(method)
        full = f"/{service.full_name}/{method.name}"
        table[full] = MethodInfo(
            full_name=full,
            service_name=service.full_name,
            name=method.name,
            descriptor=method,
            request_type=message_factory.GetMessageClass(method.input_type),
            response_type=message_factory.GetMessageClass(method.output_type),
            server_streaming=method.server_streaming,
            mutation=policy.mutation,
            permission=policy.permission,
            resource_type=policy.resource_type,
            callers=frozenset(policy.callers) or EXTERNAL_CALLERS,
            anonymous=policy.anonymous,
            service_subject=policy.service_subject,
            read_roles=frozenset(policy.read_roles),
            omit_request_from_policy=policy.omit_request_from_policy,
        )
    return table
