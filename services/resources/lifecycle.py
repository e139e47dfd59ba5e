"""The state machine of a resource instance.

::

    REQUESTED ──> PROVISIONING ──> ACTIVE ──> UPDATING ──> ACTIVE
                       │             │  ^         │
                       │             v  │         │
                       │          DEGRADED ───────┤ (re-provision repairs it)
                       v             │            v
                    FAILED <─────────┴──────── (any working state)
                       │
                       └──> PROVISIONING / DEPROVISIONING ──> DELETED ──> REQUESTED (claimed again)

``ALLOWED`` is the whole table; :func:`transition` enforces it and inserts one row into
``resource_transitions`` in the same transaction as the state change, so the history and the
state never disagree. Reasons are written by the resources service from driver messages, which
never contain a secret.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update

from innominatus.kit.errors import FailedPrecondition, NotFound
from innominatus.kit.times import now
from innominatus.resources import models

REQUESTED = "REQUESTED"
PROVISIONING = "PROVISIONING"
ACTIVE = "ACTIVE"
UPDATING = "UPDATING"
DEGRADED = "DEGRADED"
DEPROVISIONING = "DEPROVISIONING"
FAILED = "FAILED"
DELETED = "DELETED"

STATES = (REQUESTED, PROVISIONING, ACTIVE, UPDATING, DEGRADED, DEPROVISIONING, FAILED, DELETED)

# from -> the states it may move to
ALLOWED: dict[str, frozenset[str]] = {
    REQUESTED: frozenset({PROVISIONING, DEPROVISIONING, FAILED, DELETED}),
    PROVISIONING: frozenset({ACTIVE, FAILED}),
    ACTIVE: frozenset({UPDATING, DEGRADED, DEPROVISIONING, FAILED}),
    UPDATING: frozenset({ACTIVE, FAILED}),
    DEGRADED: frozenset({ACTIVE, UPDATING, DEPROVISIONING, FAILED}),
    DEPROVISIONING: frozenset({DELETED, FAILED}),
    FAILED: frozenset({PROVISIONING, DEPROVISIONING, DELETED}),
    DELETED: frozenset({REQUESTED}),
}

# States in which something exists (or may exist) outside innominatus.
PROVISIONED = frozenset({ACTIVE, UPDATING, DEGRADED})

REASON_LIMIT = 2000


class IllegalTransition(FailedPrecondition):
    default_reason = "ILLEGAL_RESOURCE_TRANSITION"


def allowed(from_state: str, to_state: str) -> bool:
    return to_state in ALLOWED.get(from_state, frozenset())


def check(resource_id: str, from_state: str, to_state: str) -> None:
    if not allowed(from_state, to_state):
        targets = ", ".join(sorted(ALLOWED.get(from_state, ()))) or "nothing"
        raise IllegalTransition(
            f"resource resources/{resource_id} cannot go from {from_state} to {to_state} "
            f"(from {from_state} it may go to: {targets})",
            metadata={"from": from_state, "to": to_state},
        )


async def load_for_update(session, resource_id: str):
    """The instance's row, locked until the transaction ends (NotFound when missing)."""
    table = models.resources
    row = (
        await session.execute(select(table).where(table.c.id == resource_id).with_for_update())
    ).one_or_none()
    if row is None:
        raise NotFound(f"resource 'resources/{resource_id}' not found", reason="RESOURCE_NOT_FOUND")
    return row


async def transition(
    session,
    resource_id: str,
    to_state: str,
    *,
    reason: str = "",
    actor: str = "",
    expect: set[str] | frozenset[str] | None = None,
    values: dict[str, Any] | None = None,
) -> str:
    """Move the instance to ``to_state`` and record it; returns the state it came from.

    Locks the row, checks ``expect`` (the states the caller believes it is in) and the table,
    updates state, reason, ``values`` and ``updated_at``, and inserts the transition row, all in
    ``session``'s transaction.
    """
    row = await load_for_update(session, resource_id)
    from_state = row.state
    if expect is not None and from_state not in expect:
        raise IllegalTransition(
            f"resource resources/{resource_id} is {from_state}, expected {' or '.join(sorted(expect))}",
            metadata={"from": from_state, "to": to_state},
        )
    check(resource_id, from_state, to_state)
    reason = (reason or "")[:REASON_LIMIT]
    stamp = now()
    await session.execute(
        update(models.resources)
        .where(models.resources.c.id == resource_id)
        .values(state=to_state, state_reason=reason, updated_at=stamp, **(values or {}))
    )
    await session.execute(
        models.resource_transitions.insert().values(
            resource_id=resource_id,
            from_state=from_state,
            to_state=to_state,
            reason=reason,
            actor=actor or "",
            created_at=stamp,
        )
    )
    return from_state


async def record(session, resource_id: str, from_state: str, to_state: str, *, reason: str = "", actor: str = "") -> None:
    """Record a state the instance was created in (no previous row to lock)."""
    await session.execute(
        models.resource_transitions.insert().values(
            resource_id=resource_id,
            from_state=from_state,
            to_state=to_state,
            reason=(reason or "")[:REASON_LIMIT],
            actor=actor or "",
            created_at=now(),
        )
    )


async def history(session, resource_ids: list[str]) -> dict[str, list]:
    """Transitions of the given instances, oldest first."""
    if not resource_ids:
        return {}
    table = models.resource_transitions
    rows = (
        await session.execute(
            select(table).where(table.c.resource_id.in_(resource_ids)).order_by(table.c.resource_id, table.c.id)
        )
    ).all()
    out: dict[str, list] = {rid: [] for rid in resource_ids}
    for row in rows:
        out[row.resource_id].append(row)
    return out
