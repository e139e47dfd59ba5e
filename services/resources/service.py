"""The resources service: what each workload needs, and each resource instance's lifecycle.

- ``ClaimResources`` records what a deployment's workloads claim. Claims with the same type,
  class and (non-empty) id in one environment are ONE shared instance (``shared_key``), referenced
  by every claiming workload (table ``resource_claims``). The instance records the environment's
  type and the team owning the claiming application (a shared one: its first claimer's), as the
  specs service sends them: definitions match on both, and the team's developers may reveal
  the instance's secrets (``owner_facts`` gives the policy the owner).
- ``ProvisionResource`` / ``DeprovisionResource`` are called by the engine's ``resource`` step
  (so provisioning retries, resumes and shows in the run's DAG): they match the instance's
  resource definition, run its provisioner and walk the state machine of
  :mod:`innominatus.resources.lifecycle`, committing each state as it is reached.
- ``CheckResource`` runs the provisioner's health check and drift detection now; the health
  monitor (:mod:`innominatus.resources.monitor`) runs the same check
  (:mod:`innominatus.resources.health`) on every ACTIVE / DEGRADED instance periodically.
- Secret outputs go to the secret store (:mod:`innominatus.resources.secrets`); rows and answers
  hold ``secret://`` references only. ``RevealResourceSecrets`` is the one RPC returning values.

See docs/resources.md.
"""

from __future__ import annotations

import asyncio
import os
import dataclasses
import hashlib
import importlib
import json
import re
import uuid
import weakref
from contextlib import asynccontextmanager
from typing import Any

from google.protobuf import json_format
from sqlalchemy import select, text, update

from innominatus.kit import context as reqctx
from innominatus.kit import db
from innominatus.kit.errors import FailedPrecondition, FieldViolation, InnominatusError, Internal, InvalidArgument, NotFound, Unavailable
from innominatus.kit.logs import get_logger
from innominatus.kit.pagination import page_of
from innominatus.kit.server import Runtime, ServiceDefinition
from innominatus.kit.times import set_time
from innominatus.resources import lifecycle, models
from innominatus.resources.v1 import resources_pb2, resources_pb2_grpc

log = get_logger("innominatus.resources.service")

STATE_REQUESTED = lifecycle.REQUESTED
# Environment types as the specs service names them and resource definitions' `env_type`
# criterion is written ("" = unknown: the claim matches only definitions without one).
ENVIRONMENT_TYPES = ("development", "staging", "production")
LOCK_TIMEOUT_SECONDS = 300
_SEGMENT = re.compile(r"[^A-Za-z0-9_.-]+")
_TEAM = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")  # innominatus.kit.names: an RFC 1123 label


def _definitions():
    """The resource definitions module (imported lazily: a seam for tests and partial installs)."""
    from innominatus.resources import definitions  # noqa: PLC0415

    return definitions


def _store_error(exc: BaseException) -> str:
    """A secret store failure in words: the store's own errors and configuration errors never
    carry a value (innominatus.resources.secrets); anything else only by its type."""
    from innominatus.resources.secrets import SecretStoreError  # noqa: PLC0415

    if isinstance(exc, SecretStoreError) or (isinstance(exc, ValueError) and str(exc).startswith("configuration error")):
        return " ".join(str(exc).split())[:500]
    return type(exc).__name__


def _entry_point(name: str):
    """``run_provisioner`` / ``run_deprovisioner`` of the definitions work (definitions or
    provisioners module), ``None`` when neither has it (then the built-in driver is called)."""
    for module in ("definitions", "provisioners"):
        try:
            found = getattr(importlib.import_module(f"innominatus.resources.{module}"), name, None)
        except ImportError:
            found = None
        if found is not None:
            return found
    return None


def _actor() -> str:
    ctx = reqctx.current()
    return ctx.subject.actor if ctx is not None and ctx.subject is not None else "system"


def _resource_id(name: str) -> str:
    rid = (name or "").removeprefix("resources/")
    if not rid or "/" in rid:
        raise InvalidArgument(f"resource name {name!r} is not of the form resources/{{id}}", reason="INVALID_RESOURCE_NAME")
    return rid


def _owner_fields(request) -> tuple[str, str]:
    """(environment type, bare team name) of a ClaimResourcesRequest, checked."""
    env_type = request.environment_type.strip().lower()
    if env_type and env_type not in ENVIRONMENT_TYPES:
        raise InvalidArgument(
            f"environment_type {request.environment_type!r} is not an environment type: use one of "
            f"{', '.join(ENVIRONMENT_TYPES)}, or leave it empty when unknown",
            reason="INVALID_ENVIRONMENT_TYPE",
            violations=[FieldViolation("environment_type", f"one of {', '.join(ENVIRONMENT_TYPES)}")],
        )
    team = request.team.strip().removeprefix("teams/")
    if request.team.strip() and not _TEAM.fullmatch(team):
        raise InvalidArgument(
            f"team {request.team!r} is not a team name: give teams/{{team}} or the bare name "
            "(lowercase letters, digits and '-'), or leave it empty for an application no team owns",
            reason="INVALID_TEAM",
            violations=[FieldViolation("team", "e.g. teams/payments or payments")],
        )
    return env_type, team


def shared_key(type_: str, class_: str, shared_id: str) -> str:
    return f"{type_}.{class_ or 'default'}#{shared_id}"


