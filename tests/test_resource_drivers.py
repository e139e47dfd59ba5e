"""Built-in provisioner drivers (innominatus.resources.drivers) against a real PostgreSQL and Redis.

scripts/test starts both and exports INNOMINATUS_TEST_DATABASE_URL (superuser ``postgres``) and
INNOMINATUS_TEST_REDIS_URL (no auth); these tests fail, not skip, when either is missing.
"""

from __future__ import annotations

import base64
import hmac
import os
import uuid

import psycopg
import pytest
import structlog
from psycopg import sql

from innominatus.resources.drivers import (
    DRIVERS,
    Driver,
    ProvisionContext,
    ProvisionError,
    UnknownDriver,
    get_driver,
    known_drivers,
)
from innominatus.resources.drivers.base import dns_label, scram_sha256_verifier, sql_name
from innominatus.resources.drivers.environment import EnvironmentDriver
from innominatus.resources.drivers.postgres import PostgresDriver
from innominatus.resources.drivers.redis_acl import RedisDriver

REDIS_ENV = "INNOMINATUS_TEST_REDIS_URL"
PG_ENV = "INNOMINATUS_TEST_DATABASE_URL"


def _env(name: str) -> str:
    value = os.environ.get(name, "").strip()
    if not value:
        pytest.fail(f"{name} is not set: run the suite with scripts/test, which starts PostgreSQL and Redis", pytrace=False)
    return value


def _rid(kind: str) -> str:
    return f"t{uuid.uuid4().hex[:10]}-dev-{kind}"


def _ctx(rid: str, type_: str, config: dict, **kw) -> ProvisionContext:
    return ProvisionContext(
        resource_id=rid,
        type=type_,
        application="checkout",
        environment="dev",
        config=config,
        idempotency_key=f"key-{rid}",
        **kw,
    )


def _admin_conninfo() -> str:
    return _env(PG_ENV).replace("postgresql+psycopg://", "postgresql://", 1)


def _conninfo(outputs: dict, password: str, database: str | None = None) -> str:
    return psycopg.conninfo.make_conninfo(
        "",
        host=outputs["host"],
        port=outputs["port"],
        user=outputs["username"],
        password=password,
        dbname=database or outputs["database"],
        connect_timeout=5,
    )


async def _admin_query(query, params=()):
    async with await psycopg.AsyncConnection.connect(_admin_conninfo(), autocommit=True) as conn:
        cur = await conn.execute(query, params)
        return await cur.fetchall() if cur.description else None


