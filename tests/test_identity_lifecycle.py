"""Offboarding and role changes: UpdateUser (disable, enable, roles, display name) and
RemoveTeamMember, over real gRPC and the REST gateway on the whole platform (fresh
PostgreSQL), with the policy deciding who may, the audit chain recording every attempt, and
specs refusing a disabled user as an environment approver."""

from __future__ import annotations

import asyncio
import json

import grpc
import pytest

from innominatus.cli.main import main
from innominatus.common.v1 import audit_event_pb2
from innominatus.identity.v1 import identity_pb2
from innominatus.kit.errors import decode_rpc_error
from tests.helpers.audit import list_records
from tests.helpers.polling import eventually
from tests.helpers.identity import PASSWORD, Role, auth, refused

pytestmark = pytest.mark.postgres


# -- disable / enable --------------------------------------------------------------------------


async def test_disabling_stops_password_and_api_key_login_at_once_and_enabling_restores_them(
        platform, identity, admin):
    await identity.create(admin, "bob")
    bob = (await identity.login(username="bob", password=PASSWORD)).access_token
    key = (await identity.stub.CreateApiKey(identity_pb2.CreateApiKeyRequest(display_name="laptop"),
                                            metadata=auth(bob))).key
    before = await identity.get(admin, "bob")
    assert before.etag and not before.disabled and not before.HasField("update_time")

    disabled = await identity.update(admin, "bob", ["disabled"], disabled=True)
    assert disabled.disabled and disabled.HasField("update_time")
    assert disabled.etag != before.etag
    assert list(disabled.roles) == [Role.ROLE_DEVELOPER]  # only the masked field changed

    for credentials in ({"username": "bob", "password": PASSWORD}, {"api_key": key}):
        code, error = await refused(identity.login(**credentials))
        assert code == grpc.StatusCode.UNAUTHENTICATED and error.reason == "USER_DISABLED", credentials
        assert "disabled" in error.message and "administrator" in error.message
    # The known bound (docs/operations.md): a token issued before stays valid until it expires.
    me = await identity.stub.GetCurrentUser(identity_pb2.GetCurrentUserRequest(), metadata=auth(bob))
    assert me.user.username == "bob" and me.user.disabled

    enabled = await identity.update(admin, "bob", ["disabled"], disabled=False)
    assert not enabled.disabled
    assert (await identity.login(username="bob", password=PASSWORD)).user.username == "bob"
    assert (await identity.login(api_key=key)).user.username == "bob"


async def test_an_admin_cannot_disable_themselves_or_the_last_enabled_admin(platform, identity, admin):
    code, error = await refused(identity.update(admin, "admin", ["disabled"], disabled=True))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and error.reason == "CANNOT_DISABLE_SELF"
    assert "ask another admin" in error.message
    code, error = await refused(identity.update(admin, "admin", ["roles"], roles=[Role.ROLE_DEVELOPER]))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and error.reason == "LAST_ADMIN"
    assert "last enabled admin" in error.message and "set-roles" in error.message
    assert list((await identity.get(admin, "admin")).roles) == [Role.ROLE_ADMIN]  # nothing changed

    # With a second admin, the first may step down; the second is then the last one.
    await identity.create(admin, "ada", Role.ROLE_ADMIN)
    ada = (await identity.login(username="ada", password=PASSWORD)).access_token
    stepped_down = await identity.update(admin, "admin", ["roles"], roles=[Role.ROLE_PLATFORM_ENGINEER])
    assert list(stepped_down.roles) == [Role.ROLE_PLATFORM_ENGINEER]
    # The old token still says admin (until it expires), so the policy lets it through; the
    # service still refuses to disable the last enabled admin.
    code, error = await refused(identity.update(admin, "ada", ["disabled"], disabled=True))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and error.reason == "LAST_ADMIN"
    assert "disabling it" in error.message
    code, error = await refused(identity.update(ada, "ada", ["disabled"], disabled=True))
    assert error.reason == "CANNOT_DISABLE_SELF"
    # A disabled admin does not count as one that remains.
    await identity.update(ada, "admin", ["roles"], roles=[Role.ROLE_ADMIN])
    await identity.update(ada, "admin", ["disabled"], disabled=True)
    code, error = await refused(identity.update(ada, "ada", ["roles"], roles=[Role.ROLE_VIEWER]))
    assert error.reason == "LAST_ADMIN" and "removing its admin role" in error.message
    # Disabling another admin while one remains is fine.
    await identity.update(ada, "admin", ["disabled"], disabled=False)
    assert (await identity.update(ada, "admin", ["disabled"], disabled=True)).disabled


