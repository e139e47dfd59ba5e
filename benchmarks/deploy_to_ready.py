"""Time from ``deploy`` to ready for an application with 1, 5 and 20 independent resources.

    python benchmarks/deploy_to_ready.py --postgres-admin-url postgresql://postgres@host:5432/postgres
                                         [--redis-admin-url redis://host:6379/0]
                                         [--database-url postgresql+psycopg://user@host:5432/db]
                                         [--counts 1,5,20] [--repeat 3] [--warmup 1] [--max-seconds 600]

Starts the whole platform in this process (``EmbeddedPlatform``: five services and the gateway,
each on its own port over mTLS) with real provisioning switched on: before it starts,
``INNOMINATUS_POSTGRES_ADMIN_URL`` is set to ``--postgres-admin-url``,
``INNOMINATUS_REDIS_ADMIN_URL`` to ``--redis-admin-url`` (when given) and
``INNOMINATUS_SECRETS_KEY`` to a fresh key (unless already set). It logs in as the bootstrap
admin and, for each count N, deploys ``--repeat`` times a Score workload with N independent
resources (no resource's params use another's outputs, so the engine may provision them all at
once): ``r00``, ``r01``, ... alternating ``postgres`` / ``redis`` when a Redis admin URL is
given, all ``postgres`` otherwise (a postgres resource = CREATE ROLE + CREATE DATABASE on the
admin server; a redis resource = one ``ACL SETUSER``). Every deploy uses a new application name
(``dtr<hex>``), so every resource is new and provisioned for real.

Each deploy is ``POST /api/v1/deployments`` through the REST gateway (environment ``dev``),
then ``GET /api/v1/runs/<id>`` every 20 ms until the run is ``SUCCEEDED``. Reported per N:

* deploy -> ready: wall time from sending the POST to the first poll that sees SUCCEEDED
  (so up to ~20 ms of polling granularity is included);
* provisioning span: first provision step start -> last provision step end (the run's steps);
* sum of provision step durations (each step's last attempt);
* parallelism = sum / span (1.0 = the provision steps ran one after another; N = all at once);
* undeploy: wall time of ``DELETE /api/v1/applications/<app>?environment=dev`` (``innominatus
  apps delete``: the undeploy-app golden path deprovisions every resource, in reverse dependency
  order, and removes the application from GitOps) until its run has SUCCEEDED.

Database of the platform: ``--database-url`` (a PostgreSQL SQLAlchemy URL, used as is; must not
hold innominatus users yet), else a throwaway database created on the ``--postgres-admin-url``
server and dropped at the end. Every deployed application is undeployed again; at the end the
benchmark looks for databases, roles and Redis ACL users (and keys) whose name starts with one of
the generated application names directly on the admin connections, drops them and reports them as
leaked (after a successful undeploy there must be none). The gateway's per-client rate limit is switched off (the 20 ms polling alone is
50 requests/s). Client, gateway, services and engine share one process and event loop.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata as md
import json
import os
import platform as pyplatform
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import httpx  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from innominatus.identity.v1 import identity_pb2, identity_pb2_grpc  # noqa: E402
from innominatus.kit.clients import secure_channel  # noqa: E402
from innominatus.kit.config import Settings  # noqa: E402
from innominatus.kit.embedded import EmbeddedPlatform  # noqa: E402
from innominatus.kit.logs import configure as configure_logs  # noqa: E402
from innominatus.resources.secrets import encode_master_key, generate_master_key  # noqa: E402

POLICY_DIR = REPO_ROOT / "policies"
ENVIRONMENT = "dev"
POLL_SECONDS = 0.020
RPC_TIMEOUT = 30.0
TERMINAL = ("RUN_STATE_SUCCEEDED", "RUN_STATE_FAILED", "RUN_STATE_CANCELLED")


# --------------------------------------------------------------------------- helpers


def libpq(url: str) -> str:
    """A libpq URL (``postgresql://``) from a libpq or SQLAlchemy PostgreSQL URL."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def percentile(sorted_values: list[float], pct: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(pct / 100 * (len(sorted_values) - 1))))
    return sorted_values[index]


def parse_ts(text: str) -> float:
    """Seconds since the epoch from a protobuf JSON timestamp (up to nanoseconds, ``Z``)."""
    text = text.replace("Z", "+00:00")
    if "." in text:
        head, rest = text.split(".", 1)
        digits = "".join(c for c in rest if c.isdigit())
        tz = rest[len(digits):]
        text = f"{head}.{(digits + '000000')[:6]}{tz}"
    return datetime.fromisoformat(text).timestamp()


def parse_duration(text: str | None) -> float:
    return float(text.rstrip("s")) if text else 0.0


def resource_types(count: int, with_redis: bool) -> list[str]:
    kinds = ("postgres", "redis") if with_redis else ("postgres",)
    return [kinds[i % len(kinds)] for i in range(count)]


def score_yaml(app: str, types: list[str]) -> str:
    lines = [
        "apiVersion: score.dev/v1b1",
        "metadata:",
        f"  name: {app}",
        "containers:",
        "  api:",
        "    image: registry.example.com/bench/api:1.0.0",
        "    variables:",
    ]
    for i, kind in enumerate(types):
        ref = f"r{i:02d}"
        lines.append(f"      {ref.upper()}_HOST: ${{resources.{ref}.host}}")
        lines.append(f"      {ref.upper()}_USER: ${{resources.{ref}.username}}")
        lines.append(f"      {ref.upper()}_PASSWORD: ${{resources.{ref}.password}}")
    lines.append("resources:")
    for i, kind in enumerate(types):
        lines += [f"  r{i:02d}:", f"    type: {kind}"]
    return "\n".join(lines) + "\n"


@dataclass
class Sample:
    count: int
    app: str
    ready: float  # s, client wall time POST -> SUCCEEDED seen
    server: float  # s, run create_time -> last step end
    validate: float
    span: float  # s, first provision start -> last provision end
    busy: float  # s, sum of provision step durations
    render: float
    release: float
    attempts: int  # provision attempts in total (N when nothing retried)
    max_overlap: int  # most provision steps running at the same moment
    undeploy: float = float("nan")  # s, client wall time DELETE -> SUCCEEDED seen


@dataclass
class Outcome:
    samples: list[Sample] = field(default_factory=list)
    apps: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    failures: dict[int, list[float]] = field(default_factory=dict)  # N -> seconds until the run failed


def analyse(count: int, app: str, ready: float, run: dict) -> Sample:
    steps = run.get("steps", [])
    by_name = {s["name"]: s for s in steps}
    provision = [s for s in steps if s.get("type") == "resource" or s["name"].startswith("provision-")]
    if len(provision) != count:
        raise RuntimeError(f"expected {count} provision steps, the run has {len(provision)}: {list(by_name)}")
    starts = [parse_ts(s["startTime"]) for s in provision]
    ends = [parse_ts(s["endTime"]) for s in provision]
    events = sorted([(t, 1) for t in starts] + [(t, -1) for t in ends], key=lambda e: (e[0], e[1]))
    running = overlap = 0
    for _, delta in events:
        running += delta
        overlap = max(overlap, running)

    def step_time(name: str) -> float:
        s = by_name.get(name)
        return parse_duration(s.get("duration")) if s else float("nan")

    last_end = max(parse_ts(s["endTime"]) for s in steps if s.get("endTime"))
    return Sample(
        count=count,
        app=app,
        ready=ready,
        server=last_end - parse_ts(run["createTime"]),
        validate=step_time("validate"),
        span=max(ends) - min(starts),
        busy=sum(parse_duration(s.get("duration")) for s in provision),
        render=step_time("render"),
        release=step_time("release"),
        attempts=sum(int(s.get("attempts", 1)) for s in provision),
        max_overlap=overlap,
    )


# --------------------------------------------------------------------------- the benchmark


async def deploy_once(http: httpx.AsyncClient, app: str, types: list[str], deadline: float) -> tuple[float, dict]:
    body = {"scoreYaml": score_yaml(app, types), "environment": ENVIRONMENT}
    t0 = time.perf_counter()
    created = await http.post("/api/v1/deployments", json=body)
    if created.status_code != 200:
        raise RuntimeError(f"POST /api/v1/deployments answered {created.status_code}: {created.text}")
    return await run_until_done(http, created.json()["run"]["name"], t0, deadline)


async def undeploy_once(http: httpx.AsyncClient, app: str, deadline: float) -> float:
    t0 = time.perf_counter()
    deleted = await http.delete(f"/api/v1/applications/{app}", params={"environment": ENVIRONMENT})
    if deleted.status_code != 200:
        raise RuntimeError(f"DELETE /api/v1/applications/{app} answered {deleted.status_code}: {deleted.text}")
    took, _run = await run_until_done(http, deleted.json()["run"]["name"], t0, deadline)
    return took


async def run_until_done(http: httpx.AsyncClient, run_name: str, t0: float, deadline: float) -> tuple[float, dict]:
    """Poll ``run_name`` until it ends; the seconds since ``t0`` and the run, which must have SUCCEEDED."""
    while True:
        response = await http.get(f"/api/v1/{run_name}")
        if response.status_code != 200:
            raise RuntimeError(f"GET /api/v1/{run_name} answered {response.status_code}: {response.text}")
        run = response.json()["run"]
        if run["state"] in TERMINAL:
            ready = time.perf_counter() - t0
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"{run_name} still {run['state']} at the deadline")
        await asyncio.sleep(POLL_SECONDS)
    if run["state"] != "RUN_STATE_SUCCEEDED":
        raise RuntimeError(f"{run_name} ended {run['state']}: {run.get('error')}\n{json.dumps(run, indent=1)}")
    return ready, run