async def _exists(database: str | None = None, role: str | None = None) -> bool:
    if database is not None:
        return bool(await _admin_query("SELECT 1 FROM pg_database WHERE datname = %s", (database,)))
    return bool(await _admin_query("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)))


async def _password_matches(role: str, password: str) -> bool:
    """The test server trusts loopback connections, so check the stored SCRAM verifier itself."""
    rows = await _admin_query("SELECT rolpassword FROM pg_authid WHERE rolname = %s", (role,))
    stored = rows[0][0]
    head, server_part = stored.split("$", 1)[1], stored.split("$", 2)[2]
    iterations, salt = head.split("$")[0].split(":")
    expected = scram_sha256_verifier(password, salt=base64.b64decode(salt), iterations=int(iterations))
    return hmac.compare_digest(expected.encode(), stored.encode()) and bool(server_part)


@pytest.fixture
def pg_config():
    return {"admin_url": _env(PG_ENV)}


@pytest.fixture
async def pg_cleanup(pg_config):
    """Deprovision every postgres resource a test provisioned, whatever happened."""
    made: list[str] = []
    yield made
    for rid in made:
        try:
            await PostgresDriver().deprovision(_ctx(rid, "postgres", pg_config), {})
        except ProvisionError:
            pass


# ---------------------------------------------------------------------------------------------
# registry


def test_registry_lists_every_builtin_driver_and_they_follow_the_protocol():
    assert known_drivers() == ["dns", "environment", "postgres", "redis", "route", "service-port", "volume"]
    for name, driver in DRIVERS.items():
        assert isinstance(driver, Driver), name
        assert driver.name == name and driver.description and driver.types
    assert get_driver("postgres") is DRIVERS["postgres"]


def test_unknown_driver_suggests_the_closest_and_lists_the_known_ones():
    with pytest.raises(UnknownDriver) as caught:
        get_driver("postgress")
    message = str(caught.value)
    assert "unknown driver 'postgress'" in message
    assert "did you mean 'postgres'?" in message
    assert "known drivers: dns, environment, postgres, redis, route, service-port, volume" in message
    assert caught.value.reason == "UNKNOWN_DRIVER"
    assert caught.value.metadata["suggestion"] == "postgres"
    with pytest.raises(UnknownDriver) as caught:
        get_driver("kafka")
    assert "did you mean" not in str(caught.value) and "known drivers:" in str(caught.value)


def test_safe_names():
    assert sql_name("checkout-dev-db") == "checkout_dev_db"
    assert sql_name("pg-thing") == "r_pg_thing"  # pg_ is reserved for roles
    assert sql_name("9lives") == "r_9lives"
    long_a, long_b = "x" * 70 + "-a", "x" * 70 + "-b"
    assert len(sql_name(long_a)) == 63 and sql_name(long_a) != sql_name(long_b)
    assert sql_name('we"ird; DROP TABLE x') == "we_ird_drop_table_x"
    assert dns_label("Checkout_Dev..DB") == "checkout-dev-db"
    assert len(dns_label("y" * 100)) == 63


# ---------------------------------------------------------------------------------------------
# postgres


async def test_postgres_provision_gives_a_working_database_of_its_own(pg_config, pg_cleanup):
    rid = _rid("db")
    pg_cleanup.append(rid)
    result = await PostgresDriver().provision(_ctx(rid, "postgres", pg_config))
    name = sql_name(rid)
    assert result.outputs["database"] == result.outputs["name"] == name
    assert result.outputs["username"] == name
    assert result.outputs["host"] == "127.0.0.1" and isinstance(result.outputs["port"], int)
    password = result.secret_outputs["password"]
    assert len(password) == 32 and password.isalnum()
    assert password not in repr(result) and password not in str(result.state)
    assert result.secret_outputs["url"].startswith(f"postgresql://{name}:{password}@127.0.0.1:")
    assert await _password_matches(name, password)

    async with await psycopg.AsyncConnection.connect(_conninfo(result.outputs, password), autocommit=True) as conn:
        await conn.execute("CREATE TABLE orders (id int primary key, total numeric)")
        await conn.execute("INSERT INTO orders VALUES (1, 9.5)")
        cur = await conn.execute("SELECT current_user, current_database(), count(*) FROM orders")
        assert await cur.fetchone() == (name, name, 1)
    # marked as ours, and closed to PUBLIC
    rows = await _admin_query(
        "SELECT shobj_description(oid, 'pg_database'), datacl::text FROM pg_database WHERE datname = %s", (name,)
    )
    assert rows[0][0] == f"innominatus:{rid}"
    assert "=Tc/" not in rows[0][1] and "=c/" not in rows[0][1]


async def test_postgres_works_with_a_non_superuser_admin_role(pg_config):
    """The production shape: the admin URL names a role with CREATEROLE and CREATEDB, nothing more."""
    admin = f"prov_{uuid.uuid4().hex[:8]}"
    await _admin_query(sql.SQL("CREATE ROLE {} LOGIN CREATEROLE CREATEDB").format(sql.Identifier(admin)))
    base = psycopg.conninfo.conninfo_to_dict(_admin_conninfo())
    config = {"admin_url": f"postgresql://{admin}@{base['host']}:{base['port']}/{base['dbname']}"}
    rid = _rid("db")
    driver = PostgresDriver()
    ctx = _ctx(rid, "postgres", config)
    try:
        result = await driver.provision(ctx)
        again = await driver.provision(_ctx(rid, "postgres", config, previous_secrets=result.secret_outputs))
        assert again.outputs == result.outputs
        assert (await driver.health(ctx, result.state, result.secret_outputs)).ok
        assert (await driver.drift(ctx, result.state)).ok
        session = await psycopg.AsyncConnection.connect(_conninfo(result.outputs, result.secret_outputs["password"]))
        try:
            await driver.deprovision(ctx, result.state)
        finally:
            await session.close()
        assert not await _exists(database=result.outputs["database"])
        assert not await _exists(role=result.outputs["username"])
    finally:
        await PostgresDriver().deprovision(_ctx(rid, "postgres", pg_config), {})
        await _admin_query(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(admin)))


async def test_postgres_roles_cannot_reach_each_others_databases(pg_config, pg_cleanup):
    a_id, b_id = _rid("db"), _rid("db")
    pg_cleanup += [a_id, b_id]
    a = await PostgresDriver().provision(_ctx(a_id, "postgres", pg_config))
    b = await PostgresDriver().provision(_ctx(b_id, "postgres", pg_config))
    for mine, theirs in ((a, b), (b, a)):
        with pytest.raises(psycopg.OperationalError, match="permission denied for database"):
            await psycopg.AsyncConnection.connect(
                _conninfo(mine.outputs, mine.secret_outputs["password"], theirs.outputs["database"])
            )
        async with await psycopg.AsyncConnection.connect(
            _conninfo(mine.outputs, mine.secret_outputs["password"]), autocommit=True
        ) as conn:
            await conn.execute("SELECT 1")


async def test_postgres_provision_is_idempotent(pg_config, pg_cleanup):
    rid = _rid("db")
    pg_cleanup.append(rid)
    driver = PostgresDriver()
    first = await driver.provision(_ctx(rid, "postgres", pg_config))
    # re-provision with what the last one returned: same names, same password
    again = await driver.provision(
        _ctx(rid, "postgres", pg_config, previous_state=first.state, previous_secrets=first.secret_outputs)
    )
    assert again.outputs == first.outputs and again.state == first.state
    assert again.secret_outputs == first.secret_outputs
    assert await _password_matches(first.outputs["username"], first.secret_outputs["password"])
    # without the previous secrets (a retry after a crash): same database, new password that works
    rotated = await driver.provision(_ctx(rid, "postgres", pg_config))
    assert rotated.outputs == first.outputs
    assert rotated.secret_outputs["password"] != first.secret_outputs["password"]
    assert await _password_matches(first.outputs["username"], rotated.secret_outputs["password"])
    assert not await _password_matches(first.outputs["username"], first.secret_outputs["password"])
    count = await _admin_query("SELECT count(*) FROM pg_database WHERE datname = %s", (first.outputs["database"],))
    assert count == [(1,)]


async def test_postgres_deprovision_drops_database_and_role_even_with_sessions_open(pg_config):
    rid = _rid("db")
    driver = PostgresDriver()
    ctx = _ctx(rid, "postgres", pg_config)
    result = await driver.provision(ctx)
    name = result.outputs["database"]
    session = await psycopg.AsyncConnection.connect(_conninfo(result.outputs, result.secret_outputs["password"]))
    try:
        await driver.deprovision(ctx, result.state)
    finally:
        await session.close()
    assert not await _exists(database=name)
    assert not await _exists(role=name)
    await driver.deprovision(ctx, result.state)  # already gone: still fine
    await driver.deprovision(ctx, {})  # and without state, from the resource id alone


async def test_postgres_health_and_drift_see_a_database_dropped_behind_our_back(pg_config, pg_cleanup):
    rid = _rid("db")
    pg_cleanup.append(rid)
    driver = PostgresDriver()
    ctx = _ctx(rid, "postgres", pg_config)
    result = await driver.provision(ctx)
    name = result.outputs["database"]
    health = await driver.health(ctx, result.state, result.secret_outputs)
    assert health.ok, health.reason
    assert (await driver.drift(ctx, result.state)).ok

    await _admin_query(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))

    health = await driver.health(ctx, result.state, result.secret_outputs)
    assert not health.ok
    assert f"cannot use database {name}" in health.reason and "does not exist" in health.reason
    assert result.secret_outputs["password"] not in health.reason
    drift = await driver.drift(ctx, result.state)
    assert not drift.ok
    assert drift.reason == f"database {name} was dropped"

    await _admin_query(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))
    drift = await driver.drift(ctx, result.state)
    assert drift.reason == f"database {name} was dropped; role {name} was dropped"
    # provisioning again repairs it
    repaired = await driver.provision(
        _ctx(rid, "postgres", pg_config, previous_state=result.state, previous_secrets=result.secret_outputs)
    )
    assert (await driver.drift(ctx, repaired.state)).ok
    assert (await driver.health(ctx, repaired.state, repaired.secret_outputs)).ok


