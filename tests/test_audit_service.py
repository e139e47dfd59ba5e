"""The audit service over real gRPC and real mTLS, with the real interceptor chain.

Peers authenticate with certificates from a development CA made per test module. End-user
tokens are EdDSA JWTs minted here; the service verifies them against a JWKS the test hands
to the kit through ``ServiceDefinition.local_jwks`` (the identity service is not needed).
Mutations are decided by the repository's Rego policy (embedded engine).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import os
import time
import uuid

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from google.protobuf import timestamp_pb2
from sqlalchemy import create_engine, text

from innominatus.audit.service import definition
from innominatus.audit.v1 import audit_pb2, audit_pb2_grpc
from innominatus.common.v1 import audit_event_pb2
from innominatus.kit.clients import secure_channel
from innominatus.kit.config import Settings
from innominatus.kit.errors import decode_rpc_error
from innominatus.kit.pki import ensure_dev_pki
from innominatus.kit.policy import EmbeddedRegoPolicyEngine, default_policy_dir
from innominatus.kit.server import ServiceHost

SUCCEEDED = audit_event_pb2.AUDIT_OUTCOME_SUCCEEDED
DENIED = audit_event_pb2.AUDIT_OUTCOME_DENIED
FAILED = audit_event_pb2.AUDIT_OUTCOME_FAILED
KID = "test-key-1"


# ---------------------------------------------------------------------------
# Fixtures: PKI, signing key, policy engine, one audit service per test
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return ensure_dev_pki(tmp_path_factory.mktemp("pki"), ["audit", "identity", "specs", "gateway"])


@pytest.fixture(scope="module")
def signing_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture(scope="module")
def jwks_json(signing_key) -> str:
    jwk = json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(signing_key.public_key()))
    jwk.update(kid=KID, alg="EdDSA", use="sig")
    return json.dumps({"keys": [jwk]})


@pytest.fixture(scope="module")
async def policy_engine():
    engine = EmbeddedRegoPolicyEngine(default_policy_dir())
    await engine.load()
    yield engine
    await engine.close()


def mint(signing_key, username: str = "alice", roles=("admin",), ttl: int = 300) -> str:
    now = int(time.time())
    claims = {
        "iss": "innominatus",
        "aud": "innominatus",
        "sub": f"users/{username}",
        "preferred_username": username,
        "roles": list(roles),
        "iat": now,
        "exp": now + ttl,
    }
    return jwt.encode(claims, signing_key, algorithm="EdDSA", headers={"kid": KID})


@dataclasses.dataclass
class AuditUnderTest:
    host: ServiceHost
    address: str
    database_url: str
    pki: dict
    token: str
    channels: list

    def stub(self, peer: str) -> audit_pb2_grpc.AuditServiceStub:
        channel = secure_channel(self.address, self.pki[peer])
        self.channels.append(channel)
        return audit_pb2_grpc.AuditServiceStub(channel)

    @property
    def specs(self) -> audit_pb2_grpc.AuditServiceStub:
        return self.stub("specs")

    @property
    def auth(self) -> tuple:
        return (("authorization", f"Bearer {self.token}"),)

    def reader(self) -> audit_pb2_grpc.AuditServiceStub:
        return self.stub("gateway")

    def sql(self, statement: str, **params) -> None:
        """Change the service's tables directly, as an intruder with database access would."""
        engine = create_engine(self.database_url)
        try:
            with engine.begin() as connection:
                if engine.dialect.name == "postgresql":
                    connection.execute(text("SET LOCAL search_path TO audit"))
                connection.execute(text(statement), params)
        finally:
            engine.dispose()


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param(
            "postgres",
            marks=[
                pytest.mark.postgres,
                pytest.mark.skipif(
                    not os.environ.get("INNOMINATUS_TEST_DATABASE_URL"),
                    reason="PostgreSQL variant: run with scripts/test (sets INNOMINATUS_TEST_DATABASE_URL)",
                ),
            ],
        ),
    ]
)
def database_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'audit.db'}"
        return
    from tests.helpers.database import drop_database, fresh_database

    url = fresh_database("audit")
    yield url
    drop_database(url)


@pytest.fixture
async def audit(tmp_path, database_url, pki, jwks_json, signing_key, policy_engine):
    async def local_jwks_source() -> str:
        return jwks_json

    defn = dataclasses.replace(definition(), local_jwks=lambda runtime: local_jwks_source)
    settings = Settings(
        data_dir=tmp_path, database_url=database_url, tls=pki["audit"], addresses={}, shutdown_grace_seconds=1.0
    )
    host = ServiceHost(defn, settings, policy_engine=policy_engine)
    port = await host.start("127.0.0.1:0")
    under_test = AuditUnderTest(
        host=host,
        address=f"127.0.0.1:{port}",
        database_url=database_url,
        pki=pki,
        token=mint(signing_key),
        channels=[],
    )
    try:
        yield under_test
    finally:
        for channel in under_test.channels:
            await channel.close()
        await host.stop(grace=1.0)


