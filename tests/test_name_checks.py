"""Names of teams and users specs accepts are checked against identity: the team a deployment
names for a new (or unowned) application must exist, and identity's GetTeam answers whether
one does. Environment approvers are checked the same way (tests/test_environments.py covers
them; here only what happens when identity does not answer). The whole platform runs on a
fresh PostgreSQL database."""

from __future__ import annotations

import asyncio
import json

import grpc
import psycopg
import pytest
from sqlalchemy.engine import make_url

from innominatus.cli.main import main
from innominatus.identity.v1 import identity_pb2, identity_pb2_grpc
from innominatus.kit.errors import decode_rpc_error
from tests.helpers.runs import create_deployment

pytestmark = pytest.mark.postgres

PASSWORD = "correct-horse-battery"


def _score(name: str, image: str = "nginx:1.27") -> str:
    return f"apiVersion: score.dev/v1b1\nmetadata:\n  name: {name}\ncontainers:\n  main:\n    image: {image}\n"


@pytest.fixture
async def people(platform):
    """Teams payments (alice) and web (no one); developers alice and nora (no team); tokens by name."""
    admin = await platform.login_admin()
    channel = platform.channel("identity")
    try:
        stub = identity_pb2_grpc.IdentityServiceStub(channel)
        auth = [("authorization", f"Bearer {admin}")]
        for team in ("payments", "web"):
            await stub.CreateTeam(identity_pb2.CreateTeamRequest(team=identity_pb2.Team(name=f"teams/{team}")),
                                  metadata=auth)
        for username, teams in (("alice", ["teams/payments"]), ("nora", [])):
            user = identity_pb2.User(username=username, roles=[identity_pb2.ROLE_DEVELOPER], teams=teams,
                                     password=PASSWORD)
            await stub.CreateUser(identity_pb2.CreateUserRequest(user=user), metadata=auth)
    finally:
        await channel.close()
    return {"admin": admin, "alice": await platform.login("alice", PASSWORD),
            "nora": await platform.login("nora", PASSWORD)}


def _counts(platform) -> dict[str, int]:
    """Rows of what a deployment records."""
    url = make_url(platform.platform.settings.database_url).set(drivername="postgresql")
    tables = ("specs.applications", "specs.deployments", "specs.workload_versions", "engine.runs")
    with psycopg.connect(url.render_as_string(hide_password=False), autocommit=True) as conn:
        return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in tables}


async def _deploy(platform, token: str, name: str, team: str = ""):
    async with platform.http(token) as http:
        return await create_deployment(http, _score(name), team=team)


async def _team_of(platform, token: str, application: str) -> str:
    async with platform.http(token) as http:
        response = await http.get(f"/api/v1/applications/{application}")
    assert response.status_code == 200, response.text
    return response.json()["application"].get("team", "")


def _refused(response, status: int, reason: str) -> dict:
    assert response.status_code == status, response.text
    problem = response.json()
    assert problem["reason"] == reason, problem
    return problem


# -- GetTeam ----------------------------------------------------------------------------------


async def test_get_team_over_rest(platform, people):
    async with platform.http(people["nora"]) as http:  # any authenticated user reads teams
        found = await http.get("/api/v1/teams/payments")
        assert found.status_code == 200, found.text
        team = found.json()["team"]
        assert team["name"] == "teams/payments" and team["members"] == ["users/alice"] and team["createTime"]
        problem = _refused(await http.get("/api/v1/teams/paymnets"), 404, "TEAM_NOT_FOUND")
        assert "teams/paymnets" in problem["detail"] and "innominatus teams list" in problem["detail"]
        assert problem["metadata"]["team"] == "teams/paymnets"
        bad = _refused(await http.get("/api/v1/teams/Pay_Ments"), 400, "INVALID_ARGUMENT")
        assert "teams/<name>" in bad["detail"]
    async with platform.http() as anonymous:
        assert (await anonymous.get("/api/v1/teams/payments")).status_code == 401


