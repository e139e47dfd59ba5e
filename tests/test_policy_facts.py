"""The policy facts seam: a service registers, per mutation, a provider of facts the request does
not carry; the policy interceptor calls it inside the request's transaction (opened by the audit
interceptor, the layer around it) and sends its answer as ``input.facts``. A provider that fails
refuses the request; the handler never runs. Real interceptors, a real database (SQLite file)."""

from __future__ import annotations

import json

import grpc
import pytest
from sqlalchemy import text

from innominatus.kit import context as reqctx
from innominatus.kit import db
from innominatus.kit.context import Peer, RequestContext, Subject
from innominatus.kit.db import Database
from innominatus.kit.errors import InvalidArgument, PolicyDenied, PolicyUnavailable
from innominatus.kit.interceptors import AuditInterceptor, PolicyInterceptor
from innominatus.kit.methods import describe_service
from innominatus.kit.policy import Decision
from innominatus.specs.v1 import specs_pb2

SPECS = specs_pb2.DESCRIPTOR.services_by_name["SpecsService"]
METHODS = describe_service(SPECS)
CREATE = f"/{SPECS.full_name}/CreateDeployment"
ROLLBACK = f"/{SPECS.full_name}/RollbackDeployment"


class RecordingEngine:
    """Remembers each input; denies when input.facts says so (as a policy on facts would)."""

    def __init__(self) -> None:
        self.inputs: list[dict] = []

    async def decide(self, input: dict) -> Decision:  # noqa: A002 - the engine contract's name
        self.inputs.append(json.loads(json.dumps(input)))  # what an engine would receive
        deny = (input.get("facts") or {}).get("deny")
        return Decision(allow=not deny, reasons=("facts said no",) if deny else (), decision_id="d-1", engine="test")

    async def close(self) -> None:
        pass


@pytest.fixture
async def database(tmp_path):
    database = Database("specs", f"sqlite:///{tmp_path / 'specs.db'}")
    yield database
    await database.close()


@pytest.fixture
def request_context():
    ctx = RequestContext(request_id="req-1", method=CREATE, peer=Peer("gateway", "spiffe://innominatus.local/service/gateway"),
                         subject=Subject("user", "users/pam", "pam", ("developer",), ("teams/payments",)))
    token = reqctx.set_current(ctx)
    yield ctx
    reqctx.reset(token)


async def _call(database, facts: dict, method: str = CREATE, engine=None):
    """Run a call of ``method`` through the audit and policy layers as a service host chains them."""
    engine = engine or RecordingEngine()
    audit = AuditInterceptor(METHODS, "specs", database, None)
    policy = PolicyInterceptor(METHODS, engine, facts)
    info = METHODS[method]
    request = specs_pb2.CreateDeploymentRequest(environment="dev", team="payments")
    handled: list = []

    async def handler():
        handled.append(True)
        return "response"

    result = await audit.around(info, request, None, lambda: policy.around(info, request, None, handler))
    return result, engine, handled


async def test_facts_reach_the_policy_from_inside_the_requests_transaction(database, request_context):
    seen: list = []

    async def provider(request):
        # The audit layer's transaction is open: the provider reads with the RPC's own session.
        seen.append((request.team, db.session()))
        return {"team": request.team, "count": (await db.session().execute(text("SELECT 41 + 1"))).scalar()}

    result, engine, handled = await _call(database, {CREATE: provider})
    assert result == "response" and handled == [True]
    assert seen[0][0] == "payments" and seen[0][1] is not None
    assert engine.inputs[0]["facts"] == {"team": "payments", "count": 42}
    assert engine.inputs[0]["request"]["team"] == "payments"


async def test_the_policy_decides_on_the_facts(database, request_context):
    async def provider(request):
        return {"deny": True}

    with pytest.raises(PolicyDenied) as caught:
        await _call(database, {CREATE: provider})
    assert caught.value.reasons == ["facts said no"]


async def test_methods_without_a_provider_get_no_facts(database, request_context):
    async def provider(request):
        raise AssertionError("only CreateDeployment's provider may run")

    _, engine, handled = await _call(database, {ROLLBACK: provider})
    assert handled == [True]
    assert "facts" not in engine.inputs[0]


async def test_a_failing_provider_refuses_the_request(database, request_context):
    async def provider(request):
        raise RuntimeError("connection to server at 10.1.2.3 failed: password=hunter2")

    engine = RecordingEngine()
    with pytest.raises(PolicyUnavailable) as caught:
        await _call(database, {CREATE: provider}, engine=engine)
    error = caught.value
    assert error.code == grpc.StatusCode.PERMISSION_DENIED
    assert error.reason == "POLICY_FACTS_UNAVAILABLE"
    assert "could not be gathered (RuntimeError)" in error.message and "req-1" in error.message
    assert "hunter2" not in error.message and "10.1.2.3" not in error.message  # the cause stays in the log
    assert engine.inputs == []  # the policy was not asked with partial facts
    # The audit layer records the refusal like a denial (it keys on the decision id).
    assert request_context.extra["decision_id"] == ""


async def test_a_typed_refusal_from_a_provider_reaches_the_caller_as_it_is(database, request_context):
    async def provider(request):
        raise InvalidArgument("name a team with --team", reason="TEAM_REQUIRED")

    with pytest.raises(InvalidArgument) as caught:
        await _call(database, {CREATE: provider})
    assert caught.value.reason == "TEAM_REQUIRED"


@pytest.mark.parametrize("facts", [["not", "an", "object"], {"when": object()}, {"n": float("nan")}])
async def test_facts_that_are_not_a_json_object_refuse_the_request(database, request_context, facts):
    async def provider(request):
        return facts

    engine = RecordingEngine()
    with pytest.raises(PolicyUnavailable) as caught:
        await _call(database, {CREATE: provider}, engine=engine)
    assert caught.value.reason == "POLICY_FACTS_UNAVAILABLE" and "malformed" in caught.value.message
    assert engine.inputs == []


async def test_the_provider_map_is_read_at_call_time(database, request_context):
    # A host builds the interceptor before the service registers its servicer and providers.
    registered: dict = {}
    engine = RecordingEngine()
    policy = PolicyInterceptor(METHODS, engine, registered)

    async def provider(request):
        return {"late": True}

    registered[CREATE] = provider
    info = METHODS[CREATE]

    async def handler():
        return "ok"

    async with database.transaction():
        await policy.around(info, specs_pb2.CreateDeploymentRequest(), None, handler)
    assert engine.inputs[0]["facts"] == {"late": True}


def test_a_method_gets_one_provider():
    from innominatus.kit.config import Settings
    from innominatus.kit.server import Runtime

    runtime = Runtime(name="specs", settings=Settings(), db=None, outbox=None, peers=None)

    async def provider(request):
        return {}

    runtime.register_policy_facts(CREATE, provider)
    with pytest.raises(ValueError, match="already registered"):
        runtime.register_policy_facts(CREATE, provider)
