"""The one error hierarchy of innominatus.

Handlers raise these; the server interceptors turn them into a gRPC status carrying a
``google.rpc.Status`` with an ``ErrorInfo`` (stable reason code) and, for bad input, a
``BadRequest`` naming each field. The gateway turns the same status into an RFC 7807
problem document, and clients turn it back into the same exception class
(:func:`from_rpc_error`), so a reason code means the same thing on every hop.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

ERROR_DOMAIN = "innominatus.dev"


@dataclass
class FieldViolation:
    field: str
    description: str


class InnominatusError(Exception):
    """Base of every error a caller may see. ``reason`` is stable and machine-readable."""

    code: ClassVar[grpc.StatusCode] = grpc.StatusCode.INTERNAL
    default_reason: ClassVar[str] = "INTERNAL"

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        metadata: dict[str, str] | None = None,
        violations: list[FieldViolation] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason
        self.metadata = dict(metadata or {})
        self.violations = list(violations or [])

    def to_status(self) -> grpc.Status:
        info = error_details_pb2.ErrorInfo(reason=self.reason, domain=ERROR_DOMAIN, metadata=self.metadata)
        details = [_pack(info)]
        if self.violations:
            details.append(
                _pack(
                    error_details_pb2.BadRequest(
                        field_violations=[
                            error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
                            for v in self.violations
                        ]
                    )
                )
            )
        status = status_pb2.Status(code=self.code.value[0], message=self.message, details=details)
        return rpc_status.to_status(status)


class InvalidArgument(InnominatusError):
    code = grpc.StatusCode.INVALID_ARGUMENT
    default_reason = "INVALID_ARGUMENT"


class NotFound(InnominatusError):
    code = grpc.StatusCode.NOT_FOUND
    default_reason = "NOT_FOUND"


class AlreadyExists(InnominatusError):
    code = grpc.StatusCode.ALREADY_EXISTS
    default_reason = "ALREADY_EXISTS"


class FailedPrecondition(InnominatusError):
    code = grpc.StatusCode.FAILED_PRECONDITION
    default_reason = "FAILED_PRECONDITION"


class Unauthenticated(InnominatusError):
    code = grpc.StatusCode.UNAUTHENTICATED
    default_reason = "UNAUTHENTICATED"


class PermissionDenied(InnominatusError):
    code = grpc.StatusCode.PERMISSION_DENIED
    default_reason = "PERMISSION_DENIED"


class PolicyDenied(PermissionDenied):
    """The policy engine said no. ``reasons`` are the policy's own words."""

    default_reason = "POLICY_DENIED"

    def __init__(self, reasons: list[str], decision_id: str, permission: str) -> None:
        reasons = list(reasons) or ["no policy rule allows this request"]
        super().__init__(
            f"denied by policy: {permission}: " + "; ".join(reasons),
            metadata={"decision_id": decision_id, "permission": permission, "reasons": "\n".join(reasons)},
        )
        self.reasons = reasons
        self.decision_id = decision_id


class PolicyUnavailable(PermissionDenied):
    """The policy engine could not be asked; mutations fail closed."""

    default_reason = "POLICY_ENGINE_UNAVAILABLE"


class ResourceExhausted(InnominatusError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    default_reason = "RESOURCE_EXHAUSTED"


class Unavailable(InnominatusError):
    code = grpc.StatusCode.UNAVAILABLE
    default_reason = "UNAVAILABLE"


class Internal(InnominatusError):
    code = grpc.StatusCode.INTERNAL
    default_reason = "INTERNAL"


_BY_CODE: dict[grpc.StatusCode, type[InnominatusError]] = {
    cls.code: cls
    for cls in (
        InvalidArgument,
        NotFound,
        AlreadyExists,
        FailedPrecondition,
        Unauthenticated,
        PermissionDenied,
        ResourceExhausted,
        Unavailable,
        Internal,
    )
}

# HTTP statuses of the gateway's problem documents (google.rpc.Code -> HTTP, as in AIP-193).
HTTP_STATUS: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}


@dataclass
class RemoteError:
    """A failed call as seen by a client: the status plus its decoded details."""

    code: grpc.StatusCode
    message: str
    reason: str = "UNKNOWN"
    metadata: dict[str, str] = field(default_factory=dict)
    violations: list[FieldViolation] = field(default_factory=list)


def decode_rpc_error(error: grpc.RpcError) -> RemoteError:
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    message = error.details() if hasattr(error, "details") else str(error)
    result = RemoteError(code=code, message=message or code.name)
    try:
        status = rpc_status.from_call(error)  # type: ignore[arg-type]
    except (ValueError, AttributeError):
        status = None
    if status is None:
        result.reason = _transport_reason(code)
        return result
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            result.reason = info.reason
            result.metadata = dict(info.metadata)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            result.violations = [FieldViolation(v.field, v.description) for v in bad.field_violations]
    return result


def from_rpc_error(error: grpc.RpcError) -> InnominatusError:
    """Re-raise a downstream failure with the same code, reason and details."""
    remote = decode_rpc_error(error)
    cls = _BY_CODE.get(remote.code, Internal)
    if remote.code == grpc.StatusCode.UNAVAILABLE:
        cls = Unavailable
    exc = cls(remote.message, reason=remote.reason, metadata=remote.metadata, violations=remote.violations)
    return exc


def _transport_reason(code: grpc.StatusCode) -> str:
    if code == grpc.StatusCode.UNAVAILABLE:
        return "SERVICE_UNAVAILABLE"
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return "DEADLINE_EXCEEDED"
    return code.name


def _pack(message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


__all__ = [
    "ERROR_DOMAIN",
    "HTTP_STATUS",
    "AlreadyExists",
    "FailedPrecondition",
    "FieldViolation",
    "InnominatusError",
    "Internal",
    "InvalidArgument",
    "NotFound",
    "PermissionDenied",
    "PolicyDenied",
    "PolicyUnavailable",
    "RemoteError",
    "ResourceExhausted",
    "Unauthenticated",
    "Unavailable",
    "decode_rpc_error",
    "from_rpc_error",
]
