"""Run operations over gRPC: cancel, retry, pause/resume, approve/reject a gate, the event
stream; each mutation through the policy gate and into the audit chain; plus the handler's
error mapping against a stub scheduler."""

from __future__ import annotations

import asyncio
import datetime as dt
from contextlib import asynccontextmanager
from types import SimpleNamespace

import grpc
import psycopg
import pytest
from google.protobuf import struct_pb2
from sqlalchemy.engine import make_url

from innominatus.audit.v1 import audit_pb2, audit_pb2_grpc
from innominatus.common.v1 import audit_event_pb2
from innominatus.engine import operations
from innominatus.engine.operations import RunOperations
from innominatus.engine.v1 import engine_pb2, engine_pb2_grpc, golden_paths_pb2, golden_paths_pb2_grpc
from innominatus.identity.v1 import identity_pb2
from innominatus.kit import context as reqctx
from innominatus.kit.clients import secure_channel
from innominatus.kit.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied, decode_rpc_error
from tests.helpers.mesh import running_platform
from tests.helpers.polling import eventually

def _workflow(name: str, steps: str, params: str = "") -> str:
    return f"""apiVersion: innominatus.dev/v1
kind: Workflow
metadata: {{name: {name}, version: "1.0.0", description: test workflow, owner: team-test}}
spec:
{params}  steps:
{steps}"""


# Published through the real PublishGoldenPath API, as a platform team would.
TEST_WORKFLOWS = [
    # A step that holds the run for a minute, unless cancelled.
    _workflow("ops-hold", """    - {id: hold, type: wait, with: {seconds: 60}}
    - {id: after, type: wait, depends_on: [hold], with: {seconds: 0}}
"""),
    # Two steps; the first runs until the test creates the release file, so the test pauses the
    # run while it certainly still runs.
    _workflow("ops-two", """    - id: first
      type: shell
      with:
        script: 'while [ ! -e "$RELEASE" ]; do sleep 0.05; done'
        env: {RELEASE: "${params.release}"}
        timeout: 120
    - {id: second, type: wait, depends_on: [first], with: {seconds: 0}}
""", params="  params:\n    release: {type: string, required: true}\n"),
    # An approval gate between two steps; only admins and the user pat may decide.
    _workflow("ops-gate", """    - {id: prepare, type: wait, with: {seconds: 0}}
    - id: gate
      type: approval
      depends_on: [prepare]
      with: {message: ship it?}
      approval: {approvers: [admin, "user:pat"]}
    - {id: ship, type: wait, depends_on: [gate], with: {seconds: 0}}
"""),
    # Fails until the marker file exists; retried by hand after creating it.
    _workflow("ops-flaky", """    - {id: first, type: wait, with: {seconds: 0}}
    - id: check
      type: shell
      depends_on: [first]
      with:
        script: 'echo "looking for the marker"; test -f "$MARKER"'
        env: {MARKER: "${params.marker}"}
""", params="  params:\n    marker: {type: string, required: true}\n"),
    # Quick, with a little log output.
    _workflow("ops-quick", """    - {id: one, type: wait, with: {seconds: 0.3}}
    - {id: two, type: shell, depends_on: [one], with: {script: echo hello from two}}
    - {id: three, type: wait, depends_on: [two], with: {seconds: 0.3}}
"""),
]


async def publish_test_workflows(platform) -> None:
    admin = await platform.login_admin()
    async with secure_channel(platform.address("engine"), platform.tls("gateway")) as channel:
        stub = golden_paths_pb2_grpc.GoldenPathServiceStub(channel)
        for source in TEST_WORKFLOWS:
            await stub.PublishGoldenPath(golden_paths_pb2.PublishGoldenPathRequest(source_yaml=source),
                                         metadata=auth(admin), timeout=20)


@asynccontextmanager
async def ops_platform(tmp_path, monkeypatch):
    async with running_platform(tmp_path / "data") as platform:
        await publish_test_workflows(platform)
        yield platform


@pytest.fixture
async def platform(tmp_path, monkeypatch):
    async with ops_platform(tmp_path, monkeypatch) as running:
        yield running


# --------------------------------------------------------------------------- helpers