async def bench(args: argparse.Namespace, settings: Settings, outcome: Outcome, deadline: float) -> None:
    platform = EmbeddedPlatform(settings)
    await platform.start()
    try:
        admin = json.loads((settings.data_dir / "bootstrap-admin.json").read_text(encoding="utf-8"))
        channel = secure_channel(f"127.0.0.1:{platform.hosts['identity'].port}", platform.tls["cli"])
        try:
            identity = identity_pb2_grpc.IdentityServiceStub(channel)
            login = await identity.Login(
                identity_pb2.LoginRequest(username=admin["username"], password=admin["password"]), timeout=RPC_TIMEOUT
            )
        finally:
            await channel.close()
        async with httpx.AsyncClient(
            base_url=platform.gateway_url,
            headers={"Authorization": f"Bearer {login.access_token}"},
            timeout=RPC_TIMEOUT,
            limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
        ) as http:
            with_redis = bool(args.redis_admin_url)
            plan = [(args.counts[0], True)] * args.warmup
            plan += [(n, False) for n in args.counts for _ in range(args.repeat)]
            for count, warmup in plan:
                app = f"dtr{uuid.uuid4().hex[:10]}"
                outcome.apps.append(app)
                types = resource_types(count, with_redis)
                t0 = time.perf_counter()
                try:
                    ready, run = await deploy_once(http, app, types, deadline)
                except RuntimeError as exc:
                    took = time.perf_counter() - t0
                    first = str(exc).splitlines()[0]
                    print(f"  N={count:<3}    {app}  FAILED after {took * 1e3:.0f} ms: {first}", flush=True)
                    outcome.notes.append(f"N={count} {app} failed after {took:.1f}s: {first}")
                    outcome.failures.setdefault(count, []).append(took)
                    continue
                sample = analyse(count, app, ready, run)
                tag = "warm-up" if warmup else f"N={count:<3}"
                print(
                    f"  {tag:<8} {app}  ready {sample.ready * 1e3:8.0f} ms  (server {sample.server * 1e3:6.0f})  "
                    f"validate {sample.validate * 1e3:5.0f}  provision span {sample.span * 1e3:6.0f} "
                    f"sum {sample.busy * 1e3:7.0f} overlap<={sample.max_overlap:<2} attempts {sample.attempts:<3} "
                    f"render {sample.render * 1e3:5.0f}  release {sample.release * 1e3:5.0f}",
                    flush=True,
                )
                if sample.attempts != count:
                    outcome.notes.append(f"{app}: {sample.attempts - count} provision retries")
                try:
                    sample.undeploy = await undeploy_once(http, app, deadline)
                except RuntimeError as exc:
                    first = str(exc).splitlines()[0]
                    print(f"  {tag:<8} {app}  undeploy FAILED: {first}", flush=True)
                    outcome.notes.append(f"N={count} {app} undeploy failed: {first}")
                else:
                    print(f"  {tag:<8} {app}  undeploy {sample.undeploy * 1e3:8.0f} ms", flush=True)
                if not warmup:
                    outcome.samples.append(sample)
    finally:
        await platform.stop()


