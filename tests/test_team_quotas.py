"""Applications are owned by teams, and team quotas are policy: specs counts what a team holds
(input.facts) and policies/innominatus/authz.rego decides. The whole platform runs on a fresh
PostgreSQL database with a copy of the shipped policy plus a file of this test's own team
quotas (a site adds its quotas the same way), passed as the platform's policy directory."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url

from innominatus.cli.main import main
from innominatus.identity.v1 import identity_pb2
from innominatus.kit.policy import default_policy_dir
from tests.helpers.mesh import running_platform
from tests.helpers.runs import create_deployment
from tests.helpers.identity import users_in_teams

pytestmark = pytest.mark.postgres

# Small enough to reach with a few deployments; team "web" is not listed: it has the default.
QUOTAS = """\
package innominatus.authz

import rego.v1

team_quotas["payments"] := {"applications": %d, "resources": %d}
"""


def _score(name: str, resources: int = 0, image: str = "nginx:1.27") -> str:
    lines = ["apiVersion: score.dev/v1b1", "metadata:", f"  name: {name}", "containers:", "  main:",
             f"    image: {image}"]
    if resources:
        lines.append("resources:")
        for index in range(resources):
            lines += [f"  host{index}:", "    type: dns"]
    return "\n".join(lines) + "\n"


def _write_quotas(policies: Path, applications: int, resources: int) -> None:
    (policies / "innominatus" / "team_quotas.rego").write_text(QUOTAS % (applications, resources))


@pytest.fixture
async def setup(tmp_path):
    """The platform with payments' quota at 2 applications / 3 resources, teams payments and
    web, and developers pam (payments), wes (web), max (both) and nora (no team)."""
    policies = tmp_path / "policies"
    shutil.copytree(default_policy_dir(), policies, ignore=shutil.ignore_patterns("__pycache__", "*_test.rego"))
    _write_quotas(policies, 2, 3)
    async with running_platform(tmp_path / "data", policy_dir=policies) as platform:
        tokens = await users_in_teams(platform, ("payments", "web"), [
            (username, identity_pb2.ROLE_DEVELOPER, teams)
            for username, teams in (("pam", ["payments"]), ("wes", ["web"]), ("max", ["payments", "web"]), ("nora", []))
        ])
        yield platform, tokens, policies


async def _deploy(platform, token: str, score: str, *, team: str = "", app: str = ""):
    async with platform.http(token) as http:
        return await create_deployment(http, score, team=team, application=app)


def _ok(response) -> dict:
    assert response.status_code == 200, response.text
    return response.json()


def _reasons(response) -> str:
    assert response.status_code == 403, response.text
    problem = response.json()
    assert problem["reason"] == "POLICY_DENIED"
    return problem["metadata"]["reasons"]


def _counts(platform) -> dict[str, int]:
    """Rows of everything a deployment records, across the services' schemas."""
    url = make_url(platform.platform.settings.database_url).set(drivername="postgresql")
    tables = ("specs.deployments", "specs.applications", "specs.workload_versions", "engine.runs",
              "resources.resources")
    with psycopg.connect(url.render_as_string(hide_password=False), autocommit=True) as conn:
        return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in tables}


async def _application(platform, token: str, name: str) -> dict:
    async with platform.http(token) as http:
        response = await http.get(f"/api/v1/applications/{name}")
    return _ok(response)["application"]


async def test_ownership_defaults_to_the_only_team_and_shows_in_the_application(setup):
    platform, tokens, _ = setup
    created = _ok(await _deploy(platform, tokens["pam"], _score("cart")))
    assert created["team"] == "teams/payments"
    assert (await _application(platform, tokens["wes"], "cart"))["team"] == "teams/payments"

    # A user in no team deploys an application no team owns.
    created = _ok(await _deploy(platform, tokens["nora"], _score("solo")))
    assert created.get("team", "") == ""
    assert (await _application(platform, tokens["nora"], "solo")).get("team", "") == ""

    async with platform.http(tokens["admin"]) as http:
        listed = _ok(await http.get("/api/v1/applications"))["applications"]
    assert {a["name"]: a.get("team", "") for a in listed} == {"applications/cart": "teams/payments",
                                                              "applications/solo": ""}


