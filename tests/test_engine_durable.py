"""Durable execution semantics of the engine's scheduler, against PostgreSQL.

Each test runs a small workflow through a real Scheduler (leases, commits, events) with
in-test executors that record what they did and when.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from innominatus.engine.model import RetryPolicy, StepDef, StepFailed, WorkflowDef
from innominatus.engine.scheduler import ApprovalRequired, Scheduler
from innominatus.kit.db import Database
from tests.helpers.database import drop_database, fresh_database

pytestmark = pytest.mark.postgres


class Recorder:
    """One executor for every test type; behaviour comes from the step's inputs."""

    type = "test"

    def __init__(self) -> None:
        self.calls: list[dict] = []
        self.active = 0
        self.max_active = 0
        self.flags: dict[str, bool] = {}
        self.gates: dict[str, asyncio.Event] = {}

    def gate(self, name: str) -> asyncio.Event:
        """A step with ``hold: <name>`` runs until the test sets this event."""
        return self.gates.setdefault(name, asyncio.Event())

    async def run(self, ctx):
        inputs = ctx.inputs
        call = {"step": ctx.step_id, "attempt": ctx.attempt, "key": ctx.idempotency_key, "inputs": inputs,
                "start": time.monotonic(), "cancelled": False}
        self.calls.append(call)
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            if inputs.get("approval"):
                raise ApprovalRequired("needs a human")
            if inputs.get("hold"):
                await self.gate(inputs["hold"]).wait()
            if inputs.get("sleep"):
                if inputs.get("cooperative"):
                    try:
                        await asyncio.wait_for(ctx.cancelled.wait(), timeout=inputs["sleep"])
                        call["cancelled"] = True
                        raise StepFailed("cancelled", kind="cancelled")
                    except asyncio.TimeoutError:
                        pass
                else:
                    await asyncio.sleep(inputs["sleep"])
            if ctx.attempt <= inputs.get("fail_times", 0):
                raise StepFailed(f"planned failure {ctx.attempt}", kind=inputs.get("kind", "error"))
            if inputs.get("fail_unless_flag") and not self.flags.get(inputs["fail_unless_flag"]):
                raise StepFailed("flag not set", kind="fatal", retryable=False)
            return {"step": ctx.step_id, "value": inputs.get("value"), "item": inputs.get("item")}
        finally:
            call["end"] = time.monotonic()
            self.active -= 1

    def of(self, step: str) -> list[dict]:
        return [c for c in self.calls if c["step"] == step]


EXPRESSIONS = {
    "params.deploy == true": lambda v: v["params"].get("deploy") is True,
    "params.deploy == false": lambda v: v["params"].get("deploy") is False,
    "params.names": lambda v: v["params"]["names"],
}


def evaluate(expression: str, variables: dict):
    return EXPRESSIONS[expression](variables)


def step(id, *deps, **kw) -> StepDef:
    with_ = kw.pop("with_", {})
    return StepDef(id=id, type=kw.pop("type", "test"), with_=with_, depends_on=tuple(deps), **kw)


def workflow(*steps, **kw) -> WorkflowDef:
    return WorkflowDef(name=kw.pop("name", "t"), version="1", steps=tuple(steps), **kw)


@pytest.fixture(scope="module")
def database_url():
    url = fresh_database("engine_durable")
    Database("engine", url).migrate()
    yield url
    drop_database(url)


@pytest.fixture
async def engine(database_url, tmp_path):
    db = Database("engine", database_url)
    recorder = Recorder()
    children = {"child": workflow(step("c1", with_={"value": "${params.greeting}"}), step("c2", "c1"), name="child")}
    scheduler = Scheduler(db, {"test": recorder, "resource": recorder}, worker_id="w-test", lease_seconds=5, heartbeat_seconds=0.5,
                          poll_interval=0.05, evaluate=evaluate, workflows=children, workdir=tmp_path, cancel_grace=1.0)
    scheduler.start()
    try:
        yield scheduler, recorder
    finally:
        await scheduler.stop()
        await db.close()


async def finish(scheduler, run_id, timeout=20.0):
    run = await scheduler.wait(run_id, timeout=timeout)
    _, rows = await scheduler.get_run(run_id)
    return run, {(r.step_id, r.iteration): r for r in rows}


