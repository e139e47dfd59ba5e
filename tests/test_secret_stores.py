"""Secret stores: one contract for the envelope store (real PostgreSQL) and the Vault store.

The Vault store is exercised through hvac against tests/helpers/fake_vault.py, a stand-in that
speaks Vault's KV v2 HTTP API (Vault itself cannot run on these machines; see docs/secrets.md).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import stat
import urllib.error
import urllib.request
import uuid

import pytest
from sqlalchemy import select, update

from innominatus.kit.config import Settings
from innominatus.kit.db import Database
from innominatus.kit.logs import REDACTED, redact
from innominatus.resources.models import secret_versions
from innominatus.resources.secrets import (
    EnvelopeSecretStore,
    MasterKeyMismatch,
    SecretAccessDenied,
    SecretIntegrityError,
    SecretNotFound,
    SecretRef,
    SecretStore,
    SecretStoreUnavailable,
    SecretValue,
    VaultSecretStore,
    encode_master_key,
    generate_master_key,
    key_id,
    load_master_key,
    make_secret_store,
    reveal,
    validate_path,
)
from tests.helpers.database import drop_database, fresh_database
from tests.helpers.fake_vault import FakeVault

PLAINTEXT = "hunter2-Very-Distinctive-Plaintext-\u00e9\u00df"


@pytest.fixture(scope="module")
def database_url():
    url = fresh_database("secrets")
    Database("resources", url).migrate()
    yield url
    drop_database(url)


@pytest.fixture
async def db(database_url):
    database = Database("resources", database_url)
    yield database
    await database.close()


@pytest.fixture(scope="module")
def master_key() -> bytes:
    return generate_master_key()


@pytest.fixture(scope="module")
def fake_vault():
    with FakeVault() as vault:
        yield vault


@pytest.fixture(params=["envelope", "vault"])
async def store(request, master_key, fake_vault):
    if request.param == "envelope":
        database = Database("resources", request.getfixturevalue("database_url"))
        yield EnvelopeSecretStore(database, master_key)
        await database.close()
    else:
        yield VaultSecretStore(fake_vault.url, fake_vault.token)


@pytest.fixture
def base() -> str:
    """A path prefix of this test's own, so tests sharing a store never see each other."""
    return f"apps/t{uuid.uuid4().hex[:12]}"


# ---------------------------------------------------------------------------------------------
# The contract, against both stores


@pytest.mark.postgres
async def test_store_implements_the_protocol(store):
    assert isinstance(store, SecretStore)


@pytest.mark.postgres
async def test_put_get_and_versions(store, base):
    path = f"{base}/dev/db"
    assert await store.put(path, {"password": PLAINTEXT, "user": "app"}) == 1
    assert await store.put(path, {"password": "second", "user": "app"}) == 2
    assert await store.get(path) == {"password": "second", "user": "app"}
    assert await store.get(path, 1) == {"password": PLAINTEXT, "user": "app"}
    assert await store.get(path, version=2) == {"password": "second", "user": "app"}


@pytest.mark.postgres
async def test_missing_secret_and_version_are_clear_errors(store, base):
    path = f"{base}/dev/db"
    with pytest.raises(SecretNotFound) as missing:
        await store.get(path)
    assert str(missing.value) == f"no secret at {path}"
    assert isinstance(missing.value, KeyError)
    await store.put(path, {"password": PLAINTEXT})
    with pytest.raises(SecretNotFound) as no_version:
        await store.get(path, 7)
    assert str(no_version.value) == f"no version 7 of secret {path}"
    assert PLAINTEXT not in str(no_version.value)


@pytest.mark.postgres
async def test_list_returns_full_paths_under_a_prefix(store, base):
    for path in (f"{base}/dev/db", f"{base}/dev/cache", f"{base}/prod/db", f"{base}x/dev/db"):
        await store.put(path, {"password": PLAINTEXT})
    await store.put(f"{base}/dev/db", {"password": "again"})  # a second version lists once
    assert await store.list(base) == [f"{base}/dev/cache", f"{base}/dev/db", f"{base}/prod/db"]
    assert await store.list(f"{base}/dev/") == [f"{base}/dev/cache", f"{base}/dev/db"]
    assert await store.list(f"{base}/staging") == []
    assert f"{base}/prod/db" in await store.list("")