async def test_a_user_in_several_teams_must_name_one_for_a_new_application(setup):
    platform, tokens, _ = setup
    before = _counts(platform)
    response = await _deploy(platform, tokens["max"], _score("ledger"))
    assert response.status_code == 400, response.text
    problem = response.json()
    assert problem["reason"] == "TEAM_REQUIRED"
    assert "several teams (payments, web)" in problem["detail"] and "--team" in problem["detail"]
    assert _counts(platform) == before

    assert _ok(await _deploy(platform, tokens["max"], _score("ledger"), team="teams/web"))["team"] == "teams/web"
    # Redeploying an application needs no team: it keeps its own.
    again = _ok(await _deploy(platform, tokens["max"], _score("ledger", image="nginx:1.28")))
    assert again["team"] == "teams/web"
    assert (await _application(platform, tokens["max"], "ledger"))["team"] == "teams/web"


async def test_an_application_keeps_its_team(setup):
    platform, tokens, _ = setup
    _ok(await _deploy(platform, tokens["max"], _score("ledger"), team="web"))
    before = _counts(platform)
    response = await _deploy(platform, tokens["max"], _score("ledger", image="nginx:1.28"), team="payments")
    assert response.status_code == 400, response.text
    problem = response.json()
    assert problem["reason"] == "APPLICATION_OWNED_BY_OTHER_TEAM"
    assert "owned by team 'web', not 'payments'" in problem["detail"]
    assert "without --team" in problem["detail"] and "--app" in problem["detail"]
    assert _counts(platform) == before
    assert (await _application(platform, tokens["max"], "ledger"))["team"] == "teams/web"


async def test_a_team_at_its_application_quota_cannot_add_one_but_can_redeploy(setup):
    platform, tokens, _ = setup
    for name in ("cart", "shop"):
        _ok(await _deploy(platform, tokens["pam"], _score(name)))

    before = _counts(platform)
    response = await _deploy(platform, tokens["pam"], _score("promo"))
    assert ('team "payments" would own 3 applications, above its quota of 2; remove an application '
            '(innominatus apps delete) or ask to raise team_quotas["payments"]') in _reasons(response)
    # Nothing changed: no application, deployment, stored workload version, run or resource.
    assert _counts(platform) == before
    async with platform.http(tokens["admin"]) as http:
        assert (await http.get("/api/v1/applications/promo")).status_code == 404
        assert (await http.get("/api/v1/workloads/promo/versions")).status_code == 404

    # An application it owns can be deployed again, changed.
    redeployed = _ok(await _deploy(platform, tokens["pam"], _score("cart", image="nginx:1.28")))
    assert redeployed["deployment"]["workloadVersion"] == 2
    # The quota is payments' own: team web (the default quota) is not held back by it.
    _ok(await _deploy(platform, tokens["wes"], _score("promo")))


async def test_raising_a_teams_quota_in_the_policy_lets_it_grow(setup):
    platform, tokens, policies = setup
    for name in ("cart", "shop"):
        _ok(await _deploy(platform, tokens["pam"], _score(name)))
    _reasons(await _deploy(platform, tokens["pam"], _score("promo")))

    _write_quotas(policies, 3, 3)
    # The embedded engine compiles the policy directory again on the next decision (an OPA
    # sidecar would load the changed bundle).
    await platform.platform.policy_engine.close()
    assert _ok(await _deploy(platform, tokens["pam"], _score("promo")))["team"] == "teams/payments"


async def test_the_resource_quota_counts_across_the_teams_applications(setup):
    platform, tokens, _ = setup
    _ok(await _deploy(platform, tokens["pam"], _score("cart", resources=2)))
    # Applications of other teams do not count.
    _ok(await _deploy(platform, tokens["wes"], _score("site", resources=3)))

    before = _counts(platform)
    response = await _deploy(platform, tokens["pam"], _score("shop", resources=2))
    assert ('team "payments" would hold 4 resources, above its quota of 3; declare fewer resources, remove an '
            'application (innominatus apps delete) or ask to raise team_quotas["payments"]') in _reasons(response)
    assert _counts(platform) == before

    _ok(await _deploy(platform, tokens["pam"], _score("shop", resources=1)))  # exactly at the quota
    # A redeploy that holds as many resources as before is fine; one that adds one is not.
    _ok(await _deploy(platform, tokens["pam"], _score("cart", resources=2, image="nginx:1.28")))
    response = await _deploy(platform, tokens["pam"], _score("cart", resources=3, image="nginx:1.29"))
    assert 'team "payments" would hold 4 resources, above its quota of 3' in _reasons(response)
    # Fewer resources are always fine.
    _ok(await _deploy(platform, tokens["pam"], _score("cart", resources=1, image="nginx:1.30")))