def provider_id(row) -> str:
    """The id the provisioner derives names from (database, ACL user, hostname)."""
    if row.shared_key:
        return f"{row.environment}-{row.shared_id}"
    parts = [row.application, row.environment]
    if row.workload and row.workload != row.application:
        parts.append(row.workload)
    parts.append(row.ref)
    return "-".join(parts)


def secret_path(row) -> str:
    """Where the instance's secret outputs live in the secret store."""
    seg = lambda text: _SEGMENT.sub("-", str(text)).strip(".") or "_"  # noqa: E731
    if row.shared_key:
        return f"shared/{seg(row.environment)}/{seg(row.shared_id)}"
    name = row.ref if not row.workload or row.workload == row.application else f"{row.workload}-{row.ref}"
    return f"apps/{seg(row.application)}/{seg(row.environment)}/{seg(name)}"


# ---------------------------------------------------------------------------------------------
# Provisioners of a definition


@dataclasses.dataclass
class _Provisioner:
    """What ProvisionResource needs from a matched resource definition."""

    definition: Any
    ref: str  # "name@version"

    @property
    def spec(self) -> dict:
        return dict(getattr(self.definition, "provisioner", None) or {})

    def driver(self):
        if self.spec.get("kind", "driver") != "driver":
            return None
        from innominatus.resources.drivers import get_driver  # noqa: PLC0415

        return get_driver(self.spec.get("driver") or self.definition.type)

    def context(self, ctx):
        config = self.spec.get("config")
        return dataclasses.replace(ctx, config=dict(config)) if isinstance(config, dict) else ctx

    async def provision(self, ctx):
        run = _entry_point("run_provisioner")
        if run is not None:
            return await run(self.definition, ctx)
        return await self.driver().provision(self.context(ctx))

    async def deprovision(self, ctx, state):
        run = _entry_point("run_deprovisioner")
        if run is not None:
            return await run(self.definition, ctx, state)
        return await self.driver().deprovision(self.context(ctx), state)

    async def health(self, ctx, state, secrets):
        from innominatus.resources.drivers import Health  # noqa: PLC0415

        driver = self.driver()
        if driver is None:
            return Health(True, f"{self.spec.get('kind')} provisioners have no health check")
        return await driver.health(self.context(ctx), state, secrets)

    async def drift(self, ctx, state):
        from innominatus.resources.drivers import Drift  # noqa: PLC0415

        driver = self.driver()
        if driver is None:
            return Drift(True, "")
        return await driver.drift(self.context(ctx), state)