async def wait_for_state(scheduler, run_id, step_id, state, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _, rows = await scheduler.get_run(run_id)
        if any(r.step_id == step_id and r.state == state for r in rows):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{step_id} never reached {state}")


async def wait_for_calls(rec, *steps: str, timeout=10.0):
    """Until the executor has been called for every one of ``steps`` (held steps are then running)."""
    deadline = time.monotonic() + timeout
    while not all(rec.of(s) for s in steps):
        assert time.monotonic() < deadline, f"not all of {steps} started: {[c['step'] for c in rec.calls]}"
        await asyncio.sleep(0.02)


async def test_dag_order_and_real_parallelism(engine):
    scheduler, rec = engine
    run_id = await scheduler.start_run(workflow(
        step("a"),
        step("b", "a", with_={"hold": "middle"}), step("c", "a", with_={"hold": "middle"}),
        step("d", "a", with_={"hold": "middle"}),
        step("e", "b", "c", "d"),
    ))
    # b, c and d are held until all three are running at once: a scheduler that ran them one
    # after another never gets there (and the wait fails), whatever the machine's speed.
    await wait_for_calls(rec, "b", "c", "d")
    assert rec.active == 3 and rec.of("e") == []
    rec.gate("middle").set()
    run, rows = await finish(scheduler, run_id)
    assert run.state == "SUCCEEDED", run.error
    a, b, c, d, e = (rec.of(s)[0] for s in "abcde")
    for middle in (b, c, d):
        assert middle["start"] >= a["end"]
        assert e["start"] >= middle["end"]
    # The three independent steps overlapped: each started before any of them ended.
    assert max(x["start"] for x in (b, c, d)) < min(x["end"] for x in (b, c, d))
    assert all(r.state == "SUCCEEDED" and r.attempts == 1 for r in rows.values())
    kinds = [ev["kind"] for ev in await scheduler.events(run_id)]
    assert kinds[0] == "run.created" and kinds[-1] == "run.succeeded"
    assert kinds.count("step.started") == 5 and kinds.count("step.succeeded") == 5
    seqs = [ev["seq"] for ev in await scheduler.events(run_id)]
    assert seqs == list(range(1, len(seqs) + 1))
    assert [ev["seq"] for ev in await scheduler.events(run_id, after_seq=3)][0] == 4


async def test_concurrency_limit_is_respected(engine):
    scheduler, rec = engine
    run_id = await scheduler.start_run(
        workflow(*(step(f"s{i}", with_={"hold": "all"}) for i in range(6)), concurrency=2))
    # Two steps start and are held; meanwhile the scheduler passes many times over four more
    # that are ready, and must start none of them.
    deadline = time.monotonic() + 10
    while rec.active < 2:
        assert time.monotonic() < deadline, f"two steps never ran at once: {rec.calls}"
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.3)  # several polls (0.05 s); the run then finishing shows the scheduler was live
    assert rec.active == 2 and len(rec.calls) == 2
    rec.gate("all").set()
    run, _ = await finish(scheduler, run_id)
    assert run.state == "SUCCEEDED"
    assert rec.max_active == 2
    assert len(rec.calls) == 6


async def test_retry_with_exponential_backoff(engine):
    scheduler, rec = engine
    policy = RetryPolicy(max_attempts=4, initial_interval=0.2, multiplier=2.0, max_interval=5.0)
    run_id = await scheduler.start_run(workflow(step("flaky", with_={"fail_times": 3}, retry=policy)))
    run, rows = await finish(scheduler, run_id)
    assert run.state == "SUCCEEDED", run.error
    calls = rec.of("flaky")
    assert [c["attempt"] for c in calls] == [1, 2, 3, 4]
    assert rows[("flaky", 0)].attempts == 4
    # The delays the scheduler chose grow exponentially (no jitter asked for) ...
    retrying = [ev["message"] for ev in await scheduler.events(run_id) if ev["kind"] == "step.retrying"]
    assert len(retrying) == 3
    for message, expected in zip(retrying, ("0.200", "0.400", "0.800")):
        assert f"retrying in {expected}s" in message, retrying
    # ... and were waited out: never an attempt early. The upper bound only catches a wait far
    # beyond the backoff (e.g. for the 5 s lease), with room for a loaded machine.
    gaps = [calls[i + 1]["start"] - calls[i]["end"] for i in range(3)]
    for gap, expected in zip(gaps, (0.2, 0.4, 0.8)):
        assert expected * 0.9 <= gap < expected + 3.0, gaps
    # The same idempotency key for every attempt.
    assert {c["key"] for c in calls} == {rows[("flaky", 0)].idempotency_key}


