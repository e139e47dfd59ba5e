"""Policy facts of runs: which team owns the application a run acts on.

A golden path run (RunGoldenPath) or a workflow run (StartRun) may act on a team's application
(``undeploy-app`` deprovisions its resources), so the policy lets only the owning team's members
(and admins) start one (``team_permissions`` in policies/innominatus/authz.rego). The request
does not say who owns the application; the specs service does, so these providers ask it
(GetApplicationOwner, as the engine itself) and give the policy::

    {"team": "payments", "application": "checkout",
     "applications": [{"application": "checkout", "team": "payments"}, ...]}

``team``/``application`` are the run's own application (the request's ``application``, else its
``app`` param, defaults applied, as the run records it); ``applications`` lists every application
the run names, since an ``app`` param naming another application than the run's own is what the
path's steps act on. ``{}`` when the run names none. When specs cannot answer, the provider
raises and the request is refused (POLICY_FACTS_UNAVAILABLE): no owner is ever guessed.

Cancelling, retrying, pausing or resuming a run (CancelRun, RetryRun, PauseRun, ResumeRun) acts
on the same application (cancelling a deployment's run stops that team's rollout), so those get
the same facts, of the application the engine recorded for the run (``runs.application``; a child
run without one acts for its parent, up to the top-level run). ``{}`` for an unknown run.
"""

from __future__ import annotations

from google.protobuf import json_format
from sqlalchemy import select

from innominatus.engine import models
from innominatus.engine.definition import bind_params
from innominatus.engine.operations import run_id_of
from innominatus.kit import context as reqctx
from innominatus.kit import db as kitdb
from innominatus.kit.errors import InnominatusError
from innominatus.kit.names import check_name

# Short: the request waits for it (and a deployment's StartRun waits within specs' own deadline).
OWNER_TIMEOUT = 5.0


class ApplicationOwnerUnavailable(Exception):
    """The specs service did not say who owns an application (unreachable, failing, not wired).
    Its name is what the caller sees in POLICY_FACTS_UNAVAILABLE; the cause goes to the log."""


def _named(application: str, params: dict) -> list[str]:
    """The applications a run names, its own first; names that are not names are left out (the
    handler refuses the request for them with its own error)."""
    names: list[str] = []
    for value in (application, params.get("app")):
        if not isinstance(value, str) or not value or value in names:
            continue
        try:
            check_name(value, "application")
        except InnominatusError:
            continue
        names.append(value)
    return names


def _params(workflow, given: dict, *, coerce: bool) -> dict:
    """The run's params as the handler binds them (defaults included); the given ones as they
    are when they do not bind (the handler then refuses the request)."""
    if workflow is None:
        return given
    try:
        return bind_params(workflow, given, coerce=coerce)
    except Exception:  # noqa: BLE001 - ParamsError and kin: the handler says what is wrong
        return given


