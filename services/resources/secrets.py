"""Secret stores: where the secret outputs of resources live (documented in docs/secrets.md).

The platform never keeps a secret value next to its other data. A provisioner's secret outputs
are written to a :class:`SecretStore` under a path such as ``apps/<app>/<env>/<resource>``, and
everything else (resource rows, deployment sets, audit records, API answers) holds a
:class:`SecretRef` (``secret://<store>/<path>#<key>``) instead of the value.

Two stores implement the same protocol:

* :class:`EnvelopeSecretStore` (the embedded default): every secret version is sealed with
  AES-GCM under a fresh 256-bit data key; the data key is wrapped with AES-GCM under the master
  key (``INNOMINATUS_SECRETS_KEY`` / ``INNOMINATUS_SECRETS_KEY_FILE`` / a generated key file in
  the data directory). Rows live in the resources service's ``secret_versions`` table.
* :class:`VaultSecretStore` (production): HashiCorp Vault's KV v2 engine through ``hvac``.

:func:`make_secret_store` picks one from the configuration. Errors raised here name paths,
versions, key ids and URLs, never a secret value or a token.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import os
import stat
import threading
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol, runtime_checkable
from urllib.parse import urlsplit, urlunsplit

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import and_, func, select, text, update
from sqlalchemy.exc import IntegrityError

from innominatus.kit.config import Settings
from innominatus.kit.db import Database

# ---------------------------------------------------------------------------------------------
# Errors


from innominatus.kit.secretrefs import (  # noqa: E402,F401 - re-exported: the store API names them
    _KEY,
    _SEGMENT,
    MAX_PATH_LENGTH,
    SecretRef,
    _printable,
    format_ref,
    is_secret_ref,
    parse_ref,
    validate_path,
    validate_prefix,
)


class SecretStoreError(Exception):
    """A secret store operation failed. Messages never contain secret values or tokens."""


class SecretNotFound(SecretStoreError, KeyError):
    """No (live) secret at the path, or not that version."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else "secret not found"


class SecretAccessDenied(SecretStoreError, PermissionError):
    """The store refused the caller (Vault: a bad token or a policy without the capability)."""


class SecretStoreUnavailable(SecretStoreError, ConnectionError):
    """The store cannot be reached (Vault down, sealed or unreachable)."""


class MasterKeyMismatch(SecretStoreError):
    """A secret was wrapped under another master key than the configured one."""


class SecretIntegrityError(SecretStoreError):
    """A stored secret failed authentication: it was altered or moved to another row."""


class SecretConflict(SecretStoreError):
    """A concurrent writer won (check-and-set failed)."""


# ---------------------------------------------------------------------------------------------
# Paths

def _validate_values(values: Mapping[str, str]) -> dict[str, str]:
    if not isinstance(values, Mapping):
        raise ValueError(f"secret values must be a mapping of names to strings, not {type(values).__name__}")
    if not values:
        raise ValueError("secret values are empty: store at least one key")
    clean: dict[str, str] = {}
    for key, value in values.items():
        if not isinstance(key, str) or not _KEY.match(key):
            raise ValueError(f"secret key {_printable(str(key))} is invalid: use letters, digits, '_', '-' and '.'")
        if not isinstance(value, str):
            # Name the key and the type, never the value.
            raise ValueError(f"secret value of {key!r} must be a string, not {type(value).__name__}")
        clean[key] = value
    return clean