def event(
    actor: str = "alice",
    outcome: int = SUCCEEDED,
    service: str = "specs",
    method: str = "/innominatus.specs.v1.SpecsService/CreateDeployment",
    occur: dt.datetime | None = None,
    event_id: str | None = None,
) -> audit_event_pb2.AuditEvent:
    e = audit_event_pb2.AuditEvent(
        id=event_id or str(uuid.uuid4()),
        service=service,
        method=method,
        permission="deployments.create",
        actor=actor,
        peer="gateway",
        outcome=outcome,
        resource_type="deployment",
        resource_name="checkout",
        request_id=uuid.uuid4().hex,
    )
    when = occur or dt.datetime.now(dt.timezone.utc)
    e.occur_time.FromDatetime(when)
    e.details.update({"application": "checkout", "environment": "dev"})
    return e


async def append(stub, *events) -> list[str]:
    response = await stub.AppendEvents(audit_pb2.AppendEventsRequest(events=list(events)), timeout=10)
    return list(response.accepted_ids)


async def list_all(t: AuditUnderTest, record_filter: audit_pb2.RecordFilter | None = None, page_size: int = 0):
    stub = t.reader()
    records, token, pages = [], "", 0
    while True:
        response = await stub.ListRecords(
            audit_pb2.ListRecordsRequest(page_size=page_size, page_token=token, filter=record_filter),
            metadata=t.auth,
            timeout=10,
        )
        pages += 1
        records.extend(response.records)
        token = response.next_page_token
        if not token:
            return records, pages


async def verify(t: AuditUnderTest) -> audit_pb2.VerifyChainResponse:
    return await t.reader().VerifyChain(audit_pb2.VerifyChainRequest(), metadata=t.auth, timeout=10)


async def export(t: AuditUnderTest, record_filter: audit_pb2.RecordFilter | None = None) -> list:
    call = t.reader().ExportRecords(audit_pb2.ExportRecordsRequest(filter=record_filter), metadata=t.auth, timeout=10)
    return [item.record async for item in call]


# ---------------------------------------------------------------------------
# Append, list, verify
# ---------------------------------------------------------------------------


async def test_append_list_verify(audit: AuditUnderTest) -> None:
    events = [event(actor=f"user{i}") for i in range(5)]
    accepted = await append(audit.specs, *events)
    assert accepted == [e.id for e in events]

    records, _ = await list_all(audit)
    assert [r.sequence for r in records] == [1, 2, 3, 4, 5]
    assert [r.event for r in records] == events
    assert records[0].prev_hash == ""
    for before, after in zip(records, records[1:]):
        assert after.prev_hash == before.hash
    assert all(len(r.hash) == 64 and r.record_time.seconds > 0 for r in records)

    result = await verify(audit)
    assert (result.ok, result.records_checked, result.first_bad_sequence, result.problem) == (True, 5, 0, "")

    # A second batch continues the same chain.
    more = [event(), event()]
    assert await append(audit.stub("identity"), *more) == [e.id for e in more]
    records, _ = await list_all(audit)
    assert [r.sequence for r in records] == list(range(1, 8))
    assert records[5].prev_hash == records[4].hash
    assert (await verify(audit)).records_checked == 7


async def test_empty_chain_verifies_and_lists_nothing(audit: AuditUnderTest) -> None:
    assert await append(audit.specs) == []
    result = await verify(audit)
    assert (result.ok, result.records_checked) == (True, 0)
    assert await list_all(audit) == ([], 1)
    assert await export(audit) == []


async def test_duplicate_event_ids_are_chained_once(audit: AuditUnderTest) -> None:
    first, second = event(), event()
    # The same id twice in one request, then redelivered in a later one (outbox relay retry).
    assert await append(audit.specs, first, first, second) == [first.id, second.id]
    third = event()
    assert await append(audit.specs, second, third, first) == [second.id, third.id, first.id]
    records, _ = await list_all(audit)
    assert [r.event.id for r in records] == [first.id, second.id, third.id]
    assert (await verify(audit)).ok


