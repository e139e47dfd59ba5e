"""The driver contract shared by every built-in provisioner driver.

A driver turns one resource instance into something real (a database, an ACL user, a hostname...)
and back. Every operation is ``async`` and receives a :class:`ProvisionContext`:

- ``provision(ctx) -> ProvisionResult`` is idempotent: the same ``resource_id`` always names the
  same database / user / hostname, and a second call converges instead of failing. On failure it
  removes what *this attempt* created, then raises :class:`ProvisionError` (never with a secret in
  its message).
- ``deprovision(ctx, state) -> None`` is idempotent: removing something already gone succeeds.
- ``health(ctx, state, secret_outputs) -> Health`` really connects with the resource's own
  credentials.
- ``drift(ctx, state) -> Drift`` tells whether the thing was removed or changed behind our back.

``state`` is the driver's own bookkeeping returned by ``provision``; it holds no secrets and may be
stored in plain JSON. Secrets only ever travel in ``ProvisionResult.secret_outputs``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
import string
from dataclasses import dataclass, field
from typing import Any, Mapping, Protocol, runtime_checkable

import grpc

from innominatus.kit.errors import FieldViolation, InnominatusError

REDACTED = "[redacted]"
_PASSWORD_ALPHABET = string.ascii_letters + string.digits


@dataclass(frozen=True)
class ProvisionContext:
    """Everything a driver knows about the resource it works on.

    ``previous_state`` / ``previous_secrets`` are what the last successful ``provision`` of the same
    resource returned (``None`` on the first one). Drivers that hold credentials re-use
    ``previous_secrets["password"]`` so re-provisioning (every deploy) does not rotate passwords
    under running workloads.
    """

    resource_id: str
    type: str
    class_: str = "default"
    params: Mapping[str, Any] = field(default_factory=dict)
    application: str = ""
    environment: str = ""
    config: Mapping[str, Any] = field(default_factory=dict)
    idempotency_key: str = ""
    workload: str = ""
    previous_state: Mapping[str, Any] | None = None
    previous_secrets: Mapping[str, str] | None = None


@dataclass
class ProvisionResult:
    outputs: dict[str, str | int] = field(default_factory=dict)
    secret_outputs: dict[str, str] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:  # secrets never show up in a repr (logs, test failures, debuggers)
        hidden = {k: REDACTED for k in self.secret_outputs}
        return f"ProvisionResult(outputs={self.outputs!r}, secret_outputs={hidden!r}, state={self.state!r})"


@dataclass(frozen=True)
class Health:
    ok: bool
    reason: str = ""


@dataclass(frozen=True)
class Drift:
    ok: bool
    reason: str = ""


class ProvisionError(InnominatusError):
    """A driver operation failed. ``retryable`` says whether trying again may help.

    Retryable failures (the server is unreachable, a lock timed out) map to ``UNAVAILABLE``; the
    others (bad params, a name taken by something we do not manage, missing privileges) to
    ``FAILED_PRECONDITION``. The message never contains a password.
    """

    default_reason = "PROVISION_FAILED"

    def __init__(
        self,
        message: str,
        retryable: bool = False,
        *,
        reason: str | None = None,
        metadata: dict[str, str] | None = None,
        violations: list[FieldViolation] | None = None,
    ) -> None:
        super().__init__(
            message,
            reason=reason,
            metadata={**(metadata or {}), "retryable": "true" if retryable else "false"},
            violations=violations,
        )
        self.retryable = retryable
        self.code = grpc.StatusCode.UNAVAILABLE if retryable else grpc.StatusCode.FAILED_PRECONDITION


@runtime_checkable
class Driver(Protocol):
    """What the resources service calls. ``name`` is what resource definitions refer to."""

    name: str
    description: str
    types: tuple[str, ...]

    async def provision(self, ctx: ProvisionContext) -> ProvisionResult: ...

    async def deprovision(self, ctx: ProvisionContext, state: Mapping[str, Any]) -> None: ...

    async def health(
        self, ctx: ProvisionContext, state: Mapping[str, Any], secret_outputs: Mapping[str, str]
    ) -> Health: ...

    async def drift(self, ctx: ProvisionContext, state: Mapping[str, Any]) -> Drift: ...


class NoopChecks:
    """health/drift/deprovision for drivers that create nothing outside innominatus."""

    async def deprovision(self, ctx: ProvisionContext, state: Mapping[str, Any]) -> None:
        return None

    async def health(self, ctx, state, secret_outputs) -> Health:
        return Health(True, f"{self.name} creates nothing outside innominatus; nothing to check")  # type: ignore[attr-defined]

    async def drift(self, ctx, state) -> Drift:
        return Drift(True, "")


# ---------------------------------------------------------------------------------------------
# Helpers


def generate_password(length: int = 32) -> str:
    """A random password of letters and digits (no character needs quoting in a URL or shell)."""
    return "".join(secrets.choice(_PASSWORD_ALPHABET) for _ in range(length))


def short_hash(text: str, length: int = 8) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def sql_name(resource_id: str, prefix: str = "", max_len: int = 63) -> str:
    """A PostgreSQL-safe identifier derived from ``resource_id``: ``checkout-dev-db`` -> ``checkout_dev_db``.

    Lower-case letters, digits and ``_``; starts with a letter or ``_``; never starts with the
    reserved ``pg_``; at most ``max_len`` bytes (longer names keep a hash of the full id, so two
    long ids sharing their first 54 characters still differ).
    """
    name = re.sub(r"[^a-z0-9_]+", "_", (prefix + resource_id).lower())
    name = re.sub(r"_+", "_", name).strip("_")
    if not name or not (name[0].isalpha() or name[0] == "_") or name.startswith("pg_"):
        name = "r_" + name
    if len(name) > max_len:
        name = name[: max_len - 9].rstrip("_") + "_" + short_hash(prefix + resource_id)
    return name


def dns_label(text: str, max_len: int = 63) -> str:
    """An RFC 1123 label from ``text``: lower-case letters, digits and ``-``, at most 63 characters."""
    label = re.sub(r"[^a-z0-9-]+", "-", text.lower())
    label = re.sub(r"-+", "-", label).strip("-")
    if not label:
        label = "r-" + short_hash(text)
    if len(label) > max_len:
        label = label[: max_len - 9].rstrip("-") + "-" + short_hash(text)
    return label


_HOSTNAME_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


def hostname_problem(host: Any, *, allow_wildcard: bool = False) -> str | None:
    """Why ``host`` is not an RFC 1123 hostname, or ``None`` when it is one."""
    if not isinstance(host, str) or not host:
        return "must be a non-empty hostname"
    name = host[2:] if allow_wildcard and host.startswith("*.") else host
    if len(host) > 253:
        return f"{host!r} is longer than 253 characters"
    for label in name.split("."):
        if not _HOSTNAME_LABEL.match(label):
            return (
                f"{host!r} is not an RFC 1123 hostname (labels of 1-63 lower-case letters, digits "
                "and '-', not starting or ending with '-')"
            )
    return None


def scrub(text: str, *secret_values: str | None) -> str:
    """``text`` without the given secrets and without the password of any URL in it."""
    for value in secret_values:
        if value and len(value) >= 4:
            text = text.replace(value, REDACTED)
    return re.sub(r"(://[^/\s:@]*:)[^@\s/]+@", r"\1" + REDACTED + "@", text)


def error_text(exc: BaseException, *secret_values: str | None) -> str:
    """One line describing ``exc``, scrubbed of secrets."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return scrub(text, *secret_values)


