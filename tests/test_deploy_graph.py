"""The deploy run's resource graph, end to end on the real PostgreSQL and Redis scripts/test starts.

- independent resources are provisioned in parallel within one run (their provision steps'
  [start, end] intervals overlap), and a resource whose params use another's outputs starts only
  after that one's step ended;
- a shared resource (same `id`) claimed by two workloads of one application deployed one after
  the other is one instance: the second run does not provision it again and both workloads'
  rendered variables name the same database;
- an unknown resource type fails the deploy with the known types and a did-you-mean;
- a failing provisioner: the step is retried per the provision retry policy (retryable failures)
  or not at all (non-retryable ones), the resource ends FAILED with the reason, the run FAILED
  before anything is rendered, and nothing half-made is left on the PostgreSQL server.

Already covered elsewhere, not repeated here: the provision RPC's did-you-mean for an unknown type
(tests/test_resource_lifecycle.py::test_unknown_type_fails_with_known_types), the postgres driver
dropping the role it made when the database step fails
(tests/test_resource_drivers.py::test_postgres_failure_midway_leaves_no_role_behind), FAILED with
the reason on an unreachable server and the executor's retryable StepFailed
(tests/test_resource_lifecycle.py::test_provisioner_failure_is_failed_with_reason_and_retryable), and
the command provisioner's exit-code mapping
(tests/test_resource_definitions.py::test_command_provisioner_failures).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import uuid
from datetime import datetime, timezone
from itertools import combinations
from pathlib import Path

import psycopg
import pytest
import yaml
from psycopg import sql

from innominatus.identity.v1 import identity_pb2
from innominatus.resources.drivers.base import sql_name
from tests.helpers.runs import deploy, start_deployment, steps_by_id

pytestmark = pytest.mark.postgres


@pytest.fixture
def platform(resource_platform):
    return resource_platform


async def _deploy(http, score: str, *, application: str = "", environment: str = "dev") -> dict:
    """CreateDeployment, then wait for its run, however it ends; the run as the gateway shows it."""
    return (await deploy(http, score, environment, expect=None, timeout=120, application=application))["run"]


def _time(text: str) -> datetime:
    """RFC 3339 as proto JSON writes it (0, 3, 6 or 9 fractional digits, `Z`), to microseconds."""
    head, _, frac = text.removesuffix("Z").partition(".")
    return datetime.fromisoformat(head).replace(microsecond=int((frac + "000000")[:6]), tzinfo=timezone.utc)


def _interval(step: dict) -> tuple[datetime, datetime]:
    return _time(step["startTime"]), _time(step["endTime"])


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


def _container_env(manifest_text: str) -> dict[str, dict]:
    (deployment,) = [d for d in yaml.safe_load_all(manifest_text) if d and d.get("kind") == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e for e in container["env"]}


def _pg(platform, query, params: tuple = ()) -> list[tuple]:
    with psycopg.connect(platform.pg_admin_url, autocommit=True) as conn:
        cur = conn.execute(query, params)
        return cur.fetchall() if cur.description else []


# ---------------------------------------------------------------------------------------------
# (a) parallel provisioning of independent resources; dependents wait

GRAPH_SCORE = """\
apiVersion: score.dev/v1b1
metadata:
  name: {app}
containers:
  api:
    image: registry.example.com/shop/{app}:1.0.0
    variables:
      ORDERS_DB: ${{resources.orders.database}}
      USERS_DB: ${{resources.users.database}}
      AUDIT_DB: ${{resources.audit.database}}
      CACHE_PREFIX: ${{resources.cache.key_prefix}}
      PUBLIC_HOST: ${{resources.web.host}}
      BACKUPS: ${{resources.backups.source}}
resources:
  orders:
    type: postgres
  users:
    type: postgres
  audit:
    type: postgres
  cache:
    type: redis
  web:
    type: dns
  # uses the orders database's outputs: provisioned after it
  backups:
    type: volume
    params:
      database: ${{resources.orders.database}}