async def test_non_retryable_error_stops_at_once(engine):
    scheduler, rec = engine
    policy = RetryPolicy(max_attempts=5, initial_interval=0.05, non_retryable=("fatal",))
    run_id = await scheduler.start_run(workflow(step("x", with_={"fail_times": 9, "kind": "fatal"}, retry=policy),
                                                step("after", "x")))
    run, rows = await finish(scheduler, run_id)
    assert run.state == "FAILED"
    assert "planned failure 1" in run.error
    assert len(rec.of("x")) == 1 and rows[("x", 0)].error_kind == "fatal"
    assert rows[("after", 0)].state == "CANCELLED" and rec.of("after") == []


async def test_per_step_timeout(engine):
    scheduler, rec = engine
    started = time.monotonic()
    run_id = await scheduler.start_run(workflow(step("slow", with_={"sleep": 10}, timeout=0.3)))
    run, rows = await finish(scheduler, run_id)
    assert run.state == "FAILED"
    assert rows[("slow", 0)].error_kind == "timeout"
    assert time.monotonic() - started < 5


async def test_cancel_stops_running_and_pending_steps(engine):
    scheduler, rec = engine
    run_id = await scheduler.start_run(workflow(step("long", with_={"sleep": 30, "cooperative": True}),
                                                step("next", "long")))
    await wait_for_state(scheduler, run_id, "long", "RUNNING")
    await wait_for_calls(rec, "long")  # the executor is waiting in its 30 s sleep
    await scheduler.cancel(run_id, who="alice")
    run, rows = await finish(scheduler, run_id)
    assert run.state == "CANCELLED"
    assert rows[("long", 0)].state == "CANCELLED" and rows[("next", 0)].state == "CANCELLED"
    assert rec.of("long")[0]["cancelled"] is True  # the executor saw ctx.cancelled
    assert rec.of("next") == []


async def test_approval_approve_and_reject(engine):
    scheduler, rec = engine
    definition = workflow(step("build"), step("gate", "build", with_={"approval": True}), step("ship", "gate"))
    approved = await scheduler.start_run(definition)
    rejected = await scheduler.start_run(definition)
    for run_id in (approved, rejected):
        await wait_for_state(scheduler, run_id, "gate", "WAITING_APPROVAL")
    run, _ = await scheduler.get_run(approved)
    assert run.state == "RUNNING" and run.lease_owner is None  # waiting holds no lease
    await scheduler.approve(approved, "gate", who="bob", reason="looks good")
    await scheduler.reject(rejected, "gate", who="carol", reason="not today")
    run, rows = await finish(scheduler, approved)
    assert run.state == "SUCCEEDED"
    assert rows[("gate", 0)].outputs["by"] == "bob"
    run, rows = await finish(scheduler, rejected)
    assert run.state == "FAILED" and "rejected by carol" in run.error
    assert rows[("ship", 0)].state == "CANCELLED"
    assert len(rec.of("ship")) == 1  # only the approved run shipped


async def test_compensation_runs_in_reverse_completion_order(engine):
    scheduler, rec = engine
    undo = lambda name: (step(f"undo-{name}", with_={"value": name}),)  # noqa: E731
    run_id = await scheduler.start_run(workflow(
        step("a", on_failure=undo("a")),
        step("b", "a", on_failure=undo("b")),
        step("d", "a", with_={"hold": "d"}, on_failure=undo("d")),
        step("c", "b", "d", with_={"fail_times": 1}, on_failure=undo("c")),
    ))
    await wait_for_state(scheduler, run_id, "b", "SUCCEEDED")
    rec.gate("d").set()  # d completes after b
    run, rows = await finish(scheduler, run_id)
    assert run.state == "FAILED" and "'c' failed" in run.error
    undone = [c["inputs"]["value"] for c in rec.calls if "/on_failure/" in c["step"]]
    assert undone == ["d", "b", "a"]  # completion order was a, b, d; c never completed
    assert {k: r.state for k, r in rows.items() if r.kind == "step"} == {
        ("a", 0): "COMPENSATED", ("b", 0): "COMPENSATED", ("d", 0): "COMPENSATED", ("c", 0): "FAILED"}
    assert any(ev["kind"] == "run.compensating" for ev in await scheduler.events(run_id))


async def test_conditions_skip_steps_that_count_as_done(engine):
    scheduler, rec = engine
    run_id = await scheduler.start_run(workflow(
        step("maybe", when="params.deploy == true"),
        step("never", unless="params.deploy == false"),
        step("always", "maybe", "never"),
    ), params={"deploy": False})
    run, rows = await finish(scheduler, run_id)
    assert run.state == "SUCCEEDED"
    assert rows[("maybe", 0)].state == "SKIPPED" and rows[("never", 0)].state == "SKIPPED"
    assert [c["step"] for c in rec.calls] == ["always"]


