"""Resource instances are owned by the team of the application that claimed them, and a team's
developers may reveal the secrets of their own team's resources (and no others).

The specs service sends the owning team with the claim (ClaimResourcesRequest.team); the
resources service records it on the instance, shows it (Resource.team) and hands it to the
policy as input.facts.resource.team for RevealResourceSecrets (policies/innominatus/authz.rego).
Runs the whole platform with the built-in postgres definition provisioning on the PostgreSQL
scripts/test starts, so a revealed password is a real one.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import json
import time
import uuid

import grpc
import psycopg
import pytest

from innominatus.identity.v1 import identity_pb2
from innominatus.kit.errors import decode_rpc_error
from innominatus.resources.drivers.base import scram_sha256_verifier
from innominatus.resources.v1 import resources_pb2, resources_pb2_grpc
from tests.helpers.mesh import running_platform
from tests.helpers.real_resources import resource_env
from tests.helpers.identity import users_in_teams

pytestmark = pytest.mark.postgres


SCORE = """\
apiVersion: score.dev/v1b1
metadata:
  name: {app}
containers:
  api:
    image: registry.example.com/{app}:1.0.0
    variables:
      DB_PASSWORD: ${{resources.db.password}}
resources:
  db:
    type: postgres
{db_id}"""


@pytest.fixture
async def setup(tmp_path, monkeypatch):
    """The platform, teams payments and web, developers pam (payments), wes (web) and nora (no
    team), and a platform engineer pete (no team)."""
    env = resource_env()
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("INNOMINATUS_GITOPS_URL_TEMPLATE", raising=False)
    async with running_platform(tmp_path / "data") as platform:
        tokens = await users_in_teams(platform, ("payments", "web"), (
            ("pam", identity_pb2.ROLE_DEVELOPER, ["payments"]),
            ("wes", identity_pb2.ROLE_DEVELOPER, ["web"]),
            ("nora", identity_pb2.ROLE_DEVELOPER, []),
            ("pete", identity_pb2.ROLE_PLATFORM_ENGINEER, []),
        ))
        yield platform, tokens, env["INNOMINATUS_POSTGRES_ADMIN_URL"]


async def _db_of(http, created) -> dict:
    """Wait for the run a deployment (or rollback) started; its `db` resource."""
    assert created.status_code == 200, created.text
    run_name = created.json()["run"]["name"]
    deadline = time.monotonic() + 90
    while True:
        run = (await http.get(f"/api/v1/{run_name}")).json()["run"]
        if run["state"] in ("RUN_STATE_SUCCEEDED", "RUN_STATE_FAILED", "RUN_STATE_CANCELLED"):
            break
        assert time.monotonic() < deadline, json.dumps(run, indent=1)
        await asyncio.sleep(0.2)
    assert run["state"] == "RUN_STATE_SUCCEEDED", json.dumps(run, indent=1)
    (name,) = [s["outputs"]["resource"] for s in run["steps"] if s["name"] == "provision-db"]
    resource = (await http.get(f"/api/v1/{name}")).json()["resource"]
    resource["_deployment"] = created.json()["deployment"]["name"]
    return resource


async def _deploy(platform, token: str, app: str, db_id: str = "") -> dict:
    """Deploy ``app`` to dev, wait for its run, and return its `db` resource."""
    score = SCORE.format(app=app, db_id=f"    id: {db_id}\n" if db_id else "")
    async with platform.http(token) as http:
        return await _db_of(http, await http.post("/api/v1/deployments", json={"scoreYaml": score,
                                                                              "environment": "dev"}))


async def _reveal(platform, token: str, name: str):
    async with platform.http(token) as http:
        return await http.post(f"/api/v1/{name}:reveal", json={})


def _denied(response) -> str:
    assert response.status_code == 403, response.text
    problem = response.json()
    assert problem["reason"] == "POLICY_DENIED", problem
    assert "secrets" not in problem
    return problem["metadata"]["reasons"]


def _password_matches(admin_url: str, role: str, password: str) -> bool:
    """The test server trusts loopback connections (any password logs in), so compare the role's
    stored SCRAM verifier with one computed from the password as well."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        (stored,) = conn.execute("SELECT rolpassword FROM pg_authid WHERE rolname = %s", (role,)).fetchone()
    iterations, salt = stored.split("$", 2)[1].split(":")
    expected = scram_sha256_verifier(password, salt=base64.b64decode(salt), iterations=int(iterations))
    return hmac.compare_digest(expected.encode(), stored.encode())


