"""`innominatus resources list|get [--reveal]|check|history` against a live platform.

The resources come from real deploys (the built-in postgres / redis definitions provision on the
PostgreSQL and Redis scripts/test starts); the CLI runs in this process against the platform's
REST gateway, as a user would run it.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import json
import re
import uuid

import psycopg
import pytest
from psycopg import sql

from innominatus.cli.main import main as cli_main
from innominatus.identity.v1 import identity_pb2
from innominatus.resources.drivers.base import scram_sha256_verifier
from tests.helpers.runs import deploy

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
{extra_vars}resources:
  db:
    type: postgres
{extra_resources}"""

CACHE_VARS = "      REDIS_PASSWORD: ${resources.cache.password}\n"
CACHE = "  cache:\n    type: redis\n"


@pytest.fixture
def resource_platform_env(tmp_path):
    return {
        # the CLI runs in this process: its credentials file in the test's directory, not the user's
        "INNOMINATUS_CONFIG_DIR": str(tmp_path / "config"),
        # no background health checks: the DEGRADED transition must be the one `resources check` records
        "INNOMINATUS_RESOURCES_HEALTH_INTERVAL": "0",
    }


@pytest.fixture
def platform(resource_platform):
    return resource_platform


async def _deploy(http, score: str, environment: str) -> dict[str, str]:
    """Deploy and wait; {claim ref: resource name} from the run's provision steps."""
    run = (await deploy(http, score, environment))["run"]
    return {s["name"].removeprefix("provision-"): s["outputs"]["resource"]
            for s in run["steps"] if s["name"].startswith("provision-")}


