"""The engine service: starts workflow runs and executes their steps, recording each one.

A run is committed with all its steps PENDING before anything executes; the worker then
commits every state change before acting on the next, so the record always shows how far
a run got.
"""

from __future__ import annotations

import asyncio
import uuid

from google.protobuf import json_format
from sqlalchemy import event, select, update

from innominatus.engine import models
from innominatus.engine.v1 import engine_pb2, engine_pb2_grpc
from innominatus.engine.workflows import WORKFLOWS, StepContext
from innominatus.kit import context as reqctx
from innominatus.kit import db
from innominatus.kit.errors import InnominatusError, InvalidArgument, NotFound
from innominatus.kit.logs import get_logger
from innominatus.kit.pagination import page_of
from innominatus.kit.server import Runtime, ServiceDefinition
from innominatus.kit import times

log = get_logger(__name__)

PENDING, RUNNING, SUCCEEDED, FAILED, CANCELLED = "PENDING", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED"


async def load_run(session, run_id: str) -> engine_pb2.Run | None:
    row = (await session.execute(select(models.runs).where(models.runs.c.id == run_id))).one_or_none()
    if row is None:
        return None
    steps = (
        await session.execute(
            select(models.steps).where(models.steps.c.run_id == run_id).order_by(models.steps.c.position)
        )
    ).all()
    return _run_proto(row, steps)


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
    )
    times.set_time(run.create_time, row.created_at)
    times.set_time(run.update_time, row.updated_at)
    for s in steps:
        step = run.steps.add(
            name=s.name,
            type=s.type,
            state=engine_pb2.StepState.Value(f"STEP_STATE_{s.state}"),
            attempts=s.attempts,
            message=s.message,
        )
        times.set_time(step.start_time, s.started_at)
        times.set_time(step.end_time, s.ended_at)
        if s.outputs:
            step.outputs.update(s.outputs)
    return run


class RunWorker:
    """Executes pending runs one step at a time, committing each transition."""

    def __init__(self, runtime: Runtime, poll_interval: float = 0.5) -> None:
        self.runtime = runtime
        self.poll_interval = poll_interval
        self.wakeup = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._stopping = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="engine-worker")

    async def stop(self) -> None:
        self._stopping = True
        self.wakeup.set()
        if self._task is not None:
            await self._task

    async def _claim(self) -> str | None:
        runs = models.runs
        async with self.runtime.db.transaction() as s:
            query = select(runs.c.id).where(runs.c.state == PENDING).order_by(runs.c.created_at).limit(1)
            if self.runtime.db.is_postgres:
                query = query.with_for_update(skip_locked=True)
            run_id = (await s.execute(query)).scalar_one_or_none()
            if run_id is None:
                return None
            await s.execute(
                update(runs).where(runs.c.id == run_id).values(state=RUNNING, updated_at=times.now(), version=runs.c.version + 1)
            )
            return run_id

    async def _loop(self) -> None:
        while not self._stopping:
            try:
                run_id = await self._claim()
                if run_id is not None:
                    await self.execute(run_id)
                    continue
            except Exception:  # noqa: BLE001 - the worker must survive a bad run
                log.exception("engine worker failed; continuing")
            try:
                await asyncio.wait_for(self.wakeup.wait(), timeout=self.poll_interval)
            except asyncio.TimeoutError:
                pass
            self.wakeup.clear()

    async def execute(self, run_id: str) -> None:
        database = self.runtime.db
        runs, steps = models.runs, models.steps
        async with database.transaction() as s:
            run = (await s.execute(select(runs).where(runs.c.id == run_id))).one()
            step_rows = (await s.execute(select(steps).where(steps.c.run_id == run_id).order_by(steps.c.position))).all()
        definition = {d.name: d for d in WORKFLOWS[run.workflow]}
        outputs = {r.name: r.outputs for r in step_rows if r.state == SUCCEEDED}
        for row in step_rows:
            if row.state == SUCCEEDED:
                continue  # done in an earlier attempt: never repeat a completed step
            key = (steps.c.run_id == run_id) & (steps.c.position == row.position)
            async with database.transaction() as s:
                await s.execute(
                    update(steps).where(key).values(state=RUNNING, attempts=steps.c.attempts + 1, started_at=times.now())
                )
            ctx = StepContext(
                run_id=run_id,
                application=run.application,
                environment=run.environment,
                inputs=run.inputs or {},
                outputs=outputs,
                data_dir=self.runtime.settings.data_dir / "engine",
            )
            try:
                result = await definition[row.name].run(ctx)
            except Exception as exc:  # noqa: BLE001 - a failed step fails the run, with the reason
                message = exc.message if isinstance(exc, InnominatusError) else f"{type(exc).__name__}: {exc}"
                log.warning("step failed", run=run_id, step=row.name, error=message)
                async with database.transaction() as s:
                    await s.execute(update(steps).where(key).values(state=FAILED, message=message, ended_at=times.now()))
                    await s.execute(
                        update(runs)
                        .where(runs.c.id == run_id)
                        .values(state=FAILED, error=f"step {row.name!r} failed: {message}", updated_at=times.now(),
                                version=runs.c.version + 1)
                    )
                return
            outputs[row.name] = result
            async with database.transaction() as s:
                await s.execute(update(steps).where(key).values(state=SUCCEEDED, outputs=result, ended_at=times.now()))
        async with database.transaction() as s:
            await s.execute(
                update(runs).where(runs.c.id == run_id).values(state=SUCCEEDED, updated_at=times.now(), version=runs.c.version + 1)
            )
        log.info("run succeeded", run=run_id, workflow=run.workflow)