"""


async def test_independent_resources_provision_in_parallel_and_dependents_wait(platform):
    app = f"graph{uuid.uuid4().hex[:6]}"
    admin = await platform.login_admin()
    async with platform.http(admin) as http:
        run = await _deploy(http, GRAPH_SCORE.format(app=app))
    assert run["state"] == "RUN_STATE_SUCCEEDED", json.dumps(run, indent=1)
    steps = steps_by_id(run)
    independent = ["provision-audit", "provision-cache", "provision-orders", "provision-users", "provision-web"]
    assert sorted(n for n in steps if n.startswith("provision-")) == sorted([*independent, "provision-backups"])

    # the DAG: independent provisions wait only for validation; backups for the orders database
    for name in independent:
        assert steps[name]["dependsOn"] == ["validate"], steps[name]
    assert sorted(steps["provision-backups"]["dependsOn"]) == ["provision-orders", "validate"]
    # one attempt each, so start/end are those of the only attempt
    assert all(steps[n]["attempts"] == 1 and steps[n]["state"] == "STEP_STATE_SUCCEEDED"
               for n in [*independent, "provision-backups"])

    # parallel: the real provisions (three databases and a Redis user, each a round of statements
    # on a real server) overlap pairwise, and all of them share a moment of running together.
    real = ["provision-audit", "provision-cache", "provision-orders", "provision-users"]
    intervals = {n: _interval(steps[n]) for n in real}
    for a, b in combinations(real, 2):
        (a_start, a_end), (b_start, b_end) = intervals[a], intervals[b]
        assert a_start < b_end and b_start < a_end, f"{a} {intervals[a]} and {b} {intervals[b]} did not overlap"
    assert max(s for s, _ in intervals.values()) < min(e for _, e in intervals.values())

    # dependent: backups started only after the orders database's step had ended
    _, orders_end = intervals["provision-orders"]
    backups_start, _ = _interval(steps["provision-backups"])
    assert backups_start >= orders_end, (steps["provision-orders"], steps["provision-backups"])
    # the databases are three distinct, real ones
    names = {steps[f"provision-{r}"]["outputs"]["outputs"]["database"] for r in ("orders", "users", "audit")}
    assert len(names) == 3
    found = {row[0] for row in _pg(platform, "SELECT datname FROM pg_database WHERE datname = ANY(%s)", (list(names),))}
    assert found == names


ROUTE_SCORE = """\
apiVersion: score.dev/v1b1
metadata:
  name: {app}
containers:
  api:
    image: registry.example.com/shop/{app}:1.0.0
    variables:
      PUBLIC_URL: https://${{resources.route.host}}${{resources.route.path}}
resources:
  web:
    type: dns
  route:
    type: route
    params:
      host: ${{resources.web.host}}
      path: /
      port: 8080
"""


async def test_params_using_another_resources_outputs_get_its_values(platform):
    app = f"route{uuid.uuid4().hex[:6]}"
    admin = await platform.login_admin()
    async with platform.http(admin) as http:
        run = await _deploy(http, ROUTE_SCORE.format(app=app))
    steps = steps_by_id(run)
    assert sorted(steps["provision-route"]["dependsOn"]) == ["provision-web", "validate"]
    assert run["state"] == "RUN_STATE_SUCCEEDED", run.get("error")
    web_host = steps["provision-web"]["outputs"]["outputs"]["host"]
    assert steps["provision-route"]["outputs"]["outputs"]["host"] == web_host


# ---------------------------------------------------------------------------------------------
# (b) one shared instance for two workloads of an application

SHARED_SCORE = """\
apiVersion: score.dev/v1b1
metadata:
  name: {workload}
containers:
  main:
    image: registry.example.com/shop/{workload}:1.0.0
    variables:
      DB_HOST: ${{resources.{ref}.host}}
      DB_NAME: ${{resources.{ref}.database}}
      DB_USER: ${{resources.{ref}.username}}
      DB_PASSWORD: ${{resources.{ref}.password}}
resources:
  {ref}:
    type: postgres
    id: {shared}