# --------------------------------------------------------------------------- databases and cleanup


def create_platform_database(admin_url: str) -> str:
    import psycopg
    from psycopg import sql

    name = f"innominatus_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(libpq(admin_url), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return make_url(libpq(admin_url)).set(drivername="postgresql+psycopg", database=name).render_as_string(
        hide_password=False
    )


def drop_platform_database(admin_url: str, database_url: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(libpq(admin_url), autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(make_url(database_url).database))
        )


def cleanup_resources(args: argparse.Namespace, apps: list[str]) -> str:
    """Find and drop what the deploys provisioned and undeploy left: names start with a generated
    app name (``dtr<hex>``)."""
    import psycopg
    from psycopg import sql

    databases = roles = users = keys = 0
    if apps:
        patterns = [f"{app}%" for app in apps]  # app names are [a-z0-9]: no LIKE escapes needed
        with psycopg.connect(libpq(args.postgres_admin_url), autocommit=True) as conn:
            for (name,) in conn.execute(
                "SELECT datname FROM pg_database WHERE datname LIKE ANY(%s)", (patterns,)
            ).fetchall():
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
                databases += 1
            for (name,) in conn.execute(
                "SELECT rolname FROM pg_roles WHERE rolname LIKE ANY(%s)", (patterns,)
            ).fetchall():
                conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))
                roles += 1
        if args.redis_admin_url:
            import redis

            client = redis.Redis.from_url(args.redis_admin_url)
            try:
                for raw in client.acl_users():
                    name = raw.decode() if isinstance(raw, bytes) else raw
                    if name.startswith(tuple(apps)):
                        client.acl_deluser(name)
                        users += 1
                for app in apps:
                    for key in client.scan_iter(match=f"{app}*"):
                        client.delete(key)
                        keys += 1
            finally:
                client.close()
    found = databases + roles + users + keys
    return (f"{'LEAKED' if found else 'nothing left behind'}: {databases} databases, {roles} roles, "
            f"{users} Redis ACL users, {keys} Redis keys{' (dropped now)' if found else ''}")


