"""`innominatus deploy` of a workload with a postgres and a redis resource, end to end.

The deploy run provisions each claimed resource (engine `resource` steps, visible in the run's
DAG), then the specs service renders the workload with the real outputs into a deployment set
and commits it to the environment's GitOps repository. Runs against the real PostgreSQL and
Redis that scripts/test starts (their URLs are the built-in definitions' admin URLs).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
import uuid
from pathlib import Path

import psycopg
import pytest
import yaml

from innominatus.identity.v1 import identity_pb2
from innominatus.specs.deployment_sets import DeploymentSet, diff_sets
from tests.helpers.runs import deploy, steps_by_id

pytestmark = pytest.mark.postgres

SCORE = (Path(__file__).parent / "fixtures" / "score" / "orders-real.yaml").read_text()


@pytest.fixture
def platform(resource_platform):
    return resource_platform


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


def _env(manifest_text: str) -> dict:
    (deployment,) = [d for d in yaml.safe_load_all(manifest_text) if d and d.get("kind") == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e for e in container["env"]}, container


async def test_deploy_provisions_real_resources_and_commits_a_deployment_set(platform):
    import redis.asyncio as aioredis

    app = f"orders{uuid.uuid4().hex[:6]}"
    score = SCORE.replace("name: orders", f"name: {app}")
    admin = await platform.login_admin()
    developer = await platform.create_user(admin, f"dev{uuid.uuid4().hex[:6]}", identity_pb2.ROLE_DEVELOPER)

    async with platform.http(developer) as http:
        first = await deploy(http, score)  # as `innominatus deploy --wait`: GetRun polled until the run ends
    run = first["run"]
    steps = steps_by_id(run)
    assert list(steps) == ["validate", "provision-cache", "provision-db", "render", "release"]
    assert all(s["state"] == "STEP_STATE_SUCCEEDED" for s in steps.values())
    assert {s["type"] for n, s in steps.items() if n.startswith("provision-")} == {"resource"}
    db_out = steps["provision-db"]["outputs"]
    cache_out = steps["provision-cache"]["outputs"]
    assert db_out["secrets"]["password"].startswith("secret://")

    # the GitOps repository of dev: one commit, whose Deployment gets the real values
    repo = platform.data_dir / "specs" / "gitops" / "dev.git"
    commits = _git(repo, "log", "--format=%H", "main").split()
    assert len(commits) == 1
    assert commits[0] == steps["render"]["outputs"]["commit"]
    base = f"environments/dev/{app}"
    manifest = _git(repo, "show", f"main:{base}/k8s/{app}/deployment.yaml")
    env, container = _env(manifest)
    assert container["image"] == "registry.example.com/shop/orders:1.0.0"
    assert env["DB_HOST"]["value"] == db_out["outputs"]["host"]
    assert env["DB_PORT"]["value"] == str(int(db_out["outputs"]["port"]))
    assert env["DB_USER"]["value"] == db_out["outputs"]["username"]
    assert env["REDIS_USER"]["value"] == cache_out["outputs"]["username"]
    assert env["DB_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == f"{app}-secrets"
    assert env["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"]
    stored = DeploymentSet.from_json(_git(repo, "show", f"main:{base}/deployment-set.json"))
    assert stored.content_hash == steps["render"]["outputs"]["set_hash"]

    async with platform.http(developer) as http:
        got = (await http.get(f"/api/v1/applications/{app}")).json()
    assert got["deployments"][0]["setHash"] == stored.content_hash
    assert got["deployments"][0]["gitopsCommit"] == commits[0]

    # reveal the secrets (admin) and look for them everywhere they must not be
    async with platform.http(admin) as http:
        revealed = {}
        for ref, out in (("db", db_out), ("cache", cache_out)):
            rid = out["resource"].removeprefix("resources/")
            answer = await http.post(f"/api/v1/resources/{rid}:reveal", json={})
            assert answer.status_code == 200, answer.text
            revealed[ref] = answer.json()["secrets"]
        passwords = [revealed["db"]["password"], revealed["cache"]["password"]]
        assert all(len(p) >= 16 for p in passwords)
        files = _git(repo, "ls-tree", "-r", "--name-only", "main").split()
        everything = _git(repo, "log", "-p", "main") + "".join(_git(repo, "show", f"main:{f}") for f in files)
        run_text = json.dumps(run)
        for password in passwords:
            assert password not in everything
            assert password not in run_text
        # the audit chain: wait for the finalize record, then search every record
        deadline = time.monotonic() + 30
        while True:
            records = (await http.get("/api/v1/audit/records", params={"pageSize": 500})).json().get("records", [])
            text = json.dumps(records)
            if "FinalizeDeployment" in text:
                break
            assert time.monotonic() < deadline, "the FinalizeDeployment record never reached the audit chain"
            await asyncio.sleep(0.3)
        for password in passwords:
            assert password not in text

    # the revealed credentials work, and reach the workload's own database
    conninfo = dict(host=db_out["outputs"]["host"], port=int(db_out["outputs"]["port"]),
                    user=db_out["outputs"]["username"], password=revealed["db"]["password"],
                    dbname=db_out["outputs"]["database"])
    async with await psycopg.AsyncConnection.connect(**conninfo, connect_timeout=10) as conn:
        row = await (await conn.execute("select current_database(), current_user")).fetchone()
    assert row == (db_out["outputs"]["database"], db_out["outputs"]["username"])

    # the Redis user is confined to its key prefix
    prefix = cache_out["outputs"]["key_prefix"]
    r = aioredis.from_url(revealed["cache"]["url"])
    try:
        await r.set(f"{prefix}k", "v")
        assert await r.get(f"{prefix}k") == b"v"
        with pytest.raises(Exception, match="(?i)noperm|permission"):
            await r.set("someone-else:k", "v")
    finally:
        await r.aclose()

    # a second deploy with a new image: a second commit, and the sets' diff names the image
    async with platform.http(developer) as http:
        second = await deploy(http, score.replace("orders:1.0.0", "orders:1.1.0"))
    steps2 = steps_by_id(second["run"])
    commits = _git(repo, "log", "--format=%H", "main").split()
    assert len(commits) == 2 and commits[0] == steps2["render"]["outputs"]["commit"]
    newer = DeploymentSet.from_json(_git(repo, "show", f"main:{base}/deployment-set.json"))
    assert newer.parent == stored.content_hash
    changes = {c.pointer: c for c in diff_sets(stored, newer)}
    image = f"/workloads/{app}/containers/api/image"
    assert image in changes
    assert (changes[image].old, changes[image].new) == ("registry.example.com/shop/orders:1.0.0",
                                                         "registry.example.com/shop/orders:1.1.0")
    assert not [p for p in changes if p.startswith("/resources/")]