async def test_get_team_over_grpc_and_who_may_call_it(platform, people):
    auth = [("authorization", f"Bearer {people['alice']}")]
    request = identity_pb2.GetTeamRequest(name="teams/web")
    # The CLI's tool identity and the specs service may call GetTeam, GetUser and the lists.
    for peer in ("cli", "specs"):
        channel = platform.channel("identity", identity=peer)
        try:
            stub = identity_pb2_grpc.IdentityServiceStub(channel)
            got = await stub.GetTeam(request, metadata=auth, timeout=10)
            assert got.team.name == "teams/web" and list(got.team.members) == []
            user = await stub.GetUser(identity_pb2.GetUserRequest(name="users/nora"), metadata=auth, timeout=10)
            assert user.user.name == "users/nora"
            teams = await stub.ListTeams(identity_pb2.ListTeamsRequest(), metadata=auth, timeout=10)
            assert {t.name for t in teams.teams} == {"teams/payments", "teams/web"}
            users = await stub.ListUsers(identity_pb2.ListUsersRequest(), metadata=auth, timeout=10)
            assert {"users/alice", "users/nora"} <= {u.name for u in users.users}
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.GetTeam(identity_pb2.GetTeamRequest(name="teams/nowhere"), metadata=auth, timeout=10)
            assert caught.value.code() == grpc.StatusCode.NOT_FOUND
            assert decode_rpc_error(caught.value).reason == "TEAM_NOT_FOUND"
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.GetTeam(request, timeout=10)  # a token is still required
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        finally:
            await channel.close()
    # Any other service is refused before a handler runs.
    channel = platform.channel("identity", identity="engine")
    try:
        stub = identity_pb2_grpc.IdentityServiceStub(channel)
        for call in (stub.GetTeam(request, metadata=auth, timeout=10),
                     stub.GetUser(identity_pb2.GetUserRequest(name="users/nora"), metadata=auth, timeout=10)):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call
            assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert decode_rpc_error(caught.value).reason == "PEER_NOT_ALLOWED"
    finally:
        await channel.close()