@pytest.mark.postgres
async def test_delete_removes_every_version(store, base):
    path = f"{base}/dev/db"
    await store.put(path, {"password": PLAINTEXT})
    await store.put(path, {"password": "two"})
    await store.put(f"{base}/dev/other", {"password": "keep"})
    await store.delete(path)
    for version in (None, 1, 2):
        with pytest.raises(SecretNotFound):
            await store.get(path, version)
    assert await store.list(base) == [f"{base}/dev/other"]
    await store.delete(path)  # deleting what is gone is not an error
    await store.delete(f"{base}/never/there")
    # A new secret at the path starts afresh; its versions never resurrect the deleted ones.
    version = await store.put(path, {"password": "new"})
    assert await store.get(path) == {"password": "new"}
    assert await store.get(path, version) == {"password": "new"}


@pytest.mark.postgres
async def test_unicode_and_many_keys_round_trip(store, base):
    values = {f"k{i}": f"v\u00e4lue-{i}-\u2603" for i in range(40)}
    values["json"] = json.dumps({"nested": ["a", 1]})
    await store.put(f"{base}/dev/many", values)
    assert await store.get(f"{base}/dev/many") == values


@pytest.mark.postgres
async def test_concurrent_writers_get_distinct_versions(store, base):
    path = f"{base}/dev/db"
    versions = await asyncio.gather(*(store.put(path, {"password": f"p{i}"}) for i in range(12)))
    assert sorted(versions) == list(range(1, 13))
    for version in versions:
        assert (await store.get(path, version)) == {"password": f"p{versions.index(version)}"}


@pytest.mark.postgres
@pytest.mark.parametrize(
    "bad, why",
    [
        ("/apps/a", "leading '/'"),
        ("apps/../etc", "'..'"),
        ("apps/./a", "'.'"),
        ("apps//a", "empty segment"),
        ("apps/a/", "end with '/'"),
        ("apps/a b", "invalid segment"),
        ("apps/a%2f", "invalid segment"),
        ("apps/\u00e9", "invalid segment"),
        ("", "empty"),
        ("a/" * 300 + "b", "longer than 512"),
    ],
)
async def test_invalid_paths_are_rejected_with_a_reason(store, bad, why):
    for call in (store.put(bad, {"k": "v"}), store.get(bad), store.delete(bad)):
        with pytest.raises(ValueError) as error:
            await call
        assert why in str(error.value)
    if bad:  # an empty prefix means "everything"
        with pytest.raises(ValueError):
            await store.list(bad if not bad.endswith("/") else bad + "/")


@pytest.mark.postgres
async def test_bad_values_are_rejected_without_echoing_them(store, base):
    with pytest.raises(ValueError, match="empty"):
        await store.put(f"{base}/a", {})
    with pytest.raises(ValueError) as error:
        await store.put(f"{base}/a", {"password": 12345678})
    assert "password" in str(error.value) and "12345678" not in str(error.value)
    with pytest.raises(ValueError):
        await store.get(f"{base}/a", 0)


@pytest.mark.postgres
async def test_reveal_resolves_a_reference(store, base):
    path = f"{base}/dev/db"
    await store.put(path, {"password": PLAINTEXT, "user": "app"})
    await store.put(path, {"password": "later", "user": "app"})
    value = await reveal(store, f"secret://{store.name}/{path}#password")
    assert value.reveal() == "later"
    assert PLAINTEXT not in repr(value) and "later" not in f"{value}"
    pinned = await reveal(store, SecretRef(store.name, path, "password", version=1))
    assert pinned.reveal() == PLAINTEXT
    with pytest.raises(SecretNotFound) as error:
        await reveal(store, SecretRef(store.name, path, "nope"))
    assert "nope" in str(error.value) and "later" not in str(error.value)


# ---------------------------------------------------------------------------------------------
# Envelope store specifics