async def test_concurrent_appends_keep_one_chain(audit: AuditUnderTest) -> None:
    stubs = [audit.stub(peer) for peer in ("specs", "identity", "audit")]
    batches = [[event(actor=f"u{i}-{j}") for j in range(3)] for i in range(12)]
    # The same event delivered by two callers at once is still chained once.
    shared = event(actor="shared")
    await asyncio.gather(
        *(append(stubs[i % len(stubs)], *batch, shared) for i, batch in enumerate(batches))
    )
    records, _ = await list_all(audit, page_size=7)
    assert [r.sequence for r in records] == list(range(1, 12 * 3 + 2))
    ids = [r.event.id for r in records]
    assert len(set(ids)) == len(ids) and shared.id in ids
    assert (await verify(audit)).ok


async def test_events_need_an_id_and_a_method(audit: AuditUnderTest) -> None:
    good = event()
    no_id = event(event_id="x")
    no_id.id = ""
    no_method = event(method="")
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await append(audit.specs, good, no_id, no_method)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    remote = decode_rpc_error(raised.value)
    assert {v.field for v in remote.violations} == {"events[1].id", "events[2].method"}
    # Nothing of the rejected request was chained.
    assert await list_all(audit) == ([], 1)


# ---------------------------------------------------------------------------
# Who may call what
# ---------------------------------------------------------------------------


async def test_peer_not_in_callers_may_not_append(audit: AuditUnderTest) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await append(audit.stub("gateway"), event())
    assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert decode_rpc_error(raised.value).reason == "PEER_NOT_ALLOWED"
    assert await list_all(audit) == ([], 1)


async def test_user_may_not_append_even_through_an_allowed_peer(audit: AuditUnderTest) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await audit.specs.AppendEvents(
            audit_pb2.AppendEventsRequest(events=[event()]), metadata=audit.auth, timeout=10
        )
    assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED
    remote = decode_rpc_error(raised.value)
    assert remote.reason == "POLICY_DENIED"
    assert "only platform services append" in remote.message
    assert await list_all(audit) == ([], 1)


async def test_reads_need_a_user_token(audit: AuditUnderTest) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await audit.reader().VerifyChain(audit_pb2.VerifyChainRequest(), timeout=10)
    assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await audit.reader().ListRecords(
            audit_pb2.ListRecordsRequest(), metadata=(("authorization", "Bearer not-a-jwt"),), timeout=10
        )
    assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
    # Reads are served to the external surface only; a platform peer is not a caller.
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await audit.specs.ListRecords(audit_pb2.ListRecordsRequest(), metadata=audit.auth, timeout=10)
    assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED


# ---------------------------------------------------------------------------
# Tampering
# ---------------------------------------------------------------------------


async def test_edited_column_is_named_by_verify(audit: AuditUnderTest) -> None:
    await append(audit.specs, *[event(actor="alice") for _ in range(4)])
    assert (await verify(audit)).ok
    audit.sql("UPDATE records SET actor = 'mallory' WHERE sequence = 2")
    result = await verify(audit)
    assert not result.ok
    assert result.first_bad_sequence == 2
    assert result.problem == "record 2 was edited (column 'actor' does not match the recorded event)"


async def test_edited_payload_is_named_by_verify(audit: AuditUnderTest) -> None:
    events = [event() for _ in range(4)]
    await append(audit.specs, *events)
    forged = audit_event_pb2.AuditEvent()
    forged.CopyFrom(events[2])
    forged.reasons.append("nothing to see here")
    audit.sql("UPDATE records SET payload = :p WHERE sequence = 3", p=forged.SerializeToString())
    result = await verify(audit)
    assert (result.ok, result.first_bad_sequence, result.problem) == (False, 3, "record 3 was edited (hash mismatch)")


async def test_deleted_records_are_named_by_verify(audit: AuditUnderTest) -> None:
    await append(audit.specs, *[event() for _ in range(5)])
    audit.sql("DELETE FROM records WHERE sequence = 5")
    result = await verify(audit)
    assert (result.ok, result.first_bad_sequence) == (False, 5)
    assert result.problem == "the newest records after 4 were deleted: the chain head is at record 5"
    audit.sql("DELETE FROM records WHERE sequence = 2")
    result = await verify(audit)
    assert (result.ok, result.first_bad_sequence, result.problem) == (False, 3, "record 3: record 2 is missing (deleted)")


async def test_verify_streams_more_records_than_one_batch(audit: AuditUnderTest) -> None:
    from innominatus.audit import service

    total = service.BATCH + 37
    for start in range(0, total, 400):
        await append(audit.specs, *[event() for _ in range(min(400, total - start))])
    result = await verify(audit)
    assert (result.ok, result.records_checked) == (True, total)
    audit.sql("UPDATE records SET outcome = 'AUDIT_OUTCOME_DENIED' WHERE sequence = :s", s=service.BATCH + 3)
    result = await verify(audit)
    assert (result.ok, result.first_bad_sequence) == (False, service.BATCH + 3)
    assert len(await export(audit)) == total


