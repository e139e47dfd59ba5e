"""Only members of the team owning an application (and admins) may remove it, run golden paths
against it or cancel/retry/pause/resume its runs: specs gives DeleteApplication's policy the owner
(input.facts), the engine asks specs (GetApplicationOwner) for the owner of the application a
RunGoldenPath or StartRun names, or the run a run operation names acts on, and
policies/innominatus/authz.rego denies everyone else. An application no team owns stays open.
The whole platform on a fresh PostgreSQL database, with the shipped policy."""

from __future__ import annotations

import asyncio
import subprocess

import pytest

from innominatus.cli.main import main
from innominatus.engine import models as engine_models
from innominatus.engine.app_owners import ApplicationOwnerUnavailable, OwnerFacts
from innominatus.engine.v1 import engine_pb2
from innominatus.identity.v1 import identity_pb2
from innominatus.kit import context as reqctx
from innominatus.kit.context import Peer, RequestContext, Subject
from innominatus.kit.db import Database
from innominatus.specs.v1 import specs_pb2
from tests.helpers.database import drop_database, fresh_database
from tests.helpers.runs import awaits_approval, deploy, get_run, start_deployment, steps_by_id, wait_for_run
from tests.helpers.identity import users_in_teams

pytestmark = pytest.mark.postgres


def _score(name: str) -> str:
    return (f"apiVersion: score.dev/v1b1\nmetadata:\n  name: {name}\ncontainers:\n  main:\n"
            "    image: nginx:1.27\nresources:\n  host:\n    type: dns\n")


@pytest.fixture
async def setup(platform):
    """Teams payments and web; developers pam (payments), wes (web) and nora (no team), a
    platform engineer pat (no team); pam's application `cart` deployed to dev (team payments)."""
    tokens = await users_in_teams(platform, ("payments", "web"), (
        ("pam", identity_pb2.ROLE_DEVELOPER, ["payments"]),
        ("wes", identity_pb2.ROLE_DEVELOPER, ["web"]),
        ("nora", identity_pb2.ROLE_DEVELOPER, []),
        ("pat", identity_pb2.ROLE_PLATFORM_ENGINEER, []),
    ))
    async with platform.http(tokens["pam"]) as http:
        deployed = await deploy(http, _score("cart"))
    assert deployed["team"] == "teams/payments"
    return platform, tokens


def _denied(response, *fragments: str) -> str:
    assert response.status_code == 403, response.text
    problem = response.json()
    assert problem["reason"] == "POLICY_DENIED", problem
    reasons = problem["metadata"]["reasons"]
    for fragment in fragments:
        assert fragment in reasons, reasons
    return reasons


async def _runs(http, application: str) -> list[dict]:
    listed = await http.get("/api/v1/runs", params={"application": application, "pageSize": 100})
    assert listed.status_code == 200, listed.text
    return listed.json().get("runs", [])


async def _resources(http, application: str) -> list[dict]:
    listed = await http.get("/api/v1/resources", params={"application": application})
    assert listed.status_code == 200, listed.text
    return listed.json().get("resources", [])


async def _environments(http, application: str) -> list[str]:
    got = await http.get(f"/api/v1/applications/{application}")
    assert got.status_code == 200, got.text
    return got.json()["application"].get("environments", [])


async def test_only_members_of_the_owning_team_may_remove_an_application(setup):
    platform, tokens = setup
    async with platform.http(tokens["pam"]) as http:
        runs_before, resources_before = await _runs(http, "cart"), await _resources(http, "cart")
    assert len(runs_before) == 1 and len(resources_before) == 1

    for other in ("wes", "nora", "pat"):  # another team's developer, a developer in no team, a PE
        async with platform.http(tokens[other]) as http:
            response = await http.delete("/api/v1/applications/cart", params={"environment": "dev"})
        _denied(response, f'user "{other}" is not a member of team "payments", which owns application "cart"',
                "only members of teams/payments may remove it")

    async with platform.http(tokens["pam"]) as http:
        # Nothing was started, nothing deprovisioned: the application still runs in dev.
        assert await _runs(http, "cart") == runs_before
        assert [(r["name"], r["state"]) for r in await _resources(http, "cart")] == [
            (r["name"], r["state"]) for r in resources_before]
        assert await _environments(http, "cart") == ["dev"]

        deleted = await http.delete("/api/v1/applications/cart", params={"environment": "dev"})
        assert deleted.status_code == 200, deleted.text
        run = await wait_for_run(http, deleted.json()["run"]["name"])
        assert run["state"] == "RUN_STATE_SUCCEEDED", run
        assert await _environments(http, "cart") == []


