"""ChangePassword over real gRPC, the REST gateway and the CLI on the whole platform (fresh
PostgreSQL): a user changes their own password with the current one, an admin resets
another's without it, the policy keeps resets with admins, and neither password nor its hash
reaches the audit chain, the logs or an error."""

from __future__ import annotations

import asyncio
import io
import json
import sys

import grpc
import pytest
from google.protobuf import json_format
from sqlalchemy import select

from innominatus.cli.main import main
from innominatus.common.v1 import audit_event_pb2
from innominatus.identity import models
from innominatus.identity.v1 import identity_pb2
from innominatus.kit.errors import decode_rpc_error
from tests.helpers.audit import list_records
from tests.helpers.polling import eventually
from tests.helpers.identity import PASSWORD, IdentityClient, Role, auth, refused
from tests.helpers.opa import shipped_policy_granting

pytestmark = pytest.mark.postgres

NEW_PASSWORD = "tr0ub4dor-and-3-more"


async def _logs_in(identity: IdentityClient, username: str, password: str) -> bool:
    try:
        await identity.login(username, password)
    except grpc.aio.AioRpcError as exc:
        assert decode_rpc_error(exc).reason == "INVALID_CREDENTIALS", exc
        return False
    return True


async def _password_hash(platform, username: str) -> str:
    async with platform.platform.hosts["identity"].runtime.db.transaction() as session:
        table = models.users
        return (await session.execute(select(table.c.password_hash).where(table.c.username == username))).scalar_one()


# -- one's own password ------------------------------------------------------------------------


async def test_own_change_replaces_the_password_and_keeps_issued_tokens(platform, identity, admin):
    carol = await identity.create_and_login(admin, "carol")
    before = await _password_hash(platform, "carol")

    user = await identity.change_password(carol, "users/carol", NEW_PASSWORD, current=PASSWORD)
    assert user.name == "users/carol" and not user.password

    assert not await _logs_in(identity, "carol", PASSWORD)
    assert await _logs_in(identity, "carol", NEW_PASSWORD)
    after = await _password_hash(platform, "carol")
    assert after != before and after.startswith("$argon2id$")
    # The documented bound: a token issued before the change stays valid until it expires.
    me = await identity.stub.GetCurrentUser(identity_pb2.GetCurrentUserRequest(), metadata=auth(carol))
    assert me.user.username == "carol"


async def test_wrong_or_missing_current_password_changes_nothing(platform, identity, admin):
    dave = await identity.create_and_login(admin, "dave")
    before = await _password_hash(platform, "dave")

    code, error = await refused(identity.change_password(dave, "users/dave", NEW_PASSWORD, current="not-my-password"))
    assert code == grpc.StatusCode.PERMISSION_DENIED and error.reason == "INVALID_CURRENT_PASSWORD"
    assert "nothing was changed" in error.message and "not-my-password" not in error.message
    code, error = await refused(identity.change_password(dave, "users/dave", NEW_PASSWORD))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert [(v.field, v.description) for v in error.violations] == [
        ("current_password", "is required to change your own password")]
    code, error = await refused(identity.change_password(dave, "users/dave", PASSWORD, current=PASSWORD))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert [(v.field, v.description) for v in error.violations] == [
        ("new_password", "must differ from the current password: choose a new one")]

    assert await _password_hash(platform, "dave") == before
    assert await _logs_in(identity, "dave", PASSWORD)
    assert not await _logs_in(identity, "dave", NEW_PASSWORD)


