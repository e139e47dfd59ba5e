"""The audit chain as users rely on it: every mutation recorded, tampering found, nothing
lost while the audit service is down."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import psycopg
import pytest
from sqlalchemy.engine import make_url

from innominatus.audit.v1 import audit_pb2, audit_pb2_grpc
from innominatus.common.v1 import audit_event_pb2
from innominatus.identity.v1 import identity_pb2
from innominatus.kit.clients import secure_channel
from innominatus.specs.v1 import specs_pb2, specs_pb2_grpc
from tests.helpers.audit import list_records
from tests.helpers.polling import eventually

pytestmark = pytest.mark.postgres

SCORE = (Path(__file__).parent / "fixtures" / "score" / "checkout.yaml").read_text()


def _sql(platform, statement: str, *params) -> list:
    url = make_url(platform.platform.settings.database_url).set(drivername="postgresql")
    with psycopg.connect(url.render_as_string(hide_password=False), autocommit=True) as conn:
        cursor = conn.execute(statement, params)
        return cursor.fetchall() if cursor.description else []


async def _verify(platform, token: str) -> audit_pb2.VerifyChainResponse:
    async with secure_channel(platform.address("audit"), platform.tls("gateway")) as channel:
        stub = audit_pb2_grpc.AuditServiceStub(channel)
        return await stub.VerifyChain(audit_pb2.VerifyChainRequest(), metadata=[("authorization", f"Bearer {token}")])


async def _deploy(platform, token: str, env: str = "dev"):
    async with secure_channel(platform.address("specs"), platform.tls("gateway")) as channel:
        stub = specs_pb2_grpc.SpecsServiceStub(channel)
        return await stub.CreateDeployment(
            specs_pb2.CreateDeploymentRequest(score_yaml=SCORE, environment=env),
            metadata=[("authorization", f"Bearer {token}")],
            timeout=20,
        )


async def test_allowed_and_denied_mutations_are_recorded_with_their_decision(platform):
    admin = await platform.login_admin()
    developer = await platform.create_user(admin, "dev1", identity_pb2.ROLE_DEVELOPER)
    viewer = await platform.create_user(admin, "view1", identity_pb2.ROLE_VIEWER)
    await _deploy(platform, developer)
    with pytest.raises(grpc.RpcError):
        await _deploy(platform, viewer)

    async def both_recorded():
        records = await list_records(platform, admin, method="CreateDeployment")
        return records if len(records) == 2 else None

    records = await eventually(both_recorded)
    by_actor = {r.event.actor: r.event for r in records}
    assert by_actor["dev1"].outcome == audit_event_pb2.AUDIT_OUTCOME_SUCCEEDED
    assert by_actor["view1"].outcome == audit_event_pb2.AUDIT_OUTCOME_DENIED
    assert any("viewer" in reason for reason in by_actor["view1"].reasons)
    for event in by_actor.values():
        assert event.decision_id and event.service == "specs" and event.peer == "gateway"
    # The hops behind the deployment were recorded by their own services, for the same user.
    claims = await eventually(lambda: list_records(platform, admin, method="ClaimResources"))
    assert claims[0].event.actor == "dev1" and claims[0].event.peer == "specs"
    # Secrets never reach the audit record.
    created = await list_records(platform, admin, method="CreateUser")
    assert created and all("correct-horse" not in str(r.event.details) for r in created)
    assert (await _verify(platform, admin)).ok


async def test_editing_or_deleting_a_record_in_the_database_makes_verify_name_it(platform):
    admin = await platform.login_admin()
    for name in ("u-one", "u-two", "u-three"):
        await platform.create_user(admin, name, identity_pb2.ROLE_VIEWER)
    await eventually(lambda: _at_least(platform, admin, 4))
    assert (await _verify(platform, admin)).ok

    [(actor,)] = _sql(platform, "SELECT actor FROM audit.records WHERE sequence = 2")
    _sql(platform, "UPDATE audit.records SET actor = 'someone-else' WHERE sequence = 2")
    result = await _verify(platform, admin)
    assert not result.ok and result.first_bad_sequence == 2
    assert "2" in result.problem

    _sql(platform, "UPDATE audit.records SET actor = %s WHERE sequence = 2", actor)
    assert (await _verify(platform, admin)).ok
    _sql(platform, "DELETE FROM audit.records WHERE sequence = 3")
    result = await _verify(platform, admin)
    assert not result.ok and result.first_bad_sequence == 4
    assert "3" in result.problem


async def _at_least(platform, admin, count):
    return len(await list_records(platform, admin)) >= count


async def test_mutations_while_audit_is_down_arrive_after_it_returns(platform):
    admin = await platform.login_admin()
    await platform.stop_service("audit")
    names = [f"offline-{i}" for i in range(5)]
    for name in names:
        await platform.create_user(admin, name, identity_pb2.ROLE_VIEWER)
    await asyncio.sleep(1.0)  # the relays try and fail meanwhile
    await platform.start_service("audit")

    async def all_arrived():
        records = await list_records(platform, admin, method="CreateUser")
        seen = {r.event.resource_name.split("/")[-1] for r in records}
        return set(names) <= seen

    await eventually(all_arrived, timeout=40)
    assert (await _verify(platform, admin)).ok