class SecretValue:
    """A secret value in memory whose ``str``/``repr`` never show it; :meth:`reveal` does, explicitly."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "SecretValue('[redacted]')"

    __str__ = __repr__

    def __format__(self, _spec: str) -> str:
        return "[redacted]"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SecretValue) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("SecretValue", self._value))

    def __reduce__(self):  # never pickled into a cache, a queue or an error report
        raise TypeError("SecretValue cannot be pickled")


# ---------------------------------------------------------------------------------------------
# The protocol


@runtime_checkable
class SecretStore(Protocol):
    """A versioned key/value secret store. Paths are validated by :func:`validate_path`."""

    name: str

    async def put(self, path: str, values: dict[str, str]) -> int:
        """Write a new version of the secret at ``path``; return its version number (1, 2, ...)."""

    async def get(self, path: str, version: int | None = None) -> dict[str, str]:
        """The values of ``version`` (default: the latest); :class:`SecretNotFound` when missing."""

    async def delete(self, path: str) -> None:
        """Delete every version of the secret and its metadata; a missing path is not an error."""

    async def list(self, prefix: str = "") -> list[str]:
        """Sorted full paths of the live secrets under the folder ``prefix`` (``""``: all)."""


async def reveal(store: SecretStore, ref: SecretRef | str) -> SecretValue:
    """The value a reference points at, wrapped so it is not printed by accident.

    Authorization is the caller's: only an authorized caller asking explicitly may reach this.
    """
    if isinstance(ref, str):
        ref = SecretRef.parse(ref)
    values = await store.get(ref.path, ref.version)
    try:
        return SecretValue(values[ref.key])
    except KeyError:
        raise SecretNotFound(f"secret {ref.path} has no key {ref.key!r} (keys: {', '.join(sorted(values))})") from None


def _not_found(path: str, version: int | None) -> SecretNotFound:
    if version is None:
        return SecretNotFound(f"no secret at {path}")
    return SecretNotFound(f"no version {version} of secret {path}")


def _check_version(version: int | None) -> None:
    if version is not None and (isinstance(version, bool) or not isinstance(version, int) or version < 1):
        raise ValueError(f"secret version must be a positive integer, not {version!r}")


# ---------------------------------------------------------------------------------------------
# Master key

KEY_ENV = "INNOMINATUS_SECRETS_KEY"
KEY_FILE_ENV = "INNOMINATUS_SECRETS_KEY_FILE"
KEY_BYTES = 32


def key_id(master_key: bytes) -> str:
    """First 8 hex digits of SHA-256 of the key: names a key without revealing it."""
    return hashlib.sha256(master_key).hexdigest()[:8]


def generate_master_key() -> bytes:
    return os.urandom(KEY_BYTES)


def encode_master_key(master_key: bytes) -> str:
    return base64.b64encode(master_key).decode("ascii")


def _decode_key(text: str, source: str) -> bytes:
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"configuration error: {source} is not valid base64 (expected base64 of 32 random bytes)") from None
    if len(raw) != KEY_BYTES:
        raise ValueError(f"configuration error: {source} decodes to {len(raw)} bytes; the master key must be 32 bytes")
    return raw


def default_key_file(settings: Settings) -> Path:
    return settings.data_dir / "resources" / "secrets.key"


def load_master_key(settings: Settings | None = None, environ: Mapping[str, str] | None = None) -> bytes:
    """The master key of the envelope store.

    In order: ``INNOMINATUS_SECRETS_KEY`` (base64 of 32 bytes), the file named by
    ``INNOMINATUS_SECRETS_KEY_FILE`` (the same text), else — embedded default only, i.e. no
    ``database_url`` — ``<data_dir>/resources/secrets.key``, created mode 0600 on first use.
    With a shared database and no key configured this refuses: a key generated per machine
    would differ between replicas.
    """
    env = os.environ if environ is None else environ
    settings = settings or Settings()
    value = env.get(KEY_ENV) or ""
    if value.strip():
        return _decode_key(value, KEY_ENV)
    key_file = env.get(KEY_FILE_ENV) or ""
    if key_file.strip():
        path = Path(key_file.strip())
        try:
            text = path.read_text(encoding="ascii")
        except FileNotFoundError:
            raise ValueError(f"configuration error: {KEY_FILE_ENV} names {path}, which does not exist") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"configuration error: cannot read {KEY_FILE_ENV} {path}: {type(exc).__name__}") from None
        return _decode_key(text, f"{KEY_FILE_ENV} ({path})")
    if settings.database_url:
        raise ValueError(
            f"configuration error: a shared database is configured but no secrets master key: set {KEY_ENV} "
            f"(base64 of 32 bytes) or {KEY_FILE_ENV}, the same on every replica, or configure Vault "
            "(INNOMINATUS_VAULT_ADDR and INNOMINATUS_VAULT_TOKEN)"
        )
    return _load_or_create_key_file(default_key_file(settings))


def _load_or_create_key_file(path: Path) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        # Write a temporary file 0600 and link it into place: two processes starting at once
        # end up with the same key, and nobody ever reads a half-written file.
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="ascii") as handle:
                handle.write(encode_master_key(generate_master_key()) + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass
        finally:
            tmp.unlink(missing_ok=True)
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise ValueError(
            f"configuration error: the secrets key file {path} is readable by others (mode {mode:o}); chmod 600 it"
        )
    return _decode_key(path.read_text(encoding="ascii"), f"the secrets key file {path}")


# ---------------------------------------------------------------------------------------------
# Envelope store


def _aad(kind: bytes, path: str, version: int) -> bytes:
    # Paths cannot contain NUL, so the encoding is unambiguous.
    return b"innominatus-secret-v1\x00" + kind + b"\x00" + path.encode("utf-8") + b"\x00" + str(version).encode()


class EnvelopeSecretStore:
    """Secrets envelope-encrypted in the resources service's database.

    Per version: a fresh 256-bit data key seals the values' JSON with AES-GCM (random 96-bit
    nonce, associated data = path + version); the data key is wrapped with AES-GCM under the
    master key (its own nonce, the same binding). The row keeps ``key_id`` so a wrong master key
    is reported as such.
    """

    name = "db"

    def __init__(self, db: Database, master_key: bytes) -> None:
        if not isinstance(master_key, (bytes, bytearray)) or len(master_key) != KEY_BYTES:
            raise ValueError("the secrets master key must be exactly 32 bytes")
        from innominatus.resources.models import secret_versions

        self._db = db
        self._table = secret_versions
        self._master = AESGCM(bytes(master_key))
        self.key_id = key_id(bytes(master_key))

    def __repr__(self) -> str:
        return f"EnvelopeSecretStore(key_id={self.key_id!r})"

    # -- crypto ---------------------------------------------------------------------------

    def _seal(self, path: str, version: int, values: dict[str, str]) -> dict[str, Any]:
        data_key = AESGCM.generate_key(bit_length=256)
        nonce, key_nonce = os.urandom(12), os.urandom(12)
        plaintext = json.dumps(values, sort_keys=True, separators=(",", ":")).encode("utf-8")
        ciphertext = AESGCM(data_key).encrypt(nonce, plaintext, _aad(b"data", path, version))
        wrapped = self._master.encrypt(key_nonce, data_key, _aad(b"key", path, version))
        return {
            "path": path,
            "version": version,
            "key_id": self.key_id,
            "key_nonce": key_nonce,
            "wrapped_key": wrapped,
            "nonce": nonce,
            "ciphertext": ciphertext,
        }

    def _open(self, row) -> dict[str, str]:
        if row.key_id != self.key_id:
            raise MasterKeyMismatch(
                f"secret {row.path} version {row.version} is wrapped with master key id {row.key_id}, but the "
                f"configured master key has id {self.key_id}: configure the right {KEY_ENV} / {KEY_FILE_ENV}, "
                "or rewrap the store with the old and the new key"
            )
        try:
            data_key = self._master.decrypt(bytes(row.key_nonce), bytes(row.wrapped_key), _aad(b"key", row.path, row.version))
            plaintext = AESGCM(data_key).decrypt(bytes(row.nonce), bytes(row.ciphertext), _aad(b"data", row.path, row.version))
        except InvalidTag:
            raise SecretIntegrityError(
                f"secret {row.path} version {row.version} failed authentication: the row was altered or copied "
                "from another path or version"
            ) from None
        return json.loads(plaintext)

    # -- the protocol ---------------------------------------------------------------------

    async def put(self, path: str, values: dict[str, str]) -> int:
        validate_path(path)
        values = _validate_values(values)
        t = self._table
        for _attempt in range(8):
            try:
                async with self._db.transaction() as s:
                    if self._db.is_postgres:
                        # Writers of one path queue here instead of colliding on the version.
                        await s.execute(
                            text("SELECT pg_advisory_xact_lock(hashtext(:k))"), {"k": f"innominatus-secret:{path}"}
                        )
                    current = (await s.execute(select(func.max(t.c.version)).where(t.c.path == path))).scalar()
                    version = (current or 0) + 1
                    await s.execute(t.insert().values(**self._seal(path, version, values)))
                return version
            except IntegrityError:
                # A concurrent put took this version number: seal again under the next one.
                await asyncio.sleep(0.01)
        raise SecretConflict(f"could not write secret {path}: too many concurrent writers")

    async def get(self, path: str, version: int | None = None) -> dict[str, str]:
        validate_path(path)
        _check_version(version)
        t = self._table
        query = select(t).where(t.c.path == path, t.c.deleted_at.is_(None))
        query = query.where(t.c.version == version) if version is not None else query.order_by(t.c.version.desc()).limit(1)
        async with self._db.transaction() as s:
            row = (await s.execute(query)).first()
        if row is None:
            raise _not_found(path, version)
        return self._open(row)

    async def delete(self, path: str) -> None:
        validate_path(path)
        t = self._table
        async with self._db.transaction() as s:
            # Tombstones: the key material and ciphertext are erased (crypto-shredded); the row
            # stays so the path's version numbers are never reused.
            await s.execute(
                update(t)
                .where(t.c.path == path, t.c.deleted_at.is_(None))
                .values(
                    deleted_at=datetime.now(timezone.utc), key_nonce=b"", wrapped_key=b"", nonce=b"", ciphertext=b""
                )
            )

    async def list(self, prefix: str = "") -> list[str]:
        prefix = validate_prefix(prefix)
        t = self._table
        query = select(t.c.path).where(t.c.deleted_at.is_(None)).distinct()
        if prefix:
            # Segments cannot contain LIKE wildcards except '_'; escape it.
            escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            query = query.where(t.c.path.like(escaped + "/%", escape="\\"))
        async with self._db.transaction() as s:
            return sorted(r[0] for r in await s.execute(query))

    # -- key management ---------------------------------------------------------------------

    async def rewrap(self, old_key: bytes, new_key: bytes, batch_size: int = 500) -> int:
        """Re-wrap every live data key from ``old_key`` to ``new_key``; ciphertexts stay untouched.

        Returns the number of versions rewrapped. Idempotent: rows already under the new key are
        skipped, so an interrupted rotation is finished by running it again. When this store's
        own key is ``old_key`` it switches to ``new_key``.
        """
        for candidate in (old_key, new_key):
            if not isinstance(candidate, (bytes, bytearray)) or len(candidate) != KEY_BYTES:
                raise ValueError("master keys must be exactly 32 bytes")
        old_id, new_id = key_id(bytes(old_key)), key_id(bytes(new_key))
        if old_id == new_id:
            raise ValueError("the old and the new master key are the same")
        old, new = AESGCM(bytes(old_key)), AESGCM(bytes(new_key))
        t = self._table
        done = 0
        last: tuple[str, int] = ("", 0)
        while True:
            async with self._db.transaction() as s:
                rows = (
                    await s.execute(
                        select(t.c.path, t.c.version, t.c.key_nonce, t.c.wrapped_key)
                        .where(t.c.key_id == old_id, t.c.deleted_at.is_(None))
                        .where((t.c.path > last[0]) | and_(t.c.path == last[0], t.c.version > last[1]))
                        .order_by(t.c.path, t.c.version)
                        .limit(batch_size)
                        .with_for_update()
                    )
                ).all()
                for row in rows:
                    aad = _aad(b"key", row.path, row.version)
                    try:
                        data_key = old.decrypt(bytes(row.key_nonce), bytes(row.wrapped_key), aad)
                    except InvalidTag:
                        raise SecretIntegrityError(
                            f"cannot rewrap secret {row.path} version {row.version}: its wrapped key does not open "
                            f"with master key {old_id}"
                        ) from None
                    key_nonce = os.urandom(12)
                    await s.execute(
                        update(t)
                        .where(t.c.path == row.path, t.c.version == row.version, t.c.key_id == old_id)
                        .values(key_id=new_id, key_nonce=key_nonce, wrapped_key=new.encrypt(key_nonce, data_key, aad))
                    )
                    done += 1
            if len(rows) < batch_size:
                break
            last = (rows[-1].path, rows[-1].version)
        if self.key_id == old_id:
            self._master, self.key_id = new, new_id
        return done

    async def key_ids(self) -> dict[str, int]:
        """How many live secret versions each master key id wraps (to follow a rotation)."""
        t = self._table
        async with self._db.transaction() as s:
            rows = await s.execute(
                select(t.c.key_id, func.count()).where(t.c.deleted_at.is_(None)).group_by(t.c.key_id)
            )
            return {key: count for key, count in rows}


# ---------------------------------------------------------------------------------------------
# Vault store


def _safe_url(url: str) -> str:
    """The URL without any user:password part, for messages."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