class OwnerFacts:
    """The facts providers of RunGoldenPath and StartRun, over the engine's runtime."""

    def __init__(self, runtime, specs) -> None:
        self.runtime = runtime
        self.specs = specs  # SpecsServiceStub (lazily opened peer channel)

    async def owner(self, application: str) -> str:
        """The bare name of the team owning ``application``; "" when none (or it is unknown)."""
        from innominatus.specs.v1 import specs_pb2  # noqa: PLC0415 - specs' stubs, as workflows.py

        ctx = reqctx.current()
        metadata = (("x-request-id", ctx.request_id),) if ctx is not None else ()
        # As the engine itself (PlanUndeploy does the same): the owner is a fact about the
        # application, not something the caller's token should decide.
        token = reqctx.set_current(None)
        try:
            response = await self.specs.GetApplicationOwner(
                specs_pb2.GetApplicationOwnerRequest(name=f"applications/{application}"),
                timeout=OWNER_TIMEOUT, metadata=metadata)
        except Exception as exc:  # grpc errors, SERVICE_NOT_CONFIGURED: no answer is no owner known
            raise ApplicationOwnerUnavailable(
                f"the specs service did not say who owns application {application!r}: {exc}") from exc
        finally:
            reqctx.reset(token)
        return response.team.removeprefix("teams/")

    async def facts(self, application: str, params: dict) -> dict:
        names = _named(application, params)
        if not names:
            return {}
        owners = [{"application": name, "team": await self.owner(name)} for name in names]
        return {"team": owners[0]["team"], "application": owners[0]["application"], "applications": owners}

    async def run_golden_path(self, request) -> dict:
        """Facts of RunGoldenPath."""
        from innominatus.engine.goldenpaths_service import STATE_KEY, _bare  # noqa: PLC0415 - imports us

        given: dict = dict(request.params)
        if request.HasField("param_values"):
            given.update(json_format.MessageToDict(request.param_values))
        workflow = None
        paths = self.runtime.state.get(STATE_KEY)
        if paths is not None and _bare(request.name):
            try:
                workflow, _versions = await (await paths.ready()).get(_bare(request.name), request.version)
            except InnominatusError:
                workflow = None  # unknown path or version: the handler says so
        return await self.facts(request.application, _params(workflow, given, coerce=True))

    async def run_operation(self, request) -> dict:
        """Facts of CancelRun, RetryRun, PauseRun and ResumeRun: the owner of the application
        of the run the request names (a child run acts for its top-level parent, so it takes
        the first application up its chain of parents). ``{}`` for a run that does not exist
        or a malformed name: the handler answers NOT_FOUND / INVALID_ARGUMENT itself."""
        try:
            run_id = run_id_of(request.name)
        except InnominatusError:
            return {}
        application = await self.run_application(run_id)
        if application is None:
            return {}
        return await self.facts(application, {})

    async def run_application(self, run_id: str) -> str | None:
        """The application run ``run_id`` acts on ("" = none); None when there is no such run.
        Read in the request's own transaction, from the engine's own table."""
        runs = models.runs
        session = kitdb.session()
        seen: set[str] = set()
        current: str | None = run_id
        found = False
        # Bounded by `seen`: a parent chain that loops (never written so, but the table does not
        # forbid it) must not hang the request.
        while current and current not in seen:
            seen.add(current)
            row = (await session.execute(
                select(runs.c.application, runs.c.parent_run_id).where(runs.c.id == current))).first()
            if row is None:
                break  # the named run is unknown (None below), or a parent vanished ("")
            found = True
            if row.application:
                return row.application
            current = row.parent_run_id
        return "" if found else None

    async def start_run(self, request) -> dict:
        """Facts of StartRun: of a catalog workflow, and of a built-in one (specs starting a
        deployment's or a removal's run as the user, who is a member of the owning team by then,
        an admin, or deploying an application no team owns)."""
        from innominatus.engine.goldenpaths_service import STATE_KEY  # noqa: PLC0415
        from innominatus.engine.workflows import WORKFLOWS  # noqa: PLC0415

        given = json_format.MessageToDict(request.inputs)
        workflow = None
        if request.workflow and request.workflow not in WORKFLOWS:
            paths = self.runtime.state.get(STATE_KEY)
            if paths is not None:
                await paths.ready()
            scheduler = self.runtime.state.get("scheduler")
            workflow = scheduler.find_workflow(request.workflow) if scheduler is not None else None
        return await self.facts(request.application, _params(workflow, given, coerce=False))


def register_owner_facts(runtime, specs) -> OwnerFacts:
    """Give the policy of RunGoldenPath, StartRun and the run operations (CancelRun, RetryRun,
    PauseRun, ResumeRun) the owner of the run's application."""
    from innominatus.engine.v1 import engine_pb2, golden_paths_pb2  # noqa: PLC0415

    facts = OwnerFacts(runtime, specs)
    engine = engine_pb2.DESCRIPTOR.services_by_name["EngineService"].full_name
    paths = golden_paths_pb2.DESCRIPTOR.services_by_name["GoldenPathService"].full_name
    runtime.register_policy_facts(f"/{paths}/RunGoldenPath", facts.run_golden_path)
    runtime.register_policy_facts(f"/{engine}/StartRun", facts.start_run)
    # Operations on a run act on its application as much as starting it did.
    for method in ("CancelRun", "RetryRun", "PauseRun", "ResumeRun"):
        runtime.register_policy_facts(f"/{engine}/{method}", facts.run_operation)
    return facts
