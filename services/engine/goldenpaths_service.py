"""GoldenPathService: the golden-path catalog over gRPC (REST through the gateway), served by the engine.

List and Get read the catalog (``catalog.py``); RunGoldenPath binds the params (defaults,
validation: a ParamsError is INVALID_ARGUMENT with one field violation per param) and creates
the run in the RPC's own transaction -- with its audit event, and for an ephemeral path its
expiry -- through the engine's scheduler; PublishGoldenPath stores a new version. The two
mutations are policy-gated by their proto options (``goldenpaths.run``,
``goldenpaths.publish``) and audited by the service kit; handlers hold no authorization code.

Wiring, from the engine's ``definition()`` (service.py), once the scheduler exists::

    register_golden_paths(server, runtime)          # in register(), after runtime.state["scheduler"] is set
    descriptors=[..., golden_path_descriptor()]     # in ServiceDefinition
    await stop_golden_paths(runtime)                 # in on_stop(), before the scheduler stops

``register_golden_paths`` starts loading the catalog and the TTL sweeper in the background
(RPCs wait for the first load), and lets the scheduler resolve ``type: workflow`` steps
against the catalog.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping

from google.protobuf import json_format, struct_pb2
from sqlalchemy import event

from innominatus.engine import ephemeral
from innominatus.engine.catalog import Catalog, StoredVersion, param_type
from innominatus.engine.definition import bind_params
from innominatus.engine.model import WorkflowDef
from innominatus.engine.v1 import golden_paths_pb2, golden_paths_pb2_grpc
from innominatus.kit import context as reqctx
from innominatus.kit import db as kitdb
from innominatus.kit import times
from innominatus.kit.names import check_name
from innominatus.kit.errors import InvalidArgument
from innominatus.kit.logs import get_logger

log = get_logger(__name__)

STATE_KEY = "golden_paths"  # runtime.state[STATE_KEY] -> GoldenPaths


def golden_path_descriptor():
    return golden_paths_pb2.DESCRIPTOR.services_by_name["GoldenPathService"]


def _bare(name: str) -> str:
    return name.removeprefix("goldenPaths/").strip()


def _value(value) -> struct_pb2.Value:
    out = struct_pb2.Value()
    json_format.ParseDict(value, out)
    return out


def golden_path_proto(workflow: WorkflowDef, versions: list[StoredVersion], *, source: bool = False) -> golden_paths_pb2.GoldenPath:
    current = next((v for v in versions if v.version == workflow.version), None)
    message = golden_paths_pb2.GoldenPath(
        name=f"goldenPaths/{workflow.name}",
        version=workflow.version,
        description=workflow.description,
        tags=list(workflow.tags),
        owner=workflow.owner,
        content_hash=current.content_hash if current else "",
        source_yaml=workflow.source if source else "",
        ephemeral=ephemeral.is_ephemeral(workflow),
    )
    for param in workflow.params:
        item = message.params.add(name=param.name, type=param_type(param.schema), description=param.description,
                                  required=param.required)
        if param.default is not None:
            item.default_value.CopyFrom(_value(param.default))
        item.schema.update(param.schema)
    for step in workflow.steps:
        message.steps.add(id=step.id, type=step.type, depends_on=list(step.depends_on), condition=step.when or "",
                          uses=step.uses or "")
    for version in versions:
        item = message.versions.add(version=version.version, content_hash=version.content_hash, origin=version.origin)
        times.set_time(item.publish_time, version.published_at)
    return message


def _invalid_proto(bad) -> golden_paths_pb2.InvalidGoldenPath:
    return golden_paths_pb2.InvalidGoldenPath(file=bad.file, name=bad.name, findings=list(bad.findings))


class GoldenPaths:
    """The catalog, its first load and the TTL sweeper of one engine process."""

    def __init__(self, catalog: Catalog, sweeper: ephemeral.Sweeper | None) -> None:
        self.catalog = catalog
        self.sweeper = sweeper
        self._loading: asyncio.Task | None = None

    def start(self) -> None:
        self._loading = asyncio.create_task(self._load_then_sweep(), name="engine-golden-paths")

    async def _load_then_sweep(self) -> None:
        delay = 0.5
        while True:
            try:
                await self.catalog.load()
                break
            except Exception:  # noqa: BLE001 - the database may not answer yet; bad files never raise
                log.exception("loading the golden path catalog failed; retrying", delay=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
        if self.sweeper is not None:
            self.sweeper.start()

    async def ready(self) -> Catalog:
        if not self.catalog.loaded:
            if self._loading is None:
                await self.catalog.load()
            else:
                await asyncio.wait_for(asyncio.shield(self._loading), timeout=30)
        return self.catalog

    async def start_run(self, session, scheduler, workflow, given: dict, *, application: str = "",
                        environment: str = "", creator: str = "", request_id: str | None = None,
                        coerce: bool = False):
        """Start a catalog workflow in ``session`` (the RPC's transaction): bind its typed params
        (ParamsError names every bad one), record an ephemeral environment's expiry with the run,
        and wake the scheduler once it all commits. Returns (run id, expiry or None)."""
        params = bind_params(workflow, given, coerce=coerce)
        ttl = ephemeral.ttl_of(workflow, params) if ephemeral.is_ephemeral(workflow) else None
        application = application or str(params.get("app") or params.get("team") or "")
        environment = environment or str(params.get("environment") or "")
        for value, field in ((application, "application"), (environment, "environment")):
            if value:
                check_name(value, field)
        run_id = await scheduler.create_run(
            session, workflow, params, application=application, environment=environment, creator=creator,
            request_id=request_id,
        )
        expires = None
        if ttl is not None:
            expires = await ephemeral.record(session, run_id=run_id, workflow=workflow, params=params,
                                             application=application, environment=environment, ttl=ttl)
        event.listen(session.sync_session, "after_commit", lambda _s: scheduler.wakeup.set(), once=True)
        return run_id, expires

    async def stop(self) -> None:
        if self._loading is not None and not self._loading.done():
            self._loading.cancel()
            try:
                await self._loading
            except (asyncio.CancelledError, Exception):  # noqa: BLE001
                pass
        if self.sweeper is not None:
            await self.sweeper.stop()


class GoldenPathServicer(golden_paths_pb2_grpc.GoldenPathServiceServicer):
    def __init__(self, paths: GoldenPaths, scheduler) -> None:
        self.paths = paths
        self.scheduler = scheduler

    async def ListGoldenPaths(self, request, context):
        catalog = await self.paths.ready()
        items = await catalog.list(tag=request.tag)
        return golden_paths_pb2.ListGoldenPathsResponse(
            golden_paths=[golden_path_proto(w, v) for w, v in items],
            invalid=[_invalid_proto(b) for b in catalog.state.invalid],
        )

    async def GetGoldenPath(self, request, context):
        catalog = await self.paths.ready()
        name = _bare(request.name)
        workflow, versions = await catalog.get(name, request.version)
        response = golden_paths_pb2.GetGoldenPathResponse(golden_path=golden_path_proto(workflow, versions, source=True))
        bad = catalog.invalid_for(name)
        if bad is not None:
            response.invalid.CopyFrom(_invalid_proto(bad))
        return response

    async def RunGoldenPath(self, request, context):
        from innominatus.engine.service import load_run  # noqa: PLC0415 - service.py imports this module

        catalog = await self.paths.ready()
        name = _bare(request.name)
        if not name:
            raise InvalidArgument("name the golden path to run", reason="GOLDEN_PATH_NAME_MISSING")
        workflow, _versions = await catalog.get(name, request.version)
        given: dict = dict(request.params)
        if request.HasField("param_values"):
            given.update(json_format.MessageToDict(request.param_values))
        ctx = reqctx.current()
        session = kitdb.session()
        run_id, expires = await self.paths.start_run(
            session, self.scheduler, workflow, given, application=request.application,
            environment=request.environment, creator=ctx.subject.actor if ctx and ctx.subject else "",
            request_id=request.request_id or None, coerce=True,
        )
        response = golden_paths_pb2.RunGoldenPathResponse(version=workflow.version)
        times.set_time(response.expire_time, expires)
        response.run.CopyFrom(await load_run(session, run_id))
        return response

    async def PublishGoldenPath(self, request, context):
        catalog = await self.paths.ready()
        if not request.source_yaml.strip():
            raise InvalidArgument("source_yaml is empty", reason="GOLDEN_PATH_SOURCE_MISSING")
        ctx = reqctx.current()
        workflow, created = await catalog.publish(request.source_yaml, ctx.subject.actor if ctx and ctx.subject else "")
        _w, versions = await catalog.get(workflow.name, workflow.version)
        return golden_paths_pb2.PublishGoldenPathResponse(
            golden_path=golden_path_proto(workflow, versions, source=True), created=created)


def _chain(catalog: Catalog, fallback):
    """Sub-workflow lookup: the catalog's latest definitions, then what the scheduler had."""

    def lookup(name: str):
        found = catalog.resolve(name)
        if found is not None:
            return found
        if fallback is None:
            return None
        if isinstance(fallback, Mapping):
            return fallback.get(name)
        return fallback(name)

    return lookup


def register_golden_paths(server, runtime) -> GoldenPaths:
    """Serve GoldenPathService on ``server`` and start the catalog and the TTL sweeper.

    Call from the engine's ``register`` after ``runtime.state["scheduler"]`` is set."""
    scheduler = runtime.state["scheduler"]
    from innominatus.engine.workflows import WORKFLOWS  # noqa: PLC0415

    catalog = Catalog(runtime.db, builtin=WORKFLOWS)
    scheduler.workflows = _chain(catalog, scheduler.workflows)
    interval = float(os.environ.get("INNOMINATUS_EPHEMERAL_SWEEP_SECONDS", "5"))
    paths = GoldenPaths(catalog, ephemeral.Sweeper(runtime.db, scheduler, catalog, interval=interval))
    runtime.state[STATE_KEY] = paths
    golden_paths_pb2_grpc.add_GoldenPathServiceServicer_to_server(GoldenPathServicer(paths, scheduler), server)
    try:
        asyncio.get_running_loop()
    except RuntimeError:  # no loop yet: the first RPC loads the catalog; call start_golden_paths
        return paths
    paths.start()
    return paths


async def start_golden_paths(runtime) -> None:
    """Start loading and sweeping when register_golden_paths ran outside the event loop."""
    paths: GoldenPaths | None = runtime.state.get(STATE_KEY)
    if paths is not None and paths._loading is None:
        paths.start()


async def stop_golden_paths(runtime) -> None:
    paths: GoldenPaths | None = runtime.state.get(STATE_KEY)
    if paths is not None:
        await paths.stop()
