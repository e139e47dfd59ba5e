"""The engine service: starts workflow runs; its scheduler executes them durably.

StartRun records the run (definition snapshot, params, one PENDING row per step) in the
RPC's transaction, together with its audit event; the scheduler (``scheduler.py``) then
claims the run with a lease and commits every state change before acting on it. Several
engine processes may serve the same database: their schedulers share the work.
"""

from __future__ import annotations

import os
import socket

from google.protobuf import json_format
from sqlalchemy import event, select

from innominatus.engine import models
from innominatus.engine.app_owners import register_owner_facts
from innominatus.engine.goldenpaths_service import STATE_KEY as GOLDEN_PATHS_STATE
from innominatus.engine.goldenpaths_service import golden_path_descriptor, register_golden_paths, stop_golden_paths
from innominatus.engine.operations import RunOperations, decorate
from innominatus.engine.v1 import engine_pb2, engine_pb2_grpc
from innominatus.engine.scheduler import Scheduler, group_blocker
from innominatus.engine.workflows import WORKFLOWS, builtin_executors, builtin_workflow
from innominatus.kit import context as reqctx
from innominatus.kit import db
from innominatus.kit.errors import InvalidArgument, NotFound, PermissionDenied
from innominatus.kit.names import check_name
from innominatus.kit.logs import get_logger
from innominatus.kit.pagination import page_of
from innominatus.kit.server import Runtime, ServiceDefinition
from innominatus.kit import times
from innominatus.engine.executors.resource import LazyStub, resources_stub

log = get_logger(__name__)

PENDING, RUNNING, SUCCEEDED, FAILED, CANCELLED = "PENDING", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED"


_STEP_STATE = {
    "PENDING": "PENDING", "READY": "PENDING", "RUNNING": "RUNNING", "WAITING_APPROVAL": "WAITING_APPROVAL",
    "SUCCEEDED": "SUCCEEDED", "COMPENSATED": "COMPENSATED", "SKIPPED": "SKIPPED", "FAILED": "FAILED",
    "CANCELLED": "CANCELLED",
}
_STEP_NOTE = {"WAITING_APPROVAL": "waiting for approval", "CANCELLED": "cancelled", "COMPENSATED": "compensated",
              "READY": "waiting to start"}


def _step_order(s):
    return (s.position, s.iteration)


async def load_run(session, run_id: str) -> engine_pb2.Run | None:
    row = (await session.execute(select(models.runs).where(models.runs.c.id == run_id))).one_or_none()
    if row is None:
        return None
    steps = (
        await session.execute(select(models.step_executions).where(models.step_executions.c.run_id == run_id))
    ).all()
    return await with_waiting(session, row, _run_proto(row, sorted(steps, key=_step_order)))


async def with_waiting(session, row, run: engine_pb2.Run) -> engine_pb2.Run:
    """Set ``waiting_for``: the run of its concurrency group a PENDING run waits for."""
    blocker = await group_blocker(session, row)
    if blocker is not None:
        run.waiting_for = f"runs/{blocker.id}"
    return run


def _run_proto(row, steps) -> engine_pb2.Run:
    run = engine_pb2.Run(
        name=f"runs/{row.id}",
        workflow=row.workflow,
        application=row.application,
        environment=row.environment,
        state=engine_pb2.RunState.Value(f"RUN_STATE_{row.state}"),
        creator=row.creator,
        error=row.error,
        etag=f'W/"{row.version}"',
        concurrency_group=getattr(row, "concurrency_key", None) or "",
    )
    times.set_time(run.create_time, row.created_at)
    times.set_time(run.update_time, row.updated_at)
    for s in steps:
        name = s.step_id if s.items_total is None or s.kind != "step" else f"{s.step_id}[{s.iteration}]"
        note = _STEP_NOTE.get(s.state, "")
        message = s.error if s.state in ("FAILED", "CANCELLED", "WAITING_APPROVAL") and s.error else note
        step = run.steps.add(
            name=name,
            type=s.type,
            state=engine_pb2.StepState.Value(f"STEP_STATE_{_STEP_STATE.get(s.state, 'PENDING')}"),
            attempts=s.attempts,
            message=message or "",
        )
        times.set_time(step.start_time, s.started_at)
        times.set_time(step.end_time, s.ended_at)
        if isinstance(s.outputs, dict) and s.outputs:
            step.outputs.update(s.outputs)
    return decorate(run, row, steps)


def specs_stub(peers) -> LazyStub:
    """``SpecsServiceStub`` on the specs service's peer channel, opened on first use (the deploy
    workflow's render step calls ``FinalizeDeployment`` as the engine)."""

    def make():
        from innominatus.specs.v1.specs_pb2_grpc import SpecsServiceStub  # noqa: PLC0415

        return peers.stub("specs", SpecsServiceStub)

    return LazyStub(make)


def _executors(runtime: Runtime):
    """Built-in workflow steps first, then the pluggable registry when it is installed."""
    builtin = builtin_executors(runtime.settings.data_dir / "engine")
    try:
        from innominatus.engine.executors import default_registry  # noqa: PLC0415 - optional until it lands

        registry = default_registry()
    except Exception:  # noqa: BLE001
        registry = None

    def lookup(step_type: str):
        if step_type in builtin:
            return builtin[step_type]
        if registry is None:
            return None
        try:
            return registry.get(step_type)
        except Exception:  # noqa: BLE001 - unknown type: the step fails with a clear message
            return None

    return lookup