def auth(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


@asynccontextmanager
async def engine(platform):
    async with secure_channel(platform.address("engine"), platform.tls("gateway")) as channel:
        yield engine_pb2_grpc.EngineServiceStub(channel)


async def start(platform, token: str, workflow: str, **inputs) -> str:
    params = struct_pb2.Struct()
    params.update(inputs)
    async with engine(platform) as stub:
        response = await stub.StartRun(
            engine_pb2.StartRunRequest(workflow=workflow, application="shop", environment="dev", inputs=params),
            metadata=auth(token), timeout=20,
        )
    return response.run.name


async def get_run(platform, token: str, name: str) -> engine_pb2.Run:
    async with engine(platform) as stub:
        return (await stub.GetRun(engine_pb2.GetRunRequest(name=name), metadata=auth(token), timeout=20)).run


def sql(platform, statement: str, *params) -> list:
    url = make_url(platform.platform.settings.database_url).set(drivername="postgresql")
    with psycopg.connect(url.render_as_string(hide_password=False), autocommit=True) as conn:
        cursor = conn.execute(statement, params)
        return cursor.fetchall() if cursor.description else []


async def step_state(platform, name: str, step_id: str) -> str:
    rows = sql(platform, "SELECT state FROM engine.step_executions WHERE run_id = %s AND step_id = %s",
               name.removeprefix("runs/"), step_id)
    return rows[0][0] if rows else ""


async def wait_step(platform, name: str, step_id: str, state: str) -> None:
    async def reached():
        return await step_state(platform, name, step_id) == state

    await eventually(reached, 30, what=f"step {step_id} {state}")


async def wait_run(platform, token: str, name: str, *states: int, timeout: float = 30.0) -> engine_pb2.Run:
    async def ended():
        run = await get_run(platform, token, name)
        return run if run.state in states else None

    return await eventually(ended, timeout, what=f"run in {states}")


async def call_error(coro):
    with pytest.raises(grpc.RpcError) as caught:
        await coro
    return decode_rpc_error(caught.value)


async def audit_records(platform, token: str, method: str) -> list:
    async with secure_channel(platform.address("audit"), platform.tls("gateway")) as channel:
        stub = audit_pb2_grpc.AuditServiceStub(channel)
        response = await stub.ListRecords(
            audit_pb2.ListRecordsRequest(page_size=1000, filter=audit_pb2.RecordFilter(method=method)),
            metadata=auth(token),
        )
    return list(response.records)


async def wait_audit(platform, token: str, method: str, count: int) -> list:
    async def enough():
        records = await audit_records(platform, token, method)
        return records if len(records) >= count else None

    return await eventually(enough, 30, what=f"{count} audit records of {method}")


async def users(platform) -> dict[str, str]:
    admin = await platform.login_admin()
    return {
        "admin": admin,
        "dev": await platform.create_user(admin, "dana", identity_pb2.ROLE_DEVELOPER),
        "viewer": await platform.create_user(admin, "victor", identity_pb2.ROLE_VIEWER),
        "pat": await platform.create_user(admin, "pat", identity_pb2.ROLE_PLATFORM_ENGINEER),
        "pia": await platform.create_user(admin, "pia", identity_pb2.ROLE_PLATFORM_ENGINEER),
    }


# --------------------------------------------------------------------------- end to end

pg = pytest.mark.postgres


@pg
async def test_cancel_a_running_run_and_the_errors_around_it(platform):
    tokens = await users(platform)
    name = await start(platform, tokens["dev"], "ops-hold")
    await wait_step(platform, name, "hold", "RUNNING")

    async with engine(platform) as stub:
        denied = await call_error(stub.CancelRun(engine_pb2.CancelRunRequest(name=name), metadata=auth(tokens["viewer"])))
        assert denied.code == grpc.StatusCode.PERMISSION_DENIED and denied.reason == "POLICY_DENIED"
        assert 'role "viewer" of user "victor" does not grant "runs.cancel"' in denied.metadata["reasons"]

        missing = await call_error(stub.CancelRun(engine_pb2.CancelRunRequest(name="runs/nope"), metadata=auth(tokens["dev"])))
        assert missing.code == grpc.StatusCode.NOT_FOUND

        response = await stub.CancelRun(engine_pb2.CancelRunRequest(name=name), metadata=auth(tokens["dev"]), timeout=20)
        assert response.run.name == name

    run = await wait_run(platform, tokens["dev"], name, engine_pb2.RUN_STATE_CANCELLED, timeout=20)
    hold = next(s for s in run.steps if s.name == "hold")
    # The one-minute step was stopped, not waited for.
    assert hold.end_time.ToDatetime() - hold.start_time.ToDatetime() < dt.timedelta(seconds=30)

    async with engine(platform) as stub:
        again = await call_error(stub.CancelRun(engine_pb2.CancelRunRequest(name=name), metadata=auth(tokens["dev"])))
    assert again.code == grpc.StatusCode.FAILED_PRECONDITION
    assert again.reason == "RUN_ALREADY_ENDED" and "CANCELLED" in again.message

    records = await wait_audit(platform, tokens["admin"], "CancelRun", 4)
    outcomes = sorted(audit_event_pb2.AuditOutcome.Name(r.event.outcome) for r in records)
    assert outcomes.count("AUDIT_OUTCOME_SUCCEEDED") == 1
    assert outcomes.count("AUDIT_OUTCOME_DENIED") == 1
    assert outcomes.count("AUDIT_OUTCOME_FAILED") == 2  # unknown run, already cancelled
    ok = next(r for r in records if r.event.outcome == audit_event_pb2.AUDIT_OUTCOME_SUCCEEDED)
    assert ok.event.actor == "dana" and ok.event.permission == "runs.cancel" and ok.event.resource_name == name


@pg
async def test_approve_and_reject_a_gate_by_allowed_and_disallowed_users(platform):
    tokens = await users(platform)
    name = await start(platform, tokens["dev"], "ops-gate")
    await wait_step(platform, name, "gate", "WAITING_APPROVAL")
    gate = f"{name}/steps/gate"

    async with engine(platform) as stub:
        def approve(who: str, step: str = gate, reason: str = ""):
            return stub.ApproveStep(engine_pb2.ApproveStepRequest(name=step, reason=reason), metadata=auth(tokens[who]),
                                    timeout=20)

        viewer = await call_error(approve("viewer"))
        assert viewer.code == grpc.StatusCode.PERMISSION_DENIED and viewer.reason == "POLICY_DENIED"
        assert 'role "viewer" of user "victor" does not grant "runs.approve"' in viewer.metadata["reasons"]

        developer = await call_error(approve("dev"))
        assert developer.code == grpc.StatusCode.PERMISSION_DENIED and developer.reason == "POLICY_DENIED"
        assert "runs.approve" in developer.metadata["reasons"]

        # Allowed by the policy but not one of this gate's approvers.
        outsider = await call_error(approve("pia"))
        assert outsider.code == grpc.StatusCode.PERMISSION_DENIED and outsider.reason == "NOT_AN_APPROVER"
        assert "pia" in outsider.message and "user:pat" in outsider.message

        done_step = await call_error(approve("pat", f"{name}/steps/prepare"))
        assert done_step.code == grpc.StatusCode.FAILED_PRECONDITION and done_step.reason == "NOT_WAITING_FOR_APPROVAL"
        assert "SUCCEEDED" in done_step.message

        unknown = await call_error(approve("pat", f"{name}/steps/nope"))
        assert unknown.code == grpc.StatusCode.NOT_FOUND

        response = await approve("pat", reason="change window is open")
        decided = next(s for s in response.run.steps if s.step_id == "gate")
        assert decided.state == engine_pb2.STEP_STATE_SUCCEEDED
        assert list(decided.approvers) == ["admin", "user:pat"]
        assert list(decided.depends_on) == ["prepare"]

        twice = await call_error(approve("admin"))
        assert twice.code == grpc.StatusCode.FAILED_PRECONDITION and "not WAITING_APPROVAL" in twice.message

    run = await wait_run(platform, tokens["dev"], name, engine_pb2.RUN_STATE_SUCCEEDED, engine_pb2.RUN_STATE_FAILED)
    assert run.state == engine_pb2.RUN_STATE_SUCCEEDED
    gate_step = next(s for s in run.steps if s.name == "gate")
    assert gate_step.outputs["by"] == "pat" and gate_step.outputs["reason"] == "change window is open"

    # Rejected by an admin: the run fails and says who and why.
    other = await start(platform, tokens["dev"], "ops-gate")
    await wait_step(platform, other, "gate", "WAITING_APPROVAL")
    async with engine(platform) as stub:
        await stub.RejectStep(engine_pb2.RejectStepRequest(name=f"{other}/steps/gate", reason="not today"),
                              metadata=auth(tokens["admin"]), timeout=20)
    failed = await wait_run(platform, tokens["dev"], other, engine_pb2.RUN_STATE_FAILED, engine_pb2.RUN_STATE_SUCCEEDED)
    assert failed.state == engine_pb2.RUN_STATE_FAILED
    assert "rejected by" in failed.error and "not today" in failed.error

    records = await wait_audit(platform, tokens["admin"], "ApproveStep", 7)
    by_outcome: dict[str, list[str]] = {}
    for r in records:
        by_outcome.setdefault(audit_event_pb2.AuditOutcome.Name(r.event.outcome), []).append(r.event.actor)
    assert sorted(by_outcome["AUDIT_OUTCOME_DENIED"]) == ["dana", "victor"]
    assert by_outcome["AUDIT_OUTCOME_SUCCEEDED"] == ["pat"]
    assert "pia" in by_outcome["AUDIT_OUTCOME_FAILED"]
    rejected = await wait_audit(platform, tokens["admin"], "RejectStep", 1)
    assert rejected[0].event.outcome == audit_event_pb2.AUDIT_OUTCOME_SUCCEEDED and rejected[0].event.actor != ""


@pg
async def test_retry_a_failed_run_from_the_failed_step(platform, tmp_path):
    tokens = await users(platform)
    marker = tmp_path / "marker"
    name = await start(platform, tokens["dev"], "ops-flaky", marker=str(marker))
    failed = await wait_run(platform, tokens["dev"], name, engine_pb2.RUN_STATE_FAILED, engine_pb2.RUN_STATE_SUCCEEDED)
    assert failed.state == engine_pb2.RUN_STATE_FAILED
    first_end = next(s for s in failed.steps if s.name == "first").end_time

    async with engine(platform) as stub:
        viewer = await call_error(stub.RetryRun(engine_pb2.RetryRunRequest(name=name), metadata=auth(tokens["viewer"])))
        assert viewer.reason == "POLICY_DENIED"

        marker.write_text("here\n")
        response = await stub.RetryRun(engine_pb2.RetryRunRequest(name=name), metadata=auth(tokens["dev"]), timeout=20)
        assert response.run.state in (engine_pb2.RUN_STATE_PENDING, engine_pb2.RUN_STATE_RUNNING)

    run = await wait_run(platform, tokens["dev"], name, engine_pb2.RUN_STATE_SUCCEEDED, engine_pb2.RUN_STATE_FAILED)
    assert run.state == engine_pb2.RUN_STATE_SUCCEEDED, run.error
    first = next(s for s in run.steps if s.name == "first")
    assert first.attempts == 1 and first.end_time == first_end  # the completed step did not run again
    check = next(s for s in run.steps if s.name == "check")
    assert check.state == engine_pb2.STEP_STATE_SUCCEEDED

    async with engine(platform) as stub:
        again = await call_error(stub.RetryRun(engine_pb2.RetryRunRequest(name=name), metadata=auth(tokens["dev"])))
    assert again.code == grpc.StatusCode.FAILED_PRECONDITION and "SUCCEEDED" in again.message

    records = await wait_audit(platform, tokens["admin"], "RetryRun", 3)
    assert [r.event.actor for r in records if r.event.outcome == audit_event_pb2.AUDIT_OUTCOME_SUCCEEDED] == ["dana"]


@pg
async def test_pause_stops_new_steps_until_resume(platform, tmp_path):
    tokens = await users(platform)
    release = tmp_path / "release-first"
    name = await start(platform, tokens["dev"], "ops-two", release=str(release))
    await wait_step(platform, name, "first", "RUNNING")
    async with engine(platform) as stub:
        paused = await stub.PauseRun(engine_pb2.PauseRunRequest(name=name), metadata=auth(tokens["dev"]), timeout=20)
        assert paused.run.paused
        twice = await call_error(stub.PauseRun(engine_pb2.PauseRunRequest(name=name), metadata=auth(tokens["dev"])))
        assert twice.code == grpc.StatusCode.FAILED_PRECONDITION and twice.reason == "RUN_ALREADY_PAUSED"

        release.touch()
        await wait_step(platform, name, "first", "SUCCEEDED")  # a running step finishes
        await asyncio.sleep(1.5)
        assert await step_state(platform, name, "second") in ("PENDING", "READY")
        assert (await get_run(platform, tokens["dev"], name)).state != engine_pb2.RUN_STATE_SUCCEEDED

        resumed = await stub.ResumeRun(engine_pb2.ResumeRunRequest(name=name), metadata=auth(tokens["dev"]), timeout=20)
        assert not resumed.run.paused
    run = await wait_run(platform, tokens["dev"], name, engine_pb2.RUN_STATE_SUCCEEDED, engine_pb2.RUN_STATE_FAILED)
    assert run.state == engine_pb2.RUN_STATE_SUCCEEDED

    async with engine(platform) as stub:
        not_paused = await call_error(stub.ResumeRun(engine_pb2.ResumeRunRequest(name=name), metadata=auth(tokens["dev"])))
        assert not_paused.code == grpc.StatusCode.FAILED_PRECONDITION and "SUCCEEDED" in not_paused.message
        ended = await call_error(stub.PauseRun(engine_pb2.PauseRunRequest(name=name), metadata=auth(tokens["dev"])))
        assert ended.reason == "RUN_ALREADY_ENDED"


@pg
async def test_event_stream_over_grpc_follows_the_run_and_resumes_after_a_sequence(platform):
    tokens = await users(platform)
    name = await start(platform, tokens["dev"], "ops-quick")
    async with engine(platform) as stub:
        events = [r.event async for r in stub.StreamRunEvents(engine_pb2.StreamRunEventsRequest(name=name),
                                                              metadata=auth(tokens["viewer"]), timeout=30)]
        seqs = [e.seq for e in events]
        assert seqs == sorted(set(seqs)) and seqs[0] == 1
        kinds = [e.kind for e in events]
        # run.succeeded may share its commit with the last step's log lines, which follow it.
        assert kinds[0] == "run.created" and "run.succeeded" in kinds
        assert events[-1].state == engine_pb2.RUN_STATE_SUCCEEDED and events[0].state == engine_pb2.RUN_STATE_PENDING
        assert any(e.kind == "step.started" and e.step == "two" for e in events)
        assert any(e.kind == "step.log" and "hello from two" in e.message for e in events), kinds

        middle = seqs[len(seqs) // 2]
        rest = [r.event.seq async for r in stub.StreamRunEvents(
            engine_pb2.StreamRunEventsRequest(name=name, after_seq=middle), metadata=auth(tokens["dev"]), timeout=30)]
        assert rest == [s for s in seqs if s > middle]

        anonymous = await call_error(_drain(stub.StreamRunEvents(engine_pb2.StreamRunEventsRequest(name=name))))
        assert anonymous.code == grpc.StatusCode.UNAUTHENTICATED
        missing = await call_error(_drain(stub.StreamRunEvents(engine_pb2.StreamRunEventsRequest(name="runs/nope"),
                                                               metadata=auth(tokens["dev"]))))
        assert missing.code == grpc.StatusCode.NOT_FOUND


async def _drain(call) -> list:
    return [item async for item in call]


# --------------------------------------------------------------------------- handler level


class _StubScheduler:
    def __init__(self, state: str = "RUNNING", step_state: str = "WAITING_APPROVAL", paused: bool = False,
                 error: Exception | None = None) -> None:
        self.state, self.step_state, self.paused, self.error = state, step_state, paused, error
        self.calls: list[tuple] = []
        now = dt.datetime.now(dt.timezone.utc)
        self.row = SimpleNamespace(
            id="r1", workflow="w", application="a", environment="e", state=state, creator="c", error="", version=1,
            created_at=now, updated_at=now, paused=paused, inputs={}, event_seq=3,
            definition={"steps": [{"id": "gate", "type": "approval", "depends_on": [],
                                   "approval": {"approvers": ["role:platform-engineer", "team:payments"]}}]},
        )
        self.steps = [SimpleNamespace(step_id="gate", iteration=0, position=0, items_total=None, kind="step",
                                      type="approval", state=step_state, attempts=1, error="", outputs={},
                                      started_at=now, ended_at=None)]

    async def get_run(self, run_id, session=None):
        if run_id != "r1":
            raise NotFound(f"run {run_id!r} not found", reason="RUN_NOT_FOUND")
        return self.row, self.steps

    async def _op(self, name, *args):
        self.calls.append((name, *args))
        if self.error is not None:
            raise self.error

    async def cancel(self, run_id, who="", session=None):
        await self._op("cancel", run_id, who)

    async def approve(self, run_id, step_id, who, reason="", session=None):
        await self._op("approve", run_id, step_id, who, reason)

    async def retry(self, run_id, who="", session=None):
        await self._op("retry", run_id, who)


class _Servicer(RunOperations):
    def __init__(self, scheduler) -> None:
        self.scheduler = scheduler


def as_user(username: str, *roles: str, teams: tuple[str, ...] = ()) -> None:
    """Act as this user for the rest of the test (each async test runs in its own context)."""
    ctx = reqctx.RequestContext(request_id="t")
    ctx.subject = reqctx.Subject(type="user", name=f"users/{username}", username=username, roles=roles, teams=teams)
    reqctx.set_current(ctx)


async def test_handler_maps_scheduler_errors_and_states():
    as_user("pat", "platform-engineer")
    ok = _Servicer(_StubScheduler())
    response = await ok.CancelRun(engine_pb2.CancelRunRequest(name="runs/r1"), None)
    assert response.run.name == "runs/r1" and ok.scheduler.calls == [("cancel", "r1", "pat")]

    with pytest.raises(NotFound):
        await ok.CancelRun(engine_pb2.CancelRunRequest(name="runs/zz"), None)
    with pytest.raises(InvalidArgument):
        await ok.CancelRun(engine_pb2.CancelRunRequest(name="runs/a/b"), None)
    with pytest.raises(FailedPrecondition, match="SUCCEEDED"):
        await _Servicer(_StubScheduler(state="SUCCEEDED")).CancelRun(engine_pb2.CancelRunRequest(name="runs/r1"), None)
    with pytest.raises(FailedPrecondition, match="RUNNING"):
        await ok.RetryRun(engine_pb2.RetryRunRequest(name="runs/r1"), None)
    # Errors the scheduler raises in a race are mapped too.
    with pytest.raises(NotFound):
        await _Servicer(_StubScheduler(error=KeyError("r1"))).CancelRun(engine_pb2.CancelRunRequest(name="runs/r1"), None)
    with pytest.raises(FailedPrecondition):
        await _Servicer(_StubScheduler(error=ValueError("run is FAILED"))).CancelRun(
            engine_pb2.CancelRunRequest(name="runs/r1"), None)

    with pytest.raises(FailedPrecondition, match="RUNNING, not WAITING_APPROVAL"):
        await _Servicer(_StubScheduler(step_state="RUNNING")).ApproveStep(
            engine_pb2.ApproveStepRequest(name="runs/r1/steps/gate"), None)
    with pytest.raises(NotFound):
        await ok.ApproveStep(engine_pb2.ApproveStepRequest(name="runs/r1/steps/other"), None)
    with pytest.raises(InvalidArgument):
        await ok.ApproveStep(engine_pb2.ApproveStepRequest(name="runs/r1"), None)
    approved = await ok.ApproveStep(engine_pb2.ApproveStepRequest(name="runs/r1/steps/gate", reason="ok"), None)
    gate = approved.run.steps[0]
    assert gate.state == engine_pb2.STEP_STATE_WAITING_APPROVAL  # the stub does not change state
    assert list(gate.approvers) == ["role:platform-engineer", "team:payments"]
    assert ok.scheduler.calls[-1] == ("approve", "r1", "gate", "pat", "ok")


async def test_gate_approvers_by_role_user_and_team():
    as_user("dana", "developer", teams=("teams/payments",))
    by_team = _Servicer(_StubScheduler())
    await by_team.ApproveStep(engine_pb2.ApproveStepRequest(name="runs/r1/steps/gate"), None)
    assert by_team.scheduler.calls[-1][3] == "dana"

    as_user("dora", "developer", teams=("teams/search",))
    with pytest.raises(PermissionDenied) as caught:
        await _Servicer(_StubScheduler()).ApproveStep(engine_pb2.ApproveStepRequest(name="runs/r1/steps/gate"), None)
    assert caught.value.reason == "NOT_AN_APPROVER"

    subject = reqctx.Subject(type="user", name="users/al", username="al", roles=("viewer",), teams=())
    assert operations.is_approver(subject, ["al"]) and operations.is_approver(subject, ["user:al"])
    assert operations.is_approver(subject, ["viewer"]) and not operations.is_approver(subject, ["role:admin", "bob"])
    assert operations.is_approver(subject, [])  # a gate without approvers: the policy alone decides
    definition = {"steps": [{"id": "g", "approval": {"approvers": ["${params.who}", "admin"]}}]}
    assert operations.gate_approvers(definition, "g", {"who": "sre"}) == ["sre", "admin"]
