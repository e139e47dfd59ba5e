"""ResourceDefinitionService: admin-managed, versioned resource definitions, served by resources.

Mutations (create, update, delete) are policy-gated (``resourcedefinitions.write``) and audited by
the service kit from their proto options; handlers hold no authorization code. Every update
stores a new version; deleting stamps the versions deleted (they stay on record).

Wiring, from the resources service's ``definition()`` (service.py)::

    register_definitions(server, runtime)          # in register()
    descriptors=[..., definitions_descriptor()]    # in ServiceDefinition
"""

from __future__ import annotations

import base64

import grpc
from google.protobuf import json_format
from sqlalchemy import func, select, text, update

from innominatus.kit import context as reqctx
from innominatus.kit import db
from innominatus.kit.errors import AlreadyExists, FailedPrecondition, InnominatusError, InvalidArgument, NotFound
from innominatus.kit.pagination import page_size
from innominatus.kit.times import now, set_time
from innominatus.resources.definition_models import resource_definitions as table
from innominatus.resources.definitions import (
    ResourceDefinition,
    builtin_definitions,
    check_no_ties,
    from_row,
    load_stored,
    load_versions,
    to_row,
    validate_definition,
    with_builtins,
)
from innominatus.resources.provisioners import _plain, list_provisioners
from innominatus.resources.v1 import definitions_pb2, definitions_pb2_grpc

PREFIX = "resourceDefinitions/"


class EtagMismatch(InnominatusError):
    code = grpc.StatusCode.ABORTED
    default_reason = "ETAG_MISMATCH"


def definitions_descriptor():
    return definitions_pb2.DESCRIPTOR.services_by_name["ResourceDefinitionService"]


def register_definitions(server, runtime) -> None:
    definitions_pb2_grpc.add_ResourceDefinitionServiceServicer_to_server(ResourceDefinitionServicer(runtime), server)


def _bare(name: str) -> str:
    return name.removeprefix(PREFIX).strip()


def from_proto(message: definitions_pb2.ResourceDefinition, name: str) -> ResourceDefinition:
    prov = message.provisioner
    provisioner: dict = {"kind": prov.kind}
    if prov.driver:
        provisioner["driver"] = prov.driver
    if prov.template:
        provisioner["template"] = prov.template
    if prov.command:
        provisioner["command"] = list(prov.command)
    if prov.timeout_seconds:
        provisioner["timeout_seconds"] = prov.timeout_seconds
    provisioner["config"] = _plain(json_format.MessageToDict(prov.config))
    c = message.criteria
    criteria = {k: v for k, v in (("env_type", c.env_type), ("environment", c.environment),
                                  ("application", c.application), ("team", c.team)) if v}
    return ResourceDefinition(
        name=name,
        type=message.type,
        class_=getattr(message, "class"),
        id=message.id,
        criteria=criteria,
        provisioner=provisioner,
        params_schema=_plain(json_format.MessageToDict(message.params_schema)),
        outputs=list(message.outputs),
        secret_outputs=list(message.secret_outputs),
        description=message.description,
    )


def to_proto(d: ResourceDefinition, create_time=None) -> definitions_pb2.ResourceDefinition:
    prov = d.provisioner
    message = definitions_pb2.ResourceDefinition(
        name=PREFIX + d.name,
        version=d.version,
        type=d.type,
        id=d.id,
        criteria=definitions_pb2.MatchingCriteria(**{k: str(v) for k, v in d.criteria_items().items()}),
        provisioner=definitions_pb2.Provisioner(
            kind=prov.get("kind", ""),
            driver=prov.get("driver", ""),
            template=prov.get("template", ""),
            command=list(prov.get("command") or []),
            timeout_seconds=int(prov.get("timeout_seconds") or 0),
        ),
        outputs=d.outputs,
        secret_outputs=d.secret_outputs,
        description=d.description,
        etag=d.etag,
        builtin=d.builtin,
        creator=d.creator,
        **{"class": d.class_},
    )
    message.provisioner.config.update(prov.get("config") or {})
    message.params_schema.update(d.params_schema or {})
    set_time(message.create_time, create_time or d.created_at)
    set_time(message.update_time, d.created_at)
    return message


def _actor() -> str:
    ctx = reqctx.current()
    return ctx.subject.actor if ctx and ctx.subject else ""


def _builtin(name: str) -> ResourceDefinition | None:
    return next((b for b in builtin_definitions() if b.name == name), None)


def _check_etag(given: str, current: ResourceDefinition) -> None:
    if given and given != current.etag:
        raise EtagMismatch(
            f"resource definition {current.name!r} changed: etag {given} is not the current {current.etag} "
            "(get it again, re-apply your change, and send the new etag)",
            metadata={"current_etag": current.etag},
        )


async def _serialize(session) -> None:
    """One definition write at a time, so two concurrent writes cannot create a tie."""
    if session.bind.dialect.name == "postgresql":
        await session.execute(text("SELECT pg_advisory_xact_lock(hashtext('resources:resource_definitions'))"))


async def _current(session, name: str) -> tuple[ResourceDefinition | None, list]:
    rows = await load_versions(session, name)
    if not rows or rows[0].deleted_at is not None:
        return None, rows
    return from_row(rows[0]), rows


def _not_found(name: str) -> NotFound:
    builtin = _builtin(name)
    hint = (
        f"; {name!r} is a built-in default, which cannot be changed: create a definition of type "
        f"{builtin.type!r} to replace it" if builtin else "; see innominatus resources definitions list"
    )
    return NotFound(f"resource definition {name!r} not found{hint}", reason="RESOURCE_DEFINITION_NOT_FOUND")


