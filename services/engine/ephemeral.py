"""Ephemeral environments: a TTL recorded with the run, a teardown started when it passes.

A golden path is *ephemeral* when its ``spec.variables`` say so::

    variables:
      ephemeral: true        # runs of this path expire
      max_ttl: 24h           # the longest TTL a run may ask for
      teardown: undeploy-app # the golden path that removes what the run created

and it declares a ``ttl`` param (a duration such as ``30m``, ``4h``). Starting such a run
records a row in ``ephemeral_environments`` (in the same transaction as the run: no run
without its expiry) with ``expires_at = now + ttl``.

:class:`Sweeper` is a background task of every engine process. Every few seconds it claims
the expired rows (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so several engines never start
two teardowns of one environment) and, in one transaction, creates the teardown run -- the
params of the original run that the teardown path declares, ``request_id
"ephemeral-teardown:<run id>"`` so it is created once -- and marks the row ``tearing_down``.
Later passes mark it ``torn_down`` or ``teardown_failed`` once the teardown run has finished.
Everything is in the database: an engine restarted after the TTL passed still cleans up.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

from sqlalchemy import select, update

from innominatus.engine import catalog_models, models
from innominatus.engine.definition import ParamsError, bind_params, parse_duration
from innominatus.engine.model import WorkflowDef
from innominatus.kit import times
from innominatus.kit.logs import get_logger

log = get_logger(__name__)

envs_t = catalog_models.ephemeral_environments
ACTIVE, TEARING_DOWN, TORN_DOWN, TEARDOWN_FAILED = "active", "tearing_down", "torn_down", "teardown_failed"
DEFAULT_TTL = 3600.0
DEFAULT_MAX_TTL = 24 * 3600.0


def is_ephemeral(workflow: WorkflowDef) -> bool:
    return bool(workflow.variables.get("ephemeral"))


def ttl_of(workflow: WorkflowDef, params: dict[str, Any]) -> float:
    """The run's TTL in seconds, checked against ``vars.max_ttl``; ParamsError otherwise."""
    try:
        ttl = parse_duration(params.get("ttl", DEFAULT_TTL))
    except ValueError as exc:
        raise ParamsError(workflow.name, [("ttl", str(exc))]) from None
    try:
        ceiling = parse_duration(workflow.variables.get("max_ttl", DEFAULT_MAX_TTL))
    except ValueError:
        ceiling = DEFAULT_MAX_TTL
    if ttl <= 0:
        raise ParamsError(workflow.name, [("ttl", "must be longer than zero")])
    if ttl > ceiling:
        raise ParamsError(workflow.name, [("ttl", f"{params.get('ttl')} is longer than the maximum "
                                                  f"{workflow.variables.get('max_ttl', '24h')}")])
    return ttl


def teardown_of(workflow: WorkflowDef) -> str:
    return str(workflow.variables.get("teardown") or "")


async def record(session, *, run_id: str, workflow: WorkflowDef, params: dict, application: str,
                 environment: str, ttl: float) -> dt.datetime:
    """Record the environment a run creates and its expiry, in the run's transaction.
    Idempotent per run (a repeated request_id returns the first expiry)."""
    existing = (await session.execute(select(envs_t.c.expires_at).where(envs_t.c.run_id == run_id))).scalar_one_or_none()
    if existing is not None:
        return times.utc(existing)
    now = times.now()
    expires = now + dt.timedelta(seconds=ttl)
    await session.execute(envs_t.insert().values(
        run_id=run_id, golden_path=workflow.name, version=workflow.version, application=application or "",
        environment=environment or "", params=params, teardown=teardown_of(workflow), expires_at=expires,
        state=ACTIVE, error="", created_at=now, updated_at=now))
    return expires


def teardown_params(teardown: WorkflowDef, params: dict) -> dict:
    """The original run's params the teardown path declares."""
    declared = {p.name for p in teardown.params}
    return {k: v for k, v in params.items() if k in declared}


