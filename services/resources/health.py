"""One health and drift check of a resource instance, and the state change it calls for.

The single implementation behind ``CheckResource`` (someone asks) and the health monitor
(:mod:`innominatus.resources.monitor`, the platform notices on its own), so both make exactly
the same transitions:

- the provisioner's health check (really connects with the instance's own credentials) and
  drift detection run first, outside any row lock;
- then, with the instance's row locked: drift or an unhealthy result moves an ``ACTIVE``
  instance to ``DEGRADED`` with the reason (a ``DEGRADED`` one only gets the new reason);
  healthy and undrifted moves a ``DEGRADED`` instance back to ``ACTIVE``. A drift check that
  cannot reach its server reports "drift unknown", which is not drift: the health check
  reports reachability.
- If the instance changed state while it was being checked (re-provisioned, deprovisioned),
  what the check found is about a state that no longer exists: nothing is changed.

Also the Prometheus metrics of checks (both triggers) and of instances by state.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Awaitable, Callable

from prometheus_client import Counter, Gauge, Histogram
from sqlalchemy import update

from innominatus.kit.logs import get_logger
from innominatus.kit.times import now
from innominatus.resources import lifecycle, models

log = get_logger("innominatus.resources.health")

# The states in which an instance is checked.
CHECKED_STATES = frozenset({lifecycle.ACTIVE, lifecycle.DEGRADED})

# Outcomes of one check (the `outcome` label).
HEALTHY, UNHEALTHY, ERROR, SKIPPED = "healthy", "unhealthy", "error", "skipped"

CHECKS = Counter(
    "innominatus_resource_health_checks_total",
    "Health and drift checks of resource instances, by trigger (monitor, api) and outcome "
    "(healthy, unhealthy: unhealthy or drifted, error: the check could not run, "
    "skipped: the instance was busy or changed while being checked).",
    ["trigger", "outcome"],
)
CHECK_DURATION = Histogram(
    "innominatus_resource_health_check_duration_seconds",
    "Time one health and drift check of a resource instance took, by trigger.",
    ["trigger"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
INSTANCES = Gauge(
    "innominatus_resource_instances",
    "Resource instances by state, as counted by the health monitor on each pass (the whole "
    "database: every resources replica reports the same numbers).",
    ["state"],
)


@dataclasses.dataclass(frozen=True)
class CheckOutcome:
    """What one check found and did."""

    resource_id: str
    healthy: bool
    drifted: bool
    # The answer's reason: the problems found, else the health check's own words, plus a
    # "drift unknown" note when drift could not be checked.
    reason: str
    # The reason recorded with a state change (and as status_reason).
    transition_reason: str
    from_state: str
    to_state: str  # == from_state when nothing changed
    stale: bool = False  # the instance changed while being checked: nothing was applied

    @property
    def changed(self) -> bool:
        return self.from_state != self.to_state

    @property
    def outcome(self) -> str:
        if self.stale:
            return SKIPPED
        return HEALTHY if self.healthy and not self.drifted else UNHEALTHY


# Called in the transaction of a state change, with that transaction's session (e.g. to write
# an audit event that commits or vanishes with the change).
OnChange = Callable[[Any, CheckOutcome], Awaitable[None]]


def count(trigger: str, outcome: str) -> None:
    CHECKS.labels(trigger, outcome).inc()


async def check_instance(
    servicer,
    row,
    *,
    actor: str,
    trigger: str,
    session=None,
    on_change: OnChange | None = None,
) -> CheckOutcome:
    """Check the ``ACTIVE`` / ``DEGRADED`` instance ``row`` and apply what the check calls for.

    ``servicer`` is the process's ``ResourcesServicer`` (it matches the resource definition and
    reads the secret store). The state change is made in ``session`` (CheckResource: the RPC's
    transaction, audited by the interceptor) or, without one, in a transaction of its own
    (the monitor). Errors of the check itself (no matching definition, a crashed driver) are
    raised after being counted; nothing is changed then.
    """
    started = time.monotonic()
    try:
        outcome = await _check(servicer, row, actor=actor, trigger=trigger, session=session, on_change=on_change)
    except Exception:
        count(trigger, ERROR)
        raise
    finally:
        CHECK_DURATION.labels(trigger).observe(time.monotonic() - started)
    count(trigger, outcome.outcome)
    return outcome


async def _check(servicer, row, *, actor, trigger, session, on_change) -> CheckOutcome:
    from innominatus.resources.drivers import ProvisionError  # noqa: PLC0415

    rid = row.id
    provisioner = await servicer._provisioner(row)
    ctx = servicer._context(row)
    state = dict(row.driver_state or {})
    try:
        secrets = await servicer._secrets(row)
    except Exception as exc:  # noqa: BLE001 - the health check then says what it misses
        secrets = {}
        log.warning("resource.check_secrets_unavailable", resource=rid, error_type=type(exc).__name__)
    health = await provisioner.health(ctx, state, secrets)
    drifted, drift_reason = False, ""
    try:
        drift = await provisioner.drift(ctx, state)
        drifted, drift_reason = not drift.ok, drift.reason
    except ProvisionError as exc:  # unknown is not drifted; the health check reports reachability
        drift_reason = f"drift unknown: {exc.message}"
    problems = [r for r in ((drift_reason if drifted else ""), ("" if health.ok else health.reason)) if r]
    reason = "; ".join(problems) if problems else (health.reason or "healthy")
    found = dict(resource_id=rid, healthy=health.ok, drifted=drifted)
    if session is not None:
        from_state, to_state, stale, recorded = await _apply(session, row, bool(problems), reason, actor, found, on_change)
    else:
        async with servicer.runtime.db.transaction() as own:
            from_state, to_state, stale, recorded = await _apply(own, row, bool(problems), reason, actor, found, on_change)
    # The monitor checks every instance every interval: its routine checks would drown the log
    # (its state changes are logged at info by the monitor).
    emit = log.debug if trigger == "monitor" else log.info
    emit(
        "resource.checked", resource=rid, healthy=health.ok, drifted=drifted, trigger=trigger,
        state=to_state, **({"changed_while_checked": True} if stale else {}),
    )
    answer = f"{reason}; {drift_reason}" if drift_reason and not drifted else reason
    return CheckOutcome(
        reason=answer, transition_reason=recorded, from_state=from_state, to_state=to_state, stale=stale, **found
    )


async def _apply(session, checked, problems: bool, reason: str, actor: str, found: dict, on_change):
    """The state change for what the check found; returns (from, to, stale, reason recorded)."""
    rid = checked.id
    current = await lifecycle.load_for_update(session, rid)
    # Every transition sets updated_at: a different one means the instance was re-provisioned
    # (or moved otherwise) while its old incarnation was being checked.
    if current.state not in CHECKED_STATES or current.updated_at != checked.updated_at:
        return current.state, current.state, True, ""
    to_state = current.state
    if problems:
        if current.state == lifecycle.ACTIVE:
            to_state = lifecycle.DEGRADED
            await lifecycle.transition(session, rid, to_state, reason=reason, actor=actor)
        elif current.state_reason != reason:
            await session.execute(
                update(models.resources).where(models.resources.c.id == rid).values(state_reason=reason[: lifecycle.REASON_LIMIT])
            )
    elif current.state == lifecycle.DEGRADED:
        to_state = lifecycle.ACTIVE
        reason = f"healthy again: {reason}"
        await lifecycle.transition(session, rid, to_state, reason=reason, actor=actor)
    await session.execute(update(models.resources).where(models.resources.c.id == rid).values(last_checked_at=now()))
    if to_state != current.state and on_change is not None:
        await on_change(
            session,
            CheckOutcome(reason=reason, transition_reason=reason, from_state=current.state, to_state=to_state, **found),
        )
    return current.state, to_state, False, reason
