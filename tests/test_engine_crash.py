"""Crash recovery and many workers: engine worker subprocesses against one PostgreSQL database.

A worker is killed with SIGKILL in the middle of a step; another resumes the run. Completed
steps never run again (their side-effect files hold one line), the interrupted step is retried
with the same idempotency key. Then 200 runs on two workers: every run succeeds, every step
completes exactly once and no step ever runs twice at the same time.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections import defaultdict
from pathlib import Path

import pytest
from sqlalchemy import func, select

from innominatus.engine import models
from innominatus.engine.model import RetryPolicy, StepDef, WorkflowDef
from innominatus.engine.scheduler import Scheduler
from innominatus.kit.db import Database
from tests.helpers.database import drop_database, fresh_database
from tests.helpers.engine_worker import WorkerProcesses
from tests.helpers.polling import eventually

pytestmark = pytest.mark.postgres


@pytest.fixture
def database_url():
    url = fresh_database("engine_crash")
    Database("engine", url).migrate()
    yield url
    drop_database(url)


@pytest.fixture
def workers(database_url, tmp_path):
    processes = WorkerProcesses(database_url, tmp_path)
    yield processes.spawn
    processes.stop()


def lines(path: Path) -> list[list[str]]:
    return [line.split() for line in path.read_text().splitlines()] if path.exists() else []


async def test_sigkill_mid_step_then_another_worker_resumes(database_url, workers, tmp_path):
    db = Database("engine", database_url)
    api = Scheduler(db, {}, worker_id="api")  # never started: only its API is used
    retry = RetryPolicy(max_attempts=3, initial_interval=0.1)
    definition = WorkflowDef(name="crash", version="1", steps=(
        StepDef(id="a", type="marker", retry=retry),
        StepDef(id="b", type="marker", with_={"block": True}, depends_on=("a",), retry=retry),
        StepDef(id="c", type="marker", depends_on=("b",), retry=retry),
    ))
    run_id = await api.start_run(definition, request_id="crash-1")
    try:
        # A 3 s lease renewed every 0.3 s: a loaded machine stalling the worker for a second or two
        # does not lose it (the worker would then retry b itself); w2 takes over within 3 s of the kill.
        first = workers("w1", "--lease-seconds", "3", "--heartbeat-seconds", "0.3")
        await eventually(lambda: asyncio.sleep(0, result=len(lines(tmp_path / "b.log")) == 1), 30, "step b to start")
        run, rows = await api.get_run(run_id)
        assert run.lease_owner == "w1"
        b_row = next(r for r in rows if r.step_id == "b")
        assert b_row.state == "RUNNING" and b_row.attempts == 1 and b_row.lease_owner == "w1"
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)

        (tmp_path / "release").touch()
        workers("w2", "--lease-seconds", "3", "--heartbeat-seconds", "0.3")
        run = await api.wait(run_id, timeout=30)
        assert run.state == "SUCCEEDED", run.error

        a, b, c = (lines(tmp_path / f"{s}.log") for s in "abc")
        assert len(a) == 1 and a[0][2] == "w1"  # completed before the crash: never again
        assert len(b) == 2  # interrupted on w1, retried on w2
        assert b[0][0] == b[1][0] == b_row.idempotency_key  # the same idempotency key
        assert [x[1] for x in b] == ["1", "2"] and [x[2] for x in b] == ["w1", "w2"]
        assert len(c) == 1 and c[0][2] == "w2"
        _, rows = await api.get_run(run_id)
        assert {r.step_id: (r.state, r.attempts) for r in rows} == {
            "a": ("SUCCEEDED", 1), "b": ("SUCCEEDED", 2), "c": ("SUCCEEDED", 1)}
        kinds = [(e["kind"], e["step_id"]) for e in await api.events(run_id)]
        assert ("step.interrupted", "b") in kinds
    finally:
        await db.close()


async def test_200_runs_on_two_workers_none_lost_none_doubled(database_url, workers, tmp_path):
    db = Database("engine", database_url)
    api = Scheduler(db, {}, worker_id="api")
    definition = WorkflowDef(name="stress", version="1", steps=(
        StepDef(id="x", type="record", with_={"sleep": 0.005}),
        StepDef(id="y", type="record", with_={"sleep": 0.005}, depends_on=("x",)),
        StepDef(id="z", type="record", with_={"sleep": 0.005}, depends_on=("x",)),
    ))
    try:
        workers("s1", "--lease-seconds", "3")
        workers("s2", "--lease-seconds", "3")
        await eventually(lambda: asyncio.sleep(0, result=all((tmp_path / f"ready-{w}").exists() for w in ("s1", "s2"))),
                         30, "workers to start")
        started = time.monotonic()
        run_ids = [await api.start_run(definition, request_id=f"stress-{i}") for i in range(200)]

        async def finished():
            async with db.transaction() as s:
                counts = dict((await s.execute(
                    select(models.runs.c.state, func.count()).where(models.runs.c.id.in_(run_ids))
                    .group_by(models.runs.c.state))).all())
            return counts if sum(counts.get(k, 0) for k in ("SUCCEEDED", "FAILED", "CANCELLED")) == 200 else None

        counts = await eventually(finished, 60, "200 runs to finish")
        elapsed = time.monotonic() - started
        assert counts == {"SUCCEEDED": 200}, counts

        records = lines(tmp_path / "record-s1.log") + lines(tmp_path / "record-s2.log")
        by_step: dict[tuple, list] = defaultdict(list)
        for run_id, step_id, iteration, attempt, start, end, worker in records:
            by_step[(run_id, step_id, iteration)].append((float(start), float(end), int(attempt), worker))
        assert set(by_step) == {(r, s, "0") for r in run_ids for s in "xyz"}  # none lost
        doubled = {k: v for k, v in by_step.items() if len(v) != 1}
        assert not doubled, doubled  # each step completed exactly once
        for executions in by_step.values():  # and never ran twice at the same time
            executions.sort()
            for (s1, e1, *_), (s2, _e2, *_) in zip(executions, executions[1:]):
                assert s2 >= e1
        workers_used = {v[0][3] for v in by_step.values()}
        assert workers_used == {"s1", "s2"}, workers_used
        async with db.transaction() as s:
            attempts = (await s.execute(select(func.max(models.step_executions.c.attempts))
                                        .where(models.step_executions.c.run_id.in_(run_ids)))).scalar_one()
        assert attempts == 1
        print(f"200 runs x 3 steps on 2 workers: {elapsed:.2f}s")
    finally:
        await db.close()
