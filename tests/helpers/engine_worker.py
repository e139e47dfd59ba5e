"""A standalone engine worker process for the crash and stress tests.

    python -m tests.helpers.engine_worker --database-url URL --worker-id w1 --marker-dir DIR

Runs a Scheduler against the database until SIGTERM/SIGINT (or SIGKILL, which is the point).
Tests start them through :class:`WorkerProcesses`.
Step types it can execute:

``marker``  appends ``<idempotency key> <attempt> <worker>`` to ``DIR/<step>.log`` (one line per
            execution, the side effect the tests count); with ``block: true`` it then waits
            until ``DIR/release`` exists.
``record``  sleeps ``sleep`` seconds and appends ``run step iteration attempt start end worker``
            to ``DIR/record-<worker>.log`` (one line per completed execution; start and end on
            the machine's monotonic clock).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from innominatus.kit.db import Database


ROOT = Path(__file__).resolve().parents[2]


class WorkerProcesses:
    """Worker processes a test starts (``spawn``) and ``stop`` ends: SIGTERM, then SIGKILL after
    15 s. Each one's output goes to ``<marker_dir>/<worker id>.out``."""

    def __init__(self, database_url: str, marker_dir: Path) -> None:
        self.database_url = database_url
        self.marker_dir = marker_dir
        self.started: list[subprocess.Popen] = []

    def spawn(self, worker_id: str, *extra: str) -> subprocess.Popen:
        with open(self.marker_dir / f"{worker_id}.out", "wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "tests.helpers.engine_worker", "--database-url", self.database_url,
                 "--worker-id", worker_id, "--marker-dir", str(self.marker_dir), *extra],
                cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(ROOT)},
            )
        self.started.append(process)
        return process

    def stop(self) -> None:
        for process in self.started:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.started:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _append(path: Path, line: str) -> None:
    # One write() on an O_APPEND descriptor: lines of concurrent writers never interleave.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


class Marker:
    type = "marker"

    def __init__(self, directory: Path, worker: str) -> None:
        self.directory, self.worker = directory, worker

    async def run(self, ctx):
        _append(self.directory / f"{ctx.step_id}.log", f"{ctx.idempotency_key} {ctx.attempt} {self.worker}\n")
        if ctx.inputs.get("block"):
            while not (self.directory / "release").exists():
                await asyncio.sleep(0.05)
        return {"worker": self.worker, "attempt": ctx.attempt}


class Record:
    type = "record"

    def __init__(self, directory: Path, worker: str) -> None:
        self.path = directory / f"record-{worker}.log"
        self.worker = worker

    async def run(self, ctx):
        # CLOCK_MONOTONIC is one clock for every process on the machine (Linux), and unlike the
        # wall clock it never steps back: the tests compare these times across workers.
        start = time.monotonic()
        await asyncio.sleep(float(ctx.inputs.get("sleep", 0)))
        end = time.monotonic()
        _append(self.path, f"{ctx.run_id} {ctx.step_id} {ctx.idempotency_key.rsplit(':', 1)[-1]} {ctx.attempt} "
                           f"{start:.6f} {end:.6f} {self.worker}\n")
        return {}


async def main() -> None:
    from innominatus.engine.scheduler import Scheduler

    parser = argparse.ArgumentParser()
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--worker-id", required=True)
    parser.add_argument("--marker-dir", required=True)
    parser.add_argument("--lease-seconds", type=float, default=2.0)
    parser.add_argument("--heartbeat-seconds", type=float, default=0.3)
    parser.add_argument("--poll-interval", type=float, default=0.05)
    parser.add_argument("--max-runs", type=int, default=32)
    args = parser.parse_args()
    directory = Path(args.marker_dir)
    db = Database("engine", args.database_url)
    executors = {"marker": Marker(directory, args.worker_id), "record": Record(directory, args.worker_id)}
    scheduler = Scheduler(db, executors, worker_id=args.worker_id, lease_seconds=args.lease_seconds,
                          heartbeat_seconds=args.heartbeat_seconds, poll_interval=args.poll_interval,
                          max_runs=args.max_runs, workdir=directory / "work", stop_grace=1.0)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    scheduler.start()
    (directory / f"ready-{args.worker_id}").touch()
    await stop.wait()
    await scheduler.stop()
    await db.close()


if __name__ == "__main__":
    asyncio.run(main())