async def test_postgres_drift_sees_connect_reopened_to_public_and_login_removed(pg_config, pg_cleanup):
    rid = _rid("db")
    pg_cleanup.append(rid)
    driver = PostgresDriver()
    ctx = _ctx(rid, "postgres", pg_config)
    result = await driver.provision(ctx)
    name = sql.Identifier(result.outputs["database"])
    await _admin_query(sql.SQL("GRANT CONNECT ON DATABASE {} TO PUBLIC").format(name))
    await _admin_query(sql.SQL("ALTER ROLE {} NOLOGIN").format(name))
    drift = await driver.drift(ctx, result.state)
    assert not drift.ok
    assert "CONNECT on database" in drift.reason and "granted to PUBLIC" in drift.reason
    assert "can no longer log in" in drift.reason


async def test_postgres_failure_midway_leaves_no_role_behind(pg_config):
    rid = _rid("db")
    name = sql_name(rid)
    # someone else's database already carries the name: CREATE ROLE succeeds, the database step fails
    await _admin_query(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        with structlog.testing.capture_logs() as logs:
            with pytest.raises(ProvisionError) as caught:
                await PostgresDriver().provision(_ctx(rid, "postgres", pg_config))
        error = caught.value
        assert not error.retryable and error.reason == "RESOURCE_NAME_TAKEN"
        assert f"database {name} already exists (owned by postgres)" in error.message
        assert not await _exists(role=name)
        assert await _exists(database=name)  # not ours: left alone
        assert any(entry["event"] == "postgres.provision_failed" and entry["rolled_back"] == ["role"] for entry in logs)
        # and deprovision refuses to drop what is not ours
        with pytest.raises(ProvisionError, match="refusing to drop database"):
            await PostgresDriver().deprovision(_ctx(rid, "postgres", pg_config), {})
    finally:
        await _admin_query(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))