def _applied_hash(provisioner: _Provisioner, row, params: dict | None = None) -> str:
    """``params``: the claim's params with other resources' outputs filled in (secret ones as
    their versioned references), so a dependency that changed makes this one provision again."""
    body = json.dumps(
        {"definition": provisioner.ref, "type": row.type, "class": row._mapping["class"],
         "params": row.params or {} if params is None else params},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(body.encode()).hexdigest()


# ---------------------------------------------------------------------------------------------
# Proto


def _state_enum(state: str) -> int:
    return resources_pb2.ResourceState.Value(f"RESOURCE_STATE_{state}") if state else 0


def _to_proto(row, claims: list | None = None, transitions: list | None = None) -> resources_pb2.Resource:
    m = row._mapping
    resource = resources_pb2.Resource(
        name=f"resources/{row.id}",
        application=row.application,
        environment=row.environment,
        workload=row.workload,
        claim=resources_pb2.ResourceClaim(ref=row.ref, type=row.type, id=row.shared_id, **{"class": m["class"]}),
        state=_state_enum(row.state),
        status_reason=m.get("state_reason") or "",
        definition=m.get("definition") or "",
        shared_key=m.get("shared_key") or "",
        environment_type=m.get("environment_type") or "",
        team=f"teams/{m['team']}" if m.get("team") else "",
    )
    resource.claim.params.update(row.params or {})
    resource.outputs.update(m.get("outputs") or {})
    for key, ref in sorted((m.get("secret_refs") or {}).items()):
        resource.secret_refs[key] = ref
    workloads = sorted({f"{c.application}/{c.workload}" for c in (claims or [])})
    resource.workloads.extend(workloads or [f"{row.application}/{row.workload}"])
    for t in transitions or []:
        item = resource.transitions.add(reason=t.reason or "", actor=t.actor or "")
        setattr(item, "from", _state_enum(t.from_state))
        item.to = _state_enum(t.to_state)
        set_time(item.time, t.created_at)
    set_time(resource.create_time, row.created_at)
    set_time(resource.update_time, row.updated_at)
    return resource


async def _claims_of(session, ids: list[str]) -> dict[str, list]:
    if not ids:
        return {}
    table = models.resource_claims
    rows = (await session.execute(select(table).where(table.c.resource_id.in_(ids)))).all()
    out: dict[str, list] = {i: [] for i in ids}
    for r in rows:
        out[r.resource_id].append(r)
    return out


async def _protos(session, rows) -> list[resources_pb2.Resource]:
    ids = [r.id for r in rows]
    claims = await _claims_of(session, ids)
    history = await lifecycle.history(session, ids)
    return [_to_proto(r, claims.get(r.id), history.get(r.id)) for r in rows]


# Provisions one resources process runs at once (INNOMINATUS_RESOURCES_PARALLEL_PROVISIONS).
PARALLEL_PROVISIONS = 4


class ResourcesServicer(resources_pb2_grpc.ResourcesServiceServicer):
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._store = None
        self._local_locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        # A provision holds a database connection for its instance lock and needs more while it
        # works; unbounded parallel provisions (a deploy with many resources) would exhaust the
        # connection pool with lock holders each waiting for one more. Extra calls queue here.
        self._slots = asyncio.Semaphore(
            max(1, int(os.environ.get("INNOMINATUS_RESOURCES_PARALLEL_PROVISIONS", str(PARALLEL_PROVISIONS))))
        )

    # -- helpers --------------------------------------------------------------------------

    @property
    def store(self):
        if self._store is None:
            from innominatus.resources.secrets import make_secret_store  # noqa: PLC0415

            self._store = make_secret_store(self.runtime.settings, db=self.runtime.db)
        return self._store

    @asynccontextmanager
    async def _instance_lock(self, rid: str):
        """One provision / deprovision of an instance at a time, across processes on PostgreSQL,
        and at most PARALLEL_PROVISIONS at once in this process."""
        async with self._slots, self._locked(rid):
            yield

    @asynccontextmanager
    async def _locked(self, rid: str):
        database = self.runtime.db
        if database is not None and database.is_postgres:
            key = f"innominatus:resource:{rid}"
            async with database.engine.connect() as conn:
                try:
                    await conn.execute(text(f"SET lock_timeout = '{LOCK_TIMEOUT_SECONDS}s'"))
                    await conn.execute(text("SELECT pg_advisory_lock(hashtext(:k))"), {"k": key})
                except Exception:
                    raise Unavailable(
                        f"resources/{rid} is being changed by another call; try again", reason="RESOURCE_BUSY"
                    ) from None
                try:
                    yield
                finally:
                    try:
                        await conn.execute(text("SELECT pg_advisory_unlock(hashtext(:k))"), {"k": key})
                        await conn.commit()
                    except Exception:  # noqa: BLE001 - closing the connection releases it too
                        await conn.invalidate()
        else:
            lock = self._local_locks.get(rid)
            if lock is None:
                lock = self._local_locks[rid] = asyncio.Lock()
            async with lock:
                yield

    async def _row(self, rid: str):
        async with self.runtime.db.transaction() as session:
            row = (await session.execute(select(models.resources).where(models.resources.c.id == rid))).one_or_none()
        if row is None:
            raise NotFound(f"resource 'resources/{rid}' not found", reason="RESOURCE_NOT_FOUND")
        return row

    async def _move(self, rid: str, to_state: str, *, reason: str = "", expect=None, values=None) -> None:
        """A state change in its own, committed transaction (it survives the RPC failing)."""
        async with self.runtime.db.transaction() as session:
            await lifecycle.transition(session, rid, to_state, reason=reason, actor=_actor(), expect=expect, values=values)

    async def _fail(self, rid: str, reason: str) -> None:
        """Record a failure: FAILED when the table allows it, else only the reason."""
        async with self.runtime.db.transaction() as session:
            row = await lifecycle.load_for_update(session, rid)
            if lifecycle.allowed(row.state, lifecycle.FAILED):
                await lifecycle.transition(session, rid, lifecycle.FAILED, reason=reason, actor=_actor())
            else:
                await session.execute(
                    update(models.resources).where(models.resources.c.id == rid).values(state_reason=reason[: lifecycle.REASON_LIMIT])
                )

    async def _provisioner(self, row) -> _Provisioner:
        mod = _definitions()
        async with self.runtime.db.transaction() as session:
            definitions = await mod.load_definitions(session)
        definition = mod.match(
            definitions,
            type=row.type,
            class_=row._mapping["class"],
            id=row.shared_id,
            env_type=row._mapping.get("environment_type") or "",
            environment=row.environment,
            application="" if row.shared_key else row.application,
            # A shared instance matches with its owner team (its first claimer's): one instance,
            # one definition, whoever else claims it.
            team=row._mapping.get("team") or "",
        )
        return _Provisioner(definition, f"{definition.name}@{definition.version}")

    def _context(self, row, *, previous_state=None, previous_secrets=None, idempotency_key: str = "",
                 params: dict | None = None):
        from innominatus.resources.drivers import ProvisionContext  # noqa: PLC0415

        return ProvisionContext(
            resource_id=provider_id(row),
            type=row.type,
            class_=row._mapping["class"] or "default",
            params=dict(row.params or {}) if params is None else params,
            application=row.application,
            environment=row.environment,
            workload=row.workload,
            idempotency_key=idempotency_key or row.id,
            previous_state=previous_state,
            previous_secrets=previous_secrets,
        )

    async def _secrets(self, row) -> dict[str, str]:
        """The plaintext secret outputs of ``row`` (only for provisioners and reveal)."""
        refs = row._mapping.get("secret_refs") or {}
        if not refs:
            return {}
        from innominatus.resources.secrets import SecretNotFound, SecretRef  # noqa: PLC0415

        values: dict[str, str] = {}
        cache: dict[tuple, dict] = {}
        for key, text_ref in refs.items():
            ref = SecretRef.parse(text_ref)
            where = (ref.path, ref.version)
            if where not in cache:
                try:
                    cache[where] = await self.store.get(ref.path, ref.version)
                except SecretNotFound:
                    cache[where] = {}
            if ref.key in cache[where]:
                values[key] = cache[where][ref.key]
        return values

    async def _resolved_params(self, row, *, reveal: bool) -> dict:
        """The claim's params with every ``${resources.<ref>.<key>}`` replaced by that resource's
        output, as the provisioner receives them (Score semantics: kit.interpolation).

        ``<ref>`` is a name in the claiming workload's Score file: it is looked up among the
        claims of a workload that claims this instance (its owner first; a shared instance may
        be claimed under other names elsewhere). The deploy workflow provisions dependencies
        first, so a dependency that is not ACTIVE (or DEGRADED) here has failed: refused, not
        retried. A secret output is its plaintext value when ``reveal`` (only for the
        provisioner, never stored) and its versioned ``secret://`` reference otherwise (for the
        applied hash). Other placeholders (``${metadata...}``) are the specs service's and stay
        as written."""
        from innominatus.kit import interpolation  # noqa: PLC0415

        params = dict(row.params or {})
        wanted: set[str] = set()
        for _path, value in interpolation.strings_in(params):
            if "${" in value:
                for placeholder in interpolation.find_placeholders(value):
                    if len(placeholder.parts) >= 2 and placeholder.parts[0] == "resources":
                        wanted.add(placeholder.parts[1])
        if not wanted:
            return params
        table, claims = models.resources, models.resource_claims
        session = db.session()
        claimers = (await _claims_of(session, [row.id]))[row.id]
        claimers.sort(key=lambda c: (c.application, c.workload) != (row.application, row.workload))
        targets: dict[str, str] = {}
        for claimer in claimers:
            named = (await session.execute(select(claims.c.ref, claims.c.resource_id).where(
                (claims.c.application == claimer.application) & (claims.c.environment == claimer.environment)
                & (claims.c.workload == claimer.workload) & claims.c.ref.in_(sorted(wanted))))).all()
            if {r.ref for r in named} == wanted:
                targets = {r.ref: r.resource_id for r in named}
                break
        if not targets:
            who = ", ".join(sorted({f"{c.application}/{c.workload}" for c in claimers})) or "no workload"
            raise FailedPrecondition(
                f"the params of resources/{row.id} use the outputs of resources "
                f"{', '.join(sorted(wanted))}, which {who} does not claim: declare them in the same Score file",
                reason="DEPENDENCY_NOT_CLAIMED",
            )
        rows = {r.id: r for r in (await session.execute(select(table).where(table.c.id.in_(list(targets.values()))))).all()}
        values: dict[str, dict] = {}
        for ref, target_id in targets.items():
            target = rows.get(target_id)
            if target is None or target.state not in (lifecycle.ACTIVE, lifecycle.DEGRADED):
                state = target.state if target is not None else "missing"
                raise FailedPrecondition(
                    f"resources/{row.id} needs the outputs of resources.{ref} (resources/{target_id}), which is "
                    f"{state}: provision it first (deploy provisions dependencies first; see that resource's reason)",
                    reason="DEPENDENCY_NOT_READY",
                )
            secrets = await self._secrets(target) if reveal else dict(target.secret_refs or {})
            values[ref] = {**(target.outputs or {}), **secrets}

        class NotOurs(interpolation.PlaceholderError):
            pass

        def resolve(parts: tuple[str, ...]):
            if parts[0] != "resources":
                raise NotOurs("left for the specs service")
            return interpolation.lookup(values, parts[1:])

        problems: list = []  # collected, so the other placeholders stay as written
        resolved = interpolation.substitute_tree(params, resolve, problems)
        real = [p for p in problems if not isinstance(p, NotOurs)]
        if real:
            raise FailedPrecondition(
                f"the params of resources/{row.id} cannot be resolved: {real[0].message}",
                reason="INVALID_RESOURCE_PARAMS",
            )
        return resolved

    async def _answer(self, rid: str) -> resources_pb2.Resource:
        session = db.session()
        row = (await session.execute(select(models.resources).where(models.resources.c.id == rid))).one()
        return (await _protos(session, [row]))[0]

    # -- claims ---------------------------------------------------------------------------

    async def ClaimResources(self, request, context):
        if not request.application or not request.environment or not request.workload:
            raise InvalidArgument("application, environment and workload are required")
        env_type, team = _owner_fields(request)
        session = db.session()
        table, claims = models.resources, models.resource_claims
        out_ids = []
        for claim in request.claims:
            if not claim.ref or not claim.type:
                raise InvalidArgument(f"resource claim {claim.ref or '<unnamed>'} needs a name and a type")
            class_ = getattr(claim, "class")
            params = json_format.MessageToDict(claim.params)
            values = dict(type=claim.type, shared_id=claim.id, params=params, **{"class": class_})
            claim_key = (
                (claims.c.application == request.application)
                & (claims.c.environment == request.environment)
                & (claims.c.workload == request.workload)
                & (claims.c.ref == claim.ref)
            )
            owner_key = (
                (table.c.application == request.application)
                & (table.c.environment == request.environment)
                & (table.c.workload == request.workload)
                & (table.c.ref == claim.ref)
            )
            claimed = (await session.execute(select(claims.c.resource_id).where(claim_key))).scalar_one_or_none()
            instance = None
            if claim.id:  # shared: one instance per type + class + id in the environment
                key = shared_key(claim.type, class_, claim.id)
                same_id = (
                    await session.execute(
                        select(table).where(
                            (table.c.environment == request.environment)
                            & (table.c.shared_id == claim.id)
                            & table.c.shared_key.is_not(None)
                        )
                    )
                ).all()
                for other in same_id:
                    if other.shared_key != key:
                        raise FailedPrecondition(
                            f"resource id {claim.id!r} in environment {request.environment!r} is already a "
                            f"{other.type} (class {other._mapping['class'] or 'default'}) shared by "
                            f"{other.application}/{other.workload}; a shared id names one resource: use another id",
                            reason="SHARED_ID_CONFLICT",
                        )
                    instance = other
                if instance is not None:
                    shared_values: dict[str, Any] = {"params": params, "environment_type": env_type}
                    if instance.application == request.application:
                        # Only the application that claimed it first decides its team (one that
                        # was claimed by a team since); other applications' claims never do.
                        shared_values["team"] = team
                    await session.execute(update(table).where(table.c.id == instance.id).values(**shared_values))
                    rid = instance.id
                else:
                    rid = uuid.uuid4().hex
                    await session.execute(
                        table.insert().values(
                            id=rid, application=request.application, environment=request.environment,
                            workload=request.workload, ref=claim.ref, state=STATE_REQUESTED, shared_key=key,
                            environment_type=env_type, team=team, **values,
                        )
                    )
                    await lifecycle.record(session, rid, "", STATE_REQUESTED, reason=f"claimed by {request.application}/{request.workload} as {claim.ref}", actor=_actor())
            else:
                existing = None
                if claimed:
                    existing = (
                        await session.execute(select(table).where((table.c.id == claimed) & table.c.shared_key.is_(None)))
                    ).one_or_none()
                if existing is None:
                    existing = (await session.execute(select(table).where(owner_key & table.c.shared_key.is_(None)))).one_or_none()
                if existing is not None:
                    rid = existing.id
                    await session.execute(
                        update(table).where(table.c.id == rid).values(environment_type=env_type, team=team, **values)
                    )
                else:
                    rid = uuid.uuid4().hex
                    await session.execute(
                        table.insert().values(
                            id=rid, application=request.application, environment=request.environment,
                            workload=request.workload, ref=claim.ref, state=STATE_REQUESTED,
                            environment_type=env_type, team=team, **values,
                        )
                    )
                    await lifecycle.record(session, rid, "", STATE_REQUESTED, reason=f"claimed by {request.application}/{request.workload} as {claim.ref}", actor=_actor())
            state = (await session.execute(select(table.c.state).where(table.c.id == rid))).scalar_one()
            if state == lifecycle.DELETED:
                await lifecycle.transition(session, rid, STATE_REQUESTED, reason=f"claimed again by {request.application}/{request.workload}", actor=_actor())
            if claimed is None:
                await session.execute(
                    claims.insert().values(
                        application=request.application, environment=request.environment,
                        workload=request.workload, ref=claim.ref, resource_id=rid,
                    )
                )
            elif claimed != rid:
                await session.execute(update(claims).where(claim_key).values(resource_id=rid))
            out_ids.append(rid)
        dropped = await self._dropped_claims(session, request, out_ids)
        rows = {r.id: r for r in (await session.execute(select(table).where(table.c.id.in_(out_ids)))).all()}
        return resources_pb2.ClaimResourcesResponse(resources=await _protos(session, [rows[i] for i in out_ids]),
                                                    dropped=dropped)

    async def _dropped_claims(self, session, request, claimed_ids: list[str]) -> list[resources_pb2.Resource]:
        """The workload's claims whose ref the request no longer contains, as their instances with
        ``claim.ref`` the dropped ref (sorted by ref). They are kept: the deploy run releases them
        after committing the new version (DeprovisionResource with application and workload), so a
        failed deployment leaves what the running version uses alone. A dropped ref whose instance
        the request still claims under another ref is no release (the workload keeps the
        instance): only that stale claim row goes."""
        claims = models.resource_claims
        workload_key = (
            (claims.c.application == request.application)
            & (claims.c.environment == request.environment)
            & (claims.c.workload == request.workload)
        )
        wanted = {claim.ref for claim in request.claims}
        held = (await session.execute(select(claims).where(workload_key).order_by(claims.c.ref))).all()
        gone = [c for c in held if c.ref not in wanted]
        renamed = [c.ref for c in gone if c.resource_id in claimed_ids]
        if renamed:
            await session.execute(claims.delete().where(workload_key & claims.c.ref.in_(renamed)))
        gone = [c for c in gone if c.resource_id not in claimed_ids]
        if not gone:
            return []
        table = models.resources
        rows = {r.id: r for r in (await session.execute(
            select(table).where(table.c.id.in_({c.resource_id for c in gone})))).all()}
        gone = [c for c in gone if c.resource_id in rows]  # instance rows are never deleted; be safe
        out = []
        for claim, proto in zip(gone, await _protos(session, [rows[c.resource_id] for c in gone])):
            proto.claim.ref = claim.ref  # this workload's name for it (a shared one's row has its first claimer's)
            out.append(proto)
        return out

    async def ListResources(self, request, context):
        table = models.resources
        query = select(table)
        application = request.application.removeprefix("applications/")
        if application:
            shared = select(models.resource_claims.c.resource_id).where(models.resource_claims.c.application == application)
            query = query.where((table.c.application == application) | table.c.id.in_(shared))
        if request.environment:
            query = query.where(table.c.environment == request.environment)
        session = db.session()
        rows, token = await page_of(session, query, table.c.created_at, table.c.id, request.page_size, request.page_token)
        return resources_pb2.ListResourcesResponse(resources=await _protos(session, rows), next_page_token=token)

    async def GetResource(self, request, context):
        table = models.resources
        resource_id = request.name.removeprefix("resources/")
        session = db.session()
        row = (await session.execute(select(table).where(table.c.id == resource_id))).one_or_none()
        if row is None:
            raise NotFound(f"resource {request.name!r} not found", reason="RESOURCE_NOT_FOUND")
        return resources_pb2.GetResourceResponse(resource=(await _protos(session, [row]))[0])

    # -- lifecycle ------------------------------------------------------------------------

    async def ProvisionResource(self, request, context):
        from innominatus.resources.drivers import ProvisionError  # noqa: PLC0415

        rid = _resource_id(request.name)
        async with self._instance_lock(rid):
            row = await self._row(rid)
            if row.state in (lifecycle.DELETED, lifecycle.DEPROVISIONING):
                raise FailedPrecondition(
                    f"resources/{rid} is {row.state}: claim it again (deploy) before provisioning it",
                    reason="RESOURCE_DELETED",
                )
            try:
                provisioner = await self._provisioner(row)
            except InnominatusError as exc:
                if row.state not in lifecycle.PROVISIONED:  # a running resource stays as it is
                    await self._fail(rid, exc.message)
                raise
            try:
                applied = _applied_hash(provisioner, row, await self._resolved_params(row, reveal=False))
            except InnominatusError as exc:
                if row.state not in lifecycle.PROVISIONED:
                    await self._fail(rid, exc.message)
                raise
            if row.state == lifecycle.ACTIVE and row.applied_hash == applied and not request.force:
                return resources_pb2.ProvisionResourceResponse(resource=await self._answer(rid), provisioned=False)

            working = lifecycle.UPDATING if row.state in (lifecycle.ACTIVE, lifecycle.DEGRADED) else lifecycle.PROVISIONING
            if row.state != working:  # PROVISIONING / UPDATING already: an attempt that died is resumed
                await self._move(rid, working, reason=f"{'re-' if working == lifecycle.UPDATING else ''}provisioning with {provisioner.ref}")
            try:
                previous_secrets = await self._secrets(row) or None
            except Exception:  # noqa: BLE001 - without them the driver rotates the password
                previous_secrets = None
            try:
                params = await self._resolved_params(row, reveal=True)
            except InnominatusError as exc:
                await self._fail(rid, exc.message)
                raise
            except Exception as exc:  # noqa: BLE001 - the secret store; never echo its text
                reason = f"reading the outputs resources/{rid} depends on failed: {_store_error(exc)}"
                await self._fail(rid, reason)
                raise Unavailable(reason, reason="SECRET_STORE_UNAVAILABLE", metadata={"retryable": "true"}) from None
            ctx = self._context(
                row,
                previous_state=dict(row.driver_state or {}) or None,
                previous_secrets=previous_secrets,
                idempotency_key=request.idempotency_key,
                params=params,
            )
            try:
                result = await provisioner.provision(ctx)
            except ProvisionError as exc:
                await self._fail(rid, exc.message)
                log.warning("resource.provision_failed", resource=rid, reason=exc.reason, retryable=exc.retryable)
                raise
            except InnominatusError as exc:
                await self._fail(rid, exc.message)
                raise
            except Exception as exc:  # noqa: BLE001 - a broken provisioner; its text may hold anything
                await self._fail(rid, f"the provisioner of {provisioner.ref} crashed ({type(exc).__name__})")
                log.error("resource.provisioner_crashed", resource=rid, error_type=type(exc).__name__)
                raise Internal(f"the provisioner of resources/{rid} crashed ({type(exc).__name__})") from None

            path = secret_path(row)
            refs: dict[str, str] = {}
            try:
                if result.secret_outputs:
                    from innominatus.resources.secrets import format_ref  # noqa: PLC0415

                    version = await self.store.put(path, {k: str(v) for k, v in result.secret_outputs.items()})
                    refs = {k: format_ref(self.store.name, path, k, version) for k in sorted(result.secret_outputs)}
                elif row.secret_refs:
                    await self.store.delete(path)
            except Exception as exc:  # noqa: BLE001
                reason = f"storing the secret outputs of resources/{rid} failed: {_store_error(exc)}"
                await self._fail(rid, reason)
                raise Unavailable(reason, reason="SECRET_STORE_UNAVAILABLE", metadata={"retryable": "true"}) from None
            outputs = json.loads(json.dumps(result.outputs, default=str))
            await self._move(
                rid,
                lifecycle.ACTIVE,
                reason=f"provisioned with {provisioner.ref}",
                values=dict(
                    outputs=outputs,
                    secret_refs=refs,
                    driver_state=json.loads(json.dumps(result.state, default=str)),
                    definition=provisioner.ref,
                    applied_hash=applied,
                ),
            )
            log.info("resource.provisioned", resource=rid, definition=provisioner.ref, outputs=sorted(outputs), secrets=sorted(refs))
        return resources_pb2.ProvisionResourceResponse(resource=await self._answer(rid), provisioned=True)

    async def _release_claims(self, rid: str, application: str, workload: str = "") -> tuple[Any, list[str], list[str]]:
        """Delete ``application``'s claims on the instance (every workload of it, or only
        ``workload``'s) and note it in the instance's history; returns (row, released, remaining)
        with "<app>/<workload>" lists.

        Committed in its own transaction while the caller holds the instance lock, not in the
        RPC's: the instance lock is released before the RPC's transaction commits, so two
        applications releasing at once would each still see the other's claim and the instance
        would be left with no claimer. The row lock makes a concurrent ClaimResources (which
        updates the row of a shared instance before adding its claim) wait or be counted.
        """
        claims = models.resource_claims
        async with self.runtime.db.transaction() as session:
            row = await lifecycle.load_for_update(session, rid)
            held = (await _claims_of(session, [rid]))[rid]

            def ours(c) -> bool:
                return c.application == application and (not workload or c.workload == workload)

            released = sorted({f"{c.application}/{c.workload}" for c in held if ours(c)})
            remaining = sorted({f"{c.application}/{c.workload}" for c in held if not ours(c)})
            if released:
                which = (claims.c.resource_id == rid) & (claims.c.application == application)
                if workload:
                    which = which & (claims.c.workload == workload)
                await session.execute(claims.delete().where(which))
                # The lifecycle table has no "note" transition; a row from the current state to
                # itself records the release in the history without changing the instance.
                left = f"still claimed by {', '.join(remaining)}" if remaining else "no claims remain"
                await lifecycle.record(
                    session, rid, row.state, row.state,
                    reason=f"claim released by {', '.join(released)}; {left}", actor=_actor(),
                )
        return row, released, remaining

    async def _deprovision_answer(self, rid: str, *, released: bool = False) -> resources_pb2.DeprovisionResourceResponse:
        session = db.session()
        row = (await session.execute(select(models.resources).where(models.resources.c.id == rid))).one()
        claims = (await _claims_of(session, [rid]))[rid]
        history = await lifecycle.history(session, [rid])
        return resources_pb2.DeprovisionResourceResponse(
            resource=_to_proto(row, claims, history.get(rid)),
            released=released,
            remaining_claims=sorted({f"{c.application}/{c.workload}" for c in claims}),
        )

    async def DeprovisionResource(self, request, context):
        from innominatus.resources.drivers import ProvisionError  # noqa: PLC0415

        rid = _resource_id(request.name)
        application = request.application.strip().removeprefix("applications/")
        if request.application and (not application or "/" in application or len(application) > 128):
            raise InvalidArgument(
                f"application {request.application!r} is not an application name: give the bare name or "
                "applications/{name}, or leave it empty to release no claim",
                reason="INVALID_APPLICATION",
                violations=[FieldViolation("application", "e.g. shop or applications/shop")],
            )
        workload = request.workload.strip()
        if request.workload and (not workload or "/" in workload or len(workload) > 128):
            raise InvalidArgument(
                f"workload {request.workload!r} is not a workload name: give the bare name (e.g. api), or "
                "leave it empty to release every workload of the application",
                reason="INVALID_WORKLOAD",
                violations=[FieldViolation("workload", "e.g. api")],
            )
        if workload and not application:
            raise InvalidArgument(
                f"workload {workload!r} needs application: a workload's claims are released per application "
                "(give application too, e.g. shop)",
                reason="INVALID_WORKLOAD",
                violations=[FieldViolation("application", "the application of the workload, e.g. shop")],
            )
        async with self._instance_lock(rid):
            row = await self._row(rid)
            if application:
                row, released, remaining = await self._release_claims(rid, application, workload)
                if released:
                    log.info("resource.claim_released", resource=rid, application=application,
                             workload=workload or None, claims=released, remaining=len(remaining))
                if row.state != lifecycle.DELETED and remaining and not request.force:
                    # Others still use it: the instance stays exactly as it is.
                    return await self._deprovision_answer(rid, released=True)
            if row.state == lifecycle.DELETED:
                return await self._deprovision_answer(rid)
            if row.shared_key and not request.force and not application:
                async with self.runtime.db.transaction() as session:
                    users = (await _claims_of(session, [rid]))[rid]
                workloads = sorted({f"{c.application}/{c.workload}" for c in users})
                if len(workloads) > 1:
                    raise FailedPrecondition(
                        f"shared resource resources/{rid} ({row.shared_key}) is still claimed by {', '.join(workloads)}; "
                        "pass application to release only that application's claims, remove the other claims "
                        "first, or pass force",
                        reason="RESOURCE_STILL_CLAIMED",
                    )
            if row.state == lifecycle.REQUESTED:  # nothing was ever made
                await self._move(rid, lifecycle.DELETED, reason="deleted before it was provisioned")
                return await self._deprovision_answer(rid)
            if row.state in (lifecycle.PROVISIONING, lifecycle.UPDATING):
                # Under the instance lock nobody else is provisioning it: an attempt died.
                await self._fail(rid, f"the {row.state.lower()} attempt was interrupted; deprovisioning instead")
            if row.state != lifecycle.DEPROVISIONING:
                await self._move(rid, lifecycle.DEPROVISIONING, reason="deprovisioning")
            try:
                provisioner = await self._provisioner(row)
                await provisioner.deprovision(self._context(row), dict(row.driver_state or {}))
            except (ProvisionError, InnominatusError) as exc:
                await self._fail(rid, exc.message)
                raise
            except Exception as exc:  # noqa: BLE001
                await self._fail(rid, f"the deprovisioner crashed ({type(exc).__name__})")
                raise Internal(f"deprovisioning resources/{rid} crashed ({type(exc).__name__})") from None
            try:
                if row.secret_refs:
                    from innominatus.resources.secrets import SecretNotFound  # noqa: PLC0415

                    try:
                        await self.store.delete(secret_path(row))
                    except SecretNotFound:
                        pass
            except Exception as exc:  # noqa: BLE001
                reason = f"deleting the secrets of resources/{rid} failed: {_store_error(exc)}"
                await self._fail(rid, reason)
                raise Unavailable(reason, reason="SECRET_STORE_UNAVAILABLE", metadata={"retryable": "true"}) from None
            await self._move(
                rid,
                lifecycle.DELETED,
                reason=f"deprovisioned with {provisioner.ref}",
                values=dict(outputs={}, secret_refs={}, driver_state={}, applied_hash=""),
            )
            log.info("resource.deprovisioned", resource=rid, definition=provisioner.ref)
        return await self._deprovision_answer(rid)

    async def CheckResource(self, request, context):
        # The same check and transitions as the health monitor (innominatus.resources.monitor):
        # both run innominatus.resources.health.check_instance.
        from innominatus.resources import health  # noqa: PLC0415

        rid = _resource_id(request.name)
        session = db.session()
        row = (await session.execute(select(models.resources).where(models.resources.c.id == rid))).one_or_none()
        if row is None:
            raise NotFound(f"resource 'resources/{rid}' not found", reason="RESOURCE_NOT_FOUND")
        if row.state not in health.CHECKED_STATES:
            raise FailedPrecondition(
                f"resources/{rid} is {row.state}: only ACTIVE or DEGRADED resources are checked",
                reason="RESOURCE_NOT_PROVISIONED",
            )
        checked = await health.check_instance(self, row, actor=_actor(), trigger="api", session=session)
        return resources_pb2.CheckResourceResponse(
            resource=await self._answer(rid), healthy=checked.healthy, drifted=checked.drifted, reason=checked.reason
        )

    async def RevealResourceSecrets(self, request, context):
        rid = _resource_id(request.name)
        row = (
            await db.session().execute(select(models.resources).where(models.resources.c.id == rid))
        ).one_or_none()
        if row is None:
            raise NotFound(f"resource 'resources/{rid}' not found", reason="RESOURCE_NOT_FOUND")
        if not row.secret_refs:
            raise FailedPrecondition(f"resources/{rid} has no secret outputs (state {row.state})", reason="NO_SECRETS")
        try:
            values = await self._secrets(row)
        except Exception as exc:  # noqa: BLE001 - never echo the store's text
            raise Unavailable(f"the secret store could not be read: {_store_error(exc)}", reason="SECRET_STORE_UNAVAILABLE") from None
        log.info("resource.secrets_revealed", resource=rid, keys=sorted(values), actor=_actor())
        return resources_pb2.RevealResourceSecretsResponse(secrets=values)


async def owner_facts(request) -> dict:
    """``input.facts`` of RevealResourceSecrets and CheckResource: who owns the instance, so the
    policy can let a team's developers at their own resources (policies/innominatus/authz.rego).

    ``{"resource": {"name": "resources/<id>", "team": "payments" ("" = no team), "application":
    "checkout" (its first claimer's, for a shared one), "environment": "dev", "shared": false}}``.
    A malformed name or a missing instance is refused here, before the policy, as the handler
    would (every signed-in user may read resources, so NOT_FOUND tells nothing new)."""
    rid = _resource_id(request.name)
    table = models.resources
    row = (
        await db.session().execute(
            select(table.c.application, table.c.environment, table.c.team, table.c.shared_key).where(table.c.id == rid)
        )
    ).one_or_none()
    if row is None:
        raise NotFound(f"resource 'resources/{rid}' not found", reason="RESOURCE_NOT_FOUND")
    return {
        "resource": {
            "name": f"resources/{rid}",
            "team": row.team or "",
            "application": row.application,
            "environment": row.environment,
            "shared": bool(row.shared_key),
        }
    }


def definition() -> ServiceDefinition:
    # Resource definitions (admin-managed; innominatus.resources.definitions_service) are served
    # by the same process.
    from innominatus.resources import monitor  # noqa: PLC0415
    from innominatus.resources.definitions_service import definitions_descriptor, register_definitions  # noqa: PLC0415

    # Read now: a bad INNOMINATUS_RESOURCES_HEALTH_INTERVAL stops the start before anything listens.
    health_settings = monitor.settings_from_env()

    def register(server, runtime: Runtime) -> None:
        servicer = ResourcesServicer(runtime)
        runtime.state["resources.servicer"] = servicer
        resources_pb2_grpc.add_ResourcesServiceServicer_to_server(servicer, server)
        # Which team owns the instance: the policy grants a team's developers reveal of its own
        # resources' secrets (and could grant checks) on it.
        service = resources_pb2.DESCRIPTOR.services_by_name["ResourcesService"].full_name
        runtime.register_policy_facts(f"/{service}/RevealResourceSecrets", owner_facts)
        runtime.register_policy_facts(f"/{service}/CheckResource", owner_facts)
        register_definitions(server, runtime)

    async def on_start(runtime: Runtime) -> None:
        # Periodic health checks and drift detection of every ACTIVE / DEGRADED instance.
        monitor.start(runtime, runtime.state["resources.servicer"], health_settings)

    async def on_stop(runtime: Runtime) -> None:
        await monitor.stop(runtime)

    return ServiceDefinition(
        name="resources",
        descriptors=[resources_pb2.DESCRIPTOR.services_by_name["ResourcesService"], definitions_descriptor()],
        register=register,
        outbox_table=models.outbox,
        on_start=on_start,
        on_stop=on_stop,
    )
