"""`innominatus deployments list|get|diff A B|rollback TO`: the SpecsService deployment RPCs over
REST and the CLI, against real provisioning (a postgres resource) and the real GitOps repository.

Rollback deploys an earlier set through the engine: a new deployment whose run re-claims the
resources and whose render step commits the earlier set's content again.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import uuid

import pytest

from innominatus.cli.main import main as cli_main
from innominatus.identity.v1 import identity_pb2
from innominatus.specs.deployment_sets import DeploymentSet
from tests.helpers.runs import deploy, steps_by_id

pytestmark = pytest.mark.postgres

SCORE = """\
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


@pytest.fixture
def resource_platform_env(tmp_path):
    # the CLI runs in this process: its credentials file in the test's directory, not the user's
    return {"INNOMINATUS_CONFIG_DIR": str(tmp_path / "config")}


@pytest.fixture
def platform(resource_platform):
    return resource_platform


def _git(repo, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


async def _deploy(http, score: str) -> dict:
    """Deploy to dev and wait; GetDeployment of it (the deployment and its set's summary)."""
    got = await http.get(f"/api/v1/{(await deploy(http, score))['deployment']['name']}")
    assert got.status_code == 200, got.text
    return got.json()


async def _cli(monkeypatch, platform, token: str, *argv: str) -> int:
    monkeypatch.setenv("INNOMINATUS_SERVER", platform.gateway)
    monkeypatch.setenv("INNOMINATUS_TOKEN", token)
    # main() is synchronous (httpx sync client); the platform runs in this event loop.
    return await asyncio.to_thread(cli_main, list(argv))


async def test_list_get_diff_and_rollback_through_the_engine(platform, monkeypatch, capsys):
    app = f"ledger{uuid.uuid4().hex[:6]}"
    v1 = SCORE.format(app=app)
    v2 = v1.replace(":1.0.0", ":1.1.0")
    admin = await platform.login_admin()
    developer = await platform.create_user(admin, f"dev{uuid.uuid4().hex[:6]}", identity_pb2.ROLE_DEVELOPER)
    viewer = await platform.create_user(admin, f"view{uuid.uuid4().hex[:6]}", identity_pb2.ROLE_VIEWER)
    repo = platform.data_dir / "specs" / "gitops" / "dev.git"
    base = f"environments/dev/{app}"
    image = f"/workloads/{app}/containers/api/image"

    async with platform.http(developer) as http:
        first = await _deploy(http, v1)
        second = await _deploy(http, v2)
        d1, d2 = first["deployment"], second["deployment"]

        # list: newest first, filtered by application and environment
        listed = (await http.get("/api/v1/deployments", params={"application": app})).json()["deployments"]
        assert [d["name"] for d in listed] == [d2["name"], d1["name"]]
        assert [d["name"] for d in (await http.get("/api/v1/deployments", params={
            "application": f"applications/{app}", "environment": "dev", "pageSize": 1})).json()["deployments"]] \
            == [d2["name"]]
        assert "deployments" not in (await http.get("/api/v1/deployments", params={
            "application": app, "environment": "prod"})).json()

        # get: the deployment and its set summary
        commits = _git(repo, "log", "--format=%H", "main").split()
        assert len(commits) == 2
        summary = first["deploymentSet"]
        assert summary["hash"] == d1["setHash"] and len(summary["hash"]) == 64
        assert summary["commit"] == d1["gitopsCommit"] == commits[1]
        assert summary["workloads"] == [app] and summary["resources"] == [f"{app}.db"]
        assert "compose.yaml" in summary["artifacts"] and f"k8s/{app}/deployment.yaml" in summary["artifacts"]
        assert "parent" not in summary
        assert second["deploymentSet"]["parent"] == d1["setHash"]
        assert second["deploymentSet"]["commit"] == commits[0]

        # diff: the specs differ exactly in the image; the artifacts follow from it
        diff = await http.get(f"/api/v1/{d1['name']}:diff", params={"other": d2["name"], "specsOnly": "true"})
        assert diff.status_code == 200, diff.text
        body = diff.json()
        assert body["changes"] == [{"op": "OP_CHANGED", "pointer": image,
                                    "oldValue": f"registry.example.com/shop/{app}:1.0.0",
                                    "newValue": f"registry.example.com/shop/{app}:1.1.0"}]
        assert (body["baseSetHash"], body["targetSetHash"]) == (d1["setHash"], d2["setHash"])
        full = (await http.get(f"/api/v1/{d1['name']}:diff", params={"other": d2["name"]})).json()["changes"]
        pointers = [c["pointer"] for c in full]
        assert image in pointers and f"/artifacts/k8s~1{app}~1deployment.yaml" in pointers
        assert all(p == image or p.startswith("/artifacts/") for p in pointers)

        # errors
        missing = await http.get("/api/v1/deployments/nope")
        assert missing.status_code == 404 and missing.json()["reason"] == "DEPLOYMENT_NOT_FOUND"
        missing = await http.post("/api/v1/deployments/nope:rollback", json={})
        assert missing.status_code == 404, missing.text
        across = await http.post(f"/api/v1/{d1['name']}:rollback", json={"application": "someotherapp"})
        assert across.status_code == 400 and across.json()["reason"] == "ROLLBACK_MISMATCH"
        across = await http.post(f"/api/v1/{d1['name']}:rollback", json={"environment": "prod"})
        assert across.status_code == 400

        # a deployment whose run never committed a set cannot be rolled back to (image "." is refused)
        broken = await deploy(http, v1.replace(f"registry.example.com/shop/{app}:1.0.0", "."),
                              expect="RUN_STATE_FAILED")
        uncommitted = await http.post(f"/api/v1/{broken['deployment']['name']}:rollback", json={})
        assert uncommitted.status_code == 400, uncommitted.text
        assert uncommitted.json()["reason"] == "DEPLOYMENT_NOT_COMMITTED"

    async with platform.http(viewer) as http:
        denied = await http.post(f"/api/v1/{d1['name']}:rollback", json={"reason": "no"})
        assert denied.status_code == 403
        assert "deployments.rollback" in denied.text

    # CLI: diff (table), then rollback --wait
    capsys.readouterr()
    assert await _cli(monkeypatch, platform, developer, "deployments", "diff", d1["name"], d2["name"], "--specs-only") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["OP", "POINTER", "OLD", "NEW"]
    assert lines[1].split() == ["changed", image, f"registry.example.com/shop/{app}:1.0.0",
                                f"registry.example.com/shop/{app}:1.1.0"]
    assert len(lines) == 2
    assert await _cli(monkeypatch, platform, developer, "-o", "json", "deployments", "diff", d1["name"], d2["name"]) == 0
    assert image in [c["pointer"] for c in json.loads(capsys.readouterr().out)["changes"]]

    assert await _cli(monkeypatch, platform, developer, "-o", "json", "deployments", "rollback", d1["name"],
                      "--reason", "1.1.0 breaks checkout", "--wait", "--interval", "0.2") == 0
    rolled = json.loads(capsys.readouterr().out)
    assert rolled["run"]["state"] == "RUN_STATE_SUCCEEDED"
    steps = steps_by_id(rolled["run"])
    assert steps["provision-db"]["state"] == "STEP_STATE_SUCCEEDED"  # resources re-claimed and verified
    d3 = rolled["deployment"]
    assert d3["rollbackOf"] == d1["name"] and d3["name"] not in (d1["name"], d2["name"])
    assert d3["setHash"] == d1["setHash"]

    # the GitOps repository: three commits, the newest restores v1's files
    commits = _git(repo, "log", "--format=%H", "main").split()
    assert len(commits) == 3 and commits[0] == d3["gitopsCommit"]
    changed = _git(repo, "diff", "--name-only", d1["gitopsCommit"], commits[0], "--", base).split()
    assert changed == [f"{base}/deployment-set.json"]  # only who/why/parent differ
    assert _git(repo, "show", f"{commits[0]}:{base}/k8s/{app}/deployment.yaml") == \
        _git(repo, "show", f"{d1['gitopsCommit']}:{base}/k8s/{app}/deployment.yaml")
    restored = DeploymentSet.from_json(_git(repo, "show", f"{commits[0]}:{base}/deployment-set.json"))
    assert restored.content_hash == d1["setHash"] and restored.parent == d2["setHash"]
    message = _git(repo, "log", "-1", "--format=%B", commits[0])
    assert f"rollback to {d1['setHash'][:12]}" in message and "1.1.0 breaks checkout" in message
    assert d3["creator"] in message

    assert await _cli(monkeypatch, platform, developer, "deployments", "list", "--app", app) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert [r[0] for r in rows[1:]][:1] == [d3["name"].removeprefix("deployments/")]
    assert await _cli(monkeypatch, platform, developer, "deployments", "get", d3["name"]) == 0
    assert d1["setHash"] in capsys.readouterr().out
    assert await _cli(monkeypatch, platform, developer, "deployments", "get", "nope") == 5
    assert await _cli(monkeypatch, platform, viewer, "deployments", "rollback", d1["name"]) == 4
    assert await _cli(monkeypatch, platform, viewer, "deployments", "list", "--app", app) == 0  # a read
