"""Operations on runs: cancel, retry, pause, resume, approve/reject a gate, the event stream.

:class:`RunOperations` is a mixin of the engine's gRPC servicer (``EngineServicer``); it only
talks to the scheduler's public API (``self.scheduler``, else ``self.runtime.state
["scheduler"]``): ``get_run``, ``cancel``, ``retry``, ``pause``, ``resume``, ``approve``,
``reject`` and ``events``. The interceptors already did the rest before a handler runs:
every mutation here is a ``mutation: true`` RPC in the proto, so it was decided by the
policy engine (``runs.cancel``, ``runs.retry``, ``runs.pause``, ``runs.resume``,
``runs.approve``) and is recorded in the audit chain whatever its outcome.

Approving a gate takes two checks:

1. the policy gate: the caller's roles must grant ``runs.approve`` (``policies/``);
2. this module: the caller must be one of the gate's ``approval.approvers`` (the step's
   settings in the run's definition snapshot): ``role:<r>``, ``user:<u>``,
   ``team:<t>``/``group:<t>``, or a bare name matching a role, the username or a team.
   Otherwise ``PERMISSION_DENIED`` / ``NOT_AN_APPROVER``. A gate without approvers may be
   decided by anyone the policy allows;
3. four eyes: a gate with ``approval.allow_self_approval: false`` (every deployment gate)
   may not be *approved* by the run's creator, who may still reject it:
   ``PERMISSION_DENIED`` / ``SELF_APPROVAL``.

The policy cannot do the second check itself: its input carries the request and the
resource name, not the run's definition.

Errors: an unknown run or step is ``NOT_FOUND``; an operation the run's state does not
allow is ``FAILED_PRECONDITION`` naming the state (cancelling a SUCCEEDED run, approving a
step that is not WAITING_APPROVAL, retrying a run that did not fail, ...).
"""

from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator


from innominatus.engine.v1 import engine_pb2
from innominatus.kit import context as reqctx
from innominatus.kit import db as kitdb
from innominatus.kit import times
from innominatus.kit.errors import FailedPrecondition, InnominatusError, InvalidArgument, NotFound, PermissionDenied

ACTIVE = ("PENDING", "RUNNING")
TERMINAL = ("SUCCEEDED", "FAILED", "CANCELLED")
RETRYABLE = ("FAILED", "CANCELLED")
WAITING_APPROVAL = "WAITING_APPROVAL"

# How often a followed stream looks for new events.
STREAM_POLL_SECONDS = 0.2
STREAM_BATCH = 500

# Raw step states the coarse mapping of the Run view hides; shown precisely here.
# The run's state after an event of this kind (other kinds leave it as it was).
_STATE_AFTER = {
    "run.created": "PENDING",
    "run.retried": "PENDING",
    "run.succeeded": "SUCCEEDED",
    "run.failed": "FAILED",
    "run.cancelled": "CANCELLED",
}


# --------------------------------------------------------------------------- names


def run_id_of(name: str) -> str:
    """``runs/{id}`` -> id (a bare id is accepted too)."""
    run_id = name.removeprefix("runs/") if name.startswith("runs/") else name
    if not run_id or "/" in run_id:
        raise InvalidArgument(f"run name {name!r} is not of the form runs/{{id}}", reason="INVALID_RUN_NAME")
    return run_id


def step_of(name: str) -> tuple[str, str]:
    """``runs/{id}/steps/{step}`` -> (id, step)."""
    parts = name.split("/")
    if len(parts) != 4 or parts[0] != "runs" or parts[2] != "steps" or not parts[1] or not parts[3]:
        raise InvalidArgument(f"step name {name!r} is not of the form runs/{{id}}/steps/{{step}}", reason="INVALID_STEP_NAME")
    return parts[1], parts[3]


# --------------------------------------------------------------------------- the Run view


def _definition_steps(definition: Any) -> dict[str, dict]:
    steps = (definition or {}).get("steps") or [] if isinstance(definition, dict) else []
    return {s.get("id"): s for s in steps if isinstance(s, dict)}


