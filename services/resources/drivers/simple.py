"""Drivers that compute their outputs and create nothing outside innominatus: ``dns``, ``route``,
``volume`` and ``service-port``. Their health is always ok and they never drift; what they describe
(an Ingress rule, a volume, a Service port) becomes real when the deployment's artifacts are applied.
"""

from __future__ import annotations

import re
from typing import Any

from innominatus.kit.errors import FieldViolation
from innominatus.resources.drivers.base import (
    NoopChecks,
    ProvisionContext,
    ProvisionError,
    ProvisionResult,
    dns_label,
    hostname_problem,
    resource_label,
)

DEFAULT_BASE_DOMAIN = "apps.local"


def _invalid(ctx: ProvisionContext, driver: str, violations: list[FieldViolation]) -> ProvisionError:
    detail = "; ".join(f"{v.field}: {v.description}" for v in violations)
    return ProvisionError(
        f"invalid params for the {driver} resource {ctx.resource_id}: {detail}",
        retryable=False,
        reason="INVALID_RESOURCE_PARAMS",
        violations=violations,
    )


def _port(value: Any) -> int | None:
    """``value`` as a TCP port number, or ``None`` when it is not one (1-65535; ints or digit strings)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int) and 1 <= value <= 65535:
        return value
    return None


def _workload_service(ctx: ProvisionContext, explicit: Any = None) -> str:
    name = explicit or (ctx.params or {}).get("workload") or ctx.workload
    return dns_label(str(name)) if name else ""


class DnsDriver(NoopChecks):
    name = "dns"
    types = ("dns",)
    description = "a generated hostname <app>-<env>-<id>.<base_domain> (config: base_domain, default apps.local)"

    async def provision(self, ctx: ProvisionContext) -> ProvisionResult:
        base = str((ctx.config or {}).get("base_domain") or DEFAULT_BASE_DOMAIN).strip().strip(".").lower()
        problem = hostname_problem(base)
        if problem:
            raise ProvisionError(
                f"config.base_domain of the dns driver for resource {ctx.resource_id}: {problem}",
                retryable=False,
                reason="DRIVER_MISCONFIGURED",
            )
        label = resource_label(ctx)
        host = f"{label}.{base}"
        if len(host) > 253:
            raise ProvisionError(
                f"hostname for resource {ctx.resource_id} would be longer than 253 characters; use a shorter base_domain",
                retryable=False,
                reason="DRIVER_MISCONFIGURED",
            )
        return ProvisionResult(outputs={"host": host}, state={"host": host})


class RouteDriver(NoopChecks):
    name = "route"
    types = ("route",)
    description = "an ingress rule for params host, path (default /) and port; rendered as an Ingress"

    async def provision(self, ctx: ProvisionContext) -> ProvisionResult:
        params = ctx.params or {}
        violations: list[FieldViolation] = []
        host = params.get("host")
        host = host.strip().lower() if isinstance(host, str) else host
        problem = hostname_problem(host, allow_wildcard=True)
        if problem:
            violations.append(FieldViolation("params.host", problem))
        path = params.get("path", "/")
        if path in (None, ""):
            path = "/"
        if not isinstance(path, str) or not path.startswith("/"):
            violations.append(FieldViolation("params.path", f"must start with '/' (got {path!r})"))
        elif re.search(r"[\s\x00-\x1f\x7f]", path) or len(path) > 2048:
            violations.append(FieldViolation("params.path", "must not contain whitespace or control characters"))
        port = _port(params.get("port"))
        if port is None:
            got = params.get("port")
            violations.append(
                FieldViolation("params.port", "is required" if got is None else f"must be a port number 1-65535 (got {got!r})")
            )
        if violations:
            raise _invalid(ctx, "route", violations)
        service = _workload_service(ctx, params.get("service"))
        rule = {
            "host": host,
            "path": path,
            "pathType": "Prefix",
            "backend": {"service": service, "port": port},
        }
        return ProvisionResult(outputs={"host": host, "path": path, "port": port}, state={"ingress": rule})


class VolumeDriver(NoopChecks):
    name = "volume"
    types = ("volume",)
    description = "a named volume <app>-<env>-<id> (config: type, default volume)"

    async def provision(self, ctx: ProvisionContext) -> ProvisionResult:
        source = resource_label(ctx)
        kind = str((ctx.config or {}).get("type") or "volume")
        return ProvisionResult(outputs={"source": source, "type": kind}, state={"source": source, "type": kind})


class ServicePortDriver(NoopChecks):
    name = "service-port"
    types = ("service-port",)
    description = "a port of a workload's Service (params port, targetPort, workload)"

    async def provision(self, ctx: ProvisionContext) -> ProvisionResult:
        params = ctx.params or {}
        violations: list[FieldViolation] = []
        port = _port(params.get("port"))
        if port is None:
            got = params.get("port")
            violations.append(
                FieldViolation("params.port", "is required" if got is None else f"must be a port number 1-65535 (got {got!r})")
            )
        target = params.get("targetPort", params.get("target_port"))
        target_port = port if target is None else _port(target)
        if target is not None and target_port is None:
            violations.append(FieldViolation("params.targetPort", f"must be a port number 1-65535 (got {target!r})"))
        service = _workload_service(ctx)
        if not service:
            violations.append(FieldViolation("params.workload", "no workload: set params.workload"))
        if violations:
            raise _invalid(ctx, "service-port", violations)
        return ProvisionResult(
            outputs={"name": service, "port": port},
            state={"service": service, "port": port, "targetPort": target_port},
        )