class EngineServicer(RunOperations, engine_pb2_grpc.EngineServiceServicer):
    # RunOperations first: its handlers must win over the generated UNIMPLEMENTED stubs.
    def __init__(self, runtime: Runtime, scheduler: Scheduler) -> None:
        self.runtime = runtime
        self.scheduler = scheduler

    async def StartRun(self, request, context):
        ctx = reqctx.current()
        session = db.session()
        creator = ctx.subject.actor if ctx and ctx.subject else ""
        if request.workflow in WORKFLOWS:
            # Built-in workflows take inputs prepared by a platform service (a deployment's
            # validated workload), so only that service may start them.
            if ctx is None or ctx.peer is None or ctx.peer.service != "specs":
                raise PermissionDenied(
                    f"the {request.workflow!r} workflow is started by the platform itself "
                    "(e.g. `innominatus deploy`); start golden paths here (innominatus goldenpaths list)",
                    reason="BUILTIN_WORKFLOW",
                )
            for value, field in ((request.application, "application"), (request.environment, "environment")):
                check_name(value, field)
            inputs = json_format.MessageToDict(request.inputs)
            # Built per run from its inputs (a deploy run gets one provision step per claimed
            # resource); the run stores this definition, so a resumed run keeps its steps.
            # Deploys (and removals) of one application in one environment run one at a time,
            # in the order they were started: an older run's steps never interleave with a
            # newer one's (e.g. its release of a resource the newer version claims again).
            run_id = await self.scheduler.create_run(
                session, builtin_workflow(request.workflow, inputs), inputs,
                application=request.application, environment=request.environment, creator=creator,
                request_id=request.request_id or None,
                concurrency_key=f"{request.application}/{request.environment}",
            )
            # Wake the scheduler once the run is committed, not before.
            event.listen(session.sync_session, "after_commit", lambda _s: self.scheduler.wakeup.set(), once=True)
            return engine_pb2.StartRunResponse(run=await load_run(session, run_id))
        paths = self.runtime.state.get(GOLDEN_PATHS_STATE)
        if paths is not None and request.workflow:
            # Right after start the catalog may still be loading (specs' DeleteApplication starts
            # `undeploy-app` here): wait for it as RunGoldenPath does, not "unknown workflow".
            await paths.ready()
        definition = self.scheduler.find_workflow(request.workflow) if request.workflow else None
        if definition is None:
            raise InvalidArgument(
                f"unknown workflow {request.workflow!r}: start a golden path (innominatus goldenpaths list)",
                reason="UNKNOWN_WORKFLOW",
            )
        # Catalog workflows start exactly as RunGoldenPath starts them: typed params bound,
        # an ephemeral environment's expiry recorded with the run.
        run_id, _expires = await self.runtime.state[GOLDEN_PATHS_STATE].start_run(
            session, self.scheduler, definition, json_format.MessageToDict(request.inputs),
            application=request.application, environment=request.environment, creator=creator,
            request_id=request.request_id or None,
        )
        return engine_pb2.StartRunResponse(run=await load_run(session, run_id))

    async def GetRun(self, request, context):
        run_id = request.name.removeprefix("runs/")
        run = await load_run(db.session(), run_id) if run_id else None
        if run is None:
            raise NotFound(f"run {request.name!r} not found", reason="RUN_NOT_FOUND")
        return engine_pb2.GetRunResponse(run=run)

    async def ListRuns(self, request, context):
        runs = models.runs
        query = select(runs)
        if request.application:
            query = query.where(runs.c.application == request.application.removeprefix("applications/"))
        session = db.session()
        rows, token = await page_of(session, query, runs.c.created_at, runs.c.id, request.page_size, request.page_token)
        out = []
        for row in rows:
            steps = (
                await session.execute(select(models.step_executions).where(models.step_executions.c.run_id == row.id))
            ).all()
            out.append(await with_waiting(session, row, _run_proto(row, sorted(steps, key=_step_order))))
        return engine_pb2.ListRunsResponse(runs=out, next_page_token=token)


def definition() -> ServiceDefinition:
    def register(server, runtime: Runtime) -> None:
        scheduler = Scheduler(
            runtime.db,
            _executors(runtime),
            worker_id=f"{socket.gethostname()}:{os.getpid()}",
            lease_seconds=float(os.environ.get("INNOMINATUS_ENGINE_LEASE_SECONDS", "15")),
            poll_interval=float(os.environ.get("INNOMINATUS_ENGINE_POLL_SECONDS", "0.5")),
            workflows=WORKFLOWS,
            workdir=runtime.settings.data_dir / "engine" / "work",
            # `policy` steps ask the same policy engine that gates this service's RPCs.
            services={"policy": runtime.policy_engine, "resources": resources_stub(runtime.peers),
                      "specs": specs_stub(runtime.peers)},
        )
        runtime.state["scheduler"] = scheduler
        engine_pb2_grpc.add_EngineServiceServicer_to_server(EngineServicer(runtime, scheduler), server)
        register_golden_paths(server, runtime)
        # Runs against a team's application: the policy needs its owner, which specs knows.
        register_owner_facts(runtime, specs_stub(runtime.peers))

    async def on_start(runtime: Runtime) -> None:
        # Runs another (or a previous) process left unfinished are resumed through their
        # leases: once a lease expires, any engine process claims the run again.
        runtime.state["scheduler"].start()

    async def on_stop(runtime: Runtime) -> None:
        await stop_golden_paths(runtime)
        await runtime.state["scheduler"].stop()

    return ServiceDefinition(
        name="engine",
        descriptors=[engine_pb2.DESCRIPTOR.services_by_name["EngineService"], golden_path_descriptor()],
        register=register,
        outbox_table=models.outbox,
        on_start=on_start,
        on_stop=on_stop,
    )