class VaultSecretStore:
    """Secrets in HashiCorp Vault's KV version 2 engine, through hvac (run in a worker thread).

    ``token`` or ``token_file`` (re-read on every call, so a Vault Agent sink can renew it).
    ``verify``: True, False or the path of a CA bundle, as requests takes it.
    """

    name = "vault"

    def __init__(
        self,
        url: str,
        token: str | None = None,
        mount: str = "secret",
        namespace: str | None = None,
        verify: bool | str = True,
        *,
        token_file: str | Path | None = None,
        timeout: float = 10.0,
    ) -> None:
        if not url:
            raise ValueError("a Vault URL is required")
        if not token and not token_file:
            raise ValueError("a Vault token (or token file) is required")
        if not mount or mount.strip("/") != mount or not all(_SEGMENT.match(s) for s in mount.split("/")):
            raise ValueError(f"invalid Vault mount {mount!r}")
        self.url = url.rstrip("/")
        self.mount = mount
        self.namespace = namespace or None
        self.verify = verify
        self.timeout = timeout
        self._token = token
        self._token_file = Path(token_file) if token_file else None
        self._local = threading.local()

    def __repr__(self) -> str:  # never the token
        return f"VaultSecretStore(url={_safe_url(self.url)!r}, mount={self.mount!r})"

    def _current_token(self) -> str:
        if self._token_file is not None:
            try:
                token = self._token_file.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise SecretStoreError(f"cannot read the Vault token file {self._token_file}: {type(exc).__name__}") from None
            if not token:
                raise SecretStoreError(f"the Vault token file {self._token_file} is empty")
            return token
        return self._token or ""

    def _client(self):
        import hvac

        token = self._current_token()
        client = getattr(self._local, "client", None)
        if client is None:
            client = hvac.Client(url=self.url, token=token, namespace=self.namespace, verify=self.verify, timeout=self.timeout)
            self._local.client = client
        elif client.token != token:
            client.token = token
        return client

    async def _call(self, what: str, path: str, version: int | None, fn):
        import hvac.exceptions as hx
        import requests

        def run():
            return fn(self._client().secrets.kv.v2)

        where = _safe_url(self.url)
        try:
            return await asyncio.to_thread(run)
        except hx.InvalidPath:
            raise _not_found(path, version) from None
        except (hx.Forbidden, hx.Unauthorized):
            raise SecretAccessDenied(
                f"vault at {where} denied {what} of {path or '/'} on mount {self.mount}: "
                "the token is invalid, expired or lacks the policy"
            ) from None
        except hx.InvalidRequest as exc:
            detail = "; ".join(str(e) for e in (exc.errors or [])) or "bad request"
            if "check-and-set" in detail:
                raise SecretConflict(f"vault refused {what} of {path}: {detail}") from None
            raise SecretStoreError(f"vault at {where} refused {what} of {path}: {detail}") from None
        except (hx.VaultDown, hx.VaultNotInitialized, hx.BadGateway) as exc:
            raise SecretStoreUnavailable(
                f"vault unavailable at {where}: {type(exc).__name__} (sealed, not initialized or behind a failing proxy)"
            ) from None
        except hx.VaultError as exc:
            raise SecretStoreError(f"vault at {where} failed {what} of {path}: {type(exc).__name__}") from None
        except requests.exceptions.SSLError:
            raise SecretStoreUnavailable(f"vault unavailable at {where}: TLS verification failed") from None
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
            raise SecretStoreUnavailable(f"vault unavailable at {where}: {type(exc).__name__}") from None
        except requests.exceptions.RequestException as exc:
            raise SecretStoreUnavailable(f"vault unavailable at {where}: {type(exc).__name__}") from None

    async def put(self, path: str, values: dict[str, str]) -> int:
        validate_path(path)
        values = _validate_values(values)
        answer = await self._call(
            "write",
            path,
            None,
            lambda kv: kv.create_or_update_secret(path=path, secret=values, mount_point=self.mount),
        )
        try:
            return int(answer["data"]["version"])
        except (TypeError, KeyError, ValueError):
            raise SecretStoreError(f"vault at {_safe_url(self.url)} answered a write of {path} without a version") from None

    async def get(self, path: str, version: int | None = None) -> dict[str, str]:
        validate_path(path)
        _check_version(version)
        answer = await self._call(
            "read",
            path,
            version,
            lambda kv: kv.read_secret_version(
                path=path, version=version, mount_point=self.mount, raise_on_deleted_version=True
            ),
        )
        try:
            data = answer["data"]["data"]
        except (TypeError, KeyError):
            raise SecretStoreError(f"vault at {_safe_url(self.url)} answered a read of {path} without data") from None
        if data is None:
            raise _not_found(path, version)
        return {str(k): str(v) for k, v in data.items()}

    async def delete(self, path: str) -> None:
        validate_path(path)
        try:
            await self._call(
                "delete",
                path,
                None,
                lambda kv: kv.delete_metadata_and_all_versions(path=path, mount_point=self.mount),
            )
        except SecretNotFound:
            pass

    async def list(self, prefix: str = "") -> list[str]:
        prefix = validate_prefix(prefix)
        found: list[str] = []
        folders = [prefix]
        while folders:
            folder = folders.pop()
            try:
                answer = await self._call(
                    "list", folder, None, lambda kv, f=folder: kv.list_secrets(path=f, mount_point=self.mount)
                )
            except SecretNotFound:
                continue
            for key in (answer or {}).get("data", {}).get("keys", []) or []:
                full = f"{folder}/{key}" if folder else key
                if key.endswith("/"):
                    folders.append(full.rstrip("/"))
                else:
                    found.append(full)
        return sorted(found)