def gate_approvers(definition: Any, step_id: str, params: dict | None = None) -> list[str]:
    """Who may decide the gate ``step_id``: its ``approval.approvers`` (else ``with.approvers``)."""
    step = _definition_steps(definition).get(step_id) or {}
    approval = step.get("approval") or {}
    approvers = approval.get("approvers") if isinstance(approval, dict) else None
    if approvers is None:
        approvers = (step.get("with_") or {}).get("approvers")
    if approvers is None:
        return []
    if isinstance(approvers, str) and approvers.startswith("${"):
        approvers = _resolve(approvers, params or {})
    if not isinstance(approvers, (list, tuple)):
        approvers = [approvers]
    out = []
    for entry in approvers:
        if isinstance(entry, str) and "${" in entry:
            entry = _resolve(entry, params or {})
        if isinstance(entry, (list, tuple)):
            out.extend(str(e) for e in entry)
        elif entry is not None:
            out.append(str(entry))
    return out


def gate_allows_self_approval(definition: Any, step_id: str) -> bool:
    """False when the gate ``step_id`` says ``approval.allow_self_approval: false``."""
    approval = (_definition_steps(definition).get(step_id) or {}).get("approval")
    return not (isinstance(approval, dict) and approval.get("allow_self_approval") is False)


def _resolve(value: str, params: dict) -> Any:
    try:
        from innominatus.engine.scheduler import resolve_value  # noqa: PLC0415

        return resolve_value(value, {"params": params, "workflow": {}, "steps": {}, "variables": {}})
    except Exception:  # noqa: BLE001 - an unresolvable entry matches nobody
        return value


def is_approver(subject, approvers: list[str]) -> bool:
    """Whether ``subject`` is named by one of ``approvers`` (see the module docstring)."""
    if not approvers:
        return True
    if subject is None:
        return False
    roles = set(subject.roles)
    teams = set(subject.teams) | {t.removeprefix("teams/") for t in subject.teams}
    for entry in approvers:
        kind, sep, value = entry.partition(":")
        if not sep:
            kind, value = "", entry
        kind = kind.strip().lower()
        value = value.strip()
        if kind == "role" and value in roles:
            return True
        if kind == "user" and value == subject.username:
            return True
        if kind in ("team", "group") and value in teams:
            return True
        if kind == "" and (value in roles or value == subject.username or value in teams):
            return True
    return False


def decorate(run: engine_pb2.Run, row, steps) -> engine_pb2.Run:
    """Add what the basic Run view leaves out: paused, each step's id, iteration, edges,
    duration, approvers and its precise state. ``steps`` in the order of ``run.steps``."""
    run.paused = bool(getattr(row, "paused", False))
    definition = getattr(row, "definition", None) or {}
    by_id = _definition_steps(definition)
    now = times.now()
    for proto, srow in zip(run.steps, steps):
        proto.step_id = srow.step_id
        proto.iteration = srow.iteration or 0
        spec = by_id.get(srow.step_id) or {}
        del proto.depends_on[:]
        proto.depends_on.extend(str(d) for d in spec.get("depends_on") or ())
        del proto.approvers[:]
        if srow.type == "approval" or spec.get("approval"):
            proto.approvers.extend(gate_approvers(definition, srow.step_id, getattr(row, "inputs", None)))
        if srow.started_at is not None:
            start = times.utc(srow.started_at)
            end = times.utc(srow.ended_at) if srow.ended_at is not None else (now if srow.state == "RUNNING" else None)
            if end is not None and end >= start:
                proto.duration.FromTimedelta(end - start)
    return run


# --------------------------------------------------------------------------- the mixin


