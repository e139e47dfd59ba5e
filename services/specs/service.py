"""The specs service: Score validation, stored workload versions, and the entry point of a
deployment.

A deployment travels specs -> resources (what the workload claims) -> engine (the deploy
workflow). Each hop is an mTLS call that carries the user's token, so resources and engine
verify the user and ask the policy themselves.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import os
import re
import uuid
from datetime import datetime
from pathlib import Path

import grpc
from google.protobuf import json_format, struct_pb2
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from innominatus.engine.v1 import engine_pb2, engine_pb2_grpc
from innominatus.kit import context as reqctx
from innominatus.kit import db
from innominatus.kit.errors import (AlreadyExists, FailedPrecondition, FieldViolation, InnominatusError,
                                    Internal, InvalidArgument, NotFound, Unavailable, from_rpc_error)
from innominatus.kit.logs import get_logger
from innominatus.kit.names import check_name
from innominatus.kit.pagination import page_size
from innominatus.kit.server import Runtime, ServiceDefinition
from innominatus.kit import times
from innominatus.kit.secretrefs import is_secret_ref
from innominatus.resources.v1 import resources_pb2, resources_pb2_grpc
from innominatus.specs import diff as specdiff
from innominatus.specs import gitops, models, teams
from innominatus.specs.environments import approval_of, check_approval, default_approval, etag_of
from innominatus.specs.identity_names import IdentityNames
from innominatus.specs.checks import resource_dependencies
from innominatus.specs.deployment_sets import DeploymentSetError, build_set, diff_sets
from innominatus.specs.render import RenderError, render_workload
from innominatus.specs.v1 import specs_pb2, specs_pb2_grpc
from innominatus.specs.validation import ERROR, WARNING, Finding, validate_score

GITOPS_BRANCH = "main"
log = get_logger(__name__)

SEVERITY = {ERROR: specs_pb2.SEVERITY_ERROR, WARNING: specs_pb2.SEVERITY_WARNING, "info": specs_pb2.SEVERITY_INFO}
DOWNSTREAM_TIMEOUT = 15.0

# Environment types: stored as these names, the API's EnvironmentType enum values.
ENVIRONMENT_TYPES = {
    specs_pb2.ENVIRONMENT_TYPE_DEVELOPMENT: "development",
    specs_pb2.ENVIRONMENT_TYPE_STAGING: "staging",
    specs_pb2.ENVIRONMENT_TYPE_PRODUCTION: "production",
}
ENVIRONMENT_TYPE_ENUM = {name: value for value, name in ENVIRONMENT_TYPES.items()}
# Names of environments a deployment never creates implicitly (as "development"): an admin
# creates them first with their type.
PRODUCTION_NAMES = frozenset({"production", "prod"})
# The golden path DeleteApplication starts (the engine's catalog; its latest version).
UNDEPLOY_PATH = "undeploy-app"


def _finding_proto(f: Finding) -> specs_pb2.Finding:
    return specs_pb2.Finding(
        code=f.code, severity=SEVERITY[f.severity], message=f.message, pointer=f.pointer, line=f.line,
        column=f.column, hint=f.hint,
    )


def _deployment_proto(row) -> specs_pb2.Deployment:
    d = specs_pb2.Deployment(
        name=f"deployments/{row.id}",
        application=f"applications/{row.application}",
        environment=row.environment,
        workload=row.workload,
        workload_version=row.workload_version,
        content_hash=row.content_hash,
        run=row.run,
        creator=row.creator,
        resources=list(row.resources or []),
        set_hash=row.set_hash or "",
        gitops_commit=row.gitops_commit or "",
        rollback_of=f"deployments/{row.rollback_of}" if row.rollback_of else "",
        removed=row.removed_at is not None,
    )
    times.set_time(d.create_time, row.created_at)
    return d


def _environment_proto(row) -> specs_pb2.Environment:
    approval = approval_of(row)
    e = specs_pb2.Environment(name=row.name, type=ENVIRONMENT_TYPE_ENUM.get(row.type, 0),
                              requires_approval=approval.required, approvers=list(approval.approvers),
                              etag=etag_of(row))
    times.set_time(e.create_time, row.created_at)
    if row.updated_at is not None:
        times.set_time(e.update_time, row.updated_at)
    return e


class EtagMismatch(InnominatusError):
    code = grpc.StatusCode.ABORTED
    default_reason = "ETAG_MISMATCH"


# Fields of an Environment UpdateEnvironment may change (update_mask paths, snake_case).
ENVIRONMENT_UPDATABLE = ("requires_approval", "approvers")


class SpecsServicer(specs_pb2_grpc.SpecsServiceServicer):
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        # Users and teams named in requests must exist at identity (specs/identity_names.py).
        self.identity_names = IdentityNames(runtime.peers)

    async def ValidateWorkload(self, request, context):
        result = validate_score(request.score_yaml)
        return specs_pb2.ValidateWorkloadResponse(
            valid=result.valid, findings=[_finding_proto(f) for f in result.findings], workload=result.workload
        )

    # -- environments -------------------------------------------------------------------

    async def CreateEnvironment(self, request, context):
        env = request.environment
        name = env.name.removeprefix("environments/")
        if not name:
            raise InvalidArgument("environment.name is required",
                                  violations=[FieldViolation("environment.name", "name the environment")])
        check_name(name, "environment.name")
        kind = ENVIRONMENT_TYPES.get(env.type)
        if kind is None:
            raise InvalidArgument(
                "environment.type is required: ENVIRONMENT_TYPE_DEVELOPMENT, _STAGING or _PRODUCTION",
                violations=[FieldViolation("environment.type", "choose development, staging or production")])
        # Unset settings take the type's defaults: production approval by platform engineers and
        # admins; no approval elsewhere (a staging environment may opt in).
        defaults = default_approval(kind)
        required = env.requires_approval if env.HasField("requires_approval") else defaults.required
        approvers = list(env.approvers) or (list(defaults.approvers) if required else [])
        approval = check_approval(required, approvers)
        await self.identity_names.check_approvers(approvers)
        session = db.session()
        table = models.environments
        try:
            async with session.begin_nested():
                await session.execute(table.insert().values(
                    name=name, type=kind, created_at=times.now(), requires_approval=approval.required,
                    approvers=list(approval.approvers)))
        except IntegrityError:
            raise AlreadyExists(f"environment {name!r} already exists", reason="ENVIRONMENT_ALREADY_EXISTS",
                                metadata={"environment": name}) from None
        row = (await session.execute(select(table).where(table.c.name == name))).one()
        return specs_pb2.CreateEnvironmentResponse(environment=_environment_proto(row))

    async def ListEnvironments(self, request, context):
        table = models.environments
        rows = (await db.session().execute(select(table).order_by(table.c.name))).all()
        return specs_pb2.ListEnvironmentsResponse(environments=[_environment_proto(r) for r in rows])

    async def _environment_row(self, session, name: str, field: str, lock: bool = False):
        """The row of environment ``name`` ("environments/{name}" or bare), else NOT_FOUND;
        ``lock``: held until the transaction ends (PostgreSQL; SQLite has one writer anyway)."""
        bare = name.removeprefix("environments/")
        if not bare:
            raise InvalidArgument(f"{field} is required (e.g. environments/production)",
                                  violations=[FieldViolation(field, "name the environment")])
        check_name(bare, field)
        table = models.environments
        query = select(table).where(table.c.name == bare)
        row = (await session.execute(query.with_for_update() if lock else query)).one_or_none()
        if row is None:
            raise NotFound(f"environment {bare!r} does not exist (innominatus envs list shows the environments)",
                           reason="ENVIRONMENT_NOT_FOUND", metadata={"environment": bare})
        return row

    async def GetEnvironment(self, request, context):
        row = await self._environment_row(db.session(), request.name, "name")
        return specs_pb2.GetEnvironmentResponse(environment=_environment_proto(row))

    async def UpdateEnvironment(self, request, context):
        env = request.environment
        paths = list(request.update_mask.paths)
        if not paths:
            raise InvalidArgument(
                "update_mask is required: name the fields to change (requires_approval, approvers)",
                violations=[FieldViolation("update_mask", "list requires_approval and/or approvers")])
        if "*" in paths:
            paths = list(ENVIRONMENT_UPDATABLE)
        # The gateway passes camelCase JSON names through as given; accept both spellings.
        paths = [{"requiresApproval": "requires_approval"}.get(p, p) for p in paths]
        unknown = [p for p in paths if p not in ENVIRONMENT_UPDATABLE]
        if unknown:
            raise InvalidArgument(
                f"update_mask names {', '.join(repr(p) for p in unknown)}, which UpdateEnvironment cannot change: "
                f"only {', '.join(ENVIRONMENT_UPDATABLE)} (an environment's name and type are fixed; "
                "create another environment instead)",
                violations=[FieldViolation("update_mask", f"{p!r} cannot be changed") for p in unknown])
        session = db.session()
        table = models.environments
        # Locked so two concurrent updates cannot both pass the etag check.
        row = await self._environment_row(session, env.name, "environment.name", lock=True)
        if env.etag and env.etag != etag_of(row):
            current = etag_of(row)
            raise EtagMismatch(
                f"environment {row.name!r} changed: etag {env.etag} is not the current {current} "
                "(get it again, re-apply your change, and send the new etag)",
                metadata={"current_etag": current, "environment": row.name})
        current = approval_of(row)
        required = env.requires_approval if "requires_approval" in paths else current.required
        approvers = list(env.approvers) if "approvers" in paths else list(current.approvers)
        approval = check_approval(required, approvers)
        if "approvers" in paths:
            # Only the approvers this request names: switching approval on or off keeps the
            # stored ones, which were checked when they were set.
            await self.identity_names.check_approvers(approvers)
        # Only this row's settings change: runs already started keep the gate in their
        # definition snapshot; the next deployment's run is built from these.
        await session.execute(
            table.update().where(table.c.name == row.name)
            .values(requires_approval=approval.required, approvers=list(approval.approvers), updated_at=times.now()))
        row = (await session.execute(select(table).where(table.c.name == row.name))).one()
        return specs_pb2.UpdateEnvironmentResponse(environment=_environment_proto(row))

    async def _environment_type(self, session, name: str) -> str:
        """The type of environment ``name``; an unknown one is created as "development", except
        one named like production, which is refused (an admin creates it with its type)."""
        table = models.environments
        row = (await session.execute(select(table.c.type).where(table.c.name == name))).one_or_none()
        if row is not None:
            return row.type
        if name.lower() in PRODUCTION_NAMES:
            raise FailedPrecondition(
                f"environment {name!r} does not exist; an admin or platform engineer must create it first with "
                f"its type (POST /api/v1/environments, e.g. type ENVIRONMENT_TYPE_PRODUCTION)",
                reason="ENVIRONMENT_NOT_FOUND", metadata={"environment": name})
        try:
            async with session.begin_nested():
                await session.execute(table.insert().values(name=name, type="development", created_at=times.now(),
                                                        requires_approval=False, approvers=[]))
        except IntegrityError:  # created at the same moment by another request
            row = (await session.execute(select(table.c.type).where(table.c.name == name))).one()
            return row.type
        return "development"

    async def CreateDeployment(self, request, context):
        if not request.environment:
            raise InvalidArgument(
                "environment is required (e.g. --env dev)",
                violations=[FieldViolation("environment", "name the target environment")],
            )
        check_name(request.environment, "environment")
        result = teams.validated_in_request(request.score_yaml)
        if not result.valid:
            errors = result.errors
            raise InvalidArgument(
                f"the Score file has {len(errors)} error(s); first: line {errors[0].line}: {errors[0].message}",
                reason="SCORE_INVALID",
                violations=[
                    FieldViolation(f"score_yaml{e.pointer}", f"{e.code} line {e.line}:{e.column}: {e.message}"
                                   + (f" (hint: {e.hint})" if e.hint else ""))
                    for e in errors
                ],
            )
        application = request.application.removeprefix("applications/") or result.workload
        check_name(application, "application")
        session = db.session()
        ctx = reqctx.current()
        creator = ctx.subject.actor
        deployments = models.deployments
        if request.request_id:
            existing = (
                await session.execute(
                    select(deployments).where(
                        (deployments.c.creator == creator) & (deployments.c.request_id == request.request_id)
                    )
                )
            ).one_or_none()
            if existing is not None:
                run = await self._get_run(existing.run)
                owner = await teams.owner(session, existing.application)
                return specs_pb2.CreateDeploymentResponse(deployment=_deployment_proto(existing), run=run,
                                                          team=f"teams/{owner.team}" if owner and owner.team else "")
        # The owning team (the policy already saw it in input.facts: membership and quotas).
        team, owner = await teams.resolve_team(session, application, request.team,
                                               self.identity_names.require_team)
        await teams.record_owner(session, application, team, owner, creator)

        environment_type = await self._environment_type(session, request.environment)
        version = await self._store_version(session, result.workload, request.score_yaml, creator)
        deployment_id = uuid.uuid4().hex
        claimed, started = await self._claim_and_start(application, request.environment, result.workload,
                                                       result.document, version, deployment_id, environment_type,
                                                       team)
        content_hash = hashlib.sha256(request.score_yaml.encode()).hexdigest()
        await session.execute(
            deployments.insert().values(
                id=deployment_id, application=application, environment=request.environment,
                workload=result.workload, workload_version=version, content_hash=content_hash,
                run=started.run.name, resources=[r.name for r in claimed.resources], creator=creator,
                request_id=request.request_id or None, created_at=times.now(),
            )
        )
        row = (await session.execute(select(deployments).where(deployments.c.id == deployment_id))).one()
        return specs_pb2.CreateDeploymentResponse(
            deployment=_deployment_proto(row),
            run=started.run,
            findings=[_finding_proto(f) for f in result.findings],
            team=f"teams/{team}" if team else "",
        )

    async def _approval_inputs(self, environment: str) -> dict:
        """The approval settings a deploy run of ``environment`` is built with (its row exists:
        the deployment looked it up or created it in this transaction)."""
        table = models.environments
        row = (await db.session().execute(select(table).where(table.c.name == environment))).one()
        return approval_of(row).as_inputs()

    async def _dropped_claims(self, application: str, environment: str, workload: str, dropped) -> list[dict]:
        """``[{ref, resource, depends_on}]`` for the claims the workload's new version no longer
        declares; ``depends_on``: the dropped refs whose outputs its params used in the version
        deployed there last, so the deploy run releases a resource only after those using it."""
        if not dropped:
            return []
        deployments = models.deployments
        session = db.session()
        previous = (await session.execute(
            select(deployments.c.workload, deployments.c.workload_version)
            .where((deployments.c.application == application) & (deployments.c.environment == environment)
                   & (deployments.c.workload == workload) & deployments.c.removed_at.is_(None))
            .order_by(deployments.c.created_at.desc()).limit(1))).one_or_none()
        uses: dict[str, set[str]] = {}
        if previous is not None:
            version = await self._version_row(session, previous.workload, previous.workload_version)
            uses = resource_dependencies(_document(version.source))
        refs = {r.claim.ref for r in dropped}
        return [{"ref": r.claim.ref, "resource": r.name,
                 "depends_on": sorted(d for d in uses.get(r.claim.ref, ()) if d in refs and d != r.claim.ref)}
                for r in dropped]

    async def _claim_and_start(self, application: str, environment: str, workload: str, document: dict,
                               version: int, deployment_id: str, environment_type: str, team: str):
        """Claim the workload's resources and start the deploy run of a deployment (as the user).

        ``team``: the bare name of the team owning the application ("" = none). The resources
        service matches resource definitions on it and on ``environment_type``, and records the
        team as the owner of the instances (who may reveal their secrets)."""
        claims = [
            resources_pb2.ResourceClaim(ref=ref, type=spec.get("type", ""), id=spec.get("id", ""),
                                        params=_struct(spec.get("params") or {}), **{"class": spec.get("class", "")})
            for ref, spec in sorted((document.get("resources") or {}).items())
        ]
        resources = self.runtime.peers.stub("resources", resources_pb2_grpc.ResourcesServiceStub)
        engine = self.runtime.peers.stub("engine", engine_pb2_grpc.EngineServiceStub)
        try:
            claimed = await resources.ClaimResources(
                resources_pb2.ClaimResourcesRequest(
                    application=application, environment=environment, workload=workload, claims=claims,
                    environment_type=environment_type, team=f"teams/{team}" if team else "",
                ),
                timeout=DOWNSTREAM_TIMEOUT,
            )
            # Which claim is which instance, and whose outputs its params use: the engine
            # provisions them in that order (independent ones in parallel).
            dependencies = resource_dependencies(document)
            # ClaimResources answers in request order. Pair by position, not by the answer's
            # `claim.ref`: a shared instance carries its first claimer's ref, which another
            # workload may call by a different name.
            if len(claimed.resources) != len(claims):
                raise Internal(f"the resources service answered {len(claimed.resources)} resources for "
                               f"{len(claims)} claims")
            by_ref = {c.ref: r.name for c, r in zip(claims, claimed.resources)}
            inputs = _struct(
                {
                    "workload": workload,
                    "spec": document,
                    "workload_version": version,
                    "resources": [r.name for r in claimed.resources],
                    "claims": [
                        {"ref": c.ref, "resource": by_ref[c.ref],
                         "depends_on": sorted(d for d in dependencies.get(c.ref, ()) if d != c.ref)}
                        for c in claims if c.ref in by_ref
                    ],
                    # The workload's claims this version no longer declares: the run releases
                    # them (release-<ref> steps) once the new version is committed, not before.
                    "dropped": await self._dropped_claims(application, environment, workload, claimed.dropped),
                    "deployment": f"deployments/{deployment_id}",
                    "environment_type": environment_type,
                    # The environment's approval settings: when required, the deploy workflow waits
                    # at an `approve` step these approvers decide before provisioning anything.
                    "approval": await self._approval_inputs(environment),
                    "application": application,
                    "environment": environment,
                    "requested_by": reqctx.current().subject.actor,
                }
            )
            started = await engine.StartRun(
                engine_pb2.StartRunRequest(
                    workflow="deploy", application=application, environment=environment, inputs=inputs,
                    request_id=f"deployment:{deployment_id}",
                ),
                timeout=DOWNSTREAM_TIMEOUT,
            )
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None
        return claimed, started

    # -- the deploy workflow's render step (called by the engine) ---------------------------

    def gitops_repository(self, environment: str) -> str:
        """The environment's GitOps repository: ``INNOMINATUS_GITOPS_URL_TEMPLATE`` (e.g.
        ``file:///srv/gitops/{environment}.git``), else a bare repository under the data
        directory, created on first use."""
        template = os.environ.get("INNOMINATUS_GITOPS_URL_TEMPLATE", "").strip()
        if template:
            return template.replace("{environment}", environment)
        path = Path(self.runtime.settings.data_dir) / "specs" / "gitops" / f"{environment}.git"
        if not (path / "HEAD").exists():
            gitops.init_bare(path, GITOPS_BRANCH)
        return str(path)

    async def FinalizeDeployment(self, request, context):
        deployment_id = request.name.removeprefix("deployments/")
        if not deployment_id or "/" in deployment_id:
            raise InvalidArgument(f"name {request.name!r} is not a deployment name (deployments/{{id}})")
        session = db.session()
        deployments = models.deployments
        row = (await session.execute(select(deployments).where(deployments.c.id == deployment_id))).one_or_none()
        if row is None:
            # CreateDeployment records the deployment in the transaction that starts its run:
            # the run may get here first. The engine's step retries UNAVAILABLE.
            raise Unavailable(f"deployment {request.name!r} is not recorded yet", reason="DEPLOYMENT_NOT_READY")
        if request.run and row.run and request.run != row.run:
            raise FailedPrecondition(f"{request.name} is shipped by {row.run}, not {request.run}")
        version = await self._version_row(session, row.workload, row.workload_version)
        document = _document(version.source)
        given = json_format.MessageToDict(request.resource_outputs)
        declared = document.get("resources") or {}
        resources, outputs = {}, {}
        for ref, spec in sorted(declared.items()):
            values = given.get(ref)
            if not isinstance(values, dict):
                continue
            plain = {k: v for k, v in values.items() if not is_secret_ref(v)}
            refs = {k: v for k, v in values.items() if is_secret_ref(v)}
            outputs[ref] = {**plain, **refs}
            entry = {"type": spec.get("type", ""), "outputs": plain, "secret_refs": refs}
            for key in ("class", "id"):
                if spec.get(key):
                    entry[key] = spec[key]
            resources[f"{row.workload}.{ref}"] = entry
        try:
            rendered = render_workload(document, outputs)
        except RenderError as exc:
            raise FailedPrecondition(f"the workload cannot be rendered with its resources' outputs: {exc}",
                                     reason="RENDER_FAILED") from None
        previous = (
            await session.execute(
                select(deployments.c.set_hash, deployments.c.gitops_commit)
                .where((deployments.c.application == row.application) & (deployments.c.environment == row.environment)
                       & deployments.c.set_hash.is_not(None) & (deployments.c.id != row.id)
                       & deployments.c.removed_at.is_(None))
                .order_by(deployments.c.created_at.desc())
                .limit(1)
            )
        ).one_or_none()
        repository = self.gitops_repository(row.environment)
        workloads = {row.workload: document}
        if previous is not None and previous.gitops_commit:
            try:  # the application's other workloads stay as they were deployed
                earlier = await asyncio.to_thread(gitops.read_set, repository, previous.gitops_commit,
                                                  row.environment, row.application)
                for name, doc in earlier.thaw()["workloads"].items():
                    workloads.setdefault(name, doc)
                for key, spec in earlier.thaw()["resources"].items():
                    if not key.startswith(f"{row.workload}.") and key.split(".", 1)[0] in workloads:
                        resources.setdefault(key, spec)
            except gitops.GitOpsError as exc:
                log.warning("previous deployment set unreadable", error=str(exc))
        reason = f"{request.name} ({row.run})"
        deployment_set = None
        if row.rollback_of:
            # A rollback commits the earlier deployment's set again (its content and hash), with
            # the set being replaced as parent, instead of rendering anew -- unless the workload's
            # resources were provisioned anew since (None): then it is rendered as usual.
            deployment_set, reason = await self._rollback_set(session, row, repository, reason,
                                                              previous.set_hash if previous is not None else "",
                                                              resources)
        if deployment_set is None:
            try:
                deployment_set = build_set(row.application, row.environment, workloads, resources,
                                           created_by=row.creator, reason=reason,
                                           parent=previous.set_hash if previous is not None else "")
            except (DeploymentSetError, ValueError) as exc:
                raise FailedPrecondition(f"the deployment set cannot be built: {exc}",
                                         reason="DEPLOYMENT_SET_INVALID") from None
        try:
            commit = await asyncio.to_thread(gitops.commit_set, repository, GITOPS_BRANCH, row.environment,
                                             deployment_set, row.creator, reason)
        except gitops.GitOpsError as exc:
            raise Unavailable(f"committing the deployment set failed: {exc}", reason="GITOPS_FAILED") from None
        await session.execute(
            deployments.update().where(deployments.c.id == row.id)
            .values(set_hash=deployment_set.content_hash, gitops_commit=commit)
        )
        row = (await session.execute(select(deployments).where(deployments.c.id == row.id))).one()
        response = specs_pb2.FinalizeDeploymentResponse(
            set_hash=deployment_set.content_hash, commit=commit, deployment=_deployment_proto(row),
            manifest=deployment_set.artifacts.get(f"k8s/{row.workload}/deployment.yaml", ""),
        )
        response.workload.update(json.loads(json.dumps(rendered, default=str)))
        return response

    async def _rollback_set(self, session, row, repository: str, reason: str, parent: str, provisioned: dict):
        """The set a rollback commits and the commit's reason: the earlier set again, or None
        (and the reason to render anew with) when ``provisioned`` -- this run's outputs of the
        workload's resources -- differ from what the earlier set holds: a resource a later
        version dropped was deprovisioned and is provisioned anew now (new secret versions), and
        re-committing the earlier set would point the workload at deleted secrets."""
        target = (
            await session.execute(select(models.deployments).where(models.deployments.c.id == row.rollback_of))
        ).one_or_none()
        if target is None or not target.gitops_commit:
            raise FailedPrecondition(f"deployments/{row.rollback_of} has no committed deployment set to roll back to",
                                     reason="DEPLOYMENT_NOT_COMMITTED")
        try:
            earlier = await asyncio.to_thread(gitops.read_set, repository, target.gitops_commit, row.environment,
                                              row.application)
        except gitops.GitOpsError as exc:
            raise FailedPrecondition(f"the set of deployments/{target.id} cannot be read: {exc}",
                                     reason="DEPLOYMENT_SET_UNREADABLE") from None
        why = (f"{reason}: rollback to {earlier.short_hash} (deployments/{target.id}, "
               f"commit {target.gitops_commit[:12]}) by {row.creator}")
        if (row.reason or "").strip():
            why += f": {row.reason.strip()}"
        held = earlier.thaw()["resources"]
        changed = sorted(key for key, entry in provisioned.items()
                         if key not in held
                         or any(_plain(held[key].get(part) or {}) != _plain(entry.get(part) or {})
                                for part in ("outputs", "secret_refs")))
        if changed:
            return None, f"{why} (rendered anew: {', '.join(changed)} provisioned anew since)"
        return earlier.redeployed(created_by=row.creator, reason=why, parent=parent), why

    # -- deleting an application from an environment (the undeploy-app golden path) ---------

    async def _undeploy_plan(self, session, name: str, environment: str) -> specs_pb2.PlanUndeployResponse:
        """What removing application ``name`` from ``environment`` takes: the resources of each of
        its workloads' latest deployment there and, when that one was never committed (it failed
        or was rejected), of its latest committed one -- the version still running, whose claims a
        failed deployment keeps (a resource once, whichever deployments name it), each with the
        refs of the claims whose outputs its params use; the latest deployments; the environment's
        type. The one computation both DeleteApplication and the engine (PlanUndeploy) use."""
        deployments = models.deployments
        rows = (
            await session.execute(
                select(deployments)
                .where((deployments.c.application == name) & (deployments.c.environment == environment)
                       & deployments.c.removed_at.is_(None))
                .order_by(deployments.c.created_at.desc())
            )
        ).all()
        table = models.environments
        kind = (await session.execute(select(table.c.type).where(table.c.name == environment))).scalar_one_or_none()
        plan = specs_pb2.PlanUndeployResponse(deployed=bool(rows),
                                              environment_type=ENVIRONMENT_TYPE_ENUM.get(kind or "", 0))
        latest, running = {}, {}
        for row in rows:  # newest first: each workload's latest (and latest committed) deployment
            latest.setdefault(row.workload, row)
            if row.gitops_commit:
                running.setdefault(row.workload, row)
        planned = sorted(latest.items())
        planned += [(w, r) for w, r in sorted(running.items()) if r.id != latest[w].id]
        claims: dict[str, dict] = {}  # by resource name (a resource shared by workloads once)
        taken: set[str] = set()  # refs given out: a ref the two versions use for different instances
        several = len(latest) > 1
        for workload, row in planned:
            version = await self._version_row(session, row.workload, row.workload_version)
            document = _document(version.source)
            refs = sorted((document.get("resources") or {}))
            names = list(row.resources or [])
            if len(refs) != len(names):  # cannot tell which is which: no ordering, still remove all
                pairs, dependencies = [(f"{workload}.{i}", n) for i, n in enumerate(names)], {}
            else:
                pairs, dependencies = list(zip(refs, names)), resource_dependencies(document)
            by_ref = dict(pairs)
            for ref, resource in pairs:
                if resource not in claims:
                    step_ref = f"{workload}.{ref}" if several else ref
                    if step_ref in taken:  # the running version's claim of that name is another instance
                        step_ref = f"{step_ref}.v{row.workload_version}"
                    taken.add(step_ref)
                    claims[resource] = {"ref": step_ref, "resource": resource, "depends_on": set()}
                claim = claims[resource]
                claim["depends_on"].update(by_ref[d] for d in dependencies.get(ref, ()) if d in by_ref and d != ref)
        ref_of = {c["resource"]: c["ref"] for c in claims.values()}
        for c in sorted(claims.values(), key=lambda c: c["ref"]):
            plan.claims.add(ref=c["ref"], resource=c["resource"],
                            depends_on=sorted(ref_of[d] for d in c["depends_on"] if d != c["resource"]))
        plan.deployments.extend(f"deployments/{r.id}" for _w, r in sorted(latest.items()))
        return plan

    async def PlanUndeploy(self, request, context):
        name = request.name.removeprefix("applications/")
        if not _segment_ok(name):
            raise InvalidArgument(f"name {request.name!r} is not an application name: use applications/{{name}}",
                                  violations=[FieldViolation("name", "e.g. applications/checkout")])
        if not request.environment:
            raise InvalidArgument("environment is required",
                                  violations=[FieldViolation("environment", "name the environment")])
        check_name(request.environment, "environment")
        return await self._undeploy_plan(db.session(), name, request.environment)

    async def GetApplicationOwner(self, request, context):
        # The engine's policy facts of runs (engine/app_owners.py): only the ownership record,
        # so an application without one is an answer ("no owner"), not NOT_FOUND.
        name = request.name.removeprefix("applications/")
        if not _segment_ok(name):
            raise InvalidArgument(f"name {request.name!r} is not an application name: use applications/{{name}}",
                                  violations=[FieldViolation("name", "e.g. applications/checkout")])
        row = await teams.owner(db.session(), name)
        return specs_pb2.GetApplicationOwnerResponse(
            exists=row is not None, team=f"teams/{row.team}" if row is not None and row.team else "")

    async def DeleteApplication(self, request, context):
        name = request.name.removeprefix("applications/")
        if not _segment_ok(name):
            raise InvalidArgument(f"name {request.name!r} is not an application name: use applications/{{name}}",
                                  violations=[FieldViolation("name", "e.g. applications/checkout")])
        if not request.environment:
            raise InvalidArgument(
                "environment is required (e.g. --env dev)",
                violations=[FieldViolation("environment", "name the environment to remove the application from")],
            )
        check_name(request.environment, "environment")
        # Refused here rather than by an empty run: the golden path plans again (PlanUndeploy)
        # when it runs, and only what that plan names is deprovisioned.
        plan = await self._undeploy_plan(db.session(), name, request.environment)
        if not plan.deployed:
            raise NotFound(f"application {request.name!r} is not deployed to environment {request.environment!r}",
                           reason="APPLICATION_NOT_FOUND",
                           metadata={"application": f"applications/{name}", "environment": request.environment})
        creator = reqctx.current().subject.actor
        key = request.request_id or uuid.uuid4().hex
        request_id = "undeploy:" + hashlib.sha256(
            f"{creator}\0{name}\0{request.environment}\0{key}".encode()).hexdigest()[:40]
        engine = self.runtime.peers.stub("engine", engine_pb2_grpc.EngineServiceStub)
        try:
            # As the user (their token travels with the call): the run's creator, whom the
            # GitOps commit names, and the policy's "runs.start" decision are theirs.
            started = await engine.StartRun(
                engine_pb2.StartRunRequest(workflow=UNDEPLOY_PATH, application=name, environment=request.environment,
                                           inputs=_struct({"app": name, "environment": request.environment}),
                                           request_id=request_id),
                timeout=DOWNSTREAM_TIMEOUT,
            )
        except grpc.RpcError as exc:
            error = from_rpc_error(exc)
            if error.reason in ("UNKNOWN_WORKFLOW", "WORKFLOW_PARAMS_INVALID"):
                # The engine's catalog lacks the path, or its latest version takes other params.
                raise FailedPrecondition(
                    f"the engine cannot start the {UNDEPLOY_PATH!r} golden path that removes applications: "
                    f"{error.message}; a platform engineer must ship or publish a version of it that takes the "
                    "params app and environment (innominatus goldenpaths show undeploy-app)",
                    reason="UNDEPLOY_PATH_UNAVAILABLE", metadata={"golden_path": UNDEPLOY_PATH}) from None
            raise error from None
        return specs_pb2.DeleteApplicationResponse(run=started.run)

    async def FinalizeUndeploy(self, request, context):
        name = request.name.removeprefix("applications/")
        if not _segment_ok(name):
            raise InvalidArgument(f"name {request.name!r} is not an application name (applications/{{name}})")
        check_name(request.environment, "environment")
        repository = self.gitops_repository(request.environment)
        author = (request.requested_by or "").strip() or "innominatus"
        try:
            commit = await asyncio.to_thread(gitops.remove_application, repository, GITOPS_BRANCH,
                                             request.environment, name, author, request.run)
        except gitops.GitOpsError as exc:
            raise Unavailable(f"removing the application from GitOps failed: {exc}", reason="GITOPS_FAILED") from None
        deployments = models.deployments
        result = await db.session().execute(
            deployments.update()
            .where((deployments.c.application == name) & (deployments.c.environment == request.environment)
                   & deployments.c.removed_at.is_(None))
            .values(removed_at=times.now())
        )
        return specs_pb2.FinalizeUndeployResponse(commit=commit, removed_deployments=result.rowcount or 0)

    # -- deployments: list, get, diff, rollback ------------------------------------------

    async def _deployment_row(self, session, name: str, field: str = "name"):
        deployment_id = name.removeprefix("deployments/")
        if not _segment_ok(deployment_id):
            raise InvalidArgument(
                f"{field} {name!r} is not a deployment name: use deployments/{{id}}",
                violations=[FieldViolation(field, "a deployment resource name, e.g. deployments/1f2e...")],
            )
        row = (
            await session.execute(select(models.deployments).where(models.deployments.c.id == deployment_id))
        ).one_or_none()
        if row is None:
            raise NotFound(f"deployment {name!r} not found", reason="DEPLOYMENT_NOT_FOUND",
                           metadata={"deployment": f"deployments/{deployment_id}"})
        return row

    async def _committed_set(self, row):
        if not row.set_hash or not row.gitops_commit:
            raise FailedPrecondition(
                f"deployments/{row.id} has no committed deployment set yet (its run {row.run} has not rendered it)",
                reason="DEPLOYMENT_NOT_COMMITTED", metadata={"deployment": f"deployments/{row.id}"},
            )
        repository = self.gitops_repository(row.environment)
        try:
            return await asyncio.to_thread(gitops.read_set, repository, row.gitops_commit, row.environment,
                                           row.application)
        except gitops.GitOpsError as exc:
            raise FailedPrecondition(f"the deployment set of deployments/{row.id} cannot be read: {exc}",
                                     reason="DEPLOYMENT_SET_UNREADABLE") from None

    async def ListDeployments(self, request, context):
        deployments = models.deployments
        application = request.application.removeprefix("applications/")
        environment = request.environment
        size = page_size(request.page_size)
        query = select(deployments).order_by(deployments.c.created_at.desc(), deployments.c.id.desc())
        if application:
            query = query.where(deployments.c.application == application)
        if environment:
            query = query.where(deployments.c.environment == environment)
        if request.page_token:
            state = _decode_page_token(request.page_token, "deployments")
            if state.get("a") != application or state.get("e") != environment or not isinstance(state.get("t"), str):
                raise InvalidArgument(
                    "page_token belongs to another list: pass the next_page_token of the previous response "
                    "with the same application and environment",
                    reason="INVALID_PAGE_TOKEN",
                )
            try:
                after = datetime.fromisoformat(state["t"])
            except ValueError:
                raise InvalidArgument("page_token is not valid", reason="INVALID_PAGE_TOKEN") from None
            query = query.where((deployments.c.created_at < after)
                                | ((deployments.c.created_at == after) & (deployments.c.id < str(state.get("i")))))
        rows = (await db.session().execute(query.limit(size + 1))).all()
        token = ""
        if len(rows) > size:
            rows = rows[:size]
            token = _encode_page_token("deployments", {"a": application, "e": environment,
                                                       "t": rows[-1].created_at.isoformat(), "i": rows[-1].id})
        return specs_pb2.ListDeploymentsResponse(deployments=[_deployment_proto(r) for r in rows],
                                                 next_page_token=token)

    async def GetDeployment(self, request, context):
        session = db.session()
        row = await self._deployment_row(session, request.name)
        response = specs_pb2.GetDeploymentResponse(deployment=_deployment_proto(row))
        if row.set_hash and row.gitops_commit:
            summary = response.deployment_set
            summary.hash, summary.commit = row.set_hash, row.gitops_commit
            try:
                found = await asyncio.to_thread(gitops.read_set, self.gitops_repository(row.environment),
                                                row.gitops_commit, row.environment, row.application)
            except gitops.GitOpsError as exc:
                log.warning("deployment set unreadable", deployment=row.id, error=str(exc))
            else:
                summary.parent = found.parent
                summary.workloads.extend(sorted(found.workloads))
                summary.resources.extend(sorted(found.resources))
                summary.artifacts.extend(sorted(found.artifacts))
                summary.created_by, summary.reason = found.created_by, found.reason
        return response

    async def DiffDeployments(self, request, context):
        session = db.session()
        if not request.other:
            raise InvalidArgument("other is required: the deployment to compare to, e.g. other=deployments/{id}",
                                  violations=[FieldViolation("other", "a deployment resource name")])
        base = await self._deployment_row(session, request.name)
        target = await self._deployment_row(session, request.other, "other")
        base_set = await self._committed_set(base)
        target_set = await self._committed_set(target)
        sections = ("workloads", "resources") if request.specs_only else ("workloads", "resources", "artifacts")
        response = specs_pb2.DiffDeploymentsResponse(
            base_deployment=f"deployments/{base.id}", target_deployment=f"deployments/{target.id}",
            base_set_hash=base_set.content_hash, target_set_hash=target_set.content_hash,
        )
        for change in diff_sets(base_set, target_set, sections=sections):
            item = response.changes.add(op=_CHANGE_OPS[change.op], pointer=change.pointer)
            if change.old is not specdiff.MISSING:
                json_format.ParseDict(change.old, item.old_value)
            if change.new is not specdiff.MISSING:
                json_format.ParseDict(change.new, item.new_value)
        return response

    async def RollbackDeployment(self, request, context):
        session = db.session()
        target = await self._deployment_row(session, request.name)
        application = request.application.removeprefix("applications/")
        bad = [
            FieldViolation(field, f"{request.name} is a deployment of {field} {have!r}, not {given!r}")
            for field, given, have in (("application", application, target.application),
                                       ("environment", request.environment, target.environment))
            if given and given != have
        ]
        if bad:
            raise InvalidArgument(
                f"cannot roll back across applications or environments: {request.name} deployed "
                f"{target.application} to {target.environment}",
                reason="ROLLBACK_MISMATCH", violations=bad,
            )
        creator = reqctx.current().subject.actor
        deployments = models.deployments
        if request.request_id:
            existing = (
                await session.execute(
                    select(deployments).where(
                        (deployments.c.creator == creator) & (deployments.c.request_id == request.request_id)
                    )
                )
            ).one_or_none()
            if existing is not None:
                run = await self._get_run(existing.run)
                return specs_pb2.RollbackDeploymentResponse(deployment=_deployment_proto(existing), run=run)
        await self._committed_set(target)  # FAILED_PRECONDITION when there is no readable set to return to
        version = await self._version_row(session, target.workload, target.workload_version)
        environment_type = await self._environment_type(session, target.environment)
        owner = await teams.owner(session, target.application)
        deployment_id = uuid.uuid4().hex
        claimed, started = await self._claim_and_start(target.application, target.environment, target.workload,
                                                       _document(version.source), version.version, deployment_id,
                                                       environment_type, owner.team if owner is not None else "")
        await session.execute(
            deployments.insert().values(
                id=deployment_id, application=target.application, environment=target.environment,
                workload=target.workload, workload_version=version.version, content_hash=version.content_hash,
                run=started.run.name, resources=[r.name for r in claimed.resources], creator=creator,
                request_id=request.request_id or None, created_at=times.now(), rollback_of=target.id,
                reason=request.reason or None,
            )
        )
        row = (await session.execute(select(deployments).where(deployments.c.id == deployment_id))).one()
        return specs_pb2.RollbackDeploymentResponse(deployment=_deployment_proto(row), run=started.run)

    async def _get_run(self, name: str) -> engine_pb2.Run:
        engine = self.runtime.peers.stub("engine", engine_pb2_grpc.EngineServiceStub)
        try:
            return (await engine.GetRun(engine_pb2.GetRunRequest(name=name), timeout=DOWNSTREAM_TIMEOUT)).run
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None

    async def _store_version(self, session, workload: str, source: str, creator: str) -> int:
        versions = models.workload_versions
        content_hash = hashlib.sha256(source.encode()).hexdigest()
        latest = (
            await session.execute(
                select(versions.c.version, versions.c.content_hash)
                .where(versions.c.workload == workload)
                .order_by(versions.c.version.desc())
                .limit(1)
            )
        ).one_or_none()
        if latest is not None and latest.content_hash == content_hash:
            return latest.version
        version = (latest.version if latest else 0) + 1
        await session.execute(
            versions.insert().values(
                workload=workload, version=version, content_hash=content_hash, source=source, creator=creator,
                created_at=times.now(),
            )
        )
        return version

    async def _application(self, session, name: str) -> specs_pb2.Application | None:
        owner = await teams.owner(session, name)
        deployments = models.deployments
        rows = (
            await session.execute(
                select(deployments).where(deployments.c.application == name).order_by(deployments.c.created_at)
            )
        ).all()
        if not rows:
            return None
        app = specs_pb2.Application(
            name=f"applications/{name}",
            workloads=sorted({r.workload for r in rows}),
            # where it runs: environments it was removed from (DeleteApplication) are left out
            environments=sorted({r.environment for r in rows if r.removed_at is None}),
            latest_deployment=_deployment_proto(rows[-1]),
            etag=f'W/"{len(rows)}"',
            team=f"teams/{owner.team}" if owner is not None and owner.team else "",
        )
        times.set_time(app.create_time, rows[0].created_at)
        times.set_time(app.update_time, rows[-1].created_at)
        return app

    async def ListApplications(self, request, context):
        deployments = models.deployments
        size = page_size(request.page_size)
        query = select(deployments.c.application).group_by(deployments.c.application).order_by(deployments.c.application)
        if request.page_token:
            query = query.having(deployments.c.application > request.page_token)
        session = db.session()
        names = (await session.execute(query.limit(size + 1))).scalars().all()
        token = names[size - 1] if len(names) > size else ""
        apps = [await self._application(session, n) for n in names[:size]]
        return specs_pb2.ListApplicationsResponse(applications=apps, next_page_token=token)

    async def GetApplication(self, request, context):
        name = request.name.removeprefix("applications/")
        session = db.session()
        app = await self._application(session, name) if name else None
        if app is None:
            raise NotFound(f"application {request.name!r} not found", reason="APPLICATION_NOT_FOUND")
        rows = (
            await session.execute(
                select(models.deployments)
                .where(models.deployments.c.application == name)
                .order_by(models.deployments.c.created_at.desc())
            )
        ).all()
        return specs_pb2.GetApplicationResponse(application=app, deployments=[_deployment_proto(r) for r in rows])

    # -- workload versions (reads) -------------------------------------------------------

    async def ListWorkloads(self, request, context):
        versions = models.workload_versions
        size = page_size(request.page_size)
        after = _decode_page_token(request.page_token, "workloads").get("w", "") if request.page_token else ""
        summary = (
            select(
                versions.c.workload,
                func.max(versions.c.version).label("latest"),
                func.min(versions.c.created_at).label("first_time"),
            )
            .group_by(versions.c.workload)
            .subquery()
        )
        query = (
            select(versions.c.workload, versions.c.version, versions.c.content_hash, versions.c.created_at,
                   summary.c.first_time)
            .join(summary, (versions.c.workload == summary.c.workload) & (versions.c.version == summary.c.latest))
            .order_by(versions.c.workload)
        )
        if after:
            query = query.where(versions.c.workload > after)
        rows = (await db.session().execute(query.limit(size + 1))).all()
        token = ""
        if len(rows) > size:
            rows = rows[:size]
            token = _encode_page_token("workloads", {"w": rows[-1].workload})
        workloads = []
        for row in rows:
            w = specs_pb2.Workload(
                name=f"workloads/{row.workload}", latest_version=row.version, latest_content_hash=row.content_hash
            )
            times.set_time(w.create_time, row.first_time)
            times.set_time(w.update_time, row.created_at)
            workloads.append(w)
        return specs_pb2.ListWorkloadsResponse(workloads=workloads, next_page_token=token)

    async def ListWorkloadVersions(self, request, context):
        workload = _workload_name(request.parent, "parent")
        versions = models.workload_versions
        size = page_size(request.page_size)
        query = (
            select(versions.c.workload, versions.c.version, versions.c.content_hash, versions.c.creator,
                   versions.c.created_at)
            .where(versions.c.workload == workload)
            .order_by(versions.c.version.desc())
        )
        if request.page_token:
            state = _decode_page_token(request.page_token, "versions")
            if state.get("w") != workload or not isinstance(state.get("v"), int):
                raise InvalidArgument(
                    "page_token belongs to another list: pass the next_page_token of the previous response "
                    "with the same parent",
                    reason="INVALID_PAGE_TOKEN",
                )
            query = query.where(versions.c.version < state["v"])
        session = db.session()
        rows = (await session.execute(query.limit(size + 1))).all()
        token = ""
        if len(rows) > size:
            rows = rows[:size]
            token = _encode_page_token("versions", {"w": workload, "v": rows[-1].version})
        if not rows and not request.page_token:
            await self._existing_versions(session, workload)  # raises NOT_FOUND for an unknown workload
        return specs_pb2.ListWorkloadVersionsResponse(
            workload_versions=[_version_proto(r) for r in rows], next_page_token=token
        )

    async def GetWorkloadVersion(self, request, context):
        workload, version = _version_name(request.name)
        session = db.session()
        row = await self._version_row(session, workload, version)
        return specs_pb2.GetWorkloadVersionResponse(workload_version=_version_proto(row, source=True))

    async def DiffWorkloadVersions(self, request, context):
        workload = _workload_name(request.name, "name")
        bad = [
            FieldViolation(field, f"the version number to compare {side} (1 or more)")
            for field, side, value in (("base", "from", request.base), ("target", "to", request.target))
            if value < 1
        ]
        if bad:
            raise InvalidArgument(
                "base and target must both be version numbers (1 or more), e.g. base=1&target=2",
                violations=bad,
            )
        session = db.session()
        base = await self._version_row(session, workload, request.base)
        target = await self._version_row(session, workload, request.target)
        base_name = f"workloads/{workload}/versions/{base.version}"
        target_name = f"workloads/{workload}/versions/{target.version}"
        response = specs_pb2.DiffWorkloadVersionsResponse(base_version=base_name, target_version=target_name)
        if base.version == target.version or base.source == target.source:
            return response
        for change in specdiff.diff_documents(_document(base.source), _document(target.source)):
            item = response.changes.add(op=_CHANGE_OPS[change.op], pointer=change.pointer)
            if change.old is not specdiff.MISSING:
                json_format.ParseDict(change.old, item.old_value)
            if change.new is not specdiff.MISSING:
                json_format.ParseDict(change.new, item.new_value)
        response.unified_diff = specdiff.unified_diff(base.source, target.source, base_name, target_name)
        return response

    async def _version_row(self, session, workload: str, version: int):
        versions = models.workload_versions
        row = (
            await session.execute(
                select(versions).where((versions.c.workload == workload) & (versions.c.version == version))
            )
        ).one_or_none()
        if row is None:
            existing = await self._existing_versions(session, workload)
            raise NotFound(
                f"workload {workload!r} has no version {version}; it has versions {existing}",
                reason="WORKLOAD_VERSION_NOT_FOUND",
                metadata={"workload": workload, "version": str(version), "versions": existing},
            )
        return row

    async def _existing_versions(self, session, workload: str) -> str:
        """The stored version numbers of ``workload`` as "1-3" (NOT_FOUND when there are none)."""
        versions = models.workload_versions
        low, high, count = (
            await session.execute(
                select(func.min(versions.c.version), func.max(versions.c.version), func.count())
                .where(versions.c.workload == workload)
            )
        ).one()
        if not count:
            raise NotFound(
                f"workload {workload!r} not found: no Score file with metadata.name {workload!r} was ever deployed",
                reason="WORKLOAD_NOT_FOUND",
                metadata={"workload": workload},
            )
        if low == high:
            return str(low)
        if count == high - low + 1:
            return f"{low}-{high}"
        numbers = (
            await session.execute(
                select(versions.c.version).where(versions.c.workload == workload).order_by(versions.c.version)
            )
        ).scalars().all()
        return ",".join(map(str, numbers))


_CHANGE_OPS = {
    specdiff.ADDED: specs_pb2.Change.OP_ADDED,
    specdiff.REMOVED: specs_pb2.Change.OP_REMOVED,
    specdiff.CHANGED: specs_pb2.Change.OP_CHANGED,
}


def _version_proto(row, source: bool = False) -> specs_pb2.WorkloadVersion:
    v = specs_pb2.WorkloadVersion(
        name=f"workloads/{row.workload}/versions/{row.version}",
        version=row.version,
        content_hash=row.content_hash,
        creator=row.creator,
        score_yaml=row.source if source else "",
    )
    times.set_time(v.create_time, row.created_at)
    return v


def _document(source: str):
    """The parsed Score document of a stored version (stored versions passed validation)."""
    document = validate_score(source).document
    return document if document is not None else {}


def _segment_ok(value: str) -> bool:
    return bool(value) and "/" not in value and len(value) <= 128


def _workload_name(name: str, field: str) -> str:
    """"workloads/web" (or "web") -> "web"."""
    workload = name.removeprefix("workloads/")
    if not _segment_ok(workload):
        raise InvalidArgument(
            f"{field} {name!r} is not a workload name: use workloads/{{workload}}",
            violations=[FieldViolation(field, "a workload resource name, e.g. workloads/web")],
        )
    return workload


def _version_name(name: str) -> tuple[str, int]:
    found = re.fullmatch(r"(?:workloads/)?([^/]+)/versions/([0-9]{1,9})", name)
    if not found or not _segment_ok(found.group(1)) or int(found.group(2)) < 1:
        raise InvalidArgument(
            f"name {name!r} is not a workload version name: use workloads/{{workload}}/versions/{{version}} "
            "with a version number of 1 or more",
            violations=[FieldViolation("name", "e.g. workloads/web/versions/3")],
        )
    return found.group(1), int(found.group(2))


def _encode_page_token(kind: str, state: dict) -> str:
    raw = json.dumps({"k": kind, **state}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_page_token(token: str, kind: str) -> dict:
    try:
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        if not isinstance(data, dict) or data.get("k") != kind:
            raise ValueError(token)
        return data
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidArgument(
            "page_token is not valid: pass the next_page_token of the previous response unchanged",
            reason="INVALID_PAGE_TOKEN",
        ) from None


def _plain(value):
    """``value`` with integral floats as ints: outputs that went through a protobuf Struct (every
    number a double) compare equal to the same outputs read back from a set's JSON."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _struct(value: dict) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(value)
    return s


def definition() -> ServiceDefinition:
    def register(server, runtime: Runtime) -> None:
        servicer = SpecsServicer(runtime)
        specs_pb2_grpc.add_SpecsServiceServicer_to_server(servicer, server)
        # Team ownership and quotas: what the policy decides them on (specs/teams.py). A team
        # the request names must exist, checked here already (before the policy).
        service = specs_pb2.DESCRIPTOR.services_by_name["SpecsService"].full_name

        async def create_deployment_facts(request) -> dict:
            return await teams.create_deployment_facts(request, servicer.identity_names.require_team)

        runtime.register_policy_facts(f"/{service}/CreateDeployment", create_deployment_facts)
        runtime.register_policy_facts(f"/{service}/RollbackDeployment", teams.rollback_deployment_facts)
        runtime.register_policy_facts(f"/{service}/DeleteApplication", teams.delete_application_facts)

    return ServiceDefinition(
        name="specs",
        descriptors=[specs_pb2.DESCRIPTOR.services_by_name["SpecsService"]],
        register=register,
        outbox_table=models.outbox,
    )