def _row_bytes(row) -> bytes:
    out = b""
    for value in row:
        if isinstance(value, (bytes, bytearray, memoryview)):
            out += bytes(value)
        else:
            out += str(value).encode("utf-8")
        out += b"\x00"
    return out


@pytest.mark.postgres
async def test_envelope_table_never_holds_plaintext(db, master_key, base):
    store = EnvelopeSecretStore(db, master_key)
    path = f"{base}/dev/db"
    await store.put(path, {"password": PLAINTEXT, "db_user_name_secret": "app"})
    await store.put(path, {"password": PLAINTEXT + "2", "db_user_name_secret": "app"})
    async with db.transaction() as s:
        rows = (await s.execute(select(secret_versions).where(secret_versions.c.path == path))).all()
    assert len(rows) == 2
    needles = [
        PLAINTEXT.encode("utf-8"),
        PLAINTEXT.encode("utf-8")[:12],
        "db_user_name_secret".encode(),
        json.dumps(PLAINTEXT).encode(),
        base64.b64encode(PLAINTEXT.encode("utf-8"))[:16],
        master_key,
        encode_master_key(master_key).encode(),
    ]
    for row in rows:
        blob = _row_bytes(row)
        assert path.encode() in blob  # the scan does see the row's contents
        for needle in needles:
            assert needle not in blob
        assert row.key_id == key_id(master_key) and len(row.key_id) == 8
        assert len(row.nonce) == 12 and len(row.key_nonce) == 12
        assert len(row.wrapped_key) == 32 + 16  # a 256-bit data key plus the GCM tag
    assert rows[0].nonce != rows[1].nonce and rows[0].wrapped_key != rows[1].wrapped_key


@pytest.mark.postgres
async def test_envelope_moved_to_another_row_fails_to_decrypt(db, master_key, base):
    store = EnvelopeSecretStore(db, master_key)
    source, target = f"{base}/dev/a", f"{base}/dev/b"
    await store.put(source, {"password": PLAINTEXT})
    await store.put(target, {"password": "target"})
    await store.put(target, {"password": "target-2"})
    t = secret_versions
    sealed = ("key_nonce", "wrapped_key", "nonce", "ciphertext")
    async with db.transaction() as s:
        row = (await s.execute(select(t).where(t.c.path == source, t.c.version == 1))).one()
        moved = {name: getattr(row, name) for name in sealed}
        # The whole envelope of a/1 copied into b/1 (another path), and b/1's into b/2 (another version).
        b1 = (await s.execute(select(t).where(t.c.path == target, t.c.version == 1))).one()
        await s.execute(update(t).where(t.c.path == target, t.c.version == 1).values(**moved))
        await s.execute(
            update(t).where(t.c.path == target, t.c.version == 2).values(**{n: getattr(b1, n) for n in sealed})
        )
    for version in (1, 2):
        with pytest.raises(SecretIntegrityError) as error:
            await store.get(target, version)
        assert f"secret {target} version {version} failed authentication" in str(error.value)
        assert PLAINTEXT not in str(error.value)
    # Only the ciphertext swapped (data key left in place) fails too.
    async with db.transaction() as s:
        await s.execute(
            update(t).where(t.c.path == source, t.c.version == 1).values(ciphertext=b1.ciphertext, nonce=b1.nonce)
        )
    with pytest.raises(SecretIntegrityError):
        await store.get(source)


@pytest.mark.postgres
async def test_wrong_master_key_names_the_key_ids(db, master_key, base):
    path = f"{base}/dev/db"
    await EnvelopeSecretStore(db, master_key).put(path, {"password": PLAINTEXT})
    other = generate_master_key()
    with pytest.raises(MasterKeyMismatch) as error:
        await EnvelopeSecretStore(db, other).get(path)
    message = str(error.value)
    assert f"master key id {key_id(master_key)}" in message
    assert f"configured master key has id {key_id(other)}" in message
    for secret in (PLAINTEXT, encode_master_key(master_key), encode_master_key(other)):
        assert secret not in message


