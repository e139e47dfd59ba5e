"""Only members of the team owning an application (and admins) may remove it or run golden paths
against it: specs gives DeleteApplication's policy the owner (input.facts), the engine asks specs
(GetApplicationOwner) for the owner of the application a RunGoldenPath or StartRun names, and
policies/innominatus/authz.rego denies everyone else. An application no team owns stays open.
The whole platform on a fresh PostgreSQL database, with the shipped policy."""

from __future__ import annotations

import asyncio
import subprocess

import pytest

from innominatus.cli.main import main
from innominatus.engine.app_owners import ApplicationOwnerUnavailable, OwnerFacts
from innominatus.identity.v1 import identity_pb2, identity_pb2_grpc
from innominatus.kit import context as reqctx
from innominatus.kit.context import Peer, RequestContext, Subject
from innominatus.specs.v1 import specs_pb2
from tests.helpers.runs import deploy, steps_by_id, wait_for_run

pytestmark = pytest.mark.postgres


def _score(name: str) -> str:
    return (f"apiVersion: score.dev/v1b1\nmetadata:\n  name: {name}\ncontainers:\n  main:\n"
            "    image: nginx:1.27\nresources:\n  host:\n    type: dns\n")


@pytest.fixture
async def setup(platform):
    """Teams payments and web; developers pam (payments), wes (web) and nora (no team), a
    platform engineer pat (no team); pam's application `cart` deployed to dev (team payments)."""
    admin = await platform.login_admin()
    auth = [("authorization", f"Bearer {admin}")]
    channel = platform.channel("identity")
    try:
        stub = identity_pb2_grpc.IdentityServiceStub(channel)
        for team in ("payments", "web"):
            await stub.CreateTeam(identity_pb2.CreateTeamRequest(team=identity_pb2.Team(name=f"teams/{team}")),
                                  metadata=auth)
        for username, role, teams in (("pam", identity_pb2.ROLE_DEVELOPER, ["payments"]),
                                      ("wes", identity_pb2.ROLE_DEVELOPER, ["web"]),
                                      ("nora", identity_pb2.ROLE_DEVELOPER, []),
                                      ("pat", identity_pb2.ROLE_PLATFORM_ENGINEER, [])):
            user = identity_pb2.User(username=username, roles=[role], teams=[f"teams/{t}" for t in teams],
                                     password="correct-horse-battery")
            await stub.CreateUser(identity_pb2.CreateUserRequest(user=user), metadata=auth)
    finally:
        await channel.close()
    tokens = {"admin": admin}
    for username in ("pam", "wes", "nora", "pat"):
        tokens[username] = await platform.login(username, "correct-horse-battery")
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