async def test_postgres_never_takes_over_a_foreign_role(pg_config):
    rid = _rid("db")
    name = sql_name(rid)
    await _admin_query(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(name)))
    try:
        with pytest.raises(ProvisionError, match=f"role {name} already exists and is not managed by innominatus"):
            await PostgresDriver().provision(_ctx(rid, "postgres", pg_config))
        assert await _exists(role=name)
        assert not await _exists(database=name)
    finally:
        await _admin_query(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))


async def test_postgres_unreachable_admin_server_is_retryable_and_hides_the_admin_password():
    admin_password = "AdminPassw0rdThatMustNotLeak"
    config = {"admin_url": f"postgresql://postgres:{admin_password}@127.0.0.1:1/postgres"}
    with pytest.raises(ProvisionError) as caught:
        await PostgresDriver().provision(_ctx(_rid("db"), "postgres", config))
    assert caught.value.retryable and caught.value.reason == "PROVISIONER_UNAVAILABLE"
    assert "cannot connect to the admin PostgreSQL server 127.0.0.1:1" in caught.value.message
    assert admin_password not in str(caught.value) and caught.value.__cause__ is None
    with pytest.raises(ProvisionError, match="needs config.admin_url"):
        await PostgresDriver().provision(_ctx(_rid("db"), "postgres", {}))
    with pytest.raises(ProvisionError) as caught:
        await PostgresDriver().provision(_ctx(_rid("db"), "postgres", {"admin_url": f"postgresql://u:{admin_password}@h:notaport/x"}))
    assert admin_password not in str(caught.value)