async def test_the_cli_says_which_team_owns_the_application(setup, tmp_path, monkeypatch, capsys):
    platform, tokens = setup
    monkeypatch.setenv("INNOMINATUS_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("INNOMINATUS_SERVER", platform.gateway)
    monkeypatch.setenv("INNOMINATUS_TOKEN", tokens["wes"])
    # The CLI blocks on HTTP: run it off the event loop the platform serves on.
    assert await asyncio.to_thread(main, ["apps", "delete", "cart", "--env", "dev"]) != 0
    assert 'user "wes" is not a member of team "payments", which owns application "cart"' in capsys.readouterr().err


async def test_an_admin_may_remove_any_teams_application(setup):
    platform, tokens = setup
    async with platform.http(tokens["admin"]) as http:
        deleted = await http.delete("/api/v1/applications/cart", params={"environment": "dev"})
        assert deleted.status_code == 200, deleted.text
        run = await wait_for_run(http, deleted.json()["run"]["name"])
        assert run["state"] == "RUN_STATE_SUCCEEDED", run
        assert await _environments(http, "cart") == []


async def test_only_members_of_the_owning_team_may_run_golden_paths_against_an_application(setup, tmp_path):
    platform, tokens = setup
    repository = tmp_path / "gitops.git"
    subprocess.run(["git", "init", "-q", "--bare", "--initial-branch=main", str(repository)], check=True)
    async with platform.http(tokens["wes"]) as http:
        runs_before = await _runs(http, "cart")
        undeploy = await http.post("/api/v1/goldenPaths/undeploy-app:run",
                                   json={"params": {"app": "cart", "environment": "dev"}})
        _denied(undeploy, 'user "wes" is not a member of team "payments", which owns application "cart"',
                "only members of teams/payments may run golden paths against it")
        # ... nor by naming the application only as the run's, or only in the `app` param
        # beside an application of their own, or through StartRun
        named = await http.post("/api/v1/goldenPaths/undeploy-app:run",
                                json={"application": "cart", "params": {"app": "cart"}})
        _denied(named, 'which owns application "cart"')
        beside = await http.post("/api/v1/goldenPaths/undeploy-app:run",
                                 json={"application": "mine", "params": {"app": "cart"}})
        _denied(beside, 'which owns application "cart"')
        started = await http.post("/api/v1/runs", json={
            "workflow": "undeploy-app", "inputs": {"app": "cart", "environment": "dev"}})
        _denied(started, "only members of teams/payments may start runs against it")
        deploy_app = await http.post("/api/v1/goldenPaths/deploy-app:run", json={"params": {
            "app": "cart", "image": "registry.example/cart:2.0.0", "gitops_repo": str(repository)}})
        _denied(deploy_app, 'which owns application "cart"')
        assert await _runs(http, "cart") == runs_before and await _runs(http, "mine") == []
        assert await _environments(http, "cart") == ["dev"]

    async with platform.http(tokens["pam"]) as http:
        started = await http.post("/api/v1/goldenPaths/undeploy-app:run",
                                  json={"params": {"app": "cart", "environment": "dev"}})
        assert started.status_code == 200, started.text
        run = await wait_for_run(http, started.json()["run"]["name"])
        assert run["state"] == "RUN_STATE_SUCCEEDED", run
        assert steps_by_id(run)["plan"]["outputs"]["deployed"] is True
        assert await _environments(http, "cart") == []


async def test_an_admin_may_run_golden_paths_against_any_teams_application(setup):
    platform, tokens = setup
    async with platform.http(tokens["admin"]) as http:
        started = await http.post("/api/v1/runs", json={
            "workflow": "undeploy-app", "inputs": {"app": "cart", "environment": "dev"}})
        assert started.status_code == 200, started.text
        run = await wait_for_run(http, started.json()["run"]["name"])
        assert run["state"] == "RUN_STATE_SUCCEEDED", run
        assert await _environments(http, "cart") == []


async def test_applications_no_team_owns_stay_open_to_every_developer(setup, tmp_path):
    platform, tokens = setup
    async with platform.http(tokens["nora"]) as http:  # in no team: the application has none
        deployed = await deploy(http, _score("solo"))
    assert deployed.get("team", "") == ""
    async with platform.http(tokens["wes"]) as http:
        started = await http.post("/api/v1/goldenPaths/undeploy-app:run",
                                  json={"params": {"app": "solo", "environment": "dev"}})
        assert started.status_code == 200, started.text
        run = await wait_for_run(http, started.json()["run"]["name"])
        assert run["state"] == "RUN_STATE_SUCCEEDED", run
        assert await _environments(http, "solo") == []

        # ... and so does removing it, as wes redeploys it for nora's sake first
    async with platform.http(tokens["nora"]) as http:
        await deploy(http, _score("solo"))
    async with platform.http(tokens["wes"]) as http:
        deleted = await http.delete("/api/v1/applications/solo", params={"environment": "dev"})
        assert deleted.status_code == 200, deleted.text
        assert (await wait_for_run(http, deleted.json()["run"]["name"]))["state"] == "RUN_STATE_SUCCEEDED"

        # A golden path naming an application the platform does not know: no owner either.
        repository = tmp_path / "gitops.git"
        subprocess.run(["git", "init", "-q", "--bare", "--initial-branch=main", str(repository)], check=True)
        started = await http.post("/api/v1/goldenPaths/deploy-app:run", json={"params": {
            "app": "fresh", "image": "registry.example/fresh:1.0.0", "gitops_repo": str(repository)}})
        assert started.status_code == 200, started.text


async def test_deploying_keeps_working_for_members_and_admins(setup):
    # The deploy run is started by specs as the deploying user (runs.start through peer specs),
    # with the owner as facts: a member's and an admin's deployments of a team's application run.
    platform, tokens = setup
    for who in ("pam", "admin"):
        async with platform.http(tokens[who]) as http:
            deployed = await deploy(http, _score("cart").replace("nginx:1.27", f"nginx:1.27-{who}"))
        assert deployed["team"] == "teams/payments"


async def test_runs_against_an_application_are_refused_while_specs_cannot_say_who_owns_it(setup, tmp_path):
    platform, tokens = setup
    await platform.stop_service("specs")
    async with platform.http(tokens["pam"]) as http:
        # Even the owning team's member: the engine cannot tell, so it does not guess.
        started = await http.post("/api/v1/goldenPaths/undeploy-app:run",
                                  json={"params": {"app": "cart", "environment": "dev"}})
        assert started.status_code == 403, started.text
        assert started.json()["reason"] == "POLICY_FACTS_UNAVAILABLE", started.text
        assert "RunGoldenPath" in started.json()["detail"]
        started = await http.post("/api/v1/runs", json={
            "workflow": "undeploy-app", "inputs": {"app": "cart", "environment": "dev"}})
        assert started.status_code == 403 and started.json()["reason"] == "POLICY_FACTS_UNAVAILABLE", started.text
        # A run naming no application needs no owner: it starts as before.
        other = await http.post("/api/v1/goldenPaths/onboard-team:run", json={"params": {
            "team": "search", "owner": "search@example.com", "repository": str(tmp_path / "team-search.git")}})
        assert other.status_code == 200, other.text


# -- run operations on a team's application's runs ---------------------------------------------


async def _gated_deploy_run(platform, tokens, who: str = "pam") -> str:
    """A deployment of `cart` to a staging environment that requires approval, started by
    ``who``: its run stays active, waiting at the gate. The run's name."""
    async with platform.http(tokens["admin"]) as root:
        created = await root.post("/api/v1/environments", json={"environment": {
            "name": "staging", "type": "ENVIRONMENT_TYPE_STAGING", "requiresApproval": True,
            "approvers": ["role:platform-engineer"]}})
        assert created.status_code == 200, created.text
    async with platform.http(tokens[who]) as http:
        started = await start_deployment(http, _score("cart"), "staging")
        name = started["run"]["name"]
        await wait_for_run(http, name, awaits_approval("approve"), timeout=60, what="approve waiting")
    return name


async def test_only_members_of_the_owning_team_may_cancel_its_runs(setup):
    platform, tokens = setup
    name = await _gated_deploy_run(platform, tokens)
    async with platform.http(tokens["pam"]) as http:
        before = await get_run(http, name)
    assert before["state"] == "RUN_STATE_RUNNING", before

    for other in ("wes", "nora", "pat"):  # another team's developer, a developer in no team, a PE
        async with platform.http(tokens[other]) as http:
            cancelled = await http.post(f"/api/v1/{name}:cancel", json={})
            _denied(cancelled, f'user "{other}" is not a member of team "payments", which owns application "cart"',
                    "only members of teams/payments may cancel runs of it")
    async with platform.http(tokens["wes"]) as http:
        paused = await http.post(f"/api/v1/{name}:pause", json={})
        _denied(paused, "only members of teams/payments may pause runs of it")

    async with platform.http(tokens["pam"]) as http:
        # Nothing changed: still waiting at the gate, not paused, not asked to stop.
        after = await get_run(http, name)
        assert after["state"] == before["state"] and after.get("paused", False) is False
        assert steps_by_id(after)["approve"]["state"] == "STEP_STATE_WAITING_APPROVAL"

        cancelled = await http.post(f"/api/v1/{name}:cancel", json={})
        assert cancelled.status_code == 200, cancelled.text
        run = await wait_for_run(http, name, timeout=30)
        assert run["state"] == "RUN_STATE_CANCELLED", run

    # A cancelled run may be retried, but only by the team (the state check comes after).
    async with platform.http(tokens["wes"]) as http:
        retried = await http.post(f"/api/v1/{name}:retry", json={})
        _denied(retried, "only members of teams/payments may retry runs of it")
        assert (await get_run(http, name))["state"] == "RUN_STATE_CANCELLED"


async def test_an_admin_may_cancel_any_teams_runs(setup):
    platform, tokens = setup
    name = await _gated_deploy_run(platform, tokens)
    async with platform.http(tokens["admin"]) as http:
        cancelled = await http.post(f"/api/v1/{name}:cancel", json={})
        assert cancelled.status_code == 200, cancelled.text
        run = await wait_for_run(http, name, timeout=30)
        assert run["state"] == "RUN_STATE_CANCELLED", run


async def test_an_unknown_run_is_not_found_for_every_developer(setup):
    platform, tokens = setup
    async with platform.http(tokens["wes"]) as http:
        missing = await http.post("/api/v1/runs/no-such-run:cancel", json={})
    assert missing.status_code == 404, missing.text
    assert missing.json()["reason"] == "RUN_NOT_FOUND"


async def test_run_operations_are_refused_while_specs_cannot_say_who_owns_the_application(setup):
    platform, tokens = setup
    name = await _gated_deploy_run(platform, tokens)
    await platform.stop_service("specs")
    async with platform.http(tokens["pam"]) as http:
        cancelled = await http.post(f"/api/v1/{name}:cancel", json={})
        assert cancelled.status_code == 403, cancelled.text
        assert cancelled.json()["reason"] == "POLICY_FACTS_UNAVAILABLE", cancelled.text
        assert "CancelRun" in cancelled.json()["detail"]
        assert (await get_run(http, name))["state"] == "RUN_STATE_RUNNING"


# -- the engine's provider, against a stand-in for specs ---------------------------------------


class _Specs:
    """GetApplicationOwner of specs: owners by application; ``fail`` makes every call raise."""

    def __init__(self, owners: dict[str, str], fail: bool = False) -> None:
        self.owners, self.fail = owners, fail
        self.calls: list[tuple] = []

    async def GetApplicationOwner(self, request, timeout=None, metadata=()):
        self.calls.append((request.name, reqctx.current(), dict(metadata)))
        if self.fail:
            raise ConnectionError("specs at 10.0.0.7 refused the connection")
        name = request.name.removeprefix("applications/")
        return specs_pb2.GetApplicationOwnerResponse(
            exists=name in self.owners, team=f"teams/{self.owners[name]}" if self.owners.get(name) else "")


@pytest.fixture
def user_request():
    ctx = RequestContext(request_id="req-7", method="/x", peer=Peer("gateway", "spiffe://innominatus.local/service/gateway"),
                         subject=Subject("user", "users/wes", "wes", ("developer",), ("teams/web",)), token="user-token")
    token = reqctx.set_current(ctx)
    yield ctx
    reqctx.reset(token)


async def test_the_provider_asks_for_every_application_a_run_names_as_the_engine(user_request):
    specs = _Specs({"mine": "web", "cart": "payments"})
    facts = await OwnerFacts(None, specs).facts("mine", {"app": "cart", "environment": "dev"})
    assert facts == {"team": "web", "application": "mine", "applications": [
        {"application": "mine", "team": "web"}, {"application": "cart", "team": "payments"}]}
    # As the engine: no request context (so no user token) during the call, the request id kept.
    assert [(name, ctx, meta) for name, ctx, meta in specs.calls] == [
        ("applications/mine", None, {"x-request-id": "req-7"}), ("applications/cart", None, {"x-request-id": "req-7"})]
    assert reqctx.current() is user_request  # restored

    # The same application twice is asked once; unknown and unowned ones have no team.
    specs = _Specs({"solo": ""})
    assert await OwnerFacts(None, specs).facts("solo", {"app": "solo"}) == {
        "team": "", "application": "solo", "applications": [{"application": "solo", "team": ""}]}
    assert (await OwnerFacts(None, specs).facts("", {"app": "ghost"}))["applications"] == [
        {"application": "ghost", "team": ""}]
    # A run naming no application (or only a malformed name, refused by the handler) asks nothing.
    specs = _Specs({})
    assert await OwnerFacts(None, specs).facts("", {"team": "search"}) == {}
    assert await OwnerFacts(None, specs).facts("Not A Name", {"app": 7}) == {}
    assert specs.calls == []


async def test_the_provider_raises_when_specs_does_not_answer(user_request):
    with pytest.raises(ApplicationOwnerUnavailable) as caught:
        await OwnerFacts(None, _Specs({}, fail=True)).facts("", {"app": "cart"})
    assert "'cart'" in str(caught.value)
    assert reqctx.current() is user_request


@pytest.fixture
async def engine_db():
    url = fresh_database("runowners")
    database = Database("engine", url)
    await asyncio.to_thread(database.migrate)
    try:
        yield database
    finally:
        await database.close()
        drop_database(url)


async def test_the_run_operation_provider_reads_the_runs_application(engine_db, user_request):
    runs = engine_models.runs
    rows = [  # id, application, parent
        ("top", "cart", None), ("child", "", "top"), ("grandchild", "", "child"),
        ("own", "ledger", "top"),  # a child naming its own application keeps it
        ("bare", "", None), ("orphan", "", "vanished"), ("loop-a", "", "loop-b"), ("loop-b", "", "loop-a"),
    ]
    async with engine_db.transaction() as session:
        await session.execute(runs.insert(), [
            {"id": run_id, "workflow": "deploy", "application": app, "state": "RUNNING", "parent_run_id": parent}
            for run_id, app, parent in rows])
    specs = _Specs({"cart": "payments", "ledger": "billing"})
    provider = OwnerFacts(None, specs).run_operation

    async with engine_db.transaction():
        facts = {run_id: await provider(engine_pb2.CancelRunRequest(name=f"runs/{run_id}")) for run_id, _, _ in rows}
        assert await provider(engine_pb2.CancelRunRequest(name="runs/ghost")) == {}  # the handler: NOT_FOUND
        assert await provider(engine_pb2.CancelRunRequest(name="runs/a/b")) == {}  # the handler: INVALID_ARGUMENT
    cart = {"team": "payments", "application": "cart", "applications": [{"application": "cart", "team": "payments"}]}
    assert facts["top"] == facts["child"] == facts["grandchild"] == cart
    assert facts["own"] == {"team": "billing", "application": "ledger",
                            "applications": [{"application": "ledger", "team": "billing"}]}
    assert facts["bare"] == facts["orphan"] == facts["loop-a"] == facts["loop-b"] == {}
    # Asked as the engine, once per run naming an application.
    assert [(name, ctx) for name, ctx, _ in specs.calls] == [
        ("applications/cart", None)] * 3 + [("applications/ledger", None)]

    failing = OwnerFacts(None, _Specs({}, fail=True)).run_operation
    async with engine_db.transaction():
        with pytest.raises(ApplicationOwnerUnavailable):
            await failing(engine_pb2.CancelRunRequest(name="runs/top"))
