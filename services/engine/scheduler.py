"""Durable execution of workflow runs.

Every state change is committed before it is acted on: a step is marked RUNNING (attempt
counted) in a committed transaction before its executor is called, and its result is
committed before anything depending on it is scheduled. A crash therefore never loses a
completed step and never hides an attempt that may have had effects.

Leases
    Workers claim *runs*: ``SELECT ... FOR UPDATE SKIP LOCKED`` (PostgreSQL; a plain SELECT
    on single-process SQLite) over runs that are unfinished, not paused, due
    (``wake_at <= now``) and not leased (no owner, or the lease expired), then a conditional
    ``UPDATE runs SET lease_owner = me ... WHERE lease_owner IS NULL OR lease_expires_at < now``
    whose rowcount must be 1. The holder (the run's *driver*) is the only writer of the run's
    step executions. Every transaction it commits starts with
    ``UPDATE runs SET lease_expires_at = ... WHERE id = :run AND lease_owner = :me`` (the
    fence: rowcount 0 = the lease was lost, roll back and stop) and updates each step row
    with ``WHERE state = :expected``. A heartbeat task extends the leases of every run the
    worker drives and of their RUNNING step rows; a worker that cannot heartbeat for a
    whole lease cancels its steps itself. When a worker dies, its leases expire and another
    worker claims the run: SUCCEEDED steps are never executed again; a step left RUNNING
    was interrupted and is retried under its retry policy with the same idempotency key.

Waiting is durable
    A retry's backoff is ``next_attempt_at`` on the step row; a run that has nothing running
    and only waits (backoff, approval, child run, pause) gives its lease back with
    ``wake_at`` set to when it is due (NULL = until someone approves, the child finishes,
    ...). Writers outside the driver (approve, reject, cancel, pause, resume, retry, a child
    run finishing) bump ``runs.event_seq`` and set ``wake_at``; the driver notices the bump
    (on its next commit or heartbeat) and reloads, and never releases a lease over an
    unseen bump, so no wake-up is lost.

Concurrency groups
    A top-level run may carry a ``concurrency_key`` (``"<application>/<environment>"`` for the
    built-in deploy; a workflow's ``spec.concurrency_group`` resolved when it starts). A PENDING
    run of a group is not claimed while another top-level run of the group is RUNNING or an
    older one (``created_at``, then ``id``) is PENDING: the group's runs go one at a time, oldest
    first. A cancel request lifts the wait, so the run can be claimed and cancelled. Child runs
    have no key: they run in their parent's turn (waiting for their own ancestor would never
    end). The check is in the claim's ``SELECT`` and again in its conditional ``UPDATE``, after
    a transaction-scoped advisory lock on the key: two workers deciding on one group at the same
    moment are serialised (the second sees the first's claim committed), whatever order the
    runs' creations committed in.

Sub-workflows
    A ``type: workflow`` step creates a child run in the pass's transaction, with its
    definition stored like a top-level run's. A built-in (``deploy``, ``undeploy``) is built
    from the step's inputs (``builtins``, default :func:`default_builtin`), and only from
    inputs the platform planned (:data:`TRUSTED_CHILD_INPUTS`); other names are looked up
    (``workflows``: the catalog).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import hashlib
import os
import random
import re
import socket
import tempfile
import time
import uuid
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from sqlalchemy import and_, delete, exists, false, func, insert, or_, select, update
from sqlalchemy import event as sa_event
from sqlalchemy.exc import IntegrityError

from innominatus.engine import models
from innominatus.engine.model import ParamDef, RetryPolicy, StepContext, StepDef, StepFailed, WorkflowDef
from innominatus.kit import times
from innominatus.kit.errors import FailedPrecondition, InvalidArgument, NotFound
from innominatus.kit.interpolation import PlaceholderError, lookup, split_reference, substitute
from innominatus.kit.logs import get_logger

log = get_logger(__name__)

# Run states
PENDING, RUNNING, SUCCEEDED, FAILED, CANCELLED = "PENDING", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED"
# Step states (besides PENDING, RUNNING, SUCCEEDED, FAILED, CANCELLED)
READY, SKIPPED, WAITING_APPROVAL, COMPENSATED = "READY", "SKIPPED", "WAITING_APPROVAL", "COMPENSATED"

RUN_TERMINAL = (SUCCEEDED, FAILED, CANCELLED)
STEP_DONE = (SUCCEEDED, SKIPPED, COMPENSATED)  # counts as done for dependents
STEP_FINAL = (SUCCEEDED, SKIPPED, COMPENSATED, FAILED, CANCELLED)

Evaluate = Callable[[str, dict], Any]

runs_t, steps_t, events_t = models.runs, models.step_executions, models.run_events


class ApprovalRequired(Exception):
    """Raised by an executor whose step waits for a human decision.

    The executors package defines its own; any exception class named ApprovalRequired is
    treated the same, so neither module has to import the other."""


class LeaseLost(Exception):
    pass


class _Conflict(Exception):
    """Someone else changed the run since the driver last loaded it: reload and go on."""


# --------------------------------------------------------------------------- definitions


def definition_to_json(definition: WorkflowDef) -> dict:
    return dataclasses.asdict(definition)


def _step_from_json(data: dict) -> StepDef:
    data = dict(data)
    data["retry"] = RetryPolicy(**{**data.get("retry", {}), "non_retryable": tuple(data.get("retry", {}).get("non_retryable", ()))})
    data["depends_on"] = tuple(data.get("depends_on", ()))
    data["on_failure"] = tuple(_step_from_json(s) for s in data.get("on_failure", ()))
    return StepDef(**data)


def definition_from_json(data: dict) -> WorkflowDef:
    data = dict(data)
    data["steps"] = tuple(_step_from_json(s) for s in data["steps"])
    data["params"] = tuple(ParamDef(**p) for p in data.get("params", ()))
    return WorkflowDef(**data)


def default_evaluate(expression: str, variables: dict) -> Any:
    """CEL through the definition package's expressions module (imported when first needed)."""
    from innominatus.engine import expressions  # noqa: PLC0415 - optional until it lands

    return expressions.evaluate(expressions.compile_expression(expression), variables)


def default_builtin(name: str, inputs: dict) -> WorkflowDef | None:
    """The engine's built-in workflow ``name`` built from a child run's inputs, as StartRun builds
    a top-level one (``workflows.builtin_workflow``); None when ``name`` is no built-in."""
    from innominatus.engine import workflows  # noqa: PLC0415 - the built-ins import the model, not us

    if name not in workflows.WORKFLOWS:
        return None
    return workflows.builtin_workflow(name, inputs)


# Built-in workflows act on inputs a platform service prepared (StartRun lets only the specs
# service start them). As a sub-workflow (`uses:`), a built-in listed here is built from its
# inputs only when the listed ones equal the outputs of a succeeded step of the given type in
# the same run -- outputs that step's executor got from the platform, for the run's own
# application and environment. So `undeploy` deprovisions what specs' PlanUndeploy named, never
# what a param or a literal in a path names. A built-in not listed is never a sub-workflow.
TRUSTED_CHILD_INPUTS: dict[str, tuple[str, tuple[str, ...]]] = {"undeploy": ("undeploy.plan", ("claims",))}


_WHOLE = re.compile(r"^\$\{([^}]*)\}$")