class Sweeper:
    """Starts the teardown of expired ephemeral environments; one per engine process."""

    def __init__(self, db, scheduler, catalog, *, interval: float = 5.0) -> None:
        self.db = db
        self.scheduler = scheduler
        self.catalog = catalog
        self.interval = interval
        self._task: asyncio.Task | None = None
        self._stopping = False

    def start(self) -> None:
        self._stopping = False
        self._task = asyncio.create_task(self._loop(), name="engine-ephemeral-sweeper")

    async def stop(self) -> None:
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001
                pass
            self._task = None

    async def _loop(self) -> None:
        while not self._stopping:
            try:
                await self.sweep()
            except Exception:  # noqa: BLE001 - a bad database moment must not end the sweeper
                log.exception("ephemeral sweep failed; retrying")
            await asyncio.sleep(self.interval)

    async def sweep(self) -> list[str]:
        """One pass: start teardowns that are due, settle finished ones. Returns the ids of
        the teardown runs started."""
        started = await self._start_due()
        await self._settle()
        if started:
            self.scheduler.wakeup.set()
        return started

    async def _start_due(self) -> list[str]:
        now = times.now()
        started: list[str] = []
        async with self.db.transaction() as s:
            query = (select(envs_t).where((envs_t.c.state == ACTIVE) & (envs_t.c.expires_at <= now))
                     .order_by(envs_t.c.expires_at).limit(50))
            if self.db.is_postgres:
                query = query.with_for_update(skip_locked=True)
            for row in (await s.execute(query)).all():
                try:
                    teardown, _versions = await self.catalog.get(row.teardown)
                    params = bind_params(teardown, teardown_params(teardown, dict(row.params or {})))
                except Exception as exc:  # noqa: BLE001 - recorded on the row; nothing to retry blindly
                    message = getattr(exc, "message", None) or str(exc)
                    log.error("cannot tear down an ephemeral environment", run=row.run_id, error=message)
                    await s.execute(update(envs_t).where(envs_t.c.run_id == row.run_id).values(
                        state=TEARDOWN_FAILED, error=f"teardown {row.teardown!r}: {message}", updated_at=now))
                    continue
                run_id = await self.scheduler.create_run(
                    s, teardown, params, application=row.application, environment=row.environment,
                    creator="engine:ephemeral-ttl", request_id=f"ephemeral-teardown:{row.run_id}")
                await s.execute(update(envs_t).where(envs_t.c.run_id == row.run_id).values(
                    state=TEARING_DOWN, teardown_run_id=run_id, updated_at=now))
                log.info("ephemeral environment expired; teardown started", run=row.run_id, teardown_run=run_id,
                         golden_path=row.golden_path, environment=row.environment)
                started.append(run_id)
        return started

    async def _settle(self) -> None:
        runs_t = models.runs
        async with self.db.transaction() as s:
            rows = (await s.execute(
                select(envs_t.c.run_id, runs_t.c.state, runs_t.c.error)
                .join(runs_t, runs_t.c.id == envs_t.c.teardown_run_id)
                .where((envs_t.c.state == TEARING_DOWN) & runs_t.c.state.in_(["SUCCEEDED", "FAILED", "CANCELLED"]))
            )).all()
            now = times.now()
            for row in rows:
                done = row.state == "SUCCEEDED"
                await s.execute(update(envs_t).where(envs_t.c.run_id == row.run_id).values(
                    state=TORN_DOWN if done else TEARDOWN_FAILED, error="" if done else (row.error or row.state),
                    updated_at=now))


async def environments(db, run_id: str | None = None) -> list:
    """The recorded ephemeral environments (all, or of one run)."""
    query = select(envs_t).order_by(envs_t.c.created_at)
    if run_id:
        query = query.where(envs_t.c.run_id == run_id)
    async with db.transaction() as s:
        return (await s.execute(query)).all()