async def _cli(monkeypatch, capsys, platform, token: str, *argv: str) -> tuple[int, str, str]:
    monkeypatch.setenv("INNOMINATUS_SERVER", platform.gateway)
    monkeypatch.setenv("INNOMINATUS_TOKEN", token)
    capsys.readouterr()
    # main() is synchronous (httpx); the platform serves from this event loop meanwhile.
    code = await asyncio.to_thread(cli_main, list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _table(text: str) -> list[list[str]]:
    """Rows of a printed table, cut at the header's column starts (cells may hold spaces)."""
    lines = [line for line in text.splitlines() if line.strip()]
    starts = [m.start() for m in re.finditer(r"\S+", lines[0])]
    bounds = list(zip(starts, [*starts[1:], None]))
    return [[line[a:b].strip() for a, b in bounds] for line in lines]


def _fields(text: str) -> dict[str, str]:
    """The top `Key: value` block of a `get` / `check` table."""
    fields = {}
    for line in text.splitlines():
        if not line.strip():
            break
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    return fields


def _password_matches(admin_url: str, role: str, password: str) -> bool:
    """The test server trusts loopback connections (any password logs in), so compare the role's
    stored SCRAM verifier with one computed from the password."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        (stored,) = conn.execute("SELECT rolpassword FROM pg_authid WHERE rolname = %s", (role,)).fetchone()
    iterations, salt = stored.split("$", 2)[1].split(":")
    expected = scram_sha256_verifier(password, salt=base64.b64decode(salt), iterations=int(iterations))
    return hmac.compare_digest(expected.encode(), stored.encode())


async def test_resources_list_get_reveal_check_and_history(platform, monkeypatch, capsys):
    cart, bill = f"cart{uuid.uuid4().hex[:6]}", f"bill{uuid.uuid4().hex[:6]}"
    admin = await platform.login_admin()
    developer = await platform.create_user(admin, f"dev{uuid.uuid4().hex[:6]}", identity_pb2.ROLE_DEVELOPER)
    async with platform.http(developer) as http:
        cart_dev = await _deploy(http, SCORE.format(app=cart, extra_vars=CACHE_VARS, extra_resources=CACHE), "dev")
        cart_qa = await _deploy(http, SCORE.format(app=cart, extra_vars="", extra_resources=""), "qa")
        bill_dev = await _deploy(http, SCORE.format(app=bill, extra_vars="", extra_resources=""), "dev")
    assert set(cart_dev) == {"cache", "db"} and set(cart_qa) == set(bill_dev) == {"db"}
    db = cart_dev["db"]
    rid = db.removeprefix("resources/")

    async def cli(token, *argv):
        return await _cli(monkeypatch, capsys, platform, token, *argv)

    # -- list: filters by application and environment --------------------------------------
    code, out, _ = await cli(developer, "resources", "list", "--app", cart, "-o", "json")
    assert code == 0
    assert sorted(r["name"] for r in json.loads(out)["resources"]) == sorted([*cart_dev.values(), *cart_qa.values()])
    code, out, _ = await cli(developer, "resources", "list", "--app", f"applications/{cart}", "--env", "dev")
    assert code == 0
    rows = _table(out)
    assert rows[0] == ["NAME", "APP/WORKLOAD(S)", "TYPE", "CLASS", "ID", "STATE", "REASON"]
    by_type = {r[2]: r for r in rows[1:]}
    assert set(by_type) == {"postgres", "redis"} and len(rows) == 3
    assert by_type["postgres"][:6] == [rid, f"{cart}/{cart}", "postgres", "default", "-", "ACTIVE"]
    assert by_type["postgres"][6].startswith("provisioned with default-postgres@0")
    assert by_type["redis"][0] == cart_dev["cache"].removeprefix("resources/")
    code, out, _ = await cli(developer, "resources", "list", "--env", "qa", "-o", "yaml")
    assert code == 0 and cart_qa["db"] in out and db not in out and bill_dev["db"] not in out
    code, out, err = await cli(developer, "resources", "list", "--app", cart, "--env", "prod")
    assert code == 0 and out == "" and "No resources found." in err

    # -- get without --reveal: outputs, secret outputs as references only ------------------
    code, plain_table, plain_err = await cli(admin, "resources", "get", db)
    assert code == 0, plain_err
    fields = _fields(plain_table)
    assert fields["Name"] == db and fields["State"] == "ACTIVE" and fields["Type"] == "postgres"
    assert fields["Workloads"] == f"{cart}/{cart}" and fields["Definition"] == "default-postgres@0"
    assert "secret://" in plain_table and "--reveal prints the values" in plain_table
    code, plain_json, _ = await cli(developer, "resources", "get", rid, "-o", "json")  # a read: any user
    assert code == 0
    got = json.loads(plain_json)
    assert "secrets" not in got
    outputs, refs = got["resource"]["outputs"], got["resource"]["secretRefs"]
    assert set(refs) == {"password", "url"} and all(v.startswith("secret://") for v in refs.values())

    # -- get --reveal as admin: the real password, with a warning on stderr ----------------
    code, revealed_table, revealed_err = await cli(admin, "resources", "get", db, "--reveal")
    assert code == 0, revealed_err
    assert "warning: printing the plaintext secret outputs of " + db in revealed_err
    secret_lines = revealed_table.split("Secret outputs (plaintext):", 1)[1].strip().splitlines()
    shown = {key.strip(): value.strip() for key, _, value in (line.partition(":") for line in secret_lines)}
    assert set(shown) == {"password", "url"}
    password = shown["password"]
    assert len(password) == 32 and password in shown["url"]
    code, revealed_json, _ = await cli(admin, "-o", "json", "resources", "get", rid, "--reveal")
    assert code == 0
    secrets = json.loads(revealed_json)["secrets"]
    assert secrets["password"] == password and password in secrets["url"]
    # the plain answers never carried it
    for text in (plain_table, plain_err, plain_json):
        assert password not in text
    # it is the role's password, and it connects to the workload's own database
    assert _password_matches(platform.pg_admin_url, outputs["username"], password)
    assert not _password_matches(platform.pg_admin_url, outputs["username"], password[::-1])
    with psycopg.connect(host=outputs["host"], port=int(outputs["port"]), user=outputs["username"], password=password,
                         dbname=outputs["database"], connect_timeout=10) as conn:
        assert conn.execute("SELECT current_database(), current_user").fetchone() == \
            (outputs["database"], outputs["username"])

    # -- --reveal as a developer: refused by policy, with its reason, nothing printed ------
    code, out, err = await cli(developer, "resources", "get", db, "--reveal")
    assert code == 4
    assert out == ""
    assert 'does not grant "resources.reveal"' in err and "POLICY_DENIED" in err
    assert password not in out + err and "secret://" not in out

    # -- check: healthy, then dropped behind our back --------------------------------------
    code, out, err = await cli(admin, "resources", "check", rid)
    assert code == 0, out + err
    checked = _fields(out)
    assert (checked["Healthy"], checked["Drifted"], checked["State"]) == ("yes", "no", "ACTIVE")
    code, out, err = await cli(developer, "resources", "check", rid)  # checking is for operators
    assert code == 4 and 'does not grant "resources.check"' in err

    with psycopg.connect(platform.pg_admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(outputs["database"])))
    code, out, err = await cli(admin, "resources", "check", db)
    assert code == 1, out + err
    checked = _fields(out)
    assert (checked["Healthy"], checked["Drifted"], checked["State"]) == ("no", "yes", "DEGRADED")
    assert f"database {outputs['database']} was dropped" in checked["Reason"]
    code, out, err = await cli(admin, "resources", "check", db, "-o", "json")
    assert code == 1
    assert json.loads(out)["drifted"] is True and json.loads(out)["healthy"] is False
    assert f"error: {db} is unhealthy and drifted: " in err and "was dropped" in err

    # -- history: every transition with time, reason and actor -----------------------------
    code, out, _ = await cli(developer, "resources", "history", db)
    assert code == 0
    rows = _table(out)
    assert rows[0] == ["TIME", "FROM", "TO", "ACTOR", "REASON"]
    assert [(r[1], r[2]) for r in rows[1:]] == [("-", "REQUESTED"), ("REQUESTED", "PROVISIONING"),
                                                ("PROVISIONING", "ACTIVE"), ("ACTIVE", "DEGRADED")]
    assert rows[2][3] == "service:engine" and rows[4][3] == "admin"
    assert "was dropped" in rows[4][4]
    assert all(len(r[0]) == 19 and r[0][:2] == "20" for r in rows[1:])
    code, out, _ = await cli(developer, "resources", "history", rid, "-o", "json")
    history = json.loads(out)
    assert history["name"] == db and history["transitions"][-1]["to"] == "RESOURCE_STATE_DEGRADED"

    # -- names: unknown -> 5, malformed -> 1 before any request ----------------------------
    code, _, err = await cli(admin, "resources", "get", "resources/does-not-exist")
    assert code == 5 and "RESOURCE_NOT_FOUND" in err
    code, _, err = await cli(admin, "resources", "check", "a/b")
    assert code == 1 and "invalid resource name 'a/b'" in err


async def test_reveal_of_a_resource_without_secrets_prints_the_resource(platform, monkeypatch, capsys):
    app = f"site{uuid.uuid4().hex[:6]}"
    score = SCORE.format(app=app, extra_vars="      HOST: ${resources.web.host}\n",
                         extra_resources="  web:\n    type: dns\n")
    admin = await platform.login_admin()
    async with platform.http(admin) as http:
        claims = await _deploy(http, score, "dev")
    code, out, err = await _cli(monkeypatch, capsys, platform, admin, "resources", "get", claims["web"], "--reveal")
    assert code == 0, err
    assert "has no secret outputs: nothing to reveal" in err and "warning" not in err
    assert _fields(out)["Type"] == "dns" and f"{app}-dev-web" in out