def describe_server(admin_url: str) -> str:
    import psycopg

    with psycopg.connect(libpq(admin_url)) as conn:
        version = conn.execute("SHOW server_version").fetchone()[0]
        fsync = conn.execute("SHOW fsync").fetchone()[0]
        sync = conn.execute("SHOW synchronous_commit").fetchone()[0]
    parsed = make_url(admin_url)
    return f"PostgreSQL {version} at {parsed.host}:{parsed.port or 5432} (fsync={fsync}, synchronous_commit={sync})"


def describe_redis(url: str | None) -> str:
    if not url:
        return "none (all resources are postgres)"
    import redis

    client = redis.Redis.from_url(url)
    try:
        version = client.info("server").get("redis_version", "?")
    finally:
        client.close()
    return f"Redis {version}"


# --------------------------------------------------------------------------- main


def report(args: argparse.Namespace, outcome: Outcome, db_desc: str, redis_desc: str) -> None:
    with_redis = bool(args.redis_admin_url)
    print()
    print("innominatus deploy -> ready")
    print(f"  python:   {sys.version.split()[0]} ({pyplatform.python_implementation()}), httpx {httpx.__version__}")
    print(f"  machine:  {pyplatform.system()} {pyplatform.machine()}, {os.cpu_count()} CPUs")
    print(f"  servers:  {db_desc}; {redis_desc}")
    print(f"  innominatus {md.version('innominatus')}; platform in-process (EmbeddedPlatform), platform DB on PostgreSQL")
    kinds = "alternating postgres, redis (r00 postgres, r01 redis, ...)" if with_redis else "all postgres"
    print(f"  resources: N independent ones per workload, {kinds}; a new application per deploy")
    print(f"  {args.repeat} deploys per N after {args.warmup} warm-up deploy(s); REST gateway, GetRun polled every 20 ms")
    print()
    header = (
        f"{'N':>3} {'mix':<12} {'runs':>4} {'p50 ready ms':>12} {'max ready ms':>12} "
        f"{'p50 span ms':>11} {'p50 sum ms':>10} {'parallelism':>11} {'max overlap':>11} {'p50 undeploy ms':>15}"
    )
    print(header)
    print("-" * len(header))
    for count in args.counts:
        rows = [s for s in outcome.samples if s.count == count]
        failed = outcome.failures.get(count, [])
        if not rows:
            if failed:
                print(f"{count:>3} {'':<12} {f'0/{len(failed)}':>4}  every deploy FAILED (after {min(failed):.1f}-{max(failed):.1f} s)")
            continue
        types = resource_types(count, with_redis)
        mix = f"{types.count('postgres')}pg" + (f"+{types.count('redis')}redis" if types.count("redis") else "")
        ready = sorted(s.ready for s in rows)
        span = sorted(s.span for s in rows)
        busy = sorted(s.busy for s in rows)
        par = statistics.fmean(s.busy / s.span for s in rows if s.span > 0) if any(s.span > 0 for s in rows) else 1.0
        undeploys = sorted(s.undeploy for s in rows if s.undeploy == s.undeploy)  # NaN: it failed
        undeploy = f"{percentile(undeploys, 50) * 1e3:.0f}" if undeploys else "failed"
        print(
            f"{count:>3} {mix:<12} {f'{len(rows)}/{len(rows) + len(failed)}':>4} {percentile(ready, 50) * 1e3:>12.0f} {ready[-1] * 1e3:>12.0f} "
            f"{percentile(span, 50) * 1e3:>11.0f} {percentile(busy, 50) * 1e3:>10.0f} {par:>11.2f} "
            f"{max(s.max_overlap for s in rows):>11} {undeploy:>15}"
        )
    print()
    print("parallelism = mean over runs of (sum of provision step durations / provisioning span);")
    print("max overlap = most provision steps running at the same instant (from the steps' start/end times).")
    for note in outcome.notes:
        print(f"note: {note}")