@pytest.mark.postgres
async def test_rewrap_rotates_the_master_key_without_touching_ciphertext(db, base):
    old, new = generate_master_key(), generate_master_key()
    store = EnvelopeSecretStore(db, old)
    paths = [f"{base}/dev/s{i}" for i in range(5)]
    for i, path in enumerate(paths):
        await store.put(path, {"password": f"{PLAINTEXT}{i}"})
    await store.put(paths[0], {"password": "v2"})
    await store.put(f"{base}/dev/gone", {"password": "x"})
    await store.delete(f"{base}/dev/gone")
    t = secret_versions
    mine = t.c.path.like(f"{base}/%")

    async def snapshot():
        async with db.transaction() as s:
            return {(r.path, r.version): r for r in (await s.execute(select(t).where(mine))).all()}

    before = await snapshot()
    reader = EnvelopeSecretStore(db, old)
    # Other tests' secrets under other keys share the table; only `old`'s rows move.
    rewrapped = await reader.rewrap(old, new, batch_size=2)
    assert rewrapped == 6
    assert reader.key_id == key_id(new)  # the store switched to the new key
    after = await snapshot()
    for ident, row in after.items():
        if row.deleted_at is not None:
            assert row.key_id == key_id(old) and row.ciphertext == b""
            continue
        assert row.ciphertext == before[ident].ciphertext and row.nonce == before[ident].nonce
        assert row.wrapped_key != before[ident].wrapped_key
        assert row.key_id == key_id(new)
    rotated = EnvelopeSecretStore(db, new)
    assert await rotated.get(paths[0]) == {"password": "v2"}
    assert await rotated.get(paths[0], 1) == {"password": f"{PLAINTEXT}0"}
    assert await reader.get(paths[3]) == {"password": f"{PLAINTEXT}3"}
    with pytest.raises(MasterKeyMismatch):
        await EnvelopeSecretStore(db, old).get(paths[1])
    assert await rotated.rewrap(old, new) == 0  # idempotent: nothing left under the old key
    assert (await rotated.key_ids()).get(key_id(old), 0) == 0
    with pytest.raises(ValueError, match="same"):
        await rotated.rewrap(new, new)


@pytest.mark.postgres
async def test_delete_shreds_the_envelopes_and_never_reuses_versions(db, master_key, base):
    store = EnvelopeSecretStore(db, master_key)
    path = f"{base}/dev/db"
    await store.put(path, {"password": PLAINTEXT})
    await store.put(path, {"password": PLAINTEXT})
    await store.delete(path)
    async with db.transaction() as s:
        rows = (await s.execute(select(secret_versions).where(secret_versions.c.path == path))).all()
    assert len(rows) == 2
    for row in rows:
        assert row.deleted_at is not None
        assert bytes(row.ciphertext) == b"" and bytes(row.wrapped_key) == b""
    assert await store.put(path, {"password": "new"}) == 3


def test_master_key_from_environment(tmp_path):
    key = generate_master_key()
    settings = Settings(data_dir=tmp_path)
    assert load_master_key(settings, {"INNOMINATUS_SECRETS_KEY": encode_master_key(key)}) == key
    key_file = tmp_path / "k"
    key_file.write_text(encode_master_key(key) + "\n")
    assert load_master_key(settings, {"INNOMINATUS_SECRETS_KEY_FILE": str(key_file)}) == key
    short = base64.b64encode(b"sixteen-bytes-ok").decode()
    with pytest.raises(ValueError) as error:
        load_master_key(settings, {"INNOMINATUS_SECRETS_KEY": short})
    assert "16 bytes" in str(error.value) and short not in str(error.value)
    with pytest.raises(ValueError, match="not valid base64"):
        load_master_key(settings, {"INNOMINATUS_SECRETS_KEY": "not base64!!"})
    with pytest.raises(ValueError, match="does not exist"):
        load_master_key(settings, {"INNOMINATUS_SECRETS_KEY_FILE": str(tmp_path / "missing")})