async def test_postgres_password_appears_in_no_log_line_or_error(pg_config):
    rid = _rid("db")
    driver = PostgresDriver()
    ctx = _ctx(rid, "postgres", pg_config)
    texts: list[str] = []
    with structlog.testing.capture_logs() as logs:
        result = await driver.provision(ctx)
        password = result.secret_outputs["password"]
        texts.append((await driver.health(ctx, result.state, result.secret_outputs)).reason)
        # a failing re-provision (the database was handed to someone else) with the password in play
        await _admin_query(sql.SQL("ALTER DATABASE {} OWNER TO postgres").format(sql.Identifier(result.outputs["database"])))
        with pytest.raises(ProvisionError) as caught:
            await driver.provision(_ctx(rid, "postgres", pg_config, previous_secrets=result.secret_outputs))
        texts.append(str(caught.value))
        texts.append((await driver.drift(ctx, result.state)).reason)
        await driver.deprovision(ctx, result.state)
        texts.append((await driver.health(ctx, result.state, result.secret_outputs)).reason)
    assert {entry["event"] for entry in logs} >= {"postgres.provisioned", "postgres.provision_failed", "postgres.deprovisioned"}
    for text in texts + [repr(entry) for entry in logs]:
        assert password not in text


# ---------------------------------------------------------------------------------------------
# redis


@pytest.fixture
def redis_config():
    return {"admin_url": _env(REDIS_ENV)}


@pytest.fixture
async def admin_redis():
    import redis.asyncio as aioredis

    client = aioredis.from_url(_env(REDIS_ENV), decode_responses=True)
    yield client
    await client.aclose()


def _user_client(result):
    import redis.asyncio as aioredis

    db = int(_env(REDIS_ENV).rsplit("/", 1)[1] or 0)
    return aioredis.Redis(
        host=result.outputs["host"],
        port=result.outputs["port"],
        db=db,
        username=result.outputs["username"],
        password=result.secret_outputs["password"],
        decode_responses=True,
    )


async def test_redis_user_is_confined_to_its_key_prefix(redis_config, admin_redis):
    from redis.exceptions import NoPermissionError, ResponseError

    rid = _rid("cache")
    driver = RedisDriver()
    ctx = _ctx(rid, "redis", redis_config)
    result = await driver.provision(ctx)
    try:
        assert result.outputs["username"] == rid and result.outputs["key_prefix"] == f"{rid}:"
        assert result.outputs["host"] == "127.0.0.1"
        assert len(result.secret_outputs["password"]) == 32
        await admin_redis.set("someone-else:secret", "theirs")
        user = _user_client(result)
        try:
            assert await user.set(f"{rid}:greeting", "hello")
            assert await user.get(f"{rid}:greeting") == "hello"
            assert await user.incr(f"{rid}:counter") == 1
            for call in (
                lambda: user.get("someone-else:secret"),
                lambda: user.set("outside", "x"),
                lambda: user.flushall(),
                lambda: user.flushdb(),
                lambda: user.config_get("maxmemory"),
                lambda: user.keys("*"),
                lambda: user.scan(0),
                lambda: user.execute_command("ACL", "SETUSER", rid, "~*"),
                lambda: user.publish("someone-else:channel", "x"),
                lambda: user.execute_command("FUNCTION", "FLUSH"),
            ):
                with pytest.raises((NoPermissionError, ResponseError)) as caught:
                    await call()
                assert "NOPERM" in str(caught.value) or "no permissions" in str(caught.value)
            # scripts are checked too: declared keys up front, undeclared ones when touched
            with pytest.raises(ResponseError, match="no permissions"):
                await user.eval("return redis.call('get', KEYS[1])", 1, "someone-else:secret")
            with pytest.raises(ResponseError, match="can't access"):
                await user.eval("return redis.call('get', 'someone-else:secret')", 0)
            assert await user.eval("return redis.call('get', KEYS[1])", 1, f"{rid}:greeting") == "hello"
        finally:
            await user.aclose()
        assert await admin_redis.get("someone-else:secret") == "theirs"
        assert (await driver.health(ctx, result.state, result.secret_outputs)).ok
        assert (await driver.drift(ctx, result.state)).ok
    finally:
        await driver.deprovision(ctx, result.state)
        await admin_redis.delete("someone-else:secret")