async def _create_times(session) -> dict[str, object]:
    rows = (await session.execute(select(table.c.name, func.min(table.c.created_at)).group_by(table.c.name))).all()
    return {r[0]: r[1] for r in rows}


class ResourceDefinitionServicer(definitions_pb2_grpc.ResourceDefinitionServiceServicer):
    def __init__(self, runtime) -> None:
        self.runtime = runtime

    async def _store(self, session, d: ResourceDefinition, version: int) -> ResourceDefinition:
        d.version = version
        d.creator = _actor()
        await session.execute(table.insert().values(**to_row(d)))
        row = (await session.execute(select(table).where((table.c.name == d.name) & (table.c.version == version)))).one()
        return from_row(row)

    async def CreateResourceDefinition(self, request, context):
        name = _bare(request.resource_definition_id or request.resource_definition.name)
        d = from_proto(request.resource_definition, name)
        validate_definition(d)
        if _builtin(name):
            raise InvalidArgument(f"{name!r} is reserved for a built-in default; choose another name",
                                  reason="RESERVED_NAME")
        session = db.session()
        await _serialize(session)
        current, rows = await _current(session, name)
        if current is not None:
            raise AlreadyExists(
                f"resource definition {name!r} already exists (version {current.version}); update it instead",
                reason="RESOURCE_DEFINITION_EXISTS",
            )
        check_no_ties(await load_stored(session), d)
        stored = await self._store(session, d, (rows[0].version + 1) if rows else 1)
        return definitions_pb2.CreateResourceDefinitionResponse(resource_definition=to_proto(stored))

    async def UpdateResourceDefinition(self, request, context):
        name = _bare(request.resource_definition.name)
        if not name:
            raise InvalidArgument("resource_definition.name is required")
        session = db.session()
        await _serialize(session)
        current, rows = await _current(session, name)
        if current is None:
            raise _not_found(name)
        _check_etag(request.resource_definition.etag, current)
        d = from_proto(request.resource_definition, name)
        validate_definition(d)
        check_no_ties(await load_stored(session), d)
        stored = await self._store(session, d, current.version + 1)
        return definitions_pb2.UpdateResourceDefinitionResponse(
            resource_definition=to_proto(stored, create_time=rows[-1].created_at)
        )

    async def GetResourceDefinition(self, request, context):
        name = _bare(request.name)
        session = db.session()
        rows = [r for r in await load_versions(session, name) if r.deleted_at is None]
        if not rows:
            builtin = _builtin(name)
            if builtin is None or (request.version and request.version != builtin.version):
                raise _not_found(name)
            return definitions_pb2.GetResourceDefinitionResponse(resource_definition=to_proto(builtin))
        chosen = rows[0] if not request.version else next((r for r in rows if r.version == request.version), None)
        if chosen is None:
            raise NotFound(
                f"resource definition {name!r} has no version {request.version} "
                f"(versions: {', '.join(str(r.version) for r in rows)})",
                reason="RESOURCE_DEFINITION_NOT_FOUND",
            )
        return definitions_pb2.GetResourceDefinitionResponse(
            resource_definition=to_proto(from_row(chosen), create_time=rows[-1].created_at),
            versions=[r.version for r in rows],
        )

    async def ListResourceDefinitions(self, request, context):
        size = page_size(request.page_size)
        after = ""
        if request.page_token:
            try:
                after = base64.urlsafe_b64decode(request.page_token + "=" * (-len(request.page_token) % 4)).decode()
            except ValueError:
                raise InvalidArgument("page_token is not valid: pass the next_page_token of the previous response unchanged",
                                      reason="INVALID_PAGE_TOKEN") from None
        session = db.session()
        everything = sorted(with_builtins(await load_stored(session)), key=lambda d: d.name)
        if request.type:
            everything = [d for d in everything if d.type == request.type]
        remaining = [d for d in everything if d.name > after]
        page, more = remaining[:size], len(remaining) > size
        created = await _create_times(session)
        token = base64.urlsafe_b64encode(page[-1].name.encode()).decode().rstrip("=") if more else ""
        return definitions_pb2.ListResourceDefinitionsResponse(
            resource_definitions=[to_proto(d, create_time=created.get(d.name)) for d in page], next_page_token=token
        )

    async def DeleteResourceDefinition(self, request, context):
        name = _bare(request.name)
        session = db.session()
        await _serialize(session)
        current, _ = await _current(session, name)
        if current is None:
            if _builtin(name):
                raise FailedPrecondition(
                    f"{name!r} is a built-in default and cannot be deleted; it stops applying once a "
                    f"definition of type {_builtin(name).type!r} exists",
                    reason="BUILTIN_DEFINITION",
                )
            raise _not_found(name)
        _check_etag(request.etag, current)
        await session.execute(
            update(table).where((table.c.name == name) & table.c.deleted_at.is_(None)).values(deleted_at=now())
        )
        return definitions_pb2.DeleteResourceDefinitionResponse()

    async def ListProvisioners(self, request, context):
        drivers, kinds = list_provisioners()
        return definitions_pb2.ListProvisionersResponse(
            drivers=[definitions_pb2.ProvisionerDriver(**d) for d in drivers],
            kinds=[definitions_pb2.ProvisionerKind(**k) for k in kinds],
        )


__all__ = ["ResourceDefinitionServicer", "definitions_descriptor", "register_definitions"]
