"""The health monitor: every resource instance is checked on its own, not only when asked.

Started by the resources service's ``on_start`` hook, stopped (cancelled) by ``on_stop``.
Every ``INNOMINATUS_RESOURCES_HEALTH_INTERVAL`` seconds (default 60, ``0`` turns it off) each
``ACTIVE`` and ``DEGRADED`` instance gets the same check as ``CheckResource``
(:func:`innominatus.resources.health.check_instance`: same health and drift checks, same
transitions), at most ``INNOMINATUS_RESOURCES_HEALTH_CONCURRENCY`` (default 4) at once.

Several resources processes (HA) share the work instead of each checking everything:

- an instance is *due* when its ``last_checked_at`` is older than the interval (or unset). A
  worker claims one due instance with ``SELECT … FOR UPDATE SKIP LOCKED`` and stamps
  ``last_checked_at`` in the same short transaction, so another process's claim skips it
  while it is being claimed and finds it not due afterwards;
- the check itself runs under the instance's lock (the PostgreSQL advisory lock that
  ``ProvisionResource`` / ``DeprovisionResource`` take, tried without waiting): an instance
  being provisioned, or checked by another process whose check outlasted the interval, is
  skipped this round instead of checked twice at once.

One failing check (server unreachable, a crashed driver, no matching definition any more)
is logged and counted and the loop goes on; so does a failed pass (database unreachable).

The monitor is the resources service itself, not a caller: its state changes do not go
through the policy gate (there is no request to decide), but each one is recorded like any
other — a ``resource_transitions`` row with actor ``service:resources (health monitor)`` —
and gets an audit event (``resource.degraded`` / ``resource.recovered``, actor
``service:resources``) written to the outbox in the same transaction as the change.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import math
import os
import uuid
from contextlib import asynccontextmanager
from typing import Mapping

from google.protobuf import timestamp_pb2
from sqlalchemy import func, select, text, update

from innominatus.common.v1 import audit_event_pb2
from innominatus.kit import times
from innominatus.kit.errors import InnominatusError
from innominatus.kit.logs import get_logger
from innominatus.resources import health, lifecycle, models

log = get_logger("innominatus.resources.monitor")

ENV_INTERVAL = "INNOMINATUS_RESOURCES_HEALTH_INTERVAL"
ENV_CONCURRENCY = "INNOMINATUS_RESOURCES_HEALTH_CONCURRENCY"
DEFAULT_INTERVAL = 60.0
DEFAULT_CONCURRENCY = 4
# A check that hangs (a driver without its own timeouts) must not hold a worker forever; the
# built-in drivers give up connecting after 5 s.
CHECK_TIMEOUT_SECONDS = 30.0

# Who the monitor's changes are recorded as: the transition history names the monitor, the
# audit event the service ("service:<name>" for a platform service acting alone).
TRANSITION_ACTOR = "service:resources (health monitor)"
AUDIT_ACTOR = "service:resources"
TRIGGER = "monitor"

TASK_NAME = "resources-health-monitor"
STATE_KEY = "resources.health_monitor"  # Runtime.state key of the running monitor


@dataclasses.dataclass(frozen=True)
class MonitorSettings:
    interval: float  # seconds between two checks of one instance; 0: no monitor
    concurrency: int  # checks one process runs at once

    @property
    def enabled(self) -> bool:
        return self.interval > 0


def settings_from_env(environ: Mapping[str, str] | None = None) -> MonitorSettings:
    """Read and validate the monitor's settings; a bad value stops the start-up with
    ``configuration error: …`` (like every other setting, :mod:`innominatus.kit.config`)."""
    env = os.environ if environ is None else environ
    raw = (env.get(ENV_INTERVAL) or "").strip()
    interval = DEFAULT_INTERVAL
    if raw:
        try:
            interval = float(raw)
        except ValueError:
            interval = math.nan
        if not math.isfinite(interval) or interval < 0:
            raise SystemExit(
                f"configuration error: {ENV_INTERVAL}={raw!r} is not a number of seconds ≥ 0; set it to the "
                f"seconds between two health checks of a resource instance (e.g. 60) or to 0 to turn the "
                f"health monitor off"
            )
    raw = (env.get(ENV_CONCURRENCY) or "").strip()
    concurrency = DEFAULT_CONCURRENCY
    if raw:
        try:
            concurrency = int(raw)
        except ValueError:
            concurrency = 0
        if concurrency < 1:
            raise SystemExit(
                f"configuration error: {ENV_CONCURRENCY}={raw!r} is not a whole number ≥ 1; set it to how many "
                f"health checks one resources process may run at once (e.g. {DEFAULT_CONCURRENCY})"
            )
    return MonitorSettings(interval=interval, concurrency=concurrency)


def _event(outcome: health.CheckOutcome) -> audit_event_pb2.AuditEvent:
    recovered = outcome.to_state == lifecycle.ACTIVE
    event = audit_event_pb2.AuditEvent(
        id=str(uuid.uuid4()),
        service="resources",
        # No RPC: the event type stands where a method name would.
        method="resource.recovered" if recovered else "resource.degraded",
        permission="resources.check",
        actor=AUDIT_ACTOR,
        outcome=audit_event_pb2.AUDIT_OUTCOME_SUCCEEDED,
        # Driver messages, scrubbed of passwords by the drivers.
        reasons=[outcome.transition_reason],
        resource_type="resource",
        resource_name=f"resources/{outcome.resource_id}",
        occur_time=timestamp_pb2.Timestamp(),
    )
    event.occur_time.GetCurrentTime()
    event.details.update(
        {
            "from": outcome.from_state,
            "to": outcome.to_state,
            "healthy": outcome.healthy,
            "drifted": outcome.drifted,
            "trigger": "health monitor",
        }
    )
    return event


def _report(rid: str, exc: BaseException) -> None:
    """Log a check that failed; the loop goes on with the next instance."""
    if isinstance(exc, InnominatusError):  # typed errors say what and how to fix, never a secret
        log.warning("resource.health_check_failed", resource=rid, reason=exc.reason, error=exc.message)
    else:  # a crashed driver or the database: its text may hold anything
        log.error("resource.health_check_crashed", resource=rid, error_type=type(exc).__name__)


class HealthMonitor:
    def __init__(self, runtime, servicer, settings: MonitorSettings) -> None:
        self.runtime = runtime
        self.servicer = servicer
        self.settings = settings
        self._task: asyncio.Task | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=TASK_NAME)
        log.info("resources health monitor started", interval=self.settings.interval, concurrency=self.settings.concurrency)

    async def stop(self) -> None:
        """Cancel the loop and any check in flight (their transactions roll back, their locks
        are released) and wait for it to end."""
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        log.info("resources health monitor stopped")

    async def _run(self) -> None:
        interval = self.settings.interval
        while True:
            try:
                await self.run_once()
                wait = await self._until_next_due()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - e.g. the database is unreachable: try again later
                log.exception("resources health monitor pass failed; will retry", retry_in=interval)
                wait = interval
            await asyncio.sleep(wait)

    async def run_once(self) -> None:
        """One pass: count instances by state, then check every instance due now, at most
        ``concurrency`` at once. Instances checked in this pass are not due again before it
        ends, so a pass always ends."""
        await self._count_states()
        cutoff = times.now() - dt.timedelta(seconds=self.settings.interval)
        async with asyncio.TaskGroup() as workers:
            for _ in range(self.settings.concurrency):
                workers.create_task(self._worker(cutoff))

    async def _worker(self, cutoff: dt.datetime) -> None:
        while (rid := await self._claim_due(cutoff)) is not None:
            await self._check_one(rid)

    async def _claim_due(self, cutoff: dt.datetime) -> str | None:
        """Claim the instance checked longest ago whose last check is older than ``cutoff``."""
        table = models.resources
        database = self.runtime.db
        async with database.transaction() as session:
            query = (
                select(table.c.id)
                .where(
                    table.c.state.in_(sorted(health.CHECKED_STATES))
                    & (table.c.last_checked_at.is_(None) | (table.c.last_checked_at <= cutoff))
                )
                .order_by(table.c.last_checked_at.asc().nulls_first(), table.c.id)
                .limit(1)
            )
            if database.is_postgres:
                query = query.with_for_update(skip_locked=True)
            rid = (await session.execute(query)).scalar_one_or_none()
            if rid is not None:
                await session.execute(update(table).where(table.c.id == rid).values(last_checked_at=times.now()))
        return rid

    async def _until_next_due(self) -> float:
        """Seconds until the next instance is due (at most the interval; never a busy loop)."""
        interval = self.settings.interval
        table = models.resources
        async with self.runtime.db.transaction() as session:
            never, oldest = (
                await session.execute(
                    select(
                        func.count().filter(table.c.last_checked_at.is_(None)),
                        func.min(table.c.last_checked_at),
                    ).where(table.c.state.in_(sorted(health.CHECKED_STATES)))
                )
            ).one()
        floor = interval / 10
        if never:
            return floor
        if oldest is None:
            return interval
        due_in = (times.utc(oldest) + dt.timedelta(seconds=interval) - times.now()).total_seconds()
        return min(interval, max(floor, due_in))

    async def _count_states(self) -> None:
        table = models.resources
        async with self.runtime.db.transaction() as session:
            counts = dict((await session.execute(select(table.c.state, func.count()).group_by(table.c.state))).all())
        for state in lifecycle.STATES:
            health.INSTANCES.labels(state).set(counts.get(state, 0))

    async def _check_one(self, rid: str) -> None:
        """Check one instance; whatever goes wrong is logged and counted, never raised."""
        try:
            async with self._try_lock(rid) as held:
                if not held:  # being provisioned, or checked by another process right now
                    health.count(TRIGGER, health.SKIPPED)
                    return
                async with self.runtime.db.transaction() as session:
                    row = await session.execute(select(models.resources).where(models.resources.c.id == rid))
                    row = row.one_or_none()
                if row is None or row.state not in health.CHECKED_STATES:
                    health.count(TRIGGER, health.SKIPPED)
                    return
                try:
                    async with asyncio.timeout(CHECK_TIMEOUT_SECONDS) as deadline:
                        # The service acting on its own: no policy decision is asked for (there
                        # is no caller to decide about); the change is recorded and audited.
                        outcome = await health.check_instance(
                            self.servicer, row, actor=TRANSITION_ACTOR, trigger=TRIGGER, on_change=self._audit
                        )
                except TimeoutError as exc:
                    if deadline.expired():  # cancelled by us, so check_instance did not count it
                        health.count(TRIGGER, health.ERROR)
                        log.warning("resource.health_check_timed_out", resource=rid, timeout=CHECK_TIMEOUT_SECONDS)
                    else:  # a driver's own timeout, counted by check_instance
                        _report(rid, exc)
                    return
                except Exception as exc:  # noqa: BLE001 - counted by check_instance
                    _report(rid, exc)
                    return
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the lock or the row could not be had (database)
            health.count(TRIGGER, health.ERROR)
            _report(rid, exc)
            return
        if outcome.changed:
            log.info(
                "resource.health_changed", resource=rid, state_from=outcome.from_state, state_to=outcome.to_state,
                reason=outcome.transition_reason,
            )
            if self.runtime.outbox is not None:
                self.runtime.outbox.wakeup.set()  # ship the audit event now

    async def _audit(self, session, outcome: health.CheckOutcome) -> None:
        if self.runtime.outbox is not None:
            await self.runtime.outbox.add(session, _event(outcome))

    @asynccontextmanager
    async def _try_lock(self, rid: str):
        """The instance's lock, if nobody holds it: the same PostgreSQL advisory lock as
        ``ResourcesServicer._locked`` (same key), or its process-local lock on SQLite."""
        database = self.runtime.db
        if database.is_postgres:
            key = f"innominatus:resource:{rid}"
            async with database.engine.connect() as conn:
                try:
                    held = (await conn.execute(text("SELECT pg_try_advisory_lock(hashtext(:k))"), {"k": key})).scalar_one()
                    # End the transaction: the (session) lock stays, no "idle in transaction".
                    await conn.commit()
                except BaseException:
                    # Cancelled after the server took the lock: a pooled connection must never
                    # keep it, so this one is thrown away.
                    await conn.invalidate()
                    raise
                try:
                    yield bool(held)
                finally:
                    if held:
                        try:
                            await conn.execute(text("SELECT pg_advisory_unlock(hashtext(:k))"), {"k": key})
                            await conn.commit()
                        except BaseException:  # noqa: BLE001 - closing the connection releases it too
                            await conn.invalidate()
                            raise
        else:
            locks = self.servicer._local_locks
            lock = locks.get(rid)
            if lock is None:
                lock = locks[rid] = asyncio.Lock()
            if lock.locked():
                yield False
                return
            async with lock:
                yield True


def start(runtime, servicer, settings: MonitorSettings) -> HealthMonitor | None:
    """Start the monitor (``on_start``); ``None`` when the interval is 0."""
    if not settings.enabled:
        log.info(f"resources health monitor off ({ENV_INTERVAL}=0)")
        return None
    monitor = HealthMonitor(runtime, servicer, settings)
    runtime.state[STATE_KEY] = monitor
    monitor.start()
    return monitor


async def stop(runtime) -> None:
    """Stop the monitor (``on_stop``), if one runs."""
    monitor = runtime.state.pop(STATE_KEY, None)
    if monitor is not None:
        await monitor.stop()