async def test_deploying_for_a_team_you_are_not_in_is_refused(setup):
    platform, tokens, _ = setup
    _ok(await _deploy(platform, tokens["pam"], _score("cart")))
    before = _counts(platform)

    # A new application for someone else's team ...
    response = await _deploy(platform, tokens["wes"], _score("blog"), team="payments")
    assert ('user "wes" is not a member of team "payments", which owns (or would own) application "blog"'
            in _reasons(response))
    # ... or an application that team owns.
    response = await _deploy(platform, tokens["wes"], _score("cart", image="nginx:1.28"))
    assert 'user "wes" is not a member of team "payments", which owns (or would own) application "cart"' in (
        _reasons(response))
    # Nor can a user in no team deploy it.
    assert 'user "nora" is not a member' in _reasons(await _deploy(platform, tokens["nora"], _score("cart")))
    assert _counts(platform) == before

    # Admins may deploy for any team.
    assert _ok(await _deploy(platform, tokens["admin"], _score("blog"), team="payments"))["team"] == "teams/payments"


async def test_rollback_is_decided_on_the_same_facts(setup):
    platform, tokens, _ = setup
    first = _ok(await _deploy(platform, tokens["pam"], _score("cart")))
    deployment = first["deployment"]["name"]
    async with platform.http(tokens["wes"]) as http:
        response = await http.post(f"/api/v1/{deployment}:rollback", json={"reason": "not mine"})
    assert 'user "wes" is not a member of team "payments"' in _reasons(response)


async def test_an_invalid_team_name_is_refused_before_the_policy(setup):
    platform, tokens, _ = setup
    response = await _deploy(platform, tokens["admin"], _score("cart"), team="Teams/Payments!")
    assert response.status_code == 400, response.text
    assert response.json()["reason"] == "INVALID_ARGUMENT"
    assert "team" in response.json()["detail"]


async def test_the_cli_deploys_with_team_and_shows_it(setup, tmp_path, monkeypatch, capsys):
    platform, tokens, _ = setup
    monkeypatch.setenv("INNOMINATUS_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("INNOMINATUS_SERVER", platform.gateway)
    monkeypatch.setenv("INNOMINATUS_TOKEN", tokens["max"])
    monkeypatch.chdir(tmp_path)
    score = tmp_path / "score.yaml"
    score.write_text(_score("ledger"))

    # The CLI blocks on HTTP: run it off the event loop the platform serves on.
    assert await asyncio.to_thread(main, ["deploy", "-f", str(score), "--env", "dev"]) == 1
    assert "several teams (payments, web)" in capsys.readouterr().err

    assert await asyncio.to_thread(main, ["deploy", "-f", str(score), "--env", "dev", "--team", "web"]) == 0
    out = capsys.readouterr().out
    assert [line.split() for line in out.splitlines() if line.startswith("Team:")] == [["Team:", "web"]]

    assert await asyncio.to_thread(main, ["apps", "list"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert rows[0][:3] == ["NAME", "TEAM", "WORKLOADS"] and rows[1][:2] == ["ledger", "web"]

    assert await asyncio.to_thread(main, ["apps", "get", "ledger", "-o", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["application"]["team"] == "teams/web"

    monkeypatch.setenv("INNOMINATUS_TOKEN", tokens["wes"])
    score.write_text(_score("blog"))
    assert await asyncio.to_thread(main, ["deploy", "-f", str(score), "--env", "dev", "-t", "teams/payments"]) == 4
    assert 'user "wes" is not a member of team "payments"' in capsys.readouterr().err
