"""The identity service over real gRPC and real mTLS: bootstrap, login, tokens, users,
teams and API keys, with the embedded Rego policy engine deciding every mutation.

Runs against SQLite in a temporary data directory. The harness below starts the service
with ServiceHost on port 0 and a small fake audit service that collects what the outbox
relay ships, and connects as the ``gateway`` peer.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import stat
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from structlog.testing import capture_logs

from innominatus.audit.v1 import audit_pb2, audit_pb2_grpc
from innominatus.identity import tokens
from innominatus.identity.service import definition
from innominatus.identity.v1 import identity_pb2, identity_pb2_grpc
from innominatus.kit.auth import TokenVerifier
from innominatus.kit.clients import secure_channel
from innominatus.kit.config import Settings
from innominatus.kit.errors import Unauthenticated, decode_rpc_error
from innominatus.kit.pki import ensure_dev_pki
from innominatus.kit.policy import EmbeddedRegoPolicyEngine, default_policy_dir
from innominatus.kit.server import ServiceHost, server_credentials

Role = identity_pb2.Role
PASSWORD = "correct-horse-battery-staple"


class FakeAudit(audit_pb2_grpc.AuditServiceServicer):
    """Stands in for the audit service: accepts and keeps whatever the relay ships."""

    def __init__(self) -> None:
        self.events = []

    async def AppendEvents(self, request, context):
        self.events.extend(request.events)
        return audit_pb2.AppendEventsResponse(accepted_ids=[e.id for e in request.events])


@dataclass
class Identity:
    host: ServiceHost
    settings: Settings
    stub: identity_pb2_grpc.IdentityServiceStub
    audit: FakeAudit
    channel: grpc.aio.Channel
    extra: dict = field(default_factory=dict)

    @property
    def data_dir(self) -> Path:
        return self.settings.data_dir

    @property
    def db_path(self) -> Path:
        return self.data_dir / "identity.db"

    def admin_credentials(self) -> dict:
        return json.loads((self.data_dir / "bootstrap-admin.json").read_text())

    def query(self, sql: str, *params) -> list[tuple]:
        with sqlite3.connect(self.db_path) as conn:
            return conn.execute(sql, params).fetchall()

    def execute(self, sql: str, *params) -> None:
        with sqlite3.connect(self.db_path) as conn:
            conn.execute(sql, params)

    async def login(self, username: str, password: str) -> identity_pb2.LoginResponse:
        return await self.stub.Login(identity_pb2.LoginRequest(username=username, password=password))

    async def admin_token(self) -> str:
        creds = self.admin_credentials()
        return (await self.login(creds["username"], creds["password"])).access_token


def bearer(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


async def rpc_error(call) -> tuple[grpc.StatusCode, object]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value.code(), decode_rpc_error(caught.value)


@asynccontextmanager
async def running_identity(root: Path, **overrides):
    """identity on 127.0.0.1:0 plus a fake audit service, both over mTLS with a dev CA."""
    pki = ensure_dev_pki(root / "pki", ["identity", "audit", "gateway"])
    audit = FakeAudit()
    audit_server = grpc.aio.server()
    audit_pb2_grpc.add_AuditServiceServicer_to_server(audit, audit_server)
    audit_port = audit_server.add_secure_port("127.0.0.1:0", server_credentials(pki["audit"]))
    await audit_server.start()
    settings = Settings(
        data_dir=root / "data",
        tls=pki["identity"],
        addresses={"audit": f"127.0.0.1:{audit_port}"},
        relay_interval_seconds=0.1,
        shutdown_grace_seconds=1.0,
        **overrides,
    )
    engine = EmbeddedRegoPolicyEngine(default_policy_dir())
    host = ServiceHost(definition(), settings, policy_engine=engine)
    channel = None
    try:
        port = await host.start()
        settings.addresses["identity"] = f"127.0.0.1:{port}"
        channel = secure_channel(f"127.0.0.1:{port}", pki["gateway"])
        stub = identity_pb2_grpc.IdentityServiceStub(channel)
        yield Identity(host=host, settings=settings, stub=stub, audit=audit, channel=channel)
    finally:
        if channel is not None:
            await channel.close()
        await host.stop(grace=1.0)
        await engine.close()
        await audit_server.stop(None)


@pytest.fixture(autouse=True)
def _no_signing_key_override(monkeypatch):
    monkeypatch.delenv(tokens.SIGNING_KEY_ENV, raising=False)


@pytest.fixture(scope="module")
async def identity(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv(tokens.SIGNING_KEY_ENV, raising=False)
        async with running_identity(tmp_path_factory.mktemp("identity")) as running:
            yield running


@pytest.fixture(scope="module")
async def admin(identity) -> str:
    return await identity.admin_token()


async def create_user(identity: Identity, admin: str, username: str, roles=(Role.ROLE_DEVELOPER,), **fields):
    user = identity_pb2.User(username=username, password=fields.pop("password", PASSWORD), roles=list(roles), **fields)
    response = await identity.stub.CreateUser(identity_pb2.CreateUserRequest(user=user), metadata=bearer(admin))
    return response.user


async def wait_for(predicate, timeout: float = 30.0) -> None:  # the relay backs off after a failed ship
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


# -- bootstrap ---------------------------------------------------------------------


async def test_bootstrap_file_is_private_and_its_credentials_log_in(identity):
    path = identity.data_dir / "bootstrap-admin.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    creds = identity.admin_credentials()
    assert set(creds) == {"username", "password"}
    assert creds["username"] == "admin" and len(creds["password"]) >= 24

    response = await identity.login("admin", creds["password"])
    assert response.token_type == "Bearer"
    assert response.expires_in == identity.settings.token_ttl_seconds
    assert response.user.name == "users/admin"
    assert list(response.user.roles) == [Role.ROLE_ADMIN]
    assert response.user.password == ""

    # The signing key file is private too.
    key_file = identity.data_dir / "identity" / "signing-key.pem"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(key_file.parent.stat().st_mode) == 0o700


async def test_second_start_does_not_bootstrap_again(tmp_path):
    with capture_logs() as first_logs:
        async with running_identity(tmp_path) as first:
            creds = first.admin_credentials()
            original = (first.data_dir / "bootstrap-admin.json").read_bytes()
            jwks = (await first.stub.GetJwks(identity_pb2.GetJwksRequest())).jwks_json
            old_token = await first.admin_token()
    bootstrap_lines = [e for e in first_logs if "bootstrap" in e["event"]]
    assert len(bootstrap_lines) == 1, bootstrap_lines
    assert "written" in bootstrap_lines[0]["event"]
    assert all(creds["password"] not in str(entry) for entry in first_logs)

    with capture_logs() as second_logs:
        async with running_identity(tmp_path) as second:
            assert (second.data_dir / "bootstrap-admin.json").read_bytes() == original
            assert second.query("SELECT username FROM users") == [("admin",)]
            # Same credentials, same signing key: tokens from before the restart still work.
            assert (await second.login("admin", creds["password"])).access_token
            assert (await second.stub.GetJwks(identity_pb2.GetJwksRequest())).jwks_json == jwks
            me = await second.stub.GetCurrentUser(identity_pb2.GetCurrentUserRequest(), metadata=bearer(old_token))
            assert me.user.username == "admin"
    assert not [e for e in second_logs if "bootstrap" in e["event"] or "signing key" in e["event"]]

    # Even with the file gone, an existing user means no new admin and no new file.
    (tmp_path / "data" / "bootstrap-admin.json").unlink()
    async with running_identity(tmp_path) as third:
        assert not (third.data_dir / "bootstrap-admin.json").exists()
        assert third.query("SELECT count(*) FROM users") == [(1,)]


async def test_existing_bootstrap_file_is_never_overwritten(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "bootstrap-admin.json").write_text('{"username": "admin", "password": "from-an-old-install"}')
    async with running_identity(tmp_path) as running:
        assert json.loads((data / "bootstrap-admin.json").read_text())["password"] == "from-an-old-install"
        assert running.query("SELECT count(*) FROM users") == [(0,)]


async def test_bootstrap_is_audited(identity):
    await wait_for(lambda: any(e.method == "bootstrap" for e in identity.audit.events))
    event = next(e for e in identity.audit.events if e.method == "bootstrap")
    assert event.resource_name == "users/admin" and event.actor == "service:identity"


# -- login and tokens ----------------------------------------------------------------


async def test_wrong_password_and_unknown_user_look_the_same(identity):
    code, wrong = await rpc_error(identity.login("admin", "not-the-password"))
    assert code == grpc.StatusCode.UNAUTHENTICATED
    assert wrong.reason == "INVALID_CREDENTIALS"
    code, unknown = await rpc_error(identity.login("nobody-here", "not-the-password"))
    assert code == grpc.StatusCode.UNAUTHENTICATED
    assert (unknown.reason, unknown.message) == (wrong.reason, wrong.message)


async def test_login_needs_credentials(identity):
    code, error = await rpc_error(identity.stub.Login(identity_pb2.LoginRequest(username="admin")))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in error.violations] == ["password"]


async def test_token_verifies_with_published_jwks_and_carries_roles(identity, admin):
    async def jwks_source() -> str:
        return (await identity.stub.GetJwks(identity_pb2.GetJwksRequest())).jwks_json

    document = json.loads(await jwks_source())
    (jwk,) = document["keys"]
    assert {k: jwk[k] for k in ("kty", "crv", "alg", "use")} == {
        "kty": "OKP",
        "crv": "Ed25519",
        "alg": "EdDSA",
        "use": "sig",
    }
    assert "d" not in jwk  # public half only

    subject = await TokenVerifier(jwks_source).verify(admin)
    assert subject.type == "user"
    assert subject.name == "users/admin" and subject.username == "admin"
    assert subject.roles == ("admin",)

    me = await identity.stub.GetCurrentUser(identity_pb2.GetCurrentUserRequest(), metadata=bearer(admin))
    assert me.user.name == "users/admin"


async def test_expired_token_is_rejected(identity):
    issuer = tokens.TokenIssuer.from_settings(identity.settings)  # same key file as the service
    token, expires_in = issuer.issue({"username": "admin", "roles": ["admin"]}, ttl=-1)
    assert expires_in == -1

    code, error = await rpc_error(
        identity.stub.GetCurrentUser(identity_pb2.GetCurrentUserRequest(), metadata=bearer(token))
    )
    assert code == grpc.StatusCode.UNAUTHENTICATED and error.reason == "TOKEN_EXPIRED"

    async def jwks_source() -> str:
        return (await identity.stub.GetJwks(identity_pb2.GetJwksRequest())).jwks_json

    with pytest.raises(Unauthenticated) as caught:
        await TokenVerifier(jwks_source).verify(token)
    assert caught.value.reason == "TOKEN_EXPIRED"


async def test_calls_without_a_token_are_refused(identity):
    code, error = await rpc_error(identity.stub.GetCurrentUser(identity_pb2.GetCurrentUserRequest()))
    assert code == grpc.StatusCode.UNAUTHENTICATED and error.reason == "TOKEN_MISSING"


# -- users -------------------------------------------------------------------------


async def test_create_user_stores_an_argon2id_hash_and_never_returns_it(identity, admin):
    user = await create_user(identity, admin, "alice", roles=[], display_name="Alice")
    assert user.name == "users/alice" and user.display_name == "Alice"
    assert list(user.roles) == [Role.ROLE_DEVELOPER]  # the default
    assert user.password == ""
    ((stored,),) = identity.query("SELECT password_hash FROM users WHERE username = 'alice'")
    assert stored.startswith("$argon2id$")
    assert PASSWORD not in stored
    assert stored not in user.SerializeToString().decode("utf-8", "replace")

    response = await identity.login("alice", PASSWORD)
    assert list(response.user.roles) == [Role.ROLE_DEVELOPER]
    got = await identity.stub.GetUser(identity_pb2.GetUserRequest(name="users/alice"), metadata=bearer(admin))
    assert got.user.username == "alice" and got.user.password == ""

    code, error = await rpc_error(create_user(identity, admin, "alice"))
    assert code == grpc.StatusCode.ALREADY_EXISTS and error.reason == "USER_ALREADY_EXISTS"

    # The audit trail of the creation does not carry the password either.
    await wait_for(lambda: any(e.resource_name == "alice" for e in identity.audit.events))
    for event in identity.audit.events:
        assert PASSWORD not in str(event)


async def test_create_user_with_short_password_is_refused_and_writes_nothing(identity, admin):
    code, error = await rpc_error(create_user(identity, admin, "bob", password="too-short"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in error.violations] == ["user.password"]
    assert "12" in error.violations[0].description
    assert identity.query("SELECT username FROM users WHERE username = 'bob'") == []


async def test_create_user_names_every_bad_field(identity, admin):
    code, error = await rpc_error(
        create_user(identity, admin, "Bad_Name", roles=[Role.ROLE_UNSPECIFIED], password="long-enough-password")
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert {v.field for v in error.violations} == {"user.username", "user.roles[0]"}
    assert identity.query("SELECT count(*) FROM users WHERE username = 'Bad_Name'") == [(0,)]


async def test_only_admins_create_users(identity, admin):
    await create_user(identity, admin, "dave")
    dave = (await identity.login("dave", PASSWORD)).access_token
    code, error = await rpc_error(create_user(identity, dave, "mallory"))
    assert code == grpc.StatusCode.PERMISSION_DENIED and error.reason == "POLICY_DENIED"
    assert identity.query("SELECT count(*) FROM users WHERE username = 'mallory'") == [(0,)]


async def test_disabled_user_cannot_log_in(identity, admin):
    await create_user(identity, admin, "dora", disabled=True)
    code, error = await rpc_error(identity.login("dora", PASSWORD))
    assert code == grpc.StatusCode.UNAUTHENTICATED and error.reason == "USER_DISABLED"
    # A wrong password does not reveal that the account is disabled.
    _, error = await rpc_error(identity.login("dora", "wrong-password-here"))
    assert error.reason == "INVALID_CREDENTIALS"


async def test_list_users_pages(identity, admin):
    for name in ("page-a", "page-b", "page-c"):
        await create_user(identity, admin, name)
    seen, token = [], ""
    while True:
        response = await identity.stub.ListUsers(
            identity_pb2.ListUsersRequest(page_size=2, page_token=token), metadata=bearer(admin)
        )
        assert len(response.users) <= 2
        seen += [u.username for u in response.users]
        assert all(u.password == "" for u in response.users)
        token = response.next_page_token
        if not token:
            break
    assert len(seen) == len(set(seen))
    assert {"admin", "page-a", "page-b", "page-c"} <= set(seen)
    assert seen == [row[0] for row in identity.query("SELECT username FROM users ORDER BY created_at, username")]


# -- teams -------------------------------------------------------------------------


async def test_teams_and_membership_reach_the_token(identity, admin):
    await create_user(identity, admin, "erin")
    created = await identity.stub.CreateTeam(
        identity_pb2.CreateTeamRequest(team=identity_pb2.Team(name="teams/payments", display_name="Payments")),
        metadata=bearer(admin),
    )
    assert created.team.name == "teams/payments"
    bare = await identity.stub.CreateTeam(
        identity_pb2.CreateTeamRequest(team=identity_pb2.Team(name="checkout")), metadata=bearer(admin)
    )
    assert bare.team.name == "teams/checkout"
    code, error = await rpc_error(
        identity.stub.CreateTeam(identity_pb2.CreateTeamRequest(team=identity_pb2.Team(name="payments")), metadata=bearer(admin))
    )
    assert code == grpc.StatusCode.ALREADY_EXISTS
    code, error = await rpc_error(
        identity.stub.CreateTeam(identity_pb2.CreateTeamRequest(team=identity_pb2.Team(name="teams/No!")), metadata=bearer(admin))
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and [v.field for v in error.violations] == ["team.name"]

    added = await identity.stub.AddTeamMember(
        identity_pb2.AddTeamMemberRequest(team="teams/payments", user="users/erin"), metadata=bearer(admin)
    )
    assert list(added.team.members) == ["users/erin"]
    again = await identity.stub.AddTeamMember(
        identity_pb2.AddTeamMemberRequest(team="teams/payments", user="users/erin"), metadata=bearer(admin)
    )
    assert list(again.team.members) == ["users/erin"]
    code, error = await rpc_error(
        identity.stub.AddTeamMember(
            identity_pb2.AddTeamMemberRequest(team="teams/payments", user="users/ghost"), metadata=bearer(admin)
        )
    )
    assert code == grpc.StatusCode.NOT_FOUND and error.reason == "USER_NOT_FOUND"

    login = await identity.login("erin", PASSWORD)
    assert list(login.user.teams) == ["teams/payments"]
    subject = await identity.host.runtime.verifier.verify(login.access_token)
    assert subject.teams == ("teams/payments",)

    listed, token = [], ""
    while True:
        page = await identity.stub.ListTeams(
            identity_pb2.ListTeamsRequest(page_size=1, page_token=token), metadata=bearer(admin)
        )
        listed += list(page.teams)
        token = page.next_page_token
        if not token:
            break
    by_name = {t.name: t for t in listed}
    assert list(by_name["teams/payments"].members) == ["users/erin"]
    assert "teams/checkout" in by_name


# -- API keys ----------------------------------------------------------------------


async def create_key(identity: Identity, token: str, **fields) -> identity_pb2.CreateApiKeyResponse:
    return await identity.stub.CreateApiKey(identity_pb2.CreateApiKeyRequest(**fields), metadata=bearer(token))


async def test_api_key_login_then_revoke(identity, admin):
    created = await create_key(identity, admin, display_name="ci")
    key = created.key
    assert key.startswith("inn_") and len(key) > 40
    assert created.api_key.prefix == key[:12]
    assert created.api_key.owner == "users/admin"
    lifetime = created.api_key.expire_time.seconds - created.api_key.create_time.seconds
    assert abs(lifetime - 90 * 86400) <= 1

    # Only a hash is stored: the key appears in no column of any row.
    rows = identity.query("SELECT * FROM api_keys")
    assert rows and all(key not in str(value) for row in rows for value in row)

    login = await identity.stub.Login(identity_pb2.LoginRequest(api_key=key))
    assert login.user.username == "admin"
    me = await identity.stub.GetCurrentUser(identity_pb2.GetCurrentUserRequest(), metadata=bearer(login.access_token))
    assert me.user.username == "admin"

    revoked = await identity.stub.RevokeApiKey(
        identity_pb2.RevokeApiKeyRequest(name=created.api_key.name), metadata=bearer(admin)
    )
    assert revoked.api_key.HasField("revoke_time")
    code, error = await rpc_error(identity.stub.Login(identity_pb2.LoginRequest(api_key=key)))
    assert code == grpc.StatusCode.UNAUTHENTICATED and error.reason == "API_KEY_REVOKED"

    code, error = await rpc_error(identity.stub.Login(identity_pb2.LoginRequest(api_key="inn_not-a-real-key")))
    assert code == grpc.StatusCode.UNAUTHENTICATED and error.reason == "INVALID_CREDENTIALS"


async def test_expired_api_key_is_refused(identity, admin):
    created = await create_key(identity, admin, display_name="short-lived", ttl_days=1)
    key_id = created.api_key.name.removeprefix("apikeys/")
    identity.execute("UPDATE api_keys SET expires_at = '2000-01-01 00:00:00.000000' WHERE id = ?", key_id)
    code, error = await rpc_error(identity.stub.Login(identity_pb2.LoginRequest(api_key=created.key)))
    assert code == grpc.StatusCode.UNAUTHENTICATED and error.reason == "API_KEY_EXPIRED"


async def test_api_key_ttl_is_bounded(identity, admin):
    code, error = await rpc_error(create_key(identity, admin, ttl_days=366))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and [v.field for v in error.violations] == ["ttl_days"]
    created = await create_key(identity, admin, ttl_days=365)
    lifetime = created.api_key.expire_time.seconds - created.api_key.create_time.seconds
    assert abs(lifetime - 365 * 86400) <= 1


async def test_api_keys_are_scoped_to_their_owner(identity, admin):
    await create_user(identity, admin, "frank")
    frank = (await identity.login("frank", PASSWORD)).access_token
    franks = await create_key(identity, frank, display_name="frank's laptop")
    admins = await create_key(identity, admin, display_name="admin's")

    mine = await identity.stub.ListApiKeys(identity_pb2.ListApiKeysRequest(), metadata=bearer(frank))
    assert [k.name for k in mine.api_keys] == [franks.api_key.name]
    everything = await identity.stub.ListApiKeys(identity_pb2.ListApiKeysRequest(page_size=1000), metadata=bearer(admin))
    names = {k.name for k in everything.api_keys}
    assert {franks.api_key.name, admins.api_key.name} <= names

    code, error = await rpc_error(
        identity.stub.RevokeApiKey(identity_pb2.RevokeApiKeyRequest(name=admins.api_key.name), metadata=bearer(frank))
    )
    assert code == grpc.StatusCode.PERMISSION_DENIED and error.reason == "NOT_API_KEY_OWNER"
    assert identity.query("SELECT revoked_at FROM api_keys WHERE id = ?", admins.api_key.name[8:]) == [(None,)]

    code, error = await rpc_error(
        identity.stub.RevokeApiKey(identity_pb2.RevokeApiKeyRequest(name="apikeys/does-not-exist"), metadata=bearer(frank))
    )
    assert code == grpc.StatusCode.NOT_FOUND

    # The owner may revoke their own key, and an admin anybody's.
    await identity.stub.RevokeApiKey(identity_pb2.RevokeApiKeyRequest(name=franks.api_key.name), metadata=bearer(frank))
    other = await create_key(identity, frank)
    revoked = await identity.stub.RevokeApiKey(
        identity_pb2.RevokeApiKeyRequest(name=other.api_key.name), metadata=bearer(admin)
    )
    assert revoked.api_key.owner == "users/frank" and revoked.api_key.HasField("revoke_time")