# ---------------------------------------------------------------------------------------------
# Choosing a store

VAULT_ADDR_ENV = "INNOMINATUS_VAULT_ADDR"
VAULT_TOKEN_ENV = "INNOMINATUS_VAULT_TOKEN"
VAULT_TOKEN_FILE_ENV = "INNOMINATUS_VAULT_TOKEN_FILE"
VAULT_MOUNT_ENV = "INNOMINATUS_VAULT_MOUNT"
VAULT_NAMESPACE_ENV = "INNOMINATUS_VAULT_NAMESPACE"
VAULT_CACERT_ENV = "INNOMINATUS_VAULT_CACERT"


def make_secret_store(
    config: Settings | Mapping[str, str] | None = None,
    *,
    db: Database | None = None,
    environ: Mapping[str, str] | None = None,
) -> SecretStore:
    """Vault when ``INNOMINATUS_VAULT_ADDR`` and a token (``INNOMINATUS_VAULT_TOKEN`` or
    ``INNOMINATUS_VAULT_TOKEN_FILE``) are set, else the envelope store on ``db`` (default: the
    resources service's database from the settings) with :func:`load_master_key`.

    ``config``: a Settings object (variables read from ``environ``, default os.environ) or a
    mapping of environment variables (used for both).
    """
    if isinstance(config, Settings):
        settings, env = config, (os.environ if environ is None else environ)
    elif config is None:
        env = os.environ if environ is None else environ
        settings = Settings.from_env() if environ is None else _settings_from(env)
    else:
        env = config
        settings = _settings_from(env)

    def var(name: str) -> str:
        return (env.get(name) or "").strip()

    addr, token, token_file = var(VAULT_ADDR_ENV), var(VAULT_TOKEN_ENV), var(VAULT_TOKEN_FILE_ENV)
    if addr:
        if not token and not token_file:
            raise ValueError(
                f"configuration error: {VAULT_ADDR_ENV} is set but neither {VAULT_TOKEN_ENV} nor {VAULT_TOKEN_FILE_ENV}"
            )
        return VaultSecretStore(
            addr,
            token=token or None,
            token_file=None if token else token_file,
            mount=var(VAULT_MOUNT_ENV) or "secret",
            namespace=var(VAULT_NAMESPACE_ENV) or None,
            verify=var(VAULT_CACERT_ENV) or True,
        )
    if token or token_file:
        raise ValueError(f"configuration error: a Vault token is set but {VAULT_ADDR_ENV} is not")
    if db is None:
        db = Database("resources", settings.database_url_for("resources"))
    return EnvelopeSecretStore(db, load_master_key(settings, env))


def _settings_from(env: Mapping[str, str]) -> Settings:
    return Settings(
        data_dir=Path(env.get("INNOMINATUS_DATA_DIR") or ".innominatus"),
        database_url=env.get("INNOMINATUS_DATABASE_URL") or None,
    )