class RunOperations:
    """gRPC handlers for the run operations; mixed into ``EngineServicer``."""

    scheduler: Any
    runtime: Any

    # -- helpers

    def _sched(self):
        scheduler = getattr(self, "scheduler", None)
        if scheduler is None:
            scheduler = self.runtime.state["scheduler"]
        return scheduler

    @staticmethod
    def _who() -> str:
        ctx = reqctx.current()
        return ctx.subject.actor if ctx is not None and ctx.subject is not None else ""

    async def _call(self, operation, *args, **kwargs):
        """Call the scheduler, mapping its errors onto the kit's typed errors."""
        try:
            return await operation(*args, **kwargs)
        except InnominatusError:
            raise
        except (LookupError,) as exc:
            raise NotFound(str(exc) or "not found", reason="RUN_NOT_FOUND") from exc
        except (ValueError, RuntimeError) as exc:
            raise FailedPrecondition(str(exc), reason="RUN_STATE") from exc

    @staticmethod
    def _session():
        """The RPC's own transaction, so a change to a run commits with its audit event (None
        in a stream, which has no unit of work)."""
        try:
            return kitdb.session()
        except RuntimeError:
            return None

    async def _load(self, run_id: str):
        run, steps = await self._call(self._sched().get_run, run_id, session=self._session())
        if run is None:
            raise NotFound(f"run 'runs/{run_id}' not found", reason="RUN_NOT_FOUND")
        return run, list(steps)

    async def _view(self, run_id: str) -> engine_pb2.Run:
        from innominatus.engine.service import _run_proto  # noqa: PLC0415 - service imports this module

        row, steps = await self._load(run_id)
        run = _run_proto(row, steps)
        blocker = await self._waiting_for(row)
        if blocker is not None:
            run.waiting_for = f"runs/{blocker.id}"
        return run

    async def _waiting_for(self, row):
        """The run of its concurrency group a PENDING run waits for (None: it does not wait)."""
        from innominatus.engine.scheduler import group_blocker  # noqa: PLC0415 - like _resolve

        if getattr(row, "state", "") != "PENDING" or not getattr(row, "concurrency_key", None):
            return None  # nothing to look up
        session = self._session()
        if session is None:
            return await self._sched().waiting_for(row)
        return await group_blocker(session, row)

    # -- run-level operations

    async def CancelRun(self, request, context):
        run_id = run_id_of(request.name)
        row, _ = await self._load(run_id)
        if row.state not in ACTIVE:
            raise FailedPrecondition(
                f"run runs/{run_id} is {row.state}; only a PENDING or RUNNING run can be cancelled",
                reason="RUN_ALREADY_ENDED", metadata={"state": row.state},
            )
        await self._call(self._sched().cancel, run_id, self._who(), session=self._session())
        return engine_pb2.CancelRunResponse(run=await self._view(run_id))

    async def RetryRun(self, request, context):
        run_id = run_id_of(request.name)
        row, _ = await self._load(run_id)
        if row.state not in RETRYABLE:
            raise FailedPrecondition(
                f"run runs/{run_id} is {row.state}; only a FAILED or CANCELLED run can be retried",
                reason="RUN_NOT_FAILED", metadata={"state": row.state},
            )
        await self._call(self._sched().retry, run_id, self._who(), session=self._session())
        return engine_pb2.RetryRunResponse(run=await self._view(run_id))

    async def PauseRun(self, request, context):
        run_id = run_id_of(request.name)
        row, _ = await self._load(run_id)
        if row.state not in ACTIVE:
            raise FailedPrecondition(
                f"run runs/{run_id} is {row.state}; only a PENDING or RUNNING run can be paused",
                reason="RUN_ALREADY_ENDED", metadata={"state": row.state},
            )
        if getattr(row, "paused", False):
            raise FailedPrecondition(f"run runs/{run_id} is already paused", reason="RUN_ALREADY_PAUSED",
                                     metadata={"state": row.state})
        await self._call(self._sched().pause, run_id, self._who(), session=self._session())
        return engine_pb2.PauseRunResponse(run=await self._view(run_id))

    async def ResumeRun(self, request, context):
        run_id = run_id_of(request.name)
        row, _ = await self._load(run_id)
        if row.state not in ACTIVE:
            raise FailedPrecondition(
                f"run runs/{run_id} is {row.state}; only a paused PENDING or RUNNING run can be resumed",
                reason="RUN_ALREADY_ENDED", metadata={"state": row.state},
            )
        if not getattr(row, "paused", False):
            raise FailedPrecondition(f"run runs/{run_id} is {row.state} and not paused", reason="RUN_NOT_PAUSED",
                                     metadata={"state": row.state})
        await self._call(self._sched().resume, run_id, self._who(), session=self._session())
        return engine_pb2.ResumeRunResponse(run=await self._view(run_id))

    # -- approval gates

    async def _gate(self, name: str, *, approving: bool) -> tuple[str, str]:
        run_id, step_id = step_of(name)
        row, steps = await self._load(run_id)
        mine = [s for s in steps if s.step_id == step_id]
        if not mine:
            raise NotFound(f"run runs/{run_id} has no step {step_id!r}", reason="STEP_NOT_FOUND")
        waiting = [s for s in mine if s.state == WAITING_APPROVAL]
        if not waiting:
            states = ", ".join(sorted({s.state for s in mine}))
            raise FailedPrecondition(
                f"step {step_id!r} of run runs/{run_id} is {states}, not WAITING_APPROVAL; only a waiting gate can be decided",
                reason="NOT_WAITING_FOR_APPROVAL", metadata={"state": states, "run_state": row.state},
            )
        approvers = gate_approvers(getattr(row, "definition", None), step_id, getattr(row, "inputs", None))
        ctx = reqctx.current()
        subject = ctx.subject if ctx is not None else None
        if not is_approver(subject, approvers):
            who = subject.username if subject is not None else "the caller"
            raise PermissionDenied(
                f"{who} is not an approver of step {step_id!r} of run runs/{run_id}; approvers: {', '.join(approvers)}",
                reason="NOT_AN_APPROVER", metadata={"approvers": ",".join(approvers)},
            )
        if approving and not gate_allows_self_approval(getattr(row, "definition", None), step_id) \
                and subject is not None and row.creator and subject.actor == row.creator:
            raise PermissionDenied(
                f"{subject.username} started run runs/{run_id} and may not approve its step {step_id!r} "
                f"(four eyes); ask another approver ({', '.join(approvers) or 'anyone the policy allows'}), "
                "or reject it",
                reason="SELF_APPROVAL", metadata={"approvers": ",".join(approvers)},
            )
        return run_id, step_id

    async def ApproveStep(self, request, context):
        run_id, step_id = await self._gate(request.name, approving=True)
        await self._call(self._sched().approve, run_id, step_id, self._who(), request.reason, session=self._session())
        return engine_pb2.ApproveStepResponse(run=await self._view(run_id))

    async def RejectStep(self, request, context):
        run_id, step_id = await self._gate(request.name, approving=False)
        await self._call(self._sched().reject, run_id, step_id, self._who(), request.reason, session=self._session())
        return engine_pb2.RejectStepResponse(run=await self._view(run_id))

    # -- the event stream

    async def _state_before(self, run_id: str, after_seq: int, current: str) -> str:
        """The run's state as of event ``after_seq`` (replaying the run-level events)."""
        if after_seq <= 0:
            return "PENDING"
        state = "PENDING"
        seen = 0
        while seen < after_seq:
            batch = await self._call(self._sched().events, run_id, seen, STREAM_BATCH)
            if not batch:
                return current
            for event in batch:
                if event["seq"] > after_seq:
                    return state
                state = _STATE_AFTER.get(event["kind"], state)
                if state == "PENDING" and str(event["kind"]).startswith("step."):
                    state = "RUNNING"
                seen = event["seq"]
        return state

    async def StreamRunEvents(self, request, context) -> AsyncIterator[engine_pb2.StreamRunEventsResponse]:
        run_id = run_id_of(request.name)
        scheduler = self._sched()
        row, _ = await self._load(run_id)
        after = max(int(request.after_seq), 0)
        state = await self._state_before(run_id, after, row.state)
        while True:
            batch = await self._call(scheduler.events, run_id, after, STREAM_BATCH)
            for event in batch:
                kind = str(event["kind"])
                state = _STATE_AFTER.get(kind, state)
                if state == "PENDING" and kind.startswith("step."):
                    state = "RUNNING"
                message = engine_pb2.RunEvent(
                    seq=int(event["seq"]), kind=kind, step=event.get("step_id") or "",
                    message=event.get("message") or "", state=engine_pb2.RunState.Value(f"RUN_STATE_{state}"),
                )
                if event.get("time") is not None:
                    times.set_time(message.time, event["time"])
                after = int(event["seq"])
                yield engine_pb2.StreamRunEventsResponse(event=message)
            if len(batch) >= STREAM_BATCH:
                continue
            if request.snapshot:
                return
            row, _ = await self._load(run_id)
            if row.state in TERMINAL and after >= int(getattr(row, "event_seq", after) or 0):
                # Everything up to the end was sent (a last look catches a late event).
                if not await self._call(scheduler.events, run_id, after, 1):
                    return
                continue
            await asyncio.sleep(STREAM_POLL_SECONDS)


__all__ = ["RunOperations", "decorate", "gate_approvers", "is_approver", "run_id_of", "step_of"]