def resolve_value(value: Any, variables: dict) -> Any:
    """Resolve placeholders in ``with:`` inputs: a string that is exactly one placeholder keeps
    the referenced value's type; otherwise the product's interpolation engine renders it."""
    if isinstance(value, str):
        whole = _WHOLE.match(value)
        if whole:
            return lookup(variables, split_reference(whole.group(1)))
        return substitute(value, lambda parts: lookup(variables, parts))
    if isinstance(value, dict):
        return {k: resolve_value(v, variables) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [resolve_value(v, variables) for v in value]
    return value


MAX_CONCURRENCY_KEY = 256  # runs.concurrency_key

# First key of the two-int advisory lock a claim takes per concurrency group ("ic" = 0x6963):
# keeps these locks apart from other users of pg_advisory_*lock(bigint) in the database.
_GROUP_LOCK_SPACE = 0x6963


def concurrency_key_for(definition: WorkflowDef, params: dict, application: str = "", environment: str = "",
                        creator: str = "", run_id: str = "") -> str | None:
    """The run's concurrency group: ``spec.concurrency_group`` with its placeholders resolved
    over the run's params, vars and workflow fields; None when the workflow declares none."""
    template = definition.concurrency_group
    if not template:
        return None
    variables = {
        "params": params or {}, "vars": definition.variables, "variables": definition.variables,
        "workflow": {"name": definition.name, "version": definition.version, "run_id": run_id,
                     "application": application, "environment": environment, "creator": creator},
    }
    try:
        key = substitute(template, lambda parts: lookup(variables, parts))
    except (PlaceholderError, KeyError, TypeError, ValueError, IndexError) as exc:
        raise InvalidArgument(
            f"workflow {definition.name!r}: spec.concurrency_group {template!r} cannot be resolved for this run: "
            f"{exc}; give the params it names (innominatus goldenpaths show {definition.name})",
            reason="CONCURRENCY_GROUP_UNRESOLVED", metadata={"concurrency_group": template}) from None
    key = str(key).strip()
    if not key:
        raise InvalidArgument(
            f"workflow {definition.name!r}: spec.concurrency_group {template!r} resolves to an empty group for "
            "this run; give the params it names", reason="CONCURRENCY_GROUP_UNRESOLVED",
            metadata={"concurrency_group": template})
    if len(key) > MAX_CONCURRENCY_KEY:
        raise InvalidArgument(
            f"workflow {definition.name!r}: spec.concurrency_group resolves to {len(key)} characters for this run; "
            f"the limit is {MAX_CONCURRENCY_KEY} (use shorter params in the group)",
            reason="CONCURRENCY_GROUP_TOO_LONG", metadata={"concurrency_group": template})
    return key


def _ahead_of(run, other) -> Any:
    """SQL: ``other`` is a top-level run of ``run``'s concurrency group that ``run`` must wait
    for -- it holds the group (RUNNING) or is older and still PENDING."""
    older = or_(other.c.created_at < run.c.created_at,
                and_(other.c.created_at == run.c.created_at, other.c.id < run.c.id))
    return and_(
        other.c.concurrency_key == run.c.concurrency_key,
        other.c.parent_run_id.is_(None),
        other.c.id != run.c.id,
        other.c.state.in_([PENDING, RUNNING]),
        or_(other.c.state == RUNNING, older),
    )


def _waits_for_group(run) -> Any:
    """SQL: the PENDING run ``run`` waits for its concurrency group (see the module docstring)."""
    other = runs_t.alias("group_other")
    return and_(
        run.c.state == PENDING,
        run.c.concurrency_key.isnot(None),
        run.c.parent_run_id.is_(None),
        run.c.cancel_requested == false(),
        exists().where(_ahead_of(run, other)).correlate(run),
    )


async def group_blocker(session, row) -> Any | None:
    """The run ``row`` (a runs row) waits for: the run holding its concurrency group, else the
    oldest older PENDING run of the group; None when it does not wait."""
    key = getattr(row, "concurrency_key", None)
    if row.state != PENDING or not key or row.parent_run_id is not None or row.cancel_requested:
        return None
    older = or_(runs_t.c.created_at < row.created_at, and_(runs_t.c.created_at == row.created_at, runs_t.c.id < row.id))
    query = (
        select(runs_t.c.id, runs_t.c.workflow, runs_t.c.state, runs_t.c.concurrency_key)
        .where((runs_t.c.concurrency_key == key) & runs_t.c.parent_run_id.is_(None) & (runs_t.c.id != row.id)
               & ((runs_t.c.state == RUNNING) | ((runs_t.c.state == PENDING) & older)))
        # The one holding the group first; else the next in line.
        .order_by((runs_t.c.state == RUNNING).desc(), runs_t.c.created_at, runs_t.c.id)
        .limit(1)
    )
    return (await session.execute(query)).one_or_none()


def _waiting_message(blocker, key: str) -> str:
    return (f"waiting for runs/{blocker.id} ({blocker.workflow}, {blocker.state}) of concurrency group {key!r}: "
            "runs of one group run one at a time, oldest first")


def _key_for(run_id: str, step_id: str, iteration: int) -> str:
    key = f"{run_id}:{step_id}:{iteration}"
    if len(key) > 200:
        key = f"{run_id}:{hashlib.sha256(step_id.encode()).hexdigest()[:32]}:{iteration}"
    return key


def _is_approval(exc: BaseException) -> bool:
    return isinstance(exc, ApprovalRequired) or type(exc).__name__ == "ApprovalRequired"


def _jittered(policy: RetryPolicy, attempt: int) -> float:
    base = policy.delay(attempt)
    if policy.jitter:
        base *= 1 + policy.jitter * random.uniform(-1.0, 1.0)
    return max(base, 0.0)


def _aware(value: dt.datetime | None) -> dt.datetime | None:
    return times.utc(value) if value is not None else None


# --------------------------------------------------------------------------- the scheduler


class Scheduler:
    """Claims runs, drives them, heartbeats their leases. Also the engine's public API."""

    def __init__(
        self,
        db,
        executors: Mapping[str, Any] | Any,
        worker_id: str | None = None,
        lease_seconds: float = 15.0,
        heartbeat_seconds: float | None = None,
        *,
        poll_interval: float = 0.5,
        max_concurrent_steps: int = 64,
        max_runs: int = 64,
        evaluate: Evaluate | None = None,
        workflows: Callable[[str], WorkflowDef] | Mapping[str, WorkflowDef] | None = None,
        builtins: Callable[[str, dict], WorkflowDef | None] | None = default_builtin,
        workdir: str | Path | None = None,
        services: dict | None = None,
        cancel_grace: float = 5.0,
        stop_grace: float = 10.0,
    ) -> None:
        self.db = db
        self.executors = executors
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.lease_seconds = lease_seconds
        self.heartbeat_seconds = heartbeat_seconds or max(lease_seconds / 3, 0.05)
        self.poll_interval = poll_interval
        self.max_concurrent_steps = max_concurrent_steps
        self.max_runs = max_runs
        self.evaluate = evaluate or default_evaluate
        self.workflows = workflows
        self.builtins = builtins  # sub-workflows built from their inputs (built-ins; None: none)
        self.workdir = Path(workdir) if workdir else Path(tempfile.gettempdir()) / "innominatus-engine"
        self.services = services or {}
        self.cancel_grace = cancel_grace
        self.stop_grace = stop_grace
        self.wakeup = asyncio.Event()
        self._drivers: dict[str, _Driver] = {}
        self._driver_tasks: set[asyncio.Task] = set()
        self._active_steps = 0
        self._stopping = False
        self._tasks: list[asyncio.Task] = []
        self._next_wake: float | None = None  # monotonic time a run released by us is due
        self._last_heartbeat = time.monotonic()

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> None:
        self._stopping = False
        self._tasks = [
            asyncio.create_task(self._claim_loop(), name=f"engine-claim-{self.worker_id}"),
            asyncio.create_task(self._heartbeat_loop(), name=f"engine-heartbeat-{self.worker_id}"),
        ]

    async def stop(self) -> None:
        """Stop claiming; let running steps finish for up to stop_grace, then give the runs back."""
        self._stopping = True
        self.wakeup.set()
        for driver in list(self._drivers.values()):
            driver.stopping = True
            driver.wake.set()
        if self._driver_tasks:
            await asyncio.wait(self._driver_tasks, timeout=self.stop_grace + 5)
        for task in self._tasks:
            task.cancel()
        for task in [*self._tasks, *self._driver_tasks]:
            try:
                await task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001
                pass
        self._tasks = []

    def _executor(self, step_type: str):
        registry = self.executors
        if isinstance(registry, Mapping):
            return registry.get(step_type)
        if hasattr(registry, "get"):
            try:
                return registry.get(step_type)
            except (KeyError, LookupError, ValueError):
                return None
        return registry(step_type)

    def find_workflow(self, name: str) -> WorkflowDef | None:
        """The workflow a name refers to (built-ins, then the golden-path catalog), or None."""
        if self.workflows is None:
            return None
        if isinstance(self.workflows, Mapping):
            return self.workflows.get(name)
        return self.workflows(name)

    def _workflow(self, name: str) -> WorkflowDef:
        found = self.find_workflow(name)
        if found is None:
            raise StepFailed(f"unknown sub-workflow {name!r}", kind="unknown_workflow", retryable=False)
        return found

    # ---------------------------------------------------------------- claiming

    async def _claim_loop(self) -> None:
        while not self._stopping:
            try:
                capacity = self.max_runs - len(self._drivers)
                if capacity > 0:
                    for row in await self._claim(capacity):
                        driver = _Driver(self, row)
                        self._drivers[row.id] = driver
                        task = asyncio.create_task(self._drive(driver), name=f"engine-run-{row.id}")
                        self._driver_tasks.add(task)
                        task.add_done_callback(self._driver_tasks.discard)
            except Exception:  # noqa: BLE001 - the worker must survive a bad database moment
                log.exception("engine claim failed; retrying", worker=self.worker_id)
            timeout = self.poll_interval
            if self._next_wake is not None:
                timeout = max(min(timeout, self._next_wake - time.monotonic()), 0.0)
                self._next_wake = None
            try:
                await asyncio.wait_for(self.wakeup.wait(), timeout=timeout)
            except asyncio.TimeoutError:
                pass
            self.wakeup.clear()

    async def _claim(self, capacity: int) -> list:
        now = times.now()
        expiry = now + dt.timedelta(seconds=self.lease_seconds)
        claimable = (
            runs_t.c.state.in_([PENDING, RUNNING])
            & (runs_t.c.wake_at <= now)
            & (runs_t.c.paused == false())
            & or_(runs_t.c.lease_owner.is_(None), runs_t.c.lease_expires_at < now)
            & ~_waits_for_group(runs_t)
        )
        async with self.db.transaction() as s:
            query = select(runs_t).where(claimable).order_by(runs_t.c.wake_at).limit(capacity)
            if self._drivers:
                query = query.where(runs_t.c.id.notin_(list(self._drivers)))
            if self.db.is_postgres:
                query = query.with_for_update(skip_locked=True)
            candidates = await self._lock_groups(s, (await s.execute(query)).all())
            claimed = []
            for row in candidates:
                values = dict(lease_owner=self.worker_id, lease_expires_at=expiry, heartbeat_at=now, state=RUNNING,
                              started_at=row.started_at or now, updated_at=now, version=runs_t.c.version + 1)
                deadline = (row.definition or {}).get("deadline") if isinstance(row.definition, dict) else None
                if row.state == PENDING and row.concurrency_key and deadline:
                    # The time a run of a group waited for its turn is not the run's: its deadline
                    # counts from now, when it starts.
                    values["deadline_at"] = now + dt.timedelta(seconds=float(deadline))
                result = await s.execute(update(runs_t).where((runs_t.c.id == row.id) & claimable).values(**values))
                if result.rowcount == 1:
                    claimed.append(row.id)
            if not claimed:
                return []
            return (await s.execute(select(runs_t).where(runs_t.c.id.in_(claimed)))).all()

    async def _lock_groups(self, session, candidates: list) -> list:
        """Take the claim transaction's advisory lock of each concurrency group a PENDING
        candidate starts (PostgreSQL; in key order). A group another worker is deciding on
        right now is left to it: its candidates are dropped from this claim and looked at again
        on the next poll. The claim's UPDATE, a later statement, then sees every claim of the
        group committed before the lock was granted."""
        if not self.db.is_postgres:
            return candidates  # one process on SQLite: nobody to race with
        keys = sorted({r.concurrency_key for r in candidates
                       if r.state == PENDING and r.concurrency_key and r.parent_run_id is None})
        busy = set()
        for key in keys:
            got = (await session.execute(select(func.pg_try_advisory_xact_lock(_GROUP_LOCK_SPACE, func.hashtext(key))))).scalar()
            if not got:
                busy.add(key)
        if not busy:
            return candidates
        return [r for r in candidates if not (r.state == PENDING and r.concurrency_key in busy)]

    async def _drive(self, driver: "_Driver") -> None:
        try:
            await driver.run()
        except Exception:  # noqa: BLE001
            log.exception("run driver failed; the lease will expire and the run resume", run=driver.run_id)
        finally:
            self._drivers.pop(driver.run_id, None)
            if driver.release_wake is not None:
                due = driver.release_wake
                self._next_wake = min(self._next_wake or due, due)
            self.wakeup.set()

    async def _heartbeat_loop(self) -> None:
        while not self._stopping:
            await asyncio.sleep(self.heartbeat_seconds)
            if not self._drivers:
                self._last_heartbeat = time.monotonic()
                continue
            started = time.monotonic()
            try:
                await self._heartbeat()
                self._last_heartbeat = started
            except Exception:  # noqa: BLE001
                log.warning("engine heartbeat failed", worker=self.worker_id)
                if time.monotonic() - self._last_heartbeat > self.lease_seconds * 0.9:
                    # Our leases are about to expire: stop our steps before another worker retries them.
                    for driver in list(self._drivers.values()):
                        driver.lost = True
                        driver.wake.set()

    async def _heartbeat(self) -> None:
        ids = list(self._drivers)
        now = times.now()
        expiry = now + dt.timedelta(seconds=self.lease_seconds)
        async with self.db.transaction() as s:
            rows = (
                await s.execute(
                    update(runs_t)
                    .where(runs_t.c.id.in_(ids) & (runs_t.c.lease_owner == self.worker_id))
                    .values(lease_expires_at=expiry, heartbeat_at=now)
                    .returning(runs_t.c.id, runs_t.c.cancel_requested, runs_t.c.paused, runs_t.c.event_seq)
                )
            ).all()
            await s.execute(
                update(steps_t)
                .where(steps_t.c.run_id.in_(ids) & (steps_t.c.state == RUNNING) & (steps_t.c.lease_owner == self.worker_id))
                .values(lease_expires_at=expiry, heartbeat_at=now)
            )
        alive = {r.id: r for r in rows}
        for run_id in ids:
            driver = self._drivers.get(run_id)
            if driver is None:
                continue
            row = alive.get(run_id)
            if row is None:
                driver.lost = True
                driver.wake.set()
                continue
            if row.event_seq != driver.seq or row.cancel_requested != driver.cancel_requested or row.paused != driver.paused:
                driver.reload_needed = True
                driver.wake.set()
            elif driver.waiting_children():
                driver.wake.set()

    @asynccontextmanager
    async def _unit(self, run_id: str, session=None):
        """The transaction an outside change to a run is made in: the caller's (an RPC's, so the
        change commits with its audit event) or a new one; the run's driver is woken after commit."""
        if session is None:
            async with self.db.transaction() as s:
                yield s
            self._notify(run_id)
        else:
            sa_event.listen(session.sync_session, "after_commit", lambda _s: self._notify(run_id), once=True)
            yield session

    def _notify(self, run_id: str) -> None:
        driver = self._drivers.get(run_id)
        if driver is not None:
            driver.reload_needed = True
            driver.wake.set()
        self.wakeup.set()

    # ---------------------------------------------------------------- public API

    async def start_run(
        self,
        definition: WorkflowDef,
        params: dict | None = None,
        application: str = "",
        environment: str = "",
        creator: str = "",
        request_id: str | None = None,
        *,
        concurrency_key: str | None = None,
    ) -> str:
        """Record a new run (idempotent per request_id) and return its id."""
        try:
            async with self.db.transaction() as s:
                run_id = await self.create_run(s, definition, params, application, environment, creator, request_id,
                                               concurrency_key=concurrency_key)
        except IntegrityError:
            if not request_id:
                raise
            async with self.db.transaction() as s:
                run_id = (await s.execute(select(runs_t.c.id).where(runs_t.c.request_id == idempotency_key(creator, request_id)))).scalar_one()
        self.wakeup.set()
        return run_id

    async def create_run(
        self,
        session,
        definition: WorkflowDef,
        params: dict | None = None,
        application: str = "",
        environment: str = "",
        creator: str = "",
        request_id: str | None = None,
        *,
        parent: tuple[str, str, int] | None = None,
        run_id: str | None = None,
        concurrency_key: str | None = None,
    ) -> str:
        """Insert a run and its step rows in ``session`` (the caller's transaction).

        ``concurrency_key`` is the run's concurrency group; when None, the definition's
        ``spec.concurrency_group`` resolved for this run (InvalidArgument when it cannot be). A
        child run (``parent``) never has one: it runs in its parent's turn."""
        if request_id:
            # Idempotency keys belong to their creator: another user's (or the platform's)
            # key never returns, or blocks, someone else's run.
            request_id = idempotency_key(creator, request_id)
            existing = (await session.execute(select(runs_t.c.id).where(runs_t.c.request_id == request_id))).scalar_one_or_none()
            if existing:
                return existing
        run_id = run_id or uuid.uuid4().hex
        if parent:
            concurrency_key = None
        elif concurrency_key is None:
            concurrency_key = concurrency_key_for(definition, params or {}, application or "", environment or "",
                                                  creator or "", run_id)
        elif len(concurrency_key) > MAX_CONCURRENCY_KEY:
            raise InvalidArgument(f"concurrency group {concurrency_key[:64]!r}... is longer than {MAX_CONCURRENCY_KEY} "
                                  "characters", reason="CONCURRENCY_GROUP_TOO_LONG")
        now = times.now()
        await session.execute(
            runs_t.insert().values(
                id=run_id, workflow=definition.name, application=application or "", environment=environment or "",
                inputs=params or {}, state=PENDING, error="", creator=creator or "", request_id=request_id or None,
                version=1, created_at=now, updated_at=now, definition=definition_to_json(definition),
                concurrency=definition.concurrency or 0,
                deadline_at=now + dt.timedelta(seconds=definition.deadline) if definition.deadline else None,
                wake_at=now, cancel_requested=False, paused=False, event_seq=1,
                parent_run_id=parent[0] if parent else None, parent_step_id=parent[1] if parent else None,
                parent_iteration=parent[2] if parent else None, concurrency_key=concurrency_key or None,
            )
        )
        await session.execute(
            insert(steps_t),
            [
                dict(run_id=run_id, step_id=step.id, iteration=0, position=i, type=step.type, kind="step", state=PENDING,
                     attempts=0, idempotency_key=_key_for(run_id, step.id, 0), outputs={}, error="", error_kind="")
                for i, step in enumerate(definition.steps)
            ],
        )
        await session.execute(
            events_t.insert().values(run_id=run_id, seq=1, time=now, kind="run.created",
                                     message=f"workflow {definition.name} {definition.version}".strip())
        )
        if concurrency_key:
            await self._note_waiting(session, run_id)
        return run_id

    async def _note_waiting(self, session, run_id: str) -> None:
        """Record a ``run.waiting`` event when the PENDING run ``run_id`` waits for its
        concurrency group (the runs this transaction sees); the event stream shows why it waits."""
        row = (await session.execute(select(runs_t).where(runs_t.c.id == run_id))).one()
        blocker = await group_blocker(session, row)
        if blocker is None:
            return
        seq = (await session.execute(
            update(runs_t).where(runs_t.c.id == run_id).values(event_seq=runs_t.c.event_seq + 1)
            .returning(runs_t.c.event_seq))).scalar_one()
        await session.execute(events_t.insert().values(run_id=run_id, seq=seq, time=times.now(), kind="run.waiting",
                                                       message=_waiting_message(blocker, row.concurrency_key)))

    async def waiting_for(self, row, session=None) -> Any | None:
        """The run the PENDING run ``row`` waits for (its concurrency group), or None."""
        if session is None:
            async with self.db.transaction() as s:
                return await group_blocker(s, row)
        return await group_blocker(session, row)

    async def _external(self, run_id: str, kind: str, message: str, step_id: str | None = None, *,
                        states: Iterable[str] | None = None, values: dict | None = None, session=None,
                        wake: bool = True) -> int:
        """Bump the run's event_seq (so its driver reloads), set wake_at, record one event."""
        now = times.now()
        condition = runs_t.c.id == run_id
        if states is not None:
            condition &= runs_t.c.state.in_(list(states))
        stmt = (
            update(runs_t).where(condition)
            .values(event_seq=runs_t.c.event_seq + 1, updated_at=now, version=runs_t.c.version + 1,
                    **({"wake_at": now} if wake else {}), **(values or {}))
            .returning(runs_t.c.event_seq)
        )
        seq = (await session.execute(stmt)).scalar_one_or_none()
        if seq is None:
            exists = (await session.execute(select(runs_t.c.state).where(runs_t.c.id == run_id))).scalar_one_or_none()
            if exists is None:
                raise NotFound(f"run {run_id!r} not found", reason="RUN_NOT_FOUND")
            raise FailedPrecondition(f"run {run_id!r} is {exists}", reason="RUN_STATE")
        await session.execute(events_t.insert().values(run_id=run_id, seq=seq, time=now, kind=kind, step_id=step_id, message=message))
        return seq

    async def cancel(self, run_id: str, who: str = "", session=None) -> None:
        async with self._unit(run_id, session) as s:
            await self._external(run_id, "run.cancel_requested", f"cancel requested{' by ' + who if who else ''}",
                                 states=(PENDING, RUNNING), values={"cancel_requested": True, "paused": False}, session=s)

    async def pause(self, run_id: str, who: str = "", session=None) -> None:
        async with self._unit(run_id, session) as s:
            await self._external(run_id, "run.paused", f"paused{' by ' + who if who else ''}", states=(PENDING, RUNNING),
                                 values={"paused": True}, session=s)

    async def resume(self, run_id: str, who: str = "", session=None) -> None:
        async with self._unit(run_id, session) as s:
            await self._external(run_id, "run.resumed", f"resumed{' by ' + who if who else ''}", states=(PENDING, RUNNING),
                                 values={"paused": False}, session=s)

    async def approve(self, run_id: str, step_id: str, who: str, reason: str = "", session=None) -> None:
        await self._decide(run_id, step_id, who, reason, approved=True, session=session)

    async def reject(self, run_id: str, step_id: str, who: str, reason: str = "", session=None) -> None:
        await self._decide(run_id, step_id, who, reason, approved=False, session=session)

    async def _decide(self, run_id: str, step_id: str, who: str, reason: str, approved: bool, session=None) -> None:
        now = times.now()
        async with self._unit(run_id, session) as s:
            verb = "approved" if approved else "rejected"
            seq = await self._external(run_id, f"step.{verb}", f"{verb} by {who}" + (f": {reason}" if reason else ""),
                                       step_id, states=(PENDING, RUNNING), session=s)
            values = (
                dict(state=SUCCEEDED, outputs={"approved": True, "by": who, "reason": reason}, completion_seq=seq)
                if approved
                else dict(state=FAILED, error=f"rejected by {who}" + (f": {reason}" if reason else ""), error_kind="rejected")
            )
            result = await s.execute(
                update(steps_t)
                .where((steps_t.c.run_id == run_id) & (steps_t.c.step_id == step_id) & (steps_t.c.state == WAITING_APPROVAL))
                .values(ended_at=now, **values)
            )
            if result.rowcount == 0:
                raise FailedPrecondition(f"step {step_id!r} of run {run_id!r} is not waiting for approval",
                                         reason="NOT_WAITING_FOR_APPROVAL")

    async def retry(self, run_id: str, who: str = "", session=None) -> None:
        """Run a failed (or cancelled) run again from its failed steps; completed steps stay done."""
        now = times.now()
        async with self._unit(run_id, session) as s:
            run = (await s.execute(select(runs_t).where(runs_t.c.id == run_id))).one_or_none()
            if run is None:
                raise NotFound(f"run {run_id!r} not found", reason="RUN_NOT_FOUND")
            definition = definition_from_json(run.definition)
            await self._external(
                run_id, "run.retried", f"retried{' by ' + who if who else ''}", states=(FAILED, CANCELLED), session=s,
                values=dict(state=PENDING, error="", cancel_requested=False, paused=False, ended_at=None,
                            lease_owner=None, lease_expires_at=None,
                            deadline_at=now + dt.timedelta(seconds=definition.deadline) if definition.deadline else None),
            )
            await s.execute(delete(steps_t).where((steps_t.c.run_id == run_id) & (steps_t.c.kind == "compensation")))
            reset = dict(attempts=0, error="", error_kind="", next_attempt_at=now, started_at=None, ended_at=None,
                         child_run_id=None, lease_owner=None, lease_expires_at=None, completion_seq=None)
            redo = steps_t.c.state.in_([FAILED, CANCELLED, COMPENSATED, RUNNING, READY, WAITING_APPROVAL])
            base = (steps_t.c.run_id == run_id) & redo
            # Fanned-out items keep their item: they go straight back to READY.
            await s.execute(update(steps_t).where(base & steps_t.c.items_total.isnot(None)).values(state=READY, **reset))
            await s.execute(update(steps_t).where(base & steps_t.c.items_total.is_(None)).values(state=PENDING, **reset))
            if run.concurrency_key and run.parent_run_id is None:
                # PENDING again: it queues behind its group's running run like a new one.
                await self._note_waiting(s, run_id)

    async def events(self, run_id: str, after_seq: int = 0, limit: int = 1000) -> list[dict]:
        async with self.db.transaction() as s:
            rows = (
                await s.execute(
                    select(events_t).where((events_t.c.run_id == run_id) & (events_t.c.seq > after_seq))
                    .order_by(events_t.c.seq).limit(limit)
                )
            ).all()
        return [dict(run_id=r.run_id, seq=r.seq, time=_aware(r.time), kind=r.kind, step_id=r.step_id, message=r.message)
                for r in rows]

    async def get_run(self, run_id: str, session=None) -> tuple[Any, list]:
        """The run row and its step execution rows (in definition order), read in ``session``
        when given (so a caller sees its own uncommitted change)."""
        if session is None:
            async with self.db.transaction() as s:
                return await self.get_run(run_id, s)
        run = (await session.execute(select(runs_t).where(runs_t.c.id == run_id))).one_or_none()
        if run is None:
            raise NotFound(f"run {run_id!r} not found", reason="RUN_NOT_FOUND")
        rows = (
            await session.execute(
                select(steps_t).where(steps_t.c.run_id == run_id).order_by(steps_t.c.position, steps_t.c.iteration)
            )
        ).all()
        return run, rows

    async def wait(self, run_id: str, timeout: float = 30.0, states: Iterable[str] = RUN_TERMINAL, interval: float = 0.05):
        """Poll until the run reaches one of ``states`` (tests and the CLI's --wait)."""
        deadline = time.monotonic() + timeout
        while True:
            run, _ = await self.get_run(run_id)
            if run.state in states:
                return run
            if time.monotonic() > deadline:
                raise TimeoutError(f"run {run_id} still {run.state} after {timeout}s")
            await asyncio.sleep(interval)


# --------------------------------------------------------------------------- one run's driver



def idempotency_key(creator: str, request_id: str) -> str:
    """The stored form of a caller's request id: scoped to the creator, bounded in length."""
    digest = hashlib.sha256(f"{creator}\x00{request_id}".encode()).hexdigest()
    return f"{digest[:40]}:{request_id[:80]}"


class _LazySteps(dict):
    def __init__(self, driver: "_Driver") -> None:
        super().__init__()
        self.driver = driver

    def __contains__(self, step_id) -> bool:
        return step_id in self.driver.stepdefs

    def __missing__(self, step_id):
        value = {"outputs": self.driver._outputs_of(step_id), "state": self.driver._status(step_id)}
        self[step_id] = value
        return value


class _Op:
    """A staged change of one step row: applied to the driver's view at once, committed with
    the pass's transaction (``WHERE state = expected`` for updates)."""

    __slots__ = ("key", "expected", "values", "insert", "events")

    def __init__(self, key, expected, values, insert=False):
        self.key, self.expected, self.values, self.insert = key, expected, dict(values), insert
        self.events: list[tuple[str, str, bool]] = []  # (kind, message, is_completion)


class _Driver:
    """Drives one leased run: the only writer of its step rows while the lease is held."""

    def __init__(self, scheduler: Scheduler, row) -> None:
        self.s = scheduler
        self.run_id = row.id
        self.definition = definition_from_json(row.definition)
        self.stepdefs = {step.id: step for step in self.definition.steps}
        self.comp_defs: dict[str, StepDef] = {}
        for step in self.definition.steps:
            for comp in step.on_failure:
                self.comp_defs[f"{step.id}/on_failure/{comp.id}"] = comp
        self.wake = asyncio.Event()
        self.tasks: dict[tuple, asyncio.Task] = {}
        self.cancel_events: dict[tuple, asyncio.Event] = {}
        self.results: list[tuple[tuple, int, str, Any]] = []  # (key, attempt, outcome, value), not yet committed
        self.logs: list[tuple[str, str]] = []
        self.lost = False
        self.stopping = False
        self.reload_needed = False
        self.release_wake: float | None = None
        self.rows: dict[tuple, dict] = {}
        self.by_step: dict[str, list[dict]] = {}
        self.staged: dict[tuple, _Op] = {}
        self.children: list[tuple] = []  # child runs to create in this pass's transaction
        self._apply_run(row)

    def _apply_run(self, row) -> None:
        self.params = row.inputs or {}
        self.application, self.environment, self.creator = row.application, row.environment, row.creator
        self.deadline_at = _aware(row.deadline_at)
        self.concurrency = row.concurrency or 0
        self.cancel_requested = bool(row.cancel_requested)
        self.paused = bool(row.paused)
        self.seq = row.event_seq
        self.parent = (row.parent_run_id, row.parent_step_id, row.parent_iteration)

    async def _load(self) -> None:
        async with self.s.db.transaction() as s:
            row = (await s.execute(select(runs_t).where(runs_t.c.id == self.run_id))).one()
            if row.lease_owner != self.s.worker_id:
                raise LeaseLost(self.run_id)
            steps = (await s.execute(select(steps_t).where(steps_t.c.run_id == self.run_id))).all()
        self._apply_run(row)
        self.rows = {(r.step_id, r.iteration): dict(r._mapping) for r in steps}
        self._index()
        self.reload_needed = False

    def _index(self) -> None:
        self.by_step = {}
        for row in sorted(self.rows.values(), key=lambda r: r["iteration"]):
            if row["kind"] == "step":
                self.by_step.setdefault(row["step_id"], []).append(row)

    def waiting_children(self) -> bool:
        return any(r["state"] == RUNNING and r["child_run_id"] for r in self.rows.values())

    def _def(self, key: tuple) -> StepDef:
        return self.stepdefs.get(key[0]) or self.comp_defs[key[0]]

    # ---------------------------------------------------------------- staging and committing

    def _stage(self, key, values: dict, event: tuple[str, str] | None = None, *, completion=False, insert=False) -> None:
        op = self.staged.get(key)
        if op is None:
            if insert:
                op = _Op(key, None, values, insert=True)
                row = {c.name: None for c in steps_t.columns}
                row.update(run_id=self.run_id, step_id=key[0], iteration=key[1])
                self.rows[key] = row
                if values.get("kind") == "step":
                    self.by_step.setdefault(key[0], []).append(row)
            else:
                op = _Op(key, self.rows[key]["state"], values)
            self.staged[key] = op
        else:
            op.values.update(values)
        if event:
            op.events.append((event[0], event[1], completion))
        self.rows[key].update(values)

    async def _commit(self, extra_events: list[tuple[str, str | None, str]] = (), *,
                      run_values: dict | None = None, release: bool = False) -> None:
        """One transaction: fence on the lease, apply the staged ops (each checked against its
        expected state), create child runs, append the events. Raises LeaseLost or _Conflict."""
        ops = list(self.staged.values())
        now = times.now()
        events: list[tuple[str, str | None, str, _Op | None]] = []
        for op in ops:
            for kind, message, completion in op.events:
                events.append((kind, op.key[0], message, op if completion else None))
        events += [(k, sid, msg, None) for k, sid, msg in extra_events]
        events += [("step.log", sid, msg, None) for sid, msg in self.logs]
        n = len(events)
        values = dict(updated_at=now, event_seq=runs_t.c.event_seq + n)
        if release:
            values.update(lease_owner=None, lease_expires_at=None)
        else:
            values.update(lease_expires_at=now + dt.timedelta(seconds=self.s.lease_seconds), heartbeat_at=now)
        values.update(run_values or {})
        completion_seqs: dict[tuple, int] = {}
        async with self.s.db.transaction() as s:
            got = (
                await s.execute(
                    update(runs_t).where((runs_t.c.id == self.run_id) & (runs_t.c.lease_owner == self.s.worker_id))
                    .values(**values).returning(runs_t.c.event_seq)
                )
            ).first()
            if got is None:
                raise LeaseLost(self.run_id)
            base = got.event_seq - n
            if base != self.seq:
                # Someone outside wrote to the run (approve, cancel, ...): never give the lease
                # back over a change we have not seen; otherwise the state checks below suffice.
                self.reload_needed = True
                if release:
                    raise _Conflict()
            for j, (_k, _sid, _m, op) in enumerate(events):
                if op is not None:
                    completion_seqs[op.key] = base + j + 1
            for op in ops:
                vals = dict(op.values)
                if op.key in completion_seqs:
                    vals["completion_seq"] = completion_seqs[op.key]
                if op.insert:
                    await s.execute(steps_t.insert().values(run_id=self.run_id, step_id=op.key[0], iteration=op.key[1], **vals))
                    continue
                result = await s.execute(
                    update(steps_t)
                    .where((steps_t.c.run_id == self.run_id) & (steps_t.c.step_id == op.key[0])
                           & (steps_t.c.iteration == op.key[1]) & (steps_t.c.state == op.expected))
                    .values(**vals)
                )
                if result.rowcount != 1:
                    self.reload_needed = True
                    raise _Conflict()
            for child_id, child_def, inputs, key in self.children:
                await self.s.create_run(s, child_def, inputs, self.application, self.environment, self.creator,
                                        parent=(self.run_id, key[0], key[1]), run_id=child_id)
            if events:
                await s.execute(
                    insert(events_t),
                    [dict(run_id=self.run_id, seq=base + j + 1, time=now, kind=k, step_id=sid, message=msg)
                     for j, (k, sid, msg, _op) in enumerate(events)],
                )
            if release and run_values and run_values.get("state") in RUN_TERMINAL and self.parent[0]:
                await self.s._external(self.parent[0], "step.child_finished", f"child run {self.run_id} {run_values['state']}",
                                       self.parent[1], session=s)
        self.seq = base + n
        self.logs = []
        self.staged = {}
        self.children = []
        for key, seq in completion_seqs.items():
            self.rows[key]["completion_seq"] = seq
        if release and run_values and run_values.get("state") in RUN_TERMINAL and self.parent[0]:
            self.s._notify(self.parent[0])

    # ---------------------------------------------------------------- the loop

    async def run(self) -> None:
        try:
            await self._load()
            await self._recover()
            while True:
                if self.lost:
                    raise LeaseLost(self.run_id)
                self.staged, self.children = {}, []
                try:
                    if self.reload_needed:
                        await self._load()
                    if await self._pass():
                        return
                except _Conflict:
                    self.reload_needed = True
                    continue
                except LeaseLost:
                    raise
                except Exception:  # noqa: BLE001 - e.g. the database went away for a moment
                    log.exception("run pass failed; reloading", run=self.run_id)
                    self.reload_needed = True
                    await asyncio.sleep(min(1.0, self.s.heartbeat_seconds))
                    continue
                await self._wait()
        except LeaseLost:
            log.warning("lease lost; stopping the run's steps", run=self.run_id, worker=self.s.worker_id)
        finally:
            if self.tasks:
                for event in self.cancel_events.values():
                    event.set()
                for task in list(self.tasks.values()):
                    task.cancel()
                await asyncio.gather(*self.tasks.values(), return_exceptions=True)

    async def _recover(self) -> None:
        """Steps left RUNNING by a previous lease holder were interrupted mid-attempt."""
        now = times.now()
        self.staged = {}
        for key, row in list(self.rows.items()):
            if row["state"] != RUNNING or row["child_run_id"]:
                continue
            policy = self._def(key).retry
            attempts = row["attempts"]
            if attempts < policy.max_attempts and "interrupted" not in policy.non_retryable:
                delay = _jittered(policy, max(attempts, 1))
                self._stage(key, dict(state=READY, next_attempt_at=now + dt.timedelta(seconds=delay), error_kind="interrupted",
                                      error=f"attempt {attempts} interrupted (worker {row['lease_owner']} lost its lease)",
                                      lease_owner=None, lease_expires_at=None),
                            ("step.interrupted", f"attempt {attempts} interrupted on {row['lease_owner']}; retrying in {delay:.2f}s"))
            else:
                self._stage(key, dict(state=FAILED, ended_at=now, error_kind="interrupted", lease_owner=None,
                                      error=f"attempt {attempts} interrupted and no attempts left"),
                            ("step.failed", "interrupted; no attempts left"))
        if self.staged:
            await self._commit([("run.resumed", None, f"worker {self.s.worker_id} resumed the run")])

    async def _wait(self) -> None:
        if self.results or self.reload_needed or self.lost:
            self.wake.clear()
            return
        timeout = self.s.heartbeat_seconds
        now = times.now()
        for row in self.rows.values():
            if row["state"] == READY and row["next_attempt_at"] is not None:
                due = (_aware(row["next_attempt_at"]) - now).total_seconds()
                if due > 0:  # a due step waits for capacity: a finishing attempt wakes us
                    timeout = min(timeout, due)
        if self.deadline_at is not None:
            timeout = min(timeout, max((self.deadline_at - now).total_seconds(), 0.001))
        timeout = max(timeout, 0.001)
        if timeout > 0:
            try:
                await asyncio.wait_for(self.wake.wait(), timeout=timeout)
            except asyncio.TimeoutError:
                pass
        self.wake.clear()

    # ---------------------------------------------------------------- views

    def _status(self, step_id: str) -> str:
        """pending | active | done | failed for a top-level step (all its items)."""
        states = [r["state"] for r in self.by_step.get(step_id, [])]
        if not states or states == [PENDING]:
            return "pending"
        if any(s in (FAILED, CANCELLED) for s in states):
            return "failed"
        if all(s in STEP_DONE for s in states):
            return "done"
        return "active"

    def _outputs_of(self, step_id: str) -> Any:
        rows = self.by_step.get(step_id, [])
        if rows and rows[0]["items_total"] is not None:
            if rows[0]["items_total"] == 0:
                return []
            return [r["outputs"] if r["state"] in (SUCCEEDED, COMPENSATED) else None for r in rows]
        return rows[0]["outputs"] if rows and rows[0]["state"] in (SUCCEEDED, COMPENSATED) else {}

    def _resource_outputs(self) -> dict:
        """``${resources.<name>.<key>}``: the outputs of the run's completed `resource` steps,
        by the resource name they provisioned (``with.name``, else the step id)."""
        found = {}
        for step_id, stepdef in self.stepdefs.items():
            if stepdef.type == "resource" and self._status(step_id) == "done":
                name = stepdef.with_.get("name") if isinstance(stepdef.with_.get("name"), str) else step_id
                found[name] = self._outputs_of(step_id)
        return found

    def _variables(self, row: dict | None = None, step: StepDef | None = None, lazy: bool = False) -> dict:
        if lazy:
            steps: dict[str, Any] = _LazySteps(self)  # placeholders look up only what they name
        else:
            steps = {sid: {"outputs": self._outputs_of(sid), "state": self._status(sid)} for sid in self.stepdefs}
        variables = {
            "params": self.params,
            "variables": self.definition.variables,
            "vars": self.definition.variables,
            "workflow": {"name": self.definition.name, "version": self.definition.version, "run_id": self.run_id,
                         "application": self.application, "environment": self.environment, "creator": self.creator},
            "steps": steps,
            "resources": self._resource_outputs(),
        }
        if row is not None and row.get("items_total") is not None:
            variables["item"] = row["item"]
            variables["index"] = row["iteration"]
        return variables

    # ---------------------------------------------------------------- one scheduling pass

    def _failing(self, now) -> str | None:
        if self.deadline_at is not None and now >= self.deadline_at:
            return "run deadline exceeded"
        if any(r["state"] in (FAILED, CANCELLED) for rows in self.by_step.values() for r in rows):
            return "step failed"
        return None

    async def _pass(self) -> bool:
        """Commit finished attempts, schedule what became ready, start what is due; decide
        whether the run is finished or only waiting. Returns True when the driver is done."""
        if self.cancel_requested:
            return await self._cancel_all()
        now = times.now()
        failing = self._failing(now)
        if failing == "run deadline exceeded" and self.tasks:
            await self._stop_tasks(0.0)  # their attempts come back as cancelled results
        taken = list(self.results)
        for entry in taken:
            self._stage_result(*entry, now, no_retry=failing is not None)
        failing = self._failing(now)
        if not failing:
            await self._stage_children(now)
            failing = self._failing(now)
        if failing and not self.tasks:
            return await self._compensate_or_finish(failing, now, taken)

        starts: list[tuple] = []
        if not failing and not self.paused and not self.stopping:
            self._stage_readiness(now)
            if not self._failing(now):
                starts = self._stage_starts(now)

        run_values, release, extra = None, False, []
        if not failing and not self.tasks and not starts:
            if all(self._status(sid) == "done" for sid in self.stepdefs):
                run_values = dict(state=SUCCEEDED, ended_at=now, wake_at=None, error="", version=runs_t.c.version + 1)
                extra.append(("run.succeeded", None, "run succeeded"))
                release = True
            elif self.paused or self.stopping:
                release, run_values = True, dict(wake_at=now)
            else:
                ready = [_aware(r["next_attempt_at"]) or now for r in self.rows.values() if r["state"] == READY]
                if not any(when <= now for when in ready) and not self._failing(now):
                    # Only waiting (a backoff, an approval, a child run): give the lease back, durably
                    # due at the earliest next attempt (NULL: until someone wakes the run).
                    wake = min(ready) if ready else None
                    if wake is None or (wake - now).total_seconds() > 0.2:
                        release, run_values = True, dict(wake_at=wake)
                        if wake is not None:
                            self.release_wake = time.monotonic() + (wake - now).total_seconds()
        if self.staged or extra or release or self.logs or self.children:
            await self._commit_pass(extra, run_values, release, starts)
        return self._after_commit(taken, starts, release)

    def _stage_result(self, key, attempt, outcome, value, now, no_retry=False) -> None:
        row = self.rows[key]
        step = self._def(key)
        done = dict(ended_at=now, lease_owner=None, lease_expires_at=None)
        if outcome == "ok":
            outputs = value if isinstance(value, dict) else {"result": value}
            if step.outputs:
                try:
                    variables = {**self._variables(row, step), "result": outputs, "outputs": outputs}
                    mapped = {name: resolve_value(expr, variables) if "${" in expr else self.s.evaluate(expr, variables)
                              for name, expr in step.outputs.items()}
                    outputs = {**outputs, **mapped}
                except Exception as exc:  # noqa: BLE001
                    self._stage(key, dict(state=FAILED, error=f"outputs: {exc}", error_kind="outputs", **done),
                                ("step.failed", f"outputs: {exc}"))
                    return
            self._stage(key, dict(state=SUCCEEDED, outputs=outputs, error="", error_kind="", **done),
                        ("step.succeeded", f"attempt {attempt} succeeded"), completion=True)
        elif outcome == "approval":
            self._stage(key, dict(state=WAITING_APPROVAL, lease_owner=None, lease_expires_at=None,
                                  error=str(value) or "waiting for approval"),
                        ("step.waiting_approval", str(value) or "waiting for approval"))
        elif outcome == "cancelled":
            self._stage(key, dict(state=CANCELLED, error=str(value or "cancelled"), error_kind="cancelled", **done),
                        ("step.cancelled", str(value or "cancelled")))
        else:
            failure: StepFailed = value
            policy = step.retry
            retry = (failure.retryable and failure.kind not in policy.non_retryable and attempt < policy.max_attempts
                     and not self.cancel_requested and (not no_retry or row["kind"] == "compensation"))
            if retry:
                delay = _jittered(policy, attempt)
                self._stage(key, dict(state=READY, next_attempt_at=now + dt.timedelta(seconds=delay), error=failure.message,
                                      error_kind=failure.kind, lease_owner=None, lease_expires_at=None),
                            ("step.retrying", f"attempt {attempt} failed ({failure.kind}): {failure.message}; "
                                              f"retrying in {delay:.3f}s"))
            else:
                self._stage(key, dict(state=FAILED, error=failure.message, error_kind=failure.kind, **done),
                            ("step.failed", f"attempt {attempt} failed ({failure.kind}): {failure.message}"))

    async def _stage_children(self, now) -> None:
        waiting = {r["child_run_id"]: key for key, r in self.rows.items() if r["state"] == RUNNING and r["child_run_id"]}
        if not waiting:
            return
        async with self.s.db.transaction() as s:
            children = (await s.execute(select(runs_t.c.id, runs_t.c.state, runs_t.c.error)
                                        .where(runs_t.c.id.in_(list(waiting))))).all()
            finished = [c for c in children if c.state in RUN_TERMINAL]
            outputs: dict[str, dict] = {}
            if finished:
                rows = (await s.execute(
                    select(steps_t.c.run_id, steps_t.c.step_id, steps_t.c.iteration, steps_t.c.outputs)
                    .where(steps_t.c.run_id.in_([c.id for c in finished]) & (steps_t.c.state == SUCCEEDED)
                           & (steps_t.c.kind == "step")))).all()
                for r in rows:
                    outputs.setdefault(r.run_id, {})[r.step_id if r.iteration == 0 else f"{r.step_id}[{r.iteration}]"] = r.outputs
        for child in finished:
            key = waiting[child.id]
            attempt = self.rows[key]["attempts"]
            if child.state == SUCCEEDED:
                self._stage_result(key, attempt, "ok", {"run": child.id, "steps": outputs.get(child.id, {})}, now)
            else:
                self._stage_result(key, attempt, "fail",
                                   StepFailed(f"child run {child.id} {child.state}: {child.error}", kind="child_failed"), now)

    def _stage_readiness(self, now) -> None:
        for sid, step in self.stepdefs.items():
            rows = self.by_step.get(sid)
            if not rows or len(rows) != 1 or rows[0]["state"] != PENDING:
                continue
            if not all(self._status(dep) == "done" for dep in step.depends_on):
                continue
            key = (sid, 0)
            try:
                variables = None
                if step.when or step.unless:
                    variables = self._variables(None, step)
                    skip = (step.when and not self.s.evaluate(step.when, variables)) or (
                        step.unless and self.s.evaluate(step.unless, variables))
                    if skip:
                        self._stage(key, dict(state=SKIPPED, ended_at=now, outputs={}),
                                    ("step.skipped", "condition not met"), completion=True)
                        continue
                if step.for_each:
                    variables = variables or self._variables(None, step)
                    items = (resolve_value(step.for_each, variables) if "${" in step.for_each
                             else self.s.evaluate(step.for_each, variables))
                    if not isinstance(items, (list, tuple)):
                        raise StepFailed(f"for_each yielded {type(items).__name__}, not a list", kind="for_each",
                                         retryable=False)
                    items = list(items)
                    if not items:
                        self._stage(key, dict(state=SUCCEEDED, items_total=0, ended_at=now, outputs={}),
                                    ("step.succeeded", "for_each over no items"), completion=True)
                        continue
                    self._stage(key, dict(state=READY, items_total=len(items), item=items[0], next_attempt_at=now),
                                ("step.fanned_out", f"{len(items)} items"))
                    for i, item in enumerate(items[1:], start=1):
                        self._stage((sid, i), dict(position=rows[0]["position"], type=step.type, kind="step", state=READY,
                                                   attempts=0, idempotency_key=_key_for(self.run_id, sid, i), item=item,
                                                   items_total=len(items), next_attempt_at=now, outputs={}, error="",
                                                   error_kind=""), insert=True)
                    continue
            except Exception as exc:  # noqa: BLE001 - a bad expression fails the step, not the worker
                message = exc.message if isinstance(exc, StepFailed) else f"{type(exc).__name__}: {exc}"
                self._stage(key, dict(state=FAILED, ended_at=now, error=message, error_kind="expression"),
                            ("step.failed", message))
                continue
            self._stage(key, dict(state=READY, next_attempt_at=now))

    def _start_one(self, key, now) -> tuple | None:
        """Stage READY → RUNNING (attempt + 1); a sub-workflow step creates its child run instead."""
        row = self.rows[key]
        step = self._def(key)
        attempt = row["attempts"] + 1
        try:
            inputs = resolve_value(dict(step.with_), self._variables(row, step, lazy=True)) if step.with_ else {}
        except (PlaceholderError, KeyError, TypeError, ValueError) as exc:
            self._stage(key, dict(state=FAILED, ended_at=now, attempts=attempt, error=f"inputs: {exc}", error_kind="input"),
                        ("step.failed", f"inputs: {exc}"))
            return None
        values = dict(state=RUNNING, attempts=attempt, started_at=now, next_attempt_at=None, lease_owner=self.s.worker_id,
                      heartbeat_at=now, lease_expires_at=now + dt.timedelta(seconds=self.s.lease_seconds))
        if step.type == "workflow" or step.uses:
            try:
                # Stored with the child run (create_run), like a top-level run's definition: a
                # resumed child keeps the steps it was built with.
                child_def = self._child_definition(step.uses or "", inputs)
            except StepFailed as exc:
                self._stage(key, dict(state=FAILED, ended_at=now, attempts=attempt, error=exc.message, error_kind=exc.kind),
                            ("step.failed", exc.message))
                return None
            child_id = uuid.uuid4().hex
            values.update(child_run_id=child_id, lease_owner=None, lease_expires_at=None)
            self._stage(key, values, ("step.started", f"attempt {attempt}: child run {child_id}"))
            self.children.append((child_id, child_def, inputs, key))
            return None
        self._stage(key, values, ("step.started", f"attempt {attempt} on {self.s.worker_id}"))
        self.s._active_steps += 1
        return (key, step, attempt, inputs)

    def _child_definition(self, name: str, inputs: dict) -> WorkflowDef:
        """The definition of a sub-workflow step's child run: a built-in is built from the
        step's inputs once they pass :data:`TRUSTED_CHILD_INPUTS`; anything else is looked up."""
        try:
            built = self.s.builtins(name, inputs) if self.s.builtins is not None else None
        except Exception as exc:  # noqa: BLE001 - malformed inputs fail the step, not the worker
            raise StepFailed(f"sub-workflow {name!r}: {type(exc).__name__}: {exc}", kind="input",
                             retryable=False) from None
        if built is None:
            return self.s._workflow(name)
        rule = TRUSTED_CHILD_INPUTS.get(name)
        if rule is None:
            raise StepFailed(f"the built-in workflow {name!r} is started by the platform itself, not as a "
                             "sub-workflow", kind="builtin_workflow", retryable=False)
        source_type, keys = rule
        for row in self.rows.values():
            if row["kind"] != "step" or row["type"] != source_type or row["state"] != SUCCEEDED:
                continue
            stepdef = self.stepdefs.get(row["step_id"])
            # An `outputs:` mapping could overwrite what the executor returned: not trusted.
            if stepdef is None or set(stepdef.outputs) & {*keys, "application", "environment"}:
                continue
            outputs = row["outputs"] if isinstance(row["outputs"], dict) else {}
            if (outputs.get("application") == self.application and outputs.get("environment") == self.environment
                    and all(k in inputs and inputs[k] == outputs.get(k) for k in keys)):
                return built
        wanted = ", ".join(f"{k}: ${{steps.<id>.outputs.{k}}}" for k in keys)
        raise StepFailed(
            f"the built-in workflow {name!r} takes only inputs the platform planned: {wanted} of a succeeded "
            f"{source_type!r} step of this run for application {self.application!r} in environment "
            f"{self.environment!r} (its inputs name something else)", kind="untrusted_inputs", retryable=False)

    def _stage_starts(self, now) -> list[tuple]:
        starts = []
        running = len(self.tasks)
        ready = [(k, r) for k, r in self.rows.items() if r["state"] == READY and r["kind"] == "step"
                 and (r["next_attempt_at"] is None or _aware(r["next_attempt_at"]) <= now)]
        ready.sort(key=lambda kr: (kr[1]["position"], kr[0][1]))
        for key, _row in ready:
            if self.concurrency and running >= self.concurrency:
                break
            if self.s._active_steps >= self.s.max_concurrent_steps:
                break
            start = self._start_one(key, now)
            if start is not None:
                starts.append(start)
                running += 1
        return starts

    # ---------------------------------------------------------------- attempts

    def _spawn(self, key, step: StepDef, attempt: int, inputs: dict) -> None:
        cancelled = asyncio.Event()
        self.cancel_events[key] = cancelled
        sid = key[0]

        async def emit(message: str) -> None:
            self.logs.append((sid, str(message)))

        ctx = StepContext(
            run_id=self.run_id, step_id=sid, attempt=attempt, idempotency_key=self.rows[key]["idempotency_key"],
            inputs=inputs, cancelled=cancelled, log=emit, services=self.s.services,
            workdir=str(self.s.workdir / self.run_id / (sid.replace("/", "_") + (f"-{key[1]}" if key[1] else ""))),
        )
        self.tasks[key] = asyncio.create_task(self._attempt(key, step, attempt, ctx), name=f"step-{self.run_id}-{sid}-{key[1]}")

    async def _attempt(self, key, step: StepDef, attempt: int, ctx: StepContext) -> None:
        outcome, value = "fail", None
        try:
            executor = self.s._executor(step.type)
            if executor is None:
                raise StepFailed(f"no executor for step type {step.type!r}", kind="unknown_type", retryable=False)
            Path(ctx.workdir).mkdir(parents=True, exist_ok=True)
            if step.timeout:
                try:
                    value = await asyncio.wait_for(executor.run(ctx), timeout=step.timeout)
                except asyncio.TimeoutError:
                    raise StepFailed(f"timed out after {step.timeout}s", kind="timeout") from None
            else:
                value = await executor.run(ctx)
            outcome, value = "ok", (value if value is not None else {})
        except asyncio.CancelledError:
            outcome, value = "cancelled", "cancelled"
        except StepFailed as exc:
            outcome, value = ("cancelled", exc.message) if ctx.cancelled.is_set() else ("fail", exc)
        except Exception as exc:  # noqa: BLE001 - any executor error is a failed attempt
            if _is_approval(exc):
                outcome, value = "approval", str(exc)
            elif ctx.cancelled.is_set():
                outcome, value = "cancelled", f"{type(exc).__name__}: {exc}"
            else:
                message = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
                outcome, value = "fail", StepFailed(message, kind=getattr(exc, "kind", None) or "error",
                                                    retryable=getattr(exc, "retryable", True))
        finally:
            self.tasks.pop(key, None)
            self.cancel_events.pop(key, None)
            self.s._active_steps -= 1
            self.results.append((key, attempt, outcome, value))
            self.wake.set()

    async def _stop_tasks(self, grace: float) -> None:
        for event in self.cancel_events.values():
            event.set()
        tasks = list(self.tasks.values())
        if not tasks:
            return
        if grace > 0:
            await asyncio.wait(tasks, timeout=grace)
        for task in tasks:
            if not task.done():
                task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # ---------------------------------------------------------------- endings

    async def _cancel_all(self) -> bool:
        await self._stop_tasks(self.s.cancel_grace)
        now = times.now()
        taken = list(self.results)
        for key, attempt, outcome, value in taken:
            self._stage_result(key, attempt, outcome if outcome == "ok" else "cancelled", value, now)
        children = []
        for key, row in list(self.rows.items()):
            if key in self.staged:
                continue
            if row["state"] == RUNNING and row["child_run_id"]:
                children.append(row["child_run_id"])
            if row["state"] in (PENDING, READY, WAITING_APPROVAL) or (row["state"] == RUNNING and row["child_run_id"]):
                self._stage(key, dict(state=CANCELLED, ended_at=now, error="run cancelled", error_kind="cancelled"),
                            ("step.cancelled", "run cancelled"))
        await self._commit([("run.cancelled", None, "run cancelled")], release=True,
                           run_values=dict(state=CANCELLED, ended_at=now, wake_at=None, error="cancelled",
                                           version=runs_t.c.version + 1))
        for entry in taken:
            self.results.remove(entry)
        for child in children:
            try:
                await self.s.cancel(child)
            except Exception:  # noqa: BLE001 - the child may have finished meanwhile
                pass
        return True

    async def _compensate_or_finish(self, failing: str, now, taken) -> bool:
        """The run failed and nothing runs: cancel what never started, then run the
        ``on_failure`` steps of completed steps, latest completion first, one at a time;
        when all are final, mark the compensated steps and fail the run."""
        for key, row in list(self.rows.items()):
            if row["kind"] == "step" and (row["state"] in (PENDING, READY, WAITING_APPROVAL)
                                          or (row["state"] == RUNNING and row["child_run_id"])):
                self._stage(key, dict(state=CANCELLED, ended_at=now, error=f"not run: {failing}", error_kind="cancelled"),
                            ("step.cancelled", f"not run: {failing}"))
        comp_rows = {k: r for k, r in self.rows.items() if r["kind"] == "compensation"}
        extra: list[tuple] = []
        if not comp_rows:
            completed = sorted(
                [r for r in self.rows.values() if r["kind"] == "step" and r["state"] == SUCCEEDED
                 and self.stepdefs[r["step_id"]].on_failure],
                key=lambda r: -(r["completion_seq"] or 0),
            )
            position = 100000
            for r in completed:
                for comp in self.stepdefs[r["step_id"]].on_failure:
                    cid = f"{r['step_id']}/on_failure/{comp.id}"
                    self._stage((cid, r["iteration"]), dict(
                        position=position, type=comp.type, kind="compensation", state=PENDING, attempts=0,
                        idempotency_key=_key_for(self.run_id, cid, r["iteration"]), item=r["item"],
                        items_total=r["items_total"], outputs={}, error="", error_kind="", next_attempt_at=now), insert=True)
                    position += 1
            if completed:
                extra.append(("run.compensating", None, f"{failing}; compensating " + ", ".join(
                    r["step_id"] + (f"[{r['iteration']}]" if r["items_total"] is not None else "") for r in completed)))
            comp_rows = {k: r for k, r in self.rows.items() if r["kind"] == "compensation"}
        pending = sorted([(k, r) for k, r in comp_rows.items() if r["state"] not in STEP_FINAL],
                         key=lambda kr: kr[1]["position"])
        run_values, release, starts = None, False, []
        if pending:
            key, row = pending[0]
            if row["state"] == PENDING:
                self._stage(key, dict(state=READY, next_attempt_at=now))
            due = _aware(row["next_attempt_at"])
            if row["state"] == READY and (due is None or due <= now):
                start = self._start_one(key, now)
                if start is not None:
                    starts.append(start)
        else:
            comp_failed, by_original = [], {}
            for key, row in comp_rows.items():
                by_original.setdefault((key[0].split("/on_failure/")[0], key[1]), []).append(row["state"])
                if row["state"] != SUCCEEDED:
                    comp_failed.append(f"{key[0]}: {row['error']}")
            for original, states in by_original.items():
                if all(st == SUCCEEDED for st in states) and self.rows.get(original, {}).get("state") == SUCCEEDED:
                    self._stage(original, dict(state=COMPENSATED), ("step.compensated", "compensated"))
            failed = sorted([r for r in self.rows.values() if r["kind"] == "step" and r["state"] == FAILED],
                            key=lambda r: _aware(r["ended_at"]) or now)
            if failing == "run deadline exceeded" or not failed:
                error = failing
            else:
                error = f"step {failed[0]['step_id']!r} failed: {failed[0]['error']}"
            if comp_failed:
                error += "; compensation failed: " + "; ".join(comp_failed)
            run_values = dict(state=FAILED, error=error, ended_at=now, wake_at=None, version=runs_t.c.version + 1)
            extra.append(("run.failed", None, error))
            release = True
        await self._commit_pass(extra, run_values, release, starts)
        return self._after_commit(taken, starts, release)

    async def _commit_pass(self, extra, run_values, release, starts) -> None:
        """Commit what this pass decided; the step slots reserved for ``starts`` are given
        back when the commit fails, since those attempts never began."""
        try:
            await self._commit(extra, run_values=run_values, release=release)
        except BaseException:
            self.s._active_steps -= len(starts)
            raise

    def _after_commit(self, taken, starts, release):
        """Only once the pass is committed: drop the results it recorded and start the
        attempts it marked RUNNING."""
        for entry in taken:
            self.results.remove(entry)
        for key, step, attempt, inputs in starts:
            self._spawn(key, step, attempt, inputs)
        return release
