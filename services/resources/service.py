"""The resources service: what each workload needs, and (later) its lifecycle.

In this slice it records the resources a deployment claims; provisioning comes with the
resource lifecycle work.
"""

from __future__ import annotations

import uuid

from google.protobuf import json_format
from sqlalchemy import select, update

from innominatus.kit import db
from innominatus.kit.errors import InvalidArgument, NotFound
from innominatus.kit.pagination import page_of
from innominatus.kit.server import Runtime, ServiceDefinition
from innominatus.kit.times import set_time
from innominatus.resources import models
from innominatus.resources.v1 import resources_pb2, resources_pb2_grpc

STATE_REQUESTED = "REQUESTED"


def _to_proto(row) -> resources_pb2.Resource:
    resource = resources_pb2.Resource(
        name=f"resources/{row.id}",
        application=row.application,
        environment=row.environment,
        workload=row.workload,
        claim=resources_pb2.ResourceClaim(ref=row.ref, type=row.type, id=row.shared_id, **{"class": row._mapping["class"]}),
        state=resources_pb2.ResourceState.Value(f"RESOURCE_STATE_{row.state}"),
    )
    resource.claim.params.update(row.params or {})
    set_time(resource.create_time, row.created_at)
    set_time(resource.update_time, row.updated_at)
    return resource


class ResourcesServicer(resources_pb2_grpc.ResourcesServiceServicer):
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    async def ClaimResources(self, request, context):
        if not request.application or not request.environment or not request.workload:
            raise InvalidArgument("application, environment and workload are required")
        session = db.session()
        table = models.resources
        out = []
        for claim in request.claims:
            if not claim.ref or not claim.type:
                raise InvalidArgument(f"resource claim {claim.ref or '<unnamed>'} needs a name and a type")
            key = (
                (table.c.application == request.application)
                & (table.c.environment == request.environment)
                & (table.c.workload == request.workload)
                & (table.c.ref == claim.ref)
            )
            params = json_format.MessageToDict(claim.params)
            values = dict(type=claim.type, shared_id=claim.id, params=params, **{"class": getattr(claim, "class")})
            existing = (await session.execute(select(table.c.id).where(key))).scalar_one_or_none()
            if existing:
                await session.execute(update(table).where(table.c.id == existing).values(**values))
            else:
                await session.execute(
                    table.insert().values(
                        id=uuid.uuid4().hex,
                        application=request.application,
                        environment=request.environment,
                        workload=request.workload,
                        ref=claim.ref,
                        state=STATE_REQUESTED,
                        **values,
                    )
                )
            row = (await session.execute(select(table).where(key))).one()
            out.append(_to_proto(row))
        return resources_pb2.ClaimResourcesResponse(resources=out)

    async def ListResources(self, request, context):
        table = models.resources
        query = select(table)
        application = request.application.removeprefix("applications/")
        if application:
            query = query.where(table.c.application == application)
        if request.environment:
            query = query.where(table.c.environment == request.environment)
        rows, token = await page_of(db.session(), query, table.c.created_at, table.c.id, request.page_size, request.page_token)
        return resources_pb2.ListResourcesResponse(resources=[_to_proto(r) for r in rows], next_page_token=token)

    async def GetResource(self, request, context):
        table = models.resources
        resource_id = request.name.removeprefix("resources/")
        row = (await db.session().execute(select(table).where(table.c.id == resource_id))).one_or_none()
        if row is None:
            raise NotFound(f"resource {request.name!r} not found", reason="RESOURCE_NOT_FOUND")
        return resources_pb2.GetResourceResponse(resource=_to_proto(row))


def definition() -> ServiceDefinition:
    def register(server, runtime: Runtime) -> None:
        resources_pb2_grpc.add_ResourcesServiceServicer_to_server(ResourcesServicer(runtime), server)

    return ServiceDefinition(
        name="resources",
        descriptors=[resources_pb2.DESCRIPTOR.services_by_name["ResourcesService"]],
        register=register,
        outbox_table=models.outbox,
    )
