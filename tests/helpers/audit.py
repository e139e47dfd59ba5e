"""Reading the audit record from tests: records arrive through each service's outbox, so a
test lists them (as the gateway would, over mTLS) and waits until what it expects is there
(tests/helpers/polling.py)."""

from __future__ import annotations

from innominatus.audit.v1 import audit_pb2, audit_pb2_grpc
from innominatus.kit.clients import secure_channel


async def list_records(platform, token: str, **filters) -> list[audit_pb2.AuditRecord]:
    """Up to 1,000 audit records matching ``filters`` (RecordFilter fields, e.g. method=...)."""
    async with secure_channel(platform.address("audit"), platform.tls("gateway")) as channel:
        stub = audit_pb2_grpc.AuditServiceStub(channel)
        response = await stub.ListRecords(
            audit_pb2.ListRecordsRequest(page_size=1000, filter=audit_pb2.RecordFilter(**filters)),
            metadata=[("authorization", f"Bearer {token}")],
        )
    return list(response.records)

