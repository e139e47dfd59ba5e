"""Concurrency groups: runs of one group (deploys and removals of one application in one
environment, or a workflow's ``spec.concurrency_group``) run one at a time, oldest first.

Against PostgreSQL: a real Scheduler (and two worker processes) with in-test executors that
record when each step ran; then the whole platform, where a deploy waiting at its production
approval gate holds back the next deploy (and the removal) of the same application there, but
not a deploy of another application. Orderings are asserted from step start and end times.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import defaultdict
from pathlib import Path

import pytest
from google.protobuf import timestamp_pb2
from sqlalchemy import func, select, text

from innominatus.engine import models
from innominatus.engine.definition import CODES, load_workflow
from innominatus.engine.model import StepDef, WorkflowDef
from innominatus.engine.scheduler import ApprovalRequired, Scheduler
from innominatus.identity.v1 import identity_pb2
from innominatus.kit.db import Database
from innominatus.kit.errors import InvalidArgument
from tests.helpers.database import drop_database, fresh_database
from tests.helpers.runs import awaits_approval, get_run, start_deployment, wait_for_run
from tests.helpers.engine_worker import WorkerProcesses
from tests.helpers.polling import eventually

pytestmark = pytest.mark.postgres

ROOT = Path(__file__).resolve().parent.parent


class Recorder:
    """The executor of every ``test`` step: records (run, step, start, end); ``sleep`` and
    ``approval`` inputs make it take time or wait for a decision; ``hold: <name>`` keeps it
    running until the test sets ``gate(name)``, so a test observes a run while it certainly
    still runs instead of racing a sleep."""

    type = "test"

    def __init__(self) -> None:
        self.calls: list[dict] = []
        self.gates: dict[str, asyncio.Event] = {}

    def gate(self, name: str) -> asyncio.Event:
        return self.gates.setdefault(name, asyncio.Event())

    async def run(self, ctx):
        call = {"run": ctx.run_id, "step": ctx.step_id, "start": time.monotonic(), "end": None}
        self.calls.append(call)
        try:
            if ctx.inputs.get("approval"):
                raise ApprovalRequired("needs a human")
            if ctx.inputs.get("hold"):
                # bounded: a run a failed test left behind does not hold a later test's scheduler
                await asyncio.wait_for(self.gate(ctx.inputs["hold"]).wait(), 60)
            await asyncio.sleep(float(ctx.inputs.get("sleep", 0)))
            return {}
        finally:
            call["end"] = time.monotonic()

    def of(self, run_id: str) -> list[dict]:
        return [c for c in self.calls if c["run"] == run_id]

    def span(self, run_id: str) -> tuple[float, float]:
        """(first step start, last step end) of a run."""
        calls = self.of(run_id)
        assert calls, f"no step of run {run_id} ran"
        return min(c["start"] for c in calls), max(c["end"] for c in calls)


def step(id, *deps, **kw) -> StepDef:
    return StepDef(id=id, type=kw.pop("type", "test"), with_=kw.pop("with_", {}), depends_on=tuple(deps), **kw)


def workflow(*steps, **kw) -> WorkflowDef:
    return WorkflowDef(name=kw.pop("name", "t"), version="1", steps=tuple(steps), **kw)


def group() -> str:
    """A group of its own per test (the module's tests share one database)."""
    return f"app-{uuid.uuid4().hex[:8]}/production"


@pytest.fixture(scope="module")
def database_url():
    url = fresh_database("run_concurrency")
    Database("engine", url).migrate()
    yield url
    drop_database(url)


@pytest.fixture
async def engine(database_url, tmp_path):
    db = Database("engine", database_url)
    recorder = Recorder()
    # A sub-workflow that declares a group: as a child it never gets one (it runs in its
    # parent's turn), so it must not wait for its own parent.
    children = {"grouped-child": workflow(step("c1", with_={"sleep": 0.1}), name="grouped-child",
                                          concurrency_group="${params.group}")}
    scheduler = Scheduler(db, {"test": recorder}, worker_id="w-conc", lease_seconds=5, heartbeat_seconds=0.5,
                          poll_interval=0.05, workflows=children, workdir=tmp_path, cancel_grace=1.0)
    scheduler.start()
    try:
        yield scheduler, recorder
    finally:
        await scheduler.stop()
        await db.close()


async def wait_for_step(scheduler, run_id, step_id, state, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _, rows = await scheduler.get_run(run_id)
        if any(r.step_id == step_id and r.state == state for r in rows):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{step_id} of {run_id} never reached {state}")


async def until_called(rec, run_ids, timeout=10.0):
    """Until a step of each of ``run_ids`` is in the executor (held ones are then running)."""
    deadline = time.monotonic() + timeout
    while not all(rec.of(r) for r in run_ids):
        assert time.monotonic() < deadline, f"not every run started: {rec.calls}"
        await asyncio.sleep(0.02)


async def blocker_of(scheduler, run_id):
    row, _ = await scheduler.get_run(run_id)
    found = await scheduler.waiting_for(row)
    return row, (found.id if found is not None else None)


# --------------------------------------------------------------------------- the scheduler


async def test_the_second_run_of_a_group_starts_only_after_the_first_ended(engine):
    scheduler, rec = engine
    key = group()
    first = await scheduler.start_run(
        workflow(step("a", with_={"hold": "first"}), step("b", "a", with_={"sleep": 0.3})), concurrency_key=key)
    second = await scheduler.start_run(workflow(step("a", with_={"sleep": 0.1})), concurrency_key=key)
    await wait_for_step(scheduler, first, "a", "RUNNING")  # and held there until the gate opens

    row, blocker = await blocker_of(scheduler, second)
    assert row.state == "PENDING" and row.concurrency_key == key and blocker == first
    waiting = [e for e in await scheduler.events(second) if e["kind"] == "run.waiting"]
    assert len(waiting) == 1 and f"runs/{first}" in waiting[0]["message"] and key in waiting[0]["message"]
    rec.gate("first").set()

    done_first, done_second = await scheduler.wait(first), await scheduler.wait(second)
    assert done_first.state == done_second.state == "SUCCEEDED"
    assert rec.span(second)[0] >= rec.span(first)[1]  # not one step of it while the first ran
    assert done_second.started_at >= done_first.ended_at
    assert (await blocker_of(scheduler, second))[1] is None


async def test_runs_of_different_groups_and_without_a_group_run_in_parallel(engine):
    scheduler, rec = engine
    held = workflow(step("s", with_={"hold": "parallel"}))
    runs = [await scheduler.start_run(held, concurrency_key=group()),
            await scheduler.start_run(held, concurrency_key=group()),
            await scheduler.start_run(held)]
    # Held until all three are in the executor at once: runs that waited for each other never get there.
    await until_called(rec, runs)
    rec.gate("parallel").set()
    for run_id in runs:
        assert (await scheduler.wait(run_id)).state == "SUCCEEDED"
    spans = [rec.span(r) for r in runs]
    # Each started before any of them ended: they overlapped.
    assert max(start for start, _ in spans) < min(end for _, end in spans)


async def test_a_waiting_run_can_be_cancelled_and_the_next_one_waits_for_the_running_one(engine):
    scheduler, rec = engine
    key = group()
    holder = await scheduler.start_run(workflow(step("gate", with_={"approval": True}), step("after", "gate")),
                                       concurrency_key=key)
    await wait_for_step(scheduler, holder, "gate", "WAITING_APPROVAL")
    waiting = await scheduler.start_run(workflow(step("never")), concurrency_key=key)
    assert (await blocker_of(scheduler, waiting))[1] == holder

    await scheduler.cancel(waiting, who="dave")
    cancelled = await scheduler.wait(waiting, timeout=10)
    assert cancelled.state == "CANCELLED"
    assert rec.of(waiting) == []  # none of its steps ran
    kinds = [e["kind"] for e in await scheduler.events(waiting)]
    assert kinds[:3] == ["run.created", "run.waiting", "run.cancel_requested"] and kinds[-1] == "run.cancelled"
    holder_row, _ = await scheduler.get_run(holder)
    assert holder_row.state == "RUNNING"  # still at its gate

    # A cancelled run holds nothing: the next one waits for the run at the gate only.
    third = await scheduler.start_run(workflow(step("next")), concurrency_key=key)
    assert (await blocker_of(scheduler, third))[1] == holder
    await asyncio.sleep(0.3)  # several claim polls
    assert (await scheduler.get_run(third))[0].state == "PENDING"
    await scheduler.approve(holder, "gate", who="pat")
    assert (await scheduler.wait(holder)).state == "SUCCEEDED"
    assert (await scheduler.wait(third)).state == "SUCCEEDED"
    assert rec.span(third)[0] >= rec.span(holder)[1]


async def test_three_runs_of_a_group_run_in_the_order_they_were_created(engine):
    scheduler, rec = engine
    key = group()
    ids = [await scheduler.start_run(workflow(step("x", with_={"hold": "oldest"} if i == 0 else {"sleep": 0.2}),
                                              name=f"n{i}"), concurrency_key=key)
           for i in range(3)]
    await wait_for_step(scheduler, ids[0], "x", "RUNNING")  # and held there until the gate opens
    # Both wait for the run holding the group.
    assert [(await blocker_of(scheduler, r))[1] for r in ids[1:]] == [ids[0], ids[0]]
    rec.gate("oldest").set()
    for run_id in ids:
        assert (await scheduler.wait(run_id)).state == "SUCCEEDED"
    spans = [rec.span(r) for r in ids]
    assert spans[0][1] <= spans[1][0] and spans[1][1] <= spans[2][0]


async def test_a_waiting_runs_deadline_counts_from_when_it_starts(engine):
    scheduler, rec = engine
    key = group()
    deadline = 2.0  # the second run's; room for its one quick step on a loaded machine
    first = await scheduler.start_run(workflow(step("slow", with_={"hold": "first"})), concurrency_key=key)
    second = await scheduler.start_run(workflow(step("quick", with_={"sleep": 0.1}), deadline=deadline),
                                       concurrency_key=key)
    created = time.monotonic()
    await asyncio.sleep(deadline + 0.5)  # the first run holds the group past the second's deadline
    rec.gate("first").set()
    assert (await scheduler.wait(first)).state == "SUCCEEDED"
    done = await scheduler.wait(second)
    assert done.state == "SUCCEEDED", done.error  # it waited longer than its deadline, ran within it
    assert rec.span(second)[0] - created > deadline


async def test_a_child_run_is_not_blocked_by_its_parent_and_holds_the_group_with_it(engine):
    scheduler, rec = engine
    key = group()
    parent = await scheduler.start_run(
        workflow(step("child", type="workflow", uses="grouped-child", with_={"group": key}),
                 step("after", "child", with_={"sleep": 0.1})), concurrency_key=key)
    later = await scheduler.start_run(workflow(step("later")), concurrency_key=key)
    done = await scheduler.wait(parent, timeout=15)  # a child waiting for its parent would never end
    assert done.state == "SUCCEEDED", done.error
    _, rows = await scheduler.get_run(parent)
    child_id = next(r.child_run_id for r in rows if r.step_id == "child")
    child, _ = await scheduler.get_run(child_id)
    assert child.state == "SUCCEEDED" and child.parent_run_id == parent and child.concurrency_key is None
    assert (await scheduler.wait(later)).state == "SUCCEEDED"
    # The later run of the group waited for the parent and its child.
    assert rec.span(later)[0] >= max(rec.span(child_id)[1], rec.span(parent)[1])


async def test_an_older_run_committed_late_waits_for_the_newer_one_running(engine):
    scheduler, rec = engine
    key = group()
    async with scheduler.db.transaction() as session:
        # Created first (older), but its transaction commits only after a newer run started.
        older = await scheduler.create_run(session, workflow(step("x")), concurrency_key=key)
        newer = await scheduler.start_run(workflow(step("gate", with_={"approval": True})), concurrency_key=key)
        await wait_for_step(scheduler, newer, "gate", "WAITING_APPROVAL")
    row, blocker = await blocker_of(scheduler, older)
    assert row.created_at < (await scheduler.get_run(newer))[0].created_at
    assert row.state == "PENDING" and blocker == newer  # RUNNING holds the group, whatever its age
    await asyncio.sleep(0.3)
    assert (await scheduler.get_run(older))[0].state == "PENDING"
    await scheduler.approve(newer, "gate", who="pat")
    assert (await scheduler.wait(older)).state == "SUCCEEDED"
    assert rec.span(older)[0] >= rec.span(newer)[1]


async def test_a_group_another_worker_is_deciding_on_is_left_to_it(engine, database_url):
    scheduler, _rec = engine
    key = group()
    other = Database("engine", database_url)
    try:
        async with other.transaction() as session:
            # What a claim of another worker holds while it starts a run of the group.
            await session.execute(text("SELECT pg_advisory_xact_lock(:space, hashtext(:key))"),
                                  {"space": 0x6963, "key": key})
            run_id = await scheduler.start_run(workflow(step("x")), concurrency_key=key)
            await asyncio.sleep(0.4)
            assert (await scheduler.get_run(run_id))[0].state == "PENDING"
        assert (await scheduler.wait(run_id, timeout=10)).state == "SUCCEEDED"
    finally:
        await other.close()


async def test_a_retried_run_queues_behind_the_running_run_of_its_group(engine):
    scheduler, rec = engine
    key = group()
    failing = await scheduler.start_run(workflow(step("x", type="missing")), concurrency_key=key)
    assert (await scheduler.wait(failing)).state == "FAILED"
    holder = await scheduler.start_run(workflow(step("gate", with_={"approval": True})), concurrency_key=key)
    await wait_for_step(scheduler, holder, "gate", "WAITING_APPROVAL")
    await scheduler.retry(failing, who="dave")
    row, blocker = await blocker_of(scheduler, failing)
    assert row.state == "PENDING" and blocker == holder
    assert [e["kind"] for e in await scheduler.events(failing)][-2:] == ["run.retried", "run.waiting"]
    await asyncio.sleep(0.3)  # several claim polls
    assert (await scheduler.get_run(failing))[0].state == "PENDING"
    await scheduler.cancel(holder, who="dave")
    assert (await scheduler.wait(holder)).state == "CANCELLED"
    assert (await scheduler.wait(failing)).state == "FAILED"  # ran again (still no executor) once free


# --------------------------------------------------------------------------- two worker processes


@pytest.fixture
def workers(database_url, tmp_path):
    processes = WorkerProcesses(database_url, tmp_path)
    yield processes.spawn
    processes.stop()


async def test_two_worker_processes_never_run_two_runs_of_one_group_at_once(database_url, workers, tmp_path):
    db = Database("engine", database_url)
    api = Scheduler(db, {}, worker_id="api")  # never started: only its API is used
    definition = WorkflowDef(name="grouped", version="1", steps=(
        StepDef(id="x", type="record", with_={"sleep": 0.03}),
        StepDef(id="y", type="record", with_={"sleep": 0.03}, depends_on=("x",)),
    ))
    try:
        # At most two runs each: with four groups ready at once, both workers must take some.
        for worker in ("g1", "g2"):
            workers(worker, "--lease-seconds", "3", "--max-runs", "2")
        await eventually(lambda: asyncio.sleep(0, result=all((tmp_path / f"ready-{w}").exists() for w in ("g1", "g2"))),
                     30, "workers to start")
        keys = [group() for _ in range(4)]
        created: dict[str, list[str]] = defaultdict(list)
        for key in keys:  # a group's runs one after the other: the oldest runs claimable are all of one group
            for _ in range(6):
                created[key].append(await api.start_run(definition, concurrency_key=key))
        run_ids = [r for ids in created.values() for r in ids]

        async def finished():
            async with db.transaction() as s:
                counts = dict((await s.execute(
                    select(models.runs.c.state, func.count()).where(models.runs.c.id.in_(run_ids))
                    .group_by(models.runs.c.state))).all())
            return counts if sum(counts.get(k, 0) for k in ("SUCCEEDED", "FAILED", "CANCELLED")) == len(run_ids) else None

        assert await eventually(finished, 90, "the runs to finish") == {"SUCCEEDED": len(run_ids)}

        spans: dict[str, list] = defaultdict(list)
        for path in (tmp_path / "record-g1.log", tmp_path / "record-g2.log"):
            for line in path.read_text().splitlines() if path.exists() else []:
                run_id, _step, _iteration, _attempt, start, end, worker = line.split()
                spans[run_id].append((float(start), float(end), worker))
        assert set(spans) == set(run_ids)
        for key, ids in created.items():
            runs = [(min(s for s, _e, _w in spans[r]), max(e for _s, e, _w in spans[r])) for r in ids]
            for (_s1, end), (start, _e2) in zip(runs, runs[1:]):
                # In the order created, each run of the group after the previous one ended.
                assert start >= end, (key, runs)
        used = {w for items in spans.values() for _s, _e, w in items}
        assert used == {"g1", "g2"}, used
    finally:
        await db.close()


# --------------------------------------------------------------------------- the workflow format


HEAD = 'apiVersion: innominatus.dev/v1\nkind: Workflow\nmetadata: {name: demo, version: "1.0.0"}\nspec:\n'
PARAMS = "  params: {app: {type: string, required: true}, environment: {type: string}}\n"
STEPS = "  steps: [{id: a, type: shell}]\n"


def test_concurrency_group_loads_with_params_vars_and_workflow_fields():
    source = HEAD + PARAMS + "  variables: {region: eu}\n" + \
        '  concurrency_group: "${params.app}/${params.environment}@${vars.region}:${workflow.name}"\n' + STEPS
    wf, findings = load_workflow(source, "wf.yaml")
    assert findings == [] and wf.concurrency_group == "${params.app}/${params.environment}@${vars.region}:${workflow.name}"
    plain, findings = load_workflow(HEAD + '  concurrency_group: "db-migrations"\n' + STEPS)
    assert findings == [] and plain.concurrency_group == "db-migrations"
    none, _ = load_workflow(HEAD + STEPS)
    assert none.concurrency_group == ""


# (YAML after HEAD, code, line, column, part of the message, part of the hint)
BAD_GROUPS = {
    "not a string": ("  concurrency_group: 3\n" + STEPS, "WF-1004", 5, 22, "3 is not of type 'string'", ""),
    "empty": ('  concurrency_group: ""\n' + STEPS, "WF-1005", 5, 22, "should be non-empty", ""),
    "too long": (f'  concurrency_group: "{"g" * 257}"\n' + STEPS, "WF-1005", 5, 22, "is too long", ""),
    "unknown param": (PARAMS + '  concurrency_group: "${params.ap}/${params.environment}"\n' + STEPS,
                      "WF-1203", 6, 23, "names the param 'ap', which the workflow does not declare",
                      "did you mean 'app'?"),
    "step outputs": (PARAMS + '  concurrency_group: "${params.app}/${steps.a.outputs.env}"\n' + STEPS,
                     "WF-1202", 6, 37, "reads step outputs where no step has run yet", "use params, vars or workflow"),
    "resources": ('  concurrency_group: "${resources.db.host}"\n' + STEPS, "WF-1202", 5, 23,
                  "names 'resources', which is not a known root", ""),
    "malformed": (PARAMS + '  concurrency_group: "${params.app"\n' + STEPS, "WF-1201", 6, 23, "", "${params.app}"),
    "unknown workflow field": ('  concurrency_group: "${workflow.app}"\n' + STEPS, "WF-1206", 5, 23,
                               "workflow.app", "workflow fields"),
    "typo in the key": ('  concurency_group: "x"\n' + STEPS, "WF-1002", 5, 3, "unknown key 'concurency_group'",
                        "did you mean 'concurrency_group'?"),
}


@pytest.mark.parametrize("name", list(BAD_GROUPS))
def test_bad_concurrency_groups_give_a_finding_at_the_right_place(name):
    body, code, line, column, message, hint = BAD_GROUPS[name]
    wf, findings = load_workflow(HEAD + body, "wf.yaml")
    assert wf is None
    matching = [f for f in findings if f.code == code]
    assert matching, findings
    f = matching[0]
    assert (f.line, f.column) == (line, column), f
    assert message in f.message and hint in f.hint, f
    assert f.code in CODES and str(f).startswith(f"wf.yaml:{line}:{column}: error {code}: ")


async def test_the_group_is_resolved_when_the_run_starts(engine):
    scheduler, _rec = engine
    source = HEAD + PARAMS + '  concurrency_group: "${params.app}/${params.environment}"\n' + \
        "  steps: [{id: a, type: test}]\n"
    wf, findings = load_workflow(source, step_types=["test"])
    assert findings == []
    app = f"shop{uuid.uuid4().hex[:6]}"
    run_id = await scheduler.start_run(wf, {"app": app, "environment": "production"})
    row, _ = await scheduler.get_run(run_id)
    assert row.concurrency_key == f"{app}/production"
    assert (await scheduler.wait(run_id)).state == "SUCCEEDED"

    # An explicit key (the platform's deploys) wins over the definition's.
    explicit = await scheduler.start_run(wf, {"app": app, "environment": "x"}, concurrency_key="other/env")
    assert (await scheduler.get_run(explicit))[0].concurrency_key == "other/env"

    # An optional param the group names but the run does not give: refused, saying which.
    with pytest.raises(InvalidArgument) as info:
        await scheduler.start_run(wf, {"app": app})
    assert info.value.reason == "CONCURRENCY_GROUP_UNRESOLVED"
    assert "spec.concurrency_group" in info.value.message and "environment" in info.value.message
    with pytest.raises(InvalidArgument) as info:
        await scheduler.start_run(wf, {"app": "a" * 300, "environment": "e"})
    assert info.value.reason == "CONCURRENCY_GROUP_TOO_LONG"


# --------------------------------------------------------------------------- the platform


HELLO = (ROOT / "deploy" / "examples" / "hello.yaml").read_text()


def _seconds(stamp: str) -> float:
    value = timestamp_pb2.Timestamp()
    value.FromJsonString(stamp)
    return value.ToNanoseconds() / 1e9


def _span(run: dict) -> tuple[float, float]:
    """(first step start, last step end so far) of a run's JSON."""
    starts = [_seconds(s["startTime"]) for s in run["steps"] if s.get("startTime")]
    ends = [_seconds(s["endTime"]) for s in run["steps"] if s.get("endTime")]
    return min(starts), max(ends, default=float("inf"))


async def test_deploys_and_the_removal_of_one_app_in_one_environment_go_one_at_a_time(platform, tmp_path,
                                                                                     monkeypatch, capsys):
    admin = await platform.login_admin()
    suffix = uuid.uuid4().hex[:6]
    developer = await platform.create_user(admin, f"dev{suffix}", identity_pb2.ROLE_DEVELOPER)
    app, other = f"shop{suffix}", f"blog{suffix}"

    async with platform.http(admin) as root, platform.http(developer) as dev:
        made = await root.post("/api/v1/environments",
                               json={"environment": {"name": "production", "type": "ENVIRONMENT_TYPE_PRODUCTION"}})
        assert made.status_code == 200, made.text

        async def approve(run_name: str) -> None:
            answer = await root.post(f"/api/v1/{run_name}/steps/approve:approve", json={"reason": "release"})
            assert answer.status_code == 200, answer.text

        # The first deploy waits at its production gate ...
        first = (await start_deployment(dev, HELLO, "production", application=app))["run"]
        assert first["concurrencyGroup"] == f"{app}/production" and not first.get("waitingFor")
        await wait_for_run(dev, first["name"], awaits_approval("approve"), timeout=60, what="first at its gate")
        # ... and holds back the next deploy of the same application there ...
        second = (await start_deployment(dev, HELLO, "production", application=app))["run"]
        assert second["state"] == "RUN_STATE_PENDING" and second["waitingFor"] == first["name"]
        # ... but not a deploy of another application.
        third = (await start_deployment(dev, HELLO, "production", application=other))["run"]
        await wait_for_run(dev, third["name"], awaits_approval("approve"), timeout=60, what="other app at its gate")

        await asyncio.sleep(1.0)  # the engine polls many times meanwhile: nothing of it starts
        second = await get_run(dev, second["name"])
        assert second["state"] == "RUN_STATE_PENDING" and second["waitingFor"] == first["name"]
        assert not any(s.get("startTime") for s in second["steps"])
        events = (await dev.get(f"/api/v1/{second['name']}:streamEvents", params={"snapshot": "true"})).text
        assert "run.waiting" in events and first["name"] in events

        # `innominatus runs get` says what it waits for.
        monkeypatch.setenv("INNOMINATUS_SERVER", platform.gateway)
        monkeypatch.setenv("INNOMINATUS_TOKEN", developer)
        monkeypatch.setenv("INNOMINATUS_CONFIG_DIR", str(tmp_path / "config"))
        from innominatus.cli.main import main

        capsys.readouterr()
        assert await asyncio.to_thread(main, ["runs", "get", second["name"]]) == 0
        out = capsys.readouterr().out
        assert "Waiting for" in out and first["name"] in out and f"{app}/production" in out

        # Removing the application waits too: `apps delete` shares the group.
        await approve(first["name"])
        first = await wait_for_run(dev, first["name"], timeout=60, what="first ended")
        assert first["state"] == "RUN_STATE_SUCCEEDED"
        second = await wait_for_run(dev, second["name"], awaits_approval("approve"), timeout=60,
                                    what="second at its gate")
        assert _span(second)[0] >= _span(first)[1]
        deleted = await dev.delete(f"/api/v1/applications/{app}", params={"environment": "production"})
        assert deleted.status_code == 200, deleted.text
        removal = deleted.json()["run"]
        assert removal["workflow"] == "undeploy-app" and removal["concurrencyGroup"] == f"{app}/production"
        assert removal["waitingFor"] == second["name"]

        await approve(second["name"])
        second = await wait_for_run(dev, second["name"], timeout=60, what="second ended")
        assert second["state"] == "RUN_STATE_SUCCEEDED"
        removal = await wait_for_run(dev, removal["name"], awaits_approval("approve"), timeout=60,
                                     what="removal at its gate")
        assert _span(removal)[0] >= _span(second)[1]
        await approve(removal["name"])
        removal = await wait_for_run(dev, removal["name"], timeout=60, what="removal ended")
        assert removal["state"] == "RUN_STATE_SUCCEEDED"

        # The other application's deploy was never held back by any of it.
        assert (await get_run(dev, third["name"]))["state"] not in ("RUN_STATE_PENDING",)
        await approve(third["name"])
        third = await wait_for_run(dev, third["name"], timeout=60, what="other app ended")
        assert third["state"] == "RUN_STATE_SUCCEEDED"
        assert _span(third)[0] < _span(first)[1]  # it ran while the first was still at its gate
