"""Approval settings of environments: whether a deployment waits at an approval gate and who
may decide it.

Approvers are written in the engine's approver form (innominatus.engine.operations
``is_approver``), restricted to its explicit kinds so an entry means one thing:
``role:<role>``, ``user:<username>`` or ``team:<team>``. The engine's bare names (matching a
role, user or team alike) and its ``group:`` alias are refused here with the explicit form to
write instead. The deploy run's inputs carry the settings (``approval``) and the engine's
deploy workflow builds its ``approve`` step from them.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any, Iterable

from innominatus.identity.v1 import identity_pb2
from innominatus.kit.errors import FieldViolation, InvalidArgument

# Role names as the identity service stores them and tokens carry them: ROLE_PLATFORM_ENGINEER
# -> "platform-engineer". Derived from the proto so a new role is known here without an edit.
KNOWN_ROLES: tuple[str, ...] = tuple(
    name.removeprefix("ROLE_").lower().replace("_", "-")
    for name, value in identity_pb2.Role.items() if value != identity_pb2.ROLE_UNSPECIFIED
)
APPROVER_KINDS = ("role", "user", "team")
# Who decided a production deployment's gate before environments had settings (and still does
# by default): platform engineers and admins.
DEFAULT_PRODUCTION_APPROVERS: tuple[str, ...] = ("role:platform-engineer", "role:admin")
# User and team names, as the identity service accepts them.
_NAME = re.compile(r"[a-z][a-z0-9-]{1,62}")
MAX_APPROVERS = 50
EXAMPLE = "role:platform-engineer, user:alice or team:payments"


@dataclass(frozen=True)
class Approval:
    required: bool
    approvers: tuple[str, ...]

    def as_inputs(self) -> dict[str, Any]:
        """What the deploy run's inputs carry (``inputs.approval``)."""
        return {"required": self.required, "approvers": list(self.approvers)}


def default_approval(kind: str) -> Approval:
    """The settings an environment of type ``kind`` gets when nothing is said."""
    if kind == "production":
        return Approval(True, DEFAULT_PRODUCTION_APPROVERS)
    return Approval(False, ())


def approval_of(row) -> Approval:
    """The settings of an ``environments`` row. A row without approvers (written by hand, or
    before the column existed and outside the migration's backfill) gets its type's defaults."""
    if row.approvers is None:
        return default_approval(row.type)
    return Approval(bool(row.requires_approval), tuple(row.approvers))


def etag_of(row) -> str:
    """AIP-154 etag of an environment: changes whenever its settings are written."""
    approval = approval_of(row)
    stamp = row.updated_at.isoformat() if getattr(row, "updated_at", None) else ""
    payload = json.dumps([row.name, row.type, approval.required, list(approval.approvers), stamp])
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _problem(entry: str) -> str | None:
    """Why ``entry`` is not an approver this service stores, with what to write instead."""
    kind, sep, value = entry.partition(":")
    if not sep:
        if entry in KNOWN_ROLES:
            return f"{entry!r} has no kind: write role:{entry}"
        return f"{entry!r} has no kind: write role:<role>, user:<username> or team:<team> (e.g. user:{entry})" \
            if _NAME.fullmatch(entry) else f"{entry!r} is not an approver: write {EXAMPLE}"
    if kind == "group":
        return f"{entry!r}: write team:{value} (group: is an alias the engine accepts; store team:)"
    if kind not in APPROVER_KINDS:
        return f"{entry!r}: unknown kind {kind!r}: use role:, user: or team: (e.g. {EXAMPLE})"
    if kind == "role":
        if value not in KNOWN_ROLES:
            return f"{entry!r}: unknown role {value!r}: choose {', '.join(KNOWN_ROLES)}"
        return None
    if not _NAME.fullmatch(value):
        what = "username" if kind == "user" else "team name"
        return f"{entry!r}: {value!r} is not a {what}: lowercase letters, digits and '-', starting with a letter"
    return None


def check_approval(required: bool, approvers: Iterable[str], field: str = "environment.approvers") -> Approval:
    """Validate and normalise approval settings (duplicates dropped, order kept); every problem
    is reported at once as a field violation naming the entry."""
    entries = [str(a).strip() for a in approvers]
    violations = [FieldViolation(f"{field}[{i}]", why) for i, entry in enumerate(entries)
                  if (why := _problem(entry)) is not None]
    unique = tuple(dict.fromkeys(entries))
    if len(unique) > MAX_APPROVERS:
        violations.append(FieldViolation(field, f"at most {MAX_APPROVERS} approvers; name a team instead"))
    if required and not unique:
        violations.append(FieldViolation(
            field, f"approval is required, so name at least one approver (e.g. {EXAMPLE}), "
                   "or set requires_approval to false"))
    if violations:
        raise InvalidArgument(
            f"{violations[0].field}: {violations[0].description}"
            + (f" (and {len(violations) - 1} more)" if len(violations) > 1 else ""),
            reason="INVALID_APPROVERS", violations=violations)
    return Approval(required, unique)


__all__ = ["APPROVER_KINDS", "Approval", "DEFAULT_PRODUCTION_APPROVERS", "KNOWN_ROLES", "approval_of",
           "check_approval", "default_approval", "etag_of"]