async def test_developers_reveal_their_own_teams_resources_only(setup):
    platform, tokens, admin_url = setup
    shop = f"shop{uuid.uuid4().hex[:6]}"
    db = await _deploy(platform, tokens["pam"], shop)
    assert db["team"] == "teams/payments" and db["application"] == shop
    assert db["environmentType"] == "development"

    # pam's team owns it: she reveals the password, and it is the database role's real one
    revealed = await _reveal(platform, tokens["pam"], db["name"])
    assert revealed.status_code == 200, revealed.text
    password = revealed.json()["secrets"]["password"]
    outputs = db["outputs"]
    assert _password_matches(admin_url, outputs["username"], password)
    assert not _password_matches(admin_url, outputs["username"], password[::-1])
    with psycopg.connect(host=outputs["host"], port=int(outputs["port"]), user=outputs["username"],
                         password=password, dbname=outputs["database"], connect_timeout=10) as conn:
        assert conn.execute("SELECT current_database(), current_user").fetchone() == \
            (outputs["database"], outputs["username"])

    # a developer of another team is refused, told whose it is; nothing of the secret leaks
    refused = await _reveal(platform, tokens["wes"], db["name"])
    reasons = _denied(refused)
    assert f'{db["name"]} belongs to team "payments"; user "wes" is not a member of teams/payments' in reasons
    assert password not in refused.text
    # operators reveal whatever the owner
    for who in ("pete", "admin"):
        answer = await _reveal(platform, tokens[who], db["name"])
        assert answer.status_code == 200, answer.text
        assert answer.json()["secrets"]["password"] == password

    # a rollback claims the resources again, for the same team: pam still reveals, wes still not
    async with platform.http(tokens["pam"]) as http:
        rolled = await _db_of(http, await http.post(f"/api/v1/{db['_deployment']}:rollback",
                                                    json={"reason": "test"}))
    assert rolled["name"] == db["name"] and rolled["team"] == "teams/payments"
    assert (await _reveal(platform, tokens["pam"], db["name"])).status_code == 200
    _denied(await _reveal(platform, tokens["wes"], db["name"]))

    # the ownership grant is reveal only: checking stays with operators
    async with platform.http(tokens["pam"]) as http:
        checked = await http.post(f"/api/v1/{db['name']}:check", json={})
    assert 'role "developer" of user "pam" does not grant "resources.check"' in _denied(checked)

    # a resource that does not exist: NOT_FOUND, as for any reader, not a policy refusal
    for action in ("reveal", "check"):
        async with platform.http(tokens["wes"]) as http:
            missing = await http.post(f"/api/v1/resources/{uuid.uuid4().hex}:{action}", json={})
        assert missing.status_code == 404, missing.text
        assert missing.json()["reason"] == "RESOURCE_NOT_FOUND"


async def test_a_shared_resource_keeps_the_team_of_its_first_claimer(setup):
    platform, tokens, _ = setup
    shared = f"main{uuid.uuid4().hex[:6]}"
    first = await _deploy(platform, tokens["pam"], f"shop{uuid.uuid4().hex[:6]}", db_id=shared)
    blog = f"blog{uuid.uuid4().hex[:6]}"
    second = await _deploy(platform, tokens["wes"], blog, db_id=shared)
    # one instance, claimed by both teams' applications, owned by the first claimer's team
    assert second["name"] == first["name"] and len(second["workloads"]) == 2
    assert second["team"] == "teams/payments"

    assert (await _reveal(platform, tokens["pam"], first["name"])).status_code == 200
    reasons = _denied(await _reveal(platform, tokens["wes"], first["name"]))
    assert f'{first["name"]} belongs to team "payments"; user "wes" is not a member' in reasons

    # wes's own application's resources are his team's: a non-shared one of the same app
    own = await _deploy(platform, tokens["wes"], blog)
    assert own["name"] != first["name"] and own["team"] == "teams/web"
    assert (await _reveal(platform, tokens["wes"], own["name"])).status_code == 200
    _denied(await _reveal(platform, tokens["pam"], own["name"]))


async def test_a_resource_no_team_owns_stays_with_operators(setup):
    platform, tokens, _ = setup
    db = await _deploy(platform, tokens["nora"], f"misc{uuid.uuid4().hex[:6]}")  # nora is in no team
    assert db.get("team", "") == ""

    for who in ("nora", "pam"):
        reasons = _denied(await _reveal(platform, tokens[who], db["name"]))
        assert (f'role "developer" of user "{who}" does not grant "resources.reveal" on {db["name"]}: '
                "no team owns it") in reasons
    for who in ("pete", "admin"):
        answer = await _reveal(platform, tokens[who], db["name"])
        assert answer.status_code == 200, answer.text
        assert answer.json()["secrets"]["password"]


async def test_claims_with_a_bad_environment_type_or_team_are_refused(setup):
    """ClaimResources is the specs service's; what it sends is still checked."""
    platform, tokens, _ = setup
    channel = platform.channel("resources", identity="specs")
    try:
        stub = resources_pb2_grpc.ResourcesServiceStub(channel)
        claim = resources_pb2.ResourceClaim(ref="db", type="postgres")
        for fields, reason, text in (
            ({"environment_type": "prod"}, "INVALID_ENVIRONMENT_TYPE", "use one of development, staging, production"),
            ({"team": "teams/Pay ments"}, "INVALID_TEAM", "is not a team name"),
        ):
            request = resources_pb2.ClaimResourcesRequest(application="shop", environment="dev", workload="shop",
                                                          claims=[claim], **fields)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.ClaimResources(request, metadata=[("authorization", f"Bearer {tokens['admin']}")])
            error = decode_rpc_error(caught.value)
            assert error.code == grpc.StatusCode.INVALID_ARGUMENT and error.reason == reason, error
            assert text in error.message
        # the bare team name is accepted and shown as a resource name
        request = resources_pb2.ClaimResourcesRequest(application="shop", environment="dev", workload="shop",
                                                      claims=[claim], environment_type="Staging", team="web")
        (resource,) = (await stub.ClaimResources(
            request, metadata=[("authorization", f"Bearer {tokens['admin']}")])).resources
        assert (resource.team, resource.environment_type) == ("teams/web", "staging")
    finally:
        await channel.close()