class EngineServicer(engine_pb2_grpc.EngineServiceServicer):
    def __init__(self, runtime: Runtime, worker: RunWorker) -> None:
        self.runtime = runtime
        self.worker = worker

    async def StartRun(self, request, context):
        if request.workflow not in WORKFLOWS:
            raise InvalidArgument(
                f"unknown workflow {request.workflow!r}; known workflows: {', '.join(sorted(WORKFLOWS))}",
                reason="UNKNOWN_WORKFLOW",
            )
        session = db.session()
        runs = models.runs
        if request.request_id:
            existing = (
                await session.execute(select(runs.c.id).where(runs.c.request_id == request.request_id))
            ).scalar_one_or_none()
            if existing:
                return engine_pb2.StartRunResponse(run=await load_run(session, existing))
        run_id = uuid.uuid4().hex
        ctx = reqctx.current()
        now = times.now()
        await session.execute(
            runs.insert().values(
                id=run_id,
                workflow=request.workflow,
                application=request.application,
                environment=request.environment,
                inputs=json_format.MessageToDict(request.inputs),
                state=PENDING,
                error="",
                creator=ctx.subject.actor if ctx and ctx.subject else "",
                request_id=request.request_id or None,
                created_at=now,
                updated_at=now,
            )
        )
        for position, step in enumerate(WORKFLOWS[request.workflow]):
            await session.execute(
                models.steps.insert().values(
                    run_id=run_id, position=position, name=step.name, type=step.type, state=PENDING, attempts=0,
                    message="", outputs={},
                )
            )
        # Wake the worker once the run is committed, not before.
        event.listen(session.sync_session, "after_commit", lambda _s: self.worker.wakeup.set(), once=True)
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
                await session.execute(
                    select(models.steps).where(models.steps.c.run_id == row.id).order_by(models.steps.c.position)
                )
            ).all()
            out.append(_run_proto(row, steps))
        return engine_pb2.ListRunsResponse(runs=out, next_page_token=token)


def definition() -> ServiceDefinition:
    def register(server, runtime: Runtime) -> None:
        worker = RunWorker(runtime)
        runtime.state["worker"] = worker
        engine_pb2_grpc.add_EngineServiceServicer_to_server(EngineServicer(runtime, worker), server)

    async def on_start(runtime: Runtime) -> None:
        # Runs a previous process left RUNNING are picked up again; completed steps are
        # skipped by the worker. (Multi-worker leases come with the durable engine.)
        async with runtime.db.transaction() as s:
            await s.execute(update(models.runs).where(models.runs.c.state == RUNNING).values(state=PENDING))
        runtime.state["worker"].start()

    async def on_stop(runtime: Runtime) -> None:
        await runtime.state["worker"].stop()

    return ServiceDefinition(
        name="engine",
        descriptors=[engine_pb2.DESCRIPTOR.services_by_name["EngineService"]],
        register=register,
        outbox_table=models.outbox,
        on_start=on_start,
        on_stop=on_stop,
    )