"""


async def test_shared_resource_of_two_workloads_is_one_instance(platform):
    await _two_workloads_share_one_instance(platform, "db", "db")


async def test_shared_resource_under_another_name_in_the_second_workload(platform):
    await _two_workloads_share_one_instance(platform, "db", "orders")


async def _two_workloads_share_one_instance(platform, first_ref: str, second_ref: str) -> None:
    app, shared = f"shop{uuid.uuid4().hex[:6]}", f"orders{uuid.uuid4().hex[:6]}"
    admin = await platform.login_admin()
    developer = await platform.create_user(admin, f"dev{uuid.uuid4().hex[:6]}", identity_pb2.ROLE_DEVELOPER)
    async with platform.http(developer) as http:
        # one application, two workloads deployed one after the other; the id makes it one instance
        first = await _deploy(http, SHARED_SCORE.format(workload="api", ref=first_ref, shared=shared),
                              application=app)
        second = await _deploy(http, SHARED_SCORE.format(workload="worker", ref=second_ref, shared=shared),
                               application=app)
    assert first["state"] == second["state"] == "RUN_STATE_SUCCEEDED", (first.get("error"), second.get("error"))
    one, two = steps_by_id(first)[f"provision-{first_ref}"], steps_by_id(second).get(f"provision-{second_ref}")
    assert two is not None, f"the second run has no provision step for {second_ref!r}: {list(steps_by_id(second))}"
    assert one["outputs"]["resource"] == two["outputs"]["resource"]
    assert one["outputs"]["provisioned"] is True
    assert two["outputs"]["provisioned"] is False  # found active and unchanged: not provisioned again
    assert two["outputs"]["outputs"] == one["outputs"]["outputs"]
    assert two["outputs"]["secrets"] == one["outputs"]["secrets"]
    database = one["outputs"]["outputs"]["database"]

    async with platform.http(admin) as http:
        resource = (await http.get(f"/api/v1/{one['outputs']['resource']}")).json()["resource"]
    assert resource["sharedKey"] == f"postgres.default#{shared}"
    assert resource["workloads"] == [f"{app}/api", f"{app}/worker"]
    assert [t["to"] for t in resource["transitions"]].count("RESOURCE_STATE_PROVISIONING") == 1
    assert _pg(platform, "SELECT count(*) FROM pg_database WHERE datname = %s", (database,)) == [(1,)]

    # both workloads' rendered Deployments (the second commit keeps the first workload) point at it
    repo = platform.data_dir / "specs" / "gitops" / "dev.git"
    base = f"environments/dev/{app}/k8s"
    api = _container_env(_git(repo, "show", f"main:{base}/api/deployment.yaml"))
    worker = _container_env(_git(repo, "show", f"main:{base}/worker/deployment.yaml"))
    for env in (api, worker):
        assert env["DB_NAME"]["value"] == database
        assert env["DB_USER"]["value"] == one["outputs"]["outputs"]["username"]
        assert env["DB_HOST"]["value"] == one["outputs"]["outputs"]["host"]
        assert env["DB_PASSWORD"]["valueFrom"]["secretKeyRef"]
    # each workload's Secret is made from the one instance's password reference
    password_ref = one["outputs"]["secrets"]["password"]
    assert password_ref.startswith(f"secret://db/shared/dev/{shared}")
    for workload in ("api", "worker"):
        (external,) = list(yaml.safe_load_all(_git(repo, "show", f"main:{base}/{workload}/secret-refs.yaml")))
        assert external["kind"] == "ExternalSecret"
        assert external["metadata"]["annotations"]["innominatus.dev/secret-refs"].split(",") == [password_ref]


# ---------------------------------------------------------------------------------------------
# (c) an unknown resource type

TYPO_SCORE = """\
apiVersion: score.dev/v1b1
metadata:
  name: {app}
containers:
  api:
    image: registry.example.com/shop/{app}:1.0.0
    variables:
      DB_HOST: ${{resources.db.host}}
resources:
  db:
    type: postgress
"""


async def test_unknown_resource_type_fails_the_deploy_with_known_types_and_a_suggestion(platform):
    app = f"typo{uuid.uuid4().hex[:6]}"
    admin = await platform.login_admin()
    async with platform.http(admin) as http:
        # Score allows custom types, so validation only warns about one close to a known type...
        created = await start_deployment(http, TYPO_SCORE.format(app=app))
        warnings = [f["message"] for f in created.get("findings", [])]
        assert any("unknown resource type 'postgress' (did you mean 'postgres'?)" in w for w in warnings), warnings
        run = await _deploy(http, TYPO_SCORE.format(app=app))
    # ... and the deploy fails at its provision step, which no definition matches: not retried,
    # nothing rendered, the run's error naming the type, a suggestion and every known type
    assert run["state"] == "RUN_STATE_FAILED"
    steps = steps_by_id(run)
    db = steps["provision-db"]
    assert db["state"] == "STEP_STATE_FAILED" and db["attempts"] == 1, db
    assert steps["render"]["state"] != "STEP_STATE_SUCCEEDED"
    assert _nothing_committed(platform, app)
    error = run.get("error", "")
    assert error.startswith("step 'provision-db' failed: ")
    assert "no resource definition for type 'postgress' (did you mean 'postgres'?)" in error, error
    assert "known types: dns, environment, postgres, redis, route, service-port, volume" in error, error


# ---------------------------------------------------------------------------------------------
# (d) provisioner failures: retried per policy, FAILED with the reason, nothing half-made

FLAKY = textwrap.dedent("""\
    import json, sys
    request = json.load(sys.stdin)
    with open(sys.argv[1], "a") as calls:
        calls.write(json.dumps({"action": request["action"], "key": request["resource"]["idempotency_key"]}) + "\\n")
    print("bucket API answered 503 Service Unavailable", file=sys.stderr)
    sys.exit(75)  # EX_TEMPFAIL: retryable
""")

BUCKET_SCORE = """\
apiVersion: score.dev/v1b1
metadata:
  name: {app}
containers:
  api:
    image: registry.example.com/shop/{app}:1.0.0
    variables:
      BUCKET: ${{resources.files.name}}
resources:
  files:
    type: bucket
"""

DB_SCORE = """\
apiVersion: score.dev/v1b1
metadata:
  name: {app}
containers:
  api:
    image: registry.example.com/shop/{app}:1.0.0
    variables:
      DB_HOST: ${{resources.db.host}}
      DB_PASSWORD: ${{resources.db.password}}