async def test_teams_get_cli(platform, people, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("INNOMINATUS_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("INNOMINATUS_SERVER", platform.gateway)
    monkeypatch.setenv("INNOMINATUS_TOKEN", people["nora"])
    # The CLI blocks on HTTP: run it off the event loop the platform serves on.
    assert await asyncio.to_thread(main, ["teams", "get", "payments"]) == 0
    out = capsys.readouterr().out
    assert [line.split() for line in out.splitlines() if line.startswith(("Name:", "Members:"))] == [
        ["Name:", "payments"], ["Members:", "alice"]]
    assert await asyncio.to_thread(main, ["teams", "get", "teams/web", "-o", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["team"]["name"] == "teams/web"
    assert await asyncio.to_thread(main, ["teams", "get", "paymnets"]) == 5
    assert "TEAM_NOT_FOUND" in capsys.readouterr().err


# -- the team a deployment names ----------------------------------------------------------------


async def test_a_deployment_naming_an_unknown_team_is_refused_and_records_nothing(platform, people):
    before = _counts(platform)
    # Admins may name any team, so only the name check stops a typo.
    problem = _refused(await _deploy(platform, people["admin"], "cart", team="paymnets"), 400, "TEAM_NOT_FOUND")
    assert "team 'paymnets' does not exist; did you mean 'payments'?" in problem["detail"]
    assert "innominatus teams list" in problem["detail"]
    assert problem["metadata"] == {"team": "teams/paymnets", "suggestion": "teams/payments"}
    assert problem["violations"] == [{"field": "team", "description": "no team 'paymnets'; did you mean 'payments'?"}]
    # Nothing like an existing team: no suggestion.
    problem = _refused(await _deploy(platform, people["admin"], "cart", team="teams/qx"), 400, "TEAM_NOT_FOUND")
    assert "team 'qx' does not exist." in problem["detail"] and "did you mean" not in problem["detail"]
    assert "suggestion" not in problem["metadata"]
    # A name specs accepts but identity never would (teams start with a letter): no such team either.
    _refused(await _deploy(platform, people["admin"], "cart", team="9"), 400, "TEAM_NOT_FOUND")
    # A member mistyping their own team hears the same, not that they are not a member of it:
    # the name is checked before the policy decides.
    _refused(await _deploy(platform, people["alice"], "cart", team="paymnets"), 400, "TEAM_NOT_FOUND")
    assert _counts(platform) == before
    async with platform.http(people["admin"]) as http:
        assert (await http.get("/api/v1/applications/cart")).status_code == 404

    created = await _deploy(platform, people["admin"], "cart", team="payments")
    assert created.status_code == 200, created.text
    assert created.json()["team"] == "teams/payments"
    # Its member redeploys without naming the team.
    again = await _deploy(platform, people["alice"], "cart")
    assert again.status_code == 200 and again.json()["team"] == "teams/payments", again.text


async def test_claiming_an_unowned_application_needs_an_existing_team(platform, people):
    solo = await _deploy(platform, people["nora"], "solo")  # nora is in no team: nobody owns it
    assert solo.status_code == 200 and solo.json().get("team", "") == "", solo.text
    before = _counts(platform)
    _refused(await _deploy(platform, people["admin"], "solo", team="wbe"), 400, "TEAM_NOT_FOUND")
    assert _counts(platform) == before
    assert await _team_of(platform, people["admin"], "solo") == ""
    claimed = await _deploy(platform, people["admin"], "solo", team="web")
    assert claimed.status_code == 200 and claimed.json()["team"] == "teams/web", claimed.text


# -- identity not answering --------------------------------------------------------------------


async def test_names_that_cannot_be_checked_are_refused_while_identity_is_down(platform, people):
    admin = people["admin"]
    first = await _deploy(platform, admin, "cart", team="payments")
    assert first.status_code == 200, first.text
    async with platform.http(admin) as http:
        created = await http.post("/api/v1/environments", json={"environment": {
            "name": "staging", "type": "ENVIRONMENT_TYPE_STAGING", "requiresApproval": True,
            "approvers": ["user:alice"]}})
        assert created.status_code == 200, created.text

    await platform.stop_service("identity")  # tokens stay valid: every service holds the keys
    before = _counts(platform)
    problem = _refused(await _deploy(platform, admin, "shop", team="payments"), 503, "IDENTITY_UNAVAILABLE")
    assert "identity could not be asked whether team 'payments' exists" in problem["detail"]
    assert _counts(platform) == before
    async with platform.http(admin) as http:
        for call in (
            http.post("/api/v1/environments", json={"environment": {
                "name": "uat", "type": "ENVIRONMENT_TYPE_STAGING", "requiresApproval": True,
                "approvers": ["role:admin", "team:payments"]}}),
            http.patch("/api/v1/environments/staging", params={"updateMask": "approvers"},
                       json={"approvers": ["user:alice", "user:nora"]}),
        ):
            problem = _refused(await call, 503, "IDENTITY_UNAVAILABLE")
            assert "identity could not be asked whether" in problem["detail"]
        assert (await http.get("/api/v1/environments/uat")).status_code == 404
        staging = (await http.get("/api/v1/environments/staging")).json()["environment"]
        assert staging["approvers"] == ["user:alice"]

        # What names no user or team needs no answer from identity: roles as approvers,
        # switching a gate off, redeploying an application that already has its team.
        roles = await http.post("/api/v1/environments", json={"environment": {
            "name": "uat", "type": "ENVIRONMENT_TYPE_STAGING", "requiresApproval": True,
            "approvers": ["role:platform-engineer"]}})
        assert roles.status_code == 200, roles.text
        off = await http.patch("/api/v1/environments/staging", params={"updateMask": "requiresApproval"},
                               json={"requiresApproval": False})
        assert off.status_code == 200, off.text
    again = await _deploy(platform, admin, "cart")
    assert again.status_code == 200 and again.json()["team"] == "teams/payments", again.text