# ---------------------------------------------------------------------------
# Listing, filters, pagination, export
# ---------------------------------------------------------------------------


async def _mixed(audit: AuditUnderTest) -> list[audit_event_pb2.AuditEvent]:
    base = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.timezone.utc)
    events = [
        event(actor="alice", outcome=SUCCEEDED, occur=base),
        event(actor="bob", outcome=DENIED, occur=base + dt.timedelta(minutes=1)),
        event(actor="alice", outcome=DENIED, occur=base + dt.timedelta(minutes=2),
              service="identity", method="/innominatus.identity.v1.IdentityService/CreateUser"),
        event(actor="alice", outcome=FAILED, occur=base + dt.timedelta(minutes=3)),
        event(actor="service:engine", outcome=SUCCEEDED, occur=base + dt.timedelta(minutes=4),
              service="engine", method="/innominatus.engine.v1.EngineService/StartRun"),
        event(actor="alice", outcome=SUCCEEDED, occur=base + dt.timedelta(minutes=5)),
    ]
    await append(audit.specs, *events)
    return events


def ts(value: dt.datetime) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(value)
    return out


async def test_list_filters(audit: AuditUnderTest) -> None:
    events = await _mixed(audit)
    base = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.timezone.utc)

    async def ids(**kwargs) -> list[str]:
        records, _ = await list_all(audit, audit_pb2.RecordFilter(**kwargs))
        return [r.event.id for r in records]

    assert await ids(actor="alice") == [events[i].id for i in (0, 2, 3, 5)]
    assert await ids(outcome=DENIED) == [events[1].id, events[2].id]
    assert await ids(actor="alice", outcome=DENIED) == [events[2].id]
    assert await ids(service="engine") == [events[4].id]
    assert await ids(method="IdentityService/") == [events[2].id]
    assert await ids(method="%") == []  # LIKE wildcards are literal
    assert await ids(start_time=ts(base + dt.timedelta(minutes=2)), end_time=ts(base + dt.timedelta(minutes=4))) == [
        events[2].id,
        events[3].id,
    ]
    assert await ids(start_time=ts(base + dt.timedelta(minutes=5))) == [events[5].id]
    assert await ids(actor="nobody") == []


async def test_pagination(audit: AuditUnderTest) -> None:
    events = await _mixed(audit)
    records, pages = await list_all(audit, page_size=4)
    assert pages == 2 and [r.event.id for r in records] == [e.id for e in events]
    records, pages = await list_all(audit, audit_pb2.RecordFilter(actor="alice"), page_size=1)
    assert pages == 4 and [r.sequence for r in records] == [1, 3, 4, 6]


async def test_invalid_page_token_is_rejected(audit: AuditUnderTest) -> None:
    await _mixed(audit)
    stub = audit.reader()
    for token in ("not a token", "eyJzIjogImEifQ", "e30"):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.ListRecords(audit_pb2.ListRecordsRequest(page_token=token), metadata=audit.auth, timeout=10)
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert decode_rpc_error(raised.value).reason == "INVALID_PAGE_TOKEN"
    # A real token only continues the listing it came from (AIP-158).
    first = await stub.ListRecords(
        audit_pb2.ListRecordsRequest(page_size=1, filter=audit_pb2.RecordFilter(actor="alice")),
        metadata=audit.auth,
        timeout=10,
    )
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.ListRecords(
            audit_pb2.ListRecordsRequest(page_token=first.next_page_token, filter=audit_pb2.RecordFilter(actor="bob")),
            metadata=audit.auth,
            timeout=10,
        )
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.ListRecords(audit_pb2.ListRecordsRequest(page_size=-1), metadata=audit.auth, timeout=10)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_export_streams_all_records_in_order(audit: AuditUnderTest) -> None:
    events = await _mixed(audit)
    records = await export(audit)
    assert [r.sequence for r in records] == [1, 2, 3, 4, 5, 6]
    assert [r.event for r in records] == events
    listed, _ = await list_all(audit)
    assert records == listed
    denied = await export(audit, audit_pb2.RecordFilter(outcome=DENIED))
    assert [r.sequence for r in denied] == [2, 3]


async def test_export_rejects_an_inverted_time_range(audit: AuditUnderTest) -> None:
    base = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.timezone.utc)
    bad = audit_pb2.RecordFilter(start_time=ts(base), end_time=ts(base - dt.timedelta(seconds=1)))
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await export(audit, bad)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