resources:
  db:
    type: postgres
"""


def _nothing_committed(platform, app: str) -> bool:
    repo = platform.data_dir / "specs" / "gitops" / "dev.git"
    if not (repo / "HEAD").exists():
        return True
    if not _git(repo, "for-each-ref", "--format=%(refname)").strip():
        return True
    return f"environments/dev/{app}/" not in _git(repo, "log", "--all", "--name-only", "--format=")


async def test_retryable_provisioner_failure_is_retried_per_policy_then_failed(platform, tmp_path):
    admin = await platform.login_admin()
    script, calls = tmp_path / "flaky.py", tmp_path / "calls.jsonl"
    script.write_text(FLAKY)
    definition = {
        "name": "flaky-bucket", "type": "bucket",
        "provisioner": {"kind": "command", "command": [sys.executable, str(script), str(calls)], "timeoutSeconds": 30},
        "outputs": ["name"],
    }
    app = f"flaky{uuid.uuid4().hex[:6]}"
    async with platform.http(admin) as http:
        created = await http.post("/api/v1/resourceDefinitions", json=definition)
        assert created.status_code == 200, created.text
        run = await _deploy(http, BUCKET_SCORE.format(app=app))
        assert run["state"] == "RUN_STATE_FAILED", json.dumps(run, indent=1)
        resource = (await http.get(f"/api/v1/{await _resource_of(http, app, 'files')}")).json()["resource"]
    steps = steps_by_id(run)
    files = steps["provision-files"]

    # every attempt the provision retry policy allows (3), each really ran the provisioner, with
    # the step's one idempotency key
    assert files["state"] == "STEP_STATE_FAILED" and files["attempts"] == 3, files
    invocations = [json.loads(line) for line in calls.read_text().splitlines()]
    assert [c["action"] for c in invocations] == ["provision"] * 3
    assert len({c["key"] for c in invocations}) == 1
    assert "exit code 75" in files["message"] and "503 Service Unavailable" in files["message"], files

    # the resource: FAILED with the provisioner's reason, nothing recorded as made
    assert resource["state"] == "RESOURCE_STATE_FAILED"
    assert "exit code 75" in resource["statusReason"] and "503 Service Unavailable" in resource["statusReason"]
    assert not resource.get("outputs") and not resource.get("secretRefs"), resource
    assert [t["to"] for t in resource["transitions"]].count("RESOURCE_STATE_PROVISIONING") == 3

    # the run failed at that step; nothing was rendered or committed
    assert "provision-files" in run.get("error", ""), run.get("error")
    assert steps["render"]["state"] != "STEP_STATE_SUCCEEDED"
    assert _nothing_committed(platform, app)


async def test_postgres_failure_midway_fails_the_deploy_without_retry_and_leaves_no_role(platform):
    admin = await platform.login_admin()
    app = f"taken{uuid.uuid4().hex[:6]}"
    taken = sql_name(f"{app}-dev-db")
    # someone else's database has the name the driver derives: CREATE ROLE succeeds, CREATE
    # DATABASE cannot; the driver must drop the role again and the failure is not retryable
    _pg(platform, sql.SQL("CREATE DATABASE {}").format(sql.Identifier(taken)))
    try:
        async with platform.http(admin) as http:
            run = await _deploy(http, DB_SCORE.format(app=app))
            assert run["state"] == "RUN_STATE_FAILED", json.dumps(run, indent=1)
            resource = (await http.get(f"/api/v1/{await _resource_of(http, app, 'db')}")).json()["resource"]
        steps = steps_by_id(run)
        db = steps["provision-db"]
        assert db["state"] == "STEP_STATE_FAILED" and db["attempts"] == 1, db  # not retryable: not retried
        assert f"database {taken} already exists" in db["message"], db

        assert resource["state"] == "RESOURCE_STATE_FAILED"
        assert f"database {taken} already exists" in resource["statusReason"]
        assert not resource.get("outputs") and not resource.get("secretRefs"), resource

        assert "provision-db" in run.get("error", ""), run.get("error")
        assert steps["render"]["state"] != "STEP_STATE_SUCCEEDED"
        assert _nothing_committed(platform, app)

        # nothing half-made: no role of that name; the foreign database is still there, not ours
        assert _pg(platform, "SELECT 1 FROM pg_roles WHERE rolname = %s", (taken,)) == []
        assert _pg(platform, "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s", (taken,)) \
            not in ([], [(taken,)])
    finally:
        _pg(platform, sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(taken)))


async def _resource_of(http, app: str, ref: str) -> str:
    listed = (await http.get("/api/v1/resources", params={"application": app})).json().get("resources", [])
    (found,) = [r["name"] for r in listed if r["claim"]["ref"] == ref]
    return found