def test_embedded_default_creates_a_private_key_file_once(tmp_path):
    settings = Settings(data_dir=tmp_path / "data")
    first = load_master_key(settings, {})
    key_file = tmp_path / "data" / "resources" / "secrets.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert len(first) == 32
    assert load_master_key(settings, {}) == first  # the same key on the next start
    assert [p.name for p in key_file.parent.iterdir()] == ["secrets.key"]  # no temporary left
    os.chmod(key_file, 0o644)
    with pytest.raises(ValueError, match="chmod 600"):
        load_master_key(settings, {})


def test_shared_database_without_a_key_is_refused(tmp_path):
    settings = Settings(data_dir=tmp_path, database_url="postgresql://db.example/innominatus")
    with pytest.raises(ValueError, match="INNOMINATUS_SECRETS_KEY"):
        load_master_key(settings, {})
    assert not (tmp_path / "resources" / "secrets.key").exists()


async def test_make_secret_store_chooses_by_configuration(tmp_path, fake_vault):
    env = {"INNOMINATUS_VAULT_ADDR": fake_vault.url, "INNOMINATUS_VAULT_TOKEN": fake_vault.token}
    vault = make_secret_store(env)
    assert isinstance(vault, VaultSecretStore) and vault.mount == "secret"
    assert fake_vault.token not in repr(vault)
    token_file = tmp_path / "token"
    token_file.write_text(fake_vault.token + "\n")
    from_file = make_secret_store(
        Settings(data_dir=tmp_path),
        environ={"INNOMINATUS_VAULT_ADDR": fake_vault.url, "INNOMINATUS_VAULT_TOKEN_FILE": str(token_file)},
    )
    assert await from_file.put("apps/chosen/dev/db", {"password": "x"}) == 1
    with pytest.raises(ValueError, match="INNOMINATUS_VAULT_TOKEN"):
        make_secret_store({"INNOMINATUS_VAULT_ADDR": fake_vault.url})
    embedded = make_secret_store({"INNOMINATUS_DATA_DIR": str(tmp_path / "data")})
    try:
        assert isinstance(embedded, EnvelopeSecretStore)
        assert (tmp_path / "data" / "resources" / "secrets.key").exists()
    finally:
        await embedded._db.close()


async def test_envelope_store_works_on_the_embedded_sqlite_database(tmp_path):
    settings = Settings(data_dir=tmp_path)
    db = Database("resources", settings.database_url_for("resources"))
    db.migrate()
    try:
        store = EnvelopeSecretStore(db, load_master_key(settings, {}))
        assert await store.put("apps/a/dev/db", {"password": PLAINTEXT}) == 1
        assert await store.put("apps/a_b/dev/db", {"password": "x"}) == 1
        assert await store.get("apps/a/dev/db") == {"password": PLAINTEXT}
        assert await store.list("apps/a") == ["apps/a/dev/db"]  # '_' is not a LIKE wildcard here
        await store.delete("apps/a/dev/db")
        assert await store.list("apps") == ["apps/a_b/dev/db"]
        versions = await asyncio.gather(*(store.put("apps/c/dev/db", {"password": f"p{i}"}) for i in range(5)))
        assert sorted(versions) == [1, 2, 3, 4, 5]
    finally:
        await db.close()
    assert PLAINTEXT.encode() not in (tmp_path / "resources.db").read_bytes()


# ---------------------------------------------------------------------------------------------
# Vault store specifics (against the KV v2 stand-in)


async def test_vault_store_really_writes_through_the_kv2_api(fake_vault, base):
    store = VaultSecretStore(fake_vault.url, fake_vault.token)
    path = f"{base}/dev/db"
    await store.put(path, {"password": PLAINTEXT})
    assert fake_vault.stored("secret", path) == {"password": PLAINTEXT}
    methods = [(m, p.split("?")[0]) for m, p, _ in fake_vault.requests if base in p]
    assert ("POST", f"/v1/secret/data/{path}") in methods
    await store.list(base)
    await store.delete(path)
    methods = [(m, p.split("?")[0]) for m, p, _ in fake_vault.requests if base in p]
    assert ("LIST", f"/v1/secret/metadata/{base}") in methods
    assert ("DELETE", f"/v1/secret/metadata/{path}") in methods