async def test_redis_provision_is_idempotent_and_deprovision_removes_user_and_keys(redis_config, admin_redis):
    rid = _rid("cache")
    driver = RedisDriver()
    ctx = _ctx(rid, "redis", redis_config)
    first = await driver.provision(ctx)
    again = await driver.provision(_ctx(rid, "redis", redis_config, previous_secrets=first.secret_outputs))
    assert again.outputs == first.outputs and again.secret_outputs == first.secret_outputs
    assert (await driver.health(ctx, again.state, first.secret_outputs)).ok
    user = _user_client(first)
    await user.set(f"{rid}:a", "1")
    await user.aclose()
    await admin_redis.set(f"{rid}x-not-ours", "keep")
    try:
        await driver.deprovision(ctx, first.state)
        assert await admin_redis.acl_getuser(rid) is None
        assert await admin_redis.exists(f"{rid}:a") == 0
        assert await admin_redis.get(f"{rid}x-not-ours") == "keep"
        health = await driver.health(ctx, first.state, first.secret_outputs)
        assert not health.ok and first.secret_outputs["password"] not in health.reason
        await driver.deprovision(ctx, first.state)  # already gone: fine
    finally:
        await admin_redis.delete(f"{rid}x-not-ours")


async def test_redis_keys_are_kept_when_configured(redis_config, admin_redis):
    rid = _rid("cache")
    config = {**redis_config, "delete_keys": False}
    driver = RedisDriver()
    result = await driver.provision(_ctx(rid, "redis", config))
    await admin_redis.set(f"{rid}:kept", "1")
    try:
        await driver.deprovision(_ctx(rid, "redis", config), result.state)
        assert await admin_redis.acl_getuser(rid) is None
        assert await admin_redis.get(f"{rid}:kept") == "1"
    finally:
        await admin_redis.delete(f"{rid}:kept")


async def test_redis_drift_after_the_user_is_deleted_or_changed_behind_our_back(redis_config, admin_redis):
    rid = _rid("cache")
    driver = RedisDriver()
    ctx = _ctx(rid, "redis", redis_config)
    result = await driver.provision(ctx)
    try:
        await admin_redis.execute_command("ACL", "SETUSER", rid, "~*")
        drift = await driver.drift(ctx, result.state)
        assert not drift.ok and f"key patterns of Redis ACL user {rid} changed" in drift.reason
        await admin_redis.execute_command("ACL", "SETUSER", rid, "off")
        assert "was disabled" in (await driver.drift(ctx, result.state)).reason
        assert not (await driver.health(ctx, result.state, result.secret_outputs)).ok

        await admin_redis.execute_command("ACL", "DELUSER", rid)
        drift = await driver.drift(ctx, result.state)
        assert drift == type(drift)(False, f"Redis ACL user {rid} was deleted")
        health = await driver.health(ctx, result.state, result.secret_outputs)
        assert not health.ok and "cannot use Redis" in health.reason
    finally:
        await driver.deprovision(ctx, result.state)