async def test_for_each_fans_out_and_in(engine):
    scheduler, rec = engine
    run_id = await scheduler.start_run(workflow(
        step("fan", for_each="params.names", with_={"item": "${item}", "hold": "fan"}),
        step("join", "fan", with_={"value": "${steps.fan.outputs}"}),
    ), params={"names": ["x", "y", "z"]})
    # The three iterations are held until all three run at once.
    deadline = time.monotonic() + 10
    while len(rec.of("fan")) < 3:
        assert time.monotonic() < deadline, f"the iterations did not all run at once: {rec.calls}"
        await asyncio.sleep(0.02)
    rec.gate("fan").set()
    run, rows = await finish(scheduler, run_id)
    assert run.state == "SUCCEEDED", run.error
    fan = rec.of("fan")
    assert sorted(c["inputs"]["item"] for c in fan) == ["x", "y", "z"]
    assert max(c["start"] for c in fan) < min(c["end"] for c in fan)  # in parallel
    join = rec.of("join")[0]
    assert join["start"] >= max(c["end"] for c in fan)
    assert [o["item"] for o in join["inputs"]["value"]] == ["x", "y", "z"]
    assert len({rows[("fan", i)].idempotency_key for i in range(3)}) == 3


async def test_run_deadline(engine):
    scheduler, rec = engine
    run_id = await scheduler.start_run(workflow(step("slow", with_={"sleep": 10}), deadline=0.4))
    run, rows = await finish(scheduler, run_id)
    assert run.state == "FAILED" and "deadline" in run.error
    assert rows[("slow", 0)].state == "CANCELLED"


async def test_sub_workflow_runs_a_child_run(engine):
    scheduler, rec = engine
    run_id = await scheduler.start_run(workflow(
        step("child", type="workflow", uses="child", with_={"greeting": "hi"}), step("after", "child")))
    run, rows = await finish(scheduler, run_id)
    assert run.state == "SUCCEEDED", run.error
    child_id = rows[("child", 0)].child_run_id
    child, _ = await scheduler.get_run(child_id)
    assert child.state == "SUCCEEDED" and child.parent_run_id == run_id
    assert rows[("child", 0)].outputs["steps"]["c1"]["value"] == "hi"


async def test_retry_resumes_from_the_failed_step_and_start_is_idempotent(engine):
    scheduler, rec = engine
    definition = workflow(step("first"), step("second", "first", with_={"fail_unless_flag": "ok"}))
    run_id = await scheduler.start_run(definition, request_id="req-1")
    assert await scheduler.start_run(definition, request_id="req-1") == run_id
    run, _ = await finish(scheduler, run_id)
    assert run.state == "FAILED"
    rec.flags["ok"] = True
    await scheduler.retry(run_id, who="dave")
    run, rows = await finish(scheduler, run_id)
    assert run.state == "SUCCEEDED"
    assert len(rec.of("first")) == 1 and len(rec.of("second")) == 2


async def test_pause_and_resume(engine):
    scheduler, rec = engine
    run_id = await scheduler.start_run(workflow(step("one", with_={"hold": "one"}), step("two", "one")))
    await wait_for_state(scheduler, run_id, "one", "RUNNING")
    await scheduler.pause(run_id)
    rec.gate("one").set()  # a step already running when the run is paused finishes...
    await wait_for_state(scheduler, run_id, "one", "SUCCEEDED")
    await asyncio.sleep(0.5)
    run, rows = await scheduler.get_run(run_id)
    assert run.state == "RUNNING" and run.paused and rec.of("two") == []  # ...but nothing new starts
    await scheduler.resume(run_id)
    run, _ = await finish(scheduler, run_id)
    assert run.state == "SUCCEEDED" and len(rec.of("two")) == 1


async def test_resource_step_outputs_are_interpolated_as_resources(engine):
    scheduler, recorder = engine
    run_id = await scheduler.start_run(workflow(
        step("provision-db", type="resource", with_={"name": "db", "value": "db.internal"}),
        step("use", "provision-db", with_={"value": "${resources.db.value}:5432"}),
    ))
    run, rows = await finish(scheduler, run_id)
    assert run.state == "SUCCEEDED", run.error
    assert rows[("use", 0)].outputs["value"] == "db.internal:5432"