async def test_vault_bad_token_is_permission_error_without_the_token(fake_vault, base):
    bad = "hvs.this-token-must-never-be-printed"
    store = VaultSecretStore(fake_vault.url, bad)
    for call in (store.put(f"{base}/a", {"password": PLAINTEXT}), store.get(f"{base}/a"), store.list(base)):
        with pytest.raises(PermissionError) as error:
            await call
        assert isinstance(error.value, SecretAccessDenied)
        assert bad not in str(error.value) and PLAINTEXT not in str(error.value)
        assert "denied" in str(error.value) and fake_vault.url in str(error.value)
        assert error.value.__cause__ is None
    assert bad not in repr(store)


async def test_vault_down_is_a_clear_unavailable_error():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    store = VaultSecretStore(url, "hvs.some-token", timeout=2)
    with pytest.raises(SecretStoreUnavailable) as error:
        await store.get("apps/a/dev/db")
    assert str(error.value).startswith(f"vault unavailable at {url}")
    assert "hvs.some-token" not in str(error.value)
    assert isinstance(error.value, ConnectionError)


async def test_vault_namespace_mount_and_token_file(tmp_path):
    with FakeVault(mounts=("kv-platform",)) as vault:
        token_file = tmp_path / "token"
        token_file.write_text("hvs.stale\n")
        store = VaultSecretStore(vault.url, mount="kv-platform", namespace="team-a", token_file=token_file)
        with pytest.raises(SecretAccessDenied):
            await store.put("apps/a/dev/db", {"password": "x"})
        token_file.write_text(vault.token + "\n")  # a Vault Agent renewed the token: picked up
        assert await store.put("apps/a/dev/db", {"password": "x"}) == 1
        assert vault.requests[-1][2] == "team-a"
        assert vault.requests[-1][1] == "/v1/kv-platform/data/apps/a/dev/db"
        wrong_mount = VaultSecretStore(vault.url, vault.token, mount="secret")
        with pytest.raises(SecretNotFound):
            await wrong_mount.get("apps/a/dev/db")


def _http(vault: FakeVault, method: str, path: str, body: dict | None = None, token: str | None = "valid"):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(vault.url + path, data=data, method=method)
    if token:
        request.add_header("X-Vault-Token", vault.token if token == "valid" else token)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            raw = response.read()
            return response.status, response.headers.get("Content-Type"), json.loads(raw) if raw else None
    except urllib.error.HTTPError as error:
        raw = error.read()
        return error.code, error.headers.get("Content-Type"), json.loads(raw) if raw else None


def test_the_stand_in_answers_with_vault_kv2_shapes(fake_vault, base):
    """Shapes from Vault's KV v2 API documentation, as hvac sends and parses them."""
    path = f"{base}/raw"
    status, ctype, body = _http(fake_vault, "POST", f"/v1/secret/data/{path}", {"data": {"a": "1"}, "options": {}})
    assert (status, ctype) == (200, "application/json")
    assert set(body["data"]) == {"created_time", "custom_metadata", "deletion_time", "destroyed", "version"}
    assert body["data"]["version"] == 1 and body["data"]["destroyed"] is False
    assert _http(fake_vault, "PUT", f"/v1/secret/data/{path}", {"data": {"a": "2"}, "options": {"cas": 0}})[:1] == (400,)
    status, _, body = _http(fake_vault, "PUT", f"/v1/secret/data/{path}", {"data": {"a": "2"}, "options": {"cas": 1}})
    assert status == 200 and body["data"]["version"] == 2
    status, _, body = _http(fake_vault, "GET", f"/v1/secret/data/{path}?version=1")
    assert status == 200
    assert body["data"]["data"] == {"a": "1"} and body["data"]["metadata"]["version"] == 1
    assert _http(fake_vault, "GET", f"/v1/secret/data/{path}")[2]["data"]["metadata"]["version"] == 2
    assert _http(fake_vault, "GET", f"/v1/secret/data/{base}/none") == (404, "application/json", {"errors": []})
    assert _http(fake_vault, "GET", f"/v1/secret/data/{path}?version=9")[:1] == (404,)
    assert _http(fake_vault, "LIST", f"/v1/secret/metadata/{base}")[2]["data"] == {"keys": ["raw"]}
    assert _http(fake_vault, "GET", f"/v1/secret/metadata/{base.split('/')[0]}?list=true")[2]["data"]["keys"]
    assert _http(fake_vault, "GET", f"/v1/secret/metadata/{path}")[2]["data"]["current_version"] == 2
    assert _http(fake_vault, "GET", f"/v1/secret/data/{path}", token=None) == (
        403,
        "application/json",
        {"errors": ["permission denied"]},
    )
    assert _http(fake_vault, "GET", f"/v1/secret/data/{path}", token="hvs.wrong")[0] == 403
    assert _http(fake_vault, "DELETE", f"/v1/secret/metadata/{path}")[:1] == (204,)
    assert _http(fake_vault, "LIST", f"/v1/secret/metadata/{base}") == (404, "application/json", {"errors": []})