async def test_weak_new_passwords_are_refused_by_createusers_rules(platform, identity, admin):
    erin = await identity.create_and_login(admin, "erin")
    before = await _password_hash(platform, "erin")
    for weak, rule in (("short", "must be at least 12 characters"), ("x" * 1025, "must be at most 1024 characters"),
                       ("", "must be at least 12 characters")):
        code, error = await refused(identity.change_password(erin, "users/erin", weak, current=PASSWORD))
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        assert [(v.field, v.description) for v in error.violations] == [("new_password", rule)]
        assert f"new_password: {rule}" in error.message
        # The same rule, word for word, as for an initial password.
        user = identity_pb2.User(username="weakling", password=weak)
        code, created = await refused(identity.stub.CreateUser(identity_pb2.CreateUserRequest(user=user),
                                                                metadata=auth(admin)))
        assert [(v.field, v.description) for v in created.violations] == [("user.password", rule)]
    # An admin's reset follows the same rules.
    code, error = await refused(identity.change_password(admin, "users/erin", "short"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and error.violations[0].field == "new_password"
    assert await _password_hash(platform, "erin") == before


async def test_concurrent_changes_with_the_same_current_password_do_not_both_pass(platform, identity, admin):
    fay = await identity.create_and_login(admin, "fay")
    outcomes = await asyncio.gather(
        identity.change_password(fay, "users/fay", "first-new-password", current=PASSWORD),
        identity.change_password(fay, "users/fay", "second-new-password", current=PASSWORD),
        return_exceptions=True)
    refused = [o for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
    assert len(refused) == 1, outcomes
    assert decode_rpc_error(refused[0]).reason == "INVALID_CURRENT_PASSWORD"
    winner = "first-new-password" if not isinstance(outcomes[0], Exception) else "second-new-password"
    loser = "second-new-password" if winner == "first-new-password" else "first-new-password"
    assert await _logs_in(identity, "fay", winner)
    assert not await _logs_in(identity, "fay", loser)


# -- another user's password -----------------------------------------------------------------


async def test_admin_resets_another_users_password_without_the_current_one(platform, identity, admin):
    await identity.create(admin, "gina")
    user = await identity.change_password(admin, "users/gina", NEW_PASSWORD)
    assert user.username == "gina"
    assert not await _logs_in(identity, "gina", PASSWORD)
    assert await _logs_in(identity, "gina", NEW_PASSWORD)

    # The current password is for one's own only: sent for someone else's it is refused.
    code, error = await refused(identity.change_password(admin, "users/gina", "yet-another-password", current=NEW_PASSWORD))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and error.violations[0].field == "current_password"
    assert "must be empty when resetting another user's password" in error.violations[0].description
    # An admin changing their own still proves it.
    code, error = await refused(identity.change_password(admin, "users/admin", NEW_PASSWORD))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and error.violations[0].field == "current_password"

    code, error = await refused(identity.change_password(admin, "users/ghost", NEW_PASSWORD))
    assert code == grpc.StatusCode.NOT_FOUND and error.reason == "USER_NOT_FOUND"
    assert "innominatus users list" in error.message
    code, error = await refused(identity.change_password(admin, "gina", NEW_PASSWORD))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert [(v.field, v.description) for v in error.violations] == [("name", "must be users/<username>")]


async def test_the_policy_keeps_resets_with_admins(platform, identity, admin):
    hank = await identity.create_and_login(admin, "hank")
    pete = await identity.create_and_login(admin, "pete", Role.ROLE_PLATFORM_ENGINEER)
    vera = await identity.create_and_login(admin, "vera", Role.ROLE_VIEWER)
    before = await _password_hash(platform, "admin")

    for token, who, role in ((hank, "hank", "developer"), (pete, "pete", "platform-engineer")):
        # With or without a current password: another user's is not theirs to change.
        for current in ("", PASSWORD):
            code, error = await refused(identity.change_password(token, "users/admin", NEW_PASSWORD, current=current))
            assert code == grpc.StatusCode.PERMISSION_DENIED and error.reason == "POLICY_DENIED"
            assert f'role "{role}" of user "{who}"' in error.message
            assert f"only on the user's own account (users/{who})" in error.message
            assert '"users.update"' in error.message and "ask an admin" in error.message
    assert await _password_hash(platform, "admin") == before

    # Every role, viewers included, changes its own.
    await identity.change_password(vera, "users/vera", NEW_PASSWORD, current=PASSWORD)
    assert await _logs_in(identity, "vera", NEW_PASSWORD)


async def test_identity_still_refuses_a_non_admin_reset_the_policy_lets_through(tmp_path):
    from tests.helpers.mesh import running_platform

    policies = shipped_policy_granting(tmp_path / "policies", "platform-engineer", "users.update")
    async with running_platform(tmp_path / "data", policy_dir=policies) as platform:
        identity = IdentityClient(platform)
        try:
            admin = await platform.login_admin()
            await identity.create(admin, "iris")
            pete = await identity.create_and_login(admin, "pete", Role.ROLE_PLATFORM_ENGINEER)
            code, error = await refused(identity.change_password(pete, "users/iris", NEW_PASSWORD))
            assert code == grpc.StatusCode.PERMISSION_DENIED and error.reason == "NOT_OWN_PASSWORD"
            assert "only an admin may reset another user's password" in error.message
            assert await _logs_in(identity, "iris", PASSWORD)
        finally:
            await identity.channel.close()


# -- disabled users --------------------------------------------------------------------------------


async def test_a_disabled_user_changes_no_password(platform, identity, admin):
    jack = await identity.create_and_login(admin, "jack")
    await identity.set_disabled(admin, "jack", True)
    # Their token outlived the disable; the account may still change nothing.
    code, error = await refused(identity.change_password(jack, "users/jack", NEW_PASSWORD, current=PASSWORD))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and error.reason == "USER_DISABLED"
    assert "is disabled" in error.message and "ask an administrator" in error.message

    # An admin may reset a disabled user's password (e.g. before enabling a compromised account
    # again); it takes effect once they are enabled.
    await identity.change_password(admin, "users/jack", NEW_PASSWORD)
    code, error = await refused(identity.login("jack", NEW_PASSWORD))
    assert code == grpc.StatusCode.UNAUTHENTICATED and error.reason == "USER_DISABLED"
    await identity.set_disabled(admin, "jack", False)
    assert await _logs_in(identity, "jack", NEW_PASSWORD)


# -- never recorded ---------------------------------------------------------------------------------


async def test_passwords_and_hashes_are_in_no_audit_record_log_or_error(json_logs, platform, identity, admin):
    kate = await identity.create_and_login(admin, "kate")
    liam = await identity.create_and_login(admin, "liam")
    old_hash = await _password_hash(platform, "kate")
    wrong = "wrong-current-password"
    errors = []  # everything a refused client is told: the message and the trailers (details)
    for call in (identity.change_password(kate, "users/kate", NEW_PASSWORD, current=wrong),     # failed
                 identity.change_password(liam, "users/kate", NEW_PASSWORD, current=PASSWORD),  # denied
                 identity.change_password(kate, "users/kate", "short-pw", current=PASSWORD)):   # failed
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        errors.append(f"{caught.value.details()} {caught.value.trailing_metadata()!r}")
    await identity.change_password(kate, "users/kate", NEW_PASSWORD, current=PASSWORD)           # succeeded
    reset = "admin-chosen-password"
    await identity.change_password(admin, "users/liam", reset)                                     # succeeded
    new_hashes = [await _password_hash(platform, u) for u in ("kate", "liam")]

    async def five():
        records = await list_records(platform, admin, method="ChangePassword")
        return records if len(records) >= 5 else None

    records = await eventually(five)
    outcomes = sorted(r.event.outcome for r in records)
    assert outcomes == sorted([audit_event_pb2.AUDIT_OUTCOME_FAILED, audit_event_pb2.AUDIT_OUTCOME_DENIED,
                               audit_event_pb2.AUDIT_OUTCOME_FAILED, audit_event_pb2.AUDIT_OUTCOME_SUCCEEDED,
                               audit_event_pb2.AUDIT_OUTCOME_SUCCEEDED])
    for record in records:
        event = record.event
        assert event.permission == "users.password.change" and event.resource_type == "user"
        assert event.details["new_password"] == "[redacted]"
        if "current_password" in event.details:
            assert event.details["current_password"] == "[redacted]"
    assert {r.event.resource_name for r in records} == {"users/kate", "users/liam"}
    failed = next(r.event for r in records if any("INVALID_CURRENT_PASSWORD" in x for x in r.event.reasons))
    assert failed.actor == "kate"

    secrets = [PASSWORD, NEW_PASSWORD, wrong, "short-pw", reset, old_hash, *new_hashes]
    audit_text = "\n".join(json_format.MessageToJson(r) for r in records)
    log_text = json_logs.getvalue()
    assert "password changed" in log_text and "rpc refused" in log_text  # the logs were captured
    for secret in secrets:
        assert secret not in audit_text
        assert secret not in log_text
        assert not any(secret in e for e in errors)


# -- REST and CLI -------------------------------------------------------------------------------------


async def test_rest_through_the_gateway(platform, identity, admin):
    mona = await identity.create_and_login(admin, "mona")
    async with platform.http(mona) as http:
        wrong = await http.post("/api/v1/users/mona:changePassword",
                                json={"currentPassword": "not-it-at-all", "newPassword": NEW_PASSWORD})
        assert wrong.status_code == 403 and wrong.json()["reason"] == "INVALID_CURRENT_PASSWORD", wrong.text
        weak = await http.post("/api/v1/users/mona:changePassword",
                               json={"currentPassword": PASSWORD, "newPassword": "short"})
        assert weak.status_code == 400, weak.text
        assert weak.json()["violations"] == [{"field": "new_password", "description": "must be at least 12 characters"}]
        ok = await http.post("/api/v1/users/mona:changePassword",
                             json={"currentPassword": PASSWORD, "newPassword": NEW_PASSWORD})
        assert ok.status_code == 200, ok.text
        assert ok.json()["user"]["name"] == "users/mona" and "password" not in ok.json()["user"]
        other = await http.post("/api/v1/users/admin:changePassword", json={"newPassword": NEW_PASSWORD})
        assert other.status_code == 403 and other.json()["reason"] == "POLICY_DENIED", other.text
    login = await identity.login("mona", NEW_PASSWORD)
    assert login.user.username == "mona"


async def test_cli_set_password_own_and_admin_reset(platform, identity, admin, tmp_path, monkeypatch, capsys):
    nina = await identity.create_and_login(admin, "nina")
    monkeypatch.setenv("INNOMINATUS_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("INNOMINATUS_SERVER", platform.gateway)

    async def cli(token: str, stdin: str, *args: str) -> tuple[int, str, str]:
        monkeypatch.setenv("INNOMINATUS_TOKEN", token)
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        # The CLI blocks on HTTP: run it off the event loop the platform serves on.
        code = await asyncio.to_thread(main, list(args))
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    code, _, err = await cli(nina, f"wrong-password-1\n{NEW_PASSWORD}\n", "users", "set-password", "--password-stdin")
    assert code == 4 and "INVALID_CURRENT_PASSWORD" in err
    code, _, err = await cli(nina, f"{PASSWORD}\nshort\n", "users", "set-password", "--password-stdin")
    assert code == 1 and "new_password: must be at least 12 characters" in err
    code, out, err = await cli(nina, f"{PASSWORD}\n{NEW_PASSWORD}\n", "users", "set-password", "--password-stdin")
    assert code == 0, err
    assert "Password of nina changed." in out and "stay valid until they expire" in err
    assert await _logs_in(identity, "nina", NEW_PASSWORD)

    code, _, err = await cli(nina, "someone-elses-pw\n", "users", "set-password", "admin", "--password-stdin")
    assert code == 4 and "POLICY_DENIED" in err

    reset = "reset-by-the-admin"
    code, out, err = await cli(admin, f"{reset}\n", "users", "set-password", "users/nina", "--password-stdin",
                               "-o", "json")
    assert code == 0, err
    assert json.loads(out)["user"]["username"] == "nina"
    assert await _logs_in(identity, "nina", reset)
    for secret in (PASSWORD, NEW_PASSWORD, reset):
        assert secret not in out + err