def scram_sha256_verifier(password: str, *, salt: bytes | None = None, iterations: int = 4096) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL stores for ``password`` (RFC 5802 / RFC 7677).

    Sending the verifier instead of the password means the plaintext never reaches the server,
    its statement log or pg_stat_statements. ``password`` must be ASCII (SASLprep is then the
    identity), which :func:`generate_password` guarantees.
    """
    salt = salt if salt is not None else os.urandom(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    b64 = lambda raw: base64.b64encode(raw).decode()  # noqa: E731
    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def resource_label(ctx: ProvisionContext) -> str:
    """``<app>-<env>-<id>`` as one DNS label; the id is used as is when it already starts with ``<app>-<env>-``."""
    head = "-".join(p for p in (ctx.application, ctx.environment) if p)
    rid = ctx.resource_id
    full = rid if not head or rid.lower().startswith(head.lower() + "-") or rid.lower() == head.lower() else f"{head}-{rid}"
    return dns_label(full)


def require_config(ctx: ProvisionContext, key: str, driver: str, example: str) -> Any:
    value = (ctx.config or {}).get(key)
    if value in (None, ""):
        raise ProvisionError(
            f"the {driver} driver of resource {ctx.resource_id} needs config.{key} in its resource "
            f"definition (e.g. {example})"
            + (f"; the built-in definition reads it from INNOMINATUS_{driver.upper()}_ADMIN_URL"
               if key == "admin_url" and driver in ("postgres", "redis") else ""),
            retryable=False,
            reason="DRIVER_MISCONFIGURED",
        )
    return value


__all__ = [
    "Driver",
    "Drift",
    "Health",
    "NoopChecks",
    "ProvisionContext",
    "ProvisionError",
    "ProvisionResult",
    "dns_label",
    "error_text",
    "generate_password",
    "hostname_problem",
    "resource_label",
    "scram_sha256_verifier",
    "scrub",
    "sql_name",
]