async def run(args: argparse.Namespace, outcome: Outcome, database_url: str, data_dir: Path) -> None:
    configure_logs("WARNING")
    settings = Settings(
        data_dir=data_dir,
        database_url=database_url,
        policy_dir=POLICY_DIR,
        log_level="WARNING",
        gateway_rate_limit_per_second=0.0,
    )
    deadline = time.monotonic() + args.max_seconds
    await bench(args, settings, outcome, deadline)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--postgres-admin-url", required=True,
        help="libpq URL of a PostgreSQL server the benchmark may create roles and databases on",
    )
    parser.add_argument("--redis-admin-url", default=None, help="Redis URL allowed to run ACL SETUSER / DELUSER")
    parser.add_argument(
        "--database-url", default=None,
        help="platform database (PostgreSQL SQLAlchemy URL); default: a throwaway one on the admin server",
    )
    parser.add_argument("--counts", default="1,5,20", help="resource counts, comma-separated (default 1,5,20)")
    parser.add_argument("--repeat", type=int, default=3, help="deploys per count (default 3)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed deploys first (default 1)")
    parser.add_argument("--max-seconds", type=float, default=600.0, help="give up after this long (default 600)")
    args = parser.parse_args()
    try:
        args.counts = [int(c) for c in args.counts.split(",") if c.strip()]
    except ValueError:
        parser.error("--counts must be comma-separated integers")
    if not args.counts or min(args.counts) < 1 or args.repeat < 1 or args.warmup < 0:
        parser.error("--counts must be >= 1, --repeat >= 1, --warmup >= 0")
    if make_url(args.postgres_admin_url).get_backend_name() != "postgresql":
        parser.error("--postgres-admin-url must be a PostgreSQL URL")
    if args.database_url and make_url(args.database_url).get_backend_name() != "postgresql":
        parser.error("--database-url must be a PostgreSQL URL")

    # Real provisioning: the built-in definitions read these; set them before the platform starts.
    os.environ["INNOMINATUS_POSTGRES_ADMIN_URL"] = libpq(args.postgres_admin_url)
    if args.redis_admin_url:
        os.environ["INNOMINATUS_REDIS_ADMIN_URL"] = args.redis_admin_url
    else:
        os.environ.pop("INNOMINATUS_REDIS_ADMIN_URL", None)
    if not os.environ.get("INNOMINATUS_SECRETS_KEY") and not os.environ.get("INNOMINATUS_SECRETS_KEY_FILE"):
        os.environ["INNOMINATUS_SECRETS_KEY"] = encode_master_key(generate_master_key())
    os.environ.pop("INNOMINATUS_GITOPS_URL_TEMPLATE", None)  # commit to a bare repo in the data dir

    db_desc = describe_server(args.postgres_admin_url)
    redis_desc = describe_redis(args.redis_admin_url)
    owned = None if args.database_url else create_platform_database(args.postgres_admin_url)
    database_url = args.database_url or owned
    outcome = Outcome()
    code = 0
    work = tempfile.TemporaryDirectory(prefix="innominatus-bench-")
    try:

        async def bounded() -> None:
            async with asyncio.timeout(args.max_seconds):
                await run(args, outcome, database_url, Path(work.name) / "data")

        try:
            asyncio.run(bounded())
        except TimeoutError as exc:
            print(f"error: the benchmark did not finish within {args.max_seconds:g}s ({exc})", file=sys.stderr)
            code = 2
        except RuntimeError as exc:
            print(f"error: {exc}", file=sys.stderr)
            code = 1
        if outcome.failures:
            code = code or 1
    finally:
        try:
            print(f"after undeploy: {cleanup_resources(args, outcome.apps)}")
        finally:
            if owned:
                drop_platform_database(args.postgres_admin_url, owned)
            work.cleanup()
    if outcome.samples or outcome.failures:
        report(args, outcome, db_desc, redis_desc)
    sys.exit(code)


if __name__ == "__main__":
    main()
