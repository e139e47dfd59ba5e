"""RFC 7807 problem documents for every error the gateway returns.

A gRPC failure keeps its meaning: the HTTP status comes from ``kit.errors.HTTP_STATUS``,
``reason`` and ``metadata`` from the status's ``google.rpc.ErrorInfo``, ``violations``
from its ``google.rpc.BadRequest``. Errors the gateway raises itself (bad JSON, size and
rate limits, unknown routes) use the same shape and their own reason codes.
"""

from __future__ import annotations

import json

import grpc
from starlette.responses import Response

from innominatus.kit.errors import HTTP_STATUS, FieldViolation, decode_rpc_error

PROBLEM_TYPE_BASE = "https://innominatus.dev/problems/"
PROBLEM_CONTENT_TYPE = "application/problem+json"


def problem_type(reason: str) -> str:
    return PROBLEM_TYPE_BASE + reason.lower().replace("_", "-")


def problem_title(reason: str) -> str:
    words = reason.replace("_", " ").strip().lower()
    return words[:1].upper() + words[1:] if words else "Error"


def problem(
    status: int,
    reason: str,
    detail: str,
    request_id: str,
    *,
    metadata: dict[str, str] | None = None,
    violations: list[tuple[str, str]] | list[FieldViolation] | None = None,
    instance: str | None = None,
) -> dict:
    doc = {
        "type": problem_type(reason),
        "title": problem_title(reason),
        "status": status,
        "detail": detail,
        "reason": reason,
        "metadata": dict(metadata or {}),
        "violations": [
            {"field": v.field, "description": v.description}
            if isinstance(v, FieldViolation)
            else {"field": v[0], "description": v[1]}
            for v in (violations or [])
        ],
        "requestId": request_id,
    }
    if instance:
        doc["instance"] = instance
    return doc


def problem_response(doc: dict, headers: dict[str, str] | None = None) -> Response:
    return Response(
        json.dumps(doc, ensure_ascii=False),
        status_code=doc["status"],
        media_type=PROBLEM_CONTENT_TYPE,
        headers=headers,
    )


def problem_from_rpc_error(error: grpc.RpcError, backend: str, request_id: str, instance: str | None = None) -> dict:
    remote = decode_rpc_error(error)
    status = HTTP_STATUS.get(remote.code, 500)
    detail = remote.message
    metadata = dict(remote.metadata)
    if remote.reason == "SERVICE_UNAVAILABLE":
        # A transport failure (nothing answered): name the service, not the socket error.
        detail = f"the {backend} service is unavailable"
        metadata.setdefault("service", backend)
    elif remote.code == grpc.StatusCode.UNKNOWN and remote.reason == "UNKNOWN":
        # An exception that escaped a handler (grpc reports UNKNOWN with the exception's
        # text and no ErrorInfo): that text is for the service's log, not for the client.
        detail = f"the {backend} service failed unexpectedly"
        metadata.setdefault("service", backend)
    elif remote.reason == "DEADLINE_EXCEEDED":
        detail = f"the {backend} service did not answer in time"
        metadata.setdefault("service", backend)
    return problem(
        status,
        remote.reason,
        detail,
        request_id,
        metadata=metadata,
        violations=remote.violations,
        instance=instance,
    )


def service_unavailable(backend: str, request_id: str, why: str = "", instance: str | None = None) -> dict:
    detail = f"the {backend} service is unavailable" + (f": {why}" if why else "")
    return problem(503, "SERVICE_UNAVAILABLE", detail, request_id, metadata={"service": backend}, instance=instance)