async def test_redis_failures_are_clear_and_leak_no_password(redis_config):
    admin_password = "RedisAdminPassw0rdNeverShown"
    with pytest.raises(ProvisionError) as caught:
        await RedisDriver().provision(_ctx(_rid("cache"), "redis", {"admin_url": f"redis://admin:{admin_password}@127.0.0.1:1/0"}))
    assert caught.value.retryable and "creating Redis ACL user" in caught.value.message
    assert admin_password not in str(caught.value)
    with pytest.raises(ProvisionError, match="not a redis:// or rediss:// URL") as caught:
        await RedisDriver().provision(_ctx(_rid("cache"), "redis", {"admin_url": f"http://x:{admin_password}@h/"}))
    assert admin_password not in str(caught.value) and not caught.value.retryable
    with pytest.raises(ProvisionError, match="must not manage"):
        await RedisDriver().provision(_ctx("default", "redis", redis_config))

    rid = _rid("cache")
    driver = RedisDriver()
    ctx = _ctx(rid, "redis", redis_config)
    with structlog.testing.capture_logs() as logs:
        result = await driver.provision(ctx)
        texts = [(await driver.health(ctx, result.state, result.secret_outputs)).reason]
        await driver.deprovision(ctx, result.state)
        texts.append((await driver.health(ctx, result.state, result.secret_outputs)).reason)
        texts.append((await driver.drift(ctx, result.state)).reason)
    assert {entry["event"] for entry in logs} >= {"redis.provisioned", "redis.deprovisioned"}
    for text in texts + [repr(entry) for entry in logs] + [repr(result), str(result.state)]:
        assert result.secret_outputs["password"] not in text


# ---------------------------------------------------------------------------------------------
# dns, route, volume, service-port, environment


async def test_dns_generates_an_rfc1123_hostname():
    driver = get_driver("dns")
    result = await driver.provision(_ctx("web", "dns", {}))
    assert result.outputs == {"host": "checkout-dev-web.apps.local"}
    result = await driver.provision(_ctx("checkout-dev-web", "dns", {"base_domain": "Example.COM."}))
    assert result.outputs == {"host": "checkout-dev-web.example.com"}  # app-env not repeated
    long = await driver.provision(_ctx("A_Very_Long_Name_" * 6, "dns", {}))
    label, _, domain = long.outputs["host"].partition(".")
    assert len(label) <= 63 and domain == "apps.local" and label == label.lower() and "_" not in label
    with pytest.raises(ProvisionError, match="base_domain") as caught:
        await driver.provision(_ctx("web", "dns", {"base_domain": "bad_domain..x"}))
    assert not caught.value.retryable
    assert (await driver.health(_ctx("web", "dns", {}), {}, {})).ok
    assert (await driver.drift(_ctx("web", "dns", {}), {})).ok
    await driver.deprovision(_ctx("web", "dns", {}), {})


async def test_route_validates_and_describes_an_ingress_rule():
    driver = get_driver("route")
    result = await driver.provision(
        _ctx("web-route", "route", {}, workload="web", params={"host": "shop.example.com", "port": "8080"})
    )
    assert result.outputs == {"host": "shop.example.com", "path": "/", "port": 8080}
    assert result.state["ingress"] == {
        "host": "shop.example.com",
        "path": "/",
        "pathType": "Prefix",
        "backend": {"service": "web", "port": 8080},
    }
    result = await driver.provision(_ctx("r", "route", {}, params={"host": "a.b", "path": "/api", "port": 80}))
    assert result.outputs["path"] == "/api"
    with pytest.raises(ProvisionError) as caught:
        await driver.provision(_ctx("r", "route", {}, params={"host": "Bad Host!", "path": "api", "port": 70000}))
    error = caught.value
    assert not error.retryable and error.reason == "INVALID_RESOURCE_PARAMS"
    assert {v.field for v in error.violations} == {"params.host", "params.path", "params.port"}
    assert "must start with '/'" in error.message and "1-65535" in error.message
    with pytest.raises(ProvisionError, match="params.port: is required"):
        await driver.provision(_ctx("r", "route", {}, params={"host": "a.b"}))
    with pytest.raises(ProvisionError, match="params.port"):
        await driver.provision(_ctx("r", "route", {}, params={"host": "a.b", "port": True}))


