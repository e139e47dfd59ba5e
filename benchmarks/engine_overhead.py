"""Overhead of the durable engine on PostgreSQL.

    python benchmarks/engine_overhead.py --database-url postgresql+psycopg://user@host:5432/db
                                         [--chain 200] [--commits 200] [--no-fresh-database]

Database: ``--database-url`` or $INNOMINATUS_BENCH_DATABASE_URL (or $INNOMINATUS_TEST_DATABASE_URL,
which scripts/test exports). A throwaway database is created next to the one named (needs
CREATEDB) and dropped afterwards, unless ``--no-fresh-database``.

One in-process Scheduler (one worker, default lease settings) runs, with no-op executors:

1. a raw commit: one single-row INSERT in its own transaction through the same async engine,
   the floor any durable step pays (latency per commit, median and mean);
2. a chain of N no-op steps (each depends on the previous): per-step overhead = run time / N,
   shown next to the raw commit latency (each step costs about two commits: RUNNING + attempt,
   then its result together with starting the next step);
3. a 1,000-step DAG of width 50 (20 layers; each step depends on two steps of the layer before);
4. ten 1-second sleep steps in parallel: total run time (aim: under 1.3 s).

Run times are measured from start_run() until the run's terminal state was committed
(``runs.ended_at`` - ``runs.created_at``, both written by the engine) and, from the client,
until the poll saw it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg  # noqa: E402
from psycopg import sql  # noqa: E402
from sqlalchemy import Column, Integer, MetaData, String, Table, select  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from innominatus.engine import models  # noqa: E402
from innominatus.engine.model import StepDef, WorkflowDef  # noqa: E402
from innominatus.engine.scheduler import Scheduler  # noqa: E402
from innominatus.kit import times  # noqa: E402
from innominatus.kit.db import Database  # noqa: E402


class Noop:
    type = "noop"

    async def run(self, ctx):
        return {}


class Sleep:
    type = "sleep"

    async def run(self, ctx):
        await asyncio.sleep(float(ctx.inputs.get("seconds", 1)))
        return {}


def _conninfo(url) -> str:
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def create_database(base: str) -> str:
    url = make_url(base)
    name = f"engine_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(_conninfo(url), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return url.set(drivername="postgresql+psycopg", database=name).render_as_string(hide_password=False)


def drop_database(target: str, base: str) -> None:
    url = make_url(target)
    with psycopg.connect(_conninfo(make_url(base)), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(url.database)))


async def raw_commits(db: Database, n: int) -> list[float]:
    scratch = Table("bench_commits", MetaData(), Column("id", Integer, primary_key=True, autoincrement=True),
                    Column("note", String(32)))
    async with db.engine.begin() as conn:
        await conn.run_sync(scratch.metadata.create_all)
    samples = []
    for i in range(n):
        started = time.perf_counter()
        async with db.transaction() as s:
            await s.execute(scratch.insert().values(note=str(i)))
        samples.append(time.perf_counter() - started)
    return samples


async def timed_run(scheduler: Scheduler, definition: WorkflowDef) -> tuple[float, float]:
    started = time.perf_counter()
    run_id = await scheduler.start_run(definition)
    while True:
        async with scheduler.db.transaction() as s:
            row = (await s.execute(select(models.runs.c.state, models.runs.c.created_at, models.runs.c.ended_at, models.runs.c.error)
                                   .where(models.runs.c.id == run_id))).one()
        if row.state in ("SUCCEEDED", "FAILED", "CANCELLED"):
            break
        await asyncio.sleep(0.005)
    client = time.perf_counter() - started
    if row.state != "SUCCEEDED":
        raise RuntimeError(f"{definition.name} {row.state}: {row.error}")
    engine = (times.utc(row.ended_at) - times.utc(row.created_at)).total_seconds()
    return engine, client


def chain(n: int) -> WorkflowDef:
    return WorkflowDef(name="chain", version="1", steps=tuple(
        StepDef(id=f"s{i}", type="noop", depends_on=(f"s{i - 1}",) if i else ()) for i in range(n)))


def dag(total: int = 1000, width: int = 50) -> WorkflowDef:
    steps = []
    for i in range(total):
        layer, col = divmod(i, width)
        deps = () if layer == 0 else (f"s{(layer - 1) * width + col}", f"s{(layer - 1) * width + (col + 1) % width}")
        steps.append(StepDef(id=f"s{i}", type="noop", depends_on=deps))
    return WorkflowDef(name="dag", version="1", steps=tuple(steps))


def sleeps(n: int = 10) -> WorkflowDef:
    return WorkflowDef(name="sleeps", version="1", steps=tuple(
        StepDef(id=f"sleep{i}", type="sleep", with_={"seconds": 1}) for i in range(n)))


async def bench(url: str, chain_length: int, commits: int) -> None:
    db = Database("engine", url)
    await asyncio.to_thread(db.migrate)
    scheduler = Scheduler(db, {"noop": Noop(), "sleep": Sleep()}, worker_id="bench", poll_interval=0.01,
                          max_concurrent_steps=64, workdir=Path(tempfile.gettempdir()) / "innominatus-engine-bench")
    scheduler.start()
    try:
        await timed_run(scheduler, chain(5))  # warm up connections and code paths
        samples = await raw_commits(db, commits)
        commit_median, commit_mean = statistics.median(samples), statistics.fmean(samples)
        print(f"raw commit (1-row INSERT):       median {commit_median * 1e3:7.3f} ms   mean {commit_mean * 1e3:7.3f} ms"
              f"   ({commits} commits)")

        engine_s, client_s = await timed_run(scheduler, chain(chain_length))
        per_step = engine_s / chain_length
        print(f"no-op durable step (chain of {chain_length}): {per_step * 1e3:7.3f} ms per step"
              f"   = {per_step / commit_median:4.1f} x a raw commit   (run {engine_s:.3f} s; client saw {client_s:.3f} s)")

        definition = dag()
        engine_s, client_s = await timed_run(scheduler, definition)
        print(f"1,000-step DAG, width 50:        {engine_s:7.3f} s   ({1000 / engine_s:6.0f} steps/s; client saw {client_s:.3f} s)")

        engine_s, client_s = await timed_run(scheduler, sleeps())
        verdict = "ok" if engine_s < 1.3 else "over the 1.3 s aim"
        print(f"10 x 1 s sleep steps in parallel: {engine_s:7.3f} s   (client saw {client_s:.3f} s; {verdict})")
    finally:
        await scheduler.stop()
        await db.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", default=os.environ.get("INNOMINATUS_BENCH_DATABASE_URL")
                        or os.environ.get("INNOMINATUS_TEST_DATABASE_URL"))
    parser.add_argument("--chain", type=int, default=200)
    parser.add_argument("--commits", type=int, default=200)
    parser.add_argument("--no-fresh-database", action="store_true")
    args = parser.parse_args()
    if not args.database_url or make_url(args.database_url).get_backend_name() != "postgresql":
        print("a PostgreSQL --database-url (or $INNOMINATUS_BENCH_DATABASE_URL) is required", file=sys.stderr)
        return 2
    url = args.database_url if args.no_fresh_database else create_database(args.database_url)
    try:
        asyncio.run(bench(url, args.chain, args.commits))
    finally:
        if not args.no_fresh_database:
            drop_database(url, args.database_url)
    return 0


if __name__ == "__main__":
    sys.exit(main())
