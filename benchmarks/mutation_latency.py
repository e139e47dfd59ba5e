"""End-to-end latency of one policy-gated, audited mutation, and of a read for comparison.

    python benchmarks/mutation_latency.py [--iterations 500] [--warmup 50]
                                          [--database-url URL] [--engines embedded,opa]

Starts the whole platform in this process (``EmbeddedPlatform``: five services and the
gateway, each on its own port over real mTLS), logs in as the bootstrap admin and times,
one request at a time from one client (latency, not load):

* ``CreateTeam`` (a mutation: peer check, token verification, policy decision, one
  transaction with the team row and its audit event in the outbox, then the outbox relay
  ships the event to audit's hash chain) with a new team name every call;
* ``ListTeams`` (a read: no policy call, no audit event), page size 10;

each (a) through the REST gateway (HTTP/1.1 keep-alive, httpx) and (b) directly over gRPC
mTLS to the identity service with the ``tool/cli`` certificate. It does this once with the
embedded policy engine (in-process Rego) and, when the opa binary is found
($INNOMINATUS_OPA_BIN or ``opa`` on PATH), once with an OPA sidecar (``opa run --server``
on localhost).

Database: ``--database-url`` or $INNOMINATUS_BENCH_DATABASE_URL (a PostgreSQL SQLAlchemy URL,
e.g. ``postgresql+psycopg://user@host:5432/db``), else the embedded SQLite files. On
PostgreSQL every engine run gets a throwaway database created next to the one named (needs
the CREATEDB privilege) and dropped afterwards; ``--no-fresh-database`` uses the named
database itself, which must not hold any innominatus users yet (the benchmark logs in with
the bootstrap admin's credentials, written only on the first start).

The gateway's per-client rate limit is switched off for the run (it would cap the REST
mode at 50 requests/s). The client, the gateway, the services and the audit relay share
one process and one event loop, so the numbers include the client's own cost and the
relay's background work, as with ``innominatus up``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform as pyplatform
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Awaitable, Callable

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import grpc  # noqa: E402
import httpx  # noqa: E402
from prometheus_client import REGISTRY  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from innominatus.audit.v1 import audit_pb2, audit_pb2_grpc  # noqa: E402
from innominatus.identity.v1 import identity_pb2, identity_pb2_grpc  # noqa: E402
from innominatus.kit.clients import secure_channel  # noqa: E402
from innominatus.kit.config import Settings  # noqa: E402
from innominatus.kit.embedded import EmbeddedPlatform  # noqa: E402
from innominatus.kit.logs import configure as configure_logs  # noqa: E402
from tests.helpers.opa import OpaBinaryNotFound, OpaServer, find_opa_binary  # noqa: E402

POLICY_DIR = REPO_ROOT / "policies"
DATABASE_URL_ENV = "INNOMINATUS_BENCH_DATABASE_URL"
RPC_TIMEOUT = 30.0
AUDIT_WAIT_SECONDS = 120.0


def percentile(sorted_values: list[float], pct: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(pct / 100 * (len(sorted_values) - 1))))
    return sorted_values[index]


@dataclass
class Result:
    engine: str
    path: str  # "REST" or "gRPC"
    operation: str
    p50: float
    p90: float
    p99: float
    mean: float
    max: float
    per_sec: float


async def measure(call: Callable[[int], Awaitable[None]], iterations: int, warmup: int) -> dict[str, float]:
    for i in range(warmup):
        await call(i)
    samples: list[float] = []
    started = time.perf_counter()
    for i in range(warmup, warmup + iterations):
        t0 = time.perf_counter()
        await call(i)
        samples.append(time.perf_counter() - t0)
    wall = time.perf_counter() - started
    samples.sort()
    return {
        "p50": percentile(samples, 50) * 1e3,
        "p90": percentile(samples, 90) * 1e3,
        "p99": percentile(samples, 99) * 1e3,
        "mean": statistics.fmean(samples) * 1e3,
        "max": samples[-1] * 1e3,
        "per_sec": iterations / wall,
    }


# --------------------------------------------------------------------------- databases


def _conninfo(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def create_database(base_url: str) -> str:
    import psycopg
    from psycopg import sql

    name = f"innominatus_bench_{uuid.uuid4().hex[:12]}"
    try:
        with psycopg.connect(_conninfo(base_url), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    except psycopg.Error as exc:
        raise SystemExit(
            f"could not create a throwaway database next to the one named ({exc}); "
            "grant CREATEDB or pass --no-fresh-database"
        ) from None
    return make_url(base_url).set(drivername="postgresql+psycopg", database=name).render_as_string(hide_password=False)


def drop_database(base_url: str, url: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(_conninfo(base_url), autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(make_url(url).database))
        )


def describe_database(url: str | None) -> str:
    if not url:
        return f"SQLite {sqlite3.sqlite_version} (embedded default: one file per service, WAL)"
    import psycopg

    with psycopg.connect(_conninfo(url)) as conn:
        version = conn.execute("SHOW server_version").fetchone()[0]
    parsed = make_url(url)
    return f"PostgreSQL {version} at {parsed.host}:{parsed.port or 5432} (one schema per service)"


def opa_version(binary: str) -> str:
    try:
        out = subprocess.run([binary, "version"], capture_output=True, text=True, timeout=10).stdout
        return out.splitlines()[0].replace("Version: ", "v") if out else "unknown version"
    except (OSError, subprocess.SubprocessError):
        return "unknown version"


def policy_decisions(permission: str, result: str) -> float:
    value = REGISTRY.get_sample_value(
        "innominatus_policy_decisions_total", {"permission": permission, "result": result}
    )
    return value or 0.0


# --------------------------------------------------------------------------- one engine


async def bench_engine(
    label: str,
    settings: Settings,
    iterations: int,
    warmup: int,
    admin: dict | None,
) -> tuple[list[Result], str]:
    """Start the platform with ``settings``, time the four cases, stop it."""
    platform = EmbeddedPlatform(settings)
    results: list[Result] = []
    await platform.start()
    try:
        if admin is None:
            admin = json.loads((settings.data_dir / "bootstrap-admin.json").read_text(encoding="utf-8"))
        identity_addr = f"127.0.0.1:{platform.hosts['identity'].port}"
        audit_addr = f"127.0.0.1:{platform.hosts['audit'].port}"
        cli_tls = platform.tls["cli"]
        identity_channel = secure_channel(identity_addr, cli_tls)
        audit_channel = secure_channel(audit_addr, cli_tls)
        identity = identity_pb2_grpc.IdentityServiceStub(identity_channel)
        audit = audit_pb2_grpc.AuditServiceStub(audit_channel)
        try:
            login = await identity.Login(
                identity_pb2.LoginRequest(username=admin["username"], password=admin["password"]), timeout=RPC_TIMEOUT
            )
            token = login.access_token
            auth = (("authorization", f"Bearer {token}"),)
            chain_before = (await audit.VerifyChain(audit_pb2.VerifyChainRequest(), metadata=auth, timeout=RPC_TIMEOUT))
            allowed_before = policy_decisions("teams.create", "allow")
            run_id = uuid.uuid4().hex[:8]

            http = httpx.AsyncClient(
                base_url=platform.gateway_url,
                headers={"Authorization": f"Bearer {token}"},
                timeout=RPC_TIMEOUT,
                limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
            )
            try:

                async def rest_create(i: int) -> None:
                    body = {"name": f"teams/b{run_id}-rest-{i}", "displayName": "benchmark"}
                    response = await http.post("/api/v1/teams", json=body)
                    if response.status_code != 200:
                        raise RuntimeError(f"REST CreateTeam answered {response.status_code}: {response.text}")

                async def grpc_create(i: int) -> None:
                    team = identity_pb2.Team(name=f"teams/b{run_id}-grpc-{i}", display_name="benchmark")
                    await identity.CreateTeam(identity_pb2.CreateTeamRequest(team=team), metadata=auth, timeout=RPC_TIMEOUT)

                async def rest_list(_i: int) -> None:
                    response = await http.get("/api/v1/teams", params={"pageSize": 10})
                    if response.status_code != 200:
                        raise RuntimeError(f"REST ListTeams answered {response.status_code}: {response.text}")

                async def grpc_list(_i: int) -> None:
                    await identity.ListTeams(identity_pb2.ListTeamsRequest(page_size=10), metadata=auth, timeout=RPC_TIMEOUT)

                cases = [
                    ("REST", "CreateTeam (mutation)", rest_create),
                    ("gRPC", "CreateTeam (mutation)", grpc_create),
                    ("REST", "ListTeams (read)", rest_list),
                    ("gRPC", "ListTeams (read)", grpc_list),
                ]
                for path, operation, call in cases:
                    r = await measure(call, iterations, warmup)
                    results.append(Result(label, path, operation, **r))
            finally:
                await http.aclose()

            # Every timed mutation must have been decided by the policy engine and must reach
            # the audit chain through the outbox relay; wait (bounded) for the relay.
            mutations = 2 * (iterations + warmup)
            decided = policy_decisions("teams.create", "allow") - allowed_before
            expected = chain_before.records_checked + mutations
            deadline = time.monotonic() + AUDIT_WAIT_SECONDS
            chain = chain_before
            outbox = platform.hosts["identity"].runtime.outbox
            while time.monotonic() < deadline:
                if await outbox.pending() == 0:
                    chain = await audit.VerifyChain(audit_pb2.VerifyChainRequest(), metadata=auth, timeout=RPC_TIMEOUT)
                    if chain.records_checked >= expected:
                        break
                await asyncio.sleep(0.2)
            appended = chain.records_checked - chain_before.records_checked
            check = (
                f"{label}: {mutations} CreateTeam calls, {decided:.0f} policy allows, "
                f"{appended} audit records appended, chain ok={chain.ok}"
            )
            if decided != mutations or appended < mutations or not chain.ok:
                check += "  <-- MISMATCH"
        finally:
            await identity_channel.close()
            await audit_channel.close()
    finally:
        await platform.stop()
    return results, check


# --------------------------------------------------------------------------- main


async def run(args: argparse.Namespace) -> int:
    configure_logs("WARNING")
    base_url = args.database_url or os.environ.get(DATABASE_URL_ENV) or None
    if base_url and make_url(base_url).get_backend_name() != "postgresql":
        raise SystemExit(f"--database-url must be a PostgreSQL URL (got {make_url(base_url).get_backend_name()})")

    wanted = [e.strip() for e in args.engines.split(",") if e.strip()]
    engines: list[tuple[str, str | None]] = []  # (label, binary)
    notes: list[str] = []
    if "embedded" in wanted:
        engines.append(("embedded Rego", None))
    if "opa" in wanted:
        try:
            binary = find_opa_binary()
            engines.append(("OPA sidecar", binary))
        except OpaBinaryNotFound as exc:
            notes.append(f"OPA sidecar skipped: {exc}")

    all_results: list[Result] = []
    checks: list[str] = []
    engine_desc: list[str] = []
    db_desc = describe_database(base_url)
    shared_dir = tempfile.TemporaryDirectory(prefix="innominatus-bench-")
    admin: dict | None = None
    try:
        for index, (label, binary) in enumerate(engines):
            fresh = base_url is not None and not args.no_fresh_database
            database_url = create_database(base_url) if fresh else base_url
            # A throwaway database gets a throwaway data dir; a reused one keeps the data dir
            # (and with it the bootstrap admin's credentials) across engine runs.
            run_dir = tempfile.TemporaryDirectory(prefix="innominatus-bench-") if (fresh or not base_url) else None
            data_dir = Path(run_dir.name if run_dir else shared_dir.name) / "data"
            opa = OpaServer(POLICY_DIR).start() if binary else None
            try:
                settings = Settings(
                    data_dir=data_dir,
                    database_url=database_url,
                    opa_url=opa.url if opa else None,
                    policy_dir=POLICY_DIR,
                    log_level="WARNING",
                    gateway_rate_limit_per_second=0.0,
                )
                if opa:
                    engine_desc.append(f"OPA sidecar {opa_version(binary)} at {opa.url} (REST, opa-python-client)")
                else:
                    import importlib.metadata as md

                    engine_desc.append(f"embedded Rego: regopy {md.version('regopy')} in-process")
                results, check = await bench_engine(label, settings, args.iterations, args.warmup, admin)
                all_results += results
                checks.append(check)
            finally:
                if opa:
                    opa.close()
                if fresh:
                    drop_database(base_url, database_url)
                if run_dir:
                    run_dir.cleanup()
            if index == 0 and base_url and args.no_fresh_database:
                path = data_dir / "bootstrap-admin.json"
                if path.exists():
                    admin = json.loads(path.read_text(encoding="utf-8"))
    finally:
        shared_dir.cleanup()

    import importlib.metadata as md

    print("innominatus mutation latency")
    print(f"  python:   {sys.version.split()[0]} ({pyplatform.python_implementation()}), grpcio {grpc.__version__}, httpx {httpx.__version__}")
    print(f"  machine:  {pyplatform.system()} {pyplatform.machine()}, {os.cpu_count()} CPUs")
    print(f"  database: {db_desc}")
    for desc in engine_desc:
        print(f"  policy:   {desc}")
    print(f"  innominatus {md.version('innominatus')}; platform in-process (EmbeddedPlatform), mTLS on every gRPC hop")
    print(f"  {args.iterations} sequential calls per row after {args.warmup} warm-up calls; one client, one connection")
    print("  REST = HTTP/1.1 keep-alive to the gateway -> mTLS gRPC to identity; gRPC = mTLS gRPC straight to identity")
    print()
    header = (
        f"{'policy engine':<14} {'path':<5} {'operation':<22} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} "
        f"{'mean ms':>8} {'max ms':>8} {'req/s':>7}"
    )
    print(header)
    print("-" * len(header))
    for r in all_results:
        print(
            f"{r.engine:<14} {r.path:<5} {r.operation:<22} {r.p50:>8.2f} {r.p90:>8.2f} {r.p99:>8.2f} "
            f"{r.mean:>8.2f} {r.max:>8.2f} {r.per_sec:>7.0f}"
        )
    print()
    for check in checks:
        print(f"check: {check}")
    for note in notes:
        print(f"note: {note}")
    return 1 if any("MISMATCH" in c for c in checks) else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=500, help="timed calls per row (default 500)")
    parser.add_argument("--warmup", type=int, default=50, help="untimed calls before each row (default 50)")
    parser.add_argument(
        "--database-url", default=None, help=f"PostgreSQL SQLAlchemy URL (default ${DATABASE_URL_ENV}, else SQLite)"
    )
    parser.add_argument(
        "--no-fresh-database",
        action="store_true",
        help="use the named PostgreSQL database itself instead of a throwaway one per engine",
    )
    parser.add_argument(
        "--engines", default="embedded,opa", help="comma-separated: embedded, opa (default both; opa only if found)"
    )
    parser.add_argument(
        "--max-seconds", type=float, default=1800.0, help="give up after this long in total (default 1800)"
    )
    args = parser.parse_args()
    if args.iterations < 1 or args.warmup < 0:
        parser.error("--iterations must be >= 1 and --warmup >= 0")

    async def bounded() -> int:
        async with asyncio.timeout(args.max_seconds):
            return await run(args)

    try:
        code = asyncio.run(bounded())
    except TimeoutError:
        print(f"error: the benchmark did not finish within {args.max_seconds:g}s", file=sys.stderr)
        code = 2
    sys.exit(code)


if __name__ == "__main__":
    main()