# ---------------------------------------------------------------------------------------------
# References, values and redaction


def test_secret_ref_parse_and_format():
    ref = SecretRef.parse("secret://vault/apps/shop/prod/db#password")
    assert (ref.store, ref.path, ref.key, ref.version) == ("vault", "apps/shop/prod/db", "password", None)
    assert ref.format() == "secret://vault/apps/shop/prod/db#password" == str(ref)
    pinned = SecretRef("db", "apps/shop/prod/db", "password", version=3)
    assert pinned.format() == "secret://db/apps/shop/prod/db?version=3#password"
    assert SecretRef.parse(pinned.format()) == pinned
    for bad in (
        "vault/apps/db#password",
        "secret://vault/apps/db",
        "secret://vault/../etc/passwd#x",
        "secret://vault//apps#x",
        "secret://Vault!/apps/db#x",
        "secret://vault/apps/db#",
        "secret://vault/apps/db?version=0#x",
        "secret://vault/apps/db#a#b",
    ):
        with pytest.raises(ValueError):
            SecretRef.parse(bad)


def test_redacted_forms_never_show_values():
    ref = SecretRef("db", "apps/shop/prod/db", "password")
    assert ref.redacted() == "secret://db/apps/shop/prod/db#password"
    assert repr(ref) == "SecretRef('secret://db/apps/shop/prod/db#password')"
    value = SecretValue(PLAINTEXT)
    for shown in (repr(value), str(value), f"{value}", f"{value!r}", "%s" % value, repr([value]), repr({"v": value})):
        assert PLAINTEXT not in shown and "redacted" in shown
    assert value.reveal() == PLAINTEXT
    import pickle

    with pytest.raises(TypeError):
        pickle.dumps(value)


def test_log_redaction_hides_secret_looking_keys():
    event = {
        "event": "provisioned",
        "password": PLAINTEXT,
        "db_password": PLAINTEXT,
        "client_secret": PLAINTEXT,
        "X-Vault-Token": "hvs.x",
        "Authorization": "Bearer y",
        "api_key": "k",
        "outputs": {"host": "db.local", "secret_value": PLAINTEXT, "nested": [{"token": "t"}]},
        "ref": "secret://db/apps/a/dev/db#password",
    }
    clean = redact(event)
    assert PLAINTEXT not in json.dumps(clean) and "hvs.x" not in json.dumps(clean)
    for key in ("password", "db_password", "client_secret", "X-Vault-Token", "Authorization", "api_key"):
        assert clean[key] == REDACTED
    assert clean["outputs"]["host"] == "db.local" and clean["outputs"]["secret_value"] == REDACTED
    assert clean["outputs"]["nested"] == [{"token": REDACTED}]
    assert clean["ref"] == "secret://db/apps/a/dev/db#password"  # a reference is safe to log


def test_validate_path_accepts_platform_paths():
    for path in ("apps/shop/prod/db", "apps/shop-1/dev_2/db.main", "a"):
        assert validate_path(path) == path