async def test_volume_and_service_port_outputs():
    volume = await get_driver("volume").provision(_ctx("data", "volume", {}))
    assert volume.outputs == {"source": "checkout-dev-data", "type": "volume"}
    port = await get_driver("service-port").provision(
        _ctx("web-port", "service-port", {}, workload="Web_Frontend", params={"port": 80, "targetPort": 8080})
    )
    assert port.outputs == {"name": "web-frontend", "port": 80}
    assert port.state["targetPort"] == 8080
    explicit = await get_driver("service-port").provision(
        _ctx("p", "service-port", {}, params={"workload": "api", "port": "9000"})
    )
    assert explicit.outputs == {"name": "api", "port": 9000} and explicit.state["targetPort"] == 9000
    with pytest.raises(ProvisionError) as caught:
        await get_driver("service-port").provision(_ctx("p", "service-port", {}, params={"port": 0, "targetPort": "x"}))
    assert {v.field for v in caught.value.violations} == {"params.port", "params.targetPort", "params.workload"}


async def test_environment_driver_reads_named_or_prefixed_variables():
    environ = {
        "SHOP_URL": "https://shop",
        "SHOP_API_TOKEN": "tok-123",
        "SHOP_DB_PASSWORD": "pw",
        "OTHER": "o",
        "INNOMINATUS_SECRETS_KEY": "master",
    }
    driver = EnvironmentDriver(environ)
    result = await driver.provision(_ctx("env", "environment", {}, params={"keys": ["SHOP_URL", "SHOP_API_TOKEN"]}))
    assert result.outputs == {"SHOP_URL": "https://shop"}
    assert result.secret_outputs == {"SHOP_API_TOKEN": "tok-123"}
    assert "tok-123" not in repr(result) and "tok-123" not in str(result.state)

    result = await driver.provision(_ctx("env", "environment", {}, params={"prefix": "SHOP_"}))
    assert result.outputs == {"SHOP_URL": "https://shop"}
    assert result.secret_outputs == {"SHOP_API_TOKEN": "tok-123", "SHOP_DB_PASSWORD": "pw"}
    stripped = await driver.provision(_ctx("env", "environment", {}, params={"prefix": "SHOP_", "strip_prefix": True}))
    assert stripped.outputs == {"URL": "https://shop"}

    with pytest.raises(ProvisionError) as caught:
        await driver.provision(_ctx("env", "environment", {}, params={"keys": ["SHOP_URL", "NOPE_B", "NOPE_A"]}))
    assert not caught.value.retryable
    assert "not set in the platform's environment: NOPE_A, NOPE_B" in caught.value.message
    # the platform's own settings are never handed out unless the definition allows them
    with pytest.raises(ProvisionError, match="not allowed by the resource definition: INNOMINATUS_SECRETS_KEY"):
        await driver.provision(_ctx("env", "environment", {}, params={"keys": ["INNOMINATUS_SECRETS_KEY"]}))
    with pytest.raises(ProvisionError, match="not allowed by the resource definition: OTHER"):
        await driver.provision(_ctx("env", "environment", {"allow": ["SHOP_*"]}, params={"keys": ["OTHER"]}))
    with pytest.raises(ProvisionError, match="no allowed environment variable starts with 'INNOMINATUS_'"):
        await driver.provision(_ctx("env", "environment", {}, params={"prefix": "INNOMINATUS_"}))
    with pytest.raises(ProvisionError, match="set keys"):
        await driver.provision(_ctx("env", "environment", {}, params={}))


async def test_environment_driver_defaults_to_the_process_environment(monkeypatch):
    monkeypatch.setenv("INNO_DRIVER_TEST_VALUE", "42")
    result = await get_driver("environment").provision(
        _ctx("env", "environment", {}, params={"keys": ["INNO_DRIVER_TEST_VALUE"]})
    )
    assert result.outputs == {"INNO_DRIVER_TEST_VALUE": "42"}


def test_provision_error_maps_to_a_grpc_status():
    import grpc

    assert ProvisionError("x", retryable=True).code == grpc.StatusCode.UNAVAILABLE
    error = ProvisionError("x", retryable=False)
    assert error.code == grpc.StatusCode.FAILED_PRECONDITION and error.metadata["retryable"] == "false"
    assert error.to_status().code == grpc.StatusCode.FAILED_PRECONDITION