async def test_two_admins_disabling_each_other_at_once_leave_one_enabled(platform, identity, admin):
    await identity.create(admin, "ada", Role.ROLE_ADMIN)
    ada = (await identity.login(username="ada", password=PASSWORD)).access_token
    for _ in range(3):
        outcomes = await asyncio.gather(
            identity.update(admin, "ada", ["disabled"], disabled=True),
            identity.update(ada, "admin", ["disabled"], disabled=True),
            return_exceptions=True)
        refused = [o for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
        assert len(refused) == 1, outcomes
        # Refused as the last admin, or (when the other's disable committed first) as a disabled
        # caller: either way exactly one admin stays enabled.
        assert decode_rpc_error(refused[0]).reason in ("LAST_ADMIN", "USER_DISABLED")
        users = [await identity.get(admin, name) for name in ("admin", "ada")]
        assert sorted(u.disabled for u in users) == [False, True]
        # Re-enable whoever was disabled, from the one still enabled (their token is still valid).
        survivor = admin if not users[0].disabled else ada
        await identity.update(survivor, next(u.username for u in users if u.disabled), ["disabled"], disabled=False)


# -- roles, display name, what cannot change ------------------------------------------------------


async def test_set_roles_apply_from_the_next_login(platform, identity, admin):
    await identity.create(admin, "carol")
    old = (await identity.login(username="carol", password=PASSWORD)).access_token
    updated = await identity.update(admin, "carol", ["roles", "display_name"],
                                    roles=[Role.ROLE_VIEWER, Role.ROLE_VIEWER], display_name="Carol C.")
    assert list(updated.roles) == [Role.ROLE_VIEWER] and updated.display_name == "Carol C."

    new = await identity.login(username="carol", password=PASSWORD)
    assert list(new.user.roles) == [Role.ROLE_VIEWER]
    subject = await platform.platform.hosts["identity"].runtime.verifier.verify(new.access_token)
    assert subject.roles == ("viewer",)
    # A viewer changes nothing: the new token is refused what the old one (developer) may do.
    code, error = await refused(identity.stub.CreateApiKey(identity_pb2.CreateApiKeyRequest(),
                                                            metadata=auth(new.access_token)))
    assert code == grpc.StatusCode.PERMISSION_DENIED and "apikeys.create" in error.message
    await identity.stub.CreateApiKey(identity_pb2.CreateApiKeyRequest(), metadata=auth(old))

    # "*" replaces all three fields.
    everything = await identity.update(admin, "carol", ["*"], roles=[Role.ROLE_DEVELOPER], disabled=False)
    assert list(everything.roles) == [Role.ROLE_DEVELOPER] and everything.display_name == ""


async def test_bad_updates_are_refused_and_change_nothing(platform, identity, admin):
    await identity.create(admin, "dave")
    before = await identity.get(admin, "dave")

    code, error = await refused(identity.update(admin, "dave", ["roles"], roles=[Role.ROLE_ADMIN, 99]))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert [(v.field, v.description) for v in error.violations] == [
        ("user.roles[1]", "must be one of ROLE_ADMIN, ROLE_PLATFORM_ENGINEER, ROLE_DEVELOPER, ROLE_VIEWER")]
    code, error = await refused(identity.update(admin, "dave", ["roles"]))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "disable them instead" in error.violations[0].description
    code, error = await refused(identity.update(admin, "dave", []))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "update_mask is required" in error.message
    code, error = await refused(identity.update(admin, "dave", ["teams", "password"], password="x" * 20))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "remove-member" in error.violations[0].description and "password" in error.violations[1].description
    code, error = await refused(identity.update(admin, "dave", ["display_name"], display_name="x" * 300))
    assert [v.field for v in error.violations] == ["user.display_name"]
    code, error = await refused(identity.update(admin, "dave", ["disabled"], disabled=True, etag="0" * 16))
    assert code == grpc.StatusCode.ABORTED and error.reason == "ETAG_MISMATCH"
    assert error.metadata["current_etag"] == before.etag
    assert await identity.get(admin, "dave") == before

    # The right etag goes through; reusing it afterwards does not.
    await identity.update(admin, "dave", ["disabled"], disabled=True, etag=before.etag)
    code, error = await refused(identity.update(admin, "dave", ["disabled"], disabled=False, etag=before.etag))
    assert error.reason == "ETAG_MISMATCH"

    code, error = await refused(identity.update(admin, "ghost", ["disabled"], disabled=True))
    assert code == grpc.StatusCode.NOT_FOUND and error.reason == "USER_NOT_FOUND"
    assert "users/ghost" in error.message and "innominatus users list" in error.message
    code, error = await refused(identity.update(admin, "Not A Name", ["disabled"], disabled=True))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and [v.field for v in error.violations] == ["user.name"]


# -- team membership ------------------------------------------------------------------------------


async def test_removing_a_member_drops_the_team_from_the_next_token(platform, identity, admin):
    await identity.stub.CreateTeam(identity_pb2.CreateTeamRequest(team=identity_pb2.Team(name="teams/payments")),
                                   metadata=auth(admin))
    await identity.create(admin, "erin", teams=["teams/payments"])
    await identity.create(admin, "finn", teams=["teams/payments"])
    verifier = platform.platform.hosts["identity"].runtime.verifier
    token = (await identity.login(username="erin", password=PASSWORD)).access_token
    assert (await verifier.verify(token)).teams == ("teams/payments",)

    team = await identity.remove_member(admin, "teams/payments", "users/erin")
    assert list(team.members) == ["users/finn"]
    login = await identity.login(username="erin", password=PASSWORD)
    assert list(login.user.teams) == []
    assert (await verifier.verify(login.access_token)).teams == ()
    # Idempotent, like AddTeamMember: a non-member is "removed" without error.
    again = await identity.remove_member(admin, "payments", "erin")
    assert list(again.members) == ["users/finn"]

    code, error = await refused(identity.remove_member(admin, "teams/paymnets", "users/finn"))
    assert code == grpc.StatusCode.NOT_FOUND and error.reason == "TEAM_NOT_FOUND"
    assert "innominatus teams list" in error.message
    code, error = await refused(identity.remove_member(admin, "teams/payments", "users/ghost"))
    assert code == grpc.StatusCode.NOT_FOUND and error.reason == "USER_NOT_FOUND"
    code, error = await refused(identity.remove_member(admin, "teams/No!", "users/x!"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and {v.field for v in error.violations} == {"team", "user"}


# -- who may ----------------------------------------------------------------------------------------


async def test_policy_keeps_user_changes_with_admins_and_membership_with_maintainers(platform, identity, admin):
    await identity.stub.CreateTeam(identity_pb2.CreateTeamRequest(team=identity_pb2.Team(name="teams/web")),
                                   metadata=auth(admin))
    await identity.create(admin, "gina", teams=["teams/web"])
    await identity.create(admin, "pete", Role.ROLE_PLATFORM_ENGINEER, teams=["teams/web"])
    gina = (await identity.login(username="gina", password=PASSWORD)).access_token
    pete = (await identity.login(username="pete", password=PASSWORD)).access_token

    for token, role in ((gina, "developer"), (pete, "platform-engineer")):
        code, error = await refused(identity.update(token, "gina", ["roles"], roles=[Role.ROLE_ADMIN]))
        assert code == grpc.StatusCode.PERMISSION_DENIED and error.reason == "POLICY_DENIED"
        assert f'role "{role}"' in error.message and "users.update" in error.message
    code, error = await refused(identity.remove_member(gina, "teams/web", "users/pete"))
    assert code == grpc.StatusCode.PERMISSION_DENIED and "teams.update" in error.message
    assert list((await identity.get(admin, "gina")).roles) == [Role.ROLE_DEVELOPER]

    # Platform engineers may add members, so they may remove them too.
    assert list((await identity.remove_member(pete, "teams/web", "users/gina")).members) == ["users/pete"]


async def test_every_attempt_is_audited(platform, identity, admin):
    await identity.create(admin, "hank")
    hank = (await identity.login(username="hank", password=PASSWORD)).access_token
    await identity.update(admin, "hank", ["disabled"], disabled=True)
    await refused(identity.update(admin, "admin", ["disabled"], disabled=True))
    await refused(identity.update(hank, "hank", ["disabled"], disabled=False))

    async def three():
        records = await list_records(platform, admin, method="UpdateUser")
        return records if len(records) >= 3 else None

    events = [r.event for r in await eventually(three)]
    by_outcome = {e.outcome: e for e in events}
    ok = by_outcome[audit_event_pb2.AUDIT_OUTCOME_SUCCEEDED]
    assert (ok.actor, ok.resource_type, ok.resource_name, ok.permission) == ("admin", "user", "users/hank",
                                                                             "users.update")
    assert ok.details["user"]["disabled"] is True and ok.decision_id
    failed = by_outcome[audit_event_pb2.AUDIT_OUTCOME_FAILED]
    assert failed.resource_name == "users/admin" and any("CANNOT_DISABLE_SELF" in r for r in failed.reasons)
    denied = by_outcome[audit_event_pb2.AUDIT_OUTCOME_DENIED]
    assert denied.actor == "hank" and any("users.update" in r for r in denied.reasons)

    await identity.stub.CreateTeam(identity_pb2.CreateTeamRequest(team=identity_pb2.Team(name="teams/ops")),
                                   metadata=auth(admin))
    await identity.remove_member(admin, "teams/ops", "users/hank")
    removed = await eventually(lambda: list_records(platform, admin, method="RemoveTeamMember"))
    assert removed[0].event.resource_name == "teams/ops" and removed[0].event.details["user"] == "users/hank"


# -- REST and CLI -----------------------------------------------------------------------------------


async def test_rest_through_the_gateway(platform, identity, admin):
    await identity.create(admin, "ivy", teams=[])
    async with platform.http(admin) as http:
        assert (await http.post("/api/v1/teams", json={"name": "teams/data"})).status_code == 200
        assert (await http.post("/api/v1/teams/data:addMember", json={"user": "users/ivy"})).status_code == 200
        got = (await http.get("/api/v1/users/ivy")).json()["user"]
        patched = await http.patch("/api/v1/users/ivy", params={"updateMask": "disabled,roles,displayName"},
                                   json={"disabled": True, "roles": ["ROLE_VIEWER"], "displayName": "Ivy",
                                         "etag": got["etag"]})
        assert patched.status_code == 200, patched.text
        user = patched.json()["user"]
        assert user["disabled"] is True and user["roles"] == ["ROLE_VIEWER"] and user["updateTime"]
        assert user["displayName"] == "Ivy"
        stale = await http.patch("/api/v1/users/ivy", params={"updateMask": "disabled"},
                                 json={"disabled": False, "etag": got["etag"]})
        assert stale.status_code == 409 and stale.json()["reason"] == "ETAG_MISMATCH", stale.text
        login = await http.post("/api/v1/auth:login", json={"username": "ivy", "password": PASSWORD})
        assert login.status_code == 401 and login.json()["reason"] == "USER_DISABLED", login.text
        self_disable = await http.patch("/api/v1/users/admin", params={"updateMask": "disabled"},
                                        json={"disabled": True})
        assert self_disable.status_code == 400 and self_disable.json()["reason"] == "CANNOT_DISABLE_SELF"

        removed = await http.post("/api/v1/teams/data:removeMember", json={"user": "users/ivy"})
        assert removed.status_code == 200, removed.text
        assert removed.json()["team"].get("members", []) == []
        missing = await http.post("/api/v1/teams/nope:removeMember", json={"user": "users/ivy"})
        assert missing.status_code == 404 and missing.json()["reason"] == "TEAM_NOT_FOUND"


async def test_cli_disable_enable_set_roles_and_remove_member(platform, identity, admin, tmp_path, monkeypatch,
                                                              capsys):
    await identity.create(admin, "jack", teams=[])
    async with platform.http(admin) as http:
        assert (await http.post("/api/v1/teams", json={"name": "teams/infra"})).status_code == 200
    monkeypatch.setenv("INNOMINATUS_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("INNOMINATUS_SERVER", platform.gateway)
    monkeypatch.setenv("INNOMINATUS_TOKEN", admin)

    async def cli(*args: str) -> tuple[int, str, str]:
        # The CLI blocks on HTTP: run it off the event loop the platform serves on.
        code = await asyncio.to_thread(main, list(args))
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    code, out, err = await cli("users", "disable", "jack")
    assert code == 0, err
    assert "Disabled:" in out and out.split("Disabled:")[1].split()[0] == "yes"
    code, _, err = await cli("users", "disable", "admin")
    assert code == 1 and "CANNOT_DISABLE_SELF" in err and "ask another admin" in err
    code, out, err = await cli("users", "enable", "users/jack", "-o", "json")
    assert code == 0, err
    user = json.loads(out)["user"]
    assert user.get("disabled", False) is False
    code, _, err = await cli("users", "enable", "jack", "--etag", "0000000000000000")
    assert code == 1 and "ETAG_MISMATCH" in err
    code, out, err = await cli("users", "set-roles", "jack", "viewer", "platform-engineer", "-o", "json")
    assert code == 0, err
    assert json.loads(out)["user"]["roles"] == ["ROLE_VIEWER", "ROLE_PLATFORM_ENGINEER"]
    code, _, err = await cli("users", "set-roles", "jack", "admni")
    assert code == 2 and "did you mean 'admin'?" in err
    code, _, err = await cli("users", "set-roles", "admin", "developer")
    assert code == 1 and "LAST_ADMIN" in err
    code, _, err = await cli("users", "disable", "nobody")
    assert code == 5 and "USER_NOT_FOUND" in err

    code, _, err = await cli("teams", "add-member", "infra", "jack")
    assert code == 0, err
    code, out, err = await cli("teams", "remove-member", "teams/infra", "users/jack", "-o", "json")
    assert code == 0, err
    assert json.loads(out)["team"].get("members", []) == []
    code, _, err = await cli("teams", "remove-member", "infar", "jack")
    assert code == 5 and "TEAM_NOT_FOUND" in err


# -- specs: a disabled user is no approver ------------------------------------------------------------


async def test_a_disabled_user_cannot_be_named_an_approver(platform, identity, admin):
    await identity.create(admin, "kate")
    await identity.create(admin, "liam")
    await identity.update(admin, "kate", ["disabled"], disabled=True)
    async with platform.http(admin) as http:
        body = {"name": "uat", "type": "ENVIRONMENT_TYPE_STAGING", "requiresApproval": True,
                "approvers": ["user:liam", "user:kate"]}
        refused = await http.post("/api/v1/environments", json={"environment": body})
        assert refused.status_code == 400 and refused.json()["reason"] == "INVALID_APPROVERS", refused.text
        violations = {v["field"]: v["description"] for v in refused.json()["violations"]}
        assert list(violations) == ["environment.approvers[1]"]
        assert "user 'kate' is disabled" in violations["environment.approvers[1]"]
        assert "innominatus users enable kate" in violations["environment.approvers[1]"]

        await identity.update(admin, "kate", ["disabled"], disabled=False)
        created = await http.post("/api/v1/environments", json={"environment": body})
        assert created.status_code == 200, created.text


async def test_a_disabled_users_token_changes_nothing_in_identity(platform, identity, admin):
    """Tokens outlive a disable until they expire; identity refuses every change they ask for,
    so a disabled admin cannot enable themselves again, make another admin or mint API keys."""
    await identity.create(admin, "ada", Role.ROLE_ADMIN)
    ada = (await identity.login(username="ada", password=PASSWORD)).access_token
    await identity.set_disabled(admin, "ada", True)
    attempts = {
        "UpdateUser": identity.update(ada, "ada", ["disabled"], disabled=False),
        "CreateUser": identity.create(ada, "sleeper", Role.ROLE_ADMIN),
        "CreateApiKey": identity.stub.CreateApiKey(identity_pb2.CreateApiKeyRequest(display_name="backdoor"),
                                                   metadata=auth(ada)),
        "RemoveTeamMember": identity.remove_member(ada, "teams/nobody", "users/admin"),
    }
    for method, call in attempts.items():
        code, error = await refused(call)
        assert code == grpc.StatusCode.FAILED_PRECONDITION and error.reason == "USER_DISABLED", method
        assert "ask an administrator to enable it" in error.message
    assert (await identity.get(admin, "ada")).disabled
    code, _ = await refused(identity.get(admin, "sleeper"))
    assert code == grpc.StatusCode.NOT_FOUND
    # Reading still works with the old token (the documented bound), and enabled again, ada acts.
    assert (await identity.get(ada, "ada")).disabled
    await identity.set_disabled(admin, "ada", False)
    assert not (await identity.update(ada, "ada", ["display_name"], display_name="Ada")).disabled
